//! Generates Rust code from the engine's protos with protox, a proto compiler
//! written in Rust, so a fresh machine needs only cargo (no system protoc).
//! One function per proto. Never edits a proto: each is a fixed contract.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    order_service()?;
    market_data()?;
    Ok(())
}

/// The gRPC order service (`src/grpc/`) of `proto/order_service.proto`, and
/// the encoded descriptor set that server reflection serves.
fn order_service() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "proto/order_service.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let mut compiler = protox::Compiler::new(["proto"])?;
    // Source info keeps the proto's comments on the generated items and in reflection.
    compiler.include_source_info(true).include_imports(true);
    compiler.open_file(PROTO)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("order_service_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    // Server and client: the integration tests, the README's session and the
    // bench call the service through the same generated client.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

/// The market data client (`src/market/grpc.rs`) of
/// `docs/contracts/market_data.proto`. Server code too: the tests' stub
/// market data service is built from the same contract.
fn market_data() -> Result<(), Box<dyn std::error::Error>> {
    const PROTO: &str = "docs/contracts/market_data.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    let mut compiler = protox::Compiler::new(["docs/contracts"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_file(PROTO)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .out_dir(out_dir)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

//! Generates Rust code from the engine's protos with protox, a proto compiler
//! written in Rust, so a fresh machine needs only cargo (no system protoc).
//! One function per proto. Never edits a proto: each is a fixed contract.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    market_data()?;
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

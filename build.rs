//! Generates the gRPC order service's Rust code from `proto/order_service.proto`
//! with protox, a proto compiler written in Rust, so a fresh machine needs only
//! cargo (no system protoc). Also writes the encoded descriptor set that server
//! reflection serves. Never edits the proto: it is the fixed contract.

use std::path::PathBuf;

const PROTO: &str = "proto/order_service.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
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

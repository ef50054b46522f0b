//! Generates the Raft transport's gRPC code from `proto/raft.proto` (needs `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/raft.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure().compile_protos(&[proto], &["../../proto"])?;
    Ok(())
}

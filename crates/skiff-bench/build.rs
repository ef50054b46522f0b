//! Generates the etcd KV client `skiff bench store` compares against (needs `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/etcd_kv_subset.proto";
    println!("cargo:rerun-if-changed={proto}");
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&[proto], &["proto"])?;
    Ok(())
}

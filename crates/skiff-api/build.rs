//! Compiles Kubernetes' protobuf definitions (`proto/k8s/`, vendored from k8s.io/api and
//! k8s.io/apimachinery) into a descriptor set that `src/protobuf.rs` embeds, so protobuf request
//! bodies can be decoded by reflection. Needs `protoc` (Debian: protobuf-compiler), or `$PROTOC`.

use std::{env, path::PathBuf, process::Command};

/// The API groups skiff serves; their imports come along (`--include_imports`).
const FILES: &[&str] = &[
    "k8s.io/api/core/v1/generated.proto",
    "k8s.io/api/apps/v1/generated.proto",
    "k8s.io/api/discovery/v1/generated.proto",
    "k8s.io/api/autoscaling/v1/generated.proto",
    "k8s.io/api/autoscaling/v2/generated.proto",
    "k8s.io/api/rbac/v1/generated.proto",
    "k8s.io/api/authorization/v1/generated.proto",
    "k8s.io/api/authentication/v1/generated.proto",
    "k8s.io/api/storage/v1/generated.proto",
    "k8s.io/api/scheduling/v1alpha3/generated.proto",
    "k8s.io/api/batch/v1/generated.proto",
];

fn main() {
    let root = "../../proto/k8s";
    println!("cargo:rerun-if-changed={root}");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("k8s.bin");
    let protoc = env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    let output = Command::new(&protoc)
        .arg("--include_imports")
        .arg("-I")
        .arg(root)
        .arg("--descriptor_set_out")
        .arg(&out)
        .args(FILES)
        .output()
        .unwrap_or_else(|e| panic!("running {protoc:?} (install protobuf-compiler): {e}"));
    assert!(
        output.status.success(),
        "protoc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

//! The embedded OpenAPI schemas are what the generator makes from the served types today.
#[path = "../examples/openapi-schemas.rs"]
mod generator;

#[test]
fn schemas_are_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/schemas.json");
    let stored = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        stored == generator::generate(),
        "openapi/schemas.json is stale: run `cargo run -p skiff-apiserver --example openapi-schemas`"
    );
}

//! The three PATCH engines (JSON patch, merge patch, strategic merge patch) on a Deployment,
//! whose lists strategic merge merges by key. The first byte picks the engine.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

const TYPES: [&str; 3] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

fn deployment() -> &'static Value {
    static OBJECT: OnceLock<Value> = OnceLock::new();
    OBJECT.get_or_init(|| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                    "containers": [{"name": "web", "image": "nginx",
                        "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]}],
                    "volumes": [{"name": "v", "emptyDir": {}}]}}}
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let content_type = TYPES[which as usize % TYPES.len()];
    let _ = skiff_api::patch::apply_patch(deployment(), body, content_type);
});

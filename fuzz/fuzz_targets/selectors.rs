//! Label and field selectors as they arrive in `?labelSelector=` and `?fieldSelector=`: parsed,
//! and when they parse, matched against a pod.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use skiff_api::selector::{labels_of, FieldSelector, LabelSelector};

fn pod() -> &'static Value {
    static OBJECT: OnceLock<Value> = OnceLock::new();
    OBJECT.get_or_init(|| {
        json!({"metadata": {"name": "web-1", "namespace": "default",
                            "labels": {"app": "web", "tier": "front", "k8s.io/x": ""}},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(selector) = LabelSelector::parse(text) {
        let _ = selector.matches(&labels_of(pod()));
    }
    if let Ok(selector) = FieldSelector::parse(text) {
        let _ = selector.matches(pod());
    }
});

//! The pod-template-hash: a short, stable name for "this exact pod template".
//!
//! A Deployment names its ReplicaSets `<deployment>-<hash>` and puts the hash in their
//! selector, so each ReplicaSet only sees pods of its own template. The hash must depend on
//! the template's *content* only — not on map order, nulls, or the hash label itself — so that:
//! - the same template always gives the same ReplicaSet (a second pass finds, not re-creates);
//! - `kubectl rollout undo`, which copies an old ReplicaSet's template (minus the hash label)
//!   back into the Deployment, lands on that old ReplicaSet again.
//!
//! Kubernetes hashes Go's printout of the struct with FNV-32a. skiff hashes a canonical JSON
//! form instead (keys sorted, nulls dropped, the `pod-template-hash` label removed) with the
//! same FNV-32a, and renders it the same way: the decimal digits of the 32-bit hash mapped into
//! [`ALPHANUMS`](crate::child_names::ALPHANUMS) (`3837541652` → `7d7c985b96`). The values differ
//! from Kubernetes' (the inputs differ) but look alike and behave alike.
use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

use crate::child_names::safe_encode;

/// The label (on ReplicaSets, their selectors and pods) that holds the hash.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The hash of `template`. `collision_count` (from the Deployment's status) is mixed in only
/// when set, so bumping it gives a fresh name when two templates ever hash alike.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hash = Fnv32a::new();
    hash.write(canonical(&normalised(template)).as_bytes());
    if let Some(count) = collision_count {
        // As Kubernetes: the count as a little-endian u32 in an 8-byte buffer.
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(count as u32).to_le_bytes());
        hash.write(&bytes);
    }
    safe_encode(&hash.0.to_string())
}

/// Whether two templates are the same apart from the hash label (`EqualIgnoreHash`).
pub fn same_template(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    normalised(a) == normalised(b)
}

/// The template as JSON without the hash label, without nulls, and without labels or
/// annotations maps that are left empty.
fn normalised(template: &PodTemplateSpec) -> Value {
    let mut value = serde_json::to_value(template).unwrap_or(Value::Null);
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
            labels.remove(POD_TEMPLATE_HASH);
        }
        for key in ["labels", "annotations"] {
            if meta
                .get(key)
                .and_then(Value::as_object)
                .is_some_and(|m| m.is_empty())
            {
                meta.remove(key);
            }
        }
    }
    drop_nulls(&mut value);
    value
}

fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// JSON text with object keys sorted at every level, whatever map type serde_json was built
/// with, so equal values always give equal bytes.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::from(k.as_str()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", items.join(","))
        }
        leaf => leaf.to_string(),
    }
}

/// FNV-1a, 32 bits: the hash Kubernetes uses for pod templates.
struct Fnv32a(u32);

impl Fnv32a {
    fn new() -> Self {
        Fnv32a(0x811c_9dc5)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(v: Value) -> PodTemplateSpec {
        serde_json::from_value(v).expect("template")
    }

    #[test]
    fn fnv32a_matches_the_reference_vectors() {
        let hash = |s: &str| {
            let mut h = Fnv32a::new();
            h.write(s.as_bytes());
            h.0
        };
        assert_eq!(hash(""), 0x811c_9dc5);
        assert_eq!(hash("a"), 0xe40c_292c);
        assert_eq!(hash("foobar"), 0xbf9c_f968);
        assert_eq!(safe_encode("3837541652"), "7d7c985b96");
    }

    #[test]
    fn stable_for_equal_content() {
        let a = template(
            json!({"metadata": {"labels": {"app": "web", "tier": "front"}},
                                "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}),
        );
        // Same labels in another order, an explicit null, and a hash label: same template.
        let b = template(
            json!({"metadata": {"labels": {"tier": "front", "app": "web",
                                                         POD_TEMPLATE_HASH: "whatever"},
                                             "annotations": {}},
                                "spec": {"containers": [{"image": "nginx:1", "name": "c",
                                                         "command": null}]}}),
        );
        assert_eq!(template_hash(&a, None), template_hash(&b, None));
        assert!(same_template(&a, &b));
        let h = template_hash(&a, None);
        assert!(!h.is_empty() && h.len() <= 10);
        assert!(h
            .bytes()
            .all(|c| crate::child_names::ALPHANUMS.contains(&c)));
    }

    #[test]
    fn changes_with_content_and_collision_count() {
        let a = template(json!({"spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}));
        let b = template(json!({"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}));
        assert_ne!(template_hash(&a, None), template_hash(&b, None));
        assert!(!same_template(&a, &b));
        assert_ne!(template_hash(&a, None), template_hash(&a, Some(1)));
        assert_ne!(template_hash(&a, Some(1)), template_hash(&a, Some(2)));
    }
}

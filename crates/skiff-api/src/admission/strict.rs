//! Unknown fields: what the client sent that the typed object has no place for.
//!
//! k8s-openapi's types silently drop unknown fields when they deserialize, so a mis-indented
//! manifest (`app:` one level too far left, landing in `spec.template.metadata`) would be
//! accepted with the field quietly gone. Kubernetes' `fieldValidation` lets the client choose
//! what happens instead, and to honour it we need the list of dropped fields.
//!
//! We get it by diffing: serialise the typed object back to JSON and walk the client's JSON
//! beside it. A path the client sent (with a non-null value) that is missing from the round
//! trip was dropped, so it is unknown. Values are not compared, only presence: the round trip
//! legitimately rewrites values (timestamps to UTC `Z`).

use serde_json::Value;

/// Dotted paths (`spec.template.metadata.app`, `spec.containers[0].imagePullPolicyy`) of the
/// fields in `input` that `round_trip` has no trace of, in document order.
pub(super) fn unknown_fields(input: &Value, round_trip: &Value) -> Vec<String> {
    let mut found = Vec::new();
    walk(input, round_trip, "", &mut found);
    found
}

fn walk(input: &Value, round_trip: &Value, path: &str, found: &mut Vec<String>) {
    match (input, round_trip) {
        (Value::Object(given), Value::Object(kept)) => {
            for (key, value) in given {
                if value.is_null() {
                    continue;
                }
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match kept.get(key) {
                    Some(kept_value) => walk(value, kept_value, &child, found),
                    None => found.push(child),
                }
            }
        }
        (Value::Array(given), Value::Array(kept)) => {
            for (i, (value, kept_value)) in given.iter().zip(kept).enumerate() {
                walk(value, kept_value, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_dropped_paths() {
        let cases = [
            (json!({"a": 1}), json!({"a": 1}), vec![]),
            (json!({"a": 1, "b": 2}), json!({"a": 1}), vec!["b"]),
            (json!({"a": null}), json!({}), vec![]),
            (
                json!({"spec": {"template": {"metadata": {"labels": null, "app": "x"}}}}),
                json!({"spec": {"template": {"metadata": {}}}}),
                vec!["spec.template.metadata.app"],
            ),
            (
                json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "imagee": "x"}]}}),
                json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}),
                vec!["spec.containers[1].imagee"],
            ),
            // Rewritten values are not unknown fields.
            (
                json!({"t": "2024-01-01T00:00:00+00:00"}),
                json!({"t": "2024-01-01T00:00:00Z"}),
                vec![],
            ),
        ];
        for (input, round_trip, want) in cases {
            assert_eq!(unknown_fields(&input, &round_trip), want, "{input}");
        }
    }
}

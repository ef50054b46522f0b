//! PATCH bodies applied to stored objects.
//!
//! The Content-Type says which patch language the body speaks:
//! - `application/merge-patch+json` (RFC 7386): `kubectl label`, `annotate`, `scale`.
//! - `application/json-patch+json` (RFC 6902): `kubectl patch --type=json`.
//! - `application/strategic-merge-patch+json`: `kubectl apply`, `set image`, the Python
//!   client's `patch_*`. Lists of named things merge by key; see [`strategic`].
//! - `application/apply-patch+yaml`: server-side apply, in [`apply`] (it needs the field
//!   manager and its ownership records, so the API server calls it directly).
//!
//! The result is a whole object again; the caller runs it through
//! [`admit`](crate::admission::admit) and [`validate_update`](crate::admission::validate_update)
//! like any update.

pub mod apply;
pub mod strategic;

use serde_json::Value;

use crate::decode::json_type;
use crate::status::{ApiError, Cause};

/// The patch languages a PATCH request can speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// RFC 7386 JSON merge patch: objects merge, everything else (lists too) replaces, `null`
    /// deletes.
    Merge,
    /// RFC 6902 JSON patch: a list of `add`/`remove`/`replace`/`move`/`copy`/`test` operations.
    Json,
    /// Kubernetes' strategic merge patch: like a merge patch, but lists of named things
    /// (containers, ports, env) merge by key, from the table in [`strategic::RULES`]. Treating
    /// it as a plain merge patch would corrupt objects (`kubectl set image` would drop every
    /// other container).
    Strategic,
    /// Server-side apply: see [`apply`]; not a patch of the stored object on its own.
    Apply,
}

/// The most operations one JSON patch may have (kube-apiserver's `maxJSONPatchOperations`).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The most bytes all the `copy` operations of one JSON patch may copy together: the largest
/// object a request may carry. Each `copy` of a value into itself doubles it, so without this
/// a 1.6 KB patch of 30 copies would ask for gigabytes (CVE-2019-1002100).
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 * 1024 * 1024;

/// Patch types we apply, for the 415 message.
const ACCEPTED: &str = "application/json-patch+json, application/merge-patch+json, \
                        application/strategic-merge-patch+json";

impl PatchType {
    /// The patch type of a PATCH request's Content-Type (parameters ignored).
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media_type.as_str() {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" => Ok(PatchType::Apply),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format ({other}) - accepted media types include: {ACCEPTED}"
            ))),
        }
    }
}

/// Applies a PATCH body of the given Content-Type to the current object.
///
/// A body that is not a valid patch is a `400`; a JSON patch operation that cannot apply
/// (missing path, failed `test`) is a `422 Invalid` naming the operation, as Kubernetes answers
/// a failed JSON patch with 422.
pub fn apply_patch(
    current: &Value,
    patch_bytes: &[u8],
    content_type: &str,
) -> Result<Value, ApiError> {
    let patched = match PatchType::from_content_type(content_type)? {
        PatchType::Merge => {
            let patch: Value = serde_json::from_slice(patch_bytes)
                .map_err(|e| ApiError::BadRequest(format!("error decoding merge patch: {e}")))?;
            let mut doc = current.clone();
            json_patch::merge(&mut doc, &patch);
            doc
        }
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_slice(patch_bytes)
                .map_err(|e| ApiError::BadRequest(format!("error decoding json patch: {e}")))?;
            apply_json_patch(current, &patch)?
        }
        PatchType::Strategic => {
            let patch: Value = serde_json::from_slice(patch_bytes).map_err(|e| {
                ApiError::BadRequest(format!("error decoding strategic merge patch: {e}"))
            })?;
            strategic::strategic_merge(current, &patch)?
        }
        PatchType::Apply => {
            return Err(ApiError::BadRequest(
                "server-side apply is handled with its field manager, not as a plain patch".into(),
            ))
        }
    };
    if !patched.is_object() {
        return Err(ApiError::BadRequest(format!(
            "the patched object must be an object, not {}",
            json_type(&patched)
        )));
    }
    Ok(patched)
}

/// Applies an RFC 6902 patch one operation at a time, refusing one with too many operations or
/// whose copies would grow the object past [`MAX_JSON_PATCH_COPY_BYTES`] before doing the work.
fn apply_json_patch(current: &Value, patch: &json_patch::Patch) -> Result<Value, ApiError> {
    if patch.0.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(ApiError::RequestEntityTooLarge(format!(
            "The allowed number of operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, but found {}",
            patch.0.len()
        )));
    }
    let mut doc = current.clone();
    let mut copied = 0usize;
    for (index, operation) in patch.0.iter().enumerate() {
        if let json_patch::PatchOperation::Copy(copy) = operation {
            // A missing `from` is the operation's own error, reported below.
            if let Some(value) = doc.pointer(copy.from.as_str()) {
                copied = copied.saturating_add(json_size(value, MAX_JSON_PATCH_COPY_BYTES));
                if copied > MAX_JSON_PATCH_COPY_BYTES {
                    return Err(ApiError::RequestEntityTooLarge(format!(
                        "the copy operations of this JSON patch would copy more than {MAX_JSON_PATCH_COPY_BYTES} bytes (operation {index} copies from {:?})",
                        copy.from.as_str()
                    )));
                }
            }
        }
        if let Err(e) = json_patch::patch(&mut doc, std::slice::from_ref(operation)) {
            return Err(failed_operation(current, index, operation, &e));
        }
    }
    Ok(doc)
}

/// The size of `value` as compact JSON, counted without writing it out, and only up to a bit
/// past `limit` (the count stops there: a value far larger costs no more to measure).
fn json_size(value: &Value, limit: usize) -> usize {
    struct Count {
        bytes: usize,
        limit: usize,
    }
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes += buf.len();
            if self.bytes > self.limit {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count { bytes: 0, limit };
    let _ = serde_json::to_writer(&mut count, value);
    count.bytes
}

/// The `422` for a JSON patch operation that could not apply, naming the object (from its own
/// `apiVersion`, `kind` and name), the operation and the field.
fn failed_operation(
    current: &Value,
    index: usize,
    operation: &json_patch::PatchOperation,
    error: &json_patch::PatchError,
) -> ApiError {
    let text = |pointer: &str| {
        current
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let group = text("/apiVersion")
        .split_once('/')
        .map(|(group, _)| group)
        .unwrap_or("");
    let kind = match group {
        "" => text("/kind").to_string(),
        group => format!("{}.{group}", text("/kind")),
    };
    let op = match operation {
        json_patch::PatchOperation::Add(_) => "add",
        json_patch::PatchOperation::Remove(_) => "remove",
        json_patch::PatchOperation::Replace(_) => "replace",
        json_patch::PatchOperation::Move(_) => "move",
        json_patch::PatchOperation::Copy(_) => "copy",
        json_patch::PatchOperation::Test(_) => "test",
    };
    // `/spec/containers/0/image` → `spec.containers[0].image`, the way every other error
    // names fields.
    let mut field = String::new();
    for token in error.path.tokens() {
        let token = token.decoded();
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            field.push_str(&format!("[{token}]"));
        } else {
            if !field.is_empty() {
                field.push('.');
            }
            field.push_str(&token);
        }
    }
    ApiError::Invalid {
        kind,
        name: text("/metadata/name").to_string(),
        causes: vec![Cause {
            reason: "FieldValueInvalid".to_string(),
            message: format!(
                "json patch operation {} ({op} {}) failed: {}",
                index, error.path, error.kind
            ),
            field,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}
        })
    }

    #[test]
    fn merge_patches() {
        let cases = [
            (r#"{"spec": {"replicas": 3}}"#, "/spec/replicas", json!(3)),
            (
                r#"{"metadata": {"labels": {"tier": null, "env": "prod"}}}"#,
                "/metadata/labels",
                json!({"app": "web", "env": "prod"}),
            ),
            // Lists replace: this is why strategic merge patch exists.
            (
                r#"{"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:2"}]}}}}"#,
                "/spec/template/spec/containers",
                json!([{"name": "a", "image": "a:2"}]),
            ),
        ];
        for (patch, pointer, want) in cases {
            let patched = apply_patch(
                &deployment(),
                patch.as_bytes(),
                "application/merge-patch+json; charset=utf-8",
            )
            .expect(patch);
            assert_eq!(patched.pointer(pointer), Some(&want), "{patch}");
        }
    }

    #[test]
    fn json_patches() {
        let patch = r#"[
            {"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "b:2"},
            {"op": "add", "path": "/metadata/labels/env", "value": "prod"},
            {"op": "test", "path": "/spec/replicas", "value": 1}
        ]"#;
        let patched = apply_patch(
            &deployment(),
            patch.as_bytes(),
            "application/json-patch+json",
        )
        .expect("applies");
        assert_eq!(
            patched.pointer("/spec/template/spec/containers/1/image"),
            Some(&json!("b:2"))
        );
        assert_eq!(
            patched.pointer("/spec/template/spec/containers/0/image"),
            Some(&json!("a:1"))
        );
        assert_eq!(
            patched.pointer("/metadata/labels/env"),
            Some(&json!("prod"))
        );
    }

    /// `n` operations each copying `/metadata` into itself: every one doubles the object.
    fn copy_bomb(n: usize) -> String {
        let ops: Vec<Value> = (0..n)
            .map(|i| json!({"op": "copy", "from": "/metadata", "path": format!("/metadata/a{i}")}))
            .collect();
        Value::Array(ops).to_string()
    }

    #[test]
    fn a_json_patch_copy_bomb_is_refused_before_the_work() {
        // 40 doublings of a ~150-byte value would be 150 TB; refused as soon as the copies
        // pass the limit, after about 15 of them.
        let error = apply_patch(
            &deployment(),
            copy_bomb(40).as_bytes(),
            "application/json-patch+json",
        )
        .expect_err("refused");
        assert_eq!(error.code(), 413, "{error}");
        assert!(error.to_string().contains("copy"), "{error}");
        // A few copies are fine.
        let patched = apply_patch(
            &deployment(),
            copy_bomb(3).as_bytes(),
            "application/json-patch+json",
        )
        .expect("three copies");
        assert!(patched.pointer("/metadata/a2/a1/a0/name").is_some());
    }

    #[test]
    fn a_json_patch_has_at_most_ten_thousand_operations() {
        let ops: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
            .map(|_| json!({"op": "test", "path": "/spec/replicas", "value": 1}))
            .collect();
        let error = apply_patch(
            &deployment(),
            Value::Array(ops).to_string().as_bytes(),
            "application/json-patch+json",
        )
        .expect_err("refused");
        assert_eq!(error.code(), 413, "{error}");
        assert!(error.to_string().contains("10000"), "{error}");
    }

    #[test]
    fn failed_json_patch_operations_are_invalid() {
        let patch = r#"[
            {"op": "add", "path": "/metadata/labels/env", "value": "prod"},
            {"op": "replace", "path": "/spec/template/spec/containers/5/image", "value": "x"}
        ]"#;
        let error = apply_patch(
            &deployment(),
            patch.as_bytes(),
            "application/json-patch+json",
        )
        .expect_err("fails");
        assert_eq!(error.code(), 422);
        let ApiError::Invalid { kind, name, causes } = &error else {
            panic!("{error:?}")
        };
        assert_eq!((kind.as_str(), name.as_str()), ("Deployment.apps", "web"));
        assert_eq!(causes[0].field, "spec.template.spec.containers[5].image");
        assert_eq!(
            causes[0].message,
            "json patch operation 1 (replace /spec/template/spec/containers/5/image) failed: path is invalid"
        );

        let failed_test = r#"[{"op": "test", "path": "/spec/replicas", "value": 2}]"#;
        let error = apply_patch(
            &deployment(),
            failed_test.as_bytes(),
            "application/json-patch+json",
        )
        .expect_err("fails");
        assert!(
            error
                .to_string()
                .contains("(test /spec/replicas) failed: value did not match"),
            "{error}"
        );
    }

    #[test]
    fn bad_patches_and_types() {
        let cases: &[(&str, &str, u16)] = &[
            ("{not json", "application/merge-patch+json", 400),
            (r#"{"op": "add"}"#, "application/json-patch+json", 400),
            (
                r#"[{"op": "frobnicate", "path": "/a"}]"#,
                "application/json-patch+json",
                400,
            ),
            ("[]", "application/merge-patch+json", 400),
            ("{not json", "application/strategic-merge-patch+json", 400),
            ("[]", "application/strategic-merge-patch+json", 400),
            ("{}", "application/apply-patch+yaml", 400),
            ("{}", "text/plain", 415),
        ];
        for (patch, content_type, code) in cases {
            let result = apply_patch(&deployment(), patch.as_bytes(), content_type);
            assert_eq!(
                result.map_err(|e| e.code()),
                Err(*code),
                "{content_type} {patch}"
            );
        }
        assert!(matches!(
            apply_patch(&deployment(), b"{}", "text/plain"),
            Err(ApiError::UnsupportedMediaType(m)) if m.contains("(text/plain)")
        ));
    }
}

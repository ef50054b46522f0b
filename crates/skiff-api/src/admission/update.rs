//! Updates: the fields that may not change once an object exists.
//!
//! Identity (name, namespace, uid) never changes: a different name is a different object. A
//! workload's selector is fixed because its controller finds the pods it owns by it; changing
//! it would orphan them. A Service's cluster IP is fixed because clients have resolved it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use super::validation::go_label_selector;
use crate::resources::ResourceInfo;
use crate::status::{go_quote, ApiError, Cause};

const IMMUTABLE: &str = "field is immutable";

/// Checks an update of `old` (as stored) to `new` (as admitted) for changes to immutable
/// fields; every such change is a cause of one `422 Invalid`.
///
/// An empty `metadata.namespace` or `metadata.uid` in `new` means "not sent": the server fills
/// them from the URL and the stored object, as Kubernetes does, so they are not changes.
pub fn validate_update(info: &ResourceInfo, old: &Value, new: &Value) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    for (field, pointer, may_be_omitted) in [
        ("metadata.name", "/metadata/name", false),
        ("metadata.namespace", "/metadata/namespace", true),
        ("metadata.uid", "/metadata/uid", true),
    ] {
        let (old_value, new_value) = (text_at(old, pointer), text_at(new, pointer));
        if old_value != new_value && !(may_be_omitted && new_value.is_empty()) {
            causes.push(Cause::invalid(field, &go_quote(new_value), IMMUTABLE));
        }
    }

    match info.kind {
        "Deployment" | "ReplicaSet" | "DaemonSet" => {
            let (old_selector, new_selector) = (selector_at(old), selector_at(new));
            if old_selector != new_selector {
                causes.push(Cause::invalid(
                    "spec.selector",
                    &go_label_selector(&new_selector),
                    IMMUTABLE,
                ));
            }
        }
        "Service" => {
            let (old_ip, new_ip) = (
                text_at(old, "/spec/clusterIP"),
                text_at(new, "/spec/clusterIP"),
            );
            // An update that leaves the IP out keeps the allocated one; the caller copies it.
            if !old_ip.is_empty() && !new_ip.is_empty() && old_ip != new_ip {
                causes.push(Cause::invalid(
                    "spec.clusterIP",
                    &go_quote(new_ip),
                    IMMUTABLE,
                ));
            }
        }
        // A binding's grant is its role: changing which role would change what it means
        // under the feet of everyone who reviewed it, so Kubernetes refuses.
        "RoleBinding" | "ClusterRoleBinding" => {
            let (old_ref, new_ref) = (old.get("roleRef"), new.get("roleRef"));
            if old_ref != new_ref {
                causes.push(Cause::invalid(
                    "roleRef",
                    &go_role_ref(new_ref),
                    "cannot change roleRef",
                ));
            }
        }
        // What a Job runs, and how many times, is fixed once it has started.
        "Job" => {
            for (field, pointer) in [
                ("spec.selector", "/spec/selector"),
                ("spec.template", "/spec/template"),
                ("spec.completions", "/spec/completions"),
                ("spec.completionMode", "/spec/completionMode"),
            ] {
                if old.pointer(pointer) != new.pointer(pointer) {
                    let shown = new
                        .pointer(pointer)
                        .map(Value::to_string)
                        .unwrap_or_default();
                    causes.push(Cause::invalid(field, &shown, IMMUTABLE));
                }
            }
        }
        // A StatefulSet's identity (which pods, which claims, which Service names them) is
        // fixed; how many, what they run and how they are updated may change.
        "StatefulSet" => {
            let mutable = [
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "revisionHistoryLimit",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
            ];
            let fixed = |object: &Value| {
                let mut spec = object.get("spec").cloned().unwrap_or_default();
                if let Some(spec) = spec.as_object_mut() {
                    spec.retain(|k, _| !mutable.contains(&k.as_str()));
                }
                spec
            };
            if fixed(old) != fixed(new) {
                causes.push(Cause::forbidden(
                    "spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', \
                     'template', 'updateStrategy', 'revisionHistoryLimit', \
                     'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                ));
            }
        }
        // A claim is a request that may have been answered: only its size may grow, and the
        // binder may fill in the volume and the class it left open.
        "PersistentVolumeClaim" => {
            let mut old_spec = old.get("spec").cloned().unwrap_or_default();
            let mut new_spec = new.get("spec").cloned().unwrap_or_default();
            for spec in [&mut old_spec, &mut new_spec] {
                if let Some(spec) = spec.as_object_mut() {
                    spec.remove("resources");
                }
            }
            for field in ["volumeName", "storageClassName"] {
                let was = old_spec.get(field).and_then(Value::as_str).unwrap_or("");
                if was.is_empty() {
                    if let Some(spec) = old_spec.as_object_mut() {
                        spec.remove(field);
                    }
                    if let Some(spec) = new_spec.as_object_mut() {
                        spec.remove(field);
                    }
                }
            }
            if old_spec != new_spec {
                causes.push(Cause::forbidden(
                    "spec",
                    "spec is immutable after creation except resources.requests and \
                     volumeAttributesClassName for bound claims",
                ));
            }
        }
        // What a volume is and where it lives are facts about the disk.
        "PersistentVolume" => {
            for (field, pointer) in [
                ("spec.persistentvolumesource", "/spec/hostPath"),
                ("spec.persistentvolumesource", "/spec/local"),
                ("spec.nodeAffinity", "/spec/nodeAffinity"),
                ("spec.volumeMode", "/spec/volumeMode"),
            ] {
                if old.pointer(pointer) != new.pointer(pointer) {
                    causes.push(Cause::forbidden(
                        field,
                        &format!("{field} is forbidden to update"),
                    ));
                }
            }
        }
        "StorageClass" => {
            if old.get("parameters") != new.get("parameters") {
                causes.push(Cause::forbidden(
                    "parameters",
                    "updates to parameters are forbidden.",
                ));
            }
            for field in ["provisioner", "reclaimPolicy", "volumeBindingMode"] {
                let (was, now) = (
                    text_at(old, &format!("/{field}")),
                    text_at(new, &format!("/{field}")),
                );
                if was != now {
                    causes.push(Cause::invalid(field, &go_quote(now), IMMUTABLE));
                }
            }
        }
        _ => {}
    }

    if causes.is_empty() {
        Ok(())
    } else {
        let name = text_at(new, "/metadata/name");
        Err(ApiError::invalid(info, name, causes))
    }
}

/// A roleRef as Go's `%#v` prints it.
fn go_role_ref(role_ref: Option<&Value>) -> String {
    let field = |name: &str| go_quote(role_ref.and_then(|r| r.get(name)?.as_str()).unwrap_or(""));
    format!(
        "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
        field("apiGroup"),
        field("kind"),
        field("name")
    )
}

fn text_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `spec.selector` with empty maps and lists made absent: Kubernetes compares selectors with
/// semantic equality, under which `matchLabels: {}` and no `matchLabels` are the same.
fn selector_at(object: &Value) -> LabelSelector {
    let mut selector: LabelSelector = object
        .pointer("/spec/selector")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    if selector.match_labels.as_ref().is_some_and(|m| m.is_empty()) {
        selector.match_labels = None;
    }
    if selector
        .match_expressions
        .as_ref()
        .is_some_and(|e| e.is_empty())
    {
        selector.match_expressions = None;
    }
    for expr in selector.match_expressions.iter_mut().flatten() {
        if expr.values.as_ref().is_some_and(|v| v.is_empty()) {
            expr.values = None;
        }
    }
    selector
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;
    use serde_json::json;

    fn info(kind: &str) -> &'static ResourceInfo {
        resources::RESOURCES
            .iter()
            .find(|r| r.kind == kind)
            .expect("served kind")
    }

    fn object(name: &str, spec: Value) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "uid": "u1"}, "spec": spec})
    }

    #[test]
    fn immutable_fields() {
        let selector = |app: &str| json!({"selector": {"matchLabels": {"app": app}}});
        let cases: Vec<(&str, Value, Value, Vec<&str>)> = vec![
            ("Deployment", object("d", selector("a")), object("d", selector("a")), vec![]),
            (
                "Deployment",
                object("d", selector("a")),
                object("d", json!({"selector": {"matchLabels": {"app": "a"}, "matchExpressions": []}})),
                vec![],
            ),
            (
                "Deployment",
                object("d", selector("a")),
                object("d", selector("b")),
                vec![
                    "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"b\"}, \
                     MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable",
                ],
            ),
            ("ReplicaSet", object("r", selector("a")), object("r", selector("b")), vec!["field is immutable"]),
            ("Pod", object("p", json!({})), object("q", json!({})), vec![r#"metadata.name: Invalid value: "q": field is immutable"#]),
            (
                "Pod",
                object("p", json!({})),
                json!({"metadata": {"name": "p"}, "spec": {}}),
                vec![],
            ),
            (
                "Pod",
                object("p", json!({})),
                json!({"metadata": {"name": "p", "namespace": "other", "uid": "u2"}}),
                vec![
                    r#"metadata.namespace: Invalid value: "other": field is immutable"#,
                    r#"metadata.uid: Invalid value: "u2": field is immutable"#,
                ],
            ),
            (
                "Service",
                object("s", json!({"clusterIP": "10.96.0.10"})),
                object("s", json!({"clusterIP": "10.96.0.11"})),
                vec![r#"spec.clusterIP: Invalid value: "10.96.0.11": field is immutable"#],
            ),
            ("Service", object("s", json!({"clusterIP": "10.96.0.10"})), object("s", json!({})), vec![]),
            // A claim may grow and be bound; nothing else of it changes.
            (
                "PersistentVolumeClaim",
                object("c", json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}})),
                object("c", json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}},
                    "volumeName": "pv1", "storageClassName": "local-path"})),
                vec![],
            ),
            (
                "PersistentVolumeClaim",
                object("c", json!({"accessModes": ["ReadWriteOnce"], "volumeName": "pv1"})),
                object("c", json!({"accessModes": ["ReadWriteMany"], "volumeName": "pv2"})),
                vec!["spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"],
            ),
            (
                "PersistentVolume",
                object("v", json!({"hostPath": {"path": "/a"}})),
                object("v", json!({"hostPath": {"path": "/"}, "claimRef": {"name": "c"}})),
                vec!["spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is forbidden to update"],
            ),
            (
                "StatefulSet",
                object("s", json!({"replicas": 1, "serviceName": "web"})),
                object("s", json!({"replicas": 3, "serviceName": "web"})),
                vec![],
            ),
            (
                "StatefulSet",
                object("s", json!({"serviceName": "web"})),
                object("s", json!({"serviceName": "other"})),
                vec!["'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"],
            ),
        ];
        for (kind, old, new, want) in cases {
            match validate_update(info(kind), &old, &new) {
                Ok(()) => assert!(want.is_empty(), "{kind}: expected {want:?}"),
                Err(ApiError::Invalid { causes, .. }) => {
                    let got: Vec<String> = causes.iter().map(ToString::to_string).collect();
                    assert_eq!(got.len(), want.len(), "{kind}: {got:?}");
                    for (got, want) in got.iter().zip(&want) {
                        assert!(got.ends_with(want), "{kind}: {got} vs {want}");
                    }
                }
                Err(other) => panic!("{kind}: {other:?}"),
            }
        }
    }
}

//! Pod Security admission, as Kubernetes' built-in admission plugin: each namespace's labels
//! say which Pod Security Standard (see [`skiff_api::pod_security`]) its pods must meet.
//!
//! | label | effect |
//! |---|---|
//! | `pod-security.kubernetes.io/enforce: LEVEL` | a pod that violates LEVEL is refused (403) |
//! | `pod-security.kubernetes.io/warn: LEVEL` | the write succeeds with a `Warning:` naming the violations, for pods and for workloads' pod templates |
//! | `pod-security.kubernetes.io/audit: LEVEL` | accepted and ignored (no audit log yet) |
//!
//! A namespace without an `enforce` label gets the server's default (`--pod-security`,
//! `baseline` unless the operator says otherwise) for both enforce and warn. `kube-system`,
//! `kube-public` and `kube-node-lease` are exempt: the system's own pods run there. Workloads
//! (Deployments, ReplicaSets) only warn, as in Kubernetes: it is their pods that are refused,
//! which the ReplicaSet controller reports as `FailedCreate` events.
use serde_json::Value;
use skiff_api::pod_security::{self as pss, Level};
use skiff_api::status::ApiError;
use skiff_store::object_key;

use super::{Result, View};

/// Namespaces whose pods are not checked.
pub const EXEMPT_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];

/// The (enforce, warn) levels of `namespace`.
pub fn levels(view: &dyn View, namespace: &str) -> (Level, Level) {
    if EXEMPT_NAMESPACES.contains(&namespace) {
        return (Level::Privileged, Level::Privileged);
    }
    let ns = view.get(&object_key("namespaces", "", namespace));
    let label = |key: &str| {
        ns.as_ref()
            .and_then(|ns| ns.pointer("/metadata/labels"))
            .and_then(|labels| labels.get(key))
            .and_then(Value::as_str)
            .and_then(Level::parse)
    };
    let enforce = label(pss::ENFORCE).unwrap_or_else(|| view.pod_security_default());
    let warn = label(pss::WARN).unwrap_or(enforce);
    (enforce, warn)
}

/// Checks a pod (`object`) written to `namespace`: refused if it violates the enforced level,
/// warned if it violates the warn level. An update that leaves the spec as it was is not
/// checked again (labels, annotations, finalizers change on pods that were admitted before a
/// namespace's level was raised).
pub fn admit_pod(
    view: &dyn View,
    namespace: &str,
    object: &Value,
    old: Option<&Value>,
) -> Result<Vec<String>> {
    if old.is_some_and(|old| old.get("spec") == object.get("spec")) {
        return Ok(Vec::new());
    }
    let (enforce, warn) = levels(view, namespace);
    let Some((meta, spec)) = typed_pod(object.get("metadata"), object.get("spec")) else {
        return Ok(Vec::new());
    };
    let violations = pss::check(enforce, &meta, &spec);
    if !violations.is_empty() {
        let name = meta.name.as_deref().unwrap_or("");
        return Err(ApiError::Forbidden(format!(
            "pods {name:?} is forbidden: {}",
            pss::forbidden_message(enforce, &violations)
        )));
    }
    Ok(warning(warn, &meta, &spec))
}

/// The warning a workload's pod template earns (never a refusal).
pub fn admit_template(view: &dyn View, namespace: &str, object: &Value) -> Vec<String> {
    let (_, warn) = levels(view, namespace);
    let template = object.pointer("/spec/template");
    match typed_pod(
        template.and_then(|t| t.get("metadata")),
        template.and_then(|t| t.get("spec")),
    ) {
        Some((meta, spec)) => warning(warn, &meta, &spec),
        None => Vec::new(),
    }
}

fn warning(
    level: Level,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: &k8s_openapi::api::core::v1::PodSpec,
) -> Vec<String> {
    let violations = pss::check(level, meta, spec);
    if violations.is_empty() {
        Vec::new()
    } else {
        vec![pss::warning_message(level, &violations)]
    }
}

/// The typed metadata and spec of an admitted pod or template (admission made them decodable).
fn typed_pod(
    meta: Option<&Value>,
    spec: Option<&Value>,
) -> Option<(
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    k8s_openapi::api::core::v1::PodSpec,
)> {
    let meta = serde_json::from_value(meta.cloned().unwrap_or_default()).unwrap_or_default();
    let spec = serde_json::from_value(spec?.clone()).ok()?;
    Some((meta, spec))
}

/// Checks a namespace's Pod Security labels, and warns when a new enforce level would refuse
/// pods already running there (they keep running; Kubernetes warns the same way).
pub fn admit_namespace(
    view: &dyn View,
    object: &Value,
    old: Option<&Value>,
) -> Result<Vec<String>> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let labels = object
        .pointer("/metadata/labels")
        .and_then(Value::as_object);
    for key in [pss::ENFORCE, pss::WARN, pss::AUDIT] {
        if let Some(value) = labels.and_then(|l| l.get(key)).and_then(Value::as_str) {
            if Level::parse(value).is_none() {
                return Err(ApiError::Forbidden(format!(
                    "namespaces {name:?} is forbidden: metadata.labels[{key}]: Invalid value: \
                     {value:?}: must be one of privileged, baseline, restricted"
                )));
            }
        }
    }
    let enforce_of = |ns: Option<&Value>| {
        ns.and_then(|ns| ns.pointer("/metadata/labels"))
            .and_then(|l| l.get(pss::ENFORCE))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let new = enforce_of(Some(object));
    let (Some(old), Some(level)) = (old, new.as_deref().and_then(Level::parse)) else {
        return Ok(Vec::new());
    };
    if enforce_of(Some(old)) == new || EXEMPT_NAMESPACES.contains(&name) {
        return Ok(Vec::new());
    }
    let mut warnings = Vec::new();
    for pod in view.list(&skiff_store::key_prefix("pods", Some(name))) {
        let Some((meta, spec)) = typed_pod(pod.get("metadata"), pod.get("spec")) else {
            continue;
        };
        let violations = pss::check(level, &meta, &spec);
        if !violations.is_empty() {
            let parts: Vec<String> = violations.iter().map(ToString::to_string).collect();
            warnings.push(format!(
                "{}: {}",
                meta.name.as_deref().unwrap_or(""),
                parts.join(", ")
            ));
        }
    }
    if !warnings.is_empty() {
        warnings.insert(
            0,
            format!("existing pods in namespace {name:?} violate the new PodSecurity enforce level \"{level}:latest\""),
        );
    }
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::fake::FakeView;
    use serde_json::json;

    fn privileged_pod() -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "i", "securityContext": {"privileged": true}}]}})
    }

    #[test]
    fn namespaces_choose_their_level_and_system_ones_are_exempt() {
        let view = FakeView::default()
            .with(
                "namespaces",
                json!({"metadata": {"name": "lab", "labels": {pss::ENFORCE: "privileged"}}}),
            )
            .with("namespaces", json!({"metadata": {"name": "shop"}}));
        let refused =
            admit_pod(&view, "shop", &privileged_pod(), None).expect_err("baseline by default");
        assert_eq!(
            refused.to_string(),
            r#"pods "p" is forbidden: violates PodSecurity "baseline:latest": privileged (container "c" must not set securityContext.privileged=true)"#
        );
        assert!(admit_pod(&view, "lab", &privileged_pod(), None).is_ok());
        assert!(admit_pod(&view, "kube-system", &privileged_pod(), None).is_ok());
        // Metadata-only updates of a pod admitted earlier pass.
        let mut relabelled = privileged_pod();
        relabelled["metadata"]["labels"] = json!({"a": "b"});
        assert!(admit_pod(&view, "shop", &relabelled, Some(&privileged_pod())).is_ok());
        // Workloads warn.
        let deployment = json!({"metadata": {"name": "d"}, "spec": {"template": privileged_pod()}});
        let warnings = admit_template(&view, "shop", &deployment);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with(r#"would violate PodSecurity "baseline:latest": privileged"#)
        );
    }

    #[test]
    fn namespace_labels_are_checked_and_a_raised_level_warns_of_running_pods() {
        let mut pod = privileged_pod();
        pod["metadata"]["namespace"] = json!("shop");
        let view = FakeView::default().with("pods", pod);
        let bad = json!({"metadata": {"name": "shop", "labels": {pss::ENFORCE: "strict"}}});
        assert!(admit_namespace(&view, &bad, None).is_err());
        let old = json!({"metadata": {"name": "shop"}});
        let raised = json!({"metadata": {"name": "shop", "labels": {pss::ENFORCE: "baseline"}}});
        let warnings = admit_namespace(&view, &raised, Some(&old)).expect("allowed");
        assert_eq!(
            warnings[0],
            r#"existing pods in namespace "shop" violate the new PodSecurity enforce level "baseline:latest""#
        );
        assert!(warnings[1].starts_with("p: privileged"));
    }
}

//! Validation: every problem with an object, as field causes for one `422 Invalid`.
//!
//! Each check follows `pkg/apis/*/validation` of Kubernetes 1.33, with its field paths and
//! wording, and adds to a list rather than returning early: a user fixing a manifest wants all
//! the problems at once. Values in messages are printed the way Go's `%#v` prints them
//! (`map[string]string{"app":"x"}`), because that is what people search the web for.
//!
//! ## Layout
//! - this file: object metadata, labels, annotations, label selectors, Go-style printing.
//! - `pod`: pod specs, for Pods and for pod templates.
//! - `service`: Services, Endpoints and EndpointSlices.
//! - `apps`: Deployments, ReplicaSets, StatefulSets and DaemonSets.
//! - `batch`: Jobs.
//! - `config`: ConfigMaps and Secrets.
//! - `quota`: ResourceQuotas.
//! - `rbac`: Roles, ClusterRoles and their bindings.
//! - `storage`: PersistentVolumes, PersistentVolumeClaims and StorageClasses.

pub(super) mod apps;
pub(super) mod autoscaling;
pub(super) mod batch;
pub(super) mod config;
pub(super) mod coordination;
pub(super) mod pod;
pub(super) mod quota;
pub(super) mod rbac;
pub(super) mod service;
pub(super) mod storage;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names::{self, NameRule};
use crate::status::{go_quote, Cause};

/// Kubernetes' limit on the total size of an object's annotations (256 KiB).
const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// `metadata`: the name (or generateName), namespace, labels and annotations.
pub(super) fn object_meta(meta: &ObjectMeta, rule: NameRule) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = meta.name.as_deref().unwrap_or("");
    let generate_name = meta.generate_name.as_deref().unwrap_or("");
    if !generate_name.is_empty() {
        for msg in rule.check(generate_name, true) {
            causes.push(Cause::invalid(
                "metadata.generateName",
                &go_quote(generate_name),
                &msg,
            ));
        }
    }
    if name.is_empty() {
        // With only generateName the server makes the name up, before this runs; a name may
        // still be missing here when the caller validates first and generates after.
        if generate_name.is_empty() {
            causes.push(Cause::required_because(
                "metadata.name",
                "name or generateName is required",
            ));
        }
    } else {
        for msg in rule.check(name, false) {
            causes.push(Cause::invalid("metadata.name", &go_quote(name), &msg));
        }
    }
    if let Some(namespace) = meta.namespace.as_deref().filter(|ns| !ns.is_empty()) {
        for msg in names::dns1123_label(namespace) {
            causes.push(Cause::invalid(
                "metadata.namespace",
                &go_quote(namespace),
                &msg,
            ));
        }
    }
    causes.extend(labels(meta.labels.as_ref(), "metadata.labels"));
    causes.extend(annotations(
        meta.annotations.as_ref(),
        "metadata.annotations",
    ));
    causes
}

/// Label keys must be qualified names and values short label values. Both kinds of problem
/// are reported at the map's path, as Kubernetes does.
pub(super) fn labels(labels: Option<&BTreeMap<String, String>>, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    for (key, value) in labels.into_iter().flatten() {
        causes.extend(label_key(key, path));
        for msg in names::label_value(value) {
            causes.push(Cause::invalid(path, &go_quote(value), &msg));
        }
    }
    causes
}

fn label_key(key: &str, path: &str) -> Vec<Cause> {
    names::qualified_name(key)
        .into_iter()
        .map(|msg| Cause::invalid(path, &go_quote(key), &msg))
        .collect()
}

/// Annotation keys are qualified names (case-insensitively); values are free-form but share
/// a size budget.
pub(super) fn annotations(
    annotations: Option<&BTreeMap<String, String>>,
    path: &str,
) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut total = 0;
    for (key, value) in annotations.into_iter().flatten() {
        for msg in names::qualified_name(&key.to_lowercase()) {
            causes.push(Cause::invalid(path, &go_quote(key), &msg));
        }
        total += key.len() + value.len();
    }
    if total > MAX_ANNOTATIONS_BYTES {
        causes.push(Cause::too_long(path, MAX_ANNOTATIONS_BYTES));
    }
    causes
}

/// The syntax of a `metav1.LabelSelector`: keys, operators and values of each expression.
pub(super) fn label_selector(selector: &LabelSelector, path: &str) -> Vec<Cause> {
    let mut causes = labels(
        selector.match_labels.as_ref(),
        &format!("{path}.matchLabels"),
    );
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let expr_path = format!("{path}.matchExpressions[{i}]");
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => causes.push(Cause::required_because(
                format!("{expr_path}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => causes.push(Cause::forbidden(
                format!("{expr_path}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => causes.push(Cause::invalid(
                format!("{expr_path}.operator"),
                &go_quote(other),
                "not a valid selector operator",
            )),
        }
        causes.extend(label_key(&expr.key, &format!("{expr_path}.key")));
        for (j, value) in values.iter().enumerate() {
            for msg in names::label_value(value) {
                causes.push(Cause::invalid(
                    format!("{expr_path}.values[{j}]"),
                    &go_quote(value),
                    &msg,
                ));
            }
        }
    }
    causes
}

/// `Invalid value: -1: must be greater than or equal to 0` when a count is negative.
pub(super) fn non_negative(value: Option<i64>, path: &str) -> Option<Cause> {
    match value {
        Some(v) if v < 0 => Some(Cause::invalid(
            path,
            &v.to_string(),
            "must be greater than or equal to 0",
        )),
        _ => None,
    }
}

/// `Invalid value` for a port number outside 1–65535 (`path` names the field).
pub(super) fn port_number(port: i32, path: &str) -> Option<Cause> {
    crate::names::port_number(port.into())
        .into_iter()
        .next()
        .map(|msg| Cause::invalid(path, &port.to_string(), &msg))
}

/// `Required value` when empty, `Unsupported value` when not one of `allowed`.
pub(super) fn one_of(value: Option<&str>, path: &str, allowed: &[&str]) -> Option<Cause> {
    match value.unwrap_or("") {
        "" => Some(Cause::required(path)),
        v if allowed.contains(&v) => None,
        v => Some(Cause::not_supported(path, v, allowed)),
    }
}

/// A string map as Go's `%#v` prints it: `map[string]string{"a":"1", "b":"2"}`, or
/// `map[string]string(nil)` when absent.
pub(super) fn go_string_map(map: Option<&BTreeMap<String, String>>) -> String {
    match map {
        None => "map[string]string(nil)".to_string(),
        Some(map) => {
            let entries: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v)))
                .collect();
            format!("map[string]string{{{}}}", entries.join(", "))
        }
    }
}

/// A `metav1.LabelSelector` as Go's `%#v` prints it.
pub(super) fn go_label_selector(selector: &LabelSelector) -> String {
    let expressions = match &selector.match_expressions {
        None => "[]v1.LabelSelectorRequirement(nil)".to_string(),
        Some(exprs) => {
            let items: Vec<String> = exprs
                .iter()
                .map(|e| {
                    let values = match &e.values {
                        None => "[]string(nil)".to_string(),
                        Some(vs) => {
                            let quoted: Vec<String> = vs.iter().map(|v| go_quote(v)).collect();
                            format!("[]string{{{}}}", quoted.join(", "))
                        }
                    };
                    format!(
                        "v1.LabelSelectorRequirement{{Key:{}, Operator:{}, Values:{values}}}",
                        go_quote(&e.key),
                        go_quote(&e.operator)
                    )
                })
                .collect();
            format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
        }
    };
    format!(
        "v1.LabelSelector{{MatchLabels:{}, MatchExpressions:{expressions}}}",
        go_string_map(selector.match_labels.as_ref())
    )
}

/// An int-or-string as it reads in a manifest: `3` or `"25%"`.
pub(super) fn int_or_string(value: &IntOrString) -> String {
    match value {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => go_quote(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(value: serde_json::Value) -> ObjectMeta {
        serde_json::from_value(value).expect("valid ObjectMeta")
    }

    fn printed(causes: &[Cause]) -> Vec<String> {
        causes.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn object_meta_problems() {
        let cases: Vec<(serde_json::Value, NameRule, Vec<&str>)> = vec![
            (json!({"name": "web"}), NameRule::Dns1123Subdomain, vec![]),
            (json!({"generateName": "web-"}), NameRule::Dns1123Subdomain, vec![]),
            (
                json!({}),
                NameRule::Dns1123Subdomain,
                vec!["metadata.name: Required value: name or generateName is required"],
            ),
            (
                json!({"name": "a.b"}),
                NameRule::Dns1123Label,
                vec![r#"metadata.name: Invalid value: "a.b": must not contain dots"#],
            ),
            (
                json!({"name": "web", "labels": {"app": "bad value"}}),
                NameRule::Dns1123Subdomain,
                vec![
                    "metadata.labels: Invalid value: \"bad value\": a valid label must be an empty \
                     string or consist of alphanumeric characters, '-', '_' or '.', and must start \
                     and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or \
                     '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                ],
            ),
            (
                json!({"name": "web", "annotations": {"/x": "1"}}),
                NameRule::Dns1123Subdomain,
                vec![r#"metadata.annotations: Invalid value: "/x": prefix part must be non-empty"#],
            ),
        ];
        for (input, rule, want) in cases {
            assert_eq!(
                printed(&object_meta(&meta(input.clone()), rule)),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn selector_syntax_problems() {
        let selector: LabelSelector = serde_json::from_value(json!({
            "matchExpressions": [
                {"key": "a", "operator": "In"},
                {"key": "b", "operator": "Exists", "values": ["x"]},
                {"key": "c", "operator": "Near"}
            ]
        }))
        .expect("selector");
        assert_eq!(
            printed(&label_selector(&selector, "spec.selector")),
            vec![
                "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
                "spec.selector.matchExpressions[1].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                r#"spec.selector.matchExpressions[2].operator: Invalid value: "Near": not a valid selector operator"#,
            ]
        );
    }

    #[test]
    fn go_printing() {
        let map: BTreeMap<String, String> = [("b", "2"), ("a", "1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(
            go_string_map(Some(&map)),
            r#"map[string]string{"a":"1", "b":"2"}"#
        );
        assert_eq!(go_string_map(None), "map[string]string(nil)");
        assert_eq!(go_string_map(Some(&BTreeMap::new())), "map[string]string{}");
        let selector: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "x"},
            "matchExpressions": [{"key": "t", "operator": "In", "values": ["a", "b"]}]
        }))
        .expect("selector");
        assert_eq!(
            go_label_selector(&selector),
            "v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"x\"}, \
             MatchExpressions:[]v1.LabelSelectorRequirement{v1.LabelSelectorRequirement{Key:\"t\", \
             Operator:\"In\", Values:[]string{\"a\", \"b\"}}}}"
        );
        assert_eq!(
            go_label_selector(&LabelSelector::default()),
            "v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"
        );
    }
}

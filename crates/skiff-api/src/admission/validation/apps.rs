//! Deployments and ReplicaSets: a selector, a pod template it must select, and (for
//! Deployments) a rollout strategy.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStrategy, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sLabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    annotations, go_label_selector, go_string_map, int_or_string, label_selector, labels,
    non_negative, pod,
};
use crate::names;
use crate::selector::LabelSelector;
use crate::status::Cause;

/// `selector_given` says whether the client sent `spec.selector` at all: k8s-openapi turns a
/// missing selector into `{}`, but Kubernetes treats the two differently (missing selects
/// nothing, `{}` selects everything and is rejected as empty).
pub(in crate::admission) fn deployment(d: &Deployment, selector_given: bool) -> Vec<Cause> {
    let spec = d.spec.clone().unwrap_or_default();
    let mut causes = Vec::new();
    causes.extend(non_negative(spec.replicas.map(i64::from), "spec.replicas"));
    causes.extend(selector_and_template(
        &spec.selector,
        selector_given,
        &spec.template,
    ));
    causes.extend(strategy(&spec.strategy.unwrap_or_default()));
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    causes.extend(non_negative(Some(min_ready.into()), "spec.minReadySeconds"));
    causes.extend(non_negative(
        spec.revision_history_limit.map(i64::from),
        "spec.revisionHistoryLimit",
    ));
    if let Some(deadline) = spec.progress_deadline_seconds {
        causes.extend(non_negative(
            Some(deadline.into()),
            "spec.progressDeadlineSeconds",
        ));
        // A rollout cannot be judged stuck before its pods could even count as available.
        if deadline <= min_ready {
            causes.push(Cause::invalid(
                "spec.progressDeadlineSeconds",
                &deadline.to_string(),
                "must be greater than minReadySeconds",
            ));
        }
    }
    causes
}

/// See [`deployment`] for `selector_given`.
pub(in crate::admission) fn replica_set(rs: &ReplicaSet, selector_given: bool) -> Vec<Cause> {
    let spec = rs.spec.clone().unwrap_or_default();
    let mut causes = Vec::new();
    causes.extend(non_negative(spec.replicas.map(i64::from), "spec.replicas"));
    causes.extend(selector_and_template(
        &spec.selector,
        selector_given,
        &spec.template.unwrap_or_default(),
    ));
    causes.extend(non_negative(
        spec.min_ready_seconds.map(i64::from),
        "spec.minReadySeconds",
    ));
    causes
}

/// The selector, and the template it must select. This is the check that catches the classic
/// mis-indented manifest, where the template's `labels:` came out empty.
fn selector_and_template(
    selector: &K8sLabelSelector,
    selector_given: bool,
    template: &PodTemplateSpec,
) -> Vec<Cause> {
    let mut causes = Vec::new();
    // `None` selects nothing: a missing selector never matches the template.
    let mut parsed = None;
    if !selector_given {
        causes.push(Cause::required("spec.selector"));
    } else {
        causes.extend(label_selector(selector, "spec.selector"));
        let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && selector
                .match_expressions
                .as_ref()
                .is_none_or(|e| e.is_empty());
        if empty {
            // Kubernetes says "deployment" here for ReplicaSets too.
            causes.push(Cause::invalid(
                "spec.selector",
                &go_label_selector(selector),
                "empty selector is invalid for deployment",
            ));
        }
        match LabelSelector::from_k8s(selector) {
            Ok(s) => parsed = Some(s),
            Err(_) => {
                // Kubernetes stops here: a template cannot be checked against a selector that
                // does not parse.
                causes.push(Cause::invalid(
                    "spec.selector",
                    &go_label_selector(selector),
                    "invalid label selector",
                ));
                return causes;
            }
        }
    }

    let meta = template.metadata.clone().unwrap_or_default();
    let template_labels = meta.labels.clone().unwrap_or_default();
    let selected = match &parsed {
        None => false,
        Some(s) => s.is_empty() || s.matches(&template_labels),
    };
    if !selected {
        causes.push(Cause::invalid(
            "spec.template.metadata.labels",
            &go_string_map(meta.labels.as_ref()),
            "`selector` does not match template `labels`",
        ));
    }
    // Kubernetes reports these at `spec.template.labels`; the field lives in `metadata`, and
    // that is where a user must look, so we say so.
    causes.extend(labels(
        meta.labels.as_ref(),
        "spec.template.metadata.labels",
    ));
    causes.extend(annotations(
        meta.annotations.as_ref(),
        "spec.template.metadata.annotations",
    ));

    let spec = template.spec.clone().unwrap_or_default();
    causes.extend(pod::pod_spec(&spec, "spec.template.spec"));
    // A controller replaces pods that exit; a pod that is not restarted would fight it.
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("");
    if restart_policy != "Always" {
        causes.push(Cause::not_supported(
            "spec.template.spec.restartPolicy",
            restart_policy,
            &["Always"],
        ));
    }
    if let Some(deadline) = spec.active_deadline_seconds {
        causes.push(Cause::invalid(
            "spec.template.spec.activeDeadlineSeconds",
            &deadline.to_string(),
            "activeDeadlineSeconds in ReplicaSet is not Supported",
        ));
    }
    causes
}

fn strategy(strategy: &DeploymentStrategy) -> Vec<Cause> {
    let mut causes = Vec::new();
    match strategy.type_.as_deref().unwrap_or("") {
        "Recreate" => {
            if strategy.rolling_update.is_some() {
                causes.push(Cause::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => match &strategy.rolling_update {
            None => causes.push(Cause::required_because(
                "spec.strategy.rollingUpdate",
                "this should be defaulted and never be nil",
            )),
            Some(rolling) => {
                let path = "spec.strategy.rollingUpdate";
                let zero = IntOrString::Int(0);
                let max_unavailable = rolling.max_unavailable.as_ref().unwrap_or(&zero);
                let max_surge = rolling.max_surge.as_ref().unwrap_or(&zero);
                causes.extend(int_or_percent(
                    max_unavailable,
                    &format!("{path}.maxUnavailable"),
                ));
                causes.extend(int_or_percent(max_surge, &format!("{path}.maxSurge")));
                // With neither extra pods nor missing pods allowed, a rollout can never move.
                if amount(max_unavailable) == 0 && amount(max_surge) == 0 {
                    causes.push(Cause::invalid(
                        format!("{path}.maxUnavailable"),
                        &int_or_string(max_unavailable),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
                if matches!(max_unavailable, IntOrString::String(_))
                    && amount(max_unavailable) > 100
                {
                    causes.push(Cause::invalid(
                        format!("{path}.maxUnavailable"),
                        &int_or_string(max_unavailable),
                        "must not be greater than 100%",
                    ));
                }
            }
        },
        other => causes.push(Cause::not_supported(
            "spec.strategy.type",
            other,
            &["Recreate", "RollingUpdate"],
        )),
    }
    causes
}

/// An int-or-percent must be a non-negative integer or `<digits>%`.
fn int_or_percent(value: &IntOrString, path: &str) -> Vec<Cause> {
    match value {
        IntOrString::Int(n) => non_negative(Some((*n).into()), path).into_iter().collect(),
        IntOrString::String(s) => names::percent(s)
            .into_iter()
            .map(|msg| Cause::invalid(path, &int_or_string(value), &msg))
            .collect(),
    }
}

/// The number in an int-or-percent (`25%` → 25, `3` → 3); 0 when it is not a number.
fn amount(value: &IntOrString) -> i64 {
    match value {
        IntOrString::Int(n) => (*n).into(),
        IntOrString::String(s) => s.trim_end_matches('%').parse().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(spec: serde_json::Value) -> Vec<String> {
        let selector_given = spec.get("selector").is_some_and(|s| !s.is_null());
        let mut d: Deployment =
            serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": spec}))
                .expect("Deployment");
        crate::admission::defaults::deployment(&mut d);
        deployment(&d, selector_given)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn template(labels: serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    }

    #[test]
    fn deployment_problems() {
        let cases: Vec<(serde_json::Value, Vec<&str>)> = vec![
            (json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"}))}), vec![]),
            (
                json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "y"}))}),
                vec![r#"spec.template.metadata.labels: Invalid value: map[string]string{"app":"y"}: `selector` does not match template `labels`"#],
            ),
            (
                json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!(null))}),
                vec!["spec.template.metadata.labels: Invalid value: map[string]string(nil): `selector` does not match template `labels`"],
            ),
            (
                json!({"template": template(json!({"app": "x"}))}),
                vec![
                    "spec.selector: Required value",
                    r#"spec.template.metadata.labels: Invalid value: map[string]string{"app":"x"}: `selector` does not match template `labels`"#,
                ],
            ),
            (
                json!({"selector": {}, "template": template(json!({"app": "x"}))}),
                vec!["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"],
            ),
            (
                json!({"replicas": -1, "selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"}))}),
                vec!["spec.replicas: Invalid value: -1: must be greater than or equal to 0"],
            ),
            (
                json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"})),
                       "strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}),
                vec!["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"],
            ),
            (
                json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"})),
                       "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}}),
                vec![r#"spec.strategy.rollingUpdate.maxUnavailable: Invalid value: "0%": may not be 0 when `maxSurge` is 0"#],
            ),
            (
                json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"})),
                       "strategy": {"rollingUpdate": {"maxSurge": "lots", "maxUnavailable": "150%"}}}),
                vec![
                    "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"lots\": a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                    r#"spec.strategy.rollingUpdate.maxUnavailable: Invalid value: "150%": must not be greater than 100%"#,
                ],
            ),
            (
                json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"})),
                       "strategy": {"type": "BlueGreen"}}),
                vec![r#"spec.strategy.type: Unsupported value: "BlueGreen": supported values: "Recreate", "RollingUpdate""#],
            ),
            (
                json!({"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}},
                       "spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Never"}}}),
                vec![r#"spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always""#],
            ),
            (
                json!({"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": []}}}),
                vec!["spec.template.spec.containers: Required value"],
            ),
            (
                json!({"selector": {"matchLabels": {"app": "x"}}, "template": template(json!({"app": "x"})),
                       "minReadySeconds": 700}),
                vec!["spec.progressDeadlineSeconds: Invalid value: 600: must be greater than minReadySeconds"],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(problems(input.clone()), want, "{input}");
        }
    }

    #[test]
    fn replica_sets_share_the_selector_rules() {
        let mut rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": "r"},
            "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "b"]}]},
                     "template": template(json!({"app": "c"}))}
        }))
        .expect("ReplicaSet");
        crate::admission::defaults::replica_set(&mut rs);
        let got: Vec<String> = replica_set(&rs, true)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            got,
            vec![
                r#"spec.template.metadata.labels: Invalid value: map[string]string{"app":"c"}: `selector` does not match template `labels`"#
            ]
        );
    }
}

//! Deployments and ReplicaSets: a selector, a pod template it must select, and (for
//! Deployments) a rollout strategy.

use k8s_openapi::api::apps::v1::{
    DaemonSet, Deployment, DeploymentStrategy, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, PodTemplateSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as K8sLabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    annotations, go_label_selector, go_string_map, int_or_string, label_selector, labels,
    non_negative, one_of, pod, storage,
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

/// A StatefulSet: the selector and template rules of every workload, its policies, and its
/// claim templates (each a claim, named so that `<name>-<set>-<ordinal>` is a valid name).
pub(in crate::admission) fn stateful_set(sts: &StatefulSet, selector_given: bool) -> Vec<Cause> {
    let spec = sts.spec.clone().unwrap_or_default();
    let mut causes = Vec::new();
    causes.extend(non_negative(spec.replicas.map(i64::from), "spec.replicas"));
    // The pods get a volume per claim template, which their containers mount by name.
    let mut template = spec.template.clone();
    let pod_spec = template.spec.get_or_insert_with(Default::default);
    for claim in spec.volume_claim_templates.iter().flatten() {
        let name = claim.metadata.name.clone().unwrap_or_default();
        let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
        if !name.is_empty() && !volumes.iter().any(|v| v.name == name) {
            volumes.push(Volume {
                name: name.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: name,
                    read_only: None,
                }),
                ..Volume::default()
            });
        }
    }
    causes.extend(selector_and_template(
        &spec.selector,
        selector_given,
        &template,
    ));
    causes.extend(one_of(
        spec.pod_management_policy.as_deref(),
        "spec.podManagementPolicy",
        &["OrderedReady", "Parallel"],
    ));
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    causes.extend(one_of(
        strategy.type_.as_deref(),
        "spec.updateStrategy.type",
        &["OnDelete", "RollingUpdate"],
    ));
    if let Some(rolling) = &strategy.rolling_update {
        if strategy.type_.as_deref() == Some("OnDelete") {
            causes.push(Cause::invalid(
                "spec.updateStrategy.rollingUpdate",
                "",
                "only allowed for updateStrategy 'RollingUpdate'",
            ));
        }
        causes.extend(non_negative(
            rolling.partition.map(i64::from),
            "spec.updateStrategy.rollingUpdate.partition",
        ));
        if let Some(max) = &rolling.max_unavailable {
            causes.extend(int_or_percent(
                max,
                "spec.updateStrategy.rollingUpdate.maxUnavailable",
            ));
            if amount(max) == 0 {
                causes.push(Cause::invalid(
                    "spec.updateStrategy.rollingUpdate.maxUnavailable",
                    &int_or_string(max),
                    "must be greater than 0",
                ));
            }
        }
    }
    causes.extend(ready_and_history(
        spec.min_ready_seconds,
        spec.revision_history_limit,
    ));
    if let Some(retention) = &spec.persistent_volume_claim_retention_policy {
        for (value, field) in [
            (&retention.when_deleted, "whenDeleted"),
            (&retention.when_scaled, "whenScaled"),
        ] {
            causes.extend(one_of(
                value.as_deref(),
                &format!("spec.persistentVolumeClaimRetentionPolicy.{field}"),
                &["Delete", "Retain"],
            ));
        }
    }
    let volumes: Vec<String> = spec
        .template
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .map(|v| v.name.clone())
        .collect();
    for (i, claim) in spec.volume_claim_templates.iter().flatten().enumerate() {
        let path = format!("spec.volumeClaimTemplates[{i}]");
        let name = claim.metadata.name.clone().unwrap_or_default();
        if name.is_empty() {
            causes.push(Cause::required(format!("{path}.metadata.name")));
        } else {
            for msg in names::dns1123_label(&name) {
                causes.push(Cause::invalid(
                    format!("{path}.metadata.name"),
                    &crate::status::go_quote(&name),
                    &msg,
                ));
            }
            // The template's pod gets a volume of this name: one in the template too is the
            // same name used twice.
            if volumes.contains(&name) {
                causes.push(Cause::duplicate(format!("{path}.metadata.name"), &name));
            }
        }
        match &claim.spec {
            None => causes.push(Cause::required(format!("{path}.spec"))),
            Some(claim_spec) => {
                causes.extend(storage::claim_spec(claim_spec, &format!("{path}.spec")))
            }
        }
    }
    causes
}

/// A DaemonSet: the workload rules, and an update strategy that can make progress.
pub(in crate::admission) fn daemon_set(ds: &DaemonSet, selector_given: bool) -> Vec<Cause> {
    let spec = ds.spec.clone().unwrap_or_default();
    let mut causes = selector_and_template(&spec.selector, selector_given, &spec.template);
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    causes.extend(one_of(
        strategy.type_.as_deref(),
        "spec.updateStrategy.type",
        &["OnDelete", "RollingUpdate"],
    ));
    if let Some(rolling) = &strategy.rolling_update {
        let path = "spec.updateStrategy.rollingUpdate";
        let unavailable = rolling
            .max_unavailable
            .clone()
            .unwrap_or(IntOrString::Int(1));
        let surge = rolling.max_surge.clone().unwrap_or(IntOrString::Int(0));
        causes.extend(int_or_percent(
            &unavailable,
            &format!("{path}.maxUnavailable"),
        ));
        causes.extend(int_or_percent(&surge, &format!("{path}.maxSurge")));
        if amount(&unavailable) == 0 && amount(&surge) == 0 {
            causes.push(Cause::invalid(
                format!("{path}.maxUnavailable"),
                &int_or_string(&unavailable),
                "may not be 0 when `maxSurge` is 0",
            ));
        }
    }
    causes.extend(ready_and_history(
        spec.min_ready_seconds,
        spec.revision_history_limit,
    ));
    causes
}

/// `minReadySeconds` and `revisionHistoryLimit`, neither negative.
fn ready_and_history(min_ready: Option<i32>, history: Option<i32>) -> Vec<Cause> {
    let mut causes: Vec<Cause> = non_negative(min_ready.map(i64::from), "spec.minReadySeconds")
        .into_iter()
        .collect();
    causes.extend(non_negative(
        history.map(i64::from),
        "spec.revisionHistoryLimit",
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

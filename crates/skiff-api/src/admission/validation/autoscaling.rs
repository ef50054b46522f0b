//! HorizontalPodAutoscalers (autoscaling/v2, and v1 and v2beta2 through it): a target to scale,
//! replica bounds that make sense, metrics with a target of the kind their type allows, and
//! scaling rules within Kubernetes' limits. Messages are `pkg/apis/autoscaling/validation`'s.

use k8s_openapi::api::autoscaling::v2::{
    HPAScalingRules, HorizontalPodAutoscaler, MetricSpec, MetricTarget,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::one_of;
use crate::names::NameRule;
use crate::status::Cause;

/// The longest stabilisation window Kubernetes accepts (one hour).
const MAX_WINDOW_SECONDS: i32 = 3600;
/// The longest period a scaling policy may look back over (30 minutes).
const MAX_PERIOD_SECONDS: i32 = 1800;

pub(in crate::admission) fn horizontal_pod_autoscaler(hpa: &HorizontalPodAutoscaler) -> Vec<Cause> {
    let spec = hpa.spec.clone().unwrap_or_default();
    let mut causes = Vec::new();
    let target = &spec.scale_target_ref;
    if target.kind.is_empty() {
        causes.push(Cause::required("spec.scaleTargetRef.kind"));
    } else if let Some(problem) = NameRule::PathSegment.check(&target.kind, false).first() {
        causes.push(Cause::invalid(
            "spec.scaleTargetRef.kind",
            &target.kind,
            problem,
        ));
    }
    if target.name.is_empty() {
        causes.push(Cause::required("spec.scaleTargetRef.name"));
    } else if let Some(problem) = NameRule::PathSegment.check(&target.name, false).first() {
        causes.push(Cause::invalid(
            "spec.scaleTargetRef.name",
            &target.name,
            problem,
        ));
    }
    let min = spec.min_replicas.unwrap_or(1);
    if min < 1 {
        causes.push(Cause::invalid(
            "spec.minReplicas",
            &min.to_string(),
            "must be greater than or equal to 1",
        ));
    }
    if spec.max_replicas < 1 {
        causes.push(Cause::invalid(
            "spec.maxReplicas",
            &spec.max_replicas.to_string(),
            "must be greater than 0",
        ));
    }
    if spec.max_replicas < min {
        causes.push(Cause::invalid(
            "spec.maxReplicas",
            &spec.max_replicas.to_string(),
            "must be greater than or equal to `minReplicas`",
        ));
    }
    for (i, metric) in spec.metrics.iter().flatten().enumerate() {
        causes.extend(metric_spec(metric, &format!("spec.metrics[{i}]")));
    }
    if let Some(behavior) = &spec.behavior {
        for (rules, path) in [
            (&behavior.scale_up, "spec.behavior.scaleUp"),
            (&behavior.scale_down, "spec.behavior.scaleDown"),
        ] {
            if let Some(rules) = rules {
                causes.extend(scaling_rules(rules, path));
            }
        }
    }
    causes
}

const METRIC_TYPES: &[&str] = &[
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];

fn metric_spec(metric: &MetricSpec, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    if metric.type_.is_empty() {
        return vec![Cause::required_because(
            format!("{path}.type"),
            "must specify a metric source type",
        )];
    }
    if let Some(cause) = one_of(Some(&metric.type_), &format!("{path}.type"), METRIC_TYPES) {
        return vec![cause];
    }
    // Exactly the source its type names.
    let given = [
        ("Resource", "resource", metric.resource.is_some()),
        ("Pods", "pods", metric.pods.is_some()),
        ("Object", "object", metric.object.is_some()),
        ("External", "external", metric.external.is_some()),
        (
            "ContainerResource",
            "containerResource",
            metric.container_resource.is_some(),
        ),
    ];
    for (type_, field, present) in given {
        let path = format!("{path}.{field}");
        if type_ == metric.type_ && !present {
            causes.push(Cause::required_because(
                path,
                "must populate information for the given metric source",
            ));
        } else if type_ != metric.type_ && present {
            causes.push(Cause::forbidden(
                path,
                "must populate the given metric source only",
            ));
        }
    }
    let resource = |name: &str, target: &MetricTarget, path: &str, causes: &mut Vec<Cause>| {
        if name.is_empty() {
            causes.push(Cause::required_because(
                format!("{path}.name"),
                "must specify a resource name",
            ));
        }
        causes.extend(metric_target(target, &format!("{path}.target")));
        let target_path = format!("{path}.target");
        match (
            &target.average_utilization,
            &target.average_value,
            &target.value,
        ) {
            (None, None, None) => causes.push(Cause::required_because(
                format!("{target_path}.averageUtilization"),
                "must set either a target raw value or a target utilization",
            )),
            (Some(_), Some(_), _) => causes.push(Cause::forbidden(
                format!("{target_path}.averageValue"),
                "may not set both a target raw value and a target utilization",
            )),
            _ => {}
        }
    };
    match metric.type_.as_str() {
        "Resource" => {
            if let Some(source) = &metric.resource {
                resource(
                    &source.name,
                    &source.target,
                    &format!("{path}.resource"),
                    &mut causes,
                );
            }
        }
        "ContainerResource" => {
            if let Some(source) = &metric.container_resource {
                let path = format!("{path}.containerResource");
                resource(&source.name, &source.target, &path, &mut causes);
                if source.container.is_empty() {
                    causes.push(Cause::required_because(
                        format!("{path}.container"),
                        "must specify a container",
                    ));
                }
            }
        }
        "Pods" => {
            if let Some(source) = &metric.pods {
                let path = format!("{path}.pods");
                if source.metric.name.is_empty() {
                    causes.push(Cause::required_because(
                        format!("{path}.metric.name"),
                        "must specify a metric name",
                    ));
                }
                causes.extend(metric_target(&source.target, &format!("{path}.target")));
                if source.target.average_value.is_none() {
                    causes.push(Cause::required_because(
                        format!("{path}.target.averageValue"),
                        "must specify a positive target averageValue",
                    ));
                }
            }
        }
        "Object" => {
            if let Some(source) = &metric.object {
                let path = format!("{path}.object");
                for (value, field) in [
                    (&source.described_object.kind, "kind"),
                    (&source.described_object.name, "name"),
                ] {
                    if value.is_empty() {
                        causes.push(Cause::required(format!("{path}.describedObject.{field}")));
                    }
                }
                if source.metric.name.is_empty() {
                    causes.push(Cause::required_because(
                        format!("{path}.metric.name"),
                        "must specify a metric name",
                    ));
                }
                causes.extend(metric_target(&source.target, &format!("{path}.target")));
                if source.target.value.is_none() && source.target.average_value.is_none() {
                    causes.push(Cause::required_because(
                        format!("{path}.target.averageValue"),
                        "must set either a target value or averageValue",
                    ));
                }
            }
        }
        _ => {
            if let Some(source) = &metric.external {
                let path = format!("{path}.external");
                if source.metric.name.is_empty() {
                    causes.push(Cause::required_because(
                        format!("{path}.metric.name"),
                        "must specify a metric name",
                    ));
                }
                causes.extend(metric_target(&source.target, &format!("{path}.target")));
                match (&source.target.value, &source.target.average_value) {
                    (None, None) => causes.push(Cause::required_because(
                        format!("{path}.target.averageValue"),
                        "must set either a target value for metric or a per-pod target",
                    )),
                    (Some(_), Some(_)) => causes.push(Cause::forbidden(
                        format!("{path}.target.value"),
                        "may not set both a target value for metric and a per-pod target",
                    )),
                    _ => {}
                }
            }
        }
    }
    causes
}

/// A target's type and the values it carries: positive quantities, a utilization above 0.
fn metric_target(target: &MetricTarget, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    if target.type_.is_empty() {
        causes.push(Cause::required_because(
            format!("{path}.type"),
            "must specify a metric target type",
        ));
    } else if !["Utilization", "Value", "AverageValue"].contains(&target.type_.as_str()) {
        causes.push(Cause::invalid(
            format!("{path}.type"),
            &target.type_,
            "must be either Utilization, Value, or AverageValue",
        ));
    }
    for (quantity, field) in [
        (&target.value, "value"),
        (&target.average_value, "averageValue"),
    ] {
        if let Some(Quantity(q)) = quantity {
            let positive = crate::quantity::cpu_millis(q).is_ok_and(|milli| milli > 0);
            if !positive {
                causes.push(Cause::invalid(
                    format!("{path}.{field}"),
                    q,
                    "must be positive",
                ));
            }
        }
    }
    if let Some(u) = target.average_utilization.filter(|u| *u < 1) {
        causes.push(Cause::invalid(
            format!("{path}.averageUtilization"),
            &u.to_string(),
            "must be greater than 0",
        ));
    }
    causes
}

fn scaling_rules(rules: &HPAScalingRules, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    match rules.stabilization_window_seconds {
        Some(w) if w < 0 => causes.push(Cause::invalid(
            format!("{path}.stabilizationWindowSeconds"),
            &w.to_string(),
            "must be greater than or equal to zero",
        )),
        Some(w) if w > MAX_WINDOW_SECONDS => causes.push(Cause::invalid(
            format!("{path}.stabilizationWindowSeconds"),
            &w.to_string(),
            &format!("must be less than or equal to {MAX_WINDOW_SECONDS}"),
        )),
        _ => {}
    }
    if let Some(select) = rules.select_policy.as_deref() {
        causes.extend(one_of(
            Some(select),
            &format!("{path}.selectPolicy"),
            &["Disabled", "Max", "Min"],
        ));
    }
    let policies = rules.policies.as_deref().unwrap_or_default();
    if policies.is_empty() {
        causes.push(Cause::required_because(
            format!("{path}.policies"),
            "must specify at least one Policy",
        ));
    }
    for (i, policy) in policies.iter().enumerate() {
        let path = format!("{path}.policies[{i}]");
        causes.extend(one_of(
            Some(&policy.type_),
            &format!("{path}.type"),
            &["Percent", "Pods"],
        ));
        if policy.value <= 0 {
            causes.push(Cause::invalid(
                format!("{path}.value"),
                &policy.value.to_string(),
                "must be greater than zero",
            ));
        }
        if policy.period_seconds <= 0 {
            causes.push(Cause::invalid(
                format!("{path}.periodSeconds"),
                &policy.period_seconds.to_string(),
                "must be greater than zero",
            ));
        } else if policy.period_seconds > MAX_PERIOD_SECONDS {
            causes.push(Cause::invalid(
                format!("{path}.periodSeconds"),
                &policy.period_seconds.to_string(),
                &format!("must be less than or equal to {MAX_PERIOD_SECONDS}"),
            ));
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(spec: serde_json::Value) -> Vec<String> {
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "web"}, "spec": spec,
        }))
        .expect("hpa");
        horizontal_pod_autoscaler(&hpa)
            .iter()
            .map(|c| c.to_json()["field"].as_str().unwrap_or("").to_string())
            .collect()
    }

    #[test]
    fn kubernetes_refusals() {
        let target = json!({"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"});
        assert!(
            problems(json!({"scaleTargetRef": target, "minReplicas": 1, "maxReplicas": 3}))
                .is_empty()
        );
        assert_eq!(
            problems(json!({"scaleTargetRef": target, "minReplicas": 5, "maxReplicas": 3})),
            ["spec.maxReplicas"]
        );
        assert_eq!(
            problems(
                json!({"scaleTargetRef": {"name": "web"}, "minReplicas": 0, "maxReplicas": 3})
            ),
            ["spec.scaleTargetRef.kind", "spec.minReplicas"]
        );
        assert_eq!(
            problems(
                json!({"scaleTargetRef": target, "maxReplicas": 3, "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 0}}},
                    {"type": "Pods", "resource": {"name": "cpu", "target": {"type": "Utilization"}}},
                ]})
            ),
            [
                "spec.metrics[0].resource.target.averageUtilization",
                "spec.metrics[1].resource",
                "spec.metrics[1].pods",
            ]
        );
        assert_eq!(
            problems(
                json!({"scaleTargetRef": target, "maxReplicas": 3, "behavior": {"scaleDown": {
                "stabilizationWindowSeconds": 4000,
                "policies": [{"type": "Pods", "value": 0, "periodSeconds": 2000}]}}})
            ),
            [
                "spec.behavior.scaleDown.stabilizationWindowSeconds",
                "spec.behavior.scaleDown.policies[0].value",
                "spec.behavior.scaleDown.policies[0].periodSeconds",
            ]
        );
    }
}

//! ResourceQuota's arithmetic, as Kubernetes' quota evaluators (`pkg/quota/v1/evaluator/core`):
//! what one object uses of each quota resource, which quotas a pod falls under (scopes), and
//! what a new pod must declare when a quota tracks cpu or memory.
//!
//! | quota resource | what counts |
//! |---|---|
//! | `count/RESOURCE[.GROUP]` | objects of that resource |
//! | `pods`, `services`, `configmaps`, `secrets`, `resourcequotas`, `persistentvolumeclaims`, `replicationcontrollers` | objects (pods: not Succeeded or Failed) |
//! | `services.nodeports`, `services.loadbalancers` | ports of NodePort and LoadBalancer Services; LoadBalancer Services |
//! | `requests.NAME`, `limits.NAME`; `cpu`, `memory`, `ephemeral-storage` (= requests) | pods' requests and limits: the containers' sum, or an init container's if larger, plus the pod's overhead |
//!
//! Amounts are integers: cpu in millicores, everything else in whole units (bytes, objects),
//! so sums and comparisons are exact.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::quantity;

/// The quota resources that count objects of a resource by its legacy name.
const OBJECT_COUNTS: &[(&str, &str)] = &[
    ("pods", "pods"),
    ("services", "services"),
    ("configmaps", "configmaps"),
    ("secrets", "secrets"),
    ("resourcequotas", "resourcequotas"),
    ("persistentvolumeclaims", "persistentvolumeclaims"),
    ("replicationcontrollers", "replicationcontrollers"),
];

/// Quota resources that are a pod's requests by their bare name.
const BARE_REQUESTS: &[&str] = &["cpu", "memory", "ephemeral-storage"];

/// The resources whose every container must say how much it wants when a quota tracks them
/// (Kubernetes keeps this for compatibility; other resources are counted as declared).
const MUST_SPECIFY: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// The scopes a quota may name (`spec.scopes`, `spec.scopeSelector`).
pub const SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
];

/// Whether `resource` is counted in millicores.
fn is_cpu(resource: &str) -> bool {
    resource == "cpu" || resource.ends_with(".cpu")
}

/// A quota amount of `resource` from its quantity (`500m` cpu → 500, `1Gi` → 1073741824).
pub fn parse(resource: &str, quantity: &str) -> Result<i64, quantity::Error> {
    if is_cpu(resource) {
        quantity::cpu_millis(quantity)
    } else {
        quantity::bytes(quantity)
    }
}

/// How an amount of `resource` is written back: `500m`, `2`, `1Gi`, `7`.
pub fn format(resource: &str, amount: i64) -> String {
    if is_cpu(resource) {
        quantity::format_cpu(amount)
    } else if resource.contains("memory")
        || resource.contains("storage")
        || resource.contains("hugepages")
    {
        quantity::format_bytes(amount)
    } else {
        amount.to_string()
    }
}

/// Whether `name` may be a key of `spec.hard`: a standard quota resource, `count/…`, or a
/// domain-qualified (extended) resource, as Kubernetes' validation allows.
pub fn is_quota_resource(name: &str) -> bool {
    if let Some(counted) = name.strip_prefix("count/") {
        return !counted.is_empty();
    }
    OBJECT_COUNTS.iter().any(|(key, _)| *key == name)
        || BARE_REQUESTS.contains(&name)
        || matches!(name, "services.nodeports" | "services.loadbalancers")
        || name.starts_with("requests.")
        || name.starts_with("limits.")
        || name.starts_with("hugepages-")
        || name.contains('/')
}

/// The qualified resources (`pods`, `deployments.apps`) whose objects count toward the quota
/// resource `name`.
pub fn counted_resource(name: &str) -> &str {
    if let Some(counted) = name.strip_prefix("count/") {
        return counted;
    }
    if let Some((_, resource)) = OBJECT_COUNTS.iter().find(|(key, _)| *key == name) {
        return resource;
    }
    if name.starts_with("services.") {
        return "services";
    }
    // Everything else is what pods request.
    "pods"
}

/// What one object of `qualified_resource` uses, by quota resource. A pod that has finished
/// (Succeeded, Failed) uses nothing.
pub fn usage(qualified_resource: &str, object: &Value) -> BTreeMap<String, i64> {
    let mut used = BTreeMap::new();
    if qualified_resource == "pods" && is_terminal(object) {
        return used;
    }
    used.insert(format!("count/{qualified_resource}"), 1);
    if let Some((key, _)) = OBJECT_COUNTS.iter().find(|(_, r)| *r == qualified_resource) {
        used.insert((*key).to_string(), 1);
    }
    match qualified_resource {
        "pods" => {
            for (name, amount) in pod_totals(object, "requests") {
                if BARE_REQUESTS.contains(&name.as_str()) {
                    used.insert(name.clone(), amount);
                }
                used.insert(format!("requests.{name}"), amount);
            }
            for (name, amount) in pod_totals(object, "limits") {
                used.insert(format!("limits.{name}"), amount);
            }
        }
        "services" => {
            let kind = object
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            let ports = object
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map_or(0, Vec::len) as i64;
            let load_balancer = kind == "LoadBalancer";
            let node_ports = kind == "NodePort"
                || (load_balancer
                    && object.pointer("/spec/allocateLoadBalancerNodePorts")
                        != Some(&Value::Bool(false)));
            used.insert("services.loadbalancers".into(), i64::from(load_balancer));
            used.insert(
                "services.nodeports".into(),
                if node_ports { ports } else { 0 },
            );
        }
        _ => {}
    }
    used
}

fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// A pod's requests or limits (`which`) per resource: the sum over its containers, or the
/// largest init container's if larger, plus the pod's overhead (Kubernetes' PodRequests).
/// Quantities that do not parse count as nothing (admission has refused them already).
fn pod_totals(pod: &Value, which: &str) -> BTreeMap<String, i64> {
    let declared = |container: &Value| -> BTreeMap<String, i64> {
        container
            .pointer(&format!("/resources/{which}"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(name, q)| Some((name.clone(), parse(name, q.as_str()?).ok()?)))
            .collect()
    };
    let containers = |field: &str| -> Vec<Value> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut total: BTreeMap<String, i64> = BTreeMap::new();
    for container in containers("containers") {
        for (name, amount) in declared(&container) {
            let sum = total.entry(name).or_default();
            *sum = sum.saturating_add(amount);
        }
    }
    for init in containers("initContainers") {
        for (name, amount) in declared(&init) {
            let current = total.entry(name).or_default();
            *current = (*current).max(amount);
        }
    }
    if let Some(overhead) = pod.pointer("/spec/overhead").and_then(Value::as_object) {
        for (name, q) in overhead {
            if let Some(amount) = q.as_str().and_then(|q| parse(name, q).ok()) {
                let sum = total.entry(name.clone()).or_default();
                *sum = sum.saturating_add(amount);
            }
        }
    }
    total
}

/// Kubernetes' "must specify" rule for a new pod under a quota that tracks `hard`: each
/// container must declare the cpu and memory requests and limits the quota names. `None` when
/// every container does, else the message (`must specify limits.cpu for: app,sidecar; ...`).
pub fn missing_declarations(pod: &Value, hard: &BTreeSet<String>) -> Option<String> {
    let required: Vec<&str> = MUST_SPECIFY
        .iter()
        .copied()
        .filter(|r| hard.contains(*r))
        .collect();
    if required.is_empty() {
        return None;
    }
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for field in ["containers", "initContainers"] {
        for container in pod
            .pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let has = |which: &str, name: &str| {
                container
                    .pointer(&format!("/resources/{which}/{name}"))
                    .is_some()
            };
            for resource in &required {
                let declared = match *resource {
                    "cpu" | "requests.cpu" => has("requests", "cpu"),
                    "memory" | "requests.memory" => has("requests", "memory"),
                    "limits.cpu" => has("limits", "cpu"),
                    _ => has("limits", "memory"),
                };
                if !declared {
                    let name = container.get("name").and_then(Value::as_str).unwrap_or("");
                    missing.entry(resource).or_default().insert(name.into());
                }
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(resource, names)| {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            format!("{resource} for: {}", names.join(","))
        })
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

/// Whether an object of `qualified_resource` falls under a quota with `spec` (its scopes and
/// scope selector). Unscoped quotas cover every object; scoped ones cover only pods that match
/// every scope.
pub fn covers(spec: &Value, qualified_resource: &str, object: &Value) -> bool {
    let scopes: Vec<&str> = spec
        .get("scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let expressions: Vec<&Value> = spec
        .pointer("/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if scopes.is_empty() && expressions.is_empty() {
        return true;
    }
    if qualified_resource != "pods" {
        return false;
    }
    let matches_scope = |scope: &str| -> bool {
        match scope {
            "Terminating" => object.pointer("/spec/activeDeadlineSeconds").is_some(),
            "NotTerminating" => object.pointer("/spec/activeDeadlineSeconds").is_none(),
            "BestEffort" => is_best_effort(object),
            "NotBestEffort" => !is_best_effort(object),
            "PriorityClass" => object.pointer("/spec/priorityClassName").is_some(),
            _ => false,
        }
    };
    let matches_expression = |expression: &Value| -> bool {
        let scope = expression
            .get("scopeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        let operator = expression
            .get("operator")
            .and_then(Value::as_str)
            .unwrap_or("");
        let values: Vec<&str> = expression
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if scope != "PriorityClass" {
            // The other scopes take only Exists / DoesNotExist (validation says so).
            return match operator {
                "DoesNotExist" => !matches_scope(scope),
                _ => matches_scope(scope),
            };
        }
        let class = object
            .pointer("/spec/priorityClassName")
            .and_then(Value::as_str);
        match operator {
            "In" => class.is_some_and(|c| values.contains(&c)),
            "NotIn" => class.is_none_or(|c| !values.contains(&c)),
            "Exists" => class.is_some(),
            "DoesNotExist" => class.is_none(),
            _ => false,
        }
    };
    scopes.iter().all(|s| matches_scope(s)) && expressions.iter().all(|e| matches_expression(e))
}

/// A pod whose containers declare no requests and no limits.
fn is_best_effort(pod: &Value) -> bool {
    ["containers", "initContainers"].iter().all(|field| {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .all(|c| {
                ["requests", "limits"].iter().all(|which| {
                    c.pointer(&format!("/resources/{which}"))
                        .and_then(Value::as_object)
                        .is_none_or(|m| m.is_empty())
                })
            })
    })
}

/// `a=1,b=2`: how Kubernetes prints a set of amounts in quota messages.
pub fn pretty(amounts: &BTreeMap<String, i64>) -> String {
    amounts
        .iter()
        .map(|(resource, amount)| format!("{resource}={}", format(resource, *amount)))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: Value, init: Value) -> Value {
        json!({"spec": {"containers": containers, "initContainers": init}})
    }

    #[test]
    fn a_pods_usage_sums_containers_and_takes_the_larger_init() {
        let p = pod(
            json!([
                {"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "500m"}}},
                {"name": "b", "resources": {"requests": {"cpu": "250m", "memory": "64Mi", "example.com/dongle": "1"}}},
            ]),
            json!([{"name": "init", "resources": {"requests": {"cpu": "2"}}}]),
        );
        let used = usage("pods", &p);
        let want: BTreeMap<String, i64> = [
            ("count/pods", 1),
            ("pods", 1),
            ("cpu", 2000),
            ("requests.cpu", 2000),
            ("memory", 128 << 20),
            ("requests.memory", 128 << 20),
            ("requests.example.com/dongle", 1),
            ("limits.cpu", 500),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(used, want);
    }

    #[test]
    fn finished_pods_use_nothing() {
        let p = json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Succeeded"}});
        assert!(usage("pods", &p).is_empty());
        let running =
            json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running"}});
        assert_eq!(usage("pods", &running)["pods"], 1);
    }

    #[test]
    fn services_count_their_node_ports_and_load_balancers() {
        let cases = [
            (
                json!({"spec": {"type": "ClusterIP", "ports": [{}, {}]}}),
                0,
                0,
            ),
            (
                json!({"spec": {"type": "NodePort", "ports": [{}, {}]}}),
                2,
                0,
            ),
            (
                json!({"spec": {"type": "LoadBalancer", "ports": [{}]}}),
                1,
                1,
            ),
            (
                json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false, "ports": [{}]}}),
                0,
                1,
            ),
        ];
        for (svc, node_ports, lbs) in cases {
            let used = usage("services", &svc);
            assert_eq!(used["services"], 1);
            assert_eq!(used["count/services"], 1);
            assert_eq!(used["services.nodeports"], node_ports, "{svc}");
            assert_eq!(used["services.loadbalancers"], lbs, "{svc}");
        }
        assert_eq!(
            usage("deployments.apps", &json!({})),
            BTreeMap::from([("count/deployments.apps".to_string(), 1)])
        );
    }

    #[test]
    fn containers_must_declare_what_the_quota_tracks() {
        let hard: BTreeSet<String> = ["limits.cpu", "requests.memory", "pods"]
            .into_iter()
            .map(String::from)
            .collect();
        let p = pod(
            json!([
                {"name": "app", "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Mi"}}},
                {"name": "side"},
            ]),
            json!([{"name": "init", "resources": {"requests": {"memory": "1Mi"}}}]),
        );
        assert_eq!(
            missing_declarations(&p, &hard).as_deref(),
            Some("must specify limits.cpu for: init,side; requests.memory for: side")
        );
        let only_pods: BTreeSet<String> = ["pods".to_string()].into();
        assert_eq!(missing_declarations(&p, &only_pods), None);
    }

    #[test]
    fn scopes_pick_pods() {
        let best_effort = json!({"spec": {"containers": [{"name": "a"}]}});
        let burstable = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}], "activeDeadlineSeconds": 5, "priorityClassName": "high"}});
        let cases = [
            (json!({}), "pods", &best_effort, true),
            (json!({}), "services", &best_effort, true),
            (
                json!({"scopes": ["BestEffort"]}),
                "pods",
                &best_effort,
                true,
            ),
            (json!({"scopes": ["BestEffort"]}), "pods", &burstable, false),
            (
                json!({"scopes": ["BestEffort"]}),
                "services",
                &best_effort,
                false,
            ),
            (
                json!({"scopes": ["NotBestEffort", "Terminating"]}),
                "pods",
                &burstable,
                true,
            ),
            (
                json!({"scopes": ["NotTerminating"]}),
                "pods",
                &burstable,
                false,
            ),
            (
                json!({"scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}),
                "pods",
                &burstable,
                true,
            ),
            (
                json!({"scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}),
                "pods",
                &best_effort,
                false,
            ),
            (
                json!({"scopeSelector": {"matchExpressions": [{"scopeName": "BestEffort", "operator": "DoesNotExist"}]}}),
                "pods",
                &burstable,
                true,
            ),
        ];
        for (spec, resource, object, want) in cases {
            assert_eq!(
                covers(&spec, resource, object),
                want,
                "{spec} {resource} {object}"
            );
        }
    }

    #[test]
    fn names_and_amounts() {
        for ok in [
            "pods",
            "count/deployments.apps",
            "requests.cpu",
            "limits.memory",
            "cpu",
            "services.nodeports",
            "example.com/gpu",
            "requests.example.com/gpu",
            "hugepages-2Mi",
        ] {
            assert!(is_quota_resource(ok), "{ok}");
        }
        for bad in ["count/", "bananas", "services.weird"] {
            assert!(!is_quota_resource(bad), "{bad}");
        }
        assert_eq!(parse("limits.cpu", "1.5"), Ok(1500));
        assert_eq!(format("requests.cpu", 1500), "1500m");
        assert_eq!(format("requests.memory", 1 << 30), "1Gi");
        assert_eq!(format("pods", 7), "7");
        assert_eq!(
            counted_resource("count/deployments.apps"),
            "deployments.apps"
        );
        assert_eq!(counted_resource("requests.cpu"), "pods");
        assert_eq!(counted_resource("services.nodeports"), "services");
        assert_eq!(
            pretty(&BTreeMap::from([
                ("pods".to_string(), 2),
                ("requests.cpu".to_string(), 500)
            ])),
            "pods=2,requests.cpu=500m"
        );
    }
}

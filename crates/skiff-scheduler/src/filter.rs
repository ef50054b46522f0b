//! Filters: can this node take this pod at all? Each failed check gives the reason text
//! kube-scheduler uses, so the unschedulable message reads the same
//! (`0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node
//! affinity/selector.`).
use k8s_openapi::api::core::v1::{NodeSelectorRequirement, Pod, Taint, Toleration};

use crate::cache::{NodeState, PodFacts};

/// Every reason `node` cannot run the pod; empty when it can.
pub fn check(pod: &Pod, facts: &PodFacts, node: &NodeState) -> Vec<String> {
    let mut reasons = Vec::new();
    if !node.ready {
        reasons.push("node(s) were not ready".to_string());
    }
    if node.unschedulable && !tolerates_unschedulable(pod) {
        reasons.push("node(s) were unschedulable".to_string());
    }
    if let Some(taint) = node
        .taints
        .iter()
        .find(|t| !tolerated(t, &facts.tolerations))
    {
        reasons.push(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            taint.key,
            taint.value.as_deref().unwrap_or("")
        ));
    }
    if !matches_selector(pod, node) {
        reasons.push("node(s) didn't match Pod's node affinity/selector".to_string());
    }
    let free_pods = node.allocatable.pods - node.requested.pods;
    if free_pods < 1 {
        reasons.push("Too many pods".to_string());
    }
    if facts.requests.cpu_milli > node.allocatable.cpu_milli - node.requested.cpu_milli {
        reasons.push("Insufficient cpu".to_string());
    }
    if facts.requests.memory > node.allocatable.memory - node.requested.memory {
        reasons.push("Insufficient memory".to_string());
    }
    if facts.host_ports.iter().any(|p| node.host_ports.contains(p)) {
        reasons.push("node(s) didn't have free ports for the requested pod ports".to_string());
    }
    reasons
}

/// Effects that keep pods off a node; PreferNoSchedule only lowers preference.
fn tolerated(taint: &Taint, tolerations: &[Toleration]) -> bool {
    if taint.effect == "PreferNoSchedule" {
        return true;
    }
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// Kubernetes' `Toleration.ToleratesTaint`: an empty effect matches every effect; `Exists`
/// with an empty key matches every taint; `Equal` (the default) compares values.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        _ => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    }
}

fn tolerates_unschedulable(pod: &Pod) -> bool {
    let taint = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        ..Taint::default()
    };
    pod.spec
        .iter()
        .flat_map(|s| s.tolerations.iter().flatten())
        .any(|t| tolerates(t, &taint))
}

/// `spec.nodeSelector` and required node affinity (any term may match; within a term every
/// expression must).
fn matches_selector(pod: &Pod, node: &NodeState) -> bool {
    let Some(spec) = &pod.spec else {
        return true;
    };
    for (k, v) in spec.node_selector.iter().flatten() {
        if node.labels.get(k) != Some(v) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let Some(required) = required else {
        return true;
    };
    required.node_selector_terms.iter().any(|term| {
        term.match_expressions
            .iter()
            .flatten()
            .all(|e| expression(e, node.labels.get(&e.key).map(String::as_str)))
            && term
                .match_fields
                .iter()
                .flatten()
                .all(|e| e.key != "metadata.name" || expression(e, Some(node.name.as_str())))
    })
}

fn expression(e: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = e.values.as_deref().unwrap_or(&[]);
    let number = |s: &str| s.parse::<i64>().ok();
    match e.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(number), values.first().and_then(|x| number(x))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.and_then(number), values.first().and_then(|x| number(x))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

/// The unschedulable message: `0/N nodes are available: ` and the reasons with their counts,
/// sorted by reason text as kube-scheduler sorts them.
pub fn unschedulable_message(total: usize, reasons: &[Vec<String>]) -> String {
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for node in reasons {
        for r in node {
            *counts.entry(r.as_str()).or_default() += 1;
        }
    }
    if total == 0 {
        return "0/0 nodes are available: no nodes available to schedule pods.".into();
    }
    let parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::NodeState;
    use crate::resources::Resources;
    use serde_json::json;

    fn node(json: serde_json::Value) -> NodeState {
        NodeState::from_node(&serde_json::from_value(json).expect("node"))
    }

    fn pod(json: serde_json::Value) -> (Pod, PodFacts) {
        let pod: Pod = serde_json::from_value(json).expect("pod");
        let facts = PodFacts::of(&pod);
        (pod, facts)
    }

    fn ready(name: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut n = json!({
            "metadata": {"name": name, "labels": {"disk": "ssd", "zone": "a", "rank": "5"}},
            "spec": {},
            "status": {
                "allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        });
        if let Some(spec) = extra.get("spec") {
            n["spec"] = spec.clone();
        }
        n
    }

    #[test]
    fn filters_give_kubernetes_reasons() {
        let n = node(ready("n1", json!({})));
        let cases = [
            (json!({"containers": [{"name": "c"}]}), vec![]),
            (
                json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "3"}}}]}),
                vec!["Insufficient cpu"],
            ),
            (
                json!({"containers": [{"name": "c", "resources": {"requests": {"memory": "5Gi"}}}]}),
                vec!["Insufficient memory"],
            ),
            (
                json!({"nodeSelector": {"disk": "hdd"}, "containers": [{"name": "c"}]}),
                vec!["node(s) didn't match Pod's node affinity/selector"],
            ),
            (
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                    {"matchExpressions": [{"key": "rank", "operator": "Gt", "values": ["3"]}, {"key": "gpu", "operator": "DoesNotExist"}]}
                ]}}}, "containers": [{"name": "c"}]}),
                vec![],
            ),
        ];
        for (spec, want) in cases {
            let (p, f) = pod(json!({"metadata": {"name": "p"}, "spec": spec}));
            assert_eq!(check(&p, &f, &n), want, "{spec}");
        }
    }

    #[test]
    fn taints_and_tolerations() {
        let tainted = node(ready(
            "n1",
            json!({"spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]}}),
        ));
        let (p, f) =
            pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}));
        assert_eq!(
            check(&p, &f, &tainted),
            ["node(s) had untolerated taint {node.kubernetes.io/unreachable: }"]
        );
        for toleration in [
            json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists"}),
            json!({"operator": "Exists"}),
            json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}),
        ] {
            let (p, f) = pod(
                json!({"metadata": {"name": "p"}, "spec": {"tolerations": [toleration], "containers": [{"name": "c"}]}}),
            );
            assert!(check(&p, &f, &tainted).is_empty(), "{toleration}");
        }
        let (p, f) = pod(json!({"metadata": {"name": "p"}, "spec": {
            "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "c"}]}}));
        assert_eq!(
            check(&p, &f, &tainted).len(),
            1,
            "the wrong effect does not tolerate"
        );
    }

    #[test]
    fn host_ports_conflict() {
        let mut n = node(ready("n1", json!({})));
        let (p, f) = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
        );
        assert!(check(&p, &f, &n).is_empty());
        n.host_ports.insert(("TCP".into(), 8080));
        assert_eq!(
            check(&p, &f, &n),
            ["node(s) didn't have free ports for the requested pod ports"]
        );
    }

    #[test]
    fn the_message_counts_reasons() {
        let reasons = vec![
            vec!["Insufficient cpu".to_string()],
            vec!["node(s) had untolerated taint {node.kubernetes.io/unreachable: }".to_string()],
            vec!["Insufficient cpu".to_string()],
        ];
        assert_eq!(
            unschedulable_message(3, &reasons),
            "0/3 nodes are available: 2 Insufficient cpu, 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }."
        );
        let _ = Resources::default();
    }
}

//! ClusterRole aggregation, as Kubernetes' `clusterrole-aggregation-controller`: a ClusterRole
//! with an `aggregationRule` holds the rules of every ClusterRole its selectors pick. That is
//! how `admin`, `edit` and `view` grow when someone adds a ClusterRole labelled
//! `rbac.authorization.k8s.io/aggregate-to-view: "true"` (for a new resource, say).
//!
//! The plan for one aggregated role: the rules of the selected roles (by name order, itself
//! excluded), each once, in order; an update when that differs from what the role holds.
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use skiff_api::selector::LabelSelector;
use skiff_client::informer::Store;

use crate::controller::{Context, Controller};
use crate::workqueue::WorkQueue;
use crate::{Action, Object};

/// The update that gives `role` the rules its aggregation rule selects from `roles`, if it
/// lacks them or holds others (pure).
pub fn reconcile(role: &ClusterRole, roles: &[&ClusterRole]) -> Vec<Action> {
    let Some(rule) = &role.aggregation_rule else {
        return Vec::new();
    };
    let name = role.metadata.name.as_deref().unwrap_or("");
    let mut selected: Vec<&ClusterRole> = Vec::new();
    for selector in rule.cluster_role_selectors.iter().flatten() {
        // An invalid selector was refused at admission; one that slipped through selects nothing.
        let Ok(selector) = LabelSelector::from_k8s(selector) else {
            continue;
        };
        let empty = BTreeMap::new();
        for other in roles {
            let labels = other.metadata.labels.as_ref().unwrap_or(&empty);
            let other_name = other.metadata.name.as_deref().unwrap_or("");
            if other_name != name
                && selector.matches(labels)
                && !selected
                    .iter()
                    .any(|s| s.metadata.name == other.metadata.name)
            {
                selected.push(other);
            }
        }
    }
    selected.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut rules: Vec<PolicyRule> = Vec::new();
    for other in selected {
        for r in other.rules.iter().flatten() {
            if !rules.contains(r) {
                rules.push(r.clone());
            }
        }
    }
    if role.rules.as_deref().unwrap_or_default() == rules.as_slice() {
        return Vec::new();
    }
    let mut updated = role.clone();
    updated.rules = Some(rules);
    vec![Action::Update(Object::ClusterRole(Box::new(updated)))]
}

/// The aggregation in the loop's shape: any ClusterRole change wakes every aggregated role.
pub struct ClusterRoleAggregationController {
    roles: Store<ClusterRole>,
}

impl Controller for ClusterRoleAggregationController {
    const NAME: &'static str = "clusterrole-aggregation-controller";
    const KEEP_GOING: bool = true;

    fn new(ctx: &Context, queue: &WorkQueue) -> Self {
        let roles = ctx.informers.store::<ClusterRole>();
        let (q, store) = (queue.clone(), roles.clone());
        roles.on_change(move |_: &ClusterRole| {
            for (key, role) in store.read().iter() {
                if role.aggregation_rule.is_some() {
                    q.add(key);
                }
            }
        });
        ClusterRoleAggregationController { roles }
    }

    fn reconcile(&mut self, key: &str, _now: Timestamp) -> Vec<Action> {
        let roles = self.roles.read();
        let Some(role) = roles.get(key) else {
            return Vec::new();
        };
        let all: Vec<&ClusterRole> = roles.values().collect();
        reconcile(role, &all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn role(value: serde_json::Value) -> ClusterRole {
        serde_json::from_value(value).expect("a ClusterRole")
    }

    #[test]
    fn aggregated_roles_hold_the_rules_their_selectors_pick() {
        let view = role(json!({
            "metadata": {"name": "view", "resourceVersion": "3"},
            "aggregationRule": {"clusterRoleSelectors": [
                {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]},
            "rules": [],
        }));
        let pods = role(json!({
            "metadata": {"name": "system:aggregate-to-view",
                         "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        }));
        let widgets = role(json!({
            "metadata": {"name": "widgets-view",
                         "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
            "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get"]},
                      {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
        }));
        let other = role(json!({"metadata": {"name": "other"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}));
        let plan = reconcile(&view, &[&view, &widgets, &pods, &other]);
        let [Action::Update(Object::ClusterRole(updated))] = plan.as_slice() else {
            panic!("one update, got {plan:?}");
        };
        let resources: Vec<&str> = updated
            .rules
            .iter()
            .flatten()
            .flat_map(|r| r.resources.iter().flatten().map(String::as_str))
            .collect();
        assert_eq!(
            resources,
            ["pods", "widgets"],
            "each rule once, by role name"
        );
        assert!(
            reconcile(updated, &[updated, &widgets, &pods, &other]).is_empty(),
            "nothing to do once it holds them"
        );
        assert!(
            reconcile(&pods, &[&view, &pods]).is_empty(),
            "not aggregated"
        );
    }
}

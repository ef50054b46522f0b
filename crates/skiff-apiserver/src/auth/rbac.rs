//! The RBAC authorizer: a request is allowed when some rule of some role bound to its user
//! covers it (Kubernetes' `rbac.RBACAuthorizer`). There is no deny rule; what no rule allows
//! is refused.
//!
//! ```text
//!  ClusterRoleBindings ─┬─ subject is the user? ─► ClusterRole ─► rules ─┐
//!  RoleBindings in NS ──┘                          Role / ClusterRole ─► rules ─┴─► any rule
//!                                                                                  covers the
//!                                                                                  request?
//! ```
//!
//! Roles and bindings are read from this member's store on every request: the store is in
//! memory, a cluster has tens of bindings, and a change takes effect on the next request with
//! nothing to invalidate. The same walk answers what a user may do at all
//! ([`rules_for`], for `kubectl auth can-i --list` and the escalation checks in
//! [`super::escalation`]).
use std::ops::ControlFlow;

use serde_json::Value;
use skiff_store::{key_prefix, object_key};

use super::attributes::Attributes;
use super::user::{split_service_account, UserInfo};
use crate::registry::View;

pub const ROLES: &str = "roles.rbac.authorization.k8s.io";
pub const CLUSTER_ROLES: &str = "clusterroles.rbac.authorization.k8s.io";
pub const ROLE_BINDINGS: &str = "rolebindings.rbac.authorization.k8s.io";
pub const CLUSTER_ROLE_BINDINGS: &str = "clusterrolebindings.rbac.authorization.k8s.io";

/// Whether RBAC allows the request.
pub fn allows(view: &dyn View, request: &Attributes) -> bool {
    visit_rules(view, &request.user, &request.namespace, &mut |rule| {
        if rule_allows(rule, request) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break()
}

/// Every rule that applies to `user` in `namespace` (`""`: cluster-wide rules only), in the
/// order the authorizer visits them.
pub fn rules_for(view: &dyn View, user: &UserInfo, namespace: &str) -> Vec<Value> {
    let mut rules = Vec::new();
    let _ = visit_rules(view, user, namespace, &mut |rule| {
        rules.push(rule.clone());
        ControlFlow::<()>::Continue(())
    });
    rules
}

/// The rules of the role a binding in `namespace` (`""` for a ClusterRoleBinding) refers to,
/// or `None` if that role does not exist.
pub fn role_ref_rules(view: &dyn View, role_ref: &Value, namespace: &str) -> Option<Vec<Value>> {
    let name = role_ref.get("name")?.as_str()?;
    let key = match role_ref.get("kind")?.as_str()? {
        "ClusterRole" => object_key(CLUSTER_ROLES, "", name),
        "Role" if !namespace.is_empty() => object_key(ROLES, namespace, name),
        _ => return None,
    };
    let role = view.get(&key)?;
    Some(rules_of(&role).to_vec())
}

/// Calls `visit` with each rule bound to `user`: cluster-wide first, then `namespace`'s.
fn visit_rules(
    view: &dyn View,
    user: &UserInfo,
    namespace: &str,
    visit: &mut dyn FnMut(&Value) -> ControlFlow<()>,
) -> ControlFlow<()> {
    for binding in view.list(&key_prefix(CLUSTER_ROLE_BINDINGS, None)) {
        if applies_to(&binding, user, "") {
            let role = text(&binding, "/roleRef/name");
            if let Some(role) = view.get(&object_key(CLUSTER_ROLES, "", role)) {
                for rule in rules_of(&role) {
                    visit(rule)?;
                }
            }
        }
    }
    if namespace.is_empty() {
        return ControlFlow::Continue(());
    }
    for binding in view.list(&key_prefix(ROLE_BINDINGS, Some(namespace))) {
        if applies_to(&binding, user, namespace) {
            let role = text(&binding, "/roleRef/name");
            let key = match text(&binding, "/roleRef/kind") {
                "ClusterRole" => object_key(CLUSTER_ROLES, "", role),
                _ => object_key(ROLES, namespace, role),
            };
            if let Some(role) = view.get(&key) {
                for rule in rules_of(&role) {
                    visit(rule)?;
                }
            }
        }
    }
    ControlFlow::Continue(())
}

fn rules_of(role: &Value) -> &[Value] {
    role.get("rules")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Whether one of the binding's subjects is `user`. A ServiceAccount subject of a RoleBinding
/// without a namespace means the binding's own.
fn applies_to(binding: &Value, user: &UserInfo, namespace: &str) -> bool {
    let subjects = binding.get("subjects").and_then(Value::as_array);
    subjects.into_iter().flatten().any(|subject| {
        let name = text(subject, "/name");
        match text(subject, "/kind") {
            "User" => user.name == name,
            "Group" => user.in_group(name),
            "ServiceAccount" => {
                let sa_namespace = match text(subject, "/namespace") {
                    "" => namespace,
                    ns => ns,
                };
                split_service_account(&user.name) == Some((sa_namespace, name))
            }
            _ => false,
        }
    })
}

/// Whether `rule` allows `request` (Kubernetes' `RuleAllows`).
pub fn rule_allows(rule: &Value, request: &Attributes) -> bool {
    if !has_or_star(rule, "verbs", &request.verb) {
        return false;
    }
    if !request.resource_request {
        return strings(rule, "nonResourceURLs").any(|url| url_matches(url, &request.path));
    }
    has_or_star(rule, "apiGroups", &request.api_group)
        && resource_matches(rule, &request.combined_resource(), &request.subresource)
        && name_matches(rule, &request.name)
}

fn resource_matches(rule: &Value, combined: &str, subresource: &str) -> bool {
    strings(rule, "resources").any(|r| {
        r == "*"
            || r == combined
            || (!subresource.is_empty()
                && r.strip_prefix("*/").is_some_and(|sub| sub == subresource))
    })
}

fn name_matches(rule: &Value, name: &str) -> bool {
    let mut names = strings(rule, "resourceNames").peekable();
    if names.peek().is_none() {
        return true;
    }
    !name.is_empty() && names.any(|n| n == name)
}

/// `/healthz` matches `/healthz`; `/logs/*` matches everything under `/logs/`; `*` matches all.
fn url_matches(rule_url: &str, path: &str) -> bool {
    rule_url == "*"
        || rule_url == path
        || rule_url
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

fn has_or_star(rule: &Value, field: &str, wanted: &str) -> bool {
    strings(rule, field).any(|v| v == "*" || v == wanted)
}

pub(super) fn strings<'a>(value: &'a Value, field: &str) -> impl Iterator<Item = &'a str> {
    value
        .get(field)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::fake::FakeView;
    use serde_json::json;

    fn cluster() -> FakeView {
        FakeView::default()
            .with(
                CLUSTER_ROLES,
                json!({"metadata": {"name": "view"}, "rules": [
                    {"apiGroups": ["", "apps"], "resources": ["pods", "deployments", "pods/log"],
                     "verbs": ["get", "list", "watch"]},
                ]}),
            )
            .with(
                CLUSTER_ROLES,
                json!({"metadata": {"name": "health"}, "rules": [
                    {"nonResourceURLs": ["/healthz", "/logs/*"], "verbs": ["get"]},
                ]}),
            )
            .with(
                ROLES,
                json!({"metadata": {"name": "one-secret", "namespace": "shop"}, "rules": [
                    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["till"],
                     "verbs": ["get"]},
                ]}),
            )
            .with(
                CLUSTER_ROLE_BINDINGS,
                json!({"metadata": {"name": "health"},
                       "roleRef": {"kind": "ClusterRole", "name": "health"},
                       "subjects": [{"kind": "Group", "name": "system:authenticated"}]}),
            )
            .with(
                ROLE_BINDINGS,
                json!({"metadata": {"name": "ann-views", "namespace": "shop"},
                       "roleRef": {"kind": "ClusterRole", "name": "view"},
                       "subjects": [{"kind": "User", "name": "ann"}]}),
            )
            .with(
                ROLE_BINDINGS,
                json!({"metadata": {"name": "robot", "namespace": "shop"},
                       "roleRef": {"kind": "Role", "name": "one-secret"},
                       "subjects": [{"kind": "ServiceAccount", "name": "till"}]}),
            )
    }

    fn may(user: &UserInfo, verb: &str, resource: &str, namespace: &str, name: &str) -> bool {
        let group = if resource == "deployments" {
            "apps"
        } else {
            ""
        };
        let request = Attributes::resource(user, verb, group, resource, namespace, name);
        allows(&cluster(), &request)
    }

    #[test]
    fn bindings_grant_their_roles_rules_where_they_are() {
        let ann = UserInfo::new("ann", &[]);
        assert!(may(&ann, "list", "pods", "shop", ""));
        assert!(may(&ann, "get", "pods/log", "shop", "web"));
        assert!(may(&ann, "watch", "deployments", "shop", ""));
        assert!(
            !may(&ann, "delete", "pods", "shop", "web"),
            "view does not delete"
        );
        assert!(
            !may(&ann, "list", "pods", "other", ""),
            "the binding is in shop"
        );
        assert!(!may(&ann, "list", "pods", "", ""), "nor cluster-wide");
        assert!(!may(&ann, "get", "pods/exec", "shop", "web"));
        assert!(!may(&UserInfo::new("bob", &[]), "list", "pods", "shop", ""));
    }

    #[test]
    fn service_accounts_resource_names_and_paths() {
        let till = UserInfo::new("system:serviceaccount:shop:till", &[]);
        assert!(may(&till, "get", "secrets", "shop", "till"));
        assert!(!may(&till, "get", "secrets", "shop", "other"));
        assert!(
            !may(&till, "list", "secrets", "shop", ""),
            "a named rule lists nothing"
        );
        let elsewhere = UserInfo::new("system:serviceaccount:other:till", &[]);
        assert!(!may(&elsewhere, "get", "secrets", "shop", "till"));

        let path = |p: &str| {
            allows(
                &cluster(),
                &Attributes::for_path(&UserInfo::new("bob", &[]), &axum::http::Method::GET, p),
            )
        };
        assert!(path("/healthz"));
        assert!(path("/logs/a/b"));
        assert!(!path("/metrics"));
        assert_eq!(
            rules_for(&cluster(), &UserInfo::new("ann", &[]), "shop").len(),
            2
        );
        assert_eq!(
            rules_for(&cluster(), &UserInfo::new("ann", &[]), "").len(),
            1
        );
    }
}

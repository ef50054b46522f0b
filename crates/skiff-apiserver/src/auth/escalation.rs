//! Escalation prevention: nobody grants what they do not hold (Kubernetes' RBAC registry
//! checks, `ConfirmNoEscalation` and `BindingAuthorized`).
//!
//! - Writing a Role or ClusterRole with some rules needs every one of those rules to be
//!   covered by the writer's own rules where the role applies, or the `escalate` verb on it.
//! - Writing a binding needs the writer to hold every rule of the role it refers to, or the
//!   `bind` verb on that role.
//! - Members of `system:masters` hold everything.
//!
//! Without these, a user allowed to create RoleBindings could bind themselves `cluster-admin`.
use serde_json::Value;
use skiff_api::status::ApiError;

use super::attributes::Attributes;
use super::rbac::{self, strings};
use super::user::{UserInfo, MASTERS};
use crate::registry::View;

/// Checks that `user` may write `role` (a Role in `namespace`, or a ClusterRole for `""`).
pub fn check_role(
    view: &dyn View,
    user: &UserInfo,
    resource: &str,
    namespace: &str,
    role: &Value,
) -> Result<(), ApiError> {
    if user.in_group(MASTERS) {
        return Ok(());
    }
    let name = role
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let escalate = Attributes::resource(
        user,
        "escalate",
        "rbac.authorization.k8s.io",
        resource,
        namespace,
        name,
    );
    if rbac::allows(view, &escalate) {
        return Ok(());
    }
    let wanted = role
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let held = rbac::rules_for(view, user, namespace);
    let missing = uncovered(&held, &wanted);
    if missing.is_empty() {
        return Ok(());
    }
    Err(forbidden(resource, name, user, &missing))
}

/// Checks that `user` may write `binding` (a RoleBinding in `namespace`, or a
/// ClusterRoleBinding for `""`).
pub fn check_binding(
    view: &dyn View,
    user: &UserInfo,
    resource: &str,
    namespace: &str,
    binding: &Value,
) -> Result<(), ApiError> {
    if user.in_group(MASTERS) {
        return Ok(());
    }
    let name = binding
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let role_ref = binding.get("roleRef").cloned().unwrap_or(Value::Null);
    let role_kind = role_ref.get("kind").and_then(Value::as_str).unwrap_or("");
    let role_name = role_ref.get("name").and_then(Value::as_str).unwrap_or("");
    let (role_resource, role_namespace) = match role_kind {
        "ClusterRole" => ("clusterroles", ""),
        _ => ("roles", namespace),
    };
    let bind = Attributes::resource(
        user,
        "bind",
        "rbac.authorization.k8s.io",
        role_resource,
        role_namespace,
        role_name,
    );
    if rbac::allows(view, &bind) {
        return Ok(());
    }
    let Some(wanted) = rbac::role_ref_rules(view, &role_ref, namespace) else {
        return Err(ApiError::NotFound {
            resource: format!("{role_resource}.rbac.authorization.k8s.io"),
            name: role_name.to_string(),
        });
    };
    let held = rbac::rules_for(view, user, namespace);
    let missing = uncovered(&held, &wanted);
    if missing.is_empty() {
        return Ok(());
    }
    Err(forbidden(resource, name, user, &missing))
}

fn forbidden(resource: &str, name: &str, user: &UserInfo, missing: &[String]) -> ApiError {
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    ApiError::Forbidden(format!(
        "{resource}.rbac.authorization.k8s.io {name:?} is forbidden: user {:?} (groups=[{}]) is \
         attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        groups.join(" "),
        missing.join("\n")
    ))
}

/// The rules of `wanted`, broken into single permissions, that no rule of `held` covers,
/// compacted by resource and printed as Kubernetes prints them
/// (`{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}`).
pub fn uncovered(held: &[Value], wanted: &[Value]) -> Vec<String> {
    // (group, resource or URL, name) -> verbs, in first-seen order.
    let mut missing: Vec<(Atom, Vec<String>)> = Vec::new();
    for rule in wanted {
        for atom in atoms(rule) {
            if held.iter().any(|h| covers(h, &atom)) {
                continue;
            }
            let verb = atom.verb().to_string();
            let key = atom.without_verb();
            match missing.iter_mut().find(|(k, _)| *k == key) {
                Some((_, verbs)) if !verbs.contains(&verb) => verbs.push(verb),
                Some(_) => {}
                None => missing.push((key, vec![verb])),
            }
        }
    }
    missing
        .into_iter()
        .map(|(atom, verbs)| {
            let verbs: Vec<String> = verbs.iter().map(|v| format!("{v:?}")).collect();
            format!("{{{atom}Verbs:[{}]}}", verbs.join(" "))
        })
        .collect()
}

/// One permission: a verb on one resource of one group (maybe one name), or on one URL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Atom {
    Resource {
        group: String,
        resource: String,
        name: Option<String>,
        verb: String,
    },
    Url {
        url: String,
        verb: String,
    },
}

impl Atom {
    fn verb(&self) -> &str {
        match self {
            Atom::Resource { verb, .. } | Atom::Url { verb, .. } => verb,
        }
    }

    /// The same permission with the verb left blank, to group verbs by.
    fn without_verb(&self) -> Atom {
        let mut atom = self.clone();
        match &mut atom {
            Atom::Resource { verb, .. } | Atom::Url { verb, .. } => verb.clear(),
        }
        atom
    }
}

/// What a permission is about, without its verb: `APIGroups:[""], Resources:["pods"], `.
impl std::fmt::Display for Atom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Atom::Resource {
                group,
                resource,
                name,
                ..
            } => {
                write!(f, "APIGroups:[{group:?}], Resources:[{resource:?}], ")?;
                if let Some(name) = name {
                    write!(f, "ResourceNames:[{name:?}], ")?;
                }
                Ok(())
            }
            Atom::Url { url, .. } => write!(f, "NonResourceURLs:[{url:?}], "),
        }
    }
}

fn atoms(rule: &Value) -> Vec<Atom> {
    let mut out = Vec::new();
    for verb in strings(rule, "verbs") {
        for url in strings(rule, "nonResourceURLs") {
            out.push(Atom::Url {
                url: url.to_string(),
                verb: verb.to_string(),
            });
        }
        for group in strings(rule, "apiGroups") {
            for resource in strings(rule, "resources") {
                let names: Vec<Option<String>> = match strings(rule, "resourceNames").count() {
                    0 => vec![None],
                    _ => strings(rule, "resourceNames")
                        .map(|n| Some(n.to_string()))
                        .collect(),
                };
                for name in names {
                    out.push(Atom::Resource {
                        group: group.to_string(),
                        resource: resource.to_string(),
                        name,
                        verb: verb.to_string(),
                    });
                }
            }
        }
    }
    out
}

/// Whether the held rule grants the whole of `atom` (Kubernetes' `ruleCovers`): a wildcard
/// covers only where the holder has the wildcard too.
fn covers(held: &Value, atom: &Atom) -> bool {
    let has = |field: &str, wanted: &str| strings(held, field).any(|v| v == "*" || v == wanted);
    match atom {
        Atom::Url { url, verb } => {
            has("verbs", verb)
                && strings(held, "nonResourceURLs").any(|h| {
                    h == "*"
                        || h == url
                        || h.strip_suffix('*')
                            .is_some_and(|prefix| url.starts_with(prefix))
                })
        }
        Atom::Resource {
            group,
            resource,
            name,
            verb,
        } => {
            let resource_held = strings(held, "resources").any(|h| {
                h == "*"
                    || h == resource
                    || resource
                        .split_once('/')
                        .is_some_and(|(_, sub)| h.strip_prefix("*/") == Some(sub))
            });
            let mut held_names = strings(held, "resourceNames").peekable();
            let name_held = held_names.peek().is_none()
                || name.as_deref().is_some_and(|n| held_names.any(|h| h == n));
            has("verbs", verb) && has("apiGroups", group) && resource_held && name_held
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_what_is_held_may_be_granted() {
        let held = vec![
            json!({"apiGroups": [""], "resources": ["pods", "*/status"], "verbs": ["get", "list"]}),
            json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["till"], "verbs": ["*"]}),
            json!({"nonResourceURLs": ["/logs/*"], "verbs": ["get"]}),
        ];
        let ok = vec![
            json!({"apiGroups": [""], "resources": ["pods", "pods/status"], "verbs": ["list"]}),
            json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["till"], "verbs": ["get", "delete"]}),
            json!({"nonResourceURLs": ["/logs/a"], "verbs": ["get"]}),
        ];
        assert!(uncovered(&held, &ok).is_empty());
        let too_much = vec![
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "delete", "patch"]}),
            json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}),
            json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
        ];
        assert_eq!(
            uncovered(&held, &too_much),
            vec![
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete" "patch"]}"#,
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}"#,
                r#"{APIGroups:["*"], Resources:["*"], Verbs:["*"]}"#,
            ],
            "a name-restricted grant does not cover all names; a wildcard needs a wildcard"
        );
    }
}

//! Roles and bindings (`rbac.authorization.k8s.io/v1`): what Kubernetes' RBAC validation checks.
//!
//! A rule is about resources (`apiGroups` and `resources`) or about non-resource URLs
//! (`/healthz`), never both, and a namespaced Role cannot speak of URLs. A binding refers to one
//! role and names its subjects by kind.

use k8s_openapi::api::rbac::v1::{AggregationRule, PolicyRule, RoleRef, Subject};

use crate::names;
use crate::status::{go_quote, Cause};

/// The group of RBAC objects, the only `apiGroup` a `roleRef` and a User or Group subject take.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// `rules` of a Role (`namespaced`) or ClusterRole.
pub(in crate::admission) fn rules(rules: Option<&[PolicyRule]>, namespaced: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    for (i, rule) in rules.unwrap_or_default().iter().enumerate() {
        causes.extend(policy_rule(rule, namespaced, &format!("rules[{i}]")));
    }
    causes
}

fn policy_rule(rule: &PolicyRule, namespaced: bool, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let len = |v: &Option<Vec<String>>| v.as_ref().map_or(0, Vec::len);
    if rule.verbs.is_empty() {
        causes.push(Cause::required_because(
            format!("{path}.verbs"),
            "verbs must contain at least one value",
        ));
    }
    if len(&rule.non_resource_urls) > 0 {
        let urls = go_strings(rule.non_resource_urls.as_deref().unwrap_or_default());
        if namespaced {
            causes.push(Cause::invalid(
                format!("{path}.nonResourceURLs"),
                &urls,
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        if len(&rule.api_groups) > 0 || len(&rule.resources) > 0 || len(&rule.resource_names) > 0 {
            causes.push(Cause::invalid(
                format!("{path}.nonResourceURLs"),
                &urls,
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return causes;
    }
    if len(&rule.api_groups) == 0 {
        causes.push(Cause::required_because(
            format!("{path}.apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if len(&rule.resources) == 0 {
        causes.push(Cause::required_because(
            format!("{path}.resources"),
            "resource rules must supply at least one resource",
        ));
    }
    causes
}

/// A ClusterRole's `aggregationRule`: at least one selector, each a valid label selector.
pub(in crate::admission) fn aggregation_rule(rule: Option<&AggregationRule>) -> Vec<Cause> {
    let Some(rule) = rule else {
        return Vec::new();
    };
    let selectors = rule.cluster_role_selectors.as_deref().unwrap_or_default();
    if selectors.is_empty() {
        return vec![Cause::required("aggregationRule.clusterRoleSelectors")];
    }
    let mut causes = Vec::new();
    for (i, selector) in selectors.iter().enumerate() {
        causes.extend(super::label_selector(
            selector,
            &format!("aggregationRule.clusterRoleSelectors[{i}]"),
        ));
    }
    causes
}

/// A RoleBinding's (`namespaced`) or ClusterRoleBinding's `roleRef` and `subjects`.
pub(in crate::admission) fn binding(
    role_ref: &RoleRef,
    subjects: Option<&[Subject]>,
    namespaced: bool,
) -> Vec<Cause> {
    let mut causes = Vec::new();
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if namespaced {
        // A RoleBinding leaves an unsupported kind to the check below only when one was sent.
        if !role_ref.kind.is_empty() && !kinds.contains(&role_ref.kind.as_str()) {
            causes.push(Cause::not_supported("roleRef.kind", &role_ref.kind, kinds));
        }
    } else if role_ref.kind != "ClusterRole" {
        causes.push(Cause::not_supported("roleRef.kind", &role_ref.kind, kinds));
    }
    if role_ref.api_group != GROUP {
        causes.push(Cause::not_supported(
            "roleRef.apiGroup",
            &role_ref.api_group,
            &[GROUP],
        ));
    }
    if role_ref.name.is_empty() {
        causes.push(Cause::required("roleRef.name"));
    } else {
        for msg in names::path_segment(&role_ref.name, false) {
            causes.push(Cause::invalid(
                "roleRef.name",
                &go_quote(&role_ref.name),
                &msg,
            ));
        }
    }
    for (i, subject) in subjects.unwrap_or_default().iter().enumerate() {
        causes.extend(self::subject(
            subject,
            namespaced,
            &format!("subjects[{i}]"),
        ));
    }
    causes
}

fn subject(subject: &Subject, namespaced: bool, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    if subject.name.is_empty() {
        causes.push(Cause::required(format!("{path}.name")));
    }
    let api_group = subject.api_group.as_deref().unwrap_or("");
    match subject.kind.as_str() {
        "ServiceAccount" => {
            if !subject.name.is_empty() {
                for msg in names::dns1123_subdomain(&subject.name) {
                    causes.push(Cause::invalid(
                        format!("{path}.name"),
                        &go_quote(&subject.name),
                        &msg,
                    ));
                }
            }
            if !api_group.is_empty() {
                causes.push(Cause::not_supported(
                    format!("{path}.apiGroup"),
                    api_group,
                    &[""],
                ));
            }
            if !namespaced && subject.namespace.as_deref().unwrap_or("").is_empty() {
                causes.push(Cause::required(format!("{path}.namespace")));
            }
        }
        "User" | "Group" => {
            if api_group != GROUP {
                causes.push(Cause::not_supported(
                    format!("{path}.apiGroup"),
                    api_group,
                    &[GROUP],
                ));
            }
        }
        other => causes.push(Cause::not_supported(
            format!("{path}.kind"),
            other,
            &["ServiceAccount", "User", "Group"],
        )),
    }
    causes
}

/// The defaults Kubernetes fills in: `roleRef.apiGroup`, and each subject's `apiGroup` by kind.
pub(in crate::admission) fn default_binding(
    role_ref: &mut RoleRef,
    subjects: Option<&mut Vec<Subject>>,
) {
    if role_ref.api_group.is_empty() {
        role_ref.api_group = GROUP.to_string();
    }
    for subject in subjects.into_iter().flatten() {
        if subject.api_group.as_deref().unwrap_or("").is_empty() {
            subject.api_group = match subject.kind.as_str() {
                "User" | "Group" => Some(GROUP.to_string()),
                _ => Some(String::new()),
            };
        }
    }
}

/// A string list as Go's `%#v` prints it: `[]string{"/healthz"}`.
fn go_strings(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule_messages(rule: serde_json::Value, namespaced: bool) -> Vec<String> {
        let rule: PolicyRule = serde_json::from_value(rule).expect("a rule");
        rules(Some(&[rule]), namespaced)
            .iter()
            .map(|c| c.to_string())
            .collect()
    }

    fn binding_messages(binding: serde_json::Value, namespaced: bool) -> Vec<String> {
        let role_ref: RoleRef = serde_json::from_value(binding["roleRef"].clone()).expect("ref");
        let mut subjects: Vec<Subject> =
            serde_json::from_value(binding["subjects"].clone()).expect("subjects");
        let mut role_ref = role_ref;
        default_binding(&mut role_ref, Some(&mut subjects));
        self::binding(&role_ref, Some(&subjects), namespaced)
            .iter()
            .map(|c| c.to_string())
            .collect()
    }

    #[test]
    fn rules_are_about_resources_or_urls() {
        assert!(rule_messages(
            json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}),
            true
        )
        .is_empty());
        assert!(rule_messages(
            json!({"nonResourceURLs": ["/healthz"], "verbs": ["get"]}),
            false
        )
        .is_empty());
        assert_eq!(
            rule_messages(json!({"resources": ["pods"], "verbs": []}), false),
            vec![
                "rules[0].verbs: Required value: verbs must contain at least one value",
                "rules[0].apiGroups: Required value: resource rules must supply at least one api group",
            ]
        );
        assert_eq!(
            rule_messages(
                json!({"nonResourceURLs": ["/healthz"], "resources": ["pods"], "verbs": ["get"]}),
                true
            ),
            vec![
                r#"rules[0].nonResourceURLs: Invalid value: []string{"/healthz"}: namespaced rules cannot apply to non-resource URLs"#,
                r#"rules[0].nonResourceURLs: Invalid value: []string{"/healthz"}: rules cannot apply to both regular resources and non-resource URLs"#,
            ]
        );
    }

    #[test]
    fn bindings_name_a_role_and_their_subjects_by_kind() {
        let ok = json!({
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [
                {"kind": "User", "name": "ann"},
                {"kind": "ServiceAccount", "name": "default", "namespace": "a"},
            ],
        });
        assert!(binding_messages(ok.clone(), true).is_empty());
        assert!(binding_messages(ok, false).is_empty());
        assert_eq!(
            binding_messages(
                json!({
                    "roleRef": {"kind": "Role", "name": ""},
                    "subjects": [
                        {"kind": "Robot", "name": "r2"},
                        {"kind": "ServiceAccount", "name": "default"},
                        {"kind": "User", "name": "", "apiGroup": "x"},
                    ],
                }),
                false
            ),
            vec![
                r#"roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole""#,
                "roleRef.name: Required value",
                r#"subjects[0].kind: Unsupported value: "Robot": supported values: "ServiceAccount", "User", "Group""#,
                "subjects[1].namespace: Required value",
                "subjects[2].name: Required value",
                r#"subjects[2].apiGroup: Unsupported value: "x": supported values: "rbac.authorization.k8s.io""#,
            ]
        );
    }
}

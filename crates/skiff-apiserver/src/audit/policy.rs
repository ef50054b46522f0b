//! Audit policy (`--audit-policy-file`): which requests are logged, and how much of each, in
//! Kubernetes' `audit.k8s.io/v1` `Policy` format. The first rule that matches a request gives
//! its level; a request no rule matches is not logged, as in kube-apiserver.
//!
//! ```yaml
//! apiVersion: audit.k8s.io/v1
//! kind: Policy
//! rules:
//!   - level: None                       # not logged
//!     nonResourceURLs: ["/healthz*", "/version"]
//!   - level: Metadata                   # who, what, the result; never bodies
//!     resources: [{group: "", resources: ["secrets"]}]
//!   - level: Request                    # and the request's object
//!     verbs: [create, update, patch]
//!     namespaces: [shop]
//!   - level: RequestResponse            # and the response's
//!     users: [ann]
//! ```
//!
//! Rule fields: `level`, `users`, `userGroups`, `verbs`, `resources` (`group`, `resources` with
//! `pod/log`, `*/status` and `pods/*` forms, `resourceNames`), `namespaces`, `nonResourceURLs`
//! (a trailing `*` matches a prefix), `omitStages`. Without a policy file every request is
//! logged at `Metadata`.
use serde::Deserialize;
use serde_json::Value;

use crate::auth::attributes::Attributes;
use crate::auth::user::UserInfo;

/// How much of a request the log keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    None,
    #[default]
    Metadata,
    Request,
    RequestResponse,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Rule {
    level: Level,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<String>,
    #[serde(default)]
    omit_managed_fields: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    api_version: String,
    /// Allowed (Kubernetes' policies carry one), not used.
    #[serde(default, rename = "metadata")]
    _metadata: Value,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    omit_stages: Vec<String>,
    #[serde(default)]
    omit_managed_fields: bool,
}

/// A parsed policy; [`Policy::default`] logs everything at `Metadata`.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `None`: no policy file.
    file: Option<PolicyFile>,
}

/// The only stage skiff writes: the response is complete.
const STAGE: &str = "ResponseComplete";

impl Policy {
    /// Reads a policy file's text (YAML or JSON); errors name the field.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let value = skiff_api::decode::decode_body(text.as_bytes(), Some("application/yaml"))
            .map_err(|e| e.to_string())?;
        let file: PolicyFile =
            serde_path_to_error::deserialize(value).map_err(|e| match e.path().to_string() {
                path if path == "." => e.inner().to_string(),
                path => format!("{path}: {}", e.inner()),
            })?;
        if file.kind != "Policy" {
            return Err(format!("kind: must be Policy, not {:?}", file.kind));
        }
        if !matches!(file.api_version.as_str(), "audit.k8s.io/v1" | "") {
            return Err(format!(
                "apiVersion: must be audit.k8s.io/v1, not {:?}",
                file.api_version
            ));
        }
        Ok(Policy { file: Some(file) })
    }

    /// The level of a request by `user` (what it asked: `attributes`, or the bare `path`) and
    /// whether managed fields are left out of the objects logged.
    pub fn level(
        &self,
        user: &UserInfo,
        attributes: Option<&Attributes>,
        path: &str,
    ) -> (Level, bool) {
        let Some(file) = &self.file else {
            return (Level::Metadata, false);
        };
        if file.omit_stages.iter().any(|s| s == STAGE) {
            return (Level::None, false);
        }
        for rule in &file.rules {
            if matches(rule, user, attributes, path) {
                if rule.omit_stages.iter().any(|s| s == STAGE) {
                    return (Level::None, false);
                }
                return (
                    rule.level,
                    rule.omit_managed_fields || file.omit_managed_fields,
                );
            }
        }
        (Level::None, false)
    }
}

fn matches(rule: &Rule, user: &UserInfo, attributes: Option<&Attributes>, path: &str) -> bool {
    if !rule.users.is_empty() && !rule.users.contains(&user.name) {
        return false;
    }
    if !rule.user_groups.is_empty() && !user.groups.iter().any(|g| rule.user_groups.contains(g)) {
        return false;
    }
    let verb = attributes.map_or("", |a| a.verb.as_str());
    if !rule.verbs.is_empty() && !rule.verbs.iter().any(|v| v == verb) {
        return false;
    }
    let resource_request = attributes.filter(|a| a.resource_request);
    if !rule.namespaces.is_empty() || !rule.resources.is_empty() {
        let Some(a) = resource_request else {
            return false;
        };
        if !rule.namespaces.is_empty() && !rule.namespaces.contains(&a.namespace) {
            return false;
        }
        return rule.resources.is_empty() || rule.resources.iter().any(|g| resource_matches(g, a));
    }
    if !rule.non_resource_urls.is_empty() {
        if resource_request.is_some() {
            return false;
        }
        return rule
            .non_resource_urls
            .iter()
            .any(|url| match url.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => path == url,
            });
    }
    true
}

/// `pods`, `pods/log`, `*/status`, `pods/*` as Kubernetes' audit rules match them.
fn resource_matches(rule: &GroupResources, a: &Attributes) -> bool {
    if rule.group != a.api_group {
        return false;
    }
    if !rule.resource_names.is_empty() && !rule.resource_names.contains(&a.name) {
        return false;
    }
    if rule.resources.is_empty() {
        return true;
    }
    let full = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    rule.resources.iter().any(|r| {
        r == &full
            || r == "*"
            || (!a.subresource.is_empty()
                && (r == &format!("*/{}", a.subresource) || r == &format!("{}/*", a.resource)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: None
    nonResourceURLs: ["/openapi*"]
  - level: None
    users: ["system:admin"]
    verbs: ["watch"]
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets", "pods/log"]
  - level: RequestResponse
    resources:
      - group: apps
        resources: ["*/scale"]
  - level: Request
    verbs: ["create", "update", "patch"]
    namespaces: ["shop"]
  - level: Metadata
    userGroups: ["editors"]
"#;

    #[test]
    fn the_first_matching_rule_decides() {
        let policy = Policy::parse(POLICY).expect("parses");
        let admin = UserInfo::new("system:admin", &["system:masters"]);
        let ann = UserInfo::new("ann", &["editors"]);
        let bob = UserInfo::new("bob", &[]);
        let res = |user: &UserInfo, verb: &str, group: &str, resource: &str, ns: &str| {
            let mut a = Attributes::resource(user, verb, group, resource, ns, "x");
            if let Some((r, sub)) = resource.split_once('/') {
                a.resource = r.into();
                a.subresource = sub.into();
            }
            a
        };
        let cases = [
            (&bob, None, "/openapi/v3", Level::None),
            (
                &admin,
                Some(res(&admin, "watch", "", "pods", "shop")),
                "",
                Level::None,
            ),
            (
                &admin,
                Some(res(&admin, "create", "", "secrets", "shop")),
                "",
                Level::Metadata,
            ),
            (
                &bob,
                Some(res(&bob, "get", "", "pods/log", "shop")),
                "",
                Level::Metadata,
            ),
            (
                &bob,
                Some(res(&bob, "update", "apps", "deployments/scale", "x")),
                "",
                Level::RequestResponse,
            ),
            (
                &bob,
                Some(res(&bob, "create", "", "configmaps", "shop")),
                "",
                Level::Request,
            ),
            (
                &bob,
                Some(res(&bob, "create", "", "configmaps", "other")),
                "",
                Level::None,
            ),
            (
                &ann,
                Some(res(&ann, "delete", "", "pods", "other")),
                "",
                Level::Metadata,
            ),
            (&bob, None, "/version", Level::None),
        ];
        for (user, attributes, path, want) in cases {
            assert_eq!(
                policy.level(user, attributes.as_ref(), path).0,
                want,
                "{user:?} {attributes:?} {path}"
            );
        }
        assert_eq!(Policy::default().level(&bob, None, "/x").0, Level::Metadata);
    }

    #[test]
    fn bad_policies_name_the_field() {
        let err = Policy::parse("kind: Policy\nrules:\n  - level: Loud\n").expect_err("level");
        assert!(err.contains("rules[0].level"), "{err}");
        let err = Policy::parse("kind: Policy\nrules:\n  - level: None\n    user: [a]\n")
            .expect_err("field");
        assert!(err.contains("unknown field `user`"), "{err}");
        assert!(Policy::parse("kind: Other\n")
            .expect_err("kind")
            .contains("kind"));
    }
}

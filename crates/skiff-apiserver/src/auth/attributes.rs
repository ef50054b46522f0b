//! What a request asks to do, in the terms RBAC rules are written in (Kubernetes'
//! `authorizer.Attributes`, from its `RequestInfoFactory`).
//!
//! | request | verb | resource | namespace |
//! |---|---|---|---|
//! | `GET /api/v1/namespaces/a/pods` | `list` | `pods` | `a` |
//! | `GET /api/v1/pods?watch=true` | `watch` | `pods` | |
//! | `POST /api/v1/namespaces/a/pods/web/exec` | `create` | `pods`, subresource `exec` | `a` |
//! | `DELETE /api/v1/namespaces/a/pods` | `deletecollection` | `pods` | `a` |
//! | `GET /api/v1/namespaces/a` | `get` | `namespaces`, name `a` | `a` |
//! | `GET /api/v1/namespaces/a/secrets?watch=1&fieldSelector=metadata.name=s` | `watch` | `secrets`, name `s` | `a` |
//! | `GET /healthz` | `get` | (path `/healthz`) | |

use axum::http::Method;

use super::user::UserInfo;
use crate::query::Params;
use crate::target::Target;

/// One request as the authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub user: UserInfo,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or
    /// a special verb (`impersonate`, `bind`, `escalate`); for a path, the lower-case method.
    pub verb: String,
    /// Whether this is about objects (`resource` set) or about a path.
    pub resource_request: bool,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The URL path of a non-resource request.
    pub path: String,
}

impl Attributes {
    /// A resource request of `user` on `target`.
    pub fn for_target(user: &UserInfo, method: &Method, target: &Target, params: &Params) -> Self {
        let named = target.name.is_some();
        let verb = match *method {
            Method::GET | Method::HEAD if params.is_watch() => "watch",
            Method::GET | Method::HEAD if named => "get",
            Method::GET | Method::HEAD => "list",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if named => "delete",
            Method::DELETE => "deletecollection",
            _ => "",
        };
        // A list or watch of one object by `fieldSelector=metadata.name=NAME` is about that
        // object, as in Kubernetes: kubelet watches each ConfigMap and Secret its pods use
        // that way, and may do so only for those.
        let name = match (&target.name, verb) {
            (Some(name), _) => name.clone(),
            (None, "list" | "watch") => single_name(params.field_selector.as_deref()),
            (None, _) => String::new(),
        };
        // A namespace is inside itself: a RoleBinding in `a` may grant reading namespace `a`.
        let namespace = match &target.namespace {
            Some(ns) => ns.clone(),
            None if target.info.resource == "namespaces" && target.info.group.is_empty() => {
                name.clone()
            }
            None => String::new(),
        };
        Attributes {
            user: user.clone(),
            verb: verb.to_string(),
            resource_request: true,
            api_group: target.info.group.to_string(),
            resource: target.info.resource.to_string(),
            subresource: target.subresource.clone().unwrap_or_default(),
            namespace,
            name,
            path: String::new(),
        }
    }

    /// A request for a path that is not about objects (`/healthz`, `/api`, `/openapi/v3`).
    pub fn for_path(user: &UserInfo, method: &Method, path: &str) -> Self {
        Attributes {
            user: user.clone(),
            verb: method.as_str().to_ascii_lowercase(),
            resource_request: false,
            api_group: String::new(),
            resource: String::new(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
            path: path.to_string(),
        }
    }

    /// A resource question asked on someone's behalf (reviews, escalation and impersonation
    /// checks).
    pub fn resource(
        user: &UserInfo,
        verb: &str,
        api_group: &str,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Self {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        Attributes {
            user: user.clone(),
            verb: verb.to_string(),
            resource_request: true,
            api_group: api_group.to_string(),
            resource: resource.to_string(),
            subresource: subresource.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            path: String::new(),
        }
    }

    /// The same question with another verb.
    pub fn with_verb(mut self, verb: &str) -> Self {
        self.verb = verb.to_string();
        self
    }

    /// `pods` or `pods/exec`.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// Kubernetes' wording of a refusal: `User "ann" cannot list resource "secrets" in API
    /// group "" in the namespace "shop"`.
    pub fn forbidden_message(&self) -> String {
        let user = &self.user.name;
        if !self.resource_request {
            return format!("User {user:?} cannot {} path {:?}", self.verb, self.path);
        }
        let resource = self.combined_resource();
        if self.namespace.is_empty() {
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
                self.verb, self.api_group
            )
        } else {
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
                self.verb, self.api_group, self.namespace
            )
        }
    }

    /// The whole `Forbidden` status message, as kube-apiserver's: `pods "web" is forbidden:
    /// User ...`, `pods is forbidden: ...` without a name, `forbidden: ...` for a path.
    pub fn forbidden_status_message(&self, reason: &str) -> String {
        let mut message = self.forbidden_message();
        if !reason.is_empty() {
            message = format!("{message}: {reason}");
        }
        if !self.resource_request || self.resource.is_empty() {
            return format!("forbidden: {message}");
        }
        let qualified = if self.api_group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.api_group)
        };
        if self.name.is_empty() {
            format!("{qualified} is forbidden: {message}")
        } else {
            format!("{qualified} {:?} is forbidden: {message}", self.name)
        }
    }
}

/// The name a field selector picks when it is exactly `metadata.name=NAME` (or `==`), else "".
fn single_name(selector: Option<&str>) -> String {
    let Some(selector) = selector.map(str::trim) else {
        return String::new();
    };
    if selector.contains(',') {
        return String::new();
    }
    selector
        .strip_prefix("metadata.name==")
        .or_else(|| selector.strip_prefix("metadata.name="))
        .filter(|name| !name.is_empty() && !name.contains('='))
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(method: Method, path: &str, query: Option<&str>) -> Attributes {
        let target = crate::target::parse(path)
            .expect("served")
            .expect("a resource path");
        let params = Params::parse(query).expect("query");
        Attributes::for_target(&UserInfo::new("ann", &[]), &method, &target, &params)
    }

    #[test]
    fn requests_become_verbs_on_resources() {
        let a = attributes(Method::GET, "/api/v1/namespaces/shop/secrets", None);
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("list", "shop"));
        assert_eq!(
            a.forbidden_status_message(""),
            r#"secrets is forbidden: User "ann" cannot list resource "secrets" in API group "" in the namespace "shop""#
        );
        let a = attributes(Method::GET, "/api/v1/pods", Some("watch=true"));
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("watch", ""));
        // One object by a field selector: the request is about that object.
        let a = attributes(
            Method::GET,
            "/api/v1/namespaces/a/secrets",
            Some("watch=1&fieldSelector=metadata.name%3Dkey"),
        );
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "key"));
        let a = attributes(
            Method::GET,
            "/api/v1/namespaces/a/secrets",
            Some("fieldSelector=metadata.name%3Dkey,type%3DOpaque"),
        );
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("list", ""));
        let a = attributes(
            Method::DELETE,
            "/apis/apps/v1/namespaces/a/deployments/web",
            None,
        );
        assert_eq!(
            a.forbidden_status_message(""),
            r#"deployments.apps "web" is forbidden: User "ann" cannot delete resource "deployments" in API group "apps" in the namespace "a""#
        );
        let a = attributes(Method::DELETE, "/api/v1/namespaces/a/pods", None);
        assert_eq!(a.verb, "deletecollection");
        let a = attributes(Method::POST, "/api/v1/namespaces/a/pods/web/exec", None);
        assert_eq!(
            (a.verb.as_str(), a.combined_resource()),
            ("create", "pods/exec".into())
        );
        let a = attributes(Method::GET, "/api/v1/namespaces/a", None);
        assert_eq!((a.namespace.as_str(), a.name.as_str()), ("a", "a"));
        let a = attributes(Method::GET, "/api/v1/nodes", None);
        assert_eq!(
            a.forbidden_message(),
            r#"User "ann" cannot list resource "nodes" in API group "" at the cluster scope"#
        );
        let a = Attributes::for_path(&UserInfo::new("ann", &[]), &Method::GET, "/metrics");
        assert_eq!(
            a.forbidden_status_message(""),
            r#"forbidden: User "ann" cannot get path "/metrics""#
        );
    }
}

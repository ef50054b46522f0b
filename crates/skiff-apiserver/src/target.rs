//! Turning a request path into what it addresses: a resource, maybe a namespace, maybe an
//! object, maybe a subresource.
//!
//! Kubernetes paths are regular enough to parse by hand, and one parser is easier to read than a
//! dozen overlapping route patterns:
//!
//! ```text
//! /api/v1/{resource}                                   cluster-scoped, or all namespaces
//! /api/v1/{resource}/{name}[/{subresource}]            cluster-scoped object
//! /api/v1/namespaces/{ns}/{resource}                   one namespace
//! /api/v1/namespaces/{ns}/{resource}/{name}[/{sub}]    namespaced object
//! /apis/{group}/{version}/...                          the same for named groups
//! ```
//! The only ambiguity is `/api/v1/namespaces/{name}/status`: a namespace's subresource, not a
//! resource called `status` inside it. A segment that names a namespaced resource wins.

use skiff_api::resources::{self, ResourceInfo};
use skiff_api::status::ApiError;

/// What a resource request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The resource, in the version it is stored in.
    pub info: &'static ResourceInfo,
    /// The version the request addressed: `info` itself unless the path named another served
    /// version (autoscaling/v1), whose bodies are converted at the edges
    /// ([`skiff_api::versions`]).
    pub served: &'static ResourceInfo,
    /// The namespace in the path; `None` for cluster-scoped resources and all-namespace lists.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// For `nodes/NAME/proxy/PATH`: `/PATH`, what is asked of the node's agent.
    pub proxy_path: Option<String>,
}

impl Target {
    /// The store key of the addressed object. Only meaningful when `name` is set.
    pub fn key(&self) -> String {
        skiff_store::object_key(
            &self.info.qualified_resource(),
            self.namespace.as_deref().unwrap_or(""),
            self.name.as_deref().unwrap_or(""),
        )
    }

    /// The key prefix of the addressed collection.
    pub fn prefix(&self) -> String {
        skiff_store::key_prefix(&self.info.qualified_resource(), self.namespace.as_deref())
    }
}

/// Parses a resource path. `Ok(None)` means "not a resource path" (let other routes answer);
/// `Err` means a resource path naming something skiff does not serve.
pub fn parse(path: &str) -> Result<Option<Target>, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Ok(None),
    };
    if rest.is_empty() || rest.iter().any(|s| s.is_empty()) {
        return Ok(None);
    }
    let find = |resource: &str| resources::find(group, version, resource);
    let not_found = |resource: &str| {
        let group_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        ApiError::NoSuchPath(format!("{resource} in {group_version}"))
    };
    let namespaced_collection = match rest {
        ["namespaces", _, resource, ..] => find(resource).filter(|r| r.namespaced),
        _ => None,
    };
    let target = match (rest, namespaced_collection) {
        (["namespaces", ns, _, tail @ ..], Some(info)) if tail.len() <= 2 => Target {
            info: resources::stored_version(info),
            served: info,
            namespace: Some(ns.to_string()),
            name: tail.first().map(|s| s.to_string()),
            subresource: tail.get(1).map(|s| s.to_string()),
            proxy_path: None,
        },
        // `/apis/policy/v1/namespaces/a/poddisruptionbudgets` where the group has no namespaces of its own: the
        // resource that is missing is `poddisruptionbudgets`, not `namespaces`.
        (["namespaces", _, resource, ..], None) if find("namespaces").is_none() => {
            return Err(not_found(resource));
        }
        // `/api/v1/nodes/NAME/proxy/metrics/cadvisor`: the rest of the path is the agent's.
        (["nodes", name, "proxy", path @ ..], _) if group.is_empty() && !path.is_empty() => {
            let info = find("nodes").ok_or_else(|| not_found("nodes"))?;
            Target {
                info,
                served: info,
                namespace: None,
                name: Some(name.to_string()),
                subresource: Some("proxy".into()),
                proxy_path: Some(format!("/{}", path.join("/"))),
            }
        }
        ([resource, tail @ ..], _) if tail.len() <= 2 => {
            let info = find(resource).ok_or_else(|| not_found(resource))?;
            if info.namespaced && !tail.is_empty() {
                // `/api/v1/pods/x` has no namespace: Kubernetes answers 404 too.
                return Err(not_found(resource));
            }
            Target {
                info: resources::stored_version(info),
                served: info,
                namespace: None,
                name: tail.first().map(|s| s.to_string()),
                subresource: tail.get(1).map(|s| s.to_string()),
                proxy_path: None,
            }
        }
        _ => return Err(not_found(rest.first().copied().unwrap_or(""))),
    };
    Ok(Some(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(path: &str) -> (String, Option<String>, Option<String>, Option<String>) {
        let target = parse(path).expect("served").expect("a resource path");
        (
            target.info.resource.to_string(),
            target.namespace,
            target.name,
            target.subresource,
        )
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn paths_resolve_as_kubernetes_routes_them() {
        let cases = [
            ("/api/v1/pods", ("pods", None, None, None)),
            (
                "/api/v1/namespaces/default/pods",
                ("pods", s("default"), None, None),
            ),
            (
                "/api/v1/namespaces/default/pods/web",
                ("pods", s("default"), s("web"), None),
            ),
            (
                "/api/v1/namespaces/default/pods/web/status",
                ("pods", s("default"), s("web"), s("status")),
            ),
            ("/api/v1/namespaces", ("namespaces", None, None, None)),
            (
                "/api/v1/namespaces/default",
                ("namespaces", None, s("default"), None),
            ),
            (
                "/api/v1/namespaces/default/status",
                ("namespaces", None, s("default"), s("status")),
            ),
            ("/api/v1/nodes/n1", ("nodes", None, s("n1"), None)),
            (
                "/apis/apps/v1/namespaces/a/deployments/web/scale",
                ("deployments", s("a"), s("web"), s("scale")),
            ),
            (
                "/apis/apps/v1/deployments",
                ("deployments", None, None, None),
            ),
        ];
        for (path, (resource, ns, name, sub)) in cases {
            assert_eq!(t(path), (resource.to_string(), ns, name, sub), "{path}");
        }
    }

    #[test]
    fn unknown_resources_are_not_found_and_other_paths_pass() {
        assert!(parse("/api/v1/widgets").is_err());
        assert_eq!(
            parse("/apis/apps/v1/namespaces/a/pods"),
            Err(ApiError::NoSuchPath("pods in apps/v1".into())),
            "pods are not in apps, and the message names them"
        );
        assert_eq!(
            parse("/apis/policy/v1/namespaces/a/poddisruptionbudgets"),
            Err(ApiError::NoSuchPath(
                "poddisruptionbudgets in policy/v1".into()
            ))
        );
        assert!(
            parse("/api/v1/pods/web").is_err(),
            "a namespaced object needs its namespace"
        );
        assert_eq!(parse("/healthz").expect("not a resource path"), None);
        assert_eq!(parse("/api").expect("discovery"), None);
        assert_eq!(parse("/api/v1").expect("discovery"), None);
    }
}

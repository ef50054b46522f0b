//! The Node authorizer: what a node (`system:node:NAME` in `system:nodes`) may do, limited to
//! its own objects and to what its pods need, as Kubernetes' Node authorizer and
//! NodeRestriction admission limit kubelets.
//!
//! | resource | a node may |
//! |---|---|
//! | nodes | read all; create, update, patch and delete only its own (checked on the body by the Node strategy) |
//! | pods | read all; update the status of, and delete, only pods bound to it; never create |
//! | secrets, configmaps, persistentvolumeclaims | `get` one that a pod bound to it refers to, or `list`/`watch` it alone (`fieldSelector=metadata.name=NAME`) |
//! | persistentvolumes | `get` one bound to such a claim, or pinned to it by node affinity; `update`/`patch` only the finalizers of one pinned to it (checked on the body by the PersistentVolume strategy) |
//! | serviceaccounts/token | create, for an account a pod bound to it runs as |
//! | services, endpoints, endpointslices | read (it runs the Service proxy and DNS) |
//! | events | create, update, patch |
//! | leases in `kube-node-lease` | its own |
//!
//! Anything else gets no opinion here and goes on to RBAC, where a node has nothing unless
//! an administrator binds it. A stolen node credential therefore reads no Secret of another
//! node's pods, and cannot schedule a privileged pod anywhere.
use serde_json::Value;
use skiff_store::{key_prefix, object_key};

use super::attributes::Attributes;
use crate::registry::View;

/// `Some(allowed)` when the request is about something nodes are limited on, `None` to let
/// RBAC decide.
pub fn decide(view: &dyn View, node: &str, request: &Attributes) -> Option<bool> {
    if !request.resource_request {
        return None;
    }
    let verb = request.verb.as_str();
    let reads = matches!(verb, "get" | "list" | "watch");
    let sub = request.subresource.as_str();
    Some(
        match (request.api_group.as_str(), request.resource.as_str()) {
            ("", "nodes") => match verb {
                "get" | "list" | "watch" | "create" => true,
                "update" | "patch" | "delete" => request.name == node,
                _ => false,
            },
            ("", "pods") => match (verb, sub) {
                ("get" | "list" | "watch", "") => true,
                ("update" | "patch", "status") | ("delete", "") => {
                    pod_node(view, &request.namespace, &request.name).as_deref() == Some(node)
                }
                _ => false,
            },
            ("", kind @ ("secrets" | "configmaps" | "persistentvolumeclaims")) => {
                reads
                    && sub.is_empty()
                    && !request.name.is_empty()
                    && referenced_by_pod_on(view, node, kind, &request.namespace, &request.name)
            }
            ("", "persistentvolumes") => match verb {
                _ if !sub.is_empty() || request.name.is_empty() => false,
                "get" => {
                    volume_pinned_to(view, node, &request.name)
                        || volume_of_claim_on(view, node, &request.name)
                }
                "update" | "patch" => volume_pinned_to(view, node, &request.name),
                _ => false,
            },
            ("", "serviceaccounts") => {
                verb == "create"
                    && sub == "token"
                    && runs_as_on(view, node, &request.namespace, &request.name)
            }
            ("", "services" | "endpoints") | ("discovery.k8s.io", "endpointslices") => {
                reads && sub.is_empty()
            }
            ("", "events") | ("events.k8s.io", "events") => {
                matches!(verb, "create" | "update" | "patch")
            }
            ("coordination.k8s.io", "leases") => {
                request.namespace == crate::registry::leases::NODE_LEASE_NAMESPACE
                    && request.name == node
                    && !matches!(verb, "list" | "watch" | "deletecollection")
            }
            _ => return None,
        },
    )
}

/// The node a stored pod is bound to.
fn pod_node(view: &dyn View, namespace: &str, name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let pod = view.get(&object_key("pods", namespace, name))?;
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Whether a pod in `namespace` bound to `node` runs as the ServiceAccount `account`.
fn runs_as_on(view: &dyn View, node: &str, namespace: &str, account: &str) -> bool {
    view.list(&key_prefix("pods", Some(namespace)))
        .iter()
        .filter(|pod| pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
        .any(|pod| {
            pod.pointer("/spec/serviceAccountName")
                .and_then(Value::as_str)
                .unwrap_or("default")
                == account
        })
}

/// Whether the stored PersistentVolume `name` is pinned to `node` by its node affinity.
fn volume_pinned_to(view: &dyn View, node: &str, name: &str) -> bool {
    view.get(&object_key("persistentvolumes", "", name))
        .is_some_and(|pv| crate::registry::storage::pinned_to(&pv, node))
}

/// Whether the PersistentVolume `name` is bound to a claim a pod bound to `node` uses.
fn volume_of_claim_on(view: &dyn View, node: &str, name: &str) -> bool {
    let Some(pv) = view.get(&object_key("persistentvolumes", "", name)) else {
        return false;
    };
    let claim = |field: &str| {
        pv.pointer(&format!("/spec/claimRef/{field}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (namespace, claim_name) = (claim("namespace"), claim("name"));
    let bound_here = view
        .get(&object_key(
            "persistentvolumeclaims",
            &namespace,
            &claim_name,
        ))
        .is_some_and(|pvc| pvc.pointer("/spec/volumeName").and_then(Value::as_str) == Some(name));
    bound_here
        && referenced_by_pod_on(
            view,
            node,
            "persistentvolumeclaims",
            &namespace,
            &claim_name,
        )
}

/// Whether a pod in `namespace` bound to `node` refers to the `kind` object called `name`.
fn referenced_by_pod_on(
    view: &dyn View,
    node: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> bool {
    view.list(&key_prefix("pods", Some(namespace)))
        .iter()
        .filter(|pod| pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node))
        .any(|pod| references(pod, kind).any(|r| r == name))
}

/// The names of `kind` objects a pod refers to: environment, volumes (projected too) and,
/// for Secrets, image pull secrets.
pub fn references<'a>(pod: &'a Value, kind: &str) -> impl Iterator<Item = &'a str> + 'a {
    let spec = pod.get("spec");
    let list = move |value: Option<&'a Value>, field: &str| {
        value
            .and_then(|v| v.get(field))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    };
    let text = |value: &'a Value, pointer: &str| value.pointer(pointer).and_then(Value::as_str);
    let containers: Vec<&Value> = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|field| list(spec, field))
        .collect();
    let mut names: Vec<&str> = Vec::new();
    let (env_key, env_from, volume, projected) = match kind {
        "secrets" => ("secretKeyRef", "secretRef", "/secret/secretName", "secret"),
        "configmaps" => (
            "configMapKeyRef",
            "configMapRef",
            "/configMap/name",
            "configMap",
        ),
        _ => ("", "", "", ""),
    };
    if kind == "persistentvolumeclaims" {
        for v in list(spec, "volumes") {
            names.extend(text(v, "/persistentVolumeClaim/claimName"));
        }
        return names.into_iter();
    }
    for c in &containers {
        for e in list(Some(c), "env") {
            names.extend(text(e, &format!("/valueFrom/{env_key}/name")));
        }
        for e in list(Some(c), "envFrom") {
            names.extend(text(e, &format!("/{env_from}/name")));
        }
    }
    for v in list(spec, "volumes") {
        names.extend(text(v, volume));
        for source in list(v.get("projected"), "sources") {
            names.extend(text(source, &format!("/{projected}/name")));
        }
    }
    if kind == "secrets" {
        for s in list(spec, "imagePullSecrets") {
            names.extend(text(s, "/name"));
        }
    }
    names.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::user::{UserInfo, NODES};
    use crate::registry::fake::FakeView;
    use serde_json::json;

    fn cluster() -> FakeView {
        FakeView::default()
            .with(
                "pods",
                json!({"metadata": {"name": "till", "namespace": "shop"},
                       "spec": {"nodeName": "edge-1",
                                "containers": [{"name": "c", "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "till-key", "key": "k"}}}],
                                                "envFrom": [{"configMapRef": {"name": "till-config"}}]}],
                                "volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "certs"}}]}}],
                                "imagePullSecrets": [{"name": "registry"}]}}),
            )
            .with(
                "pods",
                json!({"metadata": {"name": "vault", "namespace": "shop"},
                       "spec": {"nodeName": "edge-2",
                                "volumes": [{"name": "v", "secret": {"secretName": "vault-key"}}],
                                "containers": [{"name": "c"}]}}),
            )
    }

    fn may(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Option<bool> {
        let user = UserInfo::new("system:node:edge-1", &[NODES]);
        let request = Attributes::resource(&user, verb, group, resource, namespace, name);
        decide(&cluster(), "edge-1", &request)
    }

    #[test]
    fn a_node_reaches_only_what_its_own_pods_need() {
        for secret in ["till-key", "certs", "registry"] {
            assert_eq!(
                may("get", "", "secrets", "shop", secret),
                Some(true),
                "{secret}"
            );
        }
        assert_eq!(
            may("get", "", "configmaps", "shop", "till-config"),
            Some(true)
        );
        // Watching one object by name (kubelet's change detection), not another node's.
        assert_eq!(
            may("watch", "", "configmaps", "shop", "till-config"),
            Some(true)
        );
        assert_eq!(
            may("watch", "", "secrets", "shop", "vault-key"),
            Some(false)
        );
        assert_eq!(
            may("get", "", "secrets", "shop", "vault-key"),
            Some(false),
            "another node's pod's secret"
        );
        assert_eq!(may("list", "", "secrets", "shop", ""), Some(false));
        assert_eq!(may("watch", "", "configmaps", "", ""), Some(false));
    }

    #[test]
    fn a_node_writes_only_its_own_node_lease_and_pods() {
        assert_eq!(may("patch", "", "nodes/status", "", "edge-1"), Some(true));
        assert_eq!(may("update", "", "nodes", "", "edge-2"), Some(false));
        assert_eq!(may("update", "", "pods/status", "shop", "till"), Some(true));
        assert_eq!(
            may("update", "", "pods/status", "shop", "vault"),
            Some(false)
        );
        assert_eq!(may("delete", "", "pods", "shop", "vault"), Some(false));
        assert_eq!(
            may("create", "", "pods", "shop", ""),
            Some(false),
            "no pods of its own making"
        );
        assert_eq!(
            may("update", "", "pods", "shop", "till"),
            Some(false),
            "status only"
        );
        assert_eq!(may("list", "", "pods", "", ""), Some(true));
        assert_eq!(
            may("watch", "discovery.k8s.io", "endpointslices", "", ""),
            Some(true)
        );
        assert_eq!(
            may(
                "update",
                "coordination.k8s.io",
                "leases",
                "kube-node-lease",
                "edge-1"
            ),
            Some(true)
        );
        assert_eq!(
            may(
                "update",
                "coordination.k8s.io",
                "leases",
                "kube-node-lease",
                "edge-2"
            ),
            Some(false)
        );
        assert_eq!(
            may("list", "apps", "deployments", "", ""),
            None,
            "RBAC decides"
        );
    }
}

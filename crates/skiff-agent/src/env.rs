//! A container's environment, as Kubernetes builds it: the namespace's service variables,
//! then `envFrom` (whole ConfigMaps and Secrets, with a prefix), then `env` in order, each
//! value either literal (with `$(VAR)` expansion from the variables before it) or read from a
//! field of the pod, a ConfigMap key or a Secret key. Pure: the worker reads the ConfigMaps and
//! Secrets first ([`env_references`]) and hands them in as [`Downward`].
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::error::AgentError;

/// Values `fieldRef` env vars may read that are not in the pod object yet, and the
/// ConfigMaps and Secrets `envFrom`/`valueFrom` refer to (read by the worker beforehand).
#[derive(Debug, Clone, Default)]
pub struct Downward {
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    pub node_name: String,
    /// ConfigMap name → its data (absent: the ConfigMap does not exist).
    pub config_maps: HashMap<String, BTreeMap<String, String>>,
    /// Secret name → its decoded data.
    pub secrets: HashMap<String, BTreeMap<String, String>>,
    /// `WEB_SERVICE_HOST` and friends for the namespace's services (before the container's
    /// own variables, which win).
    pub service_env: Vec<(String, String)>,
}

/// The ConfigMaps and Secrets a container's environment reads.
pub fn env_references(container: &Container) -> (Vec<String>, Vec<String>) {
    let mut maps = Vec::new();
    let mut secrets = Vec::new();
    for from in container.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            maps.push(r.name.clone());
        }
        if let Some(r) = &from.secret_ref {
            secrets.push(r.name.clone());
        }
    }
    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            continue;
        };
        if let Some(r) = &from.config_map_key_ref {
            maps.push(r.name.clone());
        }
        if let Some(r) = &from.secret_key_ref {
            secrets.push(r.name.clone());
        }
    }
    maps.sort();
    maps.dedup();
    secrets.sort();
    secrets.dedup();
    (maps, secrets)
}

/// `envFrom` entries, in order: every key of the ConfigMap or Secret (with the prefix).
fn env_from(
    container: &Container,
    downward: &Downward,
    env: &mut Vec<(String, String)>,
) -> Result<(), AgentError> {
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (source, name, optional, kind) = if let Some(r) = &from.config_map_ref {
            (&downward.config_maps, &r.name, r.optional, "configmap")
        } else if let Some(r) = &from.secret_ref {
            (&downward.secrets, &r.name, r.optional, "secret")
        } else {
            continue;
        };
        match source.get(name) {
            Some(data) => {
                for (k, v) in data {
                    env.push((format!("{prefix}{k}"), v.clone()));
                }
            }
            None if optional == Some(true) => {}
            None => {
                return Err(AgentError::ContainerConfig(format!(
                    "{kind} \"{name}\" not found"
                )))
            }
        }
    }
    Ok(())
}

/// The container's environment variables, in the order the process sees them (a later
/// duplicate wins). Errors ([`AgentError::ContainerConfig`]) are kubelet's (`configmap "cfg"
/// not found`).
pub fn container_env(
    pod: &Pod,
    container: &Container,
    downward: &Downward,
) -> Result<Vec<(String, String)>, AgentError> {
    if pod.spec.is_none() {
        return Err(AgentError::ContainerConfig("pod has no spec".into()));
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env = Vec::new();
    // The worker left out the namespace's services when `enableServiceLinks` is false (the
    // `kubernetes` Service's variables stay, as in Kubernetes).
    env.extend(downward.service_env.iter().cloned());
    env_from(container, downward, &mut env)?;
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    field_value(pod, &field.field_path, downward).ok_or_else(|| {
                        AgentError::ContainerConfig(format!(
                            "env {}: unsupported fieldPath {:?}",
                            var.name, field.field_path
                        ))
                    })?
                } else if let Some(r) = &from.config_map_key_ref {
                    key_value(
                        &downward.config_maps,
                        "configmap",
                        namespace,
                        &r.name,
                        &r.key,
                        r.optional,
                    )?
                } else if let Some(r) = &from.secret_key_ref {
                    key_value(
                        &downward.secrets,
                        "secret",
                        namespace,
                        &r.name,
                        &r.key,
                        r.optional,
                    )?
                } else {
                    String::new()
                }
            }
            (None, None) => String::new(),
        };
        env.push((var.name.clone(), expand(&value, &env)));
    }
    Ok(env)
}

/// One key of a ConfigMap or Secret, with kubelet's errors when it is missing and not optional.
fn key_value(
    source: &HashMap<String, BTreeMap<String, String>>,
    kind: &str,
    namespace: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
) -> Result<String, AgentError> {
    let optional = optional == Some(true);
    match source.get(name) {
        None if optional => Ok(String::new()),
        None => Err(AgentError::ContainerConfig(format!(
            "{kind} \"{name}\" not found"
        ))),
        Some(data) => match data.get(key) {
            Some(v) => Ok(v.clone()),
            None if optional => Ok(String::new()),
            None => Err(AgentError::ContainerConfig(format!(
                "couldn't find key {key} in {} {namespace}/{name}",
                if kind == "configmap" {
                    "ConfigMap"
                } else {
                    "Secret"
                }
            ))),
        },
    }
}

/// `valueFrom.fieldRef` values Kubernetes supports that skiff knows.
fn field_value(pod: &Pod, path: &str, downward: &Downward) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => downward.node_name.clone(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" => downward.pod_ip.clone().unwrap_or_default(),
        "status.podIPs" => downward.pod_ip.clone().unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => downward.host_ip.clone().unwrap_or_default(),
        _ => {
            let key = path
                .strip_prefix("metadata.labels['")
                .map(|k| (k, true))
                .or_else(|| {
                    path.strip_prefix("metadata.annotations['")
                        .map(|k| (k, false))
                })?;
            let name = key.0.strip_suffix("']")?;
            let map = if key.1 {
                &meta.labels
            } else {
                &meta.annotations
            };
            map.as_ref()
                .and_then(|m| m.get(name))
                .cloned()
                .unwrap_or_default()
        }
    })
}

/// Kubernetes' `$(VAR)` expansion of env values from variables defined earlier; `$$(VAR)`
/// escapes; unknown references stay as written.
pub fn expand(value: &str, defined: &[(String, String)]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match defined.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).expect("pod")
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let defined = vec![("A".to_string(), "x".to_string())];
        assert_eq!(expand("$(A)-$(B)", &defined), "x-$(B)");
        assert_eq!(expand("$$(A)", &defined), "$(A)");
        assert_eq!(expand("cost $5", &defined), "cost $5");
        assert_eq!(expand("$(A", &defined), "$(A");
    }

    #[test]
    fn env_from_config_maps_and_secrets() {
        let p = pod(json!({
            "metadata": {"name": "web", "namespace": "ns1", "uid": "u1"},
            "spec": {"containers": [{
                "name": "c",
                "envFrom": [{"configMapRef": {"name": "cfg"}}, {"prefix": "S_", "secretRef": {"name": "sec"}}],
                "env": [
                    {"name": "ONE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "GREETING"}}},
                    {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "x", "optional": true}}}
                ]
            }]}
        }));
        let mut downward = Downward::default();
        downward.config_maps.insert(
            "cfg".into(),
            [("GREETING".to_string(), "hi".to_string())].into(),
        );
        downward.secrets.insert(
            "sec".into(),
            [("TOKEN".to_string(), "t0k".to_string())].into(),
        );
        let spec = p.spec.as_ref().expect("spec");
        let env = container_env(&p, &spec.containers[0], &downward).expect("env");
        assert_eq!(
            env,
            [
                ("GREETING".to_string(), "hi".to_string()),
                ("S_TOKEN".into(), "t0k".into()),
                ("ONE".into(), "hi".into()),
                ("OPT".into(), String::new())
            ]
        );
        downward.config_maps.clear();
        let err = container_env(&p, &spec.containers[0], &downward).expect_err("missing configmap");
        assert_eq!(err.to_string(), "configmap \"cfg\" not found");
    }
}

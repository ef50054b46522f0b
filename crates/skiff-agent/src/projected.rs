//! Projected volumes: files the agent writes for a pod from the API before its containers
//! start, as kubelet's projected volume plugin. The one every pod gets is
//! `kube-api-access-*` (added by the API server's ServiceAccount admission), which holds
//! what an in-cluster client needs at `/var/run/secrets/kubernetes.io/serviceaccount/`:
//!
//! | source | file | from |
//! |---|---|---|
//! | `serviceAccountToken` | `token` | a TokenRequest for the pod's ServiceAccount, bound to the pod |
//! | `configMap` (`kube-root-ca.crt`) | `ca.crt` | the ConfigMap's keys (or the listed `items`) |
//! | `downwardAPI` | `namespace` | the pod's own fields |
//! | `secret` | its keys | the Secret's keys (or the listed `items`) |
//!
//! Files are written to a temporary name and renamed, with the volume's `defaultMode` (0644
//! unless set). The containers see the directory read-only. The token is not refreshed: asked
//! for with kubelet's 3607 s, the API server extends it to a year, as Kubernetes does by
//! default (`--service-account-extend-token-expiration`), and it stops working when the pod is
//! deleted.
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    ConfigMap, KeyToPath, Pod, Secret, ServiceAccount, Volume, VolumeProjection,
};
use serde_json::{json, Value};
use skiff_client::Client;

use crate::error::AgentError;

/// kubelet's default `defaultMode` for projected, Secret and ConfigMap volumes.
const DEFAULT_MODE: i32 = 0o644;

/// Writes every file of `volume` (a projected volume) for `pod` into `dir`.
pub async fn write(
    client: &Client,
    pod: &Pod,
    volume: &Volume,
    dir: &Path,
) -> Result<(), AgentError> {
    let Some(projected) = &volume.projected else {
        return Ok(());
    };
    let mode = projected.default_mode.unwrap_or(DEFAULT_MODE);
    let mut files: BTreeMap<String, (Vec<u8>, i32)> = BTreeMap::new();
    for source in projected.sources.iter().flatten() {
        collect(client, pod, source, mode, &mut files).await?;
    }
    std::fs::create_dir_all(dir).map_err(|e| config_error(&volume.name, e))?;
    for (path, (bytes, mode)) in files {
        if path.split('/').any(|part| part == ".." || part.is_empty()) {
            return Err(AgentError::ContainerConfig(format!(
                "volume {}: path {path:?} leaves the volume",
                volume.name
            )));
        }
        let target = dir.join(&path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| config_error(&volume.name, e))?;
        }
        let tmp = dir.join(format!(".{}.tmp", path.replace('/', "_")));
        std::fs::write(&tmp, &bytes).map_err(|e| config_error(&volume.name, e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode as u32 & 0o777))
            .map_err(|e| config_error(&volume.name, e))?;
        std::fs::rename(&tmp, &target).map_err(|e| config_error(&volume.name, e))?;
    }
    Ok(())
}

fn config_error(volume: &str, e: std::io::Error) -> AgentError {
    AgentError::ContainerConfig(format!("volume {volume}: {e}"))
}

async fn collect(
    client: &Client,
    pod: &Pod,
    source: &VolumeProjection,
    mode: i32,
    files: &mut BTreeMap<String, (Vec<u8>, i32)>,
) -> Result<(), AgentError> {
    let namespace = pod.metadata.namespace.as_deref();
    if let Some(token) = &source.service_account_token {
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let mut spec = json!({
            "expirationSeconds": token.expiration_seconds.unwrap_or(3607),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                               "name": pod.metadata.name, "uid": pod.metadata.uid},
        });
        if let Some(audience) = token.audience.as_deref().filter(|a| !a.is_empty()) {
            spec["audiences"] = json!([audience]);
        }
        let answer = client
            .post_subresource::<ServiceAccount>(
                namespace,
                &account,
                "token",
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}),
            )
            .await
            .map_err(|e| {
                AgentError::ContainerConfig(format!(
                    "getting a token for service account {account}: {e}"
                ))
            })?;
        let token_text = answer
            .pointer("/status/token")
            .and_then(Value::as_str)
            .unwrap_or_default();
        files.insert(token.path.clone(), (token_text.as_bytes().to_vec(), mode));
    }
    if let Some(source) = &source.config_map {
        let data = get::<ConfigMap>(client, namespace, "configmap", &source.name)
            .await?
            .map(|cm| {
                let text = cm.data.unwrap_or_default().into_iter();
                let binary = cm.binary_data.unwrap_or_default().into_iter();
                text.map(|(k, v)| (k, v.into_bytes()))
                    .chain(binary.map(|(k, v)| (k, v.0)))
                    .collect()
            });
        let items = source.items.as_deref();
        project(
            data,
            items,
            source.optional,
            mode,
            files,
            "configmap",
            &source.name,
        )?;
    }
    if let Some(source) = &source.secret {
        let data = get::<Secret>(client, namespace, "secret", &source.name)
            .await?
            .map(|secret| {
                let data = secret.data.unwrap_or_default().into_iter();
                data.map(|(k, v)| (k, v.0)).collect()
            });
        let items = source.items.as_deref();
        project(
            data,
            items,
            source.optional,
            mode,
            files,
            "secret",
            &source.name,
        )?;
    }
    if let Some(downward) = &source.downward_api {
        for item in downward.items.iter().flatten() {
            let Some(field) = &item.field_ref else {
                continue;
            };
            let value = field_value(pod, &field.field_path).ok_or_else(|| {
                AgentError::ContainerConfig(format!(
                    "downwardAPI: field {:?} is not supported",
                    field.field_path
                ))
            })?;
            files.insert(
                item.path.clone(),
                (value.into_bytes(), item.mode.unwrap_or(mode)),
            );
        }
    }
    Ok(())
}

/// The `kind` object called `name` in `namespace`, if it exists.
async fn get<K>(
    client: &Client,
    namespace: Option<&str>,
    kind: &str,
    name: &str,
) -> Result<Option<K>, AgentError>
where
    K: k8s_openapi::Resource + serde::de::DeserializeOwned,
{
    client
        .get_opt::<K>(namespace, name)
        .await
        .map_err(|e| AgentError::ContainerConfig(format!("reading {kind} {name}: {e}")))
}

/// The files of a ConfigMap or Secret source (`data`: its keys, `None` if it does not exist,
/// which only an `optional` source may).
fn project(
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: i32,
    files: &mut BTreeMap<String, (Vec<u8>, i32)>,
    kind: &str,
    name: &str,
) -> Result<(), AgentError> {
    match data {
        Some(data) => place(&data, items, mode, files, kind, name),
        None if optional == Some(true) => Ok(()),
        None => Err(AgentError::ContainerConfig(format!(
            "{kind} \"{name}\" not found"
        ))),
    }
}

/// The keys of `data` as files: every key under its own name, or only `items` under their paths.
fn place(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    mode: i32,
    files: &mut BTreeMap<String, (Vec<u8>, i32)>,
    kind: &str,
    name: &str,
) -> Result<(), AgentError> {
    match items {
        None | Some([]) => {
            for (key, bytes) in data {
                files.insert(key.clone(), (bytes.clone(), mode));
            }
        }
        Some(items) => {
            for item in items {
                let bytes = data.get(&item.key).ok_or_else(|| {
                    AgentError::ContainerConfig(format!(
                        "{kind} {name:?} has no key {:?}",
                        item.key
                    ))
                })?;
                files.insert(
                    item.path.clone(),
                    (bytes.clone(), item.mode.unwrap_or(mode)),
                );
            }
        }
    }
    Ok(())
}

/// A pod field the downward API may project.
fn field_value(pod: &Pod, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    match path {
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.name" => meta.name.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "metadata.labels" | "metadata.annotations" => {
            let map = if path == "metadata.labels" {
                meta.labels.clone()
            } else {
                meta.annotations.clone()
            };
            Some(
                map.unwrap_or_default()
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}\n"))
                    .collect(),
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downward_fields_and_items_become_files() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"}},
            "spec": {"containers": [], "nodeName": "edge-1"}}))
        .expect("pod");
        assert_eq!(
            field_value(&pod, "metadata.namespace").as_deref(),
            Some("shop")
        );
        assert_eq!(
            field_value(&pod, "metadata.labels").as_deref(),
            Some("app=\"web\"\n")
        );
        assert_eq!(field_value(&pod, "status.podIP"), None);
        let data = BTreeMap::from([
            ("ca.crt".to_string(), b"PEM".to_vec()),
            ("other".to_string(), b"x".to_vec()),
        ]);
        let mut files = BTreeMap::new();
        let items: Vec<KeyToPath> =
            serde_json::from_value(json!([{"key": "ca.crt", "path": "ca.crt"}])).expect("items");
        place(
            &data,
            Some(&items),
            0o644,
            &mut files,
            "configmap",
            "kube-root-ca.crt",
        )
        .expect("placed");
        assert_eq!(files.keys().collect::<Vec<_>>(), ["ca.crt"]);
        let missing: Vec<KeyToPath> =
            serde_json::from_value(json!([{"key": "nope", "path": "x"}])).expect("items");
        assert!(place(&data, Some(&missing), 0o644, &mut files, "configmap", "c").is_err());
    }
}

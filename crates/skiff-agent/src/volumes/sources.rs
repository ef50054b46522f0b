//! What a volume backed by the API holds, as kubelet's configMap, secret, downwardAPI and
//! projected volume plugins render it: a set of files ([`Files`]) that [`super::atomic`]
//! writes. Every pod with a ServiceAccount gets one projected volume, `kube-api-access-*`
//! (added by the API server's ServiceAccount admission), which holds what an in-cluster client
//! needs at `/var/run/secrets/kubernetes.io/serviceaccount/`:
//!
//! | source | file | from |
//! |---|---|---|
//! | `serviceAccountToken` | `token` | a TokenRequest for the pod's ServiceAccount, bound to the pod |
//! | `configMap` (`kube-root-ca.crt`) | `ca.crt` | the ConfigMap's keys (or the listed `items`) |
//! | `downwardAPI` | `namespace` | the pod's own fields |
//! | `secret` | its keys | the Secret's keys (or the listed `items`) |
//!
//! Modes are `defaultMode` (0644 unless set) or an item's `mode`. A token is asked for once per
//! volume and kept when the volume is refreshed: asked for with kubelet's 3607 s, the API
//! server extends it to a year, as Kubernetes does by default
//! (`--service-account-extend-token-expiration`), and it stops working when the pod is deleted.
use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
    VolumeProjection,
};
use serde_json::{json, Value};
use skiff_client::Client;

use super::atomic::Files;

/// kubelet's default `defaultMode` for projected, Secret, ConfigMap and downward API volumes.
const DEFAULT_MODE: i32 = 0o644;

/// Why a volume's files could not be made, in kubelet's words.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceError {
    /// A ConfigMap or Secret (or a key of one) the pod needs is not there (yet): the pod waits.
    Missing(String),
    /// Anything else (the API could not be asked, a field skiff does not know).
    Failed(String),
}

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceError::Missing(m) | SourceError::Failed(m) => f.write_str(m),
        }
    }
}

/// The files of `volume` for `pod` (`None`: not a volume made from the API). `dir` is where the
/// volume is: a token already there is kept.
pub async fn render(
    client: &Client,
    pod: &Pod,
    volume: &Volume,
    dir: &Path,
) -> Result<Option<Files>, SourceError> {
    let mut files = Files::new();
    // A ConfigMap or Secret volume is a projected volume of that one source.
    use k8s_openapi::api::core::v1::{ConfigMapProjection, SecretProjection};
    let single = if let Some(source) = &volume.config_map {
        let projection = ConfigMapProjection {
            name: source.name.clone(),
            items: source.items.clone(),
            optional: source.optional,
        };
        Some((
            VolumeProjection {
                config_map: Some(projection),
                ..Default::default()
            },
            source.default_mode,
        ))
    } else {
        volume.secret.as_ref().map(|source| {
            let projection = SecretProjection {
                name: source.secret_name.clone().unwrap_or_default(),
                items: source.items.clone(),
                optional: source.optional,
            };
            (
                VolumeProjection {
                    secret: Some(projection),
                    ..Default::default()
                },
                source.default_mode,
            )
        })
    };
    if let Some((projection, mode)) = single {
        let mode = mode.unwrap_or(DEFAULT_MODE);
        collect(client, pod, &projection, mode, dir, &mut files).await?;
    } else if let Some(source) = &volume.downward_api {
        let mode = source.default_mode.unwrap_or(DEFAULT_MODE);
        downward(pod, source.items.as_deref(), mode, &mut files)?;
    } else if let Some(projected) = &volume.projected {
        let mode = projected.default_mode.unwrap_or(DEFAULT_MODE);
        for source in projected.sources.iter().flatten() {
            collect(client, pod, source, mode, dir, &mut files).await?;
        }
    } else {
        return Ok(None);
    }
    Ok(Some(files))
}

fn insert(files: &mut Files, path: &str, bytes: Vec<u8>, mode: i32) {
    files.insert(path.to_string(), (bytes, mode as u32 & 0o777));
}

async fn collect(
    client: &Client,
    pod: &Pod,
    source: &VolumeProjection,
    mode: i32,
    dir: &Path,
    files: &mut Files,
) -> Result<(), SourceError> {
    let namespace = pod.metadata.namespace.as_deref();
    if let Some(token) = &source.service_account_token {
        let bytes = match std::fs::read(dir.join(&token.path)) {
            Ok(kept) => kept,
            Err(_) => request_token(client, pod, token).await?,
        };
        insert(files, &token.path, bytes, mode);
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
    if let Some(source) = &source.downward_api {
        downward(pod, source.items.as_deref(), mode, files)?;
    }
    Ok(())
}

/// A TokenRequest for the pod's ServiceAccount, bound to the pod.
async fn request_token(
    client: &Client,
    pod: &Pod,
    token: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
) -> Result<Vec<u8>, SourceError> {
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
            pod.metadata.namespace.as_deref(),
            &account,
            "token",
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}),
        )
        .await
        .map_err(|e| {
            SourceError::Failed(format!("getting a token for service account {account}: {e}"))
        })?;
    let text = answer
        .pointer("/status/token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(text.as_bytes().to_vec())
}

/// The files of downward API items: the pod's own fields.
fn downward(
    pod: &Pod,
    items: Option<&[DownwardAPIVolumeFile]>,
    mode: i32,
    files: &mut Files,
) -> Result<(), SourceError> {
    for item in items.into_iter().flatten() {
        let Some(field) = &item.field_ref else {
            return Err(SourceError::Failed(format!(
                "downwardAPI {}: only fieldRef is supported",
                item.path
            )));
        };
        let value = field_value(pod, &field.field_path).ok_or_else(|| {
            SourceError::Failed(format!(
                "downwardAPI: field {:?} is not supported",
                field.field_path
            ))
        })?;
        insert(
            files,
            &item.path,
            value.into_bytes(),
            item.mode.unwrap_or(mode),
        );
    }
    Ok(())
}

/// The `kind` object called `name` in `namespace`, if it exists.
async fn get<K>(
    client: &Client,
    namespace: Option<&str>,
    kind: &str,
    name: &str,
) -> Result<Option<K>, SourceError>
where
    K: k8s_openapi::Resource + serde::de::DeserializeOwned,
{
    client
        .get_opt::<K>(namespace, name)
        .await
        .map_err(|e| SourceError::Failed(format!("reading {kind} {name}: {e}")))
}

/// The files of a ConfigMap or Secret source (`data`: its keys, `None` if it does not exist,
/// which only an `optional` source may).
fn project(
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    optional: Option<bool>,
    mode: i32,
    files: &mut Files,
    kind: &str,
    name: &str,
) -> Result<(), SourceError> {
    let optional = optional == Some(true);
    match data {
        Some(data) => place(&data, items, optional, mode, files, kind),
        None if optional => Ok(()),
        None => Err(SourceError::Missing(format!("{kind} \"{name}\" not found"))),
    }
}

/// The keys of `data` as files: every key under its own name, or only `items` under their paths
/// (a missing key is kubelet's error unless the source is optional).
fn place(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    optional: bool,
    mode: i32,
    files: &mut Files,
    kind: &str,
) -> Result<(), SourceError> {
    match items {
        None | Some([]) => {
            for (key, bytes) in data {
                insert(files, key, bytes.clone(), mode);
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(bytes) => {
                        insert(files, &item.path, bytes.clone(), item.mode.unwrap_or(mode))
                    }
                    None if optional => {}
                    None if kind == "configmap" => {
                        return Err(SourceError::Missing(format!(
                            "configmap references non-existent config key: {}",
                            item.key
                        )))
                    }
                    None => {
                        return Err(SourceError::Missing(format!(
                            "references non-existent secret key: {}",
                            item.key
                        )))
                    }
                }
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
        place(&data, Some(&items), false, 0o644, &mut files, "configmap").expect("placed");
        assert_eq!(files.keys().collect::<Vec<_>>(), ["ca.crt"]);
        let missing: Vec<KeyToPath> =
            serde_json::from_value(json!([{"key": "nope", "path": "x", "mode": 256}]))
                .expect("items");
        assert_eq!(
            place(&data, Some(&missing), false, 0o644, &mut files, "configmap"),
            Err(SourceError::Missing(
                "configmap references non-existent config key: nope".into()
            ))
        );
        // Optional: the missing key is left out.
        place(&data, Some(&missing), true, 0o644, &mut files, "configmap").expect("optional");
        assert_eq!(files.keys().collect::<Vec<_>>(), ["ca.crt"]);
    }
}

//! `persistentVolumeClaim` volumes: the claim's PersistentVolume (a `hostPath` or `local`
//! directory on this node) bind-mounted at `<pod dir>/volumes/<name>`, as kubelet mounts a
//! local volume into the pod's directory. The pod's containers mount that; removing the pod
//! unmounts it ([`super::unmount_under`]) and leaves the data where it is.
//!
//! Volumes of the built-in `local-path` StorageClass live in this node's `--local-path-dir`.
//! The agent makes their directory on first use (mode 0777, as k3s's local-path provisioner, so
//! a pod that runs as any user can write) and removes it once the volume is released and
//! deleted: [`clean_released`] looks for directories whose PersistentVolume is being deleted
//! with [`LOCAL_PATH_FINALIZER`], removes the directory, then the finalizer. A directory whose
//! volume cannot be found is kept: data goes only on a positive signal.
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Volume};
use nix::mount::{mount, MsFlags};
use skiff_client::Client;

pub use skiff_api::volumes::{LOCAL_PATH_DIR_ANNOTATION, LOCAL_PATH_FINALIZER, PROVISIONED_BY};

/// Mounts the volume of `volume`'s claim at `dir` (already mounted: nothing to do); the error
/// is the event's text.
pub async fn mount_claim(
    client: &Client,
    pod: &Pod,
    volume: &Volume,
    dir: &Path,
    node: &str,
) -> Result<(), String> {
    let Some(source) = &volume.persistent_volume_claim else {
        return Ok(());
    };
    if super::is_mounted(dir).map_err(|e| e.to_string())? {
        return Ok(());
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let claim = client
        .get_opt::<PersistentVolumeClaim>(Some(namespace), &source.claim_name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolumeclaim {:?} not found", source.claim_name))?;
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|n| !n.is_empty() && bound)
        .ok_or_else(|| format!("PVC {namespace}/{} is not bound", source.claim_name))?;
    let pv = client
        .get::<PersistentVolume>(None, &volume_name)
        .await
        .map_err(|e| e.to_string())?;
    let modes = claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    let users = other_users(client, pod, &source.claim_name, &modes, node).await?;
    if !users.is_empty() {
        return Err(format!(
            "Multi-Attach error for volume {volume_name:?} Volume is already used by pod(s) {}",
            users.join(", ")
        ));
    }
    let spec = pv.spec.clone().unwrap_or_default();
    if !skiff_api::volumes::may_be_used_on(&pv, node) {
        return Err(format!(
            "volume {volume_name:?} is pinned to other nodes by its node affinity"
        ));
    }
    let path = match (&spec.host_path, &spec.local) {
        (Some(host), _) => {
            let path = Path::new(&host.path);
            let ours = pv
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(PROVISIONED_BY))
                .is_some();
            if !path.exists() && host.type_.as_deref() == Some("DirectoryOrCreate") {
                std::fs::create_dir_all(path)
                    .map_err(|e| format!("making {}: {e}", path.display()))?;
                let mode = if ours { 0o777 } else { 0o755 };
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("making {}: {e}", path.display()))?;
            }
            path.to_path_buf()
        }
        (None, Some(local)) => Path::new(&local.path).to_path_buf(),
        _ => {
            return Err(format!(
                "volume {volume_name:?} is neither hostPath nor local, which this node can mount"
            ))
        }
    };
    if !path.is_dir() {
        return Err(format!(
            "path {:?} of volume {volume_name:?} is not a directory on this node",
            path.display().to_string()
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    mount(
        Some(&path),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("mounting {} at {}: {e}", path.display(), dir.display()))
}

/// The other pods that hold a claim this pod may not share: any other pod bound to a node for
/// `ReadWriteOncePod`, one on another node for `ReadWriteOnce` (pods that have finished or are
/// being deleted let go).
async fn other_users(
    client: &Client,
    pod: &Pod,
    claim: &str,
    modes: &[String],
    node: &str,
) -> Result<Vec<String>, String> {
    let has = |mode: &str| modes.iter().any(|m| m == mode);
    let once_pod = has("ReadWriteOncePod");
    let once_node = has("ReadWriteOnce") && !has("ReadWriteMany") && !has("ReadOnlyMany");
    if !once_pod && !once_node {
        return Ok(Vec::new());
    }
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let pods = client
        .list::<Pod>(Some(namespace), &skiff_client::ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(pods
        .items
        .into_iter()
        .filter(|other| other.metadata.uid != pod.metadata.uid)
        .filter(|other| other.metadata.deletion_timestamp.is_none())
        .filter(|other| {
            !matches!(
                other.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .filter(|other| {
            let on = other
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or("");
            !on.is_empty() && (once_pod || on != node)
        })
        .filter(|other| {
            other
                .spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == claim)
                })
        })
        .filter_map(|other| other.metadata.name)
        .collect())
}

/// Removes the directories in `dir` of local-path volumes that are being deleted, then lets
/// their PersistentVolumes go. Returns how many were removed.
pub async fn clean_released(client: &Client, dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name().to_string_lossy().to_string();
        // `pvc-<uid>_<namespace>_<claim>`, as the controller names them.
        let Some(pv_name) = file_name
            .split('_')
            .next()
            .filter(|n| n.starts_with("pvc-") && file_name.contains('_'))
        else {
            continue;
        };
        let pv = match client.get_opt::<PersistentVolume>(None, pv_name).await {
            Ok(Some(pv)) => pv,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(volume = pv_name, error = %e, "reading a local-path volume");
                continue;
            }
        };
        let finalizers = pv.metadata.finalizers.clone().unwrap_or_default();
        let releasing = pv.metadata.deletion_timestamp.is_some()
            && finalizers.iter().any(|f| f == LOCAL_PATH_FINALIZER);
        let same_dir = pv
            .spec
            .as_ref()
            .and_then(|s| s.host_path.as_ref())
            .is_some_and(|h| Path::new(&h.path) == entry.path());
        if !releasing || !same_dir {
            continue;
        }
        if let Err(e) = std::fs::remove_dir_all(entry.path()) {
            tracing::warn!(volume = pv_name, error = %e, "removing a released local-path volume");
            continue;
        }
        let mut let_go = pv.clone();
        let_go.metadata.finalizers = Some(
            finalizers
                .into_iter()
                .filter(|f| f != LOCAL_PATH_FINALIZER)
                .collect(),
        );
        match client.replace(None, pv_name, &let_go).await {
            Ok(_) => {
                tracing::info!(volume = pv_name, "removed a released local-path volume");
                removed += 1;
            }
            Err(e) => tracing::warn!(volume = pv_name, error = %e, "releasing a local-path volume"),
        }
    }
    removed
}

//! A pod's volumes on the node, under `<pod dir>/volumes/<name>`:
//!
//! | volume | backed by | files |
//! |---|---|---|
//! | `emptyDir` | the node's disk (`medium: Memory`: tmpfs, `sizeLimit` its size) | the containers' |
//! | `configMap` | the node's disk | the ConfigMap's keys, through [`atomic`] |
//! | `secret`, `projected`, `downwardAPI` | tmpfs: never on the node's disk | [`sources`], through [`atomic`] |
//! | `hostPath` | the path itself | the node's |
//! | `persistentVolumeClaim` | the claim's volume, bind-mounted ([`claims`]) | the volume's |
//!
//! The worker makes them before a pod's first container starts ([`prepare`], then [`sync`]),
//! and refreshes the API-backed ones while the pod runs: [`sync`] again, which changes nothing
//! unless the content did, and then swaps in the new version at once. Everything mounted under
//! a pod's directory is unmounted before the directory is removed ([`unmount_under`]).
pub mod atomic;
pub mod claims;
mod sources;

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use k8s_openapi::api::core::v1::{Pod, Volume};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use skiff_client::Client;

pub use sources::SourceError;

/// Whether the files of `volume` come from the API (and are refreshed while the pod runs).
pub fn from_api(volume: &Volume) -> bool {
    volume.config_map.is_some()
        || volume.secret.is_some()
        || volume.downward_api.is_some()
        || volume.projected.is_some()
}

/// Whether kubelet keeps the volume in memory: Secrets (and projected volumes, which may hold
/// Secrets and tokens) must never reach the node's disk.
pub fn in_memory(volume: &Volume) -> bool {
    volume.secret.is_some()
        || volume.projected.is_some()
        || volume.downward_api.is_some()
        || volume
            .empty_dir
            .as_ref()
            .is_some_and(|e| e.medium.as_deref() == Some("Memory"))
}

/// Makes the directory of `volume` at `dir` (a tmpfs mounted there if it is kept in memory;
/// already mounted is fine).
pub fn prepare(dir: &Path, volume: &Volume) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if !in_memory(volume) || is_mount_point(dir)? {
        return Ok(());
    }
    let mut options = "mode=0755".to_string();
    if let Some(limit) = volume
        .empty_dir
        .as_ref()
        .and_then(|e| e.size_limit.as_ref())
    {
        let bytes = skiff_api::quantity::bytes(&limit.0).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("emptyDir.sizeLimit: {e}"),
            )
        })?;
        options.push_str(&format!(",size={bytes}"));
    }
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(io::Error::from)
}

/// Writes the files of an API-backed `volume` into `dir` (nothing for other volumes); whether
/// they changed.
pub async fn sync(
    client: &Client,
    pod: &Pod,
    volume: &Volume,
    dir: &Path,
) -> Result<bool, SourceError> {
    let Some(files) = sources::render(client, pod, volume, dir).await? else {
        return Ok(false);
    };
    atomic::write(dir, &files)
        .map_err(|e| SourceError::Failed(format!("writing the volume's files: {e}")))
}

/// Whether something is mounted at `dir` itself (a bind mount from the same filesystem too).
pub fn is_mounted(dir: &Path) -> io::Result<bool> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let dir = dir.to_string_lossy();
    let dir = dir.trim_end_matches('/');
    Ok(mount_points_under(&mountinfo, Path::new(dir))
        .iter()
        .any(|point| point == dir))
}

fn is_mount_point(dir: &Path) -> io::Result<bool> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    Ok(std::fs::metadata(dir)?.dev() != std::fs::metadata(parent)?.dev())
}

/// Unmounts everything mounted at or below `dir` (deepest first), so the directory can go.
pub fn unmount_under(dir: &Path) -> io::Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut targets = mount_points_under(&mountinfo, dir);
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for target in targets {
        umount2(target.as_str(), MntFlags::MNT_DETACH)
            .map_err(|e| io::Error::other(format!("unmounting {target}: {e}")))?;
    }
    Ok(())
}

/// The mount points in `/proc/self/mountinfo` text at or below `dir`.
fn mount_points_under(mountinfo: &str, dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy();
    let dir = dir.trim_end_matches('/');
    mountinfo
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .map(unescape)
        .filter(|point| point == dir || point.starts_with(&format!("{dir}/")))
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(byte as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn volume(v: serde_json::Value) -> Volume {
        serde_json::from_value(v).expect("volume")
    }

    #[test]
    fn secrets_and_projected_volumes_are_kept_in_memory() {
        assert!(in_memory(&volume(
            json!({"name": "s", "secret": {"secretName": "x"}})
        )));
        assert!(in_memory(&volume(json!({"name": "p", "projected": {}}))));
        assert!(in_memory(&volume(
            json!({"name": "m", "emptyDir": {"medium": "Memory"}})
        )));
        assert!(!in_memory(&volume(
            json!({"name": "c", "configMap": {"name": "x"}})
        )));
        assert!(!in_memory(&volume(json!({"name": "e", "emptyDir": {}}))));
        assert!(from_api(&volume(
            json!({"name": "c", "configMap": {"name": "x"}})
        )));
        assert!(!from_api(&volume(json!({"name": "e", "emptyDir": {}}))));
    }

    #[test]
    fn mount_points_below_a_pod_dir_are_found_with_escapes_undone() {
        let info = "\
36 25 0:32 / /sys/fs/cgroup rw - tmpfs tmpfs rw
90 25 0:50 / /data/pods/u1/volumes/secret rw - tmpfs tmpfs rw
91 25 0:51 / /data/pods/u1/volumes/with\\040space rw - tmpfs tmpfs rw
92 25 0:52 / /data/pods/u10/volumes/other rw - tmpfs tmpfs rw
";
        assert_eq!(
            mount_points_under(info, Path::new("/data/pods/u1")),
            [
                "/data/pods/u1/volumes/secret",
                "/data/pods/u1/volumes/with space"
            ]
        );
    }
}

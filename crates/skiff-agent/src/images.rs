//! Images on a node: OCI tarballs imported into the node's containerd (see skiff-image), from
//! `skiff image import` or from the agent's airgap directory.
use std::path::Path;

use crate::containerd::ContainerdRuntime;
use crate::error::AgentError;

/// Imports the images of an OCI layout tarball; returns their names. The runtime forgets what
/// it had resolved, so a re-imported tag is seen at the next container start.
pub async fn import(runtime: &ContainerdRuntime, path: &Path) -> Result<Vec<String>, AgentError> {
    let images = skiff_image::import_tarball(
        &runtime.channel(),
        runtime.namespace(),
        runtime.snapshotter(),
        path,
    )
    .await?;
    runtime.forget_images().await;
    Ok(images.into_iter().map(|i| i.name).collect())
}

/// The airgap directory (k3s' convention): every `*.tar` in it is imported at start, and again
/// whenever a file appears or changes.
pub struct AirgapDir {
    dir: std::path::PathBuf,
    /// What was imported (or tried): modification time and size per file.
    seen: std::collections::HashMap<std::path::PathBuf, (std::time::SystemTime, u64)>,
}

impl AirgapDir {
    pub fn new(dir: &Path) -> AirgapDir {
        let _ = std::fs::create_dir_all(dir);
        AirgapDir {
            dir: dir.to_path_buf(),
            seen: Default::default(),
        }
    }

    /// Imports new or changed tarballs. While watching (`settle`), a file modified in the
    /// last second may still be being copied in, so it waits for the next scan; at start
    /// everything present is imported.
    pub async fn scan(&mut self, runtime: &ContainerdRuntime, settle: bool) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for path in files {
            if path.extension().and_then(|e| e.to_str()) != Some("tar") {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let Ok(modified) = meta.modified() else {
                continue;
            };
            let stamp = (modified, meta.len());
            if self.seen.get(&path) == Some(&stamp) {
                continue;
            }
            if settle && modified.elapsed().unwrap_or_default() < std::time::Duration::from_secs(1)
            {
                continue;
            }
            self.seen.insert(path.clone(), stamp);
            match import(runtime, &path).await {
                Ok(names) => tracing::info!(file = %path.display(), ?names, "imported images"),
                Err(e) => tracing::warn!(file = %path.display(), error = %e, "importing images"),
            }
        }
    }
}

//! Images on a node: importing OCI tarballs into the node's containerd (placeholder until
//! skiff-image lands).
use std::path::Path;

use crate::containerd::ContainerdRuntime;

/// Imports the images of an OCI layout tarball; returns their names.
pub async fn import(runtime: &ContainerdRuntime, path: &Path) -> anyhow::Result<Vec<String>> {
    let _ = (runtime, path);
    anyhow::bail!("image import is not built yet")
}

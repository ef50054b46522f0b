//! Images on a node: OCI tarballs imported into the node's containerd (see skiff-image), from
//! `skiff image import` or from the agent's airgap directory.
use std::path::Path;

use crate::containerd::ContainerdRuntime;

/// Imports the images of an OCI layout tarball; returns their names. The runtime forgets what
/// it had resolved, so a re-imported tag is seen at the next container start.
pub async fn import(runtime: &ContainerdRuntime, path: &Path) -> anyhow::Result<Vec<String>> {
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

//! What images a node has, and what the agent needs to run one.
//!
//! [`resolve`] is the agent's question "how do I start `web:1.0`?": it follows
//! image record → manifest → config and answers with the run defaults (entrypoint, cmd, env…)
//! and the chain ID of the snapshot a container's root filesystem is prepared from.
use containerd_client::services::v1::{GetImageRequest, ListImagesRequest};
use containerd_client::tonic::Code;
use oci_spec::image::{ImageConfiguration, ImageIndex};
use tracing::warn;

use crate::containerd::Session;
use crate::digest::chain_ids;
use crate::layout::{
    self, check_digest, media_types, parse_config, parse_manifest, Blob, ImageParts,
};
use crate::reference::normalize;
use crate::{Channel, Error, Result};

/// One line of `skiff image ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    pub name: String,
    /// The digest the name points at (a manifest, or an index for multi-platform images).
    pub digest: String,
    /// Manifest + config + layers, as stored (what `ctr images ls` reports).
    pub size: u64,
}

/// How an image says it should run: the Dockerfile instructions that survive into the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=VALUE` pairs; the container's own `env` is applied on top.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    /// `80/tcp`, sorted.
    pub exposed_ports: Vec<String>,
    /// The signal the image asks to be stopped with (`SIGQUIT` for nginx); `None` = SIGTERM.
    pub stop_signal: Option<String>,
}

impl ImageConfig {
    /// The process arguments for a container, by Kubernetes' rules: a container's `command`
    /// replaces the image's entrypoint, its `args` replace the image's cmd, and setting
    /// `command` alone also drops the image's cmd (it was written for the old entrypoint).
    ///
    /// | command | args | runs                      |
    /// |---------|------|---------------------------|
    /// | –       | –    | entrypoint + cmd          |
    /// | –       | set  | entrypoint + args         |
    /// | set     | –    | command                   |
    /// | set     | set  | command + args            |
    pub fn argv(&self, command: &[String], args: &[String]) -> Vec<String> {
        let (program, arguments) = match (command.is_empty(), args.is_empty()) {
            (true, true) => (&self.entrypoint[..], &self.cmd[..]),
            (true, false) => (&self.entrypoint[..], args),
            (false, _) => (command, args),
        };
        program.iter().chain(arguments).cloned().collect()
    }

    fn from_document(document: &ImageConfiguration) -> Self {
        let Some(run) = document.config() else {
            return ImageConfig::default();
        };
        let mut exposed_ports = run.exposed_ports().clone().unwrap_or_default();
        exposed_ports.sort();
        ImageConfig {
            entrypoint: run.entrypoint().clone().unwrap_or_default(),
            cmd: run.cmd().clone().unwrap_or_default(),
            env: run.env().clone().unwrap_or_default(),
            working_dir: run.working_dir().clone().filter(|d| !d.is_empty()),
            user: run.user().clone().filter(|u| !u.is_empty()),
            exposed_ports,
            stop_signal: run.stop_signal().clone(),
        }
    }
}

/// Everything the agent needs to create a container from an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// The normalised name that was looked up.
    pub name: String,
    pub manifest_digest: String,
    /// The image ID as Kubernetes reports it in `status.containerStatuses[].imageID`.
    pub config_digest: String,
    pub config: ImageConfig,
    /// The top snapshot's name: `Snapshots.Prepare { key: <container>, parent: chain_id }`.
    /// It exists in the snapshotter the image was imported for; for another, call
    /// [`crate::unpack`] first.
    pub chain_id: String,
}

/// Every image in the namespace, sorted by name.
pub async fn list(channel: &Channel, namespace: &str) -> Result<Vec<ImageSummary>> {
    let session = Session::new(channel, namespace)?;
    let images = session
        .images()
        .list(session.request(ListImagesRequest {
            filters: Vec::new(),
        }))
        .await
        .map_err(Error::containerd("Images.List"))?
        .into_inner()
        .images;

    let mut summaries = Vec::with_capacity(images.len());
    for image in images {
        let Some(target) = image.target else { continue };
        let target_size = u64::try_from(target.size).unwrap_or(0);
        // A listing should not fail because one image's content is damaged: show what the
        // record says and log the rest.
        let size = match read_image(&session, &image.name).await {
            Ok(stored) => stored.size(),
            Err(error) => {
                warn!(image = %image.name, %error, "cannot read image content for its size");
                target_size
            }
        };
        summaries.push(ImageSummary {
            name: image.name,
            digest: target.digest,
            size,
        });
    }
    summaries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(summaries)
}

/// Looks an image up by any reference that normalises to its name (`web:1.0` finds
/// `docker.io/library/web:1.0`). [`Error::ImageNotFound`] if it is not there.
pub async fn resolve(channel: &Channel, namespace: &str, name: &str) -> Result<ResolvedImage> {
    let session = Session::new(channel, namespace)?;
    let stored = read_image(&session, name).await?;
    let chain_id = chain_ids(&stored.parts.diff_ids)
        .pop()
        .ok_or_else(|| Error::InvalidLayout {
            path: stored.parts.config.digest.clone().into(),
            reason: "the image has no layers".to_string(),
        })?;
    Ok(ResolvedImage {
        config: ImageConfig::from_document(&stored.parts.config_document),
        manifest_digest: stored.manifest.digest,
        config_digest: stored.parts.config.digest,
        name: stored.name,
        chain_id,
    })
}

/// An image as containerd stores it, read back: record → (index →) manifest → config.
pub(crate) struct StoredImage {
    pub name: String,
    pub manifest: Blob,
    pub parts: ImageParts,
}

impl StoredImage {
    fn size(&self) -> u64 {
        self.manifest.size
            + self.parts.config.size
            + self.parts.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

pub(crate) async fn read_image(session: &Session, reference: &str) -> Result<StoredImage> {
    let name = normalize(reference)?;
    let not_found = || Error::ImageNotFound {
        name: name.clone(),
        namespace: session.namespace().to_string(),
    };
    let record = session
        .images()
        .get(session.request(GetImageRequest { name: name.clone() }))
        .await;
    let target = match record {
        Ok(response) => response.into_inner().image.and_then(|i| i.target),
        Err(status) if status.code() == Code::NotFound => None,
        Err(status) => return Err(Error::containerd("Images.Get")(status)),
    }
    .ok_or_else(not_found)?;

    let mut manifest = Blob {
        media_type: target.media_type,
        digest: target.digest,
        size: u64::try_from(target.size).unwrap_or(0),
    };
    if media_types::is_index(&manifest.media_type) {
        let bytes = read_document(session, &manifest.digest).await?;
        let index: ImageIndex = serde_json::from_slice(&bytes)
            .map_err(Error::json(format!("index {}", manifest.digest)))?;
        manifest = layout::pick_platform(&index).ok_or_else(|| Error::InvalidLayout {
            path: name.clone().into(),
            reason: format!(
                "index {} has no manifest for this platform",
                manifest.digest
            ),
        })?;
    }
    let manifest_bytes = read_document(session, &manifest.digest).await?;
    let (config, layers) = parse_manifest(&manifest_bytes, &manifest.digest)?;
    let config_bytes = read_document(session, &config.digest).await?;
    let parts = parse_config(config, layers, &config_bytes)?;
    Ok(StoredImage {
        name,
        manifest,
        parts,
    })
}

/// A small blob from the content store, checked against its digest.
async fn read_document(session: &Session, digest: &str) -> Result<Vec<u8>> {
    let bytes = session.read_content(digest).await?;
    check_digest(digest, &bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn argv_follows_kubernetes_rules() {
        let image = ImageConfig {
            entrypoint: strings(&["/bin/httpd"]),
            cmd: strings(&["-f", "-p", "80"]),
            ..Default::default()
        };
        let cases: [(&[&str], &[&str], &[&str]); 4] = [
            (&[], &[], &["/bin/httpd", "-f", "-p", "80"]),
            (
                &[],
                &["-f", "-p", "8080"],
                &["/bin/httpd", "-f", "-p", "8080"],
            ),
            (&["sleep"], &[], &["sleep"]),
            (&["sleep"], &["60"], &["sleep", "60"]),
        ];
        for (command, args, want) in cases {
            assert_eq!(
                image.argv(&strings(command), &strings(args)),
                strings(want),
                "command={command:?} args={args:?}"
            );
        }
    }
}

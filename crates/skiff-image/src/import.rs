//! Importing an OCI layout tarball into containerd, with no registry involved.
//!
//! ## Expected flow (per image in the tarball)
//! ```text
//!  Leases.Create ─────────────────────────────────────────────── (everything below is leased)
//!  1. blobs, children first       Content.Info → missing? Content.Write (WRITE…, COMMIT+labels)
//!       layer i                   containerd.io/uncompressed = diffID[i]
//!       config
//!       manifest                  containerd.io/gc.ref.content.config = <config>
//!                                 containerd.io/gc.ref.content.l.<i>  = <layer i>
//!  2. unpack, bottom layer first  Snapshots.Stat(chain[i]) → missing? Prepare(parent chain[i-1])
//!                                 → Diff.Apply(layer, mounts) → Commit(name = chain[i])
//!  3. config label                containerd.io/gc.ref.snapshot.<snapshotter> = <top chain>
//!  4. Images.Create               name → manifest (Update of the target if the name exists)
//!  Leases.Delete
//! ```
//!
//! ## Guarantees
//! - Once the lease is gone, garbage collection keeps exactly what an image needs: the image
//!   record references the manifest, whose labels reference config and layers, whose label
//!   references the top snapshot, whose parents are the lower layers.
//! - An image appears in [`crate::list`] only once its snapshots exist (the record is written
//!   last), so anything the agent can resolve it can also run.
//! - Importing again is cheap and changes nothing: every step first checks whether its result
//!   already exists (`Content.Info`, `Snapshots.Stat`, `Images.Get`).
//!
//! ## Caveats
//! - Only OCI layouts are read (which `docker save` writes since Docker 25); the older
//!   `manifest.json`-only `docker save` format is refused with a message saying so.
//! - A multi-platform index is imported as this machine's manifest only.
use std::collections::HashMap;
use std::path::Path;

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, GetImageRequest, Image, UpdateImageRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Descriptor;
use prost_types::FieldMask;
use tracing::{debug, info};

use crate::containerd::{BlobSource, Session};
use crate::digest::chain_ids;
use crate::inspect::read_image;
use crate::layout::{Blob, ImageParts, LayoutArchive, LayoutImage};
use crate::{Channel, Error, Result};

/// Label linking a layer blob to its uncompressed digest (diffID).
const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// Label prefix by which a blob keeps other content alive through garbage collection.
const LABEL_GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";
/// Label prefix by which a config keeps its unpacked snapshot alive, per snapshotter.
const LABEL_GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot";

/// One image an import made available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    /// The normalised name (`skiff.local/web:1.0`).
    pub name: String,
    pub manifest_digest: String,
    pub config_digest: String,
    /// The committed snapshot holding the whole root filesystem: a container's rootfs is
    /// `Snapshots.Prepare { key: <container>, parent: chain_id }`.
    pub chain_id: String,
    /// Manifest + config + layer bytes.
    pub size: u64,
}

/// Imports every image of an OCI layout tarball into containerd, unpacked for `snapshotter`
/// (usually `overlayfs`).
pub async fn import_tarball(
    channel: &Channel,
    namespace: &str,
    snapshotter: &str,
    path: &Path,
) -> Result<Vec<ImportedImage>> {
    let started = std::time::Instant::now();
    let owned_path = path.to_path_buf();
    // Scanning the tarball and parsing its documents is blocking file I/O.
    let (archive, images) = tokio::task::spawn_blocking(move || {
        let archive = LayoutArchive::open(&owned_path)?;
        let images = archive.images()?;
        Ok::<_, Error>((archive, images))
    })
    .await
    .map_err(|e| Error::io(path)(std::io::Error::other(e)))??;

    let session = Session::new(channel, namespace)?;
    let imported = session
        .with_lease(|leased| async move {
            let mut imported = Vec::new();
            for image in &images {
                imported.push(import_image(&leased, &archive, image, snapshotter).await?);
            }
            Ok(imported)
        })
        .await?;
    info!(
        path = %path.display(),
        images = ?imported.iter().map(|i| &i.name).collect::<Vec<_>>(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "imported image tarball"
    );
    Ok(imported)
}

/// Unpacks an image that is already in containerd's content store (imported for another
/// snapshotter, or whose snapshots were removed) and returns its top chain ID.
pub async fn unpack(
    channel: &Channel,
    namespace: &str,
    snapshotter: &str,
    name: &str,
) -> Result<String> {
    let session = Session::new(channel, namespace)?;
    let image = read_image(&session, name).await?;
    session
        .with_lease(|leased| async move { unpack_layers(&leased, snapshotter, &image.parts).await })
        .await
}

/// Steps 1–4 of the module docs for one image.
async fn import_image(
    session: &Session,
    archive: &LayoutArchive,
    image: &LayoutImage,
    snapshotter: &str,
) -> Result<ImportedImage> {
    let parts = &image.parts;

    // 1. Blobs, children before the documents that reference them.
    for (layer, diff_id) in parts.layers.iter().zip(&parts.diff_ids) {
        let source = BlobSource::File {
            path: archive.path().to_path_buf(),
            location: archive.locate(&layer.digest)?,
        };
        let labels = HashMap::from([(LABEL_UNCOMPRESSED.to_string(), diff_id.clone())]);
        let written = session.ensure_blob(layer, &source, &labels).await?;
        debug!(digest = %layer.digest, written, "layer blob");
    }
    let config_source = BlobSource::Bytes(image.config_bytes.clone());
    session
        .ensure_blob(&parts.config, &config_source, &HashMap::new())
        .await?;
    let mut manifest_labels = HashMap::from([(
        format!("{LABEL_GC_REF_CONTENT}.config"),
        parts.config.digest.clone(),
    )]);
    for (i, layer) in parts.layers.iter().enumerate() {
        manifest_labels.insert(
            format!("{LABEL_GC_REF_CONTENT}.l.{i}"),
            layer.digest.clone(),
        );
    }
    let manifest_source = BlobSource::Bytes(image.manifest_bytes.clone());
    session
        .ensure_blob(&image.manifest, &manifest_source, &manifest_labels)
        .await?;

    // 2–3. Snapshots, and the config label that keeps them.
    let chain_id = unpack_layers(session, snapshotter, parts).await?;

    // 4. The name, last: from here on the image is visible, and complete.
    put_image(session, &image.name, &image.manifest).await?;

    Ok(ImportedImage {
        name: image.name.clone(),
        manifest_digest: image.manifest.digest.clone(),
        config_digest: parts.config.digest.clone(),
        chain_id,
        size: image.manifest.size
            + parts.config.size
            + parts.layers.iter().map(|l| l.size).sum::<u64>(),
    })
}

/// Applies each layer on top of the one below, as committed snapshots named by chain ID;
/// layers already unpacked (by this image or another sharing them) are skipped. Returns the
/// top chain ID.
async fn unpack_layers(session: &Session, snapshotter: &str, parts: &ImageParts) -> Result<String> {
    let chain = chain_ids(&parts.diff_ids);
    let Some(top) = chain.last().cloned() else {
        return Err(Error::InvalidLayout {
            path: parts.config.digest.clone().into(),
            reason: "the image has no layers".to_string(),
        });
    };

    for (i, layer) in parts.layers.iter().enumerate() {
        if snapshot_exists(session, snapshotter, &chain[i]).await? {
            continue;
        }
        let parent = if i == 0 {
            String::new()
        } else {
            chain[i - 1].clone()
        };
        unpack_layer(
            session,
            snapshotter,
            layer,
            &parts.diff_ids[i],
            &chain[i],
            parent,
        )
        .await?;
    }

    let label = format!("{LABEL_GC_REF_SNAPSHOT}.{snapshotter}");
    session
        .label_content(&parts.config.digest, HashMap::from([(label, top.clone())]))
        .await?;
    Ok(top)
}

/// Prepare → Apply → Commit for one layer. On failure the half-made active snapshot is
/// removed, so a retry starts clean.
async fn unpack_layer(
    session: &Session,
    snapshotter: &str,
    layer: &Blob,
    diff_id: &str,
    chain_id: &str,
    parent: String,
) -> Result<()> {
    // A unique key: two importers unpacking the same layer must not collide while active.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let key = format!("extract-{nanos}-{chain_id}");
    let mounts = session
        .snapshots()
        .prepare(session.request(PrepareSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            key: key.clone(),
            parent,
            labels: HashMap::new(),
        }))
        .await
        .map_err(Error::containerd("Snapshots.Prepare"))?
        .into_inner()
        .mounts;

    let result =
        apply_and_commit(session, snapshotter, layer, diff_id, chain_id, &key, mounts).await;
    if result.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = session
            .snapshots()
            .remove(session.request(RemoveSnapshotRequest {
                snapshotter: snapshotter.to_string(),
                key,
            }))
            .await;
    }
    result
}

async fn apply_and_commit(
    session: &Session,
    snapshotter: &str,
    layer: &Blob,
    diff_id: &str,
    chain_id: &str,
    key: &str,
    mounts: Vec<containerd_client::types::Mount>,
) -> Result<()> {
    // containerd mounts the snapshot, untars (decompressing if need be) the layer into it,
    // unmounts, and tells us the digest of the uncompressed tar it applied.
    let applied = session
        .diff()
        .apply(session.request(ApplyRequest {
            diff: Some(descriptor(layer)),
            mounts,
            payloads: HashMap::new(),
            sync_fs: false,
        }))
        .await
        .map_err(Error::containerd("Diff.Apply"))?
        .into_inner()
        .applied
        .map(|d| d.digest)
        .unwrap_or_default();
    if applied != diff_id {
        return Err(Error::LayerMismatch {
            layer: layer.digest.clone(),
            applied,
            expected: diff_id.to_string(),
        });
    }

    let committed = session
        .snapshots()
        .commit(session.request(CommitSnapshotRequest {
            snapshotter: snapshotter.to_string(),
            name: chain_id.to_string(),
            key: key.to_string(),
            labels: HashMap::new(),
        }))
        .await;
    match committed {
        Ok(_) => Ok(()),
        // Another importer committed the same chain meanwhile. Its snapshot is as good as
        // ours would have been, so ours (still active) is dropped.
        Err(status) if status.code() == Code::AlreadyExists => {
            let _ = session
                .snapshots()
                .remove(session.request(RemoveSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key: key.to_string(),
                }))
                .await;
            Ok(())
        }
        Err(status) => Err(Error::containerd("Snapshots.Commit")(status)),
    }
}

/// Does a snapshot with this name exist in the snapshotter?
pub(crate) async fn snapshot_exists(
    session: &Session,
    snapshotter: &str,
    name: &str,
) -> Result<bool> {
    let request = session.request(StatSnapshotRequest {
        snapshotter: snapshotter.to_string(),
        key: name.to_string(),
    });
    match session.snapshots().stat(request).await {
        Ok(_) => Ok(true),
        Err(status) if status.code() == Code::NotFound => Ok(false),
        Err(status) => Err(Error::containerd("Snapshots.Stat")(status)),
    }
}

/// Points `name` at `manifest`: `Images.Create`, or — when the name exists — `Images.Update`
/// of its target (skipped when it already points there). Creating first, rather than
/// checking first, means two concurrent imports cannot both decide to create.
async fn put_image(session: &Session, name: &str, manifest: &Blob) -> Result<()> {
    let image = Image {
        name: name.to_string(),
        labels: HashMap::new(),
        target: Some(descriptor(manifest)),
        created_at: None,
        updated_at: None,
    };
    let created = session
        .images()
        .create(session.request(CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        }))
        .await;
    match created {
        Ok(_) => return Ok(()),
        Err(status) if status.code() == Code::AlreadyExists => {}
        Err(status) => return Err(Error::containerd("Images.Create")(status)),
    }

    let existing = session
        .images()
        .get(session.request(GetImageRequest {
            name: name.to_string(),
        }))
        .await
        .map_err(Error::containerd("Images.Get"))?
        .into_inner()
        .image
        .and_then(|i| i.target);
    if existing.is_some_and(|target| target.digest == manifest.digest) {
        return Ok(());
    }
    session
        .images()
        .update(session.request(UpdateImageRequest {
            image: Some(image),
            update_mask: Some(FieldMask {
                paths: vec!["target".to_string()],
            }),
            source_date_epoch: None,
        }))
        .await
        .map_err(Error::containerd("Images.Update"))?;
    Ok(())
}

fn descriptor(blob: &Blob) -> Descriptor {
    Descriptor {
        media_type: blob.media_type.clone(),
        digest: blob.digest.clone(),
        size: i64::try_from(blob.size).unwrap_or(i64::MAX),
        annotations: HashMap::new(),
    }
}

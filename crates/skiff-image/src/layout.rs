//! Reading OCI image layout tarballs, and the OCI documents (index, manifest, config) that
//! import and inspect both parse.
//!
//! An image layout is content-addressed: `index.json` names manifests by digest, a manifest
//! names its config and layers, and each blob lives at `blobs/sha256/<hex>`. A tarball of
//! one is read in place — [`LayoutArchive::open`] records where each file's bytes start, and
//! blobs are read from there — so importing a 1 GB image needs no 1 GB of scratch space.
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use oci_spec::image::{Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, Os};

use crate::digest::sha256;
use crate::pack::blob_path;
use crate::reference::normalize;
use crate::{Error, Result};

/// The file that marks a directory (or tarball) as an OCI image layout.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
pub const OCI_LAYOUT_VERSION: &str = "1.0.0";
/// The OCI annotation for an image's name (by convention a tag; skiff writes the reference).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation for an image's full name; preferred over the OCI one on import.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Index, manifest and config documents are small; a bigger one is a broken or hostile file.
const MAX_DOCUMENT_SIZE: u64 = 8 << 20;

/// Media types skiff reads. Docker's are accepted too: `docker save` (version 25 and later)
/// writes an OCI layout whose manifests use them.
pub mod media_types {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

    /// Does the descriptor point at an image manifest?
    pub fn is_manifest(media_type: &str) -> bool {
        media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
    }

    /// Does the descriptor point at an index (a multi-platform list of manifests)?
    pub fn is_index(media_type: &str) -> bool {
        media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
    }
}

/// The three facts containerd needs about a blob — a descriptor without the OCI extras.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl From<&Descriptor> for Blob {
    fn from(d: &Descriptor) -> Self {
        Blob {
            media_type: d.media_type().to_string(),
            digest: d.digest().to_string(),
            size: d.size(),
        }
    }
}

/// A manifest's parts, parsed: what [`crate::import`] writes and unpacks.
#[derive(Debug, Clone)]
pub struct ImageParts {
    pub config: Blob,
    pub layers: Vec<Blob>,
    /// The config's `rootfs.diff_ids`: digests of the *uncompressed* layers, bottom first.
    pub diff_ids: Vec<String>,
    pub config_document: ImageConfiguration,
}

/// One image in a layout tarball, with its small documents already read and checked.
#[derive(Debug, Clone)]
pub struct LayoutImage {
    /// The normalised name from the index's annotations.
    pub name: String,
    pub manifest: Blob,
    pub manifest_bytes: Vec<u8>,
    pub config_bytes: Vec<u8>,
    pub parts: ImageParts,
}

/// Where a file's bytes sit inside the tarball.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    pub offset: u64,
    pub size: u64,
}

/// An OCI image layout tarball opened for reading.
#[derive(Debug)]
pub struct LayoutArchive {
    path: PathBuf,
    /// Regular files by their path inside the tarball (`index.json`, `blobs/sha256/…`).
    files: HashMap<String, BlobLocation>,
}

impl LayoutArchive {
    /// Scans the tarball's headers (skipping over file contents) and checks it is a layout.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(Error::io(path))?;
        let mut archive = tar::Archive::new(file);
        let mut files = HashMap::new();
        for entry in archive.entries_with_seek().map_err(Error::io(path))? {
            let entry = entry.map_err(Error::io(path))?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let name = entry.path().map_err(Error::io(path))?;
            let name = name.to_string_lossy();
            let name = name.trim_start_matches("./").to_string();
            let location = BlobLocation {
                offset: entry.raw_file_position(),
                size: entry.size(),
            };
            files.insert(name, location);
        }
        let archive = LayoutArchive {
            path: path.to_path_buf(),
            files,
        };
        for required in [OCI_LAYOUT_FILE, "index.json"] {
            if !archive.files.contains_key(required) {
                return Err(archive.invalid(format!("no {required} (is this `docker save` output from before Docker 25? only OCI layouts are imported)")));
            }
        }
        Ok(archive)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the blob with this digest is in the tarball.
    pub fn locate(&self, digest: &str) -> Result<BlobLocation> {
        self.files
            .get(&blob_path(digest))
            .copied()
            .ok_or_else(|| Error::MissingBlob {
                path: self.path.clone(),
                digest: digest.to_string(),
            })
    }

    /// Every image the index names: manifests directly, or this machine's platform from a
    /// multi-platform index.
    pub fn images(&self) -> Result<Vec<LayoutImage>> {
        let index_bytes = self.read_file("index.json", None)?;
        let index: ImageIndex =
            serde_json::from_slice(&index_bytes).map_err(Error::json("index.json"))?;
        let mut images = Vec::new();
        for entry in index.manifests() {
            let annotations = entry.annotations().clone().unwrap_or_default();
            let Some(written) = annotations
                .get(ANNOTATION_CONTAINERD_NAME)
                .or_else(|| annotations.get(ANNOTATION_REF_NAME))
            else {
                return Err(self.invalid(format!(
                    "manifest {} in index.json has no name ({ANNOTATION_CONTAINERD_NAME} or {ANNOTATION_REF_NAME} annotation)",
                    entry.digest()
                )));
            };
            let name = normalize(written)?;
            let manifest = self.platform_manifest(entry)?;
            let manifest_bytes = self.read_blob(&manifest)?;
            let (config, layers) = parse_manifest(&manifest_bytes, &manifest.digest)?;
            let config_bytes = self.read_blob(&config)?;
            let parts = parse_config(config, layers, &config_bytes)?;
            images.push(LayoutImage {
                name,
                manifest,
                manifest_bytes,
                config_bytes,
                parts,
            });
        }
        Ok(images)
    }

    /// The manifest an index entry stands for on this machine.
    fn platform_manifest(&self, entry: &Descriptor) -> Result<Blob> {
        let blob = Blob::from(entry);
        if media_types::is_manifest(&blob.media_type) {
            return Ok(blob);
        }
        if !media_types::is_index(&blob.media_type) {
            return Err(self.invalid(format!("unsupported media type {}", blob.media_type)));
        }
        let nested: ImageIndex = serde_json::from_slice(&self.read_blob(&blob)?)
            .map_err(Error::json(format!("index {}", blob.digest)))?;
        pick_platform(&nested).ok_or_else(|| {
            self.invalid(format!(
                "index {} has no linux/{} manifest",
                blob.digest,
                Arch::default()
            ))
        })
    }

    /// A small document blob, checked against its digest.
    fn read_blob(&self, blob: &Blob) -> Result<Vec<u8>> {
        self.read_file(&blob_path(&blob.digest), Some(&blob.digest))
    }

    fn read_file(&self, name: &str, digest: Option<&str>) -> Result<Vec<u8>> {
        let location = self
            .files
            .get(name)
            .copied()
            .ok_or_else(|| Error::MissingBlob {
                path: self.path.clone(),
                digest: digest.unwrap_or(name).to_string(),
            })?;
        if location.size > MAX_DOCUMENT_SIZE {
            return Err(self.invalid(format!(
                "{name} is {} bytes, too big for a JSON document",
                location.size
            )));
        }
        let mut file = File::open(&self.path).map_err(Error::io(&self.path))?;
        let mut bytes = vec![0; location.size as usize];
        file.seek(SeekFrom::Start(location.offset))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(Error::io(&self.path))?;
        if let Some(expected) = digest {
            check_digest(expected, &bytes)?;
        }
        Ok(bytes)
    }

    fn invalid(&self, reason: String) -> Error {
        Error::InvalidLayout {
            path: self.path.clone(),
            reason,
        }
    }
}

/// The manifest for linux on this machine's architecture, or the only manifest of an index
/// whose entries name no platform.
pub fn pick_platform(index: &ImageIndex) -> Option<Blob> {
    let host = Arch::default();
    let manifests: Vec<&Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| media_types::is_manifest(d.media_type().as_ref()))
        .collect();
    manifests
        .iter()
        .find(|d| {
            d.platform()
                .as_ref()
                .is_some_and(|p| *p.os() == Os::Linux && *p.architecture() == host)
        })
        .or_else(|| match manifests.as_slice() {
            [only] if only.platform().is_none() => Some(only),
            _ => None,
        })
        .map(|d| Blob::from(*d))
}

/// A manifest's config and layer descriptors.
pub fn parse_manifest(bytes: &[u8], digest: &str) -> Result<(Blob, Vec<Blob>)> {
    let manifest: ImageManifest =
        serde_json::from_slice(bytes).map_err(Error::json(format!("manifest {digest}")))?;
    let layers = manifest.layers().iter().map(Blob::from).collect();
    Ok((Blob::from(manifest.config()), layers))
}

/// Parses a config and checks it agrees with the manifest about how many layers there are.
pub fn parse_config(config: Blob, layers: Vec<Blob>, bytes: &[u8]) -> Result<ImageParts> {
    let document: ImageConfiguration =
        serde_json::from_slice(bytes).map_err(Error::json(format!("config {}", config.digest)))?;
    let diff_ids = document.rootfs().diff_ids().clone();
    if diff_ids.len() != layers.len() {
        return Err(Error::InvalidLayout {
            path: PathBuf::from(&config.digest),
            reason: format!(
                "config lists {} diff_ids but the manifest has {} layers",
                diff_ids.len(),
                layers.len()
            ),
        });
    }
    Ok(ImageParts {
        config,
        layers,
        diff_ids,
        config_document: document,
    })
}

/// Fails unless `bytes` hash to `expected`.
pub fn check_digest(expected: &str, bytes: &[u8]) -> Result<()> {
    let actual = sha256(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(Error::DigestMismatch {
            expected: expected.to_string(),
            actual,
        })
    }
}

//! Directory → OCI image layout tarball, reproducibly.
//!
//! The tarball holds one image with one uncompressed layer:
//!
//! ```text
//! oci-layout                       {"imageLayoutVersion":"1.0.0"}
//! index.json                       → manifest, annotated with the image's name
//! blobs/sha256/<layer>             the rootfs as a tar (media type …layer.v1.tar)
//! blobs/sha256/<config>            entrypoint, cmd, env, …; rootfs.diff_ids = [<layer>]
//! blobs/sha256/<manifest>          → config + layer
//! ```
//!
//! ## Guarantees
//! The same inputs give the same bytes, so the same digests — rebuilding an unchanged image
//! changes nothing on any node, and an image digest can be checked against a colleague's:
//! - directory entries are sorted by name; every entry has uid/gid 0, no user/group names and
//!   mtime = [`PackOptions::created`] (0 unless `SOURCE_DATE_EPOCH` is passed in);
//! - the config's `created` is that same instant; JSON is written with a fixed key order;
//! - the outer tarball's entries are written in a fixed order with the same fixed metadata.
//!
//! File modes (including setuid and sticky bits) and symlinks are kept.
//!
//! ## Caveats
//! - Hard links are stored as separate copies; extended attributes (file capabilities) and
//!   device nodes are not carried — a device node is an error rather than silently dropped.
//! - The layer is uncompressed: images are for local networks and disks, where gzip's CPU cost
//!   outweighs the bytes saved, and `Diff.Apply` needs no decompressor.
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::digest::{sha256, Sha256Writer};
use crate::layout::{
    media_types, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, OCI_LAYOUT_FILE,
    OCI_LAYOUT_VERSION,
};
use crate::reference::normalize;
use crate::{Error, Result};

/// The search path `docker build` gives images that set none; without it `sh -c` finds
/// nothing, since the runtime does not invent one.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to pack and how the image runs. Start from [`PackOptions::new`] and set the fields
/// that matter; the rest default to "not set" as in a Dockerfile without that instruction.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// The directory that becomes the container's `/`.
    pub rootfs: PathBuf,
    /// The image's name as the user writes it (`skiff.local/web:1.0`); stored normalised.
    pub reference: String,
    /// Where the tarball is written (replaced atomically if it exists).
    pub output: PathBuf,
    /// `ENTRYPOINT`: the program and its fixed leading arguments.
    pub entrypoint: Vec<String>,
    /// `CMD`: default arguments (or the program, if there is no entrypoint).
    pub cmd: Vec<String>,
    /// `ENV`: `KEY=VALUE` pairs; [`DEFAULT_PATH`] is added when no `PATH=` is given.
    pub env: Vec<String>,
    /// `WORKDIR`: the process's working directory.
    pub working_dir: Option<String>,
    /// `EXPOSE`: `80`, `80/tcp` or `53/udp`; documentation only, as in Docker.
    pub exposed_ports: Vec<String>,
    /// `USER`: `name`, `uid` or `uid:gid`.
    pub user: Option<String>,
    /// Seconds since the epoch for every mtime and the config's `created`; 0 by default.
    /// Pass `SOURCE_DATE_EPOCH` here to follow the reproducible-builds convention.
    pub created: u64,
}

impl PackOptions {
    pub fn new(
        rootfs: impl Into<PathBuf>,
        reference: impl Into<String>,
        output: impl Into<PathBuf>,
    ) -> Self {
        PackOptions {
            rootfs: rootfs.into(),
            reference: reference.into(),
            output: output.into(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            env: Vec::new(),
            working_dir: None,
            exposed_ports: Vec::new(),
            user: None,
            created: 0,
        }
    }
}

/// What [`pack`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedImage {
    /// The tarball.
    pub path: PathBuf,
    /// The normalised name recorded in `index.json` (what containerd will call the image).
    pub name: String,
    pub manifest_digest: String,
    pub config_digest: String,
    /// The layer's digest; it is uncompressed, so this is also its diffID and chain ID.
    pub layer_digest: String,
    pub layer_size: u64,
    /// Manifest + config + layer bytes: what the image occupies in a content store.
    pub size: u64,
}

/// Writes an OCI image layout tarball of `options.rootfs` to `options.output`.
///
/// This is blocking file I/O; async callers wrap it in `tokio::task::spawn_blocking`.
pub fn pack(options: &PackOptions) -> Result<PackedImage> {
    let name = normalize(&options.reference)?;

    // 1. The layer goes to an anonymous temp file, hashed as it is written: its digest must be
    //    known before the config (which names it) can be written.
    let layer_file = tempfile::tempfile().map_err(Error::io(std::env::temp_dir()))?;
    let (layer_digest, layer_size, mut layer_file) =
        write_layer(&options.rootfs, options.created, layer_file)?;

    // 2. Config, then manifest, then index: each names the one before by digest.
    let config = serde_json::to_vec(&config_json(options, &layer_digest)?)
        .map_err(Error::json("image config"))?;
    let config_digest = sha256(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": descriptor(media_types::OCI_CONFIG, &config_digest, config.len() as u64),
        "layers": [descriptor(media_types::OCI_LAYER, &layer_digest, layer_size)],
    }))
    .map_err(Error::json("image manifest"))?;
    let manifest_digest = sha256(&manifest);
    let mut manifest_descriptor = descriptor(
        media_types::OCI_MANIFEST,
        &manifest_digest,
        manifest.len() as u64,
    );
    manifest_descriptor["annotations"] = json!({
        ANNOTATION_CONTAINERD_NAME: name,
        ANNOTATION_REF_NAME: options.reference,
    });
    manifest_descriptor["platform"] = json!({ "architecture": architecture(), "os": "linux" });
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": [manifest_descriptor],
    }))
    .map_err(Error::json("image index"))?;

    // 3. The tarball, written next to its destination and renamed into place, so a reader
    //    never sees half an image.
    let output_dir = match options.output.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let staging = tempfile::NamedTempFile::new_in(&output_dir).map_err(Error::io(&output_dir))?;
    let write_err = Error::io(&options.output);
    let result: io::Result<()> = (|| {
        let mut tarball = tar::Builder::new(BufWriter::new(staging.as_file()));
        let mtime = options.created;
        let layout = json!({ "imageLayoutVersion": OCI_LAYOUT_VERSION }).to_string();
        append_bytes(&mut tarball, OCI_LAYOUT_FILE, layout.as_bytes(), mtime)?;
        append_dir(&mut tarball, "blobs", mtime)?;
        append_dir(&mut tarball, "blobs/sha256", mtime)?;
        layer_file.rewind()?;
        let mut header = file_header(tar::EntryType::Regular, 0o644, layer_size, mtime);
        tarball.append_data(&mut header, blob_path(&layer_digest), &mut layer_file)?;
        append_bytes(&mut tarball, &blob_path(&config_digest), &config, mtime)?;
        append_bytes(&mut tarball, &blob_path(&manifest_digest), &manifest, mtime)?;
        append_bytes(&mut tarball, "index.json", &index, mtime)?;
        tarball.into_inner()?.flush()
    })();
    result.map_err(write_err)?;
    staging
        .persist(&options.output)
        .map_err(|e| Error::io(&options.output)(e.error))?;

    Ok(PackedImage {
        path: options.output.clone(),
        name,
        size: manifest.len() as u64 + config.len() as u64 + layer_size,
        manifest_digest,
        config_digest,
        layer_digest,
        layer_size,
    })
}

/// The image config: how to run the image, and which filesystem changes (diffIDs) make it.
fn config_json(options: &PackOptions, layer_digest: &str) -> Result<Value> {
    let created = i64::try_from(options.created)
        .ok()
        .and_then(|seconds| jiff::Timestamp::from_second(seconds).ok())
        .ok_or_else(|| Error::InvalidLayout {
            path: options.output.clone(),
            reason: format!("created time {} is out of range", options.created),
        })?
        .to_string();

    let mut env = options.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    // Docker writes exposed ports as a JSON object (a Go set); sorted so the bytes are stable.
    let ports: BTreeSet<String> = options
        .exposed_ports
        .iter()
        .map(|p| {
            if p.contains('/') {
                p.clone()
            } else {
                format!("{p}/tcp")
            }
        })
        .collect();

    // Fields a Dockerfile did not set are left out, as Docker does.
    let mut run = Map::new();
    if let Some(user) = &options.user {
        run.insert("User".into(), json!(user));
    }
    if !ports.is_empty() {
        let set: Map<String, Value> = ports.into_iter().map(|p| (p, json!({}))).collect();
        run.insert("ExposedPorts".into(), Value::Object(set));
    }
    run.insert("Env".into(), json!(env));
    if !options.entrypoint.is_empty() {
        run.insert("Entrypoint".into(), json!(options.entrypoint));
    }
    if !options.cmd.is_empty() {
        run.insert("Cmd".into(), json!(options.cmd));
    }
    if let Some(dir) = &options.working_dir {
        run.insert("WorkingDir".into(), json!(dir));
    }

    Ok(json!({
        "created": created,
        "architecture": architecture(),
        "os": "linux",
        "config": run,
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
        "history": [{ "created": created, "created_by": "skiff image build" }],
    }))
}

/// The host's architecture in Go's spelling (`amd64`, `arm64`): the rootfs is assumed to hold
/// binaries for the machine that packs it, as busybox_rootfs's does.
fn architecture() -> String {
    oci_spec::image::Arch::default().to_string()
}

fn descriptor(media_type: &str, digest: &str, size: u64) -> Value {
    json!({ "mediaType": media_type, "digest": digest, "size": size })
}

/// `blobs/sha256/<hex>`: where the layout keeps a blob.
pub(crate) fn blob_path(digest: &str) -> String {
    format!("blobs/{}", digest.replacen(':', "/", 1))
}

/// Writes `rootfs` as a tar into `out`; returns the tar's digest and size, and `out`.
fn write_layer(rootfs: &Path, mtime: u64, out: File) -> Result<(String, u64, File)> {
    let mut layer = tar::Builder::new(Sha256Writer::new(BufWriter::new(out)));
    append_tree(&mut layer, rootfs, Path::new(""), mtime)?;
    let hashed = layer.into_inner().map_err(Error::io(rootfs))?;
    let (digest, size, buffered) = hashed.finish();
    let file = buffered
        .into_inner()
        .map_err(|e| Error::io(rootfs)(e.into_error()))?;
    Ok((digest, size, file))
}

/// Appends the contents of `dir` (at `relative` inside the layer), depth first, each
/// directory's entries sorted by name so the order never depends on the filesystem.
fn append_tree<W: Write>(
    layer: &mut tar::Builder<W>,
    dir: &Path,
    relative: &Path,
    mtime: u64,
) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(Error::io(dir))?;
    names.sort();

    for name in names {
        let path = dir.join(&name);
        let inside = relative.join(&name);
        let meta = fs::symlink_metadata(&path).map_err(Error::io(&path))?;
        let mode = meta.mode() & 0o7777;
        let kind = meta.file_type();
        if kind.is_dir() {
            let mut header = file_header(tar::EntryType::Directory, mode, 0, mtime);
            layer
                .append_data(&mut header, &inside, io::empty())
                .map_err(Error::io(&path))?;
            append_tree(layer, &path, &inside, mtime)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(&path).map_err(Error::io(&path))?;
            let mut header = file_header(tar::EntryType::Symlink, mode, 0, mtime);
            layer
                .append_link(&mut header, &inside, &target)
                .map_err(Error::io(&path))?;
        } else if kind.is_file() {
            let file = File::open(&path).map_err(Error::io(&path))?;
            let mut header = file_header(tar::EntryType::Regular, mode, meta.len(), mtime);
            // `take`: a file growing while we read must not overrun the size in its header.
            layer
                .append_data(&mut header, &inside, file.take(meta.len()))
                .map_err(Error::io(&path))?;
        } else if kind.is_block_device()
            || kind.is_char_device()
            || kind.is_fifo()
            || kind.is_socket()
        {
            return Err(Error::UnsupportedFile { path });
        }
    }
    Ok(())
}

/// A tar header with everything that could differ between machines fixed: owner root, no
/// owner names, the given mtime.
fn file_header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header
}

fn append_bytes<W: Write>(
    tarball: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
    mtime: u64,
) -> io::Result<()> {
    let mut header = file_header(tar::EntryType::Regular, 0o644, bytes.len() as u64, mtime);
    tarball.append_data(&mut header, path, bytes)
}

fn append_dir<W: Write>(tarball: &mut tar::Builder<W>, path: &str, mtime: u64) -> io::Result<()> {
    let mut header = file_header(tar::EntryType::Directory, 0o755, 0, mtime);
    tarball.append_data(&mut header, path, io::empty())
}

#[cfg(test)]
mod tests;

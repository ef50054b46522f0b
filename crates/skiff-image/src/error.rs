//! The one error type of this crate: each variant names what failed.
use std::path::PathBuf;

use containerd_client::tonic;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong building, importing or inspecting an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An image name is not a valid Docker/Kubernetes image reference.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        reference: String,
        reason: &'static str,
    },

    /// The root filesystem holds something a layer tarball cannot carry (sockets, devices).
    #[error("{path}: only regular files, directories and symlinks can be packed into a layer")]
    UnsupportedFile { path: PathBuf },

    /// A tarball is not a usable OCI image layout (missing index.json, unknown media type…).
    #[error("{path}: not a usable OCI image layout: {reason}")]
    InvalidLayout { path: PathBuf, reason: String },

    /// A blob named by a manifest or index is not in the tarball.
    #[error("{path}: blob {digest} is referenced but not present")]
    MissingBlob { path: PathBuf, digest: String },

    /// A blob's content does not hash to the digest it is stored under.
    #[error("blob {expected} has digest {actual}: the image is corrupt")]
    DigestMismatch { expected: String, actual: String },

    /// A JSON document (index, manifest, config) could not be parsed.
    #[error("parsing {what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },

    /// The image is not in containerd. The agent reports this as `ErrImagePull`.
    #[error("image {name} not found in containerd namespace {namespace}")]
    ImageNotFound { name: String, namespace: String },

    /// Unpacking a layer produced a different filesystem digest than the config promises.
    #[error("layer {layer} unpacked to {applied}, but the image config says {expected}")]
    LayerMismatch {
        layer: String,
        applied: String,
        expected: String,
    },

    /// A containerd gRPC call failed.
    #[error("containerd {call}: {status}")]
    Containerd {
        call: &'static str,
        #[source]
        status: tonic::Status,
    },
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// Wraps a containerd status with the name of the call that returned it.
    pub(crate) fn containerd(call: &'static str) -> impl FnOnce(tonic::Status) -> Error {
        move |status| Error::Containerd { call, status }
    }

    /// Wraps a JSON error with what was being parsed.
    pub(crate) fn json(what: impl Into<String>) -> impl FnOnce(serde_json::Error) -> Error {
        let what = what.into();
        move |source| Error::Json { what, source }
    }
}

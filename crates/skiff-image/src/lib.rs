//! skiff-image: OCI image layout tarballs — build them from a directory, import them into
//! containerd, list them.
//!
//! skiff runs on machines that may have no registry and no internet. Images travel as files:
//! `skiff image build` (or [`pack()`]) turns a root filesystem directory into an
//! [OCI image layout](https://github.com/opencontainers/image-spec/blob/main/image-layout.md)
//! tarball, and the node agent imports such tarballs into its containerd through the gRPC
//! content, snapshot and diff APIs — the same steps `ctr image import` takes, spelled out.
//!
//! ## Layout
//! - [`reference`](mod@reference): image names as users write them (`web:1.0`) and as
//!   containerd stores them (`docker.io/library/web:1.0`): [`normalize`].
//! - [`digest`]: sha256 digests and layer chain IDs.
//! - [`rootfs`]: [`busybox_rootfs`], a tiny root filesystem for demos and tests.
//! - [`pack`](mod@pack): directory → reproducible OCI layout tarball ([`pack()`]).
//! - [`layout`]: reading an OCI layout tarball without unpacking it to disk.
//! - `containerd` (private): the small gRPC plumbing shared by import and inspect (namespaced
//!   requests, leases, reading and writing content).
//! - [`import`]: tarball → containerd content store → image record → unpacked snapshots
//!   ([`import_tarball`], [`unpack`]).
//! - `error` (private; its type is re-exported): the crate's one error type.
//! - [`inspect`]: what the node has: [`list`] and [`resolve`] (an image's run config and the
//!   snapshot a container's root filesystem is prepared from).
//!
//! ## The life of an image
//! ```text
//!  rootfs dir ──pack──► web.tar ──import_tarball──► containerd
//!                       index.json                  content: blobs + gc.ref labels
//!                       manifest, config            snapshots: one per layer, named by chain ID
//!                       one layer.tar               image record: name → manifest (last)
//!                                                        │
//!                        agent ◄───────resolve───────────┘ run config + top chain ID
//!                        Snapshots.Prepare { key: <container>, parent: <top chain ID> }
//! ```
pub mod digest;
pub mod import;
pub mod inspect;
pub mod layout;
pub mod pack;
pub mod reference;
pub mod rootfs;

mod containerd;
mod error;

pub use error::{Error, Result};
pub use import::{import_tarball, unpack, ImportedImage};
pub use inspect::{list, resolve, ImageConfig, ImageSummary, ResolvedImage};
pub use pack::{pack, PackOptions, PackedImage};
pub use reference::normalize;
pub use rootfs::{busybox_rootfs, BUSYBOX, DEFAULT_APPLETS};

/// The gRPC channel to containerd all functions here take (`containerd_client::connect`).
pub use containerd_client::tonic::transport::Channel;

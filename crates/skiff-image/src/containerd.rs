//! The gRPC plumbing import and inspect share: namespaced (and leased) requests, and reading
//! and writing blobs in containerd's content store.
//!
//! Two request headers carry context the messages do not:
//! - `containerd-namespace`: every object (image, blob reference, snapshot) lives in a
//!   namespace; skiff's agent uses its own so it never sees or touches other users' images.
//! - `containerd-lease`: while an import is half done, nothing references the blobs and
//!   snapshots it has written yet, and containerd's garbage collector would delete them. A
//!   lease is a temporary root: everything created under it survives until the lease is
//!   deleted (or expires, if the importer dies).
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::{
    CreateRequest, DeleteRequest, Info, InfoRequest, ReadContentRequest, UpdateRequest,
    WriteAction, WriteContentRequest,
};
use containerd_client::tonic::metadata::{Ascii, MetadataValue};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request};
use futures::SinkExt;
use prost_types::FieldMask;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::layout::{Blob, BlobLocation};
use crate::{Error, Result};

/// Content is sent in pieces of this size: big enough that per-message overhead vanishes,
/// small enough to stay well under gRPC's 4 MiB message limit.
const CHUNK_SIZE: u64 = 1 << 20;

/// How long a lease outlives an importer that crashed mid-import. Generous: a slow disk
/// unpacking a large image must not lose its blobs halfway.
const LEASE_EXPIRY: Duration = Duration::from_secs(60 * 60);

/// How long [`Session::ensure_blob`] keeps backing off while another importer holds a
/// blob's upload (50 ms doubling up to 8 s: about 16 s in total).
const MAX_LOCKED_BACKOFF: Duration = Duration::from_secs(8);

/// A channel plus the headers every request in one namespace (and maybe one lease) carries.
#[derive(Clone)]
pub struct Session {
    channel: Channel,
    namespace: String,
    namespace_header: MetadataValue<Ascii>,
    lease_header: Option<MetadataValue<Ascii>>,
}

/// Where the bytes of a blob being written come from.
pub enum BlobSource {
    /// Already in memory (manifests, configs).
    Bytes(Vec<u8>),
    /// A byte range of a file (a layer inside a layout tarball).
    File {
        path: PathBuf,
        location: BlobLocation,
    },
}

impl Session {
    pub fn new(channel: &Channel, namespace: &str) -> Result<Self> {
        let namespace_header = namespace.parse().map_err(|_| {
            Error::containerd("namespace")(containerd_client::tonic::Status::invalid_argument(
                format!("namespace {namespace:?} is not a valid header value"),
            ))
        })?;
        Ok(Session {
            channel: channel.clone(),
            namespace: namespace.to_string(),
            namespace_header,
            lease_header: None,
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Wraps a message with the namespace (and lease) headers.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let headers = request.metadata_mut();
        headers.insert("containerd-namespace", self.namespace_header.clone());
        if let Some(lease) = &self.lease_header {
            headers.insert("containerd-lease", lease.clone());
        }
        request
    }

    pub fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.channel.clone())
    }
    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
    }
    pub fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }
    pub fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.channel.clone())
    }

    /// Runs `work` under a fresh lease, and deletes the lease afterwards whether or not the
    /// work succeeded: what it wrote is, by then, referenced from an image (or unwanted).
    pub async fn with_lease<T, F, Fut>(&self, work: F) -> Result<T>
    where
        F: FnOnce(Session) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let id = format!("skiff-image-{}-{}", std::process::id(), now.as_nanos());
        let expires = jiff::Timestamp::now()
            .checked_add(LEASE_EXPIRY)
            .unwrap_or(jiff::Timestamp::MAX);
        let labels = HashMap::from([("containerd.io/gc.expire".to_string(), expires.to_string())]);
        let mut leases = LeasesClient::new(self.channel.clone());
        leases
            .create(self.request(CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(Error::containerd("Leases.Create"))?;

        let mut leased = self.clone();
        // The id is ours: ASCII letters, digits and dashes, always a valid header value.
        leased.lease_header = id.parse().ok();
        let result = work(leased).await;

        let deleted = leases
            .delete(self.request(DeleteRequest { id, sync: false }))
            .await
            .map_err(Error::containerd("Leases.Delete"));
        let value = result?;
        deleted?;
        Ok(value)
    }

    /// The content store's record of a blob, or `None` if it does not have it.
    pub async fn content_info(&self, digest: &str) -> Result<Option<Info>> {
        let request = self.request(InfoRequest {
            digest: digest.to_string(),
        });
        match self.content().info(request).await {
            Ok(response) => Ok(response.into_inner().info),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => Err(Error::containerd("Content.Info")(status)),
        }
    }

    /// A whole blob, read back from the content store (used for small documents).
    pub async fn read_content(&self, digest: &str) -> Result<Vec<u8>> {
        let request = self.request(ReadContentRequest {
            digest: digest.to_string(),
            offset: 0,
            size: 0, // 0 = to the end
        });
        let mut chunks = self
            .content()
            .read(request)
            .await
            .map_err(Error::containerd("Content.Read"))?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = chunks
            .message()
            .await
            .map_err(Error::containerd("Content.Read"))?
        {
            bytes.extend_from_slice(&chunk.data);
        }
        Ok(bytes)
    }

    /// Sets labels on a blob that is already stored, leaving its other labels alone.
    pub async fn label_content(&self, digest: &str, labels: HashMap<String, String>) -> Result<()> {
        let paths = labels.keys().map(|key| format!("labels.{key}")).collect();
        let request = self.request(UpdateRequest {
            info: Some(Info {
                digest: digest.to_string(),
                labels,
                ..Default::default()
            }),
            update_mask: Some(FieldMask { paths }),
        });
        self.content()
            .update(request)
            .await
            .map_err(Error::containerd("Content.Update"))?;
        Ok(())
    }

    /// Stores a blob unless the content store already has it. Returns whether it was written.
    ///
    /// The write is one bidirectional stream: WRITE messages carry the data in order, the
    /// COMMIT message carries the labels, and containerd checks the size and digest before it
    /// makes the blob visible. The ref (`skiff-<digest>`) names the upload: if an earlier
    /// import died halfway, writing from offset 0 under the same ref starts it over.
    ///
    /// Two importers writing the same blob at once share the ref, and containerd lets only
    /// one hold it (`Unavailable: ref … locked`); the other waits and looks again, by which
    /// time the blob is usually there.
    pub async fn ensure_blob(
        &self,
        blob: &Blob,
        source: &BlobSource,
        labels: &HashMap<String, String>,
    ) -> Result<bool> {
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.content_info(&blob.digest).await?.is_some() {
                return Ok(false);
            }
            match self.write_blob(blob, source, labels.clone()).await {
                Err(Error::Containerd { status, .. })
                    if status.code() == Code::Unavailable && backoff <= MAX_LOCKED_BACKOFF =>
                {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                other => return other,
            }
        }
    }

    /// One attempt at [`Session::ensure_blob`]'s write.
    async fn write_blob(
        &self,
        blob: &Blob,
        source: &BlobSource,
        labels: HashMap<String, String>,
    ) -> Result<bool> {
        let reference = format!("skiff-{}", blob.digest);
        let total = i64::try_from(blob.size).unwrap_or(i64::MAX);
        let message = |action: WriteAction, offset: u64, data: Vec<u8>| WriteContentRequest {
            action: action as i32,
            r#ref: reference.clone(),
            total,
            expected: blob.digest.clone(),
            offset: i64::try_from(offset).unwrap_or(i64::MAX),
            data,
            labels: HashMap::new(),
        };
        let mut commit = message(WriteAction::Commit, blob.size, Vec::new());
        commit.labels = labels;

        // The producer reads chunks into a small channel while the consumer runs the call;
        // joining them keeps memory at a few chunks however large the layer.
        let (mut tx, rx) = futures::channel::mpsc::channel(2);
        let produce = async move {
            let mut offset = 0;
            match source {
                BlobSource::Bytes(bytes) => {
                    for chunk in bytes.chunks(CHUNK_SIZE as usize) {
                        let data = chunk.to_vec();
                        if tx
                            .send(message(WriteAction::Write, offset, data))
                            .await
                            .is_err()
                        {
                            // The call ended early; the consumer reports why.
                            return Ok(());
                        }
                        offset += chunk.len() as u64;
                    }
                }
                BlobSource::File { path, location } => {
                    let mut file = tokio::fs::File::open(&path)
                        .await
                        .map_err(Error::io(path))?;
                    file.seek(std::io::SeekFrom::Start(location.offset))
                        .await
                        .map_err(Error::io(path))?;
                    while offset < location.size {
                        let mut chunk = vec![0; CHUNK_SIZE.min(location.size - offset) as usize];
                        file.read_exact(&mut chunk).await.map_err(Error::io(path))?;
                        let len = chunk.len() as u64;
                        if tx
                            .send(message(WriteAction::Write, offset, chunk))
                            .await
                            .is_err()
                        {
                            // The call ended early; the consumer reports why.
                            return Ok(());
                        }
                        offset += len;
                    }
                }
            }
            let _ = tx.send(commit).await;
            Ok::<(), Error>(())
        };
        let mut content = self.content();
        let consume = async {
            let mut responses = content
                .write(self.request(rx))
                .await
                .map_err(Error::containerd("Content.Write"))?
                .into_inner();
            let mut committed = None;
            while let Some(response) = responses
                .message()
                .await
                .map_err(Error::containerd("Content.Write"))?
            {
                if response.action == WriteAction::Commit as i32 {
                    committed = Some(response.digest);
                }
            }
            Ok::<_, Error>(committed)
        };
        let (produced, consumed) = futures::join!(produce, consume);
        produced?;
        match consumed {
            Ok(Some(digest)) if digest == blob.digest => Ok(true),
            Ok(Some(digest)) => Err(Error::DigestMismatch {
                expected: blob.digest.clone(),
                actual: digest,
            }),
            Ok(None) => Err(Error::containerd("Content.Write")(
                containerd_client::tonic::Status::internal("stream ended without a commit"),
            )),
            // Another importer committed the same blob first: it is there, which is the point.
            Err(Error::Containerd { status, .. }) if status.code() == Code::AlreadyExists => {
                Ok(false)
            }
            Err(other) => Err(other),
        }
    }
}

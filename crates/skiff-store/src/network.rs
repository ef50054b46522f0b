//! The client side of the Raft transport: openraft's `RaftNetworkFactory`/`RaftNetwork` over
//! tonic gRPC, plus the calls skiff adds (forwarding writes, read index).
//!
//! Channels are cached per peer address and connect lazily: openraft creates a network client
//! per RPC target often (and `ensure_linearizable` once per voter per call), and a fresh TLS
//! connection each time cost 4× the throughput of linearizable reads when measured here.
//! Every call carries the cluster secret as a bearer token; servers reject calls without it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::command::{Request, Response};
use crate::pb::raft_transport_client::RaftTransportClient;
use crate::pb::{Empty, Payload, SnapshotChunk};
use crate::service::ForwardError;
use crate::{Member, NodeId, TypeConfig};

/// gRPC messages may carry a batch of objects or a snapshot chunk; tonic's 4 MiB default is
/// too small for the former.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How servers reach each other: TLS trust and the shared secret. Cheap to clone.
#[derive(Clone)]
pub struct PeerTransport {
    tls: Option<ClientTlsConfig>,
    secret: Arc<str>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("bad peer address {addr}: {source}")]
    Address {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("peer call failed: {0}")]
    Status(#[from] tonic::Status),
    #[error("undecodable peer reply: {0}")]
    Decode(#[from] serde_json::Error),
}

impl TransportError {
    /// Whether the peer refused the connection, so nothing was sent to it.
    pub fn is_connection_refused(&self) -> bool {
        let TransportError::Status(status) = self else {
            return false;
        };
        let mut source: Option<&(dyn std::error::Error + 'static)> =
            std::error::Error::source(status);
        while let Some(error) = source {
            if let Some(io) = error.downcast_ref::<std::io::Error>() {
                return io.kind() == std::io::ErrorKind::ConnectionRefused;
            }
            source = error.source();
        }
        false
    }
}

impl PeerTransport {
    /// `ca_pem` is the cluster CA that signs every server certificate; `None` means plain-text
    /// gRPC, which only in-process tests use.
    pub fn new(ca_pem: Option<&str>, secret: &str) -> PeerTransport {
        let tls =
            ca_pem.map(|pem| ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)));
        PeerTransport {
            tls,
            secret: secret.into(),
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The secret peers must present; the server side checks it too.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    fn channel(&self, addr: &str) -> Result<Channel, TransportError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let bad = |source| TransportError::Address {
            addr: addr.to_string(),
            source,
        };
        let mut endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(bad)?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10));
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(bad)?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    fn client(&self, addr: &str) -> Result<RaftTransportClient<Channel>, TransportError> {
        Ok(RaftTransportClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        if let Ok(value) = format!("Bearer {}", self.secret).parse() {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// Sends a follower's batch of proposals to the leader at `addr`; answers the results and the
    /// log index of the entry that carried them.
    pub async fn forward(
        &self,
        addr: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Result<(Response, u64), ForwardError>, TransportError> {
        let payload = encode(request)?;
        let reply = self
            .client(addr)?
            .forward(self.request(payload, timeout))
            .await?;
        Ok(serde_json::from_slice(&reply.into_inner().json)?)
    }

    /// Asks the leader at `addr` for the log index a linearizable read must wait for.
    pub async fn read_index(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<Result<u64, ForwardError>, TransportError> {
        let reply = self
            .client(addr)?
            .read_index(self.request(Empty {}, timeout))
            .await?;
        Ok(serde_json::from_slice(&reply.into_inner().json)?)
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Payload, serde_json::Error> {
    Ok(Payload {
        json: serde_json::to_vec(value)?,
    })
}

impl RaftNetworkFactory<TypeConfig> for PeerTransport {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient {
            target,
            addr: node.addr.clone(),
            transport: self.clone(),
        }
    }
}

/// openraft's handle on one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    transport: PeerTransport,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, Member, E>>;

impl PeerClient {
    /// Turns a gRPC reply carrying `Result<T, E>` into what openraft expects.
    fn unpack<T, E>(
        &self,
        reply: Result<tonic::Response<Payload>, TransportError>,
    ) -> RpcResult<T, E>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = match reply {
            Ok(reply) => reply.into_inner(),
            // A peer that is down or restarting: openraft backs off before trying again.
            Err(TransportError::Status(status)) if status.code() == tonic::Code::Unavailable => {
                return Err(RPCError::Unreachable(Unreachable::new(&status)))
            }
            Err(e) => return Err(RPCError::Network(NetworkError::new(&e))),
        };
        let result: Result<T, E> = serde_json::from_slice(&payload.json)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn client(&self) -> Result<RaftTransportClient<Channel>, TransportError> {
        self.transport.client(&self.addr)
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
        let reply = async {
            let request = self.transport.request(encode(&rpc)?, option.hard_ttl());
            Ok(self.client()?.append_entries(request).await?)
        }
        .await;
        self.unpack(reply)
    }

    async fn install_snapshot(
        &mut self,
        mut rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        let data = std::mem::take(&mut rpc.data);
        let reply = async {
            let chunk = SnapshotChunk {
                header_json: serde_json::to_vec(&rpc)?,
                data,
            };
            let request = self.transport.request(chunk, option.hard_ttl());
            Ok(self.client()?.install_snapshot(request).await?)
        }
        .await;
        self.unpack(reply)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, RaftError<NodeId>> {
        let reply = async {
            let request = self.transport.request(encode(&rpc)?, option.hard_ttl());
            Ok(self.client()?.vote(request).await?)
        }
        .await;
        self.unpack(reply)
    }
}

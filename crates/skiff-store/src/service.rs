//! The server side of the Raft transport: hands peers' RPCs to the local `Raft`, commits
//! followers' forwarded writes when this member leads, and answers read-index requests.
//!
//! The service is a tonic service the API server mounts on its own HTTPS port (gRPC is HTTP/2),
//! so a skiff server listens on one port for everything.

use std::sync::Arc;

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::raft::InstallSnapshotRequest;
use openraft::Raft;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::command;
use crate::network::encode;
use crate::pb::raft_transport_server::RaftTransport;
use crate::pb::{Empty, Payload, SnapshotChunk};
use crate::{Member, NodeId, TypeConfig};

/// The connections of `listener` with `TCP_NODELAY` set, for `serve_with_incoming` when the
/// Raft service is served on a listener of its own (benchmark peers, tests). tonic's own
/// `tcp_nodelay` only reaches connections tonic accepts itself; without it a reply's HTTP/2
/// frames wait behind Nagle for the peer's delayed ACK, 40 ms now and then on AppendEntries.
/// (`skiff server` accepts through axum-server's `NoDelayAcceptor` instead.)
pub fn nodelay_incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted {
            let _ = stream.set_nodelay(true);
        }
        accepted
    })
}

/// Why the leader could not take a forwarded write or answer a read index.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// This member is not the leader (any more); the caller retries with the one named.
    #[error("not the leader; leader is {leader_id:?}")]
    NotLeader {
        leader_id: Option<NodeId>,
        leader_addr: Option<String>,
    },
    #[error("{0}")]
    Failed(String),
}

impl ForwardError {
    fn from_forward(f: &ForwardToLeader<NodeId, Member>) -> ForwardError {
        ForwardError::NotLeader {
            leader_id: f.leader_id,
            leader_addr: f.leader_node.as_ref().map(|n| n.addr.clone()),
        }
    }
}

/// Serves the `RaftTransport` gRPC service for one member.
pub struct RaftService {
    raft: Raft<TypeConfig>,
    secret: Arc<str>,
}

impl RaftService {
    pub fn new(raft: Raft<TypeConfig>, secret: &str) -> RaftService {
        RaftService {
            raft,
            secret: secret.into(),
        }
    }

    /// The interceptor ([`PeerAuth`]) has checked the secret already; checked again here so
    /// the service is safe also where it is mounted without it.
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        check_secret(request, &self.secret)
    }
}

/// Checks a Raft call's secret from its headers alone, before tonic reads and decodes its body
/// (up to 64 MiB): a caller without the secret costs the member no more than its headers.
#[derive(Clone)]
pub struct PeerAuth {
    secret: Arc<str>,
}

impl PeerAuth {
    pub fn new(secret: &str) -> PeerAuth {
        PeerAuth {
            secret: secret.into(),
        }
    }
}

impl tonic::service::Interceptor for PeerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        check_secret(&request, &self.secret)?;
        Ok(request)
    }
}

/// The call carries `Authorization: Bearer <the cluster secret>`.
fn check_secret<T>(request: &Request<T>, secret: &str) -> Result<(), Status> {
    let presented = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(presented.as_bytes(), secret.as_bytes()) {
        Ok(())
    } else {
        Err(Status::unauthenticated(
            "a cluster member's secret is required",
        ))
    }
}

/// Compares secrets without revealing through timing how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    serde_json::from_slice(bytes)
        .map_err(|e| Status::invalid_argument(format!("undecodable payload: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<Payload>, Status> {
    encode(value)
        .map(Response::new)
        .map_err(|e| Status::internal(format!("unencodable reply: {e}")))
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn append_entries(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.authorize(&request)?;
        let rpc = decode(&request.into_inner().json)?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.authorize(&request)?;
        let rpc = decode(&request.into_inner().json)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<SnapshotChunk>,
    ) -> Result<Response<Payload>, Status> {
        self.authorize(&request)?;
        let chunk = request.into_inner();
        let mut rpc: InstallSnapshotRequest<TypeConfig> = decode(&chunk.header_json)?;
        rpc.data = chunk.data;
        reply(&self.raft.install_snapshot(rpc).await)
    }

    async fn forward(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        self.authorize(&request)?;
        let proposals: command::Request = decode(&request.into_inner().json)?;
        // The entry's index goes back with the answer, so the follower can wait until it has
        // applied it too: a client reading from the follower right after sees its own write.
        let result: Result<(command::Response, u64), ForwardError> =
            match self.raft.client_write(proposals).await {
                Ok(written) => Ok((written.data, written.log_id.index)),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    Err(ForwardError::from_forward(&f))
                }
                Err(e) => Err(ForwardError::Failed(e.to_string())),
            };
        reply(&result)
    }

    async fn read_index(&self, request: Request<Empty>) -> Result<Response<Payload>, Status> {
        self.authorize(&request)?;
        let result: Result<u64, ForwardError> = match self.raft.ensure_linearizable().await {
            Ok(read_log_id) => Ok(read_log_id.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(ForwardError::from_forward(&f))
            }
            Err(e) => Err(ForwardError::Failed(e.to_string())),
        };
        reply(&result)
    }
}

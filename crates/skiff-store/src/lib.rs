//! skiff-store: the Raft-replicated object store every skiff server runs.
//!
//! Writes are proposed to Raft (openraft 0.9), committed by a quorum of servers, and applied in
//! log order to an in-memory map of objects that sled keeps durable. Reads are served from that
//! map; watches from a per-resource history of changes.
//!
//! ## Layout
//! | module | job | Raft's contract it fulfils |
//! |---|---|---|
//! | [`command`] | what a Raft entry carries (proposals of create/update/delete) and what apply answers | `C::D`, `C::R` |
//! | [`objects`] | the deterministic apply: revisions, compare-and-set, generation | — |
//! | [`log_store`] | the log and the vote in sled, fsynced | `RaftLogStorage` |
//! | [`state_machine`] | objects in memory + sled, snapshots | `RaftStateMachine`, `RaftSnapshotBuilder` |
//! | [`network`] | calling peers over gRPC (tonic) | `RaftNetworkFactory`, `RaftNetwork` |
//! | [`service`] | answering peers; committing followers' forwarded writes | the server side of `RaftNetwork` |
//! | [`proposer`] | coalescing concurrent writes into one entry | — |
//! | [`watch`] | history and live streams of changes, 410 when too old | — |
//! | [`store`] | [`Store`], the handle the API server uses | `Raft` |
//! | `durable` | fdatasync for sled, whose `flush()` is not one | durability of append/vote |
//! | `membership` | joins and removals one at a time, retried while openraft is busy; learners promoted once caught up | `change_membership`, `add_learner` |

#![allow(clippy::result_large_err)] // openraft's error types are large by design; they are its API.

pub mod command;
mod durable;
pub mod log_store;
mod membership;
pub mod network;
pub mod objects;
pub mod proposer;
pub mod seal;
pub mod service;
pub mod state_machine;
pub mod store;
pub mod watch;

/// Code generated from `proto/raft.proto`.
pub mod pb {
    tonic::include_proto!("skiff.raft.v1");
}

use std::io::Cursor;

use serde::{Deserialize, Serialize};

pub use command::{
    key_prefix, key_resource, object_key, revision_of, Op, OpError, Proposal, ProposalResult,
};
pub use network::PeerTransport;
pub use objects::{ChangeEvent, EventKind};
pub use store::{open_storage, MemberInfo, RaftStatus, Store, StoreConfig};
pub use watch::{Subscription, WatchError};

/// Raft member ids.
pub type NodeId = u64;

/// What the cluster knows about a member besides its id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The URL of the member's Raft service (its API server's HTTPS address).
    pub addr: String,
    /// A human-readable name (the host name unless set).
    pub name: String,
}

openraft::declare_raft_types!(
    /// The types skiff plugs into openraft.
    pub TypeConfig:
        D = command::Request,
        R = command::Response,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The address of the member `metrics` name as leader, if both are known.
pub(crate) fn leader_addr(
    metrics: &openraft::RaftMetrics<NodeId, Member>,
) -> Option<(NodeId, String)> {
    let leader = metrics.current_leader?;
    let node = metrics.membership_config.membership().get_node(&leader)?;
    Some((leader, node.addr.clone()))
}

/// Why the store could not do what was asked (as opposed to `apply` refusing an op).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No leader, or not caught up: try again later (503).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The outcome of a write is unknown (504).
    #[error("timeout: {0}")]
    Timeout(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("raft error: {0}")]
    Raft(String),
    #[error("membership change failed: {0}")]
    Membership(String),
    /// Another membership change is still in progress: ask again (409).
    #[error("another membership change is in progress: {0}")]
    MembershipBusy(String),
    #[error("the store is shutting down")]
    ShuttingDown,
}

impl From<openraft::StorageError<NodeId>> for StoreError {
    fn from(e: openraft::StorageError<NodeId>) -> Self {
        StoreError::Storage(e.to_string())
    }
}

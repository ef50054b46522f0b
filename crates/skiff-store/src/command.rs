//! What clients propose and what `apply` answers.
//!
//! A Raft entry carries a [`Request`]: a list of independent [`Proposal`]s that the proposer
//! coalesced from concurrent API calls. Each proposal is either one operation or an atomic group
//! (the scheduler's many bindings, a controller's batch) that succeeds or fails as a whole.
//!
//! Everything non-deterministic (uid, creationTimestamp) is decided by the API server *before*
//! proposing. `apply` only decides what must be identical on every member: whether a precondition
//! holds, the revision (`resourceVersion`) and the `generation`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One change to one object. `key` is `{qualified resource}/{namespace}/{name}`, see [`object_key`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "op")]
pub enum Op {
    /// Store a new object; fails with [`OpError::AlreadyExists`] if the key is taken.
    Create { key: String, object: Value },
    /// Replace an existing object. With `expected_revision`, fails with [`OpError::Conflict`]
    /// unless the stored object is still at that revision (optimistic concurrency).
    Update {
        key: String,
        object: Value,
        expected_revision: Option<u64>,
    },
    /// Remove an object, optionally only if it still has this uid and/or revision.
    Delete {
        key: String,
        expected_uid: Option<String>,
        expected_revision: Option<u64>,
    },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// A unit that succeeds or fails on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Proposal {
    One(Op),
    /// All operations apply, in order, or none does.
    Atomic(Vec<Op>),
}

/// The application data of one Raft entry.
///
/// The proposals are shared, not owned: openraft clones an entry's payload several times on its
/// way (the proposer keeps one to retry on another leader, the log keeps recent entries
/// decoded, each read for applying or replicating hands out a copy), and deep copies of
/// hundreds of JSON objects, and dropping them, were ~16 % of a busy leader's CPU samples in the
/// scheduler benchmark. `apply` only reads them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub proposals: Arc<Vec<Proposal>>,
}

impl Request {
    pub fn new(proposals: Vec<Proposal>) -> Request {
        Request {
            proposals: Arc::new(proposals),
        }
    }
}

/// What `apply` answers for one Raft entry: one result per proposal, in order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub results: Vec<ProposalResult>,
}

/// The stored objects a proposal produced (one per op; for a delete, the object as it was
/// removed, carrying the deletion's revision), or why it was refused.
pub type ProposalResult = Result<Vec<Value>, OpError>;

/// Why `apply` refused an operation. Deterministic: every member refuses the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase", tag = "error")]
pub enum OpError {
    #[error("{key} not found")]
    NotFound { key: String },
    #[error("{key} already exists")]
    AlreadyExists { key: String },
    /// The object changed since the client read it.
    #[error("{key} is at revision {current}, not {expected}")]
    Conflict {
        key: String,
        expected: u64,
        current: u64,
    },
    /// A delete precondition on the uid did not hold.
    #[error("{key}: precondition failed: uid in precondition {expected}, uid in object {current}")]
    UidMismatch {
        key: String,
        expected: String,
        current: String,
    },
    /// Another operation in the same atomic proposal failed, so this one was not applied.
    #[error("operation {index} of the atomic proposal failed: {cause}")]
    AtomicAborted { index: usize, cause: Box<OpError> },
    #[error("malformed operation on {key}: {reason}")]
    Malformed { key: String, reason: String },
}

/// The store key of an object: `pods/default/web-1`, `deployments.apps/default/web`,
/// `namespaces//default` (cluster-scoped objects have an empty namespace segment).
///
/// `qualified_resource` is `resource` or `resource.group`; names never contain `/` (validation
/// guarantees it), so keys sort by resource, then namespace, then name, and a prefix scan lists
/// one resource in one namespace.
pub fn object_key(qualified_resource: &str, namespace: &str, name: &str) -> String {
    format!("{qualified_resource}/{namespace}/{name}")
}

/// The prefix shared by every key of a resource, optionally within one namespace.
pub fn key_prefix(qualified_resource: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("{qualified_resource}/{ns}/"),
        None => format!("{qualified_resource}/"),
    }
}

/// The qualified resource a key belongs to (`pods` from `pods/default/web-1`).
pub fn key_resource(key: &str) -> &str {
    key.split('/').next().unwrap_or(key)
}

/// Reads `metadata.resourceVersion` as the revision number it is in skiff.
pub fn revision_of(object: &Value) -> Option<u64> {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
}

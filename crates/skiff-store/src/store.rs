//! [`Store`]: the handle the rest of skiff uses — propose writes, read, watch, manage members.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::{Config, Raft, ServerState, SnapshotPolicy};
use serde::Serialize;
use serde_json::Value;

use crate::command::{key_resource, Op, Proposal, ProposalResult};
use crate::durable::DurableDb;
use crate::log_store::LogStore;
use crate::network::{PeerTransport, MAX_MESSAGE_BYTES};
use crate::proposer::Proposer;
use crate::seal::Sealer;
use crate::service::{ForwardError, RaftService};
use crate::state_machine::{Shared, StateMachine};
use crate::watch::{Subscription, WatchError, DEFAULT_HISTORY};
use crate::{Member, NodeId, StoreError, TypeConfig};

/// How to open a member of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// This member's Raft id, unique in the cluster for its whole life.
    pub id: NodeId,
    /// A name people recognise (the host name by default), shown by `skiff members`.
    pub name: String,
    /// The URL peers reach this member's Raft service at (`https://10.0.0.5:6443`).
    pub addr: String,
    /// Where the sled database and snapshots live.
    pub dir: PathBuf,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and compact the log) after this many entries.
    pub snapshot_every: u64,
    /// Events kept per resource for watches that resume.
    pub watch_history: usize,
    /// How Secrets are sealed at rest (see [`crate::seal`]); none by default.
    pub sealer: Arc<Sealer>,
}

impl StoreConfig {
    /// 50 ms heartbeats and a 300–400 ms election timeout. openraft's followers wait out the
    /// leader lease (`election_timeout_max`) and then their own timeout before they elect, so
    /// a dead leader is replaced after 700–800 ms and writes go on within a second (issue 14's
    /// target, etcd's default). DESIGN.md's first choice, 100 ms / 400–500 ms, measured
    /// 0.94–1.15 s (docs/benchmarks.md); a timeout of six to eight heartbeats still rides out
    /// a lost heartbeat or a busy moment without an election.
    pub fn new(id: NodeId, name: &str, addr: &str, dir: PathBuf) -> StoreConfig {
        StoreConfig {
            id,
            name: name.into(),
            addr: addr.into(),
            dir,
            heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 400,
            snapshot_every: 5000,
            watch_history: DEFAULT_HISTORY,
            sealer: Sealer::identity(),
        }
    }
}

/// One member of the cluster as `skiff members` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MemberInfo {
    pub id: NodeId,
    pub name: String,
    pub addr: String,
    /// `voter` or `learner`.
    pub role: &'static str,
    pub leader: bool,
}

/// The numbers `/metrics` and `/readyz` report.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RaftStatus {
    pub id: NodeId,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub is_leader: bool,
    pub commit_index: u64,
    pub last_applied: u64,
    pub last_log_index: u64,
    pub revision: u64,
    pub watchers: usize,
}

/// Opens the log store and state machine in `dir` without starting Raft (the storage
/// conformance suite drives them directly; [`Store::open`] uses it too).
pub fn open_storage(
    dir: &std::path::Path,
    watch_history: usize,
) -> Result<(LogStore, StateMachine), StoreError> {
    open_sealed_storage(dir, watch_history, Sealer::identity())
}

/// [`open_storage`] with Secrets sealed at rest by `sealer`.
pub fn open_sealed_storage(
    dir: &std::path::Path,
    watch_history: usize,
    sealer: Arc<Sealer>,
) -> Result<(LogStore, StateMachine), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Storage(e.to_string()))?;
    // The store holds every object, Secrets included: only the server's user may read it.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| StoreError::Storage(e.to_string()))?;
    let durable =
        Arc::new(DurableDb::open(&dir.join("db")).map_err(|e| StoreError::Storage(e.to_string()))?);
    let log = LogStore::open(durable.clone())?;
    let state_machine = StateMachine::open(durable, dir, watch_history, sealer)?;
    Ok((log, state_machine))
}

/// A handle on this member's store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    config: StoreConfig,
    raft: Raft<TypeConfig>,
    shared: Arc<Shared>,
    log: LogStore,
    proposer: Proposer,
    transport: PeerTransport,
    membership: crate::membership::MembershipChanges,
    /// Whether this member had never been part of a cluster when it was opened.
    pristine: bool,
}

impl Store {
    /// What seals Secrets in the log, the state and snapshots (its keys can be replaced).
    pub fn sealer(&self) -> &Arc<Sealer> {
        &self.inner.config.sealer
    }

    /// Opens the member's storage and starts its Raft node. A pristine member does nothing until
    /// [`Store::initialize`] (first server) or a leader adds it (joining server).
    pub async fn open(config: StoreConfig, transport: PeerTransport) -> Result<Store, StoreError> {
        let (log, state_machine) =
            open_sealed_storage(&config.dir, config.watch_history, config.sealer.clone())?;
        let pristine = log.is_pristine()?;
        let shared = state_machine.shared();
        let raft_config = Config {
            cluster_name: "skiff".into(),
            heartbeat_interval: config.heartbeat_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            // An entry is at most ~1 MiB of coalesced proposals plus one object (≤ 1.5 MiB), so
            // 16 of them stay well under the 64 MiB gRPC message cap.
            max_payload_entries: 16,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: (config.snapshot_every / 5).max(10),
            snapshot_max_chunk_size: (MAX_MESSAGE_BYTES / 4) as u64,
            install_snapshot_timeout: 2000,
            ..Default::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| StoreError::Raft(e.to_string()))?,
        );
        let raft = Raft::new(
            config.id,
            raft_config,
            transport.clone(),
            log.clone(),
            state_machine,
        )
        .await
        .map_err(|e| StoreError::Raft(e.to_string()))?;
        let proposer = Proposer::spawn(raft.clone(), transport.clone(), config.id);
        Ok(Store {
            inner: Arc::new(Inner {
                config,
                raft,
                shared,
                log,
                proposer,
                transport,
                membership: Default::default(),
                pristine,
            }),
        })
    }

    pub fn id(&self) -> NodeId {
        self.inner.config.id
    }

    /// Whether this member had no Raft state at all when opened.
    pub fn is_pristine(&self) -> bool {
        self.inner.pristine
    }

    /// Makes this member a one-member cluster. Only for the very first server.
    pub async fn initialize(&self) -> Result<(), StoreError> {
        let me = Member {
            addr: self.inner.config.addr.clone(),
            name: self.inner.config.name.clone(),
        };
        let members = BTreeMap::from([(self.id(), me)]);
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))
    }

    /// The gRPC service peers call; the API server mounts it on its HTTPS port.
    pub fn raft_service(
        &self,
    ) -> tonic::service::interceptor::InterceptedService<
        crate::pb::raft_transport_server::RaftTransportServer<RaftService>,
        crate::service::PeerAuth,
    > {
        let secret = self.inner.transport.secret();
        let server = crate::pb::raft_transport_server::RaftTransportServer::new(RaftService::new(
            self.inner.raft.clone(),
            secret,
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        // The secret is checked on the headers, before a body is read.
        tonic::service::interceptor::InterceptedService::new(
            server,
            crate::service::PeerAuth::new(secret),
        )
    }

    /// Commits a proposal. The outer error is about the store (no leader, shutting down); the
    /// inner result is `apply`'s verdict (not found, conflict, ...).
    pub async fn propose(&self, proposal: Proposal) -> Result<ProposalResult, StoreError> {
        let proposal = self.inner.config.sealer.seal_proposal(proposal);
        self.inner.proposer.propose(proposal).await
    }

    /// Commits one op and returns the object it produced.
    pub async fn propose_one(&self, op: Op) -> Result<Result<Value, crate::OpError>, StoreError> {
        let result = self.propose(Proposal::One(op)).await?;
        Ok(result.map(|mut objects| objects.pop().unwrap_or(Value::Null)))
    }

    /// Waits until this member has applied everything committed before the call: a read after
    /// this sees every write acknowledged before it (Raft's read index).
    pub async fn linearize(&self) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let metrics = self.inner.raft.metrics().borrow().clone();
            match metrics.current_leader {
                Some(leader) if leader == self.id() => {
                    match self.inner.raft.ensure_linearizable().await {
                        Ok(_) => return Ok(()),
                        Err(e) if tokio::time::Instant::now() >= deadline => {
                            return Err(StoreError::Unavailable(e.to_string()))
                        }
                        Err(_) => {}
                    }
                }
                Some(_) => {
                    if let Some((_, addr)) = crate::leader_addr(&metrics) {
                        match self
                            .inner
                            .transport
                            .read_index(&addr, Duration::from_secs(5))
                            .await
                        {
                            Ok(Ok(index)) => {
                                self.inner
                                    .raft
                                    .wait(Some(Duration::from_secs(5)))
                                    .applied_index_at_least(Some(index), "read index")
                                    .await
                                    .map_err(|e| StoreError::Timeout(e.to_string()))?;
                                return Ok(());
                            }
                            Ok(Err(ForwardError::NotLeader { .. })) => {}
                            Ok(Err(ForwardError::Failed(m))) => {
                                return Err(StoreError::Unavailable(m))
                            }
                            // A read index changes nothing, so asking again (perhaps a new
                            // leader) is always safe.
                            Err(e) if tokio::time::Instant::now() >= deadline => {
                                return Err(StoreError::Unavailable(e.to_string()))
                            }
                            Err(_) => {}
                        }
                    }
                }
                None => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError::Unavailable("no Raft leader elected".into()));
            }
            let mut changes = self.inner.raft.metrics();
            let _ = tokio::time::timeout(Duration::from_millis(100), changes.changed()).await;
        }
    }

    /// The object at `key` in this member's applied state.
    pub fn get(&self, key: &str) -> Option<Arc<Value>> {
        self.inner.shared.read().objects.get(key).cloned()
    }

    /// Every object under `prefix` and the revision the list is consistent at.
    pub fn list(&self, prefix: &str) -> (Vec<Arc<Value>>, u64) {
        let state = self.inner.shared.read();
        let items = state.objects.scan(prefix).map(|(_, v)| v.clone()).collect();
        (items, state.objects.revision())
    }

    /// Lists `prefix` and subscribes to changes of its resource after that list, with no gap.
    pub fn list_and_watch(
        &self,
        prefix: &str,
    ) -> Result<(Vec<Arc<Value>>, u64, Subscription), WatchError> {
        let state = self.inner.shared.read();
        let revision = state.objects.revision();
        let items = state.objects.scan(prefix).map(|(_, v)| v.clone()).collect();
        let subscription = self
            .inner
            .shared
            .hub
            .subscribe(key_resource(prefix), revision)?;
        Ok((items, revision, subscription))
    }

    /// Subscribes to changes of `resource` after revision `after`.
    pub fn watch(&self, resource: &str, after: u64) -> Result<Subscription, WatchError> {
        let _state = self.inner.shared.read();
        self.inner.shared.hub.subscribe(resource, after)
    }

    /// The current revision of this member's applied state.
    pub fn revision(&self) -> u64 {
        self.inner.shared.read().objects.revision()
    }

    pub fn status(&self) -> RaftStatus {
        let metrics = self.inner.raft.metrics().borrow().clone();
        RaftStatus {
            id: self.id(),
            term: metrics.current_term,
            leader: known_leader(&metrics),
            is_leader: metrics.state == ServerState::Leader,
            commit_index: self.inner.log.committed_index(),
            last_applied: metrics.last_applied.map(|l| l.index).unwrap_or(0),
            last_log_index: metrics.last_log_index.unwrap_or(0),
            revision: self.revision(),
            watchers: self.inner.shared.hub.watcher_count(),
        }
    }

    /// Why this member's Raft core stopped, if it stopped on its own (a storage error such as a
    /// full disk, a panic) rather than by [`Store::shutdown`]. Such a core never serves again.
    pub fn fatal_error(&self) -> Option<String> {
        match &self.inner.raft.metrics().borrow().running_state {
            Ok(()) | Err(openraft::error::Fatal::Stopped) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// Waits until the Raft core stops on its own and returns why (see [`Store::fatal_error`]).
    pub async fn stopped_by_fault(&self) -> String {
        let mut metrics = self.inner.raft.metrics();
        loop {
            if let Some(e) = self.fatal_error() {
                return e;
            }
            if metrics.changed().await.is_err() {
                // The core is gone without a recorded error: wait forever (a shutdown).
                return std::future::pending().await;
            }
        }
    }

    /// Ready to serve: a leader is known and this member has applied what it knows is committed.
    pub fn is_ready(&self) -> bool {
        let status = self.status();
        status.leader.is_some() && status.last_applied >= status.commit_index
    }

    /// The current members, voters first.
    pub fn members(&self) -> Vec<MemberInfo> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let mut members: Vec<MemberInfo> = membership
            .nodes()
            .map(|(id, node)| MemberInfo {
                id: *id,
                name: node.name.clone(),
                addr: node.addr.clone(),
                role: if voters.contains(id) {
                    "voter"
                } else {
                    "learner"
                },
                leader: known_leader(&metrics) == Some(*id),
            })
            .collect();
        members.sort_by_key(|m| (m.role != "voter", m.id));
        members
    }

    /// The leader's id and address, if one is known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        crate::leader_addr(&self.inner.raft.metrics().borrow())
    }

    /// The id the next joining member gets: one more than any id the cluster ever had (kept in
    /// the replicated state, so a removed member's id is never handed out again).
    pub fn next_member_id(&self) -> NodeId {
        self.inner.shared.read().max_member_id + 1
    }

    /// Adds a member: first as a learner, which waits until it has caught up (by log or
    /// snapshot), then as a voter. Must run on the leader; changes queue behind each other
    /// (see [`crate::membership`]).
    pub async fn add_member(&self, id: NodeId, name: &str, addr: &str) -> Result<(), StoreError> {
        let node = Member {
            addr: addr.into(),
            name: name.into(),
        };
        self.inner
            .membership
            .add_voter(&self.inner.raft, id, node)
            .await
    }

    /// Removes a member from the cluster (voter or learner). Must run on the leader.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), StoreError> {
        self.inner.membership.remove(&self.inner.raft, id).await
    }

    /// On the leader, makes learners that have caught up voters (joins cut short by a crash or a
    /// failover); a no-op elsewhere. Returns the ids promoted.
    pub async fn promote_caught_up_learners(&self) -> Result<Vec<NodeId>, StoreError> {
        self.inner
            .membership
            .promote_caught_up_learners(&self.inner.raft)
            .await
    }

    /// How many voters may fail with writes still going through, and why not more: `None`
    /// when the cluster survives the loss of any one server (or is a single server by choice).
    pub fn fault_tolerance_warning(&self) -> Option<String> {
        let members = self.members();
        let voters = members.iter().filter(|m| m.role == "voter").count();
        let learners = members.len() - voters;
        crate::membership::fault_tolerance_warning(voters, learners)
    }

    /// Waits until some member is known to lead, or `timeout` passes.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, StoreError> {
        let metrics = self
            .inner
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        metrics
            .current_leader
            .ok_or_else(|| StoreError::Unavailable("no leader".into()))
    }

    /// Asks openraft to build a snapshot now (tests and operators; normally it is automatic).
    pub async fn trigger_snapshot(&self) -> Result<(), StoreError> {
        self.inner
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))
    }

    /// Stops the Raft node. In-flight writes fail with `ShuttingDown`.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| StoreError::Raft(e.to_string()))
    }
}

/// How long a leader may go without hearing from a quorum before it stops calling itself leader
/// (followers elect a new one after about a second: the lease plus an election timeout).
const LEADER_SILENCE_MS: u64 = 1_000;

/// The leader as this member knows it. openraft 0.9 leaders do not step down on their own, so
/// a leader cut off by a partition would go on naming itself; one that has not heard from a
/// quorum for [`LEADER_SILENCE_MS`] names no leader instead (its writes fail anyway), so
/// `skiff members list` and `/readyz` on it tell the truth.
fn known_leader(metrics: &openraft::RaftMetrics<NodeId, crate::Member>) -> Option<NodeId> {
    let leader = metrics.current_leader?;
    // A member names itself only while it leads: a restarted former leader reads its own old
    // vote until the new leader's first heartbeat.
    if leader == metrics.id && metrics.state != ServerState::Leader {
        return None;
    }
    let alone = metrics.membership_config.membership().voter_ids().count() <= 1;
    if metrics.state == ServerState::Leader && !alone {
        match metrics.millis_since_quorum_ack {
            Some(ms) if ms <= LEADER_SILENCE_MS => {}
            _ => return None,
        }
    }
    Some(leader)
}

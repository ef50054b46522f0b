//! The replicated state machine: openraft's `RaftStateMachine` over [`Objects`], kept in memory
//! for reads and in sled for restarts.
//!
//! | Raft's contract | here |
//! |---|---|
//! | `apply` answers every entry, records last-applied and membership | one sled batch per call, atomic with the object writes |
//! | `build_snapshot` runs beside `apply` and needs a consistent view | a copy of the map of `Arc`s taken under the read lock (pointer copies, no JSON) |
//! | `install_snapshot` replaces the state; `get_current_snapshot` then returns it | rewrite the sled tree, save the snapshot files, reset the watch history |
//! | membership persisted in `apply` and `install_snapshot` | key `m/membership` |
//!
//! A snapshot is one file, `DIR/snapshot/snapshot.json`: a line with openraft's `SnapshotMeta`,
//! then the revision and every object. Written to a temporary name, fsynced and renamed, so a
//! crash leaves either the old snapshot or the new one.

use std::collections::BTreeMap;
use std::io::{Cursor, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::command::Response;
use crate::durable::DurableDb;
use crate::log_store::io_error;
use crate::objects::{Changes, Objects};
use crate::seal::Sealer;
use crate::watch::WatchHub;
use crate::{Member, NodeId, TypeConfig};

const LAST_APPLIED: &[u8] = b"m/last_applied";
const MEMBERSHIP: &[u8] = b"m/membership";
const REVISION: &[u8] = b"m/revision";
const MAX_MEMBER_ID: &[u8] = b"m/max_member_id";
const OBJECT_PREFIX: &str = "o/";
/// `<meta JSON>\n<data JSON>` (compact JSON has no newline, so the first one separates them).
const SNAPSHOT_FILE: &str = "snapshot.json";

/// The state every member applies entries to.
#[derive(Debug, Default, Clone)]
pub struct AppliedState {
    pub objects: Objects,
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, Member>,
    /// The highest member id the cluster ever had; new members get higher ones.
    pub max_member_id: NodeId,
}

/// What the state machine shares with readers (the API server) and watchers.
pub struct Shared {
    state: RwLock<AppliedState>,
    pub hub: WatchHub,
}

impl Shared {
    pub fn read(&self) -> RwLockReadGuard<'_, AppliedState> {
        // Writers only hold this lock for in-memory map updates that cannot panic midway
        // through a logical change, so a poisoned lock still guards consistent data.
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, AppliedState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The snapshot payload: every object and the revision counter.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    revision: u64,
    #[serde(default)]
    max_member_id: NodeId,
    objects: Vec<(String, Value)>,
}

pub struct StateMachine {
    shared: Arc<Shared>,
    durable: Arc<DurableDb>,
    tree: sled::Tree,
    snapshots: Arc<SnapshotFiles>,
    /// Secrets go to disk sealed (see [`crate::seal`]).
    sealer: Arc<Sealer>,
}

/// The snapshot file, guarded: openraft builds snapshots in their own task while the state
/// machine may install one received from the leader, and only the newest may end up on disk.
pub struct SnapshotFiles {
    dir: PathBuf,
    /// The last log id of the snapshot on disk.
    saved: std::sync::Mutex<Option<LogId<NodeId>>>,
}

impl StateMachine {
    /// Loads the state machine from sled (empty on first start).
    pub fn open(
        durable: Arc<DurableDb>,
        dir: &Path,
        history: usize,
        sealer: Arc<Sealer>,
    ) -> Result<StateMachine, StorageError<NodeId>> {
        let tree = durable.db.open_tree("state").map_err(io_error)?;
        let mut map = BTreeMap::new();
        for item in tree.scan_prefix(OBJECT_PREFIX) {
            let (key, bytes) = item.map_err(io_error)?;
            let key = String::from_utf8_lossy(&key[OBJECT_PREFIX.len()..]).into_owned();
            let value: Value = serde_json::from_slice(&bytes).map_err(io_error)?;
            let value = sealer.open(&key, &value).map_err(io_error)?;
            map.insert(key, Arc::new(value));
        }
        let get = |k: &[u8]| -> Result<Option<sled::IVec>, StorageError<NodeId>> {
            tree.get(k).map_err(io_error)
        };
        let revision: u64 = match get(REVISION)? {
            Some(b) => serde_json::from_slice(&b).map_err(io_error)?,
            None => 0,
        };
        let last_applied = match get(LAST_APPLIED)? {
            Some(b) => serde_json::from_slice(&b).map_err(io_error)?,
            None => None,
        };
        let membership = match get(MEMBERSHIP)? {
            Some(b) => serde_json::from_slice(&b).map_err(io_error)?,
            None => StoredMembership::default(),
        };
        let max_member_id = match get(MAX_MEMBER_ID)? {
            Some(b) => serde_json::from_slice(&b).map_err(io_error)?,
            None => 0,
        };
        let state = AppliedState {
            objects: Objects::from_parts(map, revision),
            last_applied,
            membership,
            max_member_id,
        };
        let snapshot_dir = dir.join("snapshot");
        std::fs::create_dir_all(&snapshot_dir).map_err(io_error)?;
        let saved = load_snapshot(&snapshot_dir)?.and_then(|s| s.meta.last_log_id);
        Ok(StateMachine {
            shared: Arc::new(Shared {
                state: RwLock::new(state),
                hub: WatchHub::new(history, revision),
            }),
            durable,
            tree,
            snapshots: Arc::new(SnapshotFiles {
                dir: snapshot_dir,
                saved: std::sync::Mutex::new(saved),
            }),
            sealer,
        })
    }

    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Replaces the durable copy of the state with `state` (after a snapshot install), in one
    /// atomic sled batch: a crash leaves the old state or the new one, never a mix.
    fn rewrite_tree(&self, state: &AppliedState) -> Result<(), StorageError<NodeId>> {
        let mut batch = sled::Batch::default();
        for key in self.tree.iter().keys() {
            let key = key.map_err(io_error)?;
            let keep = key
                .strip_prefix(OBJECT_PREFIX.as_bytes())
                .and_then(|k| std::str::from_utf8(k).ok())
                .is_some_and(|k| state.objects.get(k).is_some());
            if !keep {
                batch.remove(key);
            }
        }
        for (key, object) in state.objects.iter() {
            batch.insert(
                format!("{OBJECT_PREFIX}{key}").as_bytes(),
                serde_json::to_vec(&self.sealer.seal(key, object)).map_err(io_error)?,
            );
        }
        put_meta(&mut batch, state)?;
        self.tree.apply_batch(batch).map_err(io_error)?;
        self.durable.sync().map_err(io_error)
    }
}

fn put_meta(batch: &mut sled::Batch, state: &AppliedState) -> Result<(), StorageError<NodeId>> {
    batch.insert(
        LAST_APPLIED,
        serde_json::to_vec(&state.last_applied).map_err(io_error)?,
    );
    batch.insert(
        MEMBERSHIP,
        serde_json::to_vec(&state.membership).map_err(io_error)?,
    );
    batch.insert(
        REVISION,
        serde_json::to_vec(&state.objects.revision()).map_err(io_error)?,
    );
    Ok(())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Member>), StorageError<NodeId>>
    {
        let state = self.shared.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let mut batch = sled::Batch::default();
        let mut changes = Changes::default();
        // Held until the events are published, so a reader that lists under the read lock and
        // then subscribes sees either none or all of this call's changes (see watch.rs).
        let mut state = self.shared.write();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(Response::default()),
                EntryPayload::Normal(request) => {
                    let mut results = Vec::with_capacity(request.proposals.len());
                    for proposal in request.proposals.iter() {
                        // Secrets arrive sealed from the log; memory holds them open.
                        let result = match self.sealer.open_proposal(proposal).map_err(io_error)? {
                            Some(opened) => state.objects.apply_proposal(&opened, &mut changes),
                            None => state.objects.apply_proposal(proposal, &mut changes),
                        };
                        results.push(result);
                    }
                    responses.push(Response { results });
                }
                EntryPayload::Membership(membership) => {
                    let highest = membership.nodes().map(|(id, _)| *id).max().unwrap_or(0);
                    state.max_member_id = state.max_member_id.max(highest);
                    state.membership = StoredMembership::new(Some(entry.log_id), membership);
                    responses.push(Response::default());
                }
            }
        }
        for event in &changes.events {
            let key = format!("{OBJECT_PREFIX}{}", event.key);
            match event.kind {
                crate::EventKind::Deleted => batch.remove(key.as_bytes()),
                _ => {
                    let stored = self.sealer.seal(&event.key, &event.object);
                    let bytes = serde_json::to_vec(&stored).map_err(io_error)?;
                    // What goes to disk is what watchers send, unless it is sealed: encoded
                    // once for both.
                    if matches!(stored, std::borrow::Cow::Borrowed(_)) {
                        let _ = event.encoded.set(bytes.clone());
                    }
                    batch.insert(key.as_bytes(), bytes)
                }
            }
        }
        put_meta(&mut batch, &state)?;
        // Not synced here: the entries are already durable in the log, and the last-applied id
        // written in the same atomic batch tells a restarted member where to resume applying.
        self.tree.apply_batch(batch).map_err(io_error)?;
        self.shared.hub.publish(changes.events);
        drop(state);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            view: self.shared.read().clone(),
            durable: self.durable.clone(),
            snapshots: self.snapshots.clone(),
            sealer: self.sealer.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = snapshot.into_inner();
        let data: SnapshotData = serde_json::from_slice(&bytes).map_err(io_error)?;
        let mut map = BTreeMap::new();
        for (key, value) in data.objects {
            let value = self.sealer.open(&key, &value).map_err(io_error)?;
            map.insert(key, Arc::new(value));
        }
        let new_state = AppliedState {
            objects: Objects::from_parts(map, data.revision),
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            max_member_id: data.max_member_id,
        };
        // The snapshot file first: if we crash before the state is rewritten, a restart finds
        // an older state and a newer snapshot, which openraft installs again.
        self.snapshots.save(meta, &bytes)?;
        self.rewrite_tree(&new_state)?;
        let mut state = self.shared.write();
        *state = new_state;
        self.shared.hub.reset(data.revision);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        load_snapshot(&self.snapshots.dir)
    }
}

/// Builds a snapshot from a copy of the state taken when openraft asked for a builder.
pub struct SnapshotBuilder {
    view: AppliedState,
    durable: Arc<DurableDb>,
    snapshots: Arc<SnapshotFiles>,
    sealer: Arc<Sealer>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data = SnapshotData {
            revision: self.view.objects.revision(),
            max_member_id: self.view.max_member_id,
            objects: self
                .view
                .objects
                .iter()
                .map(|(k, v)| (k.clone(), self.sealer.seal(k, v).into_owned()))
                .collect(),
        };
        let bytes = serde_json::to_vec(&data).map_err(io_error)?;
        let last = self.view.last_applied;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.view.membership.clone(),
            snapshot_id: format!(
                "{}-{}-{}",
                last.map(|l| l.leader_id.term).unwrap_or(0),
                last.map(|l| l.index).unwrap_or(0),
                data.revision
            ),
        };
        // openraft purges the log up to this snapshot next; make the state machine's own copy
        // durable first so a restart never finds both the log and the state short.
        self.durable.sync().map_err(io_error)?;
        self.snapshots.save(&meta, &bytes)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl SnapshotFiles {
    /// Saves a snapshot unless a newer one is already on disk.
    fn save(
        &self,
        meta: &SnapshotMeta<NodeId, Member>,
        bytes: &[u8],
    ) -> Result<(), StorageError<NodeId>> {
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        if saved.is_some() && *saved >= meta.last_log_id {
            return Ok(());
        }
        // One file, one rename: the meta line and the data it describes can never disagree.
        let mut file = serde_json::to_vec(meta).map_err(io_error)?;
        file.push(b'\n');
        file.extend_from_slice(bytes);
        let tmp = self
            .dir
            .join(format!("{SNAPSHOT_FILE}.{}.tmp", meta.snapshot_id));
        // Mode 0600: a snapshot holds every object, Secrets included.
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_error)?;
        out.write_all(&file).map_err(io_error)?;
        out.sync_all().map_err(io_error)?;
        std::fs::rename(&tmp, self.dir.join(SNAPSHOT_FILE)).map_err(io_error)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error)?;
        *saved = meta.last_log_id;
        Ok(())
    }
}

fn load_snapshot(dir: &Path) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
    let path = dir.join(SNAPSHOT_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let file = std::fs::read(path).map_err(io_error)?;
    let newline = file.iter().position(|&b| b == b'\n').unwrap_or(file.len());
    let meta: SnapshotMeta<NodeId, Member> =
        serde_json::from_slice(&file[..newline]).map_err(io_error)?;
    let bytes = file.get(newline + 1..).unwrap_or_default().to_vec();
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(Cursor::new(bytes)),
    }))
}

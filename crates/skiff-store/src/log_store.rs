//! Raft's log and vote, in sled: openraft's `RaftLogStorage` contract.
//!
//! | Raft's contract | here |
//! |---|---|
//! | `save_vote` durable before returning | insert + [`DurableDb::sync`] |
//! | `append`: readable on return, `callback` once on disk | insert all and return; the flusher thread syncs, then calls back |
//! | `truncate(id)` removes `[id.index, ∞)` | range delete + sync |
//! | `purge(id)` removes `[0, id.index]`, remembers `id` | record last purged, range delete |
//! | no holes | entries are only appended at `last + 1` or truncated from the end |
//!
//! ## The flusher
//! An fsync takes 0.1–10 ms. Done inside `append` it would block a runtime worker and the Raft
//! core behind it (the leader could not send entries to followers meanwhile). Instead `append`
//! hands its callback to one flusher thread, which takes every callback queued so far, syncs
//! once for all of them (group commit), and calls them back in the order they came.
//!
//! Keys of the `raft_log` tree are big-endian log indexes, so sled's byte order is log order and
//! range scans come out sorted.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};

use crate::durable::DurableDb;
use crate::{NodeId, TypeConfig};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// The Raft log in sled. Cloning gives another handle on the same log (openraft's log readers).
#[derive(Clone)]
pub struct LogStore {
    durable: Arc<DurableDb>,
    log: sled::Tree,
    meta: sled::Tree,
    /// The last committed index openraft told us, for metrics and readiness (0 = none).
    committed: Arc<AtomicU64>,
    /// Appends waiting for the flusher thread to make them durable.
    flusher: std::sync::mpsc::Sender<LogFlushed<TypeConfig>>,
}

/// Syncs for every queued append at once, then calls them back in order. Ends when every
/// `LogStore` handle is gone.
fn run_flusher(durable: Arc<DurableDb>, queue: std::sync::mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = queue.recv() {
        let mut waiting = vec![first];
        waiting.extend(queue.try_iter());
        let synced = durable.sync();
        for callback in waiting {
            let result = match &synced {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            callback.log_io_completed(result);
        }
    }
}

pub(crate) fn io_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::write(AnyError::new(&e)).into()
}

fn read_error(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::<NodeId>::read(AnyError::new(&e)).into()
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

impl LogStore {
    pub fn open(durable: Arc<DurableDb>) -> Result<LogStore, StorageError<NodeId>> {
        let log = durable.db.open_tree("raft_log").map_err(io_error)?;
        let meta = durable.db.open_tree("raft_meta").map_err(io_error)?;
        let (flusher, queue) = std::sync::mpsc::channel();
        let flushing = durable.clone();
        std::thread::Builder::new()
            .name("skiff-log-flusher".into())
            .spawn(move || run_flusher(flushing, queue))
            .map_err(io_error)?;
        let store = LogStore {
            durable,
            log,
            meta,
            committed: Arc::new(AtomicU64::new(0)),
            flusher,
        };
        let committed: Option<LogId<NodeId>> = store.get_json(COMMITTED)?;
        store
            .committed
            .store(committed.map(|c| c.index).unwrap_or(0), Ordering::Relaxed);
        Ok(store)
    }

    /// The committed index as last reported by openraft.
    pub fn committed_index(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Whether this member has never been part of a cluster: no vote, no log, nothing purged.
    pub fn is_pristine(&self) -> Result<bool, StorageError<NodeId>> {
        Ok(self.meta.get(VOTE).map_err(read_error)?.is_none()
            && self.log.is_empty()
            && self.meta.get(LAST_PURGED).map_err(read_error)?.is_none())
    }

    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError<NodeId>> {
        match self.meta.get(key).map_err(read_error)? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(read_error),
            None => Ok(None),
        }
    }

    fn put_json<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = serde_json::to_vec(value).map_err(io_error)?;
        self.meta.insert(key, bytes).map_err(io_error)?;
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError<NodeId>> {
        self.durable.sync().map_err(io_error)
    }

    fn remove_range(&self, from: u64, to_inclusive: u64) -> Result<(), StorageError<NodeId>> {
        let mut batch = sled::Batch::default();
        for key in self
            .log
            .range(index_key(from)..=index_key(to_inclusive))
            .keys()
        {
            batch.remove(key.map_err(io_error)?);
        }
        self.log.apply_batch(batch).map_err(io_error)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Some(i),
            Bound::Excluded(&0) => return Ok(Vec::new()),
            Bound::Excluded(&i) => Some(i - 1),
            Bound::Unbounded => None,
        };
        let iter = match end {
            Some(end) if end < start => return Ok(Vec::new()),
            Some(end) => self.log.range(index_key(start)..=index_key(end)),
            None => self.log.range(index_key(start)..),
        };
        let mut entries = Vec::new();
        for item in iter {
            let (_, bytes) = item.map_err(read_error)?;
            entries.push(serde_json::from_slice(&bytes).map_err(read_error)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_json(LAST_PURGED)?;
        let last_log_id = match self.log.last().map_err(read_error)? {
            Some((_, bytes)) => {
                let entry: Entry<TypeConfig> =
                    serde_json::from_slice(&bytes).map_err(read_error)?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put_json(VOTE, vote)?;
        self.sync()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get_json(VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Not synced: openraft re-learns the commit index from the leader after a crash; keeping
        // it only lets a restarted member apply its own log sooner.
        self.put_json(COMMITTED, &committed)?;
        self.committed
            .store(committed.map(|c| c.index).unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        self.get_json(COMMITTED)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(io_error)?;
            batch.insert(&index_key(entry.log_id.index), bytes);
        }
        self.log.apply_batch(batch).map_err(io_error)?;
        // The entries are readable now; openraft hears they are durable only after the fsync.
        if let Err(returned) = self.flusher.send(callback) {
            // The flusher thread is gone (it only stops when every handle is dropped): sync here.
            returned.0.log_io_completed(self.durable.sync());
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.remove_range(log_id.index, u64::MAX)?;
        self.sync()
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Record the purge point first: if we crash half-way, the log state still has no hole
        // below `last_purged`, only entries that should have been gone.
        self.put_json(LAST_PURGED, &log_id)?;
        self.remove_range(0, log_id.index)?;
        self.sync()
    }
}

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
//!
//! ## Recent entries in memory
//! openraft reads every entry back soon after appending it: to apply it, and on a leader to send
//! it to followers. Decoding each from sled's JSON again was ~6 % of a busy leader's CPU, so the
//! last [`RECENT_BYTES`] of appended entries are also kept decoded ([`Recent`]), trimmed by
//! `truncate` and `purge` exactly as the log is. A read the cache cannot answer in full goes to
//! sled.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};

use crate::durable::DurableDb;
use crate::{NodeId, TypeConfig};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// How much of the log (as encoded) [`Recent`] keeps decoded.
const RECENT_BYTES: usize = 32 << 20;

/// The most recently appended entries, decoded, with their encoded sizes: a contiguous run of
/// indexes ending at the last appended one.
#[derive(Default)]
struct Recent {
    entries: BTreeMap<u64, (Entry<TypeConfig>, usize)>,
    bytes: usize,
}

impl Recent {
    fn insert(&mut self, entry: Entry<TypeConfig>, size: usize) {
        let index = entry.log_id.index;
        // An append always follows the last entry (after a truncate, if it rewrites).
        if self
            .entries
            .keys()
            .next_back()
            .is_some_and(|last| index != last + 1)
        {
            self.clear();
        }
        self.entries.insert(index, (entry, size));
        self.bytes += size;
        while self.bytes > RECENT_BYTES {
            let Some((_, (_, size))) = self.entries.pop_first() else {
                break;
            };
            self.bytes -= size;
        }
    }

    /// Drops `[from, ∞)`.
    fn truncate(&mut self, from: u64) {
        for (_, (_, size)) in self.entries.split_off(&from) {
            self.bytes -= size;
        }
    }

    /// Drops `[0, up_to]`.
    fn purge(&mut self, up_to: u64) {
        let kept = self.entries.split_off(&up_to.saturating_add(1));
        for (_, (_, size)) in std::mem::replace(&mut self.entries, kept) {
            self.bytes -= size;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// `[start, end]` (end `None`: to the last), if every one of them is here.
    fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry<TypeConfig>>> {
        let (&first, _) = self.entries.first_key_value()?;
        let (&last, _) = self.entries.last_key_value()?;
        let end = end.unwrap_or(last);
        if start < first || end > last {
            return None;
        }
        Some(
            self.entries
                .range(start..=end)
                .map(|(_, (entry, _))| entry.clone())
                .collect(),
        )
    }
}

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
    /// The last appended entries, decoded (shared by every handle).
    recent: Arc<Mutex<Recent>>,
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
            recent: Arc::default(),
        };
        let committed: Option<LogId<NodeId>> = store.get_json(COMMITTED)?;
        store
            .committed
            .store(committed.map(|c| c.index).unwrap_or(0), Ordering::Relaxed);
        Ok(store)
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
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
        if end.is_some_and(|end| end < start) {
            return Ok(Vec::new());
        }
        if let Some(entries) = self.recent().get(start, end) {
            return Ok(entries);
        }
        let iter = match end {
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
        let mut decoded = Vec::new();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry).map_err(io_error)?;
            let size = bytes.len();
            batch.insert(&index_key(entry.log_id.index), bytes);
            decoded.push((entry, size));
        }
        self.log.apply_batch(batch).map_err(io_error)?;
        let mut recent = self.recent();
        for (entry, size) in decoded {
            recent.insert(entry, size);
        }
        drop(recent);
        // The entries are readable now; openraft hears they are durable only after the fsync.
        if let Err(returned) = self.flusher.send(callback) {
            // The flusher thread is gone (it only stops when every handle is dropped): sync here.
            returned.0.log_io_completed(self.durable.sync());
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.recent().truncate(log_id.index);
        self.remove_range(log_id.index, u64::MAX)?;
        self.sync()
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Record the purge point first: if we crash half-way, the log state still has no hole
        // below `last_purged`, only entries that should have been gone.
        self.put_json(LAST_PURGED, &log_id)?;
        self.recent().purge(log_id.index);
        self.remove_range(0, log_id.index)?;
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(entries: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        entries.map(|e| e.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn recent_entries_follow_the_log() {
        let mut recent = Recent::default();
        for i in 1..=5 {
            recent.insert(entry(i), 10);
        }
        assert_eq!(indexes(recent.get(2, Some(4))), Some(vec![2, 3, 4]));
        assert_eq!(indexes(recent.get(4, None)), Some(vec![4, 5]));
        assert_eq!(
            indexes(recent.get(0, Some(2))),
            None,
            "index 0 was never here"
        );
        assert_eq!(indexes(recent.get(5, Some(6))), None, "nor 6");

        // A conflicting suffix is truncated and rewritten.
        recent.truncate(4);
        assert_eq!(indexes(recent.get(1, None)), Some(vec![1, 2, 3]));
        recent.insert(entry(4), 10);
        assert_eq!(indexes(recent.get(3, None)), Some(vec![3, 4]));

        // Purged entries are gone; a gap (an installed snapshot) starts the cache over.
        recent.purge(2);
        assert_eq!(indexes(recent.get(2, None)), None);
        assert_eq!(indexes(recent.get(3, None)), Some(vec![3, 4]));
        recent.insert(entry(9), 10);
        assert_eq!(indexes(recent.get(3, None)), None);
        assert_eq!(indexes(recent.get(9, None)), Some(vec![9]));
        assert_eq!(recent.bytes, 10);

        // Only RECENT_BYTES are kept: the oldest go first.
        recent.insert(entry(10), RECENT_BYTES - 5);
        assert_eq!(indexes(recent.get(9, None)), None);
        assert_eq!(indexes(recent.get(10, None)), Some(vec![10]));
    }
}

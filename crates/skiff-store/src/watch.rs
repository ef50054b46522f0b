//! The watch hub: recent changes per resource, and live subscriptions to them.
//!
//! Every member applies every entry, so every member has a hub and can serve watches. For each
//! resource the hub keeps a bounded ring of recent [`ChangeEvent`]s and a broadcast channel.
//! The ring is bounded in events ([`DEFAULT_HISTORY`]) and in bytes ([`DEFAULT_HISTORY_BYTES`],
//! the JSON size of the objects its events hold, counted twice for events that also hold the
//! object as it was), so a resource of large objects (1 MiB ConfigMaps) keeps fewer of them.
//! A watcher asking to start after revision `R` first receives the buffered events newer than
//! `R`, then live ones. If events newer than `R` have already fallen out of the ring, the hub
//! cannot replay them and answers [`WatchError::Expired`] — `410 Gone` to the client, which then
//! lists again, exactly as with Kubernetes' watch cache.
//!
//! ## Guarantees
//! - No gap: [`WatchHub::subscribe`] takes the ring snapshot and the live receiver under one lock,
//!   and the state machine publishes while holding its own write lock, so a watcher that read a
//!   list at revision `R` (under the state machine's read lock) and subscribes from `R` sees every
//!   later change exactly once.
//! - A watcher that falls more than the channel capacity behind is closed (it would otherwise
//!   hold memory without bound); the client re-lists, as Kubernetes closes slow watchers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::objects::ChangeEvent;

/// How many recent events each resource keeps for watchers that resume.
pub const DEFAULT_HISTORY: usize = 4096;
/// How many bytes of objects each resource's history may hold.
pub const DEFAULT_HISTORY_BYTES: usize = 32 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WatchError {
    /// The requested revision is older than the retained history.
    #[error("too old resource version: {requested} ({oldest_available})")]
    Expired {
        requested: u64,
        oldest_available: u64,
    },
}

/// Recent events of one resource and the channel live watchers listen on.
struct ResourceLog {
    events: VecDeque<Arc<ChangeEvent>>,
    /// What `events` hold, by [`weight`].
    bytes: usize,
    /// Events at or below this revision are no longer replayable for this resource.
    compacted: u64,
    live: broadcast::Sender<Arc<ChangeEvent>>,
}

/// Per-resource event history and subscriptions.
pub struct WatchHub {
    history: usize,
    history_bytes: usize,
    inner: Mutex<HubState>,
}

struct HubState {
    logs: HashMap<String, ResourceLog>,
    /// Revision below which nothing is replayable for resources not seen yet: the store's
    /// revision when the hub was created or last reset (after a restart or a snapshot install
    /// the history of earlier changes is gone).
    floor: u64,
}

/// What a new watcher receives: buffered events to replay, then a live receiver.
pub struct Subscription {
    pub backlog: Vec<Arc<ChangeEvent>>,
    pub live: broadcast::Receiver<Arc<ChangeEvent>>,
}

impl WatchHub {
    /// A hub whose history starts at `floor` (the store's revision now).
    pub fn new(history: usize, floor: u64) -> Self {
        WatchHub {
            history: history.max(1),
            history_bytes: DEFAULT_HISTORY_BYTES,
            inner: Mutex::new(HubState {
                logs: HashMap::new(),
                floor,
            }),
        }
    }

    /// The same hub with another byte budget per resource.
    pub fn with_history_bytes(mut self, bytes: usize) -> Self {
        self.history_bytes = bytes;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        // A panic while holding this lock can only come from a bug in this file; the state is a
        // cache of recent events, so carrying on with it is safe.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records applied changes and wakes their watchers.
    pub fn publish(&self, events: impl IntoIterator<Item = ChangeEvent>) {
        let mut state = self.lock();
        let floor = state.floor;
        let capacity = self.history;
        for event in events {
            let event = Arc::new(event);
            let log = state
                .logs
                .entry(event.resource().to_string())
                .or_insert_with(|| new_log(capacity, floor));
            log.bytes += weight(&event);
            log.events.push_back(event.clone());
            // The oldest go first, past either bound; the newest always stays.
            while log.events.len() > 1
                && (log.events.len() > capacity || log.bytes > self.history_bytes)
            {
                if let Some(dropped) = log.events.pop_front() {
                    log.bytes -= weight(&dropped);
                    log.compacted = dropped.revision;
                }
            }
            // No receivers is normal: nobody watches this resource right now.
            let _ = log.live.send(event);
        }
    }

    /// Starts a watch on `resource` for changes after revision `after`.
    pub fn subscribe(&self, resource: &str, after: u64) -> Result<Subscription, WatchError> {
        let mut state = self.lock();
        let floor = state.floor;
        let capacity = self.history;
        let log = state
            .logs
            .entry(resource.to_string())
            .or_insert_with(|| new_log(capacity, floor));
        if after < log.compacted {
            return Err(WatchError::Expired {
                requested: after,
                oldest_available: log.compacted + 1,
            });
        }
        let backlog = log
            .events
            .iter()
            .filter(|e| e.revision > after)
            .cloned()
            .collect();
        Ok(Subscription {
            backlog,
            live: log.live.subscribe(),
        })
    }

    /// Forgets all history (the state was replaced by a snapshot). Live watchers are closed: the
    /// changes between their position and `floor` cannot be described to them.
    pub fn reset(&self, floor: u64) {
        let mut state = self.lock();
        state.logs.clear();
        state.floor = floor;
    }

    /// How many watchers are connected, over all resources.
    pub fn watcher_count(&self) -> usize {
        self.lock()
            .logs
            .values()
            .map(|l| l.live.receiver_count())
            .sum()
    }
}

/// What an event holds, for the history's byte bound: its object's JSON size, twice when it
/// also holds the object as it was (which is about as large). The encoding is the one watchers
/// send, made once (the state machine fills it in from what it writes to disk).
fn weight(event: &ChangeEvent) -> usize {
    let size = event.object_json().len();
    if event.previous.is_some() {
        size * 2
    } else {
        size
    }
}

fn new_log(capacity: usize, floor: u64) -> ResourceLog {
    // The live channel holds what a slow watcher has not read yet; past that it is closed.
    let (live, _) = broadcast::channel(capacity.max(64));
    ResourceLog {
        events: VecDeque::with_capacity(capacity.min(1024)),
        bytes: 0,
        compacted: floor,
        live,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::EventKind;
    use serde_json::json;

    fn event(key: &str, revision: u64) -> ChangeEvent {
        ChangeEvent {
            kind: EventKind::Added,
            revision,
            key: key.into(),
            object: Arc::new(json!({"metadata": {"resourceVersion": revision.to_string()}})),
            previous: None,
            encoded: Arc::default(),
        }
    }

    #[test]
    fn resume_replays_only_newer_events_of_that_resource() {
        let hub = WatchHub::new(10, 0);
        hub.publish(vec![
            event("pods/default/a", 1),
            event("configmaps/default/x", 2),
            event("pods/default/b", 3),
        ]);
        let sub = hub.subscribe("pods", 1).expect("within history");
        let revisions: Vec<_> = sub.backlog.iter().map(|e| e.revision).collect();
        assert_eq!(revisions, vec![3]);
    }

    #[test]
    fn too_old_revision_is_expired() {
        let hub = WatchHub::new(2, 0);
        hub.publish((1..=5).map(|r| event("pods/default/a", r)));
        // The ring holds revisions 4 and 5; 3 was dropped, so resuming after 2 would skip it.
        assert_eq!(
            hub.subscribe("pods", 2).err(),
            Some(WatchError::Expired {
                requested: 2,
                oldest_available: 4
            })
        );
        assert_eq!(hub.subscribe("pods", 3).expect("after 3").backlog.len(), 2);
    }

    #[test]
    fn history_is_bounded_in_bytes_too() {
        let big = |revision: u64| ChangeEvent {
            object: Arc::new(
                json!({"data": "x".repeat(1000), "metadata": {"resourceVersion": revision.to_string()}}),
            ),
            ..event("configmaps/default/big", revision)
        };
        // Room for 4096 events but only about three 1 KB objects.
        let hub = WatchHub::new(4096, 0).with_history_bytes(3500);
        hub.publish((1..=10).map(big));
        let sub = hub
            .subscribe("configmaps", 7)
            .expect("the last three are kept");
        let revisions: Vec<_> = sub.backlog.iter().map(|e| e.revision).collect();
        assert_eq!(revisions, vec![8, 9, 10]);
        assert!(matches!(
            hub.subscribe("configmaps", 6),
            Err(WatchError::Expired {
                oldest_available: 8,
                ..
            })
        ));
        // One object larger than the whole budget is still kept: the newest always is.
        let hub = WatchHub::new(4096, 0).with_history_bytes(10);
        hub.publish(vec![big(1)]);
        assert_eq!(
            hub.subscribe("configmaps", 0).expect("kept").backlog.len(),
            1
        );
        // Small objects are bounded by the count as before.
        let hub = WatchHub::new(3, 0);
        hub.publish((1..=5).map(|r| event("pods/default/a", r)));
        assert_eq!(hub.subscribe("pods", 2).expect("3..5").backlog.len(), 3);
    }

    #[test]
    fn history_before_the_floor_is_gone() {
        let hub = WatchHub::new(10, 100);
        assert!(hub.subscribe("pods", 99).is_err());
        assert!(hub.subscribe("pods", 100).is_ok());
    }

    #[tokio::test]
    async fn live_events_follow_the_backlog() {
        let hub = WatchHub::new(10, 0);
        hub.publish(vec![event("pods/default/a", 1)]);
        let mut sub = hub.subscribe("pods", 0).expect("subscribe");
        hub.publish(vec![event("pods/default/b", 2)]);
        assert_eq!(sub.backlog.len(), 1);
        let live = sub.live.recv().await.expect("live event");
        assert_eq!(live.revision, 2);
    }
}

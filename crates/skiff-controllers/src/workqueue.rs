//! A work queue as Kubernetes controllers use one: keys, not events.
//!
//! - **De-duplication**: a key added ten times before a worker takes it is reconciled once — a
//!   reconcile reads the *current* state, so the intermediate events do not matter.
//! - **One worker per key at a time**: a key added while it is being processed is queued again
//!   and taken after the worker calls [`WorkQueue::done`].
//! - **Rate-limited requeue**: a failing key comes back after 5 ms, 10 ms, 20 ms, … up to
//!   60 s (client-go's per-item exponential back-off); [`WorkQueue::forget`] resets it on success.
//! - **Delayed adds** for "look again in N seconds" (a rollout waiting for minReadySeconds).
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    queued: HashSet<String>,
    processing: HashSet<String>,
    /// Added while processing: goes back on the queue at `done`.
    dirty: HashSet<String>,
    failures: HashMap<String, u32>,
}

/// A cloneable handle to one queue.
#[derive(Clone, Default)]
pub struct WorkQueue {
    state: Arc<Mutex<State>>,
    ready: Arc<Notify>,
}

impl WorkQueue {
    pub fn new() -> WorkQueue {
        WorkQueue::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `key` unless it is already waiting.
    pub fn add(&self, key: &str) {
        let mut state = self.lock();
        if state.processing.contains(key) {
            state.dirty.insert(key.to_string());
            return;
        }
        if state.queued.insert(key.to_string()) {
            state.queue.push_back(key.to_string());
            drop(state);
            self.ready.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: &str, delay: Duration) {
        let queue = self.clone();
        let key = key.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(&key);
        });
    }

    /// Queues `key` again after its next back-off delay.
    pub fn requeue_with_backoff(&self, key: &str) {
        let delay = {
            let mut state = self.lock();
            let failures = state.failures.entry(key.to_string()).or_insert(0);
            *failures += 1;
            backoff(*failures)
        };
        self.add_after(key, delay);
    }

    /// Forgets the failures of `key` (it succeeded).
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// The next key to work on; waits until there is one.
    pub async fn next(&self) -> String {
        loop {
            let notified = self.ready.notified();
            {
                let mut state = self.lock();
                if let Some(key) = state.queue.pop_front() {
                    state.queued.remove(&key);
                    state.processing.insert(key.clone());
                    if !state.queue.is_empty() {
                        self.ready.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    /// The worker finished `key`; if it was added meanwhile, it is queued again.
    pub fn done(&self, key: &str) {
        let again = {
            let mut state = self.lock();
            state.processing.remove(key);
            state.dirty.remove(key)
        };
        if again {
            self.add(key);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// client-go's per-item exponential failure back-off: 5 ms × 2^(n-1), at most 60 s.
pub fn backoff(failures: u32) -> Duration {
    let ms = 5u64.saturating_mul(1u64 << failures.saturating_sub(1).min(20));
    Duration::from_millis(ms.min(60_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated_and_reprocessed_when_added_during_work() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        let first = q.next().await;
        assert_eq!(first, "a");
        // Added while being processed: not handed out twice at once, but queued at done.
        q.add("a");
        assert_eq!(q.next().await, "b");
        assert!(q.is_empty());
        q.done("a");
        assert_eq!(q.next().await, "a");
    }

    #[test]
    fn backoff_doubles_to_a_minute() {
        assert_eq!(backoff(1), Duration::from_millis(5));
        assert_eq!(backoff(2), Duration::from_millis(10));
        assert_eq!(backoff(5), Duration::from_millis(80));
        assert_eq!(backoff(30), Duration::from_secs(60));
    }
}

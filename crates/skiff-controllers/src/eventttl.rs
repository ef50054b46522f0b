//! Events expire, as in Kubernetes (kube-apiserver's `--event-ttl`, one hour): this loop deletes
//! Events whose last occurrence is older than the TTL, so the store does not fill with old
//! notes. Runs on the leader, once a minute, over the leader's event store.
use std::borrow::Borrow;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;
use skiff_client::informer::Store;

use crate::controller::{Context, Controller};
use crate::workqueue::WorkQueue;
use crate::{reference_to, Action};

/// Kubernetes' default `--event-ttl`.
pub const EVENT_TTL: Duration = Duration::from_secs(3600);
/// How often the sweep runs.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Deletes (each guarded by its uid) the events last seen more than `ttl` before `now`
/// (pure).
pub fn reconcile<E: Borrow<Event>>(events: &[E], now: Timestamp, ttl: Duration) -> Vec<Action> {
    events
        .iter()
        .map(Borrow::borrow)
        .filter(|e: &&Event| {
            let last = e
                .last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or(e.event_time.as_ref().map(|t| t.0))
                .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
            last.is_some_and(|t| now.duration_since(t).as_secs_f64() > ttl.as_secs_f64())
        })
        .map(|e| Action::delete(reference_to(e), None))
        .collect()
}

/// Event expiry in the loop's shape: a sweep over the event store once a minute.
pub struct EventTtlController {
    events: Store<Event>,
}

impl Controller for EventTtlController {
    const NAME: &'static str = "event-ttl-controller";
    const EVERY: Option<Duration> = Some(SWEEP_EVERY);

    fn new(ctx: &Context, _queue: &WorkQueue) -> Self {
        EventTtlController {
            events: ctx.informers.store::<Event>(),
        }
    }

    fn reconcile(&mut self, _key: &str, now: Timestamp) -> Vec<Action> {
        let events = self.events.read();
        let all: Vec<&Event> = events.values().collect();
        reconcile(&all, now, EVENT_TTL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_older_than_the_ttl_expire() {
        let events: Vec<Event> = serde_json::from_value(json!([
            {"metadata": {"name": "old", "namespace": "default", "uid": "old"}, "involvedObject": {},
             "lastTimestamp": "2026-11-22T10:00:00Z"},
            {"metadata": {"name": "fresh", "namespace": "default"}, "involvedObject": {},
             "lastTimestamp": "2026-11-22T11:30:00Z"},
            {"metadata": {"name": "micro", "namespace": "default", "uid": "micro"}, "involvedObject": {},
             "eventTime": "2026-11-22T09:00:00.000000Z"},
            {"metadata": {"name": "undated", "namespace": "default"}, "involvedObject": {}}
        ]))
        .expect("events");
        let now: Timestamp = "2026-11-22T12:00:00Z".parse().expect("time");
        let gone: Vec<String> = reconcile(&events, now, EVENT_TTL)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            gone,
            [
                "delete Event default/old (uid old)",
                "delete Event default/micro (uid micro)"
            ]
        );
    }
}

//! Events: the short notes components leave on objects ("Scheduled", "Pulled", "Started",
//! "ScalingReplicaSet") that `kubectl describe` shows at the bottom.
//!
//! Recording an event must never slow down or fail the work it describes, so [`Recorder::emit`]
//! sends it from a background task and only logs a failure.
//!
//! Repeats are folded, as client-go's event correlator does: the same reason and message about
//! the same object within ten minutes bumps `count` and `lastTimestamp` of the first Event
//! instead of making a new one, and is written at most every [`REPEAT_WRITE_EVERY`] (a probe
//! failing every second must not become a store write per second). `kubectl describe` then shows
//! `(x42 over 3m)`.
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Client;

/// Repeats of an event within this window fold into it.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(600);
/// A folded repeat is written at most this often (the count catches up on the next write).
pub const REPEAT_WRITE_EVERY: Duration = Duration::from_secs(5);

/// Writes events as one component (`kubelet`, `default-scheduler`, `deployment-controller`).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: String,
    host: Option<String>,
    seen: Arc<Mutex<Correlator>>,
}

/// What to do with one occurrence of an event (pure; see [`Correlator::observe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A new Event object.
    Create,
    /// Update the Event named so: this is occurrence `count`.
    Bump { name: String, count: i32 },
    /// Counted, not written yet.
    Skip,
}

/// Remembers recent events by (object, type, reason, message).
#[derive(Debug, Default)]
pub struct Correlator {
    seen: HashMap<String, Seen>,
    /// When expired entries were last swept out.
    pruned: Option<Instant>,
}

/// Expired entries are swept at most this often: sweeping on every event made a burst of
/// 10,000 Scheduled events quadratic. In between, an expired entry is replaced when its key
/// comes again.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Seen {
    name: String,
    count: i32,
    first: Instant,
    written: Instant,
}

impl Correlator {
    /// Decides about one occurrence of the event keyed `key`, whose new object would be
    /// named `name`.
    pub fn observe(&mut self, key: &str, name: &str, now: Instant) -> Action {
        if self
            .pruned
            .is_none_or(|at| now.duration_since(at) >= PRUNE_EVERY)
        {
            self.seen
                .retain(|_, s| now.duration_since(s.first) < REPEAT_WINDOW);
            self.pruned = Some(now);
        }
        match self
            .seen
            .get_mut(key)
            .filter(|s| now.duration_since(s.first) < REPEAT_WINDOW)
        {
            Some(seen) => {
                seen.count += 1;
                if now.duration_since(seen.written) < REPEAT_WRITE_EVERY {
                    return Action::Skip;
                }
                seen.written = now;
                Action::Bump {
                    name: seen.name.clone(),
                    count: seen.count,
                }
            }
            None => {
                self.seen.insert(
                    key.to_string(),
                    Seen {
                        name: name.to_string(),
                        count: 1,
                        first: now,
                        written: now,
                    },
                );
                Action::Create
            }
        }
    }

    /// Forgets `key` (its Event was deleted: the next occurrence makes a new one).
    pub fn forget(&mut self, key: &str) {
        self.seen.remove(key);
    }
}

/// Whether an event is routine or a problem (`kubectl describe` shows the type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl Recorder {
    pub fn new(client: Client, component: &str, host: Option<&str>) -> Recorder {
        Recorder {
            client,
            component: component.to_string(),
            host: host.map(str::to_string),
            seen: Arc::default(),
        }
    }

    /// Records `reason`/`message` about `object` in the background.
    pub fn emit(&self, object: ObjectReference, kind: EventType, reason: &str, message: &str) {
        let event = event(
            &self.component,
            self.host.as_deref(),
            object,
            kind,
            reason,
            message,
            jiff::Timestamp::now(),
        );
        let key = format!(
            "{}/{}/{}|{:?}|{reason}|{message}",
            event.involved_object.namespace.as_deref().unwrap_or(""),
            event.involved_object.name.as_deref().unwrap_or(""),
            event.involved_object.uid.as_deref().unwrap_or(""),
            event.type_,
        );
        let name = event.metadata.name.clone().unwrap_or_default();
        let action = match self.seen.lock() {
            Ok(mut seen) => seen.observe(&key, &name, Instant::now()),
            Err(_) => Action::Create,
        };
        let client = self.client.clone();
        let seen = self.seen.clone();
        tokio::spawn(async move {
            let ns = event.metadata.namespace.clone();
            let result = match action {
                Action::Skip => return,
                Action::Create => client.create(ns.as_deref(), &event).await.map(drop),
                Action::Bump { name, count } => {
                    let patch = serde_json::json!({
                        "count": count,
                        "lastTimestamp": event.last_timestamp,
                        "series": null,
                    });
                    match client
                        .merge_patch::<Event>(ns.as_deref(), &name, None, &patch)
                        .await
                    {
                        Err(e) if e.is_not_found() => {
                            if let Ok(mut seen) = seen.lock() {
                                seen.forget(&key);
                            }
                            client.create(ns.as_deref(), &event).await.map(drop)
                        }
                        other => other.map(drop),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, reason = ?event.reason, "recording an event");
            }
        });
    }
}

/// The Event object (pure, for tests). Its name is the object's name and a unique suffix
/// (nanoseconds in hex), as client-go names events.
pub fn event(
    component: &str,
    host: Option<&str>,
    object: ObjectReference,
    kind: EventType,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> Event {
    let namespace = object.namespace.clone().unwrap_or_else(|| "default".into());
    let name = format!(
        "{}.{:x}",
        object.name.clone().unwrap_or_default(),
        now.as_nanosecond()
    );
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            ..ObjectMeta::default()
        },
        involved_object: object,
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        type_: Some(match kind {
            EventType::Normal => "Normal".into(),
            EventType::Warning => "Warning".into(),
        }),
        source: Some(EventSource {
            component: Some(component.to_string()),
            host: host.map(str::to_string),
        }),
        reporting_component: Some(component.to_string()),
        reporting_instance: host.map(str::to_string),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        count: Some(1),
        action: Some(reason.to_string()),
        ..Event::default()
    }
}

/// A reference to `object` for events and owner links.
pub fn object_ref<K>(object: &K) -> ObjectReference
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let meta = object.metadata();
    ObjectReference {
        api_version: Some(K::API_VERSION.to_string()),
        kind: Some(K::KIND.to_string()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn repeats_fold_into_one_event_written_at_most_every_few_seconds() {
        let mut c = Correlator::default();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(c.observe("k", "web.1", t0), Action::Create);
        assert_eq!(c.observe("late", "db.1", t0 + s(2)), Action::Create);
        // Within the write interval: counted, not written.
        assert_eq!(c.observe("k", "web.2", t0 + s(1)), Action::Skip);
        assert_eq!(c.observe("k", "web.3", t0 + s(2)), Action::Skip);
        // After it: the first Event is bumped with the full count.
        assert_eq!(
            c.observe("k", "web.4", t0 + s(6)),
            Action::Bump {
                name: "web.1".into(),
                count: 4
            }
        );
        // Another message is another event.
        assert_eq!(c.observe("other", "web.5", t0 + s(6)), Action::Create);
        // Ten minutes after the first: a new Event.
        assert_eq!(c.observe("k", "web.6", t0 + s(601)), Action::Create);
        // Expired but not yet swept (the sweep at 601 s was too early for it): new too.
        assert_eq!(c.observe("late", "db.2", t0 + s(603)), Action::Create);
    }

    #[test]
    fn events_name_their_object_and_source() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("u".into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        let e = event(
            "kubelet",
            Some("node-1"),
            object_ref(&pod),
            EventType::Warning,
            "BackOff",
            "m",
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(e.metadata.name.as_deref(), Some("web.0"));
        assert_eq!(e.involved_object.kind.as_deref(), Some("Pod"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.source.and_then(|s| s.host).as_deref(), Some("node-1"));
    }
}

//! Events expire, as in Kubernetes (kube-apiserver's `--event-ttl`, one hour): this loop deletes
//! Events whose last occurrence is older than the TTL, so the store does not fill with old
//! notes. Runs on the leader, once a minute.
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Event;

/// Kubernetes' default `--event-ttl`.
pub const EVENT_TTL: Duration = Duration::from_secs(3600);
/// How often the sweep runs.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The (namespace, name) of the events last seen more than `ttl` before `now` (pure).
pub fn expired(events: &[Event], now: Timestamp, ttl: Duration) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| {
            let last = e
                .last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or(e.event_time.as_ref().map(|t| t.0))
                .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
            last.is_some_and(|t| now.duration_since(t).as_secs_f64() > ttl.as_secs_f64())
        })
        .filter_map(|e| Some((e.metadata.namespace.clone()?, e.metadata.name.clone()?)))
        .collect()
}

/// Deletes expired events every minute until `stop`.
pub async fn run(client: skiff_client::Client, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
        let events = match client.list::<Event>(None, &Default::default()).await {
            Ok(list) => list.items,
            Err(e) => {
                tracing::warn!(error = %e, "listing events to expire");
                continue;
            }
        };
        for (ns, name) in expired(&events, Timestamp::now(), EVENT_TTL) {
            let options = skiff_client::DeleteOptions::default();
            match client.delete::<Event>(Some(&ns), &name, &options).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(event = %format!("{ns}/{name}"), error = %e, "expiring an event")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_older_than_the_ttl_expire() {
        let events: Vec<Event> = serde_json::from_value(json!([
            {"metadata": {"name": "old", "namespace": "default"}, "involvedObject": {},
             "lastTimestamp": "2026-11-22T10:00:00Z"},
            {"metadata": {"name": "fresh", "namespace": "default"}, "involvedObject": {},
             "lastTimestamp": "2026-11-22T11:30:00Z"},
            {"metadata": {"name": "micro", "namespace": "default"}, "involvedObject": {},
             "eventTime": "2026-11-22T09:00:00.000000Z"},
            {"metadata": {"name": "undated", "namespace": "default"}, "involvedObject": {}}
        ]))
        .expect("events");
        let now: Timestamp = "2026-11-22T12:00:00Z".parse().expect("time");
        let gone = expired(&events, now, EVENT_TTL);
        assert_eq!(
            gone,
            vec![
                ("default".to_string(), "old".to_string()),
                ("default".to_string(), "micro".to_string())
            ]
        );
    }
}

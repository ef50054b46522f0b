//! List + watch, forever: the input of every control loop.
//!
//! A watch is a long HTTP response of newline-separated JSON events. Connections drop, servers
//! restart, and a watcher that fell too far behind gets `410 Gone`; a control loop should not have
//! to care. [`spawn`] runs the loop Kubernetes' reflectors run:
//!
//! ```text
//!   list ──► Restarted(all objects) ──► watch from the list's resourceVersion
//!                 ▲                         │ ADDED/MODIFIED ─► Applied(obj)
//!                 │                         │ DELETED        ─► Deleted(obj)
//!                 │                         │ BOOKMARK       ─► (remember the version)
//!                 └──── 410 Gone / ERROR ◄──┤ timeout/drop   ─► watch again from the last version
//! ```
//!
//! Because a relist replaces everything the loop knew, `Restarted` carries the full list: the
//! consumer rebuilds its cache from it (and so notices objects deleted while it was away).

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::Resource;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::{Client, Error, ListParams};

/// One thing a watcher saw.
#[derive(Debug, Clone)]
pub enum Event<K> {
    /// Created or changed.
    Applied(K),
    /// Deleted (the object as it was last).
    Deleted(K),
    /// A fresh list: the complete current set, replacing whatever was known before.
    Restarted(Vec<K>),
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    object: Value,
}

/// How long one watch request stays open before the server ends it and we open the next.
const WATCH_TIMEOUT: Duration = Duration::from_secs(290);

/// Starts a watcher task for `K` in `ns` (all namespaces when `None`) and returns its events.
/// The task ends when the receiver is dropped.
pub fn spawn<K>(client: Client, ns: Option<String>, params: ListParams) -> mpsc::Receiver<Event<K>>
where
    K: Resource + DeserializeOwned + Send + 'static,
{
    let url = client.collection_url::<K>(ns.as_deref());
    spawn_at(client, url, params)
}

/// [`spawn`] for the collection at `url` (from [`Client::collection_url_of`]), each object
/// decoded as `K` — which may be a partial view, such as only the metadata.
pub fn spawn_at<K>(client: Client, url: String, params: ListParams) -> mpsc::Receiver<Event<K>>
where
    K: DeserializeOwned + Send + 'static,
{
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(async move {
        let mut backoff = Backoff::default();
        loop {
            match run::<K>(&client, &url, &params, &tx, &mut backoff).await {
                // The receiver is gone: nobody is listening any more.
                Ok(()) => return,
                Err(e) => {
                    tracing::debug!(%url, error = %e, "watch restarts");
                    tokio::time::sleep(backoff.delay()).await;
                }
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

/// One list followed by watches until something forces a relist (the error says what).
/// `Ok(())` means the receiver was dropped.
async fn run<K>(
    client: &Client,
    url: &str,
    params: &ListParams,
    tx: &mpsc::Sender<Event<K>>,
    backoff: &mut Backoff,
) -> Result<(), Error>
where
    K: DeserializeOwned,
{
    let list = client.list_at::<K>(url, params).await?;
    let mut version = list.resource_version;
    backoff.reset();
    if tx.send(Event::Restarted(list.items)).await.is_err() {
        return Ok(());
    }
    loop {
        let response = client
            .watch_raw_at(url, params, &version, WATCH_TIMEOUT)
            .await?;
        let mut body = response.bytes_stream();
        let mut buffer: Vec<u8> = Vec::new();
        while let Some(chunk) = body.next().await {
            buffer.extend_from_slice(&chunk?);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let event: RawEvent = serde_json::from_slice(&line)?;
                if let Some(v) = event.object.pointer("/metadata/resourceVersion") {
                    if let Some(v) = v.as_str() {
                        version = v.to_string();
                    }
                }
                let out = match event.kind.as_str() {
                    "ADDED" | "MODIFIED" => Event::Applied(serde_json::from_value(event.object)?),
                    "DELETED" => Event::Deleted(serde_json::from_value(event.object)?),
                    "BOOKMARK" => continue,
                    _ => {
                        // ERROR: a Status; 410 Gone means our version is too old: relist.
                        let code = event.object.get("code").and_then(Value::as_u64);
                        let message = event.object.get("message").and_then(Value::as_str);
                        return Err(Error::Api {
                            code: code.unwrap_or(500) as u16,
                            reason: "WatchError".into(),
                            message: message.unwrap_or("watch error").to_string(),
                        });
                    }
                };
                if tx.send(out).await.is_err() {
                    return Ok(());
                }
            }
        }
        // The server ended the watch (timeout): go on from the last version seen.
    }
}

/// Exponential backoff between relists: 200 ms doubling to 5 s.
#[derive(Debug, Default)]
pub struct Backoff {
    attempts: u32,
}

impl Backoff {
    pub fn delay(&mut self) -> Duration {
        let ms = 200u64.saturating_mul(1 << self.attempts.min(5));
        self.attempts += 1;
        Duration::from_millis(ms.min(5_000))
    }

    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap() {
        let mut b = Backoff::default();
        let ms: Vec<u128> = (0..8).map(|_| b.delay().as_millis()).collect();
        assert_eq!(ms, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.delay().as_millis(), 200);
    }
}

//! Watch streams: `?watch=true` answered with newline-delimited JSON events over a chunked
//! response, as Kubernetes does.
//!
//! ## Expected flow
//! 1. No `resourceVersion` (or `0`): list the current objects and send each as ADDED, then
//!    continue from that list's revision. With a `resourceVersion`: replay the store's history
//!    after it, then continue live.
//! 2. Every change is filtered by namespace and selectors. A MODIFIED object that stops matching
//!    becomes DELETED for this watcher, one that starts matching becomes ADDED.
//! 3. With `allowWatchBookmarks=true`, a BOOKMARK carrying the latest revision is sent every
//!    [`BOOKMARK_EVERY`], so a client resuming later is unlikely to get 410.
//! 4. The stream ends after `timeoutSeconds`, when the watcher falls too far behind, or when the
//!    server shuts down; clients then watch again from the last revision they saw.
//!
//! ## Guarantees
//! Events arrive in revision order, none twice, none skipped (see skiff_store::watch). A
//! resourceVersion older than the history gets one ERROR event with a 410 `Expired` Status,
//! which is how client-go and the Python client expect to learn they must list again.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::stream::Stream;
use serde_json::{json, Value};
use skiff_api::status::ApiError;
use skiff_store::{ChangeEvent, EventKind, Subscription, WatchError};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{Instant, MissedTickBehavior};

use crate::app::App;
use crate::objects::Filter;
use crate::query::Params;
use crate::tables::{TableOptions, WatchTables};
use crate::target::Target;

pub const BOOKMARK_EVERY: Duration = Duration::from_secs(10);
/// Watches without `timeoutSeconds` end after this long (Kubernetes picks 30–60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Starts a watch on `target`'s collection (or one object, via `metadata.name` selectors);
/// with `table`, each event's object is a one-row Table (`kubectl get -w`).
pub fn watch(
    app: Arc<App>,
    target: &Target,
    params: &Params,
    table: Option<TableOptions>,
    ticket: Option<crate::inflight::WatchTicket>,
) -> Result<Response, ApiError> {
    let filter = Filter::from_params(target, params)?;
    let prefix = target.prefix();
    let resource = target.info.qualified_resource();
    // 0 means "the server's default", as in Kubernetes; huge values are clamped to it too.
    let timeout = match params.timeout_seconds {
        Some(seconds) if seconds > 0 => Duration::from_secs(seconds).min(DEFAULT_TIMEOUT),
        _ => DEFAULT_TIMEOUT,
    };
    let mut watcher = Watcher {
        prefix,
        filter,
        kind: target.info.kind,
        api_version: target.served.api_version(),
        served: skiff_api::versions::converts(target.served).then_some(target.served),
        bookmarks: params.bookmarks(),
        tables: table.map(|options| WatchTables::new(resource.clone(), options)),
    };

    let start = match params.watch_from()? {
        None => match app.store.list_and_watch(&watcher.prefix) {
            Ok((items, revision, subscription)) => {
                let mut initial = Vec::new();
                for object in &items {
                    if watcher.filter.matches(object) {
                        initial.push(watcher.event("ADDED", object));
                    }
                }
                Ok((initial, revision, subscription))
            }
            Err(e) => Err(e),
        },
        Some(after) => app
            .store
            .watch(&resource, after)
            .map(|s| (Vec::new(), after, s)),
    };
    let body = match start {
        Ok((initial, revision, subscription)) => {
            app.metrics.watchers_inc();
            let stream = watcher.stream(app, initial, revision, subscription, timeout);
            // The user's watch is counted until the stream ends (and is dropped).
            let stream = futures::StreamExt::map(stream, move |event| {
                let _held = &ticket;
                event
            });
            Body::from_stream(stream)
        }
        Err(WatchError::Expired {
            requested,
            oldest_available,
        }) => {
            let gone = ApiError::Gone(format!(
                "too old resource version: {requested} ({oldest_available})"
            ));
            Body::from(event_line("ERROR", &gone.to_status()))
        }
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    encoded_event_line(kind, &serde_json::to_vec(object).unwrap_or_default())
}

/// `{"type":KIND,"object":OBJECT}` and a newline, around an object already encoded.
fn encoded_event_line(kind: &str, object: &[u8]) -> Bytes {
    let mut line = Vec::with_capacity(object.len() + kind.len() + 24);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(object);
    line.extend_from_slice(b"}\n");
    Bytes::from(line)
}

struct Watcher {
    prefix: String,
    filter: Filter,
    kind: &'static str,
    api_version: String,
    bookmarks: bool,
    /// Set when the client watches another version than the stored one: each object is
    /// converted to it.
    served: Option<&'static skiff_api::resources::ResourceInfo>,
    /// Set when the client asked for Tables: turns each object into a one-row Table.
    tables: Option<WatchTables>,
}

impl Watcher {
    /// One event line, the object printed as a Table row if the client asked for Tables.
    fn event(&mut self, kind: &str, object: &Value) -> Bytes {
        match (&mut self.tables, self.served) {
            (Some(tables), _) => event_line(kind, &tables.event_object(object)),
            (None, Some(served)) => {
                event_line(kind, &skiff_api::versions::from_stored(served, object))
            }
            (None, None) => event_line(kind, object),
        }
    }

    /// What this watcher should be told about one change, if anything.
    fn translate(&mut self, event: &ChangeEvent) -> Option<Bytes> {
        if !event.key.starts_with(&self.prefix) {
            return None;
        }
        let now = self.filter.matches(&event.object);
        let before = event
            .previous
            .as_deref()
            .is_some_and(|p| self.filter.matches(p));
        let kind = match (event.kind, before, now) {
            (EventKind::Added, _, true) => "ADDED",
            (EventKind::Modified, true, true) => "MODIFIED",
            (EventKind::Modified, false, true) => "ADDED",
            (EventKind::Modified, true, false) => "DELETED",
            (EventKind::Deleted, true, _) => "DELETED",
            _ => return None,
        };
        Some(match (&self.tables, self.served) {
            (Some(_), _) | (None, Some(_)) => self.event(kind, &event.object),
            // The same bytes for every watcher of this change: encoded once.
            (None, None) => encoded_event_line(kind, event.object_json()),
        })
    }

    fn bookmark(&self, revision: u64) -> Bytes {
        let object = match &self.tables {
            Some(tables) => tables.bookmark(revision),
            None => {
                json!({"kind": self.kind, "apiVersion": self.api_version, "metadata": {"resourceVersion": revision.to_string()}})
            }
        };
        event_line("BOOKMARK", &object)
    }

    fn stream(
        mut self,
        app: Arc<App>,
        initial: Vec<Bytes>,
        mut revision: u64,
        subscription: Subscription,
        timeout: Duration,
    ) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static {
        let Subscription { backlog, mut live } = subscription;
        async_stream(move |tx| async move {
            let _guard = WatcherGuard(app.clone());
            for line in initial {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            for event in backlog {
                revision = revision.max(event.revision);
                if let Some(line) = self.translate(&event) {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
            }
            let deadline = Instant::now() + timeout;
            let mut bookmark =
                tokio::time::interval_at(Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
            bookmark.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    received = live.recv() => match received {
                        Ok(event) => {
                            // The subscription may deliver events the list already covered.
                            if event.revision <= revision {
                                continue;
                            }
                            revision = event.revision;
                            if let Some(line) = self.translate(&event) {
                                if tx.send(line).await.is_err() {
                                    return;
                                }
                            }
                        }
                        // Too far behind, or the history was reset by a snapshot: end the stream
                        // and let the client resume (and get 410 if it must re-list).
                        Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => return,
                    },
                    _ = bookmark.tick(), if self.bookmarks => {
                        // Drain what was published up to the store's revision first, so the
                        // bookmark never claims a revision whose events we have not sent.
                        let current = app.store.revision();
                        loop {
                            let event = match live.try_recv() {
                                Ok(event) => event,
                                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => break,
                                // Lagged or closed: events were lost, so no bookmark may claim
                                // them; end the stream and let the client resume.
                                Err(_) => return,
                            };
                            if event.revision > revision {
                                revision = event.revision;
                                if let Some(line) = self.translate(&event) {
                                    if tx.send(line).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        }
                        revision = revision.max(current);
                        if tx.send(self.bookmark(revision)).await.is_err() {
                            return;
                        }
                    }
                    _ = tokio::time::sleep_until(deadline) => return,
                    // The client went away: stop now, not at its next event.
                    _ = tx.closed() => return,
                    _ = app.shutdown.cancelled() => return,
                }
            }
        })
    }
}

/// Counts open watches for `/metrics`.
struct WatcherGuard(Arc<App>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.metrics.watchers_dec();
    }
}

/// A stream fed by a task through a small channel: the task ends when the client goes away
/// (its sends fail), which is how a closed connection stops a watch.
fn async_stream<F, Fut>(
    produce: F,
) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(produce(tx));
    futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

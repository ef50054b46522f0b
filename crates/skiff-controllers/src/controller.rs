//! The one shape of every controller, and the one loop that runs them.
//!
//! ```text
//!  Informers (one watch per kind) ──► Store<K> ──► handlers: object → keys ──► WorkQueue
//!                                                                                 │
//!   apply (API writes, events, requeues) ◄── reconcile(key, now) -> Vec<Action> ◄─┘
//!           └─► expectations: writes to see in the stores before the key runs again
//! ```
//!
//! A controller is a type that implements [`Controller`]: [`Controller::new`] takes the stores
//! it reads from the [`Context`] and registers handlers that turn their changes into keys of
//! its queue; [`Controller::reconcile`] reads the stores for one key and calls the
//! controller's pure planning function with them and `now`. [`run`] is the loop, the same for
//! all: wait for the stores, take a key, check its expectations, reconcile, apply, repeat. An
//! error never stops it: a failed write requeues the key with back-off.
//!
//! A periodic sweep (node lifecycle, garbage collection, event expiry) is a controller with
//! one key, [`EVERYTHING`], and a [`Controller::EVERY`] period.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use skiff_client::events::Recorder;
use skiff_client::informer::Informers;
use skiff_client::Client;
use tokio::sync::watch;

use crate::apply::apply_plan;
use crate::expectations::{Expectations, Expected};
use crate::nodeipam::ClusterCidr;
use crate::{nodelifecycle, Action};

/// The key of a controller that looks at everything at once (a periodic sweep).
pub const EVERYTHING: &str = "";

/// How long a key whose expected writes have not shown yet waits before it looks again.
const RECHECK: Duration = Duration::from_millis(200);

/// Where heartbeats come from (the API server's in-memory table on this member). The entry
/// with the empty name ([`nodelifecycle::TAKEOVER`]), if any, is when the table started.
pub type Heartbeats = Arc<dyn Fn() -> BTreeMap<String, Timestamp> + Send + Sync>;

/// Settings of the controllers.
#[derive(Clone)]
pub struct Config {
    pub heartbeats: Heartbeats,
    pub node_lifecycle: nodelifecycle::Config,
    /// Where node IPAM takes pod CIDRs from.
    pub cluster_cidr: ClusterCidr,
    /// The cluster CA's PEM, published in every namespace as `kube-root-ca.crt`.
    pub root_ca: String,
}

/// What a controller is built from: the shared stores and the settings.
#[derive(Clone)]
pub struct Context {
    pub informers: Informers,
    pub config: Config,
    /// For what the stores do not hold (the HPA's metrics).
    pub client: Client,
}

/// A controller: the stores it reads, the keys their changes wake, and one pass per key.
pub trait Controller: Send + 'static {
    /// The component its Events are recorded under (`replicaset-controller`).
    const NAME: &'static str;
    /// For a periodic sweep: how often it runs (its one key is [`EVERYTHING`]).
    const EVERY: Option<Duration> = None;
    /// Whether a failed action leaves the rest of the plan to run (false: the plan stops).
    const KEEP_GOING: bool = false;

    /// Takes the stores it reads from `ctx.informers` and registers handlers that add the keys
    /// a change concerns to `queue`.
    fn new(ctx: &Context, queue: &crate::workqueue::WorkQueue) -> Self;

    /// Plans one pass for `key` from the stores as they are (an object gone from its store
    /// plans nothing). The planning itself is a pure function of the controller's module.
    fn reconcile(&mut self, key: &str, now: Timestamp) -> Vec<Action>;

    /// The writes of an applied `plan` that must show in the stores before `key` is
    /// reconciled again (see [`crate::expectations`]). None by default.
    fn expectations(&self, _plan: &[Action]) -> Vec<Expected> {
        Vec::new()
    }
}

/// Builds controller `C` (registering its handlers now) and starts its loop, which runs once
/// the stores it reads have their first lists, until `stop` turns true.
pub fn spawn<C: Controller>(
    ctx: &Context,
    client: &Client,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let queue = crate::workqueue::WorkQueue::new();
    let controller = C::new(ctx, &queue);
    let recorder = Recorder::new(client.clone(), C::NAME, None);
    tokio::spawn(run(
        controller,
        queue,
        ctx.informers.clone(),
        client.clone(),
        recorder,
        stop,
    ))
}

/// The loop of one controller.
pub async fn run<C: Controller>(
    mut controller: C,
    queue: crate::workqueue::WorkQueue,
    informers: Informers,
    client: Client,
    recorder: Recorder,
    mut stop: watch::Receiver<bool>,
) {
    // Act only on complete stores: a half-listed store would make a ReplicaSet create pods
    // that exist, or the garbage collector delete dependents whose owners are not listed yet.
    tokio::select! {
        _ = informers.wait_synced() => {}
        _ = stop.wait_for(|s| *s) => return,
    }
    tracing::debug!(controller = C::NAME, "stores synced");
    if C::EVERY.is_some() {
        queue.add(EVERYTHING);
    }
    let mut expectations = Expectations::default();
    loop {
        let key = tokio::select! {
            key = queue.next() => key,
            _ = stop.wait_for(|s| *s) => return,
        };
        let cached = |w: &Expected| informers.find(&w.api_version, &w.kind)?.meta(&w.key);
        if !expectations.ready(&key, tokio::time::Instant::now(), cached) {
            queue.done(&key);
            queue.add_after(&key, RECHECK);
            continue;
        }
        let plan = controller.reconcile(&key, Timestamp::now());
        let applied = apply_plan(&client, &recorder, &queue, &key, plan, C::KEEP_GOING).await;
        // What was written must show in the stores before the key runs again, also when the
        // plan stopped half-way (a ReplicaSet that created 299 of 500 pods must not create
        // them again from a store that has not seen them yet).
        let expected = controller.expectations(&applied);
        expectations.expect(&key, expected, tokio::time::Instant::now());
        if let Some(every) = C::EVERY {
            queue.add_after(&key, every);
        }
        queue.done(&key);
    }
}

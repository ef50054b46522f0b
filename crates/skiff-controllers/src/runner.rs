//! Where the controllers are registered: each is built from the shared stores and runs in the
//! one loop of [`crate::controller`], on the Raft leader only, until `stop` turns true
//! (another member's loops take over).
//!
//! ```text
//!  Informers: one watch per kind ─► stores ─► each controller's handlers ─► its work queue
//!                                                                              │
//!  reconcile(key, now) ─► plan ─► apply (API) ◄────────────────────────────────┘
//! ```
//! Adding a controller: a file with its pure planning function, its [`Controller`] impl and
//! its tests, and one line below.
use skiff_client::informer::Informers;
use skiff_client::Client;
use tokio::sync::watch;

use crate::clusterrole_aggregation::ClusterRoleAggregationController;
use crate::controller::{spawn, Context};
pub use crate::controller::{Config, Heartbeats};
use crate::cronjob::CronJobController;
use crate::daemonset::DaemonSetController;
use crate::deployment::DeploymentController;
use crate::endpoints::EndpointsController;
use crate::eventttl::EventTtlController;
use crate::gc::GarbageCollector;
use crate::hpa::HorizontalPodAutoscalerController;
use crate::job::JobController;
use crate::nodeipam::NodeIpamController;
use crate::nodelifecycle::NodeLifecycleController;
use crate::podgc::PodGc;
use crate::replicaset::ReplicaSetController;
use crate::serviceaccounts::ServiceAccountsController;
use crate::servicelb::ServiceLbController;
use crate::statefulset::StatefulSetController;
use crate::volumes::VolumeController;

type Spawn = fn(&Context, &Client, watch::Receiver<bool>) -> tokio::task::JoinHandle<()>;

/// Runs every controller, on the stores of `informers` (shared with the other leader loops),
/// until `stop` turns true.
pub async fn run(
    client: Client,
    informers: Informers,
    config: Config,
    mut stop: watch::Receiver<bool>,
) {
    let ctx = Context {
        informers,
        config,
        client: client.clone(),
    };
    let start = |spawn: Spawn| spawn(&ctx, &client, stop.clone());
    let loops: Vec<tokio::task::JoinHandle<()>> = vec![
        start(spawn::<ReplicaSetController>),
        start(spawn::<DeploymentController>),
        start(spawn::<EndpointsController>),
        start(spawn::<NodeLifecycleController>),
        start(spawn::<NodeIpamController>),
        start(spawn::<ServiceLbController>),
        start(spawn::<EventTtlController>),
        start(spawn::<ClusterRoleAggregationController>),
        start(spawn::<ServiceAccountsController>),
        start(spawn::<VolumeController>),
        start(spawn::<StatefulSetController>),
        start(spawn::<DaemonSetController>),
        start(spawn::<PodGc>),
        start(spawn::<JobController>),
        start(spawn::<CronJobController>),
        start(spawn::<HorizontalPodAutoscalerController>),
        // Last: it reads every served kind, from the stores the others opened where it can.
        start(spawn::<GarbageCollector>),
    ];
    let _ = stop.wait_for(|s| *s).await;
    for task in loops {
        task.abort();
    }
    tracing::info!("controllers stopped");
}

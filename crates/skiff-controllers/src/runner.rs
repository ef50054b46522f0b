//! The thin loops around the pure reconcile functions: caches fed by watches, work queues,
//! and applying the planned actions through the API.
//!
//! ```text
//!  watch pods ──┐                      ┌─► ReplicaSet queue ─► replicaset::reconcile ─┐
//!  watch rs   ──┤                      ├─► Deployment queue ─► deployment::reconcile ─┤
//!  watch deploy ┼─► caches ─► enqueue ─┤                                              ├─► apply (API)
//!  watch svc  ──┤   (by key)           └─► Service queue ─► endpoints::reconcile ─────┘
//!  watch ep, endpointslices ┘
//!  every second:  nodelifecycle::reconcile(nodes, heartbeats, pods)  ─► apply
//!  every 2 s:     gc::reconcile(pods, replicasets, deployments,
//!                               services, endpoints, endpointslices) ─► apply
//! ```
//! Everything runs on the Raft leader only, and stops when `stop` turns true (another member's
//! loops take over). A plan is applied in order and stops at the first failed write; the key is
//! then requeued with back-off, so an error never stops a controller.
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Metadata;
use serde::de::DeserializeOwned;
use serde_json::Value;
use skiff_client::events::Recorder;
use skiff_client::watcher::{self, Event};
use skiff_client::{Client, DeleteOptions, ListParams};
use tokio::sync::watch;

use crate::names::NameGenerator;
use crate::workqueue::WorkQueue;
use crate::{deployment, endpoints, gc, nodelifecycle, replicaset, Action, Object, Propagation};

/// Where heartbeats come from (the API server's in-memory table on this member). The entry
/// with the empty name ([`nodelifecycle::TAKEOVER`]), if any, is when the table started.
pub type Heartbeats = Arc<dyn Fn() -> BTreeMap<String, Timestamp> + Send + Sync>;

/// Settings of the controllers.
#[derive(Clone)]
pub struct Config {
    pub heartbeats: Heartbeats,
    pub node_lifecycle: nodelifecycle::Config,
}

/// A cache of one kind, by `namespace/name`.
type Cache<K> = Arc<RwLock<BTreeMap<String, K>>>;

fn key_of(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

fn read<K: Clone>(cache: &Cache<K>) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, K>> {
    cache.read().unwrap_or_else(|e| e.into_inner())
}

fn in_namespace<K: Clone>(cache: &Cache<K>, ns: &str) -> Vec<K> {
    let prefix = format!("{ns}/");
    read(cache)
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(_, v)| v.clone())
        .collect()
}

/// The `namespace/name` of the controller owner of kind `kind`, if any.
fn controller_of(meta: &ObjectMeta, kind: &str) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true) && r.kind == kind)
        .map(|r| format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), r.name))
}

/// Feeds a cache from a watch; calls `on_change` with each changed object (old and new).
fn informer<K, F>(
    client: &Client,
    cache: Cache<K>,
    synced: watch::Sender<bool>,
    on_change: F,
) -> tokio::task::JoinHandle<()>
where
    K: k8s_openapi::Resource
        + Metadata<Ty = ObjectMeta>
        + DeserializeOwned
        + Clone
        + Send
        + Sync
        + 'static,
    F: Fn(&K) + Send + 'static,
{
    let mut events = watcher::spawn::<K>(client.clone(), None, ListParams::default());
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                Event::Applied(object) => {
                    let key = key_of(object.metadata());
                    cache
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, object.clone());
                    on_change(&object);
                }
                Event::Deleted(object) => {
                    let key = key_of(object.metadata());
                    cache
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key);
                    on_change(&object);
                }
                Event::Restarted(list) => {
                    let fresh: BTreeMap<String, K> = list
                        .iter()
                        .map(|o| (key_of(o.metadata()), o.clone()))
                        .collect();
                    let old = std::mem::replace(
                        &mut *cache.write().unwrap_or_else(|e| e.into_inner()),
                        fresh,
                    );
                    for object in old.values().chain(list.iter()) {
                        on_change(object);
                    }
                    let _ = synced.send(true);
                }
            }
        }
    })
}

/// What a ReplicaSet is waiting to see in the pod cache before it is reconciled again
/// (Kubernetes' "expectations"): otherwise a reconcile that runs before the watch delivered
/// its own creations would create the pods a second time.
struct Expectation {
    created: Vec<String>,
    deleted: Vec<String>,
    until: Instant,
}

/// Runs the ReplicaSet, Deployment, endpoints, node lifecycle and garbage collection
/// controllers until `stop` turns true.
pub async fn run(client: Client, config: Config, mut stop: watch::Receiver<bool>) {
    let pods: Cache<Pod> = Cache::default();
    let replica_sets: Cache<ReplicaSet> = Cache::default();
    let deployments: Cache<Deployment> = Cache::default();
    let nodes: Cache<Node> = Cache::default();
    let services: Cache<Service> = Cache::default();
    let endpoints_cache: Cache<Endpoints> = Cache::default();
    let slices: Cache<EndpointSlice> = Cache::default();
    let rs_queue = WorkQueue::new();
    let deploy_queue = WorkQueue::new();
    // Keyed by Service: one pass writes its Endpoints and its EndpointSlices.
    let service_queue = WorkQueue::new();

    let (pods_synced, mut pods_ready) = watch::channel(false);
    let (rs_synced, mut rs_ready) = watch::channel(false);
    let (d_synced, mut d_ready) = watch::channel(false);
    let (n_synced, mut n_ready) = watch::channel(false);
    let (svc_synced, mut svc_ready) = watch::channel(false);
    let (ep_synced, mut ep_ready) = watch::channel(false);
    let (slice_synced, mut slice_ready) = watch::channel(false);

    let mut tasks = Vec::new();
    {
        // A pod change concerns its ReplicaSet (or, for an orphan, every ReplicaSet of its
        // namespace that might adopt it), that ReplicaSet's Deployment (availability) and the
        // Services that select it (endpoints).
        let (rsq, dq, rs_cache) = (rs_queue.clone(), deploy_queue.clone(), replica_sets.clone());
        let (sq, svc_cache, slice_cache) =
            (service_queue.clone(), services.clone(), slices.clone());
        tasks.push(informer(
            &client,
            pods.clone(),
            pods_synced,
            move |pod: &Pod| {
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let (services, slices) = (
                    in_namespace(&svc_cache, &ns),
                    in_namespace(&slice_cache, &ns),
                );
                for name in endpoints::services_of_pod(&services, &slices, pod) {
                    sq.add(&format!("{ns}/{name}"));
                }
                match controller_of(&pod.metadata, "ReplicaSet") {
                    Some(rs_key) => {
                        rsq.add(&rs_key);
                        if let Some(rs) = read(&rs_cache).get(&rs_key) {
                            if let Some(d) = controller_of(&rs.metadata, "Deployment") {
                                dq.add(&d);
                            }
                        }
                    }
                    None => {
                        for rs in in_namespace(&rs_cache, &ns) {
                            rsq.add(&key_of(&rs.metadata));
                        }
                    }
                }
            },
        ));
    }
    {
        let (rsq, dq, d_cache) = (rs_queue.clone(), deploy_queue.clone(), deployments.clone());
        tasks.push(informer(
            &client,
            replica_sets.clone(),
            rs_synced,
            move |rs: &ReplicaSet| {
                rsq.add(&key_of(&rs.metadata));
                match controller_of(&rs.metadata, "Deployment") {
                    Some(d) => dq.add(&d),
                    None => {
                        let ns = rs.metadata.namespace.clone().unwrap_or_default();
                        for d in in_namespace(&d_cache, &ns) {
                            dq.add(&key_of(&d.metadata));
                        }
                    }
                }
            },
        ));
    }
    {
        let dq = deploy_queue.clone();
        tasks.push(informer(
            &client,
            deployments.clone(),
            d_synced,
            move |d: &Deployment| {
                dq.add(&key_of(&d.metadata));
            },
        ));
    }
    tasks.push(informer(&client, nodes.clone(), n_synced, |_: &Node| {}));
    {
        // A Service's own Endpoints and slices are named after it (the slices by label), so
        // a change to them, by hand or by a deletion, puts the Service back in the queue.
        let sq = service_queue.clone();
        tasks.push(informer(
            &client,
            services.clone(),
            svc_synced,
            move |svc: &Service| sq.add(&key_of(&svc.metadata)),
        ));
        let sq = service_queue.clone();
        tasks.push(informer(
            &client,
            endpoints_cache.clone(),
            ep_synced,
            move |ep: &Endpoints| sq.add(&key_of(&ep.metadata)),
        ));
        let sq = service_queue.clone();
        tasks.push(informer(
            &client,
            slices.clone(),
            slice_synced,
            move |slice: &EndpointSlice| {
                if let Some(service) = endpoints::service_of_slice(slice) {
                    let ns = slice.metadata.namespace.as_deref().unwrap_or("");
                    sq.add(&format!("{ns}/{service}"));
                }
            },
        ));
    }

    // Act only on complete caches.
    for ready in [
        &mut pods_ready,
        &mut rs_ready,
        &mut d_ready,
        &mut n_ready,
        &mut svc_ready,
        &mut ep_ready,
        &mut slice_ready,
    ] {
        tokio::select! {
            _ = ready.wait_for(|r| *r) => {}
            _ = stop.wait_for(|s| *s) => {
                for task in tasks { task.abort(); }
                return;
            }
        }
    }
    tracing::info!("controllers: caches synced");

    let recorder = |component: &str| Recorder::new(client.clone(), component, None);
    let mut workers = Vec::new();

    // ReplicaSet worker.
    {
        let (client, queue, pods, caches_rs) = (
            client.clone(),
            rs_queue.clone(),
            pods.clone(),
            replica_sets.clone(),
        );
        let recorder = recorder("replicaset-controller");
        workers.push(tokio::spawn(async move {
            let mut names = NameGenerator::from_seed(seed());
            let mut expectations: HashMap<String, Expectation> = HashMap::new();
            loop {
                let key = queue.next().await;
                let rs = read(&caches_rs).get(&key).cloned();
                if let Some(rs) = rs {
                    if let Some(wait) = expectations.get(&key) {
                        if !satisfied(wait, &pods) && Instant::now() < wait.until {
                            queue.done(&key);
                            queue.add_after(&key, Duration::from_millis(200));
                            continue;
                        }
                    }
                    expectations.remove(&key);
                    let ns = rs.metadata.namespace.clone().unwrap_or_default();
                    let plan = replicaset::reconcile(
                        &rs,
                        &in_namespace(&pods, &ns),
                        Timestamp::now(),
                        &mut names,
                    );
                    let expectation = Expectation {
                        created: plan
                            .iter()
                            .filter_map(|a| match a {
                                Action::Create(Object::Pod(p)) => p.metadata.name.clone(),
                                _ => None,
                            })
                            .collect(),
                        deleted: plan
                            .iter()
                            .filter_map(|a| match a {
                                Action::Delete { uid, .. } => Some(uid.clone()),
                                _ => None,
                            })
                            .collect(),
                        until: Instant::now() + Duration::from_secs(30),
                    };
                    let expects =
                        !expectation.created.is_empty() || !expectation.deleted.is_empty();
                    if apply_plan(&client, &recorder, &queue, &key, plan).await && expects {
                        expectations.insert(key.clone(), expectation);
                    }
                }
                queue.done(&key);
            }
        }));
    }

    // Deployment worker.
    {
        let (client, queue) = (client.clone(), deploy_queue.clone());
        let (pods, rs, ds) = (pods.clone(), replica_sets.clone(), deployments.clone());
        let recorder = recorder("deployment-controller");
        workers.push(tokio::spawn(async move {
            loop {
                let key = queue.next().await;
                let d = read(&ds).get(&key).cloned();
                if let Some(d) = d {
                    let ns = d.metadata.namespace.clone().unwrap_or_default();
                    let plan = deployment::reconcile(
                        &d,
                        &in_namespace(&rs, &ns),
                        &in_namespace(&pods, &ns),
                        Timestamp::now(),
                    );
                    apply_plan(&client, &recorder, &queue, &key, plan).await;
                }
                queue.done(&key);
            }
        }));
    }

    // Endpoints worker. Kubernetes records no event per pass here, and neither does skiff;
    // failed writes are logged by `apply_plan` and retried with back-off.
    {
        let (client, queue) = (client.clone(), service_queue.clone());
        let (pods, svcs, eps, slices) = (
            pods.clone(),
            services.clone(),
            endpoints_cache.clone(),
            slices.clone(),
        );
        let recorder = recorder("endpoint-controller");
        workers.push(tokio::spawn(async move {
            loop {
                let key = queue.next().await;
                let svc = read(&svcs).get(&key).cloned();
                if let Some(svc) = svc {
                    let ns = svc.metadata.namespace.clone().unwrap_or_default();
                    let current = read(&eps).get(&key).cloned();
                    let plan = endpoints::reconcile(
                        &svc,
                        &in_namespace(&pods, &ns),
                        current.as_ref(),
                        &in_namespace(&slices, &ns),
                    );
                    apply_plan(&client, &recorder, &queue, &key, plan).await;
                }
                queue.done(&key);
            }
        }));
    }

    // Node lifecycle and garbage collection: periodic passes over the whole caches.
    {
        let client = client.clone();
        let (pods, rs, ds, nodes) = (
            pods.clone(),
            replica_sets.clone(),
            deployments.clone(),
            nodes.clone(),
        );
        let (svcs, eps, slices) = (services.clone(), endpoints_cache.clone(), slices.clone());
        let node_recorder = recorder("node-controller");
        let gc_recorder = recorder("garbage-collector");
        let idle = WorkQueue::new();
        workers.push(tokio::spawn(async move {
            let mut tick = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                tick += 1;
                // Borrowed from the caches, not cloned: at 1,000 nodes and 10,000 pods a
                // clone of everything every second was most of the leader's CPU.
                let plan = {
                    let (nodes, pods) = (read(&nodes), read(&pods));
                    let all_nodes: Vec<&Node> = nodes.values().collect();
                    let all_pods: Vec<&Pod> = pods.values().collect();
                    // The table as it is, with its start (`nodelifecycle::TAKEOVER`): which
                    // nodes not heard from since then get a grace period is the controller's
                    // decision (only those it finds Ready).
                    let heartbeats = (config.heartbeats)();
                    nodelifecycle::reconcile(
                        &all_nodes,
                        &heartbeats,
                        &all_pods,
                        Timestamp::now(),
                        &config.node_lifecycle,
                    )
                };
                let plan: Vec<Action> = plan
                    .into_iter()
                    .filter(|a| !matches!(a, Action::RequeueAfter { .. }))
                    .collect();
                apply_plan(&client, &node_recorder, &idle, "nodes", plan).await;
                if tick.is_multiple_of(2) {
                    // Dependents are read before their owners: an owner created after its
                    // snapshot would make a fresh dependent look orphaned.
                    let mut objects: Vec<Value> = Vec::new();
                    objects.extend(as_values(&eps));
                    objects.extend(as_values(&slices));
                    objects.extend(as_values(&pods));
                    objects.extend(as_values(&rs));
                    objects.extend(as_values(&ds));
                    objects.extend(as_values(&svcs));
                    let kinds = [
                        "Pod",
                        "ReplicaSet",
                        "Deployment",
                        "Service",
                        "Endpoints",
                        "EndpointSlice",
                    ];
                    let plan = gc::reconcile(&objects, &kinds);
                    apply_plan(&client, &gc_recorder, &idle, "gc", plan).await;
                }
            }
        }));
    }

    let _ = stop.wait_for(|s| *s).await;
    for task in tasks.into_iter().chain(workers) {
        task.abort();
    }
    tracing::info!("controllers stopped");
}

/// Every object of a cache as the JSON the garbage collector reads: type and the metadata
/// that links owners and dependents, not the whole object (serialising every pod in full
/// every other second was a large part of the leader's CPU at 10,000 pods).
fn as_values<K>(cache: &Cache<K>) -> Vec<Value>
where
    K: Clone + k8s_openapi::Resource + Metadata<Ty = ObjectMeta>,
{
    read(cache).values().map(gc_view).collect()
}

fn gc_view<K: k8s_openapi::Resource + Metadata<Ty = ObjectMeta>>(object: &K) -> Value {
    let meta = object.metadata();
    serde_json::json!({
        "apiVersion": K::API_VERSION,
        "kind": K::KIND,
        "metadata": {
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
            "resourceVersion": meta.resource_version,
            "ownerReferences": meta.owner_references,
            "deletionTimestamp": meta.deletion_timestamp,
            "finalizers": meta.finalizers,
        },
    })
}

fn seed() -> u64 {
    Timestamp::now().as_nanosecond() as u64
}

/// Whether the pod cache shows every creation and deletion a ReplicaSet expects.
fn satisfied(wait: &Expectation, pods: &Cache<Pod>) -> bool {
    let cache = read(pods);
    let names: std::collections::HashSet<&str> = cache
        .values()
        .filter_map(|p| p.metadata.name.as_deref())
        .collect();
    let live_uids: std::collections::HashSet<&str> = cache
        .values()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.uid.as_deref())
        .collect();
    wait.created.iter().all(|n| names.contains(n.as_str()))
        && wait.deleted.iter().all(|u| !live_uids.contains(u.as_str()))
}

/// Applies a plan in order; stops at the first failure and requeues `key` with back-off.
/// Returns whether every action was applied.
async fn apply_plan(
    client: &Client,
    recorder: &Recorder,
    queue: &WorkQueue,
    key: &str,
    plan: Vec<Action>,
) -> bool {
    for action in plan {
        match apply(client, recorder, queue, key, &action).await {
            Ok(()) => {}
            Err(e) if matches!(action, Action::Delete { .. }) && e.is_not_found() => {}
            // A conflict or AlreadyExists only means the cache was behind the store.
            Err(e) if e.is_conflict() => {
                tracing::debug!(%key, %action, error = %e, "controller action conflicted; requeued");
                queue.requeue_with_backoff(key);
                return false;
            }
            Err(e) => {
                tracing::warn!(%key, %action, error = %e, "controller action failed; requeued");
                queue.requeue_with_backoff(key);
                return false;
            }
        }
    }
    queue.forget(key);
    true
}

async fn apply(
    client: &Client,
    recorder: &Recorder,
    queue: &WorkQueue,
    key: &str,
    action: &Action,
) -> Result<(), skiff_client::Error> {
    match action {
        Action::Create(object) => create(client, object).await,
        Action::Update(object) => replace(client, object, false).await,
        Action::UpdateStatus(object) => replace(client, object, true).await,
        Action::Delete {
            object,
            uid,
            propagation,
        } => {
            let options = DeleteOptions {
                uid: Some(uid.clone()).filter(|u| !u.is_empty()),
                propagation_policy: propagation.map(|p| {
                    match p {
                        Propagation::Background => "Background",
                        Propagation::Foreground => "Foreground",
                        Propagation::Orphan => "Orphan",
                    }
                    .to_string()
                }),
                ..DeleteOptions::default()
            };
            let ns = object.namespace.as_deref().filter(|n| !n.is_empty());
            let name = object.name.as_deref().unwrap_or_default();
            macro_rules! delete_as {
                ($($kind:literal => $t:ty),* $(,)?) => {
                    match object.kind.as_deref() {
                        $(Some($kind) => client.delete::<$t>(ns, name, &options).await.map(|_| ()),)*
                        other => Err(skiff_client::Error::Config(format!(
                            "cannot delete kind {other:?}"
                        ))),
                    }
                };
            }
            delete_as!(
                "Pod" => Pod,
                "ReplicaSet" => ReplicaSet,
                "Deployment" => Deployment,
                "Node" => Node,
                "Service" => Service,
                "Endpoints" => Endpoints,
                "EndpointSlice" => EndpointSlice,
            )
        }
        Action::Event(note) => {
            recorder.emit(
                note.regarding.clone(),
                note.type_,
                &note.reason,
                &note.message,
            );
            Ok(())
        }
        Action::RequeueAfter { after, .. } => {
            queue.add_after(key, *after);
            Ok(())
        }
    }
}

async fn create(client: &Client, object: &Object) -> Result<(), skiff_client::Error> {
    // Cluster-scoped objects (Nodes) have no namespace, so this is right for them too.
    macro_rules! post {
        ($o:expr) => {
            client
                .create($o.metadata.namespace.as_deref(), &**$o)
                .await
                .map(|_| ())
        };
    }
    match object {
        Object::Pod(o) => post!(o),
        Object::ReplicaSet(o) => post!(o),
        Object::Deployment(o) => post!(o),
        Object::Node(o) => post!(o),
        Object::Endpoints(o) => post!(o),
        Object::EndpointSlice(o) => post!(o),
        Object::Dynamic(_) => Err(skiff_client::Error::Config(
            "cannot create a dynamic object".into(),
        )),
    }
}

async fn replace(
    client: &Client,
    object: &Object,
    status: bool,
) -> Result<(), skiff_client::Error> {
    macro_rules! put {
        ($o:expr) => {{
            let (ns, name) = (
                $o.metadata.namespace.as_deref(),
                $o.metadata.name.as_deref(),
            );
            let name = name.unwrap_or_default();
            if status {
                client.replace_status(ns, name, &**$o).await.map(|_| ())
            } else {
                client.replace(ns, name, &**$o).await.map(|_| ())
            }
        }};
    }
    match object {
        Object::Pod(o) => put!(o),
        Object::ReplicaSet(o) => put!(o),
        Object::Deployment(o) => put!(o),
        Object::Node(o) => put!(o),
        Object::Endpoints(o) => put!(o),
        Object::EndpointSlice(o) => put!(o),
        Object::Dynamic(value) => {
            // A generic update: the garbage collector editing ownerReferences or finalizers of
            // an object it sees only by its metadata. A merge patch of exactly those two lists
            // (null removes one), with the resourceVersion as a compare-and-swap precondition,
            // to the object's own URL built from its apiVersion and kind.
            let url = dynamic_url(client, value)
                .ok_or_else(|| skiff_client::Error::Config("object of unknown kind".into()))?;
            let meta = |field: &str| {
                value
                    .pointer(&format!("/metadata/{field}"))
                    .cloned()
                    .unwrap_or(Value::Null)
            };
            let patch = serde_json::json!({"metadata": {
                "resourceVersion": meta("resourceVersion"),
                "ownerReferences": meta("ownerReferences"),
                "finalizers": meta("finalizers"),
            }});
            let body = ("application/merge-patch+json", serde_json::to_vec(&patch)?);
            client
                .request::<Value>(skiff_client::Method::PATCH, &url, &[], Some(body))
                .await
                .map(|_| ())
        }
    }
}

/// The URL of a dynamic object, for the kinds the garbage collector edits.
fn dynamic_url(client: &Client, value: &Value) -> Option<String> {
    let kind = value.get("kind")?.as_str()?;
    let ns = value.pointer("/metadata/namespace").and_then(Value::as_str);
    let name = value.pointer("/metadata/name")?.as_str()?;
    let collection = match kind {
        "Pod" => client.collection_url::<Pod>(ns),
        "ReplicaSet" => client.collection_url::<ReplicaSet>(ns),
        "Deployment" => client.collection_url::<Deployment>(ns),
        "Service" => client.collection_url::<Service>(ns),
        "Endpoints" => client.collection_url::<Endpoints>(ns),
        "EndpointSlice" => client.collection_url::<EndpointSlice>(ns),
        _ => return None,
    };
    Some(format!("{collection}/{name}"))
}

//! The scheduler loop: watch nodes and pods into a [`Scheduler`], decide in batches, bind.
//!
//! Bindings go through `POST pods/NAME/binding` (many at once: the store coalesces concurrent
//! writes into few Raft entries). The decision travels with the binding as the annotation
//! [`EXPLAIN_ANNOTATION`], so `skiff explain pod NAME` can show it later, on any member. An
//! unschedulable pod gets `PodScheduled=False` (reason `Unschedulable`, Kubernetes' message)
//! and a `FailedScheduling` event, written only when the message changes.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::json;
use skiff_client::events::{object_ref, EventType, Recorder};
use skiff_client::informer::Informers;
use skiff_client::watcher::Event;
use skiff_client::Client;
use tokio::sync::{watch, Notify};

use crate::decision::Decision;
use crate::scheduler::{PodKey, Scheduler};
use crate::score::Weights;

/// The pod annotation that records why the pod went where it went (a [`Decision`], with the
/// best ten nodes and every filtered one).
pub const EXPLAIN_ANNOTATION: &str = "scheduler.skiff.io/decision";

/// Pods decided per batch.
const BATCH: usize = 512;

/// Runs until `stop` turns true, fed by the leader's shared stores of pods and nodes.
pub async fn run(
    client: Client,
    informers: Informers,
    weights: Weights,
    mut stop: watch::Receiver<bool>,
) {
    let state = Arc::new(Mutex::new(Scheduler::new(weights)));
    let wake = Arc::new(Notify::new());
    let recorder = Recorder::new(client.clone(), "default-scheduler", None);

    // Claims, volumes and classes: recomputed as a whole on any change (there are tens).
    let claim_stores = (
        informers.store::<PersistentVolumeClaim>(),
        informers.store::<PersistentVolume>(),
        informers.store::<StorageClass>(),
    );
    let refresh_claims = {
        let (state, wake, stores) = (state.clone(), wake.clone(), claim_stores.clone());
        Arc::new(move || {
            let claims =
                crate::claims::from_objects(&stores.0.list(), &stores.1.list(), &stores.2.list());
            state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set_claims(claims);
            wake.notify_one();
        })
    };
    let refresh = refresh_claims.clone();
    claim_stores
        .0
        .on_change(move |_: &PersistentVolumeClaim| refresh());
    let refresh = refresh_claims.clone();
    claim_stores
        .1
        .on_change(move |_: &PersistentVolume| refresh());
    let refresh = refresh_claims.clone();
    claim_stores.2.on_change(move |_: &StorageClass| refresh());

    let mut pods = informers.store::<Pod>().subscribe();
    let mut nodes = informers.store::<Node>().subscribe();
    let feeder = {
        let (state, wake) = (state.clone(), wake.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    event = pods.recv() => {
                        let Some(event) = event else { return };
                        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                        match event {
                            Event::Applied(pod) => s.upsert_pod(pod),
                            Event::Deleted(pod) => s.remove_pod(&PodKey::of(&pod)),
                            Event::Restarted(list) => s.restart_pods(list),
                        }
                    }
                    event = nodes.recv() => {
                        let Some(event) = event else { return };
                        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                        match event {
                            Event::Applied(node) => s.upsert_node(&node),
                            Event::Deleted(node) => s.remove_node(node.metadata.name.as_deref().unwrap_or("")),
                            Event::Restarted(list) => s.restart_nodes(&list),
                        }
                    }
                }
                wake.notify_one();
            }
        })
    };

    // Failed bindings put their pods back at once; back off between rounds while they keep
    // failing (an API server that is down must not be hammered).
    let mut backoff = Duration::ZERO;
    loop {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        loop {
            let batch: Vec<_> = {
                let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                let decided = s.schedule_pending(BATCH);
                decided
                    .into_iter()
                    .filter_map(|(key, decision)| {
                        Some((key.clone(), s.pod(&key)?.clone(), decision))
                    })
                    .collect()
            };
            if batch.is_empty() {
                break;
            }
            let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let work = batch.into_iter().map(|(key, pod, decision)| {
                let (client, recorder, state) = (client.clone(), recorder.clone(), state.clone());
                let failures = failures.clone();
                async move {
                    match decision.node() {
                        Some(node) => {
                            let waiting = state
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .claims_waiting_for(&pod);
                            let bound = match select_node(&client, &pod, &waiting, node).await {
                                Ok(()) => bind(&client, &pod, node, &decision).await,
                                Err(e) => Err(e),
                            };
                            if let Err(e) = bound {
                                tracing::debug!(pod = %decision.pod, error = %e, "binding failed; will retry");
                                failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                state.lock().unwrap_or_else(|e| e.into_inner()).forget(&key);
                            } else {
                                recorder.emit(
                                    object_ref(pod.as_ref()),
                                    EventType::Normal,
                                    "Scheduled",
                                    &format!("Successfully assigned {} to {node}", decision.pod),
                                );
                            }
                        }
                        None => report_unschedulable(&client, &recorder, &pod, &decision).await,
                    }
                }
            });
            futures::future::join_all(work).await;
            if failures.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                backoff = (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
                tokio::time::sleep(backoff).await;
            } else {
                backoff = Duration::ZERO;
            }
        }
    }
    feeder.abort();
}

/// The decision as stored on the pod: the ten best nodes and the first fifty refused ones.
fn explain_record(decision: &Decision) -> String {
    serde_json::to_string(&decision.trimmed(10, 50)).unwrap_or_default()
}

async fn bind(
    client: &Client,
    pod: &Pod,
    node: &str,
    decision: &Decision,
) -> Result<(), skiff_client::Error> {
    let ns = pod.metadata.namespace.as_deref();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "annotations": {EXPLAIN_ANNOTATION: explain_record(decision)}},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    match client
        .post_subresource::<Pod>(ns, &name, "binding", &binding)
        .await
    {
        Ok(_) => Ok(()),
        // A server without the binding subresource: the same write as a compare-and-swap
        // patch of spec.nodeName.
        Err(e)
            if matches!(e.code(), Some(404) | Some(405)) && !e.to_string().contains("pods \"") =>
        {
            let patch = json!({
                "metadata": {
                    "resourceVersion": pod.metadata.resource_version,
                    "annotations": {EXPLAIN_ANNOTATION: explain_record(decision)},
                },
                "spec": {"nodeName": node},
            });
            client
                .merge_patch::<Pod>(ns, &name, None, &patch)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Tells the provisioner where the pod goes: each claim that waits for its first consumer
/// gets the `volume.kubernetes.io/selected-node` annotation (left alone once set).
async fn select_node(
    client: &Client,
    pod: &Pod,
    claims: &[String],
    node: &str,
) -> Result<(), skiff_client::Error> {
    let ns = pod.metadata.namespace.as_deref();
    for claim in claims {
        let current = client.get::<PersistentVolumeClaim>(ns, claim).await?;
        let selected = current
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::claims::SELECTED_NODE));
        if selected.is_some() {
            continue;
        }
        let patch = json!({"metadata": {
            "resourceVersion": current.metadata.resource_version,
            "annotations": {crate::claims::SELECTED_NODE: node},
        }});
        client
            .merge_patch::<PersistentVolumeClaim>(ns, claim, None, &patch)
            .await?;
    }
    Ok(())
}

/// `PodScheduled=False` with the message, and a FailedScheduling event — once per message.
async fn report_unschedulable(
    client: &Client,
    recorder: &Recorder,
    pod: &Pod,
    decision: &Decision,
) {
    let message = decision.message().unwrap_or_default().to_string();
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        .and_then(|c| c.message.clone());
    if current.as_deref() == Some(message.as_str()) {
        return;
    }
    let patch = json!({
        "metadata": {"annotations": {EXPLAIN_ANNOTATION: explain_record(decision)}},
    });
    let ns = pod.metadata.namespace.as_deref();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let _ = client.merge_patch::<Pod>(ns, &name, None, &patch).await;
    let status = json!({"status": {
        "phase": "Pending",
        "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        }]
    }});
    let _ = client
        .merge_patch::<Pod>(ns, &name, Some("status"), &status)
        .await;
    recorder.emit(
        object_ref(pod),
        EventType::Warning,
        "FailedScheduling",
        &message,
    );
}

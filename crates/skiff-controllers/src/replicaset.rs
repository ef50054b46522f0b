//! The ReplicaSet controller: keep exactly `spec.replicas` pods alive.
//!
//! One pass, as a script:
//! 1. **Claim** pods: the active pods of the namespace that match the selector and have no
//!    controller are adopted; pods we control that no longer match are released
//!    ([`crate::owners`]). Finished pods and pods being deleted do not count: they will not
//!    serve again, so they are replaced.
//! 2. **Create or delete** the difference, at most [`BURST_REPLICAS`] per pass so one huge
//!    `kubectl scale` cannot flood the API. New pods are named `<rs>-<5 random chars>` and
//!    carry the template's labels, annotations and spec and a controller reference to us.
//!    Scale-down deletes the cheapest pods first ([`crate::pod_rank`]).
//! 3. **Status**: replicas, fullyLabeledReplicas, readyReplicas, availableReplicas,
//!    observedGeneration — written only when something changed.
//! 4. If a ready pod will become available when `minReadySeconds` have passed, ask to be run
//!    again then (no watch event marks that moment).
//!
//! Kubernetes creates in "slow start" batches (1, 2, 4, …, stopping at the first error) to
//! avoid a storm of failing creates when, say, a quota is exhausted. Here the plan lists all
//! creates of the pass and the loop stops at the first failure (see the crate docs), which
//! has the same effect with the same bound.
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_api::selector::LabelSelector;

use skiff_client::informer::{key_of, Store};

use crate::child_names::NameGenerator;
use crate::controller::{Context, Controller};
use crate::expectations::{self, Expected};
use crate::owners::{self, Claim};
use crate::workqueue::WorkQueue;
use crate::{pod_rank, pods, reference_to, wait_for, Action, Object};

/// The most pods one pass creates or deletes (Kubernetes' `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;

/// Plans one pass for `rs`. `pods` are the pods of its namespace (others are ignored);
/// `names` supplies the random part of new pod names.
pub fn reconcile(
    rs: &ReplicaSet,
    pods: &[Pod],
    now: Timestamp,
    names: &mut NameGenerator,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let spec = rs.spec.as_ref();
    // Validation guarantees a valid, non-empty selector; without one there is nothing safe to do.
    let Some(selector) = spec
        .and_then(|s| LabelSelector::from_k8s(&s.selector).ok())
        .filter(|s| !s.is_empty())
    else {
        return actions;
    };
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let deleting = rs.metadata.deletion_timestamp.is_some();

    // 1. Claim.
    let mut owned: Vec<&Pod> = Vec::new();
    for pod in pods
        .iter()
        .filter(|p| p.metadata.namespace == rs.metadata.namespace && pods::is_active(p))
    {
        match owners::claim(&uid, deleting, &selector, &pod.metadata) {
            Claim::Owned => owned.push(pod),
            Claim::Adopt => {
                let mut adopted = pod.clone();
                adopted.metadata =
                    owners::with_controller(&pod.metadata, owners::controller_ref(rs));
                actions.push(Action::Update(Object::Pod(Box::new(adopted))));
                owned.push(pod);
            }
            Claim::Release => {
                let mut released = pod.clone();
                released.metadata = owners::without_owner(&pod.metadata, &uid);
                actions.push(Action::Update(Object::Pod(Box::new(released))));
            }
            Claim::Ignore => {}
        }
    }

    // 2. Create or delete the difference. A ReplicaSet being deleted only winds down.
    let want = spec.and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
    if !deleting {
        if owned.len() < want {
            for _ in 0..(want - owned.len()).min(BURST_REPLICAS) {
                let pod = pod_from_template(rs, names);
                let name = pod.metadata.name.clone().unwrap_or_default();
                actions.push(Action::Create(Object::Pod(Box::new(pod))));
                actions.push(Action::normal_event(
                    reference_to(rs),
                    "SuccessfulCreate",
                    format!("Created pod: {name}"),
                ));
            }
        } else if owned.len() > want {
            let excess = (owned.len() - want).min(BURST_REPLICAS);
            for pod in pod_rank::deletion_order(owned.clone())
                .into_iter()
                .take(excess)
            {
                let name = pod.metadata.name.clone().unwrap_or_default();
                actions.push(Action::delete(reference_to(pod), None));
                actions.push(Action::normal_event(
                    reference_to(rs),
                    "SuccessfulDelete",
                    format!("Deleted pod: {name}"),
                ));
            }
        }
    }

    // 3. Status, from the pods as they are now (this pass's creates are not running yet).
    let status = status_for(rs, &owned, now);
    if normalised(rs.status.clone().unwrap_or_default()) != status {
        let mut updated = rs.clone();
        updated.status = Some(status);
        actions.push(Action::UpdateStatus(Object::ReplicaSet(Box::new(updated))));
    }

    // 4. Wake up when the next ready pod turns available.
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let next = owned
        .iter()
        .filter_map(|p| pods::seconds_until_available(p, min_ready, now))
        .min_by(f64::total_cmp);
    if let Some(seconds) = next {
        actions.push(Action::RequeueAfter {
            after: wait_for(seconds),
            why: format!("a pod becomes available after minReadySeconds ({min_ready}s)"),
        });
    }
    actions
}

/// A new pod for `rs`: the template's metadata and spec, a generated name and a controller
/// reference (Kubernetes' `GetPodFromTemplate`).
pub fn pod_from_template(rs: &ReplicaSet, names: &mut NameGenerator) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    let generate_name = format!("{}-", rs.metadata.name.as_deref().unwrap_or("pod"));
    Pod {
        metadata: ObjectMeta {
            name: Some(names.name(&generate_name)),
            generate_name: Some(generate_name),
            namespace: rs.metadata.namespace.clone(),
            labels: template_meta.labels,
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: Some(vec![owners::controller_ref(rs)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The status `rs` should have, given the active pods it owns.
fn status_for(rs: &ReplicaSet, owned: &[&Pod], now: Timestamp) -> ReplicaSetStatus {
    let spec = rs.spec.as_ref();
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    // "Fully labelled": carries every label of the template, not just the selector's. The
    // deployment controller once used this to wait for relabelling; kubectl still shows it.
    let fully_labeled = owned
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })
        .count();
    let ready = owned.iter().filter(|p| pods::is_ready(p)).count();
    let available = owned
        .iter()
        .filter(|p| pods::is_available(p, min_ready, now))
        .count();
    normalised(ReplicaSetStatus {
        replicas: count(owned.len()),
        fully_labeled_replicas: Some(count(fully_labeled)),
        ready_replicas: Some(count(ready)),
        available_replicas: Some(count(available)),
        observed_generation: rs.metadata.generation,
        ..rs.status.clone().unwrap_or_default()
    })
}

/// Kubernetes omits zero counts on the wire (`omitempty`); so do we, so that a stored status
/// and a computed one compare equal.
fn normalised(mut status: ReplicaSetStatus) -> ReplicaSetStatus {
    for field in [
        &mut status.fully_labeled_replicas,
        &mut status.ready_replicas,
        &mut status.available_replicas,
    ] {
        if *field == Some(0) {
            *field = None;
        }
    }
    status
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The ReplicaSet controller in the loop's shape: keyed by ReplicaSet, woken by changes of
/// the ReplicaSet and of its pods (an orphan pod wakes every ReplicaSet of its namespace,
/// which might adopt it). It waits for its pod creations and deletions to show in the pod
/// store before it runs again for the same ReplicaSet ([`crate::expectations`]).
pub struct ReplicaSetController {
    replica_sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    names: NameGenerator,
}

impl Controller for ReplicaSetController {
    const NAME: &'static str = "replicaset-controller";

    fn new(ctx: &Context, queue: &WorkQueue) -> Self {
        let replica_sets = ctx.informers.store::<ReplicaSet>();
        let pods = ctx.informers.store::<Pod>();
        let q = queue.clone();
        replica_sets.on_change(move |rs: &ReplicaSet| q.add(&key_of(&rs.metadata)));
        let (q, rs_store) = (queue.clone(), replica_sets.clone());
        pods.on_change(move |pod: &Pod| {
            match owners::controller_key(&pod.metadata, "ReplicaSet") {
                Some(key) => q.add(&key),
                None => {
                    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
                    for key in rs_store.keys_in_namespace(ns) {
                        q.add(&key);
                    }
                }
            }
        });
        let seed = Timestamp::now().as_nanosecond() as u64;
        ReplicaSetController {
            replica_sets,
            pods,
            names: NameGenerator::from_seed(seed),
        }
    }

    fn reconcile(&mut self, key: &str, now: Timestamp) -> Vec<Action> {
        let Some(rs) = self.replica_sets.get(key) else {
            return Vec::new();
        };
        let ns = rs.metadata.namespace.as_deref().unwrap_or("");
        reconcile(&rs, &self.pods.in_namespace(ns), now, &mut self.names)
    }

    fn expectations(&self, plan: &[Action]) -> Vec<Expected> {
        Expected::of_plan(plan, expectations::pod_churn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2024-01-01T00:10:00Z".parse().expect("time")
    }

    fn rs(replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web-7d4b9c8f5", "namespace": "default", "uid": "rs-uid",
                         "generation": 2, "resourceVersion": "10"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web", "tier": "front"},
                                 "annotations": {"note": "hi"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        }))
        .expect("rs")
    }

    /// A ready, running pod owned by `rs` (`owner: None` for an orphan).
    fn pod(name: &str, owner: Option<&str>) -> Pod {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                         "labels": {"app": "web", "tier": "front"},
                         "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:01:00Z"}]},
        }))
        .expect("pod");
        if let Some(uid) = owner {
            let mut owner_rs = rs(0);
            owner_rs.metadata.uid = Some(uid.into());
            p.metadata.owner_references = Some(vec![owners::controller_ref(&owner_rs)]);
        }
        p
    }

    fn creates(actions: &[Action]) -> Vec<Pod> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Create(Object::Pod(p)) => Some((**p).clone()),
                _ => None,
            })
            .collect()
    }

    fn deleted(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete { object, .. } => object.name.clone(),
                _ => None,
            })
            .collect()
    }

    fn status_update(actions: &[Action]) -> Option<ReplicaSetStatus> {
        actions.iter().find_map(|a| match a {
            Action::UpdateStatus(Object::ReplicaSet(rs)) => rs.status.clone(),
            _ => None,
        })
    }

    fn events(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Event(e) => Some(format!("{}: {}", e.reason, e.message)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn creates_missing_pods_from_the_template() {
        let mut names = NameGenerator::from_seed(7);
        let actions = reconcile(&rs(3), &[pod("a", Some("rs-uid"))], now(), &mut names);
        let created = creates(&actions);
        assert_eq!(created.len(), 2);
        let p = &created[0];
        let name = p.metadata.name.clone().expect("name");
        assert!(name.starts_with("web-7d4b9c8f5-") && name.len() == "web-7d4b9c8f5-".len() + 5);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-7d4b9c8f5-"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(
            p.metadata.labels,
            rs(3).spec.and_then(|s| s.template?.metadata?.labels)
        );
        assert_eq!(
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("note"))
                .map(String::as_str),
            Some("hi")
        );
        let owner = owners::controller_of(&p.metadata).expect("controller");
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("ReplicaSet", "rs-uid")
        );
        assert_eq!(owner.block_owner_deletion, Some(true));
        assert_eq!(
            events(&actions)[0],
            format!("SuccessfulCreate: Created pod: {name}")
        );
        // Deterministic for the same seed.
        let again = reconcile(
            &rs(3),
            &[pod("a", Some("rs-uid"))],
            now(),
            &mut NameGenerator::from_seed(7),
        );
        assert_eq!(creates(&again), created);
    }

    #[test]
    fn finished_and_deleting_pods_do_not_count() {
        let mut failed = pod("failed", Some("rs-uid"));
        failed.status.as_mut().expect("status").phase = Some("Failed".into());
        let mut done = pod("done", Some("rs-uid"));
        done.status.as_mut().expect("status").phase = Some("Succeeded".into());
        let mut leaving = pod("leaving", Some("rs-uid"));
        leaving.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        let actions = reconcile(
            &rs(2),
            &[failed, done, leaving, pod("ok", Some("rs-uid"))],
            now(),
            &mut NameGenerator::from_seed(1),
        );
        assert_eq!(creates(&actions).len(), 1);
        assert!(deleted(&actions).is_empty());
        assert_eq!(status_update(&actions).map(|s| s.replicas), Some(1));
    }

    #[test]
    fn adopts_orphans_releases_the_relabelled_and_ignores_others() {
        let orphan = pod("orphan", None);
        let theirs = pod("theirs", Some("other-uid"));
        let mut relabelled = pod("relabelled", Some("rs-uid"));
        relabelled.metadata.labels = Some([("app".to_string(), "debug".to_string())].into());
        let mut elsewhere = pod("elsewhere", None);
        elsewhere.metadata.namespace = Some("kube-system".into());
        let actions = reconcile(
            &rs(1),
            &[orphan, theirs, relabelled, elsewhere],
            now(),
            &mut NameGenerator::from_seed(1),
        );
        let updates: Vec<(String, usize)> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Update(Object::Pod(p)) => Some((
                    p.metadata.name.clone().unwrap_or_default(),
                    p.metadata.owner_references.iter().flatten().count(),
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            updates,
            [("orphan".to_string(), 1), ("relabelled".to_string(), 0)]
        );
        // The adopted orphan fills the one replica: nothing to create or delete.
        assert!(creates(&actions).is_empty() && deleted(&actions).is_empty());
    }

    #[test]
    fn burst_limit_caps_one_pass() {
        let actions = reconcile(&rs(700), &[], now(), &mut NameGenerator::from_seed(1));
        assert_eq!(creates(&actions).len(), BURST_REPLICAS);
    }

    #[test]
    fn scale_down_deletes_the_cheapest_pods_with_uid_preconditions() {
        let mut unready = pod("unready", Some("rs-uid"));
        unready
            .status
            .as_mut()
            .expect("status")
            .conditions
            .as_mut()
            .expect("conds")[0]
            .status = "False".into();
        let mut pending = pod("pending", Some("rs-uid"));
        pending.spec.as_mut().expect("spec").node_name = None;
        let pods = [pod("old", Some("rs-uid")), unready, pending];
        let actions = reconcile(&rs(1), &pods, now(), &mut NameGenerator::from_seed(1));
        assert_eq!(deleted(&actions), ["pending", "unready"]);
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::Delete { uid, .. } if uid == "uid-pending")));
        assert!(events(&actions).contains(&"SuccessfulDelete: Deleted pod: unready".to_string()));
    }

    #[test]
    fn status_counts_and_is_written_only_when_changed() {
        let mut rs = rs(3);
        rs.spec.as_mut().expect("spec").min_ready_seconds = Some(60);
        let mut fresh = pod("fresh", Some("rs-uid"));
        // Ready 30 s ago: ready, not yet available.
        fresh
            .status
            .as_mut()
            .expect("status")
            .conditions
            .as_mut()
            .expect("c")[0]
            .last_transition_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2024-01-01T00:09:30Z".parse().expect("t"),
        ));
        let mut partial = pod("partial", Some("rs-uid"));
        partial.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        let pods = [pod("old", Some("rs-uid")), fresh, partial];
        let actions = reconcile(&rs, &pods, now(), &mut NameGenerator::from_seed(1));
        let status = status_update(&actions).expect("status changes");
        assert_eq!(status.replicas, 3);
        assert_eq!(status.fully_labeled_replicas, Some(2));
        assert_eq!(status.ready_replicas, Some(3));
        assert_eq!(status.available_replicas, Some(2));
        assert_eq!(status.observed_generation, Some(2));
        // Ask to come back when "fresh" has been ready for 60 s: 30 s from now.
        assert!(actions
            .iter()
            .any(|a| matches!(a, Action::RequeueAfter { after, .. } if after.as_secs() == 30)));
        // With that status stored, the next pass writes nothing.
        rs.status = Some(status);
        let again = reconcile(&rs, &pods, now(), &mut NameGenerator::from_seed(1));
        assert!(
            again
                .iter()
                .all(|a| matches!(a, Action::RequeueAfter { .. })),
            "{again:?}"
        );
    }

    #[test]
    fn a_replicaset_being_deleted_creates_nothing() {
        let mut rs = rs(3);
        rs.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        let actions = reconcile(&rs, &[], now(), &mut NameGenerator::from_seed(1));
        assert!(creates(&actions).is_empty());
    }
}

//! The StatefulSet controller: pods with stable names, stable storage and an order.
//!
//! One pass, as a script (Kubernetes' `StatefulSetControl`, in the small):
//! 1. **Revision.** The pod template is hashed; the ControllerRevision `<set>-<hash>` holds it
//!    (`data` is the strategic patch that puts it back, so `kubectl rollout undo` works), with
//!    a revision number one above the newest. That is the *update revision*; the *current
//!    revision* is what the pods ran before an update began.
//! 2. **Pods** `<set>-0 … <set>-(replicas-1)`. A missing one is created, after its claims
//!    (`<claim template>-<set>-<ordinal>`, made once and kept); a failed one is deleted, to be
//!    created again with the same name, claims and data. Under `OrderedReady` each waits for
//!    all before it to be Running and Ready, and one thing happens per pass; under `Parallel`
//!    everything happens at once.
//! 3. **Scale down**: the highest ordinal first; `OrderedReady` one at a time and only while the
//!    others are Ready. Claims stay (`whenScaled: Retain`) unless the policy says `Delete`.
//! 4. **Rolling update** (`RollingUpdate`): the highest ordinals at or above `partition` that
//!    are not at the update revision are deleted, as many as `maxUnavailable` (1) allows with
//!    the pods already unavailable counted; they come back at the new one. From the top. `OnDelete`: pods change only when someone deletes
//!    them.
//! 5. **Status**: replicas, ready, available, current and updated counts, both revisions; the
//!    current revision becomes the update revision once every pod runs it.
//! 6. **History**: revisions beyond `revisionHistoryLimit` that no pod runs are deleted, oldest
//!    first.
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{
    ControllerRevision, StatefulSet, StatefulSetStatus, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_client::informer::{key_of, Store};

use crate::controller::{Context, Controller};
use crate::deployment::hash::template_hash;
use crate::expectations::{self, Expected};
use crate::workqueue::WorkQueue;
use crate::{name_of, owners, pods, reference_to, revisions, Action, Object};

pub use crate::revisions::REVISION_LABEL;
/// The pod label with the pod's own name, so a Service can select one member.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The pod label with the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// What one pass of a StatefulSet sees: objects of its namespace.
pub struct View<'a> {
    pub pods: &'a [Pod],
    pub claims: &'a [PersistentVolumeClaim],
    pub revisions: &'a [ControllerRevision],
}

/// Plans one pass for `sts` (pure).
pub fn reconcile(sts: &StatefulSet, view: &View<'_>, now: Timestamp) -> Vec<Action> {
    let mut plan = Vec::new();
    if sts.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the pods; the claims are kept (or go with their
        // owner reference under `whenDeleted: Delete`).
        return plan;
    }
    let spec = sts.spec.clone().unwrap_or_default();
    let name = name_of(&sts.metadata);
    let uid = sts.metadata.uid.clone().unwrap_or_default();
    let here = reference_to(sts);

    // 1. Revisions.
    let owner = revisions::Owner {
        reference: owners::controller_ref(sts),
        namespace: sts.metadata.namespace.clone(),
        labels: spec.selector.match_labels.clone().unwrap_or_default(),
        uid: &uid,
    };
    let owned_revisions = revisions::owned(&owner, view.revisions);
    // The count is part of the hash from the first pass on (a set without a status hashes
    // as one whose count is 0), so the hash does not change when the first status is written.
    let hash = template_hash(
        &spec.template,
        Some(
            sts.status
                .as_ref()
                .and_then(|s| s.collision_count)
                .unwrap_or(0),
        ),
    );
    let update_revision = format!("{name}-{hash}");
    plan.extend(revisions::ensure_newest(
        &owner,
        &owned_revisions,
        &spec.template,
        &update_revision,
        &hash,
    ));
    let status = sts.status.clone().unwrap_or_default();
    let current_revision = status
        .current_revision
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| update_revision.clone());
    let current_template = owned_revisions
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(&current_revision))
        .and_then(|r| revisions::template_of(r));

    // 2. The pods we own, by ordinal.
    let mut by_ordinal: BTreeMap<i32, &Pod> = BTreeMap::new();
    for pod in view.pods {
        let ours = owners::controller_of(&pod.metadata).is_some_and(|o| o.uid == uid);
        if let (true, Some(ordinal)) = (ours, ordinal_of(&name, pod)) {
            by_ordinal.insert(ordinal, pod);
        }
    }
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let ordered = spec.pod_management_policy.as_deref() != Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref() != Some("OnDelete");
    let partition = strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let ready = |pod: &Pod| pods::phase(pod) == "Running" && pods::is_ready(pod);
    let mut busy = false; // OrderedReady: something is happening; do nothing more.

    for ordinal in 0..replicas {
        if busy && ordered {
            break;
        }
        match by_ordinal.get(&ordinal) {
            None => {
                let at_current = rolling && ordinal < partition;
                let template = match (&current_template, at_current) {
                    (Some(template), true) => template.clone(),
                    _ => spec.template.clone(),
                };
                let revision = if at_current && current_template.is_some() {
                    &current_revision
                } else {
                    &update_revision
                };
                for claim in claims_for(sts, ordinal) {
                    let exists = view
                        .claims
                        .iter()
                        .any(|c| c.metadata.name == claim.metadata.name);
                    if !exists {
                        let claim_name = name_of(&claim.metadata);
                        plan.push(Action::Create(Object::PersistentVolumeClaim(Box::new(
                            claim,
                        ))));
                        plan.push(Action::normal_event(
                            here.clone(),
                            "SuccessfulCreate",
                            format!(
                                "create Claim {claim_name} Pod {name}-{ordinal} in StatefulSet {name} success"
                            ),
                        ));
                    }
                }
                plan.push(Action::Create(Object::Pod(Box::new(pod_for(
                    sts, &template, ordinal, revision,
                )))));
                plan.push(Action::normal_event(
                    here.clone(),
                    "SuccessfulCreate",
                    format!("create Pod {name}-{ordinal} in StatefulSet {name} successful"),
                ));
                busy = true;
            }
            Some(pod) if pod.metadata.deletion_timestamp.is_some() => busy = true,
            Some(pod) if matches!(pods::phase(pod), "Failed" | "Succeeded") => {
                delete_pod(&mut plan, sts, pod);
                busy = true;
            }
            Some(pod) if !ready(pod) => busy = true,
            Some(_) => {}
        }
    }

    // 3. Scale down, from the top.
    let condemned: Vec<&Pod> = by_ordinal
        .range(replicas..)
        .rev()
        .map(|(_, pod)| *pod)
        .collect();
    let all_ready = by_ordinal.values().all(|p| ready(p));
    for pod in &condemned {
        if ordered && (busy || !all_ready) {
            break;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            busy = true;
            continue;
        }
        delete_pod(&mut plan, sts, pod);
        busy = true;
    }
    let when_scaled = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_scaled.as_deref())
        .unwrap_or("Retain");
    if when_scaled == "Delete" {
        for claim in view.claims {
            let Some(ordinal) = claim_ordinal(sts, claim) else {
                continue;
            };
            if ordinal >= replicas
                && !by_ordinal.contains_key(&ordinal)
                && claim.metadata.deletion_timestamp.is_none()
            {
                plan.push(Action::delete(reference_to(claim), None));
            }
        }
    }

    // 4. Rolling update, from the top: as many pods at a time as `maxUnavailable` allows (1
    //    by default) counting those already unavailable, so with the default one pod is
    //    replaced once every pod is Ready.
    if rolling && condemned.is_empty() {
        let unavailable = (0..replicas)
            .filter(|o| {
                by_ordinal
                    .get(o)
                    .is_none_or(|p| !ready(p) || p.metadata.deletion_timestamp.is_some())
            })
            .count();
        let budget = max_unavailable(&strategy, replicas).saturating_sub(unavailable);
        let stale: Vec<&Pod> = by_ordinal
            .range(partition..replicas)
            .rev()
            .map(|(_, pod)| *pod)
            .filter(|pod| {
                pod.metadata.deletion_timestamp.is_none()
                    && revisions::of_pod(pod) != Some(update_revision.as_str())
            })
            .take(budget)
            .collect();
        for pod in stale {
            delete_pod(&mut plan, sts, pod);
        }
    }

    // 5. Status.
    let active: Vec<&Pod> = by_ordinal
        .values()
        .copied()
        .filter(|p| pods::is_active(p))
        .collect();
    let count = |f: &dyn Fn(&Pod) -> bool| active.iter().filter(|p| f(p)).count() as i32;
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let updated = count(&|p| revisions::of_pod(p) == Some(update_revision.as_str()));
    let ready_count = count(&|p| pods::is_ready(p));
    let done = updated == replicas && ready_count == replicas && active.len() as i32 == replicas;
    let new_current = if done {
        update_revision.clone()
    } else {
        current_revision.clone()
    };
    let wanted = StatefulSetStatus {
        replicas: active.len() as i32,
        ready_replicas: Some(ready_count),
        available_replicas: Some(count(&|p| pods::is_available(p, min_ready, now))),
        current_replicas: Some(count(&|p| {
            revisions::of_pod(p) == Some(new_current.as_str())
        })),
        updated_replicas: Some(updated),
        current_revision: Some(new_current),
        update_revision: Some(update_revision.clone()),
        observed_generation: sts.metadata.generation,
        collision_count: Some(status.collision_count.unwrap_or(0)),
        conditions: status.conditions.clone(),
    };
    if sts.status.as_ref() != Some(&wanted) {
        let mut updated_sts = sts.clone();
        updated_sts.status = Some(wanted);
        plan.push(Action::UpdateStatus(Object::StatefulSet(Box::new(
            updated_sts,
        ))));
    }

    // 6. History.
    let in_use = |r: &ControllerRevision| {
        let n = r.metadata.name.as_deref();
        n == Some(current_revision.as_str())
            || n == Some(update_revision.as_str())
            || by_ordinal.values().any(|p| revisions::of_pod(p) == n)
    };
    plan.extend(revisions::prune(
        &owned_revisions,
        in_use,
        spec.revision_history_limit.unwrap_or(10),
    ));

    // A ready pod becomes available after minReadySeconds: no event marks that moment.
    plan.extend(pods::recheck_when_available(
        active.iter().copied(),
        min_ready,
        now,
    ));
    plan
}

/// How many pods a rolling update may have unavailable at once: `maxUnavailable` (a number,
/// or a percentage of the replicas rounded up), at least 1.
fn max_unavailable(strategy: &StatefulSetUpdateStrategy, replicas: i32) -> usize {
    let value = strategy
        .rolling_update
        .as_ref()
        .and_then(|r| r.max_unavailable.clone());
    let n = match value {
        None => 1,
        Some(IntOrString::Int(n)) => n,
        Some(IntOrString::String(text)) => {
            let percent: i64 = text.trim_end_matches('%').parse().unwrap_or(0);
            ((i64::from(replicas) * percent + 99) / 100) as i32
        }
    };
    n.max(1) as usize
}

/// Deletes one of the set's pods, with the event Kubernetes records.
fn delete_pod(plan: &mut Vec<Action>, sts: &StatefulSet, pod: &Pod) {
    plan.push(Action::delete(reference_to(pod), None));
    plan.push(Action::normal_event(
        reference_to(sts),
        "SuccessfulDelete",
        format!(
            "delete Pod {} in StatefulSet {} successful",
            name_of(&pod.metadata),
            name_of(&sts.metadata)
        ),
    ));
}

/// Pod `<set>-<ordinal>` from `template`: its labels plus the pod's name, index and revision,
/// hostname and subdomain for its DNS name, and a volume per claim template.
fn pod_for(sts: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
    let name = format!("{}-{ordinal}", name_of(&sts.metadata));
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(REVISION_LABEL.into(), revision.to_string());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    if let Some(service) = sts
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty())
    {
        spec.subdomain = Some(service);
    }
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    for claim in sts
        .spec
        .iter()
        .flat_map(|s| s.volume_claim_templates.iter().flatten())
    {
        let volume = name_of(&claim.metadata);
        volumes.retain(|v| v.name != volume);
        volumes.push(Volume {
            name: volume.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: format!("{volume}-{name}"),
                read_only: None,
            }),
            ..Volume::default()
        });
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: sts.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![owners::controller_ref(sts)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The claims of pod `ordinal`: one per claim template, named `<template>-<set>-<ordinal>`,
/// labelled with the set's selector; owned by the set only under `whenDeleted: Delete`.
fn claims_for(sts: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let spec = sts.spec.clone().unwrap_or_default();
    let set = name_of(&sts.metadata);
    let owned = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .and_then(|p| p.when_deleted.as_deref())
        == Some("Delete");
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|template| {
            let mut labels = template.metadata.labels.clone().unwrap_or_default();
            labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(format!("{}-{set}-{ordinal}", name_of(&template.metadata))),
                    namespace: sts.metadata.namespace.clone(),
                    labels: Some(labels),
                    annotations: template.metadata.annotations.clone(),
                    owner_references: owned.then(|| {
                        vec![OwnerReference {
                            controller: None,
                            block_owner_deletion: None,
                            ..owners::controller_ref(sts)
                        }]
                    }),
                    ..ObjectMeta::default()
                },
                spec: template.spec.clone(),
                status: None,
            }
        })
        .collect()
}

/// The ordinal of one of the set's claims (`<template>-<set>-<ordinal>`).
fn claim_ordinal(sts: &StatefulSet, claim: &PersistentVolumeClaim) -> Option<i32> {
    let set = name_of(&sts.metadata);
    let name = claim.metadata.name.as_deref()?;
    sts.spec
        .iter()
        .flat_map(|s| s.volume_claim_templates.iter().flatten())
        .find_map(|t| {
            name.strip_prefix(&format!("{}-{set}-", name_of(&t.metadata)))?
                .parse()
                .ok()
        })
}

/// The ordinal of pod `<set>-<n>`.
fn ordinal_of(set: &str, pod: &Pod) -> Option<i32> {
    pod.metadata
        .name
        .as_deref()?
        .strip_prefix(set)?
        .strip_prefix('-')?
        .parse()
        .ok()
        .filter(|n: &i32| *n >= 0)
}

/// The controller: one key per StatefulSet, woken by it and by its pods and revisions.
pub struct StatefulSetController {
    sets: Store<StatefulSet>,
    pods: Store<Pod>,
    claims: Store<PersistentVolumeClaim>,
    revisions: Store<ControllerRevision>,
}

impl Controller for StatefulSetController {
    const NAME: &'static str = "statefulset-controller";

    fn new(ctx: &Context, queue: &WorkQueue) -> Self {
        let sets = ctx.informers.store::<StatefulSet>();
        let pods = ctx.informers.store::<Pod>();
        let claims = ctx.informers.store::<PersistentVolumeClaim>();
        let revisions = ctx.informers.store::<ControllerRevision>();
        let q = queue.clone();
        sets.on_change(move |sts: &StatefulSet| q.add(&key_of(&sts.metadata)));
        let q = queue.clone();
        pods.on_change(move |pod: &Pod| {
            if let Some(key) = owners::controller_key(&pod.metadata, "StatefulSet") {
                q.add(&key);
            }
        });
        let q = queue.clone();
        revisions.on_change(move |r: &ControllerRevision| {
            if let Some(key) = owners::controller_key(&r.metadata, "StatefulSet") {
                q.add(&key);
            }
        });
        StatefulSetController {
            sets,
            pods,
            claims,
            revisions,
        }
    }

    fn reconcile(&mut self, key: &str, now: Timestamp) -> Vec<Action> {
        let Some(sts) = self.sets.get(key) else {
            return Vec::new();
        };
        let ns = sts.metadata.namespace.as_deref().unwrap_or("");
        let (pods, claims, revisions) = (
            self.pods.in_namespace(ns),
            self.claims.in_namespace(ns),
            self.revisions.in_namespace(ns),
        );
        reconcile(
            &sts,
            &View {
                pods: &pods,
                claims: &claims,
                revisions: &revisions,
            },
            now,
        )
    }

    fn expectations(&self, plan: &[Action]) -> Vec<Expected> {
        Expected::of_plan(plan, |action| {
            expectations::pod_churn(action)
                || matches!(
                    action,
                    Action::Create(Object::PersistentVolumeClaim(_))
                        | Action::Create(Object::ControllerRevision(_))
                        | Action::Update(Object::ControllerRevision(_))
                )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-12-04T12:00:00Z".parse().expect("time")
    }

    fn sts(replicas: i32, extra: serde_json::Value) -> StatefulSet {
        let mut value = json!({"metadata": {"name": "web", "namespace": "shop", "uid": "s1",
                "generation": 1},
            "spec": {"replicas": replicas, "serviceName": "web",
                "selector": {"matchLabels": {"app": "web"}},
                "podManagementPolicy": "OrderedReady",
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "web:1"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}}}}]}});
        crate::test_support::merge(&mut value, extra);
        serde_json::from_value(value).expect("sts")
    }

    /// A pod of the set as the store would have it: Running and Ready unless `ready` is false.
    fn pod(set: &StatefulSet, plan: &[Action], ordinal: i32, ready: bool) -> Pod {
        let created = plan
            .iter()
            .find_map(|a| match a {
                Action::Create(Object::Pod(p))
                    if p.metadata.name.as_deref() == Some(&format!("web-{ordinal}")) =>
                {
                    Some((**p).clone())
                }
                _ => None,
            })
            .unwrap_or_else(|| {
                pod_for(
                    set,
                    &set.spec.clone().unwrap_or_default().template,
                    ordinal,
                    "web-x",
                )
            });
        let mut pod = created;
        pod.metadata.uid = Some(format!("p{ordinal}"));
        pod.status = serde_json::from_value(json!({"phase": "Running", "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" },
             "lastTransitionTime": "2026-12-04T11:00:00Z"}]}))
        .expect("status");
        pod
    }

    /// The plan's writes in words (events and the status left out).
    fn words(plan: &[Action]) -> Vec<String> {
        let writes: Vec<Action> = plan
            .iter()
            .filter(|a| !matches!(a, Action::Event(_) | Action::UpdateStatus(_)))
            .cloned()
            .collect();
        crate::test_support::words(&writes)
    }

    fn plan_for(set: &StatefulSet, pods: &[Pod], claims: &[PersistentVolumeClaim]) -> Vec<String> {
        let view = View {
            pods,
            claims,
            revisions: &[],
        };
        words(&reconcile(set, &view, now()))
    }

    #[test]
    fn ordered_ready_makes_one_pod_at_a_time_with_its_claim() {
        let set = sts(3, json!({}));
        let view = View {
            pods: &[],
            claims: &[],
            revisions: &[],
        };
        let plan = reconcile(&set, &view, now());
        let created = words(&plan);
        assert!(
            created[0].starts_with("create ControllerRevision shop/web-"),
            "{created:?}"
        );
        assert_eq!(
            &created[1..],
            [
                "create PersistentVolumeClaim shop/data-web-0",
                "create Pod shop/web-0"
            ]
        );
        let web0 = pod(&set, &plan, 0, false);
        let spec = web0.spec.clone().unwrap_or_default();
        assert_eq!(spec.hostname.as_deref(), Some("web-0"));
        assert_eq!(spec.subdomain.as_deref(), Some("web"));
        let volumes = spec.volumes.unwrap_or_default();
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some("data-web-0")
        );
        // web-0 not Ready yet: nothing more happens.
        let waiting = plan_for(&set, &[web0], &[]);
        assert!(waiting.iter().all(|w| !w.contains("Pod")), "{waiting:?}");
        // Ready: web-1 follows.
        let next = plan_for(&set, &[pod(&set, &plan, 0, true)], &claims_for(&set, 0));
        assert!(
            next.contains(&"create Pod shop/web-1".to_string()),
            "{next:?}"
        );
    }

    #[test]
    fn scale_down_takes_the_top_ordinal_and_updates_roll_from_the_top() {
        let set = sts(2, json!({}));
        let pods: Vec<Pod> = (0..3).map(|i| pod(&set, &[], i, true)).collect();
        let plan = plan_for(&set, &pods, &[]);
        assert!(
            plan.contains(&"delete Pod shop/web-2".to_string()),
            "{plan:?}"
        );

        // Every pod at revision web-x, the template hashes elsewhere: web-2 goes first.
        let plan = plan_for(&sts(3, json!({})), &pods, &[]);
        assert!(
            plan.contains(&"delete Pod shop/web-2".to_string()),
            "{plan:?}"
        );
        // With partition 2 only web-2 may change; with web-2 done, nothing else does.
        let set = sts(
            3,
            json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 2}}}}),
        );
        let hash = template_hash(&set.spec.clone().unwrap_or_default().template, Some(0));
        let mut updated = pods.clone();
        updated[2]
            .metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(REVISION_LABEL.into(), format!("web-{hash}"));
        let plan = plan_for(&set, &updated, &[]);
        assert!(
            !plan.iter().any(|w| w.starts_with("delete Pod")),
            "{plan:?}"
        );
        // maxUnavailable 2: web-2 and web-1 go together.
        let set = sts(
            3,
            json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}}}),
        );
        let plan = plan_for(&set, &pods, &[]);
        let deleted: Vec<&String> = plan
            .iter()
            .filter(|w| w.starts_with("delete Pod"))
            .collect();
        assert_eq!(deleted, ["delete Pod shop/web-2", "delete Pod shop/web-1"]);
    }
}

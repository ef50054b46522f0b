//! The Deployment controller: roll a Deployment's pods from one template to the next through
//! ReplicaSets, one move per pass.
//!
//! Each template gets its own ReplicaSet, named `<deployment>-<pod-template-hash>`
//! ([`hash`]). The *new* ReplicaSet is the one whose template equals the Deployment's; all
//! others are *old*. A pass reads like a script and stops at the first step that acts:
//!
//! 1. **Claim** ReplicaSets (adopt matching orphans, release relabelled ones).
//! 2. Being deleted? Only refresh the status.
//! 3. **Revisions**: the new ReplicaSet gets revision = highest old revision + 1 (so an old
//!    ReplicaSet brought back by `kubectl rollout undo` becomes the newest revision again), the
//!    Deployment's annotations (`kubernetes.io/change-cause`, …) and `minReadySeconds`; then
//!    the Deployment's own `deployment.kubernetes.io/revision` annotation follows it.
//! 4. Paused? No rollout moves (only old ReplicaSets beyond `revisionHistoryLimit` go).
//!    Kubernetes still scales paused Deployments proportionally across their ReplicaSets
//!    when `replicas` changes; skiff does not yet, and applies the change on resume.
//! 5. **Roll** ([`rollout`]):
//!    - RollingUpdate: create the new ReplicaSet (as large as maxSurge allows) or scale it up;
//!      else scale old ReplicaSets down (unhealthy pods first, keeping
//!      `replicas − maxUnavailable` available); else delete surplus history.
//!    - Recreate: scale every old ReplicaSet to 0; wait until none of their pods runs; then
//!      create or scale up the new one.
//! 6. **Status** and conditions ([`status`]), written only when changed; ask to be woken at
//!    the progress deadline.
//!
//! Each pass writes any object at most once. Where Kubernetes would write the same object twice
//! in one sync (update an annotation, then scale), skiff returns after the first write; the
//! write's own watch event brings the next pass.
pub mod hash;
pub mod rollout;
pub mod status;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_api::selector::LabelSelector;

use skiff_client::informer::{key_of, Store};

use crate::controller::{Context, Controller};
use crate::owners::{self, Claim};
use crate::workqueue::WorkQueue;
use crate::{reference_to, Action, Object};
use hash::{same_template, template_hash, POD_TEMPLATE_HASH};

/// The revision of a ReplicaSet (and, copied, of its Deployment).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// `spec.replicas` of the Deployment when it last scaled this ReplicaSet.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// replicas + maxSurge of the Deployment when it last scaled this ReplicaSet.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Why the template changed (`kubectl rollout history` shows it); copied like any annotation.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

/// Deployment annotations that are not copied to its ReplicaSets (`skipCopyAnnotation`).
const NOT_COPIED: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Plans one pass for `d`. `replica_sets` and `pods` are those of its namespace (others are
/// ignored); pods are only read by the Recreate strategy, to wait for old pods to stop.
pub fn reconcile(
    d: &Deployment,
    replica_sets: &[ReplicaSet],
    pods: &[Pod],
    now: Timestamp,
) -> Vec<Action> {
    let Some(selector) = d
        .spec
        .as_ref()
        .and_then(|s| LabelSelector::from_k8s(&s.selector).ok())
    else {
        return Vec::new();
    };
    if selector.is_empty() {
        let message = "This deployment is selecting all pods. A non-empty selector is required.";
        return vec![Action::warning_event(
            reference_to(d),
            "SelectingAll",
            message.into(),
        )];
    }
    let in_namespace: Vec<&ReplicaSet> = replica_sets
        .iter()
        .filter(|rs| rs.metadata.namespace == d.metadata.namespace)
        .collect();

    // 1. Claim. Adoption is a write to the ReplicaSet; the next pass sees it as owned.
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let deleting = d.metadata.deletion_timestamp.is_some();
    let mut owned = Vec::new();
    let mut claims = Vec::new();
    for rs in &in_namespace {
        match owners::claim(&uid, deleting, &selector, &rs.metadata) {
            Claim::Owned => owned.push(*rs),
            Claim::Adopt => {
                let mut adopted = (*rs).clone();
                adopted.metadata = owners::with_controller(&rs.metadata, owners::controller_ref(d));
                claims.push(Action::Update(Object::ReplicaSet(Box::new(adopted))));
            }
            Claim::Release => {
                let mut released = (*rs).clone();
                released.metadata = owners::without_owner(&rs.metadata, &uid);
                claims.push(Action::Update(Object::ReplicaSet(Box::new(released))));
            }
            Claim::Ignore => {}
        }
    }
    if !claims.is_empty() {
        return claims;
    }

    owned.sort_by_key(|rs| oldest_first(rs));
    let template = d
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let new = owned.iter().copied().find(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| s.template.as_ref())
            .is_some_and(|t| same_template(t, &template))
    });
    let old: Vec<&ReplicaSet> = owned
        .iter()
        .copied()
        .filter(|rs| !new.is_some_and(|n| std::ptr::eq(*rs, n)))
        .collect();
    let pass = Pass {
        d,
        in_namespace,
        new,
        old,
        pods,
        now,
    };

    // 2. Being deleted: the garbage collector takes the ReplicaSets; keep the status honest.
    if deleting {
        return pass.finish(Vec::new(), None, false);
    }
    // 3. Revisions.
    if let Some(new) = new {
        if let Some(update) = pass.sync_new_replica_set(new) {
            return vec![update];
        }
        if let Some(update) = pass.sync_deployment_revision(new) {
            return vec![update];
        }
    }
    // 4. Paused.
    if d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false) {
        return pass.finish(pass.cleanup(), None, false);
    }
    // 5. Roll.
    if rollout::is_rolling(d) {
        pass.rolling_update()
    } else {
        pass.recreate()
    }
}

/// One pass over one Deployment: what it sees, and the steps that plan moves.
struct Pass<'a> {
    d: &'a Deployment,
    /// Every ReplicaSet of the namespace, to spot a name collision before creating.
    in_namespace: Vec<&'a ReplicaSet>,
    new: Option<&'a ReplicaSet>,
    /// Old ReplicaSets, oldest first.
    old: Vec<&'a ReplicaSet>,
    pods: &'a [Pod],
    now: Timestamp,
}

impl Pass<'_> {
    /// RollingUpdate: scale up, else scale down, else clean up — one of them per pass.
    fn rolling_update(&self) -> Vec<Action> {
        let r = rollout::replicas(self.d);
        let fp = rollout::fenceposts(self.d);
        let Some(new) = self.new else {
            let all_spec: i32 = self.old.iter().map(|rs| spec_replicas(rs)).sum();
            return self.create_new_replica_set(rollout::new_replicas(
                r,
                fp.max_surge,
                all_spec,
                0,
            ));
        };

        // Scale up the new ReplicaSet (or down, if the Deployment shrank below it).
        let new_spec = spec_replicas(new);
        let all_spec: i32 = new_spec + self.old.iter().map(|rs| spec_replicas(rs)).sum::<i32>();
        let target = if new_spec > r {
            r
        } else {
            rollout::new_replicas(r, fp.max_surge, all_spec, new_spec)
        };
        if target != new_spec {
            return self.finish(self.scale(new, target), None, true);
        }

        // Scale down old ReplicaSets as far as availability allows.
        let counts = |rs: &ReplicaSet| rollout::Counts {
            spec: spec_replicas(rs),
            available: rs
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0),
        };
        let old_counts: Vec<rollout::Counts> = self.old.iter().map(|rs| counts(rs)).collect();
        let targets = rollout::scale_down_old(r, fp.max_unavailable, counts(new), &old_counts);
        let moves: Vec<Action> = self
            .old
            .iter()
            .zip(targets)
            .filter(|(rs, to)| spec_replicas(rs) != *to)
            .flat_map(|(rs, to)| self.scale(rs, to))
            .collect();
        if !moves.is_empty() {
            return self.finish(moves, None, true);
        }
        self.finish(self.cleanup(), None, true)
    }

    /// Recreate: all old pods gone before any new one starts.
    fn recreate(&self) -> Vec<Action> {
        let moves: Vec<Action> = self
            .old
            .iter()
            .filter(|rs| spec_replicas(rs) > 0)
            .flat_map(|rs| self.scale(rs, 0))
            .collect();
        if !moves.is_empty() {
            return self.finish(moves, None, true);
        }
        if self.old_pods_running() {
            return self.finish(Vec::new(), None, true);
        }
        let r = rollout::replicas(self.d);
        match self.new {
            None => self.create_new_replica_set(r),
            Some(new) if spec_replicas(new) != r => self.finish(self.scale(new, r), None, true),
            Some(_) => self.finish(self.cleanup(), None, true),
        }
    }

    /// Whether any pod of an old ReplicaSet may still run (`oldPodsRunning`): the old
    /// ReplicaSets still report pods, or a pod they control is not finished (pods being
    /// deleted included: they run until their grace period ends).
    fn old_pods_running(&self) -> bool {
        if self
            .old
            .iter()
            .any(|rs| rs.status.as_ref().is_some_and(|s| s.replicas > 0))
        {
            return true;
        }
        let old_uids: Vec<&str> = self
            .old
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .collect();
        self.pods.iter().any(|pod| {
            owners::controller_of(&pod.metadata).is_some_and(|r| old_uids.contains(&r.uid.as_str()))
                && !matches!(crate::pods::phase(pod), "Succeeded" | "Failed")
        })
    }

    /// Creates the new ReplicaSet with `replicas` pods, or, if its name is taken by another
    /// ReplicaSet, bumps `status.collisionCount` so the next pass hashes to a fresh name.
    fn create_new_replica_set(&self, replicas: i32) -> Vec<Action> {
        let d = self.d;
        let spec = d.spec.clone().unwrap_or_default();
        let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = template_hash(&spec.template, collision_count);
        let name = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or(""));
        if self
            .in_namespace
            .iter()
            .any(|rs| rs.metadata.name.as_deref() == Some(&name))
        {
            let mut bumped = d.clone();
            let status = bumped.status.get_or_insert_with(Default::default);
            status.collision_count = Some(collision_count.unwrap_or(0) + 1);
            return vec![Action::UpdateStatus(Object::Deployment(Box::new(bumped)))];
        }

        let mut template = spec.template.clone();
        let template_meta = template.metadata.get_or_insert_with(Default::default);
        template_meta
            .labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash);
        let mut annotations = BTreeMap::new();
        copy_annotations(d, &mut annotations);
        annotations.insert(REVISION.into(), (max_revision(&self.old) + 1).to_string());
        set_replica_annotations(d, &mut annotations);
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: d.metadata.namespace.clone(),
                labels: template_meta.labels.clone(),
                annotations: Some(annotations),
                owner_references: Some(vec![owners::controller_ref(d)]),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let mut moves = vec![Action::Create(Object::ReplicaSet(Box::new(rs)))];
        if replicas > 0 {
            let message = format!("Scaled up replica set {name} from 0 to {replicas}");
            moves.push(Action::normal_event(
                reference_to(d),
                "ScalingReplicaSet",
                message,
            ));
        }
        self.finish(moves, Some(&name), true)
    }

    /// Sets `rs` to `to` replicas, recording the Deployment's size on it, with Kubernetes'
    /// event (`Scaled up replica set web-7d4b9c8f5 from 0 to 3`).
    fn scale(&self, rs: &ReplicaSet, to: i32) -> Vec<Action> {
        let from = spec_replicas(rs);
        let mut scaled = rs.clone();
        scaled.spec.get_or_insert_with(Default::default).replicas = Some(to);
        set_replica_annotations(
            self.d,
            scaled
                .metadata
                .annotations
                .get_or_insert_with(Default::default),
        );
        let direction = if to > from { "up" } else { "down" };
        let name = rs.metadata.name.as_deref().unwrap_or("");
        vec![
            Action::Update(Object::ReplicaSet(Box::new(scaled))),
            Action::normal_event(
                reference_to(self.d),
                "ScalingReplicaSet",
                format!("Scaled {direction} replica set {name} from {from} to {to}"),
            ),
        ]
    }

    /// The existing new ReplicaSet brought up to date: the Deployment's annotations, a
    /// revision above every old one, the Deployment's minReadySeconds. `None` if it is.
    fn sync_new_replica_set(&self, new: &ReplicaSet) -> Option<Action> {
        let mut rs = new.clone();
        let annotations = rs.metadata.annotations.get_or_insert_with(Default::default);
        let mut changed = copy_annotations(self.d, annotations);
        let revision = max_revision(&self.old) + 1;
        if revision_of(new) < revision {
            annotations.insert(REVISION.into(), revision.to_string());
            changed = true;
        }
        let want = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        let spec = rs.spec.get_or_insert_with(Default::default);
        if spec.min_ready_seconds.unwrap_or(0) != want {
            spec.min_ready_seconds = Some(want);
            changed = true;
        }
        changed.then(|| Action::Update(Object::ReplicaSet(Box::new(rs))))
    }

    /// The Deployment's revision annotation set to its new ReplicaSet's (`kubectl rollout
    /// history` and `undo` read it). `None` if it already is.
    fn sync_deployment_revision(&self, new: &ReplicaSet) -> Option<Action> {
        let revision = annotation(&new.metadata, REVISION)?;
        if annotation(&self.d.metadata, REVISION) == Some(revision) {
            return None;
        }
        let mut d = self.d.clone();
        d.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(REVISION.into(), revision.into());
        Some(Action::Update(Object::Deployment(Box::new(d))))
    }

    /// Deletes the oldest old ReplicaSets beyond `revisionHistoryLimit` — only those already
    /// scaled to 0 and settled (`cleanupDeployment`). No limit set: keep them all.
    fn cleanup(&self) -> Vec<Action> {
        let Some(limit) = self.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Vec::new();
        };
        let mut cleanable: Vec<&ReplicaSet> = self
            .old
            .iter()
            .copied()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = cleanable.len().saturating_sub(limit.max(0) as usize);
        cleanable.sort_by_key(|rs| (revision_of(rs), oldest_first(rs)));
        cleanable
            .into_iter()
            .take(excess)
            .filter(|rs| {
                let status = rs.status.clone().unwrap_or_default();
                status.replicas == 0
                    && spec_replicas(rs) == 0
                    && rs.metadata.generation.unwrap_or(0)
                        <= status.observed_generation.unwrap_or(0)
            })
            .map(|rs| Action::delete(reference_to(rs), None))
            .collect()
    }

    /// `moves`, then the Deployment's status if it changed, then a wake-up for the progress
    /// deadline. `created` names a ReplicaSet these moves create.
    fn finish(
        &self,
        mut moves: Vec<Action>,
        created: Option<&str>,
        judge_progress: bool,
    ) -> Vec<Action> {
        let mut all: Vec<&ReplicaSet> = self.old.clone();
        all.extend(self.new);
        let seen = status::Observed {
            all: &all,
            new: self.new,
            created,
            judge_progress,
        };
        let next = status::compute(self.d, &seen, self.now);
        let current = status::normalised(self.d.status.clone().unwrap_or_default());
        if next != current {
            let mut d = self.d.clone();
            d.status = Some(next.clone());
            moves.push(Action::UpdateStatus(Object::Deployment(Box::new(d))));
        }
        if judge_progress {
            if let Some(after) = status::deadline_check(self.d, &next, self.now) {
                moves.push(Action::RequeueAfter {
                    after,
                    why: "the rollout's progress deadline may pass".into(),
                });
            }
        }
        moves
    }
}

/// Copies the Deployment's annotations (except the controller's own) onto a ReplicaSet's;
/// true if any changed. Annotations are only added or overwritten, never removed.
fn copy_annotations(d: &Deployment, to: &mut BTreeMap<String, String>) -> bool {
    let mut changed = false;
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if NOT_COPIED.contains(&k.as_str()) || to.get(k) == Some(v) {
            continue;
        }
        to.insert(k.clone(), v.clone());
        changed = true;
    }
    changed
}

/// desired-replicas and max-replicas: the Deployment's size when it last scaled this ReplicaSet.
fn set_replica_annotations(d: &Deployment, to: &mut BTreeMap<String, String>) {
    let r = rollout::replicas(d);
    to.insert(DESIRED_REPLICAS.into(), r.to_string());
    to.insert(
        MAX_REPLICAS.into(),
        (r + rollout::fenceposts(d).max_surge).to_string(),
    );
}

fn annotation<'m>(meta: &'m ObjectMeta, key: &str) -> Option<&'m str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The revision annotation as a number; missing or malformed counts as 0.
fn revision_of(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn max_revision(replica_sets: &[&ReplicaSet]) -> i64 {
    replica_sets
        .iter()
        .map(|rs| revision_of(rs))
        .max()
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// Sort key: creation time, then name (`ReplicaSetsByCreationTimestamp`).
fn oldest_first(rs: &ReplicaSet) -> (Option<Timestamp>, String) {
    (
        rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
        rs.metadata.name.clone().unwrap_or_default(),
    )
}

/// The Deployment controller in the loop's shape: keyed by Deployment, woken by changes of the
/// Deployment, of its ReplicaSets (an orphan wakes every Deployment of its namespace, which
/// might adopt it) and of their pods (availability).
pub struct DeploymentController {
    deployments: Store<Deployment>,
    replica_sets: Store<ReplicaSet>,
    pods: Store<Pod>,
}

impl Controller for DeploymentController {
    const NAME: &'static str = "deployment-controller";

    fn new(ctx: &Context, queue: &WorkQueue) -> Self {
        let deployments = ctx.informers.store::<Deployment>();
        let replica_sets = ctx.informers.store::<ReplicaSet>();
        let pods = ctx.informers.store::<Pod>();
        let q = queue.clone();
        deployments.on_change(move |d: &Deployment| q.add(&key_of(&d.metadata)));
        let (q, d_store) = (queue.clone(), deployments.clone());
        replica_sets.on_change(move |rs: &ReplicaSet| {
            match owners::controller_key(&rs.metadata, "Deployment") {
                Some(key) => q.add(&key),
                None => {
                    let ns = rs.metadata.namespace.as_deref().unwrap_or("");
                    for key in d_store.keys_in_namespace(ns) {
                        q.add(&key);
                    }
                }
            }
        });
        let (q, rs_store) = (queue.clone(), replica_sets.clone());
        pods.on_change(move |pod: &Pod| {
            let Some(rs_key) = owners::controller_key(&pod.metadata, "ReplicaSet") else {
                return;
            };
            let deployment = rs_store
                .read()
                .get(&rs_key)
                .and_then(|rs| owners::controller_key(&rs.metadata, "Deployment"));
            if let Some(key) = deployment {
                q.add(&key);
            }
        });
        DeploymentController {
            deployments,
            replica_sets,
            pods,
        }
    }

    fn reconcile(&mut self, key: &str, now: Timestamp) -> Vec<Action> {
        let Some(d) = self.deployments.get(key) else {
            return Vec::new();
        };
        let ns = d.metadata.namespace.as_deref().unwrap_or("");
        reconcile(
            &d,
            &self.replica_sets.in_namespace(ns),
            &self.pods.in_namespace(ns),
            now,
        )
    }
}

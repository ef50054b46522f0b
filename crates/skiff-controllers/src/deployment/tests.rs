//! Deployment controller tests: whole rollouts simulated pass by pass, and single passes.
//!
//! The simulation ([`Sim`]) applies each plan to an in-memory "cluster", then plays the
//! ReplicaSet controller and kubelet with one simple rule: pods asked for exist after one tick
//! and are available after the next. Deleted pods vanish at once.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};

use super::*;
use crate::deployment::status::{AVAILABLE, PROGRESSING, TIMED_OUT};

const T0: &str = "2024-01-01T00:00:00Z";

fn at(seconds: i64) -> Timestamp {
    let t0: Timestamp = T0.parse().expect("time");
    t0 + jiff::SignedDuration::from_secs(seconds)
}

fn deployment(replicas: i32, image: &str, strategy: Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 1,
                     "resourceVersion": "1",
                     "annotations": {CHANGE_CAUSE: "kubectl apply v1"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                         "spec": {"containers": [{"name": "c", "image": image}]}},
            "strategy": strategy,
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
    }))
    .expect("deployment")
}

fn rolling(surge: Value, unavailable: Value) -> Value {
    json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
}

/// A miniature cluster for one Deployment.
struct Sim {
    d: Deployment,
    replica_sets: Vec<ReplicaSet>,
    pods: Vec<Pod>,
    now: Timestamp,
    created: u32,
    events: Vec<String>,
}

impl Sim {
    fn new(d: Deployment) -> Sim {
        Sim {
            d,
            replica_sets: Vec::new(),
            pods: Vec::new(),
            now: at(0),
            created: 0,
            events: Vec::new(),
        }
    }

    /// One controller pass, applied. Returns the plan.
    fn pass(&mut self) -> Vec<Action> {
        let plan = reconcile(&self.d, &self.replica_sets, &self.pods, self.now);
        assert_writes_each_object_once(&plan);
        for action in &plan {
            self.apply(action);
        }
        plan
    }

    fn apply(&mut self, action: &Action) {
        match action {
            Action::Create(Object::ReplicaSet(rs)) => {
                self.created += 1;
                let mut rs = (**rs).clone();
                rs.metadata.uid = Some(format!("rs-{}", self.created));
                rs.metadata.creation_timestamp = Some(Time(
                    self.now + jiff::SignedDuration::from_secs(self.created.into()),
                ));
                assert!(
                    !self
                        .replica_sets
                        .iter()
                        .any(|o| o.metadata.name == rs.metadata.name),
                    "AlreadyExists: {:?}",
                    rs.metadata.name
                );
                self.replica_sets.push(rs);
            }
            Action::Update(Object::ReplicaSet(rs)) => {
                let slot = self
                    .replica_sets
                    .iter_mut()
                    .find(|o| o.metadata.uid == rs.metadata.uid)
                    .expect("updated ReplicaSet exists");
                *slot = (**rs).clone();
            }
            Action::Update(Object::Deployment(d)) => {
                let status = self.d.status.clone();
                self.d = (**d).clone();
                self.d.status = status;
            }
            Action::UpdateStatus(Object::Deployment(d)) => self.d.status = d.status.clone(),
            Action::Delete { uid, .. } => self
                .replica_sets
                .retain(|rs| rs.metadata.uid.as_deref() != Some(uid)),
            Action::Event(e) => self.events.push(format!("{}: {}", e.reason, e.message)),
            Action::RequeueAfter { .. } => {}
            other => panic!("unexpected action {other}"),
        }
    }

    /// The ReplicaSet controller and kubelets catch up: pods that existed at the last tick
    /// are now available; the number of pods matches each `spec.replicas`.
    fn tick(&mut self) {
        self.now += jiff::SignedDuration::from_secs(10);
        for rs in &mut self.replica_sets {
            let want = spec_replicas(rs);
            let existed = rs.status.as_ref().map(|s| s.replicas).unwrap_or(0);
            let available = want.min(existed);
            rs.status = Some(k8s_openapi::api::apps::v1::ReplicaSetStatus {
                replicas: want,
                ready_replicas: Some(available),
                available_replicas: Some(available),
                observed_generation: rs.metadata.generation,
                ..Default::default()
            });
        }
    }

    /// Pass and tick until a pass writes nothing and a tick changes nothing. Calls `check`
    /// after every pass and every tick.
    fn settle(&mut self, mut check: impl FnMut(&Sim, &[Action])) -> usize {
        for round in 0..200 {
            let plan = self.pass();
            check(self, &plan);
            let before = self.replica_sets.clone();
            self.tick();
            check(self, &[]);
            let wrote = plan
                .iter()
                .any(|a| !matches!(a, Action::RequeueAfter { .. } | Action::Event(_)));
            if !wrote && before == self.replica_sets {
                return round;
            }
        }
        panic!("no steady state after 200 passes: {:#?}", self.replica_sets);
    }

    fn set_image(&mut self, image: &str) {
        let spec = self.d.spec.as_mut().expect("spec");
        spec.template.spec.as_mut().expect("pod spec").containers[0].image = Some(image.into());
        self.d.metadata.generation = Some(self.d.metadata.generation.unwrap_or(0) + 1);
    }

    fn rs_named(&self, image: &str) -> &ReplicaSet {
        self.replica_sets
            .iter()
            .find(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .and_then(|t| t.spec.as_ref())
                    .is_some_and(|s| s.containers[0].image.as_deref() == Some(image))
            })
            .expect("a ReplicaSet for the image")
    }

    fn total(&self, f: impl Fn(&ReplicaSet) -> i32) -> i32 {
        self.replica_sets.iter().map(f).sum()
    }
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn assert_writes_each_object_once(plan: &[Action]) {
    let mut written = std::collections::BTreeSet::new();
    for action in plan {
        if let Action::Update(o) | Action::UpdateStatus(o) | Action::Create(o) = action {
            let r = o.reference();
            assert!(
                written.insert((r.kind, r.name)),
                "one object written twice in {plan:#?}"
            );
        }
    }
}

/// kubectl's `rollout status` for a Deployment: Ok when done, Err(waiting message) otherwise.
fn rollout_status(d: &Deployment) -> Result<(), String> {
    let s = d.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| v.unwrap_or(0);
    if d.metadata.generation > s.observed_generation {
        return Err("Waiting for deployment spec update to be observed...".into());
    }
    let conditions = s.conditions.clone().unwrap_or_default();
    if conditions
        .iter()
        .any(|c| c.type_ == PROGRESSING && c.reason.as_deref() == Some(TIMED_OUT))
    {
        return Err("exceeded its progress deadline".into());
    }
    let r = rollout::replicas(d);
    if n(s.updated_replicas) < r {
        return Err(format!(
            "{} out of {r} new replicas have been updated",
            n(s.updated_replicas)
        ));
    }
    if n(s.replicas) > n(s.updated_replicas) {
        return Err(format!(
            "{} old replicas are pending termination",
            n(s.replicas) - n(s.updated_replicas)
        ));
    }
    if n(s.available_replicas) < n(s.updated_replicas) {
        return Err(format!(
            "{} of {} updated replicas are available",
            n(s.available_replicas),
            n(s.updated_replicas)
        ));
    }
    Ok(())
}

fn condition<'d>(
    d: &'d Deployment,
    type_: &str,
) -> Option<&'d k8s_openapi::api::apps::v1::DeploymentCondition> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

#[test]
fn rolling_updates_respect_surge_and_availability_at_every_step() {
    // (replicas, maxSurge, maxUnavailable)
    let cases = [
        (3, json!("25%"), json!("25%")),  // surge 1, unavailable 0
        (10, json!("30%"), json!("20%")), // surge 3, unavailable 2
        (10, json!(0), json!(1)),
        (10, json!(1), json!(0)),
        (5, json!("100%"), json!(0)),
        (1, json!(0), json!("25%")), // both round to 0 → unavailable 1
    ];
    for (r, surge, unavailable) in cases {
        let label = format!("replicas {r}, maxSurge {surge}, maxUnavailable {unavailable}");
        let mut sim = Sim::new(deployment(
            r,
            "nginx:1",
            rolling(surge.clone(), unavailable.clone()),
        ));
        sim.settle(|_, _| {});
        assert_eq!(rollout_status(&sim.d), Ok(()), "{label}: first rollout");
        let fp = rollout::fenceposts(&sim.d);

        sim.set_image("nginx:2");
        assert!(rollout_status(&sim.d).is_err());
        let passes = sim.settle(|sim, plan| {
            let total = sim.total(spec_replicas);
            assert!(
                total <= r + fp.max_surge,
                "{label}: {total} pods exceed the surge bound"
            );
            let avail = sim.total(available);
            assert!(
                avail >= r - fp.max_unavailable,
                "{label}: only {avail} available"
            );
            // One move per pass: never scale up and down in the same plan.
            let ups = plan
                .iter()
                .filter(|a| matches!(a, Action::Event(e) if e.message.starts_with("Scaled up")))
                .count();
            let downs = plan
                .iter()
                .filter(|a| matches!(a, Action::Event(e) if e.message.starts_with("Scaled down")))
                .count();
            assert!(ups == 0 || downs == 0, "{label}: {plan:#?}");
        });
        assert!(passes < 60, "{label}: took {passes} passes");

        assert_eq!(rollout_status(&sim.d), Ok(()), "{label}");
        assert_eq!(spec_replicas(sim.rs_named("nginx:2")), r, "{label}");
        assert_eq!(spec_replicas(sim.rs_named("nginx:1")), 0, "{label}");
        assert_eq!(annotation(&sim.d.metadata, REVISION), Some("2"), "{label}");
        let new = sim.rs_named("nginx:2");
        assert_eq!(annotation(&new.metadata, REVISION), Some("2"));
        assert_eq!(
            annotation(&new.metadata, CHANGE_CAUSE),
            Some("kubectl apply v1")
        );
        assert_eq!(
            annotation(&new.metadata, DESIRED_REPLICAS),
            Some(r.to_string().as_str())
        );
        let progressing = condition(&sim.d, PROGRESSING).expect("Progressing");
        assert_eq!(
            progressing.reason.as_deref(),
            Some("NewReplicaSetAvailable"),
            "{label}"
        );
        assert_eq!(
            condition(&sim.d, AVAILABLE).map(|c| c.status.as_str()),
            Some("True")
        );
    }
}

#[test]
fn the_new_replicaset_carries_the_hash_everywhere_and_is_owned() {
    let mut sim = Sim::new(deployment(
        3,
        "nginx:1",
        rolling(json!("25%"), json!("25%")),
    ));
    let plan = sim.pass();
    let rs = sim.replica_sets.first().expect("created");
    let hash = template_hash(&sim.d.spec.clone().expect("spec").template, None);
    assert_eq!(rs.metadata.name, Some(format!("web-{hash}")));
    let spec = rs.spec.clone().expect("spec");
    let labels =
        |m: Option<&BTreeMap<String, String>>| m.and_then(|l| l.get(POD_TEMPLATE_HASH)).cloned();
    assert_eq!(labels(rs.metadata.labels.as_ref()), Some(hash.clone()));
    assert_eq!(
        labels(spec.selector.match_labels.as_ref()),
        Some(hash.clone())
    );
    assert_eq!(
        labels(
            spec.template
                .as_ref()
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.as_ref())
        ),
        Some(hash.clone())
    );
    let owner = owners::controller_of(&rs.metadata).expect("controller");
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Deployment", "d-uid")
    );
    // 3 replicas, surge 1, nothing else running: the new ReplicaSet starts at 3.
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(
        sim.events,
        [format!(
            "ScalingReplicaSet: Scaled up replica set web-{hash} from 0 to 3"
        )]
    );
    let progressing = plan.iter().find_map(|a| match a {
        Action::UpdateStatus(Object::Deployment(d)) => condition(d, PROGRESSING).cloned(),
        _ => None,
    });
    assert_eq!(
        progressing.and_then(|c| c.message),
        Some(format!("Created new replica set \"web-{hash}\""))
    );
    // The next pass finds the same ReplicaSet instead of creating another.
    sim.pass();
    assert_eq!(sim.replica_sets.len(), 1);
}

#[test]
fn undo_reuses_the_old_replicaset_with_a_new_revision() {
    let mut sim = Sim::new(deployment(3, "nginx:1", rolling(json!(1), json!(0))));
    sim.settle(|_, _| {});
    sim.set_image("nginx:2");
    sim.settle(|_, _| {});
    assert_eq!(sim.replica_sets.len(), 2);

    // `kubectl rollout undo`: the old ReplicaSet's template, minus the hash label, goes back
    // into the Deployment.
    let mut template = sim
        .rs_named("nginx:1")
        .spec
        .clone()
        .and_then(|s| s.template)
        .expect("template");
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    sim.d.spec.as_mut().expect("spec").template = template;
    sim.d.metadata.generation = Some(3);
    sim.settle(|_, _| {});

    assert_eq!(sim.replica_sets.len(), 2, "no third ReplicaSet");
    let back = sim.rs_named("nginx:1");
    assert_eq!(annotation(&back.metadata, REVISION), Some("3"));
    assert_eq!(spec_replicas(back), 3);
    assert_eq!(spec_replicas(sim.rs_named("nginx:2")), 0);
    assert_eq!(annotation(&sim.d.metadata, REVISION), Some("3"));
    assert_eq!(rollout_status(&sim.d), Ok(()));
}

#[test]
fn recreate_stops_every_old_pod_before_starting_new_ones() {
    let mut sim = Sim::new(deployment(3, "nginx:1", json!({"type": "Recreate"})));
    sim.settle(|_, _| {});
    sim.set_image("nginx:2");
    sim.settle(|sim, _| {
        let old_running = sim
            .rs_named("nginx:1")
            .status
            .as_ref()
            .map(|s| s.replicas)
            .unwrap_or(0);
        let new_wanted = sim
            .replica_sets
            .iter()
            .filter(|rs| rs.metadata.uid != sim.rs_named("nginx:1").metadata.uid)
            .map(spec_replicas)
            .sum::<i32>();
        assert!(
            old_running == 0 || new_wanted == 0,
            "old and new pods at once"
        );
    });
    assert_eq!(spec_replicas(sim.rs_named("nginx:2")), 3);
    assert_eq!(rollout_status(&sim.d), Ok(()));
}

#[test]
fn recreate_waits_for_terminating_old_pods() {
    let mut sim = Sim::new(deployment(2, "nginx:1", json!({"type": "Recreate"})));
    sim.settle(|_, _| {});
    sim.set_image("nginx:2");
    sim.pass(); // scales the old ReplicaSet to 0
    sim.tick(); // its status now says 0 pods…
    let old_uid = sim.rs_named("nginx:1").metadata.uid.clone().expect("uid");
    // …but one pod is still shutting down.
    sim.pods.push(serde_json::from_value(json!({
        "metadata": {"name": "web-old-x", "namespace": "default", "deletionTimestamp": T0,
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x",
                                          "uid": old_uid, "controller": true}]},
        "status": {"phase": "Running"},
    })).expect("pod"));
    sim.pass();
    assert_eq!(
        sim.replica_sets.len(),
        1,
        "no new ReplicaSet while an old pod runs"
    );
    sim.pods[0].status.as_mut().expect("status").phase = Some("Succeeded".into());
    sim.pass();
    assert_eq!(spec_replicas(sim.rs_named("nginx:2")), 2);
}

#[test]
fn paused_deployments_make_no_moves() {
    let mut sim = Sim::new(deployment(3, "nginx:1", rolling(json!(1), json!(0))));
    sim.settle(|_, _| {});
    sim.d.spec.as_mut().expect("spec").paused = Some(true);
    sim.set_image("nginx:2");
    sim.settle(|_, _| {});
    assert_eq!(sim.replica_sets.len(), 1, "no new ReplicaSet while paused");
    let progressing = condition(&sim.d, PROGRESSING).expect("Progressing");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_deref()),
        ("Unknown", Some("DeploymentPaused"))
    );
    sim.d.spec.as_mut().expect("spec").paused = Some(false);
    sim.settle(|_, _| {});
    assert_eq!(spec_replicas(sim.rs_named("nginx:2")), 3);
    assert_eq!(rollout_status(&sim.d), Ok(()));
}

#[test]
fn revision_history_limit_deletes_the_oldest_idle_replicasets() {
    let mut sim = Sim::new(deployment(1, "v1", rolling(json!(1), json!(0))));
    sim.d.spec.as_mut().expect("spec").revision_history_limit = Some(2);
    for image in ["v1", "v2", "v3", "v4", "v5"] {
        sim.set_image(image);
        sim.settle(|_, _| {});
    }
    let mut images: Vec<String> = sim
        .replica_sets
        .iter()
        .map(|rs| {
            rs.spec
                .clone()
                .and_then(|s| s.template?.spec)
                .map(|s| s.containers[0].image.clone().unwrap_or_default())
                .unwrap_or_default()
        })
        .collect();
    images.sort();
    // The new one plus the two newest old ones.
    assert_eq!(images, ["v3", "v4", "v5"]);
}

#[test]
fn cleanup_skips_replicasets_that_still_have_pods() {
    let mut d = deployment(1, "new", rolling(json!(1), json!(0)));
    d.spec.as_mut().expect("spec").revision_history_limit = Some(0);
    d.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(REVISION.into(), "3".into());
    let rs = |name: &str, image: &str, revision: u32, replicas: i32, pods: i32| -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name,
                         "labels": {"app": "web"},
                         "annotations": {REVISION: revision.to_string(), CHANGE_CAUSE: "kubectl apply v1"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                              "uid": "d-uid", "controller": true}]},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}},
            "status": {"replicas": pods, "availableReplicas": pods},
        }))
        .expect("rs")
    };
    // Revision 3 is new; both old ones exceed a limit of 0, but "b" scaled to 0 still has a
    // pod shutting down.
    let replica_sets = [
        rs("a", "old1", 1, 0, 0),
        rs("b", "old2", 2, 0, 1),
        rs("c", "new", 3, 1, 1),
    ];
    let plan = reconcile(&d, &replica_sets, &[], at(0));
    let deleted: Vec<String> = plan
        .iter()
        .filter_map(|a| match a {
            Action::Delete { object, .. } => object.name.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(deleted, ["a"], "{plan:#?}");
}

#[test]
fn progress_deadline_exceeded_when_nothing_moves() {
    let mut sim = Sim::new(deployment(2, "nginx:1", rolling(json!(1), json!(0))));
    sim.d.spec.as_mut().expect("spec").progress_deadline_seconds = Some(60);
    let plan = sim.pass(); // creates the ReplicaSet at t = 0
    assert!(plan
        .iter()
        .any(|a| matches!(a, Action::RequeueAfter { after, .. } if after.as_secs() == 61)));
    // The pods never become available (image cannot be pulled): no ticks, only time.
    sim.pass(); // revision annotation
    sim.now = at(30);
    let plan = sim.pass();
    assert_eq!(
        condition(&sim.d, PROGRESSING)
            .and_then(|c| c.reason.clone())
            .as_deref(),
        Some("NewReplicaSetCreated")
    );
    assert!(
        plan.iter()
            .any(|a| matches!(a, Action::RequeueAfter { after, .. } if after.as_secs() == 31)),
        "{plan:#?}"
    );
    sim.now = at(61);
    sim.pass();
    let progressing = condition(&sim.d, PROGRESSING).expect("Progressing").clone();
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_deref()),
        ("False", Some(TIMED_OUT))
    );
    let name = sim.replica_sets[0].metadata.name.clone().expect("name");
    assert_eq!(
        progressing.message,
        Some(format!("ReplicaSet \"{name}\" has timed out progressing."))
    );
    assert_eq!(
        rollout_status(&sim.d),
        Err("exceeded its progress deadline".into())
    );
}

#[test]
fn progress_restarts_the_deadline() {
    let mut sim = Sim::new(deployment(3, "nginx:1", rolling(json!(1), json!(0))));
    sim.d.spec.as_mut().expect("spec").progress_deadline_seconds = Some(60);
    sim.pass(); // t = 0: create the ReplicaSet
    sim.pass(); // revision annotation
    sim.now = at(50);
    sim.tick(); // t = 60: the pods exist, none available yet
    sim.pass();
    let name = sim.replica_sets[0].metadata.name.clone().expect("name");
    let progressing = condition(&sim.d, PROGRESSING).expect("Progressing").clone();
    assert_eq!(progressing.reason.as_deref(), Some("ReplicaSetUpdated"));
    assert_eq!(
        progressing.message,
        Some(format!("ReplicaSet \"{name}\" is progressing."))
    );
    assert_eq!(progressing.last_update_time, Some(Time(at(60))));
    // 100 s after creation but only 40 s after the last progress: not timed out.
    sim.now = at(100);
    sim.pass();
    assert_eq!(
        condition(&sim.d, PROGRESSING)
            .and_then(|c| c.reason.clone())
            .as_deref(),
        Some("ReplicaSetUpdated")
    );
    sim.tick(); // all available
    sim.pass();
    let progressing = condition(&sim.d, PROGRESSING).expect("Progressing").clone();
    assert_eq!(
        progressing.reason.as_deref(),
        Some("NewReplicaSetAvailable")
    );
    assert_eq!(
        progressing.message,
        Some(format!(
            "ReplicaSet \"{name}\" has successfully progressed."
        ))
    );
}

#[test]
fn status_is_what_kubectl_reads_and_is_written_only_on_change() {
    let mut sim = Sim::new(deployment(3, "nginx:1", rolling(json!(1), json!(0))));
    sim.settle(|_, _| {});
    let status = sim.d.status.clone().expect("status");
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(
        (
            status.replicas,
            status.updated_replicas,
            status.ready_replicas
        ),
        (Some(3), Some(3), Some(3))
    );
    assert_eq!(
        (status.available_replicas, status.unavailable_replicas),
        (Some(3), None)
    );
    let available = condition(&sim.d, AVAILABLE).expect("Available");
    assert_eq!(
        available.reason.as_deref(),
        Some("MinimumReplicasAvailable")
    );
    assert_eq!(
        available.message.as_deref(),
        Some("Deployment has minimum availability.")
    );
    let plan = sim.pass();
    assert!(
        plan.is_empty(),
        "a settled Deployment plans nothing: {plan:#?}"
    );
}

#[test]
fn adopts_orphaned_replicasets_and_reuses_them() {
    let mut sim = Sim::new(deployment(2, "nginx:1", rolling(json!(1), json!(0))));
    sim.settle(|_, _| {});
    // The Deployment was deleted with --cascade=orphan and re-created: new uid, same spec.
    for rs in &mut sim.replica_sets {
        rs.metadata.owner_references = None;
    }
    sim.d.metadata.uid = Some("d-uid-2".into());
    let plan = sim.pass();
    assert!(
        matches!(plan.as_slice(), [Action::Update(Object::ReplicaSet(_))]),
        "{plan:#?}"
    );
    sim.settle(|_, _| {});
    assert_eq!(sim.replica_sets.len(), 1);
    let owner = owners::controller_of(&sim.replica_sets[0].metadata).expect("owner");
    assert_eq!(owner.uid, "d-uid-2");
}

#[test]
fn a_name_collision_bumps_the_collision_count() {
    let d = deployment(1, "nginx:1", rolling(json!(1), json!(0)));
    let hash = template_hash(&d.spec.clone().expect("spec").template, None);
    // Someone else's ReplicaSet already has our name.
    let squatter: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": format!("web-{hash}"), "namespace": "default", "uid": "other",
                     "labels": {"app": "other"}},
        "spec": {"selector": {"matchLabels": {"app": "other"}}},
    }))
    .expect("rs");
    let plan = reconcile(&d, &[squatter], &[], at(0));
    let [Action::UpdateStatus(Object::Deployment(bumped))] = plan.as_slice() else {
        panic!("expected only a status update: {plan:#?}");
    };
    let count = bumped.status.as_ref().and_then(|s| s.collision_count);
    assert_eq!(count, Some(1));
    assert_ne!(
        template_hash(&d.spec.clone().expect("spec").template, count),
        hash
    );
}

#[test]
fn an_empty_selector_is_refused_with_kubernetes_warning() {
    let mut d = deployment(1, "nginx:1", rolling(json!(1), json!(0)));
    d.spec.as_mut().expect("spec").selector = Default::default();
    let plan = reconcile(&d, &[], &[], at(0));
    let [Action::Event(e)] = plan.as_slice() else {
        panic!("{plan:#?}")
    };
    assert_eq!(
        (e.type_, e.reason.as_str()),
        (crate::EventType::Warning, "SelectingAll")
    );
}

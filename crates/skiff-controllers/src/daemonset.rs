//! The DaemonSet controller: one pod on every node that should run it.
//!
//! One pass, as a script (Kubernetes' `DaemonSetsController`, in the small):
//! 1. **Revision**: the template's ControllerRevision (`<set>-<hash>`, see [`crate::revisions`]);
//!    pods carry its name as `controller-revision-hash`.
//! 2. **Which nodes**: those whose taints the pod tolerates and whose labels its node selector
//!    and required node affinity accept (the scheduler's own placement checks,
//!    [`skiff_scheduler::filter::placement_rejections`]). Daemon pods tolerate what Kubernetes
//!    adds to them: a node that is not ready or unreachable keeps its pod, and so does a
//!    cordoned one or one under disk, memory or pid pressure.
//! 3. **Each node**: no pod where one should run → create it, pinned to the node by required
//!    node affinity on `metadata.name` (the scheduler binds it, as since Kubernetes 1.12); a pod
//!    where none should run, or a second one → delete; a failed pod → delete (it is made again).
//!    Pods of nodes that are gone are deleted.
//! 4. **Rolling update**: pods at an old revision are deleted, as many at a time as
//!    `maxUnavailable` allows with the nodes already without a ready pod counted; with
//!    `maxSurge` instead, the new pod is created beside the old one, which goes once the new one
//!    is Ready. `OnDelete`: pods change only when deleted.
//! 5. **Status**: desired, current, misscheduled, ready, updated, available, unavailable.
use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use skiff_client::informer::{key_of, Store};

use crate::child_names::NameGenerator;
use crate::controller::{Context, Controller};
use crate::deployment::hash::template_hash;
use crate::expectations::{self, Expected};
use crate::workqueue::WorkQueue;
use crate::{name_of, owners, pods, reference_to, revisions, Action, Object};

pub use crate::revisions::REVISION_LABEL;

/// What one pass of a DaemonSet sees: its namespace's pods and revisions, every node.
pub struct View<'a> {
    pub pods: &'a [Pod],
    pub nodes: &'a [Node],
    pub revisions: &'a [ControllerRevision],
}

/// Plans one pass for `ds` (pure). `names` supplies the random part of new pod names.
pub fn reconcile(
    ds: &DaemonSet,
    view: &View<'_>,
    now: Timestamp,
    names: &mut NameGenerator,
) -> Vec<Action> {
    let mut plan = Vec::new();
    if ds.metadata.deletion_timestamp.is_some() {
        return plan;
    }
    let spec = ds.spec.clone().unwrap_or_default();
    let uid = ds.metadata.uid.clone().unwrap_or_default();

    // 1. Revision.
    let owner = revisions::Owner {
        reference: owners::controller_ref(ds),
        namespace: ds.metadata.namespace.clone(),
        labels: spec.selector.match_labels.clone().unwrap_or_default(),
        uid: &uid,
    };
    let owned_revisions = revisions::owned(&owner, view.revisions);
    let hash = template_hash(
        &spec.template,
        Some(
            ds.status
                .as_ref()
                .and_then(|s| s.collision_count)
                .unwrap_or(0),
        ),
    );
    let update_revision = format!("{}-{hash}", name_of(&ds.metadata));
    plan.extend(revisions::ensure_newest(
        &owner,
        &owned_revisions,
        &spec.template,
        &update_revision,
        &hash,
    ));

    // 2. Which nodes should run a pod, and the pods we have on each.
    let template_spec = with_daemon_tolerations(spec.template.spec.clone().unwrap_or_default());
    let should_run = |node: &Node| {
        skiff_scheduler::filter::placement_rejections(&template_spec, node).is_empty()
    };
    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in view.pods {
        let ours = owners::controller_of(&pod.metadata).is_some_and(|o| o.uid == uid);
        if ours && (pods::is_active(pod) || pods::phase(pod) == "Failed") {
            by_node.entry(node_of(pod)).or_default().push(pod);
        }
    }
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let rolling = strategy.type_.as_deref() != Some("OnDelete");
    let desired_nodes: Vec<String> = view
        .nodes
        .iter()
        .filter(|n| should_run(n))
        .map(|n| name_of(&n.metadata))
        .collect();
    let up_to_date = |pod: &Pod| revisions::of_pod(pod) == Some(update_revision.as_str());
    let ready = |pod: &Pod| pods::is_ready(pod) && pod.metadata.deletion_timestamp.is_none();

    // 3. Each node.
    let mut misscheduled = 0;
    for (node, node_pods) in &by_node {
        if desired_nodes.contains(node) {
            continue;
        }
        // A node that is gone, or should not run the pod (any more).
        misscheduled += node_pods.len();
        for pod in node_pods {
            if pod.metadata.deletion_timestamp.is_none() {
                delete_pod(&mut plan, ds, pod);
            }
        }
    }
    let mut unavailable = 0;
    let mut stale: Vec<(&String, &Pod)> = Vec::new();
    let mut surge_candidates: Vec<&String> = Vec::new();
    for node in &desired_nodes {
        let node_pods: Vec<&Pod> = by_node.get(node).cloned().unwrap_or_default();
        let (failed, alive): (Vec<&Pod>, Vec<&Pod>) =
            node_pods.iter().partition(|p| pods::phase(p) == "Failed");
        for pod in failed {
            if pod.metadata.deletion_timestamp.is_none() {
                delete_pod(&mut plan, ds, pod);
            }
        }
        let alive: Vec<&Pod> = alive
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        if !alive.iter().any(|p| ready(p)) {
            unavailable += 1;
        }
        match alive.as_slice() {
            [] => {
                let pod = pod_for(ds, &template_spec, node, &update_revision, names);
                plan.push(Action::normal_event(
                    reference_to(ds),
                    "SuccessfulCreate",
                    format!("Created pod: {}", name_of(&pod.metadata)),
                ));
                plan.push(Action::Create(Object::Pod(Box::new(pod))));
            }
            [pod] if rolling && !up_to_date(pod) => {
                stale.push((node, pod));
                surge_candidates.push(node);
            }
            [_] => {}
            // Several: during a surge, the others go once an up-to-date one is Ready, and none
            // while it starts; otherwise the first stays.
            many => {
                let keep = match many.iter().find(|p| up_to_date(p) && ready(p)) {
                    Some(new) => Some(*new),
                    None if many.iter().any(|p| up_to_date(p)) => None,
                    None => Some(many[0]),
                };
                if let Some(keep) = keep {
                    for pod in many.iter().filter(|p| p.metadata.uid != keep.metadata.uid) {
                        delete_pod(&mut plan, ds, pod);
                    }
                }
            }
        }
    }

    // 4. Rolling update.
    if rolling {
        let rolling_update = strategy.rolling_update.clone().unwrap_or_default();
        let count = desired_nodes.len() as i32;
        let max_surge = scaled(rolling_update.max_surge.as_ref(), count, 0);
        let max_unavailable = scaled(rolling_update.max_unavailable.as_ref(), count, 1);
        if max_surge > 0 {
            let surging = by_node.values().filter(|ps| ps.len() > 1).count();
            for node in surge_candidates
                .into_iter()
                .take(max_surge.saturating_sub(surging))
            {
                plan.push(Action::Create(Object::Pod(Box::new(pod_for(
                    ds,
                    &template_spec,
                    node,
                    &update_revision,
                    names,
                )))));
            }
        } else {
            // Pods that are not ready anyway go first: replacing them costs nothing.
            stale.sort_by_key(|(_, p)| ready(p));
            let mut budget = max_unavailable.saturating_sub(unavailable);
            for (_, pod) in stale {
                if ready(pod) {
                    if budget == 0 {
                        break;
                    }
                    budget -= 1;
                }
                delete_pod(&mut plan, ds, pod);
            }
        }
    }

    // 5. Status.
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let scheduled: Vec<&Pod> = desired_nodes
        .iter()
        .filter_map(|n| by_node.get(n))
        .filter_map(|ps| ps.iter().copied().find(|p| pods::phase(p) != "Failed"))
        .collect();
    let count = |f: &dyn Fn(&Pod) -> bool| scheduled.iter().filter(|p| f(p)).count() as i32;
    let available = count(&|p| pods::is_available(p, min_ready, now));
    let wanted = DaemonSetStatus {
        desired_number_scheduled: desired_nodes.len() as i32,
        current_number_scheduled: scheduled.len() as i32,
        number_misscheduled: misscheduled as i32,
        number_ready: count(&|p| pods::is_ready(p)),
        updated_number_scheduled: Some(count(&|p| up_to_date(p))),
        number_available: Some(available),
        number_unavailable: Some(desired_nodes.len() as i32 - available),
        observed_generation: ds.metadata.generation,
        collision_count: Some(
            ds.status
                .as_ref()
                .and_then(|s| s.collision_count)
                .unwrap_or(0),
        ),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    if ds.status.as_ref() != Some(&wanted) {
        let mut updated = ds.clone();
        updated.status = Some(wanted);
        plan.push(Action::UpdateStatus(Object::DaemonSet(Box::new(updated))));
    }

    // 6. History.
    let in_use = |r: &ControllerRevision| {
        let n = r.metadata.name.as_deref();
        n == Some(update_revision.as_str())
            || view.pods.iter().any(|p| {
                revisions::of_pod(p) == n
                    && owners::controller_of(&p.metadata).is_some_and(|o| o.uid == uid)
            })
    };
    plan.extend(revisions::prune(
        &owned_revisions,
        in_use,
        spec.revision_history_limit.unwrap_or(10),
    ));

    plan.extend(pods::recheck_when_available(
        scheduled.iter().copied(),
        min_ready,
        now,
    ));
    plan
}

/// The tolerations Kubernetes adds to every daemon pod: it stays on a node that is not ready,
/// unreachable, cordoned or under pressure.
fn with_daemon_tolerations(mut spec: PodSpec) -> PodSpec {
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        let present = tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some(key) && t.effect.as_deref() == Some(effect));
        if !present {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                ..Toleration::default()
            });
        }
    }
    spec
}

/// The daemon pod for `node`: the template, pinned to the node by required node affinity on
/// its name (the scheduler still binds it and checks that it fits).
fn pod_for(
    ds: &DaemonSet,
    spec: &PodSpec,
    node: &str,
    revision: &str,
    names: &mut NameGenerator,
) -> Pod {
    let template = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.clone())
        .unwrap_or_default();
    let mut labels = template.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), revision.into());
    let mut spec = spec.clone();
    let pin = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
        }],
    };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution = Some(pin);
    let generate_name = format!("{}-", name_of(&ds.metadata));
    Pod {
        metadata: ObjectMeta {
            name: Some(names.name(&generate_name)),
            generate_name: Some(generate_name),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: template.annotations,
            owner_references: Some(vec![owners::controller_ref(ds)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The node a daemon pod is for: where it runs, or the node its affinity pins it to.
fn node_of(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    if let Some(node) = spec
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
    {
        return node;
    }
    spec.and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .and_then(|r| {
            r.node_selector_terms
                .iter()
                .flat_map(|t| t.match_fields.iter().flatten())
                .find(|f| f.key == "metadata.name" && f.operator == "In")
                .and_then(|f| f.values.as_ref()?.first().cloned())
        })
        .unwrap_or_default()
}

/// `maxUnavailable`/`maxSurge` against `count` nodes (a percentage rounds up; unset: `default`).
fn scaled(value: Option<&IntOrString>, count: i32, default: usize) -> usize {
    match value {
        None => default,
        Some(IntOrString::Int(n)) => (*n).max(0) as usize,
        Some(IntOrString::String(text)) => {
            let percent: i64 = text.trim_end_matches('%').parse().unwrap_or(0);
            ((i64::from(count) * percent + 99) / 100).max(0) as usize
        }
    }
}

fn delete_pod(plan: &mut Vec<Action>, ds: &DaemonSet, pod: &Pod) {
    plan.push(Action::delete(reference_to(pod), None));
    plan.push(Action::normal_event(
        reference_to(ds),
        "SuccessfulDelete",
        format!("Deleted pod: {}", name_of(&pod.metadata)),
    ));
}

/// The controller: one key per DaemonSet, woken by it, its pods and revisions, and by any node
/// (a node that comes, goes or changes its labels or taints concerns every DaemonSet).
pub struct DaemonSetController {
    sets: Store<DaemonSet>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    names: NameGenerator,
}

impl Controller for DaemonSetController {
    const NAME: &'static str = "daemonset-controller";

    fn new(ctx: &Context, queue: &WorkQueue) -> Self {
        let sets = ctx.informers.store::<DaemonSet>();
        let pods = ctx.informers.store::<Pod>();
        let nodes = ctx.informers.store::<Node>();
        let revisions = ctx.informers.store::<ControllerRevision>();
        let q = queue.clone();
        sets.on_change(move |ds: &DaemonSet| q.add(&key_of(&ds.metadata)));
        let q = queue.clone();
        pods.on_change(move |pod: &Pod| {
            if let Some(key) = owners::controller_key(&pod.metadata, "DaemonSet") {
                q.add(&key);
            }
        });
        let (q, all) = (queue.clone(), sets.clone());
        nodes.on_change(move |_: &Node| {
            for ds in all.list() {
                q.add(&key_of(&ds.metadata));
            }
        });
        let q = queue.clone();
        revisions.on_change(move |r: &ControllerRevision| {
            if let Some(key) = owners::controller_key(&r.metadata, "DaemonSet") {
                q.add(&key);
            }
        });
        DaemonSetController {
            sets,
            pods,
            nodes,
            revisions,
            names: NameGenerator::from_seed(Timestamp::now().as_nanosecond() as u64),
        }
    }

    fn reconcile(&mut self, key: &str, now: Timestamp) -> Vec<Action> {
        let Some(ds) = self.sets.get(key) else {
            return Vec::new();
        };
        let ns = ds.metadata.namespace.as_deref().unwrap_or("");
        let (pods, nodes, revisions) = (
            self.pods.in_namespace(ns),
            self.nodes.list(),
            self.revisions.in_namespace(ns),
        );
        reconcile(
            &ds,
            &View {
                pods: &pods,
                nodes: &nodes,
                revisions: &revisions,
            },
            now,
            &mut self.names,
        )
    }

    fn expectations(&self, plan: &[Action]) -> Vec<Expected> {
        Expected::of_plan(plan, |action| {
            expectations::pod_churn(action)
                || matches!(
                    action,
                    Action::Create(Object::ControllerRevision(_))
                        | Action::Update(Object::ControllerRevision(_))
                )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{merge, words};
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-12-04T12:00:00Z".parse().expect("time")
    }

    fn ds(extra: serde_json::Value) -> DaemonSet {
        let mut value = json!({"metadata": {"name": "agent", "namespace": "kube-system", "uid": "d1",
                "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                "updateStrategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
                "template": {"metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "c", "image": "agent:1"}]}}}});
        merge(&mut value, extra);
        serde_json::from_value(value).expect("ds")
    }

    fn node(name: &str, extra: serde_json::Value) -> Node {
        let mut value = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        merge(&mut value, extra);
        serde_json::from_value(value).expect("node")
    }

    /// The set's pod on `node`, Ready, at `revision`.
    fn pod(set: &DaemonSet, node: &str, revision: &str) -> Pod {
        let spec = with_daemon_tolerations(
            set.spec
                .clone()
                .unwrap_or_default()
                .template
                .spec
                .unwrap_or_default(),
        );
        let mut pod = pod_for(set, &spec, node, revision, &mut NameGenerator::from_seed(1));
        pod.metadata.name = Some(format!("agent-{node}"));
        pod.metadata.uid = Some(format!("u-{node}"));
        pod.spec.get_or_insert_with(Default::default).node_name = Some(node.into());
        pod.status = serde_json::from_value(json!({"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-12-04T11:00:00Z"}]}))
        .expect("status");
        pod
    }

    fn plan(set: &DaemonSet, pods: &[Pod], nodes: &[Node]) -> Vec<String> {
        let view = View {
            pods,
            nodes,
            revisions: &[],
        };
        let writes: Vec<Action> = reconcile(set, &view, now(), &mut NameGenerator::from_seed(1))
            .into_iter()
            .filter(|a| !matches!(a, Action::Event(_) | Action::UpdateStatus(_)))
            .collect();
        words(&writes)
    }

    #[test]
    fn a_pod_per_eligible_node_and_none_where_it_cannot_go() {
        let set = ds(json!({"spec": {"template": {"spec": {"nodeSelector": {"disk": "ssd"}}}}}));
        let nodes = [
            node("a", json!({"metadata": {"labels": {"disk": "ssd"}}})),
            node(
                "b",
                json!({"metadata": {"labels": {"disk": "ssd"}},
                "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}}),
            ),
            // Cordoned and not ready: daemon pods tolerate both.
            node(
                "c",
                json!({"metadata": {"labels": {"disk": "ssd"}},
                "spec": {"unschedulable": true, "taints": [
                    {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                    {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]}}),
            ),
            node("d", json!({})),
        ];
        let view = View {
            pods: &[],
            nodes: &nodes,
            revisions: &[],
        };
        let created: Vec<String> = reconcile(&set, &view, now(), &mut NameGenerator::from_seed(1))
            .iter()
            .filter_map(|a| match a {
                Action::Create(Object::Pod(p)) => Some(node_of(p)),
                _ => None,
            })
            .collect();
        assert_eq!(created, ["a", "c"]);
        // A pod on a node that is gone, or no longer eligible, is deleted.
        let stale = [pod(&set, "d", "x"), pod(&set, "gone", "x")];
        let out = plan(&set, &stale, &nodes);
        assert!(
            out.contains(&"delete Pod kube-system/agent-d".to_string()),
            "{out:?}"
        );
        assert!(
            out.contains(&"delete Pod kube-system/agent-gone".to_string()),
            "{out:?}"
        );
    }

    #[test]
    fn updates_roll_within_max_unavailable_or_surge() {
        let nodes = [
            node("a", json!({})),
            node("b", json!({})),
            node("c", json!({})),
        ];
        let set = ds(json!({}));
        let old: Vec<Pod> = ["a", "b", "c"]
            .iter()
            .map(|n| pod(&set, n, "agent-old"))
            .collect();
        let deletes = |out: &[String]| out.iter().filter(|w| w.starts_with("delete Pod")).count();
        // maxUnavailable 1: one old pod at a time.
        assert_eq!(deletes(&plan(&set, &old, &nodes)), 1);
        // maxUnavailable 2: two.
        let two = ds(json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}}}}));
        assert_eq!(deletes(&plan(&two, &old, &nodes)), 2);
        // maxSurge 1 (maxUnavailable 0): a new pod beside one old one, nothing deleted yet.
        let surge = ds(
            json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}}}),
        );
        let out = plan(&surge, &old, &nodes);
        assert_eq!(deletes(&out), 0, "{out:?}");
        assert_eq!(
            out.iter().filter(|w| w.starts_with("create Pod")).count(),
            1,
            "{out:?}"
        );
    }
}

//! PersistentVolumes and their claims, as Kubernetes' persistentvolume-controller binds and
//! releases them, with skiff's built-in `local-path` provisioner.
//!
//! ```text
//!  claim Pending ─┬─ names a volume (pre-bound) ──────────────┐
//!                 ├─ an Available volume fits ─► claimRef set ─┼─► claim.volumeName ─► both Bound
//!                 └─ class local-path, node chosen by the      │
//!                    scheduler (selected-node) ─► PV created ──┘
//!  claim deleted ─► volume Released ─► Retain: kept │ Delete: PV deleted, its node removes the
//!                                                     directory, then the PV is gone
//! ```
//!
//! One pass looks at every claim and volume (a small cluster has tens), and each object gets
//! at most one write per pass: binding takes a few passes, each woken by the write before.
//! The protection finalizers go here too: a claim being deleted keeps
//! `kubernetes.io/pvc-protection` while a pod that has not finished uses it, a volume keeps
//! `kubernetes.io/pv-protection` while it is Bound.
//!
//! What is matched when a claim looks for a volume: the same class, every access mode the
//! claim asks for, at least its size, its selector, and for WaitForFirstConsumer, the node the
//! scheduler chose. The smallest volume that fits wins, as in Kubernetes.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
    PersistentVolumeSpec, PersistentVolumeStatus, Pod, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_client::informer::Store;

use crate::controller::{Context, Controller, EVERYTHING};
use crate::workqueue::WorkQueue;
use crate::{name_of, reference_to, Action, Object};

pub use skiff_api::volumes::{
    LOCAL_PATH_DIR_ANNOTATION, LOCAL_PATH_FINALIZER, LOCAL_PATH_PROVISIONER, PROVISIONED_BY,
    PVC_PROTECTION, PV_PROTECTION, SELECTED_NODE,
};
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";

/// What one pass sees.
pub struct Cluster<'a> {
    pub claims: &'a [PersistentVolumeClaim],
    pub volumes: &'a [PersistentVolume],
    pub classes: &'a [StorageClass],
    pub pods: &'a [Pod],
    pub nodes: &'a [Node],
}

/// The plan of one pass over every claim and volume (pure).
pub fn reconcile(cluster: &Cluster<'_>) -> Vec<Action> {
    let mut plan = Vec::new();
    // Volumes written this pass: each gets one write.
    let mut touched: BTreeSet<String> = BTreeSet::new();
    for claim in cluster.claims {
        plan_claim(cluster, claim, &mut touched, &mut plan);
    }
    for volume in cluster.volumes {
        let name = name_of(&volume.metadata);
        if !touched.contains(&name) {
            plan_volume(cluster, volume, &mut plan);
        }
    }
    plan
}

fn plan_claim(
    cluster: &Cluster<'_>,
    claim: &PersistentVolumeClaim,
    touched: &mut BTreeSet<String>,
    plan: &mut Vec<Action>,
) {
    let spec = claim.spec.clone().unwrap_or_default();
    let (namespace, name) = (
        claim.metadata.namespace.clone().unwrap_or_default(),
        name_of(&claim.metadata),
    );
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let here = reference_to(claim);

    if claim.metadata.deletion_timestamp.is_some() {
        if has(&claim.metadata, PVC_PROTECTION) && !in_use(cluster.pods, &namespace, &name) {
            let mut freed = claim.clone();
            remove_finalizer(&mut freed.metadata, PVC_PROTECTION);
            plan.push(Action::Update(Object::PersistentVolumeClaim(Box::new(
                freed,
            ))));
        }
        return;
    }

    let volume_name = spec.volume_name.clone().unwrap_or_default();
    if !volume_name.is_empty() {
        let Some(volume) = find(cluster.volumes, &volume_name) else {
            if phase_of_claim(claim) == "Bound" {
                let mut lost = claim.clone();
                lost.status.get_or_insert_with(Default::default).phase = Some("Lost".into());
                plan.push(Action::UpdateStatus(Object::PersistentVolumeClaim(
                    Box::new(lost),
                )));
                plan.push(Action::warning_event(
                    here,
                    "ClaimLost",
                    "Bound claim has lost its PersistentVolume. Data on the volume is lost!".into(),
                ));
            }
            return;
        };
        match claim_ref_of(volume) {
            // A claim that names a volume nobody has: take it.
            None => {
                let mut taken = volume.clone();
                taken.spec.get_or_insert_with(Default::default).claim_ref =
                    Some(reference_to(claim));
                touched.insert(volume_name.clone());
                plan.push(Action::Update(Object::PersistentVolume(Box::new(taken))));
            }
            Some(r) if refers_to(&r, claim) => {
                if phase_of_volume(volume) != "Bound" {
                    let mut bound = volume.clone();
                    bound.status = Some(PersistentVolumeStatus {
                        phase: Some("Bound".into()),
                        ..PersistentVolumeStatus::default()
                    });
                    touched.insert(volume_name.clone());
                    plan.push(Action::UpdateStatus(Object::PersistentVolume(Box::new(
                        bound,
                    ))));
                }
                if phase_of_claim(claim) != "Bound" {
                    let pv_spec = volume.spec.clone().unwrap_or_default();
                    let mut bound = claim.clone();
                    bound.status = Some(PersistentVolumeClaimStatus {
                        phase: Some("Bound".into()),
                        access_modes: pv_spec.access_modes.clone(),
                        capacity: pv_spec.capacity.clone(),
                        ..PersistentVolumeClaimStatus::default()
                    });
                    plan.push(Action::UpdateStatus(Object::PersistentVolumeClaim(
                        Box::new(bound),
                    )));
                }
            }
            Some(_) => {
                plan.push(Action::warning_event(
                    here,
                    "FailedBinding",
                    format!("volume {volume_name:?} already bound to a different claim."),
                ));
            }
        }
        return;
    }

    // Unbound. A volume already reserved for this claim (claimRef set by an earlier pass, by
    // the provisioner, or by hand) completes the binding from the claim's side.
    if let Some(volume) = cluster
        .volumes
        .iter()
        .find(|v| claim_ref_of(v).is_some_and(|r| refers_to(&r, claim)))
    {
        let volume_name = name_of(&volume.metadata);
        let reference = claim_ref_of(volume).unwrap_or_default();
        if reference.uid.as_deref().unwrap_or("").is_empty() {
            // Pre-bound by name only: record which claim it is.
            let mut taken = volume.clone();
            taken.spec.get_or_insert_with(Default::default).claim_ref = Some(reference_to(claim));
            touched.insert(volume_name.clone());
            plan.push(Action::Update(Object::PersistentVolume(Box::new(taken))));
        }
        let mut bound = claim.clone();
        bound.spec.get_or_insert_with(Default::default).volume_name = Some(volume_name);
        bound
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(BIND_COMPLETED.into(), "yes".into());
        plan.push(Action::Update(Object::PersistentVolumeClaim(Box::new(
            bound,
        ))));
        return;
    }

    let class_name = spec.storage_class_name.clone().unwrap_or_default();
    let class = cluster
        .classes
        .iter()
        .find(|c| name_of(&c.metadata) == class_name);
    let wait_for_consumer = class
        .and_then(|c| c.volume_binding_mode.as_deref())
        .is_some_and(|m| m == "WaitForFirstConsumer");
    let selected_node = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SELECTED_NODE))
        .cloned();
    if wait_for_consumer && selected_node.is_none() {
        plan.push(Action::normal_event(
            here,
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding".into(),
        ));
        return;
    }

    // An Available volume that fits (a class need not exist for volumes made by hand to
    // carry its name).
    if let Some(volume) = best_fit(
        cluster.volumes,
        claim,
        &class_name,
        selected_node.as_deref(),
    ) {
        let volume_name = name_of(&volume.metadata);
        if touched.insert(volume_name) {
            let mut taken = volume.clone();
            taken.spec.get_or_insert_with(Default::default).claim_ref = Some(reference_to(claim));
            plan.push(Action::Update(Object::PersistentVolume(Box::new(taken))));
        }
        return;
    }
    if !class_name.is_empty() && class.is_none() {
        plan.push(Action::warning_event(
            here,
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io {class_name:?} not found"),
        ));
        return;
    }

    match class.map(|c| c.provisioner.as_str()) {
        None => plan.push(Action::normal_event(
            here,
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set".into(),
        )),
        Some(LOCAL_PATH_PROVISIONER) => {
            let Some(node) = selected_node else {
                plan.push(Action::warning_event(
                    here,
                    "ProvisioningFailed",
                    "the local-path provisioner makes a directory on one node: its StorageClass \
                     needs volumeBindingMode WaitForFirstConsumer"
                        .into(),
                ));
                return;
            };
            let dir = cluster
                .nodes
                .iter()
                .find(|n| name_of(&n.metadata) == node)
                .and_then(|n| {
                    n.metadata
                        .annotations
                        .as_ref()?
                        .get(LOCAL_PATH_DIR_ANNOTATION)
                })
                .filter(|d| d.starts_with('/'));
            let Some(dir) = dir else {
                plan.push(Action::warning_event(
                    here,
                    "ProvisioningFailed",
                    format!("node {node:?} does not say where its local-path volumes live (annotation {LOCAL_PATH_DIR_ANNOTATION})"),
                ));
                return;
            };
            let volume = local_path_volume(
                claim,
                class.map(|c| c.reclaim_policy.clone().unwrap_or("Delete".into())),
                &node,
                dir,
                &uid,
            );
            let pv_name = name_of(&volume.metadata);
            plan.push(Action::normal_event(
                here.clone(),
                "Provisioning",
                format!(
                    "External provisioner is provisioning volume for claim \"{namespace}/{name}\""
                ),
            ));
            plan.push(Action::Create(Object::PersistentVolume(Box::new(volume))));
            plan.push(Action::normal_event(
                here,
                "ProvisioningSucceeded",
                format!("Successfully provisioned volume {pv_name}"),
            ));
        }
        Some(other) => plan.push(Action::normal_event(
            here,
            "ExternalProvisioning",
            format!(
                "Waiting for a volume to be created either by the external provisioner '{other}' \
                 or manually by the system administrator. If volume creation is delayed, please \
                 verify that the provisioner is running and correctly registered."
            ),
        )),
    }
}

fn plan_volume(cluster: &Cluster<'_>, volume: &PersistentVolume, plan: &mut Vec<Action>) {
    let here = reference_to(volume);
    let phase = phase_of_volume(volume);
    let claim = claim_ref_of(volume);
    let claim_exists = claim.as_ref().is_some_and(|r| {
        cluster.claims.iter().any(|c| {
            c.metadata.namespace == r.namespace
                && c.metadata.name == r.name
                && (r.uid.as_deref().unwrap_or("").is_empty() || c.metadata.uid == r.uid)
        })
    });
    if volume.metadata.deletion_timestamp.is_some() {
        if has(&volume.metadata, PV_PROTECTION) && phase != "Bound" {
            let mut freed = volume.clone();
            remove_finalizer(&mut freed.metadata, PV_PROTECTION);
            plan.push(Action::Update(Object::PersistentVolume(Box::new(freed))));
        }
        return;
    }
    let status = |phase: &str, message: Option<String>| {
        let mut changed = volume.clone();
        changed.status = Some(PersistentVolumeStatus {
            phase: Some(phase.into()),
            message,
            ..PersistentVolumeStatus::default()
        });
        Action::UpdateStatus(Object::PersistentVolume(Box::new(changed)))
    };
    match (claim, claim_exists) {
        (None, _) => {
            if phase != "Available" {
                plan.push(status("Available", None));
            }
        }
        (Some(_), true) => {}
        // Its claim is gone: released, then reclaimed.
        (Some(_), false) => {
            let policy = volume
                .spec
                .as_ref()
                .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
                .unwrap_or("Retain");
            let ours = volume
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(PROVISIONED_BY))
                .is_some_and(|p| p == LOCAL_PATH_PROVISIONER);
            match (phase, policy, ours) {
                ("Released", "Delete", true) => {
                    plan.push(Action::delete(here, None));
                }
                ("Released", "Delete", false) => {
                    plan.push(status(
                        "Failed",
                        Some("error getting deleter volume plugin for volume: no deletable volume plugin matched".into()),
                    ));
                    plan.push(Action::warning_event(
                        here,
                        "VolumeFailedDelete",
                        "error getting deleter volume plugin for volume: no deletable volume plugin matched".into(),
                    ));
                }
                ("Released" | "Failed", _, _) => {}
                _ => plan.push(status("Released", None)),
            }
        }
    }
}

/// The volume the built-in provisioner makes for `claim` on `node`: a directory under the
/// node's local-path dir, pinned to that node, reserved for the claim.
fn local_path_volume(
    claim: &PersistentVolumeClaim,
    reclaim: Option<String>,
    node: &str,
    dir: &str,
    uid: &str,
) -> PersistentVolume {
    let spec = claim.spec.clone().unwrap_or_default();
    let name = format!("pvc-{uid}");
    let path = format!(
        "{}/{name}_{}_{}",
        dir.trim_end_matches('/'),
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        name_of(&claim.metadata)
    );
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name),
            annotations: Some(BTreeMap::from([(
                PROVISIONED_BY.to_string(),
                LOCAL_PATH_PROVISIONER.to_string(),
            )])),
            finalizers: Some(vec![LOCAL_PATH_FINALIZER.to_string()]),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: spec.access_modes.clone(),
            capacity: spec.resources.as_ref().and_then(|r| r.requests.clone()),
            claim_ref: Some(reference_to(claim)),
            host_path: Some(HostPathVolumeSource {
                path,
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: "kubernetes.io/hostname".into(),
                            operator: "In".into(),
                            values: Some(vec![node.to_string()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            persistent_volume_reclaim_policy: reclaim,
            storage_class_name: spec.storage_class_name.clone(),
            volume_mode: spec.volume_mode.clone(),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}

/// The smallest Available volume of `class` that gives the claim every access mode it asks
/// for, at least its size, matches its selector and, when a node is chosen, may be used there.
fn best_fit<'a>(
    volumes: &'a [PersistentVolume],
    claim: &PersistentVolumeClaim,
    class: &str,
    node: Option<&str>,
) -> Option<&'a PersistentVolume> {
    let spec = claim.spec.clone().unwrap_or_default();
    let wanted = storage_bytes(
        spec.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.as_str()),
    );
    let modes = spec.access_modes.clone().unwrap_or_default();
    volumes
        .iter()
        .filter(|v| v.metadata.deletion_timestamp.is_none() && claim_ref_of(v).is_none())
        .filter(|v| {
            let pv = v.spec.clone().unwrap_or_default();
            let size = storage_bytes(
                pv.capacity
                    .as_ref()
                    .and_then(|c| c.get("storage"))
                    .map(|q| q.0.as_str()),
            );
            let pv_modes = pv.access_modes.clone().unwrap_or_default();
            pv.storage_class_name.as_deref().unwrap_or("") == class
                && size >= wanted
                && modes.iter().all(|m| pv_modes.contains(m))
                && spec.selector.as_ref().is_none_or(|s| {
                    skiff_api::selector::LabelSelector::from_k8s(s)
                        .is_ok_and(|s| s.matches(&v.metadata.labels.clone().unwrap_or_default()))
                })
                && node.is_none_or(|n| skiff_api::volumes::may_be_used_on(v, n))
        })
        .min_by_key(|v| {
            storage_bytes(
                v.spec
                    .as_ref()
                    .and_then(|s| s.capacity.as_ref())
                    .and_then(|c| c.get("storage"))
                    .map(|q| q.0.as_str()),
            )
        })
}

fn storage_bytes(quantity: Option<&str>) -> i64 {
    quantity
        .and_then(|q| skiff_api::quantity::bytes(q).ok())
        .unwrap_or(0)
}

/// Whether a pod that has not finished refers to the claim.
fn in_use(pods: &[Pod], namespace: &str, claim: &str) -> bool {
    pods.iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .any(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == claim)
                })
        })
}

fn claim_ref_of(volume: &PersistentVolume) -> Option<ObjectReference> {
    volume
        .spec
        .as_ref()?
        .claim_ref
        .clone()
        .filter(|r| !r.name.as_deref().unwrap_or("").is_empty())
}

/// Whether a claimRef means this claim: same namespace and name, and the same uid when it
/// has one.
fn refers_to(reference: &ObjectReference, claim: &PersistentVolumeClaim) -> bool {
    reference.namespace == claim.metadata.namespace
        && reference.name == claim.metadata.name
        && match reference.uid.as_deref() {
            None | Some("") => true,
            uid => uid == claim.metadata.uid.as_deref(),
        }
}

fn find<'a>(volumes: &'a [PersistentVolume], name: &str) -> Option<&'a PersistentVolume> {
    volumes
        .iter()
        .find(|v| v.metadata.name.as_deref() == Some(name))
}

fn phase_of_claim(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn phase_of_volume(volume: &PersistentVolume) -> &str {
    volume
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn has(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

fn remove_finalizer(meta: &mut ObjectMeta, finalizer: &str) {
    if let Some(list) = meta.finalizers.as_mut() {
        list.retain(|f| f != finalizer);
    }
}

/// The controller: one sweep over everything, woken by any change to claims, volumes,
/// classes, pods or nodes, and every 15 s.
pub struct VolumeController {
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    pods: Store<Pod>,
    nodes: Store<Node>,
}

impl Controller for VolumeController {
    const NAME: &'static str = "persistentvolume-controller";
    const EVERY: Option<Duration> = Some(Duration::from_secs(15));
    const KEEP_GOING: bool = true;

    fn new(ctx: &Context, queue: &WorkQueue) -> Self {
        let claims = ctx.informers.store::<PersistentVolumeClaim>();
        let volumes = ctx.informers.store::<PersistentVolume>();
        let classes = ctx.informers.store::<StorageClass>();
        let pods = ctx.informers.store::<Pod>();
        let nodes = ctx.informers.store::<Node>();
        let wake = |queue: &WorkQueue| {
            let q = queue.clone();
            move || q.add(EVERYTHING)
        };
        let w = wake(queue);
        claims.on_change(move |_: &PersistentVolumeClaim| w());
        let w = wake(queue);
        volumes.on_change(move |_: &PersistentVolume| w());
        let w = wake(queue);
        classes.on_change(move |_: &StorageClass| w());
        // Pods matter only when they use a claim (protection, and a claim's first consumer).
        let w = wake(queue);
        pods.on_change(move |pod: &Pod| {
            let uses_claim = pod
                .spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| v.persistent_volume_claim.is_some());
            if uses_claim {
                w();
            }
        });
        VolumeController {
            claims,
            volumes,
            classes,
            pods,
            nodes,
        }
    }

    fn reconcile(&mut self, _key: &str, _now: Timestamp) -> Vec<Action> {
        let (claims, volumes, classes) =
            (self.claims.list(), self.volumes.list(), self.classes.list());
        if claims.is_empty() && volumes.is_empty() {
            return Vec::new();
        }
        let (pods, nodes) = (self.pods.list(), self.nodes.list());
        reconcile(&Cluster {
            claims: &claims,
            volumes: &volumes,
            classes: &classes,
            pods: &pods,
            nodes: &nodes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class(mode: &str) -> StorageClass {
        serde_json::from_value(json!({"metadata": {"name": "local-path"},
            "provisioner": LOCAL_PATH_PROVISIONER, "reclaimPolicy": "Delete",
            "volumeBindingMode": mode}))
        .expect("class")
    }

    fn claim(extra: serde_json::Value) -> PersistentVolumeClaim {
        let mut value = json!({"metadata": {"name": "data", "namespace": "shop", "uid": "u1",
            "finalizers": [PVC_PROTECTION]},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
                "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending"}});
        crate::test_support::merge(&mut value, extra);
        serde_json::from_value(value).expect("claim")
    }

    fn node() -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n1",
            "annotations": {LOCAL_PATH_DIR_ANNOTATION: "/var/lib/skiff/storage"}}}))
        .expect("node")
    }

    fn plan(cluster: &Cluster<'_>) -> Vec<String> {
        crate::test_support::words(&reconcile(cluster))
    }

    #[test]
    fn a_local_path_claim_waits_for_its_node_then_gets_a_directory_there() {
        let classes = [class("WaitForFirstConsumer")];
        let nodes = [node()];
        let waiting = [claim(json!({}))];
        let cluster = Cluster {
            claims: &waiting,
            volumes: &[],
            classes: &classes,
            pods: &[],
            nodes: &nodes,
        };
        assert_eq!(
            plan(&cluster),
            ["event Normal WaitForFirstConsumer on PersistentVolumeClaim shop/data: waiting for first consumer to be created before binding"]
        );
        let chosen = [claim(
            json!({"metadata": {"annotations": {SELECTED_NODE: "n1"}}}),
        )];
        let cluster = Cluster {
            claims: &chosen,
            ..cluster
        };
        let actions = reconcile(&cluster);
        let created = actions
            .iter()
            .find_map(|a| match a {
                Action::Create(Object::PersistentVolume(pv)) => Some(pv.clone()),
                _ => None,
            })
            .expect("a volume is provisioned");
        let spec = created.spec.clone().expect("spec");
        assert_eq!(created.metadata.name.as_deref(), Some("pvc-u1"));
        assert_eq!(
            spec.host_path.expect("hostPath").path,
            "/var/lib/skiff/storage/pvc-u1_shop_data"
        );
        assert!(skiff_api::volumes::pinned_only_to(&created, "n1"));
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
        assert_eq!(spec.claim_ref.and_then(|r| r.uid).as_deref(), Some("u1"));

        // Next passes: the claim takes the volume, then both are Bound.
        let mut stored = *created;
        stored.status = Some(PersistentVolumeStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
        let volumes = [stored];
        let cluster = Cluster {
            volumes: &volumes,
            ..cluster
        };
        assert_eq!(plan(&cluster), ["update PersistentVolumeClaim shop/data"]);
        let named = [claim(json!({"spec": {"volumeName": "pvc-u1"}}))];
        let cluster = Cluster {
            claims: &named,
            ..cluster
        };
        assert_eq!(
            plan(&cluster),
            [
                "update status of PersistentVolume pvc-u1",
                "update status of PersistentVolumeClaim shop/data"
            ]
        );
    }

    #[test]
    fn released_volumes_follow_their_reclaim_policy_and_unknown_classes_are_named() {
        let volume = |policy: &str, provisioned: bool| -> PersistentVolume {
            let mut value = json!({"metadata": {"name": "pv1"},
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                    "hostPath": {"path": "/data"}, "persistentVolumeReclaimPolicy": policy,
                    "claimRef": {"namespace": "shop", "name": "gone", "uid": "u0"}},
                "status": {"phase": "Released"}});
            if provisioned {
                value["metadata"]["annotations"] = json!({PROVISIONED_BY: LOCAL_PATH_PROVISIONER});
            }
            serde_json::from_value(value).expect("pv")
        };
        let run = |pv: PersistentVolume| {
            let volumes = [pv];
            plan(&Cluster {
                claims: &[],
                volumes: &volumes,
                classes: &[],
                pods: &[],
                nodes: &[],
            })
        };
        assert!(run(volume("Retain", true)).is_empty());
        assert_eq!(run(volume("Delete", true)), ["delete PersistentVolume pv1"]);
        assert_eq!(
            run(volume("Delete", false))[0],
            "update status of PersistentVolume pv1"
        );

        let lost = [claim(json!({"spec": {"storageClassName": "fast"}}))];
        assert_eq!(
            plan(&Cluster {
                claims: &lost,
                volumes: &[],
                classes: &[],
                pods: &[],
                nodes: &[],
            }),
            ["event Warning ProvisioningFailed on PersistentVolumeClaim shop/data: storageclass.storage.k8s.io \"fast\" not found"]
        );
    }

    #[test]
    fn a_claim_in_use_keeps_its_protection() {
        let deleting = [claim(
            json!({"metadata": {"deletionTimestamp": "2026-12-04T00:00:00Z"}}),
        )];
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "db", "namespace": "shop"},
            "spec": {"containers": [], "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]},
            "status": {"phase": "Running"}}))
        .expect("pod");
        let pods = [pod];
        let cluster = Cluster {
            claims: &deleting,
            volumes: &[],
            classes: &[],
            pods: &pods,
            nodes: &[],
        };
        assert!(plan(&cluster).is_empty());
        let cluster = Cluster {
            pods: &[],
            ..cluster
        };
        assert_eq!(plan(&cluster), ["update PersistentVolumeClaim shop/data"]);
    }
}

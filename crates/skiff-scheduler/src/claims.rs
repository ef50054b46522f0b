//! What the scheduler knows of PersistentVolumeClaims (kube-scheduler's VolumeBinding
//! plugin, in the small): a bound claim whose volume is pinned to nodes keeps the pod to those
//! nodes; a missing claim, or an unbound one of an `Immediate` class, keeps it everywhere; an
//! unbound WaitForFirstConsumer claim goes where the pod goes, and the scheduler says where
//! with the claim's `volume.kubernetes.io/selected-node` annotation before binding the pod.
use std::collections::HashMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, PodSpec};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::filter::Volumes;

pub use skiff_api::volumes::SELECTED_NODE;

/// One claim, as scheduling sees it: its state and its access modes.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub state: ClaimState,
    pub modes: Vec<String>,
}

/// Whether a claim is bound, and where its volume may be used.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimState {
    /// Bound to `volume`, usable on `nodes` only (`None`: anywhere).
    Bound {
        volume: String,
        nodes: Option<Vec<String>>,
    },
    /// Not bound yet; `wait_for_consumer`: its class binds where the first pod goes.
    Unbound { wait_for_consumer: bool },
}

/// Claims by (namespace, name).
pub type Claims = HashMap<(String, String), Claim>;

/// The claims as scheduling sees them, from the stores' contents.
pub fn from_objects(
    claims: &[PersistentVolumeClaim],
    volumes: &[PersistentVolume],
    classes: &[StorageClass],
) -> Claims {
    let mut out = Claims::new();
    for claim in claims {
        let key = (
            claim.metadata.namespace.clone().unwrap_or_default(),
            claim.metadata.name.clone().unwrap_or_default(),
        );
        let spec = claim.spec.clone().unwrap_or_default();
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let volume_name = spec.volume_name.clone().unwrap_or_default();
        let state = if bound && !volume_name.is_empty() {
            let nodes = volumes
                .iter()
                .find(|v| v.metadata.name.as_deref() == Some(&volume_name))
                .and_then(skiff_api::volumes::pinned_hosts);
            ClaimState::Bound {
                volume: volume_name,
                nodes,
            }
        } else {
            let class = spec.storage_class_name.unwrap_or_default();
            let wait_for_consumer = classes
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(&class))
                .and_then(|c| c.volume_binding_mode.as_deref())
                == Some("WaitForFirstConsumer");
            ClaimState::Unbound { wait_for_consumer }
        };
        let modes = spec.access_modes.unwrap_or_default();
        out.insert(key, Claim { state, modes });
    }
    out
}

/// The claim names a pod spec uses.
pub fn claim_names(spec: &PodSpec) -> impl Iterator<Item = &str> {
    spec.volumes
        .iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
}

/// What the pod's claims require of a node.
pub fn requirements(claims: &Claims, namespace: &str, spec: &PodSpec) -> Volumes {
    let mut volumes = Volumes::default();
    for name in claim_names(spec) {
        match claims
            .get(&(namespace.to_string(), name.to_string()))
            .map(|c| &c.state)
        {
            None => {
                volumes
                    .blocked
                    .get_or_insert_with(|| format!("persistentvolumeclaim {name:?} not found"));
            }
            Some(ClaimState::Unbound {
                wait_for_consumer: false,
            }) => {
                volumes.blocked.get_or_insert_with(|| {
                    "pod has unbound immediate PersistentVolumeClaims".into()
                });
            }
            Some(ClaimState::Unbound { .. }) => {}
            Some(ClaimState::Bound { volume, nodes }) => {
                if let Some(nodes) = nodes {
                    volumes
                        .pinned
                        .push((name.to_string(), volume.clone(), nodes.clone()));
                }
            }
        }
    }
    volumes
}

/// The pod's claims that one node (`ReadWriteOnce`) or one pod (`ReadWriteOncePod`) may use
/// at a time, with the mode; a claim that also allows many readers or writers is not.
pub fn exclusive<'a>(
    claims: &'a Claims,
    namespace: &'a str,
    spec: &'a PodSpec,
) -> impl Iterator<Item = (&'a str, &'static str)> + 'a {
    claim_names(spec).filter_map(move |name| {
        let claim = claims.get(&(namespace.to_string(), name.to_string()))?;
        let has = |mode: &str| claim.modes.iter().any(|m| m == mode);
        if has("ReadWriteOncePod") {
            Some((name, "ReadWriteOncePod"))
        } else if has("ReadWriteOnce") && !has("ReadWriteMany") && !has("ReadOnlyMany") {
            Some((name, "ReadWriteOnce"))
        } else {
            None
        }
    })
}

/// The pod's claims that wait for it to be placed.
pub fn waiting_for(claims: &Claims, namespace: &str, spec: &PodSpec) -> Vec<String> {
    claim_names(spec)
        .filter(|name| {
            matches!(
                claims
                    .get(&(namespace.to_string(), name.to_string()))
                    .map(|c| &c.state),
                Some(ClaimState::Unbound {
                    wait_for_consumer: true
                })
            )
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_keep_pods_where_their_volumes_are() {
        let claims: Vec<PersistentVolumeClaim> = serde_json::from_value(json!([
            {"metadata": {"name": "bound", "namespace": "ns"},
             "spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"}},
            {"metadata": {"name": "later", "namespace": "ns"},
             "spec": {"storageClassName": "local-path"}, "status": {"phase": "Pending"}},
            {"metadata": {"name": "now", "namespace": "ns"},
             "spec": {"storageClassName": "fast"}, "status": {"phase": "Pending"}},
        ]))
        .expect("claims");
        let volumes: Vec<PersistentVolume> = serde_json::from_value(json!([
            {"metadata": {"name": "pv1"}, "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms":
                [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}}}
        ]))
        .expect("volumes");
        let classes: Vec<StorageClass> = serde_json::from_value(json!([
            {"metadata": {"name": "local-path"}, "provisioner": "p", "volumeBindingMode": "WaitForFirstConsumer"},
            {"metadata": {"name": "fast"}, "provisioner": "p", "volumeBindingMode": "Immediate"},
        ]))
        .expect("classes");
        let claims = from_objects(&claims, &volumes, &classes);
        let spec = |names: &[&str]| -> PodSpec {
            serde_json::from_value(json!({"containers": [], "volumes": names.iter().map(|n|
                json!({"name": n, "persistentVolumeClaim": {"claimName": n}})).collect::<Vec<_>>()}))
            .expect("spec")
        };
        let pinned = requirements(&claims, "ns", &spec(&["bound", "later"]));
        assert_eq!(pinned.blocked, None);
        assert_eq!(
            pinned.pinned,
            [("bound".into(), "pv1".into(), vec!["n2".to_string()])]
        );
        assert_eq!(
            waiting_for(&claims, "ns", &spec(&["bound", "later"])),
            ["later"]
        );
        assert_eq!(
            requirements(&claims, "ns", &spec(&["now"]))
                .blocked
                .as_deref(),
            Some("pod has unbound immediate PersistentVolumeClaims")
        );
        assert_eq!(
            requirements(&claims, "ns", &spec(&["gone"]))
                .blocked
                .as_deref(),
            Some("persistentvolumeclaim \"gone\" not found")
        );
    }
}

//! Facts about PersistentVolumes that the scheduler, the controllers, the node agent and the
//! Node authorizer all need, so they read a volume's node affinity the same way and name the
//! same annotations and finalizers.
use k8s_openapi::api::core::v1::PersistentVolume;

/// The provisioner of skiff's built-in StorageClass `local-path`.
pub const LOCAL_PATH_PROVISIONER: &str = "skiff.dev/local-path";
/// Kept on a provisioned local-path volume until its node has removed the directory.
pub const LOCAL_PATH_FINALIZER: &str = "skiff.dev/local-path";
/// The Node annotation that says where the node keeps its local-path volumes.
pub const LOCAL_PATH_DIR_ANNOTATION: &str = "skiff.dev/local-path-dir";
/// Who provisioned a volume (Kubernetes' annotation).
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Set by the scheduler on a WaitForFirstConsumer claim: the node its first pod goes to.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// A claim a pod uses is not removed (StorageObjectInUseProtection).
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// A bound volume is not removed.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// The node label a local volume is pinned by.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The hostnames a volume's required node affinity names with `In` (`None`: it names none, so
/// the volume is not pinned by hostname).
pub fn pinned_hosts(volume: &PersistentVolume) -> Option<Vec<String>> {
    let terms = &volume
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    let hosts: Vec<String> = terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .filter(|e| e.key == HOSTNAME_LABEL && e.operator == "In")
        .flat_map(|e| e.values.iter().flatten().cloned())
        .collect();
    (!hosts.is_empty()).then_some(hosts)
}

/// Whether the volume may be used on the node called `node`: not pinned, or pinned to it.
pub fn may_be_used_on(volume: &PersistentVolume, node: &str) -> bool {
    pinned_hosts(volume).is_none_or(|hosts| hosts.iter().any(|h| h == node))
}

/// Whether the volume is pinned to `node` and no other.
pub fn pinned_only_to(volume: &PersistentVolume, node: &str) -> bool {
    pinned_hosts(volume).is_some_and(|hosts| hosts.iter().all(|h| h == node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn volumes_are_pinned_by_hostname() {
        let pinned: PersistentVolume = serde_json::from_value(json!({"spec": {"nodeAffinity":
            {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME_LABEL, "operator": "In", "values": ["n1"]}]}]}}}}))
        .expect("pv");
        assert_eq!(pinned_hosts(&pinned), Some(vec!["n1".to_string()]));
        assert!(may_be_used_on(&pinned, "n1") && !may_be_used_on(&pinned, "n2"));
        assert!(pinned_only_to(&pinned, "n1") && !pinned_only_to(&pinned, "n2"));
        let free = PersistentVolume::default();
        assert!(may_be_used_on(&free, "n2") && !pinned_only_to(&free, "n2"));
    }
}

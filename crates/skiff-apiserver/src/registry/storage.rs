//! The PersistentVolume and PersistentVolumeClaim strategies, with the admission Kubernetes
//! runs for them:
//! - both start `Pending`, whatever the client sent as status;
//! - a claim that names no class gets the default StorageClass (the `DefaultStorageClass`
//!   admission plugin; `storageClassName: ""` asks for no class and is kept);
//! - both get their protection finalizer (`StorageObjectInUseProtection`): a claim a pod
//!   uses, or a volume bound to a claim, stays until the persistent-volume controller lets
//!   it go;
//! - a node may touch only the finalizers of a volume pinned to it (it removes the directory
//!   of a released local-path volume, then its finalizer): never where a volume points or who
//!   may use it.
use serde_json::{json, Value};
use skiff_api::status::ApiError;
use skiff_store::key_prefix;

use super::{set_status, Result, Strategy, View};
use crate::auth::user::UserInfo;

pub use skiff_api::volumes::{PVC_PROTECTION, PV_PROTECTION};
/// The annotation that makes a StorageClass the one claims without a class get.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
pub const STORAGE_CLASSES: &str = "storageclasses.storage.k8s.io";

pub struct Claims;
pub struct Volumes;

impl Strategy for Claims {
    fn prepare_for_create(&self, object: &mut Value) {
        set_status(object, Some(json!({"phase": "Pending"})));
    }

    fn mutate_on_create(&self, view: &dyn View, object: &mut Value) {
        if object.pointer("/spec/storageClassName").is_none() {
            if let (Some(class), Some(spec)) = (
                default_class(view),
                object.get_mut("spec").and_then(Value::as_object_mut),
            ) {
                spec.insert("storageClassName".into(), class.into());
            }
        }
        add_finalizer(object, PVC_PROTECTION);
    }
}

impl Strategy for Volumes {
    fn prepare_for_create(&self, object: &mut Value) {
        set_status(object, Some(json!({"phase": "Pending"})));
    }

    fn mutate_on_create(&self, _view: &dyn View, object: &mut Value) {
        add_finalizer(object, PV_PROTECTION);
    }

    fn authorize_write(
        &self,
        _view: &dyn View,
        user: &UserInfo,
        _namespace: Option<&str>,
        object: &Value,
        old: Option<&Value>,
    ) -> Result<Vec<String>> {
        let Some(node) = user.node_name() else {
            return Ok(Vec::new());
        };
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let refuse = |why: &str| {
            Err(ApiError::Forbidden(format!(
                "persistentvolumes {name:?} is forbidden: node {node:?} {why}"
            )))
        };
        let Some(old) = old else {
            return refuse("may not create persistent volumes");
        };
        if !pinned_to(old, node) {
            return refuse("may not modify a volume that is not on it");
        }
        let without_finalizers = |v: &Value| {
            let mut v = v.clone();
            for field in [
                "finalizers",
                "resourceVersion",
                "managedFields",
                "generation",
            ] {
                if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                    meta.remove(field);
                }
            }
            v
        };
        if without_finalizers(object) != without_finalizers(old) {
            return refuse("may change only the finalizers of its volumes");
        }
        Ok(Vec::new())
    }
}

/// The name of the StorageClass marked default (the newest, if several are, as Kubernetes).
pub fn default_class(view: &dyn View) -> Option<String> {
    view.list(&key_prefix(STORAGE_CLASSES, None))
        .iter()
        .filter(|class| {
            class
                .pointer(&format!(
                    "/metadata/annotations/{}",
                    DEFAULT_CLASS_ANNOTATION.replace('/', "~1")
                ))
                .and_then(Value::as_str)
                == Some("true")
        })
        .max_by_key(|class| {
            class
                .pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        })
        .and_then(|class| {
            class
                .pointer("/metadata/name")?
                .as_str()
                .map(str::to_string)
        })
}

/// Whether the stored volume is pinned to `node` alone by its node affinity.
pub fn pinned_to(volume: &Value, node: &str) -> bool {
    serde_json::from_value::<k8s_openapi::api::core::v1::PersistentVolume>(volume.clone())
        .is_ok_and(|pv| skiff_api::volumes::pinned_only_to(&pv, node))
}

fn add_finalizer(object: &mut Value, finalizer: &str) {
    let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut() {
        if !list.iter().any(|f| f.as_str() == Some(finalizer)) {
            list.push(finalizer.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::fake::FakeView;

    #[test]
    fn claims_get_the_default_class_and_protection() {
        let view = FakeView::default()
            .with(
                STORAGE_CLASSES,
                json!({"metadata": {"name": "local-path",
                    "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}}}),
            )
            .with(STORAGE_CLASSES, json!({"metadata": {"name": "slow"}}));
        let mut claim = json!({"metadata": {"name": "data", "namespace": "shop"}, "spec": {}});
        Claims.mutate_on_create(&view, &mut claim);
        assert_eq!(claim["spec"]["storageClassName"], "local-path");
        assert_eq!(claim["metadata"]["finalizers"], json!([PVC_PROTECTION]));
        // "" asks for no class at all.
        let mut classless = json!({"metadata": {"name": "d"}, "spec": {"storageClassName": ""}});
        Claims.mutate_on_create(&view, &mut classless);
        assert_eq!(classless["spec"]["storageClassName"], "");
    }

    #[test]
    fn a_node_only_lets_go_of_its_own_volumes() {
        let pinned = |node: &str| {
            json!({"metadata": {"name": "pvc-1", "finalizers": [PV_PROTECTION, "skiff.dev/local-path"]},
                "spec": {"hostPath": {"path": "/data/pvc-1"}, "nodeAffinity": {"required": {
                    "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname",
                        "operator": "In", "values": [node]}]}]}}}})
        };
        let node = UserInfo::new("system:node:n1", &["system:nodes"]);
        let view = FakeView::default();
        let old = pinned("n1");
        let mut released = old.clone();
        released["metadata"]["finalizers"] = json!([PV_PROTECTION]);
        assert!(Volumes
            .authorize_write(&view, &node, None, &released, Some(&old))
            .is_ok());
        let mut moved = old.clone();
        moved["spec"]["hostPath"]["path"] = json!("/");
        assert!(Volumes
            .authorize_write(&view, &node, None, &moved, Some(&old))
            .is_err());
        let other = pinned("n2");
        assert!(Volumes
            .authorize_write(&view, &node, None, &other, Some(&other))
            .is_err());
        assert!(Volumes
            .authorize_write(&view, &node, None, &old, None)
            .is_err());
    }
}

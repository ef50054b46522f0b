//! PersistentVolumes, PersistentVolumeClaims and StorageClasses (Kubernetes'
//! `pkg/apis/core/validation` and `pkg/apis/storage/validation`): access modes, sizes, one
//! volume source, reclaim policies and binding modes, with Kubernetes' field paths and words.

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeSpec,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{label_selector, one_of};
use crate::names;
use crate::status::{go_quote, Cause};

pub const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];
const RECLAIM_POLICIES: &[&str] = &["Delete", "Recycle", "Retain"];
const CLASS_RECLAIM_POLICIES: &[&str] = &["Delete", "Retain"];
pub const BINDING_MODES: &[&str] = &["Immediate", "WaitForFirstConsumer"];
const VOLUME_MODES: &[&str] = &["Block", "Filesystem"];
const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];
/// The volume sources skiff's agents can mount for a PersistentVolume.
const SOURCES: &[&str] = &["hostPath", "local"];

/// A claim: what it asks for and how it may be used.
pub(in crate::admission) fn claim(pvc: &PersistentVolumeClaim) -> Vec<Cause> {
    match &pvc.spec {
        None => vec![Cause::required("spec")],
        Some(spec) => claim_spec(spec, "spec"),
    }
}

/// A claim's spec at `path` (`spec`, or a StatefulSet's `spec.volumeClaimTemplates[0].spec`).
pub(in crate::admission) fn claim_spec(spec: &PersistentVolumeClaimSpec, path: &str) -> Vec<Cause> {
    let mut causes = access_modes(spec.access_modes.as_deref(), &format!("{path}.accessModes"));
    causes.extend(storage_size(
        spec.resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage")),
        &format!("{path}.resources[storage]"),
    ));
    if let Some(selector) = &spec.selector {
        causes.extend(label_selector(selector, &format!("{path}.selector")));
    }
    causes.extend(class_name(
        spec.storage_class_name.as_deref(),
        &format!("{path}.storageClassName"),
    ));
    if let Some(mode) = spec.volume_mode.as_deref() {
        causes.extend(one_of(
            Some(mode),
            &format!("{path}.volumeMode"),
            VOLUME_MODES,
        ));
    }
    causes
}

/// A volume: its size, access modes, its one source and where it may be used.
pub(in crate::admission) fn volume(pv: &PersistentVolume) -> Vec<Cause> {
    let Some(spec) = &pv.spec else {
        return vec![Cause::required("spec")];
    };
    let mut causes = access_modes(spec.access_modes.as_deref(), "spec.accessModes");
    match &spec.capacity {
        None => causes.push(Cause::required("spec.capacity")),
        Some(capacity) => {
            causes.extend(storage_size(
                capacity.get("storage"),
                "spec.capacity[storage]",
            ));
            for name in capacity.keys().filter(|k| *k != "storage") {
                causes.push(Cause::not_supported("spec.capacity", name, &["storage"]));
            }
        }
    }
    causes.extend(source(spec));
    if let Some(policy) = spec.persistent_volume_reclaim_policy.as_deref() {
        causes.extend(one_of(
            Some(policy),
            "spec.persistentVolumeReclaimPolicy",
            RECLAIM_POLICIES,
        ));
    }
    causes.extend(class_name(
        spec.storage_class_name.as_deref(),
        "spec.storageClassName",
    ));
    if let Some(mode) = spec.volume_mode.as_deref() {
        causes.extend(one_of(Some(mode), "spec.volumeMode", VOLUME_MODES));
    }
    causes
}

/// One source, of a kind skiff mounts, with its path.
fn source(spec: &PersistentVolumeSpec) -> Vec<Cause> {
    let mut causes = Vec::new();
    let all = serde_json::to_value(spec).unwrap_or_default();
    let known_fields = [
        "accessModes",
        "capacity",
        "claimRef",
        "mountOptions",
        "nodeAffinity",
        "persistentVolumeReclaimPolicy",
        "storageClassName",
        "volumeMode",
        "volumeAttributesClassName",
    ];
    let sources: Vec<&String> = all
        .as_object()
        .into_iter()
        .flat_map(|o| o.keys())
        .filter(|k| !known_fields.contains(&k.as_str()))
        .collect();
    match sources.as_slice() {
        [] => causes.push(Cause::required_because(
            "spec",
            "must specify a volume type",
        )),
        [one] if !SOURCES.contains(&one.as_str()) => causes.push(Cause::forbidden(
            format!("spec.{one}"),
            "skiff's nodes mount only hostPath and local persistent volumes",
        )),
        [_] => {}
        _ => causes.push(Cause::forbidden(
            "spec",
            "may not specify more than 1 volume type",
        )),
    }
    if let Some(host) = &spec.host_path {
        causes.extend(absolute_path(&host.path, "spec.hostPath.path"));
        if let Some(kind) = host.type_.as_deref() {
            if !HOST_PATH_TYPES.contains(&kind) {
                causes.push(Cause::not_supported(
                    "spec.hostPath.type",
                    kind,
                    &HOST_PATH_TYPES[1..],
                ));
            }
        }
    }
    if let Some(local) = &spec.local {
        causes.extend(absolute_path(&local.path, "spec.local.path"));
        let pinned = spec
            .node_affinity
            .as_ref()
            .and_then(|a| a.required.as_ref())
            .is_some_and(|r| !r.node_selector_terms.is_empty());
        if !pinned {
            causes.push(Cause::required_because(
                "spec.nodeAffinity",
                "Local volume requires node affinity",
            ));
        }
    }
    causes
}

/// A StorageClass: who provisions, what happens to released volumes, when claims bind.
pub(in crate::admission) fn storage_class(class: &StorageClass) -> Vec<Cause> {
    let mut causes = Vec::new();
    if class.provisioner.is_empty() {
        causes.push(Cause::required("provisioner"));
    } else {
        for msg in names::qualified_name(&class.provisioner) {
            causes.push(Cause::invalid(
                "provisioner",
                &go_quote(&class.provisioner),
                &msg,
            ));
        }
    }
    causes.extend(one_of(
        class.reclaim_policy.as_deref(),
        "reclaimPolicy",
        CLASS_RECLAIM_POLICIES,
    ));
    causes.extend(one_of(
        class.volume_binding_mode.as_deref(),
        "volumeBindingMode",
        BINDING_MODES,
    ));
    causes
}

/// At least one access mode, each known, ReadWriteOncePod alone.
fn access_modes(modes: Option<&[String]>, path: &str) -> Vec<Cause> {
    let modes = modes.unwrap_or_default();
    if modes.is_empty() {
        return vec![Cause::required_because(
            path,
            "at least 1 access mode is required",
        )];
    }
    let mut causes: Vec<Cause> = modes
        .iter()
        .filter(|m| !ACCESS_MODES.contains(&m.as_str()))
        .map(|m| Cause::not_supported(path, m, ACCESS_MODES))
        .collect();
    if modes.len() > 1 && modes.iter().any(|m| m == "ReadWriteOncePod") {
        causes.push(Cause::forbidden(
            path,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
    causes
}

/// A storage size: present, a quantity, above zero.
fn storage_size(size: Option<&Quantity>, path: &str) -> Vec<Cause> {
    let Some(size) = size else {
        return vec![Cause::required(path)];
    };
    match crate::quantity::bytes(&size.0) {
        Ok(bytes) if bytes > 0 => Vec::new(),
        Ok(_) => vec![Cause::invalid(
            path,
            &go_quote(&size.0),
            "must be greater than zero",
        )],
        Err(e) => vec![Cause::invalid(path, &go_quote(&size.0), &e.to_string())],
    }
}

fn class_name(name: Option<&str>, path: &str) -> Vec<Cause> {
    let name = name.unwrap_or("");
    if name.is_empty() {
        return Vec::new();
    }
    names::dns1123_subdomain(name)
        .into_iter()
        .map(|msg| Cause::invalid(path, &go_quote(name), &msg))
        .collect()
}

fn absolute_path(path: &str, field: &str) -> Vec<Cause> {
    if path.is_empty() {
        return vec![Cause::required(field)];
    }
    let mut causes = Vec::new();
    if !path.starts_with('/') {
        causes.push(Cause::invalid(
            field,
            &go_quote(path),
            "must be an absolute path",
        ));
    }
    if path.split('/').any(|part| part == "..") {
        causes.push(Cause::invalid(
            field,
            &go_quote(path),
            "must not contain '..'",
        ));
    }
    causes
}

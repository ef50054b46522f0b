//! PersistentVolumes, PersistentVolumeClaims and StorageClasses, with kube-apiserver's columns.

use jiff::Timestamp;
use serde_json::Value;

use super::{age, array_at, column, docs, name, str_at};
use super::{wide, Printer, AGE, NAME};

pub(super) const PERSISTENT_VOLUMES: Printer = Printer::new(
    &[
        NAME,
        column("Capacity", "string", docs::PV_CAPACITY),
        column("Access Modes", "string", docs::PV_ACCESS_MODES),
        column("Reclaim Policy", "string", docs::PV_RECLAIM_POLICY),
        column("Status", "string", docs::PV_STATUS),
        column("Claim", "string", docs::PV_CLAIM),
        column("StorageClass", "string", docs::STORAGE_CLASS_NAME),
        column(
            "VolumeAttributesClass",
            "string",
            docs::VOLUME_ATTRIBUTES_CLASS,
        ),
        column("Reason", "string", docs::PV_REASON),
        AGE,
        wide("VolumeMode", "string", docs::VOLUME_MODE),
    ],
    volume_cells,
);

fn volume_cells(pv: &Value, now: Timestamp) -> Vec<Value> {
    let claim = match (
        str_at(pv, "/spec/claimRef/namespace"),
        str_at(pv, "/spec/claimRef/name"),
    ) {
        (_, "") => String::new(),
        (namespace, claim) => format!("{namespace}/{claim}"),
    };
    vec![
        name(pv),
        str_at(pv, "/spec/capacity/storage").into(),
        access_modes(pv).into(),
        str_at(pv, "/spec/persistentVolumeReclaimPolicy").into(),
        str_at(pv, "/status/phase").into(),
        claim.into(),
        str_at(pv, "/spec/storageClassName").into(),
        unset(str_at(pv, "/spec/volumeAttributesClassName")).into(),
        str_at(pv, "/status/reason").into(),
        age(pv, now).into(),
        unset(str_at(pv, "/spec/volumeMode")).into(),
    ]
}

pub(super) const PERSISTENT_VOLUME_CLAIMS: Printer = Printer::new(
    &[
        NAME,
        column("Status", "string", docs::PVC_STATUS),
        column("Volume", "string", docs::PVC_VOLUME),
        column("Capacity", "string", docs::PVC_CAPACITY),
        column("Access Modes", "string", docs::PVC_ACCESS_MODES),
        column("StorageClass", "string", docs::STORAGE_CLASS_NAME),
        column(
            "VolumeAttributesClass",
            "string",
            docs::VOLUME_ATTRIBUTES_CLASS,
        ),
        AGE,
        wide("VolumeMode", "string", docs::VOLUME_MODE),
    ],
    claim_cells,
);

fn claim_cells(pvc: &Value, now: Timestamp) -> Vec<Value> {
    let phase = match str_at(pvc, "/metadata/deletionTimestamp") {
        "" => str_at(pvc, "/status/phase"),
        _ => "Terminating",
    };
    // Capacity and access modes are what the claim got, so only once it is bound.
    let bound = !str_at(pvc, "/spec/volumeName").is_empty();
    vec![
        name(pvc),
        phase.into(),
        str_at(pvc, "/spec/volumeName").into(),
        if bound {
            str_at(pvc, "/status/capacity/storage")
        } else {
            ""
        }
        .into(),
        if bound {
            status_access_modes(pvc)
        } else {
            String::new()
        }
        .into(),
        str_at(pvc, "/spec/storageClassName").into(),
        unset(str_at(pvc, "/spec/volumeAttributesClassName")).into(),
        age(pvc, now).into(),
        unset(str_at(pvc, "/spec/volumeMode")).into(),
    ]
}

pub(super) const STORAGE_CLASSES: Printer = Printer::new(
    &[
        NAME,
        column("Provisioner", "string", docs::SC_PROVISIONER),
        column("ReclaimPolicy", "string", docs::SC_RECLAIM_POLICY),
        column("VolumeBindingMode", "string", docs::SC_BINDING_MODE),
        column("AllowVolumeExpansion", "string", docs::SC_EXPANSION),
        AGE,
    ],
    class_cells,
);

fn class_cells(class: &Value, now: Timestamp) -> Vec<Value> {
    let default = str_at(
        class,
        "/metadata/annotations/storageclass.kubernetes.io~1is-default-class",
    ) == "true";
    let mut shown = str_at(class, "/metadata/name").to_string();
    if default {
        shown.push_str(" (default)");
    }
    let expansion = class
        .get("allowVolumeExpansion")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    vec![
        shown.into(),
        str_at(class, "/provisioner").into(),
        or_default(str_at(class, "/reclaimPolicy"), "Delete").into(),
        or_default(str_at(class, "/volumeBindingMode"), "Immediate").into(),
        expansion.to_string().into(),
        age(class, now).into(),
    ]
}

/// `RWO,ROX`: access modes as kubectl abbreviates them.
fn access_modes(object: &Value) -> String {
    abbreviate(array_at(object, "/spec/accessModes"))
}

fn status_access_modes(object: &Value) -> String {
    abbreviate(array_at(object, "/status/accessModes"))
}

fn abbreviate(modes: &[Value]) -> String {
    let mut short: Vec<&str> = Vec::new();
    for (mode, abbreviation) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if modes.iter().any(|m| m.as_str() == Some(mode)) {
            short.push(abbreviation);
        }
    }
    short.join(",")
}

fn unset(value: &str) -> &str {
    if value.is_empty() {
        "<unset>"
    } else {
        value
    }
}

fn or_default<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() {
        default
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_show_what_they_got_once_bound() {
        let now = Timestamp::now();
        let pending = json!({"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "local-path"},
            "status": {"phase": "Pending"}});
        let cells = claim_cells(&pending, now);
        assert_eq!(cells[1], "Pending");
        assert_eq!(cells[3], "");
        let bound = json!({"metadata": {"name": "data"},
            "spec": {"volumeName": "pvc-1", "storageClassName": "local-path", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce", "ReadOnlyMany"]}});
        let cells = claim_cells(&bound, now);
        assert_eq!(cells[2], "pvc-1");
        assert_eq!(cells[3], "1Gi");
        assert_eq!(cells[4], "RWO,ROX");
        assert_eq!(cells[6], "<unset>");
        let class = json!({"metadata": {"name": "local-path", "annotations":
            {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "skiff.dev/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
        let cells = class_cells(&class, now);
        assert_eq!(cells[0], "local-path (default)");
        assert_eq!(cells[2], "Delete");
        assert_eq!(cells[3], "WaitForFirstConsumer");
    }
}

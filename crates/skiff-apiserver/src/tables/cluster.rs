//! Nodes, Namespaces, Events, ConfigMaps, Secrets, Leases and ResourceQuotas.

use jiff::Timestamp;
use serde_json::{Map, Value};

use super::{age, array_at, column, docs, int_at, labels_of, name, or_none, since, str_at};
use super::{wide, Column, Printer, AGE, NAME};

pub(super) const NODES: Printer = Printer::new(
    &[
        NAME,
        column("Status", "string", docs::NODE_STATUS),
        column("Roles", "string", docs::NODE_ROLES),
        AGE,
        column("Version", "string", docs::KUBELET_VERSION),
        wide("Internal-IP", "string", docs::NODE_ADDRESSES),
        wide("External-IP", "string", docs::NODE_ADDRESSES),
        wide("OS-Image", "string", docs::OS_IMAGE),
        wide("Kernel-Version", "string", docs::KERNEL_VERSION),
        wide("Container-Runtime", "string", docs::CONTAINER_RUNTIME),
    ],
    node_cells,
);

fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    let address = |kind: &str| {
        array_at(node, "/status/addresses")
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(kind))
            .and_then(|a| a.get("address").and_then(Value::as_str))
            .unwrap_or("<none>")
            .to_string()
    };
    let info = |field: &str| {
        Some(str_at(node, &format!("/status/nodeInfo/{field}")))
            .filter(|s| !s.is_empty())
            .unwrap_or("<unknown>")
            .to_string()
    };
    vec![
        name(node),
        node_status(node).into(),
        node_roles(node).into(),
        age(node, now).into(),
        str_at(node, "/status/nodeInfo/kubeletVersion").into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        info("osImage").into(),
        info("kernelVersion").into(),
        info("containerRuntimeVersion").into(),
    ]
}

/// `Ready`, `NotReady` or `Unknown` from the Ready condition, then `SchedulingDisabled` for a
/// cordoned node: `Ready,SchedulingDisabled`.
fn node_status(node: &Value) -> String {
    let ready = array_at(node, "/status/conditions")
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"));
    let mut status = vec![match ready {
        Some(c) if c.get("status").and_then(Value::as_str) == Some("True") => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }
    status.join(",")
}

/// Roles come from `node-role.kubernetes.io/<role>` labels and the older `kubernetes.io/role`.
fn node_roles(node: &Value) -> String {
    let mut roles: Vec<&str> = labels_of(node)
        .filter_map(
            |(key, value)| match key.strip_prefix("node-role.kubernetes.io/") {
                Some(role) if !role.is_empty() => Some(role),
                Some(_) => None,
                None if key == "kubernetes.io/role" && !value.is_empty() => Some(value),
                None => None,
            },
        )
        .collect();
    roles.sort_unstable();
    roles.dedup();
    or_none(roles.join(","))
}

pub(super) const NAMESPACES: Printer = Printer::new(
    &[
        NAME,
        column("Status", "string", docs::NAMESPACE_STATUS),
        AGE,
    ],
    namespace_cells,
);

fn namespace_cells(ns: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(ns),
        str_at(ns, "/status/phase").into(),
        age(ns, now).into(),
    ]
}

pub(super) const EVENTS: Printer = Printer::new(
    &[
        column("Last Seen", "string", docs::EVENT_LAST),
        column("Type", "string", docs::EVENT_TYPE),
        column("Reason", "string", docs::EVENT_REASON),
        column("Object", "string", docs::EVENT_OBJECT),
        wide("Subobject", "string", docs::EVENT_SUBOBJECT),
        wide("Source", "string", docs::EVENT_SOURCE),
        column("Message", "string", docs::EVENT_MESSAGE),
        wide("First Seen", "string", docs::EVENT_FIRST),
        wide("Count", "string", docs::EVENT_COUNT),
        Column {
            priority: 1,
            ..NAME
        },
    ],
    event_cells,
);

fn event_cells(event: &Value, now: Timestamp) -> Vec<Value> {
    // Events from the events.k8s.io API set eventTime (and series) instead of the timestamps.
    let first_seen = match str_at(event, "/firstTimestamp") {
        "" => since(str_at(event, "/eventTime"), now),
        first => since(first, now),
    };
    let mut last_seen = match str_at(event, "/lastTimestamp") {
        "" => first_seen.clone(),
        last => since(last, now),
    };
    let mut count = int_at(event, "/count");
    if event.get("series").is_some_and(Value::is_object) {
        last_seen = since(str_at(event, "/series/lastObservedTime"), now);
        count = int_at(event, "/series/count");
    } else if count == 0 {
        count = 1;
    }
    let kind = str_at(event, "/involvedObject/kind").to_lowercase();
    let object = match str_at(event, "/involvedObject/name") {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let component = Some(str_at(event, "/source/component"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| str_at(event, "/reportingComponent"));
    let source = match Some(str_at(event, "/source/host"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| str_at(event, "/reportingInstance"))
    {
        "" => component.to_string(),
        host => format!("{component}, {host}"),
    };
    vec![
        last_seen.into(),
        str_at(event, "/type").into(),
        str_at(event, "/reason").into(),
        object.into(),
        str_at(event, "/involvedObject/fieldPath").into(),
        source.into(),
        str_at(event, "/message").trim().into(),
        first_seen.into(),
        count.into(),
        name(event),
    ]
}

pub(super) const CONFIGMAPS: Printer = Printer::new(
    &[NAME, column("Data", "string", docs::CONFIGMAP_DATA), AGE],
    configmap_cells,
);

fn configmap_cells(cm: &Value, now: Timestamp) -> Vec<Value> {
    let data = count_keys(cm, "/data") + count_keys(cm, "/binaryData");
    vec![name(cm), data.into(), age(cm, now).into()]
}

pub(super) const SECRETS: Printer = Printer::new(
    &[
        NAME,
        column("Type", "string", docs::SECRET_TYPE),
        column("Data", "string", docs::SECRET_DATA),
        AGE,
    ],
    secret_cells,
);

fn secret_cells(secret: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(secret),
        str_at(secret, "/type").into(),
        count_keys(secret, "/data").into(),
        age(secret, now).into(),
    ]
}

pub(super) const LEASES: Printer = Printer::new(
    &[NAME, column("Holder", "string", docs::LEASE_HOLDER), AGE],
    lease_cells,
);

fn lease_cells(lease: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(lease),
        str_at(lease, "/spec/holderIdentity").into(),
        age(lease, now).into(),
    ]
}

pub(super) const RESOURCE_QUOTAS: Printer = Printer::new(
    &[
        NAME,
        AGE,
        column("Request", "string", docs::QUOTA_REQUEST),
        column("Limit", "string", docs::QUOTA_LIMIT),
    ],
    quota_cells,
);

/// `pods: 1/10, requests.cpu: 250m/2` under REQUEST, the `limits.*` under LIMIT, in name order,
/// from the status (as kube-apiserver's printer).
fn quota_cells(quota: &Value, now: Timestamp) -> Vec<Value> {
    let hard = quota.pointer("/status/hard").and_then(Value::as_object);
    let used = quota.pointer("/status/used").and_then(Value::as_object);
    let (mut requests, mut limits) = (Vec::new(), Vec::new());
    for (resource, limit) in hard.into_iter().flatten() {
        let amount = used
            .and_then(|u| u.get(resource))
            .and_then(Value::as_str)
            .unwrap_or("0");
        let cell = format!("{resource}: {amount}/{}", limit.as_str().unwrap_or(""));
        match resource.split('.').next() {
            Some("limits") if resource.contains('.') => limits.push(cell),
            _ => requests.push(cell),
        }
    }
    vec![
        name(quota),
        age(quota, now).into(),
        requests.join(", ").into(),
        limits.join(", ").into(),
    ]
}

fn count_keys(object: &Value, pointer: &str) -> usize {
    object
        .pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, Map::len)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ago, now};
    use super::*;
    use serde_json::json;

    fn node(ready: Option<&str>, unschedulable: bool) -> Value {
        let conditions: Vec<Value> = ready
            .map(|status| json!({"type": "Ready", "status": status}))
            .into_iter()
            .collect();
        json!({
            "metadata": {"name": "node-1", "creationTimestamp": ago(51 * 3600),
                         "labels": {"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "worker"}},
            "spec": {"unschedulable": unschedulable},
            "status": {"conditions": conditions,
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}],
                       "nodeInfo": {"kubeletVersion": "v1.33.0-skiff", "osImage": "Debian GNU/Linux 12"}},
        })
    }

    #[test]
    fn node_status_comes_from_the_ready_condition_and_cordoning() {
        let cases = [
            (Some("True"), false, "Ready"),
            (Some("False"), false, "NotReady"),
            (Some("Unknown"), false, "NotReady"),
            (None, false, "Unknown"),
            (Some("True"), true, "Ready,SchedulingDisabled"),
        ];
        for (ready, cordoned, want) in cases {
            assert_eq!(
                node_cells(&node(ready, cordoned), now())[1],
                want,
                "{ready:?}"
            );
        }
        let cells = node_cells(&node(Some("True"), false), now());
        assert_eq!(
            cells[2..5],
            ["control-plane,worker", "2d3h", "v1.33.0-skiff"]
        );
        assert_eq!(
            cells[5..],
            [
                "192.168.1.10",
                "<none>",
                "Debian GNU/Linux 12",
                "<unknown>",
                "<unknown>"
            ]
        );
    }

    #[test]
    fn events_name_their_object_and_when_they_were_seen() {
        let event = json!({
            "metadata": {"name": "web.17a"},
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
            "reason": "Pulled", "type": "Normal", "message": "Pulled image \"web:1\"\n",
            "firstTimestamp": ago(300), "lastTimestamp": ago(30), "count": 2,
            "source": {"component": "kubelet", "host": "node-1"},
        });
        assert_eq!(
            event_cells(&event, now()),
            [
                json!("30s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web"),
                json!("spec.containers{app}"),
                json!("kubelet, node-1"),
                json!("Pulled image \"web:1\""),
                json!("5m"),
                json!(2),
                json!("web.17a"),
            ]
        );
        let new_api = json!({"metadata": {"name": "e"}, "eventTime": ago(10),
                             "involvedObject": {"kind": "Node"}, "reportingComponent": "skiff"});
        let cells = event_cells(&new_api, now());
        assert_eq!(
            [&cells[0], &cells[3], &cells[5], &cells[8]].map(Clone::clone),
            [json!("10s"), json!("node"), json!("skiff"), json!(1)]
        );
    }

    #[test]
    fn configmaps_and_secrets_count_their_keys() {
        let cm =
            json!({"metadata": {"name": "c"}, "data": {"a": "1"}, "binaryData": {"b": "AA=="}});
        assert_eq!(configmap_cells(&cm, now())[1], 2);
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}});
        assert_eq!(
            secret_cells(&secret, now())[1..3],
            [json!("Opaque"), json!(1)]
        );
        let ns = json!({"metadata": {"name": "default"}, "status": {"phase": "Active"}});
        assert_eq!(namespace_cells(&ns, now())[1], "Active");
    }
}

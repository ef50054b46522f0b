//! DaemonSets on `skiff lab`: real hosts in network namespaces, each with its own skiff and
//! containerd. A pod on every host; a host that leaves (its Node deleted while it is down)
//! loses its pod, and one that joins gets one; a new template rolls out host by host.
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::eventually;
use common::lab::{Lab, IMAGE};
use serde_json::{json, Value};

fn daemon_set(greeting: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "web", "image": IMAGE, "imagePullPolicy": "Never",
                    "env": [{"name": "GREETING", "value": greeting}],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}]}}}})
}

/// The set's live pods (not being deleted) by node: (name, ready, GREETING).
fn pods_by_node(lab: &Lab) -> BTreeMap<String, Vec<(String, bool, String)>> {
    let mut by_node: BTreeMap<String, Vec<(String, bool, String)>> = BTreeMap::new();
    let pods = lab
        .get("host-1", &["pods", "-l", "app=agent"])
        .unwrap_or_default();
    for pod in pods["items"].as_array().into_iter().flatten() {
        if pod["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        by_node.entry(node).or_default().push((
            pod["metadata"]["name"].as_str().unwrap_or("").to_string(),
            ready,
            pod["spec"]["containers"][0]["env"][0]["value"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ));
    }
    by_node
}

/// Waits until exactly `hosts` each run one Ready pod with `greeting`, and no other host does.
fn wait_for_one_per_host(lab: &Lab, hosts: &[&str], greeting: &str) {
    eventually(
        &format!("one ready {greeting} pod on each of {hosts:?}"),
        Duration::from_secs(150),
        || {
            let by_node = pods_by_node(lab);
            let nodes: Vec<&str> = by_node.keys().map(String::as_str).collect();
            let each = by_node
                .values()
                .all(|pods| pods.len() == 1 && pods[0].1 && pods[0].2 == greeting);
            (nodes == hosts && each).then_some(())
        },
    );
}

#[test]
fn a_daemon_set_follows_hosts_leaving_and_joining_and_rolls_host_by_host() {
    let mut lab = Lab::up(3, 1, &[]);
    lab.apply("host-1", &daemon_set("one"));
    wait_for_one_per_host(&lab, &["host-1", "host-2", "host-3"], "one");
    let (ok, out, err) = lab.kubectl(
        "host-1",
        &["rollout", "status", "daemonset/agent", "--timeout=60s"],
    );
    assert!(ok && out.contains("successfully rolled out"), "{out}{err}");

    // host-3 leaves: down, and its Node deleted. Its pod goes (collected once its node has
    // been gone for the quarantine), and the set wants two.
    lab.fault("kill", &["host-3"]);
    let (ok, _, err) = lab.kubectl("host-1", &["delete", "node", "host-3"]);
    assert!(ok, "{err}");
    eventually("host-3's pod gone", Duration::from_secs(120), || {
        let pods = lab.get("host-1", &["pods", "-l", "app=agent"])?;
        let on_host_3 = pods["items"]
            .as_array()?
            .iter()
            .any(|p| p["spec"]["nodeName"] == "host-3");
        (!on_host_3).then_some(())
    });
    let ds = lab.get("host-1", &["daemonset", "agent"]).expect("the set");
    assert_eq!(ds["status"]["desiredNumberScheduled"], 2, "{ds}");

    // host-3 joins again: it registers, and gets its pod.
    let output = lab.lab("restart", &["host-3"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    wait_for_one_per_host(&lab, &["host-1", "host-2", "host-3"], "one");

    // A new template rolls out, every host's pod replaced; history has both revisions.
    lab.apply("host-1", &daemon_set("two"));
    let (ok, out, err) = lab.kubectl(
        "host-1",
        &["rollout", "status", "daemonset/agent", "--timeout=150s"],
    );
    assert!(ok, "{out}{err}");
    wait_for_one_per_host(&lab, &["host-1", "host-2", "host-3"], "two");
    let (ok, out, err) = lab.kubectl("host-1", &["rollout", "history", "daemonset/agent"]);
    assert!(ok && out.contains('1') && out.contains('2'), "{out}{err}");
    let (_, out, _) = lab.kubectl("host-1", &["get", "daemonset", "agent"]);
    assert!(
        out.contains("NODE SELECTOR") && out.contains("<none>"),
        "{out}"
    );

    let (ok, _, err) = lab.kubectl("host-1", &["delete", "daemonset", "agent", "--wait=true"]);
    assert!(ok, "{err}");
    eventually("the pods gone", Duration::from_secs(60), || {
        pods_by_node(&lab).is_empty().then_some(())
    });
    lab.down();
}

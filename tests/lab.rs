//! End-to-end on `skiff lab`: real hosts in network namespaces, each with its own skiff and
//! containerd. Pod networking across hosts with both backends, and a cluster that loses the
//! server its agents joined through.

mod common;

use std::time::{Duration, Instant};

use common::eventually;
use common::lab::{Lab, IMAGE};
use serde_json::{json, Value};

/// A web pod pinned to `host` (the lab image: `/` and `/cgi-bin/peer`).
fn pod(name: &str, host: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeName": host,
            "containers": [{
                "name": "web", "image": IMAGE, "imagePullPolicy": "Never",
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
            }],
        },
    })
}

fn pod_ip(pod: &Value) -> String {
    pod["status"]["podIP"]
        .as_str()
        .expect("a pod IP")
        .to_string()
}

/// Pods on three hosts reach each other by IP with their own source address; a Service whose
/// only endpoint is on host-2 answers pods on every host, by ClusterIP and by DNS name; its
/// NodePort answers on a host that runs no endpoint.
fn pods_reach_each_other_across_hosts(pod_network: &str) {
    let mut lab = Lab::up(3, 1, &["--pod-network", pod_network]);
    let via = "host-1";
    for (name, host) in [("a1", "host-1"), ("a2", "host-2"), ("a3", "host-3")] {
        lab.apply(via, &pod(name, host));
    }
    lab.apply(
        via,
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "only-on-2"},
            "spec": {"type": "NodePort", "selector": {"app": "a2"},
                     "ports": [{"port": 80, "targetPort": 8080}]},
        }),
    );
    let pods: Vec<Value> = ["a1", "a2", "a3"]
        .iter()
        .map(|name| lab.wait_ready_pod(via, name))
        .collect();
    let ips: Vec<String> = pods.iter().map(pod_ip).collect();
    for (pod, host) in pods.iter().zip(["host-1", "host-2", "host-3"]) {
        assert_eq!(pod["spec"]["nodeName"], host);
    }

    // Pod to pod across hosts, both ways, and the peer sees the pod's own address (no
    // masquerading inside the cluster CIDR).
    for (from, to) in [(0, 1), (1, 2), (2, 0)] {
        let url = format!("http://{}:8080/cgi-bin/peer", ips[to]);
        let seen = lab.fetch_from(via, &format!("a{}", from + 1), &url);
        // busybox httpd listens on IPv6 and writes IPv4 peers as `[::ffff:10.42.0.2]`.
        let seen = seen
            .trim()
            .trim_start_matches("[::ffff:")
            .trim_end_matches(']');
        assert_eq!(
            seen,
            ips[from],
            "a{} → a{} ({pod_network}) must arrive from the pod's own address",
            from + 1,
            to + 1
        );
    }

    // The Service's only endpoint is on host-2: pods on every host reach it by ClusterIP and
    // by name (each host's own DNS server answers).
    let service = lab
        .get(via, &["service", "only-on-2"])
        .expect("the service");
    let cluster_ip = service["spec"]["clusterIP"].as_str().expect("a ClusterIP");
    let node_port = service["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("a node port");
    for client in ["a1", "a2", "a3"] {
        let by_ip = lab.fetch_from(via, client, &format!("http://{cluster_ip}/"));
        assert_eq!(by_ip.trim(), "lab", "{client} → ClusterIP");
        let by_name = lab.fetch_from(
            via,
            client,
            "http://only-on-2.default.svc.cluster.local/cgi-bin/peer",
        );
        assert!(!by_name.trim().is_empty(), "{client} → by name: {by_name}");
    }

    // The NodePort on host-3 (no endpoint there), asked from the machine itself.
    let host_3 = lab.host_ip(via, "host-3");
    let answer = eventually("the NodePort on host-3", Duration::from_secs(30), || {
        common::node::http_get(&host_3, node_port as u16).filter(|a| a.contains("200 OK"))
    });
    assert!(answer.ends_with("lab\n"), "{answer}");

    // Every pod is removed before the lab goes down.
    let (ok, out, err) = lab.kubectl(via, &["delete", "pod", "a1", "a2", "a3", "--wait=true"]);
    assert!(ok, "{out}{err}");
    lab.down();
}

#[test]
fn pods_reach_each_other_across_hosts_with_host_gw() {
    pods_reach_each_other_across_hosts("host-gw");
}

#[test]
fn pods_reach_each_other_across_hosts_with_vxlan() {
    pods_reach_each_other_across_hosts("vxlan");
}

fn lease_renewed_at(lab: &Lab, via: &str, node: &str) -> Option<jiff::Timestamp> {
    let lease = lab.get(via, &["lease", "-n", "kube-node-lease", node])?;
    lease["spec"]["renewTime"].as_str()?.parse().ok()
}

/// Whether the node is Ready (`None` when the API did not answer).
fn node_ready(lab: &Lab, via: &str, node: &str) -> Option<bool> {
    lab.get(via, &["node", node]).and_then(|n| {
        n["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")
            .map(|c| c["status"] == "True")
    })
}

/// Three servers started at the same moment all become voters; an agent that joined through
/// host-1 keeps its node Ready and its pod running after host-1 dies, because it learned the
/// other servers and fails over to them.
#[test]
fn an_agent_outlives_the_server_it_joined_through() {
    let mut lab = Lab::up(4, 3, &[]);
    let output = lab.lab("status", &[]);
    assert!(output.status.success());
    let members = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["members", "list", "--kubeconfig"])
        .arg(lab.kubeconfig("host-2"))
        .output()
        .expect("skiff members");
    assert!(members.status.success());
    let members = String::from_utf8_lossy(&members.stdout).into_owned();
    assert_eq!(
        members.lines().filter(|l| l.contains(" voter ")).count(),
        3,
        "three voters after joining at once:\n{members}"
    );
    assert!(!members.contains("warning"), "{members}");

    lab.apply("host-2", &pod("edge", "host-4"));
    let before = lab.wait_ready_pod("host-2", "edge");

    // host-4's agent was given host-1's address, and learns the others from the member list
    // (it says so in its log once it knows all three).
    let log = lab.dir.join("host-4").join("skiff.log");
    eventually(
        "host-4 to learn every server",
        Duration::from_secs(30),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines()
                .any(|l| {
                    l.contains("API servers this agent may use") && l.matches(":6443").count() == 3
                })
                .then_some(())
        },
    );
    // host-1 dies with everything on it.
    lab.fault("kill", &["host-1"]);
    let killed = jiff::Timestamp::now();
    let via = "host-2";
    eventually("a write after the kill", Duration::from_secs(20), || {
        let (ok, _, _) = lab.kubectl(
            via,
            &["create", "configmap", "after-kill", "--from-literal=a=b"],
        );
        ok.then_some(())
    });
    // Past the time a node without heartbeats is NotReady (12 s) and its pods evicted (8 s
    // later): the node must stay Ready and its pod in place throughout.
    let watch_until = Instant::now() + Duration::from_secs(28);
    while Instant::now() < watch_until {
        if let Some(ready) = node_ready(&lab, via, "host-4") {
            assert!(
                ready,
                "host-4 went NotReady after the server it joined through died: {}",
                lab.get(via, &["node", "host-4"]).unwrap_or_default()["status"]["conditions"]
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    // Only the leader hears heartbeats, so only its answer carries a renewTime.
    let renewed = ["host-2", "host-3"]
        .iter()
        .find_map(|server| lease_renewed_at(&lab, server, "host-4"))
        .expect("host-4's lease, renewed, from the leader");
    assert!(
        renewed > killed + jiff::SignedDuration::from_secs(10),
        "host-4's heartbeats reach the new leader (renewed {renewed}, host-1 killed {killed})"
    );
    let after = lab
        .get(via, &["pod", "edge"])
        .expect("the pod is still there");
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(after["status"]["phase"], "Running");

    let (ok, out, err) = lab.kubectl(via, &["delete", "pod", "edge", "--wait=true"]);
    assert!(ok, "{out}{err}");
    lab.down();
}

//! Scheduler and controllers end to end.
//! - With REAL containerd on one node: the rolling-update Deployment skiff was specified from
//!   (`seed-001-deployment-rolling.yaml`): 3 replicas, `kubectl scale` 3→10→2, `kubectl set
//!   image` + `rollout status`, `rollout history`, `rollout undo` reusing the old ReplicaSet.
//! - With FAKE runtimes on three simulated nodes (`skiff agent --runtime fake`, clearly not
//!   real containers): spreading, the unschedulable message and `skiff explain`, and a node
//!   that dies: NotReady, tainted, its pods evicted and replaced on the others; deletion
//!   propagation; a Service's Endpoints and EndpointSlices following its Deployment's pods.
mod common;

use std::process::Command;
use std::time::Duration;

use common::fake::{one_simulated_node, FakeAgent};
use common::node::Cluster;
use common::{eventually, Server};
use serde_json::{json, Value};

fn pods_of(client: &common::Client, selector: &str) -> Vec<Value> {
    let (_, list) = client.get(&format!(
        "/api/v1/namespaces/default/pods?labelSelector={selector}"
    ));
    list["items"].as_array().cloned().unwrap_or_default()
}

fn running(pods: &[Value]) -> usize {
    pods.iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .count()
}

#[test]
fn a_rolling_deployment_scales_updates_and_rolls_back_on_containerd() {
    let cluster = Cluster::start(64, "d");
    cluster.add_image("my-image", "v1\n");
    cluster.add_image("my-image:v2", "v2\n");
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/manifests/seed-001-deployment-rolling.yaml"
    );
    let (ok, out, err) = cluster.kubectl(&["apply", "-f", manifest]);
    assert!(ok, "{out}{err}");
    let rollout = |c: &Cluster| {
        let (ok, out, err) = c.kubectl(&[
            "rollout",
            "status",
            "deployment/my-service",
            "--timeout=120s",
        ]);
        assert!(ok && out.contains("successfully rolled out"), "{out}{err}");
    };
    rollout(&cluster);
    assert_eq!(running(&pods_of(&cluster.client, "app=my-app")), 3);

    for replicas in [10, 2] {
        let (ok, out, err) = cluster.kubectl(&[
            "scale",
            "deployment/my-service",
            &format!("--replicas={replicas}"),
        ]);
        assert!(ok, "{out}{err}");
        eventually(
            &format!("{replicas} replicas"),
            Duration::from_secs(120),
            || {
                let pods = pods_of(&cluster.client, "app=my-app");
                let all = pods
                    .iter()
                    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                    .count();
                (running(&pods) == replicas && all == replicas).then_some(())
            },
        );
    }

    let (ok, out, err) = cluster.kubectl(&[
        "set",
        "image",
        "deployment/my-service",
        "my-container=my-image:v2",
    ]);
    assert!(ok, "{out}{err}");
    rollout(&cluster);
    let pods = pods_of(&cluster.client, "app=my-app");
    assert!(pods
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .all(|p| p["spec"]["containers"][0]["image"] == "my-image:v2"));
    let (_, history, _) = cluster.kubectl(&["rollout", "history", "deployment/my-service"]);
    assert!(
        history.contains("1 ") && history.contains("2 "),
        "{history}"
    );

    let rs_names = |c: &Cluster| -> Vec<String> {
        let (_, list) = c.client.get("/apis/apps/v1/namespaces/default/replicasets");
        let mut names: Vec<String> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["metadata"]["name"].as_str().map(String::from))
            .collect();
        names.sort();
        names
    };
    let before = rs_names(&cluster);
    assert_eq!(before.len(), 2, "{before:?}");
    let (ok, out, err) = cluster.kubectl(&["rollout", "undo", "deployment/my-service"]);
    assert!(ok, "{out}{err}");
    rollout(&cluster);
    assert_eq!(
        rs_names(&cluster),
        before,
        "undo reuses the first ReplicaSet"
    );
    let pods = pods_of(&cluster.client, "app=my-app");
    assert!(pods
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .all(|p| p["spec"]["containers"][0]["image"] == "my-image"));
    let (_, revision, _) = cluster.kubectl(&[
        "get",
        "deployment",
        "my-service",
        "-o",
        "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ]);
    assert_eq!(revision, "3");

    let (ok, _, err) = cluster.kubectl(&["delete", "deployment", "my-service"]);
    assert!(ok, "{err}");
    eventually("dependents collected", Duration::from_secs(60), || {
        (pods_of(&cluster.client, "app=my-app").is_empty() && rs_names(&cluster).is_empty())
            .then_some(())
    });
}

#[test]
fn simulated_nodes_spread_explain_and_survive_a_dead_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("s"));
    let client = server.wait_ready();
    let mut agents: Vec<FakeAgent> = ["fake-a", "fake-b", "fake-c"]
        .iter()
        .map(|n| FakeAgent::start(&server, dir.path(), n))
        .collect();
    eventually("three Ready nodes", Duration::from_secs(60), || {
        let (_, nodes) = client.get("/api/v1/nodes");
        let ready = nodes["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| {
                n["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count();
        (ready == 3).then_some(())
    });

    // Six replicas: two per node (spreading outweighs bin-packing for replicas).
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "spread"},
        "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "spread"}},
            "template": {"metadata": {"labels": {"app": "spread"}},
                "spec": {"containers": [{"name": "c", "image": "fake", "resources": {"requests": {"cpu": "100m"}}}]}}}
    });
    let (code, body) = client.post("/apis/apps/v1/namespaces/default/deployments", &deployment);
    assert_eq!(code, 201, "{body}");
    let per_node = |client: &common::Client| -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for p in pods_of(client, "app=spread") {
            if p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null() {
                *counts
                    .entry(p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
                    .or_insert(0) += 1;
            }
        }
        counts
    };
    let counts = eventually("six running replicas", Duration::from_secs(60), || {
        let c = per_node(&client);
        (c.values().sum::<usize>() == 6).then_some(c)
    });
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{counts:?}"
    );

    // A pod no node can take: Kubernetes' message, an event, and `skiff explain`.
    let big = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "big"},
        "spec": {"containers": [{"name": "c", "image": "fake", "resources": {"requests": {"cpu": "500"}}}]}});
    let (code, body) = client.post("/api/v1/namespaces/default/pods", &big);
    assert_eq!(code, 201, "{body}");
    let condition = eventually("PodScheduled=False", Duration::from_secs(30), || {
        let (_, pod) = client.get("/api/v1/namespaces/default/pods/big");
        pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
            .cloned()
    });
    assert_eq!(condition["reason"], "Unschedulable");
    assert_eq!(
        condition["message"],
        "0/3 nodes are available: 3 Insufficient cpu."
    );
    let explain = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["explain", "pod", "big", "--kubeconfig"])
        .arg(server.kubeconfig())
        .output()
        .expect("skiff explain");
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(
        text.contains("unschedulable: 0/3 nodes are available")
            && text.contains("fake-c")
            && text.contains("Insufficient cpu"),
        "{text}"
    );
    let (_, events) =
        client.get("/api/v1/namespaces/default/events?fieldSelector=reason=FailedScheduling");
    assert!(!events["items"].as_array().unwrap_or(&Vec::new()).is_empty());

    // fake-c dies: NotReady after 12 s and tainted; its pods are evicted 8 s later and
    // replaced on the two nodes left.
    agents[2].kill();
    eventually(
        "fake-c NotReady and tainted",
        Duration::from_secs(60),
        || {
            let (_, node) = client.get("/api/v1/nodes/fake-c");
            let unknown = node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "Unknown");
            let tainted = node["spec"]["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| {
                    t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute"
                });
            (unknown && tainted).then_some(())
        },
    );
    let counts = eventually(
        "replicas replaced on live nodes",
        Duration::from_secs(120),
        || {
            let c = per_node(&client);
            (c.values().sum::<usize>() == 6 && !c.contains_key("fake-c")).then_some(c)
        },
    );
    assert_eq!(
        counts.values().copied().collect::<Vec<_>>(),
        [3, 3],
        "{counts:?}"
    );
    drop(agents);
}

#[test]
fn deletion_propagates_in_the_foreground_in_the_background_or_orphans() {
    let (_dir, server, client, _agent) = one_simulated_node("fake-gc");
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .args(args)
            .output()
            .expect("kubectl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let deploy = |name: &str| {
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "fake"}]}}}
        });
        let (code, body) = client.post("/apis/apps/v1/namespaces/default/deployments", &d);
        assert_eq!(code, 201, "{body}");
        eventually(&format!("{name} running"), Duration::from_secs(60), || {
            (running(&pods_of(&client, &format!("app={name}"))) == 2).then_some(())
        });
    };
    let replica_sets = |app: &str| -> Vec<Value> {
        let (_, list) = client.get(&format!(
            "/apis/apps/v1/namespaces/default/replicasets?labelSelector=app={app}"
        ));
        list["items"].as_array().cloned().unwrap_or_default()
    };

    // Foreground: kubectl waits until the dependents are gone, then the Deployment.
    deploy("fg");
    let (ok, out) = kubectl(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--timeout=60s",
    ]);
    assert!(ok, "{out}");
    let (code, _) = client.get("/apis/apps/v1/namespaces/default/deployments/fg");
    assert_eq!(code, 404);
    assert!(
        replica_sets("fg").is_empty(),
        "the ReplicaSet went before its owner"
    );

    // Orphan: the ReplicaSet and its pods stay, without the owner reference.
    deploy("or");
    let (ok, out) = kubectl(&[
        "delete",
        "deployment",
        "or",
        "--cascade=orphan",
        "--timeout=60s",
    ]);
    assert!(ok, "{out}");
    let rs = eventually("an orphaned ReplicaSet", Duration::from_secs(30), || {
        replica_sets("or").into_iter().find(|r| {
            r["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(|o| o.is_empty())
        })
    });
    assert_eq!(rs["spec"]["replicas"], 2);
    assert_eq!(
        running(&pods_of(&client, "app=or")),
        2,
        "the pods keep running"
    );

    // Background (kubectl's default): the Deployment goes at once, the collector takes the rest.
    deploy("bg");
    let (ok, out) = kubectl(&["delete", "deployment", "bg"]);
    assert!(ok, "{out}");
    eventually("dependents collected", Duration::from_secs(60), || {
        (replica_sets("bg").is_empty() && pods_of(&client, "app=bg").is_empty()).then_some(())
    });
}

/// The ready IPs of the Endpoints `name` (and whether any address is listed as not ready).
fn endpoints_ips(client: &common::Client, name: &str) -> (Vec<String>, usize) {
    let (_, ep) = client.get(&format!("/api/v1/namespaces/default/endpoints/{name}"));
    let list = |field: &str| -> Vec<String> {
        ep["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s[field].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["ip"].as_str().map(String::from))
            .collect()
    };
    let mut ready = list("addresses");
    ready.sort();
    (ready, list("notReadyAddresses").len())
}

/// The IPs the EndpointSlices of Service `name` mark ready, and every port they list.
fn slice_ips(client: &common::Client, name: &str) -> (Vec<String>, Vec<i64>) {
    let (_, slices) = client.get(&format!(
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io/service-name={name}"
    ));
    let items = slices["items"].as_array().cloned().unwrap_or_default();
    let mut ready: Vec<String> = items
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .filter_map(|e| e["addresses"][0].as_str().map(String::from))
        .collect();
    ready.sort();
    let ports = items
        .iter()
        .flat_map(|s| s["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["port"].as_i64())
        .collect();
    (ready, ports)
}

#[test]
fn a_services_endpoints_and_slices_follow_its_pods_on_a_simulated_node() {
    // 1. A server and one simulated node (FAKE runtime: pods get an IP and turn Ready, nothing
    //    runs).
    let (_dir, server, client, _agent) = one_simulated_node("fake-ep");

    // 2. Three replicas serving on a named port, and a Service that targets the name.
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ep"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "ep"}},
            "template": {"metadata": {"labels": {"app": "ep"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "c", "image": "fake",
                    "ports": [{"name": "http", "containerPort": 8080}]}]}}}
    });
    let (code, body) = client.post("/apis/apps/v1/namespaces/default/deployments", &deployment);
    assert_eq!(code, 201, "{body}");
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "ep"},
        "spec": {"selector": {"app": "ep"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}
    });
    let (code, body) = client.post("/api/v1/namespaces/default/services", &service);
    assert_eq!(code, 201, "{body}");

    // 3. The Endpoints and the slice list exactly the live pods' IPs, ready, on port 8080.
    let live_ips = || -> Vec<String> {
        let mut ips: Vec<String> = pods_of(&client, "app=ep")
            .iter()
            .filter(|p| {
                p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
            })
            .filter_map(|p| p["status"]["podIP"].as_str().map(String::from))
            .collect();
        ips.sort();
        ips
    };
    let follow = |replicas: usize| {
        eventually(
            &format!("endpoints of {replicas} pods"),
            Duration::from_secs(60),
            || {
                let ips = live_ips();
                let (ready, not_ready) = endpoints_ips(&client, "ep");
                let (slice_ready, ports) = slice_ips(&client, "ep");
                (ips.len() == replicas
                    && ready == ips
                    && not_ready == 0
                    && slice_ready == ips
                    && ports.iter().all(|p| *p == 8080))
                .then_some(())
            },
        );
    };
    follow(3);
    let (_, slices) = client.get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io/service-name=ep");
    let slice = &slices["items"][0];
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["endpoints"][0]["nodeName"], "fake-ep");
    assert_eq!(slice["endpoints"][0]["targetRef"]["kind"], "Pod");
    // kubectl finds the resource through discovery.
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(server.kubeconfig())
        .args(["get", "endpointslices", "-o", "name"])
        .output()
        .expect("kubectl");
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(
        names.contains("endpointslice.discovery.k8s.io/ep-"),
        "{names}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 4. Scaled to one, they follow.
    let (code, body) = {
        let response = client
            .request(
                reqwest::Method::PATCH,
                "/apis/apps/v1/namespaces/default/deployments/ep",
            )
            .header("content-type", "application/merge-patch+json")
            .body(json!({"spec": {"replicas": 1}}).to_string())
            .send()
            .expect("PATCH");
        (
            response.status().as_u16(),
            response.text().unwrap_or_default(),
        )
    };
    assert_eq!(code, 200, "{body}");
    follow(1);

    // 5. The Service goes; the garbage collector takes its Endpoints and slices (they point at
    //    it as their controller).
    let (code, body) = client.call(
        reqwest::Method::DELETE,
        "/api/v1/namespaces/default/services/ep",
        None,
    );
    assert_eq!(code, 200, "{body}");
    eventually("endpoints collected", Duration::from_secs(30), || {
        let gone = client.get_status("/api/v1/namespaces/default/endpoints/ep") == 404;
        let (_, slices) = client.get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io/service-name=ep");
        (gone && slices["items"].as_array().is_some_and(Vec::is_empty)).then_some(())
    });
}

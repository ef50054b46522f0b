//! The garbage collector sees every kind the API serves, and the leader loops share one watch
//! per kind. Tried as a new user would: a ConfigMap owned by a Deployment, and one owned by
//! another ConfigMap, go when `kubectl delete` removes their owner (background propagation,
//! kubectl's default). No pods are started (the Deployment has zero replicas, the server no
//! agent).
mod common;

use std::process::Command;
use std::time::Duration;

use common::{eventually, Server};
use serde_json::{json, Value};

const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

/// A ConfigMap owned by the object `owner` (as returned by the API).
fn owned_configmap(name: &str, owner: &Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "ownerReferences": [{
            "apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        }]},
        "data": {"owned": "yes"},
    })
}

/// How many LIST requests the server answered for `resource` (every watcher lists once when it
/// starts, so this counts the watches opened on it).
fn lists_of(client: &common::Client, resource: &str) -> u64 {
    let metrics = client
        .request(reqwest::Method::GET, "/metrics")
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    let label = format!("resource=\"{resource}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{") && l.contains("verb=\"LIST\""))
        .filter(|l| l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn configmaps_go_with_their_deployment_or_configmap_owner() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s"));
    let client = server.wait_ready();
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(server.kubeconfig())
            .args(args)
            .output()
            .expect("kubectl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "kubectl {args:?}: {text}");
    };

    // 1. A Deployment (no replicas: no pods) and a ConfigMap it owns.
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "none"}]}}}
    });
    let (code, web) = client.post("/apis/apps/v1/namespaces/default/deployments", &deployment);
    assert_eq!(code, 201, "{web}");
    let (code, body) = client.post(CONFIGMAPS, &owned_configmap("web-settings", &web));
    assert_eq!(code, 201, "{body}");

    // 2. A ConfigMap and one derived from it.
    let (code, base) = client.post(CONFIGMAPS, &common::configmap("base", "x"));
    assert_eq!(code, 201, "{base}");
    let (code, body) = client.post(CONFIGMAPS, &owned_configmap("derived", &base));
    assert_eq!(code, 201, "{body}");

    // 3. Owners alive: nothing is collected (a few GC passes).
    std::thread::sleep(Duration::from_secs(5));
    for name in ["web-settings", "derived"] {
        let code = client.get_status(&format!("{CONFIGMAPS}/{name}"));
        assert_eq!(code, 200, "{name} collected while its owner lives");
    }

    // 4. kubectl deletes the owners; their dependents follow.
    kubectl(&["delete", "deployment", "web"]);
    kubectl(&["delete", "configmap", "base"]);
    for name in ["web-settings", "derived"] {
        eventually(
            &format!("{name} collected"),
            Duration::from_secs(30),
            || (client.get_status(&format!("{CONFIGMAPS}/{name}")) == 404).then_some(()),
        );
    }

    // 5. The controllers, the node IPAM, the load balancer status and the scheduler all read
    //    Nodes, through one watch (this server has no agent, which would open its own).
    assert_eq!(lists_of(&client, "nodes"), 1, "one watch on Nodes");
    assert_eq!(lists_of(&client, "pods"), 1, "one watch on Pods");
}

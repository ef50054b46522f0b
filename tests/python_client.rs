//! The Python `kubernetes` client against a real skiff server: it sends bodies without
//! Content-Type and without apiVersion/kind, reads lists with strict models, and watches with
//! timeouts and 410 handling. scripts/setup installs the client in target/pyclient.
mod common;

use std::path::Path;
use std::process::Command;

use common::Server;
use serde_json::Value;

const SCRIPT: &str = r#"
import json, sys
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
apps = client.AppsV1Api()
out = {}

# Lists come back as models: items is a list even when empty.
out["pods_empty"] = core.list_namespaced_pod("default").items
out["namespaces"] = sorted(n.metadata.name for n in core.list_namespace().items)

# Create from model objects (no apiVersion/kind in the body, no Content-Type).
cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-cm", labels={"from": "python"}),
                        data={"a": "1"})
created = core.create_namespaced_config_map("default", cm)
out["created_kind"] = created.kind
out["created_rv"] = bool(created.metadata.resource_version)

# Patch (the client picks merge/strategic patch types), read back.
core.patch_namespaced_config_map("py-cm", "default", {"data": {"b": "2"}})
out["patched"] = core.read_namespaced_config_map("py-cm", "default").data

# A Deployment through AppsV1 with typed models.
dep = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="py-web"),
    spec=client.V1DeploymentSpec(
        replicas=2,
        selector=client.V1LabelSelector(match_labels={"app": "py-web"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "py-web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="skiff.local/web:1.0")]))))
out["deployment_replicas"] = apps.create_namespaced_deployment("default", dep).spec.replicas

# Errors are ApiExceptions with Kubernetes' codes and reasons.
try:
    core.read_namespaced_config_map("missing", "default")
except ApiException as e:
    out["missing"] = [e.status, json.loads(e.body)["reason"]]
try:
    core.create_namespaced_config_map("default", cm)
except ApiException as e:
    out["duplicate"] = [e.status, json.loads(e.body)["reason"]]

# Watch: ADDED for what exists, then changes, until the timeout.
rv = core.list_namespaced_config_map("default").metadata.resource_version
core.patch_namespaced_config_map("py-cm", "default", {"data": {"c": "3"}})
core.delete_namespaced_config_map("py-cm", "default")
events = []
for event in watch.Watch().stream(core.list_namespaced_config_map, "default",
                                  resource_version=rv, timeout_seconds=2):
    events.append([event["type"], event["object"].metadata.name])
out["watch"] = events

# A watch from a version long gone: 410 Gone, which the client raises.
try:
    for _ in watch.Watch().stream(core.list_namespaced_config_map, "default",
                                  resource_version="1", timeout_seconds=2):
        pass
    out["gone"] = "no error"
except ApiException as e:
    out["gone"] = e.status

apps.delete_namespaced_deployment("py-web", "default")
print(json.dumps(out, default=str))
"#;

fn python() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyclient/bin/python")
}

#[test]
fn the_python_client_lists_creates_patches_watches_and_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("s"));
    // Enough writes that revision 1 falls out of the watch history (4096 events: the 410
    // case), from 8 threads.
    let client = server.wait_ready();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let client = &client;
            scope.spawn(move || {
                for i in 0..530 {
                    let (code, body) = client.post(
                        "/api/v1/namespaces/default/configmaps",
                        &common::configmap(&format!("filler-{t}-{i}"), "x"),
                    );
                    assert_eq!(code, 201, "{body}");
                }
            });
        }
    });
    let script = dir.path().join("client.py");
    std::fs::write(&script, SCRIPT).expect("script");
    let out = Command::new(python())
        .arg(&script)
        .arg(server.kubeconfig())
        .output()
        .expect("the venv's python (scripts/setup makes it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    let result: Value = serde_json::from_str(stdout.trim()).expect("the script's JSON");
    assert_eq!(result["pods_empty"], serde_json::json!([]));
    assert!(result["namespaces"]
        .as_array()
        .expect("namespaces")
        .contains(&"default".into()));
    assert_eq!(result["created_kind"], "ConfigMap");
    assert_eq!(result["created_rv"], true);
    assert_eq!(result["patched"], serde_json::json!({"a": "1", "b": "2"}));
    assert_eq!(result["deployment_replicas"], 2);
    assert_eq!(result["missing"], serde_json::json!([404, "NotFound"]));
    assert_eq!(
        result["duplicate"],
        serde_json::json!([409, "AlreadyExists"])
    );
    let watch: Vec<(String, String)> =
        serde_json::from_value(result["watch"].clone()).expect("events");
    assert!(
        watch.contains(&("MODIFIED".into(), "py-cm".into()))
            && watch.contains(&("DELETED".into(), "py-cm".into())),
        "{watch:?}"
    );
    assert_eq!(result["gone"], 410, "{result}");
}

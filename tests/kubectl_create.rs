//! kubectl's `create` generators (protobuf bodies), `patch` of every type, and `describe` of
//! pods, replicasets, services and nodes, against a real skiff server with one FAKE node agent (`skiff agent
//! --runtime fake`: it registers a Node and reports pods Running without running anything, which
//! is all `describe` needs). Every round runs on kubectl 1.33 (the dispatcher on PATH) and on
//! the 1.32 binary.
mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine;
use common::fake::FakeAgent;
use common::{eventually, Server};
use serde_json::{json, Value};

/// The kubectl 1.32 binary behind the dispatcher (Debian's google-cloud-sdk layout).
const KUBECTL_1_32: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";

struct Kubectl<'a> {
    binary: &'a str,
    kubeconfig: &'a Path,
}

impl Kubectl<'_> {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(self.binary)
            .arg("--kubeconfig")
            .arg(self.kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    /// Runs a command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} succeeded: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&args)).expect("kubectl -o json")
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The value on the line of `describe` output that starts with `label` (`"Status:"`).
fn described<'a>(output: &'a str, label: &str) -> &'a str {
    output
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {label} line in:\n{output}"))
}

fn generators_patch_and_describe(binary: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("s"));
    let client = server.wait_ready();
    let node = "fake-kc";
    let _agent = FakeAgent::start(&server, dir.path(), node);
    let kubeconfig = server.kubeconfig();
    let k = Kubectl {
        binary,
        kubeconfig: &kubeconfig,
    };

    // --- create generators: each POSTs a protobuf body ---
    let out = k.ok(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=mode=fast",
        "--from-literal=empty=",
    ]);
    assert_eq!(out.trim(), "configmap/cfg created");
    assert_eq!(
        k.json(&["get", "cm", "cfg"])["data"],
        json!({"mode": "fast", "empty": ""})
    );

    let out = k.ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=password=hunter2",
    ]);
    assert_eq!(out.trim(), "secret/creds created");
    let secret = k.json(&["get", "secret", "creds"]);
    assert_eq!(secret["type"], "Opaque");
    let password = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["password"].as_str().expect("data.password"))
        .expect("base64");
    assert_eq!(password, b"hunter2");

    let out = k.ok(&["create", "namespace", "team"]);
    assert_eq!(out.trim(), "namespace/team created");
    assert_eq!(k.json(&["get", "ns", "team"])["status"]["phase"], "Active");

    let out = k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=skiff.local/web:1.0",
        "--replicas=2",
        "--port=8080",
    ]);
    assert_eq!(out.trim(), "deployment.apps/web created");
    let deployment = k.json(&["get", "deploy", "web"]);
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        deployment["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );
    // The JSON Go would have written: no `hostPort: 0`, no `stdin: false`.
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["ports"],
        json!([{"containerPort": 8080, "protocol": "TCP"}])
    );
    assert!(container.get("stdin").is_none(), "{container}");

    let out = k.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    assert_eq!(out.trim(), "service/web created");
    let out = k.ok(&["create", "service", "nodeport", "web-np", "--tcp=80:8080"]);
    assert_eq!(out.trim(), "service/web-np created");
    let node_port = k.json(&["get", "svc", "web-np"])["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("a nodePort was allocated");
    assert!((30000..=32767).contains(&node_port), "{node_port}");

    // A second create is AlreadyExists, which kubectl prints as a sentence.
    let err = k.fails(&["create", "configmap", "cfg"]);
    assert!(err.contains(r#"configmaps "cfg" already exists"#), "{err}");

    // `create -f` (a JSON body, like apply's create path), then again: AlreadyExists.
    let manifest = dir.path().join("settings.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  level: \"3\"\n",
    )
    .expect("manifest");
    let manifest = manifest.display().to_string();
    assert_eq!(
        k.ok(&["create", "-f", &manifest]).trim(),
        "configmap/settings created"
    );
    let err = k.fails(&["create", "-f", &manifest]);
    assert!(
        err.contains(r#"Error from server (AlreadyExists): error when creating"#)
            && err.contains(r#"configmaps "settings" already exists"#),
        "{err}"
    );

    // --- patch: strategic merge (the default), merge, JSON patch ---
    let add_env = [
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"MODE","value":"fast"}]}]}}}}"#,
    ];
    let out = k.ok(&add_env);
    assert_eq!(out.trim(), "deployment.apps/web patched");
    let container = &k.json(&["get", "deploy", "web"])["spec"]["template"]["spec"]["containers"][0];
    // Containers merge by name: the image stays, env is added.
    assert_eq!(container["image"], "skiff.local/web:1.0");
    assert_eq!(container["env"], json!([{"name": "MODE", "value": "fast"}]));
    // The same patch again changes nothing, and kubectl says so. kubectl compares the object it
    // read before patching with the one the patch returns, so a controller's status write in
    // between would make it say "patched": let the rollout of the first patch finish first.
    k.ok(&["rollout", "status", "deploy/web", "--timeout=60s"]);
    let out = k.ok(&add_env);
    assert_eq!(out.trim(), "deployment.apps/web patched (no change)");

    k.ok(&[
        "patch",
        "cm",
        "cfg",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"mode":"slow","empty":null}}"#,
    ]);
    assert_eq!(
        k.json(&["get", "cm", "cfg"])["data"],
        json!({"mode": "slow"})
    );

    k.ok(&[
        "patch",
        "svc",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/ports/0/port","value":81}]"#,
    ]);
    assert_eq!(
        k.json(&["get", "svc", "web"])["spec"]["ports"][0]["port"],
        81
    );

    // A failing JSON-patch test leaves the object alone; a missing object is NotFound.
    let err = k.fails(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":9},{"op":"replace","path":"/spec/replicas","value":9}]"#,
    ]);
    assert!(
        err.contains("test /spec/replicas") && err.contains("did not match"),
        "{err}"
    );
    assert_eq!(k.json(&["get", "deploy", "web"])["spec"]["replicas"], 2);
    let err = k.fails(&[
        "patch",
        "deploy",
        "nope",
        "-p",
        r#"{"spec":{"replicas":1}}"#,
    ]);
    assert!(
        err.contains(r#"Error from server (NotFound): deployments.apps "nope" not found"#),
        "{err}"
    );
    // A patch whose result is invalid is refused with the field named.
    let err = k.fails(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":-1}}"#,
    ]);
    assert!(err.contains("spec.replicas"), "{err}");

    // --- describe: the pods of the Deployment run on the fake node ---
    let pods = eventually("two web pods running", Duration::from_secs(60), || {
        let (_, list) = client.get("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb");
        let items = list["items"].as_array()?.clone();
        let running = items
            .iter()
            .filter(|p| {
                p["status"]["phase"] == "Running" && p["spec"]["containers"][0]["env"].is_array()
            })
            .count();
        (running == 2 && items.len() == 2).then_some(items)
    });
    let pod = pods[0]["metadata"]["name"]
        .as_str()
        .expect("pod name")
        .to_string();

    let out = k.ok(&["describe", "pod", &pod]);
    assert_eq!(described(&out, "Name:"), pod);
    assert_eq!(described(&out, "Status:"), "Running");
    assert!(described(&out, "Node:").starts_with("fake-kc/"), "{out}");
    assert!(
        described(&out, "Controlled By:").starts_with("ReplicaSet/web-"),
        "{out}"
    );
    assert_eq!(described(&out, "    Image:"), "skiff.local/web:1.0");
    assert_eq!(described(&out, "    Port:"), "8080/TCP");
    assert_eq!(described(&out, "      MODE:"), "fast");
    let events = &out[out.find("Events:").expect("an Events section")..];
    assert!(
        events.contains(&format!("Successfully assigned default/{pod} to {node}")),
        "{events}"
    );
    assert!(events.contains("Started"), "{events}");

    let out = k.ok(&["describe", "replicaset", "-l", "app=web"]);
    assert_eq!(described(&out, "Controlled By:"), "Deployment/web");
    assert_eq!(described(&out, "Replicas:"), "2 current / 2 desired");
    assert!(
        described(&out, "Pods Status:").starts_with("2 Running"),
        "{out}"
    );

    let out = k.ok(&["describe", "service", "web"]);
    assert_eq!(described(&out, "Type:"), "ClusterIP");
    assert_eq!(described(&out, "Selector:"), "app=web");
    let cluster_ip = k.json(&["get", "svc", "web"])["spec"]["clusterIP"].clone();
    assert_eq!(
        described(&out, "IP:"),
        cluster_ip.as_str().expect("clusterIP")
    );
    assert_eq!(described(&out, "TargetPort:"), "8080/TCP");
    let mut endpoints: Vec<String> = described(&out, "Endpoints:")
        .split(',')
        .map(str::to_string)
        .collect();
    let mut want: Vec<String> = pods
        .iter()
        .map(|p| format!("{}:8080", p["status"]["podIP"].as_str().expect("podIP")))
        .collect();
    endpoints.sort();
    want.sort();
    assert_eq!(endpoints, want, "{out}");

    let out = k.ok(&["describe", "node", node]);
    assert_eq!(described(&out, "Name:"), node);
    assert!(out.contains("KubeletReady"), "{out}");
    assert!(
        described(&out, "  Container Runtime Version:").starts_with("fake://"),
        "{out}"
    );
    assert_eq!(described(&out, "Non-terminated Pods:"), "(2 in total)");
    assert!(out.contains(&pod), "{out}");
    assert!(out.contains("Allocated resources:"), "{out}");
    // The node's Lease, made up from the leader's heartbeat table.
    assert!(!out.contains("Failed to get lease"), "{out}");
    assert_eq!(described(&out, "  HolderIdentity:"), node, "{out}");
    assert_ne!(described(&out, "  RenewTime:"), "<unset>", "{out}");

    // --- leases: node leases listed with their holder; a workload's own Lease is stored ---
    let out = k.ok(&["get", "leases", "-n", "kube-node-lease"]);
    let mut lines = out.lines();
    assert_eq!(
        lines
            .next()
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["NAME", "HOLDER", "AGE"]),
        "{out}"
    );
    let row: Vec<&str> = lines
        .next()
        .expect("a lease row")
        .split_whitespace()
        .collect();
    assert_eq!(row[..2], [node, node], "{out}");
    let lease = dir.path().join("lease.yaml");
    std::fs::write(
        &lease,
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: my-controller\n\
         spec:\n  holderIdentity: pod-a\n  leaseDurationSeconds: 15\n",
    )
    .expect("lease manifest");
    let lease = lease.display().to_string();
    assert_eq!(
        k.ok(&["apply", "-f", &lease]).trim(),
        "lease.coordination.k8s.io/my-controller created"
    );
    assert_eq!(
        k.json(&["get", "lease", "my-controller"])["spec"]["holderIdentity"],
        "pod-a"
    );
    let bad = k.fails(&[
        "patch",
        "lease",
        "my-controller",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"leaseDurationSeconds":0}}"#,
    ]);
    assert!(
        bad.contains("spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"),
        "{bad}"
    );
}

#[test]
fn generators_patch_and_describe_with_kubectl_1_33() {
    generators_patch_and_describe("kubectl");
}

#[test]
fn generators_patch_and_describe_with_kubectl_1_32() {
    generators_patch_and_describe(KUBECTL_1_32);
}

//! End-to-end: attacks on a real `skiff server`, each tried the way an attacker would, and each
//! refused (the security issue's attack suite). RBAC's own attacks (a view-only user deleting a
//! pod, escalation through a binding or a role, impersonation) are in `tests/rbac.rs`.

mod common;

use std::time::Duration;

use common::fake::FakeAgent;
use common::{configmap, eventually, Client, Server};
use reqwest::Method;
use serde_json::{json, Value};

const CM: &str = "/api/v1/namespaces/default/configmaps";

/// CVE-2019-1002100: a JSON patch of `copy` operations, each copying `/metadata` into itself,
/// doubles the object with every operation. Tried before the fix, a 1.6 KB patch of 20 copies
/// held the server for 12 s and was answered 200; 30 copies ask for gigabytes. Now the server
/// refuses it with 413 before doing the work, stores nothing, and goes on answering.
#[test]
fn a_json_patch_copy_bomb_is_refused_and_the_server_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s1"));
    let client = server.wait_ready();
    let (code, created) = client.post(CM, &configmap("target", "v"));
    assert_eq!(code, 201, "{created}");

    let bomb: Vec<Value> = (0..30)
        .map(|i| json!({"op": "copy", "from": "/metadata", "path": format!("/metadata/a{i}")}))
        .collect();
    let body = Value::Array(bomb).to_string();
    assert!(
        body.len() < 3 * 1024,
        "a small request: {} bytes",
        body.len()
    );
    let answer = client
        .request(Method::PATCH, &format!("{CM}/target"))
        .header("content-type", "application/json-patch+json")
        .body(body)
        .send()
        .expect("an answer (the client gives up after 30 s)");
    assert_eq!(answer.status().as_u16(), 413);
    let status: Value = answer.json().expect("a Status");
    assert_eq!(status["reason"], "RequestEntityTooLarge", "{status}");

    // Nothing was stored, and the server answers as before.
    let (code, stored) = client.get(&format!("{CM}/target"));
    assert_eq!(code, 200);
    assert_eq!(
        stored["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"],
        "{stored}"
    );
    assert!(stored["metadata"].get("a0").is_none(), "{stored}");
}

/// A JSON patch of more operations than kube-apiserver allows (10,000) is refused whole.
#[test]
fn a_json_patch_of_too_many_operations_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s1"));
    let client = server.wait_ready();
    let (code, _) = client.post(CM, &configmap("target", "v"));
    assert_eq!(code, 201);
    let ops: Vec<Value> = (0..10_001)
        .map(|_| json!({"op": "test", "path": "/data/value", "value": "v"}))
        .collect();
    let answer = client
        .request(Method::PATCH, &format!("{CM}/target"))
        .header("content-type", "application/json-patch+json")
        .body(Value::Array(ops).to_string())
        .send()
        .expect("an answer");
    assert_eq!(answer.status().as_u16(), 413);
    let status: Value = answer.json().expect("a Status");
    assert!(
        status["message"].as_str().unwrap_or("").contains("10000"),
        "{status}"
    );
}

/// Bodies nested 100,000 deep, as a merge patch, a strategic merge patch, a JSON patch's value,
/// YAML and a create: each refused with 400 by the decoder's depth limit before anything
/// recurses over it (a stack overflow would take the whole server down), nothing is stored,
/// and the server goes on answering.
#[test]
fn deeply_nested_bodies_are_refused_without_recursion() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s1"));
    let client = server.wait_ready();
    let (code, created) = client.post(CM, &configmap("target", "v"));
    assert_eq!(code, 201, "{created}");
    let depth = 100_000;
    let nested = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    let attempts = [
        (Method::PATCH, "application/merge-patch+json", format!("{{\"data\":{nested}}}")),
        (Method::PATCH, "application/strategic-merge-patch+json", format!("{{\"metadata\":{{\"labels\":{nested}}}}}")),
        (
            Method::PATCH,
            "application/json-patch+json",
            format!("[{{\"op\":\"add\",\"path\":\"/metadata/labels\",\"value\":{nested}}}]"),
        ),
        (Method::PATCH, "application/apply-patch+yaml", format!("{}x: 1", "- ".repeat(depth))),
        (Method::POST, "application/json", format!("{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"deep\"}},\"data\":{nested}}}")),
    ];
    for (method, content_type, body) in attempts {
        let path = if method == Method::POST {
            CM.to_string()
        } else {
            format!("{CM}/target?fieldManager=attacker")
        };
        let answer = client
            .request(method.clone(), &path)
            .header("content-type", content_type)
            .body(body)
            .send()
            .expect("an answer, not a dropped connection");
        let code = answer.status().as_u16();
        assert!(
            (400..500).contains(&code),
            "{method} {content_type}: {code}"
        );
    }
    let (code, stored) = client.get(&format!("{CM}/target"));
    assert_eq!(code, 200, "the server still answers");
    assert_eq!(
        stored["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
    assert_eq!(client.get_status(&format!("{CM}/deep")), 404);
}

/// An Endpoints object may not send a Service's traffic to the node itself (loopback) or to
/// the link-local range where clouds serve their metadata (and its credentials): refused with
/// 422 naming the field, as Kubernetes refuses them.
#[test]
fn endpoints_may_not_point_at_the_node_or_its_metadata_service() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s1"));
    let client = server.wait_ready();
    for (ip, words) in [("169.254.169.254", "link-local"), ("127.0.0.1", "loopback")] {
        let (code, status) = client.post(
            "/api/v1/namespaces/default/endpoints",
            &json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "steal"},
                    "subsets": [{"addresses": [{"ip": ip}], "ports": [{"port": 80}]}]}),
        );
        assert_eq!(code, 422, "{ip}: {status}");
        let message = status["message"].as_str().unwrap_or("");
        assert!(
            message.contains("subsets[0].addresses[0].ip") && message.contains(words),
            "{ip}: {message}"
        );
    }
    let (code, _) = client.get("/api/v1/namespaces/default/endpoints/steal");
    assert_eq!(code, 404, "nothing stored");
}

/// A taken worker node: its credential (`system:node:edge-1`) reaches the Secret of a pod bound
/// to it and nothing else, cannot write other nodes or make pods, and cannot get the node CA
/// to sign another node's name. The join token on its own opens no Kubernetes API at all, and
/// cannot mint a second credential for a node that has joined. Before node identities, the one
/// shared node token read every Secret and could create any pod.
#[test]
fn a_taken_node_reaches_only_what_its_own_pods_need() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s1"));
    let admin = server.wait_ready();
    let _agent = FakeAgent::start(&server, dir.path(), "edge-1");
    let credential_file = dir.path().join("edge-1").join("node-credential");
    let credential = eventually("edge-1's credential", Duration::from_secs(30), || {
        std::fs::read_to_string(&credential_file).ok()
    });
    let node = Client::new(&server.url(), &admin.ca_pem, credential.trim());
    eventually("edge-1 registered", Duration::from_secs(30), || {
        (admin.get_status("/api/v1/nodes/edge-1") == 200).then_some(())
    });

    let secret = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
               "stringData": {"key": "s3cr3t"}})
    };
    let pod = |name: &str, node: &str, secret: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
               "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.example/c:1",
                        "env": [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": secret, "key": "key"}}}]}]}})
    };
    const SECRETS: &str = "/api/v1/namespaces/default/secrets";
    const PODS: &str = "/api/v1/namespaces/default/pods";
    for name in ["till-key", "vault-key"] {
        assert_eq!(admin.post(SECRETS, &secret(name)).0, 201);
    }
    assert_eq!(admin.post(PODS, &pod("till", "edge-1", "till-key")).0, 201);
    assert_eq!(
        admin.post(PODS, &pod("vault", "edge-2", "vault-key")).0,
        201
    );
    let other_node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "edge-2"}});
    assert_eq!(admin.post("/api/v1/nodes", &other_node).0, 201);

    // Its own pod's Secret, yes; another node's pod's, or any list of them, no.
    assert_eq!(node.get(&format!("{SECRETS}/till-key")).0, 200);
    let (code, refused) = node.get(&format!("{SECRETS}/vault-key"));
    assert_eq!(code, 403, "{refused}");
    assert_eq!(
        refused["message"],
        r#"secrets "vault-key" is forbidden: User "system:node:edge-1" cannot get resource "secrets" in API group "" in the namespace "default""#
    );
    assert_eq!(node.get(SECRETS).0, 403);
    assert_eq!(node.get("/api/v1/secrets").0, 403);

    // No pods of its own making, no writes to other nodes, no Node under another name.
    let (code, refused) = node.post(PODS, &pod("evil", "edge-1", "vault-key"));
    assert_eq!(code, 403, "{refused}");
    let patch = |path: &str| {
        node.request(Method::PATCH, path)
            .header("content-type", "application/merge-patch+json")
            .body(r#"{"metadata":{"labels":{"owned":"yes"}}}"#)
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(patch("/api/v1/nodes/edge-2"), 403);
    assert_eq!(patch("/api/v1/nodes/edge-1"), 200, "its own Node it keeps");
    let (code, refused) = node.post(
        "/api/v1/nodes",
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "edge-3"}}),
    );
    assert_eq!(code, 403, "{refused}");
    assert_eq!(
        patch(&format!("{PODS}/vault/status")),
        403,
        "another node's pod"
    );

    // Tokens: only bound to a pod of its own, which runs as the account (NodeRestriction), so
    // nothing it can carry elsewhere.
    const TOKEN: &str = "/api/v1/namespaces/default/serviceaccounts/default/token";
    let bound = |pod: &str| json!({"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod}}});
    let (code, refused) = node.post(TOKEN, &json!({"spec": {}}));
    assert_eq!(code, 403, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or("")
            .contains("not bound to a pod"),
        "{refused}"
    );
    let (code, refused) = node.post(TOKEN, &bound("vault"));
    assert_eq!(code, 403, "{refused}");
    let (code, issued) = node.post(TOKEN, &bound("till"));
    assert_eq!(code, 201, "{issued}");

    // Its certificate: only its own name, signed by the node CA, which clients of the API server
    // do not trust.
    let ask = |client: &Client, name: &str, address: &str| {
        client.post(
            &format!("/skiff/v1/nodes/{name}/certificate"),
            &json!({"addresses": [address]}),
        )
    };
    assert_eq!(
        ask(&node, "edge-2", "127.0.0.2").0,
        401,
        "another node's name"
    );
    assert_eq!(ask(&node, "edge-1", "169.254.169.254").0, 403);
    let (code, issued) = ask(&node, "edge-1", "127.0.0.1");
    assert_eq!(code, 200, "{issued}");
    assert_ne!(
        issued["ca"].as_str(),
        Some(admin.ca_pem.as_str()),
        "signed by the node CA"
    );

    // Its agent's port (logs, exec) lets in the API server only: not a caller with the join
    // token, nor one showing a node's certificate.
    let (_, registered) = admin.get("/api/v1/nodes/edge-1");
    let port = registered["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .expect("the agent's port");
    let node_ca = issued["ca"].as_str().expect("the node CA");
    let token = std::fs::read_to_string(server.dir.join("node-token")).expect("node token");
    let join_secret = token.trim().rsplit("::node:").next().expect("secret part");
    let agent_url = format!("https://127.0.0.1:{port}/containerLogs/default/till/c");
    let ask_agent = |identity: Option<reqwest::Identity>| {
        let mut builder = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(node_ca.as_bytes()).expect("CA"));
        if let Some(identity) = identity {
            builder = builder.identity(identity);
        }
        builder
            .build()
            .expect("client")
            .get(&agent_url)
            .bearer_auth(join_secret)
            .send()
    };
    assert!(ask_agent(None).is_err(), "no client certificate, no way in");
    let node_pem = format!(
        "{}\n{}",
        issued["cert"].as_str().expect("cert"),
        issued["key"].as_str().expect("key")
    );
    let as_node = reqwest::Identity::from_pem(node_pem.as_bytes()).expect("identity");
    assert!(
        ask_agent(Some(as_node)).is_err(),
        "a node's certificate is not a server's"
    );

    // The join token: no Kubernetes API, no second credential for a joined node.
    let joining = Client::new(&server.url(), &admin.ca_pem, join_secret);
    assert_eq!(joining.get(SECRETS).0, 401);
    assert_eq!(joining.get("/api/v1/pods").0, 401);
    let (code, refused) = joining.post("/skiff/v1/nodes/edge-1/credential", &json!({}));
    assert_eq!(code, 409, "{refused}");
    assert_eq!(
        joining
            .post("/skiff/v1/nodes/edge-1/heartbeat", &json!({}))
            .0,
        401
    );
}

/// Pods that could take their node (privileged, the host's namespaces, its filesystem) are
/// refused under the default Pod Security level, `baseline`, with Kubernetes' wording; a
/// namespace may ask for `restricted` or allow `privileged`; a Deployment whose template would
/// be refused is accepted with a warning (its pods are what is refused).
#[test]
fn pods_that_could_take_the_node_are_refused_by_pod_security() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s1"));
    let admin = server.wait_ready();
    let pod = |name: &str, spec: Value| {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c", "image": "registry.example/c:1",
            "securityContext": spec.get("securityContext").cloned().unwrap_or(json!({}))}]);
        if let Some(s) = spec.as_object_mut() {
            s.remove("securityContext");
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
    };
    const PODS: &str = "/api/v1/namespaces/default/pods";
    let (code, refused) = admin.post(
        PODS,
        &pod(
            "root",
            json!({"securityContext": {"privileged": true},
        "hostPID": true, "volumes": [{"name": "host", "hostPath": {"path": "/"}}]}),
        ),
    );
    assert_eq!(code, 403, "{refused}");
    assert_eq!(
        refused["message"],
        r#"pods "root" is forbidden: violates PodSecurity "baseline:latest": host namespaces (hostPID=true), privileged (container "c" must not set securityContext.privileged=true), hostPath volumes (volume "host")"#
    );
    assert_eq!(admin.get(&format!("{PODS}/root")).0, 404, "nothing stored");
    assert_eq!(admin.post(PODS, &pod("plain", json!({}))).0, 201);

    // A namespace that asks for more, and one that allows everything.
    let namespace = |name: &str, level: &str| {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name,
               "labels": {"pod-security.kubernetes.io/enforce": level}}})
    };
    assert_eq!(
        admin
            .post("/api/v1/namespaces", &namespace("vault", "restricted"))
            .0,
        201
    );
    assert_eq!(
        admin
            .post("/api/v1/namespaces", &namespace("lab", "privileged"))
            .0,
        201
    );
    let (code, refused) = admin.post("/api/v1/namespaces/vault/pods", &pod("plain", json!({})));
    assert_eq!(code, 403, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or("")
            .contains("allowPrivilegeEscalation != false"),
        "{refused}"
    );
    let root = pod("root", json!({"securityContext": {"privileged": true}}));
    assert_eq!(admin.post("/api/v1/namespaces/lab/pods", &root).0, 201);
    let (code, refused) = admin.post("/api/v1/namespaces", &namespace("typo", "strict"));
    assert_eq!(code, 403, "{refused}");

    // A workload is warned, not refused.
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"hostNetwork": true, "containers": [{"name": "c", "image": "registry.example/c:1"}]}}}});
    let answer = admin
        .request(Method::POST, "/apis/apps/v1/namespaces/default/deployments")
        .header("content-type", "application/json")
        .body(deployment.to_string())
        .send()
        .expect("an answer");
    assert_eq!(answer.status().as_u16(), 201);
    let warning = answer
        .headers()
        .get("warning")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        warning.contains(
            r#"would violate PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true)"#
        ) || warning.contains(
            r#"would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true)"#
        ),
        "{warning}"
    );
}

/// A stolen disk gives no Secret away: the Raft log, the state on disk and the snapshots hold
/// Secrets sealed (AES-256-GCM, a key made with the cluster), while the API serves them as
/// written, also after a restart. Before, a Secret's value was in every one of those files.
#[test]
fn secrets_are_sealed_on_disk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(&dir.path().join("s1"));
    let client = server.wait_ready();
    let canary = "the-till-pin-is-8351";
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "till"},
                        "stringData": {"pin": canary}});
    let (code, body) = client.post("/api/v1/namespaces/default/secrets", &secret);
    assert_eq!(code, 201, "{body}");
    // Enough writes for a snapshot (the tests' servers take one every 200 entries).
    for i in 0..250 {
        assert_eq!(
            client.post(CM, &configmap(&format!("filler-{i}"), "x")).0,
            201
        );
    }
    let read = |client: &Client| {
        let (code, got) = client.get("/api/v1/namespaces/default/secrets/till");
        assert_eq!(code, 200, "{got}");
        got["data"]["pin"].clone()
    };
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(canary);
    assert_eq!(read(&client), json!(encoded));
    server.restart();
    let client = server.wait_ready();
    assert_eq!(
        read(&client),
        json!(encoded),
        "opened again after a restart"
    );
    server.stop();

    let mut files = 0;
    let mut stack = vec![server.dir.clone()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir").flatten() {
                stack.push(entry.path());
            }
            continue;
        }
        let bytes = std::fs::read(&path).expect("read file");
        files += 1;
        for needle in [canary.as_bytes(), encoded.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds the Secret in the clear",
                path.display()
            );
        }
    }
    assert!(files > 5, "looked at the store's files ({files})");
    assert!(
        server
            .dir
            .join("tls")
            .join("encryption-config.yaml")
            .exists(),
        "the key the cluster made"
    );
}

/// The certificate the agent's endpoint at `port` shows (PEM), read with `openssl s_client`
/// (the handshake then fails for want of a client certificate, after the server's is seen).
fn served_certificate(port: u64) -> Option<String> {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-showcerts",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text[start..].find("-----END CERTIFICATE-----")? + start;
    Some(format!("{}-----END CERTIFICATE-----\n", &text[start..end]))
}

/// Node serving certificates end (`--node-cert-validity`) and the agent renews its own before
/// then, without a restart: the endpoint shows a new certificate, signed by the node CA, and
/// never an expired one.
#[test]
fn agents_renew_their_serving_certificates_before_they_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with_flags(&dir.path().join("s1"), &["--node-cert-validity", "6s"]);
    let admin = server.wait_ready();
    let _agent = FakeAgent::start(&server, dir.path(), "edge-1");
    let port = eventually("edge-1 registered", Duration::from_secs(30), || {
        let (_, node) = admin.get("/api/v1/nodes/edge-1");
        node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64()
    });
    let first = eventually("the first certificate", Duration::from_secs(30), || {
        served_certificate(port)
    });
    let renewed = eventually("a renewed certificate", Duration::from_secs(30), || {
        served_certificate(port).filter(|c| *c != first)
    });
    let node_ca = dir.path().join("node-ca.crt");
    std::fs::copy(server.dir.join("tls").join("node-ca.crt"), &node_ca).expect("node CA");
    let cert = dir.path().join("renewed.crt");
    std::fs::write(&cert, &renewed).expect("write cert");
    let verify = std::process::Command::new("openssl")
        .args(["verify", "-no_check_time", "-CAfile"])
        .arg(&node_ca)
        .arg(&cert)
        .output()
        .expect("openssl verify");
    assert!(
        verify.status.success(),
        "signed by the node CA: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // Each certificate lasts what the server says, and the one served has not ended.
    let dates = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-checkend", "0", "-in"])
        .arg(&cert)
        .output()
        .expect("openssl x509");
    assert!(
        dates.status.success(),
        "{}",
        String::from_utf8_lossy(&dates.stdout)
    );
}

/// Every byte under `dir` (a stopped server's data dir), file by file.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir").flatten() {
                stack.push(entry.path());
            }
        } else {
            let bytes = std::fs::read(&path).expect("read file");
            files.push((path, bytes));
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `skiff secrets-encrypt rotate`: a new key installed on both servers of a cluster while it
/// serves, Secrets rewritten under it (found sealed with it on disk, never clear), readable
/// from both servers and after restarts; with a server down the rotation stops and says which.
#[test]
fn the_secrets_key_rotates_on_every_server_while_the_cluster_serves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut first = Server::start(&dir.path().join("s1"));
    let client = first.wait_ready();
    let mut second = Server::join(&dir.path().join("s2"), &first);
    let client2 = second.wait_ready();
    let canary = "the-safe-code-is-2718";
    let (code, created) = client.post(
        "/api/v1/namespaces/default/secrets",
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "safe"}, "stringData": {"code": canary}}),
    );
    assert_eq!(code, 201, "{created}");
    let data_dir = first.dir.clone();
    let skiff = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(args)
            .arg("--data-dir")
            .arg(&data_dir)
            .output()
            .expect("run skiff")
    };
    let out = skiff(&["secrets-encrypt", "rotate", "--provider", "secretbox"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("sealing with secretbox key key-") && said.contains("on 2 server(s)"),
        "{said}"
    );
    let key = said
        .split_whitespace()
        .find(|w| w.starts_with("key-"))
        .expect("the new key's name")
        .to_string();
    let status = String::from_utf8_lossy(&skiff(&["secrets-encrypt", "status"]).stdout).to_string();
    assert!(status.contains(&format!("sealing with: {key}")), "{status}");
    for server in [&first, &second] {
        let path = server.dir.join("tls/encryption-config.yaml");
        let config = std::fs::read_to_string(&path).expect("config");
        let secretbox = config.find("secretbox").expect("a secretbox provider");
        assert!(
            secretbox < config.find("aesgcm").expect("the old key kept"),
            "new key first:\n{config}"
        );
        assert!(config.contains(&key), "{config}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(canary);
    for c in [&client, &client2] {
        let (code, got) = c.get("/api/v1/namespaces/default/secrets/safe");
        assert_eq!(code, 200, "{got}");
        assert_eq!(got["data"]["code"], json!(encoded));
        assert_ne!(
            got["metadata"]["resourceVersion"], created["metadata"]["resourceVersion"],
            "rewritten"
        );
    }
    first.stop();
    second.stop();
    let sealed_with_new = format!("k8s:enc:secretbox:v1:{key}:");
    for server in [&first, &second] {
        let files = files_under(&server.dir);
        assert!(
            files
                .iter()
                .any(|(_, bytes)| contains(bytes, sealed_with_new.as_bytes())),
            "{} holds the Secret sealed with the new key",
            server.dir.display()
        );
        for (path, bytes) in &files {
            assert!(
                !contains(bytes, canary.as_bytes()) && !contains(bytes, encoded.as_bytes()),
                "{} holds the Secret in the clear",
                path.display()
            );
        }
    }
    // Restarted, both open everything (older log entries with the old key, which stays).
    first.stop_and_start();
    second.stop_and_start();
    for c in [first.wait_ready(), second.wait_ready()] {
        eventually(
            "the secret after a restart",
            Duration::from_secs(30),
            || {
                let (code, got) = c.get("/api/v1/namespaces/default/secrets/safe");
                (code == 200 && got["data"]["code"] == json!(encoded)).then_some(())
            },
        );
    }
    // With a server down, nothing is sealed with a key it could not open.
    second.kill();
    let out = skiff(&["secrets-encrypt", "rotate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("key rotation stopped: member 2"),
        "{stderr}"
    );
    let status = String::from_utf8_lossy(&skiff(&["secrets-encrypt", "status"]).stdout).to_string();
    assert!(
        status.contains(&format!("sealing with: {key}")),
        "still the last key: {status}"
    );
}

/// A flood of requests is answered with 429 and `Retry-After`, not queued, and the system's own
/// requests keep their share: with room for two reads at once, one of them the system's, a
/// user's sixteen-thread flood gets 429s while the admin's requests are all served.
#[test]
fn a_request_flood_gets_429_and_the_system_keeps_its_share() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server =
        Server::start_with_flags(&dir.path().join("s1"), &["--max-requests-inflight", "2"]);
    let admin = server.wait_ready();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "token",
            "create",
            "--user",
            "flood",
            "--group",
            "system:authenticated",
        ])
        .arg("--data-dir")
        .arg(&server.dir)
        .output()
        .expect("skiff token create");
    assert!(out.status.success());
    let flood = Client::new(
        &server.url(),
        &admin.ca_pem,
        String::from_utf8_lossy(&out.stdout).trim(),
    );
    let refused = std::sync::atomic::AtomicUsize::new(0);
    let retry_after_ok = std::sync::atomic::AtomicBool::new(true);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..16 {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Discovery is open to every authenticated user.
                    let answer = flood.request(Method::GET, "/api/v1").send();
                    if let Ok(answer) = answer {
                        if answer.status().as_u16() == 429 {
                            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let retry = answer
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok())
                                == Some("1");
                            let status: Value = answer.json().unwrap_or_default();
                            if !retry || status["reason"] != "TooManyRequests" {
                                retry_after_ok.store(false, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                }
            });
        }
        // The flood stops however this ends (a failed assertion must not leave it running).
        struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _stop = StopOnDrop(&stop);
        // The system's share is shared with the server's own controllers (also system), so
        // one of the admin's requests may meet it taken: then it is served when retried as
        // Retry-After says, and most are served at once.
        let mut first_time = 0;
        for _ in 0..200 {
            let code = admin.get_status("/api/v1/namespaces/default");
            if code == 200 {
                first_time += 1;
                continue;
            }
            assert_eq!(code, 429, "the system is served or told to retry");
            std::thread::sleep(Duration::from_secs(1));
            assert_eq!(
                admin.get_status("/api/v1/namespaces/default"),
                200,
                "the system is served on retry"
            );
        }
        assert!(
            first_time >= 180,
            "the system is served at once: {first_time} of 200"
        );
    });
    assert!(refused.into_inner() > 0, "the flood met the limit");
    assert!(
        retry_after_ok.into_inner(),
        "429s say when to retry, in Kubernetes' words"
    );
}

/// Watches hold memory for as long as the client likes: one user may keep at most
/// `--max-watches-per-user` open; the next gets 429 with `Retry-After`, the admin (whose
/// controllers watch a lot) is not counted, and a closed watch frees its place.
#[test]
fn watches_are_capped_per_user() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with_flags(&dir.path().join("s1"), &["--max-watches-per-user", "3"]);
    let admin = server.wait_ready();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["token", "create", "--user", "watcher"])
        .arg("--data-dir")
        .arg(&server.dir)
        .output()
        .expect("skiff token create");
    assert!(out.status.success());
    let (code, body) = admin.post(
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        &json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "watcher-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "watcher", "apiGroup": "rbac.authorization.k8s.io"}]
        }),
    );
    assert_eq!(code, 201, "{body}");
    let watcher = Client::new(
        &server.url(),
        &admin.ca_pem,
        String::from_utf8_lossy(&out.stdout).trim(),
    );
    let watch = |client: &Client| {
        client
            .request(Method::GET, &format!("{CM}?watch=true"))
            .send()
            .expect("a watch request")
    };
    // `view` is filled by the aggregation controller shortly after start.
    eventually("the watcher may list", Duration::from_secs(30), || {
        (watcher.get(CM).0 == 200).then_some(())
    });
    let open: Vec<_> = (0..3)
        .map(|_| {
            let w = watch(&watcher);
            assert_eq!(w.status().as_u16(), 200);
            w
        })
        .collect();
    let refused = watch(&watcher);
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let status: Value = refused.json().unwrap_or_default();
    assert!(
        status["message"]
            .as_str()
            .unwrap_or("")
            .contains("too many watches open for user \"watcher\""),
        "{status}"
    );
    let admins: Vec<_> = (0..5).map(|_| watch(&admin)).collect();
    assert!(
        admins.iter().all(|w| w.status().as_u16() == 200),
        "the admin is not counted"
    );
    drop(open);
    eventually(
        "a closed watch frees its place",
        Duration::from_secs(10),
        || {
            let w = watch(&watcher);
            (w.status().as_u16() == 200).then_some(())
        },
    );
}

/// A connection flood on a NodePort from one address: the agent's proxy holds at most
/// `limits::DEFAULT.per_source` connections from it and resets the rest at once, while another
/// client of the same service is still answered, and the flooder is let in again once its
/// connections close. (Before the limit, every connection cost the node two file descriptors
/// until the process, which also serves the API, ran out.)
#[test]
fn a_connection_flood_on_a_node_port_is_bounded_per_source() {
    use skiff_agent::proxy::limits::DEFAULT;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};

    let cluster = common::node::Cluster::start(70, "f");
    cluster.create_pod(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "skiff.local/web:1.0"}]}
    }));
    cluster.wait_running("web");
    let (code, body) = cluster.client.post(
        "/api/v1/namespaces/default/services",
        &json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "selector": {"app": "web"},
                     "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30770}]}
        }),
    );
    assert_eq!(code, 201, "{body}");
    // A GET from `source` through the NodePort: the page, or what went wrong.
    let get = |source: &str| -> Result<String, String> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .map_err(|e| e.to_string())?;
        let bind: SocketAddr = format!("{source}:0").parse().expect("address");
        socket.bind(&bind.into()).map_err(|e| e.to_string())?;
        let to: SocketAddr = "127.0.0.1:30770".parse().expect("address");
        socket
            .connect_timeout(&to.into(), Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        let mut stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        stream
            .write_all(b"GET / HTTP/1.0\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(|e| e.to_string())?;
        Ok(answer)
    };
    eventually("the NodePort answers", Duration::from_secs(30), || {
        get("127.0.0.1").ok().filter(|a| a.contains("hello from f"))
    });

    // The flood: as many idle connections as one source may hold, then more.
    let held: Vec<TcpStream> = (0..DEFAULT.per_source)
        .map(|i| {
            TcpStream::connect("127.0.0.1:30770").unwrap_or_else(|e| panic!("connection {i}: {e}"))
        })
        .collect();
    let refused = eventually(
        "the flooder's next connection is reset",
        Duration::from_secs(20),
        || {
            let answer = get("127.0.0.1");
            (!answer.as_ref().is_ok_and(|a| a.contains("hello"))).then_some(answer)
        },
    );
    assert!(
        refused.as_ref().map_or(true, |a| a.is_empty()),
        "refused without an answer: {refused:?}"
    );
    // Another client of the service is still served.
    let other = get("127.0.0.2").expect("another source is answered");
    assert!(other.contains("hello from f"), "{other}");

    // Once the flooder's connections close, it is let in again.
    drop(held);
    eventually(
        "the flooder is let in again",
        Duration::from_secs(30),
        || get("127.0.0.1").ok().filter(|a| a.contains("hello from f")),
    );
}

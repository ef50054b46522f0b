//! End-to-end: one real `skiff server` over HTTPS — CRUD with the token, 401 without, watches,
//! validation, limits, and durability across restarts and `kill -9`.

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::{configmap, Client, Server};
use reqwest::Method;
use serde_json::{json, Value};

const CM: &str = "/api/v1/namespaces/default/configmaps";
/// Leaves out the CA bundle the cluster puts in every namespace, whenever it arrives.
const NOT_CA: &str = "fieldSelector=metadata.name%21%3Dkube-root-ca.crt";

#[test]
fn crud_over_https_with_the_admin_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s1"));
    let client = server.wait_ready();

    // The system namespaces exist from the start.
    let (status, namespaces) = client.get("/api/v1/namespaces");
    assert_eq!(status, 200);
    let names: Vec<&str> = namespaces["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.contains(&ns), "{ns} missing from {names:?}");
    }

    // Create: 201 with server-set metadata.
    let (status, created) = client.post(CM, &configmap("app", "v1"));
    assert_eq!(status, 201, "{created}");
    assert!(created["metadata"]["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty()));
    assert!(created["metadata"]["creationTimestamp"].as_str().is_some());
    let rv1 = created["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();

    // Create again: 409 AlreadyExists as a Status.
    let (status, conflict) = client.post(CM, &configmap("app", "v1"));
    assert_eq!(status, 409);
    assert_eq!(conflict["kind"], "Status");
    assert_eq!(conflict["reason"], "AlreadyExists");

    // Update with the current resourceVersion succeeds; with the old one conflicts.
    let mut update = created.clone();
    update["data"]["value"] = json!("v2");
    let (status, updated) = client.call(Method::PUT, &format!("{CM}/app"), Some(&update));
    assert_eq!(status, 200, "{updated}");
    assert_ne!(
        updated["metadata"]["resourceVersion"].as_str(),
        Some(rv1.as_str())
    );
    let (status, stale) = client.call(Method::PUT, &format!("{CM}/app"), Some(&update));
    assert_eq!(status, 409, "{stale}");
    assert_eq!(stale["reason"], "Conflict");

    // A PUT body may leave out the namespace; the stored object keeps the path's.
    let mut without_namespace = updated.clone();
    without_namespace["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("namespace");
    let (status, replaced) =
        client.call(Method::PUT, &format!("{CM}/app"), Some(&without_namespace));
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["metadata"]["namespace"], "default");

    // Merge patch and JSON patch.
    let patched = client
        .request(Method::PATCH, &format!("{CM}/app"))
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"metadata":{"labels":{"tier":"web"}}}"#)
        .send()
        .expect("patch");
    assert_eq!(patched.status().as_u16(), 200);
    let json_patched = client
        .request(Method::PATCH, &format!("{CM}/app"))
        .header("content-type", "application/json-patch+json")
        .body(r#"[{"op":"replace","path":"/data/value","value":"v3"}]"#)
        .send()
        .expect("json patch");
    assert_eq!(json_patched.status().as_u16(), 200);
    let (_, got) = client.get(&format!("{CM}/app"));
    assert_eq!(got["data"]["value"], "v3");
    assert_eq!(got["metadata"]["labels"]["tier"], "web");

    // Label selectors on lists.
    client.post(CM, &configmap("other", "x"));
    let (_, selected) = client.get(&format!("{CM}?labelSelector=tier%3Dweb"));
    assert_eq!(selected["items"].as_array().map(Vec::len), Some(1));
    let (_, not_selected) = client.get(&format!("{CM}?labelSelector=tier%20notin%20(web)"));
    assert_eq!(
        common::names(&not_selected),
        ["kube-root-ca.crt", "other"],
        "without the label: ours and the CA bundle every namespace holds"
    );
    let (_, by_name) = client.get(&format!("{CM}?fieldSelector=metadata.name%3Dother"));
    assert_eq!(by_name["items"][0]["metadata"]["name"], "other");

    // A client cannot create observed state: a new Pod starts Pending whatever it claims.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}, "status": {"phase": "Running"}});
    let (status, created_pod) = client.post("/api/v1/namespaces/default/pods", &pod);
    assert_eq!(status, 201, "{created_pod}");
    assert_eq!(created_pod["status"]["phase"], "Pending");

    // dryRun=All validates against what exists and stores nothing.
    let (status, _) = client.post(&format!("{CM}?dryRun=All"), &configmap("app", "v1"));
    assert_eq!(
        status, 409,
        "a dry-run create of an existing name conflicts"
    );
    let (status, _) = client.post(&format!("{CM}?dryRun=All"), &configmap("dry", "v1"));
    assert_eq!(status, 201);
    assert_eq!(
        client.get(&format!("{CM}/dry")).0,
        404,
        "dry run stored nothing"
    );

    // Delete, then 404.
    let (status, deleted) = client.call(Method::DELETE, &format!("{CM}/app"), None);
    assert_eq!(status, 200, "{deleted}");
    let (status, missing) = client.get(&format!("{CM}/app"));
    assert_eq!(status, 404);
    assert_eq!(missing["reason"], "NotFound");
    assert_eq!(missing["message"], "configmaps \"app\" not found");
}

#[test]
fn requests_without_the_token_are_unauthorized() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s1"));
    let client = server.wait_ready();
    let stranger = Client::new(&server.url(), &client.ca_pem, "not-the-token");
    let (status, body) = stranger.get("/api/v1/namespaces");
    assert_eq!(status, 401);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    let anonymous = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(client.ca_pem.as_bytes()).expect("ca"))
        .build()
        .expect("client");
    let response = anonymous
        .get(format!("{}/api/v1/namespaces", server.url()))
        .send()
        .expect("send");
    assert_eq!(response.status().as_u16(), 401);
    // Health and version are public, as in Kubernetes.
    let version = anonymous
        .get(format!("{}/version", server.url()))
        .send()
        .expect("version");
    assert_eq!(version.status().as_u16(), 200);
}

#[test]
fn bad_input_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s1"));
    let client = server.wait_ready();

    // The seed manifest whose template labels are mis-indented: the selector matches nothing.
    let manifest = include_str!("manifests/seed-000-deployment-broken-indent.yaml");
    let deployments = "/apis/apps/v1/namespaces/default/deployments";
    let strict = client
        .request(
            Method::POST,
            &format!("{deployments}?fieldValidation=Strict"),
        )
        .header("content-type", "application/yaml")
        .body(manifest)
        .send()
        .expect("post");
    assert_eq!(strict.status().as_u16(), 400);
    let body: Value = strict.json().expect("status");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("spec.template.metadata.app"),
        "{body}"
    );
    let lax = client
        .request(Method::POST, deployments)
        .header("content-type", "application/yaml")
        .body(manifest)
        .send()
        .expect("post");
    assert_eq!(lax.status().as_u16(), 422);
    let body: Value = lax.json().expect("status");
    assert_eq!(body["reason"], "Invalid");
    let fields: Vec<&str> = body["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert!(fields.contains(&"spec.template.metadata.labels"), "{body}");
    let (_, list) = client.get(deployments);
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(0),
        "nothing stored"
    );

    // Malformed JSON: 400 naming the position.
    let malformed = client
        .request(Method::POST, CM)
        .header("content-type", "application/json")
        .body(r#"{"metadata": {"name": "x",}}"#)
        .send()
        .expect("post");
    assert_eq!(malformed.status().as_u16(), 400);
    let body: Value = malformed.json().expect("status");
    assert!(
        body["message"].as_str().unwrap_or("").contains("column"),
        "{body}"
    );

    // A bad name: 422 naming the field.
    let (status, body) = client.post(CM, &configmap("Not_A_Name", "x"));
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "metadata.name");

    // A missing namespace: 404.
    let (status, body) = client.post(
        "/api/v1/namespaces/nowhere/configmaps",
        &configmap("x", "y"),
    );
    assert_eq!(status, 404, "{body}");

    // Over 3 MiB: 413.
    let big = "x".repeat(3 * 1024 * 1024 + 10);
    let (status, _) = client.post(CM, &configmap("big", &big));
    assert_eq!(status, 413);
    // Nothing stored: the namespace holds only the CA bundle every namespace gets.
    let (_, list) = client.get(CM);
    assert_eq!(common::names(&list), ["kube-root-ca.crt"], "nothing stored");
}

/// Reads watch events (one JSON per line) until `n` arrived.
fn read_events(reader: &mut impl BufRead, n: usize) -> Vec<Value> {
    let mut events = Vec::new();
    while events.len() < n {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read watch") == 0 {
            break;
        }
        events.push(serde_json::from_str(&line).expect("event JSON"));
    }
    events
}

#[test]
fn watch_sends_current_state_then_changes_and_resumes_from_a_revision() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(&dir.path().join("s1"));
    let client = server.wait_ready();
    let (_, first) = client.post(CM, &configmap("a", "1"));
    let first_rv = first["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();

    // No resourceVersion: the current state as ADDED, then live changes.
    let response = client
        .request(Method::GET, &format!("{CM}?watch=true&{NOT_CA}"))
        .timeout(Duration::from_secs(30))
        .send()
        .expect("watch");
    assert_eq!(response.status().as_u16(), 200);
    let mut reader = BufReader::new(response);
    let initial = read_events(&mut reader, 1);
    assert_eq!(initial[0]["type"], "ADDED");
    assert_eq!(initial[0]["object"]["metadata"]["name"], "a");
    client.post(CM, &configmap("b", "1"));
    client.call(Method::DELETE, &format!("{CM}/a"), None);
    let live = read_events(&mut reader, 2);
    assert_eq!(
        (
            live[0]["type"].as_str(),
            live[0]["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("b"))
    );
    assert_eq!(
        (
            live[1]["type"].as_str(),
            live[1]["object"]["metadata"]["name"].as_str()
        ),
        (Some("DELETED"), Some("a"))
    );

    // Resume from the first object's revision: everything after it, in order.
    let resumed = client
        .request(
            Method::GET,
            &format!("{CM}?watch=true&resourceVersion={first_rv}&{NOT_CA}"),
        )
        .send()
        .expect("watch");
    let events = read_events(&mut BufReader::new(resumed), 2);
    let kinds: Vec<_> = events
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, vec!["ADDED", "DELETED"]);

    // After a restart the history before it is gone: 410 Expired as an ERROR event.
    server.restart();
    let client = server.wait_ready();
    let expired = client
        .request(
            Method::GET,
            &format!("{CM}?watch=true&resourceVersion={first_rv}"),
        )
        .send()
        .expect("watch");
    let events = read_events(&mut BufReader::new(expired), 1);
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(events[0]["object"]["reason"], "Expired");
}

#[test]
fn acknowledged_writes_survive_restart_and_kill_9() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut server = Server::start(&dir.path().join("s1"));
    let client = server.wait_ready();
    for i in 0..50 {
        let (status, body) = client.post(CM, &configmap(&format!("before-term-{i}"), "x"));
        assert_eq!(status, 201, "{body}");
    }
    server.stop();
    server.restart();
    let client = server.wait_ready();
    for i in 0..50 {
        let (status, body) = client.post(CM, &configmap(&format!("before-kill-{i}"), "x"));
        assert_eq!(status, 201, "{body}");
    }
    // SIGKILL straight after the last acknowledgement: nothing may be lost.
    server.kill();
    server.restart();
    let client = server.wait_ready();
    let (_, list) = client.get(CM);
    let names = common::names(&list);
    for i in 0..50 {
        assert!(
            names.contains(&format!("before-term-{i}")),
            "before-term-{i} lost"
        );
        assert!(
            names.contains(&format!("before-kill-{i}")),
            "before-kill-{i} lost"
        );
    }
}

#[test]
fn health_version_and_metrics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s1"));
    let client = server.wait_ready();
    let (status, version) = client.get("/version");
    assert_eq!(status, 200);
    assert_eq!(version["major"], "1");
    assert_eq!(client.get_status("/livez"), 200);
    client.post(CM, &configmap("m", "x"));
    let metrics = client
        .request(Method::GET, "/metrics")
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    for name in [
        "apiserver_request_total",
        "apiserver_request_duration_seconds",
        "skiff_raft_term",
        "skiff_raft_commit_index",
        "skiff_raft_apply_lag",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    // The kubeconfig holds the admin's token: only the owner may read it.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(server.kubeconfig())
        .expect("kubeconfig")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn services_get_cluster_ips_and_node_ports_that_never_collide() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(&dir.path().join("s"));
    let client = server.wait_ready();
    const SVC: &str = "/api/v1/namespaces/default/services";
    let service = |name: &str, spec: Value| json!({"metadata": {"name": name}, "spec": spec});

    // A ClusterIP from the default service CIDR (10.43.0.0/16), one per service.
    let (code, a) = client.post(SVC, &service("a", json!({"ports": [{"port": 80}]})));
    assert_eq!(code, 201, "{a}");
    let ip_a = a["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    assert!(ip_a.starts_with("10.43."), "{ip_a}");
    assert_eq!(a["spec"]["clusterIPs"], json!([ip_a]));
    let (_, b) = client.post(
        SVC,
        &service("b", json!({"type": "NodePort", "ports": [{"port": 80}]})),
    );
    let ip_b = b["spec"]["clusterIP"].as_str().expect("clusterIP");
    assert_ne!(ip_a, ip_b);
    let node_port = b["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("a node port");
    assert!((30000..=32767).contains(&node_port));

    // Asking for what another service holds names the field.
    let (code, err) = client.post(
        SVC,
        &service("c", json!({"clusterIP": ip_a, "ports": [{"port": 80}]})),
    );
    assert_eq!(
        (code, err["reason"].as_str()),
        (422, Some("Invalid")),
        "{err}"
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap_or("")
            .contains("provided IP is already allocated"),
        "{err}"
    );
    let (code, err) = client.post(
        SVC,
        &service(
            "d",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": node_port}]}),
        ),
    );
    assert_eq!(code, 422, "{err}");
    assert_eq!(
        err["details"]["causes"][0]["field"], "spec.ports[0].nodePort",
        "{err}"
    );
    // Nothing half-written.
    assert_eq!(client.get(&format!("{SVC}/c")).0, 404);

    // A PUT without the addresses keeps them (they are the server's).
    let mut replace = service("b", json!({"type": "NodePort", "ports": [{"port": 80}]}));
    replace["metadata"]["resourceVersion"] = b["metadata"]["resourceVersion"].clone();
    let (code, replaced) = client.call(Method::PUT, &format!("{SVC}/b"), Some(&replace));
    assert_eq!(code, 200, "{replaced}");
    assert_eq!(replaced["spec"]["clusterIP"], b["spec"]["clusterIP"]);
    assert_eq!(replaced["spec"]["ports"][0]["nodePort"], json!(node_port));

    // Headless services get none; a deleted service's address is free again.
    let (_, h) = client.post(
        SVC,
        &service("h", json!({"clusterIP": "None", "ports": [{"port": 80}]})),
    );
    assert_eq!(h["spec"]["clusterIP"], "None");
    assert_eq!(
        client.call(Method::DELETE, &format!("{SVC}/a"), None).0,
        200
    );
    let (code, again) = client.post(
        SVC,
        &service("e", json!({"clusterIP": ip_a, "ports": [{"port": 80}]})),
    );
    assert_eq!(code, 201, "{again}");
}

/// A server whose node agent cannot take its port (another skiff or a kubelet holds it) fails
/// at start and says which port, instead of serving on with no agent.
#[test]
fn a_server_whose_agent_port_is_taken_fails_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let taken = std::net::TcpListener::bind("0.0.0.0:0").expect("a port to hold");
    let port = taken.local_addr().expect("address").port();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("server")
        .arg("--data-dir")
        .arg(dir.path().join("s1"))
        .args(["--listen", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--kubelet-port", &port.to_string()])
        .output()
        .expect("run skiff server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "port {port} for the node agent's endpoint is in use"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--disable-agent"), "{stderr}");
}

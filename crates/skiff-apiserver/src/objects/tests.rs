//! The generic verbs against a real one-member store: what each verb does, and where a
//! resource's strategy changes it. Each test opens its own store in a scratch directory.
use axum::http::StatusCode;
use serde_json::{json, Value};
use skiff_store::{object_key, PeerTransport, Store, StoreConfig};

use super::*;
use crate::app::{ensure_system_namespaces, ClusterSecrets};

/// An [`App`] on a fresh one-member store, with the system namespaces; the directory goes
/// when the test ends.
async fn app() -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("scratch dir");
    let config = StoreConfig::new(1, "m1", "http://127.0.0.1:1", dir.path().join("store"));
    let store = Store::open(config, PeerTransport::new(None, "secret"))
        .await
        .expect("open store");
    store.initialize().await.expect("initialize");
    store
        .wait_for_leader(std::time::Duration::from_secs(10))
        .await
        .expect("a leader");
    let secrets = ClusterSecrets {
        secret: "secret".into(),
        ca_cert_pem: String::new(),
        ca_key_pem: String::new(),
        node_ca_cert_pem: String::new(),
        node_ca_key_pem: String::new(),
        service_account_key_pem: String::new(),
        encryption_config: Default::default(),
    };
    let app = App::new(store, "admin".into(), secrets);
    ensure_system_namespaces(&app).await.expect("namespaces");
    (app, dir)
}

fn target(path: &str) -> Target {
    crate::target::parse(path)
        .expect("served")
        .expect("a resource path")
}

fn params(query: &str) -> Params {
    Params::parse(Some(query)).expect("valid query")
}

/// The cluster administrator, who may write anything.
fn admin() -> crate::auth::user::UserInfo {
    crate::auth::user::UserInfo::new(crate::auth::ADMIN_USER, &[crate::auth::user::MASTERS])
}

/// The status code and JSON body of a verb's answer (an error becomes its `Status`).
async fn answer(result: Result<Response>) -> (StatusCode, Value) {
    let response = result.unwrap_or_else(respond::error);
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn post(app: &App, path: &str, body: Value) -> (StatusCode, Value) {
    let bytes = serde_json::to_vec(&body).expect("json");
    let (target, params) = (target(path), params(""));
    let result = create(
        app,
        &admin(),
        &target,
        &params,
        Some("application/json"),
        &bytes,
    )
    .await;
    answer(result).await
}

async fn put(app: &App, path: &str, body: &Value) -> (StatusCode, Value) {
    let bytes = serde_json::to_vec(body).expect("json");
    let (target, params) = (target(path), params(""));
    let result = update(
        app,
        &admin(),
        &target,
        &params,
        Some("application/json"),
        &bytes,
    )
    .await;
    answer(result).await
}

async fn get_one(app: &App, path: &str) -> (StatusCode, Value) {
    answer(get(app, &target(path), &params(""), None).await).await
}

async fn delete_with(app: &App, path: &str, options: Value) -> (StatusCode, Value) {
    let bytes = match options {
        Value::Null => Vec::new(),
        options => serde_json::to_vec(&options).expect("json"),
    };
    answer(delete(app, &target(path), &params(""), &bytes).await).await
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_fills_in_what_the_server_decides_and_the_strategy_resets_status() {
    let (app, _dir) = app().await;
    let mut claimed = pod("web");
    claimed["status"] = json!({"phase": "Running", "podIP": "10.42.0.9"});
    claimed["metadata"]["uid"] = json!("client-chosen");
    let (code, created) = post(&app, "/api/v1/namespaces/default/pods", claimed).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"], json!({"phase": "Pending"}));
    assert_eq!(created["metadata"]["namespace"], "default");
    assert_ne!(created["metadata"]["uid"], "client-chosen");
    assert!(created["metadata"]["resourceVersion"].is_string());

    // generateName, and a plain resource keeps what it was given.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"generateName": "settings-"}, "data": {"a": "b"}});
    let (code, cm) = post(&app, "/api/v1/namespaces/default/configmaps", cm).await;
    assert_eq!(code, StatusCode::CREATED, "{cm}");
    let name = cm["metadata"]["name"].as_str().expect("a name");
    assert!(name.starts_with("settings-") && name.len() == "settings-".len() + 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_creates_are_refused_with_the_reason_and_write_nothing() {
    let (app, _dir) = app().await;
    let mut elsewhere = pod("web");
    elsewhere["metadata"]["namespace"] = json!("other");
    let cases = [
        (
            "/api/v1/namespaces/default/pods",
            elsewhere,
            400,
            "namespace of the provided object",
        ),
        (
            "/api/v1/namespaces/missing/pods",
            pod("web"),
            404,
            "missing",
        ),
        (
            "/api/v1/namespaces/default/pods",
            json!({"metadata": {"name": "x"}, "spec": {}}),
            422,
            "spec.containers",
        ),
    ];
    for (path, body, code, text) in cases {
        let (got, status) = post(&app, path, body).await;
        assert_eq!(got.as_u16(), code, "{path}: {status}");
        assert!(
            status["message"].as_str().unwrap_or("").contains(text),
            "{status}"
        );
    }
    assert!(app
        .store
        .get(&object_key("pods", "default", "web"))
        .is_none());
    assert!(app
        .store
        .get(&object_key("pods", "missing", "web"))
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_addresses_claimed_in_the_same_write() {
    let (app, _dir) = app().await;
    let svc = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
               "spec": {"ports": [{"port": 80}]}, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}})
    };
    let (code, a) = post(&app, "/api/v1/namespaces/default/services", svc("a")).await;
    assert_eq!(code, StatusCode::CREATED, "{a}");
    let (_, b) = post(&app, "/api/v1/namespaces/default/services", svc("b")).await;
    assert_eq!(a["spec"]["clusterIP"], "10.43.0.2");
    assert_eq!(b["spec"]["clusterIP"], "10.43.0.3");
    assert!(
        a.get("status").is_none(),
        "a new Service claims no status: {a}"
    );
    let claim = app
        .store
        .get(&object_key("addressclaims.skiff.io", "", "ip-10.43.0.2"))
        .expect("the address is claimed");
    assert_eq!(claim["service"]["uid"], a["metadata"]["uid"]);

    // A PUT that leaves the address out keeps it.
    let mut replace = svc("a");
    replace["metadata"]["resourceVersion"] = a["metadata"]["resourceVersion"].clone();
    let (code, replaced) = put(&app, "/api/v1/namespaces/default/services/a", &replace).await;
    assert_eq!(code, StatusCode::OK, "{replaced}");
    assert_eq!(replaced["spec"]["clusterIP"], "10.43.0.2");

    // Deleted, its address is free again (its claim is taken over by the next Service).
    let (code, _) = delete_with(&app, "/api/v1/namespaces/default/services/a", Value::Null).await;
    assert_eq!(code, StatusCode::OK);
    let (_, c) = post(&app, "/api/v1/namespaces/default/services", svc("c")).await;
    assert_eq!(c["spec"]["clusterIP"], "10.43.0.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_keep_status_and_status_updates_keep_the_rest() {
    let (app, _dir) = app().await;
    let (_, created) = post(&app, "/api/v1/namespaces/default/pods", pod("web")).await;
    let mut status_write = created.clone();
    status_write["status"] = json!({"phase": "Running"});
    status_write["spec"]["containers"][0]["image"] = json!("ignored");
    let (code, written) = put(
        &app,
        "/api/v1/namespaces/default/pods/web/status",
        &status_write,
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{written}");
    assert_eq!(written["status"]["phase"], "Running");
    assert_eq!(written["spec"]["containers"][0]["image"], "busybox");

    let mut main_write = written.clone();
    main_write["status"] = json!({"phase": "Failed"});
    main_write["metadata"]["labels"] = json!({"a": "b"});
    let (code, written) = put(&app, "/api/v1/namespaces/default/pods/web", &main_write).await;
    assert_eq!(code, StatusCode::OK, "{written}");
    assert_eq!(written["status"]["phase"], "Running");
    assert_eq!(written["metadata"]["labels"]["a"], "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_follow_finalizers_then_the_strategy() {
    let (app, _dir) = app().await;
    let ns = "/api/v1/namespaces/default";

    // A pod on a node is only marked; with grace 0 it goes.
    let mut on_node = pod("web");
    on_node["spec"]["nodeName"] = json!("n1");
    post(&app, &format!("{ns}/pods"), on_node).await;
    let (code, marked) = delete_with(&app, &format!("{ns}/pods/web"), Value::Null).await;
    assert_eq!(code, StatusCode::OK, "{marked}");
    assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
    assert!(app
        .store
        .get(&object_key("pods", "default", "web"))
        .is_some());
    let force = json!({"gracePeriodSeconds": 0});
    let (code, gone) = delete_with(&app, &format!("{ns}/pods/web"), force).await;
    assert_eq!(
        (code, gone["kind"].clone()),
        (StatusCode::OK, json!("Status"))
    );
    assert!(app
        .store
        .get(&object_key("pods", "default", "web"))
        .is_none());

    // An object with a finalizer is marked; the update removing the last finalizer deletes it.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "c", "finalizers": ["example.com/wait"]}});
    post(&app, &format!("{ns}/configmaps"), cm).await;
    let (_, marked) = delete_with(&app, &format!("{ns}/configmaps/c"), Value::Null).await;
    assert!(
        marked["metadata"]["deletionTimestamp"].is_string(),
        "{marked}"
    );
    let mut done = marked.clone();
    done["metadata"]["finalizers"] = json!([]);
    let (code, _) = put(&app, &format!("{ns}/configmaps/c"), &done).await;
    assert_eq!(code, StatusCode::OK);
    assert!(app
        .store
        .get(&object_key("configmaps", "default", "c"))
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_take_their_contents_along_and_system_ones_stay() {
    let (app, _dir) = app().await;
    let team = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}});
    let (code, created) = post(&app, "/api/v1/namespaces", team).await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    assert_eq!(created["status"]["phase"], "Active");
    post(&app, "/api/v1/namespaces/team/pods", pod("a")).await;
    post(&app, "/api/v1/namespaces/default/pods", pod("a")).await;

    let (code, _) = delete_with(&app, "/api/v1/namespaces/team", Value::Null).await;
    assert_eq!(code, StatusCode::OK);
    assert!(app.store.get(&object_key("pods", "team", "a")).is_none());
    assert!(app.store.get(&object_key("pods", "default", "a")).is_some());

    let (code, status) = delete_with(&app, "/api/v1/namespaces/default", Value::Null).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{status}");
    assert!(app
        .store
        .get(&object_key("namespaces", "", "default"))
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_leases_are_made_up_for_nodes() {
    let (app, _dir) = app().await;
    let path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1";
    let (code, _) = get_one(&app, path).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                      "status": {"capacity": {"cpu": "2"}}});
    let (code, node) = post(&app, "/api/v1/nodes", node).await;
    assert_eq!(code, StatusCode::CREATED, "{node}");
    assert_eq!(
        node["status"]["capacity"]["cpu"], "2",
        "a node keeps its status"
    );
    app.leases.renew("n1");
    let (code, lease) = get_one(&app, path).await;
    assert_eq!(code, StatusCode::OK, "{lease}");
    assert_eq!(lease["spec"]["holderIdentity"], "n1");
    assert!(
        lease["spec"]["renewTime"].is_string(),
        "the leader heard it: {lease}"
    );
    let list = target("/apis/coordination.k8s.io/v1/leases");
    let (_, leases) = answer(list_objects(&app, &list).await).await;
    assert_eq!(
        leases["items"].as_array().map(Vec::len),
        Some(1),
        "{leases}"
    );
}

async fn list_objects(app: &App, target: &Target) -> Result<Response> {
    list(app, target, &params(""), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_writes_are_not_written() {
    let (app, _dir) = app().await;
    let (_, created) = post(&app, "/api/v1/namespaces/default/pods", pod("web")).await;
    let (code, again) = put(&app, "/api/v1/namespaces/default/pods/web", &created).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        again["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );
}

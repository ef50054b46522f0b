//! StatefulSets on a REAL node agent (containerd, runc, CNI) with the built-in `local-path`
//! StorageClass: three pods with stable names, each with its own claim, that reach each other
//! by their DNS names through a headless Service; a deleted pod comes back with its name and
//! data; scaling down and up keeps the claims; a rolling update goes from the top ordinal down.
mod common;

use std::time::Duration;

use common::eventually;
use common::node::Cluster;
use serde_json::{json, Value};

fn apply(cluster: &Cluster, object: Value) {
    let file = cluster.dir.path().join("object.json");
    std::fs::write(&file, object.to_string()).expect("write");
    let (ok, out, err) = cluster.kubectl(&["apply", "-f", file.to_str().expect("path")]);
    assert!(ok, "{out}{err}");
}

fn stateful_set(greeting: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
        "spec": {
            "serviceName": "web", "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                "terminationGracePeriodSeconds": 2,
                "containers": [{"name": "web", "image": "skiff.local/web:1.0",
                    "env": [{"name": "GREETING", "value": greeting}],
                    // Each start leaves the pod's name in its own volume, served over HTTP.
                    "command": ["sh", "-c",
                        "hostname >> /data/names && cp /data/names /var/www/names && exec httpd -f -p 8080 -h /var/www"],
                    "ports": [{"containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/names", "port": 8080}, "periodSeconds": 1},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}}]}})
}

fn wait_no_pods(cluster: &Cluster) {
    eventually("the pods gone", Duration::from_secs(90), || {
        let (_, pods) = cluster.client.get("/api/v1/namespaces/default/pods");
        pods["items"]
            .as_array()
            .is_some_and(|p| p.is_empty())
            .then_some(())
    });
}

fn uid(cluster: &Cluster, pod: &str) -> String {
    cluster.pod(pod)["metadata"]["uid"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn rollout_status(cluster: &Cluster) -> String {
    let (ok, out, err) =
        cluster.kubectl(&["rollout", "status", "statefulset/web", "--timeout=180s"]);
    assert!(ok, "{out}{err}");
    out
}

/// The names file of `pod`, fetched from another pod by the stable DNS name.
fn names_via_dns(cluster: &Cluster, from: &str, host: &str) -> String {
    let url = format!("http://{host}:8080/names");
    eventually(
        &format!("{url} from {from}"),
        Duration::from_secs(30),
        || {
            let (ok, out, _) = cluster.kubectl(&["exec", from, "--", "wget", "-qO-", &url]);
            ok.then_some(out)
        },
    )
}

#[test]
fn stateful_pods_keep_their_names_claims_and_data() {
    let cluster = Cluster::start(75, "t");
    apply(
        &cluster,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"},
                "ports": [{"port": 8080}]}}),
    );
    apply(&cluster, stateful_set("one"));
    let out = rollout_status(&cluster);
    assert!(
        out.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{out}"
    );
    let (_, out, _) = cluster.kubectl(&["get", "statefulset", "web"]);
    assert!(out.contains("3/3"), "{out}");
    // Settled: the controller writes nothing more (no status churn).
    let version = |path: &str| cluster.client.get(path).1["metadata"]["resourceVersion"].clone();
    let sts_path = "/apis/apps/v1/namespaces/default/statefulsets/web";
    let claim_path = "/api/v1/namespaces/default/persistentvolumeclaims/data-web-0";
    let before = (version(sts_path), version(claim_path));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(before, (version(sts_path), version(claim_path)));

    // Ordered: web-0 was created first and web-2 last.
    let created = |pod: &str| {
        cluster.pod(pod)["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(created("web-0") <= created("web-1") && created("web-1") <= created("web-2"));
    for i in 0..3 {
        let claim = cluster
            .client
            .get(&format!(
                "/api/v1/namespaces/default/persistentvolumeclaims/data-web-{i}"
            ))
            .1;
        assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
    }

    // Stable DNS names through the headless Service, each pod with its own volume.
    assert_eq!(names_via_dns(&cluster, "web-0", "web-1.web"), "web-1\n");
    assert_eq!(
        names_via_dns(&cluster, "web-1", "web-2.web.default.svc.cluster.local"),
        "web-2\n"
    );

    // A deleted pod comes back with the same name, claim and data.
    let before = uid(&cluster, "web-1");
    let (ok, _, err) = cluster.kubectl(&["delete", "pod", "web-1"]);
    assert!(ok, "{err}");
    eventually("web-1 back and Ready", Duration::from_secs(90), || {
        let pod = cluster.pod("web-1");
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        (ready && pod["metadata"]["uid"].as_str() != Some(before.as_str())).then_some(())
    });
    assert_eq!(
        names_via_dns(&cluster, "web-0", "web-1.web"),
        "web-1\nweb-1\n"
    );

    // Scale to 1 and back to 3: the claims stay, and web-2 finds its data again.
    let (ok, _, err) = cluster.kubectl(&["scale", "statefulset/web", "--replicas=1"]);
    assert!(ok, "{err}");
    eventually("web-1 and web-2 gone", Duration::from_secs(90), || {
        let gone = |p: &str| {
            cluster
                .client
                .get(&format!("/api/v1/namespaces/default/pods/{p}"))
                .0
                == 404
        };
        (gone("web-1") && gone("web-2")).then_some(())
    });
    let (code, _) = cluster
        .client
        .get("/api/v1/namespaces/default/persistentvolumeclaims/data-web-2");
    assert_eq!(code, 200, "the claim is kept on scale-down");
    let (ok, _, err) = cluster.kubectl(&["scale", "statefulset/web", "--replicas=3"]);
    assert!(ok, "{err}");
    rollout_status(&cluster);
    assert_eq!(
        names_via_dns(&cluster, "web-0", "web-2.web"),
        "web-2\nweb-2\n"
    );

    // A rolling update replaces web-2, then web-1, then web-0.
    let first = cluster
        .client
        .get("/apis/apps/v1/namespaces/default/statefulsets/web")
        .1["status"]["updateRevision"]
        .clone();
    let uids: Vec<String> = (0..3).map(|i| uid(&cluster, &format!("web-{i}"))).collect();
    apply(&cluster, stateful_set("two"));
    let mut order: Vec<usize> = Vec::new();
    eventually("every pod replaced", Duration::from_secs(180), || {
        for i in (0..3).rev() {
            let now = uid(&cluster, &format!("web-{i}"));
            if now != uids[i] && !now.is_empty() && !order.contains(&i) {
                order.push(i);
            }
        }
        (order.len() == 3).then_some(())
    });
    assert_eq!(order, [2, 1, 0], "replaced from the top ordinal down");
    rollout_status(&cluster);
    let sts = cluster
        .client
        .get("/apis/apps/v1/namespaces/default/statefulsets/web")
        .1;
    assert_eq!(
        sts["status"]["currentRevision"], sts["status"]["updateRevision"],
        "{sts}"
    );
    assert_eq!(sts["status"]["updatedReplicas"], 3, "{sts}");
    let (ok, out, err) = cluster.kubectl(&["rollout", "history", "statefulset/web"]);
    assert!(ok && out.contains('1') && out.contains('2'), "{out}{err}");

    // Undo: back to the first template, which becomes revision 3.
    let (ok, out, err) = cluster.kubectl(&["rollout", "undo", "statefulset/web"]);
    assert!(ok, "{out}{err}");
    eventually(
        "the first revision rolled out again",
        Duration::from_secs(180),
        || {
            let sts = cluster
                .client
                .get("/apis/apps/v1/namespaces/default/statefulsets/web")
                .1;
            let status = &sts["status"];
            (status["updateRevision"] == first
                && status["currentRevision"] == first
                && status["readyReplicas"] == 3)
                .then_some(())
        },
    );
    let greeting = cluster.pod("web-0")["spec"]["containers"][0]["env"][0]["value"].clone();
    assert_eq!(greeting, "one");
    let (_, out, _) = cluster.kubectl(&["rollout", "history", "statefulset/web"]);
    assert!(
        out.contains('3') && !out.lines().any(|l| l.trim_start().starts_with("1 ")),
        "{out}"
    );

    // Deleting the set takes its pods and keeps its claims.
    let (ok, _, err) = cluster.kubectl(&["delete", "statefulset", "web", "--wait=true"]);
    assert!(ok, "{err}");
    wait_no_pods(&cluster);
    let (_, claims) = cluster
        .client
        .get("/api/v1/namespaces/default/persistentvolumeclaims");
    assert_eq!(
        claims["items"].as_array().map(Vec::len),
        Some(3),
        "{claims}"
    );
    let (ok, _, err) = cluster.kubectl(&["delete", "pvc", "--all", "--wait=true"]);
    assert!(ok, "{err}");
}

#[test]
fn bad_stateful_sets_get_kubernetes_errors() {
    let cluster = Cluster::start(76, "u");
    let post = |body: Value| {
        cluster
            .client
            .post("/apis/apps/v1/namespaces/default/statefulsets", &body)
    };
    let mut mismatched = stateful_set("x");
    mismatched["spec"]["selector"]["matchLabels"]["app"] = json!("other");
    let (code, body) = post(mismatched);
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("`selector` does not match template `labels`")),
        "{body}"
    );
    let mut twice = stateful_set("x");
    twice["spec"]["template"]["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    let (code, body) = post(twice);
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m
                .contains("spec.volumeClaimTemplates[0].metadata.name: Duplicate value: \"data\"")),
        "{body}"
    );
    // Which Service names the pods is fixed once the set exists.
    let (code, body) = post(stateful_set("x"));
    assert_eq!(code, 201, "{body}");
    let (ok, _, err) = cluster.kubectl(&[
        "patch",
        "statefulset",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"serviceName":"other"}}"#,
    ]);
    assert!(
        !ok && err.contains("updates to statefulset spec for fields other than"),
        "{err}"
    );
    let (ok, _, err) = cluster.kubectl(&["delete", "statefulset", "web", "--wait=true"]);
    assert!(ok, "{err}");
    wait_no_pods(&cluster);
}

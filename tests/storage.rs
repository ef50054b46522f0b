//! PersistentVolumeClaims on a REAL node agent (containerd, runc, CNI) with the built-in
//! `local-path` StorageClass: the seed claim applied verbatim waits for its first pod, is
//! provisioned as a directory on the node the scheduler picked, keeps its data across pods, and
//! goes with its claim (directory and volume). Bad claims get Kubernetes' errors.
mod common;

use std::time::Duration;

use common::eventually;
use common::node::Cluster;
use serde_json::{json, Value};

fn post_pod(cluster: &Cluster, name: &str, command: &str) {
    post_pod_with(cluster, name, "my-app-pvc", command);
}

fn post_pod_with(cluster: &Cluster, name: &str, claim: &str, command: &str) {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
            "containers": [{"name": "main", "image": "skiff.local/web:1.0",
                "command": ["sh", "-c", command],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}});
    // No nodeName: the scheduler places it, and tells the provisioner where.
    let (code, body) = cluster.client.post("/api/v1/namespaces/default/pods", &pod);
    assert_eq!(code, 201, "{body}");
}

fn wait_succeeded(cluster: &Cluster, name: &str) -> Value {
    eventually(
        &format!("pod {name} Succeeded"),
        Duration::from_secs(90),
        || {
            let pod = cluster.pod(name);
            assert_ne!(pod["status"]["phase"], "Failed", "{pod}");
            (pod["status"]["phase"] == "Succeeded").then_some(pod)
        },
    )
}

fn claim(cluster: &Cluster, name: &str) -> Value {
    cluster
        .client
        .get(&format!(
            "/api/v1/namespaces/default/persistentvolumeclaims/{name}"
        ))
        .1
}

fn delete_pod(cluster: &Cluster, name: &str) {
    let (ok, out, err) =
        cluster.kubectl(&["delete", "pod", name, "--grace-period=1", "--wait=true"]);
    assert!(ok, "{out}{err}");
}

#[test]
fn the_seed_claim_is_provisioned_where_its_pod_runs_and_keeps_data_across_pods() {
    let storage = tempfile::tempdir().expect("tempdir");
    let storage_dir = storage.path().to_str().expect("utf-8").to_string();
    let cluster = Cluster::start_with(73, "k", &["--local-path-dir", &storage_dir]);

    // The default StorageClass, as k3s ships it.
    let (ok, out, err) = cluster.kubectl(&["get", "storageclass"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("local-path (default)")
            && out.contains("skiff.dev/local-path")
            && out.contains("WaitForFirstConsumer"),
        "{out}"
    );

    // The seed manifest, verbatim: Pending until a pod uses it.
    let (ok, out, err) = cluster.kubectl(&["apply", "-f", "tests/manifests/seed-003-pvc.yaml"]);
    assert!(ok, "{out}{err}");
    let pending = claim(&cluster, "my-app-pvc");
    assert_eq!(pending["status"]["phase"], "Pending", "{pending}");
    assert_eq!(pending["spec"]["storageClassName"], "local-path");
    assert_eq!(
        pending["metadata"]["finalizers"],
        json!(["kubernetes.io/pvc-protection"])
    );
    let (_, out, _) = cluster.kubectl(&["describe", "pvc", "my-app-pvc"]);
    assert!(
        out.contains("waiting for first consumer to be created before binding"),
        "{out}"
    );

    post_pod(&cluster, "writer", "echo kept-across-pods > /data/hello");
    wait_succeeded(&cluster, "writer");
    let bound = eventually("the claim Bound", Duration::from_secs(30), || {
        let c = claim(&cluster, "my-app-pvc");
        (c["status"]["phase"] == "Bound").then_some(c)
    });
    let node = cluster.node();
    assert_eq!(
        bound["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        node.as_str()
    );
    assert_eq!(bound["status"]["capacity"]["storage"], "1Gi");
    let pv_name = bound["spec"]["volumeName"]
        .as_str()
        .expect("volumeName")
        .to_string();
    let pv = cluster
        .client
        .get(&format!("/api/v1/persistentvolumes/{pv_name}"))
        .1;
    assert_eq!(pv["status"]["phase"], "Bound", "{pv}");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
            ["values"],
        json!([node])
    );
    let path = pv["spec"]["hostPath"]["path"]
        .as_str()
        .expect("path")
        .to_string();
    assert!(path.starts_with(&storage_dir), "{path}");
    assert_eq!(
        std::fs::read_to_string(format!("{path}/hello")).expect("the data is on the node"),
        "kept-across-pods\n"
    );
    let (_, out, _) = cluster.kubectl(&["get", "pv"]);
    assert!(
        out.contains(&pv_name) && out.contains("RWO") && out.contains("default/my-app-pvc"),
        "{out}"
    );
    let (_, out, _) = cluster.kubectl(&["get", "pvc"]);
    assert!(out.contains("Bound") && out.contains("1Gi"), "{out}");

    // The claim is protected while a pod uses it: a delete waits.
    post_pod(&cluster, "holder", "cat /data/hello; sleep 600");
    cluster.wait_running("holder");
    let (ok, _, err) = cluster.kubectl(&["delete", "pvc", "my-app-pvc", "--wait=false"]);
    assert!(ok, "{err}");
    std::thread::sleep(Duration::from_secs(3));
    let held = claim(&cluster, "my-app-pvc");
    assert!(
        held["metadata"]["deletionTimestamp"].is_string(),
        "a claim in use is kept: {held}"
    );
    let (_, logs, _) = cluster.kubectl(&["logs", "holder"]);
    assert_eq!(logs, "kept-across-pods\n", "a new pod sees the data");
    delete_pod(&cluster, "holder");
    delete_pod(&cluster, "writer");

    // A ReadWriteOncePod claim has one user at a time: the second pod waits, and
    // `skiff explain` says why; it starts once the first is gone.
    let (code, body) = cluster.client.post(
        "/api/v1/namespaces/default/persistentvolumeclaims",
        &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "solo"},
            "spec": {"accessModes": ["ReadWriteOncePod"],
                "resources": {"requests": {"storage": "10Mi"}}}}),
    );
    assert_eq!(code, 201, "{body}");
    post_pod_with(&cluster, "solo-1", "solo", "sleep 600");
    cluster.wait_running("solo-1");
    post_pod_with(&cluster, "solo-2", "solo", "echo second; sleep 600");
    let message = eventually("solo-2 unschedulable", Duration::from_secs(30), || {
        let pod = cluster.pod("solo-2");
        pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
            .and_then(|c| c["message"].as_str().map(str::to_string))
    });
    assert!(
        message.contains(
            "node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode"
        ),
        "{message}"
    );
    let explain = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["explain", "pod", "solo-2", "--kubeconfig"])
        .arg(cluster.server.kubeconfig())
        .output()
        .expect("skiff explain");
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(text.contains("ReadWriteOncePod"), "{text}");
    delete_pod(&cluster, "solo-1");
    cluster.wait_running("solo-2");
    delete_pod(&cluster, "solo-2");

    // Once no pod uses it the claim goes; Delete removes the volume and its directory.
    eventually(
        "the claim, volume and directory gone",
        Duration::from_secs(60),
        || {
            let (claim_code, _) = cluster
                .client
                .get("/api/v1/namespaces/default/persistentvolumeclaims/my-app-pvc");
            let (pv_code, _) = cluster
                .client
                .get(&format!("/api/v1/persistentvolumes/{pv_name}"));
            (claim_code == 404 && pv_code == 404 && !std::path::Path::new(&path).exists())
                .then_some(())
        },
    );
}

#[test]
fn volumes_made_by_hand_bind_and_bad_claims_get_kubernetes_errors() {
    let cluster = Cluster::start(74, "q");
    let post = |body: Value| {
        cluster
            .client
            .post("/api/v1/namespaces/default/persistentvolumeclaims", &body)
    };
    let (code, body) = post(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "nomodes"},
        "spec": {"resources": {"requests": {"storage": "1Gi"}}}}));
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.accessModes: Required value")),
        "{body}"
    );
    let (code, body) = post(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "nosize"}, "spec": {"accessModes": ["ReadWriteOnce", "Sometimes"]}}));
    assert_eq!(code, 422, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec.resources[storage]: Required value")
            && message.contains("spec.accessModes: Unsupported value: \"Sometimes\""),
        "{body}"
    );

    // An unknown class: Pending, with an event that names it.
    let (code, body) = post(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "fast"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
            "resources": {"requests": {"storage": "1Gi"}}}}));
    assert_eq!(code, 201, "{body}");
    eventually(
        "the ProvisioningFailed event",
        Duration::from_secs(30),
        || {
            let (_, out, _) = cluster.kubectl(&["describe", "pvc", "fast"]);
            out.contains("storageclass.storage.k8s.io \"fast\" not found")
                .then_some(())
        },
    );
    assert_eq!(claim(&cluster, "fast")["status"]["phase"], "Pending");

    // Volumes made by hand: the smallest that fits is bound, a claim may name its volume, and
    // a released volume with the default Retain policy is kept, Released.
    let host = tempfile::tempdir().expect("tempdir");
    let volume = |name: &str, size: &str| {
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                "storageClassName": "manual",
                "hostPath": {"path": host.path().join(name).to_str().expect("utf-8")}}})
    };
    for (name, size) in [
        ("static-big", "5Gi"),
        ("static-small", "1Gi"),
        ("static-named", "5Gi"),
    ] {
        let (code, body) = cluster
            .client
            .post("/api/v1/persistentvolumes", &volume(name, size));
        assert_eq!(code, 201, "{body}");
        assert_eq!(body["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    }
    let claim_body = |name: &str, volume: Option<&str>| {
        let mut claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
                "resources": {"requests": {"storage": "500Mi"}}}});
        if let Some(volume) = volume {
            claim["spec"]["volumeName"] = json!(volume);
        }
        claim
    };
    assert_eq!(post(claim_body("small", None)).0, 201);
    assert_eq!(post(claim_body("named", Some("static-named"))).0, 201);
    let bound_to = |name: &str| {
        eventually(&format!("{name} Bound"), Duration::from_secs(30), || {
            let c = claim(&cluster, name);
            (c["status"]["phase"] == "Bound").then(|| c["spec"]["volumeName"].clone())
        })
    };
    assert_eq!(
        bound_to("small"),
        "static-small",
        "the smallest volume that fits"
    );
    assert_eq!(bound_to("named"), "static-named");
    let (ok, _, err) = cluster.kubectl(&["delete", "pvc", "small", "--wait=true"]);
    assert!(ok, "{err}");
    eventually("static-small Released", Duration::from_secs(30), || {
        let (_, pv) = cluster.client.get("/api/v1/persistentvolumes/static-small");
        (pv["status"]["phase"] == "Released").then_some(())
    });
    let (_, out, _) = cluster.kubectl(&["get", "pv", "static-small"]);
    assert!(out.contains("Released") && out.contains("Retain"), "{out}");
    let (_, pv) = cluster.client.get("/api/v1/persistentvolumes/static-big");
    assert_eq!(pv["status"]["phase"], "Available", "{pv}");

    // A StorageClass may not change its provisioner.
    let (ok, _, err) = cluster.kubectl(&[
        "patch",
        "storageclass",
        "local-path",
        "--type=merge",
        "-p",
        r#"{"provisioner":"example.com/other"}"#,
    ]);
    assert!(!ok && err.contains("provisioner: Invalid value"), "{err}");
}

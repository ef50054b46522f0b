//! ConfigMap, Secret, downward API and projected volumes on a REAL node agent (containerd,
//! runc, CNI): files as kubelet lays them out, updates swapped in at once while a container
//! reads, subPath mounts that keep what they started with, Secrets only in memory, and a pod
//! that waits for a ConfigMap that does not exist yet.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::eventually;
use common::node::Cluster;
use serde_json::{json, Value};

fn logs(cluster: &Cluster, pod: &str) -> String {
    let (_, out, err) = cluster.kubectl(&["logs", pod]);
    format!("{out}{err}")
}

fn apply(cluster: &Cluster, object: Value) {
    let file = cluster.dir.path().join("object.json");
    std::fs::write(&file, object.to_string()).expect("write");
    let (ok, out, err) = cluster.kubectl(&["apply", "-f", file.to_str().expect("path")]);
    assert!(ok, "{out}{err}");
}

fn volume_dir(cluster: &Cluster, pod: &str, volume: &str) -> PathBuf {
    let uid = cluster.pod(pod)["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    cluster
        .data()
        .join("agent/pods")
        .join(uid)
        .join("volumes")
        .join(volume)
}

fn is_tmpfs(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    let dir = dir.to_string_lossy();
    mounts.lines().any(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        fields.get(1) == Some(&dir.as_ref()) && fields.get(2) == Some(&"tmpfs")
    })
}

/// A container reads its ConfigMap volume in a loop through `..data` while the ConfigMap changes
/// five times: it sees every version and never keys of two versions at once. The subPath mount
/// keeps the first version, the downward API file follows the pod's labels, and the Secret's
/// file has its item's mode on a tmpfs.
#[test]
fn config_map_updates_reach_a_running_pod_whole_and_secrets_stay_in_memory() {
    // The default --sync-frequency (1 min): changes arrive through watches and pod updates.
    let cluster = Cluster::start(71, "v");
    let configmap = |n: u32| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"},
               "data": {"a": n.to_string(), "b": n.to_string(), "c": format!("version {n}")}})
    };
    apply(&cluster, configmap(1));
    apply(
        &cluster,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
               "stringData": {"password": "s3cret", "unused": "x"}}),
    );
    let reader = "last=; lastc=; lastl=; \
        while true; do \
          if cd /cfg/..data 2>/dev/null; then a=$(cat a 2>/dev/null); b=$(cat b 2>/dev/null); cd /; \
            if [ -n \"$a\" ] && [ -n \"$b\" ] && [ \"$a\" != \"$b\" ]; then echo \"MIX $a $b\"; fi; \
            if [ -n \"$a\" ] && [ \"$a\" = \"$b\" ] && [ \"$a\" != \"$last\" ]; then echo \"SAW $a\"; last=$a; fi; \
          fi; \
          c=$(cat /etc/app/c.conf); if [ \"$c\" != \"$lastc\" ]; then echo \"C $c\"; lastc=$c; fi; \
          l=$(cat /info/labels); if [ \"$l\" != \"$lastl\" ]; then echo \"LABELS $l\" | tr '\\n' ' '; echo; lastl=$l; fi; \
        done";
    cluster.create_pod(json!({
        "metadata": {"name": "reader", "labels": {"tier": "one"}},
        "spec": {
            "volumes": [
                {"name": "cfg", "configMap": {"name": "app"}},
                {"name": "creds", "secret": {"secretName": "creds",
                    "items": [{"key": "password", "path": "db/pw", "mode": 0o400}]}},
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
            ],
            "containers": [{
                "name": "c", "image": "skiff.local/web:1.0",
                "command": ["sh", "-c", reader],
                "volumeMounts": [
                    {"name": "cfg", "mountPath": "/cfg"},
                    {"name": "cfg", "mountPath": "/etc/app/c.conf", "subPath": "c"},
                    {"name": "creds", "mountPath": "/creds"},
                    {"name": "info", "mountPath": "/info"},
                ],
            }]
        }
    }));
    cluster.wait_running("reader");
    eventually("the first version is read", Duration::from_secs(30), || {
        logs(&cluster, "reader").contains("SAW 1").then_some(())
    });

    // On the node: the Secret's one item, with its mode, on a tmpfs; the ConfigMap on disk.
    let creds = volume_dir(&cluster, "reader", "creds");
    assert!(is_tmpfs(&creds), "{} is not a tmpfs", creds.display());
    assert!(!is_tmpfs(&volume_dir(&cluster, "reader", "cfg")));
    let pw = creds.join("db/pw");
    assert_eq!(std::fs::read_to_string(&pw).expect("pw"), "s3cret");
    let mode = std::fs::metadata(&pw).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o400);
    assert!(!creds.join("unused").exists());
    assert!(std::fs::symlink_metadata(creds.join("..data"))
        .expect("..data")
        .file_type()
        .is_symlink());

    for n in 2..=5 {
        apply(&cluster, configmap(n));
        eventually(
            &format!("version {n} is read"),
            Duration::from_secs(30),
            || {
                logs(&cluster, "reader")
                    .contains(&format!("SAW {n}"))
                    .then_some(())
            },
        );
    }
    let (ok, _, err) = cluster.kubectl(&["label", "pod", "reader", "tier=two", "--overwrite"]);
    assert!(ok, "{err}");
    eventually("the labels file follows", Duration::from_secs(30), || {
        logs(&cluster, "reader")
            .contains("LABELS tier=\"two\"")
            .then_some(())
    });

    let out = logs(&cluster, "reader");
    assert!(
        !out.contains("MIX"),
        "a reader saw two versions at once:\n{out}"
    );
    // The subPath mount kept the file it started with.
    assert!(out.contains("C version 1"), "{out}");
    assert!(!out.contains("C version 5"), "{out}");
    let saw: Vec<&str> = out.lines().filter(|l| l.starts_with("SAW")).collect();
    assert_eq!(saw, ["SAW 1", "SAW 2", "SAW 3", "SAW 4", "SAW 5"], "{out}");

    // The pod's volumes go with it, the tmpfs unmounted.
    let (ok, _, err) = cluster.kubectl(&["delete", "pod", "reader", "--grace-period=1"]);
    assert!(ok, "{err}");
    eventually(
        "the Secret's tmpfs is gone",
        Duration::from_secs(30),
        || (!is_tmpfs(&creds) && !creds.exists()).then_some(()),
    );
}

/// A pod whose ConfigMap does not exist waits in ContainerCreating with kubelet's FailedMount
/// event, and starts once the ConfigMap is created; an optional one that is missing is an
/// empty directory.
#[test]
fn a_pod_waits_for_its_config_map_and_starts_when_it_appears() {
    let cluster = Cluster::start(72, "m");
    cluster.create_pod(json!({
        "metadata": {"name": "waiter"},
        "spec": {
            "volumes": [
                {"name": "conf", "configMap": {"name": "later"}},
                {"name": "extra", "configMap": {"name": "never", "optional": true}},
            ],
            "containers": [{
                "name": "c", "image": "skiff.local/web:1.0",
                "command": ["sh", "-c", "echo value=$(cat /conf/k); echo extra=$(ls /extra); sleep 3600"],
                "volumeMounts": [{"name": "conf", "mountPath": "/conf"},
                                 {"name": "extra", "mountPath": "/extra"}],
            }]
        }
    }));
    let want = "MountVolume.SetUp failed for volume \"conf\" : configmap \"later\" not found";
    eventually(
        "kubelet's FailedMount event",
        Duration::from_secs(30),
        || {
            let (_, events) = cluster.client.get("/api/v1/namespaces/default/events");
            events["items"]
                .as_array()?
                .iter()
                .any(|e| {
                    e["involvedObject"]["name"] == "waiter"
                        && e["reason"] == "FailedMount"
                        && e["type"] == "Warning"
                        && e["message"] == want
                })
                .then_some(())
        },
    );
    let pod = cluster.pod("waiter");
    assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "ContainerCreating",
        "{pod}"
    );
    assert!(cluster.containers().is_empty());

    apply(
        &cluster,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "later"},
               "data": {"k": "arrived"}}),
    );
    cluster.wait_running("waiter");
    eventually("the container read it", Duration::from_secs(30), || {
        let out = logs(&cluster, "waiter");
        (out.contains("value=arrived") && out.contains("extra=\n")).then_some(())
    });
}

//! ReadWriteOnce across hosts, on `skiff lab`: a volume one pod uses on host-1 is refused to
//! a pod that wants it on host-2, and each says why — the scheduler for a pod it places, the
//! node agent (Kubernetes' `Multi-Attach error`) for a pod bound to host-2 by hand.
mod common;

use std::time::Duration;

use common::eventually;
use common::lab::{Lab, IMAGE};
use serde_json::{json, Value};

fn pod(name: &str, placement: Value) -> Value {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "shared"}}],
            "containers": [{"name": "web", "image": IMAGE, "imagePullPolicy": "Never",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}});
    for (k, v) in placement.as_object().into_iter().flatten() {
        pod["spec"][k] = v.clone();
    }
    pod
}

#[test]
fn a_read_write_once_volume_in_use_on_one_host_is_refused_on_another() {
    let mut lab = Lab::up(2, 1, &[]);
    // The hosts share this machine's filesystem: one directory serves as a disk both could see.
    let volume = tempfile::tempdir().expect("volume dir");
    let dir = volume.path().to_path_buf();
    lab.apply(
        "host-1",
        &json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "shared"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "storageClassName": "", "hostPath": {"path": dir.to_str().expect("utf-8")}}}),
    );
    lab.apply(
        "host-1",
        &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "shared"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": "shared",
                "resources": {"requests": {"storage": "1Gi"}}}}),
    );
    lab.apply("host-1", &pod("first", json!({"nodeName": "host-1"})));
    lab.wait_ready_pod("host-1", "first");

    // The scheduler keeps a pod that wants host-2 off it, and says why.
    let on_host_2 = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
        {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["host-2"]}]}]}}}});
    lab.apply("host-1", &pod("second", on_host_2));
    let message = eventually("second unschedulable", Duration::from_secs(30), || {
        let pod = lab.get("host-1", &["pod", "second"])?;
        pod["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
            .and_then(|c| c["message"].as_str().map(str::to_string))
    });
    assert!(
        message.contains("a ReadWriteOnce claim is in use on another node"),
        "{message}"
    );

    // Bound to host-2 by hand, past the scheduler: host-2's agent refuses to mount it.
    lab.apply("host-1", &pod("third", json!({"nodeName": "host-2"})));
    eventually("the Multi-Attach event", Duration::from_secs(60), || {
        let (_, out, _) = lab.kubectl("host-1", &["describe", "pod", "third"]);
        out.contains(
            "Multi-Attach error for volume \"shared\" Volume is already used by pod(s) first",
        )
        .then_some(())
    });
    let third = lab.get("host-1", &["pod", "third"]).expect("third");
    assert_eq!(third["status"]["phase"], "Pending", "{third}");

    // Once the first pod is gone, the volume is free.
    let (ok, _, err) = lab.kubectl("host-1", &["delete", "pod", "first", "--wait=true"]);
    assert!(ok, "{err}");
    lab.wait_ready_pod("host-1", "third");
    let (ok, _, err) = lab.kubectl(
        "host-1",
        &["delete", "pod", "second", "third", "--wait=true"],
    );
    assert!(ok, "{err}");
    lab.down();
}

//! End-to-end on `skiff lab`: the servers themselves go away and come back. A rolling restart
//! of every server while requests loop through a Service (nothing fails, nothing restarts), and
//! a server whose disk is lost, removed and joined again with every object.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::eventually;
use common::lab::{Lab, IMAGE};
use serde_json::{json, Value};

fn skiff_members(lab: &Lab, via: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["members", "list", "--kubeconfig"])
        .arg(lab.kubeconfig(via))
        .output()
        .expect("skiff members");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn voters(members: &str) -> usize {
    members.lines().filter(|l| l.contains(" voter ")).count()
}

/// Every server ready and all three voting, as `via` sees it.
fn wait_for_three_voters(lab: &Lab, via: &str) {
    eventually("three voters and a leader", Duration::from_secs(60), || {
        let members = skiff_members(lab, via);
        (voters(&members) == 3 && members.lines().any(|l| l.trim_end().ends_with('*')))
            .then_some(())
    });
}

/// Pods of `app`: (name, uid, restart count).
fn pods_of(lab: &Lab, via: &str, app: &str) -> Vec<(String, String, i64)> {
    let list = lab
        .get(via, &["pods", "-l", &format!("app={app}")])
        .unwrap_or_default();
    let mut pods: Vec<(String, String, i64)> = list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|p| {
                    (
                        p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                        p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                        p["status"]["containerStatuses"][0]["restartCount"]
                            .as_i64()
                            .unwrap_or(-1),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    pods.sort();
    pods
}

#[test]
fn a_rolling_restart_of_every_server_fails_no_request_and_restarts_no_container() {
    let mut lab = Lab::up(4, 3, &[]);
    let via = "host-2";
    lab.apply(
        via,
        &json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "web", "image": IMAGE, "imagePullPolicy": "Never",
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": 8080},
                                           "periodSeconds": 1},
                    }]},
                },
            },
        }),
    );
    lab.apply(
        via,
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "selector": {"app": "web"},
                     "ports": [{"port": 80, "targetPort": 8080}]},
        }),
    );
    let (ok, out, err) = lab.kubectl(
        via,
        &["rollout", "status", "deployment/web", "--timeout=120s"],
    );
    assert!(ok, "{out}{err}");
    let before = pods_of(&lab, via, "web");
    assert_eq!(before.len(), 3);
    let service = lab.get(via, &["service", "web"]).expect("the service");
    let node_port = service["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("a node port") as u16;
    // Requests go to host-4 (an agent, never restarted here), whose proxy spreads them over
    // the replicas wherever they run.
    let host_4 = lab.host_ip(via, "host-4");
    eventually("the NodePort on host-4", Duration::from_secs(30), || {
        common::node::http_get(&host_4, node_port).filter(|a| a.contains("200 OK"))
    });

    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let looper = {
        let (stop, answered, failed) = (stop.clone(), answered.clone(), failed.clone());
        let host = host_4.clone();
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match common::node::http_get(&host, node_port) {
                    Some(a) if a.contains("200 OK") => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures.push(other.unwrap_or_default());
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            failures
        })
    };

    // One server at a time: stop it cleanly, start it again, wait until the cluster has three
    // voters again before the next.
    for host in ["host-1", "host-2", "host-3"] {
        lab.fault("bounce", &[host]);
        let other = if host == "host-2" { "host-3" } else { "host-2" };
        wait_for_three_voters(&lab, other);
        eventually(
            &format!("{host} Ready again"),
            Duration::from_secs(60),
            || {
                let node = lab.get(other, &["node", host])?;
                node["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    .then_some(())
            },
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    stop.store(true, Ordering::Relaxed);
    let failures = looper.join().expect("the request loop");
    let (answered, failed) = (
        answered.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    assert!(answered > 50, "only {answered} requests answered");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed: {failures:?}",
        answered + failed
    );

    let after = pods_of(&lab, "host-1", "web");
    assert_eq!(after, before, "the same pods, no container restarted");

    let (ok, out, err) = lab.kubectl("host-1", &["delete", "deployment", "web", "--wait=true"]);
    assert!(ok, "{out}{err}");
    eventually("the pods gone", Duration::from_secs(60), || {
        pods_of(&lab, "host-1", "web").is_empty().then_some(())
    });
    lab.down();
}

#[test]
fn a_server_that_lost_its_disk_is_removed_and_joins_again_with_every_object() {
    let mut lab = Lab::up(3, 3, &[]);
    let via = "host-1";
    for i in 0..20 {
        let (ok, out, err) = lab.kubectl(
            via,
            &[
                "create",
                "configmap",
                &format!("kept-{i}"),
                "--from-literal=a=b",
            ],
        );
        assert!(ok, "{out}{err}");
    }
    let members = skiff_members(&lab, via);
    let old_id = members
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("host-3"))
        .and_then(|l| l.split_whitespace().next())
        .expect("host-3 is a member")
        .to_string();

    // host-3's disk is lost: the cluster removes its member, and it joins again as new.
    lab.fault("wipe", &["host-3"]);
    assert!(
        std::fs::read_dir(lab.dir.join("host-3"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0,
        "the data dir is empty"
    );
    let removed = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["members", "remove", &old_id, "--kubeconfig"])
        .arg(lab.kubeconfig(via))
        .output()
        .expect("skiff members remove");
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    lab.fault("restart", &["host-3"]);
    wait_for_three_voters(&lab, via);
    let members = skiff_members(&lab, via);
    let new_id = members
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("host-3"))
        .and_then(|l| l.split_whitespace().next())
        .expect("host-3 is a member again");
    assert_ne!(new_id, old_id, "a new member id:\n{members}");

    // Every object, read through the new member.
    eventually(
        "host-3 to hold every object",
        Duration::from_secs(30),
        || {
            let list: Value = lab.get("host-3", &["configmaps"])?;
            let names: Vec<&str> = list["items"]
                .as_array()?
                .iter()
                .filter_map(|c| c["metadata"]["name"].as_str())
                .collect();
            (0..20)
                .all(|i| names.contains(&format!("kept-{i}").as_str()))
                .then_some(())
        },
    );
    lab.down();
}

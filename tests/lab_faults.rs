//! Proof under faults, on `skiff lab` (real hosts in network namespaces, each with its own
//! skiff and containerd), with skiff's default timings: heartbeats every 2 s, a node NotReady
//! after 12 s of silence, its pods evicted 8 s later.
//!
//! - A dead node stays NotReady when the leader changes (it used to come back Ready).
//! - A killed host's replicas are replaced on the others, and the Service keeps answering.
//! - A link that loses 30 % of its packets for a minute, or drops for 5 s, evicts nothing and
//!   restarts nothing.
//! - An agent cut off from every server for 60 s keeps its pods running and serving; on heal
//!   nothing restarts, and a pod the control plane evicted meanwhile is stopped.
//!
//! Times are printed (`--nocapture`) but never asserted: the machine is shared. The measured
//! figures are in docs/benchmarks.md ("Node loss").

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::eventually;
use common::lab::{Lab, IMAGE};
use serde_json::{json, Value};

/// The lab image's web server, ready once `/` answers.
fn web_container() -> Value {
    json!({
        "name": "web", "image": IMAGE, "imagePullPolicy": "Never",
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
    })
}

/// A Deployment of `replicas` web pods behind a ClusterIP Service, both named `name`.
fn deploy_web(lab: &Lab, via: &str, name: &str, replicas: u32) {
    lab.apply(
        via,
        &json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"terminationGracePeriodSeconds": 2, "containers": [web_container()]},
                },
            },
        }),
    );
    lab.apply(
        via,
        &json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]},
        }),
    );
}

/// A web pod pinned to `host`, with `tolerations`.
fn pinned_pod(name: &str, host: &str, tolerations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeName": host,
            "terminationGracePeriodSeconds": 2,
            "tolerations": tolerations,
            "containers": [web_container()],
        },
    })
}

/// The pods labelled `app=APP`.
fn pods(lab: &Lab, via: &str, app: &str) -> Vec<Value> {
    lab.get(via, &["pods", "-l", &format!("app={app}")])
        .and_then(|list| list["items"].as_array().cloned())
        .unwrap_or_default()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn node_of(pod: &Value) -> &str {
    pod["spec"]["nodeName"].as_str().unwrap_or("")
}

fn terminating(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_string()
}

/// What must not change when nothing restarts: name → (uid, node, container id, restarts).
fn fingerprint(pods: &[Value]) -> BTreeMap<String, (Value, Value, Value, Value)> {
    pods.iter()
        .map(|p| {
            let status = &p["status"]["containerStatuses"][0];
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                (
                    p["metadata"]["uid"].clone(),
                    p["spec"]["nodeName"].clone(),
                    status["containerID"].clone(),
                    status["restartCount"].clone(),
                ),
            )
        })
        .collect()
}

/// The node's `Ready` status ("True", "Unknown", "False") and its `unreachable:NoExecute`
/// taint's `timeAdded`, through the first of `via` that answers.
fn node_state(lab: &Lab, via: &[&str], node: &str) -> Option<(String, Option<String>)> {
    let node = via.iter().find_map(|v| lab.get(v, &["node", node]))?;
    let ready = node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")?["status"]
        .as_str()?
        .to_string();
    let taint = node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute")
        .and_then(|t| t["timeAdded"].as_str().map(str::to_string));
    Some((ready, taint))
}

/// Whether pod `name` exists (`None` when the API did not answer).
fn pod_exists(lab: &Lab, via: &str, name: &str) -> Option<Value> {
    let (ok, out, err) = lab.kubectl(via, &["get", "pod", name, "-o", "json"]);
    match (ok, err.contains("NotFound")) {
        (true, _) => serde_json::from_str(&out).ok(),
        (false, true) => Some(Value::Null),
        (false, false) => None,
    }
}

/// `curl` on `host`'s network: the body, if the request succeeded.
fn curl_on(lab: &Lab, host: &str, url: &str) -> Option<String> {
    let (ok, out) = lab.on_host(host, &["curl", "-sf", "--max-time", "2", url]);
    ok.then_some(out)
}

/// Bug: a node dead and NotReady showed `Ready=True` (KubeletReady) at the moment leadership
/// moved, lost its taints and had its eviction clock restarted, because the new leader counted
/// every node as just heard from. Now only nodes it finds Ready get that grace.
#[test]
fn a_dead_node_stays_not_ready_when_the_leader_changes() {
    let mut lab = Lab::up(4, 3, &[]);
    let servers = ["host-1", "host-2", "host-3"];
    lab.fault("kill", &["host-4"]);
    let tainted_at = eventually(
        "host-4 NotReady and tainted",
        Duration::from_secs(90),
        || match node_state(&lab, &servers, "host-4")? {
            (ready, Some(at)) if ready == "Unknown" => Some(at),
            _ => None,
        },
    );
    let leader = eventually("a leader", Duration::from_secs(30), || lab.leader());
    lab.fault("kill", &[&leader]);
    let killed = Instant::now();
    let survivors: Vec<&str> = servers.iter().copied().filter(|s| *s != leader).collect();

    // Watch host-4 until the new leader has shown it runs the node lifecycle controller (the
    // old leader's own node goes NotReady, once its takeover grace is over), and a little
    // longer.
    let mut old_leader_lost: Option<Instant> = None;
    while old_leader_lost.is_none_or(|at| at.elapsed() < Duration::from_secs(6)) {
        assert!(
            killed.elapsed() < Duration::from_secs(120),
            "{leader}'s node never went NotReady after it was killed"
        );
        if let Some((ready, taint)) = node_state(&lab, &survivors, "host-4") {
            assert_ne!(
                ready, "True",
                "dead host-4 came back Ready after the leader change"
            );
            assert_eq!(
                taint.as_deref(),
                Some(tainted_at.as_str()),
                "host-4's unreachable taint must stay, with its time (the eviction clock)"
            );
        }
        if old_leader_lost.is_none()
            && node_state(&lab, &survivors, &leader).is_some_and(|(r, _)| r == "Unknown")
        {
            old_leader_lost = Some(Instant::now());
            eprintln!(
                "{leader} NotReady {:.1} s after it was killed",
                killed.elapsed().as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    lab.down();
}

/// SIGKILL of a host running a replica of a Deployment behind a Service: the node goes
/// NotReady, the replica is evicted and replaced on another host, requests through the
/// Service keep being answered. When the host returns, its agent finishes the evicted pod.
#[test]
fn a_killed_hosts_replicas_are_replaced_on_the_others() {
    let mut lab = Lab::up(3, 1, &[]);
    let via = "host-1";
    deploy_web(&lab, via, "web", 3);
    let before = eventually(
        "three ready replicas, one per host",
        Duration::from_secs(120),
        || {
            let pods = pods(&lab, via, "web");
            let hosts: std::collections::BTreeSet<&str> = pods.iter().map(node_of).collect();
            (pods.len() == 3 && pods.iter().all(is_ready) && hosts.len() == 3).then_some(pods)
        },
    );
    let victims: Vec<String> = before
        .iter()
        .filter(|p| node_of(p) == "host-3")
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let service = lab.get(via, &["service", "web"]).expect("the service");
    let url = format!(
        "http://{}/",
        service["spec"]["clusterIP"].as_str().expect("a ClusterIP")
    );
    eventually(
        "the Service answers on host-1",
        Duration::from_secs(30),
        || curl_on(&lab, "host-1", &url),
    );

    // Requests through the Service from host-1, every half second, while host-3 dies.
    let answers: Arc<Mutex<Vec<(f64, bool)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let netns = lab.netns("host-1");
    let killed = Instant::now();
    let client = {
        let (answers, stop, url) = (answers.clone(), stop.clone(), url.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let ok = std::process::Command::new("nsenter")
                    .arg(format!("--net=/run/netns/{netns}"))
                    .args(["curl", "-sf", "--max-time", "2", "-o", "/dev/null", &url])
                    .status()
                    .is_ok_and(|s| s.success());
                if let Ok(mut a) = answers.lock() {
                    a.push((killed.elapsed().as_secs_f64(), ok));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    lab.fault("kill", &["host-3"]);
    eventually("host-3 NotReady", Duration::from_secs(60), || {
        node_state(&lab, &[via], "host-3").filter(|(r, _)| r == "Unknown")
    });
    let not_ready = killed.elapsed();
    let after = eventually(
        "three ready replicas on host-1 and host-2",
        Duration::from_secs(120),
        || {
            let live: Vec<Value> = pods(&lab, via, "web")
                .into_iter()
                .filter(|p| !terminating(p))
                .collect();
            let ok = live.len() == 3
                && live.iter().all(is_ready)
                && live.iter().all(|p| node_of(p) != "host-3");
            ok.then_some(live)
        },
    );
    let recovered = killed.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    client.join().expect("the Service client");
    let answers = answers.lock().expect("answers").clone();
    let failed: Vec<f64> = answers
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(t, _)| *t)
        .collect();
    eprintln!(
        "host-3 killed: NotReady after {:.1} s, all replicas ready again after {:.1} s (on \
         {:?}); {} of {} requests through the Service failed (at {failed:?} s)",
        not_ready.as_secs_f64(),
        recovered.as_secs_f64(),
        after.iter().map(node_of).collect::<Vec<_>>(),
        failed.len(),
        answers.len()
    );
    let last: Vec<bool> = answers.iter().rev().take(8).map(|(_, ok)| *ok).collect();
    assert!(
        last.len() == 8 && last.iter().all(|ok| *ok),
        "requests through the Service must succeed once the replicas are back: {answers:?}"
    );

    // The evicted pod stays Terminating: only its node's agent may confirm it is gone.
    let events = lab
        .get(
            via,
            &["events", "--field-selector", "reason=TaintManagerEviction"],
        )
        .expect("events");
    for victim in &victims {
        let pod = lab.get(via, &["pod", victim]).expect("the evicted pod");
        assert!(terminating(&pod), "{victim} was evicted: {pod}");
        assert!(
            events
                .to_string()
                .contains(&format!("Marking for deletion Pod default/{victim}")),
            "an eviction event for {victim}: {events}"
        );
    }

    // host-3 returns: its agent finishes the evicted pod, and three replicas are left.
    lab.fault("restart", &["host-3"]);
    eventually("the evicted pod gone", Duration::from_secs(90), || {
        let all = pods(&lab, via, "web");
        (all.len() == 3
            && all
                .iter()
                .all(|p| !terminating(p) && node_of(p) != "host-3"))
        .then_some(())
    });
    let (ok, out, err) = lab.kubectl(via, &["delete", "deployment", "web", "--wait=true"]);
    assert!(ok, "{out}{err}");
    lab.down();
}

/// A link that loses 30 % of its packets for a minute, then drops for 5 s (less than the 12 s
/// a node may be silent): heartbeats get through (or are retried in time), so no pod is
/// replaced and no container restarted.
#[test]
fn a_flapping_link_evicts_nothing() {
    let mut lab = Lab::up(2, 1, &[]);
    let via = "host-1";
    deploy_web(&lab, via, "steady", 2);
    let before = eventually(
        "two ready replicas, one per host",
        Duration::from_secs(120),
        || {
            let pods = pods(&lab, via, "steady");
            let on_2 = pods.iter().any(|p| node_of(p) == "host-2");
            (pods.len() == 2 && pods.iter().all(is_ready) && on_2).then_some(pods)
        },
    );
    let watch = |lab: &Lab, seconds: u64, what: &str| -> Vec<String> {
        let until = Instant::now() + Duration::from_secs(seconds);
        let mut seen = Vec::new();
        while Instant::now() < until {
            if let Some((ready, _)) = node_state(lab, &[via], "host-2") {
                if seen.last() != Some(&ready) {
                    seen.push(ready);
                }
            }
            let now = pods(lab, via, "steady");
            assert!(
                now.iter().all(|p| !terminating(p)) && fingerprint(&now) == fingerprint(&before),
                "{what}: a pod was replaced or restarted: {now:#?}"
            );
            std::thread::sleep(Duration::from_secs(2));
        }
        seen
    };

    lab.fault("netem", &["host-2", "--loss", "30%"]);
    let during_loss = watch(&lab, 60, "30 % loss");
    lab.fault("heal", &[]);
    eprintln!("host-2's Ready during 60 s of 30 % loss: {during_loss:?}");

    lab.fault("partition", &["host-2"]);
    std::thread::sleep(Duration::from_secs(5));
    lab.fault("heal", &[]);
    let around_partition = watch(&lab, 16, "a 5 s partition");
    assert_eq!(
        around_partition,
        ["True"],
        "5 s without a link is less than the 12 s a node may be silent"
    );
    let after = pods(&lab, via, "steady");
    assert!(after.iter().all(is_ready), "{after:#?}");
    let (ok, out, err) = lab.kubectl(via, &["delete", "deployment", "steady", "--wait=true"]);
    assert!(ok, "{out}{err}");
    lab.down();
}

/// Static stability: an agent cut off from every server for 60 s keeps its pods running and
/// serving. A pod that tolerates `unreachable` for an hour is untouched after heal (same uid,
/// same container, no restart) and its status catches up; a pod with the default toleration
/// is evicted by the control plane meanwhile, keeps serving on the cut-off host (its agent
/// cannot know), and is stopped once the host is back — as kubelet does.
#[test]
fn an_agent_cut_off_keeps_its_pods_running() {
    let mut lab = Lab::up(2, 1, &[]);
    let via = "host-1";
    let patient = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
        "effect": "NoExecute", "tolerationSeconds": 3600}]);
    lab.apply(via, &pinned_pod("patient", "host-2", patient));
    lab.apply(via, &pinned_pod("evictable", "host-2", json!([])));
    let patient_before = lab.wait_ready_pod(via, "patient");
    let evictable = lab.wait_ready_pod(via, "evictable");
    let ip = |pod: &Value| {
        pod["status"]["podIP"]
            .as_str()
            .expect("a pod IP")
            .to_string()
    };
    let (patient_url, evictable_url) = (
        format!("http://{}:8080/", ip(&patient_before)),
        format!("http://{}:8080/", ip(&evictable)),
    );
    for url in [&patient_url, &evictable_url] {
        eventually("the pod answers on host-2", Duration::from_secs(30), || {
            curl_on(&lab, "host-2", url)
        });
    }

    lab.fault("partition", &["host-2"]);
    let cut = Instant::now();
    let mut evicted_at = None;
    while cut.elapsed() < Duration::from_secs(60) {
        for (name, url) in [("patient", &patient_url), ("evictable", &evictable_url)] {
            let answer = curl_on(&lab, "host-2", url);
            assert_eq!(
                answer.as_deref(),
                Some("lab\n"),
                "{name} must keep serving on host-2 while it is cut off ({:.0} s)",
                cut.elapsed().as_secs_f64()
            );
        }
        if evicted_at.is_none()
            && pod_exists(&lab, via, "evictable").is_some_and(|p| p.is_null() || terminating(&p))
        {
            evicted_at = Some(cut.elapsed());
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    let (ready, _) = node_state(&lab, &[via], "host-2").expect("host-2");
    assert_eq!(
        ready, "Unknown",
        "60 s cut off: the control plane lost host-2"
    );
    let evicted_at = evicted_at.expect("the pod without a toleration was evicted");
    let patient_cut = lab.get(via, &["pod", "patient"]).expect("patient");
    assert!(!terminating(&patient_cut), "a tolerated pod is not evicted");
    lab.fault("heal", &[]);
    let healed = Instant::now();

    // Status catches up: Ready, untainted, and the patient pod is as it was.
    eventually(
        "host-2 Ready and untainted",
        Duration::from_secs(60),
        || {
            let node = lab.get(via, &["node", "host-2"])?;
            let ready = node_state(&lab, &[via], "host-2")?.0 == "True";
            let tainted = node["spec"]["taints"].as_array().is_some_and(|t| {
                t.iter()
                    .any(|t| t["key"] == "node.kubernetes.io/unreachable")
            });
            (ready && !tainted).then_some(())
        },
    );
    let back = healed.elapsed();
    let gone = eventually(
        "the evicted pod stopped and gone",
        Duration::from_secs(60),
        || {
            pod_exists(&lab, via, "evictable")
                .filter(Value::is_null)
                .map(|_| healed.elapsed())
        },
    );
    assert!(
        curl_on(&lab, "host-2", &evictable_url).is_none(),
        "the evicted pod's container is stopped"
    );
    let patient_after = lab.wait_ready_pod(via, "patient");
    assert_eq!(
        fingerprint(&[patient_after]),
        fingerprint(&[patient_before]),
        "nothing restarted"
    );
    assert_eq!(
        curl_on(&lab, "host-2", &patient_url).as_deref(),
        Some("lab\n")
    );
    eprintln!(
        "cut off 60 s: evictable evicted after {:.0} s; after heal, host-2 Ready in {:.1} s, \
         the evicted pod gone in {:.1} s",
        evicted_at.as_secs_f64(),
        back.as_secs_f64(),
        gone.as_secs_f64()
    );
    let (ok, out, err) = lab.kubectl(via, &["delete", "pod", "patient", "--wait=true"]);
    assert!(ok, "{out}{err}");
    lab.down();
}

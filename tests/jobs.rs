//! Jobs on a REAL node agent (containerd, runc, CNI): an Indexed Job of five completions run
//! two at a time, each pod with its index; `kubectl wait`, `kubectl logs job/NAME`,
//! `kubectl create job`; a Job that fails past its backoffLimit; bad Jobs get Kubernetes' 422.
mod common;

use std::time::{Duration, Instant};

use common::eventually;
use common::node::Cluster;
use serde_json::{json, Value};

fn post_job(cluster: &Cluster, job: &Value) -> (u16, Value) {
    cluster
        .client
        .post("/apis/batch/v1/namespaces/default/jobs", job)
}

fn get_job(cluster: &Cluster, name: &str) -> Value {
    cluster
        .client
        .get(&format!("/apis/batch/v1/namespaces/default/jobs/{name}"))
        .1
}

#[test]
fn an_indexed_job_runs_five_completions_two_at_a_time() {
    let cluster = Cluster::start(77, "j");
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "work"},
        "spec": {"completions": 5, "parallelism": 2, "completionMode": "Indexed",
            "template": {"spec": {"restartPolicy": "Never", "containers": [{
                "name": "main", "image": "skiff.local/web:1.0",
                "command": ["sh", "-c", "echo index=$JOB_COMPLETION_INDEX host=$(hostname); sleep 2"]}]}}}});
    let (code, body) = post_job(&cluster, &job);
    assert_eq!(code, 201, "{body}");
    // The server chose the selector, from the Job's uid.
    let uid = body["metadata"]["uid"].as_str().expect("uid").to_string();
    assert_eq!(
        body["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid.as_str()
    );

    // Never more than two pods at once until all five indexes are done.
    let started = Instant::now();
    let mut most = 0;
    loop {
        let (_, pods) = cluster.client.get("/api/v1/namespaces/default/pods");
        let running = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["metadata"]["deletionTimestamp"].is_null()
                    && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
            })
            .count();
        most = most.max(running);
        let status = &get_job(&cluster, "work")["status"];
        if status["succeeded"] == 5 {
            assert_eq!(status["completedIndexes"], "0-4", "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the job did not complete: {status}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(most <= 2, "{most} pods ran at once");
    let (ok, out, err) = cluster.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/work",
        "--timeout=60s",
    ]);
    assert!(ok, "{out}{err}");
    let (_, out, _) = cluster.kubectl(&["get", "job", "work"]);
    assert!(out.contains("Complete") && out.contains("5/5"), "{out}");
    let (ok, out, err) = cluster.kubectl(&["logs", "job/work"]);
    assert!(ok && out.starts_with("index="), "{out}{err}");
    // Each index ran once, with its hostname.
    let (_, pods) = cluster
        .client
        .get("/api/v1/namespaces/default/pods?labelSelector=batch.kubernetes.io/job-name%3Dwork");
    let mut seen: Vec<String> = Vec::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        let name = pod["metadata"]["name"].as_str().unwrap_or("");
        let (_, log, _) = cluster.kubectl(&["logs", name]);
        seen.push(log.trim().to_string());
    }
    seen.sort();
    assert_eq!(
        seen,
        (0..5)
            .map(|i| format!("index={i} host=work-{i}"))
            .collect::<Vec<_>>()
    );

    // A Job that fails more often than its backoffLimit is Failed, with Kubernetes' reason.
    let failing = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "doomed"},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": "skiff.local/web:1.0", "command": ["sh", "-c", "exit 3"]}]}}}});
    assert_eq!(post_job(&cluster, &failing).0, 201);
    let (ok, out, err) = cluster.kubectl(&[
        "wait",
        "--for=condition=failed",
        "job/doomed",
        "--timeout=90s",
    ]);
    assert!(ok, "{out}{err}");
    let condition = get_job(&cluster, "doomed")["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Failed")
        .cloned()
        .expect("Failed");
    assert_eq!(condition["reason"], "BackoffLimitExceeded");

    // kubectl's generator (a protobuf body).
    let (ok, out, err) = cluster.kubectl(&[
        "create",
        "job",
        "quick",
        "--image=skiff.local/web:1.0",
        "--",
        "sh",
        "-c",
        "echo quick",
    ]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = cluster.kubectl(&[
        "wait",
        "--for=condition=complete",
        "job/quick",
        "--timeout=90s",
    ]);
    assert!(ok, "{out}{err}");

    for name in ["work", "doomed", "quick"] {
        let (ok, _, err) = cluster.kubectl(&["delete", "job", name, "--wait=true"]);
        assert!(ok, "{err}");
    }
    eventually("the jobs' pods gone", Duration::from_secs(60), || {
        let (_, pods) = cluster.client.get("/api/v1/namespaces/default/pods");
        pods["items"]
            .as_array()
            .is_some_and(|p| p.is_empty())
            .then_some(())
    });
}

#[test]
fn bad_jobs_get_kubernetes_errors() {
    let cluster = Cluster::start(78, "o");
    let job = |spec: Value| json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "bad"}, "spec": spec});
    let container = json!([{"name": "main", "image": "skiff.local/web:1.0"}]);
    let (code, body) = post_job(
        &cluster,
        &job(json!({"template": {"spec": {"containers": container}}})),
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains(
            "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        )),
        "{body}"
    );
    let (code, body) = post_job(
        &cluster,
        &job(json!({"completionMode": "Indexed", "parallelism": 2,
            "template": {"spec": {"restartPolicy": "Never", "containers": container}}})),
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.completions: Required value")),
        "{body}"
    );
}

//! CronJobs on a REAL node agent (containerd, runc, CNI): a CronJob that fires every minute
//! with `concurrencyPolicy: Forbid` runs its first Job at the first minute and skips the next
//! slot while that Job still runs; `kubectl create job --from=cronjob/NAME`; a schedule that
//! does not parse is 422 naming the field.
mod common;

use std::time::Duration;

use common::eventually;
use common::node::Cluster;
use serde_json::{json, Value};

fn jobs(cluster: &Cluster) -> Vec<Value> {
    let (_, list) = cluster.client.get("/apis/batch/v1/namespaces/default/jobs");
    list["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_cron_job_fires_every_minute_and_forbid_skips_a_slot_while_one_runs() {
    let cluster = Cluster::start(79, "r");
    let bad = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "bad"},
        "spec": {"schedule": "61 * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "skiff.local/web:1.0"}]}}}}}});
    let (code, body) = cluster
        .client
        .post("/apis/batch/v1/namespaces/default/cronjobs", &bad);
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.schedule: Invalid value: \"61 * * * *\"")),
        "{body}"
    );

    let tick = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick"},
        "spec": {"schedule": "* * * * *", "concurrencyPolicy": "Forbid",
            "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": "skiff.local/web:1.0",
                    "command": ["sh", "-c", "echo tick; sleep 100"]}]}}}}}});
    let (code, body) = cluster
        .client
        .post("/apis/batch/v1/namespaces/default/cronjobs", &tick);
    assert_eq!(code, 201, "{body}");
    // The first minute: one Job, named for its slot, controlled by the CronJob.
    let first = eventually("the first Job", Duration::from_secs(75), || {
        jobs(&cluster).into_iter().next()
    });
    let name = first["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let minutes: i64 = name
        .strip_prefix("tick-")
        .and_then(|m| m.parse().ok())
        .expect("tick-<minutes since the epoch>");
    assert_eq!(first["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    // The next minute comes while it runs: Forbid skips that slot, with an event.
    eventually("the skipped slot's event", Duration::from_secs(75), || {
        let (_, out, _) = cluster.kubectl(&["describe", "cronjob", "tick"]);
        out.contains(
            "Not starting job because prior execution is running and concurrency policy is Forbid",
        )
        .then_some(())
    });
    let now_jobs = jobs(&cluster);
    assert_eq!(now_jobs.len(), 1, "{now_jobs:?}");
    let (_, out, _) = cluster.kubectl(&["get", "cronjob", "tick"]);
    assert!(out.contains("* * * * *") && out.contains("False"), "{out}");
    let cj = cluster
        .client
        .get("/apis/batch/v1/namespaces/default/cronjobs/tick")
        .1;
    assert_eq!(cj["status"]["active"][0]["name"], name.as_str(), "{cj}");
    let last: jiff::Timestamp = cj["status"]["lastScheduleTime"]
        .as_str()
        .expect("lastScheduleTime")
        .parse()
        .expect("time");
    assert_eq!(
        last.as_second() / 60,
        minutes + 1,
        "the skipped slot is recorded"
    );

    // By hand, from its template.
    let (ok, out, err) = cluster.kubectl(&["create", "job", "by-hand", "--from=cronjob/tick"]);
    assert!(ok, "{out}{err}");
    let by_hand = cluster
        .client
        .get("/apis/batch/v1/namespaces/default/jobs/by-hand")
        .1;
    assert_eq!(
        by_hand["spec"]["template"]["spec"]["containers"][0]["command"][2],
        "echo tick; sleep 100"
    );

    // Deleting the CronJob takes its Jobs and their pods.
    let (ok, _, err) = cluster.kubectl(&["delete", "cronjob", "tick", "--wait=true"]);
    assert!(ok, "{err}");
    let (ok, _, err) = cluster.kubectl(&["delete", "job", "--all", "--wait=true"]);
    assert!(ok, "{err}");
    eventually("the pods gone", Duration::from_secs(90), || {
        let (_, pods) = cluster.client.get("/api/v1/namespaces/default/pods");
        pods["items"]
            .as_array()
            .is_some_and(|p| p.is_empty())
            .then_some(())
    });
}

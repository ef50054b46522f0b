//! The Job controller: run pods until enough of them succeed, or give up.
//!
//! One pass, as a script (Kubernetes' `JobController`, in the small):
//! 1. A finished Job (`Complete` or `Failed`) only waits for `ttlSecondsAfterFinished`, then
//!    is deleted with its pods.
//! 2. **Count** the Job's pods: active, succeeded (for `Indexed`, the distinct indexes that
//!    succeeded), failed. Counts never go down: a pod that is gone keeps its count in the
//!    status. A failed pod is judged by `podFailurePolicy` on its exit codes first
//!    (`FailJob` fails the Job, `Ignore` does not count it, `Count` does).
//! 3. **Suspended**: no pods run (active ones are deleted), `Suspended=True`.
//! 4. **Give up** when `activeDeadlineSeconds` have passed since the start
//!    (`DeadlineExceeded`) or more pods failed than `backoffLimit` (`BackoffLimitExceeded`): the
//!    conditions `FailureTarget` and `Failed`, active pods deleted.
//! 5. **Done** when `completions` pods (or indexes) succeeded, or for a work queue (no
//!    `completions`) when one succeeded and none runs: `SuccessCriteriaMet` and `Complete`.
//! 6. **Otherwise run** up to `parallelism` pods: `NonIndexed` ones until the remaining
//!    completions are covered, `Indexed` ones for the lowest indexes not yet succeeded or
//!    running (with `JOB_COMPLETION_INDEX` and hostname `<job>-<index>`). After a failure, the
//!    next pod waits 10 s, doubling per failure up to 6 min.
use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use skiff_client::informer::{key_of, Store};

use crate::child_names::NameGenerator;
use crate::controller::{Context, Controller};
use crate::expectations::{self, Expected};
use crate::workqueue::WorkQueue;
use crate::{owners, pods, reference_to, wait_for, Action, Object, Propagation};

/// The annotation (and label) with an Indexed Job pod's index.
pub const INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The first wait after a failure; it doubles with each failure up to [`MAX_BACKOFF`].
const BACKOFF: SignedDuration = SignedDuration::from_secs(10);
const MAX_BACKOFF: SignedDuration = SignedDuration::from_secs(360);

/// Plans one pass for `job` (pure). `pods` are its namespace's; `names` supplies the random
/// part of new pod names.
pub fn reconcile(
    job: &Job,
    pods: &[Pod],
    now: Timestamp,
    names: &mut NameGenerator,
) -> Vec<Action> {
    let mut plan = Vec::new();
    let spec = job.spec.clone().unwrap_or_default();
    let status = job.status.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let here = reference_to(job);
    let owned: Vec<&Pod> = pods
        .iter()
        .filter(|p| owners::controller_of(&p.metadata).is_some_and(|o| o.uid == uid))
        .collect();
    let running = |p: &&Pod| pods::is_active(p);
    let active: Vec<&Pod> = owned.iter().copied().filter(running).collect();

    // 1. Finished: only the TTL is left.
    if let Some(finished_at) = finished_at(&status) {
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            let expires = finished_at + SignedDuration::from_secs(ttl.into());
            if now >= expires {
                plan.push(Action::delete(here, Some(Propagation::Background)));
            } else {
                plan.push(Action::RequeueAfter {
                    after: wait_for(now.duration_until(expires).as_secs_f64()),
                    why: format!("ttlSecondsAfterFinished ({ttl}s)"),
                });
            }
        }
        for pod in active {
            plan.push(Action::delete(reference_to(pod), None));
        }
        return plan;
    }
    if job.metadata.deletion_timestamp.is_some() {
        return plan;
    }

    // 2. Count.
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let mut failed_now = 0;
    let mut fail_job: Option<String> = None;
    let mut last_failure: Option<Timestamp> = None;
    for pod in owned.iter().filter(|p| pods::phase(p) == "Failed") {
        match failure_policy_verdict(&spec, pod) {
            Verdict::FailJob(message) => {
                fail_job.get_or_insert(message);
            }
            Verdict::Ignore => continue,
            Verdict::Count => {}
        }
        failed_now += 1;
        last_failure = last_failure.max(finished_time(pod));
    }
    // `OnFailure`: the pod stays and its containers restart; each restart is a failure.
    let restarts: i32 = owned.iter().map(|p| pods::max_restarts(p)).sum();
    let failed = status.failed.unwrap_or(0).max(failed_now + restarts);
    let succeeded_indexes: BTreeSet<i32> = owned
        .iter()
        .filter(|p| pods::phase(p) == "Succeeded")
        .filter_map(|p| index_of(p))
        .chain(parse_indexes(
            status.completed_indexes.as_deref().unwrap_or(""),
        ))
        .collect();
    let succeeded_pods = owned
        .iter()
        .filter(|p| pods::phase(p) == "Succeeded")
        .count() as i32;
    let succeeded = if indexed {
        succeeded_indexes.len() as i32
    } else {
        status.succeeded.unwrap_or(0).max(succeeded_pods)
    };
    let start = status.start_time.as_ref().map_or(now, |t| t.0);

    let mut wanted = JobStatus {
        active: Some(active.len() as i32),
        ready: Some(active.iter().filter(|p| pods::is_ready(p)).count() as i32),
        succeeded: Some(succeeded),
        failed: Some(failed),
        start_time: status.start_time.clone(),
        completion_time: status.completion_time.clone(),
        conditions: status.conditions.clone(),
        completed_indexes: indexed.then(|| format_indexes(&succeeded_indexes)),
        ..JobStatus::default()
    };

    // 3. Suspended.
    if spec.suspend == Some(true) {
        for pod in &active {
            plan.push(Action::delete(reference_to(*pod), None));
        }
        set_condition(
            &mut wanted,
            "Suspended",
            "JobSuspended",
            "Job suspended",
            now,
        );
        wanted.active = Some(0);
        write_status(job, wanted, &mut plan);
        return plan;
    }
    if wanted.start_time.is_none() {
        wanted.start_time = Some(Time(now));
    }
    remove_condition(&mut wanted, "Suspended");

    // 4. Give up.
    let deadline = spec
        .active_deadline_seconds
        .map(|d| start + SignedDuration::from_secs(d));
    let failure = if let Some(message) = fail_job {
        Some(("PodFailurePolicy", message))
    } else if deadline.is_some_and(|d| now >= d) {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline".to_string(),
        ))
    } else if failed > spec.backoff_limit.unwrap_or(6) {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".to_string(),
        ))
    } else {
        None
    };
    if let Some((reason, message)) = failure {
        for pod in &active {
            plan.push(Action::delete(reference_to(*pod), None));
        }
        set_condition(&mut wanted, "FailureTarget", reason, &message, now);
        set_condition(&mut wanted, "Failed", reason, &message, now);
        wanted.active = Some(0);
        plan.push(Action::warning_event(here, reason, message));
        write_status(job, wanted, &mut plan);
        return plan;
    }

    // 5. Done?
    let complete = match spec.completions {
        Some(c) => succeeded >= c,
        None => succeeded >= 1 && active.is_empty(),
    };
    if complete {
        for pod in &active {
            plan.push(Action::delete(reference_to(*pod), None));
        }
        let message = "Reached expected number of succeeded pods";
        set_condition(
            &mut wanted,
            "SuccessCriteriaMet",
            "CompletionsReached",
            message,
            now,
        );
        set_condition(&mut wanted, "Complete", "CompletionsReached", message, now);
        wanted.completion_time = Some(Time(now));
        wanted.active = Some(0);
        plan.push(Action::normal_event(
            here,
            "Completed",
            "Job completed".to_string(),
        ));
        write_status(job, wanted, &mut plan);
        return plan;
    }

    // 6. Run: after a failure, wait out the back-off first.
    let parallelism = spec.parallelism.unwrap_or(1).max(0) as usize;
    let backoff = if failed > 0 {
        let doubled = BACKOFF.as_secs() << (failed - 1).clamp(0, 10);
        SignedDuration::from_secs(doubled.min(MAX_BACKOFF.as_secs()))
    } else {
        SignedDuration::ZERO
    };
    let ready_after = last_failure.map(|t| t + backoff);
    let waiting = ready_after.filter(|t| *t > now);
    let to_create: Vec<Option<i32>> = if indexed {
        let running: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
        (0..spec.completions.unwrap_or(0))
            .filter(|i| !succeeded_indexes.contains(i) && !running.contains(i))
            .take(parallelism.saturating_sub(active.len()))
            .map(Some)
            .collect()
    } else {
        let remaining = match spec.completions {
            Some(c) => (c - succeeded).max(0) as usize,
            None if succeeded > 0 => 0,
            None => parallelism,
        };
        let wanted_active = parallelism.min(remaining);
        vec![None; wanted_active.saturating_sub(active.len())]
    };
    match waiting {
        Some(at) if !to_create.is_empty() => plan.push(Action::RequeueAfter {
            after: wait_for(now.duration_until(at).as_secs_f64()),
            why: format!("back-off after {failed} failed pod(s)"),
        }),
        _ => {
            for index in to_create {
                let pod = pod_for(job, index, names);
                plan.push(Action::normal_event(
                    here.clone(),
                    "SuccessfulCreate",
                    format!(
                        "Created pod: {}",
                        pod.metadata.name.clone().unwrap_or_default()
                    ),
                ));
                plan.push(Action::Create(Object::Pod(Box::new(pod))));
            }
        }
    }
    if let Some(deadline) = deadline {
        plan.push(Action::RequeueAfter {
            after: wait_for(now.duration_until(deadline).as_secs_f64()),
            why: "activeDeadlineSeconds".into(),
        });
    }
    write_status(job, wanted, &mut plan);
    plan
}

/// What `podFailurePolicy` makes of a failed pod.
enum Verdict {
    FailJob(String),
    Ignore,
    Count,
}

fn failure_policy_verdict(spec: &k8s_openapi::api::batch::v1::JobSpec, pod: &Pod) -> Verdict {
    let Some(policy) = &spec.pod_failure_policy else {
        return Verdict::Count;
    };
    let exits: Vec<(String, i32)> = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| {
            let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
            (code != 0).then(|| (c.name.clone(), code))
        })
        .collect();
    for (i, rule) in policy.rules.iter().enumerate() {
        let Some(codes) = &rule.on_exit_codes else {
            continue;
        };
        let hit = exits.iter().find(|(container, code)| {
            codes.container_name.as_ref().is_none_or(|n| n == container)
                && match codes.operator.as_str() {
                    "In" => codes.values.contains(code),
                    _ => !codes.values.contains(code),
                }
        });
        if let Some((container, code)) = hit {
            return match rule.action.as_str() {
                "FailJob" | "FailIndex" => Verdict::FailJob(format!(
                    "Container {container} for pod {}/{} failed with exit code {code} matching FailJob rule at index {i}",
                    pod.metadata.namespace.as_deref().unwrap_or(""),
                    pod.metadata.name.as_deref().unwrap_or("")
                )),
                "Ignore" => Verdict::Ignore,
                _ => Verdict::Count,
            };
        }
    }
    Verdict::Count
}

/// A pod for the Job: its template, labels and annotations, controlled by it; for `Indexed`
/// Jobs, its index as an annotation, a label, `JOB_COMPLETION_INDEX` and the hostname.
fn pod_for(job: &Job, index: Option<i32>, names: &mut NameGenerator) -> Pod {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let template = job.spec.clone().unwrap_or_default().template;
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            labels.insert(INDEX.into(), i.to_string());
            annotations.insert(INDEX.into(), i.to_string());
            if spec.hostname.is_none() {
                spec.hostname = Some(format!("{job_name}-{i}"));
            }
            let env = EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".into()),
                        field_path: format!("metadata.annotations['{INDEX}']"),
                    }),
                    ..EnvVarSource::default()
                }),
            };
            for container in spec
                .init_containers
                .iter_mut()
                .flatten()
                .chain(spec.containers.iter_mut())
            {
                container.env.get_or_insert_with(Vec::new).push(env.clone());
            }
            format!("{job_name}-{i}-")
        }
        None => format!("{job_name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(names.name(&generate_name)),
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![owners::controller_ref(job)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.metadata.annotations.as_ref()?.get(INDEX)?.parse().ok()
}

/// When the pod's last container stopped.
fn finished_time(pod: &Pod) -> Option<Timestamp> {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
}

/// `0-2,4` from {0, 1, 2, 4}, as Kubernetes writes `completedIndexes`.
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut ranges: Vec<(i32, i32)> = Vec::new();
    for &i in indexes {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == i => *end = i,
            _ => ranges.push((i, i)),
        }
    }
    ranges
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_indexes(text: &str) -> Vec<i32> {
    text.split(',')
        .filter(|part| !part.is_empty())
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (a.parse().unwrap_or(0), b.parse().unwrap_or(-1));
                (a..=b).collect::<Vec<i32>>()
            }
            None => part.parse().into_iter().collect(),
        })
        .collect()
}

/// When the Job finished, if it has.
fn finished_at(status: &JobStatus) -> Option<Timestamp> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map(|t| t.0)
                .or(status.completion_time.as_ref().map(|t| t.0))
                .unwrap_or(Timestamp::UNIX_EPOCH)
        })
}

fn set_condition(status: &mut JobStatus, kind: &str, reason: &str, message: &str, now: Timestamp) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if conditions
        .iter()
        .any(|c| c.type_ == kind && c.status == "True" && c.reason.as_deref() == Some(reason))
    {
        return;
    }
    conditions.retain(|c| c.type_ != kind);
    conditions.push(JobCondition {
        type_: kind.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

fn remove_condition(status: &mut JobStatus, kind: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != kind);
    }
}

fn write_status(job: &Job, wanted: JobStatus, plan: &mut Vec<Action>) {
    if job.status.as_ref() != Some(&wanted) {
        let mut updated = job.clone();
        updated.status = Some(wanted);
        plan.push(Action::UpdateStatus(Object::Job(Box::new(updated))));
    }
}

/// The controller: one key per Job, woken by it and by its pods.
pub struct JobController {
    jobs: Store<Job>,
    pods: Store<Pod>,
    names: NameGenerator,
}

impl Controller for JobController {
    const NAME: &'static str = "job-controller";

    fn new(ctx: &Context, queue: &WorkQueue) -> Self {
        let jobs = ctx.informers.store::<Job>();
        let pods = ctx.informers.store::<Pod>();
        let q = queue.clone();
        jobs.on_change(move |job: &Job| q.add(&key_of(&job.metadata)));
        let q = queue.clone();
        pods.on_change(move |pod: &Pod| {
            if let Some(key) = owners::controller_key(&pod.metadata, "Job") {
                q.add(&key);
            }
        });
        JobController {
            jobs,
            pods,
            names: NameGenerator::from_seed(Timestamp::now().as_nanosecond() as u64),
        }
    }

    fn reconcile(&mut self, key: &str, now: Timestamp) -> Vec<Action> {
        let Some(job) = self.jobs.get(key) else {
            return Vec::new();
        };
        let ns = job.metadata.namespace.as_deref().unwrap_or("");
        reconcile(&job, &self.pods.in_namespace(ns), now, &mut self.names)
    }

    fn expectations(&self, plan: &[Action]) -> Vec<Expected> {
        Expected::of_plan(plan, expectations::pod_churn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{merge, words};
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-12-04T12:00:00Z".parse().expect("time")
    }

    fn job(extra: serde_json::Value) -> Job {
        let mut value = json!({"metadata": {"name": "work", "namespace": "ns", "uid": "j1"},
            "spec": {"parallelism": 2, "completions": 5, "backoffLimit": 2,
                "completionMode": "Indexed",
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "j1"}},
                "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "j1"}},
                    "spec": {"restartPolicy": "Never",
                        "containers": [{"name": "main", "image": "busybox"}]}}}});
        merge(&mut value, extra);
        serde_json::from_value(value).expect("job")
    }

    fn pod_of(job: &Job, index: i32, phase: &str, exit: i32) -> Pod {
        let mut pod = pod_for(
            job,
            Some(index),
            &mut NameGenerator::from_seed(index as u64),
        );
        pod.metadata.uid = Some(format!("p{index}"));
        pod.status = serde_json::from_value(json!({"phase": phase, "containerStatuses": [
            {"name": "main", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": exit, "finishedAt": "2026-12-04T11:59:55Z"}}}]}))
        .expect("status");
        pod
    }

    fn plan(job: &Job, pods: &[Pod]) -> Vec<String> {
        let actions = reconcile(job, pods, now(), &mut NameGenerator::from_seed(7));
        let kept: Vec<Action> = actions
            .into_iter()
            .filter(|a| !matches!(a, Action::Event(_) | Action::UpdateStatus(_)))
            .collect();
        words(&kept)
    }

    fn status(job: &Job, pods: &[Pod]) -> JobStatus {
        reconcile(job, pods, now(), &mut NameGenerator::from_seed(7))
            .into_iter()
            .find_map(|a| match a {
                Action::UpdateStatus(Object::Job(j)) => j.status,
                _ => None,
            })
            .unwrap_or_default()
    }

    #[test]
    fn indexed_jobs_run_the_lowest_missing_indexes_within_parallelism() {
        let j = job(json!({}));
        let created = plan(&j, &[]);
        assert_eq!(created.len(), 2, "{created:?}");
        assert!(
            created[0].starts_with("create Pod ns/work-0-"),
            "{created:?}"
        );
        assert!(
            created[1].starts_with("create Pod ns/work-1-"),
            "{created:?}"
        );
        // 0 and 1 done, 2 running: 3 comes next; completedIndexes says what is done.
        let mut running = pod_of(&j, 2, "Running", 0);
        running.status.as_mut().expect("status").container_statuses = None;
        let pods = [
            pod_of(&j, 0, "Succeeded", 0),
            pod_of(&j, 1, "Succeeded", 0),
            running,
        ];
        let next = plan(&j, &pods);
        assert_eq!(next.len(), 1);
        assert!(next[0].starts_with("create Pod ns/work-3-"), "{next:?}");
        assert_eq!(status(&j, &pods).completed_indexes.as_deref(), Some("0-1"));
        let pod = pod_for(&j, Some(3), &mut NameGenerator::from_seed(1));
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.hostname.as_deref(), Some("work-3"));
        assert_eq!(
            spec.containers[0].env.as_ref().expect("env")[0].name,
            "JOB_COMPLETION_INDEX"
        );
        // All five: Complete.
        let done: Vec<Pod> = (0..5).map(|i| pod_of(&j, i, "Succeeded", 0)).collect();
        let s = status(&j, &done);
        assert_eq!(s.completed_indexes.as_deref(), Some("0-4"));
        let kinds: Vec<&str> = s
            .conditions
            .iter()
            .flatten()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(kinds, ["SuccessCriteriaMet", "Complete"]);
    }

    #[test]
    fn failures_back_off_then_exhaust_the_limit_or_match_the_failure_policy() {
        let j = job(
            json!({"spec": {"completionMode": "NonIndexed", "completions": 1, "parallelism": 1}}),
        );
        // One failure 5 s ago: wait (10 s back-off) before the next pod.
        let failed = [pod_of(&j, 0, "Failed", 1)];
        let out = plan(&j, &failed);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            out[0].starts_with("check again in 5.0s: back-off"),
            "{out:?}"
        );
        // Three failures with backoffLimit 2: Failed, BackoffLimitExceeded.
        let three: Vec<Pod> = (0..3).map(|i| pod_of(&j, i, "Failed", 1)).collect();
        let s = status(&j, &three);
        let failed_condition = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Failed")
            .expect("Failed");
        assert_eq!(
            failed_condition.reason.as_deref(),
            Some("BackoffLimitExceeded")
        );
        // Exit code 42 with a FailJob rule fails the Job at once.
        let strict = job(
            json!({"spec": {"completionMode": "NonIndexed", "completions": 1, "parallelism": 1,
            "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]}}}),
        );
        let s = status(&strict, &[pod_of(&strict, 0, "Failed", 42)]);
        let c = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Failed")
            .expect("Failed");
        assert_eq!(c.reason.as_deref(), Some("PodFailurePolicy"));
        assert!(c
            .message
            .as_deref()
            .is_some_and(|m| m.contains("exit code 42 matching FailJob rule at index 0")));
        assert_eq!(
            format_indexes(&BTreeSet::from([0, 1, 2, 4, 6, 7])),
            "0-2,4,6-7"
        );
        assert_eq!(parse_indexes("0-2,4"), [0, 1, 2, 4]);
    }
}

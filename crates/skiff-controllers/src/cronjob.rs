//! The CronJob controller: a Job at each time the schedule names.
//!
//! One pass, as a script (Kubernetes' `CronJobControllerV2`, in the small):
//! 1. **Its Jobs**: those it controls; the unfinished ones are `status.active`.
//! 2. **The slot**: the latest time the schedule fired after the last one run (or the
//!    CronJob's creation) and not after now, in `timeZone` (UTC when unset). The Job of a slot
//!    is named `<cronjob>-<minutes since the epoch>`, so a slot is run once whoever leads: a
//!    new leader that finds the slot's Job already there does not make another.
//! 3. **Run it**, unless suspended, past `startingDeadlineSeconds` (`MissSchedule`), or held
//!    by `concurrencyPolicy`: `Forbid` skips the slot while a Job runs, `Replace` deletes the
//!    running ones first, `Allow` runs them side by side.
//! 4. **History**: finished Jobs beyond `successfulJobsHistoryLimit` and
//!    `failedJobsHistoryLimit` are deleted, oldest first.
//! 5. **Status** (active, lastScheduleTime, lastSuccessfulTime), and a pass again at the next
//!    slot (no watch event marks it).
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use skiff_api::schedule::{self, Schedule};
use skiff_client::informer::{key_of, Store};

use crate::controller::{Context, Controller};
use crate::workqueue::WorkQueue;
use crate::{owners, reference_to, wait_for, Action, Object, Propagation};

/// The annotation with the slot a Job was made for.
pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Slots looked back at most (Kubernetes gives up past 100 missed ones too).
const MAX_MISSED: usize = 100;

/// Plans one pass for `cj` (pure). `jobs` are its namespace's.
pub fn reconcile(cj: &CronJob, jobs: &[Job], now: Timestamp) -> Vec<Action> {
    let mut plan = Vec::new();
    if cj.metadata.deletion_timestamp.is_some() {
        return plan;
    }
    let spec = cj.spec.clone().unwrap_or_default();
    let status = cj.status.clone().unwrap_or_default();
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let here = reference_to(cj);
    let name = cj.metadata.name.clone().unwrap_or_default();

    // 1. Its Jobs.
    let mut owned: Vec<&Job> = jobs
        .iter()
        .filter(|j| owners::controller_of(&j.metadata).is_some_and(|o| o.uid == uid))
        .collect();
    owned.sort_by_key(|j| j.metadata.creation_timestamp.clone().map(|t| t.0));
    let mut active: Vec<&Job> = owned
        .iter()
        .copied()
        .filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
        .collect();
    let mut wanted = CronJobStatus {
        active: None,
        last_schedule_time: status.last_schedule_time.clone(),
        last_successful_time: owned
            .iter()
            .filter(|j| finished(j) == Some("Complete"))
            .filter_map(|j| j.status.as_ref()?.completion_time.clone())
            .max_by_key(|t| t.0)
            .or(status.last_successful_time.clone()),
    };

    // 2. The slot.
    let (parsed, zone) = match (
        Schedule::parse(&spec.schedule),
        schedule::zone(spec.time_zone.as_deref()),
    ) {
        (Ok(parsed), Ok(zone)) => (parsed, zone),
        (Err(e), _) | (_, Err(e)) => {
            plan.push(Action::warning_event(here, "InvalidSchedule", e));
            return plan;
        }
    };
    let earliest = status
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .or(cj.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let mut slot = None;
    let mut cursor = earliest;
    let mut missed = 0;
    while let Some(next) = parsed.next_after(cursor, &zone).filter(|t| *t <= now) {
        slot = Some(next);
        cursor = next;
        missed += 1;
        if missed > MAX_MISSED {
            plan.push(Action::warning_event(
                here.clone(),
                "TooManyMissedTimes",
                "too many missed start times; check clock skew".into(),
            ));
            // Only the latest slot matters: jump to it.
            let mut latest = next;
            while let Some(n) = parsed.next_after(latest, &zone).filter(|t| *t <= now) {
                latest = n;
            }
            slot = Some(latest);
            break;
        }
    }

    // 3. Run it.
    if let Some(at) = slot {
        let job_name = format!("{name}-{}", at.as_second() / 60);
        let already = owned
            .iter()
            .any(|j| j.metadata.name.as_deref() == Some(&job_name));
        let too_late = spec
            .starting_deadline_seconds
            .is_some_and(|d| now.duration_since(at) > SignedDuration::from_secs(d));
        if already {
            // A slot run before (perhaps by another leader whose status write was lost).
            wanted.last_schedule_time = Some(Time(at));
        } else if spec.suspend == Some(true) {
            // Suspended: the slot passes unrun, and runs if resumed in time.
        } else if too_late {
            plan.push(Action::warning_event(
                here.clone(),
                "MissSchedule",
                format!("Missed scheduled time to start a job: {at}"),
            ));
            wanted.last_schedule_time = Some(Time(at));
        } else {
            match spec.concurrency_policy.as_deref() {
                Some("Forbid") if !active.is_empty() => {
                    plan.push(Action::normal_event(
                        here.clone(),
                        "JobAlreadyActive",
                        "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
                    ));
                    wanted.last_schedule_time = Some(Time(at));
                }
                policy => {
                    if policy == Some("Replace") {
                        for job in active.drain(..) {
                            plan.push(Action::delete(
                                reference_to(job),
                                Some(Propagation::Background),
                            ));
                            plan.push(Action::normal_event(
                                here.clone(),
                                "SuccessfulDelete",
                                format!(
                                    "Deleted job {}",
                                    job.metadata.name.as_deref().unwrap_or("")
                                ),
                            ));
                        }
                    }
                    let job = job_for(cj, &job_name, at);
                    plan.push(Action::Create(Object::Job(Box::new(job))));
                    plan.push(Action::normal_event(
                        here.clone(),
                        "SuccessfulCreate",
                        format!("Created job {job_name}"),
                    ));
                    wanted.last_schedule_time = Some(Time(at));
                }
            }
        }
    }

    // 4. History.
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let done: Vec<&&Job> = owned
            .iter()
            .filter(|j| finished(j) == Some(kind) && j.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = done.len().saturating_sub(limit.max(0) as usize);
        for job in done.into_iter().take(excess) {
            plan.push(Action::delete(
                reference_to(*job),
                Some(Propagation::Background),
            ));
        }
    }

    // 5. Status, and the next slot.
    let references: Vec<_> = active.iter().map(|j| reference_to(*j)).collect();
    wanted.active = (!references.is_empty()).then_some(references);
    let normalised = |s: &CronJobStatus| {
        let mut s = s.clone();
        if s.active.as_ref().is_some_and(Vec::is_empty) {
            s.active = None;
        }
        s
    };
    if normalised(&status) != wanted {
        let mut updated = cj.clone();
        updated.status = Some(wanted);
        plan.push(Action::UpdateStatus(Object::CronJob(Box::new(updated))));
    }
    if let Some(next) = parsed.next_after(now, &zone) {
        plan.push(Action::RequeueAfter {
            after: wait_for(now.duration_until(next).as_secs_f64().max(0.0) + 0.1),
            why: format!("the next scheduled time, {next}"),
        });
    }
    plan
}

/// The Job of slot `at`: the template's metadata and spec, the slot as an annotation,
/// controlled by the CronJob.
pub fn job_for(cj: &CronJob, name: &str, at: Timestamp) -> Job {
    let template = cj.spec.clone().unwrap_or_default().job_template;
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_AT.into(), at.to_string());
    Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cj.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owners::controller_ref(cj)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// `Complete` or `Failed` once the Job has finished.
fn finished(job: &Job) -> Option<&'static str> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    ["Complete", "Failed"].into_iter().find(|kind| {
        conditions
            .iter()
            .any(|c| c.type_ == *kind && c.status == "True")
    })
}

/// The controller: one key per CronJob, woken by it and its Jobs, and at each next slot.
pub struct CronJobController {
    cron_jobs: Store<CronJob>,
    jobs: Store<Job>,
}

impl Controller for CronJobController {
    const NAME: &'static str = "cronjob-controller";

    fn new(ctx: &Context, queue: &WorkQueue) -> Self {
        let cron_jobs = ctx.informers.store::<CronJob>();
        let jobs = ctx.informers.store::<Job>();
        let q = queue.clone();
        cron_jobs.on_change(move |cj: &CronJob| q.add(&key_of(&cj.metadata)));
        let q = queue.clone();
        jobs.on_change(move |job: &Job| {
            if let Some(key) = owners::controller_key(&job.metadata, "CronJob") {
                q.add(&key);
            }
        });
        CronJobController { cron_jobs, jobs }
    }

    fn reconcile(&mut self, key: &str, now: Timestamp) -> Vec<Action> {
        let Some(cj) = self.cron_jobs.get(key) else {
            return Vec::new();
        };
        let ns = cj.metadata.namespace.as_deref().unwrap_or("");
        reconcile(&cj, &self.jobs.in_namespace(ns), now)
    }

    fn expectations(&self, plan: &[crate::Action]) -> Vec<crate::expectations::Expected> {
        crate::expectations::Expected::of_plan(plan, |a| {
            matches!(a, Action::Create(Object::Job(_)) | Action::Delete { .. })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{merge, words};
    use serde_json::json;

    fn cj(extra: serde_json::Value) -> CronJob {
        let mut value = json!({"metadata": {"name": "tick", "namespace": "ns", "uid": "c1",
                "creationTimestamp": "2026-12-04T11:59:30Z"},
            "spec": {"schedule": "* * * * *", "concurrencyPolicy": "Forbid",
                "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox"}]}}}}}});
        merge(&mut value, extra);
        serde_json::from_value(value).expect("cronjob")
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("time")
    }

    fn plan(cj: &CronJob, jobs: &[Job], now: &str) -> Vec<String> {
        let writes: Vec<Action> = reconcile(cj, jobs, at(now))
            .into_iter()
            .filter(|a| {
                !matches!(
                    a,
                    Action::Event(_) | Action::UpdateStatus(_) | Action::RequeueAfter { .. }
                )
            })
            .collect();
        words(&writes)
    }

    fn running(cj: &CronJob, slot: &str) -> Job {
        let when = at(slot);
        job_for(cj, &format!("tick-{}", when.as_second() / 60), when)
    }

    #[test]
    fn a_slot_runs_once_and_forbid_skips_while_one_runs() {
        let c = cj(json!({}));
        // Before the first minute: nothing. At 12:00:05, the 12:00 slot.
        assert!(plan(&c, &[], "2026-12-04T11:59:50Z").is_empty());
        let slot = at("2026-12-04T12:00:00Z").as_second() / 60;
        assert_eq!(
            plan(&c, &[], "2026-12-04T12:00:05Z"),
            [format!("create Job ns/tick-{slot}")]
        );
        // Its Job exists (a new leader whose status write was lost): not again.
        let first = running(&c, "2026-12-04T12:00:00Z");
        assert!(plan(&c, std::slice::from_ref(&first), "2026-12-04T12:00:05Z").is_empty());
        // The 12:01 slot while the first still runs: Forbid skips it.
        let mut ran = c.clone();
        ran.status = Some(CronJobStatus {
            last_schedule_time: Some(Time(at("2026-12-04T12:00:00Z"))),
            ..Default::default()
        });
        assert!(plan(&ran, std::slice::from_ref(&first), "2026-12-04T12:01:05Z").is_empty());
        // Replace deletes it and runs the new one.
        let mut replace = ran.clone();
        replace.spec.as_mut().expect("spec").concurrency_policy = Some("Replace".into());
        let out = plan(&replace, &[first], "2026-12-04T12:01:05Z");
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].starts_with("delete Job ns/tick-"), "{out:?}");
        // A missed slot past startingDeadlineSeconds is not run.
        let strict = cj(json!({"spec": {"startingDeadlineSeconds": 10}}));
        assert!(plan(&strict, &[], "2026-12-04T12:00:30Z").is_empty());
    }
}

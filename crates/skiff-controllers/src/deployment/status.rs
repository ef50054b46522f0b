//! A Deployment's status: the counts and conditions `kubectl rollout status` reads.
//!
//! kubectl waits until `observedGeneration >= generation` (the controller saw the latest
//! spec), then reports, in order: a `Progressing` condition with reason
//! `ProgressDeadlineExceeded` (fail); `updatedReplicas < spec.replicas` ("N out of M new
//! replicas have been updated"); `replicas > updatedReplicas` ("N old replicas are pending
//! termination"); `availableReplicas < updatedReplicas` ("N of M updated replicas are
//! available"); otherwise "successfully rolled out". So:
//! - `replicas`, `readyReplicas`, `availableReplicas` sum the ReplicaSets' *status* (pods that
//!   exist), and `updatedReplicas` is the new ReplicaSet's `status.replicas`;
//! - `unavailableReplicas` is desired pods (`spec.replicas` of all ReplicaSets) minus available.
//!
//! Conditions:
//! - `Available`: at least `replicas − maxUnavailable` pods available
//!   (`MinimumReplicasAvailable` / `MinimumReplicasUnavailable`).
//! - `Progressing` (only with `progressDeadlineSeconds`): `NewReplicaSetCreated`,
//!   `FoundNewReplicaSet`, `ReplicaSetUpdated` (each time progress is seen; its
//!   `lastUpdateTime` restarts the deadline), `NewReplicaSetAvailable` (done),
//!   `ProgressDeadlineExceeded` (no progress for the deadline), and `DeploymentPaused` /
//!   `DeploymentResumed` (status `Unknown`, so a long pause does not count as no progress).
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::rollout;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";

pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

/// What happened in this pass that the status should record.
pub struct Observed<'a> {
    /// All ReplicaSets the Deployment owns (the new one included, if it exists yet).
    pub all: &'a [&'a ReplicaSet],
    pub new: Option<&'a ReplicaSet>,
    /// The name of a new ReplicaSet this pass creates.
    pub created: Option<&'a str>,
    /// Whether to judge rollout progress (not while paused or being deleted).
    pub judge_progress: bool,
}

/// `progressDeadlineSeconds`, unless unset or "never" (Kubernetes uses `MaxInt32` for that).
pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

/// The status the Deployment should have now.
pub fn compute(d: &Deployment, seen: &Observed, now: Timestamp) -> DeploymentStatus {
    let old_status = d.status.clone().unwrap_or_default();
    let mut conditions = old_status.conditions.clone().unwrap_or_default();
    let deadline = progress_deadline(d);
    let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
    let new_name = seen
        .new
        .and_then(|rs| rs.metadata.name.as_deref())
        .or(seen.created);

    // Pausing and resuming are recorded so that time spent paused is not "no progress".
    if deadline.is_some() {
        let reason = reason_of(&conditions, PROGRESSING);
        if reason.as_deref() != Some(TIMED_OUT) {
            let paused_recorded = reason.as_deref() == Some(PAUSED);
            if paused && !paused_recorded {
                set(
                    &mut conditions,
                    condition(
                        PROGRESSING,
                        "Unknown",
                        PAUSED,
                        "Deployment is paused".into(),
                        now,
                    ),
                );
            } else if !paused && paused_recorded {
                set(
                    &mut conditions,
                    condition(
                        PROGRESSING,
                        "Unknown",
                        RESUMED,
                        "Deployment is resumed".into(),
                        now,
                    ),
                );
            }
        }
        if let Some(created) = seen.created {
            let message = format!("Created new replica set \"{created}\"");
            set(
                &mut conditions,
                condition(PROGRESSING, "True", NEW_RS_CREATED, message, now),
            );
        } else if let (Some(name), None) = (new_name, find(&conditions, PROGRESSING)) {
            let message = format!("Found new replica set \"{name}\"");
            set(
                &mut conditions,
                condition(PROGRESSING, "True", FOUND_NEW_RS, message, now),
            );
        }
    }

    let sum = |f: fn(&ReplicaSet) -> i32| seen.all.iter().map(|rs| f(rs)).sum::<i32>();
    let available = sum(|rs| {
        rs.status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0)
    });
    let desired = sum(|rs| rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(sum(status_replicas)),
        updated_replicas: Some(seen.new.map(status_replicas).unwrap_or(0)),
        ready_replicas: Some(sum(|rs| {
            rs.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
        })),
        available_replicas: Some(available),
        unavailable_replicas: Some((desired - available).max(0)),
        collision_count: old_status.collision_count,
        terminating_replicas: old_status.terminating_replicas,
        conditions: None,
    };

    let min_available = rollout::replicas(d) - rollout::fenceposts(d).max_unavailable;
    if available >= min_available {
        let message = "Deployment has minimum availability.".to_string();
        set(
            &mut conditions,
            condition(AVAILABLE, "True", MIN_AVAILABLE, message, now),
        );
    } else {
        let message = "Deployment does not have minimum availability.".to_string();
        set(
            &mut conditions,
            condition(AVAILABLE, "False", MIN_UNAVAILABLE, message, now),
        );
    }

    if seen.judge_progress {
        judge_progress(d, &old_status, &mut status, &mut conditions, new_name, now);
    }
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    normalised(status)
}

/// Kubernetes' `syncRolloutStatus`: complete, progressing, or out of time.
fn judge_progress(
    d: &Deployment,
    old: &DeploymentStatus,
    status: &mut DeploymentStatus,
    conditions: &mut Vec<DeploymentCondition>,
    new_name: Option<&str>,
    now: Timestamp,
) {
    let Some(deadline) = progress_deadline(d) else {
        conditions.retain(|c| c.type_ != PROGRESSING);
        return;
    };
    let current = find(conditions, PROGRESSING).cloned();
    let already_complete = status.replicas == status.updated_replicas
        && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE);
    if already_complete {
        return;
    }
    let subject = match new_name {
        Some(name) => format!("ReplicaSet \"{name}\""),
        None => format!(
            "Deployment \"{}\"",
            d.metadata.name.as_deref().unwrap_or("")
        ),
    };
    if is_complete(d, status) {
        let message = format!("{subject} has successfully progressed.");
        set(
            conditions,
            condition(PROGRESSING, "True", NEW_RS_AVAILABLE, message, now),
        );
    } else if made_progress(old, status) {
        // Unlike other conditions, this one is rewritten with a fresh lastUpdateTime every
        // time progress is seen: that timestamp is what the deadline counts from.
        let mut fresh = condition(
            PROGRESSING,
            "True",
            RS_UPDATED,
            format!("{subject} is progressing."),
            now,
        );
        if let Some(current) = current.filter(|c| c.status == "True") {
            fresh.last_transition_time = current.last_transition_time;
        }
        conditions.retain(|c| c.type_ != PROGRESSING);
        conditions.push(fresh);
    } else if timed_out(conditions, deadline, now) {
        let message = format!("{subject} has timed out progressing.");
        set(
            conditions,
            condition(PROGRESSING, "False", TIMED_OUT, message, now),
        );
    }
}

/// `DeploymentComplete`: every desired replica is updated and available, nothing old is left,
/// and the controller has seen the latest spec.
pub fn is_complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let r = rollout::replicas(d);
    status.updated_replicas.unwrap_or(0) == r
        && status.replicas.unwrap_or(0) == r
        && status.available_replicas.unwrap_or(0) == r
        && status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// `DeploymentProgressing`: more updated, ready or available pods, or fewer old ones.
fn made_progress(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let n = |v: Option<i32>| v.unwrap_or(0);
    let old_old = n(old.replicas) - n(old.updated_replicas);
    let new_old = n(new.replicas) - n(new.updated_replicas);
    n(new.updated_replicas) > n(old.updated_replicas)
        || new_old < old_old
        || n(new.ready_replicas) > n(old.ready_replicas)
        || n(new.available_replicas) > n(old.available_replicas)
}

/// `DeploymentTimedOut`: the Progressing condition was last updated more than the deadline ago.
fn timed_out(conditions: &[DeploymentCondition], deadline: i32, now: Timestamp) -> bool {
    let Some(c) = find(conditions, PROGRESSING) else {
        return false;
    };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => c
            .last_update_time
            .as_ref()
            .is_some_and(|t| crate::seconds_between(t.0, now) > f64::from(deadline)),
    }
}

/// When to look again to judge the progress deadline (`requeueStuckDeployment`): the
/// condition's lastUpdateTime + deadline, plus a second against clock skew. `None` when the
/// rollout is complete, already timed out, or has no deadline.
pub fn deadline_check(
    d: &Deployment,
    status: &DeploymentStatus,
    now: Timestamp,
) -> Option<Duration> {
    let deadline = progress_deadline(d)?;
    let c = find(
        status.conditions.as_deref().unwrap_or_default(),
        PROGRESSING,
    )?;
    if is_complete(d, status)
        || matches!(
            c.reason.as_deref(),
            Some(TIMED_OUT | PAUSED | NEW_RS_AVAILABLE)
        )
    {
        return None;
    }
    let since = c.last_update_time.as_ref()?.0;
    let left = f64::from(deadline) - crate::seconds_between(since, now);
    Some(if left < 1.0 {
        Duration::ZERO
    } else {
        crate::wait_for(left + 1.0)
    })
}

/// Zero counts are omitted on the wire, as Kubernetes' `omitempty` does, so a stored status
/// and a computed one compare equal.
pub fn normalised(mut status: DeploymentStatus) -> DeploymentStatus {
    for field in [
        &mut status.replicas,
        &mut status.updated_replicas,
        &mut status.ready_replicas,
        &mut status.available_replicas,
        &mut status.unavailable_replicas,
    ] {
        if *field == Some(0) {
            *field = None;
        }
    }
    status
}

fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

fn find<'c>(conditions: &'c [DeploymentCondition], type_: &str) -> Option<&'c DeploymentCondition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn reason_of(conditions: &[DeploymentCondition], type_: &str) -> Option<String> {
    find(conditions, type_).and_then(|c| c.reason.clone())
}

/// `SetDeploymentCondition`: no change if status and reason are the same (so timestamps stay
/// put); keep lastTransitionTime if only the reason changes.
fn set(conditions: &mut Vec<DeploymentCondition>, mut new: DeploymentCondition) {
    if let Some(current) = find(conditions, &new.type_) {
        if current.status == new.status && current.reason == new.reason {
            return;
        }
        if current.status == new.status {
            new.last_transition_time = current.last_transition_time.clone();
        }
    }
    conditions.retain(|c| c.type_ != new.type_);
    conditions.push(new);
}

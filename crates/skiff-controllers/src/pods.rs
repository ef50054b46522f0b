//! What a pod's status means to a controller: active, ready, available.
//!
//! - **Active**: it counts towards a ReplicaSet's replicas. A pod that finished (`Succeeded`,
//!   `Failed`) or is being deleted will not serve again, so the ReplicaSet replaces it.
//! - **Ready**: its `Ready` condition is `True` (all containers pass their readiness probes).
//! - **Available**: ready for at least `minReadySeconds` without interruption. Rollouts count
//!   available pods, so a pod that crashes right after its first probe does not let the
//!   Deployment scale down the old version.
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

/// The pod's phase (`Pending` when the status says nothing yet).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Neither finished nor being deleted (`controller.IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

/// Whether the `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// When the pod last became ready (the `Ready` condition's lastTransitionTime), if it is ready.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    ready_condition(pod)
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// Ready for more than `min_ready_seconds` (`podutil.IsPodAvailable`). With 0 every ready pod
/// is available at once.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    ready_since(pod)
        .is_some_and(|since| crate::seconds_between(since, now) > f64::from(min_ready_seconds))
}

/// How long until a ready-but-not-yet-available pod becomes available; `None` if it is not
/// ready or already available.
pub fn seconds_until_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<f64> {
    if min_ready_seconds <= 0 || is_available(pod, min_ready_seconds, now) {
        return None;
    }
    let since = ready_since(pod)?;
    Some(f64::from(min_ready_seconds) - crate::seconds_between(since, now))
}

/// The highest restart count among the pod's containers (a crash-looping pod has many).
pub fn max_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// A pass again when the first of `pods` that is Ready but not yet available becomes so
/// (no watch event marks the moment `minReadySeconds` have passed).
pub fn recheck_when_available<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<crate::Action> {
    let seconds = pods
        .into_iter()
        .filter_map(|p| seconds_until_available(p, min_ready_seconds, now))
        .min_by(f64::total_cmp)?;
    Some(crate::Action::RequeueAfter {
        after: crate::wait_for(seconds),
        why: format!("a pod becomes available after minReadySeconds ({min_ready_seconds}s)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(phase: &str, ready_at: Option<&str>) -> Pod {
        let conditions = match ready_at {
            Some(t) => json!([{"type": "Ready", "status": "True", "lastTransitionTime": t}]),
            None => json!([{"type": "Ready", "status": "False"}]),
        };
        serde_json::from_value(json!({"status": {"phase": phase, "conditions": conditions}}))
            .expect("pod")
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let now: Timestamp = "2024-01-01T00:00:10Z".parse().expect("time");
        let ready = pod("Running", Some("2024-01-01T00:00:05Z"));
        assert!(is_available(&ready, 0, now));
        assert!(is_available(&ready, 4, now));
        assert!(
            !is_available(&ready, 5, now),
            "strictly more than minReadySeconds"
        );
        assert_eq!(seconds_until_available(&ready, 8, now), Some(3.0));
        assert!(!is_available(&pod("Running", None), 0, now));
    }

    #[test]
    fn finished_and_deleting_pods_are_not_active() {
        assert!(is_active(&pod("Running", None)));
        assert!(is_active(&Pod::default()));
        assert!(!is_active(&pod("Succeeded", None)));
        assert!(!is_active(&pod("Failed", None)));
        let mut deleting = pod("Running", None);
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH),
        );
        assert!(!is_active(&deleting));
    }
}

//! The arithmetic of a rolling update, on plain numbers so each rule can be tested alone.
//!
//! Two bounds hold throughout a RollingUpdate of a Deployment with `replicas` R:
//! - at most R + maxSurge pods exist (counting `spec.replicas` of all its ReplicaSets);
//! - at least R − maxUnavailable pods are available (counting `status.availableReplicas`).
//!
//! Each pass makes one move: scale the new ReplicaSet up as far as the surge allows
//! ([`new_replicas`]); if that is not possible, scale old ReplicaSets down as far as
//! availability allows ([`scale_down_old`]). The ReplicaSet controller then creates or deletes
//! pods, they become available, and the next pass moves again.
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// maxSurge and maxUnavailable of a Deployment, resolved to pod counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fenceposts {
    pub max_surge: i32,
    pub max_unavailable: i32,
}

/// Whether the Deployment rolls (the default) rather than recreates.
pub fn is_rolling(d: &Deployment) -> bool {
    let strategy = d.spec.as_ref().and_then(|s| s.strategy.as_ref());
    strategy
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// `spec.replicas` (1 when unset, as the API server defaults it).
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0)
}

/// Kubernetes' `ResolveFenceposts`, then `MaxSurge`/`MaxUnavailable`: zero for Recreate;
/// maxUnavailable is zero for zero replicas and never more than the replicas.
///
/// Percentages are of `replicas`: maxSurge rounds **up** (more room to start new pods),
/// maxUnavailable rounds **down** (never less availability than asked). With 10 replicas and
/// 25%/25%: surge = ceil(2.5) = 3, unavailable = floor(2.5) = 2. With 3 replicas and 25%/25%:
/// surge = ceil(0.75) = 1, unavailable = floor(0.75) = 0. If both come out 0 (e.g. 1 replica,
/// 0 surge, 25% unavailable), unavailable becomes 1 so the rollout can move at all.
pub fn fenceposts(d: &Deployment) -> Fenceposts {
    if !is_rolling(d) {
        return Fenceposts {
            max_surge: 0,
            max_unavailable: 0,
        };
    }
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let default = IntOrString::String("25%".into());
    let surge = rolling
        .and_then(|r| r.max_surge.as_ref())
        .unwrap_or(&default);
    let unavailable = rolling
        .and_then(|r| r.max_unavailable.as_ref())
        .unwrap_or(&default);
    let r = replicas(d);
    let max_surge = scaled(surge, r, true);
    let mut max_unavailable = scaled(unavailable, r, false);
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    if r == 0 {
        max_unavailable = 0;
    }
    Fenceposts {
        max_surge,
        max_unavailable: max_unavailable.min(r),
    }
}

/// An int, or a percentage of `total` rounded up or down. Validation rejects anything else;
/// if it slipped through it counts as 0.
fn scaled(value: &IntOrString, total: i32, round_up: bool) -> i32 {
    match value {
        IntOrString::Int(n) => (*n).max(0),
        IntOrString::String(s) => {
            let Some(percent) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return 0;
            };
            let product = percent.max(0) * i64::from(total);
            let n = if round_up {
                (product + 99) / 100
            } else {
                product / 100
            };
            i32::try_from(n).unwrap_or(i32::MAX)
        }
    }
}

/// How many replicas the new ReplicaSet may have now (`NewRSNewReplicas`, rolling).
/// `all_spec` sums `spec.replicas` over all ReplicaSets, the new one included.
///
/// Example: R = 10, maxSurge 3, old at 10, new at 0: room = 13 − 10 = 3 → new goes to 3.
pub fn new_replicas(replicas: i32, max_surge: i32, all_spec: i32, new_spec: i32) -> i32 {
    let max_total = replicas + max_surge;
    if all_spec >= max_total {
        return new_spec;
    }
    let room = max_total - all_spec;
    new_spec + room.min(replicas - new_spec).max(0)
}

/// `spec.replicas` and `status.availableReplicas` of one ReplicaSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub spec: i32,
    pub available: i32,
}

/// New `spec.replicas` for each old ReplicaSet (`old` is oldest first; the result is in the
/// same order), Kubernetes' `reconcileOldReplicaSets`:
///
/// 1. How far may we go? `max_scaled_down = all pods − minAvailable − new RS's unavailable
///    pods`. Subtracting the new RS's unavailable pods keeps a crash-looping new version from
///    letting us remove working old pods. Example: R = 10, maxUnavailable 2 → minAvailable 8;
///    13 pods, 5 of them new and not available: 13 − 8 − 5 = 0, nothing may go.
/// 2. First remove old pods that are not available anyway (that costs no availability),
///    oldest ReplicaSet first, up to `max_scaled_down`.
/// 3. Then remove available old pods while more than minAvailable pods are available.
pub fn scale_down_old(
    replicas: i32,
    max_unavailable: i32,
    new: Counts,
    old: &[Counts],
) -> Vec<i32> {
    let mut result: Vec<i32> = old.iter().map(|c| c.spec).collect();
    let old_spec: i32 = result.iter().sum();
    if old_spec == 0 {
        return result;
    }
    let all_pods = old_spec + new.spec;
    let min_available = replicas - max_unavailable;
    let new_unavailable = new.spec - new.available;
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return result;
    }

    // 2. Unhealthy old pods first.
    let mut cleaned = 0;
    for (spec, counts) in result.iter_mut().zip(old) {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = (*spec - counts.available).max(0);
        if *spec == 0 || unhealthy == 0 {
            continue;
        }
        let n = unhealthy.min(max_scaled_down - cleaned);
        *spec -= n;
        cleaned += n;
    }

    // 3. Then available ones, keeping minAvailable. Availability is what the ReplicaSets
    // report now; the unhealthy pods just removed were not part of it.
    let available: i32 = new.available + old.iter().map(|c| c.available).sum::<i32>();
    if available <= min_available {
        return result;
    }
    let mut to_remove = available - min_available;
    for spec in result.iter_mut() {
        if to_remove == 0 {
            break;
        }
        let n = (*spec).min(to_remove);
        *spec -= n;
        to_remove -= n;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(
        replicas: i32,
        surge: serde_json::Value,
        unavailable: serde_json::Value,
    ) -> Deployment {
        serde_json::from_value(json!({"spec": {
            "replicas": replicas,
            "selector": {},
            "template": {},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
        }}))
        .expect("deployment")
    }

    #[test]
    fn fencepost_table() {
        // (replicas, maxSurge, maxUnavailable, resolved surge, resolved unavailable)
        let cases = [
            (3, json!("25%"), json!("25%"), 1, 0),
            (10, json!("25%"), json!("25%"), 3, 2),
            (10, json!("30%"), json!("20%"), 3, 2),
            (10, json!(0), json!(1), 0, 1),
            (10, json!(1), json!(0), 1, 0),
            (1, json!(0), json!("25%"), 0, 1), // both 0 → unavailable 1
            (2, json!(0), json!(5), 0, 2),     // never more than replicas
            (0, json!(1), json!(1), 1, 0),     // nothing to keep available
            (5, json!("100%"), json!("0%"), 5, 0),
        ];
        for (r, surge, unavailable, want_surge, want_unavailable) in cases {
            let got = fenceposts(&deployment(r, surge.clone(), unavailable.clone()));
            assert_eq!(
                got,
                Fenceposts {
                    max_surge: want_surge,
                    max_unavailable: want_unavailable
                },
                "replicas {r}, maxSurge {surge}, maxUnavailable {unavailable}"
            );
        }
    }

    #[test]
    fn recreate_has_no_fenceposts() {
        let d: Deployment = serde_json::from_value(json!({"spec": {
            "replicas": 4, "selector": {}, "template": {}, "strategy": {"type": "Recreate"}}}))
        .expect("deployment");
        assert!(!is_rolling(&d));
        assert_eq!(
            fenceposts(&d),
            Fenceposts {
                max_surge: 0,
                max_unavailable: 0
            }
        );
    }

    #[test]
    fn new_replicas_table() {
        // (replicas, surge, all spec, new spec, result)
        let cases = [
            (10, 3, 10, 0, 3), // room for 3 surge pods
            (10, 3, 13, 3, 3), // at the ceiling: wait
            (10, 3, 11, 3, 5), // old scaled down by 2 → 2 more
            (3, 1, 3, 0, 1),
            (3, 0, 3, 0, 0), // no surge: old must shrink first
            (3, 5, 3, 0, 3), // never above replicas
            (5, 1, 2, 2, 5), // plain scale-up: 6 − 2 = 4 room, capped at 3
        ];
        for (r, surge, all, new, want) in cases {
            assert_eq!(
                new_replicas(r, surge, all, new),
                want,
                "{r} {surge} {all} {new}"
            );
        }
    }

    /// (replicas, maxUnavailable, new, old (oldest first), expected old spec.replicas)
    type ScaleDownCase = (i32, i32, Counts, Vec<Counts>, Vec<i32>);

    #[test]
    fn scale_down_table() {
        let c = |spec, available| Counts { spec, available };
        // (replicas, maxUnavailable, new, old (oldest first), result)
        let cases: [ScaleDownCase; 6] = [
            // 10 replicas, unavailable 2: 3 new pods not yet available → 13 − 8 − 3 = 2 may go,
            // all 10 old available → remove 2 (availability 10 → 8).
            (10, 2, c(3, 0), vec![c(10, 10)], vec![8]),
            // New pods crash-loop: 13 − 8 − 5 = 0, keep every old pod.
            (10, 2, c(5, 0), vec![c(8, 8)], vec![8]),
            // Unhealthy old pods go first, even while availability is below the minimum:
            // 4 − 3 − 0 = 1 may go, and one of the 2 unavailable old pods does.
            (3, 0, c(1, 1), vec![c(3, 1)], vec![2]),
            // Older ReplicaSets shrink first.
            (4, 1, c(0, 0), vec![c(2, 2), c(2, 2)], vec![1, 2]),
            // maxUnavailable 0: only as many as the new RS has made available.
            (3, 0, c(1, 1), vec![c(3, 3)], vec![2]),
            // Nothing old left.
            (3, 0, c(3, 3), vec![c(0, 0)], vec![0]),
        ];
        for (r, mu, new, old, want) in cases {
            assert_eq!(
                scale_down_old(r, mu, new, &old),
                want,
                "{r} {mu} {new:?} {old:?}"
            );
        }
    }
}

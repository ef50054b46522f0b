//! From the replicas the metrics ask for to the replicas the HPA sets (pure): stabilisation
//! windows, scaling policies, and the min/max bounds (`normalizeDesiredReplicasWithBehaviors`
//! and, for an HPA without `behavior`, `normalizeDesiredReplicas`).
//!
//! - **Stabilisation**: the HPA remembers each pass's recommendation. Scaling down goes only as
//!   far as the *highest* recommendation within the scale-down window (300 s by default), so a
//!   brief dip does not remove pods; scaling up only as far as the *lowest* within the scale-up
//!   window (0 s by default: at once).
//! - **Policies** bound the speed: each policy allows so many pods, or so many percent of the
//!   replicas at the start of its period, to be added (or removed) per `periodSeconds`;
//!   `selectPolicy` takes the policy allowing the most change (`Max`), the least (`Min`), or
//!   none (`Disabled`). What was scaled within the period is remembered as scale events.
//! - **Bounds**: `minReplicas` and `maxReplicas`. `ScalingLimited` says which rule held the
//!   count back, with Kubernetes' reasons and messages.
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

/// The scale-down stabilisation window of an HPA that sets none (kube-controller-manager's
/// `--horizontal-pod-autoscaler-downscale-stabilization`).
pub const DEFAULT_SCALE_DOWN_WINDOW: i64 = 300;
/// Without `behavior`: at most double, or go to 4, per pass.
const SCALE_UP_FACTOR: f64 = 2.0;
const SCALE_UP_MINIMUM: f64 = 4.0;

/// What one HPA remembers between passes (in memory, as Kubernetes keeps it: a new leader
/// starts afresh).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Each pass's recommendation.
    pub recommendations: Vec<(Timestamp, i32)>,
    /// Replicas added (up) or removed (down) by each rescale.
    pub scale_ups: Vec<(Timestamp, i32)>,
    pub scale_downs: Vec<(Timestamp, i32)>,
}

impl History {
    /// Records a rescale from `from` to `to` at `now`.
    pub fn record_scale(&mut self, from: i32, to: i32, now: Timestamp) {
        match to.cmp(&from) {
            std::cmp::Ordering::Greater => self.scale_ups.push((now, to - from)),
            std::cmp::Ordering::Less => self.scale_downs.push((now, from - to)),
            std::cmp::Ordering::Equal => {}
        }
    }

    /// Drops what no window or period can reach any more (the longest is an hour).
    fn forget_before(&mut self, cutoff: Timestamp) {
        self.recommendations.retain(|(t, _)| *t > cutoff);
        self.scale_ups.retain(|(t, _)| *t > cutoff);
        self.scale_downs.retain(|(t, _)| *t > cutoff);
    }
}

/// A condition the normalisation sets: (reason, message).
pub type Note = (&'static str, &'static str);

/// The outcome: the replicas to set, and the `AbleToScale` and `ScalingLimited` notes.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    pub replicas: i32,
    pub able_to_scale: Note,
    /// (limited, reason, message).
    pub limited: (bool, &'static str, &'static str),
}

const READY: Note = ("ReadyForNewScale", "recommended size matches current size");
const UP_STABILIZED: Note = (
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);
const DOWN_STABILIZED: Note = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const WITHIN: Note = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const TOO_FEW: Note = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const TOO_MANY: Note = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const UP_LIMIT: Note = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const DOWN_LIMIT: Note = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);

/// The replicas to set for a recommendation of `desired` with `current` replicas now.
#[allow(clippy::too_many_arguments)]
pub fn normalize(
    behavior: Option<&HorizontalPodAutoscalerBehavior>,
    history: &mut History,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    now: Timestamp,
) -> Normalized {
    history.forget_before(now - SignedDuration::from_secs(3600));
    let normalized = match behavior {
        None => without_behavior(history, current, desired, min, max, now),
        Some(behavior) => with_behavior(behavior, history, current, desired, min, max, now),
    };
    history.recommendations.push((now, desired));
    normalized
}

fn window(rules: Option<&HPAScalingRules>, default: i64) -> SignedDuration {
    SignedDuration::from_secs(
        rules
            .and_then(|r| r.stabilization_window_seconds)
            .map_or(default, i64::from),
    )
}

fn stabilize(
    history: &History,
    current: i32,
    desired: i32,
    up_window: SignedDuration,
    down_window: SignedDuration,
    now: Timestamp,
) -> (i32, Note) {
    let (mut lowest, mut highest) = (desired, desired);
    for (at, recommendation) in &history.recommendations {
        if *at > now - up_window {
            lowest = lowest.min(*recommendation);
        }
        if *at > now - down_window {
            highest = highest.max(*recommendation);
        }
    }
    let stabilized = current.max(lowest).min(highest);
    let note = match stabilized.cmp(&desired) {
        std::cmp::Ordering::Less => UP_STABILIZED,
        std::cmp::Ordering::Greater => DOWN_STABILIZED,
        std::cmp::Ordering::Equal => READY,
    };
    (stabilized, note)
}

fn without_behavior(
    history: &History,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    now: Timestamp,
) -> Normalized {
    let down_window = SignedDuration::from_secs(DEFAULT_SCALE_DOWN_WINDOW);
    let (stabilized, note) = stabilize(
        history,
        current,
        desired,
        SignedDuration::ZERO,
        down_window,
        now,
    );
    // Without behavior only scale-downs are stabilised; Kubernetes' message says "higher".
    let able_to_scale = if stabilized != desired {
        DOWN_STABILIZED
    } else {
        note
    };
    let scale_up_limit = (SCALE_UP_FACTOR * f64::from(current)).max(SCALE_UP_MINIMUM) as i32;
    let (allowed_max, over) = if max > scale_up_limit {
        (scale_up_limit, UP_LIMIT)
    } else {
        (max, TOO_MANY)
    };
    let (replicas, note) = if stabilized < min {
        (min, TOO_FEW)
    } else if stabilized > allowed_max {
        (allowed_max, over)
    } else {
        (stabilized, WITHIN)
    };
    Normalized {
        replicas,
        able_to_scale,
        limited: (note != WITHIN, note.0, note.1),
    }
}

fn with_behavior(
    behavior: &HorizontalPodAutoscalerBehavior,
    history: &History,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    now: Timestamp,
) -> Normalized {
    let up = behavior.scale_up.as_ref();
    let down = behavior.scale_down.as_ref();
    let (stabilized, able_to_scale) = stabilize(
        history,
        current,
        desired,
        window(up, 0),
        window(down, DEFAULT_SCALE_DOWN_WINDOW),
        now,
    );
    let (replicas, note) = if stabilized > current {
        let limit = scale_up_limit(current, history, up, now).max(current);
        let (allowed, note) = if max > limit {
            (limit, UP_LIMIT)
        } else {
            (max, TOO_MANY)
        };
        if stabilized > allowed {
            (allowed, note)
        } else {
            (stabilized, WITHIN)
        }
    } else if stabilized < current {
        let limit = scale_down_limit(current, history, down, now).min(current);
        let (allowed, note) = if min < limit {
            (limit, DOWN_LIMIT)
        } else {
            (min, TOO_FEW)
        };
        if stabilized < allowed {
            (allowed, note)
        } else {
            (stabilized, WITHIN)
        }
    } else {
        (stabilized, WITHIN)
    };
    // Bounds hold whatever the rates allow (an HPA whose current count is out of range is
    // brought back before any of this runs).
    let (replicas, note) = if replicas > max {
        (max, TOO_MANY)
    } else if replicas < min {
        (min, TOO_FEW)
    } else {
        (replicas, note)
    };
    Normalized {
        replicas,
        able_to_scale,
        limited: (replicas != stabilized, note.0, note.1),
    }
}

fn changed_within(events: &[(Timestamp, i32)], period_seconds: i32, now: Timestamp) -> i32 {
    let since = now - SignedDuration::from_secs(i64::from(period_seconds));
    events
        .iter()
        .filter(|(t, _)| *t > since)
        .map(|(_, n)| n)
        .sum()
}

/// The most replicas the scale-up policies allow now (`calculateScaleUpLimitWithScalingRules`).
fn scale_up_limit(
    current: i32,
    history: &History,
    rules: Option<&HPAScalingRules>,
    now: Timestamp,
) -> i32 {
    let proposals = proposals(
        current,
        history,
        rules,
        now,
        &[("Pods", 4, 15), ("Percent", 100, 15)],
        |start, type_, value| {
            if type_ == "Pods" {
                start + value
            } else {
                (f64::from(start) * (1.0 + f64::from(value) / 100.0)).ceil() as i32
            }
        },
    );
    match (proposals, select_policy(rules)) {
        (None, _) => current,
        (Some(p), "Min") => p.into_iter().min().unwrap_or(current),
        (Some(p), _) => p.into_iter().max().unwrap_or(current),
    }
}

/// The fewest replicas the scale-down policies allow now
/// (`calculateScaleDownLimitWithBehaviors`).
fn scale_down_limit(
    current: i32,
    history: &History,
    rules: Option<&HPAScalingRules>,
    now: Timestamp,
) -> i32 {
    let proposals = proposals(
        current,
        history,
        rules,
        now,
        &[("Percent", 100, 15)],
        |start, type_, value| {
            if type_ == "Pods" {
                start - value
            } else {
                (f64::from(start) * (1.0 - f64::from(value) / 100.0)) as i32
            }
        },
    );
    // `Max` allows the biggest change: the fewest replicas.
    match (proposals, select_policy(rules)) {
        (None, _) => current,
        (Some(p), "Min") => p.into_iter().max().unwrap_or(current),
        (Some(p), _) => p.into_iter().min().unwrap_or(current),
    }
}

fn select_policy(rules: Option<&HPAScalingRules>) -> &str {
    rules
        .and_then(|r| r.select_policy.as_deref())
        .unwrap_or("Max")
}

/// What each policy (or each of `defaults` where the rules name none) allows: `step` of the
/// replicas at the start of its period (now's, less the changes made within it). None when the
/// direction is `Disabled`.
fn proposals(
    current: i32,
    history: &History,
    rules: Option<&HPAScalingRules>,
    now: Timestamp,
    defaults: &[(&str, i32, i32)],
    step: impl Fn(i32, &str, i32) -> i32,
) -> Option<Vec<i32>> {
    if select_policy(rules) == "Disabled" {
        return None;
    }
    let policies: Vec<(&str, i32, i32)> = match rules.and_then(|r| r.policies.as_ref()) {
        Some(policies) if !policies.is_empty() => policies
            .iter()
            .map(|p| (p.type_.as_str(), p.value, p.period_seconds))
            .collect(),
        _ => defaults.to_vec(),
    };
    Some(
        policies
            .into_iter()
            .map(|(type_, value, period)| {
                let start = current - changed_within(&history.scale_ups, period, now)
                    + changed_within(&history.scale_downs, period, now);
                step(start, type_, value)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("time")
    }

    fn behavior(value: serde_json::Value) -> HorizontalPodAutoscalerBehavior {
        serde_json::from_value(value).expect("behavior")
    }

    #[test]
    fn without_behavior_scale_down_waits_for_the_window_and_scale_up_at_most_doubles() {
        let mut h = History::default();
        // 10 → 2 recommended: 10 was recommended 60 s ago, so the highest recent (10) holds.
        h.recommendations.push((at(0), 10));
        let n = normalize(None, &mut h, 10, 2, 1, 20, at(60));
        assert_eq!(n.replicas, 10);
        assert_eq!(n.able_to_scale.0, "ScaleDownStabilized");
        // 301 s after the last high one: down to what is asked.
        let mut h = History::default();
        h.recommendations.push((at(0), 10));
        assert_eq!(normalize(None, &mut h, 10, 2, 1, 20, at(301)).replicas, 2);
        // Up from 3 to 50 with max 100: at most double (6); with max 5, the max.
        let n = normalize(None, &mut History::default(), 3, 50, 1, 100, at(0));
        assert_eq!(n.replicas, 6);
        assert_eq!(n.limited, (true, "ScaleUpLimit", UP_LIMIT.1));
        let n = normalize(None, &mut History::default(), 3, 50, 1, 5, at(0));
        assert_eq!((n.replicas, n.limited.1), (5, "TooManyReplicas"));
        // The minimum holds.
        let n = normalize(None, &mut History::default(), 3, 1, 2, 5, at(0));
        assert_eq!((n.replicas, n.limited.1), (2, "TooFewReplicas"));
    }

    #[test]
    fn the_default_behavior_scales_up_at_once_and_down_after_five_minutes() {
        // What defaulting fills in for `behavior: {}`.
        let b = behavior(json!({
            "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
                {"type": "Pods", "value": 4, "periodSeconds": 15},
                {"type": "Percent", "value": 100, "periodSeconds": 15}]},
            "scaleDown": {"stabilizationWindowSeconds": 300, "selectPolicy": "Max", "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 15}]},
        }));
        let mut h = History::default();
        // 1 → 10: Pods 4 gives 5, Percent 100 gives 2; Max takes 5.
        let n = normalize(Some(&b), &mut h, 1, 10, 1, 10, at(0));
        assert_eq!(n.replicas, 5);
        assert_eq!(n.limited.1, "ScaleUpLimit");
        h.record_scale(1, 5, at(0));
        // 5 s later, still within the 15 s period: the period started at 1, so 5 again.
        assert_eq!(normalize(Some(&b), &mut h, 5, 10, 1, 10, at(5)).replicas, 5);
        // After the period: 5 + 4 = 9, 5 × 2 = 10 → 10.
        assert_eq!(
            normalize(Some(&b), &mut h, 5, 10, 1, 10, at(20)).replicas,
            10
        );
        // Down to 2 right after recommending 10: held by the 300 s window.
        let n = normalize(Some(&b), &mut h, 10, 2, 1, 10, at(40));
        assert_eq!((n.replicas, n.able_to_scale.0), (10, "ScaleDownStabilized"));
        // Past the window: all the way down at once (100 % per 15 s).
        assert_eq!(
            normalize(Some(&b), &mut h, 10, 2, 1, 10, at(400)).replicas,
            2
        );
    }

    #[test]
    fn a_short_window_and_slow_policies_from_the_docs() {
        // kubernetes.io: "scaleDown: policies: [{type: Pods, value: 4, periodSeconds: 60}]" —
        // at most 4 pods removed per minute.
        let b = behavior(json!({
            "scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
                "policies": [{"type": "Pods", "value": 4, "periodSeconds": 60}]},
        }));
        let mut h = History::default();
        let n = normalize(Some(&b), &mut h, 10, 1, 1, 10, at(0));
        assert_eq!((n.replicas, n.limited.1), (6, "ScaleDownLimit"));
        h.record_scale(10, 6, at(0));
        // Within the minute nothing more may go.
        assert_eq!(normalize(Some(&b), &mut h, 6, 1, 1, 10, at(30)).replicas, 6);
        assert_eq!(normalize(Some(&b), &mut h, 6, 1, 1, 10, at(61)).replicas, 2);
        // Disabled: no scale-down at all.
        let off = behavior(json!({"scaleDown": {"selectPolicy": "Disabled",
            "policies": [{"type": "Pods", "value": 4, "periodSeconds": 60}]}}));
        assert_eq!(
            normalize(Some(&off), &mut History::default(), 6, 1, 1, 10, at(0)).replicas,
            6
        );
    }
}

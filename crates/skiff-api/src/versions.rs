//! Converting objects between the version a client speaks and the version skiff stores.
//!
//! Every resource is stored in one version (its row in [`crate::resources::RESOURCES`]); a few
//! are also served in others ([`crate::resources::ALSO_SERVED`]). The API server converts at
//! its edges only — a request body to the stored version before admission, a stored object to
//! the client's version on the way out — so admission, strategies, controllers and the store
//! know one shape per resource, as Kubernetes' internal version does.
//!
//! | served | stored | conversion |
//! |---|---|---|
//! | `autoscaling/v2beta2` HorizontalPodAutoscaler | `autoscaling/v2` | the same fields: only `apiVersion` changes |
//! | `autoscaling/v1` HorizontalPodAutoscaler | `autoscaling/v2` | `targetCPUUtilizationPercentage` ⇄ a `cpu` `Utilization` metric; status `currentCPUUtilizationPercentage` ⇄ the `cpu` current metric |
//!
//! autoscaling/v1 has no field for the rest of v2 (other metrics, `behavior`, conditions,
//! current metrics), so, as Kubernetes does, v1 carries them in annotations and a v1 round trip
//! keeps them: `autoscaling.alpha.kubernetes.io/metrics`, `.../behavior`, `.../conditions` and
//! `.../current-metrics`. (Kubernetes writes the metrics annotations in the old v2beta1 shape;
//! skiff writes them in v2's.)
use serde_json::{json, Map, Value};

use crate::resources::{self, ResourceInfo};
use crate::status::ApiError;

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";

/// Whether objects of `served` need converting (it is not the stored version).
pub fn converts(served: &'static ResourceInfo) -> bool {
    !std::ptr::eq(resources::stored_version(served), served)
}

/// A body in `served`'s version, as the stored version. Fields this does not know stay where
/// they are, so admission still reports them as unknown.
pub fn to_stored(served: &'static ResourceInfo, mut body: Value) -> Result<Value, ApiError> {
    if !converts(served) {
        return Ok(body);
    }
    let stored = resources::stored_version(served);
    if let Some(map) = body.as_object_mut() {
        // A body in another version than the URL's is admission's error to report.
        let version_ok = map
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_none_or(|v| v.is_empty() || v == served.api_version());
        if version_ok {
            map.insert("apiVersion".into(), Value::from(stored.api_version()));
        }
    }
    if (served.group, served.version) == ("autoscaling", "v1") {
        hpa_v1_to_v2(&mut body)?;
    }
    Ok(body)
}

/// A stored object as `served`'s version.
pub fn from_stored(served: &'static ResourceInfo, stored: &Value) -> Value {
    let mut object = stored.clone();
    if !converts(served) {
        return object;
    }
    if let Some(map) = object.as_object_mut() {
        map.insert("apiVersion".into(), Value::from(served.api_version()));
    }
    if (served.group, served.version) == ("autoscaling", "v1") {
        hpa_v2_to_v1(&mut object);
    }
    object
}

/// Whether a v2 metric is the one v1 has a field for: `cpu` against a utilization target.
fn is_cpu_utilization(metric: &Value) -> bool {
    metric.get("type").and_then(Value::as_str) == Some("Resource")
        && metric.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
        && metric
            .pointer("/resource/target/type")
            .and_then(Value::as_str)
            == Some("Utilization")
}

fn hpa_v2_to_v1(object: &mut Value) {
    let mut annotations = Map::new();
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        let metrics = match spec.remove("metrics") {
            Some(Value::Array(metrics)) => metrics,
            _ => Vec::new(),
        };
        let (cpu, others): (Vec<Value>, Vec<Value>) =
            metrics.into_iter().partition(is_cpu_utilization);
        if let Some(target) = cpu
            .first()
            .and_then(|m| m.pointer("/resource/target/averageUtilization"))
        {
            spec.insert("targetCPUUtilizationPercentage".into(), target.clone());
        }
        if !others.is_empty() {
            annotations.insert(METRICS.into(), json_string(&Value::Array(others)));
        }
        if let Some(behavior) = spec.remove("behavior") {
            annotations.insert(BEHAVIOR.into(), json_string(&behavior));
        }
    }
    if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
        let current = match status.remove("currentMetrics") {
            Some(Value::Array(current)) => current,
            _ => Vec::new(),
        };
        let cpu = current.iter().find(|m| {
            m.get("type").and_then(Value::as_str) == Some("Resource")
                && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
        });
        if let Some(utilization) =
            cpu.and_then(|m| m.pointer("/resource/current/averageUtilization"))
        {
            status.insert(
                "currentCPUUtilizationPercentage".into(),
                utilization.clone(),
            );
        }
        if !current.is_empty() {
            annotations.insert(CURRENT_METRICS.into(), json_string(&Value::Array(current)));
        }
        if let Some(conditions) = status.remove("conditions") {
            annotations.insert(CONDITIONS.into(), json_string(&conditions));
        }
        // v1's status has no room for a missing desiredReplicas: Go writes 0.
        status
            .entry("desiredReplicas")
            .or_insert_with(|| Value::from(0));
    }
    if !annotations.is_empty() {
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            let target = meta
                .entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(target) = target.as_object_mut() {
                target.extend(annotations);
            }
        }
    }
}

fn hpa_v1_to_v2(body: &mut Value) -> Result<(), ApiError> {
    // What a v1 round trip carried in annotations comes back to its fields.
    let mut carried = Map::new();
    if let Some(annotations) = body
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        for key in [METRICS, BEHAVIOR, CONDITIONS, CURRENT_METRICS] {
            if let Some(Value::String(text)) = annotations.remove(key) {
                let value: Value = serde_json::from_str(&text).map_err(|e| {
                    ApiError::BadRequest(format!("metadata.annotations[{key}]: {e}"))
                })?;
                carried.insert(key.to_string(), value);
            }
        }
        if annotations.is_empty() {
            if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("annotations");
            }
        }
    }
    if let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut) {
        let mut metrics = Vec::new();
        match spec.remove("targetCPUUtilizationPercentage") {
            None | Some(Value::Null) => {}
            Some(Value::Number(percent)) if percent.is_i64() => metrics.push(json!({
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": percent}},
            })),
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "HorizontalPodAutoscaler in version \"v1\" cannot be handled as a HorizontalPodAutoscaler: spec.targetCPUUtilizationPercentage: invalid value {other}, expected i32"
                )))
            }
        }
        if let Some(Value::Array(others)) = carried.remove(METRICS) {
            metrics.extend(others);
        }
        if !metrics.is_empty() {
            spec.insert("metrics".into(), Value::Array(metrics));
        }
        if let Some(behavior) = carried.remove(BEHAVIOR) {
            spec.insert("behavior".into(), behavior);
        }
    }
    if let Some(status) = body.get_mut("status").and_then(Value::as_object_mut) {
        let cpu = status.remove("currentCPUUtilizationPercentage");
        let mut current = match carried.remove(CURRENT_METRICS) {
            Some(Value::Array(current)) => current,
            _ => Vec::new(),
        };
        let has_cpu = current
            .iter()
            .any(|m| m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu"));
        if let (Some(Value::Number(percent)), false) = (cpu, has_cpu) {
            current.push(json!({
                "type": "Resource",
                "resource": {"name": "cpu", "current": {"averageUtilization": percent}},
            }));
        }
        if !current.is_empty() {
            status.insert("currentMetrics".into(), Value::Array(current));
        }
        if let Some(conditions) = carried.remove(CONDITIONS) {
            status.insert("conditions".into(), conditions);
        }
    }
    Ok(())
}

fn json_string(value: &Value) -> Value {
    Value::from(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(version: &str) -> &'static ResourceInfo {
        resources::find("autoscaling", version, "horizontalpodautoscalers").expect("served")
    }

    fn v2() -> Value {
        json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1,
                "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 10}},
            },
            "status": {
                "currentReplicas": 2,
                "desiredReplicas": 3,
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 47, "averageValue": "94m"}}},
                ],
                "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"}],
            },
        })
    }

    #[test]
    fn the_stored_version_is_not_converted() {
        assert!(!converts(hpa("v2")));
        assert!(converts(hpa("v1")));
        assert!(converts(hpa("v2beta2")));
        assert_eq!(from_stored(hpa("v2"), &v2()), v2());
    }

    #[test]
    fn v2beta2_differs_only_in_its_api_version() {
        let served = from_stored(hpa("v2beta2"), &v2());
        assert_eq!(served["apiVersion"], "autoscaling/v2beta2");
        assert_eq!(served["spec"], v2()["spec"]);
        assert_eq!(to_stored(hpa("v2beta2"), served).expect("converts"), v2());
    }

    #[test]
    fn v1_has_the_cpu_target_in_its_field_and_the_rest_in_annotations() {
        let v1 = from_stored(hpa("v1"), &v2());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 80);
        assert!(v1["spec"].get("metrics").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 47);
        let annotations = &v1["metadata"]["annotations"];
        assert!(annotations[METRICS]
            .as_str()
            .expect("metrics")
            .contains("memory"));
        assert!(annotations[CONDITIONS]
            .as_str()
            .expect("conditions")
            .contains("ReadyForNewScale"));
        // And back: nothing lost.
        assert_eq!(to_stored(hpa("v1"), v1).expect("converts"), v2());
    }

    #[test]
    fn a_plain_v1_object_becomes_a_cpu_metric() {
        let v1 = json!({
            "apiVersion": "autoscaling/v1",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 4, "targetCPUUtilizationPercentage": 50},
        });
        let stored = to_stored(hpa("v1"), v1).expect("converts");
        assert_eq!(stored["apiVersion"], "autoscaling/v2");
        assert_eq!(
            stored["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        let bad = json!({"spec": {"targetCPUUtilizationPercentage": "lots"}});
        let e = to_stored(hpa("v1"), bad).expect_err("not a number");
        assert!(e
            .to_string()
            .contains("spec.targetCPUUtilizationPercentage"));
    }
}

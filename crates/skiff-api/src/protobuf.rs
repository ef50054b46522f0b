//! Kubernetes' protobuf request bodies (`application/vnd.kubernetes.protobuf`) to JSON.
//!
//! client-go's typed clients send protobuf, and kubectl uses them for its generators:
//! `kubectl create configmap|secret|deployment|service|namespace` POST a protobuf body whatever
//! the server says it prefers. skiff keeps one representation inside, JSON, so this module turns
//! such a body into exactly the JSON the same client would have sent.
//!
//! ## The wire format
//! A body is the 4-byte magic `k8s\0` followed by a `runtime.Unknown` message:
//!
//! ```text
//! Unknown { typeMeta: { apiVersion: "v1", kind: "ConfigMap" }, raw: <a v1.ConfigMap message> }
//! ```
//!
//! The messages are described by Kubernetes' own `generated.proto` files, vendored under
//! `proto/k8s/` and compiled by this crate's build script into a descriptor set; prost-reflect
//! decodes `raw` against the descriptor named by the type (`k8s.io.api.core.v1.ConfigMap`).
//!
//! ## From protobuf to the JSON Go would have written
//! The Go structs behind the messages are encoded with every non-pointer field present, so a
//! decoded message says `restartPolicy: ""` where the JSON from the same struct says nothing
//! (`omitempty`). The walk below therefore:
//! - drops empty strings (a Go `*string` set to `""` is the one thing this loses; none of the
//!   types skiff serves give it a meaning);
//! - keeps numbers and booleans, zero or not (a `*int32` set to 0, `replicas: 0`, must survive),
//!   except the non-pointer ones tagged `omitempty` in Go, listed in
//!   `proto/k8s/omitempty-scalars.txt` (derived from the Go types by `scripts/vendor-k8s-proto`),
//!   which are dropped when zero, as Go's JSON drops them;
//! - keeps empty messages (`emptyDir: {}` is a choice of volume source), except a zero `Time`,
//!   which Go writes as nothing and JSON as `null`;
//! - flattens the embedded Go structs ([`INLINE`]): protobuf nests `Volume.volumeSource.emptyDir`
//!   where JSON says `emptyDir` beside `name`;
//! - writes the few special messages as their JSON forms: `Time` and `MicroTime` as RFC 3339,
//!   `IntOrString` as a number or a string, `Quantity` as its string, `RawExtension` and
//!   `FieldsV1` as the JSON they carry, bytes as base64.

use std::collections::HashSet;
use std::sync::LazyLock;

use base64::Engine;
use prost_reflect::{
    DescriptorPool, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage, Value as Field,
};
use serde_json::{Map, Value};

use crate::status::ApiError;

/// The media type of Kubernetes' protobuf encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every protobuf body starts with.
const MAGIC: &[u8] = b"k8s\0";

/// The Kubernetes messages, compiled from `proto/k8s/` by the build script.
static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(include_bytes!(concat!(env!("OUT_DIR"), "/k8s.bin")).as_slice())
        .expect("the descriptor set compiled by build.rs is valid")
});

const META: &str = "k8s.io.apimachinery.pkg.apis.meta.v1";

/// Fields that are embedded structs in Go (`json:""` in k8s.io/api's types.go): protobuf gives
/// them a field of their own, JSON spreads their fields into the parent. (field, message type).
const INLINE: &[(&str, &str)] = &[
    ("volumeSource", "VolumeSource"),
    ("persistentVolumeSource", "PersistentVolumeSource"),
    ("localObjectReference", "LocalObjectReference"),
    ("ephemeralContainerCommon", "EphemeralContainerCommon"),
    ("handler", "ProbeHandler"),
];

/// `Message.field` of the non-pointer integers and booleans tagged `omitempty`.
static OMITEMPTY: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../../../proto/k8s/omitempty-scalars.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect()
});

/// A zero that Go's JSON would have left out.
fn omitted_zero(
    message: &MessageDescriptor,
    field: &prost_reflect::FieldDescriptor,
    value: &Field,
) -> bool {
    let zero = match value {
        Field::Bool(b) => !b,
        Field::I32(n) => *n == 0,
        Field::I64(n) => *n == 0,
        Field::F64(n) => *n == 0.0,
        _ => false,
    };
    zero && OMITEMPTY.contains(format!("{}.{}", message.name(), field.name()).as_str())
}

fn is_inline(field: &prost_reflect::FieldDescriptor) -> bool {
    let prost_reflect::Kind::Message(message) = field.kind() else {
        return false;
    };
    INLINE.contains(&(field.name(), message.name()))
}

/// Decodes a protobuf request body to the JSON object it stands for, `apiVersion` and `kind`
/// included.
pub fn decode(bytes: &[u8]) -> Result<Value, ApiError> {
    let envelope = bytes.strip_prefix(MAGIC).ok_or_else(|| {
        ApiError::BadRequest(
            "error decoding protobuf body: it does not start with the Kubernetes magic \"k8s\\x00\""
                .into(),
        )
    })?;
    let unknown = decode_message("k8s.io.apimachinery.pkg.runtime.Unknown", envelope)?;
    let type_meta = unknown
        .get_field_by_name("typeMeta")
        .and_then(|v| v.as_message().cloned())
        .unwrap_or_else(|| unknown.clone());
    let api_version = text(&type_meta, "apiVersion");
    let kind = text(&type_meta, "kind");
    let encoding = text(&unknown, "contentEncoding");
    if !encoding.is_empty() {
        return Err(ApiError::UnsupportedMediaType(format!(
            "protobuf bodies with contentEncoding {encoding:?} are not supported"
        )));
    }
    let raw = unknown
        .get_field_by_name("raw")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();

    let descriptor = message_for(&api_version, &kind)?;
    let message = DynamicMessage::decode(descriptor, raw.as_ref()).map_err(|e| {
        ApiError::BadRequest(format!(
            "error decoding protobuf body as {api_version} {kind}: {e}"
        ))
    })?;
    let mut object = match message_to_json(&message)? {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(object))
}

fn decode_message(name: &str, bytes: &[u8]) -> Result<DynamicMessage, ApiError> {
    let descriptor = POOL
        .get_message_by_name(name)
        .expect("runtime.Unknown is in the descriptor set");
    DynamicMessage::decode(descriptor, bytes)
        .map_err(|e| ApiError::BadRequest(format!("error decoding protobuf body: {e}")))
}

/// The message for a type: `apps/v1` `Deployment` is `k8s.io.api.apps.v1.Deployment`, the core
/// group (`v1`) is `k8s.io.api.core.v1`, and a group with dots is named by its first label
/// (`discovery.k8s.io/v1` → `k8s.io.api.discovery.v1`). Option types such as `DeleteOptions`
/// live in meta/v1 whatever group they are sent to.
fn message_for(api_version: &str, kind: &str) -> Result<MessageDescriptor, ApiError> {
    let (group, version) = api_version.split_once('/').unwrap_or(("core", api_version));
    let group = group.split('.').next().unwrap_or(group);
    [
        format!("k8s.io.api.{group}.{version}.{kind}"),
        format!("{META}.{kind}"),
    ]
    .iter()
    .find_map(|name| POOL.get_message_by_name(name))
    .ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!(
            "protobuf bodies are not supported for {api_version} {kind}; send application/json"
        ))
    })
}

/// One message as JSON; `None` when it has no JSON form (a zero `Time`).
fn message_to_json(message: &DynamicMessage) -> Result<Option<Value>, ApiError> {
    let descriptor = message.descriptor();
    let int = |name: &str| {
        message
            .get_field_by_name(name)
            .and_then(|v| v.as_i64().or_else(|| v.as_i32().map(i64::from)))
            .unwrap_or(0)
    };
    let bytes_field = |name: &str| {
        message
            .get_field_by_name(name)
            .and_then(|v| v.as_bytes().cloned())
            .unwrap_or_default()
    };
    let value = match descriptor.full_name() {
        "k8s.io.apimachinery.pkg.apis.meta.v1.Time" => {
            // Go keeps whole seconds only (time_proto.go), and writes a zero time as nothing.
            return timestamp(int("seconds"), 0, false);
        }
        "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime" => {
            return timestamp(int("seconds"), int("nanos"), true);
        }
        "k8s.io.apimachinery.pkg.apis.meta.v1.Duration" => {
            Value::String(format!("{}ns", int("duration")))
        }
        "k8s.io.apimachinery.pkg.util.intstr.IntOrString" => {
            if int("type") == 1 {
                Value::String(text(message, "strVal"))
            } else {
                Value::from(int("intVal"))
            }
        }
        "k8s.io.apimachinery.pkg.api.resource.Quantity" => Value::String(text(message, "string")),
        "k8s.io.apimachinery.pkg.runtime.RawExtension" => embedded_json(&bytes_field("raw"))?,
        "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1" => embedded_json(&bytes_field("Raw"))?,
        _ => {
            let mut object = Map::new();
            for (field, value) in message.fields() {
                if omitted_zero(&descriptor, &field, value) {
                    continue;
                }
                match field_to_json(value)? {
                    Some(Value::Object(inner)) if is_inline(&field) => object.extend(inner),
                    Some(json) => {
                        object.insert(field.json_name().to_string(), json);
                    }
                    None => {}
                }
            }
            Value::Object(object)
        }
    };
    Ok(Some(value))
}

/// A string field's value; `""` when unset.
fn text(message: &DynamicMessage, name: &str) -> String {
    message
        .get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// RFC 3339 in UTC, as Go's `metav1.Time` (seconds) and `MicroTime` (microseconds) write it.
fn timestamp(seconds: i64, nanos: i64, micros: bool) -> Result<Option<Value>, ApiError> {
    if seconds == 0 && nanos == 0 {
        return Ok(None);
    }
    let invalid = |e: jiff::Error| ApiError::BadRequest(format!("invalid protobuf time: {e}"));
    let nanos =
        i32::try_from(nanos).map_err(|_| ApiError::BadRequest("invalid protobuf time".into()))?;
    let at = jiff::Timestamp::new(seconds, nanos).map_err(invalid)?;
    let format = if micros {
        "%Y-%m-%dT%H:%M:%S%.6fZ"
    } else {
        "%Y-%m-%dT%H:%M:%SZ"
    };
    Ok(Some(Value::String(at.strftime(format).to_string())))
}

/// The JSON inside a `RawExtension` or `FieldsV1`; an empty one is `null`.
fn embedded_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "error decoding embedded JSON in protobuf body: {e}"
        ))
    })
}

/// A list element or map value as JSON. These have no "unset": an empty string stays, as in
/// `args: ["-p", ""]` or `data: {key: ""}`.
fn element_to_json(item: &Field) -> Result<Value, ApiError> {
    match item {
        Field::String(s) => Ok(Value::String(s.clone())),
        other => Ok(field_to_json(other)?.unwrap_or(Value::Null)),
    }
}

/// One field's value as JSON; `None` drops it (an empty string, see the module docs).
fn field_to_json(value: &Field) -> Result<Option<Value>, ApiError> {
    let json = match value {
        Field::Bool(b) => Value::Bool(*b),
        Field::I32(n) => Value::from(*n),
        Field::I64(n) => Value::from(*n),
        Field::U32(n) => Value::from(*n),
        Field::U64(n) => Value::from(*n),
        Field::F32(n) => Value::from(f64::from(*n)),
        Field::F64(n) => Value::from(*n),
        Field::EnumNumber(n) => Value::from(*n),
        Field::String(s) if s.is_empty() => return Ok(None),
        Field::String(s) => Value::String(s.clone()),
        Field::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Field::Message(m) => return message_to_json(m),
        Field::List(items) => {
            let list = items
                .iter()
                .map(element_to_json)
                .collect::<Result<_, _>>()?;
            Value::Array(list)
        }
        Field::Map(entries) => {
            let mut map = Map::new();
            for (key, item) in entries {
                let key = match key {
                    MapKey::String(s) => s.clone(),
                    MapKey::Bool(b) => b.to_string(),
                    MapKey::I32(n) => n.to_string(),
                    MapKey::I64(n) => n.to_string(),
                    MapKey::U32(n) => n.to_string(),
                    MapKey::U64(n) => n.to_string(),
                };
                map.insert(key, element_to_json(item)?);
            }
            Value::Object(map)
        }
    };
    Ok(Some(json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use serde_json::json;

    /// Encodes `object` (JSON, without apiVersion/kind) as client-go would: the message, wrapped
    /// in `runtime.Unknown`, behind the magic. The test's JSON → protobuf step uses
    /// prost-reflect's own JSON mapping, which is independent of the walk under test.
    fn encode(api_version: &str, kind: &str, object: &Value) -> Vec<u8> {
        let descriptor = message_for(api_version, kind).expect("test value");
        let message = DynamicMessage::deserialize(descriptor, object.clone()).expect("test value");
        let mut unknown = DynamicMessage::new(
            POOL.get_message_by_name("k8s.io.apimachinery.pkg.runtime.Unknown")
                .expect("in the descriptor set"),
        );
        let mut type_meta = DynamicMessage::new(
            POOL.get_message_by_name("k8s.io.apimachinery.pkg.runtime.TypeMeta")
                .expect("in the descriptor set"),
        );
        type_meta.set_field_by_name("apiVersion", Field::String(api_version.into()));
        type_meta.set_field_by_name("kind", Field::String(kind.into()));
        unknown.set_field_by_name("typeMeta", Field::Message(type_meta));
        unknown.set_field_by_name("raw", Field::Bytes(message.encode_to_vec().into()));
        let mut body = MAGIC.to_vec();
        body.extend(unknown.encode_to_vec());
        body
    }

    #[test]
    fn storage_classes_and_claims_round_trip() {
        let class = json!({"metadata": {"name": "fast"}, "provisioner": "example.com/disk",
            "reclaimPolicy": "Retain", "volumeBindingMode": "WaitForFirstConsumer",
            "allowVolumeExpansion": false, "parameters": {"type": "ssd"}});
        let got = decode(&encode("storage.k8s.io/v1", "StorageClass", &class)).expect("class");
        assert_eq!(got["apiVersion"], "storage.k8s.io/v1");
        assert_eq!(got["provisioner"], "example.com/disk");
        assert_eq!(got["volumeBindingMode"], "WaitForFirstConsumer");
        assert_eq!(
            got["allowVolumeExpansion"], false,
            "a *bool set to false survives"
        );
        assert_eq!(got["parameters"]["type"], "ssd");
        // prost-reflect's JSON mapping writes a Quantity as its message.
        let claim = json!({"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": {"string": "1Gi"}}}}});
        let got = decode(&encode("v1", "PersistentVolumeClaim", &claim)).expect("claim");
        assert_eq!(got["spec"]["resources"]["requests"]["storage"], "1Gi");
        assert_eq!(got["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    }

    #[test]
    fn autoscalers_round_trip_in_both_versions() {
        // What `kubectl autoscale` sends (v1), and a v2 object with every metric source skiff
        // serves.
        let v1 = json!({"metadata": {"name": "web"}, "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 60}});
        let got = decode(&encode("autoscaling/v1", "HorizontalPodAutoscaler", &v1)).expect("v1");
        assert_eq!(got["spec"]["targetCPUUtilizationPercentage"], 60);
        assert_eq!(got["spec"]["scaleTargetRef"]["kind"], "Deployment");
        let v2 = json!({"metadata": {"name": "web"}, "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "maxReplicas": 10,
            "metrics": [
                {"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}}},
                {"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": {"string": "2"}}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0,
                "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}}}});
        let got = decode(&encode("autoscaling/v2", "HorizontalPodAutoscaler", &v2)).expect("v2");
        assert_eq!(
            got["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert_eq!(
            got["spec"]["metrics"][1]["pods"]["target"]["averageValue"],
            "2"
        );
        assert_eq!(
            got["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"], 0,
            "a *int32 set to 0 survives"
        );
        assert!(got["spec"].get("minReplicas").is_none());
    }

    #[test]
    fn configmaps_and_secrets_round_trip() {
        let cm =
            json!({"metadata": {"name": "cfg", "namespace": ""}, "data": {"a": "1", "empty": ""}});
        let got = decode(&encode("v1", "ConfigMap", &cm)).expect("test value");
        assert_eq!(
            got,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "cfg"}, "data": {"a": "1", "empty": ""}})
        );

        // Secret data is bytes on the wire and base64 in JSON.
        let secret = json!({"metadata": {"name": "s"}, "data": {"password": "aHVudGVyMg=="}, "type": "Opaque"});
        let got = decode(&encode("v1", "Secret", &secret)).expect("test value");
        assert_eq!(got["data"]["password"], "aHVudGVyMg==");
        assert_eq!(got["type"], "Opaque");
    }

    #[test]
    fn special_messages_take_their_json_forms() {
        let deployment = json!({
            "metadata": {"name": "web", "creationTimestamp": {}, "labels": {"app": "web"}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"rollingUpdate": {"maxSurge": {"type": 1, "strVal": "25%"},
                                               "maxUnavailable": {"type": 0, "intVal": 0}}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "web", "image": "web:1.0", "args": ["-p", ""],
                            "resources": {"limits": {"cpu": {"string": "500m"}}},
                            "ports": [{"containerPort": 8080, "hostPort": 0}],
                            "stdin": false,
                            "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {
                                "localObjectReference": {"name": "cfg"}, "key": "mode"}}}],
                            "readinessProbe": {"handler": {"httpGet": {"path": "/", "port": {"type": 1, "strVal": "http"}}},
                                               "periodSeconds": 2}
                        }],
                        "volumes": [{"name": "scratch", "volumeSource": {"emptyDir": {}}}]
                    }
                }
            }
        });
        let got = decode(&encode("apps/v1", "Deployment", &deployment)).expect("test value");
        assert_eq!(got["apiVersion"], "apps/v1");
        assert_eq!(
            got["metadata"],
            json!({"name": "web", "labels": {"app": "web"}})
        );
        assert_eq!(got["spec"]["replicas"], 0, "a pointer set to zero survives");
        assert_eq!(
            got["spec"]["strategy"]["rollingUpdate"],
            json!({"maxSurge": "25%", "maxUnavailable": 0})
        );
        let container = &got["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["resources"]["limits"]["cpu"], "500m");
        assert_eq!(container["args"], json!(["-p", ""]));
        assert_eq!(
            container["ports"],
            json!([{"containerPort": 8080}]),
            "omitempty zero dropped"
        );
        assert!(container.get("stdin").is_none());
        assert_eq!(
            container["env"][0]["valueFrom"]["configMapKeyRef"],
            json!({"name": "cfg", "key": "mode"})
        );
        assert_eq!(
            container["readinessProbe"],
            json!({"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 2})
        );
        assert_eq!(
            got["spec"]["template"]["spec"]["volumes"][0],
            json!({"name": "scratch", "emptyDir": {}})
        );

        let event_time =
            json!({"metadata": {"name": "e", "creationTimestamp": {"seconds": 1700000000}}});
        let got = decode(&encode("v1", "ConfigMap", &event_time)).expect("test value");
        assert_eq!(got["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z");
    }

    #[test]
    fn bad_bodies_are_clear_errors() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"{\"kind\": \"Pod\"}",
                "does not start with the Kubernetes magic",
            ),
            (b"k8s\0\xff\xff", "error decoding protobuf body"),
        ];
        for (body, want) in cases {
            match decode(body) {
                Err(ApiError::BadRequest(message)) => assert!(message.contains(want), "{message}"),
                other => panic!("{other:?}"),
            }
        }
        let cron = encode("v1", "ConfigMap", &json!({}));
        let mut unknown_kind = cron.clone();
        // Same envelope, a kind skiff has no message for.
        let at = unknown_kind
            .windows(9)
            .position(|w| w == b"ConfigMap")
            .expect("test value");
        unknown_kind.splice(at..at + 9, b"CronJobXy".iter().copied());
        assert!(matches!(
            decode(&unknown_kind),
            Err(ApiError::UnsupportedMediaType(m)) if m.contains("v1 CronJobXy")
        ));
    }
}

//! Events: the short notes components leave on objects ("Scheduled", "Pulled", "Started",
//! "ScalingReplicaSet") that `kubectl describe` shows at the bottom.
//!
//! Recording an event must never slow down or fail the work it describes, so [`Recorder::emit`]
//! sends it from a background task and only logs a failure.
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};

use crate::Client;

/// Writes events as one component (`kubelet`, `default-scheduler`, `deployment-controller`).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: String,
    host: Option<String>,
}

/// Whether an event is routine or a problem (`kubectl describe` shows the type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl Recorder {
    pub fn new(client: Client, component: &str, host: Option<&str>) -> Recorder {
        Recorder {
            client,
            component: component.to_string(),
            host: host.map(str::to_string),
        }
    }

    /// Records `reason`/`message` about `object` in the background.
    pub fn emit(&self, object: ObjectReference, kind: EventType, reason: &str, message: &str) {
        let event = event(
            &self.component,
            self.host.as_deref(),
            object,
            kind,
            reason,
            message,
            jiff::Timestamp::now(),
        );
        let client = self.client.clone();
        tokio::spawn(async move {
            let ns = event.metadata.namespace.clone();
            if let Err(e) = client.create(ns.as_deref(), &event).await {
                tracing::debug!(error = %e, reason = ?event.reason, "recording an event");
            }
        });
    }
}

/// The Event object (pure, for tests). Its name is the object's name and a unique suffix
/// (nanoseconds in hex), as client-go names events.
pub fn event(
    component: &str,
    host: Option<&str>,
    object: ObjectReference,
    kind: EventType,
    reason: &str,
    message: &str,
    now: jiff::Timestamp,
) -> Event {
    let namespace = object.namespace.clone().unwrap_or_else(|| "default".into());
    let name = format!(
        "{}.{:x}",
        object.name.clone().unwrap_or_default(),
        now.as_nanosecond()
    );
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace),
            ..ObjectMeta::default()
        },
        involved_object: object,
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        type_: Some(match kind {
            EventType::Normal => "Normal".into(),
            EventType::Warning => "Warning".into(),
        }),
        source: Some(EventSource {
            component: Some(component.to_string()),
            host: host.map(str::to_string),
        }),
        reporting_component: Some(component.to_string()),
        reporting_instance: host.map(str::to_string),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        count: Some(1),
        action: Some(reason.to_string()),
        ..Event::default()
    }
}

/// A reference to `object` for events and owner links.
pub fn object_ref<K>(object: &K) -> ObjectReference
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let meta = object.metadata();
    ObjectReference {
        api_version: Some(K::API_VERSION.to_string()),
        kind: Some(K::KIND.to_string()),
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn events_name_their_object_and_source() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("u".into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        let e = event(
            "kubelet",
            Some("node-1"),
            object_ref(&pod),
            EventType::Warning,
            "BackOff",
            "m",
            jiff::Timestamp::UNIX_EPOCH,
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(e.metadata.name.as_deref(), Some("web.0"));
        assert_eq!(e.involved_object.kind.as_deref(), Some("Pod"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.source.and_then(|s| s.host).as_deref(), Some("node-1"));
    }
}

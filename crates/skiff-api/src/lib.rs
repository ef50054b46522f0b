//! skiff-api: the resource types skiff serves and everything about them that needs no I/O.
//!
//! ## Layout
//! - [`resources`]: the one table of served resources (group, version, kind, scope, short names).
//! - [`status`]: [`ApiError`], the crate's one error type, and the Kubernetes `Status` it becomes.
//! - [`names`]: syntax of object names, label keys and values, port names, config keys.
//! - [`selector`]: label and field selectors, parsed and matched.
//! - [`decode`]: request bodies (JSON, YAML or protobuf) to `serde_json::Value`.
//! - [`protobuf`]: Kubernetes' protobuf bodies, decoded by reflection over the vendored
//!   `proto/k8s/` definitions.
//! - [`admission`]: a body to the object to store: type checks, unknown fields, defaults,
//!   validation ([`admission::admit`]), and immutable fields on update.
//! - [`metrics`]: what agents measure (kubelet's Summary API shape) and servers serve.
//! - [`quantity`]: resource quantities (`500m`, `1.5Gi`) as exact integers.
//! - [`schedule`]: CronJob schedules and their time zones.
//! - [`volumes`]: where a PersistentVolume may be used (its node affinity by hostname).
//! - [`quota`]: ResourceQuota's arithmetic: what an object uses, scopes, what pods must declare.
//! - [`versions`]: objects converted between a served version and the stored one
//!   (autoscaling/v1 and v2beta2 HorizontalPodAutoscalers, stored as v2).
//! - [`patch`]: PATCH bodies (merge patch, JSON patch, strategic merge patch) applied to
//!   stored objects.
pub mod admission;
pub mod decode;
pub mod metrics;
pub mod names;
pub mod patch;
pub mod pod_security;
pub mod protobuf;
pub mod quantity;
pub mod quota;
pub mod resources;
pub mod schedule;
pub mod selector;
pub mod status;
pub mod versions;
pub mod volumes;

pub use status::{ApiError, Cause};

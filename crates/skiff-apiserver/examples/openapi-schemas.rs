//! Regenerates `crates/skiff-apiserver/openapi/schemas.json`: the OpenAPI v3 component schemas
//! of every type skiff serves, derived from k8s-openapi's types with schemars, plus the
//! strategic-merge extensions (`x-kubernetes-patch-merge-key`, `-patch-strategy`) of the lists
//! skiff merges by key (the same table as `skiff_api::patch::strategic::RULES`).
//!
//! The API server embeds the file, so its own build does not pay for schemars (about two
//! minutes of release build). Run `cargo run -p skiff-apiserver --example openapi-schemas`
//! after changing the served types; `tests/openapi_schemas.rs` fails while the file is stale.
use k8s_openapi::api::{
    apps, authentication, autoscaling, batch, coordination, core, discovery, rbac, storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta;
use serde_json::{json, Map, Value};

/// The lists that merge by key (or as sets) under strategic merge patch, by schema and field.
const PATCH_STRATEGIES: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "io.k8s.api.core.v1.PodSpec",
        "containers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "hostAliases",
        "merge",
        Some("ip"),
    ),
    ("io.k8s.api.core.v1.Container", "env", "merge", Some("name")),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        "merge",
        Some("containerPort"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        "merge",
        Some("port"),
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        Some("uid"),
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        None,
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
];

/// Every schema reachable from the types skiff serves, as pretty JSON.
pub fn generate() -> String {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    macro_rules! add {
        ($($t:ty),* $(,)?) => { $( let _ = generator.subschema_for::<$t>(); )* };
    }
    add!(
        core::v1::Namespace,
        core::v1::Pod,
        core::v1::Binding,
        core::v1::Service,
        core::v1::Endpoints,
        core::v1::Node,
        core::v1::ConfigMap,
        core::v1::Secret,
        core::v1::ServiceAccount,
        core::v1::ResourceQuota,
        core::v1::PersistentVolume,
        core::v1::PersistentVolumeClaim,
        storage::v1::StorageClass,
        authentication::v1::TokenRequest,
        core::v1::Event,
        apps::v1::Deployment,
        apps::v1::ReplicaSet,
        apps::v1::StatefulSet,
        apps::v1::ControllerRevision,
        apps::v1::DaemonSet,
        batch::v1::Job,
        batch::v1::CronJob,
        discovery::v1::EndpointSlice,
        coordination::v1::Lease,
        rbac::v1::Role,
        rbac::v1::ClusterRole,
        rbac::v1::RoleBinding,
        rbac::v1::ClusterRoleBinding,
        autoscaling::v1::Scale,
        autoscaling::v1::HorizontalPodAutoscaler,
        autoscaling::v2::HorizontalPodAutoscaler,
        meta::v1::Status,
        meta::v1::DeleteOptions,
        meta::v1::Patch,
    );
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    for (schema, field, strategy, key) in PATCH_STRATEGIES {
        if let Some(property) = schemas
            .get_mut(*schema)
            .and_then(|s| s.pointer_mut(&format!("/properties/{field}")))
        {
            property["x-kubernetes-patch-strategy"] = json!(strategy);
            if let Some(key) = key {
                property["x-kubernetes-patch-merge-key"] = json!(key);
            }
        }
    }
    let mut text =
        serde_json::to_string_pretty(&Value::Object(schemas)).expect("schemas serialise");
    text.push('\n');
    text
}

#[allow(dead_code)]
fn main() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/schemas.json");
    std::fs::write(&path, generate()).expect("write openapi/schemas.json");
    println!("wrote {}", path.display());
}

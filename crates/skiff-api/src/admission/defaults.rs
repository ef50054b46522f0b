//! Defaulting: the values Kubernetes fills in when a client leaves a field out.
//!
//! These copy `pkg/apis/*/v1/defaults.go` (1.33) so that `kubectl get -o yaml` shows what it
//! would on a real cluster, and so that controllers, the scheduler and the kubelet can rely on
//! the fields being there (`restartPolicy`, `imagePullPolicy`, a Service port's `targetPort`).
//! Defaulting runs after decoding and before validation, as in Kubernetes; it never overrides
//! a value the client gave.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetUpdateStrategy, Deployment, DeploymentStrategy, ReplicaSet,
    RollingUpdateDaemonSet, RollingUpdateDeployment, RollingUpdateStatefulSetStrategy, StatefulSet,
    StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::autoscaling::v2::{
    HPAScalingPolicy, HPAScalingRules, HorizontalPodAutoscaler, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ClientIPConfig, Container, EmptyDirVolumeSource, Endpoints, Namespace, Node, PersistentVolume,
    PersistentVolumeClaim, Pod, PodSpec, Probe, Secret, Service, SessionAffinityConfig, Volume,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;

/// `0644`: the mode of files projected from Secrets, ConfigMaps and the downward API.
const DEFAULT_FILE_MODE: i32 = 0o644;

/// `Some(value)` unless already set.
fn default<T>(field: &mut Option<T>, value: T) {
    if field.is_none() {
        *field = Some(value);
    }
}

/// Like [`default`], also replacing a zero: for Go's non-pointer integers (a Probe's
/// `periodSeconds`), where 0 and "absent" are the same value, as in protobuf bodies.
fn default_nonzero(field: &mut Option<i32>, value: i32) {
    if field.is_none_or(|n| n == 0) {
        *field = Some(value);
    }
}

/// Like [`default`], also replacing an empty string, which Go cannot tell from "absent".
fn default_str(field: &mut Option<String>, value: &str) {
    if field.as_deref().is_none_or(str::is_empty) {
        *field = Some(value.to_string());
    }
}

pub(super) fn pod(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    pod_spec(spec);
    // These two are in SetDefaults_Pod, not SetDefaults_PodSpec: a Deployment's template does
    // not get them, only the Pods made from it.
    default(&mut spec.enable_service_links, true);
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        requests_from_limits(c);
    }
    if spec.host_network == Some(true) {
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            for port in c.ports.iter_mut().flatten() {
                // On the host's network a container port *is* a host port.
                if port.host_port.unwrap_or(0) == 0 {
                    port.host_port = Some(port.container_port);
                }
            }
        }
    }
}

/// A container with limits but no requests requests what it is limited to, so the scheduler
/// reserves it.
fn requests_from_limits(c: &mut Container) {
    let Some(resources) = c.resources.as_mut() else {
        return;
    };
    let Some(limits) = resources.limits.clone() else {
        return;
    };
    let requests = resources.requests.get_or_insert_with(BTreeMap::new);
    for (name, quantity) in limits {
        requests.entry(name).or_insert(quantity);
    }
}

/// Defaults shared by Pods and the pod templates of Deployments and ReplicaSets.
pub(super) fn pod_spec(spec: &mut PodSpec) {
    default_str(&mut spec.dns_policy, "ClusterFirst");
    default_str(&mut spec.restart_policy, "Always");
    default(&mut spec.security_context, Default::default());
    default(&mut spec.termination_grace_period_seconds, 30);
    default_str(&mut spec.scheduler_name, "default-scheduler");
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        container(c);
    }
    for volume in spec.volumes.iter_mut().flatten() {
        self::volume(volume);
    }
}

fn container(c: &mut Container) {
    if c.image_pull_policy.as_deref().is_none_or(str::is_empty) {
        let policy = if image_tag(c.image.as_deref().unwrap_or("")) == Some("latest") {
            "Always"
        } else {
            "IfNotPresent"
        };
        c.image_pull_policy = Some(policy.to_string());
    }
    default_str(&mut c.termination_message_path, "/dev/termination-log");
    default_str(&mut c.termination_message_policy, "File");
    // Go's Container.Resources is a struct, not a pointer, so Kubernetes always prints `{}`.
    default(&mut c.resources, Default::default());
    for port in c.ports.iter_mut().flatten() {
        default_str(&mut port.protocol, "TCP");
    }
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ] {
        if let Some(probe) = probe.as_mut() {
            self::probe(probe);
        }
    }
    for env in c.env.iter_mut().flatten() {
        if let Some(field_ref) = env.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            default_str(&mut field_ref.api_version, "v1");
        }
    }
}

/// The tag an image reference asks for: `latest` when it names neither a tag nor a digest
/// (`nginx`, `localhost:5000/app`), `None` for a digest without a tag.
///
/// A `:` only starts a tag in the last path component; before that it is a registry's port.
fn image_tag(image: &str) -> Option<&str> {
    if image.is_empty() {
        return None;
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    let last_component = name.rsplit('/').next().unwrap_or(name);
    match last_component.split_once(':') {
        Some((_, tag)) => Some(tag),
        None if digest.is_some() => None,
        None => Some("latest"),
    }
}

fn probe(p: &mut Probe) {
    default_nonzero(&mut p.timeout_seconds, 1);
    default_nonzero(&mut p.period_seconds, 10);
    default_nonzero(&mut p.success_threshold, 1);
    default_nonzero(&mut p.failure_threshold, 3);
    if let Some(http) = p.http_get.as_mut() {
        default_str(&mut http.path, "/");
        default_str(&mut http.scheme, "HTTP");
    }
}

fn volume(v: &mut Volume) {
    if let Some(secret) = v.secret.as_mut() {
        default(&mut secret.default_mode, DEFAULT_FILE_MODE);
    }
    if let Some(config_map) = v.config_map.as_mut() {
        default(&mut config_map.default_mode, DEFAULT_FILE_MODE);
    }
    if let Some(downward) = v.downward_api.as_mut() {
        default(&mut downward.default_mode, DEFAULT_FILE_MODE);
    }
    if let Some(projected) = v.projected.as_mut() {
        default(&mut projected.default_mode, DEFAULT_FILE_MODE);
    }
    // A volume with no source at all is an emptyDir. Checking "no source" field by field would
    // list 30 fields; a volume with no source serialises to just its name.
    let only_name = serde_json::to_value(&*v)
        .ok()
        .and_then(|json| {
            json.as_object()
                .map(|o| o.len() == 1 && o.contains_key("name"))
        })
        .unwrap_or(false);
    if only_name {
        v.empty_dir = Some(EmptyDirVolumeSource::default());
    }
}

pub(super) fn service(svc: &mut Service) {
    let spec = svc.spec.get_or_insert_with(Default::default);
    default_str(&mut spec.session_affinity, "None");
    match spec.session_affinity.as_deref() {
        Some("None") => spec.session_affinity_config = None,
        Some("ClientIP") => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            if timeout.is_none() {
                // Three hours, Kubernetes' DefaultClientIPServiceAffinitySeconds.
                spec.session_affinity_config = Some(SessionAffinityConfig {
                    client_ip: Some(ClientIPConfig {
                        timeout_seconds: Some(10800),
                    }),
                });
            }
        }
        _ => {}
    }
    default_str(&mut spec.type_, "ClusterIP");
    for port in spec.ports.iter_mut().flatten() {
        default_str(&mut port.protocol, "TCP");
        let unset = match &port.target_port {
            None => true,
            Some(IntOrString::Int(0)) => true,
            Some(IntOrString::String(s)) => s.is_empty(),
            Some(IntOrString::Int(_)) => false,
        };
        if unset {
            port.target_port = Some(IntOrString::Int(port.port));
        }
    }
    let service_type = spec.type_.as_deref().unwrap_or("");
    let external = matches!(service_type, "NodePort" | "LoadBalancer");
    if external {
        default_str(&mut spec.external_traffic_policy, "Cluster");
    }
    if external || service_type == "ClusterIP" {
        default_str(&mut spec.internal_traffic_policy, "Cluster");
    }
    if service_type == "LoadBalancer" {
        default(&mut spec.allocate_load_balancer_node_ports, true);
    }
}

pub(super) fn deployment(d: &mut Deployment) {
    let spec = d.spec.get_or_insert_with(Default::default);
    default(&mut spec.replicas, 1);
    let strategy = spec
        .strategy
        .get_or_insert_with(DeploymentStrategy::default);
    default_str(&mut strategy.type_, "RollingUpdate");
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let rolling = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        default(
            &mut rolling.max_unavailable,
            IntOrString::String("25%".to_string()),
        );
        default(
            &mut rolling.max_surge,
            IntOrString::String("25%".to_string()),
        );
    }
    default(&mut spec.revision_history_limit, 10);
    default(&mut spec.progress_deadline_seconds, 600);
    pod_spec(spec.template.spec.get_or_insert_with(PodSpec::default));
}

pub(super) fn replica_set(rs: &mut ReplicaSet) {
    let spec = rs.spec.get_or_insert_with(Default::default);
    default(&mut spec.replicas, 1);
    let template = spec.template.get_or_insert_with(Default::default);
    pod_spec(template.spec.get_or_insert_with(PodSpec::default));
}

/// A StatefulSet, as Kubernetes 1.33 defaults one: one replica, ordered, rolling updates from
/// the top ordinal with no partition, claims kept, ten revisions.
pub(super) fn stateful_set(sts: &mut StatefulSet) {
    let spec = sts.spec.get_or_insert_with(Default::default);
    default(&mut spec.replicas, 1);
    default_str(&mut spec.pod_management_policy, "OrderedReady");
    let strategy = spec
        .update_strategy
        .get_or_insert_with(StatefulSetUpdateStrategy::default);
    default_str(&mut strategy.type_, "RollingUpdate");
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let rolling = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateStatefulSetStrategy::default);
        default(&mut rolling.partition, 0);
    }
    default(&mut spec.revision_history_limit, 10);
    let retention = spec
        .persistent_volume_claim_retention_policy
        .get_or_insert_with(StatefulSetPersistentVolumeClaimRetentionPolicy::default);
    default_str(&mut retention.when_deleted, "Retain");
    default_str(&mut retention.when_scaled, "Retain");
    pod_spec(spec.template.spec.get_or_insert_with(PodSpec::default));
    for claim in spec.volume_claim_templates.iter_mut().flatten() {
        persistent_volume_claim(claim);
    }
}

/// A DaemonSet, as Kubernetes defaults one: rolling updates one node at a time, no surge, ten
/// revisions.
pub(super) fn daemon_set(ds: &mut DaemonSet) {
    let spec = ds.spec.get_or_insert_with(Default::default);
    let strategy = spec
        .update_strategy
        .get_or_insert_with(DaemonSetUpdateStrategy::default);
    default_str(&mut strategy.type_, "RollingUpdate");
    if strategy.type_.as_deref() == Some("RollingUpdate") {
        let rolling = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDaemonSet::default);
        default(&mut rolling.max_unavailable, IntOrString::Int(1));
        default(&mut rolling.max_surge, IntOrString::Int(0));
    }
    default(&mut spec.revision_history_limit, 10);
    pod_spec(spec.template.spec.get_or_insert_with(PodSpec::default));
}

/// The labels that tie a Job's pods to it, and its selector of them, when it chose none.
pub const JOB_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// A Job, as Kubernetes defaults one: one pod at a time, one completion unless it is a work
/// queue (parallelism without completions), six retries, non-indexed; and, unless it says
/// `manualSelector: true`, a selector of its own uid with the labels on its template
/// (Kubernetes' Job strategy does this before validation, and so does the server here: the
/// uid is decided before admission).
pub(super) fn job(job: &mut Job) {
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let spec = job.spec.get_or_insert_with(Default::default);
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    default(&mut spec.parallelism, 1);
    default(&mut spec.backoff_limit, 6);
    default_str(&mut spec.completion_mode, "NonIndexed");
    default(&mut spec.suspend, false);
    default(&mut spec.manual_selector, false);
    default_str(&mut spec.pod_replacement_policy, "TerminatingOrFailed");
    if spec.manual_selector != Some(true) && spec.selector.is_none() && !uid.is_empty() {
        spec.selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(JOB_UID_LABEL.to_string(), uid.clone())])),
            match_expressions: None,
        });
        let labels = spec
            .template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new);
        for (key, value) in [
            (JOB_UID_LABEL, &uid),
            (JOB_NAME_LABEL, &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels.insert(key.to_string(), value.clone());
        }
    }
    pod_spec(spec.template.spec.get_or_insert_with(PodSpec::default));
}

/// A CronJob, as Kubernetes defaults one: runs may overlap, three successful and one failed
/// Job kept; its Job template gets a Job's defaults (but no selector: each Job makes its own).
pub(super) fn cron_job(cj: &mut CronJob) {
    let spec = cj.spec.get_or_insert_with(Default::default);
    default_str(&mut spec.concurrency_policy, "Allow");
    default(&mut spec.suspend, false);
    default(&mut spec.successful_jobs_history_limit, 3);
    default(&mut spec.failed_jobs_history_limit, 1);
    let job = spec.job_template.spec.get_or_insert_with(Default::default);
    if job.completions.is_none() && job.parallelism.is_none() {
        job.completions = Some(1);
    }
    default(&mut job.parallelism, 1);
    default(&mut job.backoff_limit, 6);
    default_str(&mut job.completion_mode, "NonIndexed");
    default(&mut job.suspend, false);
    default_str(&mut job.pod_replacement_policy, "TerminatingOrFailed");
    pod_spec(job.template.spec.get_or_insert_with(PodSpec::default));
}

/// A HorizontalPodAutoscaler, as autoscaling/v2 defaults one: at least one replica, 80 % CPU
/// when no metric is given, and — when `behavior` is given at all — every rule it leaves out
/// filled with the defaults the controller would use (scale up at once by up to 4 pods or 100 %
/// per 15 s, whichever is more; scale down after a 300 s window by up to 100 % per 15 s).
pub(super) fn horizontal_pod_autoscaler(hpa: &mut HorizontalPodAutoscaler) {
    let spec = hpa.spec.get_or_insert_with(Default::default);
    default(&mut spec.min_replicas, 1);
    if spec.metrics.as_ref().is_none_or(Vec::is_empty) {
        spec.metrics = Some(vec![MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(80),
                    ..Default::default()
                },
            }),
            ..Default::default()
        }]);
    }
    if let Some(behavior) = spec.behavior.as_mut() {
        let up = behavior.scale_up.get_or_insert_with(Default::default);
        scaling_rules(up, 0, || {
            vec![policy("Pods", 4, 15), policy("Percent", 100, 15)]
        });
        let down = behavior.scale_down.get_or_insert_with(Default::default);
        scaling_rules(down, 300, || vec![policy("Percent", 100, 15)]);
    }
}

fn scaling_rules(
    rules: &mut HPAScalingRules,
    window: i32,
    policies: impl Fn() -> Vec<HPAScalingPolicy>,
) {
    default(&mut rules.stabilization_window_seconds, window);
    default_str(&mut rules.select_policy, "Max");
    if rules.policies.as_ref().is_none_or(Vec::is_empty) {
        rules.policies = Some(policies());
    }
}

fn policy(type_: &str, value: i32, period_seconds: i32) -> HPAScalingPolicy {
    HPAScalingPolicy {
        type_: type_.into(),
        value,
        period_seconds,
    }
}

pub(super) fn namespace(ns: &mut Namespace) {
    // Every namespace carries its own name as a label, so selectors (NetworkPolicies,
    // webhooks) can pick namespaces by name.
    if let Some(name) = ns.metadata.name.clone().filter(|n| !n.is_empty()) {
        ns.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert("kubernetes.io/metadata.name".to_string(), name);
    }
    // Kubernetes adds this finalizer on create (namespace strategy) so the namespace
    // controller can empty the namespace before it goes away.
    let finalizers = ns
        .spec
        .get_or_insert_with(Default::default)
        .finalizers
        .get_or_insert_with(Vec::new);
    if !finalizers.iter().any(|f| f == "kubernetes") {
        finalizers.push("kubernetes".to_string());
    }
    default_str(
        &mut ns.status.get_or_insert_with(Default::default).phase,
        "Active",
    );
}

pub(super) fn secret(s: &mut Secret) {
    default_str(&mut s.type_, "Opaque");
    // `stringData` is write-only: Kubernetes merges it into `data` (winning over `data`) and
    // never stores it.
    if let Some(string_data) = s.string_data.take() {
        let data = s.data.get_or_insert_with(BTreeMap::new);
        for (key, value) in string_data {
            data.insert(key, ByteString(value.into_bytes()));
        }
    }
}

pub(super) fn endpoints(e: &mut Endpoints) {
    for subset in e.subsets.iter_mut().flatten() {
        for port in subset.ports.iter_mut().flatten() {
            default_str(&mut port.protocol, "TCP");
        }
    }
}

/// An EndpointSlice port with no name or protocol is the unnamed TCP port, as in
/// `discovery/v1/defaults.go`.
pub(super) fn endpoint_slice(slice: &mut EndpointSlice) {
    for port in slice.ports.iter_mut().flatten() {
        default(&mut port.name, String::new());
        default(&mut port.protocol, "TCP".to_string());
    }
}

pub(super) fn node(n: &mut Node) {
    // A node that reports capacity but not allocatable can give everything it has.
    if let Some(status) = n.status.as_mut() {
        if status.allocatable.is_none() {
            status.allocatable = status.capacity.clone();
        }
    }
}

/// A PersistentVolume: kept after its claim goes unless it says otherwise (Kubernetes' default
/// for volumes made by hand), a filesystem.
pub(super) fn persistent_volume(pv: &mut PersistentVolume) {
    let spec = pv.spec.get_or_insert_with(Default::default);
    spec.persistent_volume_reclaim_policy
        .get_or_insert_with(|| "Retain".into());
    spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
}

/// A PersistentVolumeClaim: a filesystem.
pub(super) fn persistent_volume_claim(pvc: &mut PersistentVolumeClaim) {
    let spec = pvc.spec.get_or_insert_with(Default::default);
    spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
}

/// A StorageClass: its volumes go with their claims, and claims bind at once.
pub(super) fn storage_class(class: &mut StorageClass) {
    class.reclaim_policy.get_or_insert_with(|| "Delete".into());
    class
        .volume_binding_mode
        .get_or_insert_with(|| "Immediate".into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags() {
        let cases = [
            ("nginx", Some("latest")),
            ("nginx:latest", Some("latest")),
            ("nginx:1.25", Some("1.25")),
            ("localhost:5000/app", Some("latest")),
            ("localhost:5000/app:v2", Some("v2")),
            ("nginx@sha256:abc", None),
            ("nginx:latest@sha256:abc", Some("latest")),
            ("", None),
        ];
        for (image, tag) in cases {
            assert_eq!(image_tag(image), tag, "{image:?}");
        }
    }
}

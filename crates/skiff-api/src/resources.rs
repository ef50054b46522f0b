//! The one table of resources skiff serves.
//!
//! Discovery (aggregated and legacy), OpenAPI, routing, field selectors and validation all read
//! this table, so a resource is added in exactly one place.

/// Everything the API server needs to know about one served resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; `""` is the core group (`/api/v1`).
    pub group: &'static str,
    pub version: &'static str,
    /// Plural, lower-case name used in URL paths (`deployments`).
    pub resource: &'static str,
    /// Singular name shown by discovery (`deployment`).
    pub singular: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    /// Whether objects live inside a namespace.
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Categories such as `all`, which `kubectl get all` expands.
    pub categories: &'static [&'static str],
    /// Subresources served besides the object itself (`status`).
    pub subresources: &'static [&'static str],
    /// Field selector labels beyond `metadata.name` and `metadata.namespace`.
    pub field_selectors: &'static [&'static str],
}

impl ResourceInfo {
    /// `v1` for the core group, `apps/v1` otherwise: the value of an object's `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `deployments.apps`: how Kubernetes names a resource in error messages.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    /// `Deployment.apps` or `Pod`: how Kubernetes names a kind in `Invalid` messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Field labels a field selector may use on this resource.
    pub fn supports_field(&self, field: &str) -> bool {
        field == "metadata.name"
            || (self.namespaced && field == "metadata.namespace")
            || self.field_selectors.contains(&field)
    }
}

const CORE: &str = "";
const APPS: &str = "apps";
const DISCOVERY: &str = "discovery.k8s.io";
const COORDINATION: &str = "coordination.k8s.io";
const RBAC: &str = "rbac.authorization.k8s.io";
const AUTHORIZATION: &str = "authorization.k8s.io";
const AUTHENTICATION: &str = "authentication.k8s.io";
const STORAGE: &str = "storage.k8s.io";
const BATCH: &str = "batch";
const AUTOSCALING: &str = "autoscaling";

/// A stored resource of the RBAC group (no short names, categories or subresources).
const fn rbac(
    resource: &'static str,
    singular: &'static str,
    kind: &'static str,
    list_kind: &'static str,
    namespaced: bool,
) -> ResourceInfo {
    ResourceInfo {
        group: RBAC,
        version: "v1",
        resource,
        singular,
        kind,
        list_kind,
        namespaced,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_selectors: &[],
    }
}

/// A review: a question the server answers on `create` and never stores.
const fn review(
    group: &'static str,
    resource: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> ResourceInfo {
    ResourceInfo {
        group,
        version: "v1",
        resource,
        singular,
        kind,
        list_kind: "",
        namespaced,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_selectors: &[],
    }
}

/// Every resource skiff serves, core group first.
pub static RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        group: CORE,
        version: "v1",
        resource: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        list_kind: "NamespaceList",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        subresources: &["status"],
        field_selectors: &["status.phase"],
    },
    ResourceInfo {
        group: CORE,
        version: "v1",
        resource: "pods",
        singular: "pod",
        kind: "Pod",
        list_kind: "PodList",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        subresources: &["status", "binding", "log", "exec"],
        field_selectors: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
    },
    ResourceInfo {
        group: CORE,
        version: "v1",
        resource: "services",
        singular: "service",
        kind: "Service",
        list_kind: "ServiceList",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        subresources: &["status"],
        field_selectors: &["spec.clusterIP", "spec.type"],
    },
    ResourceInfo {
        group: CORE,
        version: "v1",
        resource: "endpoints",
        singular: "endpoints",
        kind: "Endpoints",
        list_kind: "EndpointsList",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        subresources: &[],
        field_selectors: &[],
    },
    ResourceInfo {
        group: CORE,
        version: "v1",
        resource: "nodes",
        singular: "node",
        kind: "Node",
        list_kind: "NodeList",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        subresources: &["status", "proxy"],
        field_selectors: &["spec.unschedulable"],
    },
    ResourceInfo {
        group: CORE,
        version: "v1",
        resource: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        list_kind: "ConfigMapList",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        subresources: &[],
        field_selectors: &[],
    },
    ResourceInfo {
        group: CORE,
        version: "v1",
        resource: "secrets",
        singular: "secret",
        kind: "Secret",
        list_kind: "SecretList",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_selectors: &["type"],
    },
    ResourceInfo {
        group: CORE,
        version: "v1",
        resource: "resourcequotas",
        singular: "resourcequota",
        kind: "ResourceQuota",
        list_kind: "ResourceQuotaList",
        namespaced: true,
        short_names: &["quota"],
        categories: &[],
        subresources: &["status"],
        field_selectors: &[],
    },
    ResourceInfo {
        group: CORE,
        version: "v1",
        resource: "persistentvolumes",
        singular: "persistentvolume",
        kind: "PersistentVolume",
        list_kind: "PersistentVolumeList",
        namespaced: false,
        short_names: &["pv"],
        categories: &[],
        subresources: &["status"],
        field_selectors: &[],
    },
    ResourceInfo {
        group: CORE,
        version: "v1",
        resource: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        kind: "PersistentVolumeClaim",
        list_kind: "PersistentVolumeClaimList",
        namespaced: true,
        short_names: &["pvc"],
        categories: &[],
        subresources: &["status"],
        field_selectors: &[],
    },
    ResourceInfo {
        group: CORE,
        version: "v1",
        resource: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        list_kind: "ServiceAccountList",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        subresources: &["token"],
        field_selectors: &[],
    },
    ResourceInfo {
        group: CORE,
        version: "v1",
        resource: "events",
        singular: "event",
        kind: "Event",
        list_kind: "EventList",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        field_selectors: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
    },
    ResourceInfo {
        group: APPS,
        version: "v1",
        resource: "deployments",
        singular: "deployment",
        kind: "Deployment",
        list_kind: "DeploymentList",
        namespaced: true,
        short_names: &["deploy"],
        categories: &["all"],
        subresources: &["status", "scale"],
        field_selectors: &[],
    },
    ResourceInfo {
        group: APPS,
        version: "v1",
        resource: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        list_kind: "ReplicaSetList",
        namespaced: true,
        short_names: &["rs"],
        categories: &["all"],
        subresources: &["status", "scale"],
        field_selectors: &["status.replicas"],
    },
    ResourceInfo {
        group: APPS,
        version: "v1",
        resource: "statefulsets",
        singular: "statefulset",
        kind: "StatefulSet",
        list_kind: "StatefulSetList",
        namespaced: true,
        short_names: &["sts"],
        categories: &["all"],
        subresources: &["status", "scale"],
        field_selectors: &[],
    },
    ResourceInfo {
        group: APPS,
        version: "v1",
        resource: "daemonsets",
        singular: "daemonset",
        kind: "DaemonSet",
        list_kind: "DaemonSetList",
        namespaced: true,
        short_names: &["ds"],
        categories: &["all"],
        subresources: &["status"],
        field_selectors: &[],
    },
    ResourceInfo {
        group: APPS,
        version: "v1",
        resource: "controllerrevisions",
        singular: "controllerrevision",
        kind: "ControllerRevision",
        list_kind: "ControllerRevisionList",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_selectors: &[],
    },
    ResourceInfo {
        group: DISCOVERY,
        version: "v1",
        resource: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        list_kind: "EndpointSliceList",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_selectors: &[],
    },
    // Stored like any other object (leader election in workloads uses them). The node leases
    // in `kube-node-lease` are answered from the leader's heartbeat table instead, see
    // skiff-apiserver's nodes.rs.
    ResourceInfo {
        group: COORDINATION,
        version: "v1",
        resource: "leases",
        singular: "lease",
        kind: "Lease",
        list_kind: "LeaseList",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        field_selectors: &[],
    },
    // Who may do what (RBAC): read by the API server's authorizer on every request.
    rbac("roles", "role", "Role", "RoleList", true),
    rbac(
        "rolebindings",
        "rolebinding",
        "RoleBinding",
        "RoleBindingList",
        true,
    ),
    rbac(
        "clusterroles",
        "clusterrole",
        "ClusterRole",
        "ClusterRoleList",
        false,
    ),
    rbac(
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        "ClusterRoleBindingList",
        false,
    ),
    ResourceInfo {
        group: STORAGE,
        version: "v1",
        resource: "storageclasses",
        singular: "storageclass",
        kind: "StorageClass",
        list_kind: "StorageClassList",
        namespaced: false,
        short_names: &["sc"],
        categories: &[],
        subresources: &[],
        field_selectors: &[],
    },
    ResourceInfo {
        group: BATCH,
        version: "v1",
        resource: "jobs",
        singular: "job",
        kind: "Job",
        list_kind: "JobList",
        namespaced: true,
        short_names: &[],
        categories: &["all"],
        subresources: &["status"],
        field_selectors: &[],
    },
    ResourceInfo {
        group: BATCH,
        version: "v1",
        resource: "cronjobs",
        singular: "cronjob",
        kind: "CronJob",
        list_kind: "CronJobList",
        namespaced: true,
        short_names: &["cj"],
        categories: &["all"],
        subresources: &["status"],
        field_selectors: &[],
    },
    // Stored as autoscaling/v2; v1 and v2beta2 are served from it ([`ALSO_SERVED`]).
    horizontal_pod_autoscalers("v2"),
];

/// The HorizontalPodAutoscaler resource in one of its versions.
const fn horizontal_pod_autoscalers(version: &'static str) -> ResourceInfo {
    ResourceInfo {
        group: AUTOSCALING,
        version,
        resource: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        kind: "HorizontalPodAutoscaler",
        list_kind: "HorizontalPodAutoscalerList",
        namespaced: true,
        short_names: &["hpa"],
        categories: &["all"],
        subresources: &["status"],
        field_selectors: &[],
    }
}

/// Other versions of resources in [`RESOURCES`]: served, converted to and from the stored
/// version by [`crate::versions`], never stored. Discovery lists them after the stored version,
/// which stays the group's preferred one. autoscaling/v2beta2 left Kubernetes in 1.26, but
/// manifests (and the documents skiff was specified from) still use it.
pub static ALSO_SERVED: &[ResourceInfo] = &[
    horizontal_pod_autoscalers("v1"),
    horizontal_pod_autoscalers("v2beta2"),
];

/// Resources measured rather than stored: what the agents sampled, served from the API
/// servers' memory and never written to the Raft log (metrics-server's `metrics.k8s.io`, and
/// `custom.metrics.k8s.io` with the service proxies' request rates). Read-only: `get` and
/// `list`. The custom metrics resources name their metric as a subresource
/// (`pods/*/requests_per_second`).
pub static MEASURED: &[ResourceInfo] = &[
    measured(
        METRICS,
        "v1beta1",
        "nodes",
        "NodeMetrics",
        "NodeMetricsList",
        false,
        &[],
    ),
    measured(
        METRICS,
        "v1beta1",
        "pods",
        "PodMetrics",
        "PodMetricsList",
        true,
        &[],
    ),
    measured(
        CUSTOM_METRICS,
        "v1beta2",
        "pods",
        "MetricValueList",
        "MetricValueList",
        true,
        &[crate::metrics::REQUESTS_PER_SECOND],
    ),
    measured(
        CUSTOM_METRICS,
        "v1beta2",
        "services",
        "MetricValueList",
        "MetricValueList",
        true,
        &[crate::metrics::REQUESTS_PER_SECOND],
    ),
];

const METRICS: &str = "metrics.k8s.io";
const CUSTOM_METRICS: &str = "custom.metrics.k8s.io";

const fn measured(
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    kind: &'static str,
    list_kind: &'static str,
    namespaced: bool,
    subresources: &'static [&'static str],
) -> ResourceInfo {
    ResourceInfo {
        group,
        version,
        resource,
        singular: "",
        kind,
        list_kind,
        namespaced,
        short_names: &[],
        categories: &[],
        subresources,
        field_selectors: &[],
    }
}

/// Whether `info` is one of the [`MEASURED`] resources.
pub fn is_measured(info: &ResourceInfo) -> bool {
    MEASURED.contains(info)
}

/// Resources that only answer a question: a client `create`s one, the server fills in its
/// `status` and sends it back, and nothing is stored (`kubectl auth can-i`, `kubectl auth
/// whoami`). Discovery lists them with the one verb `create`; nothing else walks this table.
pub static REVIEWS: &[ResourceInfo] = &[
    review(
        AUTHORIZATION,
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        "SelfSubjectAccessReview",
        false,
    ),
    review(
        AUTHORIZATION,
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        "SelfSubjectRulesReview",
        false,
    ),
    review(
        AUTHORIZATION,
        "subjectaccessreviews",
        "subjectaccessreview",
        "SubjectAccessReview",
        false,
    ),
    review(
        AUTHORIZATION,
        "localsubjectaccessreviews",
        "localsubjectaccessreview",
        "LocalSubjectAccessReview",
        true,
    ),
    review(
        AUTHENTICATION,
        "selfsubjectreviews",
        "selfsubjectreview",
        "SelfSubjectReview",
        false,
    ),
];

/// Whether `info` is one of the [`REVIEWS`].
pub fn is_review(info: &ResourceInfo) -> bool {
    REVIEWS.contains(info)
}

/// Every resource discovery shows: the stored ones, their other versions, the reviews, then
/// the measured ones.
pub fn served() -> impl Iterator<Item = &'static ResourceInfo> {
    RESOURCES
        .iter()
        .chain(ALSO_SERVED.iter())
        .chain(REVIEWS.iter())
        .chain(MEASURED.iter())
}

/// The stored version of a served resource (`info` itself unless it is in [`ALSO_SERVED`]).
pub fn stored_version(info: &'static ResourceInfo) -> &'static ResourceInfo {
    if !ALSO_SERVED.contains(info) {
        return info;
    }
    RESOURCES
        .iter()
        .find(|r| r.group == info.group && r.resource == info.resource)
        .unwrap_or(info)
}

/// The resource served at `/{group}/{version}/{resource}`, if any.
pub fn find(group: &str, version: &str, resource: &str) -> Option<&'static ResourceInfo> {
    served().find(|r| r.group == group && r.version == version && r.resource == resource)
}

/// The resource whose objects have this `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

/// The API groups served besides core, in discovery order, each with its versions.
pub fn groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = Vec::new();
    for r in served() {
        if !r.group.is_empty() && !groups.contains(&r.group) {
            groups.push(r.group);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_agree_with_the_table() {
        let deploy = find("apps", "v1", "deployments").expect("deployments served");
        assert_eq!(deploy.api_version(), "apps/v1");
        assert_eq!(deploy.qualified_kind(), "Deployment.apps");
        assert_eq!(by_kind("v1", "Pod").map(|r| r.resource), Some("pods"));
        assert!(find("apps", "v1", "pods").is_none());
        assert_eq!(
            groups(),
            vec![
                "apps",
                "discovery.k8s.io",
                "coordination.k8s.io",
                "rbac.authorization.k8s.io",
                "storage.k8s.io",
                "batch",
                "autoscaling",
                "authorization.k8s.io",
                "authentication.k8s.io",
                "metrics.k8s.io",
                "custom.metrics.k8s.io",
            ]
        );
        // Other versions are served from the stored one.
        let v1 = find("autoscaling", "v1", "horizontalpodautoscalers").expect("v1 served");
        assert_eq!(stored_version(v1).version, "v2");
        assert!(std::ptr::eq(
            stored_version(stored_version(v1)),
            stored_version(v1)
        ));
        assert!(is_measured(
            find("metrics.k8s.io", "v1beta1", "pods").expect("measured")
        ));
        assert!(is_review(
            find("authorization.k8s.io", "v1", "selfsubjectaccessreviews").expect("served")
        ));
        assert!(!is_review(find("", "v1", "pods").expect("served")));
    }

    #[test]
    fn field_selectors_are_per_resource() {
        let pods = find("", "v1", "pods").expect("pods served");
        assert!(pods.supports_field("spec.nodeName"));
        assert!(pods.supports_field("metadata.namespace"));
        let nodes = find("", "v1", "nodes").expect("nodes served");
        assert!(!nodes.supports_field("metadata.namespace"));
        assert!(!nodes.supports_field("spec.nodeName"));
    }
}

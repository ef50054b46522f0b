//! Builders for the unit tests: `pod("a").cpu("500m").on("node-1")`,
//! `node("n1").cpu("2").taint("k", "v", "NoSchedule")`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, Node, NodeAffinity, NodeCondition, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, NodeSpec, NodeStatus, Pod, PodSpec, PodStatus,
    ResourceRequirements, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;

pub struct PodBuilder(Pod);

pub fn pod(name: &str) -> PodBuilder {
    let mut pod = Pod::default();
    pod.metadata.name = Some(name.to_string());
    pod.metadata.namespace = Some("default".to_string());
    pod.spec = Some(PodSpec::default());
    PodBuilder(pod)
}

impl PodBuilder {
    fn spec(&mut self) -> &mut PodSpec {
        self.0.spec.get_or_insert_with(PodSpec::default)
    }

    /// The first app container, created on first use, for `pod("a").cpu("500m")`.
    fn first(&mut self) -> &mut Container {
        let spec = self.spec();
        if spec.containers.is_empty() {
            spec.containers.push(container("c").0);
        }
        &mut spec.containers[0]
    }

    pub fn cpu(mut self, quantity: &str) -> Self {
        set(&mut self.first().resources, true, "cpu", quantity);
        self
    }

    pub fn memory(mut self, quantity: &str) -> Self {
        set(&mut self.first().resources, true, "memory", quantity);
        self
    }

    /// A volume of the PersistentVolumeClaim `claim`.
    pub fn claim(mut self, claim: &str) -> Self {
        self.spec()
            .volumes
            .get_or_insert_with(Vec::new)
            .push(k8s_openapi::api::core::v1::Volume {
                name: claim.to_string(),
                persistent_volume_claim: Some(
                    k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                        claim_name: claim.to_string(),
                        read_only: None,
                    },
                ),
                ..Default::default()
            });
        self
    }

    pub fn host_port(mut self, port: i32) -> Self {
        self.first()
            .ports
            .get_or_insert_with(Vec::new)
            .push(ContainerPort {
                container_port: port,
                host_port: Some(port),
                ..ContainerPort::default()
            });
        self
    }

    pub fn container(mut self, c: ContainerBuilder) -> Self {
        self.spec().containers.push(c.0);
        self
    }

    pub fn init(mut self, c: ContainerBuilder) -> Self {
        self.spec()
            .init_containers
            .get_or_insert_with(Vec::new)
            .push(c.0);
        self
    }

    pub fn overhead(mut self, resource: &str, quantity: &str) -> Self {
        self.spec()
            .overhead
            .get_or_insert_with(BTreeMap::new)
            .insert(resource.to_string(), Quantity(quantity.to_string()));
        self
    }

    pub fn on(mut self, node: &str) -> Self {
        self.spec().node_name = Some(node.to_string());
        self
    }

    pub fn node_selector(mut self, key: &str, value: &str) -> Self {
        self.spec()
            .node_selector
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_string(), value.to_string());
        self
    }

    /// Adds a required node affinity term of label expressions `(key, operator, values)`.
    pub fn affinity_term(self, expressions: &[(&str, &str, &[&str])]) -> Self {
        let term = NodeSelectorTerm {
            match_expressions: Some(expressions.iter().map(|e| requirement(*e)).collect()),
            match_fields: None,
        };
        self.term(term)
    }

    /// Adds a required node affinity term of one `matchFields` requirement on `metadata.name`.
    pub fn field_term(self, operator: &str, names: &[&str]) -> Self {
        let term = NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![requirement(("metadata.name", operator, names))]),
        };
        self.term(term)
    }

    fn term(mut self, term: NodeSelectorTerm) -> Self {
        let affinity = self.spec().affinity.get_or_insert_with(Affinity::default);
        let node = affinity
            .node_affinity
            .get_or_insert_with(NodeAffinity::default);
        node.required_during_scheduling_ignored_during_execution
            .get_or_insert_with(NodeSelector::default)
            .node_selector_terms
            .push(term);
        self
    }

    pub fn toleration(mut self, key: &str, operator: &str, value: &str, effect: &str) -> Self {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        self.spec()
            .tolerations
            .get_or_insert_with(Vec::new)
            .push(Toleration {
                key: some(key),
                operator: some(operator),
                value: some(value),
                effect: some(effect),
                toleration_seconds: None,
            });
        self
    }

    /// A controller owner reference (a ReplicaSet) with this uid.
    pub fn owner(mut self, uid: &str) -> Self {
        self.0
            .metadata
            .owner_references
            .get_or_insert_with(Vec::new)
            .push(OwnerReference {
                api_version: "apps/v1".to_string(),
                kind: "ReplicaSet".to_string(),
                name: format!("rs-{uid}"),
                uid: uid.to_string(),
                controller: Some(true),
                block_owner_deletion: None,
            });
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_string(), value.to_string());
        self
    }

    pub fn namespace(mut self, namespace: &str) -> Self {
        self.0.metadata.namespace = Some(namespace.to_string());
        self
    }

    pub fn scheduler(mut self, name: &str) -> Self {
        self.spec().scheduler_name = Some(name.to_string());
        self
    }

    pub fn priority(mut self, priority: i32) -> Self {
        self.spec().priority = Some(priority);
        self
    }

    pub fn phase(mut self, phase: &str) -> Self {
        self.0.status.get_or_insert_with(PodStatus::default).phase = Some(phase.to_string());
        self
    }

    pub fn deleting(mut self) -> Self {
        self.0.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        self
    }

    pub fn build(self) -> Pod {
        self.0
    }
}

fn requirement((key, operator, values): (&str, &str, &[&str])) -> NodeSelectorRequirement {
    NodeSelectorRequirement {
        key: key.to_string(),
        operator: operator.to_string(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
    }
}

fn set(resources: &mut Option<ResourceRequirements>, request: bool, name: &str, quantity: &str) {
    let r = resources.get_or_insert_with(ResourceRequirements::default);
    let list = if request {
        &mut r.requests
    } else {
        &mut r.limits
    };
    list.get_or_insert_with(BTreeMap::new)
        .insert(name.to_string(), Quantity(quantity.to_string()));
}

pub struct ContainerBuilder(Container);

pub fn container(name: &str) -> ContainerBuilder {
    ContainerBuilder(Container {
        name: name.to_string(),
        ..Container::default()
    })
}

impl ContainerBuilder {
    pub fn cpu(mut self, quantity: &str) -> Self {
        set(&mut self.0.resources, true, "cpu", quantity);
        self
    }

    pub fn memory(mut self, quantity: &str) -> Self {
        set(&mut self.0.resources, true, "memory", quantity);
        self
    }

    pub fn limit_cpu(mut self, quantity: &str) -> Self {
        set(&mut self.0.resources, false, "cpu", quantity);
        self
    }

    pub fn limit_memory(mut self, quantity: &str) -> Self {
        set(&mut self.0.resources, false, "memory", quantity);
        self
    }

    /// A sidecar: an init container that keeps running.
    pub fn restart_always(mut self) -> Self {
        self.0.restart_policy = Some("Always".to_string());
        self
    }

    pub fn host_port(self, port: i32) -> Self {
        self.port(None, None, port)
    }

    pub fn host_port_on(self, ip: &str, protocol: &str, port: i32) -> Self {
        self.port(Some(ip), Some(protocol), port)
    }

    fn port(mut self, ip: Option<&str>, protocol: Option<&str>, port: i32) -> Self {
        self.0
            .ports
            .get_or_insert_with(Vec::new)
            .push(ContainerPort {
                container_port: port,
                host_port: Some(port),
                host_ip: ip.map(str::to_string),
                protocol: protocol.map(str::to_string),
                name: None,
            });
        self
    }
}

pub struct NodeBuilder(Node);

/// A Ready node with 4 cpu, 8Gi of memory and 110 pod slots.
pub fn node(name: &str) -> NodeBuilder {
    let mut node = Node::default();
    node.metadata.name = Some(name.to_string());
    node.spec = Some(NodeSpec::default());
    node.status = Some(NodeStatus {
        conditions: Some(vec![NodeCondition {
            type_: "Ready".to_string(),
            status: "True".to_string(),
            ..NodeCondition::default()
        }]),
        ..NodeStatus::default()
    });
    NodeBuilder(node).cpu("4").memory("8Gi").pods(110)
}

impl NodeBuilder {
    fn allocatable(mut self, name: &str, quantity: &str) -> Self {
        self.0
            .status
            .get_or_insert_with(NodeStatus::default)
            .allocatable
            .get_or_insert_with(BTreeMap::new)
            .insert(name.to_string(), Quantity(quantity.to_string()));
        self
    }

    pub fn cpu(self, quantity: &str) -> Self {
        self.allocatable("cpu", quantity)
    }

    pub fn memory(self, quantity: &str) -> Self {
        self.allocatable("memory", quantity)
    }

    pub fn pods(self, count: i64) -> Self {
        self.allocatable("pods", &count.to_string())
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_string(), value.to_string());
        self
    }

    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        self.0
            .spec
            .get_or_insert_with(NodeSpec::default)
            .taints
            .get_or_insert_with(Vec::new)
            .push(Taint {
                key: key.to_string(),
                value: (!value.is_empty()).then(|| value.to_string()),
                effect: effect.to_string(),
                time_added: None,
            });
        self
    }

    pub fn cordoned(mut self) -> Self {
        self.0
            .spec
            .get_or_insert_with(NodeSpec::default)
            .unschedulable = Some(true);
        self
    }

    pub fn not_ready(mut self) -> Self {
        if let Some(conditions) = self.0.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            conditions[0].status = "False".to_string();
        }
        self
    }

    pub fn build(self) -> Node {
        self.0
    }
}

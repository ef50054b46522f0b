//! Filters: can this node run this pod at all?
//!
//! The checks run in kube-scheduler's plugin order, which is also cheap-first:
//!
//! | stage               | Kubernetes plugin   | rejects a node when                               |
//! |---------------------|---------------------|---------------------------------------------------|
//! | `NodeReady`         | (node conditions)   | its `Ready` condition is not `True`               |
//! | `NodeUnschedulable` | NodeUnschedulable   | it is cordoned, unless the pod tolerates that     |
//! | `TaintToleration`   | TaintToleration     | a `NoSchedule`/`NoExecute` taint is not tolerated |
//! | `NodeAffinity`      | NodeAffinity        | `nodeSelector` or required node affinity fails    |
//! | `NodePorts`         | NodePorts           | a wanted host port is taken                       |
//! | `NodeResourcesFit`  | NodeResourcesFit    | cpu, memory or pod slots would run out            |
//! | `VolumeBinding`     | VolumeBinding       | a claim is missing or unbound (Immediate), or its volume is pinned to another node |
//!
//! Every stage runs, so an explain record lists *every* reason a node was refused, each with
//! the numbers behind it (`Insufficient cpu: requested 500m, used 1800m, allocatable 2`). The
//! one-line unschedulable message counts only the first refusing stage per node, as
//! kube-scheduler (which stops at the first failing plugin) does, so the two read alike.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{PodSpec, Taint, Toleration};
use serde::{Deserialize, Serialize};
use skiff_api::selector::{Operator, Requirement};

use crate::node::{NodeInfo, NodeUsage};
use crate::resources::{HostPort, PodDemand, Resource};

/// The filter stages, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    NodeReady,
    NodeUnschedulable,
    TaintToleration,
    NodeAffinity,
    NodePorts,
    NodeResourcesFit,
    VolumeBinding,
}

/// One reason a node cannot run a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "reason",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Rejection {
    NotReady,
    Unschedulable,
    /// The first taint (in the node's order) that no toleration matches.
    UntoleratedTaint {
        key: String,
        value: String,
        effect: String,
    },
    /// A `nodeSelector` entry the node's labels lack (the first, by key).
    NodeSelector {
        key: String,
        value: String,
    },
    /// No term of required node affinity matched.
    NodeAffinity,
    HostPortInUse {
        port: HostPort,
    },
    TooManyPods {
        allocatable: i64,
    },
    Insufficient {
        resource: Resource,
        requested: i64,
        used: i64,
        allocatable: i64,
    },
    /// A claim the pod uses cannot be used anywhere yet (missing, or unbound and Immediate).
    VolumeClaim {
        message: String,
    },
    /// A ReadWriteOnce claim is in use by a pod on another node.
    VolumeInUse {
        claim: String,
        pod: String,
        node: String,
    },
    /// The claim's volume is pinned to other nodes.
    VolumeNodeAffinity {
        claim: String,
        volume: String,
    },
}

impl Rejection {
    /// The stage that found this.
    pub fn stage(&self) -> Stage {
        match self {
            Rejection::NotReady => Stage::NodeReady,
            Rejection::Unschedulable => Stage::NodeUnschedulable,
            Rejection::UntoleratedTaint { .. } => Stage::TaintToleration,
            Rejection::NodeSelector { .. } | Rejection::NodeAffinity => Stage::NodeAffinity,
            Rejection::HostPortInUse { .. } => Stage::NodePorts,
            Rejection::TooManyPods { .. } | Rejection::Insufficient { .. } => {
                Stage::NodeResourcesFit
            }
            Rejection::VolumeClaim { .. }
            | Rejection::VolumeInUse { .. }
            | Rejection::VolumeNodeAffinity { .. } => Stage::VolumeBinding,
        }
    }

    /// Kubernetes' words for this reason, as counted in `0/3 nodes are available: ...`.
    pub fn reason(&self) -> Cow<'static, str> {
        match self {
            Rejection::NotReady => "node(s) were not ready".into(),
            Rejection::Unschedulable => "node(s) were unschedulable".into(),
            Rejection::UntoleratedTaint { key, value, .. } => {
                format!("node(s) had untolerated taint {{{key}: {value}}}").into()
            }
            Rejection::NodeSelector { .. } | Rejection::NodeAffinity => {
                "node(s) didn't match Pod's node affinity/selector".into()
            }
            Rejection::HostPortInUse { .. } => {
                "node(s) didn't have free ports for the requested pod ports".into()
            }
            Rejection::TooManyPods { .. } => "Too many pods".into(),
            Rejection::Insufficient { resource, .. } => {
                format!("Insufficient {}", resource.name()).into()
            }
            Rejection::VolumeClaim { message } => message.clone().into(),
            Rejection::VolumeNodeAffinity { .. } => {
                "node(s) had volume node affinity conflict".into()
            }
            Rejection::VolumeInUse { .. } => {
                "node(s) unavailable: a ReadWriteOnce claim is in use on another node".into()
            }
        }
    }
}

/// The reason with the facts behind it, for explain records.
impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NotReady => f.write_str("node is not Ready"),
            Rejection::Unschedulable => f.write_str("node is cordoned (spec.unschedulable)"),
            Rejection::UntoleratedTaint { key, value, effect } => {
                write!(f, "untolerated taint {key}={value}:{effect}")
            }
            Rejection::NodeSelector { key, value } => {
                write!(
                    f,
                    "nodeSelector {key}={value} does not match the node's labels"
                )
            }
            Rejection::NodeAffinity => {
                f.write_str("no term of required node affinity matches the node")
            }
            Rejection::HostPortInUse { port } => write!(
                f,
                "host port {}/{} on {} is taken",
                port.port, port.protocol, port.ip
            ),
            Rejection::TooManyPods { allocatable } => {
                write!(f, "Too many pods: all {allocatable} pod slots are taken")
            }
            Rejection::VolumeClaim { message } => f.write_str(message),
            Rejection::VolumeInUse { claim, pod, node } => write!(
                f,
                "claim {claim} is ReadWriteOnce and pod {pod} uses it on node {node}"
            ),
            Rejection::VolumeNodeAffinity { claim, volume } => write!(
                f,
                "volume {volume} of claim {claim} is on another node (its node affinity)"
            ),
            Rejection::Insufficient {
                resource,
                requested,
                used,
                allocatable,
            } => write!(
                f,
                "Insufficient {}: requested {}, used {}, allocatable {}",
                resource.name(),
                resource.format(*requested),
                resource.format(*used),
                resource.format(*allocatable)
            ),
        }
    }
}

/// A pod's placement constraints, prepared once per decision so that checking each node
/// parses nothing.
pub struct PodConstraints<'a> {
    demand: &'a PodDemand,
    node_selector: Option<&'a BTreeMap<String, String>>,
    /// `None`: no required node affinity. Otherwise the node must match one term.
    required_terms: Option<Vec<Term>>,
    tolerations: &'a [Toleration],
    /// Whether the tolerations include the cordon taint, which lets the pod onto cordoned
    /// nodes (DaemonSet pods have it).
    tolerates_cordon: bool,
    /// What the pod's claims require (see [`Volumes`]).
    pub volumes: Volumes,
}

/// What a pod's PersistentVolumeClaims require of a node, worked out from the claims and
/// volumes before filtering.
#[derive(Debug, Clone, Default)]
pub struct Volumes {
    /// A claim that rules out every node, with Kubernetes' words.
    pub blocked: Option<String>,
    /// (claim, volume, the nodes it may be used on): for each bound claim whose volume is
    /// pinned by hostname.
    pub pinned: Vec<(String, String, Vec<String>)>,
    /// (claim, pod, node): a ReadWriteOnce claim another pod already uses on that node.
    pub in_use_on: Vec<(String, String, String)>,
}

/// One `nodeSelectorTerm`: every requirement must hold.
struct Term {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
    /// An empty term, or one with an operator this scheduler does not know, matches no node
    /// (admission should have refused the latter).
    matches_nothing: bool,
}

impl<'a> PodConstraints<'a> {
    pub fn new(spec: &'a PodSpec, demand: &'a PodDemand) -> PodConstraints<'a> {
        let required = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        let required_terms = required.map(|r| {
            r.node_selector_terms
                .iter()
                .map(|term| {
                    let labels = term.match_expressions.iter().flatten().map(requirement);
                    let fields = term.match_fields.iter().flatten().map(requirement);
                    let labels: Option<Vec<_>> = labels.collect();
                    let fields: Option<Vec<_>> = fields.collect();
                    match (labels, fields) {
                        (Some(labels), Some(fields)) => Term {
                            matches_nothing: labels.is_empty() && fields.is_empty(),
                            labels,
                            fields,
                        },
                        _ => Term {
                            labels: Vec::new(),
                            fields: Vec::new(),
                            matches_nothing: true,
                        },
                    }
                })
                .collect()
        });
        let tolerations = spec.tolerations.as_deref().unwrap_or(&[]);
        let cordon = Taint {
            key: "node.kubernetes.io/unschedulable".to_string(),
            effect: "NoSchedule".to_string(),
            ..Taint::default()
        };
        PodConstraints {
            demand,
            node_selector: spec.node_selector.as_ref(),
            required_terms,
            tolerations,
            tolerates_cordon: tolerations.iter().any(|t| tolerates(t, &cordon)),
            volumes: Volumes::default(),
        }
    }
}

/// A `NodeSelectorRequirement` as skiff-api's label requirement (same operators, same
/// matching); `None` for an unknown operator.
fn requirement(r: &k8s_openapi::api::core::v1::NodeSelectorRequirement) -> Option<Requirement> {
    let operator = match r.operator.as_str() {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        "Gt" => Operator::GreaterThan,
        "Lt" => Operator::LessThan,
        _ => return None,
    };
    Some(Requirement {
        key: r.key.clone(),
        operator,
        values: r.values.clone().unwrap_or_default(),
    })
}

/// Runs every filter and appends each reason the node cannot run the pod to `out` (nothing:
/// it can).
pub fn check(pod: &PodConstraints, node: &NodeInfo, usage: &NodeUsage, out: &mut Vec<Rejection>) {
    if !node.ready {
        out.push(Rejection::NotReady);
    }
    if node.unschedulable && !pod.tolerates_cordon {
        out.push(Rejection::Unschedulable);
    }
    check_placement(pod, node, out);
    for wanted in &pod.demand.host_ports {
        if let Some(taken) = usage.host_ports.keys().find(|p| p.conflicts_with(wanted)) {
            out.push(Rejection::HostPortInUse {
                port: taken.clone(),
            });
        }
    }
    check_resources(pod.demand, node, usage, out);
    if let Some(message) = &pod.volumes.blocked {
        out.push(Rejection::VolumeClaim {
            message: message.clone(),
        });
    }
    for (claim, other, on) in &pod.volumes.in_use_on {
        if **on != *node.name {
            out.push(Rejection::VolumeInUse {
                claim: claim.clone(),
                pod: other.clone(),
                node: on.clone(),
            });
        }
    }
    for (claim, volume, nodes) in &pod.volumes.pinned {
        if !nodes.iter().any(|n| **n == *node.name) {
            out.push(Rejection::VolumeNodeAffinity {
                claim: claim.clone(),
                volume: volume.clone(),
            });
        }
    }
}

/// Taints and node affinity: whether the pod may go to the node at all, whatever it holds.
fn check_placement(pod: &PodConstraints, node: &NodeInfo, out: &mut Vec<Rejection>) {
    if let Some(taint) = node
        .taints
        .iter()
        .find(|taint| !pod.tolerations.iter().any(|t| tolerates(t, taint)))
    {
        out.push(Rejection::UntoleratedTaint {
            key: taint.key.clone(),
            value: taint.value.clone().unwrap_or_default(),
            effect: taint.effect.clone(),
        });
    }
    check_affinity(pod, node, out);
}

/// Why a pod with `spec` may not go to `node` by its taints, node selector and required node
/// affinity, leaving out what the node holds (the DaemonSet controller's question: should a
/// daemon pod run there at all?).
pub fn placement_rejections(
    spec: &PodSpec,
    node: &k8s_openapi::api::core::v1::Node,
) -> Vec<Rejection> {
    let demand = PodDemand::default();
    let pod = PodConstraints::new(spec, &demand);
    let mut out = Vec::new();
    check_placement(&pod, &NodeInfo::of(node), &mut out);
    out
}

/// `nodeSelector` (every pair must be a label of the node) and required node affinity (some
/// term must match; within a term, every expression and field requirement).
fn check_affinity(pod: &PodConstraints, node: &NodeInfo, out: &mut Vec<Rejection>) {
    let missing = pod
        .node_selector
        .into_iter()
        .flatten()
        .find(|(key, value)| node.labels.get(*key) != Some(*value));
    if let Some((key, value)) = missing {
        out.push(Rejection::NodeSelector {
            key: key.clone(),
            value: value.clone(),
        });
    }
    if let Some(terms) = &pod.required_terms {
        let matched = terms.iter().any(|term| {
            !term.matches_nothing
                && term.labels.iter().all(|r| r.matches(&node.labels))
                && term.fields.iter().all(|r| r.matches(&node.fields))
        });
        if !matched {
            out.push(Rejection::NodeAffinity);
        }
    }
}

/// Kubernetes' fit check: one more pod slot must be free; cpu and memory are only checked when
/// the pod requests some, so a node overcommitted by other means still takes pods that ask for
/// nothing.
fn check_resources(
    demand: &PodDemand,
    node: &NodeInfo,
    usage: &NodeUsage,
    out: &mut Vec<Rejection>,
) {
    let (alloc, used, wanted) = (&node.allocatable, &usage.requested, &demand.requests);
    if used.pods + 1 > alloc.pods {
        out.push(Rejection::TooManyPods {
            allocatable: alloc.pods,
        });
    }
    for resource in [Resource::Cpu, Resource::Memory] {
        let (requested, used, allocatable) = (
            wanted.get(resource),
            used.get(resource),
            alloc.get(resource),
        );
        if requested > 0 && requested > allocatable - used {
            out.push(Rejection::Insufficient {
                resource,
                requested,
                used,
                allocatable,
            });
        }
    }
}

/// Kubernetes' `Toleration.ToleratesTaint`: an empty effect matches every effect; an empty key
/// matches every key; `Exists` matches any value, `Equal` (the default) compares values. So
/// `{operator: Exists}` alone tolerates everything.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect = toleration.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("") {
        "Exists" => true,
        "" | "Equal" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;

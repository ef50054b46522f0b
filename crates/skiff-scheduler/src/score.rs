//! Scores: among the nodes that can take a pod, which is best? Each scorer gives 0–100; the
//! total is their weighted sum.
//!
//! ## Bin-packing: Kubernetes' `MostAllocated`
//! skiff packs pods onto the fullest nodes that fit, so that small edge clusters keep whole
//! nodes free for big pods (and idle nodes can be powered down). Kubernetes' `MostAllocated`
//! (NodeResourcesFit) was chosen over Nomad's BestFit v3 because it stays in the 0–100 range
//! every other score uses and its arithmetic fits in one line: for each of cpu and memory,
//! `(requested on the node + the pod's request) / allocatable × 100`, then the mean.
//!
//! Worked example (checked by `bin_packing_prefers_the_fuller_node`): a pod asking 500m cpu and
//! 1 GiB; two nodes of 2 cpu / 4 GiB each.
//! - node A already has 500m and 1 GiB requested: cpu (500+500)/2000 = 50, memory
//!   (1+1)/4 = 50 → score 50;
//! - node B has 1000m and 2 GiB: cpu (1000+500)/2000 = 75, memory (2+1)/4 = 75 → score 75.
//!
//! B wins: the pod goes where it leaves the least unused room. A pod that requests nothing is
//! scored as if it asked 100m cpu and 200 MiB (Kubernetes' non-zero defaults), or best-effort
//! pods would all look free and pile up.
//!
//! ## Spreading: replicas of one owner on different nodes
//! For a pod with a controller (a ReplicaSet), `100 × (max − here) / max`, where `here` is how
//! many pods of the same owner the node already has and `max` the most any feasible node has
//! (100 everywhere when none has any). With the default weights (bin-packing 1, spreading 2),
//! spreading wins over packing for replicas, as it should: three replicas on one node would
//! all die with it.
use crate::cache::{NodeState, PodFacts};

/// How much each scorer counts; set at server start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Weights {
    pub bin_packing: i64,
    pub spreading: i64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            bin_packing: 1,
            spreading: 2,
        }
    }
}

/// Kubernetes' defaults for pods that request nothing (`schedutil.DefaultMilliCPURequest`,
/// `DefaultMemoryRequest`).
const DEFAULT_CPU_MILLI: i64 = 100;
const DEFAULT_MEMORY: i64 = 200 << 20;

/// The `MostAllocated` score of `node` for the pod.
pub fn bin_packing(facts: &PodFacts, node: &NodeState) -> i64 {
    let cpu = if facts.requests.cpu_milli == 0 {
        DEFAULT_CPU_MILLI
    } else {
        facts.requests.cpu_milli
    };
    let memory = if facts.requests.memory == 0 {
        DEFAULT_MEMORY
    } else {
        facts.requests.memory
    };
    let used = |requested: i64, asked: i64, allocatable: i64| -> i64 {
        if allocatable <= 0 {
            return 0;
        }
        ((requested + asked) * 100 / allocatable).clamp(0, 100)
    };
    let cpu_score = used(node.requested.cpu_milli, cpu, node.allocatable.cpu_milli);
    let memory_score = used(node.requested.memory, memory, node.allocatable.memory);
    (cpu_score + memory_score) / 2
}

/// The spreading score: fewer pods of the same owner on the node is better.
pub fn spreading(facts: &PodFacts, node: &NodeState, max_same_owner: usize) -> i64 {
    let Some(owner) = &facts.owner else {
        return 0;
    };
    if max_same_owner == 0 {
        return 100;
    }
    let here = node.owners.get(owner).copied().unwrap_or(0);
    (100 * (max_same_owner.saturating_sub(here)) / max_same_owner) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resources;

    fn node(cpu_used: i64, mem_used_gib: i64) -> NodeState {
        NodeState {
            allocatable: Resources {
                cpu_milli: 2000,
                memory: 4 << 30,
                pods: 110,
            },
            requested: Resources {
                cpu_milli: cpu_used,
                memory: mem_used_gib << 30,
                pods: 0,
            },
            ..NodeState::default()
        }
    }

    #[test]
    fn bin_packing_prefers_the_fuller_node() {
        let facts = PodFacts {
            requests: Resources {
                cpu_milli: 500,
                memory: 1 << 30,
                pods: 1,
            },
            ..PodFacts::default()
        };
        assert_eq!(bin_packing(&facts, &node(500, 1)), 50);
        assert_eq!(bin_packing(&facts, &node(1000, 2)), 75);
        // Nothing requested: scored as 100m / 200Mi. cpu 100/2000 = 5, memory 200Mi/4Gi = 4
        // (integer percent) → (5 + 4) / 2 = 4.
        assert_eq!(bin_packing(&PodFacts::default(), &node(0, 0)), 4);
    }

    #[test]
    fn spreading_prefers_nodes_without_siblings() {
        let facts = PodFacts {
            owner: Some("rs-uid".into()),
            ..PodFacts::default()
        };
        let mut busy = node(0, 0);
        busy.owners.insert("rs-uid".into(), 2);
        let empty = node(0, 0);
        assert_eq!(spreading(&facts, &busy, 2), 0);
        assert_eq!(spreading(&facts, &empty, 2), 100);
        assert_eq!(spreading(&facts, &empty, 0), 100);
        assert_eq!(
            spreading(&PodFacts::default(), &empty, 0),
            0,
            "no owner, no opinion"
        );
    }
}

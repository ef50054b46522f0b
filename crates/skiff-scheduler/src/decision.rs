//! The explain record: where a pod went and why, kept so `skiff explain pod NAME` can answer
//! afterwards.
//!
//! A [`Decision`] holds one [`NodeVerdict`] per node the scheduler knew: either the filters'
//! reasons for refusing it, or its score from each scorer and the total. Then the outcome: the
//! chosen node, or Kubernetes' unschedulable message. [`render`] prints it as a table.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::filter::Rejection;
use crate::scheduler::PodKey;
use crate::score::{Scores, Weights};

/// One scheduling decision and everything that went into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub pod: PodKey,
    pub weights: Weights,
    /// One verdict per node, sorted by node name.
    pub nodes: Vec<NodeVerdict>,
    /// How many verdicts [`Decision::trimmed`] left out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: usize,
    pub outcome: Outcome,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// One node's part in a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeVerdict {
    pub node: Arc<str>,
    pub verdict: Verdict,
}

/// What the pipeline made of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Passed every filter, and scored this.
    Feasible(Scores),
    /// Refused, for these reasons (every one, in filter order).
    Rejected(Vec<Rejection>),
}

/// What became of the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    /// Bind the pod here.
    Scheduled { node: Arc<str> },
    /// No node can run the pod; `message` is what `kubectl describe` shows
    /// (`0/3 nodes are available: ...`).
    Unschedulable { message: String },
}

impl Decision {
    /// The chosen node, if there is one.
    pub fn node(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Scheduled { node } => Some(node),
            Outcome::Unschedulable { .. } => None,
        }
    }

    /// The unschedulable message, if no node fit.
    pub fn message(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Scheduled { .. } => None,
            Outcome::Unschedulable { message } => Some(message),
        }
    }

    /// A copy small enough to store on the pod: the `best` highest-scoring feasible nodes (the
    /// chosen one always among them) and the first `rejected` refused nodes by name. A decision
    /// over a thousand nodes would otherwise make every pod object tens of kilobytes larger.
    pub fn trimmed(&self, best: usize, rejected: usize) -> Decision {
        // Feasible nodes by index: comparing names here cost ~10,000 string compares per pod
        // at 1,000 nodes.
        let mut feasible: Vec<(i64, usize)> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match v.verdict {
                Verdict::Feasible(scores) => Some((scores.total, i)),
                Verdict::Rejected(_) => None,
            })
            .collect();
        // Highest total first; equal totals by name, as the choice was made — and verdicts
        // are sorted by name, so by index (on a uniform cluster every total ties, and
        // comparing names cost a string compare per step). Only the first `best` need
        // ordering, so partition around the cut before sorting them.
        let by_rank = |a: &(i64, usize), b: &(i64, usize)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
        if best > 0 && best < feasible.len() {
            feasible.select_nth_unstable_by(best - 1, by_rank);
        }
        feasible.truncate(best);
        let mut keep = vec![false; self.nodes.len()];
        for (_, i) in &feasible {
            keep[*i] = true;
        }
        // The chosen node is the best-ranked one unless the record was edited; look it up by
        // pointer first (the outcome shares the verdict's name), by name only as a fallback.
        if let Outcome::Scheduled { node } = &self.outcome {
            let chosen = self
                .nodes
                .iter()
                .position(|v| Arc::ptr_eq(&v.node, node))
                .or_else(|| self.nodes.iter().position(|v| v.node == *node));
            if let Some(chosen) = chosen {
                keep[chosen] = true;
            }
        }
        let mut rejected_left = rejected;
        let nodes: Vec<NodeVerdict> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, v)| match v.verdict {
                Verdict::Feasible(_) => keep[*i],
                Verdict::Rejected(_) if rejected_left > 0 => {
                    rejected_left -= 1;
                    true
                }
                Verdict::Rejected(_) => false,
            })
            .map(|(_, v)| v.clone())
            .collect();
        Decision {
            pod: self.pod.clone(),
            weights: self.weights,
            omitted: self.omitted + self.nodes.len() - nodes.len(),
            nodes,
            outcome: self.outcome.clone(),
        }
    }

    /// The decision as a table; see [`render`].
    pub fn render(&self) -> String {
        render(self)
    }
}

/// Kubernetes' message for a pod no node can run:
/// `0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 2 Insufficient cpu.`
///
/// Each refused node contributes the reasons of its *first* refusing stage (kube-scheduler stops
/// at the first failing plugin), each distinct reason once. The entries are `"<count>
/// <reason>"` strings sorted as strings, as Go's `sort.Strings` sorts them, so `"1 node(s)..."`
/// comes before `"2 Insufficient cpu"`.
pub fn unschedulable_message(nodes: &[NodeVerdict]) -> String {
    if nodes.is_empty() {
        return "no nodes available to schedule pods".to_string();
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for verdict in nodes {
        let Verdict::Rejected(reasons) = &verdict.verdict else {
            continue;
        };
        let Some(first) = reasons.first().map(Rejection::stage) else {
            continue;
        };
        let mut seen: Vec<String> = Vec::new();
        for reason in reasons.iter().take_while(|r| r.stage() == first) {
            let text = reason.reason().into_owned();
            if !seen.contains(&text) {
                seen.push(text);
            }
        }
        for text in seen {
            *counts.entry(text).or_default() += 1;
        }
    }
    let mut entries: Vec<String> = counts
        .into_iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    entries.sort();
    format!(
        "0/{} nodes are available: {}.",
        nodes.len(),
        entries.join(", ")
    )
}

/// The decision as a table for people:
///
/// ```text
/// pod default/web-1: scheduled to node-a
/// weights: bin-packing 1, spreading 2
///
/// NODE    BIN-PACKING  SPREADING  TOTAL  VERDICT
/// node-a           43        100    243  chosen
/// node-b           25        100    225  feasible
/// node-c            -          -      -  Insufficient cpu: requested 500m, used 1800m, allocatable 2
/// ```
///
/// The chosen node comes first, then the other feasible nodes best first, then the refused
/// ones by name.
pub fn render(decision: &Decision) -> String {
    let mut out = String::new();
    let outcome = match &decision.outcome {
        Outcome::Scheduled { node } => format!("scheduled to {node}"),
        Outcome::Unschedulable { message } => format!("unschedulable: {message}"),
    };
    let _ = writeln!(out, "pod {}: {outcome}", decision.pod);
    let _ = writeln!(
        out,
        "weights: bin-packing {}, spreading {}\n",
        decision.weights.bin_packing, decision.weights.spreading
    );

    let chosen = decision.node();
    let mut rows: Vec<&NodeVerdict> = decision.nodes.iter().collect();
    let rank = |v: &NodeVerdict| match v.verdict {
        _ if Some(&*v.node) == chosen => (0, 0),
        Verdict::Feasible(scores) => (1, -scores.total),
        Verdict::Rejected(_) => (2, 0),
    };
    rows.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.node.cmp(&b.node)));

    let width = rows.iter().map(|v| v.node.len()).max().unwrap_or(0).max(4);
    let _ = writeln!(
        out,
        "{:<width$}  BIN-PACKING  SPREADING  TOTAL  VERDICT",
        "NODE"
    );
    for row in rows {
        let _ = match &row.verdict {
            Verdict::Feasible(s) => writeln!(
                out,
                "{:<width$}  {:>11}  {:>9}  {:>5}  {}",
                row.node,
                s.bin_packing,
                s.spreading,
                s.total,
                if Some(&*row.node) == chosen {
                    "chosen"
                } else {
                    "feasible"
                }
            ),
            Verdict::Rejected(reasons) => {
                let why: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                writeln!(
                    out,
                    "{:<width$}  {:>11}  {:>9}  {:>5}  {}",
                    row.node,
                    "-",
                    "-",
                    "-",
                    why.join("; ")
                )
            }
        };
    }
    if decision.omitted > 0 {
        let _ = writeln!(out, "({} more nodes not kept)", decision.omitted);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Resource;

    fn rejected(node: &str, reasons: Vec<Rejection>) -> NodeVerdict {
        NodeVerdict {
            node: node.into(),
            verdict: Verdict::Rejected(reasons),
        }
    }

    fn feasible(node: &str, bin_packing: i64, spreading: i64) -> NodeVerdict {
        NodeVerdict {
            node: node.into(),
            verdict: Verdict::Feasible(Scores::new(Weights::default(), bin_packing, spreading)),
        }
    }

    fn insufficient(resource: Resource) -> Rejection {
        Rejection::Insufficient {
            resource,
            requested: 2000,
            used: 1000,
            allocatable: 2000,
        }
    }

    fn unreachable() -> Rejection {
        Rejection::UntoleratedTaint {
            key: "node.kubernetes.io/unreachable".into(),
            value: String::new(),
            effect: "NoExecute".into(),
        }
    }

    #[test]
    fn the_message_reads_as_kubernetes_writes_it() {
        let nodes = vec![
            rejected("a", vec![unreachable(), insufficient(Resource::Cpu)]),
            rejected("b", vec![insufficient(Resource::Cpu)]),
            rejected(
                "c",
                vec![insufficient(Resource::Cpu), insufficient(Resource::Memory)],
            ),
        ];
        // Node a counts only its taint (the first stage that refused it); node c counts both
        // of its resource reasons. Sorted as strings: "1 Insufficient memory" < "1 node(s)..."
        // < "2 Insufficient cpu".
        assert_eq!(
            unschedulable_message(&nodes),
            "0/3 nodes are available: 1 Insufficient memory, \
             1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, \
             2 Insufficient cpu."
        );
        assert_eq!(
            unschedulable_message(&[]),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn the_example_from_the_issue() {
        let nodes = vec![
            rejected("a", vec![unreachable()]),
            rejected("b", vec![insufficient(Resource::Cpu)]),
            rejected("c", vec![insufficient(Resource::Cpu)]),
        ];
        assert_eq!(
            unschedulable_message(&nodes),
            "0/3 nodes are available: 1 node(s) had untolerated taint \
             {node.kubernetes.io/unreachable: }, 2 Insufficient cpu."
        );
    }

    fn sample() -> Decision {
        Decision {
            pod: PodKey::new("default", "web-1"),
            weights: Weights::default(),
            nodes: vec![
                feasible("node-a", 43, 100),
                feasible("node-b", 25, 100),
                rejected("node-c", vec![insufficient(Resource::Cpu)]),
            ],
            omitted: 0,
            outcome: Outcome::Scheduled {
                node: "node-a".into(),
            },
        }
    }

    #[test]
    fn render_shows_every_node() {
        let text = render(&sample());
        let want = "\
pod default/web-1: scheduled to node-a
weights: bin-packing 1, spreading 2

NODE    BIN-PACKING  SPREADING  TOTAL  VERDICT
node-a           43        100    243  chosen
node-b           25        100    225  feasible
node-c            -          -      -  Insufficient cpu: requested 2, used 1, allocatable 2
";
        assert_eq!(text, want);
    }

    #[test]
    fn decisions_survive_json() {
        let decision = sample();
        let json = serde_json::to_string(&decision).expect("serializes");
        let back: Decision = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, decision);
        assert!(
            json.contains(r#""verdict":{"rejected":[{"reason":"insufficient","resource":"cpu""#)
        );
    }

    #[test]
    fn trimming_keeps_the_best_and_the_chosen() {
        let trimmed = sample().trimmed(1, 0);
        let names: Vec<&str> = trimmed.nodes.iter().map(|v| &*v.node).collect();
        assert_eq!(names, ["node-a"]);
        assert_eq!(trimmed.omitted, 2);
        assert!(render(&trimmed).ends_with("(2 more nodes not kept)\n"));
    }
}

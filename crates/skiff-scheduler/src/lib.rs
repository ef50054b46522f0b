//! skiff-scheduler: which node a pod runs on, and why.
//!
//! The pipeline is Nomad's and kube-scheduler's: **filter** out the nodes that cannot run the
//! pod, **score** the ones that can, **bind** the pod to the best. Every decision is kept as a
//! [`Decision`]: each node's verdict (the reasons it was refused, or its scores) and the
//! outcome, so `skiff explain pod NAME` can show afterwards why a pod went where it went.
//!
//! Everything but [`runner`] is pure and synchronous: the [`Scheduler`] takes watch events in
//! and hands decisions out, and the tests drive it directly.
//!
//! ## Layout
//! - [`quantity`]: `500m`, `1.5Gi`, `1e3` as exact integers (millicores, bytes).
//! - [`resources`]: what a pod asks of a node (Kubernetes' init-container and limits rules).
//! - [`node`]: a node's facts, and running totals of what its pods take.
//! - [`filter`]: the feasibility checks, each refusal with Kubernetes' reason and the numbers.
//! - [`score`]: bin-packing (`MostAllocated`) and spreading, 0–100 each, and the [`Weights`].
//! - [`decision`]: the explain record, Kubernetes' unschedulable message, and [`render`].
//! - [`scheduler`]: the [`Scheduler`] state machine: nodes, pods, the queue, parked pods, and
//!   batches of decisions with each binding *assumed* before the next pod is placed.
//! - [`runner`]: the thin loop: watches, binds through the API, reports unschedulable pods.
//! - `testing` (tests only): builders such as `pod("a").cpu("500m").on("node-1")`.

pub mod claims;
pub mod decision;
pub mod filter;
pub mod node;
pub mod resources;
pub mod runner;
pub mod scheduler;
pub mod score;

#[cfg(test)]
mod testing;

pub use decision::{render, Decision, NodeVerdict, Outcome, Verdict};
pub use filter::Rejection;
pub use scheduler::{PodKey, Scheduler};
pub use score::{Scores, Weights};
/// Quantities are parsed by skiff-api's exact parser, shared with the agent.
pub use skiff_api::quantity;

/// The one error type of skiff-scheduler: a resource quantity it could not read.
pub use skiff_api::quantity::Error;

//! skiff-scheduler: which node a pod runs on, and why.
//!
//! The pipeline is Nomad's and kube-scheduler's: **filter** the nodes that cannot take the pod,
//! **score** the ones that can, **bind** the pod to the best. Every decision is kept as an
//! [`Decision`] record (each node's verdict: the reasons it was filtered out, or its scores),
//! so `skiff explain pod NAME` can show afterwards why a pod went where it went.
//!
//! ## Layout
//! - [`resources`]: quantities (`500m`, `64Mi`) and a pod's effective requests.
//! - [`filter`]: the feasibility checks, each with Kubernetes' reason text.
//! - [`score`]: bin-packing and spreading, 0–100 each, and the weights.
//! - [`cache`]: the [`Scheduler`] state machine: nodes, bound pods, the pending queue,
//!   decisions for a batch with each binding *assumed* before the next pod is placed.
//! - [`runner`]: the thin loop: watches, binds through the API, reports unschedulable pods.
pub mod cache;
pub mod filter;
pub mod resources;
pub mod runner;
pub mod score;

pub use cache::{Decision, NodeVerdict, Scheduler};
pub use score::Weights;

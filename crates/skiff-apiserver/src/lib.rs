//! skiff-apiserver: skiff's Kubernetes-shaped HTTPS API.
//!
//! kubectl and the Python client talk to this crate as they would to a real kube-apiserver:
//! discovery tells them which resources exist, OpenAPI lets `kubectl apply` leave validation to
//! the server, and everything is served over TLS so that bearer tokens are sent at all.
//!
//! ## Layout
//! - [`pki`]: the cluster CA, serving certificates, secrets, join tokens and kubeconfigs on disk.
//! - [`discovery`]: `/api`, `/apis` and the per-group-version resource lists, aggregated and
//!   legacy, generated from `skiff_api::resources::RESOURCES`.
//! - [`openapi`]: the `/openapi/v3` index and per-group-version documents.
//! - [`metrics`]: Prometheus metrics for requests, Raft and watches.
//! - [`measurements`]: `metrics.k8s.io` and `custom.metrics.k8s.io`, fetched from the agents
//!   when asked and kept in memory only.
//! - [`app`]: shared state, the router, serving over TLS (API and Raft on one port).
//! - [`audit`]: the audit log (`audit.k8s.io/v1` Events, Metadata level, rotated).
//! - [`inflight`]: limits on requests in flight (429 over them), with a share kept for the system.
//! - [`auth`]: authentication, impersonation, RBAC, escalation checks, the access reviews and
//!   the default roles.
//! - [`target`]: parsing a resource path into resource, namespace, name and subresource.
//! - [`query`]: the query parameters of resource requests.
//! - [`subresources`]: the table of subresources served by their own modules: pod logs and
//!   exec ([`pod_streams`], passed on to the pod's node agent), binding ([`binding`]), scale
//!   ([`scale`]).
//! - [`nodes`]: node heartbeats, kept in memory on the leader, and agents' certificates.
//! - [`objects`]: the generic verbs on objects — get, list, create, update, patch, delete.
//! - [`quota`]: ResourceQuota admission (charged in the object's own write) and upkeep.
//! - [`registry`]: what is special about some resources, one strategy per file (pods,
//!   services, namespaces, leases, workloads).
//! - [`service_ips`]: the allocators behind the Service strategy: ClusterIPs, node ports, and
//!   the claims that keep two members from handing out one address.
//! - [`watch`]: `?watch=true` streams with resume, bookmarks and 410.
//! - [`tables`]: `Table` responses (server-side printing) for `kubectl get`.
//! - [`cluster`]: joining servers, listing and removing members.
//! - [`secrets_encryption`]: rotating the key Secrets are sealed with, on every server.
//! - [`cluster_network`]: the cluster and service CIDRs agents ask for.
//! - [`respond`]: JSON responses, `Status` errors, and store errors as Kubernetes errors.
pub mod app;
pub mod audit;
pub mod auth;
pub mod binding;
pub mod cluster;
pub mod cluster_network;
pub mod discovery;
pub mod inflight;
pub mod kubernetes_service;
pub mod measurements;
pub mod metrics;
pub mod nodes;
pub mod objects;
pub mod openapi;
pub mod pki;
pub mod pod_streams;
pub mod query;
pub mod quota;
pub mod registry;
pub mod respond;
pub mod scale;
pub mod secrets_encryption;
pub mod service_ips;
pub mod subresources;
pub mod tables;
pub mod target;
pub mod watch;

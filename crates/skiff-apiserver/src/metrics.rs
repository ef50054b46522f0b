//! Prometheus metrics for `GET /metrics`: API requests, Raft progress and open watches.
//!
//! Request metrics use kube-apiserver's names, so existing dashboards and alerts work:
//! - `apiserver_request_total{verb,resource,code}`: one count per finished request.
//! - `apiserver_request_duration_seconds{verb,resource}`: latency, without long-running
//!   requests (`WATCH`, `CONNECT`), whose duration is how long a client stayed, not how fast
//!   skiff answered.
//!
//! Raft gauges are skiff's own (`skiff_raft_*`); the server samples them from openraft's
//! metrics and hands them over as one [`RaftGauges`] value.
//!
//! [`Metrics`] is cheap to share: every metric is internally reference-counted and atomic, so
//! handlers record through `&Metrics` without locks of their own.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Content-Type of [`Metrics::render`]'s output (OpenMetrics text, which Prometheus reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency buckets from 0.5 ms (a read served from memory) to 10 s (a write stuck waiting for a
/// Raft quorum).
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What a finished resource request counts as: set on its response by the handler, read by the
/// metrics layer (`app.rs`'s `observe`), which records it with the status code and duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    /// kube-apiserver's verb: `GET`, `LIST`, `WATCH`, `CREATE`, `CONNECT`, ...
    pub verb: &'static str,
    /// The plural resource (`pods`) or a subresource path (`pods/log`).
    pub resource: &'static str,
}

impl Counted {
    pub fn new(verb: &'static str, resource: &'static str) -> Counted {
        Counted { verb, resource }
    }

    /// `response`, marked to be counted as this.
    pub fn on(self, mut response: axum::response::Response) -> axum::response::Response {
        response.extensions_mut().insert(self);
        response
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    verb: String,
    resource: String,
}

/// One sample of this node's Raft state, as the server reads it from openraft.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftGauges {
    pub term: u64,
    pub is_leader: bool,
    /// The current leader's node id, `None` during an election.
    pub leader_id: Option<u64>,
    /// Highest log index known to be committed by a quorum.
    pub commit_index: u64,
    /// Highest log index applied to this node's state machine.
    pub last_applied: u64,
    /// The store's resource version (the log index of the last write it applied).
    pub revision: u64,
}

/// Every metric the API server exports, registered once at start-up.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
    raft_term: Gauge,
    raft_is_leader: Gauge,
    /// -1 while no leader is known.
    raft_leader_id: Gauge,
    raft_commit_index: Gauge,
    raft_last_applied: Gauge,
    raft_apply_lag: Gauge,
    store_revision: Gauge,
    watchers: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: Family<DurationLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        // prometheus-client appends `_total` to counter names itself.
        registry.register(
            "apiserver_request",
            "API requests by verb, resource and HTTP status code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "API request latency in seconds, long-running requests excluded",
            durations.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let raft_term = gauge("skiff_raft_term", "Current Raft term");
        let raft_is_leader = gauge("skiff_raft_is_leader", "1 if this node is the Raft leader");
        let raft_leader_id = gauge(
            "skiff_raft_leader_id",
            "Node id of the Raft leader, -1 if unknown",
        );
        let raft_commit_index = gauge(
            "skiff_raft_commit_index",
            "Highest committed Raft log index",
        );
        let raft_last_applied = gauge(
            "skiff_raft_last_applied",
            "Highest Raft log index applied locally",
        );
        let raft_apply_lag = gauge(
            "skiff_raft_apply_lag",
            "Committed entries not yet applied locally",
        );
        let store_revision = gauge(
            "skiff_store_revision",
            "Resource version of the local store",
        );
        let watchers = gauge("skiff_watchers", "Open watch streams");
        Self {
            registry,
            requests,
            durations,
            raft_term,
            raft_is_leader,
            raft_leader_id,
            raft_commit_index,
            raft_last_applied,
            raft_apply_lag,
            store_revision,
            watchers,
        }
    }

    /// Records one finished request. `verb` is kube-apiserver's (`GET`, `LIST`, `WATCH`,
    /// `CREATE`, `PATCH`, …); `resource` the plural name (`pods`), or a subresource path
    /// (`pods/status`).
    pub fn observe_request(&self, verb: &str, resource: &str, code: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.to_string(),
                resource: resource.to_string(),
                code: code.to_string(),
            })
            .inc();
        let long_running =
            verb.eq_ignore_ascii_case("watch") || verb.eq_ignore_ascii_case("connect");
        if !long_running {
            self.durations
                .get_or_create(&DurationLabels {
                    verb: verb.to_string(),
                    resource: resource.to_string(),
                })
                .observe(seconds);
        }
    }

    /// Replaces every Raft gauge with `sample`.
    pub fn set_raft(&self, sample: RaftGauges) {
        self.raft_term.set(clamp(sample.term));
        self.raft_is_leader.set(i64::from(sample.is_leader));
        self.raft_leader_id.set(sample.leader_id.map_or(-1, clamp));
        self.raft_commit_index.set(clamp(sample.commit_index));
        self.raft_last_applied.set(clamp(sample.last_applied));
        // A follower can briefly know of fewer commits than it applied from a snapshot: no lag.
        self.raft_apply_lag.set(clamp(
            sample.commit_index.saturating_sub(sample.last_applied),
        ));
        self.store_revision.set(clamp(sample.revision));
    }

    /// A watch stream opened.
    pub fn watchers_inc(&self) {
        self.watchers.inc();
    }

    /// A watch stream closed.
    pub fn watchers_dec(&self) {
        self.watchers.dec();
    }

    /// Every metric in the text exposition format, ending with `# EOF`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // The encoder's only errors are the writer's, and writing to a String cannot fail.
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding metrics into a String cannot fail");
        out
    }
}

/// Gauges are signed 64-bit; Raft indices will not reach 2^63, but saturate rather than wrap.
fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_shows_every_metric_after_observations() {
        let metrics = Metrics::new();
        metrics.observe_request("GET", "pods", 200, 0.003);
        metrics.observe_request("WATCH", "pods", 200, 120.0);
        metrics.set_raft(RaftGauges {
            term: 3,
            is_leader: true,
            leader_id: Some(1),
            commit_index: 42,
            last_applied: 40,
            revision: 40,
        });
        metrics.watchers_inc();
        metrics.watchers_inc();
        metrics.watchers_dec();
        let text = metrics.render();

        let expected = [
            r#"apiserver_request_total{verb="GET",resource="pods",code="200"} 1"#,
            r#"apiserver_request_total{verb="WATCH",resource="pods",code="200"} 1"#,
            r#"apiserver_request_duration_seconds_bucket{le="0.005",verb="GET",resource="pods"} 1"#,
            "skiff_raft_term 3",
            "skiff_raft_is_leader 1",
            "skiff_raft_leader_id 1",
            "skiff_raft_commit_index 42",
            "skiff_raft_last_applied 40",
            "skiff_raft_apply_lag 2",
            "skiff_store_revision 40",
            "skiff_watchers 1",
            "# EOF",
        ];
        for line in expected {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        // Watches are counted but kept out of the latency histogram.
        assert!(
            !text.contains(r#"apiserver_request_duration_seconds_count{verb="WATCH""#),
            "{text}"
        );
    }

    #[test]
    fn unknown_leader_is_minus_one() {
        let metrics = Metrics::new();
        metrics.set_raft(RaftGauges::default());
        assert!(metrics.render().contains("skiff_raft_leader_id -1"));
    }
}

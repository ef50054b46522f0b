//! A [`Sample`] as Prometheus text (format 0.0.4), under the names Prometheus setups already
//! query: cAdvisor's for `/metrics/cadvisor` (and `/metrics`), kubelet's resource metrics for
//! `/metrics/resource`.
//!
//! Written by hand: the format is lines of `name{label="value",...} value [timestamp_ms]`,
//! each family after its `# HELP` and `# TYPE` lines; label values escape backslash, double
//! quote and newline. (The API server's `prometheus_client` registry suits counters updated in
//! place; these are a snapshot rendered whole.)
use std::fmt::Write;

use skiff_api::metrics::{ContainerStats, PodStats};

use super::Sample;

/// The Content-Type of both renderings.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// cAdvisor's container metrics, labelled as kubelet's `/metrics/cadvisor` labels them
/// (`container`, `id` = the cgroup, `namespace`, `pod`), the node's memory, and skiff's own
/// count of proxied connections.
pub fn cadvisor(sample: &Sample) -> String {
    let mut out = String::new();
    let at = Some(sample.taken_at.as_millisecond());
    let containers: Vec<([(&str, &str); 4], &ContainerStats)> = sample
        .summary
        .pods
        .iter()
        .flat_map(|pod| pod.containers.iter().map(move |c| (pod, c)))
        .map(|(pod, c)| {
            let id = sample
                .cgroups
                .get(&(pod.pod_ref.uid.clone(), c.name.clone()))
                .map_or("", String::as_str);
            let labels = [
                ("container", c.name.as_str()),
                ("id", id),
                ("namespace", pod.pod_ref.namespace.as_str()),
                ("pod", pod.pod_ref.name.as_str()),
            ];
            (labels, c)
        })
        .collect();
    let each = |value: fn(&ContainerStats) -> Option<f64>| {
        containers
            .iter()
            .filter_map(move |(labels, c)| Some((*labels, value(c)?)))
    };
    family(
        &mut out,
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        "counter",
        at,
        each(|c| cpu_seconds(c.cpu.as_ref()?.usage_core_nano_seconds)),
    );
    family(
        &mut out,
        "container_memory_cache",
        "Number of bytes of page cache memory.",
        "gauge",
        at,
        each(|c| bytes(c.memory.as_ref()?.page_cache_bytes)),
    );
    family(
        &mut out,
        "container_memory_rss",
        "Size of RSS in bytes.",
        "gauge",
        at,
        each(|c| bytes(c.memory.as_ref()?.rss_bytes)),
    );
    family(
        &mut out,
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        "gauge",
        at,
        each(|c| bytes(c.memory.as_ref()?.usage_bytes)),
    );
    family(
        &mut out,
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        "gauge",
        at,
        each(|c| bytes(c.memory.as_ref()?.working_set_bytes)),
    );
    family(
        &mut out,
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        "gauge",
        at,
        each(|c| start_seconds(c.start_time.as_deref()?)),
    );
    family(
        &mut out,
        "machine_memory_bytes",
        "Amount of memory installed on the machine.",
        "gauge",
        None,
        sample.machine_memory_bytes.map(|b| ([], b as f64)),
    );
    family(
        &mut out,
        "skiff_proxy_connections_total",
        "Connections (and UDP sessions) the node's service proxy forwarded, by Service.",
        "counter",
        None,
        sample.connections.iter().map(|((namespace, service), n)| {
            (
                [
                    ("namespace", namespace.as_str()),
                    ("service", service.as_str()),
                ],
                *n as f64,
            )
        }),
    );
    out
}

/// kubelet's resource metrics (`/metrics/resource`, what metrics-server can scrape instead
/// of the Summary), each with the sample's time in milliseconds as kubelet writes them.
pub fn resource(sample: &Sample) -> String {
    let mut out = String::new();
    let at = Some(sample.taken_at.as_millisecond());
    let pods = &sample.summary.pods;
    let containers = || {
        pods.iter().flat_map(|pod: &PodStats| {
            pod.containers.iter().map(move |c| {
                let labels = [
                    ("container", c.name.as_str()),
                    ("namespace", pod.pod_ref.namespace.as_str()),
                    ("pod", pod.pod_ref.name.as_str()),
                ];
                (labels, c)
            })
        })
    };
    let node = &sample.summary.node;
    family(
        &mut out,
        "container_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        "counter",
        at,
        containers()
            .filter_map(|(l, c)| Some((l, cpu_seconds(c.cpu.as_ref()?.usage_core_nano_seconds)?))),
    );
    family(
        &mut out,
        "container_memory_working_set_bytes",
        "[STABLE] Current working set of the container in bytes",
        "gauge",
        at,
        containers().filter_map(|(l, c)| Some((l, bytes(c.memory.as_ref()?.working_set_bytes)?))),
    );
    family(
        &mut out,
        "container_start_time_seconds",
        "[STABLE] Start time of the container since unix epoch in seconds",
        "gauge",
        at,
        containers().filter_map(|(l, c)| Some((l, start_seconds(c.start_time.as_deref()?)?))),
    );
    family(
        &mut out,
        "node_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        "counter",
        at,
        node.cpu
            .as_ref()
            .and_then(|c| cpu_seconds(c.usage_core_nano_seconds))
            .map(|v| ([], v)),
    );
    family(
        &mut out,
        "node_memory_working_set_bytes",
        "[STABLE] Current working set of the node in bytes",
        "gauge",
        at,
        node.memory
            .as_ref()
            .and_then(|m| bytes(m.working_set_bytes))
            .map(|v| ([], v)),
    );
    family(
        &mut out,
        "pod_cpu_usage_seconds_total",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
        at,
        pods.iter().filter_map(|p| {
            Some((
                pod_labels(p),
                cpu_seconds(p.cpu.as_ref()?.usage_core_nano_seconds)?,
            ))
        }),
    );
    family(
        &mut out,
        "pod_memory_working_set_bytes",
        "[STABLE] Current working set of the pod in bytes",
        "gauge",
        at,
        pods.iter()
            .filter_map(|p| Some((pod_labels(p), bytes(p.memory.as_ref()?.working_set_bytes)?))),
    );
    family(
        &mut out,
        "scrape_error",
        "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
        None,
        Some(([], 0.0)),
    );
    out
}

fn pod_labels(pod: &PodStats) -> [(&'static str, &str); 2] {
    [
        ("namespace", pod.pod_ref.namespace.as_str()),
        ("pod", pod.pod_ref.name.as_str()),
    ]
}

fn cpu_seconds(nanoseconds: Option<u64>) -> Option<f64> {
    nanoseconds.map(|ns| ns as f64 / 1e9)
}

fn bytes(value: Option<u64>) -> Option<f64> {
    value.map(|b| b as f64)
}

fn start_seconds(rfc3339: &str) -> Option<f64> {
    let t: jiff::Timestamp = rfc3339.parse().ok()?;
    Some(t.as_millisecond() as f64 / 1000.0)
}

/// One metric family: its `# HELP` and `# TYPE` lines, then a line per series.
fn family<'a, const N: usize>(
    out: &mut String,
    name: &str,
    help: &str,
    kind: &str,
    timestamp_ms: Option<i64>,
    series: impl IntoIterator<Item = ([(&'static str, &'a str); N], f64)>,
) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in series {
        out.push_str(name);
        if N > 0 {
            out.push('{');
            for (i, (label, text)) in labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(label);
                out.push_str("=\"");
                escape(text, out);
                out.push('"');
            }
            out.push('}');
        }
        let _ = match timestamp_ms {
            Some(ms) => writeln!(out, " {value} {ms}"),
            None => writeln!(out, " {value}"),
        };
    }
}

/// A label value as the text format wants it: `\` → `\\`, `"` → `\"`, newline → `\n`.
fn escape(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::metrics::{CpuStats, MemoryStats, NodeStats, PodReference, Summary};

    #[test]
    fn label_values_are_escaped() {
        let cases = [
            ("plain", "plain"),
            (r"back\slash", r"back\\slash"),
            (r#"say "hi""#, r#"say \"hi\""#),
            ("two\nlines", r"two\nlines"),
        ];
        for (value, want) in cases {
            let mut out = String::new();
            escape(value, &mut out);
            assert_eq!(out, want, "{value:?}");
        }
    }

    fn sample() -> Sample {
        let time = "2024-06-01T00:00:10Z".to_string();
        let container = ContainerStats {
            name: "app".into(),
            start_time: Some("2024-06-01T00:00:00Z".into()),
            cpu: Some(CpuStats {
                time: time.clone(),
                usage_nano_cores: Some(100_000_000),
                usage_core_nano_seconds: Some(1_500_000_000),
            }),
            memory: Some(MemoryStats {
                time: time.clone(),
                working_set_bytes: Some(194_560),
                usage_bytes: Some(204_800),
                rss_bytes: Some(81_920),
                page_cache_bytes: Some(40_960),
                available_bytes: None,
            }),
        };
        let pod = PodStats {
            pod_ref: PodReference {
                name: "web".into(),
                namespace: "de\"fault".into(),
                uid: "u-1".into(),
            },
            cpu: container.cpu.clone(),
            memory: container.memory.clone(),
            containers: vec![container],
        };
        Sample {
            summary: Summary {
                node: NodeStats {
                    node_name: "n1".into(),
                    cpu: Some(CpuStats {
                        time: time.clone(),
                        usage_nano_cores: None,
                        usage_core_nano_seconds: Some(20_000_000_000),
                    }),
                    memory: Some(MemoryStats {
                        time,
                        working_set_bytes: Some(1_000),
                        ..MemoryStats::default()
                    }),
                },
                pods: vec![pod],
                requests: None,
            },
            taken_at: "2024-06-01T00:00:10Z".parse().expect("time"),
            cgroups: [(("u-1".into(), "app".into()), "/skiff-k8s/podu-1/c1".into())].into(),
            machine_memory_bytes: Some(2_048),
            connections: [(("default".into(), "web".into()), 7)].into(),
        }
    }

    #[test]
    fn cadvisor_text_has_cadvisors_names_and_labels() {
        let text = cadvisor(&sample());
        let labels =
            r#"{container="app",id="/skiff-k8s/podu-1/c1",namespace="de\"fault",pod="web"}"#;
        for line in [
            "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.",
            "# TYPE container_cpu_usage_seconds_total counter",
            &format!("container_cpu_usage_seconds_total{labels} 1.5 1717200010000"),
            "# TYPE container_memory_working_set_bytes gauge",
            &format!("container_memory_working_set_bytes{labels} 194560 1717200010000"),
            &format!("container_memory_usage_bytes{labels} 204800 1717200010000"),
            &format!("container_memory_rss{labels} 81920 1717200010000"),
            &format!("container_memory_cache{labels} 40960 1717200010000"),
            &format!("container_start_time_seconds{labels} 1717200000 1717200010000"),
            "machine_memory_bytes 2048",
            "# TYPE skiff_proxy_connections_total counter",
            r#"skiff_proxy_connections_total{namespace="default",service="web"} 7"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn resource_text_has_kubelets_names_with_timestamps() {
        let text = resource(&sample());
        for line in [
            "# TYPE container_cpu_usage_seconds_total counter",
            r#"container_cpu_usage_seconds_total{container="app",namespace="de\"fault",pod="web"} 1.5 1717200010000"#,
            r#"container_memory_working_set_bytes{container="app",namespace="de\"fault",pod="web"} 194560 1717200010000"#,
            r#"pod_cpu_usage_seconds_total{namespace="de\"fault",pod="web"} 1.5 1717200010000"#,
            r#"pod_memory_working_set_bytes{namespace="de\"fault",pod="web"} 194560 1717200010000"#,
            "node_cpu_usage_seconds_total 20 1717200010000",
            "node_memory_working_set_bytes 1000 1717200010000",
            "scrape_error 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Every series follows its family's TYPE line, each family once.
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(types, 8);
    }
}

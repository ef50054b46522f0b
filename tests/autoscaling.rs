//! Autoscaling on a REAL node agent (containerd, runc, CNI): the agent measures its containers'
//! cgroups, the API server serves the measurements as `metrics.k8s.io` and the proxy's request
//! rates as `custom.metrics.k8s.io`, and the HPA controller scales on them.
//!
//! - The seed's HorizontalPodAutoscaler (autoscaling/v2beta2, applied verbatim, then given a
//!   short scale-down window through `behavior`) scales its Deployment up while requests to a
//!   CPU-costly page run and back down after they stop; `kubectl top pods` shows the CPU.
//! - A request-driven HPA (Pods metric `requests_per_second`) follows a request loop through
//!   its Service up and back down.
//! - `kubectl autoscale` (autoscaling/v1), `kubectl top nodes`, Kubernetes' errors for bad
//!   input: `minReplicas` > `maxReplicas` is 422, a target without `/scale` is
//!   `AbleToScale=False`.
mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::eventually;
use common::node::Cluster;
use serde_json::{json, Value};

fn apply(cluster: &Cluster, object: &Value) {
    let file = cluster.data().with_extension("apply.json");
    std::fs::write(&file, object.to_string()).expect("write manifest");
    let (ok, out, err) = cluster.kubectl(&["apply", "-f", file.to_str().expect("path")]);
    assert!(ok, "kubectl apply: {out}{err}");
}

/// A Deployment of the busybox web image whose pods ask for `cpu`, and a Service in front.
fn web(cluster: &Cluster, name: &str, replicas: i64, cpu: &str) -> String {
    apply(
        cluster,
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": name, "image": "skiff.local/web:1.0",
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1},
                        "resources": {"requests": {"cpu": cpu, "memory": "16Mi"}}}]}}}}),
    );
    apply(
        cluster,
        &json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    );
    let (_, svc) = cluster
        .client
        .get(&format!("/api/v1/namespaces/default/services/{name}"));
    svc["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string()
}

fn replicas(cluster: &Cluster, name: &str) -> i64 {
    let (_, d) = cluster.client.get(&format!(
        "/apis/apps/v1/namespaces/default/deployments/{name}"
    ));
    d["spec"]["replicas"].as_i64().unwrap_or(0)
}

/// Requests `path` through `ip:80` in a loop on a thread until the returned flag is cleared.
fn load(ip: &str, path: &'static str) -> Arc<AtomicBool> {
    let running = Arc::new(AtomicBool::new(true));
    let flag = running.clone();
    let address = format!("{ip}:80");
    std::thread::spawn(move || {
        while flag.load(Ordering::Relaxed) {
            let Ok(mut stream) = std::net::TcpStream::connect_timeout(
                &address.parse().expect("address"),
                Duration::from_secs(2),
            ) else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            // About ten requests a second: steady load, not a flood.
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    running
}

#[test]
fn autoscalers_follow_cpu_and_requests_up_and_down() {
    let cluster = Cluster::start_with(81, "h", &["--metrics-interval", "5s"]);

    // Bad input first: Kubernetes' errors.
    let bad = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "bad"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
            "minReplicas": 5, "maxReplicas": 2}});
    let (code, body) = cluster.client.post(
        "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers",
        &bad,
    );
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains(
            "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"
        )),
        "{body}"
    );
    apply(
        &cluster,
        &json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "no-scale"},
            "spec": {"scaleTargetRef": {"apiVersion": "batch/v1", "kind": "CronJob", "name": "tick"},
                "maxReplicas": 2}}),
    );

    // CPU: the seed's Deployment (with requests, which utilization is measured against) and
    // its HPA, applied verbatim.
    let ip = web(&cluster, "my-app", 3, "50m");
    let (ok, out, err) =
        cluster.kubectl(&["apply", "-f", "tests/manifests/seed-002-hpa-v2beta2.yaml"]);
    assert!(ok, "{out}{err}");
    let (_, v2beta2) = cluster
        .client
        .get("/apis/autoscaling/v2beta2/namespaces/default/horizontalpodautoscalers/my-app");
    assert_eq!(v2beta2["apiVersion"], "autoscaling/v2beta2", "{v2beta2}");
    // The test's one change: scale down after 15 s, not 300 s, through the API's own field.
    let (ok, out, err) = cluster.kubectl(&[
        "patch",
        "hpa.v2beta2.autoscaling",
        "my-app",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":15}}}}"#,
    ]);
    assert!(ok, "{out}{err}");

    // Idle, the measurements arrive and the HPA reports them.
    eventually("the HPA measures", Duration::from_secs(90), || {
        let (_, out, _) = cluster.kubectl(&["get", "hpa", "my-app"]);
        (out.contains("cpu: ") && out.contains("%/80%") && !out.contains("<unknown>")).then_some(())
    });
    let (ok, out, err) = cluster.kubectl(&["top", "nodes"]);
    assert!(ok && out.contains("node-h"), "{out}{err}");
    // The agent's Prometheus text, through the API server's node proxy (as a Prometheus set
    // up for Kubernetes scrapes cAdvisor's figures), with cAdvisor's names and labels.
    let (ok, out, err) = cluster.kubectl(&[
        "get",
        "--raw",
        "/api/v1/nodes/node-h/proxy/metrics/cadvisor",
    ]);
    assert!(ok, "{err}");
    for series in [
        "container_cpu_usage_seconds_total{",
        "container_memory_working_set_bytes{",
        "machine_memory_bytes ",
    ] {
        assert!(out.contains(series), "{series} missing from:\n{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("container_cpu_usage_seconds_total{")
                && l.contains(r#"container="my-app""#)
                && l.contains(r#"namespace="default""#)
                && l.contains(r#"pod="my-app-"#)),
        "{out}"
    );
    // Only the measurements: the agent's other paths are not reachable this way.
    let (ok, _, err) = cluster.kubectl(&["get", "--raw", "/api/v1/nodes/node-h/proxy/pods"]);
    assert!(!ok && err.contains("NotFound"), "{err}");

    let running = load(&ip, "/cgi-bin/burn");
    let busy = eventually(
        "kubectl top shows the load",
        Duration::from_secs(60),
        || {
            let (ok, out, _) =
                cluster.kubectl(&["top", "pods", "-l", "app=my-app", "--containers"]);
            // Any pod over 20m of CPU: busy (idle httpd uses ~0).
            let busy = ok
                && out.lines().skip(1).any(|line| {
                    line.split_whitespace()
                        .nth(2)
                        .and_then(|cpu| cpu.strip_suffix('m'))
                        .and_then(|m| m.parse::<u32>().ok())
                        .is_some_and(|m| m > 20)
                });
            busy.then_some(out)
        },
    );
    assert!(busy.contains("my-app"), "{busy}");
    // Memory is measured too (busybox httpd's working set is well under 1Mi, which `top`
    // rounds to 0Mi, so look at the raw figures).
    let (_, metrics) = cluster
        .client
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dmy-app");
    let items = metrics["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 3, "{metrics}");
    for pod in &items {
        let memory = pod["containers"][0]["usage"]["memory"]
            .as_str()
            .unwrap_or("0");
        assert!(memory.ends_with("Ki") && memory != "0Ki", "{metrics}");
    }
    eventually(
        "the HPA scales up under load",
        Duration::from_secs(120),
        || (replicas(&cluster, "my-app") > 3).then_some(()),
    );
    let (_, out, _) = cluster.kubectl(&["describe", "hpa", "my-app"]);
    assert!(
        out.contains("SuccessfulRescale")
            && out.contains("cpu resource utilization (percentage of request) above target"),
        "{out}"
    );
    running.store(false, Ordering::Relaxed);
    eventually("the HPA scales back down", Duration::from_secs(180), || {
        (replicas(&cluster, "my-app") == 3).then_some(())
    });
    let (_, out, _) = cluster.kubectl(&["describe", "hpa", "my-app"]);
    assert!(out.contains("All metrics below target"), "{out}");

    // The target without /scale, judged meanwhile.
    let (_, hpa) = cluster
        .client
        .get("/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/no-scale");
    let able = hpa["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "AbleToScale").cloned())
        .unwrap_or_default();
    assert_eq!(able["status"], "False", "{hpa}");
    assert_eq!(able["reason"], "FailedGetScale", "{hpa}");

    // Requests: a Pods metric served by the proxies' counts.
    let ip = web(&cluster, "counter", 1, "10m");
    apply(
        &cluster,
        &json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "counter"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "counter"},
                "minReplicas": 1, "maxReplicas": 4,
                "metrics": [{"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": "2"}}},
                    {"type": "Object", "object": {"metric": {"name": "requests_per_second"},
                        "describedObject": {"apiVersion": "v1", "kind": "Service", "name": "counter"},
                        "target": {"type": "Value", "value": "1k"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 15}}}}),
    );
    let running = load(&ip, "/");
    eventually(
        "the request rate is served",
        Duration::from_secs(60),
        || {
            let (ok, out, _) = cluster.kubectl(&[
            "get",
            "--raw",
            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/default/services/counter/requests_per_second",
        ]);
            let list: Value = serde_json::from_str(&out).ok()?;
            let value = list["items"][0]["value"].as_str()?.to_string();
            (ok && value != "0").then_some(value)
        },
    );
    eventually(
        "the request HPA scales up",
        Duration::from_secs(120),
        || (replicas(&cluster, "counter") > 1).then_some(()),
    );
    // The Object metric (the Service's own rate) is measured too; its target is far away.
    let (_, hpa) = cluster
        .client
        .get("/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/counter");
    let object = hpa["status"]["currentMetrics"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["type"] == "Object").cloned())
        .unwrap_or_default();
    assert_eq!(
        object["object"]["describedObject"]["name"], "counter",
        "{hpa}"
    );
    assert!(
        object["object"]["current"]["value"]
            .as_str()
            .is_some_and(|v| v != "0"),
        "{hpa}"
    );
    let (_, out, _) = cluster.kubectl(&["get", "hpa", "counter"]);
    assert!(out.contains("/1k"), "{out}");
    running.store(false, Ordering::Relaxed);
    eventually(
        "the request HPA scales back down",
        Duration::from_secs(180),
        || (replicas(&cluster, "counter") == 1).then_some(()),
    );

    // `kubectl autoscale` (whichever version the kubectl speaks) and the v1 view of it.
    let (ok, out, err) = cluster.kubectl(&[
        "autoscale",
        "deployment",
        "counter",
        "--name=by-hand",
        "--min=1",
        "--max=3",
        "--cpu-percent=60",
    ]);
    assert!(ok, "{out}{err}");
    let (_, v1) = cluster
        .client
        .get("/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/by-hand");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60, "{v1}");
    let (_, out, _) = cluster.kubectl(&["get", "hpa"]);
    assert!(
        out.contains("by-hand") && out.contains("Deployment/counter"),
        "{out}"
    );
}

//! End-to-end tests of Services and probes on REAL containerd, runc and CNI: the endpoints
//! controller, the agent's service proxy (ClusterIP, NodePort), the node's DNS server, probes,
//! and a rolling update that drops no request.
mod common;

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::eventually;
use common::node::{http_get, Cluster};
use serde_json::{json, Value};

/// The body of an HTTP answer.
fn body(answer: &str) -> String {
    answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default()
}

/// Waits until the node's proxy redirects `ip`: only then may the host send to it (otherwise
/// the packet would leave by the default route).
fn wait_redirect(cluster: &Cluster, ip: &str) {
    let chain = format!("SKIFF-SVC-skt{}", cluster_tag(cluster));
    eventually(
        &format!("a redirect for {ip}"),
        Duration::from_secs(30),
        || {
            let out = Command::new("iptables")
                .args(["-w", "-t", "nat", "-S", &chain])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains(&format!("-d {ip}/32"))
                .then_some(())
        },
    );
}

fn cluster_tag(cluster: &Cluster) -> String {
    cluster.node().trim_start_matches("node-").to_string()
}

fn apply(cluster: &Cluster, manifest: &Value) {
    let file = cluster.dir.path().join("manifest.json");
    std::fs::write(&file, manifest.to_string()).expect("manifest");
    let (ok, out, err) = cluster.kubectl(&["apply", "-f", &file.display().to_string()]);
    assert!(ok, "kubectl apply: {out}{err}");
}

fn get(cluster: &Cluster, path: &str) -> Value {
    cluster.client.get(path).1
}

/// Ready addresses of the Endpoints object `name`.
fn ready_ips(cluster: &Cluster, name: &str) -> Vec<String> {
    let ep = get(
        cluster,
        &format!("/api/v1/namespaces/default/endpoints/{name}"),
    );
    let mut ips: Vec<String> = ep["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["ip"].as_str().map(str::to_string))
        .collect();
    ips.sort();
    ips
}

fn not_ready_ips(cluster: &Cluster, name: &str) -> Vec<String> {
    let ep = get(
        cluster,
        &format!("/api/v1/namespaces/default/endpoints/{name}"),
    );
    ep["subsets"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| {
            s["notReadyAddresses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|a| a["ip"].as_str().map(str::to_string))
        .collect()
}

fn slice_ready(cluster: &Cluster, service: &str, ip: &str) -> Option<bool> {
    let slices = get(
        cluster,
        &format!(
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io/service-name={service}"
        ),
    );
    slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .find(|e| e["addresses"][0] == ip)
        .and_then(|e| e["conditions"]["ready"].as_bool())
}

#[test]
fn seed_002_probes_gate_endpoints_and_restart_a_failing_container() {
    let cluster = Cluster::start(65, "p");
    // The image the seed names, built here: busybox httpd serving /healthz and /ready.
    cluster.add_image("my-app:1.0", "my app\n");
    for manifest in ["seed-002-pod-probes.yaml", "seed-001-service.yaml"] {
        let (ok, out, err) =
            cluster.kubectl(&["apply", "-f", &format!("tests/manifests/{manifest}")]);
        assert!(ok, "{manifest}: {out}{err}");
    }
    // The seed's pod has no labels; the seed's Service selects app=my-app.
    let (ok, _, err) = cluster.kubectl(&["label", "pod", "my-app", "app=my-app"]);
    assert!(ok, "{err}");

    // Ready after initialDelaySeconds (10 s) and one passing readiness check.
    let pod = cluster.wait_running("my-app");
    let ip = pod["status"]["podIP"].as_str().expect("podIP").to_string();
    eventually(
        "the pod in the service's endpoints",
        Duration::from_secs(30),
        || {
            (ready_ips(&cluster, "my-service") == vec![ip.clone()]
                && slice_ready(&cluster, "my-service", &ip) == Some(true))
            .then_some(())
        },
    );

    // /ready fails: after failureThreshold (3) × periodSeconds (5) the pod leaves the endpoints.
    let (ok, _, err) = cluster.kubectl(&["exec", "my-app", "--", "rm", "/var/www/ready"]);
    assert!(ok, "{err}");
    eventually(
        "the pod out of the endpoints",
        Duration::from_secs(45),
        || {
            // Endpoints and the EndpointSlice are two writes: wait for both.
            (ready_ips(&cluster, "my-service").is_empty()
                && not_ready_ips(&cluster, "my-service") == vec![ip.clone()]
                && slice_ready(&cluster, "my-service", &ip) == Some(false))
            .then_some(())
        },
    );
    let pod = cluster.pod("my-app");
    assert_eq!(pod["status"]["containerStatuses"][0]["ready"], false);
    assert_eq!(
        pod["status"]["containerStatuses"][0]["restartCount"], 0,
        "readiness never restarts"
    );

    // /ready passes again: back in.
    let (ok, _, err) = cluster.kubectl(&["exec", "my-app", "--", "touch", "/var/www/ready"]);
    assert!(ok, "{err}");
    eventually(
        "the pod back in the endpoints",
        Duration::from_secs(30),
        || (ready_ips(&cluster, "my-service") == vec![ip.clone()]).then_some(()),
    );

    // /healthz fails: liveness restarts the container (a fresh one has the file again).
    let (ok, _, err) = cluster.kubectl(&["exec", "my-app", "--", "rm", "/var/www/healthz"]);
    assert!(ok, "{err}");
    let restarted = eventually("a liveness restart", Duration::from_secs(60), || {
        let pod = cluster.pod("my-app");
        (pod["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(1)).then_some(pod)
    });
    assert_eq!(
        restarted["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        137
    );
    let (_, events, _) = cluster.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=my-app",
    ]);
    assert!(
        events.contains("Liveness probe failed: HTTP probe failed with statuscode: 404"),
        "{events}"
    );
    assert!(events.contains("Readiness probe failed"), "{events}");
    assert!(
        events.contains("failed liveness probe, will be restarted"),
        "{events}"
    );
    eventually(
        "ready again after the restart",
        Duration::from_secs(45),
        || (ready_ips(&cluster, "my-service") == vec![ip.clone()]).then_some(()),
    );
}

/// A web deployment whose pods answer with their own name, readiness-gated, draining on stop.
fn web_deployment(
    name: &str,
    image: &str,
    replicas: u32,
    labels: Value,
    annotations: Value,
) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "containers": [{
                        "name": "web", "image": image, "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "echo $POD_NAME > /var/www/index.html; exec httpd -f -p 8080 -h /var/www"],
                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
                        // Let the proxy stop sending new connections before the server exits.
                        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "2"]}}}
                    }]
                }
            }
        }
    })
}

#[test]
fn services_balance_resolve_by_name_and_roll_without_dropping_a_request() {
    let cluster = Cluster::start(66, "s");
    cluster.add_image("skiff.local/web:2.0", "v2\n");
    apply(
        &cluster,
        &web_deployment(
            "web",
            "skiff.local/web:1.0",
            3,
            json!({"app": "web"}),
            json!({}),
        ),
    );
    apply(
        &cluster,
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30766}]}
        }),
    );
    let svc = get(&cluster, "/api/v1/namespaces/default/services/web");
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .expect("a ClusterIP")
        .to_string();
    assert!(
        cluster_ip.starts_with("10.166."),
        "{cluster_ip} from --service-cidr"
    );
    let (ok, out, err) =
        cluster.kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert!(ok, "{out}{err}");
    eventually("three ready endpoints", Duration::from_secs(30), || {
        (ready_ips(&cluster, "web").len() == 3).then_some(())
    });
    wait_redirect(&cluster, &cluster_ip);
    // The node's proxy learns endpoints from EndpointSlices a moment after the Endpoints object
    // changes: wait until all three replicas answer through it.
    eventually(
        "all three replicas behind the ClusterIP",
        Duration::from_secs(30),
        || {
            let seen: std::collections::HashSet<String> = (0..6)
                .filter_map(|_| http_get(&cluster_ip, 80).map(|a| body(&a)))
                .collect();
            (seen.len() == 3).then_some(())
        },
    );

    // Round-robin through the ClusterIP, from the node: 300 requests, about 100 each.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        let answer = http_get(&cluster_ip, 80).expect("an answer through the ClusterIP");
        *counts.entry(body(&answer)).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    for (pod, n) in &counts {
        assert!(
            pod.starts_with("web-") && n.abs_diff(100) <= 15,
            "{counts:?}"
        );
    }

    // The NodePort, from the host.
    let answer = http_get("127.0.0.1", 30766).expect("an answer through the NodePort");
    assert!(body(&answer).starts_with("web-"), "{answer}");

    // Zero downtime: requests loop through the Service while the image changes.
    let stop = Arc::new(AtomicBool::new(false));
    let looper = {
        let (stop, ip) = (stop.clone(), cluster_ip.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed, mut seen) =
                (0usize, Vec::new(), std::collections::BTreeSet::new());
            while !stop.load(Ordering::Relaxed) {
                match http_get(&ip, 80).map(|a| body(&a)) {
                    Some(b) if b.starts_with("web-") => {
                        ok += 1;
                        seen.insert(b);
                    }
                    other => failed.push(other),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (ok, failed, seen)
        })
    };
    let (ok, _, err) =
        cluster.kubectl(&["set", "image", "deployment/web", "web=skiff.local/web:2.0"]);
    assert!(ok, "{err}");
    let (ok, out, err) =
        cluster.kubectl(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    assert!(ok, "{out}{err}");
    // Requests keep going until the last old pods have finished their preStop and are gone:
    // three pods left, none terminating, all of the new image.
    eventually("the old pods gone", Duration::from_secs(60), || {
        let (ok, out, _) = cluster.kubectl(&["get", "pods", "-l", "app=web", "-o", "json"]);
        let pods: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
        let items = pods["items"].as_array()?;
        (items.len() == 3
            && items.iter().all(|p| {
                p["metadata"]["deletionTimestamp"].is_null()
                    && p["spec"]["containers"][0]["image"] == "skiff.local/web:2.0"
            }))
        .then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let (served, failed, seen) = looper.join().expect("the request loop");
    assert!(
        failed.is_empty(),
        "{} requests failed during the rollout: {failed:?}",
        failed.len()
    );
    assert!(served > 50, "only {served} requests");
    assert!(seen.len() >= 6, "old and new pods answered: {seen:?}");

    // From another pod: by DNS name (short and full) and by ClusterIP, and the env variables.
    let node = cluster.node();
    cluster.create_pod(json!({
        "metadata": {"name": "client"},
        "spec": {"restartPolicy": "Never", "nodeName": node, "containers": [{
            "name": "client", "image": "skiff.local/web:1.0", "imagePullPolicy": "Never",
            "command": ["sh", "-c", format!(
                "wget -qO- http://web.default.svc.cluster.local/ && wget -qO- http://web/ && wget -qO- http://{cluster_ip}/ && echo host=$WEB_SERVICE_HOST port=$WEB_SERVICE_PORT")]
        }]}
    }));
    eventually("the client pod finishes", Duration::from_secs(60), || {
        let phase = cluster.pod("client")["status"]["phase"].clone();
        (phase == "Succeeded" || phase == "Failed").then_some(())
    });
    let (_, logs, _) = cluster.kubectl(&["logs", "client"]);
    assert_eq!(
        cluster.pod("client")["status"]["phase"],
        "Succeeded",
        "{logs}"
    );
    assert_eq!(logs.matches("web-").count(), 3, "{logs}");
    assert!(
        logs.contains(&format!("host={cluster_ip} port=80")),
        "{logs}"
    );
}

#[test]
fn a_weighted_service_splits_as_its_pods_ask_and_a_load_balancer_opens_on_the_node() {
    let cluster = Cluster::start(67, "w");
    apply(
        &cluster,
        &web_deployment(
            "stable",
            "skiff.local/web:1.0",
            1,
            json!({"app": "w", "track": "stable"}),
            json!({"skiff.io/weight": "1"}),
        ),
    );
    apply(
        &cluster,
        &web_deployment(
            "canary",
            "skiff.local/web:1.0",
            1,
            json!({"app": "w", "track": "canary"}),
            json!({"skiff.io/weight": "3"}),
        ),
    );
    apply(
        &cluster,
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "w", "annotations": {"skiff.io/load-balancer": "weighted"}},
            "spec": {"selector": {"app": "w"}, "ports": [{"port": 80, "targetPort": 8080}]}
        }),
    );
    for name in ["stable", "canary"] {
        let (ok, out, err) = cluster.kubectl(&[
            "rollout",
            "status",
            &format!("deployment/{name}"),
            "--timeout=120s",
        ]);
        assert!(ok, "{out}{err}");
    }
    eventually("two ready endpoints", Duration::from_secs(30), || {
        (ready_ips(&cluster, "w").len() == 2).then_some(())
    });
    let ip = get(&cluster, "/api/v1/namespaces/default/services/w")["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    wait_redirect(&cluster, &ip);
    // The proxy learns endpoints and weights a moment after the API has them.
    eventually(
        "both tracks behind the ClusterIP",
        Duration::from_secs(30),
        || {
            let seen: std::collections::HashSet<String> = (0..8)
                .filter_map(|_| http_get(&ip, 80).map(|a| body(&a)))
                .filter_map(|b| b.split('-').next().map(str::to_string))
                .collect();
            (seen.len() == 2).then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    let (mut canary, mut stable) = (0usize, 0usize);
    for _ in 0..400 {
        let answer = body(&http_get(&ip, 80).expect("an answer"));
        if answer.starts_with("canary-") {
            canary += 1;
        } else if answer.starts_with("stable-") {
            stable += 1;
        }
    }
    assert_eq!(canary + stable, 400);

    // An exec readiness probe runs in the container (containerd's exec): ready while the file
    // is there, not ready once it is gone.
    cluster.create_pod(json!({
        "metadata": {"name": "exec-probe"},
        "spec": {"containers": [{
            "name": "web", "image": "skiff.local/web:1.0", "imagePullPolicy": "Never",
            "readinessProbe": {"exec": {"command": ["cat", "/var/www/ready"]},
                               "periodSeconds": 1, "failureThreshold": 1}
        }]}
    }));
    cluster.wait_running("exec-probe");
    let (ok, _, err) = cluster.kubectl(&["exec", "exec-probe", "--", "rm", "/var/www/ready"]);
    assert!(ok, "{err}");
    eventually("the exec probe fails", Duration::from_secs(20), || {
        let pod = cluster.pod("exec-probe");
        (pod["status"]["containerStatuses"][0]["ready"] == false).then_some(())
    });

    // seed-000: a LoadBalancer Service answers on its port (80) on every node, and its status
    // lists the nodes' addresses, as k3s's built-in load balancer does.
    cluster.create_pod(json!({
        "metadata": {"name": "lb-backend", "labels": {"app": "my-app"}},
        "spec": {"containers": [{
            "name": "web", "image": "skiff.local/web:1.0", "imagePullPolicy": "Never",
            "command": ["httpd", "-f", "-p", "3000", "-h", "/var/www"]
        }]}
    }));
    cluster.wait_running("lb-backend");
    let (ok, out, err) = cluster.kubectl(&[
        "apply",
        "-f",
        "tests/manifests/seed-000-service-loadbalancer.yaml",
    ]);
    assert!(ok, "{out}{err}");
    let node = get(&cluster, &format!("/api/v1/nodes/{}", cluster.node()));
    let node_ip = node["status"]["addresses"][0]["address"]
        .as_str()
        .expect("a node address")
        .to_string();
    eventually(
        "the load balancer's address",
        Duration::from_secs(30),
        || {
            let svc = get(&cluster, "/api/v1/namespaces/default/services/my-app");
            (svc["status"]["loadBalancer"]["ingress"][0]["ip"] == node_ip.as_str()).then_some(())
        },
    );
    let answer = eventually(
        "an answer on port 80 of the node",
        Duration::from_secs(30),
        || http_get(&node_ip, 80),
    );
    assert!(answer.contains("hello from w"), "{answer}");
    assert!(
        canary.abs_diff(300) <= 15 && stable.abs_diff(100) <= 15,
        "canary {canary}, stable {stable}"
    );
}

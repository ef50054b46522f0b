//! End-to-end tests of the node agent against REAL containerd, runc and CNI plugins (installed
//! by scripts/setup). Each test runs its own `skiff server` with its own agent, containerd
//! (under the test's data dir), containerd namespace, bridge and pod subnet, so the tests can
//! run side by side; each cleans up its containers, bridge and iptables rules.
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::node::{http_get, Cluster};
use common::{eventually, Server};
use serde_json::{json, Value};
#[test]
fn pods_run_answer_share_localhost_see_env_and_limits_and_stop_gracefully() {
    let cluster = Cluster::start(61, "a");

    // A web server: Running, answering on its pod IP from the host.
    cluster.create_pod(json!({
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [{
            "name": "web", "image": "skiff.local/web:1.0", "imagePullPolicy": "Never",
            "ports": [{"containerPort": 8080}]
        }]}
    }));
    let pod = cluster.wait_running("web");
    let ip = pod["status"]["podIP"].as_str().expect("podIP").to_string();
    assert!(ip.starts_with("10.61."), "pod IP {ip} from the node's CIDR");
    let answer = eventually("the pod answers", Duration::from_secs(20), || {
        http_get(&ip, 8080)
    });
    assert!(answer.contains("hello from a"), "{answer}");
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["ready"], true);
    assert_eq!(status["restartCount"], 0);
    assert!(status["containerID"]
        .as_str()
        .unwrap_or("")
        .starts_with("containerd://"));
    assert!(
        status["imageID"]
            .as_str()
            .unwrap_or("")
            .contains("@sha256:"),
        "{status}"
    );

    // kubectl exec: output, exit codes, stdin, and a TTY (run under `script` for a terminal).
    let (ok, out, _) = cluster.kubectl(&["exec", "web", "--", "sh", "-c", "echo in $HOSTNAME"]);
    assert!(ok && out.contains("in web"), "{out}");

    // What an in-cluster client reads: the pod's token, the CA and its namespace, read-only;
    // the token is the pod's ServiceAccount's, and the API takes it.
    let sa = skiff_apiserver::registry::pods::service_account::MOUNT_PATH;
    let (ok, namespace, err) =
        cluster.kubectl(&["exec", "web", "--", "cat", &format!("{sa}/namespace")]);
    assert!(ok && namespace == "default", "{namespace}{err}");
    let (ok, ca, err) = cluster.kubectl(&["exec", "web", "--", "cat", &format!("{sa}/ca.crt")]);
    assert!(ok && ca.trim() == cluster.client.ca_pem.trim(), "{ca}{err}");
    let (ok, token, err) = cluster.kubectl(&["exec", "web", "--", "cat", &format!("{sa}/token")]);
    assert!(ok, "{err}");
    let (ok, _, err) = cluster.kubectl(&[
        "exec",
        "web",
        "--",
        "sh",
        "-c",
        &format!("echo x > {sa}/token"),
    ]);
    assert!(!ok, "the token volume is read-only: {err}");
    let as_pod = common::Client::new(&cluster.client.base, &cluster.client.ca_pem, token.trim());
    let (code, review) = as_pod.post(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
    );
    assert_eq!(code, 201, "{review}");
    assert_eq!(
        review["status"]["userInfo"]["username"],
        "system:serviceaccount:default:default"
    );
    assert_eq!(
        review["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"][0],
        "web"
    );
    let code = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(cluster.server.kubeconfig())
        .args(["exec", "web", "--", "sh", "-c", "exit 3"])
        .status()
        .expect("kubectl exec");
    assert_eq!(code.code(), Some(3), "the command's exit code");
    let piped = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo 'echo from stdin' | kubectl --kubeconfig {} exec -i web -- sh",
            cluster.server.kubeconfig().display()
        ))
        .output()
        .expect("kubectl exec -i");
    assert!(String::from_utf8_lossy(&piped.stdout).contains("from stdin"));
    let tty = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "kubectl --kubeconfig {} exec -it web -- sh -c 'tty; exit 0'",
            cluster.server.kubeconfig().display()
        ))
        .arg("/dev/null")
        .output()
        .expect("script");
    let tty_out = String::from_utf8_lossy(&tty.stdout);
    assert!(
        tty_out.contains("/dev/pts/"),
        "a terminal inside: {tty_out}"
    );

    // Two containers in one pod talk over localhost; env (plain, fieldRef, expansion) and the
    // memory limit are visible inside.
    cluster.create_pod(json!({
        "metadata": {"name": "pair"},
        "spec": {"containers": [
            {"name": "server", "image": "skiff.local/web:1.0"},
            {"name": "client", "image": "skiff.local/web:1.0",
             "command": ["/bin/sh", "-c",
                "echo GREETING=$GREETING POD=$POD_NAME MSG=$MSG; cat /sys/fs/cgroup/memory/memory.limit_in_bytes; cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us; while true; do wget -qO- http://localhost:8080/ && break; sleep 0.2; done; sleep 3600"],
             "env": [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MSG", "value": "pod $(POD_NAME)"}
             ],
             "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}}}
        ]}
    }));
    cluster.wait_running("pair");
    let logs = eventually(
        "the client container's logs",
        Duration::from_secs(30),
        || {
            let (ok, out, _) = cluster.kubectl(&["logs", "pair", "-c", "client"]);
            (ok && out.contains("hello from a")).then_some(out)
        },
    );
    assert!(
        logs.contains("GREETING=hello POD=pair MSG=pod pair"),
        "{logs}"
    );
    assert!(
        logs.contains(&(64u64 << 20).to_string()),
        "memory limit in the cgroup: {logs}"
    );
    assert!(
        logs.contains("25000"),
        "cpu quota 250m = 25000 µs per 100000: {logs}"
    );
    let (_, tail, _) = cluster.kubectl(&["logs", "pair", "-c", "client", "--tail=1"]);
    assert_eq!(tail.lines().count(), 1, "{tail}");
    // kubectl picks the first container itself; the API answers a bare request as Kubernetes.
    let (code, body) = cluster
        .client
        .get("/api/v1/namespaces/default/pods/pair/log");
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("a container name must be specified"),
        "{body}"
    );

    // Graceful delete: SIGTERM reaches the process (its trap writes to a hostPath file), the
    // object disappears once the containers are gone, and nothing is left in containerd.
    let marker = cluster.dir.path().join("marker");
    std::fs::create_dir_all(&marker).expect("marker dir");
    let graceful = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "graceful"},
        "spec": {
            "nodeName": cluster.node(),
            "terminationGracePeriodSeconds": 20,
            "containers": [{"name": "main", "image": "skiff.local/web:1.0",
                "command": ["/bin/sh", "-c", "trap 'echo bye > /marker/term; exit 0' TERM; while true; do sleep 0.1; done"],
                "volumeMounts": [{"name": "m", "mountPath": "/marker"}]}],
            "volumes": [{"name": "m", "hostPath": {"path": marker.display().to_string()}}]
        }
    });
    // A hostPath volume is refused under the default Pod Security level (baseline) until the
    // namespace says it may run privileged pods.
    let (code, refused) = cluster
        .client
        .post("/api/v1/namespaces/default/pods", &graceful);
    assert_eq!(code, 403, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or("")
            .contains(r#"violates PodSecurity "baseline:latest": hostPath volumes (volume "m")"#),
        "{refused}"
    );
    cluster.allow_privileged_pods();
    cluster.create_pod(graceful);
    cluster.wait_running("graceful");
    let started = Instant::now();
    let (ok, out, err) = cluster.kubectl(&["delete", "pod", "graceful", "--timeout=60s"]);
    assert!(ok, "{out}{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the trap ended it before the grace period"
    );
    assert_eq!(
        std::fs::read_to_string(marker.join("term")).unwrap_or_default(),
        "bye\n"
    );
    let (code, _) = cluster
        .client
        .get("/api/v1/namespaces/default/pods/graceful");
    assert_eq!(code, 404);

    // Events a person reads in `kubectl describe pod`.
    let (_, events, _) = cluster.kubectl(&["get", "events", "-o", "jsonpath={.items[*].reason}"]);
    for reason in ["Pulled", "Created", "Started", "Killing"] {
        assert!(events.contains(reason), "{reason} in {events}");
    }

    // Everything deleted leaves nothing behind.
    let (ok, _, err) = cluster.kubectl(&[
        "delete",
        "pods",
        "--all",
        "--grace-period=1",
        "--timeout=60s",
    ]);
    assert!(ok, "{err}");
    eventually("containers removed", Duration::from_secs(30), || {
        cluster.containers().is_empty().then_some(())
    });
}

#[test]
fn crashing_containers_back_off_and_oom_is_reported() {
    let cluster = Cluster::start(62, "b");
    cluster.create_pod(json!({
        "metadata": {"name": "crash"},
        "spec": {"containers": [{"name": "c", "image": "skiff.local/web:1.0",
            "command": ["/bin/sh", "-c", "echo crashing; exit 3"]}]}
    }));
    // First restart at once, then 10 s, then 20 s: after ~12 s two restarts, and the
    // container waits in CrashLoopBackOff with the last exit code recorded.
    let status = eventually("CrashLoopBackOff", Duration::from_secs(60), || {
        let pod = cluster.pod("crash");
        let s = pod["status"]["containerStatuses"][0].clone();
        (s["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            && s["restartCount"].as_i64() >= Some(1))
        .then_some(s)
    });
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 3, "{status}");
    assert_eq!(status["lastState"]["terminated"]["reason"], "Error");
    let first = Instant::now();
    let restarts = |pod: &Value| {
        pod["status"]["containerStatuses"][0]["restartCount"]
            .as_i64()
            .unwrap_or(0)
    };
    let before = restarts(&cluster.pod("crash"));
    let next = eventually("the next restart", Duration::from_secs(60), || {
        let n = restarts(&cluster.pod("crash"));
        (n > before).then_some(first.elapsed())
    });
    assert!(
        next >= Duration::from_secs(5),
        "back-off must hold the restart: {next:?}"
    );
    let (ok, out, _) = cluster.kubectl(&["logs", "crash", "--previous"]);
    assert!(ok && out.contains("crashing"), "{out}");
    let (_, events, _) = cluster.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=BackOff",
        "-o",
        "name",
    ]);
    assert!(!events.trim().is_empty(), "a BackOff event");

    // An image that is neither present nor pullable: ErrImagePull, then ImagePullBackOff with
    // a message; with imagePullPolicy Never, ErrImageNeverPull.
    cluster.create_pod(json!({
        "metadata": {"name": "missing"},
        "spec": {"containers": [{"name": "c", "image": "skiff.local/missing:1.0"}]}
    }));
    let waiting = eventually("ImagePullBackOff", Duration::from_secs(60), || {
        let w =
            cluster.pod("missing")["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "ImagePullBackOff").then_some(w)
    });
    assert!(
        waiting["message"]
            .as_str()
            .unwrap_or("")
            .contains("skiff.local/missing:1.0"),
        "{waiting}"
    );
    cluster.create_pod(json!({
        "metadata": {"name": "never"},
        "spec": {"containers": [{"name": "c", "image": "skiff.local/missing:1.0", "imagePullPolicy": "Never"}]}
    }));
    eventually("ErrImageNeverPull", Duration::from_secs(30), || {
        let w = cluster.pod("never")["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "ErrImageNeverPull").then_some(())
    });

    // Init containers run to completion, in order, before the app container; they share
    // an emptyDir with it.
    cluster.create_pod(json!({
        "metadata": {"name": "init"},
        "spec": {
            "initContainers": [
                {"name": "one", "image": "skiff.local/web:1.0", "command": ["/bin/sh", "-c", "echo one >> /work/order"],
                 "volumeMounts": [{"name": "w", "mountPath": "/work"}]},
                {"name": "two", "image": "skiff.local/web:1.0", "command": ["/bin/sh", "-c", "echo two >> /work/order"],
                 "volumeMounts": [{"name": "w", "mountPath": "/work"}]}
            ],
            "containers": [{"name": "app", "image": "skiff.local/web:1.0",
                "command": ["/bin/sh", "-c", "cat /work/order; sleep 3600"],
                "volumeMounts": [{"name": "w", "mountPath": "/work"}]}],
            "volumes": [{"name": "w", "emptyDir": {}}]
        }
    }));
    let pod = cluster.wait_running("init");
    let init = &pod["status"]["initContainerStatuses"];
    assert_eq!(
        init[0]["state"]["terminated"]["reason"], "Completed",
        "{init}"
    );
    assert_eq!(init[1]["state"]["terminated"]["exitCode"], 0, "{init}");
    let out = eventually("the app's output", Duration::from_secs(20), || {
        let (ok, out, _) = cluster.kubectl(&["logs", "init", "-c", "app"]);
        (ok && out.contains("two")).then_some(out)
    });
    assert_eq!(out, "one\ntwo\n");

    // OOM: a shell variable of 100 MB in a 32 MiB container.
    cluster.create_pod(json!({
        "metadata": {"name": "oom"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "skiff.local/web:1.0",
            "command": ["/bin/sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' x); echo ${#x}"],
            "resources": {"limits": {"memory": "32Mi"}}}]}
    }));
    let terminated = eventually("OOMKilled", Duration::from_secs(60), || {
        let pod = cluster.pod("oom");
        let t = pod["status"]["containerStatuses"][0]["state"]["terminated"].clone();
        (!t.is_null()).then_some((t, pod["status"]["phase"].clone()))
    });
    assert_eq!(terminated.0["reason"], "OOMKilled", "{}", terminated.0);
    assert_eq!(terminated.0["exitCode"], 137);
    assert_eq!(terminated.1, "Failed");
}

#[test]
fn an_agent_restart_adopts_containers_and_thirty_pods_clean_up() {
    let mut cluster = Cluster::start(63, "c");
    for i in 0..30 {
        cluster.create_pod(json!({
            "metadata": {"name": format!("p{i}")},
            "spec": {"containers": [{"name": "web", "image": "skiff.local/web:1.0"}]}
        }));
    }
    for i in 0..30 {
        cluster.wait_running(&format!("p{i}"));
    }
    let ids = |c: &Cluster| -> Vec<String> {
        (0..30)
            .map(|i| {
                c.pod(&format!("p{i}"))["status"]["containerStatuses"][0]["containerID"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    let before = ids(&cluster);
    assert_eq!(cluster.containers().len(), 30);

    // Stop the server (and so its agent) cleanly, then SIGKILL it: either way the containers
    // and their network keep running, and the restarted agent adopts them — same container
    // ids, no restarts, every pod still answering on its IP.
    for (how, restart) in [
        ("SIGTERM", Server::stop_and_start as fn(&mut Server)),
        ("SIGKILL", Server::restart),
    ] {
        restart(&mut cluster.server);
        cluster.client = cluster.server.wait_ready();
        std::thread::sleep(Duration::from_secs(3));
        for i in 0..30 {
            let pod = cluster.wait_running(&format!("p{i}"));
            assert_eq!(
                pod["status"]["containerStatuses"][0]["restartCount"], 0,
                "p{i} after {how}"
            );
            let ip = pod["status"]["podIP"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                http_get(&ip, 8080).is_some_and(|a| a.contains("200 OK")),
                "p{i} answers on {ip} after {how}"
            );
        }
        assert_eq!(
            ids(&cluster),
            before,
            "the same containers, adopted after {how}"
        );
    }

    // Deleting all 30 removes every container, snapshot, network namespace and IP.
    let (ok, _, err) = cluster.kubectl(&[
        "delete",
        "pods",
        "--all",
        "--grace-period=1",
        "--timeout=90s",
    ]);
    assert!(ok, "{err}");
    eventually("nothing left", Duration::from_secs(60), || {
        let netns = std::fs::read_dir(cluster.data().join("agent/netns"))
            .map(|d| d.count())
            .unwrap_or(0);
        let ips = std::fs::read_dir(cluster.data().join("agent/cni/ipam/skiff"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
                    .count()
            })
            .unwrap_or(0);
        let snapshots = cluster
            .ctr(&["snapshots", "ls"])
            .lines()
            .filter(|l| l.contains("Active"))
            .count();
        (cluster.containers().is_empty() && netns == 0 && ips == 0 && snapshots == 0).then_some(())
    });
}

/// The Python client inside a pod, with `load_incluster_config()`: the `kubernetes` Service's
/// variables, the projected token and CA, and a certificate naming the Service's address. The
/// interpreter and the client come from the host (hostPath, so the namespace is privileged);
/// what is tested is the path from the pod to the API and the pod's ServiceAccount under RBAC.
#[test]
fn an_in_cluster_python_client_lists_pods_as_its_service_account() {
    let cluster = Cluster::start(68, "i");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let site = std::fs::read_dir(root.join("target/pyclient/lib"))
        .expect("target/pyclient: scripts/setup makes the Python client's venv")
        .flatten()
        .map(|e| e.path().join("site-packages"))
        .find(|p| p.join("kubernetes").exists())
        .expect("the kubernetes package in target/pyclient");
    let script_dir = cluster.dir.path().join("script");
    std::fs::create_dir_all(&script_dir).expect("script dir");
    std::fs::write(
        script_dir.join("incluster.py"),
        "import os\n\
         from kubernetes import client, config\n\
         print('HOST', os.environ['KUBERNETES_SERVICE_HOST'], os.environ['KUBERNETES_SERVICE_PORT'])\n\
         config.load_incluster_config()\n\
         try:\n\
         \x20   pods = client.CoreV1Api().list_namespaced_pod('default')\n\
         \x20   print('PODS', ' '.join(sorted(p.metadata.name for p in pods.items)))\n\
         except client.exceptions.ApiException as e:\n\
         \x20   print('STATUS', e.status)\n",
    )
    .expect("script");
    cluster.allow_privileged_pods();

    // The Service, its address the first of the service CIDR, pointing at the server (the
    // leader makes both soon after it starts).
    let svc = eventually("the kubernetes Service", Duration::from_secs(30), || {
        let (code, svc) = cluster
            .client
            .get("/api/v1/namespaces/default/services/kubernetes");
        (code == 200).then_some(svc)
    });
    assert_eq!(svc["spec"]["clusterIP"], "10.168.0.1");
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    let slice = eventually(
        "the kubernetes EndpointSlice",
        Duration::from_secs(30),
        || {
            let (code, slice) = cluster
                .client
                .get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes");
            (code == 200).then_some(slice)
        },
    );
    let port = cluster
        .client
        .base
        .rsplit(':')
        .next()
        .unwrap_or("")
        .trim_end_matches('/');
    assert_eq!(slice["ports"][0]["port"].to_string(), port, "{slice}");

    let site = site.to_str().expect("utf-8 path").to_string();
    let script = script_dir.to_str().expect("utf-8 path").to_string();
    let run = |name: &str| {
        let paths = ["/usr", "/lib", "/lib64", &site, &script];
        cluster.create_pod(json!({
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "enableServiceLinks": false,
                "volumes": paths.iter().enumerate()
                    .map(|(i, p)| json!({"name": format!("v{i}"), "hostPath": {"path": p}}))
                    .collect::<Vec<_>>(),
                "containers": [{
                    "name": "client", "image": "skiff.local/web:1.0",
                    "command": ["/usr/bin/python3", format!("{script}/incluster.py")],
                    "env": [{"name": "PYTHONPATH", "value": site}],
                    "volumeMounts": paths.iter().enumerate()
                        .map(|(i, p)| json!({"name": format!("v{i}"), "mountPath": p, "readOnly": true}))
                        .collect::<Vec<_>>(),
                }]
            }
        }));
        eventually(
            &format!("pod {name} finishes"),
            Duration::from_secs(90),
            || {
                let phase = cluster.pod(name)["status"]["phase"].clone();
                (phase == "Succeeded" || phase == "Failed").then_some(())
            },
        );
        let (_, out, err) = cluster.kubectl(&["logs", name]);
        format!("{out}{err}")
    };

    // The pod's ServiceAccount may not list pods yet: 403 from inside.
    let out = run("denied");
    assert!(out.contains("HOST 10.168.0.1 443"), "{out}");
    assert!(out.contains("STATUS 403"), "{out}");

    // Granted by a Role: the same client lists the namespace's pods, itself among them.
    for args in [
        vec![
            "create",
            "role",
            "pod-reader",
            "--verb=list",
            "--resource=pods",
        ],
        vec![
            "create",
            "rolebinding",
            "pod-reader",
            "--role=pod-reader",
            "--serviceaccount=default:default",
        ],
    ] {
        let (ok, _, err) = cluster.kubectl(&args);
        assert!(ok, "{err}");
    }
    let out = run("allowed");
    assert!(out.contains("PODS allowed denied"), "{out}");
}

/// `securityContext` as the kernel sees it inside the container (/proc/self/status), a pids
/// limit on every pod (all its containers together), recursive read-only hostPath mounts, and
/// `runAsNonRoot` refusing a root image with kubelet's words.
#[test]
fn security_contexts_reach_the_kernel_and_run_as_non_root_refuses_a_root_image() {
    let cluster = Cluster::start_with(69, "x", &["--pod-max-pids", "48"]);
    cluster.allow_privileged_pods();
    // A host directory with a mount below it: read-only must reach the mount below too.
    let shared = cluster.dir.path().join("shared");
    let below = shared.join("below");
    std::fs::create_dir_all(&below).expect("dirs");
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "skiff-test",
            below.to_str().expect("path"),
        ])
        .status()
        .expect("mount");
    assert!(mounted.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(below.clone());

    let report = "busybox grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
                  echo ports $(cat /proc/sys/net/ipv4/ip_unprivileged_port_start); \
                  touch /shared/below/x 2>/dev/null && echo below writable || echo below read-only";
    let run = |name: &str, pod_sc: Value, sc: Value| {
        cluster.create_pod(json!({
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": pod_sc,
                "volumes": [{"name": "shared", "hostPath": {"path": shared}}],
                "containers": [{
                    "name": "c", "image": "skiff.local/web:1.0",
                    "command": ["sh", "-c", report],
                    "securityContext": sc,
                    "volumeMounts": [{"name": "shared", "mountPath": "/shared", "readOnly": true}],
                }]
            }
        }));
        eventually(
            &format!("pod {name} finishes"),
            Duration::from_secs(60),
            || (cluster.pod(name)["status"]["phase"] == "Succeeded").then_some(()),
        );
        let (_, out, err) = cluster.kubectl(&["logs", name]);
        let out = format!("{out}{err}");
        let name = name.to_string();
        move |line: &str| {
            assert!(
                out.lines()
                    .any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == line),
                "{name}: no line {line:?} in:\n{out}"
            )
        }
    };

    // Kubernetes' defaults: root, containerd's 14 capabilities, no filter, escalation allowed.
    let plain = run("plain", json!({}), json!({}));
    plain("Uid: 0 0 0 0");
    plain("CapEff: 00000000a80425fb");
    plain("NoNewPrivs: 0");
    plain("Seccomp: 0");
    plain("ports 1024");
    plain("below read-only");

    // Hardened: another user, no capabilities, no escalation, the default filter, a sysctl.
    let hardened = run(
        "hardened",
        json!({"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"},
               "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]}),
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}),
    );
    hardened("Uid: 1000 1000 1000 1000");
    hardened("CapEff: 0000000000000000");
    hardened("NoNewPrivs: 1");
    hardened("Seccomp: 2");
    hardened("ports 0");

    // runAsNonRoot with an image that runs as root: not started, kubelet's reason and words.
    cluster.create_pod(json!({
        "metadata": {"name": "rootless"},
        "spec": {
            "securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "c", "image": "skiff.local/web:1.0"}]
        }
    }));
    let uid = cluster.pod("rootless")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let waiting = eventually("rootless refused", Duration::from_secs(60), || {
        let waiting =
            cluster.pod("rootless")["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (waiting["reason"] == "CreateContainerConfigError").then_some(waiting)
    });
    assert_eq!(
        waiting["message"],
        format!("container has runAsNonRoot and image will run as root (pod: \"rootless_default({uid})\", container: c)")
    );
    assert!(cluster
        .containers()
        .iter()
        .all(|id| !id.contains("rootless")));

    // --pod-max-pids holds for the pod: the first container takes 31 of its 48 processes, so
    // the second cannot start 30 more (with a limit per container both could).
    let mount = json!([{"name": "flag", "mountPath": "/flag"}]);
    cluster.create_pod(json!({
        "metadata": {"name": "forks"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "flag", "emptyDir": {}}],
            "containers": [
                {"name": "first", "image": "skiff.local/web:1.0", "volumeMounts": mount,
                 "command": ["sh", "-c", "for i in $(seq 30); do sleep 600 & done; \
                     echo first forked; touch /flag/done; wait"]},
                {"name": "second", "image": "skiff.local/web:1.0", "volumeMounts": mount,
                 "command": ["sh", "-c", "until [ -e /flag/done ]; do sleep 0.2; done; \
                     for i in $(seq 30); do sleep 600 & done; echo second forked; wait"]},
            ]
        }
    }));
    let uid = cluster.pod("forks")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let terminated = eventually(
        "the second container fails",
        Duration::from_secs(60),
        || {
            let statuses = cluster.pod("forks")["status"]["containerStatuses"].clone();
            statuses
                .as_array()?
                .iter()
                .find(|s| s["name"] == "second")
                .map(|s| s["state"]["terminated"].clone())
                .filter(|t| t.is_object())
        },
    );
    assert_ne!(terminated["exitCode"], 0, "{terminated}");
    let logs = |container: &str| {
        let (_, out, err) = cluster.kubectl(&["logs", "forks", "-c", container]);
        format!("{out}{err}")
    };
    assert!(logs("first").contains("first forked"), "{}", logs("first"));
    let second = logs("second");
    assert!(
        second.contains("can't fork") && !second.contains("second forked"),
        "{second}"
    );
    // The limit is on the pod's cgroup, which goes with the pod.
    let pids_root = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "/sys/fs/cgroup" // v2: one tree
    } else {
        "/sys/fs/cgroup/pids" // v1: the pids controller's hierarchy
    };
    let pod_cgroup = format!("{pids_root}/skiff-skiff-test-x/pod{uid}");
    assert_eq!(
        std::fs::read_to_string(format!("{pod_cgroup}/pids.max"))
            .expect("pids.max")
            .trim(),
        "48"
    );
    let (ok, _, err) = cluster.kubectl(&["delete", "pod", "forks", "--grace-period=1"]);
    assert!(ok, "{err}");
    eventually(
        "the pod's cgroup is removed",
        Duration::from_secs(30),
        || (!std::path::Path::new(&pod_cgroup).exists()).then_some(()),
    );
}

use std::path::PathBuf;

use super::*;

/// A container record: `rec("web", "app", 0)` is attempt 0 of container `app` of pod `web`
/// (uid `u-web`, namespace `default`), running.
fn rec(pod: &str, container: &str, attempt: u32) -> ContainerRecord {
    ContainerRecord {
        id: format!("{pod}-{container}-{attempt}"),
        pod_uid: format!("u-{pod}"),
        pod_namespace: "default".into(),
        pod_name: pod.into(),
        container_name: container.into(),
        attempt,
        state: ContainerState::Running {
            started_at: "2024-06-01T00:00:00Z".parse().expect("time"),
        },
        image: "busybox".into(),
        image_id: String::new(),
        log_path: PathBuf::new(),
    }
}

fn exited(mut r: ContainerRecord) -> ContainerRecord {
    r.state = ContainerState::Exited {
        exit_code: 1,
        started_at: None,
        finished_at: Timestamp::UNIX_EPOCH,
        oom_killed: false,
    };
    r
}

#[test]
fn only_the_newest_running_attempt_of_each_container_is_measured() {
    let cases: Vec<(&str, Vec<ContainerRecord>, Vec<&str>)> = vec![
        (
            "restarts: the newest attempt",
            vec![
                rec("web", "app", 0),
                rec("web", "app", 2),
                rec("web", "app", 1),
            ],
            vec!["web-app-2"],
        ),
        (
            "exited ones are left out",
            vec![exited(rec("web", "app", 3)), rec("web", "app", 2)],
            vec!["web-app-2"],
        ),
        (
            "ordered by pod, then container",
            vec![
                rec("web", "side", 0),
                rec("db", "pg", 0),
                rec("web", "app", 0),
            ],
            vec!["db-pg-0", "web-app-0", "web-side-0"],
        ),
        (
            "nothing running",
            vec![exited(rec("web", "app", 0))],
            vec![],
        ),
    ];
    for (name, records, want) in cases {
        let got: Vec<String> = newest_running(records).into_iter().map(|r| r.id).collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn nano_cores_is_cpu_time_over_wall_time() {
    let s = Duration::from_secs;
    let cases = [
        // 1.5 s of CPU in 15 s: a tenth of a core
        (0, 1_500_000_000, s(15), Some(100_000_000)),
        // two cores busy for 10 s
        (5, 20_000_000_005, s(10), Some(2_000_000_000)),
        (7, 7, s(15), Some(0)),
        // went backwards: not the same cgroup
        (9, 8, s(15), None),
        (0, 1, Duration::ZERO, None),
    ];
    for (before, now, elapsed, want) in cases {
        assert_eq!(nano_cores(before, now, elapsed), want, "{before} → {now}");
    }
}

fn usage_of(cpu_ns: u64, working_set: u64) -> ContainerUsage {
    ContainerUsage {
        cgroup: "/skiff-k8s/podu/c".into(),
        usage: CgroupUsage {
            cpu_ns: Some(cpu_ns),
            memory: Some(MemoryUsage {
                usage: working_set + 100,
                working_set,
                rss: working_set,
                cache: 100,
            }),
        },
    }
}

fn proc_tree(busy_ticks: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("stat"),
        format!("cpu  {busy_ticks} 0 0 1000 0 0 0 0 0 0\n"),
    )
    .expect("stat");
    std::fs::write(
        dir.path().join("meminfo"),
        "MemTotal: 1000 kB\nMemAvailable: 250 kB\n",
    )
    .expect("meminfo");
    dir
}

/// Two samples 15 s apart: rates appear in the second, for the node, the containers seen in
/// both, the pods, and the proxy's Services and endpoints.
#[test]
fn the_second_sample_has_rates_since_the_first() {
    let proc_root = proc_tree(100);
    let counter = Arc::new(RequestCounter::default());
    let web = counter.tally("default", "web");
    let endpoint: IpAddr = [10, 42, 0, 7].into();
    let mut sampler = Sampler::new("n1", proc_root.path(), Some(counter.clone()));
    let start = Instant::now();
    let t0: Timestamp = "2024-06-01T00:00:00Z".parse().expect("time");

    // 1. First sample: counters only.
    let first = sampler.take(
        vec![
            rec("web", "app", 0),
            rec("web", "side", 0),
            rec("db", "pg", 0),
        ],
        |r| match r.container_name.as_str() {
            "app" => Some(usage_of(1_000_000_000, 1_000)),
            "side" => Some(usage_of(0, 500)),
            // not measurable (no cgroup): left out, and so is its pod
            _ => None,
        },
        start,
        t0,
    );
    assert_eq!(first.summary.pods.len(), 1, "{:?}", first.summary.pods);
    let pod = &first.summary.pods[0];
    assert_eq!(pod.pod_ref.name, "web");
    assert_eq!(pod.containers.len(), 2);
    let cpu = pod.containers[0].cpu.as_ref().expect("cpu");
    assert_eq!(
        (cpu.usage_core_nano_seconds, cpu.usage_nano_cores),
        (Some(1_000_000_000), None)
    );
    assert_eq!(
        pod.containers[0].start_time.as_deref(),
        Some("2024-06-01T00:00:00Z")
    );
    assert_eq!(
        pod.memory.as_ref().and_then(|m| m.working_set_bytes),
        Some(1_500)
    );
    assert_eq!(first.summary.requests, None, "no window yet");
    let node = &first.summary.node;
    assert_eq!(
        node.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds),
        Some(1_000_000_000)
    );
    assert_eq!(
        node.memory.as_ref().and_then(|m| m.working_set_bytes),
        Some(750 * 1024)
    );
    assert_eq!(first.machine_memory_bytes, Some(1000 * 1024));
    assert_eq!(
        first.cgroups.get(&("u-web".to_string(), "app".to_string())),
        Some(&"/skiff-k8s/podu/c".to_string())
    );

    // 2. 15 s later: app used 1.5 s more, side restarted (a new id: no rate yet), 30
    //    connections went to web, the node spent 300 more ticks (3 s).
    for _ in 0..30 {
        web.forwarded(endpoint);
    }
    let proc_root_later = proc_tree(400);
    sampler.proc_root = proc_root_later.path().to_path_buf();
    let second = sampler.take(
        vec![
            rec("web", "app", 0),
            exited(rec("web", "side", 0)),
            rec("web", "side", 1),
        ],
        |r| match r.container_name.as_str() {
            "app" => Some(usage_of(2_500_000_000, 1_000)),
            _ => Some(usage_of(300_000_000, 500)),
        },
        start + Duration::from_secs(15),
        t0 + jiff::SignedDuration::from_secs(15),
    );
    let pod = &second.summary.pods[0];
    let rates: Vec<Option<u64>> = pod
        .containers
        .iter()
        .map(|c| c.cpu.as_ref().and_then(|c| c.usage_nano_cores))
        .collect();
    assert_eq!(rates, [Some(100_000_000), None]);
    let pod_cpu = pod.cpu.as_ref().expect("pod cpu");
    assert_eq!(pod_cpu.usage_nano_cores, Some(100_000_000));
    assert_eq!(pod_cpu.usage_core_nano_seconds, Some(2_800_000_000));
    assert_eq!(pod_cpu.time, "2024-06-01T00:00:15Z");
    assert_eq!(
        second
            .summary
            .node
            .cpu
            .as_ref()
            .and_then(|c| c.usage_nano_cores),
        Some(200_000_000)
    );
    let requests = second.summary.requests.as_ref().expect("requests");
    assert_eq!(requests.window_seconds, 15.0);
    assert_eq!(
        requests.services,
        [ServiceRequests {
            namespace: "default".into(),
            name: "web".into(),
            per_second: 2.0
        }]
    );
    assert_eq!(
        requests.endpoints,
        [EndpointRequests {
            ip: "10.42.0.7".into(),
            per_second: 2.0
        }]
    );
    assert_eq!(
        second
            .connections
            .get(&("default".to_string(), "web".to_string())),
        Some(&30)
    );

    // 3. A quiet window: web reports 0 once, then is left out.
    let third = sampler.take(vec![], |_| None, start + Duration::from_secs(30), t0);
    let requests = third.summary.requests.as_ref().expect("requests");
    assert_eq!(requests.services.len(), 1);
    assert_eq!(requests.services[0].per_second, 0.0);
    let fourth = sampler.take(vec![], |_| None, start + Duration::from_secs(45), t0);
    let requests = fourth.summary.requests.as_ref().expect("requests");
    assert!(requests.services.is_empty() && requests.endpoints.is_empty());
}

/// The sampler task with the fake runtime (a simulated node): it publishes at once, with the
/// node's figures and no pods (the fake runtime has no cgroups), then every interval.
#[tokio::test(start_paused = true)]
async fn simulated_nodes_publish_node_figures_and_no_pods() {
    let runtime = Arc::new(crate::fake::FakeRuntime::new("10.99.0"));
    let (tx, mut rx) = channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run(
        runtime,
        Sampler::new("n1", "/proc", None),
        DEFAULT_INTERVAL,
        tx,
        stop_rx,
    ));
    rx.changed().await.expect("a first sample");
    let first = rx.borrow_and_update().clone().expect("published");
    assert!(first.summary.pods.is_empty());
    assert_eq!(first.summary.node.node_name, "n1");
    assert!(first.summary.node.cpu.is_some() && first.summary.node.memory.is_some());
    assert_eq!(first.summary.requests, None);
    rx.changed().await.expect("a second sample");
    let second = rx.borrow_and_update().clone().expect("published");
    assert!(second.taken_at >= first.taken_at);
    let _ = stop_tx.send(true);
    task.await.expect("the sampler stops");
}

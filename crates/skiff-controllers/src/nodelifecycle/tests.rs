//! Table tests of the node lifecycle controller: silence, taints, eviction, return, and
//! leader changes.
use super::*;
use serde_json::json;

const NO_PODS: &[Pod] = &[];

fn at(seconds: i64) -> Timestamp {
    let t0: Timestamp = "2024-01-01T00:00:00Z".parse().expect("time");
    t0 + jiff::SignedDuration::from_secs(seconds)
}

fn node(ready: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": "n1", "uid": "n1-uid", "resourceVersion": "5"},
        "spec": {"taints": [{"key": "dedicated", "value": "edge", "effect": "NoSchedule"}]},
        "status": {"conditions": [
            {"type": "Ready", "status": ready, "reason": "KubeletReady",
             "lastHeartbeatTime": "2024-01-01T00:00:00Z"},
            {"type": "MemoryPressure", "status": "False"},
        ]},
    }))
    .expect("node")
}

fn heard_at(seconds: i64) -> BTreeMap<String, Timestamp> {
    [("n1".to_string(), at(seconds))].into()
}

fn pod(name: &str, tolerations: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"nodeName": "n1", "containers": [], "tolerations": tolerations},
    }))
    .expect("pod")
}

/// `node` after the lifecycle controller tainted it at `seconds`.
fn tainted_at(seconds: i64) -> Node {
    let mut n = node("Unknown");
    n.status
        .as_mut()
        .expect("status")
        .conditions
        .as_mut()
        .expect("c")[0]
        .reason = Some("NodeStatusUnknown".into());
    with_taints(&n, Some(UNREACHABLE), at(seconds)).expect("tainted")
}

fn written_node(actions: &[Action]) -> Option<&Node> {
    actions.iter().find_map(|a| match a {
        Action::Update(Object::Node(n)) | Action::UpdateStatus(Object::Node(n)) => Some(&**n),
        _ => None,
    })
}

fn evicted(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Delete { object, .. } => object.name.clone(),
            _ => None,
        })
        .collect()
}

#[test]
fn silence_timeline() {
    let config = Config::default();
    // (seconds since last heartbeat, writes the status?)
    for (silent_for, marks) in [
        (0, false),
        (11, false),
        (12, false),
        (13, true),
        (600, true),
    ] {
        let actions = reconcile(
            &[node("True")],
            &heard_at(0),
            NO_PODS,
            at(silent_for),
            &config,
        );
        assert_eq!(written_node(&actions).is_some(), marks, "{silent_for} s");
    }
    // A heartbeat 5 s ago: check again in 7 s.
    let actions = reconcile(&[node("True")], &heard_at(0), NO_PODS, at(5), &config);
    assert!(
        matches!(actions.as_slice(), [Action::RequeueAfter { after, .. }] if after.as_secs() == 7)
    );
}

#[test]
fn a_silent_node_becomes_unknown_then_tainted() {
    let config = Config::default();
    let actions = reconcile(&[node("True")], &heard_at(0), NO_PODS, at(25), &config);
    let Some(Action::UpdateStatus(Object::Node(marked))) = actions.first() else {
        panic!("{actions:#?}");
    };
    let conditions = marked
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .expect("c");
    for c in &conditions {
        assert_eq!(c.status, "Unknown", "{}", c.type_);
        assert_eq!(c.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            c.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(c.last_transition_time, Some(Time(at(25))));
    }
    assert_eq!(conditions[0].last_heartbeat_time, Some(Time(at(0))), "kept");
    let Some(Action::Event(e)) = actions.get(1) else {
        panic!("{actions:#?}")
    };
    assert_eq!(
        (e.reason.as_str(), e.message.as_str()),
        ("NodeNotReady", "Node n1 status is now: NodeNotReady")
    );

    // Next pass: the taints, stamped with the time they were added.
    let actions = reconcile(
        &[(**marked).clone()],
        &heard_at(0),
        NO_PODS,
        at(26),
        &config,
    );
    let tainted = written_node(&actions).expect("taint update");
    let taints = tainted
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .expect("taints");
    let keys: Vec<(&str, &str)> = taints
        .iter()
        .map(|t| (t.key.as_str(), t.effect.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("dedicated", "NoSchedule"),
            (UNREACHABLE, "NoSchedule"),
            (UNREACHABLE, "NoExecute")
        ]
    );
    assert_eq!(taints[2].time_added, Some(Time(at(26))));
    // And then nothing more to write for the node itself.
    let actions = reconcile(
        std::slice::from_ref(tainted),
        &heard_at(0),
        NO_PODS,
        at(27),
        &config,
    );
    assert!(written_node(&actions).is_none());
}

#[test]
fn eviction_waits_for_each_pods_toleration() {
    // A default of 30 s here, to keep the pods' own tolerations apart from it.
    let config = Config {
        unreachable_toleration: Duration::from_secs(30),
        ..Config::default()
    };
    let pods = [
        pod("plain", json!([])),
        pod(
            "patient",
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]),
        ),
        pod(
            "forever",
            json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]),
        ),
        pod("everything", json!([{"operator": "Exists"}])),
        pod(
            "unrelated",
            json!([{"key": "gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 999}]),
        ),
        pod(
            "shortest",
            json!([
                {"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 100},
                {"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 10},
            ]),
        ),
    ];
    // (seconds since the taint was added, pods deleted by then)
    let cases: [(i64, &[&str]); 4] = [
        (5, &[]),
        (10, &["shortest"]),
        (30, &["plain", "unrelated", "shortest"]),
        (60, &["plain", "patient", "unrelated", "shortest"]),
    ];
    for (after, want) in cases {
        let actions = reconcile(
            &[tainted_at(100)],
            &heard_at(0),
            &pods,
            at(100 + after),
            &config,
        );
        assert_eq!(evicted(&actions), want, "{after} s after the taint");
    }
    let actions = reconcile(&[tainted_at(100)], &heard_at(0), &pods, at(130), &config);
    assert!(actions.iter().any(|a| matches!(a, Action::Event(e)
        if e.reason == "TaintManagerEviction" && e.message == "Marking for deletion Pod default/plain")));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Delete { uid, .. } if uid == "uid-plain")));
    // The next pod to go ("patient") is 30 s away.
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::RequeueAfter { after, .. } if after.as_secs() == 30)));
}

#[test]
fn returning_heartbeats_restore_ready_then_remove_the_taints() {
    let config = Config::default();
    let actions = reconcile(
        &[tainted_at(30)],
        &heard_at(200),
        &[pod("p", json!([]))],
        at(201),
        &config,
    );
    let Some(Action::UpdateStatus(Object::Node(ready))) = actions.first() else {
        panic!("{actions:#?}");
    };
    assert!(
        evicted(&actions).is_empty(),
        "a node that is back evicts nothing"
    );
    let conditions = ready
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .expect("c");
    assert_eq!(
        (
            conditions[0].status.as_str(),
            conditions[0].reason.as_deref()
        ),
        ("True", Some("KubeletReady"))
    );
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Event(e) if e.message == "Node n1 status is now: NodeReady")));

    let actions = reconcile(
        &[(**ready).clone()],
        &heard_at(200),
        NO_PODS,
        at(202),
        &config,
    );
    let untainted = written_node(&actions).expect("taints removed");
    let taints = untainted
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .expect("taints");
    assert_eq!(taints.len(), 1, "only the user's own taint is left");
}

#[test]
fn nodes_without_a_heartbeat_entry_are_left_alone() {
    let actions = reconcile(
        &[node("True")],
        &BTreeMap::new(),
        NO_PODS,
        at(1000),
        &Config::default(),
    );
    assert!(actions.is_empty());
}

#[test]
fn an_agent_reporting_not_ready_gets_the_not_ready_taint() {
    let actions = reconcile(
        &[node("False")],
        &heard_at(0),
        NO_PODS,
        at(1),
        &Config::default(),
    );
    let tainted = written_node(&actions).expect("tainted");
    let keys: Vec<&str> = tainted
        .spec
        .iter()
        .flat_map(|s| s.taints.iter().flatten())
        .map(|t| t.key.as_str())
        .collect();
    assert_eq!(keys, ["dedicated", NOT_READY, NOT_READY]);
}

/// What a pass wrote to the node's Ready condition, if anything.
fn written_ready(actions: &[Action]) -> Option<String> {
    actions.iter().find_map(|a| match a {
        Action::UpdateStatus(Object::Node(n)) => ready_status(n),
        _ => None,
    })
}

/// A node with no Ready condition yet, created at `seconds`.
fn never_reported(created: i64) -> Node {
    let mut n = node("True");
    n.status = None;
    n.metadata.creation_timestamp = Some(Time(at(created)));
    n
}

/// The bug this guards against: a node dead and NotReady for 90 s was written `Ready=True`
/// (KubeletReady) when leadership moved, because the new leader counted every node as just
/// heard from; its taints went and its pods' eviction clock restarted. The new leader's
/// table starts at 100 s (the [`TAKEOVER`] entry) and has heard from nobody since.
#[test]
fn a_new_leader_grants_its_takeover_grace_only_to_nodes_it_found_ready() {
    let takeover: BTreeMap<String, Timestamp> = [(TAKEOVER.to_string(), at(100))].into();
    let mut with_beat = takeover.clone();
    with_beat.insert("n1".into(), at(104));
    // (what, the stored node, the table, now, the Ready status written (None: nothing))
    type Case<'a> = (
        &'a str,
        Node,
        &'a BTreeMap<String, Timestamp>,
        i64,
        Option<&'a str>,
    );
    let cases: [Case; 9] = [
        (
            "Ready, within the grace",
            node("True"),
            &takeover,
            105,
            None,
        ),
        (
            "Ready, grace over",
            node("True"),
            &takeover,
            113,
            Some("Unknown"),
        ),
        (
            "Unknown stays Unknown",
            tainted_at(10),
            &takeover,
            101,
            None,
        ),
        ("Unknown, long after", tainted_at(10), &takeover, 200, None),
        (
            "Unknown, a real heartbeat",
            tainted_at(10),
            &with_beat,
            105,
            Some("True"),
        ),
        ("False stays False", node("False"), &takeover, 101, None),
        ("False, long after", node("False"), &takeover, 200, None),
        (
            "never reported, grace",
            never_reported(0),
            &takeover,
            105,
            None,
        ),
        (
            "created after takeover",
            never_reported(150),
            &takeover,
            160,
            None,
        ),
    ];
    let config = Config::default();
    for (what, node, table, now, want) in cases {
        let actions = reconcile(&[node], table, NO_PODS, at(now), &config);
        assert_eq!(
            written_ready(&actions).as_deref(),
            want,
            "{what}: {actions:#?}"
        );
    }
    // Never reported, grace over: Unknown with Kubernetes' "never updated" reason.
    let actions = reconcile(&[never_reported(0)], &takeover, NO_PODS, at(113), &config);
    let Some(Action::UpdateStatus(Object::Node(marked))) = actions.first() else {
        panic!("{actions:#?}");
    };
    let ready = &marked
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .expect("c")[0];
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("Unknown", Some("NodeStatusNeverUpdated"))
    );

    // The dead node keeps its taint (and its time) through the leader change, and its pods
    // are evicted on the old clock: tainted at 10 s, 8 s of toleration, so at once.
    let dead = tainted_at(10);
    let pods = [pod("p", json!([]))];
    let actions = reconcile(
        std::slice::from_ref(&dead),
        &takeover,
        &pods,
        at(101),
        &config,
    );
    assert!(written_node(&actions).is_none(), "{actions:#?}");
    assert_eq!(evicted(&actions), ["p"]);
}

#[test]
fn the_defaults_evict_about_twenty_seconds_after_the_last_heartbeat() {
    // Heard at 0; the 1 s passes mark it at 13, taint it at 14; 8 s later its pods go.
    let config = Config::default();
    let pods = [pod("p", json!([]))];
    let actions = reconcile(&[node("True")], &heard_at(0), &pods, at(13), &config);
    assert_eq!(written_ready(&actions).as_deref(), Some("Unknown"));
    for (now, gone) in [(14 + 7, false), (14 + 8, true)] {
        let actions = reconcile(&[tainted_at(14)], &heard_at(0), &pods, at(now), &config);
        assert_eq!(!evicted(&actions).is_empty(), gone, "at {now} s");
    }
    // The not-ready taint has its own default.
    let config = Config {
        not_ready_toleration: Duration::from_secs(100),
        ..Config::default()
    };
    let not_ready = with_taints(&node("False"), Some(NOT_READY), at(0)).expect("tainted");
    let actions = reconcile(&[not_ready], &heard_at(50), &pods, at(60), &config);
    assert!(evicted(&actions).is_empty(), "{actions:#?}");
}

#[test]
fn flags_parse_as_kubernetes_writes_durations() {
    for (text, want) in [
        ("12s", Some(12_000)),
        ("500ms", Some(500)),
        ("1m30s", Some(90_000)),
        ("1.5s", Some(1_500)),
        ("1h", Some(3_600_000)),
        ("0", Some(0)),
        ("12", None),
        ("", None),
        ("s", None),
        ("12x", None),
    ] {
        let got = parse_duration(text).ok().map(|d| d.as_millis() as u64);
        assert_eq!(got, want, "{text:?}");
    }
    let config = Config::with(Some(Duration::from_secs(50)), Some(300), None);
    assert_eq!(config.not_ready_after, Duration::from_secs(50));
    assert_eq!(config.unreachable_toleration, Duration::from_secs(300));
    assert_eq!(
        config.not_ready_toleration,
        Config::default().not_ready_toleration
    );
}

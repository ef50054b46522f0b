//! End-to-end: a three-member cluster of real `skiff server` processes on loopback, over TLS.

mod common;

use std::time::{Duration, Instant};

use common::{configmap, eventually, Client, Server};
use serde_json::{json, Value};

const CM: &str = "/api/v1/namespaces/default/configmaps";

fn members(client: &Client) -> Vec<Value> {
    let (status, body) = client.get("/skiff/v1/members");
    assert_eq!(status, 200, "{body}");
    body["members"].as_array().cloned().unwrap_or_default()
}

fn leader_port(client: &Client) -> Option<u16> {
    members(client)
        .iter()
        .find(|m| m["leader"] == true)
        .and_then(|m| m["addr"].as_str())
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
}

#[test]
fn three_servers_replicate_survive_leader_loss_and_admit_a_fourth() {
    let dir = tempfile::tempdir().expect("temp dir");

    // 1. Start one server, join two more with its token.
    let first = Server::start(&dir.path().join("s1"));
    let c1 = first.wait_ready();
    let second = Server::join(&dir.path().join("s2"), &first);
    second.wait_ready();
    let third = Server::join(&dir.path().join("s3"), &first);
    third.wait_ready();
    let voters = members(&c1).iter().filter(|m| m["role"] == "voter").count();
    assert_eq!(voters, 3);
    let mut servers = vec![first, second, third];

    // A Secret written through one member (sealed in the log with the cluster's key) opens on
    // every member, and a ServiceAccount token one member signs is taken by the others: the
    // joiners got the encryption configuration and the signing key with the CA.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "shared"},
                        "stringData": {"k": "v"}});
    let (status, body) = c1
        .at(&servers[1].url())
        .post("/api/v1/namespaces/default/secrets", &secret);
    assert_eq!(status, 201, "{body}");
    let account =
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}});
    assert_eq!(
        c1.post("/api/v1/namespaces/default/serviceaccounts", &account)
            .0,
        201
    );
    let (status, issued) = c1.at(&servers[2].url()).post(
        "/api/v1/namespaces/default/serviceaccounts/robot/token",
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}),
    );
    assert_eq!(status, 201, "{issued}");
    let token = issued["status"]["token"].as_str().expect("a token");
    for server in &servers {
        let (status, read) = c1
            .at(&server.url())
            .get("/api/v1/namespaces/default/secrets/shared");
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["data"]["k"], "dg==", "opened on every member");
        let robot = common::Client::new(&server.url(), &c1.ca_pem, token);
        let (status, review) = robot.post(
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
        );
        assert_eq!(status, 201, "{review}");
        assert_eq!(
            review["status"]["userInfo"]["username"],
            "system:serviceaccount:default:robot"
        );
    }

    // 2. Writes through any member; reads from any member see them (linearizable).
    let mut acknowledged = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let client = c1.at(&server.url());
        for j in 0..20 {
            let name = format!("via-{i}-{j}");
            let (status, body) = client.post(CM, &configmap(&name, "x"));
            assert_eq!(status, 201, "{body}");
            acknowledged.push(name);
        }
    }
    // A namespace created through one follower is usable at once through another, and a
    // follower reads its own write straight after it.
    let (via_a, via_b) = (c1.at(&servers[1].url()), c1.at(&servers[2].url()));
    for n in 0..5 {
        let ns = format!("team-{n}");
        let body =
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let (status, created) = via_a.post("/api/v1/namespaces", &body);
        assert_eq!(status, 201, "{created}");
        let (status, cm) = via_b.post(
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            &configmap("c", "x"),
        );
        assert_eq!(status, 201, "{cm}");
        let (status, _) = via_b.get(&format!(
            "/api/v1/namespaces/{ns}/configmaps/c?resourceVersion=0"
        ));
        assert_eq!(
            status, 200,
            "read-your-writes on the follower that took the write"
        );
    }
    for server in &servers {
        let (_, list) = c1.at(&server.url()).get(CM);
        assert_eq!(written(&list), acknowledged.len());
    }

    // 3. Kill the leader with SIGKILL; writes through a survivor go on.
    let leader = leader_port(&c1).expect("a leader");
    let index = servers
        .iter()
        .position(|s| s.port == leader)
        .expect("leader is ours");
    let mut dead = servers.remove(index);
    let killed_at = Instant::now();
    dead.kill();
    let survivor = c1.at(&servers[0].url());
    eventually(
        "a write after the leader died",
        Duration::from_secs(20),
        || {
            let (status, _) = survivor.post(CM, &configmap("after-failover", "x"));
            (status == 201).then_some(())
        },
    );
    eprintln!(
        "failover: first acknowledged write {:?} after SIGKILL of the leader",
        killed_at.elapsed()
    );
    acknowledged.push("after-failover".into());
    let (_, list) = survivor.get(CM);
    let names = common::names(&list);
    for name in &acknowledged {
        assert!(names.contains(name), "acknowledged write {name} lost");
    }

    // 4. Many more writes (the servers snapshot every 200 entries and compact their logs), then
    //    a fourth server joins and must catch up from a snapshot.
    for j in 0..300 {
        let (status, body) = survivor.post(CM, &configmap(&format!("bulk-{j}"), "x"));
        assert_eq!(status, 201, "{body}");
    }
    let fourth = Server::join(&dir.path().join("s4"), &servers[0]);
    let c4 = fourth.wait_ready();
    let total = acknowledged.len() + 300;
    eventually(
        "the fourth server to hold every object",
        Duration::from_secs(30),
        || {
            let (_, list) = c4.get(&format!("{CM}?resourceVersion=0"));
            (written(&list) == total).then_some(())
        },
    );

    // 5. `skiff members remove` (run against a follower, so it follows the redirect to the
    //    leader) removes the dead member; the others stay voters.
    let dead_id = members(&survivor)
        .iter()
        .find(|m| m["addr"].as_str() == Some(dead.url().as_str()))
        .and_then(|m| m["id"].as_u64())
        .expect("dead member listed");
    let follower = servers
        .iter()
        .find(|s| Some(s.port) != leader_port(&survivor))
        .expect("a follower");
    let removed = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["members", "remove", &dead_id.to_string(), "--data-dir"])
        .arg(&follower.dir)
        .output()
        .expect("skiff members remove");
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let listed = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["members", "list", "--data-dir"])
        .arg(&follower.dir)
        .output()
        .expect("skiff members list");
    let table = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(!table.contains(&dead.url()), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.contains("voter")).count(),
        3,
        "{table}"
    );
    drop(fourth);
}

#[test]
fn a_join_token_for_another_ca_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = Server::start(&dir.path().join("s1"));
    first.wait_ready();
    let other = Server::start(&dir.path().join("other"));
    other.wait_ready();
    // The token of `other` pins other's CA; presenting it to `first` must fail before any secret
    // is sent, and the joining process must exit with an error.
    let token = std::fs::read_to_string(other.dir.join("token")).expect("token");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("intruder"))
        .args(["--join", &first.url(), "--token", token.trim()])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not hold the CA"), "{stderr}");
}

/// Creates through two members at once: each member serialises its own allocations, and the
/// address claims written with each Service (services.rs) keep the two members from handing
/// out one ClusterIP or node port twice.
#[test]
fn services_created_through_two_members_at_once_get_distinct_addresses() {
    const PER_MEMBER: usize = 25;
    let dir = tempfile::tempdir().expect("temp dir");
    let first = Server::start(&dir.path().join("s1"));
    let c1 = first.wait_ready();
    let second = Server::join(&dir.path().join("s2"), &first);
    second.wait_ready();
    let clients = [c1.at(&first.url()), c1.at(&second.url())];
    std::thread::scope(|scope| {
        for (m, client) in clients.iter().enumerate() {
            scope.spawn(move || {
                for i in 0..PER_MEMBER {
                    let svc = serde_json::json!({
                        "apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": format!("svc-{m}-{i}")},
                        "spec": {"type": "NodePort", "selector": {"app": "x"},
                                 "ports": [{"port": 80}]},
                    });
                    let (status, body) = client.post("/api/v1/namespaces/default/services", &svc);
                    assert_eq!(status, 201, "{body}");
                }
            });
        }
    });
    let (status, list) = c1.get("/api/v1/namespaces/default/services");
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    let mut ips = std::collections::HashSet::new();
    let mut node_ports = std::collections::HashSet::new();
    let ours: Vec<&Value> = items
        .iter()
        .filter(|s| {
            s["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("svc-"))
        })
        .collect();
    for svc in &ours {
        let name = &svc["metadata"]["name"];
        assert!(
            ips.insert(svc["spec"]["clusterIP"].to_string()),
            "{name}: ClusterIP {} given twice",
            svc["spec"]["clusterIP"]
        );
        assert!(
            node_ports.insert(svc["spec"]["ports"][0]["nodePort"].to_string()),
            "{name}: node port {} given twice",
            svc["spec"]["ports"][0]["nodePort"]
        );
    }
    assert_eq!(ips.len(), 2 * PER_MEMBER);

    // A deleted service's claims are taken over: its ClusterIP can be asked for again.
    let freed = ours[0]["spec"]["clusterIP"].clone();
    let gone = ours[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    let (status, body) = clients[1].call(
        reqwest::Method::DELETE,
        &format!("/api/v1/namespaces/default/services/{gone}"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let again = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "again"},
        "spec": {"clusterIP": freed, "selector": {"app": "x"}, "ports": [{"port": 80}]},
    });
    let (status, body) = clients[0].post("/api/v1/namespaces/default/services", &again);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["spec"]["clusterIP"], freed);
}

/// Automation starts every server at once: both joins must end with three voters (not two
/// voters and a learner), and the cluster must then survive the loss of its leader.
#[test]
fn servers_joining_at_the_same_moment_all_become_voters() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = Server::start(&dir.path().join("s1"));
    let c1 = first.wait_ready();
    let second = Server::join(&dir.path().join("s2"), &first);
    let third = Server::join(&dir.path().join("s3"), &first);
    second.wait_ready();
    third.wait_ready();
    eventually("three voters", Duration::from_secs(30), || {
        (members(&c1).iter().filter(|m| m["role"] == "voter").count() == 3).then_some(())
    });
    let (status, body) = c1.get("/skiff/v1/members");
    assert_eq!(status, 200);
    assert!(body["warning"].is_null(), "{body}");
    let (status, body) = c1.post(CM, &configmap("before", "x"));
    assert_eq!(status, 201, "{body}");

    // The leader dies; the two others elect one and take writes.
    let mut servers = [first, second, third];
    let leader = leader_port(&c1).expect("a leader");
    let index = servers
        .iter()
        .position(|s| s.port == leader)
        .expect("the leader is one of ours");
    servers[index].kill();
    let survivor = servers
        .iter()
        .find(|s| s.port != leader)
        .expect("a survivor");
    let client = c1.at(&survivor.url());
    eventually(
        "a write through a survivor",
        Duration::from_secs(20),
        || (client.post(CM, &configmap("after", "x")).0 == 201).then_some(()),
    );
    let (status, body) = client.get(&format!("{CM}/before"));
    assert_eq!(status, 200, "{body}");
    let (_, body) = client.get("/skiff/v1/members");
    assert_eq!(
        body["members"]
            .as_array()
            .map(|m| m.iter().filter(|m| m["role"] == "voter").count()),
        Some(3),
        "{body}"
    );
}

/// A tmpfs of a fixed size mounted on a directory (an edge box's small disk), unmounted on
/// drop, also when the test fails.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).expect("mount point");
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs on {}", dir.display());
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// One member's disk fills up: that member stops for good (its process exits with the reason,
/// so a supervisor can restart it), the two others go on acknowledging writes, and once space
/// is freed the member restarts and holds every acknowledged write.
#[test]
fn a_full_disk_stops_one_server_not_the_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let small = dir.path().join("s3");
    // Dropped last: after the servers (declared below) are killed.
    let _disk = SmallDisk::mount(&small, "40m");
    let first = Server::start(&dir.path().join("s1"));
    let c1 = first.wait_ready();
    let second = Server::join(&dir.path().join("s2"), &first);
    second.wait_ready();
    let mut third = Server::join(&small, &first);
    third.wait_ready();
    eventually("three voters", Duration::from_secs(30), || {
        (members(&c1).iter().filter(|m| m["role"] == "voter").count() == 3).then_some(())
    });

    // Fill the small disk to the last byte.
    let filler = small.join("filler");
    let mut file = std::fs::File::create(&filler).expect("filler");
    let chunk = vec![0u8; 1 << 20];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    drop(file);

    let payload = "x".repeat(3000);
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        let name = format!("full-{i}");
        let (status, body) = c1.post(CM, &configmap(&name, &payload));
        assert_eq!(
            status, 201,
            "a write while one member's disk is full: {body}"
        );
        acknowledged.push(name);
    }
    let status = eventually("the full member to exit", Duration::from_secs(30), || {
        third.exited()
    });
    assert!(
        !status.success(),
        "a Raft core stopped by a full disk is a failure exit"
    );
    let log = std::fs::read_to_string(small.with_extension("log")).unwrap_or_default();
    assert!(
        log.contains("the Raft core stopped") && log.contains("No space left on device"),
        "the log says why it stopped"
    );

    // Space returns; the member starts again and catches up.
    std::fs::remove_file(&filler).expect("free the space");
    third.restart();
    let c3 = third.wait_ready();
    for name in &acknowledged {
        let (status, body) = c3.get(&format!("{CM}/{name}"));
        assert_eq!(status, 200, "{name} after the restart: {body}");
    }
}

/// How many ConfigMaps of a list the test wrote: all but the CA bundle every namespace holds.
fn written(list: &Value) -> usize {
    common::names(list)
        .iter()
        .filter(|name| *name != "kube-root-ca.crt")
        .count()
}

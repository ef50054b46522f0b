//! In-process clusters over plain-text gRPC on loopback: replication, forwarding, failover,
//! snapshots. (The binary's end-to-end tests in the workspace's tests/ do the same over TLS.)

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use skiff_store::{object_key, Op, PeerTransport, Store, StoreConfig};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const SECRET: &str = "test-secret";

struct Member {
    store: Store,
    server: JoinHandle<()>,
    _dir: TempDir,
}

async fn start_member(id: u64, snapshot_every: u64) -> (Member, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = StoreConfig::new(
        id,
        &format!("m{id}"),
        &format!("http://{addr}"),
        dir.path().join("store"),
    );
    config.snapshot_every = snapshot_every;
    let store = Store::open(config, PeerTransport::new(None, SECRET))
        .await
        .expect("open store");
    let service = store.raft_service();
    let server = tokio::spawn(async move {
        let incoming = skiff_store::service::nodelay_incoming(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    });
    (
        Member {
            store,
            server,
            _dir: dir,
        },
        addr,
    )
}

fn configmap(name: &str, value: &str) -> Op {
    Op::Create {
        key: object_key("configmaps", "default", name),
        object: json!({"metadata": {"name": name, "namespace": "default"}, "data": {"v": value}}),
    }
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_forward_and_survive_leader_loss() {
    // 1. Start three members; the first initialises a one-member cluster and adds the others.
    let (a, _) = start_member(1, 5000).await;
    let (b, b_addr) = start_member(2, 5000).await;
    let (c, c_addr) = start_member(3, 5000).await;
    a.store.initialize().await.expect("initialize");
    a.store
        .wait_for_leader(Duration::from_secs(5))
        .await
        .expect("leader");
    a.store
        .add_member(2, "m2", &format!("http://{b_addr}"))
        .await
        .expect("add b");
    a.store
        .add_member(3, "m3", &format!("http://{c_addr}"))
        .await
        .expect("add c");
    assert_eq!(
        a.store
            .members()
            .iter()
            .filter(|m| m.role == "voter")
            .count(),
        3
    );

    // 2. Writes through a follower are forwarded to the leader and visible everywhere.
    let created = b
        .store
        .propose_one(configmap("from-b", "1"))
        .await
        .expect("store up")
        .expect("created");
    assert_eq!(created["metadata"]["name"], "from-b");
    c.store.linearize().await.expect("read index on a follower");
    assert!(
        c.store.get("configmaps/default/from-b").is_some(),
        "linearizable read sees the write"
    );

    // 3. Concurrent writes are coalesced but each gets its own revision.
    let mut writes = Vec::new();
    for i in 0..50 {
        let store = a.store.clone();
        writes.push(tokio::spawn(async move {
            store.propose_one(configmap(&format!("cm-{i}"), "x")).await
        }));
    }
    let mut revisions = Vec::new();
    for w in writes {
        let object = w.await.expect("task").expect("store up").expect("created");
        revisions.push(
            object["metadata"]["resourceVersion"]
                .as_str()
                .expect("rv")
                .to_string(),
        );
    }
    revisions.sort();
    revisions.dedup();
    assert_eq!(
        revisions.len(),
        50,
        "every operation has a distinct resourceVersion"
    );

    // 4. Kill the leader: the other two elect a new one and writes go on.
    a.server.abort();
    a.store.shutdown().await.expect("shutdown a");
    wait_until(
        "a new leader",
        || matches!(b.store.status().leader, Some(l) if l != 1),
    )
    .await;
    let after = c
        .store
        .propose_one(configmap("after-failover", "1"))
        .await
        .expect("store up");
    assert!(after.is_ok(), "write after failover: {after:?}");
    b.store.linearize().await.expect("linearize");
    for i in 0..50 {
        assert!(
            b.store.get(&format!("configmaps/default/cm-{i}")).is_some(),
            "acknowledged write cm-{i} kept"
        );
    }
    for m in [b, c] {
        m.store.shutdown().await.expect("shutdown");
        m.server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_catches_up_from_a_snapshot() {
    // 1. A one-member cluster that snapshots every 20 entries and purges its log.
    let (a, _) = start_member(1, 20).await;
    a.store.initialize().await.expect("initialize");
    a.store
        .wait_for_leader(Duration::from_secs(5))
        .await
        .expect("leader");
    for i in 0..100 {
        a.store
            .propose_one(configmap(&format!("cm-{i}"), "x"))
            .await
            .expect("store up")
            .expect("created");
    }
    a.store.trigger_snapshot().await.expect("snapshot");
    wait_until("the log to be purged", || a.store.status().last_applied > 0).await;

    // 2. A new member joins; the entries it lacks are gone from the log, so it needs the snapshot.
    let (b, b_addr) = start_member(2, 20).await;
    a.store
        .add_member(2, "m2", &format!("http://{b_addr}"))
        .await
        .expect("add b");
    wait_until("b to hold all objects", || {
        b.store.list("configmaps/").0.len() == 100
    })
    .await;
    assert_eq!(b.store.revision(), a.store.revision());
    for m in [a, b] {
        m.store.shutdown().await.expect("shutdown");
        m.server.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let config = StoreConfig::new(1, "m1", &addr, dir.path().to_path_buf());
    {
        let store = Store::open(config.clone(), PeerTransport::new(None, SECRET))
            .await
            .expect("open");
        store.initialize().await.expect("initialize");
        store
            .wait_for_leader(Duration::from_secs(5))
            .await
            .expect("leader");
        for i in 0..20 {
            store
                .propose_one(configmap(&format!("cm-{i}"), "x"))
                .await
                .expect("up")
                .expect("created");
        }
        store.shutdown().await.expect("shutdown");
    }
    // The old Raft tasks release sled's file lock as they wind down; in one process that takes a
    // moment (a real restart is a new process).
    let mut reopened = None;
    for _ in 0..100 {
        match Store::open(config.clone(), PeerTransport::new(None, SECRET)).await {
            Ok(store) => {
                reopened = Some(store);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let store = reopened.expect("reopen");
    assert!(!store.is_pristine());
    store
        .wait_for_leader(Duration::from_secs(5))
        .await
        .expect("leader after restart");
    store.linearize().await.expect("linearize");
    assert_eq!(store.list("configmaps/default/").0.len(), 20);
    let again = store.propose_one(configmap("cm-0", "y")).await.expect("up");
    assert!(again.is_err(), "cm-0 still exists after restart");
    store.shutdown().await.expect("shutdown");
}

/// A Raft call without the cluster secret is refused on its headers, before its body is read:
/// a 65 MiB message from a stranger is answered `Unauthenticated`, not first read and decoded
/// (which would answer that it is too large, after the member had buffered it all).
#[tokio::test]
async fn raft_calls_without_the_secret_are_refused_before_their_body_is_read() {
    use skiff_store::pb::raft_transport_client::RaftTransportClient;
    use skiff_store::pb::Payload;
    let (member, addr) = start_member(1, 1000).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut stranger = RaftTransportClient::new(channel).max_encoding_message_size(128 << 20);
    let huge = Payload {
        json: vec![b' '; 65 << 20],
    };
    let refused = stranger.append_entries(huge).await.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    let small = Payload {
        json: b"{}".to_vec(),
    };
    let refused = stranger.vote(small).await.expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    member.server.abort();
    member.store.shutdown().await.expect("shutdown");
}

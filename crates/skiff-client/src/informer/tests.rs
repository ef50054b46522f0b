use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};

use super::*;

fn pod(ns: &str, name: &str, version: &str) -> Pod {
    let mut pod = Pod::default();
    pod.metadata.namespace = Some(ns.into());
    pod.metadata.name = Some(name.into());
    pod.metadata.resource_version = Some(version.into());
    pod
}

fn version(store: &Store<Pod>, key: &str) -> Option<String> {
    store.get(key).and_then(|p| p.metadata.resource_version)
}

#[test]
fn the_store_follows_the_watch() {
    let store: Store<Pod> = Store::new(Kind::of::<Pod>());
    assert!(!store.is_synced());
    store.apply(Event::Restarted(vec![
        pod("a", "x", "1"),
        pod("b", "y", "2"),
    ]));
    assert!(store.is_synced());
    store.apply(Event::Applied(pod("a", "x", "3")));
    store.apply(Event::Applied(pod("a", "z", "4")));
    store.apply(Event::Deleted(pod("b", "y", "5")));
    assert_eq!(version(&store, "a/x").as_deref(), Some("3"));
    assert_eq!(store.in_namespace("a").len(), 2);
    assert!(store.get("b/y").is_none());
    // A relist replaces everything: what was deleted meanwhile disappears.
    store.apply(Event::Restarted(vec![pod("c", "w", "9")]));
    let keys: Vec<String> = store.read().keys().cloned().collect();
    assert_eq!(keys, ["c/w"]);
}

#[test]
fn handlers_see_the_store_already_changed_and_late_ones_catch_up() {
    let store: Store<Pod> = Store::new(Kind::of::<Pod>());
    store.apply(Event::Restarted(vec![pod("a", "old", "1")]));
    let seen = Arc::new(Mutex::new(Vec::new()));
    {
        let (seen, reader) = (seen.clone(), store.clone());
        // Registered after the first list: called at once for what is there.
        store.on_change(move |p: &Pod| {
            let key = key_of(&p.metadata);
            let in_store = reader.get(&key).and_then(|p| p.metadata.resource_version);
            seen.lock().expect("not poisoned").push((key, in_store));
        });
    }
    store.apply(Event::Applied(pod("a", "new", "2")));
    store.apply(Event::Deleted(pod("a", "old", "3")));
    // A relist tells of every object before and after.
    store.apply(Event::Restarted(vec![pod("a", "new", "4")]));
    let seen = seen.lock().expect("not poisoned").clone();
    let expected = [
        ("a/old", Some("1")),
        ("a/new", Some("2")),
        ("a/old", None),
        ("a/new", Some("4")),
        ("a/new", Some("4")),
    ];
    let expected: Vec<(String, Option<String>)> = expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn subscribers_get_what_they_missed_then_every_event() {
    let store: Store<Pod> = Store::new(Kind::of::<Pod>());
    // Before the first list: nothing to replay.
    let mut early = store.subscribe();
    assert!(early.try_recv().is_err());
    store.apply(Event::Restarted(vec![pod("a", "x", "1")]));
    let mut late = store.subscribe();
    store.apply(Event::Applied(pod("a", "y", "2")));
    let names = |rx: &mut mpsc::UnboundedReceiver<Event<Pod>>| {
        let mut out = Vec::new();
        while let Ok(event) = rx.try_recv() {
            out.push(match event {
                Event::Restarted(list) => format!("restarted {}", list.len()),
                Event::Applied(p) => format!("applied {}", key_of(&p.metadata)),
                Event::Deleted(p) => format!("deleted {}", key_of(&p.metadata)),
            });
        }
        out
    };
    assert_eq!(names(&mut early), ["restarted 1", "applied a/y"]);
    assert_eq!(names(&mut late), ["restarted 1", "applied a/y"]);
    // A dropped subscriber is forgotten, not an error.
    drop(late);
    store.apply(Event::Deleted(pod("a", "y", "3")));
    assert_eq!(names(&mut early), ["deleted a/y"]);
}

#[test]
fn one_store_per_kind_whoever_asks() {
    let informers = Informers::offline();
    let pods = informers.store::<Pod>();
    let again = informers.store::<Pod>();
    pods.apply(Event::Restarted(vec![pod("a", "x", "1")]));
    assert_eq!(version(&again, "a/x").as_deref(), Some("1"));

    // Metadata of a kind someone reads in full comes from that store.
    let info = skiff_api::resources::by_kind("v1", "Pod").expect("pods are served");
    let meta = informers.metadata(info);
    assert!(meta.as_any().downcast_ref::<Store<Pod>>().is_some());
    assert_eq!(
        meta.meta("a/x").and_then(|m| m.resource_version).as_deref(),
        Some("1")
    );

    // A kind nobody reads in full gets a metadata-only store, once.
    let info = skiff_api::resources::by_kind("v1", "ConfigMap").expect("configmaps are served");
    let first = informers.metadata(info);
    let _second = informers.metadata(info);
    assert!(first
        .as_any()
        .downcast_ref::<Store<PartialObject>>()
        .is_some());
    // The second request found the first store: still one store (one watch) per kind.
    assert_eq!(informers.all().len(), 2);
    let found = informers.find("v1", "ConfigMap").expect("found by kind");
    assert_eq!(found.kind().resource, "configmaps");
    assert_eq!(Kind::of::<ConfigMap>(), *first.kind());
    assert_eq!(Kind::of::<Node>().api_version(), "v1");
    assert!(informers.find("apps/v1", "Deployment").is_none());
}

#[tokio::test]
async fn synced_once_every_store_has_its_first_list() {
    let informers = Informers::offline();
    let pods = informers.store::<Pod>();
    let nodes = informers.store::<Node>();
    pods.apply(Event::Restarted(Vec::new()));
    let waiting = {
        let informers = informers.clone();
        tokio::spawn(async move { informers.wait_synced().await })
    };
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    nodes.apply(Event::Restarted(Vec::new()));
    waiting.await.expect("synced");
}

#[test]
fn partial_objects_read_only_the_metadata() {
    let object: PartialObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "namespace": "a", "uid": "u"},
        "data": {"password": "aHVudGVyMg=="}
    }))
    .expect("decodes");
    assert_eq!(key_of(object.meta()), "a/s");
}

//! Change detection for the ConfigMaps and Secrets that pods' volumes hold, as kubelet's
//! `Watch` strategy does it: one watch per object (`fieldSelector=metadata.name=NAME`, which
//! the Node authorizer allows for objects of this node's pods only). A change wakes the
//! workers of the pods that use the object, which write the new version at once; the periodic
//! refresh (`--sync-frequency`) stays as the safety net for a missed event.
//!
//! ```text
//!  pods on this node ─► refs (namespace, kind, name) ─► one watch each ─► change ─► broadcast
//!                                                                                   │
//!                                   each worker: "is it one of mine?" ─► volumes resynced ◄┘
//! ```
use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use skiff_client::watcher::{self, Event};
use skiff_client::{Client, ListParams};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// A ConfigMap or Secret a pod's volume is filled from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ref {
    pub namespace: String,
    /// `configmaps` or `secrets`.
    pub kind: &'static str,
    pub name: String,
}

/// The ConfigMaps and Secrets the volumes of `pod` are filled from (projected sources
/// included).
pub fn refs_of(pod: &Pod) -> BTreeSet<Ref> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let make = |kind: &'static str, name: &str| Ref {
        namespace: namespace.clone(),
        kind,
        name: name.to_string(),
    };
    let mut refs = BTreeSet::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(cm) = &volume.config_map {
            refs.insert(make("configmaps", &cm.name));
        }
        if let Some(name) = volume
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref())
        {
            refs.insert(make("secrets", name));
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(cm) = &source.config_map {
                refs.insert(make("configmaps", &cm.name));
            }
            if let Some(secret) = &source.secret {
                refs.insert(make("secrets", &secret.name));
            }
        }
    }
    refs.retain(|r| !r.name.is_empty());
    refs
}

/// The watches of one node, kept to the set its pods need.
pub struct ConfigWatches {
    client: Client,
    changes: broadcast::Sender<Ref>,
    watches: HashMap<Ref, JoinHandle<()>>,
}

impl ConfigWatches {
    pub fn new(client: Client, changes: broadcast::Sender<Ref>) -> ConfigWatches {
        ConfigWatches {
            client,
            changes,
            watches: HashMap::new(),
        }
    }

    /// Watches exactly `wanted`: new ones start, ones no pod needs any more stop.
    pub fn set(&mut self, wanted: &BTreeSet<Ref>) {
        self.watches.retain(|r, task| {
            let keep = wanted.contains(r);
            if !keep {
                task.abort();
            }
            keep
        });
        for r in wanted {
            if !self.watches.contains_key(r) {
                let task = tokio::spawn(watch_one(
                    self.client.clone(),
                    r.clone(),
                    self.changes.clone(),
                ));
                self.watches.insert(r.clone(), task);
            }
        }
    }
}

impl Drop for ConfigWatches {
    fn drop(&mut self) {
        for task in self.watches.values() {
            task.abort();
        }
    }
}

/// Tells `changes` of every change to the object after the first list.
async fn watch_one(client: Client, r: Ref, changes: broadcast::Sender<Ref>) {
    let params = ListParams::fields(format!("metadata.name={}", r.name));
    let namespace = Some(r.namespace.clone());
    // Only the events matter, not the objects: a change of either kind is announced.
    let mut first = true;
    macro_rules! follow {
        ($kind:ty) => {{
            let mut events = watcher::spawn::<$kind>(client, namespace, params);
            while let Some(event) = events.recv().await {
                // The first list is what the worker read already; a later relist may hide a
                // change made while the watch was down.
                if std::mem::take(&mut first) && matches!(event, Event::Restarted(_)) {
                    continue;
                }
                let _ = changes.send(r.clone());
            }
        }};
    }
    match r.kind {
        "secrets" => follow!(Secret),
        _ => follow!(ConfigMap),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_needs_the_objects_its_volumes_are_filled_from() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"containers": [], "volumes": [
                {"name": "a", "configMap": {"name": "app"}},
                {"name": "b", "secret": {"secretName": "creds"}},
                {"name": "c", "projected": {"sources": [{"configMap": {"name": "more"}},
                    {"serviceAccountToken": {"path": "t"}}]}},
                {"name": "d", "emptyDir": {}}]}}))
        .expect("pod");
        let names: Vec<String> = refs_of(&pod)
            .into_iter()
            .map(|r| format!("{}/{}/{}", r.namespace, r.kind, r.name))
            .collect();
        assert_eq!(
            names,
            [
                "shop/configmaps/app",
                "shop/configmaps/more",
                "shop/secrets/creds"
            ]
        );
    }
}

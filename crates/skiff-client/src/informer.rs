//! Shared informers: one watch per kind per process, one cache per kind, and handlers that
//! learn of every change (client-go's `SharedInformerFactory`, kube-rs' reflector).
//!
//! A process that runs several control loops should not open a watch on Nodes for each of
//! them. [`Informers`] is the one place a process asks for a kind: the first request starts a
//! [`watcher`](crate::watcher) for it and a reflector that keeps a [`Store`] of its objects;
//! every later request gets the same store.
//!
//! ```text
//!   watcher (list + watch) ──► reflector ──► Store<K>      (by `namespace/name`; read by anyone)
//!                                   ├──► handlers     Fn(&K): map the object to queue keys
//!                                   └──► subscribers  Event<K> stream (a loop with its own state)
//! ```
//!
//! Expected flow: a controller takes the stores it reads and registers its handlers, the
//! loop waits for [`Informers::wait_synced`], then works from the stores.
//!
//! Guarantees:
//! - A handler or subscriber added late sees what it missed: a handler is called for every
//!   object already in the store, a subscriber first gets `Restarted` with them.
//! - The store is updated *before* the handlers run, so a handler that enqueues a key hands
//!   the worker a store that already shows the change.
//! - Events are delivered in watch order, one at a time per kind; a handler is never called
//!   concurrently with itself for the same kind.
//!
//! Caveats:
//! - Handlers run on the reflector's task while it holds the kind's dispatch lock: they must
//!   be quick and must not block (enqueueing keys is the intended use). They may read any
//!   store, but must not register handlers.
//! - A kind is watched once, in the shape first asked for: typed ([`Informers::store`]) or as
//!   metadata only ([`Informers::metadata`], which reuses a typed store when there is one).
//!   Asking for a kind typed after it was asked for as metadata opens a second watch (and
//!   logs a warning): ask for typed kinds first.
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{Metadata, Resource};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use skiff_api::resources::ResourceInfo;
use tokio::sync::{mpsc, watch};

use crate::watcher::{self, Event};
use crate::{Client, ListParams};

/// What a store needs of the objects it keeps: their metadata.
pub trait Object: DeserializeOwned + Clone + Send + Sync + 'static {
    fn meta(&self) -> &ObjectMeta;
}

impl<K> Object for K
where
    K: Metadata<Ty = ObjectMeta> + DeserializeOwned + Clone + Send + Sync + 'static,
{
    fn meta(&self) -> &ObjectMeta {
        self.metadata()
    }
}

/// `namespace/name` (`/name` for cluster-scoped objects): the key of stores and work queues.
pub fn key_of(meta: &ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// An object of any kind seen only by its metadata (kube-rs' `PartialObjectMeta`): what the
/// garbage collector needs of kinds no controller reads in full.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct PartialObject {
    #[serde(default)]
    pub metadata: ObjectMeta,
}

impl Object for PartialObject {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
}

/// Which resource a store holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Kind {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    /// The plural, as in URLs (`replicasets`).
    pub resource: String,
    pub kind: String,
}

impl Kind {
    /// The kind of a k8s-openapi type.
    pub fn of<K: Resource>() -> Kind {
        Kind {
            group: K::GROUP.to_string(),
            version: K::VERSION.to_string(),
            resource: K::URL_PATH_SEGMENT.to_string(),
            kind: K::KIND.to_string(),
        }
    }

    /// The kind of an entry of skiff's resource table.
    pub fn from_info(info: &ResourceInfo) -> Kind {
        Kind {
            group: info.group.to_string(),
            version: info.version.to_string(),
            resource: info.resource.to_string(),
            kind: info.kind.to_string(),
        }
    }

    /// The `apiVersion` of its objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

type Handler<K> = Box<dyn Fn(&K) + Send + Sync>;

/// Who hears of changes; behind one lock, held while the store changes and they are told.
struct Dispatch<K> {
    handlers: Vec<Handler<K>>,
    subscribers: Vec<mpsc::UnboundedSender<Event<K>>>,
}

struct Shared<K> {
    kind: Kind,
    objects: RwLock<BTreeMap<String, K>>,
    dispatch: Mutex<Dispatch<K>>,
    synced: watch::Sender<bool>,
}

/// The cache of one kind, kept by one watch. Cheap to clone (a handle).
pub struct Store<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store {
            shared: self.shared.clone(),
        }
    }
}

impl<K: Object> Store<K> {
    /// An empty store fed by nobody: tests drive it with [`Store::apply`].
    pub fn new(kind: Kind) -> Store<K> {
        Store {
            shared: Arc::new(Shared {
                kind,
                objects: RwLock::default(),
                dispatch: Mutex::new(Dispatch {
                    handlers: Vec::new(),
                    subscribers: Vec::new(),
                }),
                synced: watch::channel(false).0,
            }),
        }
    }

    pub fn kind(&self) -> &Kind {
        &self.shared.kind
    }

    /// Every object, by `namespace/name`, borrowed for as long as the guard lives (do not
    /// hold it across an `await`).
    pub fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, K>> {
        self.shared
            .objects
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The object at `namespace/name` (`/name` when cluster-scoped).
    pub fn get(&self, key: &str) -> Option<K> {
        self.read().get(key).cloned()
    }

    /// Every object of namespace `ns`.
    pub fn in_namespace(&self, ns: &str) -> Vec<K> {
        let prefix = format!("{ns}/");
        self.read()
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The keys of every object of namespace `ns`.
    pub fn keys_in_namespace(&self, ns: &str) -> Vec<String> {
        let prefix = format!("{ns}/");
        self.read()
            .range(prefix.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&prefix))
            .cloned()
            .collect()
    }

    /// Every object.
    pub fn list(&self) -> Vec<K> {
        self.read().values().cloned().collect()
    }

    /// Whether the first list has arrived.
    pub fn is_synced(&self) -> bool {
        *self.shared.synced.borrow()
    }

    /// Waits until the first list has arrived.
    pub async fn wait_synced(&self) {
        let mut synced = self.shared.synced.subscribe();
        let _ = synced.wait_for(|s| *s).await;
    }

    /// Calls `handler` with every object that changes from now on (for a relist: every object
    /// before and after), and at once with every object already here.
    pub fn on_change(&self, handler: impl Fn(&K) + Send + Sync + 'static) {
        let mut dispatch = self.lock_dispatch();
        for object in self.read().values() {
            handler(object);
        }
        dispatch.handlers.push(Box::new(handler));
    }

    /// The changes as a stream: `Restarted` with everything known so far (if the first list
    /// has arrived), then every event as the watch delivers it.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Event<K>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut dispatch = self.lock_dispatch();
        if self.is_synced() {
            let _ = tx.send(Event::Restarted(self.list()));
        }
        dispatch.subscribers.push(tx);
        rx
    }

    /// Applies one watch event: the store first, then the handlers and subscribers.
    pub fn apply(&self, event: Event<K>) {
        let mut dispatch = self.lock_dispatch();
        let mut objects = self
            .shared
            .objects
            .write()
            .unwrap_or_else(|e| e.into_inner());
        // The objects the handlers hear of: the event's own, or after a relist every object
        // before and after it.
        let relisted: Vec<K> = match &event {
            Event::Applied(object) => {
                objects.insert(key_of(object.meta()), object.clone());
                Vec::new()
            }
            Event::Deleted(object) => {
                objects.remove(&key_of(object.meta()));
                Vec::new()
            }
            Event::Restarted(list) => {
                let fresh: BTreeMap<String, K> =
                    list.iter().map(|o| (key_of(o.meta()), o.clone())).collect();
                let old = std::mem::replace(&mut *objects, fresh);
                old.into_values().chain(list.iter().cloned()).collect()
            }
        };
        drop(objects);
        let changed: &[K] = match &event {
            Event::Applied(object) | Event::Deleted(object) => std::slice::from_ref(object),
            Event::Restarted(_) => &relisted,
        };
        for object in changed {
            for handler in &dispatch.handlers {
                handler(object);
            }
        }
        dispatch
            .subscribers
            .retain(|tx| tx.send(event.clone()).is_ok());
        if matches!(event, Event::Restarted(_)) {
            self.shared.synced.send_replace(true);
        }
    }

    fn lock_dispatch(&self) -> std::sync::MutexGuard<'_, Dispatch<K>> {
        self.shared
            .dispatch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// A store seen only by its objects' metadata, whatever its type: how the garbage collector
/// and the controllers' expectations read any kind.
pub trait MetadataStore: Send + Sync {
    fn kind(&self) -> &Kind;
    /// Calls `f` with the metadata of every object.
    fn for_each_meta(&self, f: &mut dyn FnMut(&ObjectMeta));
    /// The metadata of the object at `namespace/name`.
    fn meta(&self, key: &str) -> Option<ObjectMeta>;
    fn is_synced(&self) -> bool;
    fn synced(&self) -> watch::Receiver<bool>;
    fn as_any(&self) -> &dyn Any;
}

impl<K: Object> MetadataStore for Store<K> {
    fn kind(&self) -> &Kind {
        Store::kind(self)
    }
    fn for_each_meta(&self, f: &mut dyn FnMut(&ObjectMeta)) {
        for object in self.read().values() {
            f(object.meta());
        }
    }
    fn meta(&self, key: &str) -> Option<ObjectMeta> {
        self.read().get(key).map(|o| o.meta().clone())
    }
    fn is_synced(&self) -> bool {
        Store::is_synced(self)
    }
    fn synced(&self) -> watch::Receiver<bool> {
        self.shared.synced.subscribe()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The informers of one process (or of one leadership term): one store and one watch per
/// kind. Cheap to clone; dropping the last handle stops every watch.
#[derive(Clone)]
pub struct Informers {
    inner: Arc<Registry>,
}

struct Registry {
    /// `None` in tests: stores are then fed by hand.
    client: Option<Client>,
    stores: Mutex<Vec<Arc<dyn MetadataStore>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().unwrap_or_else(|e| e.into_inner()) {
            task.abort();
        }
    }
}

impl Informers {
    pub fn new(client: Client) -> Informers {
        Informers::with_client(Some(client))
    }

    /// Informers that open no watch: tests fill the stores with [`Store::apply`].
    pub fn offline() -> Informers {
        Informers::with_client(None)
    }

    fn with_client(client: Option<Client>) -> Informers {
        Informers {
            inner: Arc::new(Registry {
                client,
                stores: Mutex::default(),
                tasks: Mutex::default(),
            }),
        }
    }

    fn stores(&self) -> std::sync::MutexGuard<'_, Vec<Arc<dyn MetadataStore>>> {
        self.inner.stores.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store of `K`, watched from the first call on.
    pub fn store<K: Object + Resource>(&self) -> Store<K> {
        self.typed(Kind::of::<K>())
    }

    /// The store of `kind`'s objects as `K` (a type that reads them, in full or in part).
    fn typed<K: Object>(&self, kind: Kind) -> Store<K> {
        let mut stores = self.stores();
        if let Some(existing) = stores.iter().find(|s| *s.kind() == kind) {
            if let Some(store) = existing.as_any().downcast_ref::<Store<K>>() {
                return store.clone();
            }
            tracing::warn!(resource = %kind.resource, "kind asked for in a second shape: a second watch");
        }
        let store = Store::<K>::new(kind);
        stores.push(Arc::new(store.clone()));
        drop(stores);
        self.start(&store);
        store
    }

    /// The objects of `info`'s resource by their metadata: the typed store if some loop
    /// already asked for one, else a metadata-only store, watched from now on.
    pub fn metadata(&self, info: &ResourceInfo) -> Arc<dyn MetadataStore> {
        let kind = Kind::from_info(info);
        if let Some(existing) = self.find(&kind.api_version(), &kind.kind) {
            return existing;
        }
        let store: Store<PartialObject> = self.typed(kind);
        Arc::new(store)
    }

    /// The store that holds objects of this `apiVersion` and `kind`, if any loop asked for it.
    pub fn find(&self, api_version: &str, kind: &str) -> Option<Arc<dyn MetadataStore>> {
        self.stores()
            .iter()
            .find(|s| s.kind().kind == kind && s.kind().api_version() == api_version)
            .cloned()
    }

    /// Every store asked for so far.
    pub fn all(&self) -> Vec<Arc<dyn MetadataStore>> {
        self.stores().clone()
    }

    /// Waits until every store asked for so far has its first list.
    pub async fn wait_synced(&self) {
        for store in self.all() {
            let _ = store.synced().wait_for(|s| *s).await;
        }
    }

    fn start<K: Object>(&self, store: &Store<K>) {
        let Some(client) = self.inner.client.clone() else {
            return;
        };
        let kind = store.kind();
        let url = client.collection_url_of(&kind.group, &kind.version, &kind.resource, None);
        let mut events = watcher::spawn_at::<K>(client, url, ListParams::default());
        let store = store.clone();
        let task = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                store.apply(event);
            }
        });
        self.inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }
}

#[cfg(test)]
mod tests;

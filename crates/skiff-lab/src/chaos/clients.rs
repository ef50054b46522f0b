//! The clients of a chaos run: each pinned to one server, creating, reading, compare-and-
//! setting and deleting the run's ConfigMaps, and recording every operation by the checker's
//! rules (see `skiff_lincheck`'s crate doc):
//! - call and return come from one monotonic clock ([`Clock`]), taken just before the request
//!   is sent and just after the answer arrives;
//! - 201/200 → Ok; 409 AlreadyExists on POST → AlreadyExists; 409 Conflict on PUT → Conflict;
//!   404 → NotFound; anything else (a timeout after [`REQUEST_TIMEOUT`], a 5xx, a refused or
//!   dropped connection, a 429) → Unknown;
//! - every write writes a value never written before in the run (`c<client>-<n>`), and nothing
//!   is retried under the hood (a client has one server, so `skiff_client` has nothing to
//!   fail over to);
//! - a PUT always carries the resourceVersion the client read, and is recorded as
//!   `Update { expected: the value seen with that resourceVersion, new }`;
//! - a DELETE carries it too, as a precondition (an unconditional delete with an unknown
//!   outcome is the hardest thing to check), and is recorded as `DeleteIf { expected }`; a
//!   delete refused by its precondition (409 Conflict) is a `Conflict`, judged like an update's;
//! - reads are plain GETs (linearizable; never `resourceVersion=0`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::{json, Value};
use skiff_client::{Client, Method};
use skiff_lincheck::{Entry, Op, Outcome};
use tokio::sync::watch;

use super::{Clock, Rng};

/// A request unanswered after this long has an unknown outcome.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// What every client shares: the keys, and what was seen of them.
pub struct Shared {
    keys: Vec<String>,
    /// Per key, each resourceVersion seen and the value it came with (from every create, get
    /// and update answer): a PUT sent with resourceVersion r expects that value.
    versions: Mutex<HashMap<(usize, String), String>>,
    /// Things no correct store does, that the history cannot show (one resourceVersion with
    /// two values, an answer with a value other than the one written).
    anomalies: Mutex<Vec<String>>,
}

impl Shared {
    pub fn new(keys: Vec<String>) -> Shared {
        Shared {
            keys,
            versions: Mutex::new(HashMap::new()),
            anomalies: Mutex::new(Vec::new()),
        }
    }

    pub fn anomalies(&self) -> Vec<String> {
        self.anomalies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn anomaly(&self, text: String) {
        self.anomalies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(text);
    }

    /// Notes that key `k` had `value` at `rv`; a second value for one version is an anomaly.
    fn saw_version(&self, k: usize, rv: &str, value: &str) {
        let mut versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        match versions.get(&(k, rv.to_string())) {
            Some(known) if known != value => {
                let text = format!(
                    "{}: resourceVersion {rv} was seen with value {known:?} and with {value:?}",
                    self.keys[k]
                );
                drop(versions);
                self.anomaly(text);
            }
            Some(_) => {}
            None => {
                versions.insert((k, rv.to_string()), value.to_string());
            }
        }
    }

    /// The value key `k` was seen with at `rv`.
    fn value_at(&self, k: usize, rv: &str) -> Option<String> {
        let versions = self.versions.lock().unwrap_or_else(|p| p.into_inner());
        versions.get(&(k, rv.to_string())).cloned()
    }
}

/// What one client did.
#[derive(Debug, Default)]
pub struct ClientLog {
    pub entries: Vec<Entry>,
    /// Unknown outcomes by cause ("timeouts", "HTTP 503", …).
    pub unknown_why: BTreeMap<String, usize>,
}

/// One client: its server, its seeded choices, its own counter of values written.
pub struct Worker {
    pub id: u64,
    pub server: String,
    pub client: Client,
    pub clock: Clock,
    pub rng: Rng,
    pub shared: std::sync::Arc<Shared>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Create,
    Get,
    Update,
    Delete,
}

/// What the client last saw of a key: its resourceVersion and value.
type Seen = Option<(String, String)>;

/// How a request ended, before it is mapped to an outcome.
enum Answer {
    /// 2xx, with the object (or the Status of a delete).
    Object(Value),
    /// An API error: the code and the reason (`AlreadyExists`, `Conflict`, …).
    Status(u16, String),
    /// No answer to go by, and why.
    Lost(&'static str),
}

/// Runs `worker` until `stop` on a thread of its own that has entered network namespace
/// `netns` — its server's host — as a client on that machine would be: a partition then cuts
/// the server off from the others but not from this client, which keeps asking it (a cut-off
/// old leader must neither acknowledge writes nor answer reads from what it alone knows).
/// Namespaces belong to threads, and the thread's runtime makes every connection from it.
pub fn spawn_on_host(
    netns: PathBuf,
    worker: Worker,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<ClientLog>>> {
    let thread = std::thread::Builder::new()
        .name(format!("chaos-client-{}", worker.id))
        .spawn(move || {
            let namespace = std::fs::File::open(&netns)
                .with_context(|| format!("opening {}", netns.display()))?;
            nix::sched::setns(&namespace, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering {}", netns.display()))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(runtime.block_on(worker.run(stop)))
        })?;
    Ok(thread)
}

impl Worker {
    /// Runs until `stop` turns true; the request in flight then finishes (or times out).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> ClientLog {
        let mut log = ClientLog::default();
        let mut seen: Vec<Seen> = vec![None; self.shared.keys.len()];
        let mut written = 0u64;
        while !*stop.borrow() {
            let k = self.rng.below(seen.len());
            let choice = self.choose(seen[k].is_some());
            let outcome = self
                .perform(k, choice, &mut seen[k], &mut written, &mut log)
                .await;
            // Between operations a short think time (the machine is shared with the servers);
            // after an unknown outcome a longer one, so a dead server's clients do not fill
            // the history with thousands of unknown writes.
            let pause = match outcome {
                Some(Outcome::Unknown) => self.rng.millis(150, 300),
                _ => self.rng.millis(5, 25),
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                changed = stop.changed() => if changed.is_err() { break },
            }
        }
        log
    }

    /// One read of every key, for the end of the run (a lost answer is asked again: a read
    /// with an unknown outcome says nothing).
    pub async fn read_every_key(mut self) -> ClientLog {
        let mut log = ClientLog::default();
        for k in 0..self.shared.keys.len() {
            let mut seen = None;
            for _ in 0..5 {
                let outcome = self
                    .perform(k, Choice::Get, &mut seen, &mut 0, &mut log)
                    .await;
                if outcome != Some(Outcome::Unknown) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        log
    }

    /// Mostly reads and compare-and-sets, some creates and deletes; what needs a
    /// resourceVersion only when the client has one for the key.
    fn choose(&mut self, has_version: bool) -> Choice {
        let roll = self.rng.below(100);
        match (has_version, roll) {
            (false, 0..=49) => Choice::Get,
            (false, _) => Choice::Create,
            (true, 0..=34) => Choice::Get,
            (true, 35..=74) => Choice::Update,
            (true, 75..=86) => Choice::Delete,
            (true, _) => Choice::Create,
        }
    }

    /// Sends one operation on key `k` and records it; returns its outcome (None: a refused
    /// delete, not recorded).
    async fn perform(
        &mut self,
        k: usize,
        choice: Choice,
        seen: &mut Seen,
        written: &mut u64,
        log: &mut ClientLog,
    ) -> Option<Outcome> {
        let name = self.shared.keys[k].clone();
        let collection = self.client.collection_url::<ConfigMap>(Some("default"));
        let url = format!("{collection}/{name}");
        let mut fresh_value = || {
            *written += 1;
            format!("c{}-{written}", self.id)
        };
        let (op, call, answer, ret) = match choice {
            Choice::Create => {
                let value = fresh_value();
                let body = configmap(&name, &value, None);
                let call = self.clock.now();
                let answer = send(&self.client, Method::POST, &collection, Some(&body)).await;
                (Op::Create(value), call, answer, self.clock.now())
            }
            Choice::Get => {
                let call = self.clock.now();
                let answer = send(&self.client, Method::GET, &url, None).await;
                (Op::Get, call, answer, self.clock.now())
            }
            Choice::Update => {
                let (rv, read) = seen.clone()?;
                let expected = self.shared.value_at(k, &rv).unwrap_or(read);
                let new = fresh_value();
                let body = configmap(&name, &new, Some(&rv));
                let call = self.clock.now();
                let answer = send(&self.client, Method::PUT, &url, Some(&body)).await;
                (Op::Update { expected, new }, call, answer, self.clock.now())
            }
            Choice::Delete => {
                let (rv, read) = seen.clone()?;
                let expected = self.shared.value_at(k, &rv).unwrap_or(read);
                let body = json!({
                    "kind": "DeleteOptions", "apiVersion": "v1",
                    "preconditions": {"resourceVersion": rv},
                });
                let call = self.clock.now();
                let answer = send(&self.client, Method::DELETE, &url, Some(&body)).await;
                (Op::DeleteIf { expected }, call, answer, self.clock.now())
            }
        };

        let outcome = match (&op, answer) {
            (Op::Create(value), Answer::Object(object)) => {
                *seen = self.observe(k, &object, Some(value));
                Outcome::Ok
            }
            (Op::Create(_), Answer::Status(409, reason)) if reason == "AlreadyExists" => {
                Outcome::AlreadyExists
            }
            (Op::Get, Answer::Object(object)) => {
                *seen = self.observe(k, &object, None);
                let value = object.pointer("/data/v").and_then(Value::as_str);
                // A value nobody wrote: the checker will say so.
                Outcome::Found(value.unwrap_or("<no data.v>").to_string())
            }
            (Op::Update { new, .. }, Answer::Object(object)) => {
                *seen = self.observe(k, &object, Some(new));
                Outcome::Ok
            }
            (Op::DeleteIf { .. }, Answer::Object(_)) => {
                *seen = None;
                Outcome::Ok
            }
            (Op::Update { .. } | Op::DeleteIf { .. }, Answer::Status(409, reason))
                if reason == "Conflict" =>
            {
                // Another version is there now: read it before writing again.
                *seen = None;
                Outcome::Conflict
            }
            (_, Answer::Status(404, _)) => {
                *seen = None;
                Outcome::NotFound
            }
            (_, answer) => {
                let why = match answer {
                    Answer::Status(code, _) => format!("HTTP {code}"),
                    Answer::Lost(why) => why.to_string(),
                    Answer::Object(_) => "unexpected answers".to_string(),
                };
                *log.unknown_why.entry(why).or_insert(0) += 1;
                // The key may now be anything: read it before writing again.
                *seen = None;
                Outcome::Unknown
            }
        };
        log.entries.push(Entry {
            client: self.id,
            key: format!("default/configmaps/{name}"),
            call,
            ret,
            op,
            outcome: outcome.clone(),
        });
        Some(outcome)
    }

    /// Notes the resourceVersion and value of an answer; `wrote`: the value this client just
    /// wrote, which the answer must carry.
    fn observe(&self, k: usize, object: &Value, wrote: Option<&str>) -> Seen {
        let rv = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str);
        let value = object.pointer("/data/v").and_then(Value::as_str);
        let key = &self.shared.keys[k];
        let (Some(rv), Some(value)) = (rv, value) else {
            self.shared.anomaly(format!(
                "{key}: an answer from {} without a resourceVersion or data.v: {object}",
                self.server
            ));
            return None;
        };
        if let Some(wrote) = wrote.filter(|w| *w != value) {
            self.shared.anomaly(format!(
                "{key}: client {} wrote {wrote:?} through {}, and the answer says {value:?}",
                self.id, self.server
            ));
        }
        self.shared.saw_version(k, rv, value);
        Some((rv.to_string(), value.to_string()))
    }
}

/// The ConfigMap `name` holding `value`; with `rv`, a compare-and-set on that version.
fn configmap(name: &str, value: &str, rv: Option<&str>) -> Value {
    let mut object = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"v": value},
    });
    if let Some(rv) = rv {
        object["metadata"]["resourceVersion"] = rv.into();
    }
    object
}

/// One request, once, bounded by [`REQUEST_TIMEOUT`].
async fn send(client: &Client, method: Method, url: &str, body: Option<&Value>) -> Answer {
    use skiff_client::Error;
    let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
    let request = client.request::<Value>(method, url, &[], body);
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Err(_) => Answer::Lost("timeouts"),
        Ok(Ok(object)) => Answer::Object(object),
        Ok(Err(Error::Api { code, reason, .. })) => Answer::Status(code, reason),
        Ok(Err(Error::Transport(e))) if e.is_connect() => Answer::Lost("connection failures"),
        Ok(Err(Error::Transport(e))) if e.is_timeout() => Answer::Lost("timeouts"),
        Ok(Err(Error::Transport(_))) => Answer::Lost("dropped connections"),
        Ok(Err(Error::Decode(_))) => Answer::Lost("undecodable answers"),
        Ok(Err(Error::Config(_))) => Answer::Lost("client errors"),
    }
}

//! `skiff lab chaos`: a Jepsen-style test of the object store on a running lab — is what
//! clients see linearizable while servers are killed, frozen and cut off?
//!
//! Three separate parts, as in Jepsen and etcd's robustness tests:
//! - [`clients`]: C clients, each pinned to one server, create, read, compare-and-set and
//!   delete a few ConfigMaps and record every operation (call, return, answer) into a
//!   `skiff_lincheck::History`, by the checker's rules.
//! - [`injector`]: one fault at a time on one server (kill, stop, partition, kill the leader),
//!   undone and waited out before the next, so a majority is always up.
//! - the checker (`skiff_lincheck`) judges the history; [`selfcheck`] first shows it can fail.
//!
//! ## Expected flow
//! 1. Self-check: a synthetic stale read must be a violation.
//! 2. A fresh run id, so the keys `chaos-<run>-<k>` start absent; start the clients, each
//!    inside its server's host (network namespace), so it stays with its server when that
//!    host is cut off — the client a stale, cut-off leader could lie to.
//! 3. N faults, one after another; then stop the clients (requests in flight finish or time
//!    out).
//! 4. Heal, continue, restart; wait until every server is ready; one last read of every key
//!    through every server (these must agree with everything before them).
//! 5. Save the history, check it (time-limited), and check it once more with one read made
//!    stale, which must be a violation (the checker is wired to what was recorded).
//! 6. Report; an error on a violation, an "unknown" verdict or an anomaly the clients saw.

mod clients;
mod injector;
mod selfcheck;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use skiff_client::Client;
use skiff_lincheck::{CheckOptions, History, Outcome, Report, Verdict};

use super::state::Lab;
use clients::{ClientLog, Shared};

#[derive(Args, Debug)]
pub struct ChaosArgs {
    /// The lab's directory (as given to `skiff lab up --dir`); it needs at least 3 servers.
    #[arg(long)]
    pub dir: PathBuf,
    /// How many faults, one after another (each undone before the next).
    #[arg(long)]
    pub faults: usize,
    /// Concurrent clients; client i talks only to server (i mod M) + 1.
    #[arg(long, default_value_t = 6)]
    pub clients: usize,
    /// How many ConfigMaps the clients share (`chaos-<run>-<k>` in `default`).
    #[arg(long, default_value_t = 5)]
    pub keys: usize,
    /// Seeds the fault schedule and the clients' choices (default: the clock; printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where to save the history, JSON lines (default: DIR/chaos-history.jsonl); what the
    /// lab's fault commands print goes next to it (`chaos-history.faults.log`).
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Give the check this many seconds; past them its verdict is "unknown" (a failure).
    #[arg(long, default_value_t = 120)]
    pub check_seconds: u64,
}

/// One clock for every call and return of the run: nanoseconds since the run started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock(Instant);

impl Clock {
    pub fn now(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn secs(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// xorshift64*: the seeded choices of the schedule and the clients (no dependency for it).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed: nearby seeds give unrelated sequences, and the state is
        // never zero (xorshift would stay there).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// 0 … n-1.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A duration between `min` and `max` milliseconds.
    pub fn millis(&mut self, min: u64, max: u64) -> Duration {
        Duration::from_millis(min + self.next() % (max.saturating_sub(min) + 1))
    }
}

pub async fn run(mut args: ChaosArgs) -> anyhow::Result<()> {
    args.dir = super::resolve(&args.dir);
    let lab = Lab::load(&args.dir)?;
    let servers: Vec<String> = lab.servers().map(|h| h.name.clone()).collect();
    if servers.len() < 3 {
        bail!(
            "chaos needs a lab of at least 3 servers (this one has {}): a majority must stay up \
             while one is down; `skiff lab up --hosts 3` makes one",
            servers.len()
        );
    }
    if args.clients == 0 || args.keys == 0 {
        bail!("--clients and --keys must be at least 1");
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let history_path = args
        .history
        .clone()
        .unwrap_or_else(|| args.dir.join("chaos-history.jsonl"));

    selfcheck::synthetic_stale_read()?;
    println!("self-check: a synthetic stale read is a violation (the checker can fail)");

    // A client per server, each from that server's kubeconfig alone, so it never fails over.
    let mut per_server = Vec::new();
    for name in &servers {
        let host = lab.host(name)?;
        let config = lab.kubeconfig_for(host);
        let client = Client::from_kubeconfig(&config)
            .with_context(|| format!("reading {}", config.display()))?;
        per_server.push((name.clone(), client));
    }
    let run_id = fresh_run_id(&per_server[0].1, args.keys).await?;
    let keys: Vec<String> = (1..=args.keys)
        .map(|k| format!("chaos-{run_id}-{k}"))
        .collect();
    println!(
        "chaos run {run_id} on lab {} ({} servers): {} clients, {} keys ({} … {}), {} faults, seed {seed}",
        lab.id,
        servers.len(),
        args.clients,
        keys.len(),
        keys[0],
        keys[keys.len() - 1],
        args.faults
    );
    // Next to the history, so both outlive `lab down` (which leaves files it did not make).
    let fault_log = history_path.with_extension("faults.log");
    println!(
        "the lab commands' own output goes to {}; the history to {}",
        fault_log.display(),
        history_path.display()
    );

    let clock = Clock(Instant::now());
    let shared = Arc::new(Shared::new(keys.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let server = &per_server[i % per_server.len()].0;
        let worker = clients::Worker {
            id: i as u64,
            server: server.clone(),
            client: client_for(&lab, server)?,
            clock,
            rng: Rng::new(seed ^ (i as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F)),
            shared: shared.clone(),
        };
        let netns = lab.host(server)?.netns_path();
        tasks.push(clients::spawn_on_host(netns, worker, stop_rx.clone())?);
    }
    // The clients get going before the first fault.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut injector = injector::Injector::new(
        args.dir.clone(),
        per_server.clone(),
        clock,
        Rng::new(seed),
        fault_log,
    );
    let (faults, injected) = injector.run(args.faults).await;
    // A last moment of calm, so the end of the history has definite answers too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop_tx.send(true);
    let clients_ran = clock.secs();
    let mut logs = Vec::new();
    for task in tasks {
        let joined = tokio::task::spawn_blocking(move || task.join()).await?;
        let log = joined.map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        logs.push(log?);
    }
    let stats = Stats::of(&logs);

    println!("recovering: heal, continue, restart, wait until every server is ready");
    let recovered = injector.recover_all().await;

    // The last word: every key read through every server, after everything else.
    if recovered.is_ok() {
        for (k, (server, _)) in per_server.iter().enumerate() {
            let worker = clients::Worker {
                id: (args.clients + k) as u64,
                server: server.clone(),
                client: client_for(&lab, server)?,
                clock,
                rng: Rng::new(seed),
                shared: shared.clone(),
            };
            logs.push(worker.read_every_key().await);
        }
    }

    let history = merge(&logs);
    history
        .save(&history_path)
        .with_context(|| format!("saving the history to {}", history_path.display()))?;

    println!();
    println!("{}", faults.summary());
    stats.print(clients_ran);
    println!(
        "history: {} ({} entries)",
        history_path.display(),
        history.len()
    );

    // Judged even when a fault could not be undone: what the clients saw until then counts.
    let report = judge(&history, args.check_seconds).await?;
    let anomalies = shared.anomalies();
    let unknown = history
        .entries
        .iter()
        .filter(|e| e.outcome == Outcome::Unknown)
        .count();
    for anomaly in &anomalies {
        println!("anomaly: {anomaly}");
    }
    match report.verdict() {
        Verdict::Linearizable => println!(
            "linearizable: {} operations on {} keys, {} faults, {} unknown outcomes",
            history.len(),
            keys.len(),
            faults.count(),
            unknown
        ),
        Verdict::Violation => {
            print!("{report}");
            println!(
                "NOT linearizable: {} operations on {} keys, {} faults, {} unknown outcomes; \
                 the history is in {}",
                history.len(),
                keys.len(),
                faults.count(),
                unknown,
                history_path.display()
            );
        }
        Verdict::Unknown => print!("{report}"),
    }
    // A violation first: it matters more than a fault that could not be undone.
    if report.verdict() == Verdict::Violation {
        bail!("the store is not linearizable (see above)");
    }
    injected?;
    recovered?;
    if report.verdict() == Verdict::Unknown {
        bail!(
            "the check gave up before deciding (--check-seconds {}); check the history again \
             with more time",
            args.check_seconds
        );
    }
    if !anomalies.is_empty() {
        bail!("{} anomalies (see above)", anomalies.len());
    }
    Ok(())
}

/// Checks the history (time-limited), then the same history with one read made stale, which
/// must be a violation: the checker is shown to judge what was recorded.
async fn judge(history: &History, check_seconds: u64) -> anyhow::Result<Report> {
    let options = CheckOptions {
        time_limit: Some(Duration::from_secs(check_seconds)),
        ..CheckOptions::default()
    };
    let started = Instant::now();
    let (to_check, check_options) = (history.clone(), options.clone());
    let report =
        tokio::task::spawn_blocking(move || skiff_lincheck::check(&to_check, &check_options))
            .await
            .context("the checker panicked")??;
    println!(
        "check: {:.1}s, {} search steps",
        started.elapsed().as_secs_f64(),
        report.steps()
    );
    let to_corrupt = history.clone();
    let corrupted =
        tokio::task::spawn_blocking(move || selfcheck::corrupted_read(&to_corrupt, &options))
            .await
            .context("the checker panicked")??;
    println!("self-check: {corrupted}");
    Ok(report)
}

/// A client of server `name` alone (its own connection pool; built from that server's
/// kubeconfig, so it has no other server to fail over to).
fn client_for(lab: &Lab, name: &str) -> anyhow::Result<Client> {
    let config = lab.kubeconfig_for(lab.host(name)?);
    Client::from_kubeconfig(&config).with_context(|| format!("reading {}", config.display()))
}

/// Six hex digits from the clock, checked: none of the run's keys may exist yet.
async fn fresh_run_id(client: &Client, keys: usize) -> anyhow::Result<String> {
    use k8s_openapi::api::core::v1::ConfigMap;
    for _ in 0..5 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = format!("{:06x}", Rng::new(nanos as u64).next() & 0xff_ffff);
        let mut taken = false;
        for k in 1..=keys {
            let name = format!("chaos-{id}-{k}");
            let found = tokio::time::timeout(
                Duration::from_secs(10),
                client.get_opt::<ConfigMap>(Some("default"), &name),
            )
            .await
            .context("the cluster did not answer within 10 s")?
            .with_context(|| format!("reading configmap {name}"))?;
            taken |= found.is_some();
        }
        if !taken {
            return Ok(id);
        }
    }
    bail!("no fresh run id after 5 tries (ConfigMaps chaos-* keep existing)")
}

/// Every client's entries, in one history.
fn merge(logs: &[ClientLog]) -> History {
    let mut history = History::new();
    for log in logs {
        for entry in &log.entries {
            history.push(entry.clone());
        }
    }
    history.entries.sort_by_key(|e| (e.call, e.client));
    history
}

/// What the clients did, in numbers.
struct Stats {
    operations: usize,
    acknowledged: usize,
    unknown: usize,
    unknown_why: BTreeMap<String, usize>,
}

impl Stats {
    /// Of the clients' logs (before the last reads).
    fn of(logs: &[ClientLog]) -> Stats {
        let entries = logs.iter().flat_map(|l| &l.entries);
        let operations = entries.clone().count();
        let unknown = entries.filter(|e| e.outcome == Outcome::Unknown).count();
        let mut unknown_why = BTreeMap::new();
        for log in logs {
            for (why, n) in &log.unknown_why {
                *unknown_why.entry(why.clone()).or_insert(0) += n;
            }
        }
        Stats {
            operations,
            acknowledged: operations - unknown,
            unknown,
            unknown_why,
        }
    }

    fn print(&self, seconds: f64) {
        let why: Vec<String> = self
            .unknown_why
            .iter()
            .map(|(why, n)| format!("{n} {why}"))
            .collect();
        println!(
            "operations: {} ({} acknowledged, {} unknown outcomes{})",
            self.operations,
            self.acknowledged,
            self.unknown,
            if why.is_empty() {
                String::new()
            } else {
                format!(": {}", why.join(", "))
            }
        );
        println!(
            "throughput: {:.1} acknowledged operations per second over {:.1}s",
            self.acknowledged as f64 / seconds.max(0.001),
            seconds
        );
    }
}

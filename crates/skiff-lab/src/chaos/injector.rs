//! The fault injector of a chaos run, apart from the clients: one fault at a time on one
//! server, chosen from the seed — kill its host and restart it, stop and continue it, cut its
//! link and heal it, or kill the leader's host — held for a moment, undone, and waited out
//! (every server ready) before a calm and the next. So at most one server is ever down and a
//! majority can always make progress; partitions cut off one server, a minority.
//!
//! The faults are the lab's own (`lab::faults`); what those commands print for a person goes
//! to a log next to the history, and the run prints one line per fault.

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;
use skiff_client::{Client, Method};

use super::{Clock, Rng};
use crate::{faults, procs, state::Lab};

/// How long one server may take to be ready again after a fault is undone.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// SIGKILL every process of a host, then start it again.
    Kill,
    /// SIGSTOP every process of a host, then SIGCONT.
    Stop,
    /// Take its link down, then heal.
    Partition,
    /// `Kill`, of the host of the server that leads now.
    KillLeader,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Kill, Kind::Stop, Kind::Partition, Kind::KillLeader];

    fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Stop => "stop",
            Kind::Partition => "partition",
            Kind::KillLeader => "kill-leader",
        }
    }
}

/// One fault, done and undone.
#[derive(Debug, Clone)]
struct Fault {
    kind: Kind,
    host: String,
    /// Whether the host led when the fault began (None: no server named itself leader).
    leader: Option<bool>,
}

/// Every fault of a run.
#[derive(Debug, Default)]
pub struct Faults {
    done: Vec<Fault>,
    slowest_recovery: Duration,
}

impl Faults {
    pub fn count(&self) -> usize {
        self.done.len()
    }

    /// `20 faults: 6 kill, 5 stop, 4 partition, 5 kill-leader; 8 hit the leader; …`
    pub fn summary(&self) -> String {
        let kinds: Vec<String> = Kind::ALL
            .iter()
            .map(|kind| {
                let n = self.done.iter().filter(|f| f.kind == *kind).count();
                format!("{n} {}", kind.name())
            })
            .collect();
        let leaders = self.done.iter().filter(|f| f.leader == Some(true)).count();
        format!(
            "{} faults: {}; {leaders} hit the leader; slowest recovery {:.1}s",
            self.done.len(),
            kinds.join(", "),
            self.slowest_recovery.as_secs_f64()
        )
    }
}

pub struct Injector {
    dir: PathBuf,
    /// A client per server, by host name (each reaches that server alone).
    servers: Vec<(String, Client)>,
    clock: Clock,
    rng: Rng,
    /// Where the lab commands' own output goes.
    log: PathBuf,
    /// The kinds still to come in this round: every kind once per round of four, in a seeded
    /// order, so even a short run has each of them.
    deck: Vec<Kind>,
}

impl Injector {
    pub fn new(
        dir: PathBuf,
        servers: Vec<(String, Client)>,
        clock: Clock,
        rng: Rng,
        log: PathBuf,
    ) -> Injector {
        Injector {
            dir,
            servers,
            clock,
            rng,
            log,
            deck: Vec::new(),
        }
    }

    /// `count` faults, one after another. Stops at the first that cannot be done or undone
    /// (or after which the servers are not all ready in time), returning what was done.
    pub async fn run(&mut self, count: usize) -> (Faults, anyhow::Result<()>) {
        let mut faults = Faults::default();
        for n in 1..=count {
            if let Err(e) = self.one(n, count, &mut faults).await {
                return (faults, Err(e.context(format!("fault {n}"))));
            }
        }
        (faults, Ok(()))
    }

    async fn one(&mut self, n: usize, count: usize, faults: &mut Faults) -> anyhow::Result<()> {
        if self.deck.is_empty() {
            self.deck = Kind::ALL.to_vec();
            for i in (1..self.deck.len()).rev() {
                let j = self.rng.below(i + 1);
                self.deck.swap(i, j);
            }
        }
        let kind = self.deck.pop().unwrap_or(Kind::Kill);
        let hold = self.rng.millis(500, 3000);
        let calm = self.rng.millis(1500, 3000);
        let random = self.servers[self.rng.below(self.servers.len())].0.clone();
        let leader = self.leader().await;
        let host = match (kind, &leader) {
            (Kind::KillLeader, Some(leader)) => leader.clone(),
            _ => random,
        };
        let fault = Fault {
            kind,
            leader: leader.as_ref().map(|l| *l == host),
            host: host.clone(),
        };
        let at = self.clock.secs();
        self.note(&format!("== fault {n}: {} {host}", kind.name()))?;
        match kind {
            Kind::Kill | Kind::KillLeader => {
                self.quietly(move |dir| faults::kill(dir, &host)).await?;
                tokio::time::sleep(hold).await;
                let host = fault.host.clone();
                self.quietly(move |dir| faults::restart(dir, &host)).await?;
            }
            Kind::Stop => {
                self.quietly(move |dir| faults::freeze(dir, &host, true))
                    .await?;
                tokio::time::sleep(hold).await;
                let host = fault.host.clone();
                self.quietly(move |dir| faults::freeze(dir, &host, false))
                    .await?;
            }
            Kind::Partition => {
                self.quietly(move |dir| faults::partition(dir, &host))
                    .await?;
                tokio::time::sleep(hold).await;
                self.quietly(faults::heal).await?;
            }
        }
        let undone = self.clock.secs();
        self.wait_until_ready().await?;
        let recovery = Duration::from_secs_f64((self.clock.secs() - undone).max(0.0));
        faults.slowest_recovery = faults.slowest_recovery.max(recovery);
        let target = match fault.leader {
            Some(true) => format!("{} (leader)", fault.host),
            Some(false) => fault.host.clone(),
            None => format!("{} (no leader known)", fault.host),
        };
        println!(
            "fault {n:>3}/{count} at {at:>6.1}s: {:<11} {target:<15} for {:.1}s, every server ready {:.1}s later",
            kind.name(),
            undone - at,
            recovery.as_secs_f64()
        );
        faults.done.push(fault);
        tokio::time::sleep(calm).await;
        Ok(())
    }

    /// Undoes whatever a fault may have left: heals every link, continues every stopped host,
    /// restarts every host with no process left, and waits until every server is ready.
    pub async fn recover_all(&self) -> anyhow::Result<()> {
        self.note("== recovery")?;
        self.quietly(faults::heal).await?;
        for (host, _) in &self.servers {
            let name = host.clone();
            self.quietly(move |dir| faults::freeze(dir, &name, false))
                .await?;
            let name = host.clone();
            self.quietly(move |dir| {
                let lab = Lab::load(dir)?;
                if procs::host_processes(lab.host(&name)?).is_empty() {
                    faults::restart(dir, &name)?;
                }
                Ok(())
            })
            .await?;
        }
        self.wait_until_ready().await
    }

    /// The server that names itself leader (during an election or right after a fault, a
    /// stale view elsewhere may still name an old one). Asked for up to 10 s.
    async fn leader(&self) -> Option<String> {
        for _ in 0..50 {
            let asks = self.servers.iter().map(|(name, client)| async move {
                let url = format!("{}/skiff/v1/members", client.server());
                let request = client.request::<Value>(Method::GET, &url, &[], None);
                let answer = tokio::time::timeout(Duration::from_secs(2), request)
                    .await
                    .ok()?
                    .ok()?;
                let leader = answer["members"]
                    .as_array()?
                    .iter()
                    .find(|m| m["leader"] == true)?["name"]
                    .as_str()?
                    .to_string();
                (leader == *name).then_some(leader)
            });
            let named = futures::future::join_all(asks).await;
            if let Some(leader) = named.into_iter().flatten().next() {
                return Some(leader);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
    }

    /// Until every server's `/readyz` says ready (a leader known, caught up).
    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        let started = self.clock.secs();
        loop {
            let asks = self
                .servers
                .iter()
                .map(|(name, client)| async move { (name.as_str(), is_ready(client).await) });
            let answers = futures::future::join_all(asks).await;
            let not_ready: Vec<&str> = answers
                .iter()
                .filter(|(_, ready)| !ready)
                .map(|(name, _)| *name)
                .collect();
            if not_ready.is_empty() {
                return Ok(());
            }
            if self.clock.secs() - started > READY_TIMEOUT.as_secs_f64() {
                bail!(
                    "{} not ready {}s after the fault was undone",
                    not_ready.join(", "),
                    READY_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A line in the fault log, between the commands' own output.
    fn note(&self, line: &str) -> anyhow::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        writeln!(file, "{:.3}s {line}", self.clock.secs())?;
        Ok(())
    }

    /// Runs a lab fault command (blocking: it sleeps and waits for processes) on a blocking
    /// thread, its output appended to the fault log.
    async fn quietly(
        &self,
        command: impl FnOnce(&Path) -> anyhow::Result<()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let dir = self.dir.clone();
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .with_context(|| format!("opening {}", log.display()))?;
            // The commands print for a person (what they did, the command that undoes it);
            // here that would bury the one line per fault. So file descriptor 1 points at the
            // log while one runs. The stdout lock is held throughout — it is reentrant, so
            // the command's own println! takes it again on this thread — and nothing printed
            // elsewhere meanwhile ends up in the log.
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            lock.flush()?;
            // Close-on-exec: a host the command starts must not inherit our real stdout
            // (a pipe's reader would wait for that host to exit).
            let saved = lock.as_fd().try_clone_to_owned()?;
            nix::unistd::dup2_stdout(&file)?;
            let result = command(&dir);
            let flushed = lock.flush();
            nix::unistd::dup2_stdout(&saved)?;
            flushed?;
            result
        })
        .await
        .context("a lab fault command panicked")?
    }
}

/// `/readyz` answered 200. Its body is text ("ok"), not JSON, so a 2xx fails to decode; a
/// 503 is an API error and no answer is a transport error.
async fn is_ready(client: &Client) -> bool {
    let url = format!("{}/readyz", client.server());
    let request = client.request::<Value>(Method::GET, &url, &[], None);
    matches!(
        tokio::time::timeout(Duration::from_secs(2), request).await,
        Ok(Err(skiff_client::Error::Decode(_)))
    )
}

//! `skiff lab`: a multi-host cluster on one machine, for learning and for tests.
//!
//! What kind and k3d do with Docker containers, the lab does with network namespaces: each
//! host is a namespace with its own address on a lab bridge, its own data dir and containerd,
//! and runs `skiff server` or `skiff agent` like a real machine would. Faults are one command
//! each, and `down` removes every trace, even after a crash.
//!
//! ## Layout
//! - [`up`]: check the input, plan, build, start the hosts, wait until Ready.
//! - [`cluster`]: what the lab asks its cluster (tokens written, nodes Ready, members) and the
//!   kubeconfigs it writes.
//! - [`status`]: processes, links, nodes, and who leads as each server sees it.
//! - [`faults`]: kill, stop/cont, partition, netem, heal, restart.
//! - [`delayer`]: `netem --delay` in user space (NFQUEUE) where the kernel has no netem.
//! - [`chaos`]: clients, faults and a linearizability check, together (Jepsen-style).
//! - [`down`]: the teardown (also what a failed `up` runs).
//! - [`state`]: `lab.json` and the names a lab gives the machine.
//! - [`net`]: the bridge, veths and namespaces; choosing a free subnet; link faults.
//! - [`procs`]: starting a host's skiff; finding every process of a host.
//!
//! See docs/lab.md for a tutorial.

pub mod chaos;
pub mod cluster;
pub mod delayer;
pub mod down;
pub mod faults;
pub mod net;
pub mod procs;
pub mod state;
pub mod status;
pub mod up;

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct LabArgs {
    #[command(subcommand)]
    pub action: LabAction,
}

#[derive(Subcommand, Debug)]
pub enum LabAction {
    /// Build hosts host-1 … host-N and start a cluster on them; returns when every node is Ready.
    Up(up::UpArgs),
    /// Hosts, processes, links, nodes, and which server leads.
    Status(DirArg),
    /// SIGKILL every process of a host (skiff, containerd, shims, containers).
    Kill(HostArg),
    /// SIGSTOP every process of a host (a hung machine).
    Stop(HostArg),
    /// SIGCONT a stopped host.
    Cont(HostArg),
    /// Cut a host's link: traffic to and from it is dropped silently.
    Partition(HostArg),
    /// Undo every partition and netem.
    Heal(DirArg),
    /// Delay and/or lose packets on a host's link, both directions.
    Netem(NetemArgs),
    /// Start a killed host again, with its data and its command line.
    Restart(HostArg),
    /// SIGTERM the host's skiff alone and start it again (a rolling-upgrade step; its
    /// containers keep running).
    Bounce(HostArg),
    /// Kill the host and empty its data dir (a lost disk); `restart` brings it back new.
    Wipe(HostArg),
    /// Remove everything the lab made: processes, mounts, cgroups, namespaces, links, iptables
    /// rules, the directory.
    Down(DirArg),
    /// Clients on every server while faults come one after another; then check that what
    /// they saw is linearizable.
    Chaos(chaos::ChaosArgs),
    /// (Used by `netem --delay` on kernels without netem.) Hold every packet of NFQUEUE 0 in
    /// this network namespace for the delay.
    #[command(hide = true)]
    Delayer(DelayerArgs),
}

#[derive(Args, Debug)]
pub struct DelayerArgs {
    #[arg(long)]
    pub delay: String,
}

#[derive(Args, Debug)]
pub struct DirArg {
    /// The lab's directory (as given to `skiff lab up --dir`).
    #[arg(long)]
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct HostArg {
    /// The lab's directory (as given to `skiff lab up --dir`).
    #[arg(long)]
    pub dir: PathBuf,
    /// host-1 … host-N.
    pub host: String,
}

#[derive(Args, Debug)]
pub struct NetemArgs {
    /// The lab's directory (as given to `skiff lab up --dir`).
    #[arg(long)]
    pub dir: PathBuf,
    /// host-1 … host-N.
    pub host: String,
    /// Added to every packet, each way (e.g. 50ms).
    #[arg(long)]
    pub delay: Option<String>,
    /// The share of packets lost, each way (e.g. 1%).
    #[arg(long)]
    pub loss: Option<String>,
}

pub async fn run(args: LabArgs) -> anyhow::Result<()> {
    if !is_root() {
        bail!("skiff lab needs root (it makes network namespaces, links and mounts): run it with sudo");
    }
    match args.action {
        LabAction::Up(args) => up::up(args).await,
        LabAction::Status(a) => status::status(&resolve(&a.dir)).await,
        LabAction::Kill(a) => faults::kill(&resolve(&a.dir), &a.host),
        LabAction::Stop(a) => faults::freeze(&resolve(&a.dir), &a.host, true),
        LabAction::Cont(a) => faults::freeze(&resolve(&a.dir), &a.host, false),
        LabAction::Partition(a) => faults::partition(&resolve(&a.dir), &a.host),
        LabAction::Heal(a) => faults::heal(&resolve(&a.dir)),
        LabAction::Netem(a) => faults::netem(
            &resolve(&a.dir),
            &a.host,
            a.delay.as_deref(),
            a.loss.as_deref(),
        ),
        LabAction::Restart(a) => faults::restart(&resolve(&a.dir), &a.host),
        LabAction::Bounce(a) => faults::bounce(&resolve(&a.dir), &a.host),
        LabAction::Wipe(a) => faults::wipe(&resolve(&a.dir), &a.host),
        LabAction::Down(a) => down::down(&resolve(&a.dir)),
        LabAction::Chaos(a) => chaos::run(a).await,
        LabAction::Delayer(a) => delayer::run(delayer::parse_delay(&a.delay)?),
    }
}

/// The lab directory as `up` saw it: canonical when it exists (so `/tmp/lab/` and a symlink
/// to it name the same lab), else absolute with `.` and trailing slashes dropped.
fn resolve(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| {
        std::path::absolute(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .components()
            .collect()
    })
}

/// Whether this process runs as root (the lab makes namespaces, links and mounts). The effective
/// uid is the owner of /proc/self: no libc call, and no unsafe, needed.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

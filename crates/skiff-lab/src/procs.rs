//! A host's processes: starting its skiff, and finding everything that belongs to it.
//!
//! "Everything of host-K" is every process whose network namespace is host-K's (skiff, its
//! containerd, the shims — which re-parent to init, so only their namespace gives them away —
//! and pods with `hostNetwork`), plus all their descendants (the containers, which live in
//! pod network namespaces under their shim). Namespaces are compared by the device and inode
//! of `/run/netns/NAME` and `/proc/PID/ns/net`, as `ip netns identify` does.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::state::{Host, Lab};

/// A network namespace's identity: (device, inode) of its nsfs file.
pub type NsId = (u64, u64);

/// One row of the process table, as much as the lab needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcEntry {
    pub pid: u32,
    pub ppid: u32,
    /// The state letter of /proc/PID/stat: R, S, D, T (stopped), Z (zombie), ...
    pub state: char,
    pub netns: Option<NsId>,
    pub comm: String,
}

/// What `lab status` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    Alive,
    /// SIGSTOPped (`lab stop`).
    Stopped,
    /// Gone, or a zombie.
    Dead,
}

impl std::fmt::Display for ProcState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            ProcState::Alive => "alive",
            ProcState::Stopped => "stopped",
            ProcState::Dead => "dead",
        })
    }
}

pub fn state_of(pid: u32) -> ProcState {
    match read_stat(pid) {
        Some((_, 'T' | 't', _)) => ProcState::Stopped,
        Some((_, 'Z' | 'X', _)) | None => ProcState::Dead,
        Some(_) => ProcState::Alive,
    }
}

/// (comm, state, ppid) from /proc/PID/stat. The command name is in parentheses and may itself
/// contain spaces and parentheses, so the fields are read after the last `)`.
fn read_stat(pid: u32) -> Option<(String, char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

pub fn netns_of(path: &Path) -> Option<NsId> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Every process on the machine.
pub fn scan() -> Vec<ProcEntry> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let (comm, state, ppid) = read_stat(pid)?;
            Some(ProcEntry {
                pid,
                ppid,
                state,
                netns: netns_of(&Path::new("/proc").join(pid.to_string()).join("ns/net")),
                comm,
            })
        })
        .collect()
}

/// The processes of one host, from a process table: those in `netns`, the `roots`, and all
/// their descendants; never `spared` ones (init, ourselves), never zombies (already dead).
pub fn select(
    table: &[ProcEntry],
    netns: Option<NsId>,
    roots: &[u32],
    spared: &[u32],
) -> Vec<ProcEntry> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for p in table {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut chosen: BTreeSet<u32> = table
        .iter()
        .filter(|p| (netns.is_some() && p.netns == netns) || roots.contains(&p.pid))
        .map(|p| p.pid)
        .collect();
    let mut frontier: Vec<u32> = chosen.iter().copied().collect();
    while let Some(pid) = frontier.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            if chosen.insert(*child) {
                frontier.push(*child);
            }
        }
    }
    table
        .iter()
        .filter(|p| chosen.contains(&p.pid))
        .filter(|p| !spared.contains(&p.pid) && !matches!(p.state, 'Z' | 'X'))
        .cloned()
        .collect()
}

/// Does process `pid` still belong to the host (its command line names the host's data dir)?
/// A recorded pid may have been reused by an unrelated process since the host died.
fn is_hosts(pid: u32, host: &Host) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    // DIR/host-1 must not match DIR/host-10: the path ends the argument or goes on with `/`.
    let dir = host.data_dir.as_os_str().as_encoded_bytes();
    cmdline
        .windows(dir.len() + 1)
        .any(|w| w.starts_with(dir) && matches!(w[dir.len()], 0 | b'/'))
}

/// The host's skiff and containerd, as recorded (when they are still the host's).
fn recorded_pids(host: &Host) -> Vec<u32> {
    let containerd = std::fs::read_to_string(host.containerd_pid_file())
        .ok()
        .and_then(|s| s.trim().parse().ok());
    host.pid
        .into_iter()
        .chain(containerd)
        .filter(|pid| is_hosts(*pid, host))
        .collect()
}

/// Every live process of the host now.
pub fn host_processes(host: &Host) -> Vec<ProcEntry> {
    let spared = [1, std::process::id()];
    select(
        &scan(),
        netns_of(&host.netns_path()),
        &recorded_pids(host),
        &spared,
    )
}

/// `3 × httpd, containerd, skiff`: what a set of processes is, for people.
pub fn summary(procs: &[ProcEntry]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for p in procs {
        *counts.entry(p.comm.as_str()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(comm, n)| match n {
            1 => comm.to_string(),
            n => format!("{n} × {comm}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn signal_all(procs: &[ProcEntry], signal: Signal) {
    for p in procs {
        // A process may have exited since the scan: ESRCH is fine.
        let _ = nix::sys::signal::kill(Pid::from_raw(p.pid as i32), signal);
    }
}

/// SIGKILLs every process of the host, again and again (a dying agent may still fork, a shim
/// may be starting) until none is left or `timeout` passes. Returns what was killed and what
/// survived.
pub fn kill_host(host: &Host, timeout: Duration) -> (Vec<ProcEntry>, Vec<ProcEntry>) {
    let mut killed: BTreeMap<u32, ProcEntry> = BTreeMap::new();
    let deadline = Instant::now() + timeout;
    loop {
        let procs = host_processes(host);
        if procs.is_empty() {
            return (killed.into_values().collect(), Vec::new());
        }
        if Instant::now() > deadline {
            return (killed.into_values().collect(), procs);
        }
        signal_all(&procs, Signal::SIGKILL);
        for p in procs {
            killed.entry(p.pid).or_insert(p);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The container cgroups (`/skiff-<containerd namespace>/pod<uid>/<container id>`, see
/// skiff_agent::cgroup) the processes are in: runc would remove them on a clean stop;
/// after SIGKILL nobody does.
pub fn container_cgroups(procs: &[ProcEntry]) -> BTreeSet<String> {
    procs
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{}/cgroup", p.pid)).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|line| line.splitn(3, ':').nth(2).map(str::to_string))
                .collect::<Vec<_>>()
        })
        .filter(|path| is_container_cgroup(path))
        .collect()
}

/// A container's cgroup, or a pod's: `/skiff-<ns>/pod<uid>[/<id>]` (and agents before pod
/// cgroups: `/skiff-<ns>/<id>`).
pub fn is_container_cgroup(path: &str) -> bool {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        [parent, id] => parent.starts_with("skiff-") && !id.is_empty(),
        [parent, pod, id] => {
            parent.starts_with("skiff-") && pod.starts_with("pod") && !id.is_empty()
        }
        _ => false,
    }
}

/// The pod cgroup a container cgroup is in (None for the older flat layout).
pub fn pod_cgroup(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        [parent, pod, _] if is_container_cgroup(path) => Some(format!("/{parent}/{pod}")),
        _ => None,
    }
}

/// Starts the host's skiff, detached: its own session (a Ctrl-C meant for `lab up` does not
/// reach it, and it outlives the command), inside the host's network namespace, output
/// appended to `DATA/skiff.log`. `nsenter --net` changes only the network namespace (`ip netns
/// exec` would also remount /sys and hide the cgroups runc needs). setsid and nsenter both
/// exec, so the pid returned is skiff's.
/// `program`, to be run inside the host's network namespace in a session of its own (so it
/// outlives this command); setsid and nsenter both exec, so the child's pid is the program's.
pub fn in_host_session(host: &Host, program: &Path) -> Command {
    let mut command = Command::new("setsid");
    command
        .arg("nsenter")
        .arg(format!("--net={}", host.netns_path().display()))
        .arg("--")
        .arg(program);
    command
}

pub fn spawn_host(lab: &Lab, host: &Host) -> anyhow::Result<u32> {
    std::fs::create_dir_all(&host.data_dir)
        .with_context(|| format!("creating {}", host.data_dir.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(host.log_file())
        .with_context(|| format!("opening {}", host.log_file().display()))?;
    let mut command = in_host_session(host, &lab.exe);
    command
        .args(&host.args)
        .env_remove("SKIFF_TOKEN")
        .env_remove("SKIFF_NODE_TOKEN")
        // The log is a file: no colour codes in it.
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let (Some(file), Some(var)) = (&host.token_file, &host.token_env) {
        let token = std::fs::read_to_string(file)
            .with_context(|| format!("reading the join token {}", file.display()))?;
        command.env(var, token.trim());
    }
    let child = command
        .spawn()
        .context("starting setsid nsenter skiff (util-linux)")?;
    Ok(child.id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, ppid: u32, netns: u64, comm: &str) -> ProcEntry {
        ProcEntry {
            pid,
            ppid,
            state: 'S',
            netns: Some((4, netns)),
            comm: comm.into(),
        }
    }

    /// init (root netns) with: a shell; host A's skiff → containerd, and a shim re-parented
    /// to init with a container in a pod netns; host B's skiff; and a zombie in host A.
    fn table() -> Vec<ProcEntry> {
        let mut zombie = p(60, 1, 100, "httpd");
        zombie.state = 'Z';
        vec![
            p(1, 0, 1, "init"),
            p(10, 1, 1, "bash"),
            p(20, 10, 100, "skiff"),
            p(21, 20, 100, "containerd"),
            p(30, 1, 100, "containerd-shim"),
            p(31, 30, 555, "httpd"),
            p(32, 31, 555, "sh"),
            p(40, 10, 200, "skiff"),
            zombie,
        ]
    }

    fn pids(procs: &[ProcEntry]) -> Vec<u32> {
        procs.iter().map(|p| p.pid).collect()
    }

    #[test]
    fn a_host_is_its_netns_and_every_descendant() {
        let chosen = select(&table(), Some((4, 100)), &[], &[1]);
        assert_eq!(pids(&chosen), vec![20, 21, 30, 31, 32]);
        assert_eq!(
            summary(&chosen),
            "containerd, containerd-shim, httpd, sh, skiff"
        );
    }

    #[test]
    fn other_hosts_init_and_the_caller_are_never_chosen() {
        let chosen = select(&table(), Some((4, 200)), &[], &[1]);
        assert_eq!(pids(&chosen), vec![40]);
        // The root namespace would be everything: init and ourselves stay spared.
        let chosen = select(&table(), Some((4, 1)), &[], &[1, 10]);
        assert!(!pids(&chosen).contains(&1) && !pids(&chosen).contains(&10));
    }

    #[test]
    fn without_a_netns_the_recorded_pids_lead() {
        let chosen = select(&table(), None, &[30], &[1]);
        assert_eq!(pids(&chosen), vec![30, 31, 32]);
        assert!(select(&table(), None, &[], &[1]).is_empty());
        // A recorded pid that is gone selects nothing.
        assert!(select(&table(), None, &[999], &[1]).is_empty());
    }

    #[test]
    fn container_cgroups_are_recognised() {
        assert!(is_container_cgroup("/skiff-skiff/0a1b2c3d4e5f-web-0"));
        assert!(is_container_cgroup(
            "/skiff-skiff/pod0a1b2c3d-4e5f/0a1b2c3d4e5f-web-0"
        ));
        assert_eq!(
            pod_cgroup("/skiff-skiff/pod0a1b/0a1b-web-0").as_deref(),
            Some("/skiff-skiff/pod0a1b")
        );
        assert_eq!(pod_cgroup("/skiff-skiff/0a1b-web-0"), None);
        assert!(!is_container_cgroup("/skiff-skiff/x/0a1b-web-0"));
        assert!(!is_container_cgroup("/skiff-skiff"));
        assert!(!is_container_cgroup(
            "/user.slice/user-0.slice/session-1.scope"
        ));
        assert!(!is_container_cgroup("/"));
    }
}

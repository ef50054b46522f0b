//! Faults, one command each: what happens to a cluster when a machine dies, freezes, loses
//! its network or gets a bad one — and the way back.
//!
//! | command     | what it does to host-K                                         | undone by  |
//! |-------------|----------------------------------------------------------------|------------|
//! | `kill`      | SIGKILL to skiff, containerd, shims and containers             | `restart`  |
//! | `stop`      | SIGSTOP to the same processes (a hung machine)                 | `cont`     |
//! | `partition` | the root side of its veth goes down: frames vanish silently    | `heal`     |
//! | `netem`     | delay and/or loss on its link, both directions                 | `heal`     |
//! | `bounce`    | SIGTERM to skiff alone, then the same skiff again (an upgrade) | itself     |
//! | `wipe`      | `kill`, then its data dir emptied (a lost disk)                | `restart`  |

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use nix::sys::signal::Signal;

use super::cluster::log_tail;
use super::net;
use super::procs::{self, ProcState};
use super::state::Lab;

pub fn kill(dir: &Path, name: &str) -> anyhow::Result<()> {
    if kill_processes(dir, name)? {
        println!(
            "  skiff lab restart --dir {} {name}   # starts it again with its data",
            dir.display()
        );
    }
    Ok(())
}

/// SIGKILL to every process of the host; whether there were any.
fn kill_processes(dir: &Path, name: &str) -> anyhow::Result<bool> {
    let mut lab = Lab::load(dir)?;
    let host = lab.host(name)?.clone();
    let started = Instant::now();
    let procs = procs::host_processes(&host);
    if procs.is_empty() {
        println!("{name} has no processes left (already killed?)");
        return Ok(false);
    }
    // The containers' cgroups outlive them: note them for `down`.
    for cgroup in procs::container_cgroups(&procs) {
        if !lab.cgroups.contains(&cgroup) {
            lab.cgroups.push(cgroup);
        }
    }
    lab.save()?;
    let (killed, left) = procs::kill_host(&host, Duration::from_secs(10));
    println!(
        "killed {name}: {} processes ({}) in {:.1}s",
        killed.len(),
        procs::summary(&killed),
        started.elapsed().as_secs_f64()
    );
    if !left.is_empty() {
        bail!(
            "{name}: still running after SIGKILL: {}",
            procs::summary(&left)
        );
    }
    Ok(true)
}

/// SIGSTOP (`stop`) or SIGCONT (`cont`) to every process of the host. Stopping is repeated
/// until every process is stopped: one may have forked between the scan and the signal.
pub fn freeze(dir: &Path, name: &str, stop: bool) -> anyhow::Result<()> {
    let lab = Lab::load(dir)?;
    let host = lab.host(name)?;
    let signal = if stop {
        Signal::SIGSTOP
    } else {
        Signal::SIGCONT
    };
    let mut signalled = Vec::new();
    for _ in 0..20 {
        let procs = procs::host_processes(host);
        let pending: Vec<procs::ProcEntry> = procs
            .into_iter()
            .filter(|p| {
                (p.state == 'T') != stop
                    && !signalled.iter().any(|s: &procs::ProcEntry| s.pid == p.pid)
            })
            .collect();
        if pending.is_empty() {
            break;
        }
        procs::signal_all(&pending, signal);
        signalled.extend(pending);
        std::thread::sleep(Duration::from_millis(50));
    }
    if signalled.is_empty() {
        println!(
            "{name}: nothing to {}",
            if stop { "stop" } else { "continue" }
        );
        return Ok(());
    }
    let verb = if stop { "stopped" } else { "continued" };
    println!(
        "{verb} {name}: {} processes ({})",
        signalled.len(),
        procs::summary(&signalled)
    );
    if stop {
        println!(
            "  skiff lab cont --dir {} {name}   # lets it run again",
            dir.display()
        );
    }
    Ok(())
}

pub fn partition(dir: &Path, name: &str) -> anyhow::Result<()> {
    let mut lab = Lab::load(dir)?;
    let host = lab.host_mut(name)?;
    host.partitioned = true;
    let host = host.clone();
    lab.save()?;
    net::partition(&host)?;
    println!(
        "{name} is cut off: link {} is down; frames to and from {} are dropped",
        host.veth, host.ip
    );
    println!("  skiff lab heal --dir {}   # reconnects it", dir.display());
    Ok(())
}

/// Undoes every partition and every netem, on every host (also ones lab.json does not know
/// of, e.g. made by hand: healing twice is harmless).
pub fn heal(dir: &Path) -> anyhow::Result<()> {
    let mut lab = Lab::load(dir)?;
    let mut healed = Vec::new();
    for host in &mut lab.hosts {
        if net::link_exists(&host.veth) {
            net::reconnect(host)?;
        }
        if net::netns_exists(&host.netns) {
            net::clear_netem(host)?;
        }
        if host.partitioned || host.netem.is_some() {
            healed.push(host.name.clone());
        }
        host.partitioned = false;
        host.netem = None;
    }
    lab.save()?;
    if healed.is_empty() {
        println!("no partition or netem to undo; every link is up and clean");
    } else {
        println!(
            "healed {}: every link is up, no delay, no loss",
            healed.join(", ")
        );
    }
    Ok(())
}

pub fn netem(
    dir: &Path,
    name: &str,
    delay: Option<&str>,
    loss: Option<&str>,
) -> anyhow::Result<()> {
    if delay.is_none() && loss.is_none() {
        bail!("netem needs --delay (e.g. 50ms) and/or --loss (e.g. 1%)");
    }
    let mut lab = Lab::load(dir)?;
    let host = lab.host(name)?.clone();
    net::clear_netem(&host)?;
    let applied = net::netem(&lab.exe, &host, delay, loss)?;
    let via = applied.via.clone();
    lab.host_mut(name)?.netem = Some(applied);
    lab.save()?;
    let what: Vec<String> = [
        delay.map(|d| format!("delay {d}")),
        loss.map(|l| format!("loss {l}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    println!(
        "{name}: {} each way on its link (via {via})",
        what.join(", ")
    );
    println!("  skiff lab heal --dir {}   # removes it", dir.display());
    Ok(())
}

/// Starts a killed host again, with its data dir and the very same command line.
pub fn restart(dir: &Path, name: &str) -> anyhow::Result<()> {
    let mut lab = Lab::load(dir)?;
    let host = lab.host(name)?.clone();
    let running = procs::host_processes(&host);
    if !running.is_empty() {
        bail!(
            "{name} still runs ({}): `skiff lab kill --dir {} {name}` first",
            procs::summary(&running),
            dir.display()
        );
    }
    let pid = start_again(&mut lab, name)?;
    println!(
        "restarted {name}: skiff pid {pid}, log {}",
        host.log_file().display()
    );
    println!("  kubectl get nodes -w   # its node turns Ready again within a few seconds");
    Ok(())
}

/// Starts the host's skiff with its recorded command line and records the new pid. An
/// immediate exit (a port still taken, bad data) shows within a second and is an error.
fn start_again(lab: &mut Lab, name: &str) -> anyhow::Result<u32> {
    let pid = procs::spawn_host(lab, lab.host(name)?)?;
    lab.host_mut(name)?.pid = Some(pid);
    lab.save()?;
    // A kill took the host's packet delayer with it: its delay comes back with the host.
    let host = lab.host(name)?.clone();
    if let Some(netem) = host.netem.as_ref().filter(|n| n.delayer.is_some()) {
        let delay = netem.delay.clone().unwrap_or_default();
        let delayer = net::spawn_delayer(&lab.exe, &host, &delay)?;
        if let Some(netem) = lab.host_mut(name)?.netem.as_mut() {
            netem.delayer = Some(delayer);
        }
        lab.save()?;
    }
    std::thread::sleep(Duration::from_secs(1));
    if procs::state_of(pid) == ProcState::Dead {
        bail!(
            "{name}'s skiff exited right away{}",
            log_tail(lab.host(name)?)
        );
    }
    Ok(pid)
}

/// A rolling-upgrade step: SIGTERM to the host's skiff alone (containerd, shims and containers
/// keep running, as a real upgrade leaves them), wait until it has exited, start it again with
/// the same command line. Its pods must come through untouched.
pub fn bounce(dir: &Path, name: &str) -> anyhow::Result<()> {
    let mut lab = Lab::load(dir)?;
    let host = lab.host(name)?.clone();
    let Some(pid) = host
        .pid
        .filter(|pid| procs::state_of(*pid) != ProcState::Dead)
    else {
        bail!(
            "{name}'s skiff is not running: `skiff lab restart --dir {} {name}` starts a killed host",
            dir.display()
        );
    };
    let started = Instant::now();
    let target = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
    nix::sys::signal::kill(target, Signal::SIGTERM)?;
    let deadline = started + Duration::from_secs(30);
    while procs::state_of(pid) != ProcState::Dead {
        if Instant::now() > deadline {
            bail!("{name}'s skiff (pid {pid}) did not exit within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopped_in = started.elapsed();
    let pid = start_again(&mut lab, name)?;
    println!(
        "bounced {name}: skiff stopped in {:.1}s and started again (pid {pid}); its containers ran on",
        stopped_in.as_secs_f64()
    );
    Ok(())
}

/// A lost disk: every process of the host is killed and its data dir emptied (a `--disk`
/// tmpfs stays mounted, empty). `restart` then starts it as a new machine: a server joins
/// again with the token, once the cluster has removed its old member (`skiff members remove`).
pub fn wipe(dir: &Path, name: &str) -> anyhow::Result<()> {
    kill_processes(dir, name)?;
    let lab = Lab::load(dir)?;
    let host = lab.host(name)?.clone();
    use nix::mount::{umount2, MntFlags};
    for _pass in 0..10 {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let points: Vec<_> = super::down::mounts_under(&mountinfo, &host.data_dir)
            .into_iter()
            .filter(|p| *p != host.data_dir)
            .collect();
        if points.is_empty() {
            break;
        }
        for point in points {
            let _ = umount2(&point, MntFlags::MNT_DETACH);
        }
    }
    let mut removed = 0;
    for entry in std::fs::read_dir(&host.data_dir)?.flatten() {
        let path = entry.path();
        let result = if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        result.map_err(|e| anyhow::anyhow!("removing {}: {e}", path.display()))?;
        removed += 1;
    }
    println!(
        "wiped {name}: {removed} entries of {} removed (a lost disk)",
        host.data_dir.display()
    );
    if host.role == super::state::Role::Server {
        println!(
            "  skiff members remove ID --kubeconfig {}/kubeconfig.yaml   # its old member",
            dir.display()
        );
    }
    println!(
        "  skiff lab restart --dir {} {name}   # starts it as a new machine",
        dir.display()
    );
    Ok(())
}

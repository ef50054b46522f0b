//! `skiff lab down`: remove everything a lab made, also after a crash, and safely twice.
//!
//! What to remove comes from two places: `lab.json` (what `up` recorded before creating it)
//! and the names the lab's id puts on the machine (`skiff-<id>-*` namespaces, `skl<id>*`
//! links, iptables rules naming them, mounts under the directory). Either alone is enough.
//!
//! The order matters: processes first (they hold mounts, namespaces and cgroups), then the
//! mounts under DIR (pod network namespace pins, containers' root filesystems, the `--disk`
//! tmpfs), the containers' cgroups, the links and namespaces, the iptables rules, and DIR.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::net;
use super::procs;
use super::state::{self, Host, Lab, Role};

/// What a teardown did, and what it could not do.
#[derive(Debug, Default)]
pub struct Report {
    pub done: Vec<String>,
    pub problems: Vec<String>,
}

impl Report {
    pub fn print(&self) {
        for line in &self.done {
            println!("  {line}");
        }
        for line in &self.problems {
            eprintln!("  could not: {line}");
        }
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty() && self.problems.is_empty()
    }
}

pub fn down(dir: &Path) -> anyhow::Result<()> {
    let lab = match Lab::load(dir) {
        Ok(lab) => Some(lab),
        Err(e) => {
            if Lab::state_path(dir).exists() {
                eprintln!("{e:#}; removing what can be found by name");
            }
            None
        }
    };
    let started = Instant::now();
    let report = teardown(dir, lab.as_ref());
    if report.is_empty() {
        println!("nothing to remove for {}", dir.display());
        return Ok(());
    }
    println!("lab in {}:", dir.display());
    report.print();
    if !report.problems.is_empty() {
        anyhow::bail!(
            "some of the lab is left (see above); fix what is named and run `skiff lab down --dir {}` again",
            dir.display()
        );
    }
    println!("removed in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Removes the lab in `dir`; never fails halfway, it goes on and reports.
pub fn teardown(dir: &Path, lab: Option<&Lab>) -> Report {
    let mut report = Report::default();
    let id = lab.map_or_else(|| state::lab_id(dir), |l| l.id.clone());
    let hosts = hosts_of(dir, &id, lab);

    // 1. Processes, noting the containers' cgroups (the task dirs may be on a --disk tmpfs,
    //    which goes in step 2).
    let mut cgroups: BTreeSet<String> = lab
        .map(|l| l.cgroups.iter().cloned().collect())
        .unwrap_or_default();
    cgroups.extend(task_cgroups(&hosts));
    for host in &hosts {
        let procs = procs::host_processes(host);
        if procs.is_empty() {
            continue;
        }
        cgroups.extend(procs::container_cgroups(&procs));
        let (killed, left) = procs::kill_host(host, Duration::from_secs(15));
        report.done.push(format!(
            "killed {}: {} processes ({})",
            host.name,
            killed.len(),
            procs::summary(&killed)
        ));
        if !left.is_empty() {
            report
                .problems
                .push(format!("kill {}'s {}", host.name, procs::summary(&left)));
        }
    }

    // 2. Mounts under DIR.
    unmount_under(dir, &mut report);

    // 3. Container cgroups.
    remove_cgroups(&cgroups, &mut report);

    // 4. Links (a veth takes its peer along), namespaces, the bridge.
    let link_prefix = state::link_prefix(&id);
    let mut veths: BTreeSet<String> = hosts.iter().map(|h| h.veth.clone()).collect();
    veths.extend(net::names_with_prefix("/sys/class/net", &link_prefix));
    let bridge = state::bridge_name(&id);
    veths.remove(&bridge);
    let veths: Vec<String> = veths.into_iter().filter(|v| net::link_exists(v)).collect();
    remove_all(&mut report, "veth", &veths, |v| {
        net::run("ip", &["link", "del", v.as_str()])
    });
    let mut namespaces: BTreeSet<String> = hosts.iter().map(|h| h.netns.clone()).collect();
    namespaces.extend(net::names_with_prefix(
        "/run/netns",
        &state::netns_prefix(&id),
    ));
    let namespaces: Vec<String> = namespaces
        .into_iter()
        .filter(|n| net::netns_exists(n))
        .collect();
    remove_all(&mut report, "network namespace", &namespaces, |n| {
        net::run("ip", &["netns", "del", n.as_str()])
    });
    if net::link_exists(&bridge) {
        remove_all(&mut report, "bridge", &[bridge], |b| {
            net::run("ip", &["link", "del", b.as_str()])
        });
    }

    // 5. iptables rules: the recorded ones, and any naming the lab's links.
    let mut rules = lab.map(|l| l.iptables.clone()).unwrap_or_default();
    for rule in net::iptables_rules_naming(&link_prefix) {
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    let present: Vec<state::IptablesRule> = rules.into_iter().filter(iptables_has).collect();
    remove_all(&mut report, "iptables rule", &present, net::iptables_delete);

    // 6. The directory.
    remove_dir(dir, lab.is_some(), !report.is_empty(), &mut report);
    report
}

/// Runs `remove` on each item, reporting "removed 3 network namespaces (a, b, c)".
fn remove_all<T: std::fmt::Display>(
    report: &mut Report,
    what: &str,
    items: &[T],
    remove: impl Fn(&T) -> anyhow::Result<()>,
) {
    let mut removed = Vec::new();
    for item in items {
        match remove(item) {
            Ok(()) => removed.push(item.to_string()),
            Err(e) => report.problems.push(format!("remove {what} {item}: {e:#}")),
        }
    }
    match removed.len() {
        0 => {}
        1 => report.done.push(format!("removed {what} {}", removed[0])),
        n => report
            .done
            .push(format!("removed {n} {what}s ({})", removed.join(", "))),
    }
}

fn iptables_has(rule: &state::IptablesRule) -> bool {
    let mut args = vec!["-w", "-t", &rule.table, "-C", &rule.chain];
    args.extend(rule.spec.iter().map(String::as_str));
    net::run("iptables", &args).is_ok()
}

/// The lab's hosts: those in lab.json, and any found by name (a namespace `skiff-<id>-host-K`
/// or a directory DIR/host-K) — all of them, when lab.json is lost.
fn hosts_of(dir: &Path, id: &str, lab: Option<&Lab>) -> Vec<Host> {
    let mut hosts: Vec<Host> = lab.map(|l| l.hosts.clone()).unwrap_or_default();
    let prefix = state::netns_prefix(id);
    let from_netns = net::names_with_prefix("/run/netns", &prefix)
        .into_iter()
        .filter_map(|n| {
            n.strip_prefix(&prefix)?
                .strip_prefix("host-")?
                .parse::<usize>()
                .ok()
        });
    let from_dirs = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("host-")?
                .parse::<usize>()
                .ok()
        });
    for k in from_netns.chain(from_dirs) {
        let name = state::host_name(k);
        if !hosts.iter().any(|h| h.name == name) {
            let data_dir = dir.join(&name);
            let role = if data_dir.join("agent").exists() {
                Role::Server
            } else {
                Role::Agent
            };
            hosts.push(Host {
                name,
                netns: state::netns_name(id, k),
                ip: std::net::Ipv4Addr::UNSPECIFIED,
                veth: state::veth_name(id, k),
                role,
                data_dir,
                args: Vec::new(),
                token_file: None,
                token_env: None,
                pid: None,
                disk: None,
                partitioned: false,
                netem: None,
            });
        }
    }
    hosts
}

// ---- mounts -----------------------------------------------------------------------------

/// Mount points at or under `dir` in a /proc/self/mountinfo text, deepest first (and, at one
/// depth, the most recently mounted first), so each unmount leaves its parent free.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(usize, usize, PathBuf)> = mountinfo
        .lines()
        .enumerate()
        .filter_map(|(order, line)| {
            let point = PathBuf::from(unescape(line.split(' ').nth(4)?));
            point
                .starts_with(dir)
                .then(|| (point.components().count(), order, point))
        })
        .collect();
    found.sort_by_key(|(depth, order, _)| std::cmp::Reverse((*depth, *order)));
    found.into_iter().map(|(_, _, p)| p).collect()
}

/// mountinfo writes space, tab, newline and backslash in paths as `\040`, `\011`, `\012`,
/// `\134`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let text = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(value)) => {
                out.push(value);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unmount_under(dir: &Path, report: &mut Report) {
    use nix::mount::{umount2, MntFlags};
    let mut unmounted = 0;
    for _pass in 0..10 {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let points = mounts_under(&mountinfo, dir);
        if points.is_empty() {
            break;
        }
        for point in points {
            // Detach: nothing of the lab runs any more, but a stale file handle must not keep
            // the teardown from going on.
            if umount2(&point, MntFlags::MNT_DETACH).is_ok() {
                unmounted += 1;
            }
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for point in mounts_under(&mountinfo, dir) {
        report.problems.push(format!("unmount {}", point.display()));
    }
    if unmounted > 0 {
        report.done.push(format!(
            "unmounted {unmounted} mounts under {} (containers' root filesystems, pod network namespaces, --disk)",
            dir.display()
        ));
    }
}

// ---- cgroups ----------------------------------------------------------------------------

/// The cgroups of containers whose tasks containerd knew (their task dirs outlive a SIGKILL):
/// the `cgroupsPath` of each task's OCI spec, and the pod cgroups of the host's pods
/// (`/skiff-<containerd namespace>/pod<uid>`, as skiff_agent::cgroup names them; a pod whose
/// containers never started has one too).
fn task_cgroups(hosts: &[Host]) -> Vec<String> {
    let mut found = Vec::new();
    for host in hosts {
        let containerd = host.agent_dir().join("containerd");
        let mut namespaces = BTreeSet::from(["skiff".to_string()]);
        for base in ["state", "root"] {
            let tasks = containerd.join(base).join("io.containerd.runtime.v2.task");
            for ns in read_names(&tasks) {
                for id in read_names(&tasks.join(&ns)) {
                    let spec = std::fs::read(tasks.join(&ns).join(&id).join("config.json"));
                    let path = spec
                        .ok()
                        .and_then(|s| serde_json::from_slice::<serde_json::Value>(&s).ok())
                        .and_then(|s| s["linux"]["cgroupsPath"].as_str().map(str::to_string));
                    found.push(path.unwrap_or_else(|| format!("/skiff-{ns}/{id}")));
                }
                namespaces.insert(ns);
            }
        }
        for uid in read_names(&host.agent_dir().join("pods")) {
            found.extend(namespaces.iter().map(|ns| format!("/skiff-{ns}/pod{uid}")));
        }
    }
    found
}

fn read_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Where cgroups live: /sys/fs/cgroup itself (v2), or one directory per v1 hierarchy.
fn cgroup_roots() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_path_buf()];
    }
    std::fs::read_dir(base)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// rmdir of each container cgroup, then its pod's, in every hierarchy (the shared parent
/// `skiff-<ns>` stays: other skiffs on the machine use it). A cgroup is busy for a moment
/// after its last process died, so each is tried for up to 3 s.
fn remove_cgroups(cgroups: &BTreeSet<String>, report: &mut Report) {
    let roots = cgroup_roots();
    let mut removed = 0;
    let mut all: BTreeSet<String> = cgroups.clone();
    all.extend(cgroups.iter().filter_map(|c| procs::pod_cgroup(c)));
    // Deepest first: a pod's cgroup goes once its containers' have.
    let mut ordered: Vec<&String> = all
        .iter()
        .filter(|c| procs::is_container_cgroup(c))
        .collect();
    ordered.sort_by_key(|c| std::cmp::Reverse(c.matches('/').count()));
    for cgroup in ordered {
        let mut any = false;
        for root in &roots {
            let path = root.join(cgroup.trim_start_matches('/'));
            let deadline = Instant::now() + Duration::from_secs(3);
            while path.exists() {
                match std::fs::remove_dir(&path) {
                    Ok(()) => any = true,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(100))
                    }
                    Err(e) => {
                        report
                            .problems
                            .push(format!("remove cgroup {}: {e}", path.display()));
                        break;
                    }
                }
            }
        }
        if any {
            removed += 1;
        }
    }
    if removed > 0 {
        report
            .done
            .push(format!("removed {removed} container and pod cgroups"));
    }
}

// ---- the directory ----------------------------------------------------------------------

/// Files and directories a lab makes in DIR.
fn made_by_lab(name: &str) -> bool {
    name == state::STATE_FILE
        || name == "lab.json.tmp"
        || (name.starts_with("kubeconfig") && name.ends_with(".yaml"))
        || name
            .strip_prefix("host-")
            .is_some_and(|k| k.parse::<usize>().is_ok())
}

/// Removes DIR when it holds only what a lab makes; with other files in it, removes the lab's
/// own files (when lab.json says DIR is a lab) and leaves the rest. Never while something is
/// still mounted under it (remove_dir_all would go into the mount).
fn remove_dir(dir: &Path, is_lab: bool, found_something: bool, report: &mut Report) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if !mounts_under(&mountinfo, dir).is_empty() {
        report.problems.push(format!(
            "remove {} (something is still mounted under it)",
            dir.display()
        ));
        return;
    }
    let names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let (ours, foreign): (Vec<&String>, Vec<&String>) = names.iter().partition(|n| made_by_lab(n));
    if names.is_empty() && !found_something && !is_lab {
        return;
    }
    if foreign.is_empty() {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => report.done.push(format!("removed {}", dir.display())),
            Err(e) => report
                .problems
                .push(format!("remove {}: {e}", dir.display())),
        }
        return;
    }
    let shown: Vec<&str> = foreign.iter().take(5).map(|s| s.as_str()).collect();
    if !is_lab {
        report.done.push(format!(
            "left {} as it is: it has no lab.json and holds files a lab does not make ({})",
            dir.display(),
            shown.join(", ")
        ));
        return;
    }
    for name in ours {
        let path = dir.join(name);
        let result = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(e) = result {
            report
                .problems
                .push(format!("remove {}: {e}", path.display()));
        }
    }
    report.done.push(format!(
        "removed the lab's files; kept {} for what else is in it ({})",
        dir.display(),
        shown.join(", ")
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
30 22 0:40 / /tmp/lab/host-3 rw - tmpfs tmpfs rw,size=40960k
31 22 0:4 net:[4026532300] /tmp/lab/host-1/agent/netns/0b6e-uid rw - nsfs nsfs rw
32 30 0:50 / /tmp/lab/host-3/containerd/state/io.containerd.runtime.v2.task/skiff/abc/rootfs rw - overlay overlay rw
33 22 0:41 / /tmp/lab2/host-1 rw - tmpfs tmpfs rw
34 22 0:42 / /tmp/lab/with\\040space rw - tmpfs tmpfs rw
35 22 0:43 / /tmp/lab/host-3 rw - tmpfs tmpfs rw
";

    #[test]
    fn mounts_under_the_dir_come_deepest_first() {
        let found = mounts_under(MOUNTINFO, Path::new("/tmp/lab"));
        let found: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            found,
            vec![
                "/tmp/lab/host-3/containerd/state/io.containerd.runtime.v2.task/skiff/abc/rootfs",
                "/tmp/lab/host-1/agent/netns/0b6e-uid",
                // At one depth the later mount first (two are stacked on host-3).
                "/tmp/lab/host-3",
                "/tmp/lab/with space",
                "/tmp/lab/host-3",
            ]
        );
        // /tmp/lab2 is another lab: a path prefix is not a parent directory.
        assert!(!found.iter().any(|p| p.starts_with("/tmp/lab2")));
    }

    #[test]
    fn only_what_a_lab_makes_is_its_own() {
        for name in [
            "lab.json",
            "kubeconfig.yaml",
            "kubeconfig-host-2.yaml",
            "host-12",
        ] {
            assert!(made_by_lab(name), "{name}");
        }
        for name in ["notes.txt", "host-", "host-x", ".bashrc", "images"] {
            assert!(!made_by_lab(name), "{name}");
        }
    }
}

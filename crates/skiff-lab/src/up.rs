//! `skiff lab up`: build the hosts, start skiff on each, wait until every node is Ready.
//!
//! ## Expected flow
//! 1. Check everything that can be checked before touching the machine (the numbers,
//!    `--disk`, `--images`, the directory, the tools, the names) — bad input leaves nothing.
//! 2. Choose the subnet and write `DIR/lab.json` with the whole plan.
//! 3. Mount the `--disk` tmpfs, build the bridge and the hosts' namespaces, add the FORWARD
//!    rules, copy the images into every host's airgap directory.
//! 4. Start host-1's `skiff server`; once it has written its join tokens, start the other
//!    servers (joining host-1) and the agents.
//! 5. Wait until every node is Ready and every server is a voting member, then write the
//!    kubeconfigs and print a summary.
//!
//! A failure (or Ctrl-C) at any step runs the same teardown as `skiff lab down`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Args;

use super::cluster;
use super::procs;
use super::state::{self, Host, Lab, Role, API_PORT};
use super::{down, net};

#[derive(Args, Debug)]
pub struct UpArgs {
    /// How many hosts: host-1 … host-N.
    #[arg(long)]
    pub hosts: usize,
    /// How many of them run `skiff server` (host-1 … host-M; default 3 when there are 3 hosts
    /// or more, else 1); the others run `skiff agent`.
    #[arg(long)]
    pub servers: Option<usize>,
    /// A directory of image tarballs (`*.tar`, e.g. from `skiff image pack`) every host
    /// imports at start.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// The pod network between hosts, passed to every server and agent (skiff's default when
    /// not given).
    #[arg(long, value_parser = ["host-gw", "vxlan", "auto"])]
    pub pod_network: Option<String>,
    /// Give a host a small disk: `--disk host-3=40M` mounts a 40 MiB tmpfs as its data dir.
    #[arg(long)]
    pub disk: Vec<String>,
    /// The lab's directory (new or empty): lab.json, kubeconfigs, one data dir per host.
    #[arg(long)]
    pub dir: PathBuf,
    /// Give up when the nodes are not all Ready after this many seconds.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    /// Leave a lab that failed to come up as it is (to read its logs); `skiff lab down`
    /// removes it.
    #[arg(long)]
    pub keep_on_failure: bool,
}

/// What `up` checked and decided before creating anything.
struct Checked {
    hosts: usize,
    servers: usize,
    disks: Vec<(usize, String)>,
    images: Vec<PathBuf>,
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let checked = check(&args)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args.dir.canonicalize()?;
    let mut lab = match plan(&dir, &args, &checked) {
        Ok(lab) => lab,
        Err(e) => {
            let _ = std::fs::remove_dir(&dir);
            return Err(e);
        }
    };
    lab.save()?;
    println!(
        "lab {} in {}: {} on {} (bridge {})",
        lab.id,
        dir.display(),
        counted(lab.hosts.len(), "host"),
        lab.subnet,
        lab.bridge
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let result = tokio::select! {
        result = build(&mut lab, &checked, started, deadline) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    match result {
        Ok(()) => {
            print_summary(&lab, started.elapsed());
            Ok(())
        }
        Err(e) if args.keep_on_failure => Err(e.context(format!(
            "the lab is left as it is; remove it with `skiff lab down --dir {}`",
            dir.display()
        ))),
        Err(e) => {
            eprintln!("lab up failed; removing what was built:");
            let lab = Lab::load(&dir).unwrap_or(lab);
            down::teardown(&dir, Some(&lab)).print();
            Err(e.context(
                "`skiff lab up` failed and removed the lab, logs included (--keep-on-failure keeps it)",
            ))
        }
    }
}

/// Step 1: everything that can be refused without touching the machine.
fn check(args: &UpArgs) -> anyhow::Result<Checked> {
    let hosts = args.hosts;
    if hosts == 0 || hosts > state::MAX_HOSTS {
        bail!("--hosts {hosts}: a lab has 1 to {} hosts", state::MAX_HOSTS);
    }
    let servers = args.servers.unwrap_or(if hosts >= 3 { 3 } else { 1 });
    if servers == 0 || servers > hosts {
        bail!(
            "--servers {servers} with --hosts {hosts}: give 1 to {hosts} servers, or more hosts (--hosts {})",
            servers.max(1)
        );
    }
    let mut disks: Vec<(usize, String)> = Vec::new();
    for text in &args.disk {
        let (k, size) = state::parse_disk(text, hosts)?;
        if disks.iter().any(|(other, _)| *other == k) {
            bail!("--disk host-{k} is given twice: give each host one size");
        }
        disks.push((k, size));
    }
    let images = match &args.images {
        Some(dir) => image_tarballs(dir)?,
        None => Vec::new(),
    };
    check_dir(&args.dir)?;
    for tool in ["ip", "iptables", "nsenter", "setsid", "containerd", "runc"] {
        if !on_path(tool) {
            bail!("{tool} is not installed (scripts/setup installs what skiff needs)");
        }
    }
    if let Some(mode) = &args.pod_network {
        check_pod_network_flag(mode)?;
    }
    Ok(Checked {
        hosts,
        servers,
        disks,
        images,
    })
}

fn image_tarballs(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("--images {}: not a readable directory", dir.display()))?;
    let mut tars: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "tar") && p.is_file())
        .collect();
    tars.sort();
    if tars.is_empty() {
        bail!(
            "--images {}: no *.tar in it (make one with `skiff image pack ... -o {}/NAME.tar`)",
            dir.display(),
            dir.display()
        );
    }
    Ok(tars)
}

fn check_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let shown = dir.display();
    if Lab::state_path(dir).exists() {
        bail!("{shown} already holds a lab: `skiff lab down --dir {shown}` first, or pick another --dir");
    }
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("--dir {shown}: not a readable directory"))?;
    if entries.next().is_some() {
        bail!("--dir {shown} is not empty: give a new or empty directory");
    }
    Ok(())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

/// `--pod-network` is passed through to `skiff server` and `skiff agent`; a binary that does
/// not know it yet would only fail on the hosts, so ask it first.
fn check_pod_network_flag(mode: &str) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    for command in ["server", "agent"] {
        let help = std::process::Command::new(&exe)
            .args([command, "--help"])
            .output()?;
        if !String::from_utf8_lossy(&help.stdout).contains("--pod-network") {
            bail!("--pod-network {mode}: this skiff's `{command}` has no --pod-network option yet; leave it out");
        }
    }
    Ok(())
}

/// Step 2: the names, the subnet, every host's command line.
fn plan(dir: &Path, args: &UpArgs, checked: &Checked) -> anyhow::Result<Lab> {
    let id = state::lab_id(dir);
    let bridge = state::bridge_name(&id);
    let leftovers = net::names_with_prefix("/run/netns", &state::netns_prefix(&id));
    if net::link_exists(&bridge) || !leftovers.is_empty() {
        bail!(
            "the names of lab id {id} are taken (bridge {bridge} or netns {}* exist): a lab \
             made in {} before was not taken down (`skiff lab down --dir {}`), or another \
             lab's directory has the same id (pick another --dir)",
            state::netns_prefix(&id),
            dir.display(),
            dir.display()
        );
    }
    let start = u32::from_str_radix(&id, 16).unwrap_or(0);
    let subnet = net::choose_subnet(&net::machine_routes()?, start)
        .context("every /24 of 10.200.0.0/13 overlaps a route of this machine")?;
    let [a, b, c, _] = subnet.octets();
    let bridge_ip = Ipv4Addr::new(a, b, c, 1);
    let first_ip = state::host_ip(subnet, 1);
    let first_url = format!("https://{first_ip}:{API_PORT}");
    let first_dir = dir.join(state::host_name(1));
    let hosts = (1..=checked.hosts)
        .map(|k| {
            let name = state::host_name(k);
            let ip = state::host_ip(subnet, k);
            let data_dir = dir.join(&name);
            let role = if k <= checked.servers {
                Role::Server
            } else {
                Role::Agent
            };
            let (mut host_args, token_file, token_env) = match (role, k) {
                (Role::Server, 1) => (server_args(&data_dir, &name, ip), None, None),
                (Role::Server, _) => {
                    let mut a = server_args(&data_dir, &name, ip);
                    a.extend(["--join".into(), first_url.clone()]);
                    (a, Some(first_dir.join("token")), Some("SKIFF_TOKEN".into()))
                }
                (Role::Agent, _) => (
                    agent_args(&data_dir, &name, ip, &first_url),
                    Some(first_dir.join("node-token")),
                    Some("SKIFF_NODE_TOKEN".into()),
                ),
            };
            if let Some(mode) = &args.pod_network {
                host_args.extend(["--pod-network".into(), mode.clone()]);
            }
            Host {
                name,
                netns: state::netns_name(&id, k),
                ip,
                veth: state::veth_name(&id, k),
                role,
                data_dir,
                args: host_args,
                token_file,
                token_env,
                pid: None,
                disk: checked
                    .disks
                    .iter()
                    .find(|(d, _)| *d == k)
                    .map(|(_, size)| size.clone()),
                partitioned: false,
                netem: None,
            }
        })
        .collect();
    Ok(Lab {
        id: id.clone(),
        dir: dir.to_path_buf(),
        subnet: format!("{subnet}/24"),
        bridge,
        bridge_ip,
        pod_network: args.pod_network.clone(),
        exe: std::env::current_exe()?,
        hosts,
        iptables: Vec::new(),
        mounts: Vec::new(),
        cgroups: Vec::new(),
    })
}

fn server_args(data_dir: &Path, name: &str, ip: Ipv4Addr) -> Vec<String> {
    let data_dir = data_dir.display().to_string();
    let ip = ip.to_string();
    [
        "server",
        "--data-dir",
        &data_dir,
        "--listen",
        &format!("{ip}:{API_PORT}"),
        "--advertise-address",
        &ip,
        "--name",
        name,
        "--node-name",
        name,
        "--node-ip",
        &ip,
    ]
    .map(String::from)
    .to_vec()
}

fn agent_args(data_dir: &Path, name: &str, ip: Ipv4Addr, server: &str) -> Vec<String> {
    let data_dir = data_dir.display().to_string();
    let ip = ip.to_string();
    [
        "agent",
        "--server",
        server,
        "--data-dir",
        &data_dir,
        "--node-name",
        name,
        "--node-ip",
        &ip,
    ]
    .map(String::from)
    .to_vec()
}

/// Steps 3 to 5. Every step saves lab.json before it creates something.
async fn build(
    lab: &mut Lab,
    checked: &Checked,
    started: Instant,
    deadline: Instant,
) -> anyhow::Result<()> {
    let step = |what: &str| println!("{:>6.1}s  {what}", started.elapsed().as_secs_f64());

    // 3. Disks, network, images.
    for host in lab.hosts.clone() {
        if let Some(size) = &host.disk {
            std::fs::create_dir_all(&host.data_dir)?;
            lab.mounts.push(host.data_dir.clone());
            lab.save()?;
            mount_tmpfs(&host.data_dir, size)?;
            step(&format!(
                "{}: a {size} disk (tmpfs) on {}",
                host.name,
                host.data_dir.display()
            ));
        }
    }
    net::create_bridge(lab)?;
    for host in &lab.hosts {
        net::create_host_link(lab, host)?;
    }
    for rule in net::forward_rules(&lab.bridge) {
        lab.iptables.push(rule.clone());
        lab.save()?;
        net::iptables_insert(&rule)?;
    }
    step(&format!(
        "network: bridge {} {}/24, {}",
        lab.bridge,
        lab.bridge_ip,
        counted(lab.hosts.len(), "namespace")
    ));
    if !checked.images.is_empty() {
        for host in &lab.hosts {
            let images = host.images_dir();
            std::fs::create_dir_all(&images)?;
            for tar in &checked.images {
                let name = tar.file_name().context("an image file has a name")?;
                std::fs::copy(tar, images.join(name)).with_context(|| {
                    format!(
                        "copying {} to {} (is its disk full?)",
                        tar.display(),
                        images.display()
                    )
                })?;
            }
        }
        step(&format!(
            "images: {} in every host's airgap dir",
            counted(checked.images.len(), "image tarball")
        ));
    }

    // 4. host-1 first: the others need its tokens.
    let first_name = lab.first_server()?.name.clone();
    start(lab, &first_name)?;
    let first = lab.first_server()?.clone();
    cluster::wait_for_tokens(&first, deadline).await?;
    step(&format!(
        "{}: server up at https://{}:{API_PORT}",
        first.name, first.ip
    ));
    let others: Vec<String> = lab.hosts.iter().skip(1).map(|h| h.name.clone()).collect();
    let agents: Vec<String> = lab
        .hosts
        .iter()
        .filter(|h| h.role == Role::Agent)
        .map(|h| h.name.clone())
        .collect();
    start_joining_servers(lab)?;
    for name in &agents {
        start(lab, name)?;
    }
    if !others.is_empty() {
        step(&format!("started {}", others.join(", ")));
    }

    // 5. Ready.
    cluster::wait_until_ready(lab, started, deadline).await?;
    cluster::write_kubeconfigs(lab)?;
    Ok(())
}

/// Servers 2..M join host-1 at the same moment: a real cluster's servers come up together,
/// and joins racing each other is part of what the lab exercises. (Should concurrent joins
/// ever break, starting each after the previous one is a voter is the workaround to put here.)
fn start_joining_servers(lab: &mut Lab) -> anyhow::Result<()> {
    let joining: Vec<String> = lab.servers().skip(1).map(|h| h.name.clone()).collect();
    for name in joining {
        start(lab, &name)?;
    }
    Ok(())
}

/// Starts a host's skiff and records its pid.
fn start(lab: &mut Lab, name: &str) -> anyhow::Result<()> {
    let host = lab.host(name)?.clone();
    let pid = procs::spawn_host(lab, &host)?;
    lab.host_mut(name)?.pid = Some(pid);
    lab.save()
}

fn mount_tmpfs(path: &Path, size: &str) -> anyhow::Result<()> {
    use nix::mount::{mount, MsFlags};
    let options = format!("size={size},mode=0755");
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .with_context(|| format!("mounting a {size} tmpfs on {}", path.display()))
}

/// `1 host`, `4 hosts`.
fn counted(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

fn print_summary(lab: &Lab, took: Duration) {
    let dir = lab.dir.display();
    println!();
    println!(
        "lab {} is up after {:.1}s: {} on {}",
        lab.id,
        took.as_secs_f64(),
        counted(lab.hosts.len(), "host"),
        lab.subnet
    );
    println!(
        "  {:<8} {:<7} {:<15} {:<24} DATA",
        "HOST", "ROLE", "ADDRESS", "NETNS"
    );
    for host in &lab.hosts {
        let disk = host
            .disk
            .as_ref()
            .map(|d| format!(" ({d} tmpfs)"))
            .unwrap_or_default();
        println!(
            "  {:<8} {:<7} {:<15} {:<24} {}{disk}",
            host.name,
            host.role,
            host.ip,
            host.netns,
            host.data_dir.display()
        );
    }
    println!();
    println!("  export KUBECONFIG={dir}/kubeconfig.yaml");
    println!("  kubectl get nodes -o wide");
    println!("  skiff lab status --dir {dir}");
    println!("  skiff lab down --dir {dir}");
    println!("Each server's API: --kubeconfig {dir}/kubeconfig-host-K.yaml. On host-1's network:");
    println!("  nsenter --net=/run/netns/{} sh", lab.hosts[0].netns);
    println!("Faults: skiff lab kill|stop|cont|partition|restart --dir {dir} HOST");
    println!("        skiff lab netem --dir {dir} HOST --delay 50ms --loss 1%");
    println!("        skiff lab heal --dir {dir}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        let ip = Ipv4Addr::new(10, 200, 1, 12);
        let args = agent_args(
            Path::new("/tmp/lab/host-2"),
            "host-2",
            ip,
            "https://10.200.1.11:6443",
        );
        assert_eq!(args.join(" "), "agent --server https://10.200.1.11:6443 --data-dir /tmp/lab/host-2 --node-name host-2 --node-ip 10.200.1.12");
        let args = server_args(Path::new("/tmp/lab/host-2"), "host-2", ip);
        assert_eq!(args.join(" "), "server --data-dir /tmp/lab/host-2 --listen 10.200.1.12:6443 --advertise-address 10.200.1.12 --name host-2 --node-name host-2 --node-ip 10.200.1.12");
    }
}

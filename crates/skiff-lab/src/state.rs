//! `DIR/lab.json`: what a lab is made of, and the names it gives the machine.
//!
//! The file is written before anything is created and saved again whenever something is added
//! (an iptables rule, a mount, a process id), so `skiff lab down` can remove everything even
//! after `up`, a test or the machine's user crashed halfway. Every name the lab gives the
//! machine (bridge, veths, network namespaces) carries the lab's id, so two labs coexist and a
//! lab whose `lab.json` is lost can still be found by name.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// A lab: its hosts and everything it added to the machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lab {
    /// Six hex digits derived from the lab's directory; part of every name below.
    pub id: String,
    /// The lab's directory (absolute): lab.json, the kubeconfigs and one data dir per host.
    pub dir: PathBuf,
    /// The /24 the lab owns, e.g. `10.201.7.0/24`.
    pub subnet: String,
    /// The bridge in the root network namespace that connects the hosts.
    pub bridge: String,
    /// The bridge's address: the hosts' default gateway, and how the machine reaches them.
    pub bridge_ip: Ipv4Addr,
    /// `--pod-network` as the user gave it (None: skiff's default, and the flag is not passed).
    pub pod_network: Option<String>,
    /// The skiff binary the hosts run (the one that ran `lab up`).
    pub exe: PathBuf,
    pub hosts: Vec<Host>,
    /// iptables rules added in the root network namespace; `down` deletes exactly these.
    pub iptables: Vec<IptablesRule>,
    /// Mount points the lab mounted (the `--disk` tmpfs); `down` also unmounts whatever else
    /// is mounted under `dir` (containers' root filesystems, pod network namespaces).
    pub mounts: Vec<PathBuf>,
    /// cgroups of containers killed by `lab kill` (empty dirs nobody else removes).
    #[serde(default)]
    pub cgroups: Vec<String>,
}

/// An iptables rule: added with `iptables -t TABLE -I CHAIN SPEC`, removed with `-D`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IptablesRule {
    pub table: String,
    pub chain: String,
    pub spec: Vec<String>,
}

impl std::fmt::Display for IptablesRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "-t {} {} {}",
            self.table,
            self.chain,
            self.spec.join(" ")
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// `skiff server`: a member of the Raft cluster, with its own node agent.
    Server,
    /// `skiff agent`: a node only.
    Agent,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Role::Server => "server",
            Role::Agent => "agent",
        })
    }
}

/// One host: a network namespace with its own address, data dir and skiff process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    /// `host-K`, also the node's name and (for servers) the member's name.
    pub name: String,
    /// The network namespace, `/run/netns/<netns>`.
    pub netns: String,
    pub ip: Ipv4Addr,
    /// The root side of the host's veth pair (inside the namespace it is `eth0`).
    pub veth: String,
    pub role: Role,
    pub data_dir: PathBuf,
    /// The arguments `skiff` was started with, reused by `lab restart`.
    pub args: Vec<String>,
    /// The token file handed to the process as `token_env` (kept off the command line, where
    /// every user of the machine could read it).
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    /// The skiff process (its containerd, shims and containers are found by network namespace).
    pub pid: Option<u32>,
    /// `--disk` size: a tmpfs of this size is mounted on `data_dir`.
    pub disk: Option<String>,
    /// `lab partition`: the root side of the veth is down.
    #[serde(default)]
    pub partitioned: bool,
    /// `lab netem`: what is applied to the host's link.
    #[serde(default)]
    pub netem: Option<Netem>,
}

/// Delay and loss on a host's link, in both directions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Netem {
    pub delay: Option<String>,
    pub loss: Option<String>,
    /// `tc` (the netem qdisc), or what stands in for it on kernels built without netem:
    /// `iptables` (random drops) and/or `an NFQUEUE delayer`.
    pub via: String,
    /// The pid of the host's `skiff lab delayer`, when one holds its packets.
    #[serde(default)]
    pub delayer: Option<u32>,
}

impl Host {
    /// The node agent's data dir: a server runs its agent in `DATA/agent`.
    pub fn agent_dir(&self) -> PathBuf {
        match self.role {
            Role::Server => self.data_dir.join("agent"),
            Role::Agent => self.data_dir.clone(),
        }
    }

    /// The airgap directory: image tarballs there are imported when the agent starts.
    pub fn images_dir(&self) -> PathBuf {
        self.agent_dir().join("images")
    }

    /// The pid file of the containerd the host's agent started.
    pub fn containerd_pid_file(&self) -> PathBuf {
        self.agent_dir().join("containerd").join("containerd.pid")
    }

    pub fn log_file(&self) -> PathBuf {
        self.data_dir.join("skiff.log")
    }

    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }
}

pub const STATE_FILE: &str = "lab.json";

/// Every server serves the Kubernetes API (and Raft) on its own address, this port.
pub const API_PORT: u16 = 6443;

impl Lab {
    pub fn state_path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    pub fn load(dir: &Path) -> anyhow::Result<Lab> {
        let path = Lab::state_path(dir);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (is {} a lab? `skiff lab up --dir {}` makes one)",
                path.display(),
                dir.display(),
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes lab.json atomically (a new file renamed over the old), readable by root only:
    /// it names the token files.
    pub fn save(&self) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = Lab::state_path(&self.dir);
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    pub fn host(&self, name: &str) -> anyhow::Result<&Host> {
        self.hosts.iter().find(|h| h.name == name).ok_or_else(|| {
            anyhow::anyhow!(
                "no host {name} in this lab (it has {}); see `skiff lab status --dir {}`",
                self.host_names(),
                self.dir.display()
            )
        })
    }

    pub fn host_mut(&mut self, name: &str) -> anyhow::Result<&mut Host> {
        let names = self.host_names();
        let dir = self.dir.display().to_string();
        self.hosts
            .iter_mut()
            .find(|h| h.name == name)
            .ok_or_else(|| {
                anyhow::anyhow!(
                "no host {name} in this lab (it has {names}); see `skiff lab status --dir {dir}`"
            )
            })
    }

    fn host_names(&self) -> String {
        match self.hosts.as_slice() {
            [] => "no hosts".into(),
            [only] => only.name.clone(),
            [first, .., last] => format!("{} … {}", first.name, last.name),
        }
    }

    /// host-1: the server every other host joins, and the one the main kubeconfig points at.
    pub fn first_server(&self) -> anyhow::Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.role == Role::Server)
            .context("lab.json lists no server")
    }

    pub fn servers(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| h.role == Role::Server)
    }

    /// The kubeconfig for reaching the cluster through server `host`.
    pub fn kubeconfig_for(&self, host: &Host) -> PathBuf {
        self.dir.join(format!("kubeconfig-{}.yaml", host.name))
    }
}

// ---- names -------------------------------------------------------------------------------

/// The lab id: FNV-1a of the directory's path, six hex digits (24 bits). Short enough that
/// `skl<id>h<K>` fits Linux's 15-character interface names; a clash with another live lab is
/// caught by `up` (the bridge name is taken).
pub fn lab_id(dir: &Path) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in dir.as_os_str().as_encoded_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    // Fold the top byte in, so all 32 bits count.
    format!("{:06x}", (hash ^ (hash >> 24)) & 0x00ff_ffff)
}

pub fn bridge_name(id: &str) -> String {
    format!("skl{id}")
}

/// Every link of the lab starts with this (the bridge and the veths).
pub fn link_prefix(id: &str) -> String {
    bridge_name(id)
}

pub fn veth_name(id: &str, k: usize) -> String {
    format!("skl{id}h{k}")
}

/// Every network namespace of the lab starts with this.
pub fn netns_prefix(id: &str) -> String {
    format!("skiff-{id}-")
}

pub fn netns_name(id: &str, k: usize) -> String {
    format!("skiff-{id}-host-{k}")
}

pub fn host_name(k: usize) -> String {
    format!("host-{k}")
}

/// `host-K` → K, if 1 ≤ K ≤ hosts.
pub fn host_number(name: &str, hosts: usize) -> anyhow::Result<usize> {
    let k = name
        .strip_prefix("host-")
        .and_then(|k| k.parse::<usize>().ok())
        .filter(|k| (1..=hosts).contains(k));
    match k {
        Some(k) => Ok(k),
        None => bail!("unknown host {name:?}: the lab's hosts are host-1 … host-{hosts}"),
    }
}

/// `--disk host-K=SIZE` → (K, SIZE). SIZE is a tmpfs size: digits and an optional k/m/g.
pub fn parse_disk(text: &str, hosts: usize) -> anyhow::Result<(usize, String)> {
    let usage = "--disk takes HOST=SIZE, e.g. --disk host-2=40M (sizes in k, M or G)";
    let Some((host, size)) = text.split_once('=') else {
        bail!("--disk {text:?}: {usage}");
    };
    let k = host_number(host, hosts).with_context(|| format!("--disk {text:?}"))?;
    let digits = size.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G']);
    let suffix_len = size.len() - digits.len();
    let number: u64 = digits.parse().unwrap_or(0);
    if suffix_len > 1 || number == 0 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        bail!("--disk {text:?}: the size must be a positive number, e.g. 40M; {usage}");
    }
    Ok((k, size.to_string()))
}

/// The address of host K in the lab's /24: `.10+K`, so host-3 is `x.y.z.13`.
pub fn host_ip(subnet: Ipv4Addr, k: usize) -> Ipv4Addr {
    let [a, b, c, _] = subnet.octets();
    // MAX_HOSTS keeps 10 + k within one byte.
    Ipv4Addr::new(a, b, c, (10 + k.min(MAX_HOSTS)) as u8)
}

/// Addresses .11 … .254 of the /24.
pub const MAX_HOSTS: usize = 244;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_limits_and_carry_the_id() {
        let id = lab_id(Path::new("/tmp/lab"));
        assert_eq!(id.len(), 6);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, lab_id(Path::new("/tmp/lab")), "stable");
        assert_ne!(id, lab_id(Path::new("/tmp/lab2")));
        assert!(bridge_name(&id).len() <= 15);
        assert!(veth_name(&id, MAX_HOSTS).len() <= 15);
        assert!(veth_name(&id, 3).starts_with(&link_prefix(&id)));
        assert_eq!(netns_name(&id, 3), format!("skiff-{id}-host-3"));
        assert!(netns_name(&id, 3).starts_with(&netns_prefix(&id)));
    }

    #[test]
    fn host_names_are_checked() {
        assert_eq!(host_number("host-2", 3).ok(), Some(2));
        for bad in ["host-0", "host-4", "host-", "2", "node-1", "host-x"] {
            let e = host_number(bad, 3).expect_err(bad).to_string();
            assert!(e.contains("host-1 … host-3"), "{e}");
        }
    }

    #[test]
    fn disk_parsing() {
        assert_eq!(parse_disk("host-2=40M", 3).ok(), Some((2, "40M".into())));
        assert_eq!(parse_disk("host-1=1g", 3).ok(), Some((1, "1g".into())));
        assert_eq!(parse_disk("host-3=4096", 3).ok(), Some((3, "4096".into())));
        for bad in [
            "host-2",
            "host-2=",
            "host-2=0M",
            "host-2=M",
            "host-2=4MB",
            "host-2=-1M",
            "host-9=40M",
            "=40M",
            "host-2=4 M",
        ] {
            assert!(parse_disk(bad, 3).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn host_addresses() {
        let subnet = Ipv4Addr::new(10, 201, 7, 0);
        assert_eq!(host_ip(subnet, 1), Ipv4Addr::new(10, 201, 7, 11));
        assert_eq!(host_ip(subnet, MAX_HOSTS), Ipv4Addr::new(10, 201, 7, 254));
    }
}

//! The lab's network: a bridge in the root network namespace, one network namespace per host
//! joined to it by a veth pair, and the link faults (partition, netem).
//!
//! ```text
//!  root netns                                   netns skiff-<id>-host-K
//!  bridge skl<id> (x.y.z.1/24) ── veth skl<id>hK ═══ eth0 (x.y.z.(10+K)/24), lo
//!                                                    default via x.y.z.1
//! ```
//!
//! The /24 is chosen so it overlaps no route of the machine (so another lab, a test's bridge,
//! or the machine's own networks keep working) and stays clear of skiff's pod and service
//! ranges. Everything here shells out to `ip`, `tc` and `iptables`: the commands a student
//! would type to do the same by hand.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use super::state::{Host, IptablesRule, Lab, Netem};

// ---- choosing the subnet ----------------------------------------------------------------

/// An IPv4 prefix from the routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    pub addr: u32,
    pub len: u8,
}

impl Prefix {
    fn new(addr: Ipv4Addr, len: u8) -> Prefix {
        Prefix {
            addr: u32::from(addr),
            len,
        }
    }

    fn overlaps(&self, other: &Prefix) -> bool {
        let len = self.len.min(other.len);
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        self.addr & mask == other.addr & mask
    }
}

/// skiff's default pod and service ranges (`--cluster-cidr`, `--service-cidr`): inside the
/// hosts they are routed, so the lab's own addresses must not fall in them.
const RESERVED: [(Ipv4Addr, u8); 2] = [
    (Ipv4Addr::new(10, 42, 0, 0), 16),
    (Ipv4Addr::new(10, 43, 0, 0), 16),
];

/// The pool labs take their /24 from: 10.200.0.0/13, 2048 subnets.
const POOL_START: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 0);
const POOL_SIZE: u32 = 2048;

/// The destinations of `ip -4 route show table all` (every table, so policy routing counts
/// too). The default route is left out: it overlaps everything and collides with nothing.
pub fn parse_routes(text: &str) -> Vec<Prefix> {
    const TYPES: [&str; 10] = [
        "unicast",
        "local",
        "broadcast",
        "multicast",
        "throw",
        "unreachable",
        "prohibit",
        "blackhole",
        "nat",
        "anycast",
    ];
    let mut prefixes = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace().peekable();
        if words.peek().is_some_and(|w| TYPES.contains(w)) {
            words.next();
        }
        let Some(destination) = words.next() else {
            continue;
        };
        let (addr, len) = destination.split_once('/').unwrap_or((destination, "32"));
        if let (Ok(addr), Ok(len)) = (addr.parse::<Ipv4Addr>(), len.parse::<u8>()) {
            if len > 0 && len <= 32 {
                prefixes.push(Prefix::new(addr, len));
            }
        }
    }
    prefixes
}

/// The first free /24 of the pool, starting at `start` (the lab id, so two labs made at the
/// same moment try different subnets) and wrapping around.
pub fn choose_subnet(routes: &[Prefix], start: u32) -> Option<Ipv4Addr> {
    let reserved: Vec<Prefix> = RESERVED.iter().map(|(a, l)| Prefix::new(*a, *l)).collect();
    (0..POOL_SIZE)
        .map(|i| {
            Prefix::new(
                Ipv4Addr::from(u32::from(POOL_START) + ((start + i) % POOL_SIZE) * 256),
                24,
            )
        })
        .find(|candidate| {
            !routes
                .iter()
                .chain(&reserved)
                .any(|taken| taken.overlaps(candidate))
        })
        .map(|p| Ipv4Addr::from(p.addr))
}

/// The machine's routes, all tables.
pub fn machine_routes() -> anyhow::Result<Vec<Prefix>> {
    let text = output("ip", &["-4", "route", "show", "table", "all"])?;
    Ok(parse_routes(&text))
}

// ---- building ---------------------------------------------------------------------------

/// Runs a command; a failure becomes an error carrying the command line and its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    output(program, args).map(|_| ())
}

fn output(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

pub fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// The bridge with the lab's .1 address, up.
pub fn create_bridge(lab: &Lab) -> anyhow::Result<()> {
    let address = format!("{}/24", lab.bridge_ip);
    run("ip", &["link", "add", &lab.bridge, "type", "bridge"])?;
    run("ip", &["addr", "add", &address, "dev", &lab.bridge])?;
    run("ip", &["link", "set", &lab.bridge, "up"])
}

/// The host's network namespace, its veth pair (`eth0` inside), address and default route.
pub fn create_host_link(lab: &Lab, host: &Host) -> anyhow::Result<()> {
    let ns = host.netns.as_str();
    let address = format!("{}/24", host.ip);
    let gateway = lab.bridge_ip.to_string();
    run("ip", &["netns", "add", ns])?;
    run(
        "ip",
        &[
            "link", "add", &host.veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
    )?;
    run(
        "ip",
        &["link", "set", &host.veth, "master", &lab.bridge, "up"],
    )?;
    run("ip", &["-n", ns, "addr", "add", &address, "dev", "eth0"])?;
    run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
    run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
    run(
        "ip",
        &["-n", ns, "route", "add", "default", "via", &gateway],
    )
}

/// The FORWARD rules that let traffic cross the lab bridge even when the machine's FORWARD
/// policy is DROP (Docker sets it so; with br_netfilter, bridged frames go through FORWARD).
pub fn forward_rules(bridge: &str) -> Vec<IptablesRule> {
    ["-i", "-o"]
        .iter()
        .map(|direction| IptablesRule {
            table: "filter".into(),
            chain: "FORWARD".into(),
            spec: vec![
                direction.to_string(),
                bridge.into(),
                "-j".into(),
                "ACCEPT".into(),
            ],
        })
        .collect()
}

pub fn iptables_insert(rule: &IptablesRule) -> anyhow::Result<()> {
    let mut args = vec!["-w", "-t", &rule.table, "-I", &rule.chain];
    args.extend(rule.spec.iter().map(String::as_str));
    run("iptables", &args)
}

pub fn iptables_delete(rule: &IptablesRule) -> anyhow::Result<()> {
    let mut args = vec!["-w", "-t", &rule.table, "-D", &rule.chain];
    args.extend(rule.spec.iter().map(String::as_str));
    run("iptables", &args)
}

/// Rules of the root namespace's filter table that name one of the lab's links (for a lab
/// whose lab.json is lost), as specs for `-D`.
pub fn iptables_rules_naming(link_prefix: &str) -> Vec<IptablesRule> {
    let Ok(text) = output("iptables", &["-w", "-S"]) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["-A", chain, spec @ ..] if spec.iter().any(|w| w.starts_with(link_prefix)) => {
                    Some(IptablesRule {
                        table: "filter".into(),
                        chain: chain.to_string(),
                        spec: spec.iter().map(|w| w.to_string()).collect(),
                    })
                }
                _ => None,
            }
        })
        .collect()
}

/// Entries of a directory whose names start with `prefix` (`/run/netns`, `/sys/class/net`).
pub fn names_with_prefix(dir: &str, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

// ---- faults -----------------------------------------------------------------------------

/// Cuts the host off: its veth's root side goes down, so every frame to or from it is dropped
/// without an answer (no RST, no ICMP from the peer), as when a cable is pulled.
pub fn partition(host: &Host) -> anyhow::Result<()> {
    run("ip", &["link", "set", &host.veth, "down"])
}

pub fn reconnect(host: &Host) -> anyhow::Result<()> {
    run("ip", &["link", "set", &host.veth, "up"])
}

/// Delay and/or loss on the host's link, applied on both sides of the veth pair so traffic
/// in both directions suffers it (a round trip through one impaired host gains 2 × delay).
/// Kernels built without the netem qdisc get the same from user space instead: random drops
/// from iptables for loss, and a [`delayer`](super::delayer) process fed by NFQUEUE for delay.
pub fn netem(
    exe: &Path,
    host: &Host,
    delay: Option<&str>,
    loss: Option<&str>,
) -> anyhow::Result<Netem> {
    let mut params = Vec::new();
    if let Some(delay) = delay {
        params.extend(["delay", delay]);
    }
    if let Some(loss) = loss {
        params.extend(["loss", loss]);
    }
    let mut inside = vec![
        "-n",
        &host.netns,
        "qdisc",
        "replace",
        "dev",
        "eth0",
        "root",
        "netem",
    ];
    inside.extend(&params);
    let mut outside = vec!["qdisc", "replace", "dev", &host.veth, "root", "netem"];
    outside.extend(&params);
    let tc = run("tc", &inside).and_then(|()| run("tc", &outside));
    match tc {
        Ok(()) => Ok(Netem {
            delay: delay.map(str::to_string),
            loss: loss.map(str::to_string),
            via: "tc".into(),
            delayer: None,
        }),
        Err(e) if e.to_string().contains("qdisc kind is unknown") => {
            let _ = clear_netem(host);
            let applied = netem_in_user_space(exe, host, delay, loss);
            if applied.is_err() {
                let _ = clear_netem(host);
            }
            applied
        }
        Err(e) => Err(e),
    }
}

/// The netem qdisc's stand-in: iptables rules in the host's namespace (random DROP for loss,
/// NFQUEUE to the host's delayer for delay).
fn netem_in_user_space(
    exe: &Path,
    host: &Host,
    delay: Option<&str>,
    loss: Option<&str>,
) -> anyhow::Result<Netem> {
    let mut rules = Vec::new();
    if let Some(loss) = loss {
        rules.extend(loss_rules(loss)?);
    }
    let mut delayer = None;
    if let Some(delay) = delay {
        super::delayer::parse_delay(delay)?;
        delayer = Some(spawn_delayer(exe, host, delay)?);
        rules.extend(delay_rules());
    }
    // Loss rules are inserted first in their chains, so a dropped packet is never queued.
    for rule in rules.iter().rev() {
        let mut args = vec!["-w", "-t", &rule.table, "-I", &rule.chain];
        args.extend(rule.spec.iter().map(String::as_str));
        in_netns(host, "iptables", &args)?;
    }
    let via = match (loss, delay) {
        (Some(_), Some(_)) => "iptables and an NFQUEUE delayer",
        (Some(_), None) => "iptables",
        _ => "an NFQUEUE delayer",
    };
    Ok(Netem {
        delay: delay.map(str::to_string),
        loss: loss.map(str::to_string),
        via: via.into(),
        delayer,
    })
}

/// Starts `skiff lab delayer` inside the host's network namespace, in its own session (it
/// outlives this command), and waits for it to say it is bound to the queue. setsid and nsenter
/// both exec, so the pid returned is the delayer's.
pub fn spawn_delayer(exe: &Path, host: &Host, delay: &str) -> anyhow::Result<u32> {
    use std::io::BufRead;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(host.log_file())
        .with_context(|| format!("opening {}", host.log_file().display()))?;
    let mut child = super::procs::in_host_session(host, exe)
        .args(["lab", "delayer", "--delay", delay])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting the packet delayer (setsid nsenter skiff)")?;
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        std::io::BufReader::new(stdout).read_line(&mut line)?;
    }
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "the packet delayer for {} did not start (its error is at the end of {})",
            host.name,
            host.log_file().display()
        );
    }
    // It runs on after this command ends; lab heal and lab down end it by pid.
    Ok(child.id())
}

/// Every packet in and out of the host's eth0 goes to the delayer's queue; with no delayer
/// bound, `--queue-bypass` lets it through rather than drop it.
fn delay_rules() -> Vec<IptablesRule> {
    let rule = |chain: &str, direction: &str| IptablesRule {
        table: "mangle".into(),
        chain: chain.into(),
        spec: [
            direction,
            "eth0",
            "-m",
            "comment",
            "--comment",
            "skiff-lab-delay",
            "-j",
            "NFQUEUE",
            "--queue-num",
            "0",
            "--queue-bypass",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    };
    vec![rule("PREROUTING", "-i"), rule("POSTROUTING", "-o")]
}

/// Random drops of `loss` (`1%`) of the packets in and out of the host's eth0, for kernels
/// without netem. The rules live in the host's namespace and vanish with it.
fn loss_rules(loss: &str) -> anyhow::Result<Vec<IptablesRule>> {
    let percent: f64 = loss
        .trim_end_matches('%')
        .parse()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
        .with_context(|| format!("--loss {loss:?}: give a percentage such as 1%"))?;
    let probability = format!("{:.4}", percent / 100.0);
    let rule = |chain: &str, direction: &str| IptablesRule {
        table: "mangle".into(),
        chain: chain.into(),
        spec: [direction, "eth0", "-m", "statistic", "--mode", "random"]
            .iter()
            .map(|s| s.to_string())
            .chain(["--probability".into(), probability.clone()])
            .chain([
                "-m".into(),
                "comment".into(),
                "--comment".into(),
                "skiff-lab-loss".into(),
            ])
            .chain(["-j".into(), "DROP".into()])
            .collect(),
    };
    Ok(vec![rule("PREROUTING", "-i"), rule("POSTROUTING", "-o")])
}

/// Removes whatever `netem` added (missing qdiscs, rules and delayers are fine).
pub fn clear_netem(host: &Host) -> anyhow::Result<()> {
    if let Some(pid) = host.netem.as_ref().and_then(|n| n.delayer) {
        end_delayer(pid);
    }
    let _ = run(
        "tc",
        &["-n", &host.netns, "qdisc", "del", "dev", "eth0", "root"],
    );
    let _ = run("tc", &["qdisc", "del", "dev", &host.veth, "root"]);
    let rules = in_netns(host, "iptables", &["-w", "-t", "mangle", "-S"]).unwrap_or_default();
    for line in rules
        .lines()
        .filter(|l| l.contains("skiff-lab-loss") || l.contains("skiff-lab-delay"))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["-A", chain, spec @ ..] = words.as_slice() {
            let mut args = vec!["-w", "-t", "mangle", "-D", chain];
            args.extend(spec.iter().map(|w| w.trim_matches('"')));
            in_netns(host, "iptables", &args)?;
        }
    }
    Ok(())
}

/// SIGKILLs the delayer, if `pid` still is one (the pid may have been reused after a reboot).
fn end_delayer(pid: u32) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    if words
        .windows(2)
        .any(|w| w == [b"lab".as_slice(), b"delayer".as_slice()])
    {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

/// Runs `program args` inside the host's network namespace.
fn in_netns(host: &Host, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let net = format!("--net={}", host.netns_path().display());
    let mut full = vec![net.as_str(), "--", program];
    full.extend(args);
    output("nsenter", &full)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACHINE: &str = "\
default via 192.0.2.1 dev eth0
10.200.0.0/24 dev sklaaaaaa proto kernel scope link src 10.200.0.1
10.200.1.0/24 dev sklbbbbbb proto kernel scope link src 10.200.1.1
192.0.2.0/24 dev eth0 proto kernel scope link src 192.0.2.2
unreachable 10.200.3.0/24
local 127.0.0.0/8 dev lo table local proto kernel scope host src 127.0.0.1
broadcast 127.255.255.255 dev lo table local proto kernel scope link src 127.0.0.1
";

    #[test]
    fn routes_are_read_from_every_table_without_the_default() {
        let routes = parse_routes(MACHINE);
        assert_eq!(routes.len(), 6);
        assert!(routes.contains(&Prefix::new(Ipv4Addr::new(10, 200, 3, 0), 24)));
        assert!(routes.contains(&Prefix::new(Ipv4Addr::new(127, 255, 255, 255), 32)));
        assert!(!routes.iter().any(|p| p.len == 0));
    }

    #[test]
    fn the_subnet_avoids_every_route() {
        let routes = parse_routes(MACHINE);
        // Starting at the first /24: .0 and .1 are other labs, .3 is unreachable.
        assert_eq!(
            choose_subnet(&routes, 0),
            Some(Ipv4Addr::new(10, 200, 2, 0))
        );
        assert_eq!(
            choose_subnet(&routes, 3),
            Some(Ipv4Addr::new(10, 200, 4, 0))
        );
        // The start comes from the lab id and wraps around the pool.
        assert_eq!(
            choose_subnet(&routes, 2047),
            Some(Ipv4Addr::new(10, 207, 255, 0))
        );
        assert_eq!(
            choose_subnet(&routes, 2048 + 5),
            Some(Ipv4Addr::new(10, 200, 5, 0))
        );
    }

    #[test]
    fn a_wide_route_covers_many_subnets() {
        let routes = parse_routes("10.200.0.0/16 dev wg0\n10.0.0.0/9 via 192.0.2.9 dev eth0\n");
        assert_eq!(
            choose_subnet(&routes, 0),
            Some(Ipv4Addr::new(10, 201, 0, 0))
        );
        // A route covering the whole pool leaves nothing.
        let all = parse_routes("10.0.0.0/8 dev tun0\n");
        assert_eq!(choose_subnet(&all, 0), None);
    }

    #[test]
    fn skiffs_own_ranges_are_never_chosen() {
        for (addr, len) in RESERVED {
            let reserved = Prefix::new(addr, len);
            for i in 0..POOL_SIZE {
                let candidate = Prefix::new(Ipv4Addr::from(u32::from(POOL_START) + i * 256), 24);
                assert!(!reserved.overlaps(&candidate));
            }
        }
        assert!(Prefix::new(Ipv4Addr::new(10, 42, 7, 0), 24)
            .overlaps(&Prefix::new(Ipv4Addr::new(10, 42, 0, 0), 16)));
    }

    #[test]
    fn loss_becomes_a_probability() {
        let rules = loss_rules("1%").expect("valid");
        assert!(rules[0].spec.contains(&"0.0100".to_string()));
        assert!(loss_rules("lots").is_err());
        assert!(loss_rules("120%").is_err());
    }
}

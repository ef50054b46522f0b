//! Reading what the kernel counts: a cgroup's CPU time and memory (v1 and v2 layouts), and the
//! node's totals from `/proc`.
//!
//! The parsers take a file's text and are pure (the tests need no files); the readers take the
//! root of the filesystem they read (`/sys/fs/cgroup`, `/proc`), so tests can build a tree in a
//! temporary directory. The numbers are the ones cAdvisor reads for kubelet:
//!
//! | what            | cgroup v1                                   | cgroup v2                   |
//! |-----------------|---------------------------------------------|-----------------------------|
//! | CPU time        | `cpuacct/<path>/cpuacct.usage` (ns)          | `<path>/cpu.stat` `usage_usec` |
//! | memory usage    | `memory/<path>/memory.usage_in_bytes`        | `<path>/memory.current`     |
//! | inactive files  | `memory.stat` `total_inactive_file`          | `memory.stat` `inactive_file` |
//! | RSS, page cache | `memory.stat` `total_rss`, `total_cache`     | `memory.stat` `anon`, `file` |
//!
//! The working set is usage less inactive file pages: memory the kernel cannot simply drop, the
//! figure kubelet evicts on and `kubectl top` shows.
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::cgroup::is_unified;

/// What a cgroup has used, as its files say. Either half may be missing (a v2 cgroup without
/// the memory controller, a hierarchy not mounted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupUsage {
    /// CPU time since the cgroup was made, in nanoseconds (all CPUs together).
    pub cpu_ns: Option<u64>,
    pub memory: Option<MemoryUsage>,
}

/// A cgroup's memory, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Everything charged to the cgroup, page cache included.
    pub usage: u64,
    /// `usage` less the inactive file pages (never below zero).
    pub working_set: u64,
    /// Anonymous memory (heap, stacks).
    pub rss: u64,
    /// Page cache.
    pub cache: u64,
}

/// The node's totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeUsage {
    /// CPU time spent not idle since boot, in nanoseconds (all CPUs together).
    pub cpu_ns: Option<u64>,
    pub memory: Option<NodeMemory>,
}

/// The node's memory, in bytes, from `/proc/meminfo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeMemory {
    /// `MemTotal`: what is installed (less what the kernel reserved at boot).
    pub total: u64,
    /// `MemAvailable`: what could be given to programs without swapping.
    pub available: u64,
}

impl NodeMemory {
    /// What is in use and cannot simply be reclaimed.
    pub fn working_set(&self) -> u64 {
        self.total.saturating_sub(self.available)
    }
}

/// The ticks `/proc/stat` counts in (`USER_HZ`). The kernel fixes it at 100 on every
/// architecture Linux exports to user space, whatever its internal `HZ`; the nix features the
/// workspace enables do not include `sysconf`, so it is not asked for.
const USER_HZ: u64 = 100;

/// v1 names the CPU accounting hierarchy `cpuacct`, or mounts it with `cpu` as `cpu,cpuacct`
/// (systemd then adds `cpuacct` as a link; not every setup does).
const V1_CPUACCT: [&str; 2] = ["cpuacct", "cpu,cpuacct"];

/// A counter file: one number.
pub fn parse_counter(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The values of `keys` in a flat-keyed file (`memory.stat`, `cpu.stat`: `key value` lines),
/// in one pass; a missing key is `None`.
pub fn stat_fields<const N: usize>(text: &str, keys: [&str; N]) -> [Option<u64>; N] {
    let mut values = [None; N];
    for line in text.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        if let Some(i) = keys.iter().position(|k| *k == key) {
            values[i] = value.trim().parse().ok();
        }
    }
    values
}

/// v2's CPU time: `usage_usec` of `cpu.stat`, in nanoseconds.
pub fn cpu_v2(cpu_stat: &str) -> Option<u64> {
    let [usec] = stat_fields(cpu_stat, ["usage_usec"]);
    usec.map(|us| us.saturating_mul(1_000))
}

/// v1's memory from `memory.usage_in_bytes` and `memory.stat` (the `total_` fields count the
/// cgroup's children too, as its usage does).
pub fn memory_v1(usage: u64, memory_stat: &str) -> MemoryUsage {
    let [inactive, rss, cache] = stat_fields(
        memory_stat,
        ["total_inactive_file", "total_rss", "total_cache"],
    );
    memory(usage, inactive, rss, cache)
}

/// v2's memory from `memory.current` and `memory.stat`.
pub fn memory_v2(current: u64, memory_stat: &str) -> MemoryUsage {
    let [inactive, anon, file] = stat_fields(memory_stat, ["inactive_file", "anon", "file"]);
    memory(current, inactive, anon, file)
}

fn memory(usage: u64, inactive: Option<u64>, rss: Option<u64>, cache: Option<u64>) -> MemoryUsage {
    MemoryUsage {
        usage,
        // Saturating: the two files are read at different moments, and cAdvisor clamps too.
        working_set: usage.saturating_sub(inactive.unwrap_or(0)),
        rss: rss.unwrap_or(0),
        cache: cache.unwrap_or(0),
    }
}

/// The node's busy CPU time in nanoseconds from `/proc/stat`'s first line (`cpu  user nice
/// system idle iowait irq softirq steal guest guest_nice`, in `USER_HZ` ticks): user + nice +
/// system + irq + softirq + steal. Idle and iowait are not use; guest time is already in user.
/// 1,000 ticks at 100 per second are 10 s, 10,000,000,000 ns.
pub fn node_cpu(proc_stat: &str) -> Option<u64> {
    let fields = proc_stat.lines().next()?.strip_prefix("cpu ")?;
    let mut ticks = 0u64;
    let mut count = 0;
    for (i, field) in fields.split_whitespace().enumerate() {
        let value: u64 = field.parse().ok()?;
        if matches!(i, 0 | 1 | 2 | 5 | 6 | 7) {
            ticks = ticks.saturating_add(value);
        }
        count += 1;
    }
    // Older kernels stop after iowait or softirq; fewer than user nice system idle is not
    // this file.
    (count >= 4).then(|| ticks.saturating_mul(1_000_000_000 / USER_HZ))
}

/// `MemTotal` and `MemAvailable` from `/proc/meminfo` (`MemTotal:  16303428 kB`), in bytes.
pub fn node_memory(meminfo: &str) -> Option<NodeMemory> {
    let (mut total, mut available) = (None, None);
    for line in meminfo.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut available,
            _ => continue,
        };
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        *slot = Some(kib.saturating_mul(1024));
        if total.is_some() && available.is_some() {
            break;
        }
    }
    Some(NodeMemory {
        total: total?,
        available: available?,
    })
}

/// Reads the files of one cgroup directory through one path and one text buffer, so a sample
/// of many containers allocates little beyond the text it reads.
struct Files {
    dir: PathBuf,
    text: String,
}

impl Files {
    fn at(dir: PathBuf) -> Files {
        Files {
            dir,
            text: String::new(),
        }
    }

    /// The text of `name` in the current directory; `None` if it cannot be read.
    fn read(&mut self, name: &str) -> Option<&str> {
        self.dir.push(name);
        self.text.clear();
        let read = File::open(&self.dir).and_then(|mut f| f.read_to_string(&mut self.text));
        self.dir.pop();
        read.ok().map(|_| self.text.as_str())
    }

    fn counter(&mut self, name: &str) -> Option<u64> {
        self.read(name).and_then(parse_counter)
    }

    /// Moves to `dir`, keeping the buffers.
    fn go(&mut self, dir: &Path) {
        self.dir.clear();
        self.dir.push(dir);
    }
}

/// What the cgroup at `cgroup` (a path in the hierarchy, `/skiff-k8s/pod<uid>/<id>`; `/` for
/// the root) has used, in the cgroup filesystem at `root`; `None` if no file of it could be
/// read.
pub fn read_cgroup(root: &Path, cgroup: &str) -> Option<CgroupUsage> {
    let relative = cgroup.trim_start_matches('/');
    let usage = if is_unified(root) {
        let mut files = Files::at(root.join(relative));
        let cpu_ns = files.read("cpu.stat").and_then(cpu_v2);
        let memory = files.counter("memory.current").map(|current| {
            let stat = files.read("memory.stat").unwrap_or("");
            memory_v2(current, stat)
        });
        CgroupUsage { cpu_ns, memory }
    } else {
        let mut files = Files::at(PathBuf::new());
        let cpu_ns = V1_CPUACCT.iter().find_map(|hierarchy| {
            files.go(&root.join(hierarchy).join(relative));
            files.counter("cpuacct.usage")
        });
        files.go(&root.join("memory").join(relative));
        let memory = files.counter("memory.usage_in_bytes").map(|usage| {
            let stat = files.read("memory.stat").unwrap_or("");
            memory_v1(usage, stat)
        });
        CgroupUsage { cpu_ns, memory }
    };
    (usage.cpu_ns.is_some() || usage.memory.is_some()).then_some(usage)
}

/// The node's CPU and memory from the proc filesystem at `proc_root` (`/proc`).
pub fn read_node(proc_root: &Path) -> NodeUsage {
    let mut files = Files::at(proc_root.to_path_buf());
    NodeUsage {
        cpu_ns: files.read("stat").and_then(node_cpu),
        memory: files.read("meminfo").and_then(node_memory),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_STAT: &str = "cache 4096\nrss 8192\ninactive_file 1\ntotal_cache 40960\n\
                           total_rss 81920\ntotal_inactive_file 10240\ntotal_active_file 30720\n";
    const V2_STAT: &str = "anon 81920\nfile 40960\nfile_mapped 4096\ninactive_file 10240\n\
                           active_file 30720\n";

    #[test]
    fn counters_and_stat_fields() {
        let cases: [(&str, Option<u64>); 4] = [
            ("25965205074595\n", Some(25_965_205_074_595)),
            ("  42 ", Some(42)),
            ("", None),
            ("max\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_counter(text), want, "{text:?}");
        }
        let cpu_stat = "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n";
        let cases: [(&str, Option<u64>); 3] = [
            (cpu_stat, Some(1_500_000_000)),
            ("user_usec 5\n", None),
            ("usage_usec x\n", None),
        ];
        for (text, want) in cases {
            assert_eq!(cpu_v2(text), want, "{text:?}");
        }
        // `file` is not `file_mapped`; `inactive_file` is not `total_inactive_file`.
        assert_eq!(
            stat_fields(V2_STAT, ["file", "inactive_file", "absent"]),
            [Some(40960), Some(10240), None]
        );
        assert_eq!(
            stat_fields(V1_STAT, ["inactive_file", "total_inactive_file"]),
            [Some(1), Some(10240)]
        );
    }

    #[test]
    fn working_set_is_usage_less_inactive_files() {
        let m = |usage, working_set, rss, cache| MemoryUsage {
            usage,
            working_set,
            rss,
            cache,
        };
        let cases = [
            // usage 200 KiB, inactive 10 KiB → working set 190 KiB
            (
                "v1",
                memory_v1(204_800, V1_STAT),
                m(204_800, 194_560, 81_920, 40_960),
            ),
            (
                "v2",
                memory_v2(204_800, V2_STAT),
                m(204_800, 194_560, 81_920, 40_960),
            ),
            // read a moment apart, inactive can exceed usage: zero, not a wrap-around
            (
                "v1 clamped",
                memory_v1(4_096, V1_STAT),
                m(4_096, 0, 81_920, 40_960),
            ),
            ("v2 no stat", memory_v2(4_096, ""), m(4_096, 4_096, 0, 0)),
        ];
        for (name, got, want) in cases {
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn node_cpu_sums_busy_ticks_from_proc_stat() {
        let cases: [(&str, &str, Option<u64>); 5] = [
            // user 100 + nice 0 + system 50 + irq 10 + softirq 30 + steal 10 = 200 ticks = 2 s;
            // idle 1000 and iowait 5 and guest 7 are not added.
            (
                "all fields",
                "cpu  100 0 50 1000 5 10 30 10 7 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n",
                Some(2_000_000_000),
            ),
            ("old kernel", "cpu  100 0 50 1000\n", Some(1_500_000_000)),
            ("per-cpu line first", "cpu0 1 2 3 4\n", None),
            ("garbage", "cpu  a b c d\n", None),
            ("empty", "", None),
        ];
        for (name, text, want) in cases {
            assert_eq!(node_cpu(text), want, "{name}");
        }
    }

    #[test]
    fn node_memory_from_meminfo() {
        let full = "MemTotal:       16303428 kB\nMemFree:         1000000 kB\n\
                    MemAvailable:    8000000 kB\nBuffers:  1 kB\n";
        let memory = |total, available| NodeMemory { total, available };
        let cases = [
            (
                "both",
                full,
                Some(memory(16_303_428 * 1024, 8_000_000 * 1024)),
            ),
            ("no MemAvailable", "MemTotal: 10 kB\n", None),
            ("empty", "", None),
        ];
        for (name, text, want) in cases {
            assert_eq!(node_memory(text), want, "{name}");
        }
        let used = node_memory(full).map(|m| m.working_set());
        assert_eq!(used, Some((16_303_428 - 8_000_000) * 1024));
    }

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).expect("dirs");
        for (name, text) in files {
            std::fs::write(dir.join(name), text).expect("write");
        }
    }

    #[test]
    fn reads_a_v1_cgroup_under_either_cpuacct_name() {
        for cpuacct in V1_CPUACCT {
            let root = tempfile::tempdir().expect("tempdir");
            let path = "/skiff-k8s/podu-1/c1";
            write(
                &root.path().join(cpuacct).join("skiff-k8s/podu-1/c1"),
                &[("cpuacct.usage", "1500000000\n")],
            );
            write(
                &root.path().join("memory/skiff-k8s/podu-1/c1"),
                &[
                    ("memory.usage_in_bytes", "204800\n"),
                    ("memory.stat", V1_STAT),
                ],
            );
            let usage = read_cgroup(root.path(), path).expect("usage");
            assert_eq!(usage.cpu_ns, Some(1_500_000_000), "{cpuacct}");
            assert_eq!(usage.memory.map(|m| m.working_set), Some(194_560));
            assert_eq!(read_cgroup(root.path(), "/skiff-k8s/podu-1/gone"), None);
        }
    }

    #[test]
    fn reads_a_v2_cgroup() {
        let root = tempfile::tempdir().expect("tempdir");
        write(root.path(), &[("cgroup.controllers", "cpu memory pids\n")]);
        write(
            &root.path().join("skiff-k8s/podu-1/c1"),
            &[
                ("cpu.stat", "usage_usec 1500000\nuser_usec 1000000\n"),
                ("memory.current", "204800\n"),
                ("memory.stat", V2_STAT),
            ],
        );
        // The memory controller not delegated: CPU only.
        write(
            &root.path().join("skiff-k8s/podu-1/c2"),
            &[("cpu.stat", "usage_usec 7\n")],
        );
        let usage = read_cgroup(root.path(), "/skiff-k8s/podu-1/c1").expect("usage");
        assert_eq!(usage.cpu_ns, Some(1_500_000_000));
        assert_eq!(
            usage.memory,
            Some(MemoryUsage {
                usage: 204_800,
                working_set: 194_560,
                rss: 81_920,
                cache: 40_960
            })
        );
        let cpu_only = read_cgroup(root.path(), "/skiff-k8s/podu-1/c2").expect("usage");
        assert_eq!((cpu_only.cpu_ns, cpu_only.memory), (Some(7_000), None));
        assert_eq!(read_cgroup(root.path(), "/skiff-k8s/podu-1/gone"), None);
    }

    #[test]
    fn reads_the_node_from_a_proc_tree() {
        let proc_root = tempfile::tempdir().expect("tempdir");
        write(
            proc_root.path(),
            &[
                ("stat", "cpu  100 0 50 1000 5 10 30 10 0 0\n"),
                ("meminfo", "MemTotal: 1000 kB\nMemAvailable: 400 kB\n"),
            ],
        );
        let node = read_node(proc_root.path());
        assert_eq!(node.cpu_ns, Some(2_000_000_000));
        assert_eq!(node.memory.map(|m| m.working_set()), Some(600 * 1024));
    }

    /// This machine's own cgroups and /proc, through the same readers: every layout present
    /// must give numbers above zero, and at least one layout must be present (a machine with
    /// neither is not one skiff runs on, so the test fails rather than skips).
    #[test]
    fn reads_this_machines_cgroups_and_proc() {
        let sys = Path::new("/sys/fs/cgroup");
        let mut checked = Vec::new();
        if sys.join("memory/memory.usage_in_bytes").exists() {
            // v1 (or hybrid): the root cgroup of the cpuacct and memory hierarchies.
            let usage = read_cgroup(sys, "/").expect("the v1 root cgroup");
            assert!(usage.cpu_ns.is_some_and(|n| n > 0), "{usage:?}");
            let memory = usage.memory.expect("v1 root memory");
            assert!(memory.usage > 0 && memory.working_set > 0, "{memory:?}");
            checked.push("v1");
        }
        for v2 in [sys.to_path_buf(), sys.join("unified")] {
            if is_unified(&v2) {
                // The root of a v2 tree has cpu.stat but no memory.current.
                let usage = read_cgroup(&v2, "/").expect("the v2 root cgroup");
                assert!(usage.cpu_ns.is_some_and(|n| n > 0), "{usage:?}");
                checked.push("v2");
            }
        }
        assert!(
            !checked.is_empty(),
            "no cgroup v1 or v2 found under {sys:?}"
        );
        let node = read_node(Path::new("/proc"));
        assert!(node.cpu_ns.is_some_and(|n| n > 0), "{node:?}");
        let memory = node.memory.expect("/proc/meminfo");
        assert!(memory.total > memory.available && memory.available > 0);
    }
}

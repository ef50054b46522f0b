//! The pod's cgroup: every container of a pod runs in a cgroup below one per pod, as kubelet
//! arranges it (`/<parent>/pod<uid>/<container>`), so a limit on the pod — the pids limit of
//! `--pod-max-pids` — holds for all its containers together. runc creates the containers'
//! cgroups (cgroupfs driver) and removes them with the task; the pod's own cgroup is made and
//! removed here. Both cgroup v1 (a hierarchy per controller) and the unified v2 tree.
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};

/// The pod cgroups of one agent (one containerd namespace), under a cgroup filesystem root.
#[derive(Debug, Clone)]
pub struct PodCgroups {
    root: PathBuf,
    parent: String,
}

const POD_PREFIX: &str = "pod";

impl PodCgroups {
    /// Pod cgroups under `/<parent>` in the cgroup filesystem at `root` (`/sys/fs/cgroup`).
    pub fn new(root: impl Into<PathBuf>, parent: &str) -> PodCgroups {
        PodCgroups {
            root: root.into(),
            parent: parent.to_string(),
        }
    }

    fn unified(&self) -> bool {
        is_unified(&self.root)
    }

    /// The pod's cgroup as a path in the hierarchy (a prefix of its containers' `cgroupsPath`).
    pub fn pod_path(&self, pod_uid: &str) -> String {
        format!("/{}/{POD_PREFIX}{pod_uid}", self.parent)
    }

    /// The container's `cgroupsPath` for runc.
    pub fn container_path(&self, pod_uid: &str, id: &str) -> String {
        format!("{}/{id}", self.pod_path(pod_uid))
    }

    /// What the container's cgroup has used so far (CPU and memory), from its files in either
    /// layout; `None` when it has no cgroup (gone, or not made by runc yet).
    pub fn usage(&self, pod_uid: &str, id: &str) -> Option<crate::stats::CgroupUsage> {
        crate::stats::cgroupfs::read_cgroup(&self.root, &self.container_path(pod_uid, id))
    }

    /// The pod's directory in the pids controller's hierarchy.
    fn pids_dir(&self, pod_uid: &str) -> PathBuf {
        let relative = self.pod_path(pod_uid);
        let relative = relative.trim_start_matches('/');
        if self.unified() {
            self.root.join(relative)
        } else {
            self.root.join("pids").join(relative)
        }
    }

    /// Makes the pod's cgroup (idempotent) and sets its pids limit (`None`: no limit).
    pub fn create(&self, pod_uid: &str, pids_limit: Option<i64>) -> io::Result<()> {
        let dir = self.pids_dir(pod_uid);
        std::fs::create_dir_all(&dir)?;
        if self.unified() {
            // A controller is usable in a v2 cgroup only if every ancestor delegates it.
            enable_pids(&self.root)?;
            enable_pids(&self.root.join(&self.parent))?;
        }
        let limit = pids_limit.map_or_else(|| "max".to_string(), |n| n.to_string());
        std::fs::write(dir.join("pids.max"), limit)
    }

    /// Removes the pod's cgroup from every hierarchy, and whatever empty container cgroups are
    /// left below it. A cgroup that still has processes stays (`Err` names it); gone is fine.
    pub fn remove(&self, pod_uid: &str) -> io::Result<()> {
        let relative = self.pod_path(pod_uid);
        let relative = relative.trim_start_matches('/');
        let mut busy = None;
        for hierarchy in self.hierarchies() {
            let dir = hierarchy.join(relative);
            if let Err(e) = remove_tree(&dir) {
                busy.get_or_insert(io::Error::new(
                    e.kind(),
                    format!("removing cgroup {}: {e}", dir.display()),
                ));
            }
        }
        busy.map_or(Ok(()), Err)
    }

    /// The pod uids that have a cgroup here (pods deleted while the agent was down leave them).
    pub fn list(&self) -> Vec<String> {
        let mut uids: Vec<String> = self
            .hierarchies()
            .into_iter()
            .filter_map(|h| std::fs::read_dir(h.join(&self.parent)).ok())
            .flat_map(|entries| entries.flatten())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix(POD_PREFIX))
                    .map(str::to_string)
            })
            .collect();
        uids.sort();
        uids.dedup();
        uids
    }

    /// Whether the kernel OOM-killed a process of the container (read before runc removes the
    /// cgroup): v1's `memory.oom_control`, v2's `memory.events`.
    pub fn oom_killed(&self, id: &str) -> bool {
        let (memory, file, key) = if self.unified() {
            (self.root.join(&self.parent), "memory.events", "oom_kill ")
        } else {
            (
                self.root.join("memory").join(&self.parent),
                "memory.oom_control",
                "oom_kill ",
            )
        };
        let Ok(pods) = std::fs::read_dir(&memory) else {
            return false;
        };
        pods.flatten()
            .map(|pod| pod.path().join(id).join(file))
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .any(|text| {
                text.lines().any(|l| {
                    l.strip_prefix(key)
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .is_some_and(|n| n > 0)
                })
            })
    }

    /// The directories a cgroup path is found under: the root on v2, each controller's
    /// hierarchy on v1 (`cpu` and `cpuacct` may be links to one: removing twice is harmless).
    fn hierarchies(&self) -> Vec<PathBuf> {
        if self.unified() {
            return vec![self.root.clone()];
        }
        std::fs::read_dir(&self.root)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Whether the cgroup filesystem at `root` is v2 (one tree with every controller) rather than
/// v1 (a directory per controller). A hybrid machine mounts v1 at `/sys/fs/cgroup` and v2 at
/// `/sys/fs/cgroup/unified`: its root counts as v1, which is where runc puts the controllers.
pub(crate) fn is_unified(root: &Path) -> bool {
    root.join("cgroup.controllers").exists()
}

fn enable_pids(dir: &Path) -> io::Result<()> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&control).unwrap_or_default();
    if enabled.split_whitespace().any(|c| c == "pids") {
        return Ok(());
    }
    std::fs::write(control, "+pids")
}

/// `rmdir` bottom-up: a cgroup directory's files cannot be removed, only the directory once its
/// children are gone and it holds no process.
fn remove_tree(dir: &Path) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v1 layout in a temporary directory (plain files stand in for the kernel's).
    fn v1() -> (tempfile::TempDir, PodCgroups) {
        let root = tempfile::tempdir().expect("tempdir");
        for controller in ["pids", "memory", "cpu,cpuacct"] {
            std::fs::create_dir_all(root.path().join(controller)).expect("hierarchy");
        }
        let cgroups = PodCgroups::new(root.path(), "skiff-k8s");
        (root, cgroups)
    }

    #[test]
    fn pods_get_a_cgroup_with_their_pids_limit_below_the_parent() {
        let (root, cgroups) = v1();
        assert_eq!(cgroups.container_path("u-1", "c1"), "/skiff-k8s/podu-1/c1");
        cgroups.create("u-1", Some(64)).expect("create");
        let max = root.path().join("pids/skiff-k8s/podu-1/pids.max");
        assert_eq!(std::fs::read_to_string(&max).expect("pids.max"), "64");
        cgroups.create("u-1", None).expect("again");
        assert_eq!(std::fs::read_to_string(&max).expect("pids.max"), "max");
        assert_eq!(cgroups.list(), ["u-1"]);
    }

    #[test]
    fn removing_a_pod_takes_its_cgroup_from_every_hierarchy() {
        let (root, cgroups) = v1();
        for h in ["pids", "memory", "cpu,cpuacct"] {
            std::fs::create_dir_all(root.path().join(h).join("skiff-k8s/podu-2/c1")).expect("dirs");
        }
        std::fs::create_dir_all(root.path().join("pids/skiff-k8s/podu-3")).expect("other");
        cgroups.remove("u-2").expect("remove");
        cgroups.remove("u-2").expect("gone is fine");
        assert_eq!(cgroups.list(), ["u-3"]);
        assert!(root.path().join("memory/skiff-k8s").exists());
    }

    #[test]
    fn oom_kills_are_read_from_the_containers_memory_cgroup() {
        let (root, cgroups) = v1();
        let dir = root.path().join("memory/skiff-k8s/podu-4");
        std::fs::create_dir_all(dir.join("killed")).expect("dirs");
        std::fs::create_dir_all(dir.join("fine")).expect("dirs");
        std::fs::write(
            dir.join("killed/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .expect("write");
        std::fs::write(
            dir.join("fine/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        )
        .expect("write");
        assert!(cgroups.oom_killed("killed"));
        assert!(!cgroups.oom_killed("fine"));
        assert!(!cgroups.oom_killed("unknown"));
    }

    #[test]
    fn v2_delegates_the_pids_controller_down_to_the_pod() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory pids").expect("v2");
        let cgroups = PodCgroups::new(root.path(), "skiff-k8s");
        cgroups.create("u-5", Some(10)).expect("create");
        let control = |p: &str| {
            std::fs::read_to_string(root.path().join(p).join("cgroup.subtree_control"))
                .expect("subtree_control")
        };
        assert_eq!(control(""), "+pids");
        assert_eq!(control("skiff-k8s"), "+pids");
        assert_eq!(
            std::fs::read_to_string(root.path().join("skiff-k8s/podu-5/pids.max"))
                .expect("pids.max"),
            "10"
        );
    }
}

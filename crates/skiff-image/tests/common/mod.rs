//! A real containerd for one test: its own root, state and socket under a temp dir, the CRI
//! plugin off, stopped and cleaned up when the guard drops — also when the test panics.
use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use skiff_image::Channel;

const CONTAINERD: &str = "/usr/bin/containerd";

/// A containerd process this test started, and the directory it lives in.
pub struct TestContainerd {
    pub channel: Channel,
    /// Field order matters: the process stops (its Drop runs) before the directory goes.
    process: ContainerdProcess,
}

struct ContainerdProcess {
    child: Child,
    dir: tempfile::TempDir,
}

impl TestContainerd {
    /// Starts containerd and waits until its socket answers.
    pub async fn start() -> TestContainerd {
        let dir = tempfile::Builder::new()
            .prefix("skiff-image-test-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path();
        let socket = root.join("containerd.sock");
        let config = root.join("config.toml");
        fs::write(
            &config,
            format!(
                r#"version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"
"#,
                root = root.display(),
                socket = socket.display(),
            ),
        )
        .expect("write containerd config");
        let log = File::create(root.join("containerd.log")).expect("create log");
        let child = Command::new(CONTAINERD)
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        // From here on the guard owns the process: a panic below still stops it.
        let mut process = ContainerdProcess { child, dir };

        let deadline = Instant::now() + Duration::from_secs(20);
        let channel = loop {
            if let Some(status) = process.child.try_wait().expect("poll containerd") {
                panic!("containerd exited early ({status}):\n{}", process.log());
            }
            if socket.exists() {
                if let Ok(channel) = containerd_client::connect(&socket).await {
                    break channel;
                }
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not start:\n{}",
                process.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        TestContainerd { channel, process }
    }

    /// The directory holding root, state and socket.
    pub fn dir(&self) -> &Path {
        self.process.dir.path()
    }
}

impl ContainerdProcess {
    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for ContainerdProcess {
    fn drop(&mut self) {
        // SIGTERM first, so containerd shuts its plugins down cleanly; SIGKILL if it hangs.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            eprintln!("--- containerd log (last lines) ---\n{}", tail.join("\n"));
        }
        // containerd unmounts what it mounts, but if a crash left something behind, deleting
        // the directory would reach through the mount: detach everything under it first.
        for line in mounts_mentioning(self.dir.path()).into_iter().rev() {
            eprintln!("unmounting leftover: {line}");
            if let Some(target) = line.split_whitespace().nth(1) {
                let _ = umount2(Path::new(target), MntFlags::MNT_DETACH);
            }
        }
        // `dir` (TempDir) removes the directory when this struct's fields drop, next.
    }
}

/// Lines of /proc/mounts that mention `dir` anywhere (mount point, source or options such
/// as an overlay's `lowerdir=`): the test's "grep <dir> /proc/mounts".
pub fn mounts_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(&needle))
        .map(str::to_string)
        .collect()
}

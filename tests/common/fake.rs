//! FAKE node agents (`skiff agent --runtime fake`): processes that register a Node and report
//! pods Running without running anything. For tests of the scheduler, controllers and kubectl
//! that need nodes but not containers; never a stand-in for containerd where users have it.

use std::process::{Child, Command, Stdio};

use super::{Client, Server};

/// A FAKE agent process (runs nothing; simulates a node) and its data dir.
pub struct FakeAgent(Child, std::path::PathBuf);

impl FakeAgent {
    pub fn start(server: &Server, dir: &std::path::Path, name: &str) -> FakeAgent {
        let token = std::fs::read_to_string(server.dir.join("node-token")).expect("node token");
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args([
                "agent",
                "--runtime",
                "fake",
                "--server",
                &server.url(),
                "--token",
                token.trim(),
            ])
            .arg("--data-dir")
            .arg(dir.join(name))
            .args(["--node-name", name, "--kubelet-port", "0"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("skiff agent");
        FakeAgent(child, dir.join(name))
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for FakeAgent {
    /// Stops the agent and unmounts what it mounted (pods' in-memory volumes are real tmpfs
    /// mounts even on a simulated node), deepest first, so its directory can go.
    fn drop(&mut self) {
        self.kill();
        let dir = self.1.display().to_string();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mountinfo
            .lines()
            .filter_map(|line| line.split_whitespace().nth(4))
            .filter(|point| point.starts_with(&format!("{dir}/")))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = Command::new("umount").args(["-l", point]).status();
        }
    }
}

/// A server with one FAKE agent named `node`; the directory lives as long as the first value.
pub fn one_simulated_node(node: &str) -> (tempfile::TempDir, Server, Client, FakeAgent) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("s"));
    let client = server.wait_ready();
    let agent = FakeAgent::start(&server, dir.path(), node);
    (dir, server, client, agent)
}

//! FAKE node agents (`skiff agent --runtime fake`): processes that register a Node and report
//! pods Running without running anything. For tests of the scheduler, controllers and kubectl
//! that need nodes but not containers; never a stand-in for containerd where users have it.

use std::process::{Child, Command, Stdio};

use super::{Client, Server};

/// A FAKE agent process (runs nothing; simulates a node).
pub struct FakeAgent(Child);

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
        FakeAgent(child)
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.kill();
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

//! A FAKE runtime, for unit tests and for simulating many nodes on one machine
//! (`skiff agent --runtime fake`). It runs nothing: "containers" start at once, run until
//! stopped, and pods get made-up IPs. Never use it to run real workloads. It keeps the default
//! [`Runtime::usage`] (no cgroups, nothing measured), so simulated nodes report no pod metrics.
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use crate::runtime::{
    ContainerConfig, ContainerRecord, ContainerState, ImageInfo, Runtime, RuntimeError, Sandbox,
    SandboxConfig,
};

struct FakeContainer {
    record: ContainerRecord,
    /// Turns `Some(state)` when the container "exits".
    exit: watch::Sender<Option<ContainerState>>,
}

/// The fake runtime. `ip_prefix` (e.g. `10.99.3`) makes pod IPs `10.99.3.N`.
pub struct FakeRuntime {
    ip_prefix: String,
    next_ip: AtomicU32,
    containers: Mutex<HashMap<String, FakeContainer>>,
    sandboxes: Mutex<HashMap<String, String>>,
    /// Pods (by uid) whose network teardown fails (tests of cleanup errors).
    failing_teardowns: Mutex<HashSet<String>>,
}

impl FakeRuntime {
    pub fn new(ip_prefix: &str) -> FakeRuntime {
        FakeRuntime {
            ip_prefix: ip_prefix.to_string(),
            next_ip: AtomicU32::new(2),
            containers: Mutex::new(HashMap::new()),
            sandboxes: Mutex::new(HashMap::new()),
            failing_teardowns: Mutex::new(HashSet::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, FakeContainer>> {
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a fake container exit with `code` (tests use it to drive restarts).
    pub fn exit(&self, id: &str, code: i32) {
        if let Some(c) = self.lock().get(id) {
            let _ = c.exit.send(Some(ContainerState::Exited {
                exit_code: code,
                started_at: None,
                finished_at: Timestamp::now(),
                oom_killed: false,
            }));
        }
    }

    /// Makes every teardown of `pod_uid`'s network fail (tests use it to check that cleanup
    /// errors are reported).
    pub fn fail_teardown(&self, pod_uid: &str) {
        self.failing_teardowns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pod_uid.to_string());
    }

    /// How many fake containers exist (tests check cleanup with it).
    pub fn container_count(&self) -> usize {
        self.lock().len()
    }
}

impl Runtime for FakeRuntime {
    async fn ensure_image(&self, image: &str, _pull: bool) -> Result<ImageInfo, RuntimeError> {
        if image.contains("missing") {
            return Err(RuntimeError::ImageNotFound(format!(
                "fake: no image {image}"
            )));
        }
        Ok(ImageInfo {
            name: image.to_string(),
            id: format!("{image}@sha256:fake"),
        })
    }

    async fn setup_sandbox(&self, pod: &SandboxConfig) -> Result<Sandbox, RuntimeError> {
        let mut sandboxes = self.sandboxes.lock().unwrap_or_else(|e| e.into_inner());
        let ip = sandboxes
            .entry(pod.pod_uid.clone())
            .or_insert_with(|| {
                let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
                format!("{}.{}.{}", self.ip_prefix, n / 250, n % 250 + 2)
            })
            .clone();
        Ok(Sandbox {
            ip: Some(ip),
            netns: None,
        })
    }

    async fn teardown_sandbox(&self, pod_uid: &str) -> Result<(), RuntimeError> {
        let failing = self
            .failing_teardowns
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if failing.contains(pod_uid) {
            return Err(RuntimeError::Failed(format!(
                "fake: cannot remove {pod_uid}'s network"
            )));
        }
        drop(failing);
        self.sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(pod_uid);
        Ok(())
    }

    async fn start_container(&self, config: &ContainerConfig) -> Result<String, RuntimeError> {
        let id = format!("fake-{}-{}-{}", config.pod_uid, config.name, config.attempt);
        let (exit, _) = watch::channel(None);
        let record = ContainerRecord {
            id: id.clone(),
            pod_uid: config.pod_uid.clone(),
            pod_namespace: config.namespace.clone(),
            pod_name: config.pod_name.clone(),
            container_name: config.name.clone(),
            attempt: config.attempt,
            state: ContainerState::Running {
                started_at: Timestamp::now(),
            },
            image: config.image.clone(),
            image_id: format!("{}@sha256:fake", config.image),
            log_path: PathBuf::new(),
        };
        self.lock()
            .insert(id.clone(), FakeContainer { record, exit });
        Ok(id)
    }

    async fn wait(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let mut rx = match self.lock().get(id) {
            Some(c) => c.exit.subscribe(),
            None => {
                return Ok(ContainerState::Exited {
                    exit_code: 255,
                    started_at: None,
                    finished_at: Timestamp::now(),
                    oom_killed: false,
                })
            }
        };
        loop {
            if let Some(state) = rx.borrow_and_update().clone() {
                return Ok(state);
            }
            if rx.changed().await.is_err() {
                // Removed while waited on.
                return Ok(ContainerState::Exited {
                    exit_code: 137,
                    started_at: None,
                    finished_at: Timestamp::now(),
                    oom_killed: false,
                });
            }
        }
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        // A fake process "handles" SIGTERM at once.
        self.exit(id, 0);
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.lock().remove(id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ContainerRecord>, RuntimeError> {
        Ok(self
            .lock()
            .values()
            .map(|c| {
                let mut record = c.record.clone();
                if let Some(state) = c.exit.borrow().clone() {
                    record.state = state;
                }
                record
            })
            .collect())
    }

    async fn list_sandboxes(&self) -> Result<Vec<String>, RuntimeError> {
        Ok(self
            .sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect())
    }

    /// Simulated containers run no processes: every command "succeeds" with no output.
    async fn exec_sync(
        &self,
        _id: &str,
        _command: &[String],
        _timeout: std::time::Duration,
    ) -> Result<(i32, String), RuntimeError> {
        Ok((0, String::new()))
    }
}

//! `kubectl exec`: a new process in a running container (containerd's Tasks.Exec).
//!
//! The sequence reference/containerd.md gives: FIFOs for the process's stdio (opened on our
//! side first), `Tasks.Exec` with the process spec (the container's env, cwd and user, the
//! command asked for), `Tasks.Wait` *before* `Tasks.Start` so a fast exit is not missed, and
//! `DeleteProcess` at the end. With a TTY there is one output stream (stdout) and the terminal
//! size can change (`ResizePty`).
use std::path::PathBuf;

use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, GetContainerRequest,
    ResizePtyRequest, StartRequest, WaitRequest,
};
use serde_json::{json, Value};
use tokio::net::unix::pipe;

use super::{grpc, ContainerdRuntime};
use crate::runtime::{labels, RuntimeError};

const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// What to run.
#[derive(Debug, Clone)]
pub struct ExecRequest {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
}

/// Which exec process (for resizing, closing stdin, cleaning up).
#[derive(Debug, Clone)]
pub struct ExecHandle {
    pub container_id: String,
    pub exec_id: String,
    fifo_dir: PathBuf,
}

/// A started exec: its stdio and how to wait for it.
pub struct ExecSession {
    pub handle: ExecHandle,
    pub stdin: Option<pipe::Sender>,
    pub stdout: pipe::Receiver,
    /// None with a TTY (the terminal merges the streams).
    pub stderr: Option<pipe::Receiver>,
    /// Resolves with the exit code.
    pub exit: tokio::task::JoinHandle<Result<i32, RuntimeError>>,
}

impl ContainerdRuntime {
    /// The running container of `pod`'s `container` (the newest attempt).
    pub async fn find_container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
    ) -> Result<String, RuntimeError> {
        use crate::runtime::{ContainerState, Runtime};
        let records = self.list().await?;
        records
            .into_iter()
            .filter(|r| {
                r.pod_namespace == namespace
                    && r.pod_name == pod
                    && r.container_name == container
                    && matches!(r.state, ContainerState::Running { .. })
            })
            .max_by_key(|r| r.attempt)
            .map(|r| r.id)
            .ok_or_else(|| {
                RuntimeError::Failed(format!(
                    "container {container} of pod {namespace}/{pod} is not running on this node"
                ))
            })
    }

    /// Starts `request.command` in the container.
    pub async fn exec(&self, request: &ExecRequest) -> Result<ExecSession, RuntimeError> {
        let container_id = self
            .find_container(&request.namespace, &request.pod, &request.container)
            .await?;
        self.exec_in(container_id, &request.command, request.tty, request.stdin)
            .await
    }

    /// Runs `command` in the container to completion (exec probes): its exit code and up to
    /// 10 KiB of its output. A process still running at `timeout` is an error.
    pub async fn exec_to_end(
        &self,
        container_id: &str,
        command: &[String],
        timeout: std::time::Duration,
    ) -> Result<(i32, String), RuntimeError> {
        let session = self
            .exec_in(container_id.to_string(), command, false, false)
            .await?;
        let handle = session.handle.clone();
        let (exited, _) = tokio::sync::watch::channel(false);
        let readers: Vec<_> = std::iter::once(session.stdout)
            .chain(session.stderr)
            .map(|pipe| tokio::spawn(keep_reading(pipe, exited.subscribe())))
            .collect();
        let outcome = tokio::time::timeout(timeout, session.exit).await;
        let _ = exited.send(true);
        let mut output = Vec::new();
        for reader in readers {
            output.extend(reader.await.unwrap_or_default());
        }
        self.finish(&handle);
        match outcome {
            Ok(Ok(Ok(code))) => Ok((code, String::from_utf8_lossy(&output).into_owned())),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(e)) => Err(RuntimeError::Failed(e.to_string())),
            Err(_) => Err(RuntimeError::Failed(format!(
                "command timed out after {}s",
                timeout.as_secs()
            ))),
        }
    }

    async fn exec_in(
        &self,
        container_id: String,
        command: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<ExecSession, RuntimeError> {
        let request = ExecRequest {
            namespace: String::new(),
            pod: String::new(),
            container: String::new(),
            command: command.to_vec(),
            tty,
            stdin,
        };
        // The container's own process settings are the base: env, cwd, user.
        let container = self
            .containers()
            .get(self.req(GetContainerRequest {
                id: container_id.clone(),
            }))
            .await
            .map_err(grpc("Containers.Get"))?
            .into_inner()
            .container
            .ok_or_else(|| RuntimeError::Failed("container without a record".into()))?;
        let spec: Value = container
            .spec
            .as_ref()
            .and_then(|any| serde_json::from_slice(&any.value).ok())
            .unwrap_or(Value::Null);
        let base = &spec["process"];
        let process = json!({
            "terminal": request.tty,
            "user": base.get("user").cloned().unwrap_or(json!({"uid": 0, "gid": 0})),
            "args": request.command,
            "env": base.get("env").cloned().unwrap_or(json!([])),
            "cwd": base.get("cwd").cloned().unwrap_or(json!("/")),
            "capabilities": base.get("capabilities").cloned().unwrap_or(Value::Null),
            "noNewPrivileges": base.get("noNewPrivileges").cloned().unwrap_or(json!(true)),
        });
        let _ = container.labels.get(labels::POD_UID);

        let exec_id = format!("exec-{}", uuid_like());
        let fifo_dir = self.fifo_dir.join(&container_id).join(&exec_id);
        std::fs::create_dir_all(&fifo_dir).map_err(|e| RuntimeError::Failed(e.to_string()))?;
        let make = |name: &str| -> Result<PathBuf, RuntimeError> {
            let path = fifo_dir.join(name);
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| RuntimeError::Failed(format!("mkfifo: {e}")))?;
            Ok(path)
        };
        let stdout_path = make("stdout")?;
        let stderr_path = if request.tty {
            None
        } else {
            Some(make("stderr")?)
        };
        let stdin_path = if request.stdin {
            Some(make("stdin")?)
        } else {
            None
        };
        let open_rx = |p: &PathBuf| {
            pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(p)
                .map_err(|e| RuntimeError::Failed(e.to_string()))
        };
        let stdout = open_rx(&stdout_path)?;
        let stderr = stderr_path.as_ref().map(open_rx).transpose()?;
        let stdin = match &stdin_path {
            Some(p) => Some(
                pipe::OpenOptions::new()
                    .read_write(true)
                    .open_sender(p)
                    .map_err(|e| RuntimeError::Failed(e.to_string()))?,
            ),
            None => None,
        };
        let text = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        };
        self.tasks()
            .exec(
                self.req(ExecProcessRequest {
                    container_id: container_id.clone(),
                    stdin: text(&stdin_path),
                    stdout: stdout_path.display().to_string(),
                    stderr: text(&stderr_path),
                    terminal: request.tty,
                    spec: Some(prost_types::Any {
                        type_url: PROCESS_TYPE.into(),
                        value: serde_json::to_vec(&process)
                            .map_err(|e| RuntimeError::Failed(e.to_string()))?,
                    }),
                    exec_id: exec_id.clone(),
                }),
            )
            .await
            .map_err(grpc("Tasks.Exec"))?;
        // Wait first, then start: a process that exits at once is still seen.
        let mut tasks = self.tasks();
        let wait = self.req(WaitRequest {
            container_id: container_id.clone(),
            exec_id: exec_id.clone(),
        });
        let waiting = tokio::spawn(async move { tasks.wait(wait).await });
        tokio::task::yield_now().await;
        self.tasks()
            .start(self.req(StartRequest {
                container_id: container_id.clone(),
                exec_id: exec_id.clone(),
            }))
            .await
            .map_err(grpc("Tasks.Start"))?;
        let mut tasks = self.tasks();
        let delete = self.req(DeleteProcessRequest {
            container_id: container_id.clone(),
            exec_id: exec_id.clone(),
        });
        let exit = tokio::spawn(async move {
            let code = match waiting.await {
                Ok(Ok(r)) => r.into_inner().exit_status as i32,
                Ok(Err(s)) => return Err(grpc("Tasks.Wait")(s)),
                Err(e) => return Err(RuntimeError::Failed(e.to_string())),
            };
            let _ = tasks.delete_process(delete).await;
            Ok(code)
        });
        Ok(ExecSession {
            handle: ExecHandle {
                container_id,
                exec_id,
                fifo_dir,
            },
            stdin,
            stdout,
            stderr,
            exit,
        })
    }

    /// Changes the terminal size of an exec with a TTY.
    pub async fn resize(&self, session: &ExecHandle, width: u32, height: u32) {
        let _ = self
            .tasks()
            .resize_pty(self.req(ResizePtyRequest {
                container_id: session.container_id.clone(),
                exec_id: session.exec_id.clone(),
                width,
                height,
            }))
            .await;
    }

    /// Tells the process its stdin ended.
    pub async fn close_stdin(&self, session: &ExecHandle) {
        let _ = self
            .tasks()
            .close_io(self.req(CloseIoRequest {
                container_id: session.container_id.clone(),
                exec_id: session.exec_id.clone(),
                stdin: true,
            }))
            .await;
    }

    /// Removes the exec's FIFOs.
    pub fn finish(&self, session: &ExecHandle) {
        let _ = std::fs::remove_dir_all(&session.fifo_dir);
    }
}

/// Reads a process's output pipe, keeping the first 10 KiB, until the process has exited and
/// the pipe is empty. (Our end is opened read-write, so it never reports end-of-file.)
async fn keep_reading(
    mut pipe: pipe::Receiver,
    mut exited: tokio::sync::watch::Receiver<bool>,
) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let done = *exited.borrow();
        let read = if done {
            match tokio::time::timeout(std::time::Duration::from_millis(20), pipe.read(&mut buf))
                .await
            {
                Ok(read) => read,
                Err(_) => return kept,
            }
        } else {
            tokio::select! {
                read = pipe.read(&mut buf) => read,
                _ = exited.changed() => continue,
            }
        };
        match read {
            Ok(n) if n > 0 => {
                let room = (10 * 1024usize).saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            _ => return kept,
        }
    }
}

/// A short unique id (time and a counter; exec ids only need to be unique per container).
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = jiff::Timestamp::now().as_nanosecond();
    format!("{:x}{n:x}", t & 0xffff_ffff_ffff)
}

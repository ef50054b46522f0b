//! A `skiff lab` for end-to-end tests: real hosts in network namespaces, each with its own
//! skiff and containerd, removed with `skiff lab down` on drop (also when the test fails, after
//! printing the end of every host's log).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The busybox applets the lab's image links: a web server whose CGI script answers with the
/// caller's address, and the tools a test runs inside pods.
const APPLETS: [&str; 12] = [
    "sh", "httpd", "echo", "cat", "sleep", "wget", "timeout", "nslookup", "hostname", "ls", "true",
    "env",
];

pub const IMAGE: &str = "skiff.local/lab:1.0";

pub struct Lab {
    /// Holds the lab dir and the image; removed after `lab down`.
    _root: tempfile::TempDir,
    pub dir: PathBuf,
    down: bool,
}

fn skiff() -> Command {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
}

/// Packs the lab image: `httpd` on 8080 serving `/` (the pod's host name) and
/// `/cgi-bin/peer` (the address the request came from).
fn pack_lab_image(images: &Path) {
    let rootfs = images.with_extension("rootfs");
    for dir in ["bin", "var/www/cgi-bin", "tmp"] {
        std::fs::create_dir_all(rootfs.join(dir)).expect("rootfs");
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("busybox-static");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).expect("symlink");
    }
    std::fs::write(rootfs.join("var/www/index.html"), "lab\n").expect("page");
    let cgi = rootfs.join("var/www/cgi-bin/peer");
    std::fs::write(
        &cgi,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"$REMOTE_ADDR\"\n",
    )
    .expect("cgi");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cgi, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::create_dir_all(images).expect("images dir");
    let status = skiff()
        .args(["image", "pack", "--rootfs"])
        .arg(&rootfs)
        .args(["--entrypoint", "/bin/httpd"])
        .args(["--cmd", "-f", "--cmd", "-p", "--cmd", "8080", "--cmd", "-h"])
        .args(["--cmd", "/var/www", "--port", "8080", "--tag", IMAGE, "-o"])
        .arg(images.join("lab.tar"))
        .status()
        .expect("skiff image pack");
    assert!(status.success(), "skiff image pack failed");
}

impl Lab {
    /// `skiff lab up --hosts N --servers M [extra...]` with the lab image on every host.
    pub fn up(hosts: usize, servers: usize, extra: &[&str]) -> Lab {
        let root = tempfile::tempdir().expect("temp dir");
        let images = root.path().join("images");
        pack_lab_image(&images);
        let dir = root.path().join("lab");
        let mut lab = Lab {
            _root: root,
            dir,
            down: false,
        };
        let output = skiff()
            .args(["lab", "up", "--hosts", &hosts.to_string()])
            .args(["--servers", &servers.to_string(), "--images"])
            .arg(&images)
            .arg("--dir")
            .arg(&lab.dir)
            .args(extra)
            .output()
            .expect("skiff lab up");
        assert!(
            output.status.success(),
            "skiff lab up failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        lab.down = false;
        lab
    }

    /// Runs `skiff lab ACTION --dir DIR [args]`.
    pub fn lab(&self, action: &str, args: &[&str]) -> Output {
        skiff()
            .args(["lab", action, "--dir"])
            .arg(&self.dir)
            .args(args)
            .output()
            .expect("skiff lab")
    }

    /// `skiff lab ACTION` that must succeed.
    pub fn fault(&self, action: &str, args: &[&str]) {
        let output = self.lab(action, args);
        assert!(
            output.status.success(),
            "skiff lab {action} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The kubeconfig reaching server `host` (`host-1` …).
    pub fn kubeconfig(&self, host: &str) -> PathBuf {
        self.dir.join(format!("kubeconfig-{host}.yaml"))
    }

    /// kubectl through server `via`: (success, stdout, stderr).
    pub fn kubectl(&self, via: &str, args: &[&str]) -> (bool, String, String) {
        self.kubectl_with_input(via, args, None)
    }

    pub fn kubectl_with_input(
        &self,
        via: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> (bool, String, String) {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig(via))
            .args(["--request-timeout", "20s"])
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes()).expect("kubectl stdin");
        }
        let output = child.wait_with_output().expect("kubectl");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// `kubectl apply -f -` of a JSON object, which must succeed.
    pub fn apply(&self, via: &str, object: &Value) {
        let (ok, out, err) =
            self.kubectl_with_input(via, &["apply", "-f", "-"], Some(&object.to_string()));
        assert!(ok, "kubectl apply: {out}{err}");
    }

    /// `kubectl get -o json`.
    pub fn get(&self, via: &str, what: &[&str]) -> Option<Value> {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-o", "json"]);
        let (ok, out, _) = self.kubectl(via, &args);
        ok.then(|| serde_json::from_str(&out).ok()).flatten()
    }

    /// Waits until pod `name` runs and is ready; returns it.
    pub fn wait_ready_pod(&self, via: &str, name: &str) -> Value {
        super::eventually(
            &format!("pod {name} ready"),
            Duration::from_secs(120),
            || {
                let pod = self.get(via, &["pod", name])?;
                let ready = pod["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                (ready && pod["status"]["podIP"].is_string()).then_some(pod)
            },
        )
    }

    /// A host's address on the lab bridge (its Node's InternalIP).
    pub fn host_ip(&self, via: &str, host: &str) -> String {
        let node = self.get(via, &["node", host]).expect("the node");
        node["status"]["addresses"]
            .as_array()
            .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
            .and_then(|a| a["address"].as_str())
            .expect("an InternalIP")
            .to_string()
    }

    /// Runs a command in a pod's container: (success, stdout + stderr).
    pub fn exec(&self, via: &str, pod: &str, command: &[&str]) -> (bool, String) {
        let mut args = vec!["exec", pod, "--"];
        args.extend_from_slice(command);
        let (ok, out, err) = self.kubectl(via, &args);
        (ok, format!("{out}{err}"))
    }

    /// `wget` from inside a pod, retried for a while (routes and proxies settle in seconds).
    pub fn fetch_from(&self, via: &str, pod: &str, url: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (ok, out) = self.exec(via, pod, &["timeout", "5", "wget", "-qO-", url]);
            if ok {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "wget {url} from {pod} kept failing: {out}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The network namespace of `host`, as `lab.json` records it (`/run/netns/NAME`).
    pub fn netns(&self, host: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join("lab.json")).expect("lab.json");
        let lab: Value = serde_json::from_str(&text).expect("lab.json is JSON");
        lab["hosts"]
            .as_array()
            .and_then(|hosts| hosts.iter().find(|h| h["name"] == host))
            .and_then(|h| h["netns"].as_str())
            .unwrap_or_else(|| panic!("{host} in lab.json"))
            .to_string()
    }

    /// Runs `command` on `host`'s network (`nsenter --net`, from the machine, so it works
    /// while the host is cut off): (success, stdout + stderr).
    pub fn on_host(&self, host: &str, command: &[&str]) -> (bool, String) {
        let output = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns(host)))
            .args(command)
            .output()
            .expect("nsenter");
        (
            output.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    }

    /// The server every answering server names as leader (`skiff lab status`); `None` while
    /// they disagree or none answers.
    pub fn leader(&self) -> Option<String> {
        let output = self.lab("status", &[]);
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text.lines().find(|l| l.starts_with("leader: "))?;
        let name = line.strip_prefix("leader: ")?.split_whitespace().next()?;
        name.starts_with("host-").then(|| name.to_string())
    }

    /// The end of every host's log, for a failing test's output.
    fn print_logs(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut hosts: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        hosts.sort();
        for host in hosts {
            let log = host.join("skiff.log");
            if let Ok(text) = std::fs::read_to_string(&log) {
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                eprintln!(
                    "==== {} (last 40 lines)\n{}",
                    log.display(),
                    tail.join("\n")
                );
            }
        }
    }

    /// `skiff lab down`, checked: nothing of the lab may be left on the machine.
    pub fn down(&mut self) {
        let output = self.lab("down", &[]);
        self.down = true;
        assert!(
            output.status.success(),
            "skiff lab down: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.dir.display().to_string();
        assert!(
            !mounts.contains(&dir),
            "mounts under {dir} left behind: {mounts}"
        );
        assert!(!self.dir.exists(), "the lab dir is left behind");
        let again = self.lab("down", &[]);
        assert!(again.status.success(), "a second `lab down` must succeed");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        if std::thread::panicking() {
            self.print_logs();
        }
        let _ = self.lab("down", &[]);
    }
}

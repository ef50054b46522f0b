//! The audit log: one line of Kubernetes' `audit.k8s.io/v1` Event JSON per request, as
//! kube-apiserver writes with `--audit-log-path`: at the `Metadata` level (who, what, on which
//! object, from where, with what result; never bodies), or as an `--audit-policy-file` says
//! ([`policy`]: `None`, `Metadata`, `Request` with the request's object, `RequestResponse`
//! with the response's too). Off unless `--audit-log-path` is given (an edge box's flash should
//! not take a line per request unasked).
//!
//! Lines go through a channel to one writer thread, so a request never waits on the disk; the
//! file is rotated at `--audit-log-maxsize` MiB, keeping `--audit-log-maxbackup` old files
//! (`audit.log.1` the newest). The file and its backups are private (0600).
//!
//! Not logged, as Kubernetes' default policies leave them out: the health and version
//! endpoints anyone may read, and skiff's own node heartbeats.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use serde_json::{json, Value};

use crate::auth::attributes::Attributes;
use crate::auth::user::UserInfo;

pub mod policy;

pub use policy::{Level, Policy};

/// Where the log goes and when it turns over.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub max_size_bytes: u64,
    pub max_backups: usize,
}

/// The sending end; cheap to clone. Lines are dropped (and counted in the log) only if the
/// writer thread has died.
#[derive(Clone)]
pub struct AuditLog {
    lines: mpsc::Sender<String>,
    /// Which requests are logged, and how much of each.
    pub policy: std::sync::Arc<Policy>,
}

impl AuditLog {
    /// Opens (creating, 0600) the log and starts its writer thread.
    pub fn start(config: AuditConfig) -> std::io::Result<AuditLog> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = open(&config.path)?;
        let (lines, received) = mpsc::channel::<String>();
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_lines(config, file, received))?;
        Ok(AuditLog {
            lines,
            policy: Default::default(),
        })
    }

    /// The same log under `policy`.
    pub fn with_policy(mut self, policy: Policy) -> AuditLog {
        self.policy = std::sync::Arc::new(policy);
        self
    }

    /// Records one finished request.
    pub fn record(&self, event: &Event<'_>) {
        let _ = self.lines.send(event.to_json().to_string());
    }
}

/// What one request leaves in the log.
pub struct Event<'a> {
    pub audit_id: String,
    pub request_uri: &'a str,
    pub user: &'a UserInfo,
    /// The user the request acted as, when it impersonated someone.
    pub impersonated: Option<&'a UserInfo>,
    pub attributes: Option<&'a Attributes>,
    pub source_ip: Option<String>,
    pub user_agent: Option<&'a str>,
    pub code: u16,
    pub received: jiff::Timestamp,
    pub finished: jiff::Timestamp,
    pub decision: &'static str,
    pub level: Level,
    /// The request's object (level `Request` and above, requests with a body).
    pub request_object: Option<Value>,
    /// The response's object (level `RequestResponse`, responses that are not streams).
    pub response_object: Option<Value>,
}

impl Event<'_> {
    pub fn to_json(&self) -> Value {
        let user = |u: &UserInfo| {
            let mut value = json!({"username": u.name, "groups": u.groups});
            if !u.uid.is_empty() {
                value["uid"] = json!(u.uid);
            }
            if !u.extra.is_empty() {
                value["extra"] = json!(u.extra);
            }
            value
        };
        let verb = self.attributes.map_or("", |a| a.verb.as_str());
        let mut event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": self.level.as_str(),
            "auditID": self.audit_id,
            "stage": "ResponseComplete",
            "requestURI": self.request_uri,
            "verb": verb,
            "user": user(self.user),
            "sourceIPs": self.source_ip.iter().collect::<Vec<_>>(),
            "responseStatus": {"metadata": {}, "code": self.code},
            "requestReceivedTimestamp": micro(self.received),
            "stageTimestamp": micro(self.finished),
            "annotations": {"authorization.k8s.io/decision": self.decision},
        });
        if let Some(impersonated) = self.impersonated {
            event["impersonatedUser"] = user(impersonated);
        }
        if let Some(agent) = self.user_agent {
            event["userAgent"] = json!(agent);
        }
        if let Some(a) = self.attributes.filter(|a| a.resource_request) {
            let mut object = json!({"resource": a.resource, "apiGroup": a.api_group});
            for (key, value) in [
                ("namespace", &a.namespace),
                ("name", &a.name),
                ("subresource", &a.subresource),
            ] {
                if !value.is_empty() {
                    object[key] = json!(value);
                }
            }
            event["objectRef"] = object;
        }
        if let Some(object) = &self.request_object {
            event["requestObject"] = object.clone();
        }
        if let Some(object) = &self.response_object {
            event["responseObject"] = object.clone();
        }
        event
    }
}

/// RFC 3339 with microseconds, as Kubernetes' `MicroTime`.
fn micro(at: jiff::Timestamp) -> String {
    format!("{at:.6}")
}

/// Whether a path is audited (see the module docs).
pub fn is_audited(path: &str) -> bool {
    !crate::auth::is_public(path) && !path.ends_with("/heartbeat")
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

fn write_lines(config: AuditConfig, file: std::fs::File, lines: mpsc::Receiver<String>) {
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut out = std::io::BufWriter::new(file);
    while let Ok(first) = lines.recv() {
        // Write what is waiting, then flush once: a busy server's lines go out in batches.
        for line in std::iter::once(first).chain(lines.try_iter()) {
            if size > 0 && size + line.len() as u64 + 1 > config.max_size_bytes {
                let _ = out.flush();
                match rotate(&config) {
                    Ok(file) => {
                        out = std::io::BufWriter::new(file);
                        size = 0;
                    }
                    Err(e) => tracing::warn!(error = %e, "rotating the audit log"),
                }
            }
            if writeln!(out, "{line}").is_ok() {
                size += line.len() as u64 + 1;
            }
        }
        if let Err(e) = out.flush() {
            tracing::warn!(error = %e, "writing the audit log");
        }
        // Let a busy server's next lines gather: while this thread sleeps it is not parked on
        // the channel, so the requests that send them wake nobody, and the next write takes
        // them all at once (a line waits at most this long to reach the file).
        std::thread::sleep(BATCH_WINDOW);
    }
}

/// How long the writer lets lines gather after each write.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_millis(5);

/// `audit.log` → `audit.log.1` → ... → `audit.log.N` (dropped), and a fresh `audit.log`.
fn rotate(config: &AuditConfig) -> std::io::Result<std::fs::File> {
    let backup = |n: usize| PathBuf::from(format!("{}.{n}", config.path.display()));
    if config.max_backups == 0 {
        std::fs::remove_file(&config.path)?;
    } else {
        let _ = std::fs::remove_file(backup(config.max_backups));
        for n in (1..config.max_backups).rev() {
            let _ = std::fs::rename(backup(n), backup(n + 1));
        }
        std::fs::rename(&config.path, backup(1))?;
    }
    open(&config.path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn events_are_json_lines_and_the_file_rotates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let log = AuditLog::start(AuditConfig {
            path: path.clone(),
            max_size_bytes: 2048,
            max_backups: 2,
        })
        .expect("log");
        let user = UserInfo::new("ann", &["shop"]);
        let attributes = Attributes::resource(&user, "delete", "", "pods", "default", "web");
        let now = jiff::Timestamp::now();
        for i in 0..30 {
            log.record(&Event {
                audit_id: format!("id-{i}"),
                request_uri: "/api/v1/namespaces/default/pods/web",
                user: &user,
                impersonated: None,
                attributes: Some(&attributes),
                source_ip: Some("10.0.0.9".into()),
                user_agent: Some("kubectl/v1.33.0"),
                code: 403,
                received: now,
                finished: now,
                decision: "forbid",
                level: Level::Metadata,
                request_object: None,
                response_object: None,
            });
        }
        drop(log);
        let backup = dir.path().join("audit.log.1");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !dir.path().join("audit.log.2").exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(backup.exists() && dir.path().join("audit.log.2").exists());
        assert!(!dir.path().join("audit.log.3").exists(), "two backups kept");
        let text = std::fs::read_to_string(&path).expect("log");
        let last: Value = serde_json::from_str(text.lines().last().expect("a line")).expect("json");
        assert_eq!(last["auditID"], "id-29");
        assert_eq!(last["verb"], "delete");
        assert_eq!(
            last["objectRef"],
            json!({"resource": "pods", "apiGroup": "", "namespace": "default", "name": "web"})
        );
        assert_eq!(last["responseStatus"]["code"], 403);
        assert_eq!(last["user"]["username"], "ann");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!is_audited("/healthz"));
        assert!(!is_audited("/skiff/v1/nodes/a/heartbeat"));
        assert!(is_audited("/api/v1/pods"));
    }
}

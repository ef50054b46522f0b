//! What an agent finds in the runtime when it starts. Containers and pod networks outlive the
//! agent by design (restarting the agent must not restart the pods), so at start it lists
//! them: those of pods that still exist are handed to their workers, which adopt them without
//! a restart; the rest belong to pods deleted while the agent was down, and are removed.
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::error::AgentError;
use crate::runtime::{ContainerRecord, Runtime};

/// Which containers belong to which pod (by pod uid).
pub fn group_by_pod(records: Vec<ContainerRecord>) -> HashMap<String, Vec<ContainerRecord>> {
    let mut map: HashMap<String, Vec<ContainerRecord>> = HashMap::new();
    for record in records {
        map.entry(record.pod_uid.clone()).or_default().push(record);
    }
    map
}

/// Removes the containers and networks of the pods (by uid) not in `present`. Nothing may
/// leak, so nothing fails silently: every failure is returned for the caller to report, and
/// the rest is removed anyway.
pub async fn remove_leftovers<R: Runtime>(
    runtime: &R,
    containers: HashMap<String, Vec<ContainerRecord>>,
    sandboxes: Vec<String>,
    present: &HashSet<String>,
) -> Vec<AgentError> {
    let mut failures = Vec::new();
    for (uid, records) in containers {
        if present.contains(&uid) {
            continue;
        }
        tracing::info!(pod_uid = %uid, "removing containers of a deleted pod");
        for record in records {
            // A failed stop is reported but does not keep the container: removing it kills a
            // task that still runs.
            if let Err(error) = runtime.stop(&record.id, Duration::ZERO).await {
                failures.push(AgentError::Cleanup {
                    what: format!("stopping container {} of deleted pod {uid}", record.id),
                    error,
                });
            }
            if let Err(error) = runtime.remove(&record.id).await {
                failures.push(AgentError::Cleanup {
                    what: format!("container {} of deleted pod {uid}", record.id),
                    error,
                });
            }
        }
    }
    for uid in sandboxes {
        if present.contains(&uid) {
            continue;
        }
        if let Err(error) = runtime.teardown_sandbox(&uid).await {
            failures.push(AgentError::Cleanup {
                what: format!("network of deleted pod {uid}"),
                error,
            });
        }
    }
    failures
}

/// Removes the directories (files, volumes: unmounted first) of the pods not in `present`
/// under `pods_dir`; the ones that could not go, with why.
pub fn remove_pod_dirs(
    pods_dir: &std::path::Path,
    present: &HashSet<String>,
) -> Vec<(String, std::io::Error)> {
    let mut failures = Vec::new();
    let Ok(entries) = std::fs::read_dir(pods_dir) else {
        return failures;
    };
    for entry in entries.flatten() {
        let uid = entry.file_name().to_string_lossy().into_owned();
        if present.contains(&uid) {
            continue;
        }
        let dir = entry.path();
        let removed =
            crate::volumes::unmount_under(&dir).and_then(|()| std::fs::remove_dir_all(&dir));
        if let Err(e) = removed {
            failures.push((uid, e));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeRuntime;
    use crate::runtime::{ContainerConfig, SandboxConfig};

    fn config(uid: &str, name: &str) -> ContainerConfig {
        ContainerConfig {
            pod_uid: uid.into(),
            name: name.into(),
            ..ContainerConfig::default()
        }
    }

    async fn sandbox(runtime: &FakeRuntime, uid: &str) {
        let pod = SandboxConfig {
            pod_uid: uid.into(),
            pod_name: uid.into(),
            namespace: "default".into(),
            host_network: false,
            pids_limit: None,
        };
        runtime.setup_sandbox(&pod).await.expect("sandbox");
    }

    #[tokio::test]
    async fn leftovers_of_deleted_pods_go_and_live_pods_keep_theirs() {
        let runtime = FakeRuntime::new("10.99.0");
        for (uid, name) in [("live", "a"), ("gone", "a"), ("gone", "b")] {
            runtime
                .start_container(&config(uid, name))
                .await
                .expect("start");
            sandbox(&runtime, uid).await;
        }
        let containers = group_by_pod(runtime.list().await.expect("list"));
        let sandboxes = runtime.list_sandboxes().await.expect("sandboxes");
        let present = HashSet::from(["live".to_string()]);

        let failures = remove_leftovers(&runtime, containers, sandboxes, &present).await;

        assert!(failures.is_empty(), "{failures:?}");
        let left: Vec<String> = runtime
            .list()
            .await
            .expect("list")
            .into_iter()
            .map(|r| r.pod_uid)
            .collect();
        assert_eq!(left, ["live"]);
        assert_eq!(runtime.list_sandboxes().await.expect("list"), ["live"]);
    }

    /// The bug this fixes: failures were dropped (`let _ =`) right under "nothing may leak".
    #[tokio::test]
    async fn a_failed_removal_is_reported_and_the_rest_still_goes() {
        let runtime = FakeRuntime::new("10.99.0");
        runtime
            .start_container(&config("gone", "a"))
            .await
            .expect("start");
        sandbox(&runtime, "gone").await;
        sandbox(&runtime, "stuck").await;
        runtime.fail_teardown("stuck");
        let containers = group_by_pod(runtime.list().await.expect("list"));
        let sandboxes = runtime.list_sandboxes().await.expect("sandboxes");

        let failures = remove_leftovers(&runtime, containers, sandboxes, &HashSet::new()).await;

        let reported: Vec<String> = failures.iter().map(|e| e.to_string()).collect();
        assert_eq!(reported.len(), 1, "{reported:?}");
        assert!(
            reported[0].starts_with("removing network of deleted pod stuck: "),
            "{reported:?}"
        );
        assert_eq!(runtime.container_count(), 0);
        assert_eq!(runtime.list_sandboxes().await.expect("list"), ["stuck"]);
    }
}

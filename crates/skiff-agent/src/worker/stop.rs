//! Carrying out a deletion: stop the pod's containers (preStop hooks, SIGTERM, the grace
//! period, SIGKILL), remove them, their files and the network, then delete the pod object.
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use skiff_client::DeleteOptions;
use tokio::time::Instant;

use super::{Next, Worker};
use crate::plan::DELETE_RETRY;
use crate::pod_status::Current;
use crate::probe;
use crate::runtime::Runtime;

impl<R: Runtime> Worker<R> {
    /// Stops everything of the pod and removes its containers, files and network. Failures are
    /// logged and the rest goes on: containers and networks that cannot be removed now are
    /// removed as leftovers at the agent's next start.
    pub(super) async fn terminate(&mut self, grace: Duration) {
        let running: Vec<(String, String)> = self
            .slots
            .iter()
            .filter(|s| matches!(s.current, Current::Running { .. }))
            .filter_map(|s| s.id.clone().map(|id| (id, s.spec.name.clone())))
            .collect();
        for (_, name) in &running {
            self.normal("Killing", &format!("Stopping container {name}"));
        }
        let runtime = self.ctx.runtime.clone();
        // preStop hooks first, within the grace period (a `sleep 5` here is how applications
        // let load balancers stop sending them traffic before they exit).
        let started = Instant::now();
        let hooks = running.iter().filter_map(|(id, name)| {
            let slot = self.slots.iter().find(|s| &s.spec.name == name)?;
            let hook = slot.spec.lifecycle.as_ref()?.pre_stop.clone()?;
            let target = probe::Target {
                runtime: runtime.clone(),
                container_id: id.clone(),
                container: slot.spec.clone(),
                pod_ip: self.sandbox.as_ref().and_then(|s| s.ip.clone()),
            };
            Some(async move { (name.clone(), probe::run_hook(&target, &hook, grace).await) })
        });
        for (name, result) in futures::future::join_all(hooks).await {
            if let Err(message) = result {
                self.warn(
                    "FailedPreStopHook",
                    &format!("PreStopHook failed for container {name}: {message}"),
                );
            }
        }
        let grace = grace.saturating_sub(started.elapsed());
        let stops = running.iter().map(|(id, _)| runtime.stop(id, grace));
        for result in futures::future::join_all(stops).await {
            if let Err(e) = result {
                tracing::warn!(pod = %self.pod_key(), error = %e, "stopping a container");
            }
        }
        for slot in &mut self.slots {
            slot.stop_prober();
        }
        // Every container this pod ever had on this node, not only the current ones.
        let mut ids: Vec<String> = self.slots.iter().filter_map(|s| s.id.clone()).collect();
        match runtime.list().await {
            Ok(records) => ids.extend(
                records
                    .into_iter()
                    .filter(|r| r.pod_uid == self.uid)
                    .map(|r| r.id),
            ),
            Err(e) => {
                tracing::warn!(pod = %self.pod_key(), error = %e, "listing the pod's earlier containers")
            }
        }
        ids.sort();
        ids.dedup();
        for id in ids {
            if let Err(e) = runtime.remove(&id).await {
                tracing::warn!(pod = %self.pod_key(), error = %e, "removing a container");
            }
        }
        if let Err(e) = runtime.teardown_sandbox(&self.uid).await {
            tracing::warn!(pod = %self.pod_key(), error = %e, "removing the pod network");
        }
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        for dir in [
            self.ctx.pod_dir(&self.uid),
            self.ctx.log_dir(&namespace, &name, &self.uid),
        ] {
            if let Err(e) = remove_dir(&dir) {
                tracing::warn!(pod = %self.pod_key(), dir = %dir.display(), error = %e, "removing the pod's files");
            }
        }
    }

    /// Deletes the pod object (grace 0: its containers are gone), the last step of a graceful
    /// delete. A failure is retried with back-off (the plan asks again), so the pod does not
    /// stay Terminating.
    pub(super) async fn delete_object(&mut self) -> Next {
        let namespace = self.pod.metadata.namespace.clone();
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let options = DeleteOptions {
            uid: Some(self.uid.clone()),
            grace_period_seconds: Some(0),
            ..DeleteOptions::default()
        };
        match self
            .ctx
            .client
            .delete::<Pod>(namespace.as_deref(), &name, &options)
            .await
        {
            Ok(_) => Next::Finished,
            // Gone already, or a new pod of that name: either way ours is gone.
            Err(e) if e.is_not_found() || e.is_conflict() => Next::Finished,
            Err(e) => {
                let wait = self.delete_retry.fail(Instant::now(), DELETE_RETRY);
                tracing::warn!(pod = %self.pod_key(), error = %e, retry_in = ?wait, "deleting the pod");
                self.wake_in(wait);
                Next::Continue
            }
        }
    }
}

/// Removes a directory tree; one already gone is fine.
/// Removes a pod's directory, unmounting its in-memory volumes first (removing through a
/// mount would empty it and then fail).
fn remove_dir(dir: &std::path::Path) -> std::io::Result<()> {
    crate::volumes::unmount_under(dir)?;
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

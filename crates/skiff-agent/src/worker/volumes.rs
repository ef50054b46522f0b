//! The pod's volumes: made before its first container starts, kept up to date while it runs.
//! A ConfigMap or Secret that is not there (yet) holds the pod in `ContainerCreating` with
//! kubelet's `FailedMount` event, retried with back-off until it appears.
use std::time::Duration;

use k8s_openapi::api::core::v1::Volume;
use tokio::time::Instant;

use super::Worker;
use crate::runtime::Runtime;
use crate::volumes;

/// The longest wait between tries to make a pod's volumes (kubelet's is about two minutes).
const MOUNT_RETRY_MAX: Duration = Duration::from_secs(32);

impl<R: Runtime> Worker<R> {
    /// Whether the pod's volumes are ready for its containers: made on the first call (and
    /// after a failure), brought up to date once `--sync-frequency` has passed since.
    pub(super) async fn volumes_ready(&mut self) -> bool {
        let frequency = self.ctx.sync_frequency;
        let since = self.volumes_synced.map(|at| at.elapsed());
        if since.is_none_or(|since| since >= frequency) {
            if let Err(message) = self.sync_volumes().await {
                self.warn("FailedMount", &message);
                self.message = Some(("ContainerCreating".into(), message));
                let retry = Duration::from_secs(1 << self.mount_failures.min(5));
                self.mount_failures += 1;
                self.wake_in(retry.min(MOUNT_RETRY_MAX));
                return false;
            }
            self.mount_failures = 0;
            self.message = None;
            self.volumes_synced = Some(Instant::now());
        }
        let since = self
            .volumes_synced
            .map_or(Duration::ZERO, |at| at.elapsed());
        self.wake_in(frequency.saturating_sub(since));
        true
    }

    /// Makes every volume of the pod that lives in its directory and writes the API-backed ones
    /// where their content changed; the error is kubelet's event message. A volume that has
    /// files already (written before, by this agent or the one before a restart) keeps them
    /// when its source cannot be read, with a warning, as kubelet does.
    async fn sync_volumes(&self) -> Result<(), String> {
        let root = self.ctx.pod_dir(&self.uid).join("volumes");
        for volume in self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
        {
            let dir = root.join(&volume.name);
            if volume.persistent_volume_claim.is_some() {
                volumes::claims::mount_claim(
                    &self.ctx.client,
                    &self.pod,
                    volume,
                    &dir,
                    &self.ctx.node_name,
                )
                .await
                .map_err(|e| failed_mount(volume, &e))?;
                continue;
            }
            if volume.empty_dir.is_none() && !volumes::from_api(volume) {
                continue;
            }
            volumes::prepare(&dir, volume).map_err(|e| failed_mount(volume, &e))?;
            match volumes::sync(&self.ctx.client, &self.pod, volume, &dir).await {
                Ok(true) => {
                    tracing::info!(pod = %self.pod_key(), volume = %volume.name, "volume updated")
                }
                Ok(false) => {}
                Err(e) if volumes::atomic::has_version(&dir) => {
                    self.warn("FailedMount", &failed_mount(volume, &e))
                }
                Err(e) => return Err(failed_mount(volume, &e)),
            }
        }
        Ok(())
    }
}

/// kubelet's event message for a volume that could not be set up.
fn failed_mount(volume: &Volume, e: &dyn std::fmt::Display) -> String {
    format!(
        "MountVolume.SetUp failed for volume {:?} : {e}",
        volume.name
    )
}

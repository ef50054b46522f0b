//! The pod's volumes: made before its first container starts, kept up to date while it runs.
//! A ConfigMap or Secret that is not there (yet) holds the pod in `ContainerCreating` with
//! kubelet's `FailedMount` event, retried with back-off until it appears.
use std::path::PathBuf;
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
    /// after a failure), refreshed once `--sync-frequency` has passed since the last write.
    pub(super) async fn volumes_ready(&mut self) -> bool {
        let frequency = self.ctx.sync_frequency;
        match self.volumes_synced {
            Some(at) if at.elapsed() < frequency => {
                self.wake_in(frequency - at.elapsed());
                true
            }
            Some(_) => {
                self.refresh_volumes().await;
                self.volumes_synced = Some(Instant::now());
                self.wake_in(frequency);
                true
            }
            None => match self.mount_volumes().await {
                Ok(()) => {
                    self.mount_failures = 0;
                    self.message = None;
                    self.volumes_synced = Some(Instant::now());
                    self.wake_in(frequency);
                    true
                }
                Err(message) => {
                    self.warn("FailedMount", &message);
                    self.message = Some(("ContainerCreating".into(), message));
                    let retry = Duration::from_secs(1 << self.mount_failures.min(5));
                    self.mount_failures += 1;
                    self.wake_in(retry.min(MOUNT_RETRY_MAX));
                    false
                }
            },
        }
    }

    /// Makes every volume of the pod that lives in its directory; the error is kubelet's
    /// event message.
    async fn mount_volumes(&self) -> Result<(), String> {
        for (volume, dir) in self.volume_dirs() {
            if volume.empty_dir.is_none() && !volumes::from_api(volume) {
                continue;
            }
            volumes::prepare(&dir, volume).map_err(|e| failed_mount(volume, &e))?;
            volumes::sync(&self.ctx.client, &self.pod, volume, &dir)
                .await
                .map_err(|e| failed_mount(volume, &e))?;
        }
        Ok(())
    }

    /// The pod's volumes with their directories on the node.
    fn volume_dirs(&self) -> impl Iterator<Item = (&Volume, PathBuf)> {
        let root = self.ctx.pod_dir(&self.uid).join("volumes");
        let volumes = self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten());
        volumes.map(move |v| (v, root.join(&v.name)))
    }

    /// Writes the API-backed volumes again where their content changed. A source that went
    /// away leaves the files as they were (kubelet does the same), with a warning.
    async fn refresh_volumes(&self) {
        for (volume, dir) in self.volume_dirs() {
            if !volumes::from_api(volume) {
                continue;
            }
            match volumes::sync(&self.ctx.client, &self.pod, volume, &dir).await {
                Ok(true) => {
                    tracing::info!(pod = %self.pod_key(), volume = %volume.name, "volume updated")
                }
                Ok(false) => {}
                Err(e) => self.warn("FailedMount", &failed_mount(volume, &e)),
            }
        }
    }
}

/// kubelet's event message for a volume that could not be set up.
fn failed_mount(volume: &Volume, e: &dyn std::fmt::Display) -> String {
    format!(
        "MountVolume.SetUp failed for volume {:?} : {e}",
        volume.name
    )
}

//! Carrying out a start: the pod's sandbox and files, then a container — its image, the
//! ConfigMaps and Secrets its environment reads, its config, and the runtime's start. Every
//! failure becomes the container's waiting reason and a back-off, as kubelet reports them.
use std::time::Duration;

use jiff::Timestamp;
use skiff_client::events::EventType;
use tokio::time::Instant;

use super::slot::Slot;
use super::{watch_exit, Worker};
use crate::env::{self, Downward};
use crate::error::AgentError;
use crate::plan::CRASH_LOOP;
use crate::pod_status::Current;
use crate::resolv;
use crate::runtime::{Runtime, RuntimeError, Sandbox, SandboxConfig, Seccomp};
use crate::spec::{self, PodDirs};

/// How long a starting container waits for the agent's first read of the services (its
/// service variables depend on them) before it fails with CreateContainerConfigError.
const SERVICES_SYNC_WAIT: Duration = Duration::from_secs(5);

impl<R: Runtime> Worker<R> {
    pub(super) async fn setup_sandbox(&self) -> Result<Sandbox, RuntimeError> {
        let spec = self.pod.spec.as_ref();
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        let config = SandboxConfig {
            pod_uid: self.uid.clone(),
            pod_name: self.pod.metadata.name.clone().unwrap_or_default(),
            namespace: self.pod.metadata.namespace.clone().unwrap_or_default(),
            host_network,
            pids_limit: self.ctx.policy.max_pids,
        };
        let started = std::time::Instant::now();
        let mut sandbox = self.ctx.runtime.setup_sandbox(&config).await?;
        tracing::debug!(pod = %self.pod_key(), elapsed_ms = started.elapsed().as_millis() as u64, "sandbox ready");
        if host_network {
            sandbox.ip = Some(self.ctx.node_ip.clone());
        }
        self.write_pod_files(&sandbox, host_network)
            .map_err(|e| RuntimeError::Failed(format!("writing pod files: {e}")))?;
        Ok(sandbox)
    }

    /// /etc/hosts and /etc/resolv.conf for the pod's containers.
    fn write_pod_files(&self, sandbox: &Sandbox, host_network: bool) -> std::io::Result<()> {
        let dir = self.ctx.pod_dir(&self.uid);
        std::fs::create_dir_all(dir.join("volumes"))?;
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let hostname = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .unwrap_or(name);
        if !host_network {
            let ip = sandbox.ip.clone().unwrap_or_default();
            std::fs::write(
                dir.join("hosts"),
                format!("# Kubernetes-managed hosts file (skiff).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n"),
            )?;
        }
        let node_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let resolv = resolv::resolv_conf(&self.pod, &node_resolv, self.ctx.dns.as_ref());
        std::fs::write(dir.join("resolv.conf"), resolv)?;
        Ok(())
    }

    /// Starts the container of slot `i`: its image, its environment, then the runtime. A
    /// failure sets the container's waiting reason and backs off.
    pub(super) async fn start(&mut self, i: usize) {
        let slot = self.slots[i].clone();
        let image = slot.spec.image.clone().unwrap_or_default();
        let pull = slot.spec.image_pull_policy.as_deref() != Some("Never");
        let image_info = match self.ctx.runtime.ensure_image(&image, pull).await {
            Ok(info) => info,
            Err(e) if !pull => {
                // imagePullPolicy: Never and the image is not here: kubelet's ErrImageNeverPull.
                let message =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                if !matches!(self.slots[i].current, Current::Waiting { ref reason, .. } if reason == "ErrImageNeverPull")
                {
                    self.warn("ErrImageNeverPull", &message);
                }
                tracing::debug!(error = %e, "image not present");
                self.slots[i].current = Current::Waiting {
                    reason: "ErrImageNeverPull".into(),
                    message: Some(message),
                };
                // It may be imported later (the airgap directory is watched).
                self.wake_in(Duration::from_secs(5));
                return;
            }
            Err(e) => {
                let again = matches!(self.slots[i].current, Current::Waiting { ref reason, .. } if reason == "ErrImagePull" || reason == "ImagePullBackOff");
                let reason = if again {
                    "ImagePullBackOff"
                } else {
                    "ErrImagePull"
                };
                if again {
                    self.normal_or_warn(
                        EventType::Normal,
                        "BackOff",
                        &format!("Back-off pulling image \"{image}\""),
                    );
                } else {
                    self.warn("Failed", &format!("Failed to pull image \"{image}\": {e}"));
                    self.warn("Failed", "Error: ErrImagePull");
                }
                self.slots[i].current = Current::Waiting {
                    reason: reason.into(),
                    message: Some(if again {
                        format!("Back-off pulling image \"{image}\": {e}")
                    } else {
                        e.to_string()
                    }),
                };
                let delay = self.slots[i].backoff.fail(Instant::now(), CRASH_LOOP);
                self.wake_in(delay);
                return;
            }
        };
        if !self.slots[i].image_reported {
            self.normal(
                "Pulled",
                &format!("Container image \"{image}\" already present on machine"),
            );
            self.slots[i].image_reported = true;
        }
        self.slots[i].image_id = image_info.id.clone();

        // The previous container of this slot goes (its log file stays for --previous).
        if let Some(old) = slot.id.clone() {
            if let Err(e) = self.ctx.runtime.remove(&old).await {
                tracing::warn!(pod = %self.pod_key(), container = %old, error = %e, "removing the previous container");
            }
        }
        let config = match self.env_sources(&slot.spec).await {
            Ok(downward) => self.container_config(&slot, downward),
            Err(e) => Err(e),
        };
        let config = match config {
            Ok(config) => config,
            Err(e) => {
                self.warn("Failed", &format!("Error: {e}"));
                self.slots[i].current = Current::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: Some(e.to_string()),
                };
                self.wake_in(Duration::from_secs(10));
                return;
            }
        };
        match self.ctx.runtime.start_container(&config).await {
            Ok(id) => {
                let name = &slot.spec.name;
                self.normal("Created", &format!("Created container: {name}"));
                self.normal("Started", &format!("Started container {name}"));
                let s = &mut self.slots[i];
                s.reset_probes();
                if s.last.is_some() || s.next_attempt > 0 {
                    s.restart_count += 1;
                }
                s.id = Some(id.clone());
                s.next_attempt = config.attempt + 1;
                s.current = Current::Running {
                    started_at: Timestamp::now(),
                };
                watch_exit(self.ctx.runtime.clone(), id, self.exits.0.clone());
            }
            Err(RuntimeError::Config(e)) => {
                self.warn("Failed", &format!("Error: {e}"));
                self.slots[i].current = Current::Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: Some(e),
                };
                self.wake_in(Duration::from_secs(10));
            }
            Err(e) => {
                self.warn("Failed", &format!("Error: {e}"));
                self.slots[i].current = Current::Waiting {
                    reason: "CreateContainerError".into(),
                    message: Some(e.to_string()),
                };
                self.slots[i].next_attempt += 1;
                let delay = self.slots[i].backoff.fail(Instant::now(), CRASH_LOOP);
                self.wake_in(delay);
            }
        }
    }

    /// Reads the ConfigMaps and Secrets the container's environment refers to.
    async fn env_sources(
        &self,
        container: &k8s_openapi::api::core::v1::Container,
    ) -> Result<Downward, AgentError> {
        use k8s_openapi::api::core::v1::{ConfigMap, Secret};
        // Service variables come from the services as they are, not from an empty list before
        // the agent's first read (kubelet refuses the same way).
        // Always: the `kubernetes` Service's variables are given even without service links.
        {
            let mut services = self.ctx.services.clone();
            let synced = tokio::time::timeout(
                SERVICES_SYNC_WAIT,
                services.wait_for(|snapshot| snapshot.synced),
            )
            .await;
            if !matches!(synced, Ok(Ok(_))) {
                return Err(AgentError::ContainerConfig(
                    "services have not yet been read at least once, cannot construct envvars"
                        .into(),
                ));
            }
        }
        let namespace = self.pod.metadata.namespace.clone();
        let (maps, secrets) = env::env_references(container);
        let mut downward = Downward::default();
        for name in maps {
            match self
                .ctx
                .client
                .get_opt::<ConfigMap>(namespace.as_deref(), &name)
                .await
            {
                Ok(Some(cm)) => {
                    downward
                        .config_maps
                        .insert(name, cm.data.unwrap_or_default());
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(AgentError::ContainerConfig(format!(
                        "reading configmap {name}: {e}"
                    )))
                }
            }
        }
        for name in secrets {
            match self
                .ctx
                .client
                .get_opt::<Secret>(namespace.as_deref(), &name)
                .await
            {
                Ok(Some(secret)) => {
                    let mut data: std::collections::BTreeMap<String, String> = secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                        .collect();
                    data.extend(secret.string_data.unwrap_or_default());
                    downward.secrets.insert(name, data);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(AgentError::ContainerConfig(format!(
                        "reading secret {name}: {e}"
                    )))
                }
            }
        }
        Ok(downward)
    }

    fn container_config(
        &self,
        slot: &Slot,
        sources: Downward,
    ) -> Result<crate::runtime::ContainerConfig, AgentError> {
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let pod_dir = self.ctx.pod_dir(&self.uid);
        let log_dir = self.ctx.log_dir(&namespace, &name, &self.uid);
        let dirs = PodDirs {
            pod_dir: &pod_dir,
            log_dir: &log_dir,
        };
        let sandbox = self.sandbox.clone().unwrap_or_default();
        let links = self.pod.spec.as_ref().and_then(|s| s.enable_service_links) != Some(false);
        let service_env =
            crate::service_view::service_env(&self.ctx.services.borrow(), &namespace, links);
        let downward = Downward {
            service_env,
            pod_ip: sandbox.ip.clone(),
            host_ip: Some(self.ctx.node_ip.clone()),
            node_name: self.ctx.node_name.clone(),
            ..sources
        };
        let mut config = spec::container_config(
            &self.pod,
            &slot.spec,
            slot.init,
            slot.next_attempt,
            &dirs,
            &downward,
            &self.ctx.policy,
        )?;
        config.netns = sandbox.netns.clone();
        if let Seccomp::Localhost(path) = &config.security.seccomp {
            config.security.seccomp = Seccomp::Profile(read_seccomp_profile(path)?);
        }
        Ok(config)
    }
}

/// A `Localhost` seccomp profile: an OCI `linux.seccomp` JSON document (as kubelet reads them),
/// at most 1 MiB.
fn read_seccomp_profile(path: &std::path::Path) -> Result<serde_json::Value, AgentError> {
    use std::io::Read;
    let bad = |e: String| {
        AgentError::ContainerConfig(format!(
            "securityContext.seccompProfile: {}: {e}",
            path.display()
        ))
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 20).read_to_string(&mut text))
        .map_err(|e| bad(e.to_string()))?;
    let profile: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if !profile.get("defaultAction").is_some_and(|a| a.is_string()) {
        return Err(bad("not a seccomp profile (no defaultAction)".into()));
    }
    Ok(profile)
}

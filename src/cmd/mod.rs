//! The subcommands of `skiff`.

pub mod agent;
pub mod explain;
pub mod image;
pub mod members;
pub mod secrets;
pub mod server;

use std::path::PathBuf;

/// A client with the credential of `kubeconfig`, or of the kubeconfig in `data_dir` (the
/// default data dir without either), for the commands that talk to a running cluster.
pub fn admin_client(
    data_dir: Option<PathBuf>,
    kubeconfig: Option<PathBuf>,
) -> anyhow::Result<skiff_client::Client> {
    let path = kubeconfig.unwrap_or_else(|| {
        data_dir
            .unwrap_or_else(default_data_dir)
            .join("kubeconfig.yaml")
    });
    let config = skiff_client::Kubeconfig::read(&path)?;
    Ok(skiff_client::Client::new(
        &config.server,
        &config.ca_pem,
        &config.token,
    )?)
}

/// `/var/lib/skiff` for root (as k3s uses /var/lib/rancher/k3s), `./.skiff` otherwise.
pub fn default_data_dir() -> PathBuf {
    if skiff_lab::is_root() {
        PathBuf::from("/var/lib/skiff")
    } else {
        PathBuf::from(".skiff")
    }
}

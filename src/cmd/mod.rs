//! The subcommands of `skiff`.

pub mod agent;
pub mod explain;
pub mod image;
pub mod members;
pub mod secrets;
pub mod server;

use std::path::PathBuf;

/// `/var/lib/skiff` for root (as k3s uses /var/lib/rancher/k3s), `./.skiff` otherwise.
pub fn default_data_dir() -> PathBuf {
    if skiff_lab::is_root() {
        PathBuf::from("/var/lib/skiff")
    } else {
        PathBuf::from(".skiff")
    }
}

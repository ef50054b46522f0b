//! The Deployment and ReplicaSet strategy: a new workload starts without a status, so one
//! created from another cluster's `-o yaml` output does not claim replicas that do not exist.
//! Their controllers (skiff-controllers) write the status from then on.
use serde_json::Value;

use super::{set_status, Strategy};

pub struct Workloads;

impl Strategy for Workloads {
    fn prepare_for_create(&self, object: &mut Value) {
        set_status(object, None);
    }
}

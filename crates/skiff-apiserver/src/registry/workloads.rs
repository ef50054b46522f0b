//! The Deployment, ReplicaSet, StatefulSet, DaemonSet and Job strategy: a new workload starts without a status, so one
//! created from another cluster's `-o yaml` output does not claim replicas that do not exist;
//! a pod template its namespace's Pod Security level would refuse earns a warning.
//! Their controllers (skiff-controllers) write the status from then on.
use serde_json::Value;

use super::{set_status, Result, Strategy, View};
use crate::auth::user::UserInfo;

pub struct Workloads;

impl Strategy for Workloads {
    fn prepare_for_create(&self, object: &mut Value) {
        set_status(object, None);
    }

    /// A pod template that its namespace's Pod Security level would refuse earns a warning.
    fn authorize_write(
        &self,
        view: &dyn View,
        _user: &UserInfo,
        namespace: Option<&str>,
        object: &Value,
        _old: Option<&Value>,
    ) -> Result<Vec<String>> {
        Ok(super::pod_security::admit_template(
            view,
            namespace.unwrap_or_default(),
            object,
        ))
    }
}

//! The ResourceQuota strategy: a new quota starts with the status the quota controller would
//! give it (`hard` from the spec, `used` counted from the namespace), so `kubectl describe
//! quota` is right at once. Charging writes against quotas is [`crate::quota`]'s.
use serde_json::Value;

use super::{Strategy, View};

pub struct Quotas;

impl Strategy for Quotas {
    fn mutate_on_create(&self, view: &dyn View, object: &mut Value) {
        let status = crate::quota::current_status(view, object);
        if let Some(root) = object.as_object_mut() {
            root.insert("status".into(), status);
        }
    }
}

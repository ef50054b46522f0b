//! The query parameters Kubernetes requests carry, parsed once.

use serde::Deserialize;
use skiff_api::status::ApiError;

/// Every query parameter skiff understands on resource requests. Unknown ones are ignored, as
/// Kubernetes ignores them.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Params {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub watch: Option<String>,
    pub resource_version: Option<String>,
    pub timeout_seconds: Option<u64>,
    pub allow_watch_bookmarks: Option<String>,
    pub field_validation: Option<String>,
    pub dry_run: Option<String>,
    pub field_manager: Option<String>,
    /// Server-side apply: take over fields other managers own.
    pub force: Option<String>,
    pub propagation_policy: Option<String>,
    pub limit: Option<u64>,
    /// The token of the previous page of a list (`metadata.continue`).
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
    pub pretty: Option<String>,
    /// What the rows of a Table response carry: `None`, `Metadata` (default) or `Object`.
    pub include_object: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true") | Some("1") | Some("True"))
}

impl Params {
    pub fn parse(query: Option<&str>) -> Result<Params, ApiError> {
        serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| ApiError::BadRequest(format!("invalid query parameters: {e}")))
    }

    pub fn is_watch(&self) -> bool {
        truthy(&self.watch)
    }

    pub fn force(&self) -> bool {
        truthy(&self.force)
    }

    /// Who is writing, for managedFields (`kubectl` sends `fieldManager` on every write).
    pub fn manager(&self) -> String {
        self.field_manager
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "unknown".into())
    }

    pub fn bookmarks(&self) -> bool {
        truthy(&self.allow_watch_bookmarks)
    }

    /// `dryRun=All`: validate and answer as if written, touch nothing.
    pub fn is_dry_run(&self) -> Result<bool, ApiError> {
        match self.dry_run.as_deref() {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::BadRequest(format!(
                "Invalid value: \"{other}\": supported values: \"All\""
            ))),
        }
    }

    /// `resourceVersion=0` lets a read come from this member's state without a read index, as
    /// Kubernetes allows it to come from the watch cache.
    pub fn any_version_ok(&self) -> bool {
        self.resource_version.as_deref() == Some("0")
    }

    /// The revision a watch starts after; `None` means "send the current state first".
    pub fn watch_from(&self) -> Result<Option<u64>, ApiError> {
        match self.resource_version.as_deref() {
            None | Some("") | Some("0") => Ok(None),
            Some(rv) => rv
                .parse()
                .map(Some)
                .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {rv}"))),
        }
    }
}

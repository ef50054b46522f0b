//! [`AgentError`]: what can go wrong in the agent's library, one variant per thing that failed.
//! The binary wraps these in `anyhow`; inside the agent, errors that a pod's status shows
//! (`ErrImagePull`, `CreateContainerError`) stay [`RuntimeError`]s.
use crate::runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Something the agent removes (a container, a pod's network or files) could not be removed.
    #[error("removing {what}: {error}")]
    Cleanup { what: String, error: RuntimeError },
}

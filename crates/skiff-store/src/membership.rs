//! Membership changes, one at a time.
//!
//! openraft refuses a membership change while another is still being committed ("the cluster is
//! already undergoing a configuration change"), and every step of a join is one: adding the
//! learner, then making it a voter (itself a joint and then a uniform configuration). Servers
//! started by automation join at the same moment, so on the leader:
//! - changes are queued behind one lock, and a change openraft still calls busy (a previous
//!   leader's change not yet committed) is retried for a while before the caller is told 409;
//! - a learner is made a voter only once it has caught up (waiting without a deadline would hold
//!   the lock forever for a joiner that died mid-join);
//! - [`promote_caught_up_learners`], run by the leader every second, finishes joins that were
//!   cut short: a joiner that died after it became a learner, a leader that failed over between
//!   the two steps. skiff has no learners by design, so every learner is a voter-to-be.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Raft, ServerState};
use tokio::time::Instant;

use crate::{Member, NodeId, StoreError, TypeConfig};

/// How long a change waits for openraft to finish another before giving up with
/// [`StoreError::MembershipBusy`].
const BUSY_PATIENCE: Duration = Duration::from_secs(30);
/// How long a new learner has to catch up before the join is left to the promotion loop.
const CATCH_UP: Duration = Duration::from_secs(60);

type WriteError = RaftError<NodeId, ClientWriteError<NodeId, Member>>;

/// Serializes this member's membership changes (it matters only while it leads).
#[derive(Default)]
pub(crate) struct MembershipChanges {
    lock: tokio::sync::Mutex<()>,
}

impl MembershipChanges {
    /// Adds `id` as a learner, waits until it has caught up, then makes it a voter. A member
    /// that is already a voter is left as it is (a restarted joiner asks again).
    pub(crate) async fn add_voter(
        &self,
        raft: &Raft<TypeConfig>,
        id: NodeId,
        member: Member,
    ) -> Result<(), StoreError> {
        let _turn = self.lock.lock().await;
        if is_voter(raft, id) {
            return Ok(());
        }
        let added = retry_while_busy(|| raft.add_learner(id, member.clone(), false)).await?;
        let joined_at = added.log_id.index;
        raft.wait(Some(CATCH_UP))
            .metrics(
                |m| matched_index(m, id).is_some_and(|i| i >= joined_at),
                "the new learner to catch up",
            )
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "member {id} was added as a learner but has not caught up ({e}); it becomes a \
                     voter as soon as it does"
                ))
            })?;
        promote(raft, id).await
    }

    /// Removes `id` (a voter or a learner).
    pub(crate) async fn remove(
        &self,
        raft: &Raft<TypeConfig>,
        id: NodeId,
    ) -> Result<(), StoreError> {
        let _turn = self.lock.lock().await;
        let membership = raft.metrics().borrow().membership_config.clone();
        let membership = membership.membership();
        if membership.get_node(&id).is_none() {
            return Err(StoreError::Membership(format!(
                "member {id} is not in the cluster"
            )));
        }
        let ids = BTreeSet::from([id]);
        let change: ChangeMembers<NodeId, Member> = if membership.voter_ids().any(|v| v == id) {
            // Without `retain`, removing a voter removes the node too; a leader removing itself
            // steps down once this commits.
            ChangeMembers::RemoveVoters(ids)
        } else {
            ChangeMembers::RemoveNodes(ids)
        };
        retry_while_busy(|| raft.change_membership(change.clone(), false)).await?;
        Ok(())
    }

    /// On the leader: makes every learner that has caught up a voter. Returns the ids promoted.
    pub(crate) async fn promote_caught_up_learners(
        &self,
        raft: &Raft<TypeConfig>,
    ) -> Result<Vec<NodeId>, StoreError> {
        let ready = caught_up_learners(&raft.metrics().borrow());
        if ready.is_empty() {
            return Ok(Vec::new());
        }
        // A join in progress holds the lock and promotes its own learner.
        let Ok(_turn) = self.lock.try_lock() else {
            return Ok(Vec::new());
        };
        for id in &ready {
            tracing::info!(id, "promoting a caught-up learner to voter");
            promote(raft, *id).await?;
        }
        Ok(ready)
    }
}

async fn promote(raft: &Raft<TypeConfig>, id: NodeId) -> Result<(), StoreError> {
    retry_while_busy(|| {
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
    })
    .await?;
    Ok(())
}

fn is_voter(raft: &Raft<TypeConfig>, id: NodeId) -> bool {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == id)
}

/// The last log index the leader knows `id` holds (`None` off the leader).
fn matched_index(metrics: &openraft::RaftMetrics<NodeId, Member>, id: NodeId) -> Option<u64> {
    metrics
        .replication
        .as_ref()?
        .get(&id)?
        .as_ref()
        .map(|log_id| log_id.index)
}

/// Learners holding at least the configuration that made them learners, as seen by a leader.
fn caught_up_learners(metrics: &openraft::RaftMetrics<NodeId, Member>) -> Vec<NodeId> {
    if metrics.state != ServerState::Leader {
        return Vec::new();
    }
    let config = metrics.membership_config.clone();
    let since = config.log_id().map(|l| l.index).unwrap_or(0);
    // Only a uniform configuration can take another change.
    if config.membership().get_joint_config().len() > 1 {
        return Vec::new();
    }
    config
        .membership()
        .learner_ids()
        .filter(|id| matched_index(metrics, *id).is_some_and(|i| i >= since))
        .collect()
}

/// Runs a membership change, again while openraft reports another in progress.
async fn retry_while_busy<T, F, Fut>(mut change: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, WriteError>>,
{
    let deadline = Instant::now() + BUSY_PATIENCE;
    loop {
        match change().await {
            Ok(done) => return Ok(done),
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) if is_busy(&e) => return Err(StoreError::MembershipBusy(e.to_string())),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                return Err(StoreError::Unavailable(
                    "this member stopped leading during the membership change".into(),
                ))
            }
            Err(e) => return Err(StoreError::Membership(e.to_string())),
        }
    }
}

fn is_busy(e: &WriteError) -> bool {
    matches!(
        e,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(_)
        ))
    )
}

/// Why the voters cannot survive the loss of one server, if they cannot: learners that are not
/// voters yet, or an even number of voters that a single failure leaves without a majority.
/// A lone server is a choice (no warning); a cluster that meant to have more is not.
pub(crate) fn fault_tolerance_warning(voters: usize, learners: usize) -> Option<String> {
    let tolerated = voters.saturating_sub(1) / 2;
    if tolerated >= 1 && learners == 0 {
        return None;
    }
    if voters <= 1 && learners == 0 {
        return None;
    }
    let mut why = format!("{voters} voter{}", if voters == 1 { "" } else { "s" });
    if learners > 0 {
        why.push_str(&format!(
            " and {learners} learner{} not yet promoted",
            if learners == 1 { "" } else { "s" }
        ));
    }
    if tolerated == 0 {
        why.push_str(": losing one server stops writes");
    } else {
        why.push_str(&format!(
            ": writes survive the loss of {tolerated} server(s)"
        ));
    }
    Some(why)
}

#[cfg(test)]
mod tests {
    use super::fault_tolerance_warning;

    #[test]
    fn warns_when_one_failure_would_stop_writes() {
        let cases = [
            // (voters, learners, warns)
            (1, 0, false), // a single server, by choice
            (2, 0, true),  // two voters: either failing stops writes
            (3, 0, false),
            (2, 1, true), // a "three-server" cluster that is really two voters
            (3, 1, true), // a join not finished yet
            (4, 0, false),
            (5, 0, false),
            (1, 1, true),
        ];
        for (voters, learners, warns) in cases {
            assert_eq!(
                fault_tolerance_warning(voters, learners).is_some(),
                warns,
                "{voters} voters, {learners} learners"
            );
        }
        let text = fault_tolerance_warning(2, 1).unwrap_or_default();
        assert_eq!(
            text,
            "2 voters and 1 learner not yet promoted: losing one server stops writes"
        );
    }
}

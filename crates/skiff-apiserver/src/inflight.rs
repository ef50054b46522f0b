//! Limits on requests in flight, as kube-apiserver's `--max-requests-inflight` (reads, default
//! 400) and `--max-mutating-requests-inflight` (writes, default 200): a request over the limit
//! is answered at once with 429 and `Retry-After: 1`, never queued, so a flood cannot make the
//! server hold ever more work in memory.
//!
//! A fifth of each limit is kept for the system (members of `system:masters`, which the
//! controllers and the scheduler run as, and nodes), so a flood of users' requests cannot
//! starve the control loops or the agents (a small cousin of Priority and Fairness). Node
//! heartbeats are not Kubernetes API requests and are never counted. Long-running requests
//! (watches, `exec`, following a log) hold no slot, as in Kubernetes.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The read and write pools.
pub struct Inflight {
    reads: Arc<Pool>,
    writes: Arc<Pool>,
}

struct Pool {
    /// 0: no limit.
    limit: usize,
    /// Slots only the system may take.
    reserved: usize,
    used: AtomicUsize,
}

/// A slot held until dropped.
pub struct Permit(Option<Arc<Pool>>);

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(pool) = &self.0 {
            pool.used.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Inflight {
    /// Limits of `reads` and `writes` in flight at once (0: unlimited).
    pub fn new(reads: usize, writes: usize) -> Inflight {
        let pool = |limit: usize| {
            Arc::new(Pool {
                limit,
                reserved: if limit >= 2 { (limit / 5).max(1) } else { 0 },
                used: AtomicUsize::new(0),
            })
        };
        Inflight {
            reads: pool(reads),
            writes: pool(writes),
        }
    }

    /// A slot for a request (`mutating` or not) from the system or not, or `None` when full.
    pub fn try_acquire(&self, mutating: bool, system: bool) -> Option<Permit> {
        let pool = if mutating { &self.writes } else { &self.reads };
        if pool.limit == 0 {
            return Some(Permit(None));
        }
        let cap = if system {
            pool.limit
        } else {
            pool.limit - pool.reserved
        };
        let mut used = pool.used.load(Ordering::Acquire);
        loop {
            if used >= cap {
                return None;
            }
            match pool.used.compare_exchange_weak(
                used,
                used + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Permit(Some(pool.clone()))),
                Err(now) => used = now,
            }
        }
    }
}

impl Default for Inflight {
    /// Kubernetes' defaults.
    fn default() -> Inflight {
        Inflight::new(400, 200)
    }
}

/// Watches open at once per user (`--max-watches-per-user`): a watch holds memory and a
/// subscription for as long as the client likes, so one credential (a leaked token, a client in
/// a reconnect loop) cannot open them without end. Over the cap: 429 with `Retry-After`.
/// Members of `system:masters` (the controllers, the scheduler and the servers' agents run as
/// them) are not counted.
pub struct WatchCaps {
    /// 0: no cap.
    per_user: usize,
    held: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// A watch counted against its user until dropped (with the watch's stream).
pub struct WatchTicket {
    caps: Arc<WatchCaps>,
    user: String,
}

impl WatchCaps {
    pub fn new(per_user: usize) -> Arc<WatchCaps> {
        Arc::new(WatchCaps {
            per_user,
            held: Default::default(),
        })
    }

    /// A ticket for one more watch of `user`, or the error to answer with.
    pub fn admit(self: &Arc<Self>, user: &str) -> Result<Option<WatchTicket>, skiff_api::ApiError> {
        if self.per_user == 0 {
            return Ok(None);
        }
        let mut held = self
            .held
            .lock()
            .map_err(|_| skiff_api::ApiError::Internal("watch counts poisoned".into()))?;
        let n = held.entry(user.to_string()).or_insert(0);
        if *n >= self.per_user {
            return Err(skiff_api::ApiError::TooManyRequests(format!(
                "too many watches open for user {user:?} (at most {}); close some and try again",
                self.per_user
            )));
        }
        *n += 1;
        Ok(Some(WatchTicket {
            caps: self.clone(),
            user: user.to_string(),
        }))
    }
}

impl Drop for WatchTicket {
    fn drop(&mut self) {
        if let Ok(mut held) = self.caps.held.lock() {
            if let Some(n) = held.get_mut(&self.user) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&self.user);
                }
            }
        }
    }
}

/// Whether a request runs as long as the client wants (and so holds no slot).
pub fn is_long_running(path: &str, query: Option<&str>) -> bool {
    let params = query.unwrap_or("");
    let flag = |name: &str| {
        params
            .split('&')
            .any(|p| p == format!("{name}=true") || p == format!("{name}=1"))
    };
    flag("watch")
        || path.ends_with("/exec")
        || path.ends_with("/attach")
        || path.ends_with("/portforward")
        || (path.ends_with("/log") && flag("follow"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_stop_at_their_share_and_the_system_gets_the_rest() {
        let limits = Inflight::new(10, 5);
        let users: Vec<Permit> = (0..8)
            .map(|_| limits.try_acquire(false, false).expect("a user's slot"))
            .collect();
        assert!(
            limits.try_acquire(false, false).is_none(),
            "users' share is 8 of 10"
        );
        let system: Vec<Permit> = (0..2)
            .map(|_| limits.try_acquire(false, true).expect("the reserved slots"))
            .collect();
        assert!(limits.try_acquire(false, true).is_none(), "all 10 taken");
        assert!(
            limits.try_acquire(true, false).is_some(),
            "writes have their own pool"
        );
        drop(users);
        assert!(
            limits.try_acquire(false, false).is_some(),
            "slots come back"
        );
        drop(system);
        let unlimited = Inflight::new(0, 0);
        let many: Vec<Permit> = (0..1000)
            .filter_map(|_| unlimited.try_acquire(false, false))
            .collect();
        assert_eq!(many.len(), 1000);
    }

    #[test]
    fn watches_and_streams_hold_no_slot() {
        assert!(is_long_running(
            "/api/v1/pods",
            Some("watch=true&resourceVersion=5")
        ));
        assert!(is_long_running(
            "/api/v1/namespaces/a/pods/p/exec",
            Some("command=sh")
        ));
        assert!(is_long_running(
            "/api/v1/namespaces/a/pods/p/log",
            Some("follow=true")
        ));
        assert!(!is_long_running(
            "/api/v1/namespaces/a/pods/p/log",
            Some("tailLines=5")
        ));
        assert!(!is_long_running("/api/v1/pods", Some("limit=500")));
    }

    #[test]
    fn watches_are_capped_per_user_and_given_back() {
        let caps = WatchCaps::new(2);
        let a = caps.admit("ann").expect("first");
        let _b = caps.admit("ann").expect("second");
        let refused = caps.admit("ann").err().expect("third refused");
        assert_eq!(refused.code(), 429);
        assert!(caps.admit("bob").is_ok(), "another user");
        drop(a);
        assert!(caps.admit("ann").is_ok(), "given back");
        assert!(WatchCaps::new(0).admit("ann").expect("no cap").is_none());
    }
}

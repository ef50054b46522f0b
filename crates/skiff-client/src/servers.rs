//! The API servers a client knows, and which it talks to now (failover).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

/// Every API server a client may use, and the one it uses now. An agent is given one address
/// for its first contact and then learns the others (`refresh_servers`), as k3s's agent-side
/// load balancer does: when the server it talks to stops answering, the next request goes to
/// another, so one server's death does not take every node that joined through it down too.
pub(crate) struct Servers {
    /// Base URLs without a trailing slash; the address first given stays in the list, last,
    /// as the fallback should every learned address fail.
    urls: RwLock<Vec<String>>,
    current: AtomicUsize,
}

impl Servers {
    pub(crate) fn new(url: &str) -> Servers {
        Servers {
            urls: RwLock::new(vec![url.trim_end_matches('/').to_string()]),
            current: AtomicUsize::new(0),
        }
    }

    pub(crate) fn urls(&self) -> std::sync::RwLockReadGuard<'_, Vec<String>> {
        self.urls.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn current(&self) -> String {
        let urls = self.urls();
        let i = self.current.load(Ordering::Relaxed) % urls.len().max(1);
        urls.get(i).cloned().unwrap_or_default()
    }

    /// `url` failed to connect: moves on to the next server (unless another request already
    /// did) and returns `url` rewritten for it.
    pub(crate) fn fail_over(&self, url: &str) -> String {
        let urls = self.urls();
        let Some(failed) = urls.iter().position(|base| starts_with_base(url, base)) else {
            return url.to_string();
        };
        let next = (failed + 1) % urls.len();
        let moved = self
            .current
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if moved && next != failed {
            tracing::warn!(
                unreachable = %urls[failed],
                next = %urls[next],
                "API server unreachable; failing over"
            );
        }
        let now = self.current.load(Ordering::Relaxed) % urls.len();
        format!("{}{}", urls[now], &url[urls[failed].len()..])
    }

    /// Replaces the learned servers, keeping the one in use when it is still a member.
    pub(crate) fn set(&self, learned: Vec<String>) {
        let mut urls = self.urls.write().unwrap_or_else(|p| p.into_inner());
        let in_use = urls
            .get(self.current.load(Ordering::Relaxed) % urls.len().max(1))
            .cloned();
        let first_given = urls.last().cloned();
        let mut next: Vec<String> = learned
            .into_iter()
            .map(|u| u.trim_end_matches('/').to_string())
            .collect();
        next.sort();
        next.dedup();
        // The address first given (perhaps a name or a load balancer) was for the first
        // contact: a learned server takes over unless the one in use is a member itself.
        let keep = in_use
            .and_then(|u| next.iter().position(|n| *n == u))
            .unwrap_or(0);
        if let Some(first) = first_given {
            if !next.contains(&first) {
                next.push(first);
            }
        }
        *urls = next;
        self.current.store(keep, Ordering::Relaxed);
    }
}

/// Whether `url` is under `base` (`https://a:6443/api` is under `https://a:6443`, not under
/// `https://a:644`).
pub(crate) fn starts_with_base(url: &str, base: &str) -> bool {
    url.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
}

//! Bounds on what one service port holds: TCP connections or UDP sessions, in all and per
//! client address. The excess is refused at once (a TCP reset; a datagram dropped), not queued:
//! a flood from one source can neither starve other clients of the service nor use up the
//! node's file descriptors (each proxied connection costs two), which the API server and the
//! agent share when they run in one process.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// How much one service port may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections (or sessions) through the port, from all clients.
    pub per_port: usize,
    /// Connections (or sessions) from one client address.
    pub per_source: usize,
}

/// 4,096 per port, 512 per client: far beyond what an edge service sees from one client, and
/// well inside the open-file limit the agent raises itself to at start.
pub const DEFAULT: Limits = Limits {
    per_port: 4096,
    per_source: 512,
};

/// Counts what a port holds.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    held: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection or session; giving it back happens on drop.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    source: IpAddr,
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            held: Mutex::new((0, HashMap::new())),
        })
    }

    /// A ticket for a new connection from `source`, or `None` when a limit is reached.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Option<Ticket> {
        let mut held = self.held.lock().ok()?;
        let (total, by_source) = &mut *held;
        let from_source = by_source.get(&source).copied().unwrap_or(0);
        if *total >= self.limits.per_port || from_source >= self.limits.per_source {
            return None;
        }
        *total += 1;
        by_source.insert(source, from_source + 1);
        Some(Ticket {
            admission: self.clone(),
            source,
        })
    }

    /// Connections held now: in all, and from `source`.
    pub fn held(&self, source: IpAddr) -> (usize, usize) {
        self.held
            .lock()
            .map(|h| (h.0, h.1.get(&source).copied().unwrap_or(0)))
            .unwrap_or_default()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(mut held) = self.admission.held.lock() {
            let (total, by_source) = &mut *held;
            *total = total.saturating_sub(1);
            if let Some(n) = by_source.get_mut(&self.source) {
                *n -= 1;
                if *n == 0 {
                    by_source.remove(&self.source);
                }
            }
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit, as Go programs do at start
/// (Rust's standard library does not): the soft limit is often 1,024, which a few hundred
/// proxied connections would use up.
pub fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "raising the open-files limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "reading the open-files limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_and_a_port_are_bounded_and_tickets_give_back_on_drop() {
        let admission = Admission::new(Limits {
            per_port: 3,
            per_source: 2,
        });
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let c: IpAddr = "10.0.0.3".parse().expect("ip");
        let a1 = admission.admit(a).expect("first");
        let _a2 = admission.admit(a).expect("second");
        assert!(admission.admit(a).is_none(), "a third from one source");
        let _b1 = admission.admit(b).expect("another source");
        assert!(admission.admit(c).is_none(), "the port is full");
        drop(a1);
        assert_eq!(admission.held(a), (2, 1));
        assert!(admission.admit(c).is_some(), "room again");
    }
}

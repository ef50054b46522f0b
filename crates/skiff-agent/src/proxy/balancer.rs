//! Choosing an endpoint for a new connection (pure; no sockets here).
//!
//! A Service picks how it spreads traffic with the annotation `skiff.io/load-balancer`:
//!
//! | value | how the next endpoint is chosen |
//! |---|---|
//! | `round-robin` (default) | in turn, each ready endpoint once per round |
//! | `random` | uniformly at random |
//! | `weighted` | in proportion to each pod's weight: the annotation `skiff.io/weight` on the pod (default 1), smooth weighted round-robin as nginx does it |
//!
//! `sessionAffinity: ClientIP` overrides all three for a client seen within the affinity
//! timeout: it goes back to the endpoint it had, while that endpoint is still there.
//!
//! Smooth weighted round-robin, worked through for weights a=5, b=1, c=1 (total 7): every pick
//! adds each endpoint's weight to its `current`, takes the largest, and subtracts the total from
//! the winner. currents go (5,1,1)→a→(-2,1,1), (3,2,2)→a→(-4,2,2), (1,3,3)→b→(1,-4,3),
//! (6,-3,4)→a→(-1,-3,4), (4,-2,5)→c→(4,-2,-2), (9,-1,-1)→a→(2,-1,-1), (7,0,0)→a→(0,0,0):
//! a a b a c a a … five a's, one b, one c per seven picks, never more than two a's in a row
//! (ties go to the endpoint listed first).
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::error::AgentError;

/// The Service annotation that picks the algorithm.
pub const POLICY_ANNOTATION: &str = "skiff.io/load-balancer";
/// The Pod annotation that gives an endpoint its weight under `weighted`.
pub const WEIGHT_ANNOTATION: &str = "skiff.io/weight";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    #[default]
    RoundRobin,
    Random,
    Weighted,
}

impl Policy {
    /// The policy named by the annotation; the proxy falls back to round-robin on an unknown
    /// value, and says so.
    pub fn from_annotation(value: Option<&str>) -> Result<Policy, AgentError> {
        match value.map(str::trim) {
            None | Some("") | Some("round-robin") => Ok(Policy::RoundRobin),
            Some("random") => Ok(Policy::Random),
            Some("weighted") => Ok(Policy::Weighted),
            Some(other) => Err(AgentError::UnknownPolicy {
                annotation: POLICY_ANNOTATION,
                value: other.to_string(),
            }),
        }
    }
}

/// One backend of a service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub addr: SocketAddr,
    pub weight: u32,
}

/// The endpoints of one service port and the state of the algorithm over them.
#[derive(Debug)]
pub struct Balancer {
    policy: Policy,
    affinity: Option<Duration>,
    backends: Vec<Backend>,
    next: usize,
    current: Vec<i64>,
    sticky: HashMap<IpAddr, (SocketAddr, Instant)>,
    rng: u64,
}

impl Balancer {
    pub fn new(policy: Policy, affinity: Option<Duration>) -> Balancer {
        Balancer {
            policy,
            affinity,
            backends: Vec::new(),
            next: 0,
            current: Vec::new(),
            sticky: HashMap::new(),
            // Seeded from the clock: random picks differ between proxies and runs.
            rng: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
                | 1,
        }
    }

    /// Replaces the backends (keeping the round-robin position and weighted state of those
    /// that stay, so an unrelated change does not reset the rotation).
    pub fn update(&mut self, policy: Policy, affinity: Option<Duration>, backends: Vec<Backend>) {
        if policy == self.policy && affinity == self.affinity && backends == self.backends {
            return;
        }
        let old: HashMap<SocketAddr, i64> = self
            .backends
            .iter()
            .zip(&self.current)
            .map(|(b, c)| (b.addr, *c))
            .collect();
        self.current = backends
            .iter()
            .map(|b| old.get(&b.addr).copied().unwrap_or(0))
            .collect();
        self.sticky
            .retain(|_, (addr, _)| backends.iter().any(|b| b.addr == *addr));
        self.policy = policy;
        self.affinity = affinity;
        self.backends = backends;
    }

    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    pub fn len(&self) -> usize {
        self.backends.len()
    }

    pub fn contains(&self, addr: SocketAddr) -> bool {
        self.backends.iter().any(|b| b.addr == addr)
    }

    /// The endpoint for a new connection from `client`, skipping those in `tried` (endpoints
    /// that refused this connection already). `None` when nothing is left.
    pub fn pick(
        &mut self,
        client: IpAddr,
        tried: &[SocketAddr],
        now: Instant,
    ) -> Option<SocketAddr> {
        if let Some(timeout) = self.affinity {
            if let Some((addr, seen)) = self.sticky.get(&client).copied() {
                if now.duration_since(seen) < timeout && !tried.contains(&addr) {
                    self.sticky.insert(client, (addr, now));
                    return Some(addr);
                }
            }
        }
        let candidates: Vec<usize> = (0..self.backends.len())
            .filter(|&i| !tried.contains(&self.backends[i].addr))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let chosen = match self.policy {
            Policy::RoundRobin => {
                // The first candidate at or after the rotation point.
                let n = self.backends.len();
                let i = (0..n)
                    .map(|k| (self.next + k) % n)
                    .find(|i| candidates.contains(i))?;
                self.next = (i + 1) % n;
                i
            }
            Policy::Random => candidates[(self.random() % candidates.len() as u64) as usize],
            Policy::Weighted => {
                let total: i64 = candidates
                    .iter()
                    .map(|&i| i64::from(self.backends[i].weight))
                    .sum();
                for &i in &candidates {
                    self.current[i] += i64::from(self.backends[i].weight);
                }
                let best = candidates
                    .iter()
                    .copied()
                    .max_by_key(|&i| (self.current[i], std::cmp::Reverse(i)))?;
                self.current[best] -= total;
                best
            }
        };
        let addr = self.backends[chosen].addr;
        if self.affinity.is_some() {
            self.sticky.insert(client, (addr, now));
        }
        Some(addr)
    }

    /// xorshift64*: enough randomness to spread load, no dependency for it.
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(weights: &[u32]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Backend {
                addr: SocketAddr::from(([10, 0, 0, i as u8 + 1], 80)),
                weight: *w,
            })
            .collect()
    }

    fn counts(b: &mut Balancer, picks: usize) -> Vec<usize> {
        let mut counts = vec![0; b.len()];
        let client = IpAddr::from([10, 9, 9, 9]);
        for _ in 0..picks {
            let addr = b.pick(client, &[], Instant::now()).expect("a backend");
            counts[(addr.ip().to_string().rsplit('.').next().expect("octet"))
                .parse::<usize>()
                .expect("number")
                - 1] += 1;
        }
        counts
    }

    #[test]
    fn policies_split_traffic_as_documented() {
        type Case<'a> = (Policy, &'a [u32], usize, &'a [usize], usize);
        let cases: &[Case] = &[
            // policy, weights, picks, expected counts, allowed deviation
            (Policy::RoundRobin, &[1, 1, 1], 300, &[100, 100, 100], 0),
            (Policy::RoundRobin, &[5, 1, 1], 300, &[100, 100, 100], 0),
            (Policy::Weighted, &[5, 1, 1], 700, &[500, 100, 100], 0),
            (Policy::Weighted, &[3, 1], 400, &[300, 100], 0),
            (Policy::Random, &[1, 1, 1], 3000, &[1000, 1000, 1000], 150),
        ];
        for (policy, weights, picks, expected, slack) in cases {
            let mut b = Balancer::new(*policy, None);
            b.update(*policy, None, backends(weights));
            let got = counts(&mut b, *picks);
            for (g, e) in got.iter().zip(expected.iter()) {
                assert!(
                    g.abs_diff(*e) <= *slack,
                    "{policy:?} {weights:?}: got {got:?}, expected {expected:?}"
                );
            }
        }
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves() {
        let mut b = Balancer::new(Policy::Weighted, None);
        b.update(Policy::Weighted, None, backends(&[5, 1, 1]));
        let client = IpAddr::from([10, 9, 9, 9]);
        let order: Vec<u8> = (0..7)
            .map(|_| match b.pick(client, &[], Instant::now()) {
                Some(SocketAddr::V4(a)) => a.ip().octets()[3],
                other => panic!("{other:?}"),
            })
            .collect();
        // The sequence worked through in the module comment: a a b a c a a.
        assert_eq!(order, vec![1, 1, 2, 1, 3, 1, 1]);
    }

    #[test]
    fn refused_endpoints_are_skipped_and_none_is_left_at_the_end() {
        let mut b = Balancer::new(Policy::RoundRobin, None);
        let all = backends(&[1, 1]);
        b.update(Policy::RoundRobin, None, all.clone());
        let client = IpAddr::from([10, 9, 9, 9]);
        let first = b.pick(client, &[], Instant::now()).expect("one");
        let second = b.pick(client, &[first], Instant::now()).expect("other");
        assert_ne!(first, second);
        assert_eq!(b.pick(client, &[first, second], Instant::now()), None);
    }

    #[test]
    fn client_ip_affinity_sticks_until_the_timeout_or_the_endpoint_goes() {
        let timeout = Some(Duration::from_secs(10));
        let mut b = Balancer::new(Policy::RoundRobin, timeout);
        b.update(Policy::RoundRobin, timeout, backends(&[1, 1, 1]));
        let t0 = Instant::now();
        let alice = IpAddr::from([10, 1, 1, 1]);
        let first = b.pick(alice, &[], t0).expect("pick");
        for k in 1..5 {
            assert_eq!(b.pick(alice, &[], t0 + Duration::from_secs(k)), Some(first));
        }
        // Someone else still rotates.
        let bob = IpAddr::from([10, 1, 1, 2]);
        assert_ne!(b.pick(bob, &[], t0), Some(first));
        // The endpoint is removed: alice moves on.
        let rest: Vec<Backend> = backends(&[1, 1, 1])
            .into_iter()
            .filter(|x| x.addr != first)
            .collect();
        b.update(Policy::RoundRobin, timeout, rest);
        assert_ne!(b.pick(alice, &[], t0 + Duration::from_secs(5)), Some(first));
    }

    #[test]
    fn unknown_policies_are_reported() {
        assert_eq!(Policy::from_annotation(None).ok(), Some(Policy::RoundRobin));
        assert_eq!(
            Policy::from_annotation(Some("weighted")).ok(),
            Some(Policy::Weighted)
        );
        assert!(Policy::from_annotation(Some("least-conn"))
            .expect_err("unknown")
            .to_string()
            .contains("least-conn"));
    }
}

//! Counting what the service proxy forwards: each new TCP connection (and each new UDP
//! session) to an endpoint, by Service and by endpoint address.
//!
//! The counters are cumulative, like a Prometheus counter; the sampler turns the difference
//! between two readings into per-second rates ([`rates`]). Counting costs the proxy one atomic
//! add for the Service (its listeners hold the counter) and one short lock for the endpoint.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The proxy's cumulative counts, shared by every listener and read by the sampler. Entries
/// live as long as the agent: Services and endpoint addresses are few, and a counter that
/// vanished and came back would read as a reset.
#[derive(Debug, Default)]
pub struct RequestCounter {
    services: Mutex<BTreeMap<(String, String), Arc<AtomicU64>>>,
    endpoints: Mutex<HashMap<IpAddr, u64>>,
}

/// One reading of every counter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// By (namespace, Service name).
    pub services: BTreeMap<(String, String), u64>,
    pub endpoints: BTreeMap<IpAddr, u64>,
}

/// What the listeners of one Service's ports count into.
#[derive(Debug, Clone)]
pub struct ServiceTally {
    service: Arc<AtomicU64>,
    counter: Arc<RequestCounter>,
}

impl ServiceTally {
    /// One connection (or UDP session) forwarded to `endpoint`.
    pub fn forwarded(&self, endpoint: IpAddr) {
        self.service.fetch_add(1, Ordering::Relaxed);
        let mut endpoints = self
            .counter
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *endpoints.entry(endpoint).or_insert(0) += 1;
    }
}

impl RequestCounter {
    /// The tally of Service `namespace/name` (all its ports share one).
    pub fn tally(self: &Arc<Self>, namespace: &str, name: &str) -> ServiceTally {
        let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
        let service = services
            .entry((namespace.to_string(), name.to_string()))
            .or_default()
            .clone();
        ServiceTally {
            service,
            counter: self.clone(),
        }
    }

    /// Every counter as of now.
    pub fn totals(&self) -> Totals {
        let services = self
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(key, n)| (key.clone(), n.load(Ordering::Relaxed)))
            .collect();
        let endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(ip, n)| (*ip, *n))
            .collect();
        Totals {
            services,
            endpoints,
        }
    }
}

/// Per-second rates between two readings of cumulative counters `window_seconds` apart.
///
/// A key is reported when it counted something in this window, or when it was `active` (had
/// a rate above zero) in the window before: a Service whose traffic stops reports 0 once,
/// so a reader sees it fall, and is then left out until it counts again. A counter below its
/// previous reading was reset; all of it counts as new. A 15 s window in which a counter went
/// from 300 to 450 is 10 per second.
pub fn rates<K: Ord + Clone>(
    before: &BTreeMap<K, u64>,
    after: &BTreeMap<K, u64>,
    active: &BTreeSet<K>,
    window_seconds: f64,
) -> Vec<(K, f64)> {
    if window_seconds <= 0.0 {
        return Vec::new();
    }
    after
        .iter()
        .filter_map(|(key, now)| {
            let then = before.get(key).copied().unwrap_or(0);
            let delta = if *now >= then { now - then } else { *now };
            (delta > 0 || active.contains(key))
                .then(|| (key.clone(), delta as f64 / window_seconds))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&'static str, u64)]) -> BTreeMap<&'static str, u64> {
        pairs.iter().copied().collect()
    }

    /// Counters `before` and `after` a window, which keys were `active` in the one before,
    /// and the rates wanted.
    struct Case {
        name: &'static str,
        before: &'static [(&'static str, u64)],
        after: &'static [(&'static str, u64)],
        active: &'static [&'static str],
        window: f64,
        want: &'static [(&'static str, f64)],
    }

    #[test]
    fn rates_are_deltas_over_the_window() {
        let case = |name, before, after, active, window, want| Case {
            name,
            before,
            after,
            active,
            window,
            want,
        };
        #[rustfmt::skip]
        let cases = [
            //   name                           before           after            active     window  want
            case("steady",                      &[("web", 300)], &[("web", 450)], &[],       15.0,   &[("web", 10.0)]),
            case("new key counts all",          &[],             &[("web", 30)],  &[],       15.0,   &[("web", 2.0)]),
            case("quiet, not active: left out", &[("web", 30)],  &[("web", 30)],  &[],       15.0,   &[]),
            case("just went quiet: 0 once",     &[("web", 30)],  &[("web", 30)],  &["web"],  15.0,   &[("web", 0.0)]),
            case("reset: all of it is new",     &[("web", 300)], &[("web", 6)],   &[],       3.0,    &[("web", 2.0)]),
            case("gone keys are dropped",       &[("old", 9)],   &[],             &["old"],  15.0,   &[]),
            case("no window: no rates",         &[("web", 1)],   &[("web", 5)],   &[],       0.0,    &[]),
        ];
        for c in cases {
            let active: BTreeSet<&str> = c.active.iter().copied().collect();
            let got = rates(&counts(c.before), &counts(c.after), &active, c.window);
            assert_eq!(got, c.want.to_vec(), "{}", c.name);
        }
    }

    #[test]
    fn tallies_count_by_service_and_endpoint() {
        let counter = Arc::new(RequestCounter::default());
        let http = counter.tally("default", "web");
        let https = counter.tally("default", "web");
        let db = counter.tally("data", "db");
        let a: IpAddr = [10, 42, 0, 7].into();
        let b: IpAddr = [10, 42, 0, 8].into();
        http.forwarded(a);
        https.forwarded(b);
        db.forwarded(a);
        let totals = counter.totals();
        assert_eq!(
            totals.services,
            BTreeMap::from([
                (("data".to_string(), "db".to_string()), 1),
                (("default".to_string(), "web".to_string()), 2),
            ])
        );
        assert_eq!(totals.endpoints, BTreeMap::from([(a, 2), (b, 1)]));
    }
}

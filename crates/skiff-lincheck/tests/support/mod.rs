//! Random histories that are linearizable by construction, for the randomized and the
//! big-history tests.
//!
//! The generator runs the model itself: operation `i` takes effect at instant `10 * i + 5` (its
//! linearization point) on a sequential store, and the client that sends it is given an interval
//! around that instant, so the history is linearizable no matter how much the intervals overlap.
//! Clients are sequential (a client's next call comes after its previous return), as real ones.

#![allow(dead_code)] // each test binary uses a different part

use std::collections::HashMap;

use skiff_lincheck::{Entry, History, Op, Outcome};

/// xorshift64*: small, deterministic, good enough to shuffle test histories.
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        // xorshift must not start at 0; mixing the seed also decorrelates nearby seeds.
        Prng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

#[derive(Clone, Copy)]
pub struct Shape {
    pub keys: usize,
    pub ops: usize,
    pub clients: usize,
    /// How far (in instants) a call may come before, and a return after, the linearization
    /// point (points are 10 apart); clients are never short while `spread < 10 * (clients - 1)`,
    /// and at most `clients` operations are ever in flight.
    pub spread: u64,
    /// Percentage of writes whose answer is lost (half of them then never take effect) and
    /// of reads whose answer is lost.
    pub unknown_percent: u64,
}

/// A generated history and what the corruption tests need to know about it.
pub struct Generated {
    pub history: History,
    /// For each value: the return time of the compare-and-set (with a definite `Ok`) that
    /// replaced it. A read starting after that can never see the value again — values are
    /// unique, and the CAS proves the value was current just before it.
    pub replaced_at: HashMap<String, u64>,
    /// Key of each value.
    pub key_of: HashMap<String, String>,
}

pub fn generate(seed: u64, shape: Shape) -> Generated {
    let mut rng = Prng::new(seed);
    let mut history = History::new();
    let mut state: Vec<Option<String>> = vec![None; shape.keys];
    let mut written: Vec<Vec<String>> = vec![Vec::new(); shape.keys];
    let mut free_at = vec![0u64; shape.clients];
    let mut client_id: Vec<u64> = (0..shape.clients as u64).collect();
    let mut next_client = shape.clients as u64;
    let mut next_value = 0u64;
    let mut replaced_at = HashMap::new();
    let mut key_of = HashMap::new();

    for i in 0..shape.ops as u64 {
        let point = 10 * i + 5 + shape.spread;
        let free: Vec<usize> = (0..shape.clients)
            .filter(|&c| free_at[c] <= point)
            .collect();
        let Some(&slot) = free.get(rng.below(free.len().max(1) as u64) as usize) else {
            continue; // only with a spread too wide for the clients: the op is skipped
        };
        let call = point - rng.below(shape.spread + 1).min(point - free_at[slot]);
        let ret = point + rng.below(shape.spread + 1);
        free_at[slot] = ret + 1;

        let k = rng.below(shape.keys as u64) as usize;
        let key = format!("cm-{k}");
        let current = state[k].clone();
        let lost = rng.percent(shape.unknown_percent);
        let choice = rng.below(100);
        let (op, outcome, effect) = if choice < 40 {
            let outcome = match &current {
                Some(v) => Outcome::Found(v.clone()),
                None => Outcome::NotFound,
            };
            (Op::Get, outcome, None)
        } else if choice < 55 {
            let v = format!("v{next_value}");
            next_value += 1;
            let outcome = match current {
                Some(_) => Outcome::AlreadyExists,
                None => Outcome::Ok,
            };
            let effect = current.is_none().then(|| Some(v.clone()));
            (Op::Create(v), outcome, effect)
        } else if choice < 88 {
            let new = format!("v{next_value}");
            next_value += 1;
            // Usually the value the client last saw is current; sometimes it is stale.
            let expected = match (&current, written[k].is_empty()) {
                (Some(v), _) if rng.percent(75) => v.clone(),
                (_, false) => written[k][rng.below(written[k].len() as u64) as usize].clone(),
                (_, true) => "never-written".to_string(),
            };
            let (outcome, effect) = match &current {
                None => (Outcome::NotFound, None),
                Some(v) if *v == expected => (Outcome::Ok, Some(Some(new.clone()))),
                Some(_) => (Outcome::Conflict, None),
            };
            if outcome == Outcome::Ok && !lost {
                replaced_at.insert(expected.clone(), ret);
            }
            (Op::Update { expected, new }, outcome, effect)
        } else {
            let outcome = match current {
                Some(_) => Outcome::Ok,
                None => Outcome::NotFound,
            };
            let effect = current.is_some().then_some(None);
            (Op::Delete, outcome, effect)
        };

        let client = client_id[slot];
        let (outcome, effect) = match lost {
            // A lost write took effect or not, as a coin says; the client never learns which,
            // and like a crashed Jepsen process it continues under a new id.
            true => {
                client_id[slot] = next_client;
                next_client += 1;
                (Outcome::Unknown, effect.filter(|_| rng.percent(50)))
            }
            false => (outcome, effect),
        };
        if let Some(after) = effect {
            if let Some(v) = &after {
                written[k].push(v.clone());
                key_of.insert(v.clone(), key.clone());
            }
            state[k] = after;
        }
        history.push(Entry {
            client,
            key,
            call,
            ret,
            op,
            outcome,
        });
    }
    Generated {
        history,
        replaced_at,
        key_of,
    }
}

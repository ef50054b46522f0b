//! Lowe's memo for the search: which configurations have been explored already.
//!
//! A configuration is what decides how a search can go on: which operations are placed and the
//! key's state. The memo skips a configuration if one seen before *covers* it — not only an
//! equal one: the same definite operations placed and the same state, and no open-ended
//! (unknown-outcome) operation placed there that is not placed here. An open-ended operation
//! still unplaced is one more thing the search may use or leave for the end, so whatever
//! completes from here completes from there too, and "there" is either still being explored
//! (on the current path) or has failed.
//!
//! Memory is what limits how long a search can run, so the sets are stored compactly: each
//! distinct set of definite operations once, and per configuration only the bits of the
//! open-ended operations, which are few.

use std::collections::HashMap;

use crate::model::State;

/// The set of operations placed so far, split into definite ones (with a return time) and
/// open-ended ones, each with its own bits.
pub(crate) struct PlacedSet {
    definite: Vec<u64>,
    open_ended: Vec<u64>,
    /// XOR of `mix(i)` over the definite operations placed, kept up to date on every change so
    /// that a lookup costs no pass over the bits.
    hash: u64,
    /// For each operation: whether it is open-ended, and its index among its kind.
    slot: Vec<(bool, usize)>,
}

impl PlacedSet {
    /// `open_ended[i]`: whether operation `i` has no return time.
    pub fn new(open_ended: impl Iterator<Item = bool>) -> PlacedSet {
        let (mut definite_count, mut open_count) = (0, 0);
        let slot: Vec<(bool, usize)> = open_ended
            .map(|open| {
                let counter = match open {
                    true => &mut open_count,
                    false => &mut definite_count,
                };
                *counter += 1;
                (open, *counter - 1)
            })
            .collect();
        PlacedSet {
            definite: vec![0; definite_count.div_ceil(64)],
            open_ended: vec![0; open_count.div_ceil(64)],
            hash: 0,
            slot,
        }
    }

    pub fn contains(&self, i: usize) -> bool {
        let (open, k) = self.slot[i];
        let words = match open {
            true => &self.open_ended,
            false => &self.definite,
        };
        words[k / 64] & (1 << (k % 64)) != 0
    }

    pub fn toggle(&mut self, i: usize) {
        let (open, k) = self.slot[i];
        match open {
            true => self.open_ended[k / 64] ^= 1 << (k % 64),
            false => {
                self.definite[k / 64] ^= 1 << (k % 64);
                self.hash ^= mix(k as u64);
            }
        }
    }
}

/// splitmix64's finaliser: spreads consecutive indexes over all 64 bits.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Default)]
pub(crate) struct Seen {
    /// Every distinct set of definite operations met, stored once.
    definite_sets: Vec<Box<[u64]>>,
    /// `PlacedSet::hash` → indexes into `definite_sets` with that hash.
    by_hash: HashMap<u64, Vec<u32>>,
    /// (definite set, state) → the open-ended parts of the configurations recorded with them.
    configurations: HashMap<(u32, State), Vec<Box<[u64]>>>,
}

impl Seen {
    /// Whether a recorded configuration covers this one.
    pub fn covers(&self, placed: &PlacedSet, state: State) -> bool {
        self.find(placed)
            .is_some_and(|d| self.covered_with(d, placed, state))
    }

    /// Records the configuration unless one recorded covers it; false if one did.
    pub fn insert(&mut self, placed: &PlacedSet, state: State) -> bool {
        let d = match self.find(placed) {
            Some(d) if self.covered_with(d, placed, state) => return false,
            Some(d) => d,
            None => {
                // More distinct sets than u32 can count would take terabytes: the step budget
                // stops the search long before.
                let d = u32::try_from(self.definite_sets.len()).unwrap_or(u32::MAX);
                self.definite_sets
                    .push(placed.definite.clone().into_boxed_slice());
                self.by_hash.entry(placed.hash).or_default().push(d);
                d
            }
        };
        self.configurations
            .entry((d, state))
            .or_default()
            .push(placed.open_ended.clone().into_boxed_slice());
        true
    }

    fn find(&self, placed: &PlacedSet) -> Option<u32> {
        self.by_hash.get(&placed.hash)?.iter().copied().find(|&d| {
            self.definite_sets
                .get(d as usize)
                .is_some_and(|set| **set == *placed.definite)
        })
    }

    fn covered_with(&self, d: u32, placed: &PlacedSet, state: State) -> bool {
        self.configurations.get(&(d, state)).is_some_and(|seen| {
            seen.iter().any(|there| {
                there
                    .iter()
                    .zip(&placed.open_ended)
                    .all(|(there, here)| there & !here == 0)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewer_unknowns_spent_covers_more() {
        // Operations 0 and 2 are definite, 1 and 3 open-ended.
        let mut placed = PlacedSet::new([false, true, false, true].into_iter());
        let mut seen = Seen::default();
        placed.toggle(0);
        assert!(seen.insert(&placed, Some(7)));
        assert!(!seen.insert(&placed, Some(7)), "equal");
        assert!(seen.insert(&placed, None), "another state");
        placed.toggle(1);
        assert!(placed.contains(1) && !placed.contains(3));
        assert!(seen.covers(&placed, Some(7)), "one more unknown spent");
        placed.toggle(0);
        assert!(!seen.covers(&placed, Some(7)), "other definite operations");
        placed.toggle(0);
        placed.toggle(1);
        placed.toggle(2);
        assert!(!seen.covers(&placed, Some(7)), "other definite operations");
    }

    #[test]
    fn more_unknowns_spent_does_not_cover_fewer() {
        let mut placed = PlacedSet::new([false, true].into_iter());
        let mut seen = Seen::default();
        placed.toggle(0);
        placed.toggle(1);
        assert!(seen.insert(&placed, None));
        placed.toggle(1);
        assert!(seen.insert(&placed, None));
    }
}

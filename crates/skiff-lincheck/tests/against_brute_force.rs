//! The checker against a brute-force oracle on thousands of small histories.
//!
//! The checker takes shortcuts for speed — two passes, settling seen unknown writes, merging
//! unread values, skipping twin and no-op placements of unknown writes, pruning dominated
//! states — each argued sound in its own comment. This test does not take the arguments on
//! trust: the oracle below is the definition of linearizability with nothing clever but a memo
//! of exact (placed set, state) pairs, and the two must agree on every history.

mod support;

use std::collections::HashSet;

use skiff_lincheck::{check, CheckOptions, Entry, History, Op, Outcome, Verdict};
use support::{generate, Prng, Shape};

/// Is there an order of the operations that respects real time (an operation that returned
/// before another was called comes first), in which every definite operation gets its answer
/// from a one-at-a-time store, and unknown ones take effect or not?
fn oracle(history: &History) -> bool {
    let ops: Vec<&Entry> = history
        .entries
        .iter()
        .filter(|e| !(e.op == Op::Get && e.outcome == Outcome::Unknown))
        .collect();
    let mut seen = HashSet::new();
    search(&ops, 0, None, &mut seen)
}

fn search(
    ops: &[&Entry],
    placed: u64,
    state: Option<String>,
    seen: &mut HashSet<(u64, Option<String>)>,
) -> bool {
    let definite = |i: usize| ops[i].outcome != Outcome::Unknown;
    let unplaced = |i: usize| placed & (1 << i) == 0;
    if (0..ops.len()).all(|i| !unplaced(i) || !definite(i)) {
        return true;
    }
    if !seen.insert((placed, state.clone())) {
        return false;
    }
    for i in (0..ops.len()).filter(|&i| unplaced(i)) {
        // i can go next only if no unplaced definite operation returned before i was called.
        let blocked = (0..ops.len())
            .any(|j| j != i && unplaced(j) && definite(j) && ops[j].ret < ops[i].call);
        if blocked {
            continue;
        }
        if let Some(after) = apply(&state, ops[i]) {
            if search(ops, placed | (1 << i), after, seen) {
                return true;
            }
        }
    }
    false
}

/// The store, one operation at a time: the state after `entry`, or None if it could not have
/// answered what it did. An unknown outcome is whatever the store would have answered.
fn apply(state: &Option<String>, entry: &Entry) -> Option<Option<String>> {
    let unknown = entry.outcome == Outcome::Unknown;
    let answer = |expected: Outcome, after: Option<String>| {
        (unknown || entry.outcome == expected).then_some(after)
    };
    match (&entry.op, state) {
        (Op::Create(v), None) => answer(Outcome::Ok, Some(v.clone())),
        (Op::Create(_), Some(_)) => answer(Outcome::AlreadyExists, state.clone()),
        (Op::Get, Some(v)) => answer(Outcome::Found(v.clone()), state.clone()),
        (Op::Get, None) => answer(Outcome::NotFound, None),
        (Op::Update { expected, new }, Some(v)) if v == expected => {
            answer(Outcome::Ok, Some(new.clone()))
        }
        (Op::Update { .. }, Some(_)) => answer(Outcome::Conflict, state.clone()),
        (Op::Update { .. }, None) => answer(Outcome::NotFound, None),
        (Op::Delete, Some(_)) => answer(Outcome::Ok, None),
        (Op::Delete, None) => answer(Outcome::NotFound, None),
        (Op::DeleteIf { expected }, Some(v)) if v == expected => answer(Outcome::Ok, None),
        (Op::DeleteIf { .. }, Some(_)) => answer(Outcome::Conflict, state.clone()),
        (Op::DeleteIf { .. }, None) => answer(Outcome::NotFound, None),
    }
}

/// A history of `n` operations on one key with random intervals, operations and answers
/// (each answer one its operation can have), over few values so that they collide.
fn random_history(rng: &mut Prng, n: usize) -> History {
    let mut history = History::new();
    let mut written: Vec<String> = vec!["ghost".to_string()];
    for i in 0..n {
        let call = rng.below(30);
        let ret = call + rng.below(12);
        let pick =
            |rng: &mut Prng, from: &[String]| from[rng.below(from.len() as u64) as usize].clone();
        let (op, outcomes) = match rng.below(5) {
            0 => {
                let v = format!("w{i}");
                written.push(v.clone());
                (Op::Create(v), vec![Outcome::Ok, Outcome::AlreadyExists])
            }
            1 => {
                let found = Outcome::Found(pick(rng, &written));
                (Op::Get, vec![found, Outcome::NotFound])
            }
            2 => {
                let new = format!("w{i}");
                let expected = pick(rng, &written);
                written.push(new.clone());
                let outcomes = vec![Outcome::Ok, Outcome::Conflict, Outcome::NotFound];
                (Op::Update { expected, new }, outcomes)
            }
            3 => {
                let expected = pick(rng, &written);
                let outcomes = vec![Outcome::Ok, Outcome::Conflict, Outcome::NotFound];
                (Op::DeleteIf { expected }, outcomes)
            }
            _ => (Op::Delete, vec![Outcome::Ok, Outcome::NotFound]),
        };
        let outcome = match rng.percent(20) {
            true => Outcome::Unknown,
            false => outcomes[rng.below(outcomes.len() as u64) as usize].clone(),
        };
        history
            .op(rng.below(4), "k", call..ret)
            .with(op)
            .outcome(outcome);
    }
    history
}

/// A linearizable history from the generator, with one answer changed half of the time.
fn mutated_history(seed: u64, rng: &mut Prng) -> History {
    let shape = Shape {
        keys: 1,
        ops: 7 + rng.below(4) as usize,
        clients: 4,
        spread: 25,
        unknown_percent: 25,
    };
    let mut history = generate(seed, shape).history;
    if rng.percent(50) && !history.is_empty() {
        let i = rng.below(history.len() as u64) as usize;
        let entry = &mut history.entries[i];
        entry.outcome = match (&entry.op, rng.below(3)) {
            (Op::Get, 0) => Outcome::NotFound,
            (Op::Get, _) => Outcome::Found(format!("v{}", rng.below(6))),
            (Op::Update { .. } | Op::DeleteIf { .. }, 0) => Outcome::Conflict,
            (_, 0) => Outcome::NotFound,
            (_, 1) => Outcome::Ok,
            _ => Outcome::AlreadyExists,
        };
        if history.validate().is_err() {
            history.entries[i].outcome = Outcome::Unknown;
        }
    }
    history
}

#[test]
fn the_checker_agrees_with_brute_force() {
    let (mut linearizable, mut not) = (0, 0);
    for seed in 0..4000u64 {
        let mut rng = Prng::new(seed);
        let history = match seed % 2 {
            0 => {
                let n = 5 + rng.below(5) as usize;
                random_history(&mut rng, n)
            }
            _ => mutated_history(seed, &mut rng),
        };
        let expected = oracle(&history);
        let report = check(&history, &CheckOptions::default()).expect("a well-formed history");
        let got = match report.verdict() {
            Verdict::Linearizable => true,
            Verdict::Violation => false,
            Verdict::Unknown => panic!("seed {seed}: small histories must be decided"),
        };
        if got != expected {
            let mut text = Vec::new();
            history.write_jsonl(&mut text).ok();
            panic!(
                "seed {seed}: oracle says {expected}, checker says {got}\n{}\n{report}",
                String::from_utf8_lossy(&text)
            );
        }
        match expected {
            true => linearizable += 1,
            false => not += 1,
        }
    }
    println!("{linearizable} linearizable, {not} not");
    assert!(
        linearizable > 800 && not > 800,
        "{linearizable} / {not}: too one-sided"
    );
}

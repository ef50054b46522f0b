//! Micro-benchmark: histories of the size a chaos run produces must be checked in seconds.
//! Nothing is asserted about time (machines vary); run with `--nocapture` to see it:
//! `cargo test -p skiff-lincheck --release --test big_history -- --nocapture`.
//!
//! Proving a violation costs more than accepting a valid history: every order up to the bad
//! operation has to be ruled out. So each shape is measured twice, as generated (valid) and
//! with one read halfway through made to return a value nobody wrote.

mod support;

use std::time::Instant;

use skiff_lincheck::{check, CheckOptions, History, Outcome, Verdict};
use support::{generate, Shape};

fn timed(history: &History) -> (Verdict, String) {
    let started = Instant::now();
    let report = check(history, &CheckOptions::default()).expect("a well-formed history");
    let took = started.elapsed();
    (
        report.verdict(),
        format!("{took:?}, {} search steps", report.steps()),
    )
}

fn measure(name: &str, shape: Shape) {
    let mut history = generate(7, shape).history;
    let (verdict, valid) = timed(&history);
    assert_eq!(verdict, Verdict::Linearizable, "{name}");

    let halfway = (history.len() / 2..history.len())
        .find(|&i| matches!(history.entries[i].outcome, Outcome::Found(_)))
        .expect("some read found a value");
    history.entries[halfway].outcome = Outcome::Found("ghost".to_string());
    let (verdict, corrupted) = timed(&history);
    assert_eq!(verdict, Verdict::Violation, "{name}, corrupted");

    println!(
        "{name} ({} operations, {} keys, {} clients, {}% unknown): valid {valid}; \
         violation {corrupted}",
        history.len(),
        shape.keys,
        shape.clients,
        shape.unknown_percent,
    );
}

const FIVE_KEYS: Shape = Shape {
    keys: 5,
    ops: 5_000,
    clients: 8,
    spread: 65,
    unknown_percent: 0,
};

#[test]
fn five_keys_of_a_thousand_operations_with_eight_clients() {
    measure("5 keys x 1,000 ops", FIVE_KEYS);
    let unknowns = Shape {
        unknown_percent: 5,
        ..FIVE_KEYS
    };
    measure("5 keys x 1,000 ops, unknowns", unknowns);
}

#[test]
fn one_key_of_three_thousand_operations() {
    let shape = Shape {
        keys: 1,
        ops: 3_000,
        unknown_percent: 3,
        ..FIVE_KEYS
    };
    measure("1 key x 3,000 ops, unknowns", shape);
}

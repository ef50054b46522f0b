//! Randomized: histories generated from the model itself, with overlapping intervals that keep
//! them linearizable, must all be accepted; the same histories with one read corrupted must all
//! be rejected. Seeds are fixed, so a failure names a seed that reproduces it.

mod support;

use skiff_lincheck::{check, CheckOptions, History, Op, Outcome, Verdict};
use support::{generate, Prng, Shape};

const SHAPE: Shape = Shape {
    keys: 3,
    ops: 300,
    clients: 6,
    spread: 45,
    unknown_percent: 5,
};

const SEEDS: std::ops::Range<u64> = 0..60;

fn verdict(history: &History) -> Verdict {
    check(history, &CheckOptions::default())
        .expect("a well-formed history")
        .verdict()
}

#[test]
fn generated_histories_are_accepted() {
    for seed in SEEDS {
        let generated = generate(seed, SHAPE);
        let report = check(&generated.history, &CheckOptions::default()).expect("well-formed");
        assert_eq!(
            report.verdict(),
            Verdict::Linearizable,
            "seed {seed}:\n{report}"
        );
    }
}

/// Indexes of the reads that found a value.
fn found_reads(history: &History) -> Vec<usize> {
    (0..history.len())
        .filter(|&i| matches!(history.entries[i].outcome, Outcome::Found(_)))
        .collect()
}

#[test]
fn a_read_of_a_value_no_one_wrote_is_rejected() {
    for seed in SEEDS {
        let mut history = generate(seed, SHAPE).history;
        let reads = found_reads(&history);
        let victim = reads[Prng::new(seed).below(reads.len() as u64) as usize];
        history.entries[victim].outcome = Outcome::Found("ghost".to_string());
        assert_eq!(verdict(&history), Verdict::Violation, "seed {seed}");
    }
}

#[test]
fn a_stale_read_is_rejected() {
    // A read is made to return a value that a compare-and-set had already replaced (and been
    // acknowledged for) before the read was sent. No order explains that, whatever overlaps.
    let mut corrupted = 0;
    for seed in SEEDS {
        let generated = generate(seed, SHAPE);
        let mut history = generated.history;
        let mut rng = Prng::new(seed);
        let mut reads = found_reads(&history);
        // Try reads in a seed-dependent order until one has a stale value to return.
        for i in (1..reads.len()).rev() {
            reads.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let stale = reads.iter().find_map(|&r| {
            let read = &history.entries[r];
            let Outcome::Found(current) = &read.outcome else {
                return None;
            };
            let mut olds: Vec<(&String, &u64)> = generated.replaced_at.iter().collect();
            olds.sort();
            olds.into_iter()
                .find(|(value, replaced)| {
                    **replaced < read.call
                        && *value != current
                        && generated.key_of.get(*value) == Some(&read.key)
                })
                .map(|(value, _)| (r, value.clone()))
        });
        let Some((victim, old)) = stale else {
            continue;
        };
        assert_eq!(history.entries[victim].op, Op::Get);
        history.entries[victim].outcome = Outcome::Found(old.clone());
        let report = check(&history, &CheckOptions::default()).expect("well-formed");
        assert_eq!(
            report.verdict(),
            Verdict::Violation,
            "seed {seed}: read #{victim} made to see {old:?}"
        );
        if seed == 0 {
            println!("seed 0, read #{victim} made to see {old:?}:\n{report}");
        }
        corrupted += 1;
    }
    assert!(
        corrupted > SEEDS.count() / 2,
        "only {corrupted} seeds had a stale value to use"
    );
}

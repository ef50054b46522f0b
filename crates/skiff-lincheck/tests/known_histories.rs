//! Hand-written histories with known verdicts. The rejected ones come first in spirit: a
//! checker that cannot fail proves nothing, so before any chaos run trusts a "linearizable",
//! these show each kind of bug the runner hunts for is caught.
//!
//! Times are small integers (an ordering index works as well as nanoseconds). `0..10` is an
//! operation sent at 0 and answered at 10.

use skiff_lincheck::{check, CheckOptions, GaveUp, History, KeyVerdict, Verdict};

type Case = (&'static str, fn(&mut History));

/// Histories some linearization explains.
const VALID: &[Case] = &[
    ("sequential: every operation and every answer", |h| {
        h.op(1, "k", 0..1).get().not_found();
        h.op(1, "k", 2..3).update("x", "y").not_found();
        h.op(1, "k", 4..5).delete().not_found();
        h.op(1, "k", 6..7).create("a").ok();
        h.op(1, "k", 8..9).create("b").already_exists();
        h.op(1, "k", 10..11).get().found("a");
        h.op(1, "k", 12..13).update("a", "c").ok();
        h.op(1, "k", 14..15).update("a", "d").conflict();
        h.op(1, "k", 16..17).get().found("c");
        h.op(1, "k", 18..19).delete().ok();
        h.op(1, "k", 20..21).get().not_found();
        h.op(1, "k", 22..23).create("e").ok();
    }),
    ("concurrent creates: one wins, later reads agree", |h| {
        h.op(1, "k", 0..10).create("a").already_exists();
        h.op(2, "k", 2..8).create("b").ok();
        h.op(3, "k", 11..12).get().found("b");
    }),
    (
        "concurrent compare-and-sets from one value: one wins",
        |h| {
            h.op(1, "k", 0..1).create("a").ok();
            h.op(1, "k", 2..10).update("a", "b").conflict();
            h.op(2, "k", 3..9).update("a", "c").ok();
            h.op(3, "k", 11..12).get().found("c");
        },
    ),
    ("a read overlapping a write sees the old value", |h| {
        h.op(1, "k", 0..1).create("a").ok();
        h.op(2, "k", 2..20).update("a", "b").ok();
        h.op(3, "k", 5..15).get().found("a");
    }),
    ("a read overlapping a write sees the new value", |h| {
        h.op(1, "k", 0..1).create("a").ok();
        h.op(2, "k", 2..20).update("a", "b").ok();
        h.op(3, "k", 5..15).get().found("b");
    }),
    ("reads overlapping one write: old, then new", |h| {
        h.op(1, "k", 0..1).create("a").ok();
        h.op(2, "k", 2..30).update("a", "b").ok();
        h.op(3, "k", 5..10).get().found("a");
        h.op(3, "k", 12..18).get().found("b");
        h.op(4, "k", 14..25).get().found("b");
    }),
    ("reads overlapping each other may disagree", |h| {
        h.op(1, "k", 0..1).create("a").ok();
        h.op(2, "k", 2..30).update("a", "b").ok();
        h.op(3, "k", 5..20).get().found("b");
        h.op(4, "k", 6..21).get().found("a");
    }),
    ("unknown update that happened", |h| {
        h.op(1, "k", 0..1).create("a").ok();
        h.op(2, "k", 2..5).update("a", "b").unknown();
        h.op(3, "k", 10..11).get().found("b");
    }),
    ("unknown update that did not happen", |h| {
        h.op(1, "k", 0..1).create("a").ok();
        h.op(2, "k", 2..5).update("a", "b").unknown();
        h.op(3, "k", 10..11).get().found("a");
        h.op(3, "k", 12..13).get().found("a");
    }),
    (
        "unknown update that happened long after the client gave up",
        |h| {
            h.op(1, "k", 0..1).create("a").ok();
            h.op(2, "k", 2..5).update("a", "b").unknown();
            h.op(3, "k", 10..11).get().found("a");
            h.op(3, "k", 100..101).get().found("b");
        },
    ),
    ("a read sees a value whose write is still unanswered", |h| {
        h.op(1, "k", 0..50).create("a").unknown();
        h.op(2, "k", 10..12).get().found("a");
        h.op(2, "k", 20..22).update("a", "b").ok();
    }),
    (
        "an unseen unknown create explains a later AlreadyExists",
        |h| {
            h.op(1, "k", 0..5).create("a").unknown();
            h.op(2, "k", 10..11).create("b").already_exists();
            h.op(2, "k", 12..13).delete().ok();
            h.op(2, "k", 14..15).get().not_found();
        },
    ),
    ("unknown delete that happened, and one that did not", |h| {
        h.op(1, "k", 0..1).create("a").ok();
        h.op(2, "k", 2..5).delete().unknown();
        h.op(3, "k", 10..11).get().not_found();
        h.op(1, "j", 0..1).create("b").ok();
        h.op(2, "j", 2..5).delete().unknown();
        h.op(3, "j", 10..11).get().found("b");
    }),
    (
        "conditional deletes: done, refused, and one whose value had changed",
        |h| {
            h.op(1, "k", 0..1).create("a").ok();
            h.op(2, "k", 2..3).delete_if("x").conflict();
            h.op(2, "k", 4..5).delete_if("a").ok();
            h.op(3, "k", 6..7).get().not_found();
            h.op(1, "j", 0..1).create("b").ok();
            h.op(1, "j", 2..3).update("b", "c").ok();
            h.op(2, "j", 2..6).delete_if("b").unknown();
            h.op(3, "j", 10..11).get().found("c");
        },
    ),
    ("unknown reads say nothing", |h| {
        h.op(1, "k", 0..1).create("a").ok();
        h.op(2, "k", 2..3).get().unknown();
        h.op(2, "k", 4..5).get().found("a");
    }),
    ("a return and a call at the same instant overlap", |h| {
        h.op(1, "k", 0..10).create("a").ok();
        h.op(2, "k", 10..12).get().not_found();
    }),
    ("keys are independent", |h| {
        h.op(1, "k", 0..10).create("a").ok();
        h.op(2, "j", 2..12).create("b").ok();
        h.op(1, "k", 11..13).get().found("a");
        h.op(2, "j", 13..14).get().found("b");
    }),
];

/// Histories no linearization explains, each the footprint of a real class of bug.
const INVALID: &[Case] = &[
    (
        "stale read: starts after a write returned, sees the older value",
        |h| {
            h.op(1, "k", 0..1).create("a").ok();
            h.op(2, "k", 2..5).update("a", "b").ok();
            h.op(3, "k", 6..7).get().found("a");
        },
    ),
    (
        "lost acknowledged write: NotFound after a create, no delete",
        |h| {
            h.op(1, "k", 0..1).create("a").ok();
            h.op(2, "k", 3..4).get().not_found();
        },
    ),
    ("a value read that no one wrote", |h| {
        h.op(1, "k", 0..1).create("a").ok();
        h.op(2, "k", 3..4).get().found("zzz");
    }),
    (
        "two compare-and-sets from the same value both succeed",
        |h| {
            h.op(1, "k", 0..1).create("a").ok();
            h.op(2, "k", 2..10).update("a", "b").ok();
            h.op(3, "k", 3..9).update("a", "c").ok();
        },
    ),
    ("the key created twice, no delete between", |h| {
        h.op(1, "k", 0..10).create("a").ok();
        h.op(2, "k", 5..15).create("b").ok();
    }),
    ("a read goes back in time (v2, then later v1)", |h| {
        h.op(1, "k", 0..1).create("v1").ok();
        h.op(2, "k", 2..30).update("v1", "v2").ok();
        h.op(3, "k", 5..10).get().found("v2");
        h.op(4, "k", 12..18).get().found("v1");
    }),
    ("a seen unknown write cannot be unseen", |h| {
        h.op(1, "k", 0..1).create("a").ok();
        h.op(2, "k", 2..5).update("a", "b").unknown();
        h.op(3, "k", 10..11).get().found("b");
        h.op(3, "k", 12..13).get().found("a");
    }),
    ("a value read before its write was sent", |h| {
        h.op(1, "k", 0..5).get().found("a");
        h.op(2, "k", 10..20).create("a").unknown();
    }),
    ("a conflict although the expected value was there", |h| {
        h.op(1, "k", 0..1).create("a").ok();
        h.op(2, "k", 2..3).update("a", "b").conflict();
    }),
    ("a delete acknowledged twice", |h| {
        h.op(1, "k", 0..1).create("a").ok();
        h.op(2, "k", 2..3).delete().ok();
        h.op(3, "k", 4..5).delete().ok();
    }),
    ("one bad key among good ones", |h| {
        h.op(1, "good", 0..1).create("a").ok();
        h.op(1, "good", 2..3).get().found("a");
        h.op(2, "bad", 0..1).create("b").ok();
        h.op(2, "bad", 2..3).get().not_found();
    }),
    (
        "a conditional delete of a value that was no longer there",
        |h| {
            h.op(1, "k", 0..1).create("a").ok();
            h.op(1, "k", 2..3).update("a", "b").ok();
            h.op(2, "k", 4..5).delete_if("a").ok();
        },
    ),
    (
        "a conditional delete refused although its value was there",
        |h| {
            h.op(1, "k", 0..1).create("a").ok();
            h.op(2, "k", 2..3).delete_if("a").conflict();
        },
    ),
];

fn run(build: fn(&mut History)) -> skiff_lincheck::Report {
    let mut history = History::new();
    build(&mut history);
    check(&history, &CheckOptions::default()).expect("a well-formed history")
}

#[test]
fn known_bad_histories_are_rejected() {
    for (name, build) in INVALID {
        let report = run(*build);
        assert_eq!(report.verdict(), Verdict::Violation, "{name}:\n{report}");
    }
}

#[test]
fn valid_histories_are_accepted() {
    for (name, build) in VALID {
        let report = run(*build);
        assert_eq!(report.verdict(), Verdict::Linearizable, "{name}:\n{report}");
    }
}

#[test]
fn a_stale_read_is_explained() {
    let report = run(INVALID[0].1);
    let violation = report.violations().next().expect("a violation");
    assert_eq!(violation.key, "k");
    let placed: Vec<usize> = violation.prefix.iter().map(|(op, _)| op.index).collect();
    assert_eq!(placed, vec![0, 1], "create and update linearize");
    assert_eq!(violation.due.as_ref().map(|op| op.index), Some(2));
    let (read, why) = &violation.candidates[0];
    assert_eq!(read.index, 2);
    assert_eq!(
        why,
        r#"the key holds "b" (written by #1), not "a" (written by #0)"#
    );
    let text = report.to_string();
    println!("{text}");
    assert!(text.contains("NOT linearizable"), "{text}");
    assert!(
        text.contains(r#"#2 client 3 [6, 7] get -> found "a""#),
        "{text}"
    );
}

#[test]
fn a_value_no_one_wrote_is_named() {
    let report = run(INVALID[2].1);
    let text = report.to_string();
    assert!(
        text.contains(r#""zzz" (written by no operation)"#),
        "{text}"
    );
}

#[test]
fn only_the_bad_key_is_reported() {
    let report = run(INVALID[10].1);
    let bad: Vec<&str> = report.violations().map(|v| v.key.as_str()).collect();
    assert_eq!(bad, vec!["bad"]);
    assert!(matches!(report.keys[1].verdict, KeyVerdict::Linearizable));
}

#[test]
fn giving_up_is_not_a_violation() {
    // Placing 30 operations takes at least 30 steps; with 10 the search must say "unknown",
    // never "violation" — and with enough it says "linearizable".
    let mut h = History::new();
    h.op(1, "k", 0..1).create("v0").ok();
    for i in 1..30u64 {
        let (from, to) = (format!("v{}", i - 1), format!("v{i}"));
        h.op(1, "k", 2 * i..2 * i + 1).update(&from, &to).ok();
    }
    let tight = CheckOptions {
        max_steps_per_key: 10,
        ..CheckOptions::default()
    };
    let report = check(&h, &tight).expect("a well-formed history");
    assert_eq!(report.verdict(), Verdict::Unknown);
    assert!(matches!(
        report.keys[0].verdict,
        KeyVerdict::Unknown(GaveUp::StepBudget)
    ));
    assert!(report.to_string().contains("search budget exhausted"));
    assert_eq!(
        check(&h, &CheckOptions::default())
            .map(|r| r.verdict())
            .ok(),
        Some(Verdict::Linearizable)
    );

    let no_time = CheckOptions {
        time_limit: Some(std::time::Duration::ZERO),
        ..CheckOptions::default()
    };
    let report = check(&h, &no_time).expect("a well-formed history");
    assert!(matches!(
        report.keys[0].verdict,
        KeyVerdict::Unknown(GaveUp::TimeLimit)
    ));
}

#[test]
fn a_saved_history_is_checked_from_its_file() {
    let mut history = History::new();
    INVALID[0].1(&mut history);
    let path = std::env::temp_dir().join(format!("skiff-lincheck-{}.jsonl", std::process::id()));
    history.save(&path).expect("write the history");
    let report = skiff_lincheck::check_file(&path, &CheckOptions::default());
    std::fs::remove_file(&path).ok();
    assert_eq!(
        report.expect("a readable history").verdict(),
        Verdict::Violation
    );
}

//! `skiff lab chaos` on a lab of three servers: six clients, each pinned to one server, create,
//! read, compare-and-set and delete five ConfigMaps while twenty faults (kill a host, stop
//! it, cut its link, kill the leader's host — one at a time, each undone before the next)
//! hit the servers; what the clients saw must be linearizable.
//!
//! As in Jepsen and etcd's robustness tests, the checker first proves it can fail: a stale
//! read is a violation (here, and in the command before its run), and so is the recorded
//! history with one read corrupted (the command, and this test independently). Only then does
//! its "linearizable" mean something.
//!
//! Times are printed (`--nocapture`), never asserted: the machine is shared.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::lab::Lab;
use skiff_lincheck::{check, CheckOptions, History, Op, Outcome, Verdict};

fn options() -> CheckOptions {
    CheckOptions {
        time_limit: Some(Duration::from_secs(120)),
        ..CheckOptions::default()
    }
}

#[test]
fn the_checker_rejects_a_stale_read() {
    let mut h = History::new();
    h.op(1, "default/configmaps/c", 0..10).create("a").ok();
    h.op(2, "default/configmaps/c", 20..30)
        .update("a", "b")
        .ok();
    // Starts after the compare-and-set returned, yet sees the value it replaced.
    h.op(3, "default/configmaps/c", 40..50).get().found("a");
    let report = check(&h, &options()).expect("a well-formed history");
    assert_eq!(report.verdict(), Verdict::Violation, "{report}");
    // The same history without the stale read is fine.
    h.entries.pop();
    h.op(3, "default/configmaps/c", 40..50).get().found("b");
    let report = check(&h, &options()).expect("a well-formed history");
    assert_eq!(report.verdict(), Verdict::Linearizable, "{report}");
}

#[test]
fn twenty_faults_leave_what_the_clients_saw_linearizable() {
    let mut lab = Lab::up(3, 3, &[]);
    // Next to the lab's directory, so it outlives `lab down` (until the test ends).
    let history_file = lab.dir.with_file_name("chaos-history.jsonl");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["lab", "chaos", "--dir"])
        .arg(&lab.dir)
        .args(["--faults", "20", "--history"])
        .arg(&history_file)
        .output()
        .expect("skiff lab chaos");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    println!(
        "skiff lab chaos --faults 20 took {:.0}s:\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        output.status.success(),
        "skiff lab chaos failed:\n{stdout}\n{stderr}"
    );

    // The checker could fail, before the run and on this run's own history.
    assert!(
        stdout.contains("self-check: a synthetic stale read is a violation"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l
            .starts_with("self-check: the recorded history with one read made stale")
            && l.contains("is a violation, as it must be")),
        "{stdout}"
    );
    // Twenty faults, each on its own line, and the verdict.
    let fault_lines = stdout
        .lines()
        .filter(|l| l.starts_with("fault ") && l.contains("/20 at "))
        .count();
    assert_eq!(fault_lines, 20, "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("20 faults: ")),
        "{stdout}"
    );
    let verdict = stdout
        .lines()
        .find(|l| l.starts_with("linearizable: "))
        .unwrap_or_else(|| panic!("no verdict line:\n{stdout}"));
    assert!(verdict.contains(" on 5 keys, 20 faults, "), "{verdict}");
    assert!(!stdout.contains("anomaly:"), "{stdout}");

    // Independently of the command: the saved history is linearizable, and not once one read
    // finds a value nobody wrote.
    let recorded = History::load(&history_file).expect("the saved history");
    let keys: std::collections::BTreeSet<&str> =
        recorded.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys.len(), 5, "{keys:?}");
    let report = check(&recorded, &options()).expect("a well-formed history");
    assert_eq!(report.verdict(), Verdict::Linearizable, "{report}");
    let mut corrupted = recorded.clone();
    let read = corrupted
        .entries
        .iter_mut()
        .find(|e| e.op == Op::Get && matches!(e.outcome, Outcome::Found(_)))
        .expect("a read that found a value");
    read.outcome = Outcome::Found("written-by-nobody".to_string());
    let report = check(&corrupted, &options()).expect("a well-formed history");
    assert_eq!(report.verdict(), Verdict::Violation, "{report}");

    lab.down();
}

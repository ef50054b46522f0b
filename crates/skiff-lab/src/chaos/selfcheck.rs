//! Proof that the checker can fail, as Jepsen's tests give it: a "linearizable" verdict means
//! something only if the same checker, fed a bad history, says so.
//! - Before the run, a synthetic history with a stale read must be a violation.
//! - After it, the recorded history with one read made stale must be one too: that shows the
//!   checker judges what the clients recorded (keys, values, times), not something else.

use std::collections::HashMap;

use anyhow::bail;
use skiff_lincheck::{check, CheckOptions, History, Op, Outcome, Verdict};

/// A compare-and-set replaced "a" with "b" and returned; a read that starts after it sees "a".
pub fn synthetic_stale_read() -> anyhow::Result<()> {
    let mut h = History::new();
    h.op(1, "default/configmaps/self-check", 0..10)
        .create("a")
        .ok();
    h.op(2, "default/configmaps/self-check", 20..30)
        .update("a", "b")
        .ok();
    h.op(3, "default/configmaps/self-check", 40..50)
        .get()
        .found("a");
    let report = check(&h, &CheckOptions::default())?;
    if report.verdict() != Verdict::Violation {
        bail!("the checker accepts a stale read ({report}): its verdicts mean nothing");
    }
    Ok(())
}

/// The recorded `history` with one read made stale, and what was changed.
///
/// The first read (by call) from the middle of the run on — among the faults, with much of
/// the history before it for the search to get through — that was called after a
/// compare-and-set of its key had returned Ok, now finds the value the latest such
/// compare-and-set replaced. That value can never come back — values are unique, and its
/// only write came before the compare-and-set — so the read is stale for certain, if only by
/// one write. Failing that, the first such read of the run; failing that, a read finds a value
/// nobody wrote.
pub fn corrupt(history: &History) -> Option<(History, String)> {
    let entries = &history.entries;
    // Per key, each compare-and-set that returned Ok: (return time, value it replaced), by
    // return time.
    let mut swaps: HashMap<&str, Vec<(u64, &str)>> = HashMap::new();
    for e in entries {
        if let (Op::Update { expected, .. }, Outcome::Ok) = (&e.op, &e.outcome) {
            swaps.entry(&e.key).or_default().push((e.ret, expected));
        }
    }
    for list in swaps.values_mut() {
        list.sort_unstable();
    }
    let mut reads: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].op == Op::Get && matches!(entries[i].outcome, Outcome::Found(_)))
        .collect();
    reads.sort_by_key(|&i| entries[i].call);
    // The value the latest compare-and-set of the read's key that returned before the read
    // was called replaced (unless the read found that very value: then it is stale already).
    let replaced_before = |i: usize| {
        let list = swaps.get(entries[i].key.as_str())?;
        let before = list.partition_point(|(ret, _)| *ret < entries[i].call);
        let (_, replaced) = list.get(before.checked_sub(1)?)?;
        (entries[i].outcome != Outcome::Found(replaced.to_string()))
            .then(|| (i, replaced.to_string()))
    };
    let middle = entries.iter().map(|e| e.call).max().unwrap_or(0) / 2;
    let stale = reads
        .iter()
        .filter(|&&i| entries[i].call >= middle)
        .find_map(|&i| replaced_before(i))
        .or_else(|| reads.iter().find_map(|&i| replaced_before(i)));
    let (index, value, why) = match stale {
        Some((i, replaced)) => (i, replaced, "the value an earlier compare-and-set replaced"),
        None => {
            let i = *reads.first()?;
            (i, "never-written".to_string(), "a value nobody wrote")
        }
    };
    let mut corrupted = history.clone();
    let entry = &mut corrupted.entries[index];
    let was = entry.outcome.clone();
    entry.outcome = Outcome::Found(value.clone());
    let was = match was {
        Outcome::Found(v) => format!("{v:?}"),
        other => other.to_string(),
    };
    let what = format!(
        "one read made stale (client {}, {} at {:.3}s: {was} → {value:?}, {why})",
        entry.client,
        entry.key.rsplit('/').next().unwrap_or(&entry.key),
        entry.call as f64 / 1e9
    );
    Some((corrupted, what))
}

/// Checks the recorded history with one read made stale (only the key it is on: the other
/// keys are the real check's business); it must be a violation.
pub fn corrupted_read(history: &History, options: &CheckOptions) -> anyhow::Result<String> {
    let Some((corrupted, what)) = corrupt(history) else {
        bail!("the history has no read that found a value: nothing to check the checker with");
    };
    let Some(key) = corrupted
        .entries
        .iter()
        .zip(&history.entries)
        .find(|(a, b)| a != b)
        .map(|(a, _)| a.key.clone())
    else {
        bail!("corrupting the history changed nothing");
    };
    let mut one_key = History::new();
    for entry in corrupted.entries.into_iter().filter(|e| e.key == key) {
        one_key.push(entry);
    }
    let started = std::time::Instant::now();
    let report = check(&one_key, options)?;
    match report.verdict() {
        Verdict::Violation => Ok(format!(
            "the recorded history with {what} is a violation, as it must be ({:.1}s)",
            started.elapsed().as_secs_f64()
        )),
        verdict => bail!(
            "the checker's verdict on the recorded history with {what} is {verdict:?}, not a \
             violation: it is not judging what was recorded"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synthetic_stale_read_is_caught() {
        synthetic_stale_read().expect("a violation");
    }

    #[test]
    fn a_read_from_the_middle_on_is_made_stale_by_one_write() {
        let mut h = History::new();
        h.op(1, "k", 0..10).create("a").ok();
        h.op(2, "k", 12..14).get().found("a"); // before the swap returned: left alone
        h.op(2, "k", 11..20).update("a", "b").ok();
        h.op(3, "k", 30..40).get().found("b"); // before the middle (50)
        h.op(2, "k", 35..45).update("b", "c").ok();
        h.op(3, "k", 60..70).get().found("c"); // the one: made to find "b"
        h.op(3, "k", 90..100).get().found("c");
        let (corrupted, what) = corrupt(&h).expect("a read to corrupt");
        assert_eq!(corrupted.entries[5].outcome, Outcome::Found("b".into()));
        let changed = (0..h.len()).filter(|&i| corrupted.entries[i] != h.entries[i]);
        assert_eq!(changed.count(), 1);
        assert!(what.contains("client 3"), "{what}");
        let verdict = corrupted_read(&h, &CheckOptions::default()).expect("a violation");
        assert!(verdict.contains("is a violation"), "{verdict}");
    }

    #[test]
    fn without_a_swap_a_read_finds_a_value_nobody_wrote() {
        let mut h = History::new();
        h.op(1, "k", 0..10).create("a").ok();
        h.op(2, "k", 20..30).get().found("a");
        let (corrupted, _) = corrupt(&h).expect("a read to corrupt");
        assert_eq!(
            corrupted.entries[1].outcome,
            Outcome::Found("never-written".into())
        );
        assert!(corrupted_read(&h, &CheckOptions::default()).is_ok());
        let mut reads_nothing = History::new();
        reads_nothing.op(1, "k", 0..10).get().not_found();
        assert!(corrupt(&reads_nothing).is_none());
    }
}

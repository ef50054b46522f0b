//! Proof that the checker can fail, as Jepsen's tests give it: a "linearizable" verdict means
//! something only if the same checker, fed a bad history, says so.
//! - Before the run, a synthetic history with a stale read must be a violation.
//! - After it, the recorded history with one read made stale must be one too: that shows the
//!   checker judges what the clients recorded (keys, values, times), not something else.

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
/// The earliest read (by call) of a key, called after some compare-and-set of that key
/// returned Ok, now finds the value that compare-and-set replaced. That value can never come
/// back — values are unique, and its only write came before the compare-and-set — so the
/// read is stale for certain. Without such a pair, a read finds a value nobody wrote.
pub fn corrupt(history: &History) -> Option<(History, String)> {
    let entries = &history.entries;
    // Per key, the compare-and-set that returned Ok first: (return time, value it replaced).
    let mut first_swap: std::collections::HashMap<&str, (u64, &str)> = Default::default();
    for e in entries {
        if let (Op::Update { expected, .. }, Outcome::Ok) = (&e.op, &e.outcome) {
            let slot = first_swap.entry(&e.key).or_insert((e.ret, expected));
            if e.ret < slot.0 {
                *slot = (e.ret, expected);
            }
        }
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| entries[i].call);
    let is_found_read =
        |i: usize| entries[i].op == Op::Get && matches!(entries[i].outcome, Outcome::Found(_));
    let mut reads = order.iter().copied().filter(|&i| is_found_read(i));
    let stale = reads.clone().find_map(|i| {
        let (swapped_at, replaced) = first_swap.get(entries[i].key.as_str())?;
        let found_other = entries[i].outcome != Outcome::Found(replaced.to_string());
        (*swapped_at < entries[i].call && found_other).then(|| (i, replaced.to_string()))
    });
    let (index, value, why) = match stale {
        Some((i, replaced)) => (i, replaced, "the value an earlier compare-and-set replaced"),
        None => {
            let i = reads.next()?;
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
    fn the_first_read_after_a_swap_is_made_stale() {
        let mut h = History::new();
        h.op(1, "k", 0..10).create("a").ok();
        h.op(2, "k", 12..14).get().found("a"); // before the swap returned: left alone
        h.op(2, "k", 11..20).update("a", "b").ok();
        h.op(3, "k", 30..40).get().found("b"); // the one
        h.op(3, "k", 50..60).get().found("b");
        let (corrupted, what) = corrupt(&h).expect("a read to corrupt");
        assert_eq!(corrupted.entries[3].outcome, Outcome::Found("a".into()));
        assert_eq!(corrupted.entries[4].outcome, Outcome::Found("b".into()));
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

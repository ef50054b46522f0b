//! From a history to a report: split by key, prepare each key's operations for the search
//! (intern values, settle what unknown outcomes allow), search, and explain.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::history::{History, HistoryError, Op, Outcome};
use crate::model::{step, why_not, KeyOp, KeyOutcome, State, ValueId, Values, ANONYMOUS};
use crate::report::{GaveUp, KeyReport, KeyVerdict, OpRef, Report, Violation};
use crate::search::{linearize, Budget, DeadEnd, SearchOp, SearchResult};

/// How hard to look before answering "unknown".
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Steps (placements tried plus backtracks) allowed per key and pass. Valid histories of a
    /// few thousand operations per key take well under a million; proving a violation in a key
    /// with thousands of operations and many unknown writes can take tens of millions. The
    /// default runs out after about 7 s and 100 MB per key and pass (measured on one core).
    pub max_steps_per_key: u64,
    /// Wall-clock limit for the whole check; keys not decided by then are "unknown".
    pub time_limit: Option<Duration>,
}

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions {
            max_steps_per_key: 100_000_000,
            time_limit: None,
        }
    }
}

/// Checks a history for linearizability against the per-key ConfigMap model.
pub fn check(history: &History, options: &CheckOptions) -> Result<Report, HistoryError> {
    history.validate()?;
    let budget = Budget {
        max_steps: options.max_steps_per_key,
        deadline: options.time_limit.map(|limit| Instant::now() + limit),
    };
    // P-compositionality: a history is linearizable iff each key's sub-history is, so each key
    // is searched alone — a few small searches instead of one exponentially larger one.
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, entry) in history.entries.iter().enumerate() {
        by_key.entry(&entry.key).or_default().push(index);
    }
    let keys: Vec<(&str, Vec<usize>)> = by_key.into_iter().collect();

    // Keys are independent, so they are checked on as many threads as there are cores.
    let workers = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, keys.len().max(1));
    let next = AtomicUsize::new(0);
    let mut reports: Vec<Option<KeyReport>> = vec![None; keys.len()];
    thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some((key, indices)) = keys.get(k) else {
                            return done;
                        };
                        done.push((k, check_key(history, key, indices, budget)));
                    }
                })
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(done) => done.into_iter().for_each(|(k, r)| reports[k] = Some(r)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    Ok(Report {
        keys: reports.into_iter().flatten().collect(),
    })
}

/// Reads a history file (JSON lines, see [`History::load`]) and checks it.
pub fn check_file(path: &Path, options: &CheckOptions) -> Result<Report, HistoryError> {
    check(&History::load(path)?, options)
}

/// One key's operations, ready for the search.
struct KeyOps {
    values: Values,
    ops: Vec<SearchOp>,
    /// Each operation in `ops` with its real values (before `anonymize_unread_values`), to
    /// explain a violation with the values that were actually written.
    concrete: Vec<(KeyOp, KeyOutcome)>,
    /// History index of each operation in `ops`.
    origin: Vec<usize>,
}

fn check_key(history: &History, key: &str, indices: &[usize], budget: Budget) -> KeyReport {
    let prepared = prepare(history, indices);
    let operations = prepared.ops.len();
    // Keys that come after the deadline are not started: the search would only notice after
    // its first few thousand steps.
    if budget.deadline.is_some_and(|d| Instant::now() >= d) {
        return KeyReport {
            key: key.to_string(),
            operations,
            steps: 0,
            verdict: KeyVerdict::Unknown(GaveUp::TimeLimit),
        };
    }

    // First pass: without the unknown writes nobody saw. Dropping an unknown operation is one
    // of the things it may have done ("it never happened"), so if the rest is linearizable so
    // is the whole. Those writes are what makes the search branch (each can go anywhere after
    // its call), so a history whose unseen unknown writes explain nothing is settled here,
    // cheaply.
    let (open_ended, bounded): (Vec<usize>, Vec<usize>) =
        (0..operations).partition(|&i| prepared.ops[i].ret.is_none());
    let mut steps = 0;
    if !open_ended.is_empty() {
        let ops: Vec<SearchOp> = bounded.iter().map(|&i| prepared.ops[i]).collect();
        let (result, taken) = linearize(&ops, budget);
        steps += taken;
        if matches!(result, SearchResult::Linearizable) {
            return KeyReport {
                key: key.to_string(),
                operations,
                steps,
                verdict: KeyVerdict::Linearizable,
            };
        }
    }
    // Second (or only) pass: everything, unknown writes free to happen any time after their
    // call or not at all. Its verdict is the key's.
    let (result, taken) = linearize(&prepared.ops, budget);
    steps += taken;
    let verdict = match result {
        SearchResult::Linearizable => KeyVerdict::Linearizable,
        SearchResult::Violation(end) => {
            KeyVerdict::Violation(Box::new(explain(history, key, &prepared, &end)))
        }
        SearchResult::StepBudgetExhausted => KeyVerdict::Unknown(GaveUp::StepBudget),
        SearchResult::TimeLimitReached => KeyVerdict::Unknown(GaveUp::TimeLimit),
    };
    KeyReport {
        key: key.to_string(),
        operations,
        steps,
        verdict,
    }
}

fn prepare(history: &History, indices: &[usize]) -> KeyOps {
    let mut values = Values::default();
    let mut ops = Vec::with_capacity(indices.len());
    let mut origin = Vec::with_capacity(indices.len());
    for &index in indices {
        let entry = &history.entries[index];
        // A read that got no answer says nothing about the key.
        if entry.op == Op::Get && entry.outcome == Outcome::Unknown {
            continue;
        }
        let op = match &entry.op {
            Op::Create(v) => KeyOp::Create(values.intern(v)),
            Op::Get => KeyOp::Get,
            Op::Update { expected, new } => KeyOp::Update {
                expected: values.intern(expected),
                new: values.intern(new),
            },
            Op::Delete => KeyOp::Delete,
            Op::DeleteIf { expected } => KeyOp::DeleteIf {
                expected: values.intern(expected),
            },
        };
        if let KeyOp::Create(v) | KeyOp::Update { new: v, .. } = op {
            if let Some(writer) = values.writers.get_mut(v as usize) {
                *writer = Some(index);
            }
        }
        let outcome = match &entry.outcome {
            Outcome::Ok => KeyOutcome::Ok,
            Outcome::AlreadyExists => KeyOutcome::AlreadyExists,
            Outcome::Found(v) => KeyOutcome::Found(values.intern(v)),
            Outcome::NotFound => KeyOutcome::NotFound,
            Outcome::Conflict => KeyOutcome::Conflict,
            Outcome::Unknown => KeyOutcome::Unknown,
        };
        // An unknown outcome may take effect at any time after the call: no return event.
        let ret = (outcome != KeyOutcome::Unknown).then_some(entry.ret);
        ops.push(SearchOp {
            call: entry.call,
            ret,
            op,
            outcome,
        });
        origin.push(index);
    }
    settle_seen_writes(&mut ops, values.names.len());
    let concrete = ops.iter().map(|op| (op.op, op.outcome)).collect();
    anonymize_unread_values(&mut ops, values.names.len());
    KeyOps {
        values,
        ops,
        concrete,
        origin,
    }
}

/// An unknown write whose value somebody saw (a read found it, or a compare-and-set expecting
/// it succeeded) did happen — values are unique, nobody else wrote it — and it happened before
/// the first of those observers returned. So it becomes an `Ok` write due by then. Every
/// linearization of the original history obeys this, so nothing valid is rejected; the search
/// just has fewer places to try it.
fn settle_seen_writes(ops: &mut [SearchOp], value_count: usize) {
    let mut first_seen: Vec<Option<u64>> = vec![None; value_count];
    for op in ops.iter() {
        let seen = match (op.op, op.outcome) {
            (KeyOp::Get, KeyOutcome::Found(v)) => v,
            (KeyOp::Update { expected, .. }, KeyOutcome::Ok) => expected,
            _ => continue,
        };
        if let (Some(slot), Some(ret)) = (first_seen.get_mut(seen as usize), op.ret) {
            *slot = Some(slot.map_or(ret, |t| t.min(ret)));
        }
    }
    for op in ops.iter_mut() {
        let written = match (op.op, op.outcome) {
            (KeyOp::Create(v) | KeyOp::Update { new: v, .. }, KeyOutcome::Unknown) => v,
            _ => continue,
        };
        if let Some(Some(seen)) = first_seen.get(written as usize) {
            op.outcome = KeyOutcome::Ok;
            // Seen before it was even sent is a violation the search will find; keeping the
            // interval well-formed is all that is needed here.
            op.ret = Some((*seen).max(op.call));
        }
    }
}

/// Replaces every value that only its own write mentions with [`ANONYMOUS`]: nothing can tell
/// such values apart, and merging them lets the cache merge states and `earlier_twins` find
/// twins among unknown writes.
fn anonymize_unread_values(ops: &mut [SearchOp], value_count: usize) {
    let mut mentions = vec![0u32; value_count];
    let mut mention = |v: ValueId| {
        if let Some(count) = mentions.get_mut(v as usize) {
            *count += 1;
        }
    };
    for op in ops.iter() {
        match op.op {
            KeyOp::Create(v) => mention(v),
            KeyOp::Update { expected, new } => {
                mention(expected);
                mention(new);
            }
            KeyOp::DeleteIf { expected } => mention(expected),
            KeyOp::Get | KeyOp::Delete => {}
        }
        if let KeyOutcome::Found(v) = op.outcome {
            mention(v);
        }
    }
    let unread = |v: ValueId| mentions.get(v as usize) == Some(&1);
    for op in ops.iter_mut() {
        match &mut op.op {
            KeyOp::Create(v) | KeyOp::Update { new: v, .. } if unread(*v) => *v = ANONYMOUS,
            _ => {}
        }
    }
}

fn explain(history: &History, key: &str, prepared: &KeyOps, end: &DeadEnd) -> Violation {
    let op_ref = |i: usize| {
        let index = prepared.origin[i];
        OpRef {
            index,
            entry: history.entries[index].clone(),
        }
    };
    // The search ran on anonymized values; replaying the prefix with the real ones names the
    // value the key actually held at each point. The replay cannot fail where the search
    // succeeded (anonymizing only merged values nothing tells apart); if it did, the
    // anonymous state is kept.
    let mut state: State = None;
    let mut prefix = Vec::with_capacity(end.prefix.len());
    for &(i, abstract_after) in &end.prefix {
        let (op, outcome) = prepared.concrete[i];
        state = step(state, op, outcome).unwrap_or(abstract_after);
        let name = state.and_then(|v| prepared.values.names.get(v as usize).cloned());
        prefix.push((op_ref(i), name));
    }
    Violation {
        key: key.to_string(),
        prefix,
        state: prepared.values.describe_state(state),
        due: end.due.map(op_ref),
        candidates: end
            .candidates
            .iter()
            .map(|&i| {
                let (op, outcome) = prepared.concrete[i];
                (op_ref(i), why_not(state, op, outcome, &prepared.values))
            })
            .collect(),
        operations: prepared.ops.len(),
    }
}

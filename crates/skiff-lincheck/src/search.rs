//! The search for a linearization of one key's operations: Wing & Gong's backtracking with
//! Lowe's memoisation, the algorithm Porcupine uses, plus rules that keep operations with
//! unknown outcomes from making it blow up.
//!
//! ## Expected flow
//! Every operation becomes a *call* event and, if it has a return time, a *return* event, in one
//! list sorted by time (`events`). Scanning it from the front:
//! - a call event is an operation that may take effect now: nothing still unplaced has
//!   returned before it. If the model accepts it from the current state and the memo has not
//!   seen the resulting configuration, it is *lifted* out of the list, pushed on a stack, and
//!   the scan restarts from the front;
//! - a return event is an operation that had to take effect by then, but no order tried so far
//!   allowed it: a dead end. Pop the last operation placed, put its events back, restore the
//!   state and try the candidates after it.
//!
//! The search succeeds when every definite operation (one with a return time) is placed; the
//! open-ended ones (unknown outcomes) left over go last, where they change nothing anyone saw.
//! It fails when a dead end has nothing left to pop.
//!
//! ## Open-ended operations
//! An unknown write may take effect anywhere after its call, or never, so k of them could make
//! 2^k sets of placed operations. The search only tries them where they can matter:
//! 1. At each configuration, definite candidates are tried first, open-ended ones after; so
//!    configurations tend to be met first with few unknowns spent, and the memo's covering
//!    (`memo`) then skips the same configuration with more spent.
//! 2. Not where it would change nothing.
//! 3. Of identical ones (same operation and values), the earliest-called first.
//! 4. After a run of open-ended operations, a definite one may follow only if it fits none of
//!    the states before the run's operations, and the run may not come back to a state it left.
//!
//! Why nothing is lost: take, of all linearizations, one with the fewest unknown operations
//! placed before its end, and of those one that places them as late as possible. In it, an
//! unknown operation that changes nothing could be dropped (rule 2); a run that loops could be
//! dropped; a definite operation that fits the state before part of the run could swap in front
//! of that part (if it leaves the state alone) or make it pointless (if it overwrites it) — so
//! rule 4 holds. Renaming identical unknown operations makes it obey rule 3, and rule 1 is only
//! an order. So the search can find it. (`tests/against_brute_force.rs` checks the claim
//! against the definition on thousands of small histories.)
//!
//! ## Guarantees
//! - The search stops after `Budget::max_steps` steps or at the deadline and says so; it only
//!   reports a violation when nothing is left to try.
//! - On failure it returns the deepest dead end: the longest prefix it could linearize and the
//!   definite operations that could have come next, for the explanation.

use std::collections::HashMap;
use std::time::Instant;

use crate::events::EventList;
use crate::memo::{PlacedSet, Seen};
use crate::model::{step, KeyOp, KeyOutcome, State};

/// One operation of the key, as the search sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SearchOp {
    pub call: u64,
    /// `None` for an operation that may take effect at any time after its call.
    pub ret: Option<u64>,
    pub op: KeyOp,
    pub outcome: KeyOutcome,
}

/// When to give up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub max_steps: u64,
    pub deadline: Option<Instant>,
}

#[derive(Debug)]
pub(crate) enum SearchResult {
    Linearizable,
    Violation(DeadEnd),
    StepBudgetExhausted,
    TimeLimitReached,
}

/// The deepest point the search reached before it had to backtrack for good.
#[derive(Debug, Clone)]
pub(crate) struct DeadEnd {
    /// Operations placed, in linearization order, each with the state after it.
    pub prefix: Vec<(usize, State)>,
    /// The operation whose return event stopped the scan: it had to be placed by then.
    pub due: Option<usize>,
    /// Definite operations that could have gone next (invoked before `due` returned).
    pub candidates: Vec<usize>,
}

/// Which candidates a scan of the event list tries (rule 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Definite,
    OpenEnded,
}

/// How often (in steps) to look at the clock: reading it every step would cost more than the
/// step itself.
const CLOCK_EVERY: u64 = 4096;

/// Searches for a linearization of `ops`, starting from an absent key. Returns the result and
/// the number of steps taken (placements tried plus backtracks).
pub(crate) fn linearize(ops: &[SearchOp], budget: Budget) -> (SearchResult, u64) {
    let is_open_ended = |i: usize| ops[i].ret.is_none();
    let mut list = EventList::new(ops);
    let mut placed = PlacedSet::new(ops.iter().map(|op| op.ret.is_none()));
    let mut seen = Seen::default();
    // Each placed operation's call node, the state before it and the phase that placed it,
    // to undo it and carry on scanning where it was placed.
    let mut stack: Vec<(usize, State, Phase)> = Vec::new();
    let mut state: State = None;
    let mut unplaced = (0..ops.len()).filter(|&i| !is_open_ended(i)).count();
    let any_open_ended = unplaced < ops.len();
    let earlier_twin = earlier_twins(ops);
    let mut deepest: Option<DeadEnd> = None;
    let mut steps: u64 = 0;
    let mut node = list.first();
    let mut phase = Phase::Definite;

    let out_of_budget = |steps: u64| {
        if steps > budget.max_steps {
            return Some(SearchResult::StepBudgetExhausted);
        }
        let look = steps.is_multiple_of(CLOCK_EVERY);
        (look && budget.deadline.is_some_and(|d| Instant::now() >= d))
            .then_some(SearchResult::TimeLimitReached)
    };

    while unplaced > 0 {
        // Reaching the tail with operations unplaced cannot happen (their return events come
        // first); it is treated like a return event so the loop needs no special case.
        if node == list.tail() || !list.is_call[node] {
            if phase == Phase::Definite && any_open_ended {
                phase = Phase::OpenEnded;
                node = list.first();
                continue;
            }
            steps += 1;
            if let Some(gave_up) = out_of_budget(steps) {
                return (gave_up, steps);
            }
            if deepest
                .as_ref()
                .is_none_or(|d| stack.len() > d.prefix.len())
            {
                deepest = Some(dead_end(&list, ops, &stack, state, node));
            }
            let Some((call, before, placed_in)) = stack.pop() else {
                let end = deepest.unwrap_or_else(|| dead_end(&list, ops, &stack, state, node));
                return (SearchResult::Violation(end), steps);
            };
            let i = list.op[call];
            placed.toggle(i);
            state = before;
            list.unlift(call);
            if !is_open_ended(i) {
                unplaced += 1;
            }
            phase = placed_in;
            node = list.next[call];
            continue;
        }

        let i = list.op[node];
        let open_ended = is_open_ended(i);
        let twin_first = open_ended && earlier_twin[i].is_some_and(|twin| !placed.contains(twin));
        if open_ended != (phase == Phase::OpenEnded) || twin_first {
            node = list.next[node];
            continue;
        }
        steps += 1;
        if let Some(gave_up) = out_of_budget(steps) {
            return (gave_up, steps);
        }
        // The states before each operation of the trailing run of open-ended ones (rule 4).
        let mut run = stack
            .iter()
            .rev()
            .take_while(|(call, _, _)| is_open_ended(list.op[*call]))
            .map(|(_, before, _)| *before);
        let after = step(state, ops[i].op, ops[i].outcome).filter(|&after| match open_ended {
            false => run.all(|before| step(before, ops[i].op, ops[i].outcome).is_none()),
            true => after != state && run.all(|before| before != after),
        });
        if let Some(after) = after {
            placed.toggle(i);
            // Right after an open-ended operation rule 4 restricts what may follow, so such a
            // configuration is not recorded (one recorded would be taken to allow everything);
            // it is still skipped if an unrestricted one covers it.
            let new = match open_ended {
                true => !seen.covers(&placed, after),
                false => seen.insert(&placed, after),
            };
            if new {
                stack.push((node, state, phase));
                state = after;
                list.lift(node);
                if !open_ended {
                    unplaced -= 1;
                }
                phase = Phase::Definite;
                node = list.first();
                continue;
            }
            placed.toggle(i);
        }
        node = list.next[node];
    }
    (SearchResult::Linearizable, steps)
}

/// For each open-ended operation, the one called just before it that would do exactly the same
/// (same operation, same values — unread values are all [`crate::model::ANONYMOUS`]), if any.
///
/// Open-ended operations have no deadline, so twins are interchangeable once both are called:
/// a linearization that places the later twin while the earlier is unplaced is matched by one
/// placing the earlier instead. So a twin is only tried once its earlier twin is placed; the
/// placed twins are always the earliest-called ones, and 2^k subsets become k + 1 counts.
fn earlier_twins(ops: &[SearchOp]) -> Vec<Option<usize>> {
    let mut classes: HashMap<KeyOp, Vec<usize>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if op.ret.is_none() {
            classes.entry(op.op).or_default().push(i);
        }
    }
    let mut earlier = vec![None; ops.len()];
    for members in classes.values_mut() {
        members.sort_by_key(|&i| (ops[i].call, i));
        for pair in members.windows(2) {
            earlier[pair[1]] = Some(pair[0]);
        }
    }
    earlier
}

fn dead_end(
    list: &EventList,
    ops: &[SearchOp],
    stack: &[(usize, State, Phase)],
    state: State,
    at: usize,
) -> DeadEnd {
    // The state after each placed operation is the state the next one started from.
    let prefix = stack
        .iter()
        .enumerate()
        .map(|(k, (call, _, _))| {
            let after = stack.get(k + 1).map_or(state, |(_, before, _)| *before);
            (list.op[*call], after)
        })
        .collect();
    // Open-ended operations are left out: they can always wait, so they explain nothing.
    let mut candidates = Vec::new();
    let mut n = list.first();
    while n != at && n != list.tail() {
        if list.is_call[n] && ops[list.op[n]].ret.is_some() {
            candidates.push(list.op[n]);
        }
        n = list.next[n];
    }
    DeadEnd {
        prefix,
        due: (at != list.tail()).then(|| list.op[at]),
        candidates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeyOutcome as O;

    fn op(call: u64, ret: Option<u64>, op: KeyOp, outcome: KeyOutcome) -> SearchOp {
        SearchOp {
            call,
            ret,
            op,
            outcome,
        }
    }

    const PLENTY: Budget = Budget {
        max_steps: 1_000_000,
        deadline: None,
    };

    fn cas(expected: u32, new: u32) -> KeyOp {
        KeyOp::Update { expected, new }
    }

    #[test]
    fn finds_the_order_the_read_needs() {
        // create(0) and update(0 -> 1) overlap a read of 1; the read returns first.
        let ops = [
            op(0, Some(100), KeyOp::Create(0), O::Ok),
            op(10, Some(100), cas(0, 1), O::Ok),
            op(20, Some(30), KeyOp::Get, O::Found(1)),
        ];
        let (result, _) = linearize(&ops, PLENTY);
        assert!(matches!(result, SearchResult::Linearizable), "{result:?}");
    }

    #[test]
    fn reports_the_deepest_dead_end() {
        // create(0) returns, then a read sees nothing: the read is due and cannot fit.
        let ops = [
            op(0, Some(10), KeyOp::Create(0), O::Ok),
            op(20, Some(30), KeyOp::Get, O::NotFound),
        ];
        let (SearchResult::Violation(end), _) = linearize(&ops, PLENTY) else {
            panic!("expected a violation");
        };
        assert_eq!(end.prefix, vec![(0, Some(0))]);
        assert_eq!(end.due, Some(1));
        assert_eq!(end.candidates, vec![1]);
    }

    #[test]
    fn an_unknown_write_happens_where_it_is_needed_or_not_at_all() {
        let table: &[(&str, Vec<SearchOp>, bool)] = &[
            (
                "a delete that did not happen",
                vec![
                    op(0, Some(10), KeyOp::Create(0), O::Ok),
                    op(20, None, KeyOp::Delete, O::Unknown),
                    op(30, Some(40), KeyOp::Get, O::Found(0)),
                ],
                true,
            ),
            (
                "a delete that did",
                vec![
                    op(0, Some(10), KeyOp::Create(0), O::Ok),
                    op(20, None, KeyOp::Delete, O::Unknown),
                    op(30, Some(40), KeyOp::Get, O::NotFound),
                ],
                true,
            ),
            (
                "a delete cannot act before it was sent",
                vec![
                    op(0, Some(10), KeyOp::Create(0), O::Ok),
                    op(11, Some(12), KeyOp::Get, O::NotFound),
                    op(20, None, KeyOp::Delete, O::Unknown),
                ],
                false,
            ),
            (
                "a delete then a create make a conflict possible",
                vec![
                    op(0, Some(10), KeyOp::Create(0), O::Ok),
                    op(20, None, KeyOp::Delete, O::Unknown),
                    op(20, None, KeyOp::Create(1), O::Unknown),
                    op(30, Some(40), cas(0, 2), O::Conflict),
                ],
                true,
            ),
            (
                "one delete cannot be used twice",
                vec![
                    op(0, Some(1), KeyOp::Create(0), O::Ok),
                    op(2, None, KeyOp::Delete, O::Unknown),
                    op(3, Some(4), KeyOp::Get, O::NotFound),
                    op(5, Some(6), KeyOp::Create(1), O::Ok),
                    op(7, Some(8), KeyOp::Get, O::NotFound),
                ],
                false,
            ),
        ];
        for (name, ops, linearizable) in table {
            let (result, _) = linearize(ops, PLENTY);
            let got = matches!(result, SearchResult::Linearizable);
            assert_eq!(got, *linearizable, "{name}: {result:?}");
        }
    }

    #[test]
    fn gives_up_when_the_budget_runs_out() {
        let ops: Vec<SearchOp> = (0..50)
            .map(|i| op(0, Some(100), KeyOp::Create(i), O::AlreadyExists))
            .collect();
        let budget = Budget {
            max_steps: 10,
            deadline: None,
        };
        assert!(matches!(
            linearize(&ops, budget).0,
            SearchResult::StepBudgetExhausted
        ));
    }

    #[test]
    fn twins_are_chained_by_call_time() {
        let ops = [
            op(5, None, KeyOp::Delete, O::Unknown),
            op(1, None, KeyOp::Delete, O::Unknown),
            op(0, Some(1), KeyOp::Get, O::NotFound),
            op(3, None, KeyOp::Create(0), O::Unknown),
        ];
        assert_eq!(earlier_twins(&ops), vec![Some(1), None, None, None]);
    }
}

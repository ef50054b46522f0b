//! The history of one key as the search walks it: call and return events in time order, in a
//! doubly linked list over indexes so that lifting an operation out and putting it back
//! (always in reverse order) are O(1) and allocate nothing — Knuth's dancing links.

use crate::search::SearchOp;

/// Node 0 is the head and the last node the tail; nodes in between are events. Unlinking a node
/// leaves its own `next`/`prev` untouched, which is what lets `unlift` put it back.
pub(crate) struct EventList {
    pub next: Vec<usize>,
    prev: Vec<usize>,
    /// For node `n` (1..=events): the operation it belongs to.
    pub op: Vec<usize>,
    /// For a call node: its return node, if the operation has one. For a return node: `None`.
    return_of: Vec<Option<usize>>,
    pub is_call: Vec<bool>,
}

const HEAD: usize = 0;

impl EventList {
    pub fn new(ops: &[SearchOp]) -> EventList {
        // (time, calls before returns at the same time, op) — a call and a return at the same
        // instant count as concurrent, as Porcupine does, so coarse clocks cause no false alarms.
        let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.call, false, i));
            if let Some(ret) = op.ret {
                events.push((ret, true, i));
            }
        }
        events.sort_unstable();
        let count = events.len();
        let tail = count + 1;
        let mut list = EventList {
            next: (1..=tail).chain([tail]).collect(),
            prev: [HEAD].into_iter().chain(0..=count).collect(),
            op: vec![usize::MAX; count + 2],
            return_of: vec![None; count + 2],
            is_call: vec![false; count + 2],
        };
        let mut return_node = vec![None; ops.len()];
        for (n, (_, is_return, i)) in events.iter().enumerate() {
            let node = n + 1;
            list.op[node] = *i;
            list.is_call[node] = !is_return;
            if *is_return {
                return_node[*i] = Some(node);
            }
        }
        for node in 1..=count {
            if list.is_call[node] {
                list.return_of[node] = return_node[list.op[node]];
            }
        }
        list
    }

    pub fn tail(&self) -> usize {
        self.next.len() - 1
    }

    pub fn first(&self) -> usize {
        self.next[HEAD]
    }

    fn unlink(&mut self, n: usize) {
        let (p, x) = (self.prev[n], self.next[n]);
        self.next[p] = x;
        self.prev[x] = p;
    }

    fn relink(&mut self, n: usize) {
        let (p, x) = (self.prev[n], self.next[n]);
        self.next[p] = n;
        self.prev[x] = n;
    }

    pub fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(ret) = self.return_of[call] {
            self.unlink(ret);
        }
    }

    pub fn unlift(&mut self, call: usize) {
        if let Some(ret) = self.return_of[call] {
            self.relink(ret);
        }
        self.relink(call);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{KeyOp, KeyOutcome};

    fn walk(list: &EventList) -> Vec<(usize, bool)> {
        let mut out = Vec::new();
        let mut n = list.first();
        while n != list.tail() {
            out.push((list.op[n], list.is_call[n]));
            n = list.next[n];
        }
        out
    }

    #[test]
    fn events_in_time_order_and_lifting_undoes() {
        let op = |call, ret| SearchOp {
            call,
            ret,
            op: KeyOp::Get,
            outcome: KeyOutcome::NotFound,
        };
        // Op 1 returns at 10 and op 2 is called at 10: the call comes first (concurrent).
        let mut list = EventList::new(&[op(0, Some(20)), op(5, Some(10)), op(10, None)]);
        let all = vec![(0, true), (1, true), (2, true), (1, false), (0, false)];
        assert_eq!(walk(&list), all);
        let call_of_1 = list.next[list.first()];
        list.lift(call_of_1);
        assert_eq!(walk(&list), vec![(0, true), (2, true), (0, false)]);
        list.unlift(call_of_1);
        assert_eq!(walk(&list), all);
    }
}

//! The sequential specification of one key: what a single, one-at-a-time store would answer.
//!
//! The search calls [`step`] millions of times, so operations here are compact: every value of a
//! key is interned to a small number ([`ValueId`]) and the state is `Option<ValueId>`.

use std::collections::HashMap;

/// A value of one key, interned: index into [`Values::names`].
pub(crate) type ValueId = u32;

/// The key's state: absent, or holding the value a write gave it.
pub(crate) type State = Option<ValueId>;

/// Stands for every value that no operation but its own write mentions. No operation can tell
/// such values apart (none reads them or expects them), so the search treats them as one: two
/// orders that differ only in which unread value the key holds reach the same cached state.
pub(crate) const ANONYMOUS: ValueId = ValueId::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum KeyOp {
    Create(ValueId),
    Get,
    Update { expected: ValueId, new: ValueId },
    Delete,
    DeleteIf { expected: ValueId },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyOutcome {
    Ok,
    AlreadyExists,
    Found(ValueId),
    NotFound,
    Conflict,
    /// May have happened or not. When the search places it, it acts as the store would have
    /// at that moment; placing it after everything else is how it "did not happen".
    Unknown,
}

/// Applies `op` to `state` and says whether a sequential store could have answered `outcome`;
/// if so, returns the state after it.
pub(crate) fn step(state: State, op: KeyOp, outcome: KeyOutcome) -> Option<State> {
    use KeyOutcome as O;
    match (op, outcome) {
        (KeyOp::Create(v), O::Ok) => state.is_none().then_some(Some(v)),
        (KeyOp::Create(_), O::AlreadyExists) => state.is_some().then_some(state),
        (KeyOp::Create(v), O::Unknown) => Some(state.or(Some(v))),

        (KeyOp::Get, O::Found(v)) => (state == Some(v)).then_some(state),
        (KeyOp::Get, O::NotFound) => state.is_none().then_some(state),
        // Unknown reads are dropped before the search; accepting them keeps `step` total.
        (KeyOp::Get, O::Unknown) => Some(state),

        (KeyOp::Update { expected, new }, O::Ok) => (state == Some(expected)).then_some(Some(new)),
        (KeyOp::Update { expected, .. }, O::Conflict) => {
            (state.is_some() && state != Some(expected)).then_some(state)
        }
        (KeyOp::Update { .. }, O::NotFound) => state.is_none().then_some(state),
        (KeyOp::Update { expected, new }, O::Unknown) => match state == Some(expected) {
            true => Some(Some(new)),
            false => Some(state),
        },

        (KeyOp::Delete, O::Ok) => state.is_some().then_some(None),
        (KeyOp::Delete, O::NotFound) => state.is_none().then_some(state),
        (KeyOp::Delete, O::Unknown) => Some(None),

        (KeyOp::DeleteIf { expected }, O::Ok) => (state == Some(expected)).then_some(None),
        (KeyOp::DeleteIf { expected }, O::Conflict) => {
            (state.is_some() && state != Some(expected)).then_some(state)
        }
        (KeyOp::DeleteIf { .. }, O::NotFound) => state.is_none().then_some(state),
        (KeyOp::DeleteIf { expected }, O::Unknown) => match state == Some(expected) {
            true => Some(None),
            false => Some(state),
        },

        // Outcomes that do not fit the operation are refused by `History::validate`.
        _ => None,
    }
}

/// The values of one key, interned, and which history entry wrote each (for explanations).
#[derive(Debug, Default)]
pub(crate) struct Values {
    pub names: Vec<String>,
    /// History index of the entry that writes each value; `None` for a value only ever read.
    pub writers: Vec<Option<usize>>,
    ids: HashMap<String, ValueId>,
}

impl Values {
    pub fn intern(&mut self, name: &str) -> ValueId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        // A key has at most as many values as the history has entries, far below u32::MAX;
        // saturating keeps this total without a panic path.
        let id =
            ValueId::try_from(self.names.len()).map_or(ANONYMOUS - 1, |id| id.min(ANONYMOUS - 1));
        self.names.push(name.to_string());
        self.writers.push(None);
        self.ids.insert(name.to_string(), id);
        id
    }

    /// `"b" (written by #7)` or `"x" (written by no operation)`.
    pub fn describe(&self, id: ValueId) -> String {
        if id == ANONYMOUS {
            return "a value no one read".to_string();
        }
        let index = id as usize;
        let name = self.names.get(index).map_or("?", String::as_str);
        match self.writers.get(index).copied().flatten() {
            Some(writer) => format!("{name:?} (written by #{writer})"),
            None => format!("{name:?} (written by no operation)"),
        }
    }

    pub fn describe_state(&self, state: State) -> String {
        match state {
            Some(id) => self.describe(id),
            None => "absent".to_string(),
        }
    }
}

/// Why `op` answered `outcome` cannot be placed when the key is in `state`, in words.
pub(crate) fn why_not(state: State, op: KeyOp, outcome: KeyOutcome, values: &Values) -> String {
    use KeyOutcome as O;
    if step(state, op, outcome).is_some() {
        return "it fits here, but no order of the operations after it does".to_string();
    }
    let holds = |s: State| match s {
        Some(v) => format!("the key holds {}", values.describe(v)),
        None => "the key does not exist".to_string(),
    };
    match (op, outcome, state) {
        (KeyOp::Get, O::Found(v), Some(_)) => {
            format!("{}, not {}", holds(state), values.describe(v))
        }
        (KeyOp::Update { expected, .. }, O::Ok, Some(_)) => format!(
            "{}, not the expected {}",
            holds(state),
            values.describe(expected)
        ),
        (KeyOp::Update { expected, .. }, O::Conflict, Some(_)) => format!(
            "the key holds the expected {}, so the update would have succeeded",
            values.describe(expected)
        ),
        (KeyOp::DeleteIf { expected }, O::Ok, Some(_)) => format!(
            "{}, not the expected {}",
            holds(state),
            values.describe(expected)
        ),
        (KeyOp::DeleteIf { expected }, O::Conflict, Some(_)) => format!(
            "the key holds the expected {}, so the delete would have succeeded",
            values.describe(expected)
        ),
        _ => holds(state),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use KeyOutcome as O;

    #[test]
    fn the_sequential_store() {
        let (a, b, c) = (0, 1, 2);
        let cas = |expected, new| KeyOp::Update { expected, new };
        let cad = |expected| KeyOp::DeleteIf { expected };
        // (state before, operation, outcome, state after or None if impossible)
        let table: &[(State, KeyOp, KeyOutcome, Option<State>)] = &[
            (None, KeyOp::Create(a), O::Ok, Some(Some(a))),
            (Some(b), KeyOp::Create(a), O::Ok, None),
            (Some(b), KeyOp::Create(a), O::AlreadyExists, Some(Some(b))),
            (None, KeyOp::Create(a), O::AlreadyExists, None),
            (None, KeyOp::Create(a), O::Unknown, Some(Some(a))),
            (Some(b), KeyOp::Create(a), O::Unknown, Some(Some(b))),
            (Some(a), KeyOp::Get, O::Found(a), Some(Some(a))),
            (Some(a), KeyOp::Get, O::Found(b), None),
            (None, KeyOp::Get, O::Found(a), None),
            (None, KeyOp::Get, O::NotFound, Some(None)),
            (Some(a), KeyOp::Get, O::NotFound, None),
            (Some(a), cas(a, b), O::Ok, Some(Some(b))),
            (Some(c), cas(a, b), O::Ok, None),
            (Some(c), cas(a, b), O::Conflict, Some(Some(c))),
            (Some(a), cas(a, b), O::Conflict, None),
            (None, cas(a, b), O::Conflict, None),
            (None, cas(a, b), O::NotFound, Some(None)),
            (Some(a), cas(a, b), O::Unknown, Some(Some(b))),
            (Some(c), cas(a, b), O::Unknown, Some(Some(c))),
            (Some(a), KeyOp::Delete, O::Ok, Some(None)),
            (None, KeyOp::Delete, O::Ok, None),
            (None, KeyOp::Delete, O::NotFound, Some(None)),
            (Some(a), KeyOp::Delete, O::NotFound, None),
            (Some(a), KeyOp::Delete, O::Unknown, Some(None)),
            (Some(a), cad(a), O::Ok, Some(None)),
            (Some(c), cad(a), O::Ok, None),
            (None, cad(a), O::Ok, None),
            (Some(c), cad(a), O::Conflict, Some(Some(c))),
            (Some(a), cad(a), O::Conflict, None),
            (None, cad(a), O::Conflict, None),
            (None, cad(a), O::NotFound, Some(None)),
            (Some(a), cad(a), O::NotFound, None),
            (Some(a), cad(a), O::Unknown, Some(None)),
            (Some(c), cad(a), O::Unknown, Some(Some(c))),
            (None, cad(a), O::Unknown, Some(None)),
            (Some(a), KeyOp::Get, O::Conflict, None),
        ];
        for (i, (before, op, outcome, after)) in table.iter().enumerate() {
            assert_eq!(
                step(*before, *op, *outcome),
                *after,
                "row {i}: {op:?} {outcome:?}"
            );
        }
    }

    #[test]
    fn explanations_name_values_and_writers() {
        let mut values = Values::default();
        let a = values.intern("a");
        let b = values.intern("b");
        values.writers[a as usize] = Some(3);
        let why = why_not(Some(a), KeyOp::Get, O::Found(b), &values);
        assert_eq!(
            why,
            r#"the key holds "a" (written by #3), not "b" (written by no operation)"#
        );
        let why = why_not(None, KeyOp::Get, O::Found(a), &values);
        assert_eq!(why, "the key does not exist");
    }
}

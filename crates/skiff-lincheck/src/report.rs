//! What the checker concludes, per key and overall, and how it reads to a person.

use std::fmt;

use crate::history::{Entry, Outcome};

/// The verdict for a whole history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every key is linearizable.
    Linearizable,
    /// At least one key is not.
    Violation,
    /// No key is proven wrong, but the search gave up on at least one.
    Unknown,
}

/// The result of [`crate::check`]: one [`KeyReport`] per key, in key order.
#[derive(Debug, Clone)]
pub struct Report {
    pub keys: Vec<KeyReport>,
}

#[derive(Debug, Clone)]
pub struct KeyReport {
    pub key: String,
    /// Operations of this key that the search considered (reads with unknown outcomes are
    /// dropped: they constrain nothing).
    pub operations: usize,
    /// Search steps spent on this key: placements tried plus backtracks.
    pub steps: u64,
    pub verdict: KeyVerdict,
}

#[derive(Debug, Clone)]
pub enum KeyVerdict {
    Linearizable,
    Violation(Box<Violation>),
    /// The search stopped before it could decide.
    Unknown(GaveUp),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// `CheckOptions::max_steps_per_key` steps were not enough.
    StepBudget,
    /// `CheckOptions::time_limit` passed.
    TimeLimit,
}

/// An operation of the history, by its position in it (0-based: line `index + 1` of a history
/// file), with the entry itself so the explanation stands alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRef {
    pub index: usize,
    pub entry: Entry,
}

/// A key that is not linearizable, explained as the search's deepest dead end.
#[derive(Debug, Clone)]
pub struct Violation {
    pub key: String,
    /// The longest prefix the search could linearize, in linearization order, each operation
    /// with the key's value after it (`None`: absent). Unknown outcomes in it are placed as
    /// having happened there.
    pub prefix: Vec<(OpRef, Option<String>)>,
    /// The key's value after the prefix, with where it came from.
    pub state: String,
    /// The operation that had to take effect before it returned, but could not.
    pub due: Option<OpRef>,
    /// Every operation that could have gone next, with why it does not fit.
    pub candidates: Vec<(OpRef, String)>,
    /// How many operations of the key the search had to place in all.
    pub operations: usize,
}

impl Report {
    pub fn verdict(&self) -> Verdict {
        let mut verdict = Verdict::Linearizable;
        for key in &self.keys {
            match key.verdict {
                KeyVerdict::Violation(_) => return Verdict::Violation,
                KeyVerdict::Unknown(_) => verdict = Verdict::Unknown,
                KeyVerdict::Linearizable => {}
            }
        }
        verdict
    }

    pub fn is_linearizable(&self) -> bool {
        self.verdict() == Verdict::Linearizable
    }

    pub fn violations(&self) -> impl Iterator<Item = &Violation> {
        self.keys.iter().filter_map(|k| match &k.verdict {
            KeyVerdict::Violation(v) => Some(&**v),
            _ => None,
        })
    }

    pub fn steps(&self) -> u64 {
        self.keys.iter().map(|k| k.steps).sum()
    }
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GaveUp::StepBudget => f.write_str("unknown (search budget exhausted)"),
            GaveUp::TimeLimit => f.write_str("unknown (time limit reached)"),
        }
    }
}

impl fmt::Display for OpRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {}", self.index, self.entry)
    }
}

/// How many operations of the prefix an explanation shows: the end of it is where things went
/// wrong; the whole prefix is in [`Violation::prefix`].
const PREFIX_SHOWN: usize = 12;

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "key {:?} is not linearizable.", self.key)?;
        let skipped = self.prefix.len().saturating_sub(PREFIX_SHOWN);
        writeln!(
            f,
            "  The longest linearizable prefix found places {} of its {} operations:",
            self.prefix.len(),
            self.operations
        )?;
        if skipped > 0 {
            writeln!(f, "    ... {skipped} earlier operations")?;
        }
        for (op, after) in &self.prefix[skipped..] {
            let after = after
                .as_deref()
                .map_or("absent".to_string(), |v| format!("{v:?}"));
            writeln!(f, "    {op}    => {after}")?;
        }
        if self.prefix[skipped..]
            .iter()
            .any(|(op, _)| op.entry.outcome == Outcome::Unknown)
        {
            writeln!(
                f,
                "    (an operation with an unknown outcome is shown where the search let it \
                 take effect)"
            )?;
        }
        writeln!(f, "  After it the key is {}.", self.state)?;
        match &self.due {
            Some(due) => writeln!(
                f,
                "  #{} had to take effect before it returned at {}, but no operation fits next:",
                due.index, due.entry.ret
            )?,
            None => writeln!(f, "  No operation fits next:")?,
        }
        for (op, why) in &self.candidates {
            writeln!(f, "    {op}: {why}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operations: usize = self.keys.iter().map(|k| k.operations).sum();
        let summary = match self.verdict() {
            Verdict::Linearizable => "linearizable",
            Verdict::Violation => "NOT linearizable",
            Verdict::Unknown => "unknown",
        };
        let keys = match self.keys.len() {
            1 => "1 key".to_string(),
            n => format!("{n} keys"),
        };
        writeln!(
            f,
            "{summary}: {keys}, {operations} operations, {} search steps",
            self.steps()
        )?;
        for key in &self.keys {
            match &key.verdict {
                KeyVerdict::Linearizable => {}
                KeyVerdict::Violation(v) => write!(f, "{v}")?,
                KeyVerdict::Unknown(why) => writeln!(
                    f,
                    "key {:?}: {why} after {} steps over {} operations",
                    key.key, key.steps, key.operations
                )?,
            }
        }
        Ok(())
    }
}

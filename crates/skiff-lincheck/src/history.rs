//! What the clients did: one [`Entry`] per operation, with when it was invoked, when its answer
//! came back and what the answer was. A [`History`] is what the chaos runner records and saves
//! (JSON lines, one entry per line) and what the checker reads.

use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// An operation a client sent for one key. Values are the ConfigMap contents the runner wrote;
/// every write in a history writes a value of its own, so a value names the version it made.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `POST`: create the key with this value.
    Create(String),
    /// `GET`: read the key's value (a linearizable read, never `resourceVersion=0`).
    Get,
    /// `PUT` with the resourceVersion the client read together with `expected`: replace the
    /// value with `new` if the current value is still `expected` (compare-and-set).
    Update { expected: String, new: String },
    /// `DELETE`, unconditional.
    Delete,
    /// `DELETE` with the resourceVersion the client read together with `expected` as its
    /// precondition: delete the key if its value is still `expected` (compare-and-delete).
    DeleteIf { expected: String },
}

/// What the client was told.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The write took effect (201/200).
    Ok,
    /// A create found the key already there (409 AlreadyExists).
    AlreadyExists,
    /// A read saw this value.
    Found(String),
    /// The key does not exist (404).
    NotFound,
    /// A compare-and-set found another value (409 Conflict).
    Conflict,
    /// No definite answer (timeout, 5xx, connection dropped): the operation may or may not have
    /// taken effect, at any moment after it was invoked.
    Unknown,
}

/// One operation of one client, as the runner saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Who sent it. Only shown in explanations: the checker orders operations by time alone.
    pub client: u64,
    /// The object the operation is about (e.g. `default/configmaps/lin-3`).
    pub key: String,
    /// When the request was sent: nanoseconds of one monotonic clock, or an ordering index.
    pub call: u64,
    /// When the answer arrived, on the same clock. Ignored for [`Outcome::Unknown`].
    #[serde(rename = "return")]
    pub ret: u64,
    pub op: Op,
    pub outcome: Outcome,
}

/// A recorded history: entries in any order (the checker sorts by time).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub entries: Vec<Entry>,
}

/// Why a history could not be read or is not one the checker can judge. These are mistakes of
/// the recording, not of the system under test, so they are errors rather than verdicts.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the history: {0}")]
    Write(#[source] std::io::Error),
    #[error("line {line}: {source}")]
    Parse {
        line: usize,
        source: serde_json::Error,
    },
    #[error("entry #{index}: {op} cannot end with {outcome}")]
    OutcomeDoesNotFit {
        index: usize,
        op: Op,
        outcome: Outcome,
    },
    #[error("entry #{index} returns at {ret}, before it was invoked at {call}")]
    ReturnBeforeCall { index: usize, call: u64, ret: u64 },
    #[error(
        "value {value:?} is written by entries #{first} and #{second}; every write must write \
         a value of its own, so that a value read names the write that made it"
    )]
    DuplicateValue {
        value: String,
        first: usize,
        second: usize,
    },
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    pub fn push(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Starts an entry for tests and small tools: `h.op(client, key, call..ret)` followed by the
    /// operation and its outcome, e.g. `h.op(1, "cm", 0..10).create("a").ok()`.
    pub fn op(&mut self, client: u64, key: &str, span: Range<u64>) -> Invocation<'_> {
        Invocation {
            history: self,
            client,
            key: key.to_string(),
            span,
        }
    }

    /// Reads JSON lines, one [`Entry`] per line; blank lines are skipped.
    pub fn from_jsonl(reader: impl std::io::Read) -> Result<History, HistoryError> {
        let mut history = History::new();
        for (number, line) in BufReader::new(reader).lines().enumerate() {
            let line = line.map_err(|source| HistoryError::Read {
                path: PathBuf::from("<history>"),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            let entry = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
                line: number + 1,
                source,
            })?;
            history.push(entry);
        }
        Ok(history)
    }

    /// Writes JSON lines, one [`Entry`] per line, in the order the entries were recorded.
    pub fn write_jsonl(&self, mut writer: impl Write) -> Result<(), HistoryError> {
        for entry in &self.entries {
            let line = serde_json::to_string(entry)
                .map_err(|e| HistoryError::Write(std::io::Error::other(e)))?;
            writeln!(writer, "{line}").map_err(HistoryError::Write)?;
        }
        writer.flush().map_err(HistoryError::Write)
    }

    /// Reads a history file written by [`History::save`] (or by the runner, line by line).
    pub fn load(path: &Path) -> Result<History, HistoryError> {
        let file = std::fs::File::open(path).map_err(|source| HistoryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        History::from_jsonl(file).map_err(|e| match e {
            HistoryError::Read { source, .. } => HistoryError::Read {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    pub fn save(&self, path: &Path) -> Result<(), HistoryError> {
        let file = std::fs::File::create(path).map_err(HistoryError::Write)?;
        self.write_jsonl(std::io::BufWriter::new(file))
    }

    /// Checks that the history is one the model can judge: outcomes that fit their operations,
    /// answers that come after their requests, and no value written twice.
    pub fn validate(&self) -> Result<(), HistoryError> {
        let mut writers: HashMap<&str, usize> = HashMap::new();
        for (index, entry) in self.entries.iter().enumerate() {
            if !entry.outcome_fits() {
                return Err(HistoryError::OutcomeDoesNotFit {
                    index,
                    op: entry.op.clone(),
                    outcome: entry.outcome.clone(),
                });
            }
            if entry.outcome != Outcome::Unknown && entry.ret < entry.call {
                return Err(HistoryError::ReturnBeforeCall {
                    index,
                    call: entry.call,
                    ret: entry.ret,
                });
            }
            if let Some(value) = entry.op.written() {
                if let Some(first) = writers.insert(value, index) {
                    return Err(HistoryError::DuplicateValue {
                        value: value.to_string(),
                        first,
                        second: index,
                    });
                }
            }
        }
        Ok(())
    }
}

impl Op {
    /// The value this operation writes, if it writes one.
    pub fn written(&self) -> Option<&str> {
        match self {
            Op::Create(value) | Op::Update { new: value, .. } => Some(value),
            Op::Get | Op::Delete | Op::DeleteIf { .. } => None,
        }
    }
}

impl Entry {
    fn outcome_fits(&self) -> bool {
        use Outcome::*;
        matches!(
            (&self.op, &self.outcome),
            (_, Unknown)
                | (Op::Create(_), Ok | AlreadyExists)
                | (Op::Get, Found(_) | NotFound)
                | (Op::Update { .. }, Ok | Conflict | NotFound)
                | (Op::Delete, Ok | NotFound)
                | (Op::DeleteIf { .. }, Ok | Conflict | NotFound)
        )
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Create(value) => write!(f, "create({value:?})"),
            Op::Get => f.write_str("get"),
            Op::Update { expected, new } => write!(f, "update({expected:?} -> {new:?})"),
            Op::Delete => f.write_str("delete"),
            Op::DeleteIf { expected } => write!(f, "delete(if {expected:?})"),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::AlreadyExists => f.write_str("already exists"),
            Outcome::Found(value) => write!(f, "found {value:?}"),
            Outcome::NotFound => f.write_str("not found"),
            Outcome::Conflict => f.write_str("conflict"),
            Outcome::Unknown => f.write_str("unknown"),
        }
    }
}

impl fmt::Display for Entry {
    /// `client 3 [1200, 1500] update("a" -> "b") -> conflict`; an unknown outcome's interval is
    /// open-ended, as the checker treats it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.outcome {
            Outcome::Unknown => write!(f, "client {} [{}, ∞)", self.client, self.call)?,
            _ => write!(f, "client {} [{}, {}]", self.client, self.call, self.ret)?,
        }
        write!(f, " {} -> {}", self.op, self.outcome)
    }
}

/// An entry being built: client, key and interval are known, the operation comes next.
#[must_use = "an invocation is recorded only once its outcome is given"]
pub struct Invocation<'h> {
    history: &'h mut History,
    client: u64,
    key: String,
    span: Range<u64>,
}

/// An entry being built: everything but the outcome is known.
#[must_use = "an operation is recorded only once its outcome is given"]
pub struct Pending<'h> {
    invocation: Invocation<'h>,
    op: Op,
}

impl<'h> Invocation<'h> {
    pub fn create(self, value: &str) -> Pending<'h> {
        self.with(Op::Create(value.to_string()))
    }

    pub fn get(self) -> Pending<'h> {
        self.with(Op::Get)
    }

    pub fn update(self, expected: &str, new: &str) -> Pending<'h> {
        self.with(Op::Update {
            expected: expected.to_string(),
            new: new.to_string(),
        })
    }

    pub fn delete(self) -> Pending<'h> {
        self.with(Op::Delete)
    }

    pub fn delete_if(self, expected: &str) -> Pending<'h> {
        self.with(Op::DeleteIf {
            expected: expected.to_string(),
        })
    }

    pub fn with(self, op: Op) -> Pending<'h> {
        Pending {
            invocation: self,
            op,
        }
    }
}

impl Pending<'_> {
    pub fn ok(self) {
        self.outcome(Outcome::Ok)
    }

    pub fn already_exists(self) {
        self.outcome(Outcome::AlreadyExists)
    }

    pub fn found(self, value: &str) {
        self.outcome(Outcome::Found(value.to_string()))
    }

    pub fn not_found(self) {
        self.outcome(Outcome::NotFound)
    }

    pub fn conflict(self) {
        self.outcome(Outcome::Conflict)
    }

    pub fn unknown(self) {
        self.outcome(Outcome::Unknown)
    }

    pub fn outcome(self, outcome: Outcome) {
        let Invocation {
            history,
            client,
            key,
            span,
        } = self.invocation;
        history.push(Entry {
            client,
            key,
            call: span.start,
            ret: span.end,
            op: self.op,
            outcome,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_round_trip() {
        let mut h = History::new();
        h.op(1, "cm", 0..10).create("a").ok();
        h.op(2, "cm", 5..20).get().found("a");
        h.op(3, "cm", 12..30).update("a", "b").unknown();
        h.op(1, "cm", 31..40).delete().not_found();
        let mut bytes = Vec::new();
        h.write_jsonl(&mut bytes).expect("writes to memory");
        let text = String::from_utf8(bytes.clone()).expect("JSON is UTF-8");
        assert!(text.starts_with(
            r#"{"client":1,"key":"cm","call":0,"return":10,"op":{"create":"a"},"outcome":"ok"}"#
        ));
        assert_eq!(History::from_jsonl(&bytes[..]).expect("reads back"), h);
    }

    #[test]
    fn parse_errors_name_the_line() {
        let text = "\n{\"client\":1,\"key\":\"k\",\"call\":0,\"return\":1,\"op\":\"get\",\"outcome\":\"not_found\"}\n{oops}\n";
        let result = History::from_jsonl(text.as_bytes());
        assert!(
            matches!(result, Err(HistoryError::Parse { line: 3, .. })),
            "{result:?}"
        );
    }

    #[test]
    fn validation_rejects_malformed_histories() {
        let mut h = History::new();
        h.op(1, "k", 0..1).get().ok();
        assert!(matches!(
            h.validate(),
            Err(HistoryError::OutcomeDoesNotFit { index: 0, .. })
        ));

        let mut h = History::new();
        // An answer before its request: a clock mix-up in the recording.
        h.op(1, "k", Range { start: 5, end: 1 }).get().not_found();
        assert!(matches!(
            h.validate(),
            Err(HistoryError::ReturnBeforeCall { index: 0, .. })
        ));

        let mut h = History::new();
        h.op(1, "k", 0..1).create("a").ok();
        h.op(1, "other", 2..3).create("a").unknown();
        assert!(matches!(
            h.validate(),
            Err(HistoryError::DuplicateValue {
                first: 0,
                second: 1,
                ..
            })
        ));
    }
}

//! skiff-lincheck: is what the clients saw of skiff's object store *linearizable*?
//!
//! This is the checker of a Jepsen-style test. A chaos runner (a separate part) lets clients on
//! several servers create, read, compare-and-set and delete a few ConfigMaps while servers are
//! killed, stopped, partitioned and restarted, and records every operation with when it was sent
//! and when (and what) it was answered. This crate judges that record. It knows nothing about
//! HTTP, Raft or faults; it judges only what the clients saw.
//!
//! ## What linearizability means here
//! Every operation must appear to take effect at one instant (its *linearization point*)
//! somewhere between the moment the client sent it and the moment the answer arrived, and the
//! answers must be those a single store, applying the operations one at a time in the order of
//! those instants, would have given. So once a write has been acknowledged, every read that
//! *starts* later sees it or something newer; two operations that overlap in time may take
//! effect in either order, but not in an order that contradicts what someone saw.
//!
//! The single store is the model (module `model`), per key: the state is "absent" or
//! one value; `Create(v)` answers `Ok` (and stores `v`) or `AlreadyExists`; `Get` answers
//! `Found(v)` or `NotFound`; `Update { expected: w, new: v }` is a compare-and-set answering `Ok`,
//! `Conflict` (another value is there) or `NotFound`; `Delete` answers `Ok` or `NotFound`.
//! Every write writes a value never written before, so a value read names the write that made
//! it, and a resourceVersion is just another name for that value (the runner translates).
//!
//! ## Why key by key
//! Linearizability is *compositional* (Herlihy & Wing; "P-compositionality", Horn & Kroening):
//! a history is linearizable iff the sub-history of each key is, since operations on different
//! keys never constrain each other in this model. The search is exponential in how many
//! operations overlap, so five searches over 1,000 operations each are vastly cheaper than one
//! over 5,000 — and they run in parallel.
//!
//! ## Unknown outcomes
//! A timeout, a 5xx or a dropped connection leaves the client not knowing whether its write
//! happened. Such an operation may take effect at any instant after it was sent — even after the
//! runner stopped — or never. As Porcupine does, its return time is taken as infinite: the
//! search may place it anywhere after its call, and placing it after everything else is how it
//! "never happened" (it then changes nothing anyone saw). A read with an unknown outcome
//! constrains nothing and is dropped. Unknown writes are what makes searches explode (each one
//! could go in many places, or none), so the checker works to need them less:
//! - an unknown write whose value somebody saw certainly happened, before the first observer
//!   returned; it is checked as an `Ok` write that returned then;
//! - values nobody but their own write mentions are merged into one, since nothing can tell
//!   them apart;
//! - each key is first searched *without* the unknown writes nobody saw (dropping them is one
//!   thing they may have done, so success there is success); only if that fails is the key
//!   searched again with them, and then the search only places one where it can matter (module
//!   `search` lists the rules and why they lose nothing).
//!
//! ## How the search works
//! Wing & Gong's algorithm with Lowe's memoisation, as in Porcupine (module `search`):
//! call and return events in time order in a linked list; walk it, tentatively placing any
//! operation whose call comes before the first pending return and whose answer the model
//! accepts from the current state; on reaching a return event (an operation that had to be
//! placed by now), undo the last placement and try the next candidate. A memo of every
//! configuration (set of placed operations as a bitset, and the state) already explored prunes
//! the orders that reach the same point another way — and, here, those that reach it having
//! spent more unknown writes. The search counts its steps and stops at
//! [`CheckOptions::max_steps_per_key`] or [`CheckOptions::time_limit`], answering "unknown"
//! rather than hanging; it only says "violation" when it has tried everything.
//!
//! A violation is explained by the deepest dead end: the longest linearizable prefix found, the
//! key's value after it, the operation that had to take effect next, and why each operation that
//! could have gone next does not fit (see [`Violation`]).
//!
//! ## Example
//! ```
//! use skiff_lincheck::{check, CheckOptions, History, Verdict};
//!
//! let mut h = History::new();
//! h.op(1, "cm-a", 0..10).create("v1").ok();
//! h.op(2, "cm-a", 5..30).update("v1", "v2").ok();
//! h.op(3, "cm-a", 12..20).get().found("v1"); // overlaps the update: either value is fine
//! h.op(3, "cm-a", 40..50).get().found("v1"); // after the update returned: stale
//! let report = check(&h, &CheckOptions::default()).expect("a well-formed history");
//! assert_eq!(report.verdict(), Verdict::Violation);
//! println!("{report}"); // names the stale read and the update it missed
//! ```
//!
//! ## Layout
//! - [`history`]: [`Entry`], [`Op`], [`Outcome`], [`History`] (builder, JSON lines, validation).
//! - `model`: the sequential store, interned values, and "why not" in words.
//! - `search`: the linearization search for one key, with `events` (the time-ordered event
//!   list it walks) and `memo` (the configurations it has explored).
//! - `check`: [`check`] and [`check_file`] — split by key, prepare, search, explain.
//! - [`report`]: [`Report`], [`Verdict`], [`Violation`] and how they print.

mod check;
mod events;
pub mod history;
mod memo;
mod model;
pub mod report;
mod search;

pub use check::{check, check_file, CheckOptions};
pub use history::{Entry, History, HistoryError, Invocation, Op, Outcome, Pending};
pub use report::{GaveUp, KeyReport, KeyVerdict, OpRef, Report, Verdict, Violation};

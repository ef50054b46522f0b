//! skiff-api: the resource types skiff serves and everything about them that needs no I/O.
//!
//! ## Layout
//! - [`resources`]: the one table of served resources (group, version, kind, scope, short names).
pub mod resources;

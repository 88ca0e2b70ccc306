//! memtrace's report: the model every output is made from, and everything
//! that reads it. A leaf crate: it knows nothing of eBPF, the tracer's
//! runtime or symbolization, so `memtrace report`, `memtrace diff`, the
//! snapshot fuzz target and the integration tests use it without them.
//!
//! - [`model`]: the serde structure of a report (the JSON schema).
//! - [`load`]: snapshots read back (JSON reports, folded stacks).
//! - [`render`]: text, live view, JSON, SVG flamegraph, folded, pprof.
//! - [`diff`]: two snapshots compared, and its renderers.
//! - [`units`]: sizes and rates for people.

pub mod diff;
pub mod load;
pub mod model;
pub mod render;
pub mod units;

pub use model::*;

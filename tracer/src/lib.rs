//! memtrace: finds memory leaks in running processes with eBPF.
//!
//! One folder per stage of the data flow, dependencies pointing one way
//! (`cargo xtask lint` checks it; docs/architecture.md draws it):
//!
//! - `cli` parses the command line into a [`config`] once; nothing below
//!   `main` sees the parser's types.
//! - `trace` runs one trace (targets and their lifecycle, the
//!   interval loop, OOM kills); `agent` is the node agent; `offline`
//!   renders and diffs saved reports.
//! - `discover` finds what to hook: processes, cgroups and containers, the
//!   selection rules, allocator files and probe placement, `-- CMD` launch.
//! - `bpf` loads and attaches the eBPF programs (tracer-ebpf) and reads
//!   what they account: the live-block table, drains, unwind tables,
//!   overhead, preflight checks.
//! - `accounting` keeps a series per stack, accounts anonymous mappings,
//!   judges verdicts and converts it all into the report model.
//! - `symbolize` turns addresses into functions, files and lines.
//! - `output` writes reports where they go.
//!
//! The report model and its renderers are the `memtrace-report` crate.
//! This library holds every module so that the fuzz targets (`fuzz/`)
//! reach the parsers of outside input.

pub mod accounting;
pub mod agent;
pub mod bpf;
pub mod cli;
pub mod config;
pub mod discover;
pub mod offline;
pub mod output;
pub mod symbolize;
pub mod trace;

/// When this process began (`main` marks it first thing).
static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Marks this process's start (idempotent).
pub fn mark_start() {
    STARTED.get_or_init(std::time::Instant::now);
}

/// Time since [`mark_start`] (or since the first call).
pub fn since_start() -> std::time::Duration {
    STARTED.get_or_init(std::time::Instant::now).elapsed()
}

/// Writes `memtrace: MSG` to stderr, ignoring a closed stderr (eprintln!
/// would panic on EPIPE).
pub fn note(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "memtrace: {msg}");
}

//! memtrace: finds memory leaks in running processes with eBPF.
//!
//! Data flow, one module per stage: `target`/`allocator`/`launch` find what
//! to hook (`watch` and `cgroup` on a watched node) → `attach` loads and attaches the eBPF programs (tracer-ebpf;
//! `multi` the uprobe session and uprobe_multi programs, which aya cannot) →
//! `drain` reads kernel-side accounting (`live` the live-block table, through
//! `mapped` windows of BPF arrays) → `mappings` accounts anonymous
//! mappings → `aggregate` keeps a series per stack → `analysis` computes
//! growth and verdicts → `symbolize` resolves frames (`unwind` builds the
//! unwind tables the kernel walks stacks with) → `report` builds the
//! one report model that every renderer reads; `output` writes it in each
//! format asked for. `session` runs the loop (`oom` describes OOM
//! kills); `offline` renders and diffs saved reports; `agent` is the node
//! agent (`memtrace agent`). `main.rs` only wires; this library holds every
//! module, so that the fuzz targets (`fuzz/`) reach the parsers of outside
//! input.

pub mod agent;
pub mod aggregate;
pub mod allocator;
pub mod analysis;
pub mod attach;
pub mod cgroup;
pub mod cli;
pub mod drain;
pub mod launch;
pub mod live;
pub mod mapped;
pub mod mappings;
pub mod multi;
pub mod offline;
pub mod oom;
pub mod outfile;
pub mod output;
pub mod overhead;
pub mod perfmap;
pub mod placement;
pub mod preflight;
pub mod report;
pub mod session;
pub mod symbolize;
pub mod target;
pub mod units;
pub mod unwind;
pub mod watch;

/// Writes `memtrace: MSG` to stderr, ignoring a closed stderr (eprintln!
/// would panic on EPIPE).
pub fn note(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "memtrace: {msg}");
}

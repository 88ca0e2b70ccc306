//! The memtrace integration tests, as one test binary: each module runs the
//! real `memtrace` binary (`$MEMTRACE_BIN`) as root against the C workloads
//! of `tests/workloads/`, with the support code of `tests/support/` (the
//! `memtrace_integration` library).

mod agent;
mod allocators;
mod deploy;
mod foundation;
mod hardening;
mod lifecycle;
mod live;
mod mappings;
mod node;
mod outputs;
mod pprof;
mod regressions;
mod reliability;
mod runtimes;
mod sampling;
mod semantics;
mod soak;
mod threads;
mod unwind;
mod verdicts;

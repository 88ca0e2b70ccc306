//! The memtrace integration tests, as one test binary: each module runs the
//! real `memtrace` binary (`$MEMTRACE_BIN`) as root against the C workloads
//! of `tests/workloads/`, with the support code of `tests/support/` (the
//! `memtrace_integration` library). One module per feature:
//!
//! - `attach`: `--pid` and `-- CMD`, and the pids that cannot be traced;
//! - `cli`: invalid option values are one-line usage errors;
//! - `allocators`: finding the allocator (glibc, musl, static, jemalloc,
//!   tcmalloc, mimalloc, prefixes, dlopen, a replaced libc, C++ `new`);
//! - `semantics`: what each allocator call means (entry points, realloc
//!   edge cases, failed calls, churn, bad traffic);
//! - `mappings`: anonymous mmap, munmap and decommit accounting;
//! - `threads`: multi-threaded accounting;
//! - `lifecycle`: exec, exit, kill, forks and pid reuse of a target;
//! - `unwind`: full stacks without frame pointers (`--unwind`);
//! - `sampling`: byte sampling (`--sample-bytes`);
//! - `verdicts`: leak verdicts, `--sort`, `--min-age`, `--rss-alert`;
//! - `outputs`: text, JSON, SVG, folded, pprof, snapshots, the live view;
//! - `oom`: OOM kills and `--oom-only`;
//! - `peaks`: each stack's and target's peak, a spike freed before the end;
//! - `node`: `--all`, `--comm`, `--cgroup`;
//! - `agent`: `memtrace agent` and its HTTP surface;
//! - `deploy`: the Kubernetes manifests in `deploy/`;
//! - `security`: planted links, no memory contents in reports;
//! - `robustness`: nothing left behind, losses counted, hostile targets;
//! - `runtimes`: Go, Node and Python programs;
//! - `nodejs`: Node's JavaScript heap sampled by V8 over the inspector
//!   memtrace opens, leak patterns at their handler's line, against V8's
//!   own heap figures;
//! - `java`: HotSpot JVMs' Java heaps from the JFR recording memtrace
//!   starts through their attach mechanism, leak patterns at their Java
//!   lines on OpenJDK 17 and Temurin 25, against the JVM's class histogram;
//! - `golang`: Go heap profiles and goroutines read from outside, against
//!   the program's own pprof, with every Go from 1.19 to 1.27;
//! - `python`: CPython 3.8–3.13 stacks read from outside (the hidden
//!   `python-stacks`), per thread, and builds refused in one line;
//! - `python_leaks`: Python leak patterns reported at their Python lines
//!   under each interpreter, against tracemalloc, and with `--pid`;
//! - `anchors`: real programs' children against valgrind memcheck;
//! - `symbols`: inlined calls, glibc's public names, debug files by build
//!   id and debuginfod, unnamed files, pprof build ids, symlinked programs;
//! - `soak`: a minute of leak and churn keeps memtrace flat;
//! - `kernels`: the kernel features memtrace finds, against docs/kernels.md;
//! - `regression`: bugs whose cause is known.

mod agent;
mod allocators;
mod anchors;
mod attach;
mod cli;
mod deploy;
mod golang;
mod java;
mod kernels;
mod lifecycle;
mod mappings;
mod node;
mod nodejs;
mod oom;
mod outputs;
mod peaks;
mod python;
mod python_leaks;
mod regression;
mod robustness;
mod runtimes;
mod sampling;
mod security;
mod semantics;
mod soak;
mod symbols;
mod threads;
mod unwind;
mod verdicts;

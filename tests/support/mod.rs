//! Support code shared by the memtrace integration tests.
//!
//! The tests run the real `memtrace` binary (real eBPF, real processes; they
//! must run as root) against small C workloads from `tests/workloads/` that
//! the tests compile themselves. Nothing here ever skips a test: a missing
//! binary, a compiler failure or a memtrace that cannot load its BPF programs
//! is a test failure with the full command output in the message.
//!
//! - [`compile_c`] builds a workload with the fixed flags
//!   (`-O0 -g -fno-omit-frame-pointer -pthread`), cached by content.
//!   [`compile_c_with`] adds flags (e.g. `-static -s`).
//! - [`Workload`] is a workload spawned by the test (for `--pid` mode), with
//!   line handshakes on its stdout and signals ([`Workload::spawn_ready`]
//!   waits for its "ready", [`Workload::spawn_with_env`] sets environment
//!   variables); [`busy_loop`] and [`leak_signal`] start two of them.
//! - [`Tracer`] is a running `memtrace`; [`Tracer::wait_tracing`] waits for
//!   its `memtrace: tracing` stderr line, [`Tracer::signal`] signals it,
//!   [`Tracer::interrupt`] ends it with Ctrl-C. [`trace_pid`] attaches one,
//!   [`trace_until_done`] and [`trace_handshake`] also give the workload
//!   its go.
//! - [`run_memtrace`] and [`run_memtrace_cmd`] are one-shot runs;
//!   [`run_memtrace_stdout_closed`] runs with a stdout nobody reads;
//!   [`json_args_with`] and [`json_cmd_args`] build their arguments.
//! - [`Report`] is a JSON report read by the report crate
//!   (`memtrace_report`, whose model is the schema, and which it derefs
//!   to) and value-checked, with lookups by `frames[0].function` and
//!   whole-report consistency checks (verdicts with their evidence —
//!   series, age histogram, oldest live allocation — sums, sort order);
//!   [`StackExt`] reads a stack of the model (its function, a summary and
//!   the verdict's evidence for failure messages).
//! - [`MemoryCgroup`] is a memory cgroup with a limit, for OOM kills.
//! - [`http`] is a raw HTTP/1.1 client for the agent's endpoints.
//! - [`browser::Browser`] is a headless Chromium on one page, driven over
//!   the DevTools protocol (the HTML reports).
//! - [`losses_except`] and [`consistency_problems_except`] check a report
//!   but for what a test knows does not hold for its run.
//! - [`assert_within`] compares with a stated relative tolerance;
//!   [`proc_memory`] reads a process's resident memory, [`proc_stat`] the
//!   fields of its `/proc/PID/stat`.
//! - [`scratch_dir`] is a test's own directory, [`open_dir`] one user
//!   [`NOBODY`] can write to; [`marked_line`] the line of a workload's
//!   source that ends with a marker.
//! - [`go_toolchain`] is a Go toolchain (Debian's, or one of
//!   [`GO_VERSIONS`] from PyPI, installed on first use), [`build_go`] a Go
//!   workload built with it.
//! - [`NodeServer`] is one of the Node HTTP servers of
//!   `tests/workloads/node_leaks/`, with its load and V8's own heap
//!   figures; [`listening_ports`] the ports a process listens on.

pub mod browser;
mod cgroup;
mod checks;
mod compile;
mod golang;
pub mod http;
mod java;
mod node;
mod process;
mod report;
mod workloads;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use cgroup::MemoryCgroup;
pub use checks::{consistency_problems_except, losses_except};
pub use compile::{compile_c, compile_c_using, compile_c_with, CFLAGS};
pub use golang::{build_go, go_leaks_as, go_toolchain, DEBIAN_GO, GO_VERSIONS};
pub use java::{
    histogram_bytes, jcmd, leaks_classes, leaks_command, leaks_source, start_leaks, JDK17, JDK25,
    JVM_OPTIONS,
};
pub use node::{default_inspector_port, listening_ports, node_workload, NodeServer, NODE};
pub use process::{
    json_args_with, json_cmd_args, run_memtrace, run_memtrace_cmd, run_memtrace_cmd_env,
    run_memtrace_in_env, run_memtrace_stdout_closed, send_signal, trace_handshake, trace_pid,
    trace_until_done, RunOutput, Tracer, Workload, CMD_TIMEOUT, JSON_ARGS, TRACING_TIMEOUT,
};
pub use report::{
    FunctionSummary, Report, StackExt, AGE_BUCKETS, ALLOCATOR_SYMBOLS, DROPPING_LOSSES,
    TIME_SLACK_SECS, TOP,
};
pub use workloads::{
    busy_loop, leak_signal, private_libc_dir, pyenv_python, system_libc, BUSY_LEAK_SIZE,
};

/// User nobody's uid (and gid): a user without any privilege.
pub const NOBODY: u32 = 65534;

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// The memtrace binary under test: `$MEMTRACE_BIN` if set, else
/// `<workspace root>/target/release/memtrace`. Panics if it does not exist.
pub fn memtrace_bin() -> PathBuf {
    let path = match std::env::var_os("MEMTRACE_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => workspace_root().join("target/release/memtrace"),
    };
    assert!(
        path.is_file(),
        "memtrace binary not found at {} (set MEMTRACE_BIN, or build it with \
         `cargo xtask build`)",
        path.display()
    );
    path
}

/// A new, empty directory under the temp dir for one test's files
/// (`<temp>/memtrace-integration/scratch-<pid>-<n>-<tag>`). Remove it with
/// `std::fs::remove_dir_all` when done.
pub fn scratch_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir()
        .join("memtrace-integration")
        .join(format!(
            "scratch-{}-{}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// The number of the one line of `source` ending with `marker` (a comment
/// naming what the line does).
pub fn marked_line(source: &Path, marker: &str) -> u32 {
    let text =
        std::fs::read_to_string(source).unwrap_or_else(|e| panic!("{}: {e}", source.display()));
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim_end().ends_with(marker))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "{}: one line should end with {marker}",
        source.display()
    );
    lines[0] as u32
}

/// A directory `nobody` in `dir` that user [`NOBODY`] can write to (mode
/// 0777), for what memtrace writes when run without privileges.
pub fn open_dir(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let open = dir.join("nobody");
    std::fs::create_dir_all(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    open
}

/// `p` as UTF-8 (scratch paths are), for an argument list of `&str`.
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `n` seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Asserts that `actual` is within ±`pct` percent of `expected`; `what`
/// names the quantity in the failure message, `context` is appended to it
/// (typically [`Report::describe`]).
#[track_caller]
pub fn assert_within(what: &str, actual: u64, expected: u64, pct: f64, context: &str) {
    let tolerance = expected as f64 * pct / 100.0;
    let lo = expected as f64 - tolerance;
    let hi = expected as f64 + tolerance;
    let a = actual as f64;
    assert!(
        a >= lo && a <= hi,
        "{what}: got {actual}, expected {expected} ± {pct}% (allowed {lo:.0}..={hi:.0})\n{context}"
    );
}

/// A memory field of process `pid` from `/proc/PID/status` in bytes:
/// `VmRSS` (resident now), `VmHWM` (its peak). None once it is gone.
pub fn proc_memory(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The fields of `/proc/PID/stat` after the command (the state first, the
/// parent pid second, ...); None once the process is gone.
pub fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command, in parentheses, may contain spaces and ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether `line` contains `token` delimited by non-alphanumeric characters
/// (so pid 123 does not match inside 41234).
pub fn contains_token(line: &str, token: &str) -> bool {
    line.match_indices(token).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = line[i + token.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_matching() {
        assert!(contains_token("pid 123 (x)", "123"));
        assert!(contains_token("123", "123"));
        assert!(!contains_token("pid 41234", "123"));
        assert!(!contains_token("0x123a", "123"));
    }
}

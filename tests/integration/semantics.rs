//! The allocator semantics the README promises, with exact expectations on
//! real traced workloads:
//! - `-- CMD` mode on alloc_semantics.c: `realloc(NULL, n)` is a malloc,
//!   `realloc(p, 0)` a free, a failed realloc leaves `p` outstanding, failed
//!   calls (calloc overflow, `malloc(SIZE_MAX)`) are not recorded but counted
//!   in `counters.failed_allocations`, reallocarray/memalign/valloc/pvalloc
//!   are attributed to their callers with the requested sizes, a user mremap
//!   that grows or shrinks a mapping adjusts its bytes, and a `PROT_NONE`
//!   mapping is a reservation, not memory;
//! - `--pid` mode: a target that exits mid-trace ends the trace early with
//!   its leak reported and `exited: true`;
//! - errors: a static, stripped target (no allocator symbols), invalid
//!   values of every option (tracing, selections, the agent's) and saved
//!   snapshots that are missing, not JSON, of another version or cut short
//!   are one-line `memtrace: error:` failures (exit code 2 for usage, 1
//!   for files).

use std::sync::OnceLock;

use memtrace_integration::{
    compile_c, compile_c_with, json_args_with, run_memtrace, run_memtrace_cmd, scratch_dir, secs,
    trace_pid, Report, Workload,
};

const KIB: u64 = 1024;

/// alloc_semantics.c: the sizes each function keeps (see its header).
const REALLOC_FROM_NULL: u64 = 1234;
const ZERO_REALLOC_MALLOC: u64 = 3000;
const FAILED_REALLOC_KEPT: u64 = 5000;
const REALLOCARRAY: u64 = 10 * 100;
const MEMALIGN: u64 = 700;
const VALLOC: u64 = 900;
/// pvalloc(100): glibc rounds the block up to a whole page, but memtrace
/// accounts the *requested* size, like for every other entry point.
const PVALLOC: u64 = 100;
/// leak_mremap_grow: 64 KiB mapped, then mremap'ed to 256 KiB.
const MREMAP_GROWN: u64 = 256 * KIB;
/// shrink_then_unmap: 128 KiB mapped, shrunk to 32 KiB, unmapped.
const SHRUNK_MAPPING: u64 = 128 * KIB;
/// The failing allocator calls alloc_semantics makes: realloc(p, 1 << 60),
/// calloc(SIZE_MAX / 2, 4), malloc(SIZE_MAX). glibc makes no failing call of
/// its own in this program (a run of an otherwise empty program reports 0),
/// and the nested malloc glibc's failed realloc retries with is part of the
/// realloc call.
const FAILED_CALLS: u64 = 3;

/// alloc_semantics.c traced from its start, once for all the tests below.
fn semantics_report() -> &'static Report {
    static REPORT: OnceLock<Report> = OnceLock::new();
    REPORT.get_or_init(|| {
        let report = run_memtrace_cmd(&["--duration", "30s"], &[compile_c("alloc_semantics")]);
        report.assert_target("alloc_semantics", None);
        report
    })
}

/// Asserts that no stack's frames[0] is `function` (nothing recorded).
#[track_caller]
fn assert_absent(report: &Report, function: &str, why: &str) {
    let found = report.stacks_of(function);
    assert!(
        found.is_empty(),
        "{function}: {why}, but {} stack(s) name it as frames[0]: {}\n{}",
        found.len(),
        found
            .iter()
            .map(|s| s.summary())
            .collect::<Vec<_>>()
            .join("; "),
        report.describe()
    );
}

/// Asserts that `function` has either no stack listed or only stacks with
/// nothing outstanding.
#[track_caller]
fn assert_nothing_outstanding(report: &Report, function: &str) {
    let sum = report.function_summary(function);
    assert_eq!(
        (
            sum.totals.outstanding_bytes,
            sum.totals.outstanding_allocations
        ),
        (0, 0),
        "{function}: (outstanding_bytes, outstanding_allocations) should be 0\n{}",
        report.describe()
    );
}

#[test]
fn realloc_of_null_is_a_malloc() {
    let report = semantics_report();
    let s = report.stack_of("realloc_from_null");
    assert_eq!(
        (
            s.kind.as_str(),
            s.outstanding_bytes,
            s.outstanding_allocations,
            s.allocations
        ),
        ("heap", REALLOC_FROM_NULL, 1, 1),
        "realloc_from_null: realloc(NULL, {REALLOC_FROM_NULL}) is one malloc (glibc's \
         nested malloc counted once): (kind, outstanding_bytes, outstanding_allocations, \
         allocations)\n{}",
        report.describe()
    );
}

#[test]
fn realloc_to_zero_is_a_free() {
    let report = semantics_report();
    let ctx = report.describe();
    // Listed or not, the malloc(3000) stack holds nothing any more.
    assert_nothing_outstanding(report, "malloc_then_zero_realloc");
    let sum = report.function_summary("malloc_then_zero_realloc");
    if sum.stacks > 0 {
        assert_eq!(
            (
                sum.totals.allocations,
                sum.totals.frees,
                sum.totals.freed_bytes
            ),
            (1, 1, ZERO_REALLOC_MALLOC),
            "malloc_then_zero_realloc: (allocations, frees, freed_bytes)\n{ctx}"
        );
    }
    // realloc(p, 0) frees a block allocated while tracing: it is neither a
    // free of an unknown address nor a failed allocation (failed calls are
    // counted exactly in failed_calls_are_not_recorded).
    assert_eq!(
        report.counter("free_unknown"),
        0,
        "counters.free_unknown: in -- CMD mode every freed block was allocated while \
         tracing; realloc(p, 0) of malloc_then_zero_realloc frees a known block\n{ctx}"
    );
    report.assert_consistent();
}

#[test]
fn failed_realloc_keeps_the_block() {
    let report = semantics_report();
    let s = report.stack_of("keep_after_failed_realloc");
    assert_eq!(
        (
            s.kind.as_str(),
            s.outstanding_bytes,
            s.outstanding_allocations,
            s.frees
        ),
        ("heap", FAILED_REALLOC_KEPT, 1, 0),
        "keep_after_failed_realloc: realloc(p, 1 << 60) failed, so malloc(5000)'s block is \
         still outstanding: (kind, outstanding_bytes, outstanding_allocations, frees)\n{}",
        report.describe()
    );
    assert!(
        report.counter("failed_allocations") >= 1,
        "counters.failed_allocations should count the failed realloc\n{}",
        report.describe()
    );
}

#[test]
fn failed_calls_are_not_recorded() {
    let report = semantics_report();
    assert_absent(
        report,
        "fail_calloc_overflow",
        "calloc(SIZE_MAX / 2, 4) overflows and returns NULL",
    );
    assert_absent(report, "fail_malloc_huge", "malloc(SIZE_MAX) returns NULL");
    assert_eq!(
        report.counter("failed_allocations"),
        FAILED_CALLS,
        "counters.failed_allocations: the workload makes exactly {FAILED_CALLS} failing calls \
         (realloc(p, 1 << 60), calloc(SIZE_MAX / 2, 4), malloc(SIZE_MAX)); realloc(p, 0) is a \
         free, not a failure\n{}",
        report.describe()
    );
}

#[test]
fn other_entry_points_attributed_with_requested_sizes() {
    let report = semantics_report();
    // pvalloc: the requested 100 bytes, not glibc's page-rounded block.
    let expected: &[(&str, u64)] = &[
        ("leak_reallocarray", REALLOCARRAY),
        ("leak_memalign", MEMALIGN),
        ("leak_valloc", VALLOC),
        ("leak_pvalloc", PVALLOC),
    ];
    let problems: Vec<String> = expected
        .iter()
        .flat_map(|&(f, bytes)| {
            let mut p = report.function_mismatches(f, "heap", bytes, 1);
            if report.stacks_of(f).len() > 1 {
                p.push(format!("{f}: one call site, but several stacks"));
            }
            p
        })
        .collect();
    assert!(
        problems.is_empty(),
        "per-function expectations not met:\n  {}\n{}",
        problems.join("\n  "),
        report.describe()
    );
}

#[test]
fn user_mremap_adjusts_the_mapping() {
    let report = semantics_report();
    let s = report.stack_of("leak_mremap_grow");
    assert_eq!(
        (
            s.kind.as_str(),
            s.outstanding_bytes,
            s.outstanding_allocations
        ),
        ("mmap", MREMAP_GROWN, 1),
        "leak_mremap_grow: a 64 KiB mapping mremap'ed to 256 KiB is one region of 256 KiB: \
         (kind, outstanding_bytes, outstanding_allocations)\n{}",
        report.describe()
    );
    assert_nothing_outstanding(report, "shrink_then_unmap");
    let shrunk = report.function_summary("shrink_then_unmap");
    if shrunk.stacks > 0 {
        assert_eq!(
            (shrunk.totals.allocated_bytes, shrunk.totals.freed_bytes),
            (SHRUNK_MAPPING, SHRUNK_MAPPING),
            "shrink_then_unmap: 128 KiB mapped, 96 KiB released by mremap and 32 KiB by \
             munmap: (allocated_bytes, freed_bytes)\n{}",
            report.describe()
        );
    }
}

#[test]
fn prot_none_mapping_is_a_reservation() {
    let report = semantics_report();
    assert_absent(
        report,
        "reserve_only",
        "a 1 MiB PROT_NONE mapping reserves address space, it is not memory",
    );
    assert!(
        report.counter("reservations") >= 1,
        "counters.reservations should count reserve_only's PROT_NONE mapping\n{}",
        report.describe()
    );
}

#[test]
fn semantics_report_totals_are_exact() {
    let report = semantics_report();
    let ctx = report.describe();
    // Everything the program allocates is traced (-- CMD mode), and the
    // workload allocates nothing besides the calls in its header.
    let outstanding = REALLOC_FROM_NULL
        + FAILED_REALLOC_KEPT
        + REALLOCARRAY
        + MEMALIGN
        + VALLOC
        + PVALLOC
        + MREMAP_GROWN;
    assert_eq!(
        (
            report.totals.outstanding_bytes,
            report.totals.outstanding_allocations,
            report.totals.freed_bytes
        ),
        (outstanding, 7, ZERO_REALLOC_MALLOC + SHRUNK_MAPPING),
        "totals (outstanding_bytes, outstanding_allocations, freed_bytes): the 7 kept blocks \
         and regions; realloc(p, 0)'s 3000 B and shrink_then_unmap's 128 KiB freed\n{ctx}"
    );
    report.assert_no_losses();
    report.assert_consistent();
}

/// leak_then_exit.c: 20 x 1000 bytes leaked on SIGUSR1, exit 0.5 s later.
const EXIT_LEAKS: u64 = 20;
const EXIT_LEAK_SIZE: u64 = 1000;

#[test]
fn pid_target_exiting_ends_the_trace() {
    let mut workload = Workload::spawn_ready(&compile_c("leak_then_exit"), &[] as &[&str]);
    let pid = workload.pid();
    let tracer = trace_pid(pid, &json_args_with(&["--duration", "30s"]));
    workload.signal(libc::SIGUSR1);
    // The workload is left unreaped (a zombie) until memtrace is done: an
    // exited process must be noticed without its parent's wait.
    let out = tracer.finish(secs(60));
    let status = workload.wait_exit(secs(10));
    assert_eq!(
        status.code(),
        Some(0),
        "leak_then_exit should exit 0 on its own"
    );
    out.assert_success();
    assert!(
        out.elapsed < secs(15),
        "memtrace --duration 30s should end soon after its only target exits (~0.5 s after \
         SIGUSR1), not at the end of --duration\n{}",
        out.describe()
    );
    let report = out.report();
    let ctx = report.describe();
    report.assert_target(workload.name(), Some(pid));
    assert_eq!(
        report.json["targets"][0]["exited"],
        serde_json::Value::Bool(true),
        "targets[0].exited\n{ctx}"
    );
    let s = report.stack_of("leak_then_exit");
    assert_eq!(
        (
            s.kind.as_str(),
            s.outstanding_bytes,
            s.outstanding_allocations
        ),
        ("heap", EXIT_LEAKS * EXIT_LEAK_SIZE, EXIT_LEAKS),
        "leak_then_exit: (kind, outstanding_bytes, outstanding_allocations)\n{ctx}"
    );
    report.assert_no_losses();
    report.assert_consistent();
}

#[test]
fn static_stripped_target_has_no_allocator() {
    // Statically linked and stripped: no allocator library is mapped and the
    // executable exports no malloc/free.
    let exe = compile_c_with("static_sleeper", &["-static", "-s"]);
    let workload = Workload::spawn_ready(&exe, &[] as &[&str]);
    let pid = workload.pid().to_string();
    let out = run_memtrace(&["--pid", pid.as_str(), "--duration", "2s"], secs(30));
    out.one_line_error(None, &["no allocator symbols"]);
}

/// Invalid values of every option, each given as `OPTION=VALUE`.
const BAD_VALUES: &[(&str, &[&str])] = &[
    ("--pid", &["abc", "0", "-3", "99999999999", ""]),
    ("--duration", &["soon", "0s", "10", "-5s", "500000000000y"]),
    ("--interval", &["0s", "often", "2y"]),
    ("--top", &["0", "-1", "ten"]),
    ("--format", &["xml", ""]),
    ("--sort", &["size"]),
    ("--weight", &["bytes"]),
    ("--min-age", &["0s", "old"]),
    (
        "--rss-alert",
        &["50MiB", "fast/h", "0/h", "5XB/h", "1e3MiB/h", "50MiB/day"],
    ),
    ("--sample-bytes", &["0", "2GiB", "lots", "-1"]),
    ("--max-live", &["10", "99999999", "many"]),
    ("--max-stacks", &["1", "2000000"]),
    ("--symbol-prefix", &["my-", "", "a b"]),
    ("--allocator-lib", &[""]),
    ("--output", &["report.unknown", ""]),
    ("--no-live", &["yes"]),
    ("--verbose", &["2"]),
];

/// Options that exclude a command after `--` (they select processes).
const BAD_SELECTIONS: &[(&str, &[&str])] = &[
    ("--comm", &["", "sixteen-chars-xx"]),
    ("--cgroup", &["", "/kubepods/../etc"]),
    ("--container", &["zz", "abc!", "x://"]),
    ("--all", &["yes"]),
    ("--oom-only", &["1"]),
];

/// `memtrace agent`'s options.
const BAD_AGENT_VALUES: &[(&str, &[&str])] = &[
    ("--listen", &["nope", "localhost", "0.0.0.0:9464", "[::]:1"]),
    ("--reports-dir", &[""]),
    ("--scan-interval", &["0s", "2y"]),
    ("--alert-growth", &["fast", "0/h"]),
    ("--min-observation", &["never"]),
    ("--trace-window", &["0s", "500000000000y"]),
    ("--trace-interval", &["0s"]),
    ("--max-traces", &["0", "17"]),
    ("--retrace-after", &["later"]),
    ("--max-reports", &["0", "-2"]),
    ("--max-report-bytes", &["0", "big"]),
    ("--comm", &[""]),
];

#[test]
fn bad_option_values_are_usage_errors() {
    // A valid target (or a short --duration), so that the bad value is the
    // only problem and a memtrace that accepted it would end on its own.
    let runs = [
        (BAD_VALUES, &[][..], &["--", "true"][..]),
        (BAD_SELECTIONS, &[], &["--duration", "1s"]),
        (BAD_AGENT_VALUES, &["agent"], &[]),
    ];
    for (table, before, after) in runs {
        for &(option, values) in table {
            for value in values {
                let arg = format!("{option}={value}");
                let args: Vec<&str> = before
                    .iter()
                    .copied()
                    .chain([arg.as_str()])
                    .chain(after.iter().copied())
                    .collect();
                let out = run_memtrace(&args, secs(30));
                out.one_line_error(Some(2), &[option, value]);
            }
        }
    }
    // A token is a secret: a bad one is refused without being echoed.
    let out = run_memtrace(&["agent", "--token", "short secret"], secs(30));
    let line = out.one_line_error(Some(2), &["--token"]);
    assert!(!line.contains("short secret"), "{line}");
}

#[test]
fn bad_snapshot_files_are_one_line_errors() {
    let dir = scratch_dir("bad-snapshots");
    let files = [
        ("missing.json", None),
        ("passwd.json", Some("root:x:0:0:root:/root:/bin/bash\n")),
        ("other.json", Some("{\"version\": 1, \"stacks\": []}")),
        ("cut.json", Some("{\"version\": 2, \"stacks\": [")),
        ("types.json", Some("{\"version\": 2, \"stacks\": 7}")),
    ];
    for (name, content) in files {
        let path = dir.join(name);
        if let Some(text) = content {
            std::fs::write(&path, text).expect("write a snapshot");
        }
        let arg = path.to_str().expect("utf-8 scratch path");
        let out = run_memtrace(&["report", arg], secs(30));
        out.one_line_error(Some(1), &[arg]);
        let out = run_memtrace(&["diff", arg, arg], secs(30));
        out.one_line_error(Some(1), &[arg]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

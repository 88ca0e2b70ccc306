//! Stacks below the evidence a verdict needs (fewer intervals than a leak
//! needs, docs/verdicts.md#too-few-intervals) have no growth rate: none
//! shown, none extrapolated into the ranking. A stack that appeared in the
//! last intervals ranks by what it holds, not by a rate made of one rise;
//! a run too short for any rate ranks every stack by outstanding bytes and
//! says so.

use memtrace_integration::{
    compile_c, path_str, run_memtrace, scratch_dir, secs, trace_pid, StackExt, Workload,
    CMD_TIMEOUT,
};
use memtrace_report::Verdict;

/// late_small.c: big_early's 64 blocks of 16 KiB, small_late's 10 of 4 KiB.
const BIG_BYTES: u64 = 64 * 16 * 1024;
const SMALL_BYTES: u64 = 10 * 4 * 1024;

#[test]
fn a_late_stack_ranks_by_what_it_holds() {
    let mut workload = Workload::spawn_ready(&compile_c("late_small"), &[] as &[&str]);
    let mut tracer = trace_pid(
        workload.pid(),
        &["--interval", "1s", "--format", "json", "--top", "100"],
    );
    workload.signal(libc::SIGUSR1);
    workload.expect_line("early", secs(30));
    // Five samples holding big_early's 1 MiB: its series is flat after its
    // rise for longer than a rate needs.
    for _ in 0..5 {
        tracer.wait_line("1.0 MiB outstanding", secs(30));
    }
    workload.signal(libc::SIGUSR1);
    workload.expect_line("done", secs(30));
    let out = tracer.interrupt(secs(60));
    out.assert_success();
    let report = out.report();
    let ctx = report.describe();
    report.assert_consistent();
    let order: Vec<(&str, u64)> = report
        .stacks
        .iter()
        .map(|s| (s.function().unwrap_or("?"), s.outstanding_bytes))
        .collect();
    assert_eq!(
        order,
        [("big_early", BIG_BYTES), ("small_late", SMALL_BYTES)],
        "the default sort (growth): small_late's one rise is no rate, it ranks by its bytes\n{ctx}"
    );
    let big = report.stack_of("big_early");
    assert!(big.rated, "{ctx}");
    assert_eq!(big.growth_bytes_per_sec, 0.0, "flat since its rise\n{ctx}");
    let late = report.stack_of("small_late");
    assert!(!late.rated, "{ctx}");
    assert_eq!(late.growth_bytes_per_sec, 0.0, "{ctx}");
    assert_eq!(late.verdict, Verdict::Growing, "{ctx}");
    assert!(
        late.verdict_reason
            .starts_with("grew in 1/1 intervals, +40.0 KiB in ")
            || late
                .verdict_reason
                .starts_with("grew in 1/2 intervals, +40.0 KiB in "),
        "the rise seen, not a rate per minute: {:?}\n{ctx}",
        late.verdict_reason
    );
    assert!(!late.verdict_reason.contains("/min"), "{ctx}");
    drop(workload);
}

#[test]
fn a_short_run_shows_no_rate() {
    // leak_exit leaks for a second and exits: one interval of 5 s is never
    // reached, the report's only sample is the last one.
    let dir = scratch_dir("short-run");
    let json = dir.join("run.json");
    let out = run_memtrace(
        &[
            "--interval",
            "5s",
            "-o",
            path_str(&json),
            "--",
            path_str(&compile_c("leak_exit")),
        ],
        CMD_TIMEOUT,
    );
    out.assert_success();
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}\n{}", json.display(), out.describe()));
    let report = out.report_from(&text);
    let ctx = report.describe();
    let leak = report.stack_of("leak_on_exit");
    assert_eq!(leak.outstanding_bytes, 50 * 2000, "{ctx}");
    assert!(report.stacks.iter().all(|s| !s.rated), "{ctx}");
    assert!(
        report.stacks.iter().all(|s| s.growth_bytes_per_sec == 0.0),
        "{ctx}"
    );
    let offline = run_memtrace(&["report", path_str(&json)], secs(60));
    offline.assert_success();
    let text = &offline.stdout;
    assert!(
        text.contains(&format!(
            "top {} stacks by outstanding (too few intervals for growth rates)",
            report.stacks.len()
        )),
        "{}",
        offline.describe()
    );
    assert!(!text.contains("/min"), "{}", offline.describe());
    let first = text
        .lines()
        .find(|l| l.starts_with("#1 "))
        .unwrap_or_else(|| panic!("no stack listed\n{}", offline.describe()));
    assert!(
        first.starts_with("#1 [growing] 97.7 KiB in 50 allocations  pid "),
        "{first}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

//! Regression tests for bugs whose cause is known (all fixed), each on a
//! real traced C workload with exact expectations; the test's doc comment
//! says what the bug was. Tests of behaviour a bug got wrong, without a
//! known cause, are with their feature.

use memtrace_integration::{
    busy_loop, json_args_with, losses_except, secs, trace_pid, StackExt, BUSY_LEAK_SIZE,
};
use memtrace_report::StackKind;

/// Attaching to busy_loop three times: the bug lost every call in most runs.
const BUSY_RUNS: usize = 3;

/// More than the calls a busy_loop makes in 3 s while traced (it makes
/// ~200,000), far fewer than it made before the fix in most runs (0).
const BUSY_MIN_ALLOCATIONS: u64 = 10_000;

/// Returns without their entry: only the calls in flight while the probes
/// were being attached (a handful per probe).
const BUSY_MAX_RETURN_WITHOUT_ENTRY: u64 = 1000;

/// Attaching to a busy target (busy_loop.c, always inside malloc/free): an
/// entry probe that fired before its return probe existed made memtrace
/// record 0 allocations in most runs.
#[test]
fn attach_to_busy_target_records_its_calls() {
    for run in 1..=BUSY_RUNS {
        let workload = busy_loop();
        let pid = workload.pid();
        let tracer = trace_pid(pid, &json_args_with(&["--duration", "3s"]));
        let out = tracer.finish(secs(60));
        out.assert_success();
        let report = out.report();
        let ctx = format!("(run {run} of {BUSY_RUNS})\n{}", report.describe());

        assert!(
            report.totals.allocations > BUSY_MIN_ALLOCATIONS,
            "totals.allocations {} should be > {BUSY_MIN_ALLOCATIONS}: busy_loop makes \
             malloc/free calls non-stop, and memtrace must record those made after its probes \
             are attached {ctx}",
            report.totals.allocations
        );
        let top = report.top();
        assert_eq!(
            (top.function(), top.kind),
            (Some("busy_leak"), StackKind::Heap),
            "the top stack should be busy_leak's (heap): (frames[0].function, kind) {ctx}"
        );
        assert!(
            top.outstanding_allocations > 0
                && top.outstanding_bytes == BUSY_LEAK_SIZE * top.outstanding_allocations,
            "busy_leak: outstanding_bytes {} should be {BUSY_LEAK_SIZE} * \
             outstanding_allocations {} (> 0) {ctx}",
            top.outstanding_bytes,
            top.outstanding_allocations
        );
        let other_losses = losses_except(&report, "return_without_entry");
        assert!(
            other_losses.is_empty(),
            "losses other than return_without_entry should be 0: {} {ctx}",
            other_losses.join(", ")
        );
        let rwe = report.losses.return_without_entry;
        assert!(
            rwe < BUSY_MAX_RETURN_WITHOUT_ENTRY,
            "losses.return_without_entry {rwe} should be < {BUSY_MAX_RETURN_WITHOUT_ENTRY} \
             (only calls in flight during the attach) {ctx}"
        );
        report.assert_consistent();
        report.assert_target(workload.name(), Some(pid));
        // Kill this run's workload before starting the next one.
        drop(workload);
    }
}

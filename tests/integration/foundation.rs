//! Foundation tests of the memtrace binary: attaching to a running process
//! with `--pid` and reporting a steadily growing leak (JSON and text
//! formats), `-- CMD` mode running a program to its exit, `--output`, and
//! the error for a pid that does not exist.

use std::path::Path;

use memtrace_integration::{
    assert_within, compile_c, contains_token, json_args_with, json_cmd_args, leak_signal,
    run_memtrace, scratch_dir, secs, trace_until_done,
};

/// leak_signal: bytes per leak_fixed() call.
const LEAK_SIZE: u64 = 4096;
/// leak_signal: number of leak_fixed() calls after SIGUSR1.
const LEAK_COUNT: u64 = 60;
/// leak_signal: pause between calls (20 calls per second).
const LEAK_INTERVAL_US: u64 = 50_000;

/// leak_exit: leak_on_exit() mallocs 2000 bytes, 50 times, then exits.
const EXIT_LEAK_SIZE: u64 = 2000;
const EXIT_LEAK_COUNT: u64 = 50;

#[test]
fn pid_mode_reports_growing_leak() {
    let mut workload = leak_signal(LEAK_COUNT, LEAK_SIZE, LEAK_INTERVAL_US);
    let pid = workload.pid();
    let mut tracer = trace_until_done(&mut workload, &json_args_with(&["--duration", "6s"]));
    assert!(
        tracer.is_running(),
        "memtrace (--duration 6s) exited before the workload finished its 3 s of leaking\n{}",
        tracer.snapshot()
    );
    let out = tracer.finish(secs(60));
    out.assert_success();
    let report = out.report();
    let ctx = report.describe();

    report.assert_target(workload.name(), Some(pid));
    let top = report.top();
    assert_eq!(
        top.function(),
        Some("leak_fixed"),
        "the top stack's frames[0] should be leak_fixed\n{ctx}"
    );
    // One call path: exactly one stack for it.
    report.stack_of("leak_fixed");
    assert_within(
        "leak_fixed outstanding_bytes (tolerance ±5%)",
        top.outstanding_bytes,
        LEAK_COUNT * LEAK_SIZE,
        5.0,
        &ctx,
    );
    assert_eq!(
        top.outstanding_allocations, LEAK_COUNT,
        "leak_fixed outstanding_allocations\n{ctx}"
    );
    assert_eq!(top.kind, "heap", "leak_fixed kind\n{ctx}");
    // 60 blocks in the first 3 s, then nothing more for the last 3 s of
    // the 6 s window: it grew, then stayed flat for half of the window.
    assert_eq!(top.verdict, "plateau", "leak_fixed verdict\n{ctx}");
    assert!(
        top.verdict_reason.contains("then flat"),
        "leak_fixed's reason should say it stopped growing\n{ctx}"
    );
    assert_eq!(
        top.growth_bytes_per_sec, 0.0,
        "a plateau's growth is that of its flat part\n{ctx}"
    );
    assert_eq!(
        top.frames.get(1).and_then(|f| f.function.as_deref()),
        Some("main"),
        "frames are innermost first: frames[1] should be main, leak_fixed's caller\n{ctx}"
    );
    // Everything the workload allocated before the attach (its pointer
    // array, stdout's buffer) is not counted: only the 60 leaks are.
    assert_eq!(
        report.totals.allocations, LEAK_COUNT,
        "only allocations made after the attach are counted: totals.allocations\n{ctx}"
    );
    assert!(
        (4.5..=15.0).contains(&report.duration_secs),
        "duration_secs {} for --duration 6s\n{ctx}",
        report.duration_secs
    );
    report.assert_no_losses();
    report.assert_consistent();
}

#[test]
fn text_format_names_function_and_pid() {
    let mut workload = leak_signal(20, LEAK_SIZE, 10_000);
    let pid = workload.pid();
    let tracer = trace_until_done(
        &mut workload,
        &[
            "--interval",
            "1s",
            "--duration",
            "4s",
            "--format",
            "text",
            "--top",
            "100",
        ],
    );
    let out = tracer.finish(secs(60));
    out.assert_success();

    // Piped stdout: one plain line per interval, then the report.
    let report_at = out
        .stdout
        .find("memtrace report:")
        .unwrap_or_else(|| panic!("no text report on stdout\n{}", out.describe()));
    let progress = out.stdout[..report_at]
        .lines()
        .filter(|l| l.contains(" outstanding in "))
        .count();
    assert!(
        (3..=5).contains(&progress),
        "expected a line per 1 s interval of the 4 s run before the report, got {progress}\n{}",
        out.describe()
    );
    let lines: Vec<&str> = out.stdout[report_at..].lines().collect();
    let function_line = lines
        .iter()
        .position(|l| l.contains("leak_fixed"))
        .unwrap_or_else(|| {
            panic!(
                "text report does not mention leak_fixed\n{}",
                out.describe()
            )
        });
    let pid_line = lines
        .iter()
        .position(|l| contains_token(l, &pid.to_string()))
        .unwrap_or_else(|| {
            panic!(
                "text report does not mention the pid {pid}\n{}",
                out.describe()
            )
        });
    assert!(
        pid_line < function_line,
        "the pid {pid} should be in a header line, before the stacks (first pid line {pid_line}, \
         first leak_fixed line {function_line})\n{}",
        out.describe()
    );
}

#[test]
fn cmd_mode_reports_leak_at_exit() {
    // No --duration: memtrace must return when the program exits (~1 s).
    let out = run_memtrace(
        &json_cmd_args(&[] as &[&str], &[compile_c("leak_exit")]),
        secs(60),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "memtrace -- CMD should exit 0 after CMD exits\n{}",
        out.describe()
    );
    assert!(out.problems.is_empty(), "{}", out.describe());
    assert!(
        out.elapsed < secs(20),
        "memtrace should exit right after its ~1 s CMD does\n{}",
        out.describe()
    );
    let report = out.report();
    let ctx = report.describe();
    report.assert_target("leak_exit", None);
    let top = report.top();
    assert_eq!(
        top.function(),
        Some("leak_on_exit"),
        "the top stack's frames[0] should be the leaking function\n{ctx}"
    );
    assert_eq!(
        top.outstanding_bytes,
        EXIT_LEAK_COUNT * EXIT_LEAK_SIZE,
        "leak_on_exit outstanding_bytes\n{ctx}"
    );
    assert_eq!(
        top.outstanding_allocations, EXIT_LEAK_COUNT,
        "leak_on_exit outstanding_allocations\n{ctx}"
    );
    report.assert_no_losses();
    report.assert_consistent();
}

#[test]
fn output_option_writes_report_to_file() {
    let dir = scratch_dir("output");
    let file = dir.join("report.json");
    let file_arg = file.to_str().expect("utf-8 temp path");
    let out = run_memtrace(
        &json_cmd_args(&["--output", file_arg], &[compile_c("leak_exit")]),
        secs(60),
    );
    out.assert_success();
    assert!(
        !out.stdout.contains("\"stacks\""),
        "with --output the report must go to the file, not stdout\n{}",
        out.describe()
    );
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "--output {} was not written: {e}\n{}",
            file.display(),
            out.describe()
        )
    });
    let report = out.report_from(&text);
    assert_eq!(
        report.top().function(),
        Some("leak_on_exit"),
        "{}",
        report.describe()
    );
    report.assert_consistent();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nonexistent_pid_is_an_error() {
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("read /proc/sys/kernel/pid_max")
        .trim()
        .parse()
        .expect("pid_max is a number");
    let mut pid = pid_max - 1;
    while Path::new(&format!("/proc/{pid}")).exists() {
        pid -= 1;
    }
    let pid = pid.to_string();
    let out = run_memtrace(&["--pid", pid.as_str()], secs(30));
    assert!(
        matches!(out.status.code(), Some(code) if code != 0),
        "memtrace --pid {pid} (no such process) should exit with a non-zero code\n{}",
        out.describe()
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(
        lines.len() == 1
            && lines[0].starts_with("memtrace: error:")
            && contains_token(lines[0], &pid),
        "stderr should be exactly one line starting `memtrace: error:` and naming pid {pid}\n{}",
        out.describe()
    );
}

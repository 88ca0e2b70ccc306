//! The report itself: the text format (one plain line per interval on
//! stderr when piped, the report alone on stdout, its header naming the pid
//! before the stacks); `--output` writing it to a file instead of stdout,
//! `-o -` and `-o /dev/stdout` writing it to stdout; `-o` into a missing
//! directory failing at once, not after `--duration`; an output whose
//! directory vanished while tracing failing alone, the others written; and
//! a closed stdout (EPIPE on the report) that does not make memtrace panic;
//! totals split by kind of stack (heap, mmap) in the JSON and the text.

use std::collections::BTreeMap;
use std::ffi::OsString;

use memtrace_integration::{
    compile_c, contains_token, json_cmd_args, leak_signal, path_str, run_memtrace,
    run_memtrace_stdout_closed, scratch_dir, secs, trace_until_done, StackExt, Workload,
    CMD_TIMEOUT,
};
use memtrace_report::{KindTotals, StackKind};

use super::LEAK_SIZE;

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

    // Piped stdout: the report alone; a plain line per interval on stderr.
    assert!(
        out.stdout.starts_with("memtrace report:"),
        "stdout should hold the text report and nothing before it\n{}",
        out.describe()
    );
    let progress = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("memtrace: ") && l.contains(" outstanding in "))
        .count();
    assert!(
        (3..=5).contains(&progress),
        "expected a line per 1 s interval of the 4 s run on stderr, got {progress}\n{}",
        out.describe()
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
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

/// `-o -` and `-o /dev/stdout` are stdout: the report goes there (text
/// unless --format says otherwise) next to the files asked for.
#[test]
fn dash_and_dev_stdout_write_to_stdout() {
    let dir = scratch_dir("output-stdout");
    let file = dir.join("report.json");
    let leak = compile_c("leak_exit");
    let out = run_memtrace(
        &[
            "-o".as_ref(),
            "/dev/stdout".as_ref(),
            "-o".as_ref(),
            file.as_os_str(),
            "--".as_ref(),
            leak.as_os_str(),
        ],
        CMD_TIMEOUT,
    );
    out.assert_success();
    assert!(
        out.stdout.starts_with("memtrace report:") && out.stdout.contains("leak_on_exit"),
        "-o /dev/stdout: the text report on stdout\n{}",
        out.describe()
    );
    let report = out.report_from(&std::fs::read_to_string(&file).expect("report.json"));
    assert_eq!(report.top().function(), Some("leak_on_exit"));

    let out = run_memtrace(
        &[
            "--format".as_ref(),
            "json".as_ref(),
            "-o".as_ref(),
            "-".as_ref(),
            "--".as_ref(),
            leak.as_os_str(),
        ],
        CMD_TIMEOUT,
    );
    out.assert_success();
    assert_eq!(
        out.report().top().function(),
        Some("leak_on_exit"),
        "-o - --format json: the JSON report on stdout\n{}",
        out.describe()
    );
    assert!(
        !std::path::Path::new("-").exists(),
        "-o - must not create a file named -"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An output whose directory is gone when the report is written (the
/// traced command removes it) fails alone: the outputs before and after it
/// are written, its failure is one stderr line, and memtrace exits 1.
#[test]
fn one_unwritable_output_does_not_lose_the_others() {
    let dir = scratch_dir("output-vanished");
    let gone = dir.join("gone");
    std::fs::create_dir(&gone).expect("create the directory the command removes");
    let (first, lost, last) = (dir.join("a.json"), gone.join("b.json"), dir.join("c.svg"));
    let out = run_memtrace(
        &[
            "-o".as_ref(),
            first.as_os_str(),
            "-o".as_ref(),
            lost.as_os_str(),
            "-o".as_ref(),
            last.as_os_str(),
            "--".as_ref(),
            "/usr/bin/rmdir".as_ref(),
            gone.as_os_str(),
        ],
        CMD_TIMEOUT,
    );
    let ctx = out.describe();
    assert_eq!(out.status.code(), Some(1), "exit code\n{ctx}");
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("memtrace: error:"))
        .collect();
    assert!(
        errors.len() == 1 && errors[0].contains(path_str(&lost)),
        "one error line, naming {}\n{ctx}",
        lost.display()
    );
    let report = out.report_from(&std::fs::read_to_string(&first).unwrap_or_else(|e| {
        panic!(
            "{} (before the lost one) not written: {e}\n{ctx}",
            first.display()
        )
    }));
    report.assert_consistent();
    let svg = std::fs::read_to_string(&last).unwrap_or_else(|e| {
        panic!(
            "{} (after the lost one) not written: {e}\n{ctx}",
            last.display()
        )
    });
    assert!(svg.contains("</svg>"), "c.svg is a whole SVG\n{ctx}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn output_into_missing_directory_fails_fast() {
    let workload = leak_signal(1, 1000, 1000);
    let dir = scratch_dir("missing-output-dir");
    let file = dir.join("no-such-dir").join("x.json");
    let file_arg = file.to_str().expect("utf-8 temp path");
    let pid = workload.pid().to_string();
    let out = run_memtrace(
        &["--pid", pid.as_str(), "--duration", "30s", "-o", file_arg],
        secs(45),
    );
    let error = out.one_line_error(None, &[]);
    assert!(
        error.contains(file_arg),
        "the error should name the --output path {file_arg}\n{}",
        out.describe()
    );
    assert!(
        out.elapsed < secs(5),
        "memtrace should fail at once when -o cannot be created, not after tracing \
         (--duration 30s): took {:?}\n{}",
        out.elapsed,
        out.describe()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn closed_stdout_does_not_panic() {
    let out = run_memtrace_stdout_closed(
        &[OsString::from("--"), compile_c("leak_in_script").into()],
        CMD_TIMEOUT,
    );
    assert!(
        out.status.code() == Some(0) && out.problems.is_empty(),
        "memtrace -- CMD with a closed stdout should still exit 0 when CMD exits (101 is a \
         Rust panic)\n{}",
        out.describe()
    );
    assert!(
        !out.stderr.contains("panicked"),
        "memtrace panicked writing its report to a closed stdout\n{}",
        out.describe()
    );
}

/// pprof_mix 40 3000 4: alloc_block() keeps 20 of its 40 blocks of 3000 B,
/// map_region() keeps its 4 mappings of 64 KiB; nothing else allocates
/// while traced.
const MIX_ARGS: [u64; 3] = [40, 3000, 4];

#[test]
fn totals_are_split_by_kind() {
    let dir = scratch_dir("totals-by-kind");
    let json = dir.join("run.json");
    let args: Vec<String> = MIX_ARGS.iter().map(u64::to_string).collect();
    let mut workload = Workload::spawn_ready(&compile_c("pprof_mix"), &args);
    let tracer = trace_until_done(
        &mut workload,
        &[
            "--interval",
            "1s",
            "--duration",
            "3s",
            "-o",
            path_str(&json),
        ],
    );
    let out = tracer.finish(secs(60));
    out.assert_success();
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}\n{}", json.display(), out.describe()));
    let report = out.report_from(&text);
    let ctx = report.describe();
    report.assert_consistent();
    let heap = KindTotals {
        outstanding_bytes: 20 * 3000,
        outstanding_allocations: 20,
        allocations: 40,
        frees: 20,
        allocated_bytes: 40 * 3000,
        freed_bytes: 20 * 3000,
        stacks: 1,
        stacks_holding_memory: 1,
    };
    let mmap = KindTotals {
        outstanding_bytes: 4 * 65536,
        outstanding_allocations: 4,
        allocations: 4,
        frees: 0,
        allocated_bytes: 4 * 65536,
        freed_bytes: 0,
        stacks: 1,
        stacks_holding_memory: 1,
    };
    let t = &report.totals;
    assert_eq!(
        t.by_kind,
        BTreeMap::from([(StackKind::Heap, heap), (StackKind::Mmap, mmap)]),
        "{ctx}"
    );
    assert_eq!(
        (t.outstanding_bytes, t.outstanding_allocations, t.stacks),
        (20 * 3000 + 4 * 65536, 24, 2),
        "the sums over every kind stay\n{ctx}"
    );
    // The text report, rendered from the snapshot: a line per kind.
    let offline = run_memtrace(&["report", path_str(&json)], secs(60));
    offline.assert_success();
    let lines: Vec<&str> = offline
        .stdout
        .lines()
        .filter(|l| l.starts_with("outstanding"))
        .collect();
    assert_eq!(
        lines,
        [
            "outstanding heap: 58.6 KiB in 20 allocations from 1 stack (40 allocations, 20 frees \
             while tracing)",
            "outstanding mmap: 256.0 KiB in 4 mappings from 1 stack (4 mapped, 0 unmapped while \
             tracing)",
        ],
        "{}",
        offline.describe()
    );
    drop(workload);
    let _ = std::fs::remove_dir_all(&dir);
}

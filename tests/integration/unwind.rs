//! Full stacks through code without frame pointers (`--unwind`): a C leak
//! four calls deep built `-O2 -fomit-frame-pointer`, a leak under libc's
//! qsort (Debian's libc keeps no frame pointers) from code that keeps them,
//! a Rust program built like `--release`, C++ `new` from a member function
//! at -O2, and a command traced from its start — each stack named frame by
//! frame down to `_start`, its bytes exact, none truncated; and what the
//! frame-pointer walk alone loses.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use memtrace_integration::{
    compile_c_using, compile_c_with, run_memtrace_cmd, scratch_dir, trace_handshake,
    workspace_root, Report, StackExt,
};
use memtrace_report::{StackKind, StackReport, UnwindReport, UnwindStats};

/// deep_leak.c: store_value's blocks, and one note per qsort comparison.
const DEEP_COUNT: u64 = 64;
const DEEP_SIZE: u64 = 3000;
const NOTE_SIZE: u64 = 48;
const DEEP_CHAIN: [&str; 5] = [
    "store_value",
    "build_entry",
    "parse_section",
    "load_config",
    "main",
];
const NO_FRAME_POINTERS: &[&str] = &["-O2", "-fomit-frame-pointer"];

/// Traces `exe` (a ready/go/done workload) with `--unwind mode`; returns
/// the report and what the workload printed after the go.
fn traced(exe: &std::path::Path, mode: &str) -> (Report, Vec<String>) {
    let args = [
        "--interval",
        "1s",
        "--format",
        "json",
        "--top",
        "1000",
        "--unwind",
        mode,
    ];
    trace_handshake(exe, &[], &args, Duration::from_millis(1500))
}

/// deep_leak's "compares N" line.
fn compares(lines: &[String]) -> u64 {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("compares ")?.parse().ok())
        .unwrap_or_else(|| panic!("no `compares N` line in {lines:?}"))
}

/// The stack goes from `chain` (its first frames, in order) down to the
/// process's first frame, `_start`, and the walk says it is complete.
#[track_caller]
fn assert_complete(s: &StackReport, chain: &[&str], ctx: &str) {
    let functions = s.functions();
    assert!(
        functions.starts_with(chain),
        "expected the stack to start with {chain:?}, got {functions:?}\n{ctx}"
    );
    assert_eq!(functions.last(), Some(&"_start"), "{functions:?}\n{ctx}");
    assert!(!s.truncated, "walk flagged truncated: {functions:?}\n{ctx}");
}

/// store_value's leak: all four callers and main, exact bytes.
#[track_caller]
fn assert_deep_leak(report: &Report, ctx: &str) {
    let s = report.stack_of("store_value");
    assert_complete(s, &DEEP_CHAIN, ctx);
    assert_eq!(
        (s.outstanding_bytes, s.outstanding_allocations),
        (DEEP_COUNT * DEEP_SIZE, DEEP_COUNT),
        "{ctx}"
    );
}

/// The comparator's notes: each stack goes through libc's qsort frames
/// (no frame pointers) back into sort_records and main; the bytes add up
/// to one note per comparison.
#[track_caller]
fn assert_qsort_leak(report: &Report, compares: u64, ctx: &str) {
    let stacks = report.stacks_of("note_comparison");
    assert!(!stacks.is_empty(), "{ctx}");
    let held: u64 = stacks.iter().map(|s| s.outstanding_bytes).sum();
    assert_eq!(held, compares * NOTE_SIZE, "{ctx}");
    for s in stacks {
        assert_complete(s, &["note_comparison", "compare_records"], ctx);
        let functions = s.functions();
        let sort = functions.iter().position(|f| *f == "sort_records");
        let Some(sort) = sort else {
            panic!("sort_records missing: {functions:?}\n{ctx}");
        };
        assert_eq!(functions.get(sort + 1), Some(&"main"), "{functions:?}");
        let in_libc = s.frames[2..sort]
            .iter()
            .filter(|f| f.module.as_deref().is_some_and(|m| m.contains("libc.so")))
            .count();
        assert!(
            in_libc >= 1 && in_libc == sort - 2,
            "qsort's frames (libc) between compare_records and sort_records: {functions:?}\n{ctx}"
        );
    }
}

/// The report's `unwind` (how its stacks were walked).
#[track_caller]
fn unwind(report: &Report) -> &UnwindReport {
    report
        .unwind
        .as_ref()
        .unwrap_or_else(|| panic!("unwind missing\n{}", report.describe()))
}

/// The report's `unwind.tables` (the unwind tables loaded).
#[track_caller]
fn tables(report: &Report) -> &UnwindStats {
    let unwind = unwind(report);
    unwind
        .tables
        .as_ref()
        .unwrap_or_else(|| panic!("unwind.tables missing\n{unwind:?}"))
}

#[test]
fn c_without_frame_pointers_gets_full_stacks() {
    let exe = compile_c_with("deep_leak", NO_FRAME_POINTERS);
    for mode in ["auto", "dwarf"] {
        let (report, lines) = traced(&exe, mode);
        let ctx = format!("--unwind {mode}\n{}", report.describe());
        assert_deep_leak(&report, &ctx);
        assert_qsort_leak(&report, compares(&lines), &ctx);
        assert_eq!(unwind(&report).truncated_stacks, 0, "{ctx}");
        assert_eq!(unwind(&report).truncated_walks, 0, "{ctx}");
        // The program, libc and the dynamic loader: no frame pointers.
        assert!(tables(&report).files_with_tables >= 3, "{ctx}");
    }
    // The frame-pointer walk alone cannot get past the allocating function.
    let (report, _) = traced(&exe, "fp");
    let ctx = report.describe();
    let functions = report.stack_of("store_value").functions();
    assert!(
        !functions.contains(&"build_entry"),
        "the frame-pointer walk was expected to lose the callers: {functions:?}\n{ctx}"
    );
    assert_eq!(
        report.stack_of("store_value").outstanding_bytes,
        DEEP_COUNT * DEEP_SIZE,
        "bytes are the caller's whatever the walk\n{ctx}"
    );
    assert!(
        report.unwind.as_ref().is_none_or(|u| u.tables.is_none()),
        "{ctx}"
    );
}

#[test]
fn frame_pointer_builds_still_work_and_cross_libc() {
    let exe = compile_c_with("deep_leak", &[]);
    // By frame pointer alone: the program's own chain is whole, but the
    // walk from the comparator dies in qsort (libc keeps none) and says so.
    let (report, lines) = traced(&exe, "fp");
    let ctx = report.describe();
    let deep = report.stack_of("store_value").functions();
    assert!(deep.starts_with(&DEEP_CHAIN), "{deep:?}\n{ctx}");
    let notes = report.stacks_of("note_comparison");
    assert!(!notes.is_empty(), "{ctx}");
    for s in &notes {
        assert!(!s.functions().contains(&"sort_records"), "{ctx}");
        assert!(s.truncated, "{:?}\n{ctx}", s.functions());
    }
    assert!(unwind(&report).truncated_stacks >= notes.len() as u64);
    // auto: the program's frames by frame pointer (it keeps them), libc's
    // through its table: both chains whole.
    let (report, lines_auto) = traced(&exe, "auto");
    let ctx = report.describe();
    assert_deep_leak(&report, &ctx);
    assert_qsort_leak(&report, compares(&lines_auto), &ctx);
    assert_eq!(compares(&lines), compares(&lines_auto));
    assert!(tables(&report).files_with_frame_pointers >= 1, "{ctx}");
    assert_eq!(unwind(&report).truncated_stacks, 0, "{ctx}");
}

#[test]
fn rust_release_build_names_the_leaking_function() {
    let src = workspace_root().join("tests/workloads/rust_leak.rs");
    let exe: PathBuf = scratch_dir("rust").join("rust_leak");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    // What `cargo build --release` does: optimised, no frame pointers;
    // line tables for the report's file:line.
    let out = Command::new(&rustc)
        .args([
            "--edition",
            "2021",
            "-C",
            "opt-level=3",
            "-C",
            "debuginfo=1",
        ])
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("running rustc");
    assert!(
        out.status.success(),
        "rustc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (report, _) = traced(&exe, "auto");
    let ctx = report.describe();
    // Inlined calls are frames of their own: the standard library's
    // allocation path (RawVec ← vec!, below the allocator's shims), inlined
    // into remember_request, comes first, each frame marked inlined.
    let is_std = |f: &memtrace_report::Frame| {
        let name = f.function.as_deref().unwrap_or("");
        ["alloc::", "core::", "std::"]
            .iter()
            .any(|c| name.contains(c))
    };
    let user_frames = |s: &StackReport| -> Vec<String> {
        s.frames
            .iter()
            .skip_while(|f| f.inlined && is_std(f))
            .map(|f| f.function.clone().unwrap_or_default())
            .collect()
    };
    let stacks: Vec<&StackReport> = report
        .stacks
        .iter()
        .filter(|s| {
            user_frames(s).first().map(String::as_str) == Some("rust_leak::remember_request")
        })
        .collect();
    let held: u64 = stacks.iter().map(|s| s.outstanding_bytes).sum();
    // 50 leaked buffers of 6000 bytes; the scratch vectors were freed.
    assert_eq!(held, 50 * 6000, "{ctx}");
    for s in stacks {
        let user = user_frames(s);
        let chain = [
            "rust_leak::remember_request",
            "rust_leak::handle_batch",
            "rust_leak::main",
        ];
        assert!(
            user.starts_with(&chain.map(String::from)),
            "{user:?}\n{ctx}"
        );
        assert_eq!(
            user.last().map(String::as_str),
            Some("_start"),
            "{user:?}\n{ctx}"
        );
        assert!(!s.truncated, "walk flagged truncated: {user:?}\n{ctx}");
        // The global allocator's shims (alloc::alloc::alloc_zeroed, Global's
        // Allocator impl) are the allocator's own, as malloc's internals
        // are: the stack starts below them.
        let first = s.frames[0].function.as_deref().unwrap_or("");
        assert!(
            !first.starts_with("alloc::alloc::") && !first.starts_with("<alloc::alloc::Global"),
            "frames[0] is the allocator's shim {first:?}\n{ctx}"
        );
    }
}

#[test]
fn cxx_member_function_at_o2_comes_first() {
    let exe = compile_c_using("g++", "cxx_leak", NO_FRAME_POINTERS);
    let (report, _) = traced(&exe, "auto");
    let ctx = report.describe();
    let problems = report.function_mismatches(
        "SessionStore::remember(int)",
        StackKind::Heap,
        100 * 4096,
        100,
    );
    assert!(problems.is_empty(), "{}\n{ctx}", problems.join("\n"));
    assert_complete(
        report.stack_of("SessionStore::remember(int)"),
        &["SessionStore::remember(int)", "main"],
        &ctx,
    );
}

#[test]
fn command_is_walked_from_its_first_allocation() {
    // A command that leaks at once and exits: its tables must be in before
    // main runs (it stops at its entry point until they are).
    let exe = compile_c_with("deep_leak", NO_FRAME_POINTERS);
    let report = run_memtrace_cmd(&["--unwind", "auto"], &[exe.as_os_str(), "now".as_ref()]);
    let ctx = report.describe();
    assert_deep_leak(&report, &ctx);
    assert_eq!(unwind(&report).frames_without_table, 0, "{ctx}");
    // Its tables went with it: no process mapped its files any more.
    let built = tables(&report).files_with_tables;
    assert!(built >= 3, "{ctx}");
    assert_eq!(tables(&report).files_dropped, built, "{ctx}");
    assert!(tables(&report).rows > 10_000, "{ctx}");
}

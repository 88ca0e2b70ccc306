//! Language runtimes, traced with `--pid`: a Go program's heap, traced
//! through the runtime's mmap calls with Go frames down to the growing
//! function; Node's native memory, named by the JavaScript function that
//! allocated it (from `/tmp/perf-PID.map`); a Python dict's growth, with
//! its verdict. (C++ `new`: `allocators`; a Rust release build: `unwind`.)

use std::path::{Path, PathBuf};

use memtrace_integration::{
    json_args_with, pyenv_python, secs, trace_pid, Report, StackExt, Workload,
};
use memtrace_report::{Language, StackKind, StackReport, Verdict};

/// Starts `program args` (a workload printing "ready"), traces it for
/// 6 s and returns the report.
fn trace_runtime(program: &Path, args: &[&str]) -> (Report, String) {
    let mut w = Workload::spawn(program, args);
    w.expect_line("ready", secs(30));
    let tracer = trace_pid(w.pid(), &json_args_with(&["--duration", "6s"]));
    let out = tracer.finish(secs(60));
    (out.report(), out.stderr.clone())
}

/// Stacks (largest first) with a frame whose function contains `needle`.
fn stacks_through<'a>(report: &'a Report, needle: &str) -> Vec<&'a StackReport> {
    report
        .stacks
        .iter()
        .filter(|s| {
            s.frames
                .iter()
                .any(|f| f.function.as_deref().is_some_and(|n| n.contains(needle)))
        })
        .collect()
}

#[test]
fn go_heap_growth_through_mmap_with_go_frames() {
    let dir = memtrace_integration::scratch_dir("go");
    let exe = dir.join("go_hoard");
    let src = memtrace_integration::workspace_root().join("tests/workloads/go_hoard.go");
    let build = std::process::Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("go (Debian golang-go; `cargo xtask test` installs it)");
    assert!(
        build.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    let (report, stderr) = trace_runtime(&exe, &[]);
    let ctx = report.describe();
    assert!(
        stderr.contains("is a Go program: Go code gets no probes"),
        "{stderr}"
    );
    // No probe in Go code: nothing hooked.
    assert!(report.targets[0].allocators.is_empty(), "{ctx}");
    // growHoard keeps 1 MiB every 50 ms: ~120 MiB in 6 s, mapped by the
    // runtime in large steps. Its stacks cross the runtime's switch to the
    // system stack down to main.growHoard.
    let growing = stacks_through(&report, "main.growHoard");
    let held: u64 = growing.iter().map(|s| s.outstanding_bytes).sum();
    assert!(
        held >= 48 << 20,
        "only {held} B under main.growHoard\n{ctx}"
    );
    let top = growing[0];
    assert_eq!(top.kind, StackKind::Mmap, "{}", top.summary());
    assert!(
        matches!(top.verdict, Verdict::Leak | Verdict::Growing),
        "{}",
        top.summary()
    );
}

#[test]
fn node_cache_is_named_by_its_javascript_function() {
    // memtrace opens its inspector, on Node's default port.
    let _port = memtrace_integration::default_inspector_port();
    let node = PathBuf::from("/usr/bin/node");
    assert!(
        node.exists(),
        "node is missing (Node 20 is part of this machine)"
    );
    let script = memtrace_integration::workspace_root().join("tests/workloads/node_cache.js");
    let (report, _) = trace_runtime(
        &node,
        &[
            "--perf-basic-prof",
            "--interpreted-frames-native-stack",
            // Keeps the V8 log --perf-basic-prof also writes out of the
            // working directory.
            "--logfile=/dev/null",
            "--no-logfile-per-isolate",
            // The function stays a frame of its own (never inlined into
            // the timer callback, whatever the optimizing tier decides).
            "--max-inlined-bytecode-size=0",
            script.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_file(format!("/tmp/perf-{}.map", report.targets[0].pid));
    let ctx = report.describe();
    // 50 Buffers of 4 KiB every 20 ms: ~10 MiB/s, native memory allocated
    // under the JavaScript function, named from /tmp/perf-PID.map.
    let cached = stacks_through(&report, "rememberRequest");
    let held: u64 = cached.iter().map(|s| s.outstanding_bytes).sum();
    assert!(
        held >= 20 << 20,
        "only {held} B under rememberRequest\n{ctx}"
    );
    let top = cached[0];
    assert_eq!(top.verdict, Verdict::Leak, "{}", top.summary());
    let js = top
        .frames
        .iter()
        .find_map(|f| {
            f.function
                .as_deref()
                .filter(|n| n.contains("rememberRequest"))
        })
        .unwrap();
    assert!(js.contains("node_cache.js"), "{js}");
}

#[test]
fn python_dict_growth_gets_a_verdict() {
    // CPython 3.11 by path: pyenv's, whose shared libpython has symbols
    // (`python3` on PATH is a pyenv shim script; Debian's static
    // /usr/bin/python3.11 has none). $PYTHON overrides it.
    let python = std::env::var_os("PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| pyenv_python("3.11"));
    let script = memtrace_integration::workspace_root().join("tests/workloads/py_dict.py");
    let (report, _) = trace_runtime(&python, &[script.to_str().unwrap()]);
    let ctx = report.describe();
    // 200 values of 1 KiB every 20 ms: ~10 MiB/s, kept by the dict. Each
    // is a Python object allocation (`PyObject_Malloc`, from bytes'
    // constructor), made by the line that calls bytes().
    let top = &report.stacks[0];
    assert_eq!(top.kind, StackKind::Heap, "{ctx}");
    assert_eq!(top.verdict, Verdict::Leak, "{}", top.summary());
    assert!(
        top.outstanding_bytes >= 30 << 20,
        "{}\n{ctx}",
        top.summary()
    );
    assert!(
        top.frames[0]
            .function
            .as_deref()
            .is_some_and(|f| f.contains("PyBytes_")),
        "{}",
        top.summary()
    );
    let line = std::fs::read_to_string(&script)
        .unwrap()
        .lines()
        .position(|l| l.contains("bytes(1024)"))
        .unwrap() as u32
        + 1;
    let first_python = top
        .frames
        .iter()
        .find(|f| f.language == Some(Language::Python))
        .unwrap_or_else(|| panic!("no Python frame: {}", top.summary()));
    assert_eq!(
        (
            first_python.function.as_deref(),
            first_python.file.as_deref(),
            first_python.line
        ),
        (Some("remember_session"), script.to_str(), Some(line)),
        "{}",
        top.summary()
    );
}

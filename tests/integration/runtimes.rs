//! Every allocator a target may use, found from its mappings and symbols:
//! glibc, musl, the executable itself when static, jemalloc, tcmalloc,
//! mimalloc under its `mi_` prefix, an allocator API under a prefix of its
//! own (`--symbol-prefix`, `--allocator-lib`), and a library the program
//! dlopen()s after memtrace attached — each leak attributed to its function
//! with exact bytes, and the allocator file named in the report.
//!
//! The allocator libraries come from Debian packages (`cargo xtask test`
//! installs them: musl-tools, libjemalloc-dev, libgoogle-perftools-dev,
//! libmimalloc2.0); a missing one fails the test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use memtrace_integration::{
    compile_c_using, compile_c_with, json_args_with, secs, trace_handshake, trace_pid, Report,
    Tracer, Workload,
};

/// alloc_leak.c: LEAK_COUNT blocks of LEAK_SIZE bytes.
const LEAK_COUNT: u64 = 100;
const LEAK_SIZE: u64 = 10_000;

/// A Debian library, which must be installed.
#[track_caller]
fn library(path: &str, package: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.exists(),
        "{path} is missing: install the Debian package {package} (`cargo xtask test` does)"
    );
    p
}

/// Traces `pid` with `extra` options until [`stop`] (a minute at most).
fn trace(pid: u32, extra: &[&str]) -> Tracer {
    let mut all = json_args_with(&["--duration", "60s"]);
    all.extend_from_slice(extra);
    trace_pid(pid, &all)
}

/// Ends a trace with Ctrl-C (after an interval, so the last sample holds
/// what was just done) and returns its report.
fn stop(tracer: Tracer) -> Report {
    std::thread::sleep(std::time::Duration::from_millis(1500));
    tracer.interrupt(secs(120)).report()
}

/// Starts `exe args`, traces it with `extra` options, gives the go, and
/// returns the report once the leak is done.
fn traced_leak(exe: &Path, args: &[&str], extra: &[&str]) -> Report {
    trace_handshake(
        exe,
        args,
        &json_args_with(extra),
        Duration::from_millis(1500),
    )
    .0
}

/// The leak is `function`'s, exactly, and `allocator` (a path suffix) was
/// hooked.
#[track_caller]
fn assert_leak(report: &Report, function: &str, allocator: &str) {
    let ctx = report.describe();
    let problems = report.function_mismatches(function, "heap", LEAK_COUNT * LEAK_SIZE, LEAK_COUNT);
    assert!(problems.is_empty(), "{}\n{ctx}", problems.join("\n"));
    let hooked = &report.targets[0].allocators;
    assert!(
        hooked.iter().any(|a| a.ends_with(allocator)),
        "{allocator} should be among the hooked allocators {hooked:?}"
    );
}

#[test]
fn static_binary_is_its_own_allocator() {
    let exe = compile_c_with("alloc_leak", &["-static"]);
    let report = traced_leak(&exe, &["malloc"], &[]);
    assert_leak(&report, "leak_blocks", &exe.display().to_string());
}

#[test]
fn musl_binary() {
    let musl_gcc = library("/usr/bin/musl-gcc", "musl-tools");
    let exe = compile_c_using(musl_gcc.to_str().unwrap(), "alloc_leak", &[]);
    let report = traced_leak(&exe, &["malloc"], &[]);
    assert_leak(&report, "leak_blocks", "x86_64-linux-musl/libc.so");
}

#[test]
fn jemalloc_and_tcmalloc() {
    library(
        "/usr/lib/x86_64-linux-gnu/libjemalloc.so",
        "libjemalloc-dev",
    );
    library(
        "/usr/lib/x86_64-linux-gnu/libtcmalloc.so",
        "libgoogle-perftools-dev",
    );
    for (lib, file) in [
        ("-ljemalloc", "libjemalloc.so.2"),
        ("-ltcmalloc", "libtcmalloc.so.4"),
    ] {
        let exe = compile_c_with("alloc_leak", &[lib]);
        let report = traced_leak(&exe, &["malloc"], &[]);
        let hooked = &report.targets[0].allocators;
        // tcmalloc's file is named by its full version (libtcmalloc.so.4.x.y).
        let file = hooked
            .iter()
            .find(|a| a.contains(file))
            .unwrap_or_else(|| panic!("{file} not hooked: {hooked:?}"))
            .clone();
        assert_leak(&report, "leak_blocks", &file);
    }
    // jemalloc's sized free (all Rust's tikv-jemallocator uses): 1000
    // blocks freed with sdallocx leave nothing outstanding.
    let exe = compile_c_with("alloc_leak", &["-DWITH_JEMALLOC", "-ljemalloc"]);
    let report = traced_leak(&exe, &["sdallocx"], &[]);
    assert_leak(&report, "leak_blocks", "libjemalloc.so.2");
    // (Stacks with nothing outstanding are left out of the report: the
    // totals count every call.)
    let t = &report.totals;
    assert_eq!(
        (t.allocations, t.frees, t.outstanding_bytes),
        (1000 + LEAK_COUNT, 1000, LEAK_COUNT * LEAK_SIZE),
        "every sdallocx is a free: {}",
        report.describe()
    );
}

#[test]
fn mimalloc_under_its_prefix() {
    let lib = library(
        "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2.0",
        "libmimalloc2.0",
    );
    let link = format!("-l:{}", lib.file_name().unwrap().to_str().unwrap());
    let exe = compile_c_with("alloc_leak", &["-DWITH_MIMALLOC", &link]);
    let report = traced_leak(&exe, &["mi"], &[]);
    assert_leak(&report, "leak_blocks_mi", "libmimalloc.so.2.0");
}

#[test]
fn an_allocator_under_a_prefix_of_its_own() {
    let plugin = compile_c_with("plugin", &["-shared", "-fPIC"]);
    let exe = compile_c_with("alloc_leak", &["-ldl"]);
    let plugin_arg = plugin.to_str().unwrap();
    // Given up front: hooked before the program even loads it.
    let mut w = Workload::spawn_ready(&exe, &["myalloc", plugin_arg]);
    let tracer = trace(
        w.pid(),
        &["--symbol-prefix", "myalloc_", "--allocator-lib", plugin_arg],
    );
    w.signal(libc::SIGUSR1);
    w.expect_line("loaded", secs(10));
    w.signal(libc::SIGUSR1);
    w.expect_line("done", secs(10));
    let report = stop(tracer);
    // Counted once, as myalloc_malloc's (the libc malloc inside is nested).
    assert_leak(&report, "leak_blocks_myalloc", plugin_arg);
}

#[test]
fn libraries_loaded_later_are_hooked_and_named() {
    let plugin = compile_c_with("plugin", &["-shared", "-fPIC"]);
    let exe = compile_c_with("alloc_leak", &["-ldl"]);
    let plugin_arg = plugin.to_str().unwrap();

    // A leak inside a library dlopen()ed after memtrace attached: its
    // frames are named (libc's malloc was hooked from the start).
    let report = {
        let mut w = Workload::spawn_ready(&exe, &["plugin", plugin_arg]);
        let tracer = trace(w.pid(), &[]);
        w.signal(libc::SIGUSR1);
        w.expect_line("loaded", secs(10));
        w.signal(libc::SIGUSR1);
        w.expect_line("done", secs(10));
        stop(tracer)
    };
    let problems =
        report.function_mismatches("plugin_leak", "heap", LEAK_COUNT * LEAK_SIZE, LEAK_COUNT);
    assert!(
        problems.is_empty(),
        "{}\n{}",
        problems.join("\n"),
        report.describe()
    );

    // An allocator in a library dlopen()ed later: memtrace notices it at
    // its next look at the maps (every second) and hooks it.
    let mut w = Workload::spawn_ready(&exe, &["myalloc", plugin_arg]);
    let tracer = trace(w.pid(), &["--symbol-prefix", "myalloc_"]);
    w.signal(libc::SIGUSR1);
    w.expect_line("loaded", secs(10));
    let hooked = format!("pid {} loaded the allocator {plugin_arg}: hooked", w.pid());
    tracer.wait_output(&hooked, secs(10), "the dlopen()ed allocator was not hooked");
    w.signal(libc::SIGUSR1);
    w.expect_line("done", secs(10));
    let report = stop(tracer);
    assert_leak(&report, "leak_blocks_myalloc", plugin_arg);
    let hooked = &report.targets[0].allocators;
    let mut unique = hooked.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        hooked.len(),
        "each allocator listed once: {hooked:?}"
    );
}

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
fn stacks_through<'a>(report: &'a Report, needle: &str) -> Vec<&'a memtrace_integration::Stack> {
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
        stderr.contains("is a Go program: its heap is traced through the runtime's mmap calls"),
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
    assert_eq!(top.kind, "mmap", "{}", top.summary());
    assert!(
        matches!(top.verdict.as_str(), "leak" | "growing"),
        "{}",
        top.summary()
    );
}

#[test]
fn node_cache_is_named_by_its_javascript_function() {
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
    assert_eq!(top.verdict, "leak", "{}", top.summary());
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
    let python = PathBuf::from(
        std::env::var_os("PYTHON").unwrap_or_else(|| std::ffi::OsString::from("python3")),
    );
    let script = memtrace_integration::workspace_root().join("tests/workloads/py_dict.py");
    let (report, _) = trace_runtime(&python, &[script.to_str().unwrap()]);
    let ctx = report.describe();
    // 200 values of 1 KiB every 20 ms: ~10 MiB/s, kept by the dict. What
    // CPython allocates them with (its calloc/malloc wrappers) is the
    // leaking path; the interpreter above it has no frame pointers here.
    let top = &report.stacks[0];
    assert_eq!(top.kind, "heap", "{ctx}");
    assert_eq!(top.verdict, "leak", "{}", top.summary());
    assert!(
        top.outstanding_bytes >= 30 << 20,
        "{}\n{ctx}",
        top.summary()
    );
    assert!(
        top.frames[0]
            .function
            .as_deref()
            .is_some_and(|f| ["_PyObject_", "_PyMem_", "PyMem_"]
                .iter()
                .any(|p| f.starts_with(p))),
        "{}",
        top.summary()
    );
}

#[test]
fn cxx_new_names_the_member_function_that_wrote_it() {
    let exe = compile_c_using("g++", "cxx_leak", &[]);
    let report = traced_leak(&exe, &[], &[]);
    let ctx = report.describe();
    // 100 Sessions of 4096 bytes, allocated by operator new (hooked in
    // libstdc++) from SessionStore::remember: that frame first, demangled,
    // and the malloc inside operator new not counted again.
    let problems =
        report.function_mismatches("SessionStore::remember(int)", "heap", 100 * 4096, 100);
    assert!(problems.is_empty(), "{}\n{ctx}", problems.join("\n"));
    let hooked = &report.targets[0].allocators;
    assert!(
        hooked.iter().any(|a| a.contains("libstdc++")),
        "libstdc++ hooked: {hooked:?}"
    );
    // The churn's 500 news and deletes: all freed (totals count every
    // call, once: new's inner malloc is nested).
    let t = &report.totals;
    assert_eq!(
        (t.allocations, t.frees, t.outstanding_bytes),
        (600, 500, 100 * 4096),
        "{ctx}"
    );
}

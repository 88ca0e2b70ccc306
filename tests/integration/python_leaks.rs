//! Python leaks reported at their Python lines (issue 22): the workloads of
//! `tests/workloads/py_leaks/`, one per leak pattern, each traced with
//! `memtrace -- PYTHON SCRIPT SECONDS` under every CPython on these
//! machines, by path: pyenv's 3.9, 3.11, 3.12 and 3.13 (objects counted one
//! by one) and Debian's static /usr/bin/python3.11 (pymalloc inlined into
//! its callers: objects counted by pool). The heap stack
//! holding the most outstanding bytes has the script's marked line (`#
//! leak: QUALNAME`) as its first Python frame, with verdict `leak` (the
//! bounded LRU cache: `plateau`). Also: the same bytes as tracemalloc
//! counts for the same work (full and sampled), and `--pid` on an
//! interpreter that is already leaking.
//!
//! The interpreters of one pattern run in parallel threads, at most
//! [`AT_ONCE`] traced interpreters in this file at a time: a traced
//! interpreter's start keeps a core busy for seconds (every object
//! allocation is a trap, tens of thousands of new stacks), and one starved
//! of CPU for seconds leaks in steps that are no steady ramp.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use memtrace_integration::{
    assert_within, path_str, pyenv_python, run_memtrace, scratch_dir, secs, workspace_root,
    RunOutput, Workload, CMD_TIMEOUT,
};
use serde_json::Value;

/// How long each pattern's workload leaks: ten intervals of [`INTERVAL`],
/// over the four a leak verdict needs.
const SECONDS: &str = "5";

/// The same for the asyncio pattern: importing asyncio makes ~45,000
/// stacks that memtrace takes in while the leak begins (a few seconds under
/// the suite's load, without samples meanwhile).
const ASYNCIO_SECONDS: &str = "8";

/// memtrace's `--interval` for every run here.
const INTERVAL: &str = "500ms";

/// memtrace's `--max-stacks` for the runs started with the interpreter.
const MAX_STACKS: &str = "131072";

/// Traced interpreters running at once in this file's tests (the machine
/// has two cores; other tests run meanwhile).
const AT_ONCE: u32 = 2;

/// Running traced interpreters, and the condition a finished one signals.
static RUNNING: (Mutex<u32>, Condvar) = (Mutex::new(0), Condvar::new());

/// One of the [`AT_ONCE`] slots, given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Slot {
        let (running, freed) = &RUNNING;
        let mut n = running.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= AT_ONCE {
            n = freed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (running, freed) = &RUNNING;
        *running.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        freed.notify_one();
    }
}

/// The workloads' directory.
fn workloads() -> PathBuf {
    workspace_root().join("tests/workloads/py_leaks")
}

/// A workload script by file name, as an absolute path (the file name
/// CPython gives its code objects, and so the one frames carry).
fn script(name: &str) -> PathBuf {
    workloads().join(name)
}

/// Debian's CPython 3.11: static, stripped, link-time optimized, with
/// pymalloc inlined into its callers, so that its small objects are
/// counted by the 16 KiB pool pymalloc takes for them.
const DEBIAN_PYTHON: &str = "/usr/bin/python3.11";

/// pymalloc's pool size in Debian's 3.11 (3.10+ on 64-bit).
const DEBIAN_POOL_BYTES: u64 = 16 * 1024;

/// The interpreters every pattern runs under: (label, executable).
fn interpreters() -> Vec<(String, PathBuf)> {
    ["3.9", "3.11", "3.12", "3.13"]
        .iter()
        .map(|m| (format!("pyenv {m}"), pyenv_python(m)))
        .chain([("Debian 3.11".to_string(), PathBuf::from(DEBIAN_PYTHON))])
        .collect()
}

/// The minor version a python executable's name says (python3.11 → 11).
fn minor_of(python: &Path) -> u32 {
    let name = python.file_name().unwrap().to_str().unwrap();
    name.trim_start_matches("python3.")
        .parse()
        .unwrap_or_else(|_| panic!("{python:?}: not named python3.N"))
}

/// A Python frame: function (qualified name from 3.11, as CPython's
/// `co_qualname`; the bare `co_name` before), file and line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PyFrame {
    function: String,
    file: String,
    line: u64,
}

impl std::fmt::Display for PyFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}:{})", self.function, self.file, self.line)
    }
}

/// The line of `script` marked `# leak: QUALNAME`, as the frame an
/// interpreter of minor version `minor` reports for it.
fn marked_frame(script: &Path, minor: u32) -> PyFrame {
    let text = std::fs::read_to_string(script)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", script.display()));
    let marked: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .filter_map(|(i, l)| Some((i + 1, l.rsplit_once("# leak: ")?.1.trim())))
        .collect();
    assert_eq!(
        marked.len(),
        1,
        "{}: one line should end with `# leak: QUALNAME`",
        script.display()
    );
    let (line, qualname) = marked[0];
    let function = if minor >= 11 {
        qualname
    } else {
        qualname.rsplit('.').next().unwrap()
    };
    PyFrame {
        function: function.to_string(),
        file: path_str(script).to_string(),
        line: line as u64,
    }
}

/// Whether a report frame is a Python one (`"language": "python"`; native
/// frames have no language, or "native").
fn is_python(frame: &Value) -> bool {
    frame["language"].as_str() == Some("python")
}

/// A stack's first Python frame (frames are innermost first).
fn first_python_frame(stack: &Value) -> Option<PyFrame> {
    let frame = stack["frames"].as_array()?.iter().find(|f| is_python(f))?;
    Some(PyFrame {
        function: frame["function"].as_str().unwrap_or("?").to_string(),
        file: frame["file"].as_str().unwrap_or("?").to_string(),
        line: frame["line"].as_u64().unwrap_or(0),
    })
}

/// The report's heap stacks, the most outstanding bytes first.
fn heap_stacks(report: &Value) -> Vec<&Value> {
    let mut stacks: Vec<&Value> = report["stacks"]
        .as_array()
        .map(|s| s.iter().filter(|s| s["kind"] == "heap").collect())
        .unwrap_or_default();
    stacks.sort_by_key(|s| std::cmp::Reverse(s["outstanding_bytes"].as_u64().unwrap_or(0)));
    stacks
}

/// Frames of a stack shown in failure messages.
const MAX_FRAMES_SHOWN: usize = 24;

/// A report's top `n` heap stacks, each with its verdict and its innermost
/// frames (Python ones marked), for failure messages.
fn describe_top(report: &Value, n: usize) -> String {
    let mut s = String::new();
    let heap = heap_stacks(report);
    let _ = writeln!(
        s,
        "top {} of {} heap stacks by outstanding bytes (python frames marked `py`):",
        n.min(heap.len()),
        heap.len()
    );
    for (i, stack) in heap.iter().take(n).enumerate() {
        let _ = writeln!(
            s,
            "  #{i} {} B in {} blocks, {} ({})",
            stack["outstanding_bytes"],
            stack["outstanding_allocations"],
            stack["verdict"].as_str().unwrap_or("?"),
            stack["verdict_reason"].as_str().unwrap_or("")
        );
        let frames = stack["frames"].as_array().map_or(&[][..], Vec::as_slice);
        for f in frames.iter().take(MAX_FRAMES_SHOWN) {
            let at = match (f["file"].as_str(), f["line"].as_u64()) {
                (Some(file), Some(line)) => format!(" ({file}:{line})"),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "      {} {}{at}",
                if is_python(f) { "py" } else { "  " },
                f["function"].as_str().unwrap_or("??")
            );
        }
        if frames.len() > MAX_FRAMES_SHOWN {
            let _ = writeln!(s, "         ...{} more", frames.len() - MAX_FRAMES_SHOWN);
        }
    }
    s
}

/// Runs `memtrace --interval 500ms extra... -o report.json -- python
/// script args...`; asserts it succeeded and returns the report, read
/// by the report crate (the schema) and as JSON, and the run.
#[track_caller]
fn trace(python: &Path, script: &Path, args: &[&str], extra: &[&str]) -> (Value, RunOutput) {
    trace_with(&[path_str(python)], script, args, extra)
}

/// [`trace`] with the interpreter's command (`python` and its options).
#[track_caller]
fn trace_with(python: &[&str], script: &Path, args: &[&str], extra: &[&str]) -> (Value, RunOutput) {
    let dir = scratch_dir("py-leaks");
    let out_file = dir.join("report.json");
    // --max-stacks: an interpreter's start alone makes 10,000-45,000
    // distinct stacks within a second (3.11 importing asyncio: every
    // import's allocations, under each chain of imports), before the
    // first interval could make room for them.
    let mut all: Vec<&str> = vec!["--interval", INTERVAL, "--max-stacks", MAX_STACKS];
    all.extend_from_slice(extra);
    all.extend(["-o", path_str(&out_file), "--"]);
    all.extend_from_slice(python);
    all.push(path_str(script));
    all.extend_from_slice(args);
    let slot = Slot::take();
    let out = run_memtrace(&all, CMD_TIMEOUT);
    drop(slot);
    out.assert_success();
    let report = read_report(&out, &out_file);
    let _ = std::fs::remove_dir_all(&dir);
    (report, out)
}

/// The JSON report `out` wrote to `file`, checked by the report crate.
#[track_caller]
fn read_report(out: &RunOutput, file: &Path) -> Value {
    let text = std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("no report at {}: {e}\n{}", file.display(), out.describe()));
    out.report_from(&text);
    serde_json::from_str(&text).unwrap()
}

/// Whether the heap stack holding the most outstanding bytes has `want`
/// as its first Python frame, and verdict `verdict`: what is wrong if not.
fn top_stack_problem(report: &Value, want: &PyFrame, verdict: &str) -> Option<String> {
    let heap = heap_stacks(report);
    let Some(top) = heap.first() else {
        return Some("no heap stacks".into());
    };
    match first_python_frame(top) {
        None => Some(format!(
            "the heap stack holding the most bytes has no Python frame (none with \
             \"language\": \"python\"); its first should be {want}"
        )),
        Some(got) if got != *want => Some(format!(
            "the heap stack holding the most bytes has {got} as its first Python frame, \
             not {want}"
        )),
        Some(_) if top["verdict"].as_str() != Some(verdict) => Some(format!(
            "the stack of {want} is {}, not {verdict}",
            top["verdict"]
        )),
        Some(_) => None,
    }
}

/// One pattern under one interpreter: `SCRIPT SECONDS` traced from its
/// start; its marked line tops the heap with `verdict`. Err: what is
/// wrong, with the run and its top stacks.
fn traces_at_the_marked_line(python: &Path, name: &str, verdict: &str) -> Result<(), String> {
    let script = script(name);
    let seconds = match name {
        "asyncio_leak.py" => ASYNCIO_SECONDS,
        _ => SECONDS,
    };
    let (report, out) = trace(python, &script, &[seconds], &[]);
    let want = marked_frame(&script, minor_of(python));
    // Objects one by one, except in Debian's build: by pool.
    let pools = report["probes"]["pymalloc_pool_bytes"].as_u64();
    let expected = (python == Path::new(DEBIAN_PYTHON)).then_some(DEBIAN_POOL_BYTES);
    if pools != expected {
        return Err(format!(
            "the report's probes.pymalloc_pool_bytes is {pools:?}, not {expected:?}\n{}",
            out.command
        ));
    }
    match top_stack_problem(&report, &want, verdict) {
        None => Ok(()),
        Some(problem) => Err(format!(
            "{problem}\n{}\n{}",
            out.command,
            describe_top(&report, 3)
        )),
    }
}

/// [`traces_at_the_marked_line`] for every interpreter, in parallel; fails
/// naming each interpreter that failed, with its message.
fn pattern(name: &str, verdict: &str) {
    let failures: Vec<String> = std::thread::scope(|scope| {
        let runs: Vec<_> = interpreters()
            .into_iter()
            .map(|(label, python)| {
                let run = scope.spawn(move || traces_at_the_marked_line(&python, name, verdict));
                (label, run)
            })
            .collect();
        // A panic (memtrace failed, no report) is its thread's own message.
        runs.into_iter()
            .filter_map(|(label, run)| match run.join() {
                Ok(Ok(())) => None,
                Ok(Err(problem)) => Some(format!("=== {label}: {problem}")),
                Err(_) => Some(format!("=== {label}: panicked (its message is above)")),
            })
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{name}: {} of {} interpreters failed:\n{}",
        failures.len(),
        interpreters().len(),
        failures.join("\n\n")
    );
}

#[test]
fn dict_cache_leaks_at_its_line() {
    pattern("dict_cache.py", "leak");
}

#[test]
fn request_list_leaks_at_its_line() {
    pattern("request_list.py", "leak");
}

#[test]
fn class_registry_leaks_at_its_line() {
    pattern("class_registry.py", "leak");
}

#[test]
fn callbacks_leak_at_their_line() {
    pattern("callbacks.py", "leak");
}

#[test]
fn thread_leaks_at_its_line() {
    pattern("thread_leak.py", "leak");
}

#[test]
fn asyncio_task_leaks_at_its_line() {
    pattern("asyncio_leak.py", "leak");
}

#[test]
fn lru_cache_is_a_plateau_at_its_line() {
    pattern("lru_plateau.py", "plateau");
}

/// `-X dev` puts CPython's debug hooks in front of pymalloc, which then
/// gets pointers 16 bytes below the caller's: memtrace probes the public
/// frees in such a process, not pymalloc's. Probed in pymalloc, nearly
/// every free would be of a block never seen (92 % of them, measured),
/// its block left outstanding; probed right, under 1 % are (the debug
/// hooks' own frees of large blocks through libc), and the bounded cache
/// is still a plateau at its line.
#[test]
fn debug_hooks_lose_no_free() {
    let python = pyenv_python("3.12");
    let script = script("lru_plateau.py");
    let (report, out) = trace_with(&[path_str(&python), "-X", "dev"], &script, &[SECONDS], &[]);
    let (unknown, frees) = (
        report["counters"]["free_unknown"]
            .as_u64()
            .unwrap_or(u64::MAX),
        report["totals"]["frees"].as_u64().unwrap_or(0),
    );
    assert!(
        unknown * 20 < frees,
        "{unknown} of {frees} frees were of blocks never seen (5 % at most)\n{}",
        out.describe()
    );
    let want = marked_frame(&script, 12);
    if let Some(problem) = top_stack_problem(&report, &want, "plateau") {
        panic!("{problem}\n{}\n{}", out.command, describe_top(&report, 3));
    }
}

/// `memtrace --pid` attached to a pyenv 3.12 that has been leaking for a
/// second (what it allocated before is not seen) names the leaking line
/// with verdict `leak`, in one 8 s run that ends well within 30 s.
#[test]
fn pid_attach_names_the_leaking_line() {
    let _slot = Slot::take();
    let python = pyenv_python("3.12");
    let script = script("dict_cache.py");
    let mut w = Workload::spawn_ready(&python, &[path_str(&script), "120"]);
    w.expect_line("leaking", secs(20));
    let dir = scratch_dir("py-leaks-pid");
    let out_file = dir.join("report.json");
    let pid = w.pid().to_string();
    let out = run_memtrace(
        &[
            "--pid",
            &pid,
            "--duration",
            "8s",
            "--interval",
            INTERVAL,
            "-o",
            path_str(&out_file),
        ],
        secs(60),
    );
    out.assert_success();
    let report = read_report(&out, &out_file);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.elapsed < Duration::from_secs(30),
        "memtrace --pid took {:.1}s, over 30s\n{}",
        out.elapsed.as_secs_f64(),
        out.describe()
    );
    let want = marked_frame(&script, 12);
    if let Some(problem) = top_stack_problem(&report, &want, "leak") {
        panic!("{problem}\n{}\n{}", out.command, describe_top(&report, 3));
    }
}

/// The anchor workload's fixed work: dict_cache.py `--steps` this many
/// (~22 MiB kept at its line), enough that 64 KiB byte sampling estimates
/// it within a few percent (~350 samples: ±5 % is one standard deviation).
const ANCHOR_STEPS: &str = "48000";

/// The anchor's interpreter (objects counted one by one).
fn anchor_python() -> PathBuf {
    pyenv_python("3.12")
}

/// Bytes outstanding per line (file, line) where the blocks were
/// allocated, as one tool counts them.
type ByLine = BTreeMap<(String, u64), u64>;

/// dict_cache.py's fixed work under under_tracemalloc.py (in-process,
/// tracing from before the script starts, snapshot at its os._exit) run
/// by `python`: the bytes tracemalloc holds outstanding per line (its
/// innermost frame), and the whole JSON for failure messages. Run once
/// per interpreter for the test binary.
fn tracemalloc_lines(python: &Path) -> &'static (ByLine, String) {
    static PYENV: OnceLock<(ByLine, String)> = OnceLock::new();
    static DEBIAN: OnceLock<(ByLine, String)> = OnceLock::new();
    let once = match python == Path::new(DEBIAN_PYTHON) {
        true => &DEBIAN,
        false => &PYENV,
    };
    once.get_or_init(|| {
        let dir = scratch_dir("py-leaks-tracemalloc");
        let out = dir.join("tracemalloc.json");
        let runner = script("under_tracemalloc.py");
        let mut w = Workload::spawn(
            python,
            &[
                path_str(&runner),
                path_str(&out),
                path_str(&script("dict_cache.py")),
                "--steps",
                ANCHOR_STEPS,
            ],
        );
        let status = w.wait_exit(secs(120));
        assert!(status.success(), "under_tracemalloc.py failed: {status}");
        let text = std::fs::read_to_string(&out)
            .unwrap_or_else(|e| panic!("under_tracemalloc.py wrote no {}: {e}", out.display()));
        let _ = std::fs::remove_dir_all(&dir);
        let json: Value = serde_json::from_str(&text).unwrap();
        let mut lines = ByLine::new();
        let mut top = String::new();
        for l in json["lines"].as_array().unwrap() {
            let (file, line) = (l["file"].as_str().unwrap(), l["line"].as_u64().unwrap());
            let size = l["size"].as_u64().unwrap();
            if lines.len() < 5 {
                let _ = write!(top, "\n  {file}:{line} {size} B in {} blocks", l["count"]);
            }
            lines.insert((file.to_string(), line), size);
        }
        (lines, format!("tracemalloc's top lines:{top}"))
    })
}

/// The heap bytes memtrace holds outstanding per line: each heap stack's,
/// at its first Python frame (what tracemalloc's innermost frame is).
fn memtrace_lines(report: &Value) -> ByLine {
    let mut lines = ByLine::new();
    for stack in heap_stacks(report) {
        if let Some(f) = first_python_frame(stack) {
            *lines.entry((f.file, f.line)).or_default() +=
                stack["outstanding_bytes"].as_u64().unwrap_or(0);
        }
    }
    lines
}

/// The line holding the most bytes.
fn top_line(lines: &ByLine) -> Option<(&(String, u64), u64)> {
    lines
        .iter()
        .max_by_key(|(_, bytes)| **bytes)
        .map(|(k, v)| (k, *v))
}

/// dict_cache.py's fixed work traced by memtrace with `extra`, against
/// tracemalloc's count of the same work: the same top line (the marked
/// one), and its outstanding bytes within `pct` percent. Both count the
/// bytes requested of CPython's allocators (PyObject_*/PyMem_*; a block
/// over 512 B that pymalloc takes from malloc is one block, not two) and
/// still held when the process ends, grouped by the innermost Python line:
/// memtrace's stacks that share a first Python frame are summed, as
/// tracemalloc's `statistics('lineno')` sums every traceback of a line.
/// In Debian's build memtrace counts the 16 KiB pools the line's objects
/// took (and its blocks over 512 B one by one): the pools' headers, the
/// objects' rounding to 16 bytes and a last pool partly full are counted
/// too, a few percent more.
fn anchor(python: &Path, extra: &[&str], pct: f64) {
    let (tm_lines, tm_said) = tracemalloc_lines(python);
    let script = script("dict_cache.py");
    let want = marked_frame(&script, minor_of(python));
    let key = (want.file.clone(), want.line);
    let (tm_top, tm_bytes) = top_line(tm_lines).expect("tracemalloc saw no lines");
    assert_eq!(
        *tm_top, key,
        "tracemalloc's top line should be the marked one\n{tm_said}"
    );

    let (report, out) = trace(python, &script, &["--steps", ANCHOR_STEPS], extra);
    let mt_lines = memtrace_lines(&report);
    let ctx = format!(
        "{}\nmemtrace's top lines: {:?}\n{tm_said}\n{}",
        out.command,
        {
            let mut top: Vec<_> = mt_lines.iter().collect();
            top.sort_by_key(|(_, b)| std::cmp::Reverse(**b));
            top.truncate(5);
            top
        },
        describe_top(&report, 5)
    );
    let (mt_top, mt_bytes) = top_line(&mt_lines)
        .unwrap_or_else(|| panic!("no heap stack of memtrace's has a Python frame\n{ctx}"));
    assert_eq!(
        *mt_top, key,
        "memtrace's top line should be the marked one\n{ctx}"
    );
    assert_within(
        &format!("bytes outstanding at {want} (memtrace, against tracemalloc)"),
        mt_bytes,
        tm_bytes,
        pct,
        &ctx,
    );
}

#[test]
fn tracemalloc_anchor_full() {
    anchor(&anchor_python(), &[], 10.0);
}

#[test]
fn tracemalloc_anchor_sampled() {
    anchor(&anchor_python(), &["--sample-bytes", "64KiB"], 25.0);
}

/// Debian's build, its objects counted by pool: within 10 % of
/// tracemalloc's bytes (4.5 % over, measured).
#[test]
fn tracemalloc_anchor_debian_pools() {
    anchor(Path::new(DEBIAN_PYTHON), &[], 10.0);
}

/// A script that ends before memtrace's first interval (`--interval 60s`)
/// still has its stacks named at its Python lines: a CPython command stops
/// at its end (here os._exit) until memtrace has read its code objects.
/// pyenv 3.12 (objects one by one; ~2 s traced) and Debian's 3.11 (by
/// pool; well under a second).
#[test]
fn short_run_named_at_its_end() {
    let script = script("dict_cache.py");
    for python in [anchor_python(), PathBuf::from(DEBIAN_PYTHON)] {
        let dir = scratch_dir("py-leaks-short");
        let out_file = dir.join("report.json");
        let slot = Slot::take();
        let out = run_memtrace(
            &[
                "--interval",
                "60s",
                "--max-stacks",
                MAX_STACKS,
                "-o",
                path_str(&out_file),
                "--",
                path_str(&python),
                path_str(&script),
                "--steps",
                "10000",
            ],
            CMD_TIMEOUT,
        );
        drop(slot);
        out.assert_success();
        let report = read_report(&out, &out_file);
        let _ = std::fs::remove_dir_all(&dir);
        let want = marked_frame(&script, minor_of(&python));
        let top = heap_stacks(&report).first().map(|s| first_python_frame(s));
        assert_eq!(
            top,
            Some(Some(want)),
            "{}\n{}",
            out.describe(),
            describe_top(&report, 3)
        );
    }
}

/// In Debian's build, where pools are the unit, pools freed with their
/// arena count freed: 400,000 small strings made at one line (~1,570
/// pools) and all dropped leave under a tenth of the line's pools
/// outstanding (those of arenas pymalloc keeps for other objects), and
/// most were counted freed when their arena was unmapped.
#[test]
fn debian_pools_freed_with_their_arena() {
    let script = workspace_root().join("tests/workloads/py_pool_release.py");
    let (report, out) = trace(Path::new(DEBIAN_PYTHON), &script, &[], &[]);
    let line = marked_line(&script, "# pools: build");
    let at_line: Vec<&Value> = heap_stacks(&report)
        .into_iter()
        .filter(|s| first_python_frame(s).is_some_and(|f| f.line == line))
        .collect();
    let sum = |field: &str| -> u64 { at_line.iter().map(|s| s[field].as_u64().unwrap_or(0)).sum() };
    let (allocated, outstanding) = (sum("allocated_bytes"), sum("outstanding_bytes"));
    let pool = DEBIAN_POOL_BYTES;
    let unmapped = report["counters"]["pools_unmapped"].as_u64().unwrap_or(0);
    let ctx = format!("{}\n{}", out.command, describe_top(&report, 3));
    assert!(
        allocated >= 1_500 * pool,
        "line {line} took {allocated} B of pools, not ~1,570 pools\n{ctx}"
    );
    assert!(
        outstanding * 10 < allocated,
        "line {line} still holds {outstanding} of the {allocated} B it took\n{ctx}"
    );
    assert!(
        unmapped * pool * 10 >= allocated * 9,
        "{unmapped} pools counted freed with their arena, of {} the line took\n{ctx}",
        allocated / pool
    );
}

/// Forked workers, gunicorn style (`-- python app.py`: the command's
/// children are followed): each worker process's own heap has the
/// workers' marked line on top, with verdict `leak`, read from the
/// worker's own frames (its stacks are its own, its Python frames walked
/// in it); the parent, which only waits, holds no such stack.
#[test]
fn forked_workers_leak_at_their_line() {
    let python = anchor_python();
    let script = workspace_root().join("tests/workloads/py_fork_workers.py");
    let (report, out) = trace(&python, &script, &[SECONDS], &[]);
    let want = marked_frame(&script, minor_of(&python));
    let ctx = || format!("{}\n{}", out.command, describe_top(&report, 4));
    let targets = report["targets"].as_array().cloned().unwrap_or_default();
    assert_eq!(targets.len(), 3, "the parent and two workers\n{}", ctx());
    let leaking: Vec<u64> = targets
        .iter()
        .filter_map(|t| {
            let pid = t["pid"].as_u64()?;
            let top = heap_stacks(&report)
                .into_iter()
                .find(|s| s["pid"].as_u64() == Some(pid))?;
            (first_python_frame(top) == Some(want.clone()) && top["verdict"] == "leak")
                .then_some(pid)
        })
        .collect();
    assert_eq!(
        leaking.len(),
        2,
        "two processes (the workers) should have {want} on top, leaking; these do: \
         {leaking:?}\n{}",
        ctx()
    );
}

/// `python3.12` through pyenv's shim (a bash script that execs pyenv's,
/// which execs the interpreter): the interpreter is found in the
/// command's last image and named at its line.
#[test]
fn pyenv_shim_names_the_line() {
    let script = script("dict_cache.py");
    let shim = PathBuf::from("/root/.pyenv/shims/python3.12");
    assert!(shim.is_file(), "no pyenv shim at {}", shim.display());
    let version = anchor_python();
    let version = version
        .ancestors()
        .nth(2)
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
        .expect("pyenv version directory")
        .to_string();
    let pyenv_version = format!("PYENV_VERSION={version}");
    let (report, out) = trace_with(
        &["/usr/bin/env", &pyenv_version, path_str(&shim)],
        &script,
        &[SECONDS],
        &[],
    );
    let want = marked_frame(&script, 12);
    if let Some(problem) = top_stack_problem(&report, &want, "leak") {
        panic!("{problem}\n{}\n{}", out.command, describe_top(&report, 3));
    }
}

/// `--empty-programs`, the bench's floor (the traps at memtrace's probe
/// points alone): the same probes go in, and no heap block is counted
/// (the mapping tracepoints still count pymalloc's arenas).
#[test]
fn empty_programs_count_nothing() {
    let script = script("dict_cache.py");
    let (report, out) = trace(&anchor_python(), &script, &["2"], &["--empty-programs"]);
    assert_eq!(
        report["totals"]["by_kind"].get("heap"),
        None,
        "{}",
        out.describe()
    );
    assert!(heap_stacks(&report).is_empty(), "{}", out.describe());
}

/// The number of the one line of `script` ending with `marker`.
fn marked_line(script: &Path, marker: &str) -> u64 {
    u64::from(memtrace_integration::marked_line(script, marker))
}

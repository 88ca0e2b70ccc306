//! CPython's own frames, read from outside a running interpreter by the
//! hidden `memtrace python-stacks --pid PID` (the userspace walk the
//! kernel's will mirror): for every interpreter on these machines by path
//! (pyenv's 3.8 to 3.13, with a shared libpython, and Debian's static,
//! stripped /usr/bin/python3.11), a known chain of calls comes back
//! exactly, with qualified names from 3.11 and each thread's own stack
//! matched to its thread ids. Offsets that do not fit the build are
//! refused in one line, and so are interpreters memtrace does not read.

use std::path::{Path, PathBuf};

use memtrace_integration::{pyenv_python, run_memtrace, secs, trace_pid, workspace_root, Workload};
use serde_json::Value;

fn script() -> PathBuf {
    workspace_root().join("tests/workloads/py_frames.py")
}

/// The line of the script that ends with `# line: NAME`.
fn line_of(name: &str) -> u64 {
    let text = std::fs::read_to_string(script()).unwrap();
    let marker = format!("# line: {name}");
    let at = text
        .lines()
        .position(|l| l.trim_end().ends_with(&marker))
        .unwrap_or_else(|| panic!("no {marker:?} in py_frames.py"));
    at as u64 + 1
}

/// The minor version a python executable's name says (python3.11 → 11).
fn minor_of(python: &Path) -> u32 {
    let name = python.file_name().unwrap().to_str().unwrap();
    name.trim_start_matches("python3.").parse().unwrap()
}

/// `memtrace python-stacks --pid PID`: the JSON it prints, and its stderr.
#[track_caller]
fn read_stacks(pid: u32) -> (Value, String) {
    let out = run_memtrace(&["python-stacks", "--pid", &pid.to_string()], secs(60));
    out.assert_success();
    let stacks: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON: {e}\n{}", out.describe()));
    (stacks, out.stderr)
}

/// A thread's frames of the script, innermost first, as "function:line".
fn script_frames(thread: &Value) -> Vec<String> {
    let file = script();
    thread["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["file"].as_str() == file.to_str())
        .map(|f| format!("{}:{}", f["function"].as_str().unwrap(), f["line"]))
        .collect()
}

/// The main thread's chain, as the script's version names it.
fn main_chain(minor: u32) -> Vec<String> {
    let box_ = if minor >= 11 { "Box." } else { "" };
    vec![
        format!("{box_}inner:{}", line_of("inner")),
        format!("{box_}middle:{}", line_of("middle")),
        format!("outer:{}", line_of("outer")),
        format!("<module>:{}", line_of("module")),
    ]
}

/// One interpreter: the main thread's stack, exactly, and nothing skipped
/// (the process is blocked, so every frame parses).
fn reads_the_call_chain(python: &Path) {
    let minor = minor_of(python);
    let w = Workload::spawn_ready(python, &[script()]);
    let (stacks, stderr) = read_stacks(w.pid());
    let ctx = format!("{python:?}\n{stacks:#}\n{stderr}");
    assert!(
        stderr.contains(&format!("pid {}: CPython 3.{minor}.", w.pid()))
            && stderr.contains("frames readable"),
        "{ctx}"
    );
    let threads = stacks["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 1, "{ctx}");
    let frames: Vec<String> = threads[0]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["file"].as_str(), script().to_str(), "{ctx}");
            format!("{}:{}", f["function"].as_str().unwrap(), f["line"])
        })
        .collect();
    assert_eq!(frames, main_chain(minor), "{ctx}");
    assert_eq!(stacks["skipped"], 0, "{ctx}");
    if minor >= 11 {
        assert_eq!(threads[0]["native_id"], u64::from(w.pid()), "{ctx}");
    }
}

/// Two threads blocked in their own function and the main thread in its
/// chain: each stack belongs to the thread the script says (its
/// `pthread_self()`, and its kernel id from 3.11).
fn reads_each_threads_stack(python: &Path) {
    let minor = minor_of(python);
    let mut w = Workload::spawn(python, &[script().to_str().unwrap(), "threads"]);
    let mut ids = Vec::new();
    loop {
        let line = w.next_line(secs(20));
        if line == "ready" {
            break;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((f.len(), f[0]), (4, "thread"), "{line}");
        ids.push((
            f[1].to_string(),
            f[2].parse::<u64>().unwrap(),
            f[3].parse::<u64>().unwrap(),
        ));
    }
    let (stacks, stderr) = read_stacks(w.pid());
    let ctx = format!("{python:?} {ids:?}\n{stacks:#}\n{stderr}");
    let threads = stacks["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 3, "{ctx}");
    for (name, ident, native) in &ids {
        let thread = threads
            .iter()
            .find(|t| t["thread_id"] == *ident)
            .unwrap_or_else(|| panic!("no thread {ident} ({name})\n{ctx}"));
        if minor >= 11 {
            assert_eq!(thread["native_id"], *native, "{ctx}");
        }
        let want = match name.as_str() {
            "main" => main_chain(minor),
            worker => vec![format!("{worker}:{}", line_of(worker))],
        };
        assert_eq!(script_frames(thread), want, "{name}\n{ctx}");
        // Above a worker's own frame: threading's Barrier.wait and what it
        // calls; below it, Thread.run and the bootstrap.
        if name != "main" {
            let all = thread["frames"].as_array().unwrap();
            assert!(all.len() > 2, "{ctx}");
            assert!(
                all.iter()
                    .all(|f| f["line"].as_u64().is_some_and(|l| l > 0)),
                "{ctx}"
            );
        }
    }
}

fn pyenv(minor: &str) -> PathBuf {
    pyenv_python(minor)
}

const DEBIAN_PYTHON: &str = "/usr/bin/python3.11";

#[test]
fn python_38_call_chain() {
    reads_the_call_chain(&pyenv("3.8"));
}

#[test]
fn python_39_call_chain() {
    reads_the_call_chain(&pyenv("3.9"));
}

#[test]
fn python_310_call_chain() {
    reads_the_call_chain(&pyenv("3.10"));
}

#[test]
fn python_311_call_chain() {
    reads_the_call_chain(&pyenv("3.11"));
}

#[test]
fn python_311_debian_static_call_chain() {
    reads_the_call_chain(Path::new(DEBIAN_PYTHON));
}

#[test]
fn python_312_call_chain() {
    reads_the_call_chain(&pyenv("3.12"));
}

#[test]
fn python_313_call_chain() {
    reads_the_call_chain(&pyenv("3.13"));
}

#[test]
fn python_38_threads() {
    reads_each_threads_stack(&pyenv("3.8"));
}

#[test]
fn python_39_threads() {
    reads_each_threads_stack(&pyenv("3.9"));
}

#[test]
fn python_310_threads() {
    reads_each_threads_stack(&pyenv("3.10"));
}

#[test]
fn python_311_threads() {
    reads_each_threads_stack(&pyenv("3.11"));
}

#[test]
fn python_311_debian_static_threads() {
    reads_each_threads_stack(Path::new(DEBIAN_PYTHON));
}

#[test]
fn python_312_threads() {
    reads_each_threads_stack(&pyenv("3.12"));
}

#[test]
fn python_313_threads() {
    reads_each_threads_stack(&pyenv("3.13"));
}

/// Every other version's offsets, forced on each interpreter, are refused
/// by the attach check in one line (3.8 and 3.9 share one layout).
#[test]
fn python_wrong_offsets_are_refused() {
    for (python, minor) in [
        (pyenv("3.8"), 8),
        (pyenv("3.10"), 10),
        (pyenv("3.11"), 11),
        (PathBuf::from(DEBIAN_PYTHON), 11),
        (pyenv("3.12"), 12),
        (pyenv("3.13"), 13),
    ] {
        let w = Workload::spawn_ready(&python, &[script()]);
        let pid = w.pid().to_string();
        for wrong in (8..=13).filter(|&m| m != minor && !(minor == 8 && m == 9)) {
            let out = run_memtrace(
                &[
                    "python-stacks",
                    "--pid",
                    &pid,
                    "--offsets-of",
                    &wrong.to_string(),
                ],
                secs(60),
            );
            let ctx = format!("{python:?} read as 3.{wrong}");
            let line = out.one_line_error(None, &["unsupported CPython build"]);
            assert!(
                line.contains(&format!("CPython 3.{minor}.")),
                "{ctx}: {line}"
            );
        }
    }
}

/// Interpreters memtrace does not read: one line saying so.
#[test]
fn python_unsupported_versions_refused() {
    for (minor, needle) in [
        (
            "3.7",
            "CPython 3.7 (libpython3.7m.so.1.0) is not supported (3.8 to 3.13 are)",
        ),
        ("2.7", "libpython2.7.so.1.0 is not a CPython 3 runtime"),
    ] {
        let python = pyenv_python(minor);
        let w = Workload::spawn_ready(
            &python,
            &[
                "-c",
                "import os, sys; print('ready'); sys.stdout.flush(); os.read(os.pipe()[0], 1)",
            ],
        );
        let out = run_memtrace(&["python-stacks", "--pid", &w.pid().to_string()], secs(60));
        out.one_line_error(None, &[needle]);
    }
    let sleeper = Workload::spawn(Path::new("/bin/sleep"), &["60"]);
    let out = run_memtrace(
        &["python-stacks", "--pid", &sleeper.pid().to_string()],
        secs(60),
    );
    out.one_line_error(None, &["not a CPython 3 process"]);
}

/// `--verbose` on a `--pid` Python names its interpreter and says whether
/// its frames read (they are not in reports yet).
#[test]
fn python_verbose_names_the_interpreter() {
    let w = Workload::spawn_ready(Path::new(DEBIAN_PYTHON), &[script()]);
    let out = trace_pid(w.pid(), &["--verbose", "--duration", "1s"]).finish(secs(60));
    out.assert_success();
    let want = format!("memtrace: pid {}: CPython 3.11.", w.pid());
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with(&want))
        .unwrap_or_else(|| panic!("no {want:?} line\n{}", out.describe()));
    assert!(line.ends_with("(python3.11), frames readable"), "{line}");
}

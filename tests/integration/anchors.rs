//! memtrace against valgrind memcheck, on real programs nobody here wrote,
//! whose children allocate from their first instruction: `gcc -c` (the
//! driver, then cc1 and as, each exec'd by a vfork'd child). (The
//! CPython child of `sh -c` was compared too until memtrace counted Python
//! objects one by one at `PyObject_Malloc`, which valgrind does not see.)
//! Every process's heap live at exit, as memtrace reports it, run 20 times,
//! is within 1 % of what valgrind (`--trace-children=yes
//! --run-libc-freeres=no --run-cxx-freeres=no`) says is in use at exit.
//!
//! Both run their command in the same directory and environment: the one
//! valgrind gives its programs (it adds variables of its own, and dash,
//! for one, keeps a copy of each). One difference is cc1's own, not a tool's: GCC's collector
//! keeps a 32 KiB page-table block per 16 MiB region its pages were mapped
//! in, so their number follows where mmap placed them, which differs under
//! valgrind and between runs (address randomization). Those blocks
//! (`xcalloc` called for `ggc_internal_alloc`, 32,768 bytes each) are
//! counted apart on both sides; everything else cc1 holds is compared.

use std::{collections::BTreeMap, ffi::OsString, fs, path::Path, process::Command};

use memtrace_integration::{
    run_memtrace_in_env, scratch_dir, secs, workspace_root, DROPPING_LOSSES,
};
use serde::Deserialize;

/// memtrace runs per program.
const RUNS: usize = 20;

/// The environment valgrind is given (it adds to it for its programs,
/// see [`client_env`]).
const ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("LANG", "C"),
    ("PYTHONHASHSEED", "0"),
];

/// The environment of a program valgrind runs in `dir` (`env` as its
/// client prints it): memtrace's command gets the same.
fn client_env(dir: &Path) -> Vec<(String, String)> {
    let out = Command::new("valgrind")
        .env_clear()
        .envs(ENV.iter().copied())
        .current_dir(dir)
        .args(["-q", "--trace-children=yes", "/usr/bin/env"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run valgrind (the Debian package): {e}"));
    assert!(out.status.success(), "valgrind env: {}", out.status);
    let env: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(
        ENV.iter()
            .all(|(k, v)| env.iter().any(|(k2, v2)| k == k2 && v == v2)),
        "valgrind's client keeps the environment it was given: {env:?}"
    );
    env
}

/// Bytes of one of GCC's collector page-table blocks.
const GGC_TABLE: u64 = 32_768;

/// Heap live at exit of one process: (bytes, blocks), and of those the
/// collector's page tables (cc1's; see the module's comment).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Live {
    bytes: u64,
    blocks: u64,
    ggc_tables: u64,
}

impl Live {
    fn compared_bytes(&self) -> u64 {
        self.bytes - self.ggc_tables * GGC_TABLE
    }
}

/// Runs `cmd` under valgrind memcheck in `dir`; each process's live heap at
/// exit by program name (the file name of what it exec'd).
fn valgrind(cmd: &[&str], dir: &Path) -> BTreeMap<String, Live> {
    let logs = dir.join("valgrind");
    let _ = fs::remove_dir_all(&logs);
    fs::create_dir_all(&logs).expect("creating the valgrind log directory");
    let out = Command::new("valgrind")
        .env_clear()
        .envs(ENV.iter().copied())
        .current_dir(dir)
        .args([
            "--trace-children=yes",
            "--run-libc-freeres=no",
            "--run-cxx-freeres=no",
            "--leak-check=full",
            "--show-leak-kinds=all",
        ])
        .arg(format!("--log-file={}/%p", logs.display()))
        .args(cmd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run valgrind (the Debian package): {e}"));
    assert!(
        out.status.success(),
        "valgrind {cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found = BTreeMap::new();
    for log in fs::read_dir(&logs).expect("valgrind logs") {
        let text = fs::read_to_string(log.expect("a log").path()).expect("reading a valgrind log");
        let (name, live) = parse_valgrind(&text);
        assert!(
            found.insert(name.clone(), live).is_none(),
            "two processes ran {name} under valgrind"
        );
    }
    found
}

/// A memcheck log line without its `==PID== ` prefix.
fn log_body(line: &str) -> &str {
    line.split_once("== ").map_or("", |(_, rest)| rest).trim()
}

/// A memcheck log: the program's name and its live heap at exit.
fn parse_valgrind(log: &str) -> (String, Live) {
    let lines: Vec<&str> = log.lines().map(log_body).collect();
    let program = lines
        .iter()
        .find_map(|l| l.strip_prefix("Command: "))
        .and_then(|c| c.split_whitespace().next())
        .unwrap_or_else(|| panic!("no Command: line in\n{log}"));
    let name = program.rsplit('/').next().unwrap_or(program).to_string();
    let number = |s: &str| s.replace(',', "").parse::<u64>().ok();
    let (bytes, blocks) = lines
        .iter()
        .find_map(|l| {
            let rest = l.strip_prefix("in use at exit: ")?;
            let mut words = rest.split_whitespace();
            let bytes = number(words.next()?)?;
            let blocks = number(words.nth(2)?)?;
            Some((bytes, blocks))
        })
        .unwrap_or_else(|| panic!("no 'in use at exit' line in\n{log}"));
    // Loss records: "N bytes in B blocks are ... in loss record" and the
    // stack under it ("at 0x…: calloc", "by 0x…: xcalloc", "by 0x…: ???",
    // "by 0x…: ggc_internal_alloc(…)").
    let mut ggc_tables = 0;
    for (i, l) in lines.iter().enumerate() {
        let Some((head, _)) = l.split_once(" are ") else {
            continue;
        };
        let words: Vec<&str> = head.split_whitespace().collect();
        let (Some(record_bytes), Some(record_blocks)) = (
            words.first().and_then(|w| number(w)),
            words.get(3).and_then(|w| number(w)),
        ) else {
            continue;
        };
        let frames: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|f| f.starts_with("at ") || f.starts_with("by "))
            .map(|f| f.split_once(": ").map_or("", |(_, name)| name))
            .collect();
        if record_bytes == record_blocks * GGC_TABLE && is_ggc_table(&frames) {
            ggc_tables += record_blocks;
        }
    }
    (
        name,
        Live {
            bytes,
            blocks,
            ggc_tables,
        },
    )
}

/// Whether a stack (innermost first, from the allocator function) is the
/// collector's page-table allocation: xcalloc, then within two frames
/// ggc_internal_alloc.
fn is_ggc_table(frames: &[&str]) -> bool {
    let named: Vec<&str> = frames
        .iter()
        .copied()
        .skip_while(|f| !f.starts_with("xcalloc"))
        .collect();
    named.first().is_some_and(|f| f.starts_with("xcalloc"))
        && named
            .iter()
            .take(3)
            .any(|f| f.starts_with("ggc_internal_alloc"))
}

/// Runs `cmd` under memtrace in `dir`, in the environment valgrind gives
/// its program; each process's live heap at exit by name.
fn memtrace(
    cmd: &[&str],
    dir: &Path,
    env: &[(String, String)],
    run: usize,
) -> BTreeMap<String, Live> {
    let json = dir.join(format!("report-{run}.json"));
    // --max-stacks: CPython's start makes ~25,000 distinct stacks once its
    // Python frames are part of them (every import's allocations, under
    // each chain of imports).
    let mut args: Vec<OsString> = [
        "--format",
        "json",
        "--top",
        "1000000",
        "--max-stacks",
        "65536",
        "--interval",
        "1s",
        "-o",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push(json.clone().into());
    args.push("--".into());
    args.extend(cmd.iter().map(OsString::from));
    let out = run_memtrace_in_env(&args, dir, env, secs(300));
    out.assert_success();
    let text = fs::read_to_string(&json).expect("reading memtrace's report");
    // Read into borrowed fields: a gcc report holds thousands of stacks, and
    // `--all` tests running beside this one trace this process too (a
    // parsed value tree would be a million live blocks for them).
    let report: Lean = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{}: not a JSON report: {e}\n{}",
            json.display(),
            out.describe()
        )
    });
    per_process(&report, &out.describe())
}

/// What these tests read of a JSON report, borrowed from its text.
#[derive(Deserialize)]
struct Lean<'a> {
    #[serde(borrow)]
    targets: Vec<LeanTarget<'a>>,
    #[serde(borrow)]
    stacks: Vec<LeanStack<'a>>,
    totals: LeanTotals,
    #[serde(borrow)]
    losses: BTreeMap<&'a str, u64>,
}

#[derive(Deserialize)]
struct LeanTarget<'a> {
    pid: u32,
    comm: &'a str,
}

#[derive(Deserialize)]
struct LeanStack<'a> {
    pid: u32,
    kind: &'a str,
    outstanding_bytes: u64,
    outstanding_allocations: u64,
    #[serde(borrow)]
    frames: Vec<LeanFrame<'a>>,
}

#[derive(Deserialize)]
struct LeanFrame<'a> {
    #[serde(borrow, default)]
    function: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct LeanTotals {
    stacks_holding_memory: u64,
}

/// Each target's heap live at exit, by its name, from every stack.
fn per_process(report: &Lean<'_>, context: &str) -> BTreeMap<String, Live> {
    let mut found = BTreeMap::new();
    for t in &report.targets {
        let mut live = Live::default();
        for s in report
            .stacks
            .iter()
            .filter(|s| s.pid == t.pid && s.kind == "heap")
        {
            live.bytes += s.outstanding_bytes;
            live.blocks += s.outstanding_allocations;
            let frames: Vec<&str> = s
                .frames
                .iter()
                .map(|f| f.function.as_deref().unwrap_or("???"))
                .collect();
            if s.outstanding_bytes == s.outstanding_allocations * GGC_TABLE && is_ggc_table(&frames)
            {
                live.ggc_tables += s.outstanding_allocations;
            }
        }
        assert!(
            found.insert(t.comm.to_string(), live).is_none(),
            "two targets named {}\n{context}",
            t.comm
        );
    }
    assert_eq!(
        report.stacks.len() as u64,
        report.totals.stacks_holding_memory,
        "the report lists every stack holding memory (--top is large)\n{context}"
    );
    let lost: Vec<_> = report
        .losses
        .iter()
        .filter(|(k, v)| **v > 0 && DROPPING_LOSSES.contains(k))
        .collect();
    assert!(lost.is_empty(), "losses {lost:?}\n{context}");
    found
}

/// Runs `cmd` [`RUNS`] times under memtrace, two at a time, and checks
/// every process of every run against valgrind's figures.
fn compare(cmd: &[&str], dir: &Path, want: &BTreeMap<String, Live>) {
    let env = &client_env(dir);
    let runs: Vec<BTreeMap<String, Live>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|w| {
                scope.spawn(move || {
                    (w..RUNS)
                        .step_by(2)
                        .map(|run| memtrace(cmd, dir, env, run))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a memtrace run panicked"))
            .collect()
    });
    println!("valgrind {cmd:?}: {want:?}");
    for (run, got) in runs.iter().enumerate() {
        println!("memtrace run {run}: {got:?}");
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "run {run}: the processes memtrace traced, by name, are valgrind's"
        );
        for (name, live) in got {
            let reference = want[name].compared_bytes();
            let seen = live.compared_bytes();
            let off = seen.abs_diff(reference) as f64 / reference.max(1) as f64;
            assert!(
                off <= 0.01,
                "run {run}: {name} holds {seen} B at exit under memtrace, {reference} B under \
                 valgrind ({:.2} % apart; GCC collector page tables apart: {} and {})\n\
                 memtrace: {got:?}\nvalgrind: {want:?}",
                off * 100.0,
                live.ggc_tables,
                want[name].ggc_tables
            );
        }
    }
}

#[test]
fn gcc_children_heap_matches_valgrind() {
    let dir = scratch_dir("anchors-gcc");
    let workloads = workspace_root().join("tests/workloads");
    let object = dir.join("soak.o");
    let source = workloads.join("soak.c");
    let include = format!("-I{}", workloads.display());
    let cmd = [
        "gcc",
        "-O2",
        &include,
        "-c",
        source.to_str().expect("utf-8 path"),
        "-o",
        object.to_str().expect("utf-8 path"),
    ];
    let want = valgrind(&cmd, &dir);
    assert_eq!(
        want.keys().map(String::as_str).collect::<Vec<_>>(),
        ["as", "cc1", "gcc"],
        "valgrind: gcc runs cc1 and as"
    );
    compare(&cmd, &dir, &want);
}

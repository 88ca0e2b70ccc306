//! The bench's allocator part: what one allocate+free pair costs, untraced
//! and under `memtrace --pid` (full tracing), on each allocator a program
//! may run on: glibc, musl, jemalloc, tcmalloc and mimalloc (bench_alloc.c
//! linked against each), and C++'s `operator new` and `delete` through
//! libstdc++ (bench_new.c). Runs are interleaved round by round, so that
//! whatever else the machine does falls on all of them alike; the table
//! gives the medians and each traced pair against glibc's.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStderr, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::{expect_line, median, time_loop};
use crate::cmd;

/// The table goes into docs/performance.md between these lines.
pub(super) const DOCS_BEGIN: &str = "<!-- bench-allocators:begin -->";
pub(super) const DOCS_END: &str = "<!-- bench-allocators:end -->";

/// One allocator: its name, the compiler, the workload and its flags.
struct Allocator {
    name: &'static str,
    compiler: &'static str,
    workload: &'static str,
    flags: &'static [&'static str],
    /// The workload's arguments before the pair count.
    mode: Option<&'static str>,
}

const ALLOCATORS: [Allocator; 6] = [
    Allocator {
        name: "glibc malloc/free",
        compiler: "gcc",
        workload: "bench_alloc",
        flags: &[],
        mode: Some("malloc"),
    },
    Allocator {
        name: "musl malloc/free",
        compiler: "musl-gcc",
        workload: "bench_alloc",
        flags: &[],
        mode: Some("malloc"),
    },
    Allocator {
        name: "jemalloc malloc/free",
        compiler: "gcc",
        workload: "bench_alloc",
        flags: &["-ljemalloc"],
        mode: Some("malloc"),
    },
    Allocator {
        name: "tcmalloc malloc/free",
        compiler: "gcc",
        workload: "bench_alloc",
        flags: &["-ltcmalloc"],
        mode: Some("malloc"),
    },
    Allocator {
        name: "mimalloc malloc/free",
        compiler: "gcc",
        workload: "bench_alloc",
        flags: &["-l:libmimalloc.so.2.0"],
        mode: Some("malloc"),
    },
    Allocator {
        name: "C++ new/delete (libstdc++, glibc)",
        compiler: "g++",
        workload: "bench_new",
        flags: &[],
        mode: None,
    },
];

#[derive(Debug, Serialize)]
pub(super) struct AllocatorRow {
    name: String,
    /// ns per pair, one per round.
    untraced_ns: Vec<f64>,
    traced_ns: Vec<f64>,
    untraced_median_ns: f64,
    traced_median_ns: f64,
}

#[derive(Debug, Serialize)]
pub(super) struct AllocatorResults {
    pairs: u64,
    rows: Vec<AllocatorRow>,
}

pub(super) fn run(memtrace: &Path, repeat: u32, pairs: u64) -> Result<AllocatorResults> {
    // The allocator tests' libraries (musl-gcc among them), and g++.
    let missing: Vec<&str> = crate::test::TEST_LIBRARIES
        .iter()
        .chain(&[("/usr/bin/g++", "g++")])
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|&(_, package)| package)
        .collect();
    if !missing.is_empty() {
        cmd::apt_install(&missing)?;
    }
    cmd::step(&format!(
        "allocators: {} rounds of {pairs} pairs on each of {} allocators, untraced and traced",
        repeat,
        ALLOCATORS.len()
    ));
    let programs: Vec<PathBuf> = ALLOCATORS
        .iter()
        .map(|a| {
            let mut flags = vec!["-O2", "-g"];
            flags.extend_from_slice(a.flags);
            let out = format!("{}-{}", a.workload, a.name.split(' ').next().unwrap_or("x"));
            cmd::compile_workload_as(a.compiler, a.workload, &out, &flags)
        })
        .collect::<Result<_>>()?;
    let mut rows: Vec<AllocatorRow> = ALLOCATORS
        .iter()
        .map(|a| AllocatorRow {
            name: a.name.to_string(),
            untraced_ns: Vec::new(),
            traced_ns: Vec::new(),
            untraced_median_ns: 0.0,
            traced_median_ns: 0.0,
        })
        .collect();
    for round in 1..=repeat {
        for ((a, program), row) in ALLOCATORS.iter().zip(&programs).zip(&mut rows) {
            let untraced = time_pairs(program, a.mode, pairs, None)?;
            let traced = time_pairs(program, a.mode, pairs, Some(memtrace))
                .with_context(|| format!("{} traced", a.name))?;
            eprintln!(
                "    round {round}/{repeat}: {:<36} {:>8.1} ns/pair untraced {:>8.1} traced",
                a.name, untraced, traced
            );
            row.untraced_ns.push(untraced);
            row.traced_ns.push(traced);
        }
    }
    for row in &mut rows {
        row.untraced_median_ns = median(row.untraced_ns.clone());
        row.traced_median_ns = median(row.traced_ns.clone());
    }
    Ok(AllocatorResults { pairs, rows })
}

/// One run of `program [mode] pairs`: its ns per pair, traced by
/// `memtrace --pid` (full tracing) once its probes are in when given.
fn time_pairs(
    program: &Path,
    mode: Option<&str>,
    pairs: u64,
    memtrace: Option<&Path>,
) -> Result<f64> {
    let mut child = Command::new(program)
        .args(mode)
        .arg(pairs.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?);
    expect_line(&mut lines, "ready")?;
    let mut tracer = match memtrace {
        Some(memtrace) => Some(attach(memtrace, child.id(), &[])?),
        None => None,
    };
    let ns = time_loop(&mut child, &mut lines).with_context(|| program.display().to_string())?;
    if !child.wait()?.success() {
        bail!("{} failed", program.display());
    }
    if let Some(t) = tracer.as_mut() {
        // It ends by itself once its only target has exited.
        let status = t.wait().context("waiting for memtrace")?;
        if !status.success() {
            bail!("memtrace --pid {}: {status}", child.id());
        }
    }
    Ok(ns)
}

/// Starts `memtrace --pid pid extra...` and waits (30 s at most) for its
/// line that says it traces, printed once the probes are in.
pub(super) fn attach(memtrace: &Path, pid: u32, extra: &[&str]) -> Result<Child> {
    let mut t = Command::new(memtrace)
        .args(["--pid", &pid.to_string(), "--no-live", "--format", "json"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting memtrace")?;
    let stderr: ChildStderr = t.stderr.take().context("stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
            if line.starts_with("memtrace: tracing pid") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = t.kill();
        bail!("memtrace --pid {pid} did not say it traces within 30 s");
    }
    Ok(t)
}

/// The table: per allocator, the untraced and traced pair, what tracing
/// adds, and the traced pair against glibc's.
pub(super) fn render_markdown(r: &AllocatorResults) -> String {
    let glibc = r.rows.first().map_or(1.0, |g| g.traced_median_ns);
    let mut out = format!(
        "| allocator ({} pairs a run, median) | untraced | memtrace --pid | added | traced / \
         glibc traced |\n|---|---:|---:|---:|---:|\n",
        r.pairs
    );
    for row in &r.rows {
        out += &format!(
            "| {} | {:.0} ns | {:.2} µs | {:.2} µs | {:.2}× |\n",
            row.name,
            row.untraced_median_ns,
            row.traced_median_ns / 1e3,
            (row.traced_median_ns - row.untraced_median_ns) / 1e3,
            row.traced_median_ns / glibc
        );
    }
    out
}

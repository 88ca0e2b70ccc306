//! The bench's Go part: what reading a Go program's runtime from outside
//! costs, on tests/workloads/go_buckets.go (Debian's Go): a heap profile of
//! over 10,000 buckets holding memory, then a fixed unit of work done as
//! fast as it can, counted each second. Each round is one process: 8 s
//! untraced, 8 s with `memtrace --pid` reading it every second (after its
//! start and first read), 8 s untraced again. Reported: the units a second
//! (median of the seconds, median of the rounds), one read's time (the
//! report's `read_ms`: the profile and the goroutines), and memtrace's own
//! CPU while it reads and over its whole run.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::{median, wait_with_usage};
use crate::cmd;

/// The Go table goes into docs/performance.md between these two lines.
pub(super) const DOCS_BEGIN: &str = "<!-- bench-go:begin -->";
pub(super) const DOCS_END: &str = "<!-- bench-go:end -->";

/// Seconds of work skipped after the start, then counted in each phase.
const SKIP_SECS: usize = 2;
const COUNT_SECS: usize = 8;

#[derive(Debug, Default, Serialize)]
pub(super) struct GoResults {
    rounds: u32,
    /// Buckets in the profile memtrace read.
    buckets: u64,
    /// Units of work a second, per run (medians of its seconds).
    untraced_units: Vec<f64>,
    traced_units: Vec<f64>,
    /// One read of the profile and the goroutines (ms), per traced run.
    read_ms: Vec<f64>,
    /// memtrace's CPU over each traced run (start, first read, report),
    /// and while it only reads every second: share of one core.
    memtrace_cpu: Vec<f64>,
    memtrace_steady_cpu: Vec<f64>,
}

/// The program, running, with its stdout's lines.
struct Program {
    child: Child,
    lines: BufReader<ChildStdout>,
}

impl Program {
    fn start(exe: &Path) -> Result<Program> {
        let mut child = Command::new(exe)
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let lines = BufReader::new(child.stdout.take().context("no stdout")?);
        Ok(Program { child, lines })
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.lines.read_line(&mut line)? == 0 {
            bail!("go_buckets closed its output");
        }
        Ok(line.trim_end().to_string())
    }

    /// The units done in each of the next `n` seconds.
    fn seconds(&mut self, n: usize) -> Result<Vec<f64>> {
        (0..n)
            .map(|_| {
                let line = self.line()?;
                line.strip_prefix("units ")
                    .and_then(|u| u.parse().ok())
                    .with_context(|| format!("go_buckets printed {line:?}"))
            })
            .collect()
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the program with Debian's Go.
fn build(scratch: &Path) -> Result<PathBuf> {
    let exe = scratch.join("go_buckets");
    let src = cmd::workspace_root().join("tests/workloads/go_buckets.go");
    cmd::run(
        Command::new("go")
            .arg("build")
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .env("GOCACHE", cmd::target_dir().join("go-cache-1.19")),
    )?;
    Ok(exe)
}

pub(super) fn run(memtrace: &Path, scratch: &Path, rounds: u32) -> Result<GoResults> {
    cmd::step("Go: a heap profile of 16,384 stacks read every second");
    std::fs::create_dir_all(scratch)?;
    let exe = build(scratch)?;
    let report = scratch.join("go-bench.json");
    let mut r = GoResults {
        rounds,
        ..GoResults::default()
    };
    for round in 1..=rounds {
        // One process, untraced, read every second, untraced again: what
        // differs between processes (and drifts on a busy machine) stays
        // out of the comparison.
        let mut p = Program::start(&exe)?;
        if p.line()? != "ready" {
            bail!("go_buckets did not say ready");
        }
        p.seconds(SKIP_SECS)?;
        let mut untraced = p.seconds(COUNT_SECS)?;
        let duration = format!("{}s", COUNT_SECS + 2);
        let mut tracer = Command::new(memtrace)
            .args(["--pid", &p.child.id().to_string(), "--no-live"])
            .args(["--interval", "1s", "--duration", &duration])
            .args(["--format", "json", "-o"])
            .arg(&report)
            .stderr(Stdio::null())
            .spawn()
            .context("starting memtrace")?;
        // Its start and first read (every stack named) are left out.
        p.seconds(1)?;
        let (cpu0, t0) = (cmd::cpu_secs(tracer.id())?, std::time::Instant::now());
        r.traced_units.push(median(p.seconds(COUNT_SECS)?));
        let steady = (cmd::cpu_secs(tracer.id())? - cpu0) / t0.elapsed().as_secs_f64();
        r.memtrace_steady_cpu.push(steady);
        let (status, usage) = wait_with_usage(&mut tracer)?;
        if !status.success() {
            bail!("memtrace failed ({status})");
        }
        p.seconds(1)?;
        untraced.extend(p.seconds(COUNT_SECS)?);
        r.untraced_units.push(median(untraced));
        drop(p);
        let cpu = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        r.memtrace_cpu
            .push((cpu(usage.ru_utime) + cpu(usage.ru_stime)) / (COUNT_SECS + 2) as f64);
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
        let go = &json["targets"][0]["go"];
        r.read_ms.push(
            go["read_ms"]
                .as_f64()
                .context("no go.read_ms in the report")?,
        );
        r.buckets = go["buckets"].as_u64().unwrap_or(0);
        eprintln!(
            "    round {round}/{rounds}: {:.0} units/s untraced, {:.0} read every second; one \
             read {:.1} ms of {} buckets; memtrace {:.1} % of a core ({:.1} % while reading)",
            r.untraced_units.last().unwrap(),
            r.traced_units.last().unwrap(),
            r.read_ms.last().unwrap(),
            r.buckets,
            100.0 * r.memtrace_cpu.last().unwrap(),
            100.0 * r.memtrace_steady_cpu.last().unwrap()
        );
    }
    Ok(r)
}

/// The Go part as Markdown.
pub(super) fn render_markdown(r: &GoResults) -> String {
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!("{lo:.0}-{hi:.0}")
    };
    let untraced = median(r.untraced_units.clone());
    let traced = median(r.traced_units.clone());
    format!(
        "Go (tests/workloads/go_buckets.go, Debian's Go 1.19): a heap profile of {} buckets \
         holding memory, read by `memtrace --pid` every second; each round one process, 8 s \
         untraced, 8 s read, 8 s untraced; medians of {} rounds (`cargo xtask bench \
         --go-only`):\n\n\
         | measure | value |\n| --- | ---: |\n\
         | one read of the profile and goroutines | {:.1} ms |\n\
         | memtrace's CPU while it reads every second | {:.1} % of a core |\n\
         | memtrace's CPU over a whole 10 s run (start, first read, report) | {:.1} % of a core |\n\
         | the program's work, untraced | {:.0} units/s (runs: {}) |\n\
         | the program's work, read every second | {:.0} units/s (runs: {}), {:+.1} % |\n",
        r.buckets,
        r.rounds,
        median(r.read_ms.clone()),
        100.0 * median(r.memtrace_steady_cpu.clone()),
        100.0 * median(r.memtrace_cpu.clone()),
        untraced,
        range(&r.untraced_units),
        traced,
        range(&r.traced_units),
        100.0 * (traced / untraced - 1.0)
    )
}

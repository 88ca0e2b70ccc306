//! The bench's start-up part: how long memtrace takes to start, from its
//! own start (its `--verbose` line), in runs of `memtrace -- /bin/true`
//! (to the command's first instruction) and of `memtrace --pid` on a
//! sleeping process (to its probes in place); and the whole of
//! `memtrace -- /bin/true`, its exit included.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::median;
use crate::cmd;

/// The start-up table goes into docs/performance.md between these lines.
pub(super) const DOCS_BEGIN: &str = "<!-- bench-startup:begin -->";
pub(super) const DOCS_END: &str = "<!-- bench-startup:end -->";

/// Runs of each kind.
const RUNS: usize = 10;

#[derive(Debug, Default, Serialize)]
pub(super) struct StartupResults {
    /// Milliseconds per run: to the command's first instruction, to the
    /// probes in place (`--pid`), and the whole `memtrace -- /bin/true`.
    command_ms: Vec<f64>,
    pid_ms: Vec<f64>,
    whole_ms: Vec<f64>,
}

/// The milliseconds in memtrace's `... N ms after memtrace started` line.
fn started_ms(stderr: &str) -> Result<f64> {
    stderr
        .lines()
        .find_map(|l| {
            let (head, _) = l.split_once(" ms after memtrace started")?;
            head.rsplit(' ').next()?.parse().ok()
        })
        .with_context(|| format!("no start-up line in memtrace's output:\n{stderr}"))
}

pub(super) fn run(memtrace: &Path) -> Result<StartupResults> {
    cmd::step(&format!(
        "start-up: {RUNS} runs each of `memtrace -- /bin/true` and `memtrace --pid`"
    ));
    let mut r = StartupResults::default();
    for _ in 0..RUNS {
        let began = Instant::now();
        let out = Command::new(memtrace)
            .args(["--verbose", "--", "/bin/true"])
            .stdout(Stdio::null())
            .output()
            .context("running memtrace -- /bin/true")?;
        r.whole_ms.push(began.elapsed().as_secs_f64() * 1e3);
        if !out.status.success() {
            bail!(
                "memtrace -- /bin/true: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        r.command_ms
            .push(started_ms(&String::from_utf8_lossy(&out.stderr))?);
    }
    let mut sleeper = Command::new("sleep")
        .arg("600")
        .spawn()
        .context("starting sleep")?;
    let pid = sleeper.id().to_string();
    let traced: Result<()> = (|| {
        for _ in 0..RUNS {
            let out = Command::new(memtrace)
                .args(["--verbose", "--duration", "100ms", "--pid", &pid])
                .stdout(Stdio::null())
                .output()
                .context("running memtrace --pid")?;
            if !out.status.success() {
                bail!("memtrace --pid: {}", String::from_utf8_lossy(&out.stderr));
            }
            r.pid_ms
                .push(started_ms(&String::from_utf8_lossy(&out.stderr))?);
        }
        Ok(())
    })();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    traced?;
    Ok(r)
}

pub(super) fn render_markdown(r: &StartupResults) -> String {
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    format!(
        "Start-up, from memtrace's own start (its `--verbose` line); medians (and the slowest) \
         of {RUNS} runs each (`cargo xtask bench --startup-only`):\n\n\
         | measure | median | slowest |\n| --- | ---: | ---: |\n\
         | `memtrace -- /bin/true`: to the command's first instruction | {:.0} ms | {:.0} ms |\n\
         | `memtrace --pid` of a sleeping process: to its probes in place | {:.0} ms | {:.0} ms |\n\
         | `memtrace -- /bin/true`, whole (its report and exit included) | {:.0} ms | {:.0} ms |\n",
        median(r.command_ms.clone()),
        max(&r.command_ms),
        median(r.pid_ms.clone()),
        max(&r.pid_ms),
        median(r.whole_ms.clone()),
        max(&r.whole_ms),
    )
}

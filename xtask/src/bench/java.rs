//! The bench's Java part: what tracing a JVM costs it, on
//! tests/workloads/java_leaks/Leaks.java's bounded LRU cache doing as many
//! requests as it can (OpenJDK 17, a 256 MiB heap with a 16 MiB young
//! generation). Each round is one JVM, measured by its own count of
//! requests over 6 s windows after a warm-up: untraced, with `memtrace
//! --pid` (its probes, and its JFR recording dumped and read every second),
//! with `memtrace --pid --no-runtime-attach` (probes only), and untraced
//! again. Reported: medians of the rounds, and one dump's read (the
//! report's `java.read_ms`) and the JVM's walk for paths to GC roots
//! (`java.walk_ms`, which stops it).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::median;
use crate::cmd;

/// The Java table goes into docs/performance.md between these two lines.
pub(super) const DOCS_BEGIN: &str = "<!-- bench-java:begin -->";
pub(super) const DOCS_END: &str = "<!-- bench-java:end -->";

const JDK: &str = "/usr/lib/jvm/java-17-openjdk-amd64";
/// Seconds per measure, and of the warm-up.
const MEASURE_SECS: u64 = 6;
const WARM_SECS: u64 = 4;

#[derive(Debug, Default, Serialize)]
pub(super) struct JavaResults {
    rounds: u32,
    /// Requests a second, per round.
    untraced: Vec<f64>,
    traced: Vec<f64>,
    probes_only: Vec<f64>,
    /// One dump's read (ms), the JVM's walk (ms) and reads, per traced run.
    read_ms: Vec<f64>,
    walk_ms: Vec<f64>,
    reads: Vec<u64>,
}

/// The JVM, running, and its "at S s: N" lines.
struct Jvm {
    child: Child,
    counts: Receiver<(f64, u64)>,
}

impl Jvm {
    fn start(classes: &Path) -> Result<Jvm> {
        let mut child = Command::new(Path::new(JDK).join("bin/java"))
            .args(["-Xmx256m", "-Xmn16m", "-cp"])
            .arg(classes)
            .args(["Leaks", "lru", "max"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting java")?;
        let out = BufReader::new(child.stdout.take().context("no stdout")?);
        let (tx, counts) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let parsed = line.strip_prefix("at ").and_then(|rest| {
                    let (secs, n) = rest.split_once(" s: ")?;
                    Some((secs.parse().ok()?, n.trim().parse().ok()?))
                });
                if let Some(p) = parsed {
                    if tx.send(p).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Jvm { child, counts })
    }

    /// The latest count line.
    fn latest(&self, wait: Duration) -> Result<(f64, u64)> {
        let mut last = self
            .counts
            .recv_timeout(wait)
            .context("the JVM printed no count")?;
        while let Ok(p) = self.counts.try_recv() {
            last = p;
        }
        Ok(last)
    }

    /// Requests a second over the next `seconds`, by its own counts.
    fn rate(&self, seconds: u64) -> Result<f64> {
        let (t0, n0) = self.latest(Duration::from_secs(5))?;
        std::thread::sleep(Duration::from_secs(seconds));
        let (t1, n1) = self.latest(Duration::from_secs(5))?;
        if t1 <= t0 {
            bail!("no progress");
        }
        Ok((n1 - n0) as f64 / (t1 - t0))
    }
}

impl Drop for Jvm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Leaks.java compiled into `scratch`.
fn compile(scratch: &Path) -> Result<PathBuf> {
    let dir = scratch.join("java-bench");
    std::fs::create_dir_all(&dir)?;
    let source = cmd::workspace_root().join("tests/workloads/java_leaks/Leaks.java");
    let status = Command::new(Path::new(JDK).join("bin/javac"))
        .arg("-d")
        .arg(&dir)
        .arg(source)
        .status()
        .context("javac")?;
    if !status.success() {
        bail!("javac failed");
    }
    Ok(dir)
}

pub(super) fn run(memtrace: &Path, scratch: &Path, rounds: u32) -> Result<JavaResults> {
    cmd::step("Java: a JVM's requests a second, untraced and traced");
    let classes = compile(scratch)?;
    let report = scratch.join("java-bench.json");
    let mut r = JavaResults {
        rounds,
        ..JavaResults::default()
    };
    for round in 1..=rounds {
        let jvm = Jvm::start(&classes)?;
        let pid = jvm.child.id();
        let warm_until = Instant::now() + Duration::from_secs(WARM_SECS);
        jvm.latest(Duration::from_secs(10))?;
        std::thread::sleep(warm_until.saturating_duration_since(Instant::now()));
        let before = jvm.rate(MEASURE_SECS)?;
        let tracer = super::node::trace(memtrace, pid, &[], &report, "JFR recording")?;
        let traced = jvm.rate(MEASURE_SECS)?;
        super::node::stop(tracer)?;
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
        let java = &json["targets"][0]["java"];
        r.read_ms
            .push(java["read_ms"].as_f64().context("no java.read_ms")?);
        r.walk_ms.push(java["walk_ms"].as_f64().unwrap_or(0.0));
        r.reads.push(java["reads"].as_u64().unwrap_or(0));
        let tracer = super::node::trace(
            memtrace,
            pid,
            &["--no-runtime-attach"],
            &report,
            "memtrace: tracing",
        )?;
        let probes = jvm.rate(MEASURE_SECS)?;
        super::node::stop(tracer)?;
        let after = jvm.rate(MEASURE_SECS)?;
        r.untraced.push((before + after) / 2.0);
        r.traced.push(traced);
        r.probes_only.push(probes);
        eprintln!(
            "    round {round}/{rounds}: {before:.0} then {after:.0} requests/s untraced, \
             {traced:.0} traced (a dump read in {:.1} ms, the walk {:.1} ms), {probes:.0} probes \
             only",
            r.read_ms.last().unwrap(),
            r.walk_ms.last().unwrap()
        );
    }
    Ok(r)
}

/// The Java part as Markdown.
pub(super) fn render_markdown(r: &JavaResults) -> String {
    let untraced = median(r.untraced.clone());
    let traced = median(r.traced.clone());
    let probes = median(r.probes_only.clone());
    let pct = |v: f64| 100.0 * (v / untraced - 1.0);
    format!(
        "Java (tests/workloads/java_leaks/Leaks.java `lru max`: a 10,000-entry LRU cache and \
         ~8 KiB of garbage in 64 small arrays a request, as many requests as it does; OpenJDK 17, `-Xmx256m \
         -Xmn16m`); each round one JVM, {MEASURE_SECS} s per measure after a {WARM_SECS} s \
         warm-up; medians of {} rounds (`cargo xtask bench --java-only`):\n\n\
         | measure | value |\n| --- | ---: |\n\
         | requests a second, untraced | {untraced:.0} |\n\
         | requests a second, `memtrace --pid` (probes, and the JFR recording dumped and read \
         every second) | {traced:.0} ({:+.1} %) |\n\
         | requests a second, `memtrace --pid --no-runtime-attach` (probes only) | {probes:.0} \
         ({:+.1} %) |\n\
         | one dump read (the command, the file, parsing) | {:.1} ms |\n\
         | the JVM's walk for paths to GC roots at each dump (it stops the JVM) | {:.1} ms |\n",
        r.rounds,
        pct(traced),
        pct(probes),
        median(r.read_ms.clone()),
        median(r.walk_ms.clone()),
    )
}

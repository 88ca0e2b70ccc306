//! The bench's Node part: what tracing a Node HTTP server costs it, on
//! tests/workloads/node_leaks/stable_server.js under as much load as it
//! answers (tests/workloads/node_leaks/load.js: 8 requests in flight, from
//! another process). Each round is one server: requests a second untraced,
//! with `memtrace --pid` (its probes, and V8 sampling the JavaScript heap
//! at the default interval, read every second), with `memtrace --pid
//! --no-runtime-attach` (probes only), and untraced again; 6 s each, after
//! a warm-up. Reported: medians of the rounds, and one profile read's time
//! (the report's `node.read_ms`: V8's collection first, then the profile).

use std::{
    io::{BufRead, BufReader, Read},
    path::Path,
    process::{Child, Command, Stdio},
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::median;
use crate::cmd;

/// The Node table goes into docs/performance.md between these two lines.
pub(super) const DOCS_BEGIN: &str = "<!-- bench-node:begin -->";
pub(super) const DOCS_END: &str = "<!-- bench-node:end -->";

const NODE: &str = "/usr/bin/node";
/// Seconds of load per measure, and of the warm-up.
const MEASURE_SECS: u32 = 6;
const WARM_SECS: u32 = 3;

#[derive(Debug, Default, Serialize)]
pub(super) struct NodeResults {
    rounds: u32,
    /// Requests a second, per round.
    untraced: Vec<f64>,
    traced: Vec<f64>,
    probes_only: Vec<f64>,
    /// One profile read (ms) and reads, per traced run.
    read_ms: Vec<f64>,
    reads: Vec<u64>,
}

/// The server, running.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Result<Server> {
        let script = cmd::workspace_root().join("tests/workloads/node_leaks/stable_server.js");
        let mut child = Command::new(NODE)
            .arg("--inspect-port=0")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting node")?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?);
        let mut port = None;
        for _ in 0..2 {
            let mut line = String::new();
            lines.read_line(&mut line)?;
            port = port.or(line
                .trim()
                .strip_prefix("listening ")
                .and_then(|p| p.parse().ok()));
        }
        let port = port.context("stable_server printed no port")?;
        // Its later lines (none expected) are not read.
        std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
        Ok(Server { child, port })
    }

    /// Requests a second answered under `load.js PORT max SECONDS`.
    fn load(&self, seconds: u32) -> Result<f64> {
        let script = cmd::workspace_root().join("tests/workloads/node_leaks/load.js");
        let out = Command::new(NODE)
            .arg(script)
            .args([self.port.to_string(), "max".into(), seconds.to_string()])
            .output()
            .context("running load.js")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("requests "))
            .with_context(|| format!("load.js printed {text:?}"))?;
        let mut words = line.split_whitespace();
        let requests: f64 = words
            .next()
            .and_then(|n| n.parse().ok())
            .context("a count")?;
        let secs: f64 = words
            .nth(1)
            .and_then(|n| n.parse().ok())
            .context("a time")?;
        Ok(requests / secs)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `memtrace --pid` started on the server; waits for the stderr line that
/// says it is ready (`ready`), then drains the rest.
pub(super) fn trace(
    memtrace: &Path,
    pid: u32,
    extra: &[&str],
    report: &Path,
    ready: &str,
) -> Result<Child> {
    let mut child = Command::new(memtrace)
        .args(["--pid", &pid.to_string(), "--no-live", "--interval", "1s"])
        .args(["--duration", "60s", "--format", "json", "-o"])
        .arg(report)
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting memtrace")?;
    let mut stderr = BufReader::new(child.stderr.take().context("no stderr")?);
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line)? == 0 {
            bail!("memtrace ended before {ready:?}:\n{seen}");
        }
        seen.push_str(&line);
        if line.contains(ready) {
            break;
        }
    }
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = stderr.read_to_end(&mut rest);
    });
    Ok(child)
}

/// Ends memtrace with Ctrl-C (its report written).
pub(super) fn stop(mut child: Child) -> Result<()> {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait()?;
    if !status.success() {
        bail!("memtrace failed ({status})");
    }
    Ok(())
}

pub(super) fn run(memtrace: &Path, scratch: &Path, rounds: u32) -> Result<NodeResults> {
    cmd::step("Node: an HTTP server's requests a second, untraced and traced");
    std::fs::create_dir_all(scratch)?;
    let report = scratch.join("node-bench.json");
    let mut r = NodeResults {
        rounds,
        ..NodeResults::default()
    };
    for round in 1..=rounds {
        let server = Server::start()?;
        let pid = server.child.id();
        server.load(WARM_SECS)?;
        let before = server.load(MEASURE_SECS)?;
        let tracer = trace(memtrace, pid, &[], &report, "inspector opened")?;
        let traced = server.load(MEASURE_SECS)?;
        stop(tracer)?;
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report)?)?;
        let node = &json["targets"][0]["node"];
        r.read_ms
            .push(node["read_ms"].as_f64().context("no node.read_ms")?);
        r.reads.push(node["reads"].as_u64().unwrap_or(0));
        let tracer = trace(
            memtrace,
            pid,
            &["--no-runtime-attach"],
            &report,
            "memtrace: tracing",
        )?;
        // (Its probes are in once it says it traces.)
        let probes = server.load(MEASURE_SECS)?;
        stop(tracer)?;
        let after = server.load(MEASURE_SECS)?;
        r.untraced.push((before + after) / 2.0);
        r.traced.push(traced);
        r.probes_only.push(probes);
        eprintln!(
            "    round {round}/{rounds}: {before:.0} then {after:.0} requests/s untraced, \
             {traced:.0} traced (one profile read {:.1} ms), {probes:.0} probes only",
            r.read_ms.last().unwrap()
        );
    }
    Ok(r)
}

/// The Node part as Markdown.
pub(super) fn render_markdown(r: &NodeResults) -> String {
    let untraced = median(r.untraced.clone());
    let traced = median(r.traced.clone());
    let probes = median(r.probes_only.clone());
    let pct = |v: f64| 100.0 * (v / untraced - 1.0);
    format!(
        "Node (tests/workloads/node_leaks/stable_server.js, Node 20, under as much load as it \
         answers from another process, 8 requests in flight); each round one server, {MEASURE_SECS} s \
         per measure after a {WARM_SECS} s warm-up; medians of {} rounds (`cargo xtask bench \
         --node-only`):\n\n\
         | measure | value |\n| --- | ---: |\n\
         | requests a second, untraced | {untraced:.0} |\n\
         | requests a second, `memtrace --pid` (probes, and V8 sampling every 32 KiB read \
         every second) | {traced:.0} ({:+.1} %) |\n\
         | requests a second, `memtrace --pid --no-runtime-attach` (probes only) | {probes:.0} \
         ({:+.1} %) |\n\
         | one read of V8's profile (a full collection first) | {:.1} ms |\n",
        r.rounds,
        pct(traced),
        pct(probes),
        median(r.read_ms.clone()),
    )
}

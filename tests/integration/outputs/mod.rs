//! memtrace's outputs, from real traced workloads:
//! - `report`: the text format (a plain line per interval when piped, then
//!   the report, its header naming the pid), `--output`, an `-o` that
//!   cannot be created failing at once, a closed stdout;
//! - `formats`: several outputs of one run (JSON, SVG flamegraph, folded
//!   stacks, pprof) with formats from the file extensions; the SVG is
//!   well-formed XML naming the leaking function; the folded stacks load in
//!   inferno and in memtrace's own parser, weighed as `--weight` says;
//! - `snapshots`: saved snapshots render and diff offline, without root;
//!   broken snapshot files are one-line errors;
//! - `live`: the live view on a terminal, and its plain lines when piped;
//! - `pprof`: pprof profiles read by the real `go tool pprof`;
//! - `html`: the HTML report and diff in a headless browser.
//!
//! Workload (of all but `live`, and `pprof`'s pprof_mix): leak_signal
//! (`leak_signal COUNT SIZE INTERVAL_US`): after SIGUSR1, leak_fixed()
//! mallocs SIZE bytes COUNT times, never freed.

mod formats;
pub(crate) mod html;
mod live;
mod pprof;
mod report;
mod snapshots;

use std::path::Path;

use std::path::PathBuf;

use memtrace_integration::{leak_signal, path_str, scratch_dir, secs, trace_until_done, RunOutput};

/// leak_signal: bytes per leak_fixed() call.
const LEAK_SIZE: u64 = 4096;

/// Traces leak_signal leaking `count` blocks, with `args`; returns the run
/// and the workload's pid.
fn traced_leak(count: u64, args: &[&str]) -> (RunOutput, u32) {
    let mut workload = leak_signal(count, LEAK_SIZE, 10_000);
    let pid = workload.pid();
    let mut all = vec!["--interval", "1s", "--duration", "3s"];
    all.extend_from_slice(args);
    let tracer = trace_until_done(&mut workload, &all);
    let out = tracer.finish(secs(60));
    out.assert_success();
    (out, pid)
}

/// Two snapshots of leak_signal in a scratch directory named for `tag`:
/// before.json (20 blocks leaked) and after.json (60). Returns the
/// directory and the two paths.
fn two_snapshots(tag: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = scratch_dir(tag);
    let (before, after) = (dir.join("before.json"), dir.join("after.json"));
    traced_leak(20, &["-o", path_str(&before)]);
    traced_leak(60, &["-o", path_str(&after)]);
    (dir, before, after)
}

/// Parses an SVG as XML (flamegraphs carry the SVG 1.1 DOCTYPE).
fn parse_svg(text: &str) -> Result<roxmltree::Document<'_>, roxmltree::Error> {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..roxmltree::ParsingOptions::default()
    };
    roxmltree::Document::parse_with_options(text, options)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

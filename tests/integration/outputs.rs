//! Incident outputs from real traced workloads: several outputs of one run
//! (JSON, SVG flamegraph, folded stacks, pprof) with formats from the file
//! extensions; the SVG is well-formed XML naming the leaking function; the
//! folded stacks load in inferno and in memtrace's own parser (`memtrace
//! diff` reads folded files); saved snapshots render and diff offline,
//! without root.
//!
//! Workload: leak_signal (`leak_signal COUNT SIZE INTERVAL_US`): after
//! SIGUSR1, leak_fixed() mallocs SIZE bytes COUNT times, never freed.

use std::path::Path;
use std::process::Command;

use memtrace_integration::{
    leak_signal, memtrace_bin, open_dir, path_str, scratch_dir, secs, trace_until_done, RunOutput,
    NOBODY,
};

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

/// Folded lines as (frames outermost first, weight).
fn folded_lines(text: &str) -> Vec<(Vec<String>, u64)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (stack, weight) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("folded line without a weight: {l:?}"));
            let weight = weight
                .parse()
                .unwrap_or_else(|_| panic!("folded weight is not an integer: {l:?}"));
            (stack.split(';').map(str::to_string).collect(), weight)
        })
        .collect()
}

/// Runs memtrace as user nobody (no privileges at all).
fn memtrace_unprivileged(args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "--",
        ])
        .arg(memtrace_bin())
        .args(args)
        .output()
        .expect("setpriv (util-linux) runs")
}

#[test]
fn several_outputs_from_one_run() {
    let dir = scratch_dir("outputs");
    let file = |name: &str| dir.join(name);
    let (json, svg, folded, txt, pprof) = (
        file("leak.json"),
        file("leak.svg"),
        file("leak.folded"),
        file("leak.txt"),
        file("leak.pb.gz"),
    );
    let (out, pid) = traced_leak(
        60,
        &[
            "-o",
            path_str(&json),
            "-o",
            path_str(&svg),
            "-o",
            path_str(&folded),
            "-o",
            path_str(&txt),
            "-o",
            path_str(&pprof),
        ],
    );
    let ctx = out.describe();

    // JSON: the complete snapshot.
    let report = out.report_from(&read(&json));
    let leak = report.stack_of("leak_fixed");
    assert_eq!(
        (leak.outstanding_bytes, leak.outstanding_allocations),
        (60 * LEAK_SIZE, 60),
        "leak_fixed in leak.json\n{ctx}"
    );

    // SVG: well-formed XML, an <svg> document whose frames name the leak,
    // and whose title names the target.
    let svg_text = read(&svg);
    let doc = parse_svg(&svg_text)
        .unwrap_or_else(|e| panic!("leak.svg is not well-formed XML: {e}\n{ctx}"));
    assert_eq!(doc.root_element().tag_name().name(), "svg", "leak.svg root");
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
    assert!(
        texts.iter().any(|t| t.contains("leak_fixed")),
        "leak.svg has no frame naming leak_fixed\n{ctx}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.contains("leak_signal") && t.contains(&pid.to_string())),
        "leak.svg's title should name the target leak_signal (pid {pid})\n{ctx}"
    );

    // Folded: one line per stack, outermost first, weight = bytes; the
    // .txt output is the same format.
    let folded_text = read(&folded);
    assert_eq!(read(&txt), folded_text, "leak.txt and leak.folded differ");
    let lines = folded_lines(&folded_text);
    let leak_line = lines
        .iter()
        .find(|(frames, _)| frames.last().map(String::as_str) == Some("leak_fixed"))
        .unwrap_or_else(|| panic!("no folded stack ends in leak_fixed:\n{folded_text}"));
    assert_eq!(leak_line.1, 60 * LEAK_SIZE, "leak_fixed's folded weight");
    let n = leak_line.0.len();
    assert!(
        n >= 3 && leak_line.0[n - 2] == "main" && leak_line.0[0].contains(&pid.to_string()),
        "leak_fixed's folded stack should be <process (pid {pid})>;…;main;leak_fixed: {:?}",
        leak_line.0
    );

    // The folded file loads in inferno, and gives a flamegraph of it.
    let mut options = inferno::flamegraph::Options::default();
    let mut flame = Vec::new();
    inferno::flamegraph::from_lines(&mut options, folded_text.lines(), &mut flame)
        .unwrap_or_else(|e| panic!("inferno rejects leak.folded: {e}\n{folded_text}"));
    assert!(String::from_utf8_lossy(&flame).contains("leak_fixed"));

    // ... and in memtrace's own parser: a folded file diffed against itself
    // changes nothing.
    let same = Command::new(memtrace_bin())
        .args([
            "diff",
            path_str(&folded),
            path_str(&folded),
            "--format",
            "json",
        ])
        .output()
        .expect("memtrace diff runs");
    assert!(
        same.status.success(),
        "memtrace diff of leak.folded with itself failed: {}",
        String::from_utf8_lossy(&same.stderr)
    );
    let diff: serde_json::Value =
        serde_json::from_slice(&same.stdout).expect("memtrace diff --format json is JSON");
    let stacks = diff["stacks"].as_array().expect("diff.stacks");
    assert_eq!(
        stacks.len(),
        lines.len(),
        "one diff entry per folded stack: {diff}"
    );
    assert!(
        stacks.iter().all(|s| s["status"] == "same"),
        "a file diffed with itself: every stack the same: {diff}"
    );

    // pprof: gzip (its contents are checked with go tool pprof in pprof.rs).
    let gz = std::fs::read(&pprof).expect("leak.pb.gz");
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "leak.pb.gz is gzip");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn weights_of_folded_stacks() {
    let dir = scratch_dir("weights");
    let count = dir.join("count.folded");
    let allocated = dir.join("allocated.folded");
    let json = dir.join("w.json");
    let (out, _) = traced_leak(30, &["-o", path_str(&json)]);
    out.assert_success();
    for (weight, path, want) in [
        ("count", &count, 30),
        ("allocated", &allocated, 30 * LEAK_SIZE),
    ] {
        let run = Command::new(memtrace_bin())
            .args([
                "report",
                path_str(&json),
                "--weight",
                weight,
                "-o",
                path_str(path),
            ])
            .output()
            .expect("memtrace report runs");
        assert!(
            run.status.success(),
            "memtrace report --weight {weight}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let lines = folded_lines(&read(path));
        let leak = lines
            .iter()
            .find(|(f, _)| f.last().map(String::as_str) == Some("leak_fixed"))
            .expect("a leak_fixed stack");
        assert_eq!(leak.1, want, "--weight {weight}: leak_fixed's weight");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn snapshots_render_and_diff_without_root() {
    let dir = scratch_dir("snapshots");
    let (before, after) = (dir.join("before.json"), dir.join("after.json"));
    traced_leak(20, &["-o", path_str(&before)]);
    traced_leak(60, &["-o", path_str(&after)]);
    let open = open_dir(&dir);

    // The text report again, from the snapshot.
    let text = memtrace_unprivileged(&["report", path_str(&after)]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.status.success() && stdout.starts_with("memtrace report:"),
        "memtrace report as nobody: {}\n{stdout}",
        String::from_utf8_lossy(&text.stderr)
    );
    assert!(stdout.contains("leak_fixed"), "{stdout}");

    // Every other format, to files.
    for name in ["after.svg", "after.folded", "after.pb.gz", "again.json"] {
        let path = open.join(name);
        let run = memtrace_unprivileged(&["report", path_str(&after), "-o", path_str(&path)]);
        assert!(
            run.status.success(),
            "memtrace report -o {name} as nobody: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(
            std::fs::metadata(&path)
                .map(|m| m.len() > 0)
                .unwrap_or(false),
            "{name} is empty"
        );
    }
    // The JSON written again is the same report.
    let again: serde_json::Value =
        serde_json::from_str(&read(&open.join("again.json"))).expect("again.json is JSON");
    let original: serde_json::Value = serde_json::from_str(&read(&after)).expect("JSON");
    assert_eq!(
        again, original,
        "a snapshot rendered as JSON is the same snapshot"
    );

    // The diff: leak_fixed grew by 40 blocks between the two runs (whose
    // pids differ).
    let diff = memtrace_unprivileged(&["diff", path_str(&before), path_str(&after)]);
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(
        diff.status.success(),
        "memtrace diff as nobody: {}",
        String::from_utf8_lossy(&diff.stderr)
    );
    assert!(
        text.contains("leak_fixed"),
        "diff text names leak_fixed:\n{text}"
    );
    assert!(
        text.contains("+160.0 KiB"),
        "diff text shows leak_fixed's growth of 40 * 4096 bytes (+160.0 KiB):\n{text}"
    );
    let diff_svg = open.join("diff.svg");
    let run = memtrace_unprivileged(&[
        "diff",
        path_str(&before),
        path_str(&after),
        "-o",
        path_str(&diff_svg),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let svg_text = read(&diff_svg);
    parse_svg(&svg_text).expect("diff.svg is well-formed XML");
    assert!(svg_text.contains("leak_fixed"), "diff.svg names leak_fixed");
    let _ = std::fs::remove_dir_all(&dir);
}

//! Several outputs of one run (JSON, SVG flamegraph, folded stacks, the
//! text report, pprof), formats from the file extensions (`.txt` is the
//! text report, folded stacks are `.folded`): the SVG is well-formed XML naming the
//! leaking function, the folded stacks load in inferno and in memtrace's
//! own parser (`memtrace diff` reads folded files), and `--weight` sets
//! what a folded stack weighs.

use std::process::Command;

use memtrace_integration::{memtrace_bin, path_str, scratch_dir};

use super::{parse_svg, read, traced_leak, LEAK_SIZE};

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

    // .txt: the text report (after the node's OOM kills, when another
    // test's process was killed meanwhile: every kill is reported).
    let text = read(&txt);
    assert!(
        text.lines().any(|l| l.starts_with("memtrace report:")) && text.contains("leak_fixed"),
        "leak.txt should be the text report, naming leak_fixed:\n{text}"
    );

    // Folded: one line per stack, outermost first, weight = bytes.
    let folded_text = read(&folded);
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

    // pprof: gzip (its contents are checked with go tool pprof in outputs::pprof).
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

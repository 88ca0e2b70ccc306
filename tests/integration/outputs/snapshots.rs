//! Saved snapshots, offline: `memtrace report` renders one in every format
//! and `memtrace diff` compares two, as user nobody (no privileges at all);
//! a snapshot file that is missing, not JSON, of another version or cut
//! short is a one-line error (exit code 1).

use std::process::Command;

use memtrace_integration::{
    memtrace_bin, open_dir, path_str, run_memtrace, scratch_dir, secs, NOBODY,
};

use super::{parse_svg, read, two_snapshots};

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
fn snapshots_render_and_diff_without_root() {
    let (dir, before, after) = two_snapshots("snapshots");
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

#[test]
fn bad_snapshot_files_are_one_line_errors() {
    let dir = scratch_dir("bad-snapshots");
    let files = [
        ("missing.json", None),
        ("passwd.json", Some("root:x:0:0:root:/root:/bin/bash\n")),
        ("other.json", Some("{\"version\": 1, \"stacks\": []}")),
        ("cut.json", Some("{\"version\": 2, \"stacks\": [")),
        ("types.json", Some("{\"version\": 2, \"stacks\": 7}")),
    ];
    for (name, content) in files {
        let path = dir.join(name);
        if let Some(text) = content {
            std::fs::write(&path, text).expect("write a snapshot");
        }
        let arg = path.to_str().expect("utf-8 scratch path");
        let out = run_memtrace(&["report", arg], secs(30));
        out.one_line_error(Some(1), &[arg]);
        let out = run_memtrace(&["diff", arg, arg], secs(30));
        out.one_line_error(Some(1), &[arg]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

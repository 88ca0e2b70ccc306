//! The command line: an invalid value of any option — tracing options,
//! process selections (which exclude a command after `--`), `memtrace
//! agent`'s options — is a one-line `memtrace: error:` usage error (exit
//! code 2) naming the option and the value; but a bad token, a secret, is
//! refused without being echoed. A `--format` contradicting an `--output`'s
//! extension is one too.

use memtrace_integration::{path_str, run_memtrace, scratch_dir, secs};

/// Invalid values of every option, each given as `OPTION=VALUE`.
const BAD_VALUES: &[(&str, &[&str])] = &[
    ("--pid", &["abc", "0", "-3", "99999999999", ""]),
    ("--duration", &["soon", "0s", "10", "-5s", "500000000000y"]),
    ("--interval", &["0s", "often", "2y"]),
    ("--top", &["0", "-1", "ten"]),
    ("--format", &["xml", ""]),
    ("--sort", &["size"]),
    ("--weight", &["bytes"]),
    ("--min-age", &["0s", "old"]),
    (
        "--rss-alert",
        &["50MiB", "fast/h", "0/h", "5XB/h", "1e3MiB/h", "50MiB/day"],
    ),
    ("--sample-bytes", &["0", "2GiB", "lots", "-1"]),
    ("--max-live", &["10", "99999999", "many"]),
    ("--max-stacks", &["1", "2000000"]),
    ("--symbol-prefix", &["my-", "", "a b"]),
    ("--allocator-lib", &[""]),
    ("--output", &["report.unknown", ""]),
    ("--no-live", &["yes"]),
    ("--verbose", &["2"]),
];

/// Options that exclude a command after `--` (they select processes).
const BAD_SELECTIONS: &[(&str, &[&str])] = &[
    ("--comm", &["", "sixteen-chars-xx"]),
    ("--cgroup", &["", "/kubepods/../etc"]),
    ("--container", &["zz", "abc!", "x://"]),
    ("--all", &["yes"]),
    ("--oom-only", &["1"]),
];

/// `memtrace agent`'s options.
const BAD_AGENT_VALUES: &[(&str, &[&str])] = &[
    ("--listen", &["nope", "localhost", "0.0.0.0:9464", "[::]:1"]),
    ("--reports-dir", &[""]),
    ("--scan-interval", &["0s", "2y"]),
    ("--alert-growth", &["fast", "0/h"]),
    ("--min-observation", &["never"]),
    ("--trace-window", &["0s", "500000000000y"]),
    ("--trace-interval", &["0s"]),
    ("--max-traces", &["0", "17"]),
    ("--retrace-after", &["later"]),
    ("--max-reports", &["0", "-2"]),
    ("--max-report-bytes", &["0", "big"]),
    ("--comm", &[""]),
];

#[test]
fn bad_option_values_are_usage_errors() {
    // A valid target (or a short --duration), so that the bad value is the
    // only problem and a memtrace that accepted it would end on its own.
    let runs = [
        (BAD_VALUES, &[][..], &["--", "true"][..]),
        (BAD_SELECTIONS, &[], &["--duration", "1s"]),
        (BAD_AGENT_VALUES, &["agent"], &[]),
    ];
    for (table, before, after) in runs {
        for &(option, values) in table {
            for value in values {
                let arg = format!("{option}={value}");
                let args: Vec<&str> = before
                    .iter()
                    .copied()
                    .chain([arg.as_str()])
                    .chain(after.iter().copied())
                    .collect();
                let out = run_memtrace(&args, secs(30));
                out.one_line_error(Some(2), &[option, value]);
            }
        }
    }
    // A token is a secret: a bad one is refused without being echoed.
    let out = run_memtrace(&["agent", "--token", "short secret"], secs(30));
    let line = out.one_line_error(Some(2), &["--token"]);
    assert!(!line.contains("short secret"), "{line}");
}

/// A `--format` that contradicts an output's extension is a usage error,
/// not a report of one format under the other's name.
#[test]
fn format_contradicting_an_extension_is_a_usage_error() {
    let dir = scratch_dir("contradicting-format");
    for (format, name, implied) in [
        ("text", "a.json", "json"),
        ("json", "a.svg", "svg"),
        ("folded", "a.txt", "text"),
    ] {
        let output = dir.join(name);
        let output = path_str(&output);
        let out = run_memtrace(&["--format", format, "-o", output, "--", "true"], secs(30));
        out.one_line_error(
            Some(2),
            &[&format!(
                "--format {format} contradicts --output {output} (a {implied} file)"
            )],
        );
        assert!(
            !std::path::Path::new(output).exists(),
            "{output} must not be written"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

//! The kernel features memtrace finds (its `--verbose` line `kernel R:
//! uprobe_session yes, group_dead no, …`) are those docs/kernels.md's table
//! gives for this kernel: its column where the table has one (6.1, 6.18:
//! the kernels `cargo xtask test` and `--kernel 6.1` run on), else the
//! features whose "since" version decides.

use memtrace_integration::{run_memtrace, secs, workspace_root};

/// One row of the table: feature, since (major, minor), (column, value).
struct Row {
    feature: String,
    since: Option<(u32, u32)>,
    columns: Vec<(String, bool)>,
}

/// (major, minor) of "6.1", "6.1.0-50-amd64", "6.18.44-fc".
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

/// The feature table of docs/kernels.md: the one whose header starts with
/// `| feature |`; its kernel columns are those named by a version.
fn table() -> Vec<Row> {
    let path = workspace_root().join("docs/kernels.md");
    let text = std::fs::read_to_string(&path).expect("reading docs/kernels.md");
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let mut lines = text.lines().skip_while(|l| !l.starts_with("| feature |"));
    let header = cells(
        lines
            .next()
            .expect("docs/kernels.md has no `| feature |` table"),
    );
    let since = header
        .iter()
        .position(|h| h == "since")
        .expect("a since column");
    let kernels: Vec<(usize, String)> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| major_minor(h).is_some())
        .map(|(i, h)| (i, h.clone()))
        .collect();
    lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let c = cells(l);
            Row {
                feature: c[0].trim_matches('`').to_string(),
                since: major_minor(&c[since]),
                columns: kernels
                    .iter()
                    .map(|(i, k)| (k.clone(), c[*i] == "yes"))
                    .collect(),
            }
        })
        .collect()
}

#[test]
fn the_features_found_are_those_of_the_table() {
    let rows = table();
    assert!(
        rows.len() >= 4,
        "docs/kernels.md's feature table has {} rows",
        rows.len()
    );
    let out = run_memtrace(
        &["--verbose", "--duration", "1s", "--", "/bin/true"],
        secs(60),
    );
    let line = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("memtrace: kernel "))
        .unwrap_or_else(|| panic!("no `kernel` line in --verbose\n{}", out.describe()));
    let (release, features) = line.split_once(": ").expect("`kernel R: features`");
    let kernel = major_minor(release).expect("a kernel release");
    let found = |feature: &str| -> Option<bool> {
        let said = features
            .split(", ")
            .find_map(|f| f.strip_prefix(feature)?.strip_prefix(' '))?;
        Some(said.starts_with("yes"))
    };
    let mut checked = Vec::new();
    for row in &rows {
        let column = row
            .columns
            .iter()
            .find(|(k, _)| major_minor(k) == Some(kernel))
            .map(|(_, v)| *v);
        let want = match (column, row.since) {
            (Some(v), _) => v,
            (None, Some(since)) => kernel >= since,
            (None, None) => continue,
        };
        let got = found(&row.feature)
            .unwrap_or_else(|| panic!("--verbose does not say {}: {line}", row.feature));
        assert_eq!(
            got, want,
            "{} on {release}: docs/kernels.md says {want}, memtrace found {got} ({line})",
            row.feature
        );
        checked.push(&row.feature);
    }
    println!("kernel {release}: {checked:?} as docs/kernels.md says");
}

//! Folded stacks (Brendan Gregg's collapsed format), the input of
//! flamegraph.pl, inferno and speedscope: one line per stack, frames
//! outermost first joined by `;`, a space and the stack's weight. Also the
//! project's own parser of that format (`memtrace diff` accepts folded files).
//!
//! Every stack starts with a root frame naming its process, `comm (pid N)`
//! (`pid N` when the report does not know the process), so several targets
//! stay apart. Stacks whose folded form is the same are merged (their
//! weights summed): heap and mmap stacks through the same functions, and
//! different call sites in the same functions, are one line; the kind and
//! the exact call sites are in the text, JSON and pprof reports.

use std::collections::BTreeMap;

use anyhow::bail;

use crate::model::{frame_name, weight as weight_of, Report, StackReport, Weight};

/// The frame standing for a stack that was not captured (the root frame
/// alone would make an ambiguous line: `pid 7 4096`).
pub const NO_STACK: &str = "[stack not captured]";

/// The folded text of a report: one line per stack with a non-zero weight,
/// sorted, each ending with a newline.
pub fn render(report: &Report, weight: Weight) -> String {
    stacks(report, weight)
        .into_iter()
        .map(|(frames, w)| format!("{} {w}\n", frames.join(";")))
        .collect()
}

/// The folded stacks of a report as `render` writes them: frames outermost
/// first (root frame included, names sanitized), merged, sorted as the
/// lines are; stacks of weight 0 are left out.
pub fn stacks(report: &Report, weight: Weight) -> Vec<(Vec<String>, u64)> {
    let mut merged: BTreeMap<String, (Vec<String>, u64)> = BTreeMap::new();
    for s in &report.stacks {
        let w = weight_of(s, weight);
        if w == 0 {
            continue;
        }
        let mut frames = vec![root_frame(report, s.pid)];
        frames.extend(frame_names(s));
        let entry = merged.entry(frames.join(";")).or_insert((frames, 0));
        entry.1 = entry.1.saturating_add(w);
    }
    // Sorting by the joined stack sorts the lines: names hold no control
    // characters, so ' ' (before the weight) sorts before any other byte
    // that could follow.
    merged.into_values().collect()
}

/// The root frame naming a stack's process: `comm (pid N)`, else `pid N`.
pub fn root_frame(report: &Report, pid: u32) -> String {
    match report.targets.iter().find(|t| t.pid == pid) {
        Some(t) if !t.comm.is_empty() => sanitize(&format!("{} (pid {pid})", t.comm)),
        _ => format!("pid {pid}"),
    }
}

/// A stack's frame names, outermost first, sanitized; a stack that was not
/// captured is the single frame [`NO_STACK`]. Its last name never ends in
/// ` <digits>`, which readers would take for a second count.
pub fn frame_names(s: &StackReport) -> Vec<String> {
    if s.frames.is_empty() {
        return vec![NO_STACK.to_string()];
    }
    let mut names: Vec<String> = s
        .frames
        .iter()
        .rev()
        .map(|f| sanitize(&frame_name(f)))
        .collect();
    if let Some(last) = names.last_mut() {
        *last = unambiguous_leaf(last);
    }
    names
}

/// A frame name that keeps a folded line parseable: `;` becomes `:`, line
/// breaks are removed, other control characters become spaces, and the
/// ends are trimmed (readers trim lines); an empty name becomes `?`.
pub fn sanitize(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| !matches!(c, '\n' | '\r'))
        .map(|c| match c {
            ';' => ':',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    match clean.trim() {
        "" => "?".to_string(),
        trimmed => trimmed.to_string(),
    }
}

/// `name 12` → `name_12`: a leaf name ending in a space and digits would
/// read as a differential line's first count.
fn unambiguous_leaf(name: &str) -> String {
    match name.rsplit_once(' ') {
        Some((head, tail)) if is_count(tail) => format!("{head}_{tail}"),
        _ => name.to_string(),
    }
}

fn is_count(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Parses folded text: for each line, its frames (outermost first) and its
/// weight. Blank lines and `# ` comments are skipped; a malformed line is an
/// error naming its line number.
pub fn parse(text: &str) -> anyhow::Result<Vec<(Vec<String>, u64)>> {
    let mut stacks = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("# ") {
            continue;
        }
        stacks.push(parse_line(line).map_err(|e| anyhow::anyhow!("line {}: {e}", i + 1))?);
    }
    Ok(stacks)
}

fn parse_line(line: &str) -> anyhow::Result<(Vec<String>, u64)> {
    let Some((stack, count)) = line.rsplit_once(' ') else {
        bail!("no weight after the stack (expected `frame;frame;... <count>`)");
    };
    if !is_count(count) {
        bail!("weight `{count}` is not a whole number");
    }
    let Ok(weight) = count.parse::<u64>() else {
        bail!("weight `{count}` is too large");
    };
    let stack = stack.trim_end();
    if stack
        .rsplit_once(' ')
        .is_some_and(|(_, tail)| is_count(tail))
    {
        bail!("two counts (a differential line?); expected one weight per stack");
    }
    let frames: Vec<String> = stack.split(';').map(str::to_string).collect();
    if frames.iter().any(|f| f.trim().is_empty()) {
        bail!("empty frame name in `{stack}`");
    }
    Ok((frames, weight))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        fixtures::{report, stack, target},
        Frame, StackKind, Verdict,
    };

    fn frame(name: &str) -> Frame {
        Frame {
            address: 0x1000,
            function: Some(name.into()),
            file: None,
            line: None,
            module: None,
            inlined: false,
            language: None,
            column: None,
        }
    }

    /// A fixture stack with the given frames (innermost first).
    fn with_frames(names: &[&str], bytes: u64) -> StackReport {
        let mut s = stack("x", Verdict::Leak, &[0, bytes]);
        s.frames = names.iter().map(|n| frame(n)).collect();
        s
    }

    #[test]
    fn renders_fixtures_outermost_first_with_root() {
        let mut r = report(vec![
            stack("leaky", Verdict::Leak, &[0, 1024, 2048]),
            stack("", Verdict::Plateau, &[0, 5, 5]),
        ]);
        r.targets.push(target(7, "demo_leak"));
        assert_eq!(
            render(&r, Weight::Outstanding),
            "demo_leak (pid 7);[stack not captured] 5\ndemo_leak (pid 7);main;leaky 2048\n"
        );
        // Count: outstanding allocations (3 each in the fixture).
        assert_eq!(
            render(&r, Weight::Count),
            "demo_leak (pid 7);[stack not captured] 3\ndemo_leak (pid 7);main;leaky 3\n"
        );
    }

    #[test]
    fn root_falls_back_to_pid_and_keeps_targets_apart() {
        let mut other = with_frames(&["leaky", "main"], 100);
        other.pid = 8;
        let mut r = report(vec![with_frames(&["leaky", "main"], 10), other]);
        r.targets.push(target(8, "b"));
        assert_eq!(
            render(&r, Weight::Outstanding),
            "b (pid 8);main;leaky 100\npid 7;main;leaky 10\n"
        );
    }

    #[test]
    fn merges_identical_stacks_and_drops_zero_weights() {
        let mut mmap = with_frames(&["leaky", "main"], 30);
        mmap.kind = StackKind::Mmap;
        let mut zero = with_frames(&["other", "main"], 0);
        zero.outstanding_bytes = 0;
        let r = report(vec![with_frames(&["leaky", "main"], 12), mmap, zero]);
        assert_eq!(render(&r, Weight::Outstanding), "pid 7;main;leaky 42\n");
        assert_eq!(render(&report(Vec::new()), Weight::Outstanding), "");
    }

    #[test]
    fn sanitizes_names() {
        assert_eq!(sanitize("a;b"), "a:b");
        assert_eq!(sanitize(" f\n(x)\r\tg "), "f(x) g");
        assert_eq!(sanitize("\n"), "?");
        let r = report(vec![with_frames(
            &[
                "drop_in_place<[u8; 8]>",
                "operator new(unsigned long)",
                "run 2",
            ],
            9,
        )]);
        let text = render(&r, Weight::Outstanding);
        assert_eq!(
            text,
            "pid 7;run 2;operator new(unsigned long);drop_in_place<[u8: 8]> 9\n"
        );
        // A leaf ending in a number would read as a second count.
        let r = report(vec![with_frames(&["thread 2", "main"], 9)]);
        assert_eq!(render(&r, Weight::Outstanding), "pid 7;main;thread_2 9\n");
    }

    #[test]
    fn round_trips() {
        let mut r = report(vec![
            with_frames(&["leaky", "operator new(unsigned long)", "main"], 4096),
            with_frames(&["f;g", "main"], 7),
            stack("", Verdict::Stable, &[1, 1]),
        ]);
        r.targets.push(target(7, "demo leak"));
        let text = render(&r, Weight::Outstanding);
        let parsed = parse(&text).unwrap();
        assert_eq!(parsed, stacks(&r, Weight::Outstanding));
        assert_eq!(
            parsed[2],
            (
                vec![
                    "demo leak (pid 7)".to_string(),
                    "main".into(),
                    "operator new(unsigned long)".into(),
                    "leaky".into()
                ],
                4096
            )
        );
    }

    #[test]
    fn parses_blank_lines_and_comments() {
        let parsed = parse("\n# a comment\n  a;b 3  \n\r\nc 0\n").unwrap();
        assert_eq!(
            parsed,
            vec![
                (vec!["a".to_string(), "b".into()], 3),
                (vec!["c".to_string()], 0)
            ]
        );
    }

    #[test]
    fn rejects_malformed_lines() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert_eq!(
            err("a;b 1\nab\n"),
            "line 2: no weight after the stack (expected `frame;frame;... <count>`)"
        );
        assert_eq!(err("a 1.5"), "line 1: weight `1.5` is not a whole number");
        assert_eq!(err("\n\na -1"), "line 3: weight `-1` is not a whole number");
        assert_eq!(
            err("a 99999999999999999999"),
            "line 1: weight `99999999999999999999` is too large"
        );
        assert_eq!(
            err("a;b 1 2"),
            "line 1: two counts (a differential line?); expected one weight per stack"
        );
        assert_eq!(err("a;;b 1"), "line 1: empty frame name in `a;;b`");
        assert_eq!(
            err(" 5"),
            "line 1: no weight after the stack (expected `frame;frame;... <count>`)"
        );
    }
}

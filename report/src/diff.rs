//! Comparison of two snapshots (JSON reports or folded stacks): stacks are
//! matched by what survives a restart, their kind and frame names (never
//! the pid or addresses), and each match gets its change in outstanding
//! memory and verdict. Renders as text, JSON, a differential flamegraph or
//! an HTML page.
//!
//! On each side, stacks with the same kind and frame names (different
//! processes, different call sites in the same functions) are summed
//! first. A report lists only its top stacks, so a stack outside one of
//! the lists shows as new or gone; the totals are the reports' own (every
//! stack).

use std::{collections::HashMap, fmt::Write};

use serde::Serialize;

use crate::{
    model::{name_of, Report, StackKind, Verdict},
    render::{folded, svg},
    units::bytes,
};

/// Bumped when a field of the JSON diff changes meaning or disappears.
pub const DIFF_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Diff {
    pub version: u32,
    /// Always `memtrace-diff`: tells a diff from a report.
    pub kind: &'static str,
    pub before: DiffSide,
    pub after: DiffSide,
    pub totals: DiffTotals,
    /// Largest growth first, largest shrinkage last.
    pub stacks: Vec<StackDelta>,
}

/// What a side of the comparison was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A JSON report: bytes, allocations and verdicts.
    Report,
    /// Folded stacks: weights taken as bytes, no allocations nor verdicts.
    Folded,
}

#[derive(Debug, Serialize)]
pub struct DiffSide {
    pub source: Source,
    /// The processes traced (for folded stacks: named by their root
    /// frames, when memtrace wrote them).
    pub targets: Vec<DiffTarget>,
    /// None for folded stacks.
    pub duration_secs: Option<f64>,
    /// Stacks the side lists, identical ones summed.
    pub stacks_listed: usize,
    /// Stacks holding memory when it was taken: more than listed when a
    /// report kept only its top stacks.
    pub stacks_holding_memory: u64,
    /// Of them, the ones the side lists, counted before identical ones
    /// are summed (what `stacks_holding_memory` counts too).
    pub stacks_holding_memory_listed: u64,
}

#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct DiffTarget {
    pub pid: u32,
    pub comm: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct DiffTotals {
    pub before: Amount,
    pub after: Amount,
    pub delta_bytes: i64,
    pub delta_allocations: i64,
    pub new: usize,
    pub gone: usize,
    pub grew: usize,
    pub shrank: usize,
    pub same: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Amount {
    pub outstanding_bytes: u64,
    /// 0 for folded stacks.
    pub outstanding_allocations: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Only after.
    New,
    /// Only before.
    Gone,
    Grew,
    Shrank,
    Same,
}

#[derive(Debug, Serialize)]
pub struct StackDelta {
    pub status: Status,
    /// None for folded stacks (which merge the kinds).
    pub kind: Option<StackKind>,
    /// Zero, without verdict, on the side that lacks the stack.
    pub before: StackSide,
    pub after: StackSide,
    pub delta_bytes: i64,
    pub delta_allocations: i64,
    /// Frame names, innermost first (frames[0] called the allocator).
    pub frames: Vec<String>,
    /// `file:line` of frames[0], when known.
    pub location: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StackSide {
    pub outstanding_bytes: u64,
    pub outstanding_allocations: u64,
    pub verdict: Option<Verdict>,
}

/// The diff as one HTML page: what grew, what is new and what is gone,
/// side by side.
pub fn html(d: &Diff, title: &str) -> anyhow::Result<Vec<u8>> {
    crate::render::html::render_other(
        d.kind,
        serde_json::to_value(d)?,
        &format!("memtrace diff: {title}"),
    )
}

/// Compares two JSON reports.
pub fn diff(before: &Report, after: &Report) -> Diff {
    compare(report_side(before), report_side(after))
}

/// Compares two folded files (as `folded::parse` reads them), their
/// weights taken as bytes.
pub fn diff_folded(before: &[(Vec<String>, u64)], after: &[(Vec<String>, u64)]) -> Diff {
    compare(folded_side(before), folded_side(after))
}

/// One side before matching: its description, totals and stacks.
struct Side {
    info: DiffSide,
    total: Amount,
    stacks: Vec<Entry>,
}

/// A stack of one side; `frames` outermost first.
struct Entry {
    kind: Option<StackKind>,
    frames: Vec<String>,
    amount: StackSide,
    location: Option<String>,
}

type Key = (Option<StackKind>, Vec<String>);

fn report_side(r: &Report) -> Side {
    let stacks = r
        .stacks
        .iter()
        .map(|s| Entry {
            kind: Some(s.kind),
            frames: folded::frame_names(s),
            amount: StackSide {
                outstanding_bytes: s.outstanding_bytes,
                outstanding_allocations: s.outstanding_allocations,
                verdict: Some(s.verdict),
            },
            location: s.frames.first().and_then(|f| match (&f.file, f.line) {
                (Some(file), Some(line)) => Some(format!("{file}:{line}")),
                (Some(file), None) => Some(file.clone()),
                _ => None,
            }),
        })
        .collect();
    Side {
        info: DiffSide {
            source: Source::Report,
            targets: r
                .targets
                .iter()
                .map(|t| DiffTarget {
                    pid: t.pid,
                    comm: Some(t.comm.clone()).filter(|c| !c.is_empty()),
                })
                .collect(),
            duration_secs: Some(r.duration_secs),
            stacks_listed: 0,
            stacks_holding_memory: r.totals.stacks_holding_memory,
            stacks_holding_memory_listed: r
                .stacks
                .iter()
                .filter(|s| s.outstanding_bytes > 0)
                .count() as u64,
        },
        total: Amount {
            outstanding_bytes: r.totals.outstanding_bytes,
            outstanding_allocations: r.totals.outstanding_allocations,
        },
        stacks,
    }
}

fn folded_side(stacks: &[(Vec<String>, u64)]) -> Side {
    let mut targets: Vec<DiffTarget> = Vec::new();
    let mut entries = Vec::new();
    let mut total = 0u64;
    for (frames, weight) in stacks {
        total = total.saturating_add(*weight);
        let mut frames = frames.as_slice();
        if let Some(target) = frames.first().and_then(|f| root_target(f)) {
            frames = &frames[1..];
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
        entries.push(Entry {
            kind: None,
            frames: if frames.is_empty() {
                vec![folded::NO_STACK.to_string()]
            } else {
                frames.to_vec()
            },
            amount: StackSide {
                outstanding_bytes: *weight,
                ..StackSide::default()
            },
            location: None,
        });
    }
    targets.sort_by_key(|t| t.pid);
    Side {
        info: DiffSide {
            source: Source::Folded,
            targets,
            duration_secs: None,
            stacks_listed: 0,
            stacks_holding_memory: 0,
            stacks_holding_memory_listed: 0,
        },
        total: Amount {
            outstanding_bytes: total,
            outstanding_allocations: 0,
        },
        stacks: entries,
    }
}

/// The process of a root frame memtrace wrote (`comm (pid N)`, `pid N`).
fn root_target(frame: &str) -> Option<DiffTarget> {
    let pid = |s: &str| {
        s.parse::<u32>()
            .ok()
            .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
    };
    if let Some(n) = frame.strip_prefix("pid ") {
        return pid(n).map(|pid| DiffTarget { pid, comm: None });
    }
    let (comm, rest) = frame.strip_suffix(')')?.rsplit_once(" (pid ")?;
    Some(DiffTarget {
        pid: pid(rest)?,
        comm: Some(comm.to_string()),
    })
}

/// Sums a side's stacks with the same key: bytes and allocations add up,
/// the most severe verdict and the first known location stay.
fn merge(stacks: Vec<Entry>) -> (HashMap<Key, Entry>, Vec<Key>) {
    let mut merged: HashMap<Key, Entry> = HashMap::new();
    let mut order = Vec::new();
    for e in stacks {
        let key = (e.kind, e.frames.clone());
        match merged.get_mut(&key) {
            Some(m) => {
                let (a, b) = (&mut m.amount, e.amount);
                a.outstanding_bytes = a.outstanding_bytes.saturating_add(b.outstanding_bytes);
                a.outstanding_allocations = a
                    .outstanding_allocations
                    .saturating_add(b.outstanding_allocations);
                a.verdict = match (a.verdict, b.verdict) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
                if m.location.is_none() {
                    m.location = e.location;
                }
            }
            None => {
                order.push(key.clone());
                merged.insert(key, e);
            }
        }
    }
    (merged, order)
}

fn compare(mut before: Side, mut after: Side) -> Diff {
    let (mut before_stacks, before_order) = merge(std::mem::take(&mut before.stacks));
    let (mut after_stacks, after_order) = merge(std::mem::take(&mut after.stacks));
    before.info.stacks_listed = before_order.len();
    after.info.stacks_listed = after_order.len();
    for side in [&mut before, &mut after] {
        if side.info.source == Source::Folded {
            side.info.stacks_holding_memory = side.info.stacks_listed as u64;
            side.info.stacks_holding_memory_listed = side.info.stacks_listed as u64;
        }
    }
    let mut stacks = Vec::new();
    for key in before_order {
        let b = before_stacks.remove(&key).expect("merged key");
        stacks.push(delta(Some(b), after_stacks.remove(&key)));
    }
    for key in after_order {
        if let Some(a) = after_stacks.remove(&key) {
            stacks.push(delta(None, Some(a)));
        }
    }
    stacks.sort_by(|x, y| {
        y.delta_bytes
            .cmp(&x.delta_bytes)
            .then(y.after.outstanding_bytes.cmp(&x.after.outstanding_bytes))
            .then_with(|| x.frames.cmp(&y.frames))
            .then_with(|| {
                x.kind
                    .map(|k| name_of(&k))
                    .cmp(&y.kind.map(|k| name_of(&k)))
            })
    });
    let count = |status| stacks.iter().filter(|s| s.status == status).count();
    let totals = DiffTotals {
        before: before.total,
        after: after.total,
        delta_bytes: signed(
            after.total.outstanding_bytes,
            before.total.outstanding_bytes,
        ),
        delta_allocations: signed(
            after.total.outstanding_allocations,
            before.total.outstanding_allocations,
        ),
        new: count(Status::New),
        gone: count(Status::Gone),
        grew: count(Status::Grew),
        shrank: count(Status::Shrank),
        same: count(Status::Same),
    };
    Diff {
        version: DIFF_VERSION,
        kind: "memtrace-diff",
        before: before.info,
        after: after.info,
        totals,
        stacks,
    }
}

/// One stack's change; at least one side is present.
fn delta(before: Option<Entry>, after: Option<Entry>) -> StackDelta {
    let side = |e: &Option<Entry>| e.as_ref().map(|e| e.amount).unwrap_or_default();
    let (b, a) = (side(&before), side(&after));
    let delta_bytes = signed(a.outstanding_bytes, b.outstanding_bytes);
    let status = match (&before, &after) {
        (None, _) => Status::New,
        (_, None) => Status::Gone,
        _ if delta_bytes > 0 => Status::Grew,
        _ if delta_bytes < 0 => Status::Shrank,
        _ => Status::Same,
    };
    let location = after
        .as_ref()
        .and_then(|e| e.location.clone())
        .or_else(|| before.as_ref().and_then(|e| e.location.clone()));
    let entry = after.or(before).expect("one side is present");
    StackDelta {
        status,
        kind: entry.kind,
        before: b,
        after: a,
        delta_bytes,
        delta_allocations: signed(a.outstanding_allocations, b.outstanding_allocations),
        frames: entry.frames.into_iter().rev().collect(),
        location,
    }
}

fn signed(after: u64, before: u64) -> i64 {
    (i128::from(after) - i128::from(before)).clamp(i64::MIN.into(), i64::MAX.into()) as i64
}

/// `+1.0 KiB`, `-12 B`, `0 B`.
fn signed_bytes(delta: i64) -> String {
    let sign = match delta.signum() {
        1 => "+",
        -1 => "-",
        _ => "",
    };
    format!("{sign}{}", bytes(delta.unsigned_abs()))
}

fn signed_count(delta: i64) -> String {
    if delta > 0 {
        format!("+{delta}")
    } else {
        delta.to_string()
    }
}

/// Text: a header (both sides, the total change, stacks by status), then
/// the `top` stacks that changed most (growth or shrinkage), largest
/// growth first, each with its change, verdicts and frames.
pub fn text(d: &Diff, top: usize) -> String {
    let mut out = String::new();
    let w = &mut out;
    let allocations = d.before.source == Source::Report && d.after.source == Source::Report;
    let t = &d.totals;
    let _ = write!(
        w,
        "memtrace diff: outstanding {} → {} ({})",
        bytes(t.before.outstanding_bytes),
        bytes(t.after.outstanding_bytes),
        signed_bytes(t.delta_bytes)
    );
    if allocations {
        let _ = write!(
            w,
            ", {} → {} allocations ({})",
            t.before.outstanding_allocations,
            t.after.outstanding_allocations,
            signed_count(t.delta_allocations)
        );
    }
    let _ = writeln!(w);
    for (name, side) in [("before:", &d.before), ("after: ", &d.after)] {
        let _ = writeln!(w, "  {name} {}", describe(side));
    }
    let _ = writeln!(
        w,
        "  stacks: {} new, {} gone, {} grew, {} shrank, {} same",
        t.new, t.gone, t.grew, t.shrank, t.same
    );
    for (name, side) in [("before", &d.before), ("after", &d.after)] {
        // Both counts are of the report's own stacks: the ones summed with
        // an identical one count each.
        if side.stacks_holding_memory > side.stacks_holding_memory_listed {
            let _ = writeln!(
                w,
                "  note: {name} lists {} of its {} stacks holding memory; stacks outside a list \
                 show as new or gone",
                side.stacks_holding_memory_listed, side.stacks_holding_memory
            );
        }
    }
    let _ = writeln!(w);
    let mut changed: Vec<(usize, &StackDelta)> = d
        .stacks
        .iter()
        .enumerate()
        .filter(|(_, s)| s.status != Status::Same)
        .collect();
    if changed.is_empty() {
        let _ = writeln!(w, "no stack changed");
        return out;
    }
    changed.sort_by_key(|(i, s)| (std::cmp::Reverse(s.delta_bytes.unsigned_abs()), *i));
    changed.truncate(top);
    changed.sort_by_key(|(i, _)| *i);
    let _ = match changed.len() {
        1 => writeln!(w, "the one change:"),
        n => writeln!(w, "{n} largest changes:"),
    };
    for (rank, (_, s)) in changed.iter().enumerate() {
        let _ = writeln!(w);
        stack(w, rank + 1, s, allocations);
    }
    out
}

/// `demo_leak (pid 123), 15 s, 3 stacks` (`[folded]` for folded stacks).
fn describe(side: &DiffSide) -> String {
    let mut parts: Vec<String> = side
        .targets
        .iter()
        .map(|t| match &t.comm {
            Some(comm) => format!("{comm} (pid {})", t.pid),
            None => format!("pid {}", t.pid),
        })
        .collect();
    if parts.is_empty() {
        parts.push("no target named".to_string());
    }
    if let Some(secs) = side.duration_secs {
        parts.push(svg::seconds(secs));
    }
    parts.push(format!(
        "{} stack{}",
        side.stacks_listed,
        if side.stacks_listed == 1 { "" } else { "s" }
    ));
    if side.source == Source::Folded {
        parts.push("[folded]".to_string());
    }
    parts.join(", ")
}

fn stack(w: &mut String, rank: usize, s: &StackDelta, allocations: bool) {
    let mut line = format!(
        "#{rank} {} [{}] {} → {}",
        signed_bytes(s.delta_bytes),
        name_of(&s.status),
        bytes(s.before.outstanding_bytes),
        bytes(s.after.outstanding_bytes),
    );
    if allocations {
        let _ = write!(line, ", {} allocations", signed_count(s.delta_allocations));
    }
    let verdicts = match (s.before.verdict, s.after.verdict) {
        (Some(b), Some(a)) if a != b => Some(format!("{} → {}", name_of(&b), name_of(&a))),
        (_, Some(a)) => Some(name_of(&a)),
        (Some(b), None) => Some(format!("was {}", name_of(&b))),
        (None, None) => None,
    };
    if let Some(v) = verdicts {
        let _ = write!(line, ", {v}");
    }
    if let Some(kind) = s.kind {
        let _ = write!(line, ", {}", name_of(&kind));
    }
    let _ = writeln!(w, "{line}");
    for (i, f) in s.frames.iter().enumerate() {
        match (&s.location, i) {
            (Some(at), 0) => {
                let _ = writeln!(w, "    {f} at {at}");
            }
            _ => {
                let _ = writeln!(w, "    {f}");
            }
        }
    }
}

/// The diff as pretty-printed JSON.
pub fn json(d: &Diff) -> String {
    let mut s = serde_json::to_string_pretty(d).expect("diff serializes");
    s.push('\n');
    s
}

/// A differential flamegraph (inferno): widths are the outstanding bytes
/// after, a frame is red where its stack grew and blue where it shrank
/// (the deeper the colour, the larger the change). Stacks gone since
/// before have no width after, so they are not drawn (the text and JSON
/// list them).
pub fn svg(d: &Diff, title: &str) -> anyhow::Result<Vec<u8>> {
    let mut merged: HashMap<String, (u64, u64)> = HashMap::new();
    for s in &d.stacks {
        let names: Vec<&str> = s.frames.iter().rev().map(String::as_str).collect();
        let e = merged.entry(names.join(";")).or_default();
        e.0 = e.0.saturating_add(s.before.outstanding_bytes);
        e.1 = e.1.saturating_add(s.after.outstanding_bytes);
    }
    // Two counts per line make inferno draw a differential (second minus
    // first), as `inferno-diff-folded` output would.
    let mut lines: Vec<String> = merged
        .into_iter()
        .map(|(stack, (before, after))| format!("{stack} {before} {after}"))
        .collect();
    lines.sort();
    let t = &d.totals;
    let mut opt = svg::options(title.to_string(), "bytes");
    opt.subtitle = Some(format!(
        "outstanding {} → {} ({}); widths: after; red grew, blue shrank; stacks gone are not drawn",
        bytes(t.before.outstanding_bytes),
        bytes(t.after.outstanding_bytes),
        signed_bytes(t.delta_bytes)
    ));
    svg::draw(&mut opt, &lines, "no outstanding bytes after")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        fixtures::{report, stack, target},
        StackReport, Totals,
    };

    /// A fixture stack of `pid` with the given frames (innermost first).
    fn at(pid: u32, names: &[&str], bytes: u64, verdict: Verdict) -> StackReport {
        let mut s = stack("x", verdict, &[0, bytes]);
        s.pid = pid;
        s.frames = names
            .iter()
            .map(|n| {
                let mut f = s.frames[0].clone();
                f.function = Some(n.to_string());
                f
            })
            .collect();
        s
    }

    fn snapshot(pid: u32, stacks: Vec<StackReport>, bytes: u64) -> Report {
        let mut r = report(stacks);
        r.targets.push(target(pid, "demo"));
        r.totals = Totals {
            outstanding_bytes: bytes,
            outstanding_allocations: 10,
            stacks_holding_memory: r.stacks.len() as u64,
            ..Totals::default()
        };
        r
    }

    fn sample() -> Diff {
        let mut grew = at(100, &["leaky", "main"], 1000, Verdict::Plateau);
        grew.frames[0].file = Some("leak.c".into());
        grew.frames[0].line = Some(12);
        let before = snapshot(
            100,
            vec![
                grew,
                at(100, &["gone_fn", "main"], 300, Verdict::Stable),
                at(100, &["shrink_fn", "main"], 500, Verdict::Growing),
                at(100, &["same_fn", "main"], 50, Verdict::Stable),
            ],
            1850,
        );
        let mut mmap = at(200, &["leaky", "main"], 7, Verdict::Leak);
        mmap.kind = StackKind::Mmap;
        let after = snapshot(
            200,
            vec![
                at(200, &["leaky", "main"], 5000, Verdict::Leak),
                at(200, &["new_fn", "main"], 200, Verdict::Growing),
                at(200, &["shrink_fn", "main"], 100, Verdict::Stable),
                at(200, &["same_fn", "main"], 50, Verdict::Stable),
                mmap,
            ],
            5357,
        );
        diff(&before, &after)
    }

    fn find<'a>(d: &'a Diff, leaf: &str) -> &'a StackDelta {
        d.stacks.iter().find(|s| s.frames[0] == leaf).unwrap()
    }

    #[test]
    fn matches_across_pids_and_sorts_by_growth() {
        let d = sample();
        let order: Vec<(&str, Status, i64)> = d
            .stacks
            .iter()
            .map(|s| (s.frames[0].as_str(), s.status, s.delta_bytes))
            .collect();
        assert_eq!(
            order,
            vec![
                ("leaky", Status::Grew, 4000),
                ("new_fn", Status::New, 200),
                ("leaky", Status::New, 7),
                ("same_fn", Status::Same, 0),
                ("gone_fn", Status::Gone, -300),
                ("shrink_fn", Status::Shrank, -400),
            ]
        );
        let leaky = &d.stacks[0];
        assert_eq!(leaky.kind, Some(StackKind::Heap));
        assert_eq!(leaky.frames, vec!["leaky", "main"]);
        assert_eq!(leaky.location.as_deref(), Some("leak.c:12"));
        assert_eq!(leaky.before.verdict, Some(Verdict::Plateau));
        assert_eq!(leaky.after.verdict, Some(Verdict::Leak));
        assert_eq!(
            (
                leaky.before.outstanding_allocations,
                leaky.delta_allocations
            ),
            (3, 0)
        );
        // The mmap stack through the same functions is another stack.
        assert_eq!(d.stacks[2].kind, Some(StackKind::Mmap));
        let gone = find(&d, "gone_fn");
        assert_eq!(gone.after, StackSide::default());
        assert_eq!(gone.delta_allocations, -3);
        let t = &d.totals;
        assert_eq!((t.delta_bytes, t.delta_allocations), (3507, 0));
        assert_eq!((t.new, t.gone, t.grew, t.shrank, t.same), (2, 1, 1, 1, 1));
        assert_eq!(
            d.before.targets,
            vec![DiffTarget {
                pid: 100,
                comm: Some("demo".into())
            }]
        );
        assert_eq!((d.before.stacks_listed, d.after.stacks_listed), (4, 5));
    }

    #[test]
    fn merges_same_functions_within_a_side() {
        // Two processes (and two call sites) of the same program.
        let before = snapshot(1, vec![at(1, &["f", "main"], 10, Verdict::Stable)], 10);
        let mut after = snapshot(
            2,
            vec![
                at(2, &["f", "main"], 10, Verdict::Stable),
                at(3, &["f", "main"], 15, Verdict::Leak),
            ],
            25,
        );
        after.targets.push(target(3, "demo"));
        let d = diff(&before, &after);
        assert_eq!(d.stacks.len(), 1);
        let s = &d.stacks[0];
        assert_eq!(
            (s.status, s.delta_bytes, s.after.outstanding_allocations),
            (Status::Grew, 15, 6)
        );
        assert_eq!(s.after.verdict, Some(Verdict::Leak));
    }

    #[test]
    fn folded_sides_drop_the_process_root() {
        let before = folded::parse("demo (pid 1);main;f 10\ndemo (pid 1);main;g 5\n").unwrap();
        let after = folded::parse(
            "demo (pid 2);main;f 30\npid 3;main;f 1\nmain;h 4\ndemo (pid 2);[stack not captured] 2\n",
        )
        .unwrap();
        let d = diff_folded(&before, &after);
        let got: Vec<(Vec<&str>, Status, i64)> = d
            .stacks
            .iter()
            .map(|s| {
                (
                    s.frames.iter().map(String::as_str).collect(),
                    s.status,
                    s.delta_bytes,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (vec!["f", "main"], Status::Grew, 21),
                (vec!["h", "main"], Status::New, 4),
                (vec!["[stack not captured]"], Status::New, 2),
                (vec!["g", "main"], Status::Gone, -5),
            ]
        );
        assert!(d
            .stacks
            .iter()
            .all(|s| s.kind.is_none() && s.after.verdict.is_none()));
        assert_eq!(d.after.source, Source::Folded);
        assert_eq!(
            d.after.targets,
            vec![
                DiffTarget {
                    pid: 2,
                    comm: Some("demo".into())
                },
                DiffTarget { pid: 3, comm: None }
            ]
        );
        assert_eq!(
            (
                d.totals.before.outstanding_bytes,
                d.totals.after.outstanding_bytes
            ),
            (15, 37)
        );
        // A report and its own folded stacks give the same matches.
        let r = snapshot(9, vec![at(9, &["f", "main"], 10, Verdict::Stable)], 10);
        let as_folded = folded::stacks(&r, crate::model::Weight::Outstanding);
        let d = diff_folded(&as_folded, &before);
        assert_eq!(find(&d, "f").status, Status::Same);
    }

    #[test]
    fn text_lists_largest_changes() {
        let d = sample();
        let text = text(&d, 3);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "memtrace diff: outstanding 1.8 KiB → 5.2 KiB (+3.4 KiB), 10 → 10 allocations (0)"
        );
        assert_eq!(lines[1], "  before: demo (pid 100), 12 s, 4 stacks");
        assert_eq!(lines[2], "  after:  demo (pid 200), 12 s, 5 stacks");
        assert_eq!(
            lines[3],
            "  stacks: 2 new, 1 gone, 1 grew, 1 shrank, 1 same"
        );
        assert_eq!(lines[5], "3 largest changes:");
        assert_eq!(
            lines[7],
            "#1 +3.9 KiB [grew] 1000 B → 4.9 KiB, 0 allocations, plateau → leak, heap"
        );
        assert_eq!(lines[8], "    leaky at leak.c:12");
        assert_eq!(lines[9], "    main");
        // Shrinkage counts as a change, listed after growth.
        assert_eq!(
            lines[11],
            "#2 -300 B [gone] 300 B → 0 B, -3 allocations, was stable, heap"
        );
        assert_eq!(lines[12], "    gone_fn");
        assert_eq!(
            lines[15],
            "#3 -400 B [shrank] 500 B → 100 B, 0 allocations, growing → stable, heap"
        );
        assert!(!text.contains("new_fn"), "{text}");
        let all = super::text(&d, 10);
        assert!(
            all.contains("#2 +200 B [new] 0 B → 200 B, +3 allocations, growing, heap"),
            "{all}"
        );
        assert!(!all.contains("same_fn"), "{all}");
    }

    #[test]
    fn text_notes_partial_lists_and_no_change() {
        let mut before = snapshot(1, vec![at(1, &["f"], 10, Verdict::Stable)], 10);
        before.totals.stacks_holding_memory = 7;
        let text = text(&diff(&before, &before), 5);
        assert!(
            text.contains(
                "note: before lists 1 of its 7 stacks holding memory; stacks outside a list show \
                 as new or gone"
            ),
            "{text}"
        );
        assert!(text.ends_with("\nno stack changed\n"), "{text}");
        let folded = folded::parse("pid 3;f 10").unwrap();
        let text = super::text(&diff_folded(&folded, &folded), 5);
        assert!(
            text.starts_with("memtrace diff: outstanding 10 B → 10 B (0 B)\n"),
            "{text}"
        );
        assert!(
            text.contains("  before: pid 3, 1 stack, [folded]\n"),
            "{text}"
        );
    }

    /// A report listing all 16 of its stacks holding memory, 8 of them
    /// through the same functions as another (other call sites, other
    /// processes): summed into 12, but nothing is left out of the list.
    #[test]
    fn no_partial_list_note_when_every_stack_is_listed() {
        let mut stacks = Vec::new();
        for i in 0..12u32 {
            let name = format!("f{i}");
            stacks.push(at(1, &[&name, "main"], 100, Verdict::Stable));
            if i < 4 {
                let mut other_site = at(1, &[&name, "main"], 50, Verdict::Stable);
                other_site.frames[0].address = 0x2000;
                stacks.push(other_site);
            }
        }
        let after = snapshot(1, stacks, 1400);
        assert_eq!(after.totals.stacks_holding_memory, 16);
        let d = diff(&after, &after);
        assert_eq!(d.after.stacks_listed, 12);
        assert_eq!(d.after.stacks_holding_memory_listed, 16);
        let text = text(&d, 5);
        assert!(!text.contains("note:"), "{text}");
        // One left out: said, with the report's own counts.
        let mut partial = snapshot(1, after.stacks[..15].to_vec(), 1400);
        partial.totals.stacks_holding_memory = 16;
        let text = super::text(&diff(&after, &partial), 5);
        assert!(
            text.contains("note: after lists 15 of its 16 stacks holding memory"),
            "{text}"
        );
        assert!(!text.contains("note: before"), "{text}");
    }

    #[test]
    fn json_fields() {
        let v: serde_json::Value = serde_json::from_str(&json(&sample())).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["kind"], "memtrace-diff");
        assert_eq!(v["before"]["source"], "report");
        assert_eq!(v["before"]["targets"][0]["pid"], 100);
        assert_eq!(v["totals"]["delta_bytes"], 3507);
        assert_eq!(v["totals"]["after"]["outstanding_bytes"], 5357);
        let s = &v["stacks"][0];
        assert_eq!(s["status"], "grew");
        assert_eq!(s["kind"], "heap");
        assert_eq!(s["frames"], serde_json::json!(["leaky", "main"]));
        assert_eq!(s["location"], "leak.c:12");
        assert_eq!(s["before"]["outstanding_bytes"], 1000);
        assert_eq!(s["before"]["verdict"], "plateau");
        assert_eq!(s["after"]["verdict"], "leak");
        assert_eq!(s["delta_bytes"], 4000);
        assert_eq!(v["stacks"][4]["after"]["verdict"], serde_json::Value::Null);
    }

    #[test]
    fn differential_flamegraph() {
        let svg = String::from_utf8(svg(&sample(), "memtrace diff: demo").unwrap()).unwrap();
        assert!(svg.starts_with("<?xml"), "{svg}");
        assert!(svg.contains("memtrace diff: demo"));
        assert!(svg.contains("widths: after; red grew, blue shrank"));
        // leaky: heap 1000 → 5000 and mmap 0 → 7 are one frame; new_fn is new.
        assert!(svg.contains("<title>leaky (5,007 bytes, "), "{svg}");
        assert!(svg.contains("<title>new_fn (200 bytes, "), "{svg}");
        assert!(!svg.contains("gone_fn"), "{svg}");
        let rect_of = |name: &str| {
            let at = svg.find(&format!("<title>{name} (")).unwrap();
            let rect = at + svg[at..].find("<rect").unwrap();
            svg[rect..rect + svg[rect..].find("/>").unwrap()].to_string()
        };
        assert!(
            rect_of("leaky").contains(r#"fill="rgb(255,100,100)""#),
            "{svg}"
        );
        // Red by growth, blue by shrinkage, scaled to the largest change.
        assert!(
            rect_of("shrink_fn").contains(r#"fill="rgb(235,235,255)""#),
            "{svg}"
        );
        // Nothing after: still an SVG, saying so.
        let empty = diff_folded(&folded::parse("f 5").unwrap(), &[]);
        let svg = String::from_utf8(svg_of(&empty)).unwrap();
        assert!(
            svg.contains("<title>no outstanding bytes after</title>"),
            "{svg}"
        );
    }

    fn svg_of(d: &Diff) -> Vec<u8> {
        svg(d, "t").unwrap()
    }
}

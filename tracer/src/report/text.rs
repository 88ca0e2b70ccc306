//! Text renderer: a header (targets, duration, totals, losses), then the top
//! stacks with their frames, innermost first.

use std::fmt::Write;

use super::{Report, StackReport};
use crate::units::{bytes, rate_per_min};

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "memtrace report: {} target{}, traced for {:.1} s (sampled every {:.1} s)",
        report.targets.len(),
        if report.targets.len() == 1 { "" } else { "s" },
        report.duration_secs,
        report.interval_secs
    );
    for t in &report.targets {
        let _ = writeln!(
            w,
            "  pid {} ({}) {}{}  allocator: {}",
            t.pid,
            t.comm,
            t.exe.as_deref().unwrap_or("?"),
            if t.exited { " [exited]" } else { "" },
            if t.allocators.is_empty() {
                "none".to_string()
            } else {
                t.allocators.join(", ")
            }
        );
    }
    let tot = &report.totals;
    let _ = writeln!(
        w,
        "outstanding: {} in {} allocations from {} stacks ({} allocations, {} frees while tracing)",
        bytes(tot.outstanding_bytes),
        tot.outstanding_allocations,
        tot.stacks_holding_memory,
        tot.allocations,
        tot.frees
    );
    let losses = report.losses.nonzero();
    if losses.is_empty() {
        let _ = writeln!(w, "losses: none");
    } else {
        let list: Vec<String> = losses.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            w,
            "losses: {} (report is incomplete, never inflated)",
            list.join(" ")
        );
    }
    let _ = writeln!(w);
    if report.stacks.is_empty() {
        let _ = writeln!(w, "no outstanding allocations were made while tracing");
        return out;
    }
    let _ = writeln!(
        w,
        "top {} stacks by outstanding bytes:",
        report.stacks.len()
    );
    for (i, s) in report.stacks.iter().enumerate() {
        let _ = writeln!(w);
        stack(w, i + 1, s);
    }
    out
}

fn stack(w: &mut String, rank: usize, s: &StackReport) {
    let verdict = name_of(&s.verdict);
    let kind = name_of(&s.kind);
    let _ = writeln!(
        w,
        "#{rank} {} in {} allocations, {} [{verdict}]  pid {} {kind}",
        bytes(s.outstanding_bytes),
        s.outstanding_allocations,
        rate_per_min(s.growth_bytes_per_sec),
        s.pid,
    );
    if s.frames.is_empty() {
        let _ = writeln!(w, "    [stack not captured]");
    }
    for f in &s.frames {
        let function = f.function.as_deref().unwrap_or("??");
        let location = match (&f.file, f.line) {
            (Some(file), Some(line)) => format!(" at {file}:{line}"),
            (Some(file), None) => format!(" at {file}"),
            _ => String::new(),
        };
        let module = f
            .module
            .as_deref()
            .map(|m| m.rsplit('/').next().unwrap_or(m))
            .unwrap_or("?");
        let _ = writeln!(w, "    {:#014x} {function}{location} ({module})", f.address);
    }
}

/// The serde name of a unit enum variant (`growing`, `heap`), so text and
/// JSON always use the same words.
fn name_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

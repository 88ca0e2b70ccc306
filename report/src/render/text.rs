//! Text renderer: OOM kills first (the victim and the stacks that held its
//! memory), then a header (targets and their memory, duration, totals,
//! losses, verdict counts), then the top stacks, each with its verdict, the
//! reason for it and its frames, innermost first.

use std::fmt::Write;

use crate::model::{
    frame_name, name_of, verdict_counts, Container, Frame, GoReport, HeapDiff, JavaReport,
    KindTotals, MemoryReport, NodeReport, OomKill, Overhead, Peak, Report, Retainer, SortBy,
    StackKind, StackReport, TargetReport, Totals, Unwind, UnwindReport,
};
use crate::units::{bytes, rate_per_hour, rate_per_min};

/// The report with its first `top` stacks.
pub fn render(report: &Report, top: usize) -> String {
    let stacks = &report.stacks[..report.stacks.len().min(top)];
    let mut out = String::new();
    let w = &mut out;
    for k in &report.oom_kills {
        oom_kill(w, k);
    }
    let _ = writeln!(
        w,
        "memtrace report: {} target{}, traced for {:.1} s (sampled every {:.1} s)",
        report.targets.len(),
        if report.targets.len() == 1 { "" } else { "s" },
        report.duration_secs,
        report.interval_secs
    );
    // Largest holders first; a watched node can have many processes.
    let mut targets: Vec<_> = report.targets.iter().collect();
    if targets.len() > 1 {
        targets.sort_by_key(|t| std::cmp::Reverse(t.outstanding_bytes));
    }
    for t in targets.iter().take(MAX_TARGETS_SHOWN) {
        let _ = writeln!(
            w,
            "  pid {} ({}) {}{}  allocator: {}",
            t.pid,
            t.comm,
            t.exe.as_deref().unwrap_or("?"),
            match (report.oom_kills.iter().any(|k| k.pid == t.pid), t.exited) {
                (true, _) => " [OOM-killed]",
                (false, true) => " [exited]",
                (false, false) => "",
            },
            if t.allocators.is_empty() {
                "none".to_string()
            } else {
                t.allocators.join(", ")
            }
        );
        if report.targets.len() > 1 {
            let _ = writeln!(
                w,
                "    holds {} in {} ({} growing)",
                bytes(t.outstanding_bytes),
                counted(t.stacks_holding_memory, "stack"),
                t.growing_stacks
            );
        }
        if let Some(u) = &t.unseen {
            let _ = writeln!(
                w,
                "    attached {:.1} ms after its {}: allocations before that not seen",
                u.ms, u.after
            );
        }
        if let Some(at) = t.probes_lost_at_s {
            let _ = writeln!(
                w,
                "    its probes went with its main thread by {at:.1} s (this kernel's probes \
                 belong to the main thread): what it did after that is not seen"
            );
        }
        if let Some(c) = &t.container {
            let _ = writeln!(w, "    container: {}", describe_container(c));
        }
        if let Some(line) = target_peak(t) {
            let _ = writeln!(w, "    {line}");
        }
        if let Some(m) = &t.memory {
            memory(w, t.pid, m);
        }
        if let Some(g) = &t.go {
            go(w, g);
        }
        if let Some(n) = &t.node {
            node(w, n);
        }
        if let Some(j) = &t.java {
            java(w, j);
        }
    }
    if targets.len() > MAX_TARGETS_SHOWN {
        let _ = writeln!(
            w,
            "  ... and {} more processes holding less (all of them are in the JSON report)",
            targets.len() - MAX_TARGETS_SHOWN
        );
    }
    if let Some(o) = &report.overhead {
        overhead(w, o);
    }
    if let Some(line) = stepped(report) {
        let _ = writeln!(w, "{line}");
    }
    if let Some(mean) = report.sample_bytes {
        let _ = writeln!(
            w,
            "sampled: one allocation per {} allocated on average; heap bytes and counts are \
             estimates (unbiased per stack)",
            bytes(mean)
        );
        if let Some(p) = &report.probes {
            let _ = writeln!(
                w,
                "probes: {}; {} unsampled returns skipped",
                p.detail, report.counters.returns_skipped
            );
        }
    }
    if let Some(pool) = report.probes.as_ref().and_then(|p| p.pymalloc_pool_bytes) {
        let c = &report.counters;
        let _ = writeln!(
            w,
            "pymalloc inlined: Python objects under 512 B counted by the {} pool they came from \
             ({} pools counted freed when pymalloc took them again, {} with their arena)",
            bytes(pool),
            c.pools_reused,
            c.pools_unmapped
        );
    }
    totals(w, &report.totals);
    let losses = report.losses.nonzero();
    if losses.is_empty() {
        let _ = writeln!(w, "losses: none");
    } else {
        let list: Vec<String> = losses.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let remedy = report.losses.remedy().map(|r| format!("; {r}"));
        let _ = writeln!(
            w,
            "losses: {} (report is incomplete, never inflated{})",
            list.join(" "),
            remedy.unwrap_or_default()
        );
    }
    if let Some(u) = &report.unwind {
        unwind(w, u);
    }
    // "memcached: 14 frames unnamed: install memcached-dbgsym or ...".
    for u in &report.unnamed_frames {
        let name = u.module.rsplit('/').next().unwrap_or(&u.module);
        let frames = counted(u.frames, "frame");
        let _ = writeln!(w, "{name}: {frames} unnamed: {}", u.hint);
    }
    let _ = writeln!(w);
    if stacks.is_empty() {
        let _ = writeln!(w, "no outstanding allocations were made while tracing");
        return out;
    }
    let aged = report
        .min_age_secs
        .map(|s| format!(", counting only allocations older than {s:.0} s"))
        .unwrap_or_default();
    // A run too short for any rate is ranked by what each stack holds.
    let sort = match report.sort {
        SortBy::Growth if stacks.iter().all(|s| !s.rated) => {
            "outstanding (too few intervals for growth rates)".to_string()
        }
        sort => name_of(&sort),
    };
    let _ = writeln!(
        w,
        "top {} stacks by {sort}{aged} ({}):",
        stacks.len(),
        verdict_counts(stacks, false)
    );
    for (i, s) in stacks.iter().enumerate() {
        let _ = writeln!(w);
        let comm = report
            .targets
            .iter()
            .find(|t| t.pid == s.pid)
            .map(|t| t.comm.as_str());
        stack(w, i + 1, s, comm);
    }
    out
}

/// Processes listed in the header (the ones holding the most).
const MAX_TARGETS_SHOWN: usize = 8;

/// Stacks shown per OOM kill (the JSON report has up to `oom::TOP_STACKS`).
const OOM_STACKS_SHOWN: usize = 3;

fn oom_kill(w: &mut String, k: &OomKill) {
    let line = oom_line(k);
    let _ = writeln!(
        w,
        "!!! {} at +{:.1} s ({})",
        line.split(';').next().unwrap_or(&line),
        k.t,
        k.time
    );
    if !k.traced {
        let _ = writeln!(w, "    (not traced by memtrace: no stacks)");
    } else if k.top_stacks.is_empty() {
        let _ = writeln!(w, "    its traced stacks held nothing when it was chosen");
    } else {
        let _ = writeln!(
            w,
            "    its traced stacks held {} when it was chosen; the largest:",
            bytes(k.traced_outstanding_bytes)
        );
        for (i, s) in k.top_stacks.iter().take(OOM_STACKS_SHOWN).enumerate() {
            stack(w, i + 1, s, Some(k.comm.as_str()));
        }
    }
    let _ = writeln!(w);
}

fn stack(w: &mut String, rank: usize, s: &StackReport, comm: Option<&str>) {
    let verdict = name_of(&s.verdict);
    let kind = name_of(&s.kind);
    let comm = comm.map(|c| format!(" ({c})")).unwrap_or_default();
    let rate = match s.rated {
        true => format!(", {}", rate_per_min(s.growth_bytes_per_sec)),
        false => String::new(),
    };
    let _ = writeln!(
        w,
        "#{rank} [{verdict}] {} in {} {}{rate}  pid {}{comm} {kind}",
        bytes(s.outstanding_bytes),
        s.outstanding_allocations,
        // V8 gives no object counts: its live samples.
        match s.kind {
            StackKind::JsHeap | StackKind::JavaHeap => "samples",
            _ => "allocations",
        },
        s.pid,
    );
    let _ = writeln!(w, "    {}", s.verdict_reason);
    if let Some(p) = s
        .peak
        .filter(|p| p.bytes > s.outstanding_bytes + s.outstanding_bytes / 8)
    {
        let _ = writeln!(w, "    peak {}", peak(&p));
    }
    if s.frames.is_empty() {
        let _ = writeln!(w, "    [stack not captured]");
    }
    // Interpreters recurse through one function per script frame
    // (CPython's _PyEval_EvalFrameDefault, Ruby's vm_exec, ...): a run of
    // the same function is printed once, with its count, so the native
    // code that allocated stands out.
    let mut i = 0;
    while i < s.frames.len() {
        let f = &s.frames[i];
        let run = s.frames[i..]
            .iter()
            .take_while(|g| f.function.is_some() && g.function == f.function)
            .count()
            .max(1);
        i += run;
        let function = f.function.as_deref().unwrap_or("??");
        let location = match (&f.file, f.line, f.column) {
            (Some(file), Some(line), Some(column)) => format!(" at {file}:{line}:{column}"),
            (Some(file), Some(line), None) => format!(" at {file}:{line}"),
            (Some(file), None, _) => format!(" at {file}"),
            // A Java frame: JFR gives no file.
            (None, Some(line), _) => format!(" line {line}"),
            _ => String::new(),
        };
        let module = f
            .module
            .as_deref()
            .map(|m| m.rsplit('/').next().unwrap_or(m))
            .unwrap_or("?");
        let inlined = if f.inlined { " [inlined]" } else { "" };
        match f.language {
            // Source code, not at a machine address nor in a module.
            Some(language) => {
                let _ = writeln!(
                    w,
                    "    {:>14} {function}{location} [{}]",
                    "",
                    language.name()
                );
            }
            None => {
                let _ = writeln!(
                    w,
                    "    {:#014x} {function}{location} ({module}){inlined}",
                    f.address
                );
            }
        }
        if run > 1 {
            let _ = writeln!(w, "    {:>14} ... {function} ×{run} in a row", "");
        }
    }
    if s.truncated && !s.frames.is_empty() {
        let _ = writeln!(
            w,
            "    {:>14} ... (walk stopped here: outer callers missing)",
            ""
        );
    }
}

/// `4.0 MiB at 1.2 s`, and what the samples may have missed when that
/// shows (the peak is not exact, by more than the rounding).
fn peak(p: &Peak) -> String {
    let (held, bound) = (bytes(p.bytes), bytes(p.bound_bytes));
    let missed = match p.exact() || bound == held {
        true => String::new(),
        false => format!(" (as sampled; up to {bound} between samples)"),
    };
    format!("{held} at {:.1} s{missed}", p.t)
}

/// A target's peaks: its traced stacks together and its RSS (None when
/// the report knows neither).
fn target_peak(t: &TargetReport) -> Option<String> {
    let traced = t
        .peak
        .filter(|p| p.bytes > 0)
        .map(|p| format!("traced stacks {}", peak(&p)));
    let rss = t
        .memory
        .as_ref()
        .filter(|m| m.peak_rss_bytes > 0)
        .map(|m| format!("RSS {} at {:.1} s", bytes(m.peak_rss_bytes), m.peak_rss_t));
    let parts: Vec<String> = traced.into_iter().chain(rss).collect();
    (!parts.is_empty()).then(|| format!("peak: {}", parts.join("; ")))
}

/// What is outstanding, one line per kind of stack seen (heap blocks and
/// mappings do not add up to anything meaningful); reports from before the
/// split have the sums only.
fn totals(w: &mut String, tot: &Totals) {
    let kinds: Vec<(StackKind, &KindTotals)> = tot
        .by_kind
        .iter()
        .filter(|(_, t)| t.stacks > 0)
        .map(|(k, t)| (*k, t))
        .collect();
    if kinds.is_empty() {
        let _ = writeln!(
            w,
            "outstanding: {} in {} allocations from {} ({} allocations, {} frees while tracing)",
            bytes(tot.outstanding_bytes),
            tot.outstanding_allocations,
            counted(tot.stacks_holding_memory, "stack"),
            tot.allocations,
            tot.frees
        );
        return;
    }
    for (kind, t) in kinds {
        let (unit, made, gone, when) = match kind {
            StackKind::Heap => ("allocations", "allocations", "frees", "while tracing"),
            StackKind::Mmap => ("mappings", "mapped", "unmapped", "while tracing"),
            // The runtime's profile counts from the program's start.
            StackKind::GoHeap => ("objects", "allocated", "freed", "since it started"),
            // V8's profile holds live objects only: what rose and fell.
            StackKind::JsHeap => ("samples", "seen allocated", "seen freed", "while sampled"),
            // Shares of the heap's growth, from the leak profiler's samples.
            StackKind::JavaHeap => ("samples", "seen allocated", "seen freed", "while recorded"),
        };
        let _ = writeln!(
            w,
            "outstanding {}: {} in {} {unit} from {} ({} {made}, {} {gone} {when})",
            name_of(&kind),
            bytes(t.outstanding_bytes),
            t.outstanding_allocations,
            counted(t.stacks_holding_memory, "stack"),
            t.allocations,
            t.frees
        );
    }
}

/// How stacks were walked, said only when some came out truncated.
fn unwind(w: &mut String, u: &UnwindReport) {
    if u.truncated_stacks == 0 {
        return;
    }
    let hint = match u.mode {
        Unwind::Fp => "; --unwind auto walks code without frame pointers through its unwind tables",
        _ => "",
    };
    let _ = writeln!(
        w,
        "stacks: {} of {} truncated (the walk stopped before the outermost frame{hint})",
        u.truncated_stacks, u.heap_stacks
    );
}

/// The runs of single-stepped probes and their functions, when any ran.
pub fn stepped(report: &Report) -> Option<String> {
    let runs = report.counters.stepped_probe_runs;
    let functions = &report.probes.as_ref()?.single_stepped;
    (runs > 0).then(|| {
        format!(
            "{runs} probe runs on instructions the kernel single-steps (~10 µs each, against ~1 \
             where it emulates them): {}",
            functions.join(", ")
        )
    })
}

fn overhead(w: &mut String, o: &Overhead) {
    let _ = writeln!(
        w,
        "tracing cost: {} runs of the allocation probes and {} of the free probes in {:.1} s; a \
         probed malloc+free pair costs {:.1} µs more here ({:.0} ns unprobed) => ~{:.2} CPU-s, \
         {:.2}% of one CPU, {:.2}% of {} CPUs",
        o.allocation_calls,
        o.frees,
        o.seconds,
        o.pair_overhead_ns / 1000.0,
        o.pair_baseline_ns,
        o.cpu_seconds,
        o.one_cpu_share() * 100.0,
        o.cpu_share * 100.0,
        o.cpus
    );
}

fn memory(w: &mut String, pid: u32, m: &MemoryReport) {
    let Some(last) = m.samples.last() else { return };
    let explained = match m.explained_share {
        // Traced memory can grow faster than what is resident (blocks not
        // touched yet, a short window's noisy fit): all of it is explained.
        Some(share) if share > 1.0 => format!(
            "; traced stacks account for all of the anonymous growth (they grew {share:.1}x as \
             fast)"
        ),
        Some(share) => format!(
            "; traced stacks explain {:.0}% of the anonymous growth",
            share * 100.0
        ),
        None => String::new(),
    };
    let _ = writeln!(
        w,
        "    memory: RSS {} ({}), anonymous {} ({}){explained}",
        bytes(last.rss_bytes),
        rate_per_hour(m.rss_growth_bytes_per_hour),
        bytes(last.anon_bytes),
        rate_per_hour(m.anon_growth_bytes_per_hour),
    );
    if m.alert {
        let _ = writeln!(
            w,
            "    ALERT: pid {pid}'s RSS grows {}, above the {} threshold (--rss-alert)",
            rate_per_hour(m.rss_growth_bytes_per_hour),
            rate_per_hour(m.alert_threshold_bytes_per_hour).trim_start_matches('+'),
        );
    }
}

/// "1 stack", "3 stacks".
/// Goroutine groups shown per Go target (the JSON report has them all).
const GOROUTINE_GROUPS_SHOWN: usize = 5;

/// How a Node process's JavaScript heap was read, and who else used its
/// inspector.
fn node(w: &mut String, n: &NodeReport) {
    let how = match (n.inspector.as_str(), &n.reason) {
        ("read", _) => format!(
            "JavaScript heap sampled by V8 every {} over its inspector{} ({}, the last in {:.1} ms{}); {}",
            bytes(n.sampling_interval_bytes),
            n.address
                .as_deref()
                .map(|a| format!(" at {a}"))
                .unwrap_or_default(),
            counted(n.reads, "read"),
            n.read_ms,
            match n.reads_failed {
                0 => String::new(),
                f => format!(", {f} unanswered"),
            },
            match n.closed {
                true => "inspector closed again",
                false => "its inspector could not be seen closed",
            }
        ),
        (state, reason) => format!(
            "JavaScript heap not read ({state}{}): native memory only",
            reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    };
    let _ = writeln!(w, "    node: {how}");
    if n.stacks_left_out > 0 {
        let _ = writeln!(
            w,
            "    node: {} JavaScript stacks of V8's profile left out (past the most followed)",
            n.stacks_left_out
        );
    }
    if !n.other_connections.is_empty() {
        let _ = writeln!(
            w,
            "    node: something else connected to its inspector while memtrace held it: {}",
            n.other_connections.join(", ")
        );
    }
    if let Some(d) = &n.heap_diff {
        heap_diff(w, d);
    }
}

/// How a JVM's Java heap was read: its recording, its heap after
/// collections, and what holds the samples.
fn java(w: &mut String, j: &JavaReport) {
    if j.state != "recorded" {
        let _ = writeln!(
            w,
            "    java: Java heap not read ({}{}): native memory only",
            j.state,
            j.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        return;
    }
    let _ = writeln!(
        w,
        "    java: JFR recording {} dumped {} (the last in {:.1} ms, {}; the JVM's walk for \
         paths to GC roots {:.1} ms{}); {} live samples{}; {}",
        j.recording.as_deref().unwrap_or("?"),
        counted(j.reads, "time"),
        j.read_ms,
        bytes(j.dump_bytes),
        j.walk_ms,
        match j.reachability {
            true => "",
            false => ", cut: reachability not known",
        },
        j.samples,
        match j.own_samples {
            0 => String::new(),
            n => format!(" ({n} made by the attach listener or JFR itself, left out)"),
        },
        match j.stopped {
            true => "recording stopped",
            false => "its recording could not be seen stopped",
        }
    );
    if let (Some(first), Some(last)) = (j.heap_after_gc.first(), j.heap_after_gc.last()) {
        let _ = writeln!(
            w,
            "    java: heap after collection {} at {:.1} s → {} at {:.1} s ({} collections)",
            bytes(first.1),
            first.0,
            bytes(last.1),
            last.0,
            j.heap_after_gc.len()
        );
    }
    for r in j.retained.iter().take(5) {
        let _ = writeln!(
            w,
            "    java: {} {} allocated at {}{} held by {}{}",
            counted(r.samples, "sample"),
            r.class.as_deref().unwrap_or("?"),
            r.function,
            r.line.map(|l| format!(" (line {l})")).unwrap_or_default(),
            r.path.iter().rev().cloned().collect::<Vec<_>>().join(" → "),
            r.root
                .as_deref()
                .map(|r| format!(" (root: {r})"))
                .unwrap_or_default()
        );
    }
}

/// Two heap snapshots compared: the heap, the objects that grew with what
/// holds them, the constructors that grew.
fn heap_diff(w: &mut String, d: &HeapDiff) {
    if d.state != "compared" || d.pause_ms.len() < 2 {
        let _ = writeln!(
            w,
            "    heap diff: none ({}{})",
            d.state,
            d.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        return;
    }
    let _ = writeln!(
        w,
        "    heap diff: {} -> {} in {} -> {} objects (snapshots took {:.0} and {:.0} ms)",
        bytes(d.bytes_before),
        bytes(d.bytes_after),
        d.objects_before,
        d.objects_after,
        d.pause_ms[0],
        d.pause_ms[1]
    );
    for g in &d.grown {
        let entries = match (g.entries_before, g.entries_after) {
            (Some(b), Some(a)) => format!(", {} entries ({b} -> {a})", signed(b, a)),
            _ => String::new(),
        };
        let _ = writeln!(
            w,
            "      {} @{}: {} retained ({} -> {}){entries}",
            g.constructor,
            g.id,
            signed_bytes(g.retained_before, g.retained_after),
            bytes(g.retained_before),
            bytes(g.retained_after)
        );
        if !g.held_by.is_empty() {
            let path: Vec<String> = g.held_by.iter().map(retainer).collect();
            let _ = writeln!(w, "        held by {}", path.join(" <- "));
        }
    }
    if !d.constructors.is_empty() {
        let grew: Vec<String> = d
            .constructors
            .iter()
            .map(|c| {
                format!(
                    "{} {} ({})",
                    c.constructor,
                    signed(c.objects_before, c.objects_after),
                    signed_bytes(c.bytes_before, c.bytes_after)
                )
            })
            .collect();
        let _ = writeln!(w, "      grew by constructor: {}", grew.join(", "));
    }
}

/// "+12", "-3".
fn signed(before: u64, after: u64) -> String {
    match after >= before {
        true => format!("+{}", after - before),
        false => format!("-{}", before - after),
    }
}

/// "+8.6 MiB", "-1.0 KiB".
fn signed_bytes(before: u64, after: u64) -> String {
    match after >= before {
        true => format!("+{}", bytes(after - before)),
        false => format!("-{}", bytes(before - after)),
    }
}

/// One step of a retaining path, in words.
fn retainer(r: &Retainer) -> String {
    match r.edge.as_str() {
        "context" => {
            let scope = match &r.function {
                Some(f) => format!("{f}'s scope"),
                None => "a scope".into(),
            };
            let at = match (&r.file, r.line) {
                (Some(file), Some(line)) => {
                    let name = file.rsplit('/').next().unwrap_or(file);
                    match r.column {
                        Some(c) => format!(" ({name}:{line}:{c})"),
                        None => format!(" ({name}:{line})"),
                    }
                }
                _ => String::new(),
            };
            format!("the variable {} of {scope}{at}", r.name)
        }
        "property" => format!("property {} of {}", r.name, r.holder),
        "element" => format!("element {} of {}", r.name, r.holder),
        edge => format!("{edge} {} of {}", r.name, r.holder),
    }
}

/// What was read from a Go program's runtime: its heap profile, and its
/// goroutines by creation site and state.
fn go(w: &mut String, g: &GoReport) {
    let heap = match g.heap_profile.as_str() {
        "off" => "memory profiling off: heap seen through the runtime's mmap calls only \
                  (--go-enable-heap-profile switches it on)"
            .to_string(),
        "unreadable" => "heap profile not read (it does not read as its layout says): heap \
                         seen through the runtime's mmap calls only"
            .to_string(),
        state => format!(
            "heap profile read from the runtime{} (one sample per {}; {} buckets, {} skipped; \
             {}, the last in {:.1} ms)",
            match state {
                "enabled" => ", switched on by memtrace",
                _ => "",
            },
            bytes(g.profile_rate),
            g.buckets,
            g.buckets_skipped,
            counted(g.reads, "read"),
            g.read_ms
        ),
    };
    let _ = writeln!(w, "    {}: {heap}", g.version);
    let Some(gs) = &g.goroutines else {
        return;
    };
    let _ = writeln!(
        w,
        "    goroutines: {}, {:+.1}/s [{}], stacks {}",
        gs.count,
        gs.growth_per_sec,
        name_of(&gs.verdict),
        bytes(gs.stack_bytes)
    );
    for group in gs.groups.iter().take(GOROUTINE_GROUPS_SHOWN) {
        let created = group
            .created_at
            .first()
            .map(|f| format!(", created at {}", frame_at(f)))
            .unwrap_or_default();
        let start = group
            .start
            .as_deref()
            .map(|s| format!(", started in {s}"))
            .unwrap_or_default();
        let _ = writeln!(
            w,
            "      {} {}{created}{start}, {:+.1}/s [{}]",
            group.count,
            group.state,
            group.growth_per_sec,
            name_of(&group.verdict)
        );
    }
}

/// "main.handle (server.go:88)".
fn frame_at(f: &Frame) -> String {
    match (&f.file, f.line) {
        (Some(file), Some(line)) => {
            let base = file.rsplit('/').next().unwrap_or(file);
            format!("{} ({base}:{line})", frame_name(f))
        }
        (None, Some(line)) => format!("{} (line {line})", frame_name(f)),
        _ => frame_name(f),
    }
}

fn counted(n: u64, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// One line describing a kill, for a log: its time, then [`oom_line`].
pub fn oom_log_line(k: &OomKill) -> String {
    format!("{} {}", k.time, oom_line(k))
}

/// One line describing an OOM kill: who, how big, where, and (traced) the
/// stack holding the most.
pub fn oom_line(k: &OomKill) -> String {
    let mut out = format!(
        "OOM kill: pid {} ({}) uid {} anon-rss {} file-rss {} total-vm {}",
        k.pid,
        k.comm,
        k.uid,
        bytes(k.anon_rss_bytes),
        bytes(k.file_rss_bytes),
        bytes(k.total_vm_bytes)
    );
    if let Some(c) = &k.container {
        out += &format!(" container {}", describe_container(c));
    }
    if let Some(cg) = &k.cgroup {
        out += &format!(" cgroup {cg}");
    }
    if k.trigger_pid != k.pid && k.trigger_pid != 0 {
        out += &format!(" (triggered by pid {})", k.trigger_pid);
    }
    if k.traced {
        out += &format!("; traced stacks held {}", bytes(k.traced_outstanding_bytes));
        if let Some(s) = k.top_stacks.first() {
            out += &format!(", most in {}", stack_summary(s));
        }
    }
    out
}

/// "docker 3f2a9c0d1e2b (pod 1f2e…)".
pub fn describe_container(c: &Container) -> String {
    let mut out = c.runtime.clone();
    if !c.id.is_empty() {
        out += &format!(" {}", c.short_id());
    }
    if let Some(pod) = &c.pod_uid {
        out += &format!(" (pod {pod})");
    }
    out
}

/// "4.0 MiB hoard ← grow ← main".
pub fn stack_summary(s: &StackReport) -> String {
    let names: Vec<String> = s.frames.iter().take(3).map(frame_name).collect();
    let names = if names.is_empty() {
        "[unknown stack]".to_string()
    } else {
        names.join(" ← ")
    };
    format!("{} {names}", bytes(s.outstanding_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        fixtures::{report, stack, target},
        MemorySample, Verdict,
    };

    #[test]
    fn peaks_of_stacks_and_targets() {
        let mib = 1 << 20;
        let at = |bytes, t, bound_bytes| {
            Some(Peak {
                bytes,
                allocations: 64,
                t,
                bound_bytes,
            })
        };
        let mut spike = stack("spike", Verdict::Stable, &[0, 4 * mib, 0]);
        spike.outstanding_allocations = 0;
        spike.peak = at(4 * mib, 1.2, 4 * mib);
        // A leak whose peak is where it ends: no peak line.
        let mut leak = stack("leaky", Verdict::Leak, &[0, 1024, 2048]);
        leak.peak = at(2048, 2.0, 2048);
        let mut r = report(vec![leak, spike]);
        let mut t = target(7, "app");
        t.peak = at(4 * mib + 1024, 1.2, 5 * mib);
        r.targets.push(t);
        let text = render(&r, 10);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[2],
            "    peak: traced stacks 4.0 MiB at 1.2 s (as sampled; up to 5.0 MiB between \
             samples)",
            "{text}"
        );
        let spike_at = lines.iter().position(|l| l.starts_with("#2 ")).unwrap();
        assert_eq!(lines[spike_at + 2], "    peak 4.0 MiB at 1.2 s", "{text}");
        assert_eq!(text.matches("    peak ").count(), 1, "{text}");
    }

    #[test]
    fn verdict_reason_and_memory_alert() {
        let mut leak = stack("leaky", Verdict::Leak, &[0, 1024, 2048]);
        leak.verdict_reason = "grew in 2/2 intervals, +1.0 KiB/min, oldest live 2 s".into();
        let mut r = report(vec![leak, stack("", Verdict::Plateau, &[0, 5, 5])]);
        let samples = vec![
            MemorySample {
                t: 0.0,
                rss_bytes: 1 << 20,
                anon_bytes: 1 << 19,
                traced_bytes: 0,
            },
            MemorySample {
                t: 3600.0,
                rss_bytes: 101 << 20,
                anon_bytes: 100 << 20,
                traced_bytes: 0,
            },
        ];
        let mut leaky = target(7, "leaky");
        leaky.exe = Some("/bin/leaky".into());
        leaky.allocators = vec!["libc.so.6".into()];
        // What the tracer's analysis makes of these samples (its own test
        // checks that): +100 MiB/h of RSS, +99.5 MiB/h anonymous, no traced.
        leaky.memory = Some(MemoryReport {
            samples,
            rss_growth_bytes_per_hour: 100.0 * 1048576.0,
            anon_growth_bytes_per_hour: 99.5 * 1048576.0,
            traced_growth_bytes_per_hour: 0.0,
            explained_share: Some(0.0),
            alert: true,
            alert_threshold_bytes_per_hour: 50.0 * 1048576.0,
            peak_rss_bytes: 0,
            peak_rss_t: 0.0,
        });
        r.targets.push(leaky);
        let text = render(&r, 10);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[2],
            "    memory: RSS 101.0 MiB (+100.0 MiB/h), anonymous 100.0 MiB (+99.5 MiB/h); traced \
             stacks explain 0% of the anonymous growth",
            "{text}"
        );
        assert_eq!(
            lines[3],
            "    ALERT: pid 7's RSS grows +100.0 MiB/h, above the 50.0 MiB/h threshold \
             (--rss-alert)",
            "{text}"
        );
        // Traced memory that grew faster than the anonymous memory explains
        // all of it, not 1280 % of it.
        r.targets[0].memory.as_mut().unwrap().explained_share = Some(12.8);
        let text = render(&r, 10);
        assert!(
            text.lines().nth(2).unwrap().ends_with(
                "traced stacks account for all of the anonymous growth (they grew 12.8x as fast)"
            ),
            "{text}"
        );
        assert!(
            text.contains("top 2 stacks by growth (1 leak, 1 plateau):"),
            "{text}"
        );
        let leak_at = lines
            .iter()
            .position(|l| l.starts_with("#1 [leak] 2.0 KiB"))
            .unwrap();
        assert_eq!(
            lines[leak_at + 1],
            "    grew in 2/2 intervals, +1.0 KiB/min, oldest live 2 s"
        );
        assert!(lines[leak_at + 2].ends_with(" leaky (?)"), "{text}");
    }

    #[test]
    fn inlined_frames_and_unnamed_files() {
        let mut s = stack("x", Verdict::Leak, &[0, 1]);
        let frame = |name: &str, line, inlined| crate::model::Frame {
            address: 0x7f00_1234,
            function: Some(name.into()),
            file: Some("./intl/localealias.c".into()),
            line: Some(line),
            module: Some("/lib/libc.so.6".into()),
            inlined,
            language: None,
            column: None,
        };
        s.frames = vec![
            frame("extend_alias_table", 401, true),
            frame("read_alias_file", 313, false),
        ];
        let mut r = report(vec![s]);
        r.unnamed_frames = vec![crate::model::UnnamedFrames {
            module: "/usr/bin/memcached".into(),
            frames: 14,
            hint: "install memcached-dbgsym or point DEBUGINFOD_URLS at a debuginfod server".into(),
        }];
        let text = render(&r, 10);
        assert!(
            text.contains(
                "    0x00007f001234 extend_alias_table at ./intl/localealias.c:401 (libc.so.6) \
                 [inlined]\n    0x00007f001234 read_alias_file at ./intl/localealias.c:313 \
                 (libc.so.6)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "\nmemcached: 14 frames unnamed: install memcached-dbgsym or point \
                 DEBUGINFOD_URLS at a debuginfod server\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn interpreter_frames_in_a_row_are_printed_once() {
        let mut s = stack("x", Verdict::Leak, &[0, 1]);
        let frame = |name: &str| crate::model::Frame {
            address: 0x1000,
            function: Some(name.into()),
            file: None,
            line: None,
            module: None,
            inlined: false,
            language: None,
            column: None,
        };
        s.frames = vec![
            frame("PyMem_Malloc"),
            frame("_PyEval_EvalFrameDefault"),
            frame("_PyEval_EvalFrameDefault"),
            frame("_PyEval_EvalFrameDefault"),
            frame("main"),
        ];
        let text = render(&report(vec![s]), 10);
        let eval: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("_PyEval_EvalFrameDefault"))
            .collect();
        assert_eq!(eval.len(), 2, "{text}");
        assert!(
            eval[1].ends_with("... _PyEval_EvalFrameDefault ×3 in a row"),
            "{text}"
        );
        assert!(text.contains(" main (?)"), "{text}");
    }

    #[test]
    fn oom_kill_line() {
        let k = OomKill {
            t: 1.5,
            time: "2026-01-01T00:00:00.000Z".into(),
            pid: 77,
            comm: "oom_leak".into(),
            uid: 1000,
            trigger_pid: 77,
            total_vm_bytes: 70000 << 10,
            anon_rss_bytes: 64 << 20,
            file_rss_bytes: 0,
            shmem_rss_bytes: 0,
            pgtables_bytes: 0,
            oom_score_adj: 0,
            cgroup: None,
            container: Some(Container {
                runtime: "docker".into(),
                id: "b".repeat(64),
                pod_uid: None,
            }),
            traced: false,
            traced_outstanding_bytes: 0,
            top_stacks: Vec::new(),
        };
        let l = oom_line(&k);
        assert!(
            l.starts_with("OOM kill: pid 77 (oom_leak) uid 1000 anon-rss 64.0 MiB"),
            "{l}"
        );
        assert!(l.contains("container docker bbbbbbbbbbbb"), "{l}");
        assert!(!l.contains("triggered"), "{l}");
    }
}

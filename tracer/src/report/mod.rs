//! The report model: one serde structure that every renderer reads, built
//! from the aggregated series, their analysis (verdicts), the targets'
//! memory series, the loss counters and symbolized stacks.

pub mod diff;
pub mod folded;
pub mod json;
pub mod live;
pub mod pprof;
pub mod svg;
pub mod text;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tracer_common::Stat;

use crate::{
    aggregate::{Aggregator, StackKind, StackSeries, AGE_BUCKETS, AGE_EDGES},
    analysis::{self, Analysis, Verdict},
    cli::{SortBy, Weight},
    symbolize::{Frame, Symbolizer},
};

/// Bumped when a field changes meaning or disappears.
pub const REPORT_VERSION: u32 = 2;

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    pub duration_secs: f64,
    pub interval_secs: f64,
    /// How `stacks` are ordered.
    pub sort: SortBy,
    /// With `--min-age`: stacks count only allocations at least this old.
    pub min_age_secs: Option<f64>,
    pub targets: Vec<TargetReport>,
    pub totals: Totals,
    pub losses: Losses,
    pub counters: Counters,
    /// Processes the kernel's OOM killer chose while memtrace ran, in
    /// order, with what held their memory when they were traced.
    #[serde(default)]
    pub oom_kills: Vec<OomKill>,
    /// With --all: what tracing cost the node.
    #[serde(default)]
    pub overhead: Option<crate::overhead::Overhead>,
    /// With --sample-bytes: the mean bytes between samples; heap bytes and
    /// counts are then unbiased estimates.
    #[serde(default)]
    pub sample_bytes: Option<u64>,
    /// How allocation functions were probed (None: not traced, or a report
    /// from before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<ProbesReport>,
    /// How heap stacks were walked, and how many came out truncated.
    #[serde(default)]
    pub unwind: Option<UnwindReport>,
    pub stacks: Vec<StackReport>,
}

/// How allocation functions were probed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbesReport {
    /// `session`: uprobe session programs, whose unsampled calls skip their
    /// return probe (kernels 6.13+); `classic`: an entry uprobe and a
    /// uretprobe per function.
    pub path: String,
    /// The same in words (for `classic`, why).
    pub detail: String,
}

/// How the heap stacks were walked (`--unwind`) and where walks fell short.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnwindReport {
    pub mode: crate::cli::Unwind,
    /// Distinct heap stacks whose walk stopped before the outermost frame
    /// (the frame limit, an unreadable frame, code the walker could not
    /// step through), of `heap_stacks`.
    pub truncated_stacks: u64,
    pub heap_stacks: u64,
    /// Allocations whose stack walk was truncated.
    pub truncated_walks: u64,
    /// Frames stepped by frame pointer for want of a table: JIT code (no
    /// file), a library mapped since memtrace last read the mappings.
    pub frames_without_table: u64,
    /// The tables loaded (None with `--unwind fp`).
    pub tables: Option<crate::unwind::UnwindStats>,
}

/// A process the kernel's OOM killer chose (`oom/mark_victim`), and, when
/// memtrace traced it, the stacks holding its memory at that moment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OomKill {
    /// Seconds since tracing started.
    pub t: f64,
    /// Wall-clock time of the kill (RFC 3339, UTC).
    pub time: String,
    pub pid: u32,
    pub comm: String,
    pub uid: u32,
    /// The process whose allocation made the kernel kill (often the victim).
    pub trigger_pid: u32,
    /// The victim's memory when it was chosen, as the kernel reports it.
    pub total_vm_bytes: u64,
    pub anon_rss_bytes: u64,
    pub file_rss_bytes: u64,
    pub shmem_rss_bytes: u64,
    pub pgtables_bytes: u64,
    pub oom_score_adj: i32,
    /// Its cgroup (None when it was gone before memtrace could read it and
    /// was not traced).
    pub cgroup: Option<String>,
    pub container: Option<crate::cgroup::Container>,
    /// Whether memtrace traced it (only then are there stacks).
    pub traced: bool,
    /// Outstanding bytes of all its traced stacks when it was chosen.
    pub traced_outstanding_bytes: u64,
    /// Its stacks holding the most memory then, largest first.
    pub top_stacks: Vec<StackReport>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TargetReport {
    pub pid: u32,
    pub comm: String,
    pub exe: Option<String>,
    /// Its cgroup and the container that shows (watching modes; None when
    /// not known).
    #[serde(default)]
    pub cgroup: Option<String>,
    #[serde(default)]
    pub container: Option<crate::cgroup::Container>,
    /// Whether the process exited before the report.
    pub exited: bool,
    /// Allocator files hooked in it.
    pub allocators: Vec<String>,
    /// What its traced stacks hold at the end (all of them, not only the
    /// ones shown), and how many of those grow (verdict leak or growing).
    #[serde(default)]
    pub outstanding_bytes: u64,
    #[serde(default)]
    pub stacks_holding_memory: u64,
    #[serde(default)]
    pub growing_stacks: u64,
    /// Its resident memory over time (None when /proc could not tell).
    pub memory: Option<MemoryReport>,
}

/// One reading of a process's resident memory.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemorySample {
    /// Seconds since tracing started.
    pub t: f64,
    pub rss_bytes: u64,
    /// Anonymous resident memory (heap, anonymous mappings).
    pub anon_bytes: u64,
    /// Outstanding bytes of its traced stacks at that time.
    pub traced_bytes: u64,
}

/// A process's resident memory over the run and how much of its growth the
/// traced stacks explain.
#[derive(Debug, Serialize, Deserialize)]
pub struct MemoryReport {
    pub samples: Vec<MemorySample>,
    pub rss_growth_bytes_per_hour: f64,
    pub anon_growth_bytes_per_hour: f64,
    pub traced_growth_bytes_per_hour: f64,
    /// Traced growth / anonymous RSS growth (None while anonymous RSS does
    /// not grow). Above 1 when traced blocks are not all touched yet.
    pub explained_share: Option<f64>,
    /// RSS grows faster than the threshold (`--rss-alert`).
    pub alert: bool,
    pub alert_threshold_bytes_per_hour: f64,
}

impl MemoryReport {
    pub fn new(samples: Vec<MemorySample>, threshold_per_hour: f64) -> MemoryReport {
        let per_hour = |f: fn(&MemorySample) -> u64| {
            let points: Vec<(f64, f64)> = samples.iter().map(|s| (s.t, f(s) as f64)).collect();
            (analysis::analyse_points(&points, None), 3600.0)
        };
        let (rss, h) = per_hour(|s| s.rss_bytes);
        let (anon, _) = per_hour(|s| s.anon_bytes);
        let (traced, _) = per_hour(|s| s.traced_bytes);
        let rss_rate = rss.growth_bytes_per_sec * h;
        let anon_rate = anon.growth_bytes_per_sec * h;
        let traced_rate = traced.growth_bytes_per_sec * h;
        let grows = |a: &Analysis| matches!(a.verdict, Verdict::Leak | Verdict::Growing);
        MemoryReport {
            rss_growth_bytes_per_hour: rss_rate,
            anon_growth_bytes_per_hour: anon_rate,
            traced_growth_bytes_per_hour: traced_rate,
            explained_share: (grows(&anon) && anon_rate > 0.0).then(|| traced_rate / anon_rate),
            alert: grows(&rss) && rss_rate > threshold_per_hour,
            alert_threshold_bytes_per_hour: threshold_per_hour,
            samples,
        }
    }
}

/// Sums over every stack (not only the ones shown).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Totals {
    pub outstanding_bytes: u64,
    pub outstanding_allocations: u64,
    pub allocations: u64,
    pub frees: u64,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    /// Stacks seen while tracing.
    pub stacks: u64,
    /// Stacks with outstanding memory at the end.
    pub stacks_holding_memory: u64,
}

/// Events memtrace could not account. Non-zero values mean the report is
/// incomplete (never inflated: a lost allocation is missing, a lost free
/// cannot create a leak).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Losses {
    /// Allocations not recorded: live-allocation table full (`--max-live`).
    pub live_map_full: u64,
    /// Allocations whose stack could not be captured (stack table full or
    /// hash collision): counted under an unknown stack.
    pub stack_lost: u64,
    /// Allocations not recorded: per-stack table full (`--max-stacks`).
    pub stack_totals_full: u64,
    /// Allocator returns seen without their entry (attached mid-call).
    pub return_without_entry: u64,
    /// Allocator calls that never returned (longjmp) and were discarded.
    pub stale_entry: u64,
    /// Allocator calls not traced: in-flight table full.
    pub inflight_full: u64,
    /// Mapping events dropped: ring buffer full.
    pub ring_buffer_full: u64,
    /// Addresses handed out again while still recorded live: a free was
    /// missed (an unprobed path); the old block was counted as freed.
    pub address_reused: u64,
    /// Processes forked by targets that could not be followed: the kernel's
    /// target table was full.
    #[serde(default)]
    pub targets_full: u64,
    /// New stacks that got no series: memtrace's table of stacks
    /// (`--max-stacks`) was full of stacks holding memory. Their bytes are
    /// in the totals, under no stack.
    #[serde(default)]
    pub series_full: u64,
    /// Anonymous mappings not recorded: the table of live mappings
    /// (`--max-live`) was full.
    #[serde(default)]
    pub mapping_table_full: u64,
}

impl Losses {
    pub fn nonzero(&self) -> Vec<(&'static str, u64)> {
        [
            ("live_map_full", self.live_map_full),
            ("stack_lost", self.stack_lost),
            ("stack_totals_full", self.stack_totals_full),
            ("return_without_entry", self.return_without_entry),
            ("stale_entry", self.stale_entry),
            ("inflight_full", self.inflight_full),
            ("ring_buffer_full", self.ring_buffer_full),
            ("address_reused", self.address_reused),
            ("targets_full", self.targets_full),
            ("series_full", self.series_full),
            ("mapping_table_full", self.mapping_table_full),
        ]
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .collect()
    }
}

/// Informational counters (not losses).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Frees of blocks memtrace never saw allocated: allocated before
    /// tracing started, or by allocator internals (glibc frees its
    /// per-thread caches when threads exit).
    pub free_unknown: u64,
    /// Allocation calls that failed (returned NULL).
    pub failed_allocations: u64,
    /// mmap/mremap calls (attempts, failed ones included) made inside
    /// allocator calls: counted once, as the allocation that caused them.
    pub nested_mappings: u64,
    /// Anonymous mappings the dynamic loader made for itself (not counted).
    pub loader_mappings: u64,
    /// PROT_NONE anonymous mappings: address-space reservations, not memory
    /// (not counted).
    pub reservations: u64,
    /// Allocator calls made inside another probed allocator call (glibc's
    /// realloc(NULL, n) tail-calls malloc): accounted once, by the outer call.
    pub nested_calls: u64,
    /// Watched processes that exited and whose state memtrace dropped
    /// (kernel tables, series, mappings): what keeps a busy node bounded.
    #[serde(default)]
    pub processes_dropped: u64,
    /// Stack series dropped while they held nothing, to keep memtrace's
    /// table of stacks within `--max-stacks` (what they counted stays in
    /// the totals; a heap stack that allocates again gets a new series).
    #[serde(default)]
    pub stacks_evicted: u64,
    /// Unsampled allocator calls whose return probe was skipped (uprobe
    /// session programs with `--sample-bytes`).
    #[serde(default)]
    pub returns_skipped: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackReport {
    pub pid: u32,
    pub kind: StackKind,
    /// Outstanding now (with `--min-age`: only allocations at least that old).
    pub outstanding_bytes: u64,
    pub outstanding_allocations: u64,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub allocations: u64,
    pub frees: u64,
    pub verdict: Verdict,
    pub verdict_reason: String,
    /// Robust (Theil–Sen) slope of the outstanding bytes since the series
    /// left its starting level (for a plateau: over its flat part).
    pub growth_bytes_per_sec: f64,
    pub intervals: u64,
    pub grew_intervals: u64,
    pub early_growth_bytes: i64,
    pub late_growth_bytes: i64,
    /// Age of the oldest live allocation (None when none is live).
    pub oldest_age_secs: Option<f64>,
    /// Live bytes by age.
    pub age_histogram: Vec<AgeBucket>,
    /// Outstanding memory at every sample (bounded: decimated on long runs).
    pub series: Vec<SeriesPoint>,
    /// Innermost first; frames[0] is the function that called the allocator.
    pub frames: Vec<Frame>,
    /// The walk stopped before the outermost frame: outer callers missing.
    #[serde(default)]
    pub truncated: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgeBucket {
    pub min_secs: f64,
    /// None for the last, open-ended bucket.
    pub max_secs: Option<f64>,
    pub bytes: u64,
    pub allocations: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeriesPoint {
    pub t: f64,
    pub bytes: u64,
    pub allocations: u64,
}

/// Inputs of a report other than the aggregated stacks.
pub struct ReportContext<'a> {
    pub duration_secs: f64,
    pub interval_secs: f64,
    pub targets: Vec<TargetReport>,
    pub stats: &'a [u64],
    pub loader_mappings: u64,
    pub processes_dropped: u64,
    pub mapping_table_full: u64,
    pub top: usize,
    pub sort: SortBy,
    pub min_age_secs: Option<f64>,
    pub oom_kills: Vec<OomKill>,
    pub overhead: Option<crate::overhead::Overhead>,
    pub sample_bytes: Option<u64>,
    /// How allocation functions were probed.
    pub probes: Option<ProbesReport>,
    /// `--unwind` and the unwinder's tables (None when heap stacks were not
    /// traced).
    pub unwind: Option<(crate::cli::Unwind, Option<crate::unwind::UnwindStats>)>,
}

/// A stack's analysis and the outstanding memory the report shows for it.
pub struct Ranked<'a> {
    pub series: &'a StackSeries,
    pub analysis: Analysis,
    pub bytes: u64,
    pub allocations: u64,
}

/// Analyses every stack holding memory (at least `min_age` old, if given)
/// and orders them by `sort`; ties by outstanding bytes.
pub fn rank(agg: &Aggregator, sort: SortBy, min_age_secs: Option<f64>) -> Vec<Ranked<'_>> {
    rank_where(agg, sort, min_age_secs, |_| true)
}

/// [`rank`] of the stacks `keep` selects.
fn rank_where(
    agg: &Aggregator,
    sort: SortBy,
    min_age_secs: Option<f64>,
    keep: impl Fn(&StackSeries) -> bool,
) -> Vec<Ranked<'_>> {
    let mut ranked: Vec<Ranked<'_>> = agg
        .stacks
        .iter()
        .filter(|s| keep(s))
        .filter_map(|s| {
            let (bytes, allocations) = match min_age_secs {
                Some(_) => (s.ages.old_bytes, s.ages.old_allocations),
                None => (s.outstanding_bytes(), s.outstanding_allocations()),
            };
            (bytes > 0).then(|| Ranked {
                series: s,
                analysis: analysis::analyse(&s.samples, oldest_age(s)),
                bytes,
                allocations,
            })
        })
        .collect();
    ranked.sort_by(|a, b| {
        let primary = match sort {
            SortBy::Growth => b
                .analysis
                .growth_bytes_per_sec
                .total_cmp(&a.analysis.growth_bytes_per_sec),
            SortBy::Outstanding => std::cmp::Ordering::Equal,
            SortBy::Count => b.allocations.cmp(&a.allocations),
        };
        primary.then(b.bytes.cmp(&a.bytes))
    });
    ranked
}

/// Age of a stack's oldest live allocation, if it has live allocations
/// with known ages.
fn oldest_age(s: &StackSeries) -> Option<f64> {
    (s.ages.allocations.iter().sum::<u64>() > 0).then_some(s.ages.oldest_secs)
}

/// The `top` stacks of process `pid` holding the most memory now, and what
/// all its stacks hold (what an OOM kill report shows of the victim).
pub fn largest_stacks_of(
    agg: &Aggregator,
    symbolizer: &mut Symbolizer,
    pid: u32,
    top: usize,
) -> (Vec<StackReport>, u64) {
    let ranked = rank_where(agg, SortBy::Outstanding, None, |s| s.identity.pid == pid);
    let total = ranked.iter().map(|r| r.bytes).sum();
    let stacks = ranked
        .into_iter()
        .take(top)
        .map(|r| stack_report(r, symbolizer))
        .collect();
    (stacks, total)
}

pub fn build(ctx: ReportContext<'_>, agg: &Aggregator, symbolizer: &mut Symbolizer) -> Report {
    let stat = |s: Stat| ctx.stats.get(s as usize).copied().unwrap_or(0);
    let mut totals = Totals::default();
    for s in &agg.stacks {
        totals.outstanding_bytes += s.outstanding_bytes();
        totals.outstanding_allocations += s.outstanding_allocations();
        totals.allocations += s.totals.allocations;
        totals.frees += s.totals.frees;
        totals.allocated_bytes += s.totals.allocated_bytes;
        totals.freed_bytes += s.totals.freed_bytes;
        totals.stacks += 1;
        totals.stacks_holding_memory += u64::from(s.outstanding_bytes() > 0);
    }
    let departed = agg.departed();
    let d = departed.totals;
    totals.outstanding_bytes += d.allocated_bytes.saturating_sub(d.freed_bytes);
    totals.outstanding_allocations += d.allocations.saturating_sub(d.frees);
    totals.allocations += d.allocations;
    totals.frees += d.frees;
    totals.allocated_bytes += d.allocated_bytes;
    totals.freed_bytes += d.freed_bytes;
    totals.stacks += departed.stacks;
    totals.stacks_holding_memory += departed.holding_memory;
    let ranked = rank(agg, ctx.sort, ctx.min_age_secs);
    let mut targets = ctx.targets;
    let mut per_pid: HashMap<u32, (u64, u64, u64)> = HashMap::new();
    for r in &ranked {
        let e = per_pid.entry(r.series.identity.pid).or_default();
        e.0 += r.bytes;
        e.1 += 1;
        e.2 += u64::from(matches!(
            r.analysis.verdict,
            Verdict::Leak | Verdict::Growing
        ));
    }
    for t in &mut targets {
        let (bytes, stacks, growing) = per_pid.get(&t.pid).copied().unwrap_or_default();
        t.outstanding_bytes = bytes;
        t.stacks_holding_memory = stacks;
        t.growing_stacks = growing;
    }
    let stacks = ranked
        .into_iter()
        .take(ctx.top)
        .map(|r| stack_report(r, symbolizer))
        .collect();
    Report {
        version: REPORT_VERSION,
        duration_secs: ctx.duration_secs,
        interval_secs: ctx.interval_secs,
        sort: ctx.sort,
        min_age_secs: ctx.min_age_secs,
        targets,
        totals,
        losses: Losses {
            live_map_full: stat(Stat::LiveMapFull),
            stack_lost: stat(Stat::StackLost),
            stack_totals_full: stat(Stat::StackTotalsFull),
            return_without_entry: stat(Stat::ReturnWithoutEntry),
            stale_entry: stat(Stat::StaleEntry),
            inflight_full: stat(Stat::InFlightFull),
            ring_buffer_full: stat(Stat::RingBufFull),
            address_reused: stat(Stat::AddressReused),
            targets_full: stat(Stat::TargetsFull),
            series_full: agg.series_full,
            mapping_table_full: ctx.mapping_table_full,
        },
        counters: Counters {
            free_unknown: stat(Stat::FreeUnknown),
            failed_allocations: stat(Stat::FailedAlloc),
            nested_mappings: stat(Stat::NestedMapping),
            loader_mappings: ctx.loader_mappings,
            reservations: stat(Stat::Reservation),
            nested_calls: stat(Stat::NestedCall),
            processes_dropped: ctx.processes_dropped,
            stacks_evicted: agg.evicted,
            returns_skipped: stat(Stat::ReturnSkipped),
        },
        oom_kills: ctx.oom_kills,
        overhead: ctx.overhead,
        sample_bytes: ctx.sample_bytes,
        probes: ctx.probes,
        unwind: ctx.unwind.map(|(mode, tables)| UnwindReport {
            mode,
            // Series whose kernel stacks were all folded into a complete
            // walk's count no more.
            truncated_stacks: agg
                .stacks
                .iter()
                .filter(|s| s.truncated && !s.keys.is_empty())
                .count() as u64,
            heap_stacks: agg
                .stacks
                .iter()
                .filter(|s| s.identity.kind == StackKind::Heap && !s.keys.is_empty())
                .count() as u64,
            truncated_walks: stat(Stat::StackTruncated),
            frames_without_table: stat(Stat::UnwindNoTable),
            tables,
        }),
        stacks,
    }
}

/// How many of `stacks` have each verdict, most severe first: "1 leak,
/// 2 plateau" (with `zeros`, every verdict is named, none or not).
pub fn verdict_counts<'a>(
    stacks: impl IntoIterator<Item = &'a StackReport>,
    zeros: bool,
) -> String {
    const ALL: [Verdict; 4] = [
        Verdict::Leak,
        Verdict::Growing,
        Verdict::Plateau,
        Verdict::Stable,
    ];
    let mut counts = [0usize; ALL.len()];
    for s in stacks {
        if let Some(i) = ALL.iter().position(|v| *v == s.verdict) {
            counts[i] += 1;
        }
    }
    ALL.iter()
        .zip(counts)
        .filter(|&(_, n)| zeros || n > 0)
        .map(|(v, n)| format!("{n} {}", text::name_of(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads a JSON report saved earlier (a snapshot) for offline rendering.
pub fn load(path: &std::path::Path) -> anyhow::Result<Report> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// Parses the text of a JSON report; `name` names it in errors.
pub fn parse(text: &str, name: &str) -> anyhow::Result<Report> {
    use anyhow::Context;
    let version = serde_json::from_str::<serde_json::Value>(text)
        .with_context(|| format!("{name} is not JSON"))?
        .get("version")
        .and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(REPORT_VERSION)) {
        anyhow::bail!(
            "{name} is not a memtrace JSON report of version {REPORT_VERSION} (found version {})",
            version.map_or("none".to_string(), |v| v.to_string())
        );
    }
    serde_json::from_str(text).with_context(|| format!("{name} is not a valid memtrace report"))
}

/// A frame's name in stack-based formats (folded, flamegraph, pprof
/// functions, diff keys): the function, else `module+0xaddress`, else the
/// address.
pub fn frame_name(f: &Frame) -> String {
    match (&f.function, &f.module) {
        (Some(function), _) => function.clone(),
        (None, Some(module)) => format!(
            "{}+{:#x}",
            module.rsplit('/').next().unwrap_or(module),
            f.address
        ),
        (None, None) => format!("{:#x}", f.address),
    }
}

/// A stack's weight in stack-based formats (0 leaves it out).
pub fn weight(s: &StackReport, weight: Weight) -> u64 {
    match weight {
        Weight::Outstanding => s.outstanding_bytes,
        Weight::Growth => (s.growth_bytes_per_sec * 3600.0).round().max(0.0) as u64,
        Weight::Allocated => s.allocated_bytes,
        Weight::Count => s.outstanding_allocations,
    }
}

fn stack_report(r: Ranked<'_>, symbolizer: &mut Symbolizer) -> StackReport {
    let s = r.series;
    let a = r.analysis;
    let age_histogram = (0..AGE_BUCKETS)
        .map(|i| AgeBucket {
            min_secs: if i == 0 { 0.0 } else { AGE_EDGES[i - 1] },
            max_secs: AGE_EDGES.get(i).copied(),
            bytes: s.ages.bytes[i],
            allocations: s.ages.allocations[i],
        })
        .collect();
    StackReport {
        pid: s.identity.pid,
        kind: s.identity.kind,
        outstanding_bytes: r.bytes,
        outstanding_allocations: r.allocations,
        allocated_bytes: s.totals.allocated_bytes,
        freed_bytes: s.totals.freed_bytes,
        allocations: s.totals.allocations,
        frees: s.totals.frees,
        verdict: a.verdict,
        verdict_reason: a.reason,
        growth_bytes_per_sec: a.growth_bytes_per_sec,
        intervals: a.intervals,
        grew_intervals: a.grew_intervals,
        early_growth_bytes: a.early_growth_bytes,
        late_growth_bytes: a.late_growth_bytes,
        oldest_age_secs: oldest_age(s),
        age_histogram,
        series: s
            .samples
            .iter()
            .map(|p| SeriesPoint {
                t: p.t,
                bytes: p.bytes,
                allocations: p.count,
            })
            .collect(),
        frames: symbolizer.frames(s.identity.pid, &s.identity.frames),
        truncated: s.truncated,
    }
}

/// Small reports for the renderers' unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::{aggregate::StackKind, analysis::Verdict, cli::SortBy, symbolize::Frame};

    /// A live target without memory series.
    pub fn target(pid: u32, comm: &str) -> TargetReport {
        TargetReport {
            pid,
            comm: comm.into(),
            exe: None,
            cgroup: None,
            container: None,
            exited: false,
            allocators: Vec::new(),
            outstanding_bytes: 0,
            stacks_holding_memory: 0,
            growing_stacks: 0,
            memory: None,
        }
    }

    pub fn stack(function: &str, verdict: Verdict, series: &[u64]) -> StackReport {
        StackReport {
            pid: 7,
            kind: StackKind::Heap,
            outstanding_bytes: *series.last().unwrap(),
            outstanding_allocations: 3,
            allocated_bytes: 0,
            freed_bytes: 0,
            allocations: 3,
            frees: 0,
            verdict,
            verdict_reason: String::new(),
            growth_bytes_per_sec: 1024.0 / 60.0,
            intervals: 0,
            grew_intervals: 0,
            early_growth_bytes: 0,
            late_growth_bytes: 0,
            oldest_age_secs: None,
            age_histogram: Vec::new(),
            series: series
                .iter()
                .enumerate()
                .map(|(i, &bytes)| SeriesPoint {
                    t: i as f64,
                    bytes,
                    allocations: 0,
                })
                .collect(),
            frames: ["leaky", "main"]
                .iter()
                .map(|f| Frame {
                    address: 0x1000,
                    function: Some(f.to_string()),
                    file: None,
                    line: None,
                    module: None,
                })
                .take(if function.is_empty() { 0 } else { 2 })
                .collect(),
            truncated: false,
        }
    }

    pub fn report(stacks: Vec<StackReport>) -> Report {
        Report {
            version: 2,
            duration_secs: 12.0,
            interval_secs: 1.0,
            sort: SortBy::Growth,
            min_age_secs: None,
            targets: Vec::new(),
            totals: Totals {
                outstanding_bytes: 2048,
                stacks_holding_memory: 2,
                ..Totals::default()
            },
            losses: Losses::default(),
            oom_kills: Vec::new(),
            overhead: None,
            sample_bytes: None,
            probes: None,
            unwind: None,
            counters: Counters::default(),
            stacks,
        }
    }
}

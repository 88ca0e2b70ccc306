//! The report model made from what was accounted: every stack analysed
//! and ranked, the top ones with their evidence (series, ages, frames), the
//! totals over all, the targets' memory judged, the loss counters. The
//! model itself is the `memtrace-report` crate.

use std::collections::HashMap;

use memtrace_report::{
    AgeBucket, Counters, Frame, KindTotals, Losses, MemoryReport, MemorySample, OomKill, Overhead,
    Peak, ProbesReport, Report, SeriesPoint, SortBy, StackKind, StackReport, TargetReport, Totals,
    Unwind, UnwindReport, UnwindStats, Verdict, REPORT_VERSION,
};
use tracer_common::Stat;

use super::{
    series::{self, Aggregator, StackSeries, AGE_BUCKETS, AGE_EDGES},
    verdict::{self, Analysis},
};

/// Resolves a process's return addresses (innermost first) to frames.
pub type Frames<'a> = dyn FnMut(u32, &[u64]) -> Vec<Frame> + 'a;

/// A process's memory series judged: its growth rates, how much of the
/// anonymous growth the traced stacks explain, and the `--rss-alert`;
/// `peak_rss` is the highest RSS read and when (the samples kept may have
/// been decimated past it).
pub fn memory_report(
    samples: Vec<MemorySample>,
    threshold_per_hour: f64,
    peak_rss: Option<(u64, f64)>,
) -> MemoryReport {
    // The highest RSS, the earliest time it was read at.
    let (peak_rss_bytes, peak_rss_t) = samples
        .iter()
        .map(|s| (s.rss_bytes, s.t))
        .chain(peak_rss)
        .fold((0, 0.0), |max, p| {
            match p.0 > max.0 || p.0 == max.0 && p.1 < max.1 {
                true => p,
                false => max,
            }
        });
    let per_hour = |f: fn(&MemorySample) -> u64| {
        let points: Vec<(f64, f64)> = samples.iter().map(|s| (s.t, f(s) as f64)).collect();
        (verdict::analyse_points(&points, None), 3600.0)
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
        peak_rss_bytes,
        peak_rss_t,
        samples,
    }
}

/// Inputs of a report other than the aggregated stacks.
pub struct ReportContext<'a> {
    pub duration_secs: f64,
    pub interval_secs: f64,
    pub targets: Vec<TargetReport>,
    pub stats: &'a [u64],
    pub loader_mappings: u64,
    pub processes_dropped: u64,
    /// Kernel stacks taken out of the table (see `trace::recycle`).
    pub stacks_recycled: u64,
    pub mapping_table_full: u64,
    pub top: usize,
    pub sort: SortBy,
    /// List the stacks that held memory at a sample, not only the ones
    /// holding memory at the end (`--sort peak`, `--weight peak`).
    pub by_peak: bool,
    pub min_age_secs: Option<f64>,
    pub oom_kills: Vec<OomKill>,
    pub overhead: Option<Overhead>,
    pub sample_bytes: Option<u64>,
    /// How allocation functions were probed.
    pub probes: Option<ProbesReport>,
    /// `--unwind` and the unwinder's tables (None when heap stacks were not
    /// traced).
    pub unwind: Option<(Unwind, Option<UnwindStats>)>,
}

/// A stack's analysis and the outstanding memory the report shows for it.
pub struct Ranked<'a> {
    pub series: &'a StackSeries,
    pub analysis: Analysis,
    pub bytes: u64,
    pub allocations: u64,
}

impl Ranked<'_> {
    /// The stack's growth rate, 0 without the intervals one needs.
    fn rate(&self) -> f64 {
        match self.analysis.rated {
            true => self.analysis.growth_bytes_per_sec,
            false => 0.0,
        }
    }
}

/// Analyses every stack holding memory (at least `min_age` old, if given)
/// and orders them by `sort`; ties by outstanding bytes. `by_peak`: also
/// the stacks that hold nothing now but held memory at a sample.
pub fn rank(
    agg: &Aggregator,
    sort: SortBy,
    min_age_secs: Option<f64>,
    by_peak: bool,
) -> Vec<Ranked<'_>> {
    rank_where(agg, sort, min_age_secs, |s| {
        by_peak && s.peak.bytes > 0 || holds(s, min_age_secs).0 > 0
    })
}

/// What a stack holds, as the report counts it: bytes and allocations
/// outstanding (only those at least `min_age` old, if given).
fn holds(s: &StackSeries, min_age_secs: Option<f64>) -> (u64, u64) {
    match min_age_secs {
        Some(_) => (s.ages.old_bytes, s.ages.old_allocations),
        None => (s.outstanding_bytes(), s.outstanding_allocations()),
    }
}

/// Analyses the stacks `keep` selects and orders them by `sort`; ties by
/// outstanding bytes.
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
        .map(|s| {
            let (bytes, allocations) = holds(s, min_age_secs);
            Ranked {
                series: s,
                analysis: verdict::analyse(&s.samples, oldest_age(s), s.noise_bytes),
                bytes,
                allocations,
            }
        })
        .collect();
    ranked.sort_by(|a, b| {
        let primary = match sort {
            // A stack without a rate ranks as 0: among the others by what
            // it holds; on a run too short for any rate, all by that.
            SortBy::Growth => b.rate().total_cmp(&a.rate()),
            SortBy::Outstanding => std::cmp::Ordering::Equal,
            SortBy::Count => b.allocations.cmp(&a.allocations),
            SortBy::Peak => b.series.peak.bytes.cmp(&a.series.peak.bytes),
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
    frames: &mut Frames<'_>,
    pid: u32,
    top: usize,
) -> (Vec<StackReport>, u64) {
    let ranked = rank_where(agg, SortBy::Outstanding, None, |s| {
        s.identity.pid == pid && s.outstanding_bytes() > 0
    });
    let total = ranked.iter().map(|r| r.bytes).sum();
    let stacks = ranked
        .into_iter()
        .take(top)
        .map(|r| stack_report(r, frames))
        .collect();
    (stacks, total)
}

pub fn build(ctx: ReportContext<'_>, agg: &Aggregator, frames: &mut Frames<'_>) -> Report {
    let stat = |s: Stat| ctx.stats.get(s as usize).copied().unwrap_or(0);
    let mut totals = Totals::default();
    for s in &agg.stacks {
        let t = &s.totals;
        totals.add(
            s.identity.kind,
            &KindTotals {
                outstanding_bytes: s.outstanding_bytes(),
                outstanding_allocations: s.outstanding_allocations(),
                allocations: t.allocations,
                frees: t.frees,
                allocated_bytes: t.allocated_bytes,
                freed_bytes: t.freed_bytes,
                stacks: 1,
                stacks_holding_memory: u64::from(s.outstanding_bytes() > 0),
            },
        );
    }
    // Stacks without a series: dormant heap stacks, evicted mapping ones.
    let departed = agg.departed();
    for (kind, d) in [
        (StackKind::Heap, departed.heap),
        (StackKind::Mmap, departed.mmap),
    ] {
        let t = d.totals;
        if d.stacks > 0 {
            totals.add(
                kind,
                &KindTotals {
                    outstanding_bytes: t.allocated_bytes.saturating_sub(t.freed_bytes),
                    outstanding_allocations: t.allocations.saturating_sub(t.frees),
                    allocations: t.allocations,
                    frees: t.frees,
                    allocated_bytes: t.allocated_bytes,
                    freed_bytes: t.freed_bytes,
                    stacks: d.stacks,
                    stacks_holding_memory: d.holding_memory,
                },
            );
        }
    }
    let by_peak = ctx.by_peak || ctx.sort == SortBy::Peak;
    let ranked = rank(agg, ctx.sort, ctx.min_age_secs, by_peak);
    let mut targets = ctx.targets;
    let mut per_pid: HashMap<u32, (u64, u64, u64)> = HashMap::new();
    for r in &ranked {
        let e = per_pid.entry(r.series.identity.pid).or_default();
        e.0 += r.bytes;
        e.1 += u64::from(r.bytes > 0);
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
        t.peak = agg.peaks.get(&t.pid).map(|p| peak(&p.traced));
    }
    let stacks = ranked
        .into_iter()
        .take(ctx.top)
        .map(|r| stack_report(r, frames))
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
            hold_full: stat(Stat::HoldFull),
            python_no_thread: stat(Stat::PythonNoThread),
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
            stacks_recycled: ctx.stacks_recycled,
            python_truncated: stat(Stat::PythonTruncated),
            returns_skipped: stat(Stat::ReturnSkipped),
            pools_reused: stat(Stat::PoolReused),
            pools_unmapped: stat(Stat::PoolUnmapped),
            stack_ids_moved: stat(Stat::StackIdMoved),
            stepped_probe_runs: stat(Stat::SteppedProbe),
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
        unnamed_frames: Vec::new(),
        listed_by_peak: by_peak,
        stacks,
    }
}

/// A peak as the report shows it.
fn peak(p: &series::Peak) -> Peak {
    Peak {
        bytes: p.bytes,
        allocations: p.count,
        t: p.t,
        bound_bytes: p.bound,
    }
}

fn stack_report(r: Ranked<'_>, frames: &mut Frames<'_>) -> StackReport {
    let s = r.series;
    let rate = r.rate();
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
        growth_bytes_per_sec: rate,
        rated: a.rated,
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
        frames: frames(s.identity.pid, &s.identity.frames),
        truncated: s.truncated,
        peak: Some(peak(&s.peak)),
    }
}

#[cfg(test)]
mod tests {
    use tracer_common::StackKey;

    use super::*;
    use crate::accounting::series::StackTotals;

    #[test]
    fn stacks_that_peaked_are_listed_by_peak() {
        let mut agg = Aggregator::new(10, 100, 0.1);
        let key = |stack_id| StackKey { tgid: 3, stack_id };
        let totals = |allocated_bytes, freed_bytes| StackTotals {
            allocated_bytes,
            allocations: allocated_bytes / 100,
            freed_bytes,
            frees: freed_bytes / 100,
        };
        for id in 1..=3 {
            agg.intern_heap(key(id), &[u64::from(id)], false);
        }
        // 1: a spike, freed; 2: a small leak; 3: held and freed at once.
        agg.update_heap(key(1), totals(5000, 0));
        agg.update_heap(key(2), totals(300, 0));
        agg.sample(1.0, |_| false);
        agg.update_heap(key(1), totals(5000, 5000));
        agg.update_heap(key(3), totals(200, 200));
        agg.sample(2.0, |_| false);
        let listed = |sort, by_peak| -> Vec<(u64, u64)> {
            rank(&agg, sort, None, by_peak)
                .iter()
                .map(|r| (r.series.identity.frames[0], r.bytes))
                .collect()
        };
        assert_eq!(listed(SortBy::Outstanding, false), [(2, 300)]);
        assert_eq!(listed(SortBy::Outstanding, true), [(2, 300), (1, 0)]);
        assert_eq!(listed(SortBy::Peak, true), [(1, 0), (2, 300)]);
    }

    #[test]
    fn memory_judged_against_the_alert_threshold() {
        let mib = 1048576.0;
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
        let m = memory_report(samples, 50.0 * mib, Some((102 << 20, 1800.0)));
        assert_eq!(m.rss_growth_bytes_per_hour, 100.0 * mib);
        assert_eq!(m.anon_growth_bytes_per_hour, 99.5 * mib);
        assert_eq!(m.traced_growth_bytes_per_hour, 0.0);
        assert_eq!(m.explained_share, Some(0.0));
        assert!(m.alert);
        assert_eq!(m.alert_threshold_bytes_per_hour, 50.0 * mib);
        // The highest RSS read, though no sample kept has it.
        assert_eq!((m.peak_rss_bytes, m.peak_rss_t), (102 << 20, 1800.0));
    }
}

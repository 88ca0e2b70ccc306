//! The report model: one serde structure that every renderer reads, built
//! from the aggregated series, the loss counters and symbolized stacks.

pub mod json;
pub mod text;

use serde::Serialize;
use tracer_common::Stat;

use crate::{
    aggregate::{Aggregator, StackKind},
    analysis::{self, Verdict},
    symbolize::{Frame, Symbolizer},
};

/// Bumped when a field changes meaning or disappears.
pub const REPORT_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct Report {
    pub version: u32,
    pub duration_secs: f64,
    pub interval_secs: f64,
    pub targets: Vec<TargetReport>,
    pub totals: Totals,
    pub losses: Losses,
    pub counters: Counters,
    pub stacks: Vec<StackReport>,
}

#[derive(Debug, Serialize)]
pub struct TargetReport {
    pub pid: u32,
    pub comm: String,
    pub exe: Option<String>,
    /// Whether the process exited before the report.
    pub exited: bool,
    /// Allocator files hooked in it.
    pub allocators: Vec<String>,
}

/// Sums over every stack (not only the ones shown).
#[derive(Debug, Default, Serialize)]
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
#[derive(Debug, Default, Serialize)]
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
        ]
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .collect()
    }
}

/// Informational counters (not losses).
#[derive(Debug, Default, Serialize)]
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
}

#[derive(Debug, Serialize)]
pub struct StackReport {
    pub pid: u32,
    pub kind: StackKind,
    pub outstanding_bytes: u64,
    pub outstanding_allocations: u64,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub allocations: u64,
    pub frees: u64,
    pub growth_bytes_per_sec: f64,
    pub verdict: Verdict,
    /// Innermost first; frames[0] is the function that called the allocator.
    pub frames: Vec<Frame>,
}

/// Inputs of a report other than the aggregated stacks.
pub struct ReportContext<'a> {
    pub duration_secs: f64,
    pub interval_secs: f64,
    pub targets: Vec<TargetReport>,
    pub stats: &'a [u64],
    pub loader_mappings: u64,
    pub top: usize,
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
    let mut order: Vec<usize> = (0..agg.stacks.len())
        .filter(|&i| agg.stacks[i].outstanding_bytes() > 0)
        .collect();
    order.sort_by_key(|&i| std::cmp::Reverse(agg.stacks[i].outstanding_bytes()));
    let stacks = order
        .into_iter()
        .take(ctx.top)
        .map(|i| {
            let s = &agg.stacks[i];
            let growth = analysis::growth_bytes_per_sec(&s.samples);
            StackReport {
                pid: s.identity.pid,
                kind: s.identity.kind,
                outstanding_bytes: s.outstanding_bytes(),
                outstanding_allocations: s.outstanding_allocations(),
                allocated_bytes: s.totals.allocated_bytes,
                freed_bytes: s.totals.freed_bytes,
                allocations: s.totals.allocations,
                frees: s.totals.frees,
                growth_bytes_per_sec: growth,
                verdict: analysis::verdict(&s.samples, growth),
                frames: symbolizer.frames(s.identity.pid, &s.identity.frames),
            }
        })
        .collect();
    Report {
        version: REPORT_VERSION,
        duration_secs: ctx.duration_secs,
        interval_secs: ctx.interval_secs,
        targets: ctx.targets,
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
        },
        counters: Counters {
            free_unknown: stat(Stat::FreeUnknown),
            failed_allocations: stat(Stat::FailedAlloc),
            nested_mappings: stat(Stat::NestedMapping),
            loader_mappings: ctx.loader_mappings,
            reservations: stat(Stat::Reservation),
            nested_calls: stat(Stat::NestedCall),
        },
        stacks,
    }
}

//! Loss and diagnostic counters (`STATS`, one per-CPU slot per
//! `tracer_common::Stat`), bumped by every program module and summed over
//! the CPUs by userspace. Imports no other module of the crate.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use tracer_common::{Stat, STAT_COUNT};

/// Loss and diagnostic counters, indexed by [`Stat`].
#[map]
pub(crate) static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Bumps a loss/diagnostic counter. Per-CPU slot, no atomics needed: ~10 ns.
#[inline(always)]
pub(crate) fn count(stat: Stat) {
    if let Some(slot) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: the slot belongs to this CPU and the program runs with
        // migration disabled.
        unsafe { *slot += 1 };
    }
}

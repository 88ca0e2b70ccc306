//! Reading kernel-side accounting: per-stack totals and loss counters every
//! interval, stack frames for newly seen stack ids, and mapping events from
//! the ring buffer as they arrive.

use std::collections::{hash_map::Entry, HashMap};

use anyhow::{Context, Result};
use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf, StackTraceMap},
    Ebpf,
};
use tracer_common::{
    LiveAlloc, LiveKey, MmapEvent, StackKey, StackTotals, STAT_COUNT, UNKNOWN_STACK,
};

/// Everything the kernel has accumulated, read in one pass.
pub struct KernelTotals {
    pub stacks: Vec<(StackKey, StackTotals)>,
    pub stats: [u64; STAT_COUNT as usize],
}

/// Reads the per-stack totals and the summed per-CPU loss counters.
pub fn read_totals(bpf: &Ebpf) -> Result<KernelTotals> {
    let totals: BpfHashMap<_, StackKey, StackTotals> = BpfHashMap::try_from(
        bpf.map("STACK_TOTALS")
            .context("STACK_TOTALS map missing")?,
    )?;
    // Entries deleted concurrently make the iterator yield an error for
    // that key; skipping it loses nothing (nothing deletes totals today).
    let stacks = totals.iter().filter_map(Result::ok).collect();
    let per_cpu: PerCpuArray<_, u64> =
        PerCpuArray::try_from(bpf.map("STATS").context("STATS map missing")?)?;
    let mut stats = [0u64; STAT_COUNT as usize];
    for (i, slot) in stats.iter_mut().enumerate() {
        *slot = per_cpu.get(&(i as u32), 0)?.iter().sum();
    }
    Ok(KernelTotals { stacks, stats })
}

/// Frames of kernel stack ids, read once per id (ids are never reused while
/// memtrace runs: nothing removes stacks from the map).
#[derive(Default)]
pub struct StackCache {
    frames: HashMap<u32, Vec<u64>>,
}

impl StackCache {
    pub fn frames(&mut self, bpf: &Ebpf, stack_id: u32) -> Result<&[u64]> {
        let frames = match self.frames.entry(stack_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(read_stack(bpf, stack_id)?),
        };
        Ok(frames)
    }
}

/// The frames of a kernel stack id (empty when lost or unknown).
fn read_stack(bpf: &Ebpf, stack_id: u32) -> Result<Vec<u64>> {
    if stack_id == UNKNOWN_STACK {
        return Ok(Vec::new());
    }
    let map: StackTraceMap<_> =
        StackTraceMap::try_from(bpf.map("STACKS").context("STACKS map missing")?)?;
    Ok(match map.get(&stack_id, 0) {
        Ok(trace) => trace.frames().iter().map(|f| f.ip).collect(),
        Err(_) => Vec::new(),
    })
}

/// The ring buffer of mapping events, taken out of the loaded object.
pub fn take_events(bpf: &mut Ebpf) -> Result<RingBuf<MapData>> {
    let map = bpf.take_map("EVENTS").context("EVENTS map missing")?;
    Ok(RingBuf::try_from(map)?)
}

/// Pops every pending mapping event.
pub fn drain_events(ring: &mut RingBuf<MapData>, mut sink: impl FnMut(&MmapEvent)) {
    while let Some(item) = ring.next() {
        if item.len() < size_of::<MmapEvent>() {
            continue;
        }
        // SAFETY: the kernel wrote a whole MmapEvent (plain old data); the
        // read is unaligned-safe.
        let event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<MmapEvent>()) };
        sink(&event);
    }
}

/// After `tgid` called exec (at `exec_ns`), the blocks its old image had
/// outstanding no longer exist. Removes them from the kernel's live table
/// and returns what they amount to per stack, to be counted as released.
/// Blocks the new image allocated since (later timestamps) are kept. One
/// pass over the live table: rare, and bounded by --max-live.
pub fn release_image(
    bpf: &mut Ebpf,
    tgid: u32,
    exec_ns: u64,
) -> Result<Vec<(StackKey, StackTotals)>> {
    let mut live: BpfHashMap<_, LiveKey, LiveAlloc> =
        BpfHashMap::try_from(bpf.map_mut("LIVE").context("LIVE map missing")?)?;
    let old: Vec<(LiveKey, LiveAlloc)> = live
        .iter()
        .filter_map(Result::ok)
        .filter(|(k, v)| k.tgid == tgid && v.timestamp_ns < exec_ns)
        .collect();
    let mut released: HashMap<StackKey, StackTotals> = HashMap::new();
    for (key, block) in old {
        // Already gone means the kernel accounted it (address reused).
        if live.remove(&key).is_ok() {
            let t = released
                .entry(StackKey {
                    tgid,
                    stack_id: block.stack_id,
                })
                .or_default();
            t.freed_bytes += block.size;
            t.frees += 1;
        }
    }
    Ok(released.into_iter().collect())
}

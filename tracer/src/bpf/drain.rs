//! Reading kernel-side accounting: per-stack totals and loss counters every
//! interval, the ages of live allocations, stack frames for newly seen
//! stack ids, mapping and process events from the ring buffer as they
//! arrive, and removing what exited processes left in the kernel's tables.

use std::collections::{hash_map::Entry, HashMap, HashSet};

use anyhow::{Context, Result};
use aya::{
    maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray, RingBuf},
    Ebpf, Pod,
};
use tracer_common::{
    EventKind, MmapEvent, ProcessEvent, PyFrameRef, StackAllocated, StackFrames, StackKey,
    PY_TRUNCATED, STACK_TRUNCATED, STAT_COUNT, UNKNOWN_STACK,
};

use crate::{
    accounting::series::{AgeStats, StackTotals},
    bpf::live_table,
};

/// Everything the kernel has accumulated, read in one pass.
pub struct KernelTotals {
    pub stacks: Vec<(StackKey, StackTotals)>,
    pub stats: [u64; STAT_COUNT as usize],
}

/// What each heap stack had freed at the last read (bytes, blocks): frees
/// are derived, and a derived value comes out low rather than high (see
/// [`read_kernel`]), so a stack's frees are never less than before.
#[derive(Default)]
pub struct Freed(HashMap<StackKey, (u64, u64)>);

impl Freed {
    /// Forgets the stacks of processes whose kernel totals were purged.
    pub fn forget(&mut self, gone: &HashSet<u32>) {
        self.0.retain(|k, _| !gone.contains(&k.tgid));
    }

    /// Forgets stacks whose kernel totals were taken out (they count from
    /// zero if they come back).
    pub fn forget_keys(&mut self, keys: &[StackKey]) {
        for k in keys {
            self.0.remove(k);
        }
    }

    /// The totals of stack `key`, which the kernel counted `allocated` and
    /// whose blocks in the live table add up to `live` (bytes, blocks).
    /// Outstanding is what the table holds, as the ages say: where it
    /// holds blocks not counted yet, they count allocated.
    fn totals(
        &mut self,
        key: StackKey,
        allocated: StackAllocated,
        live: (u64, u64),
    ) -> StackTotals {
        let (bytes, blocks) = live;
        let f = self.0.entry(key).or_default();
        f.0 = f.0.max(allocated.bytes.saturating_sub(bytes));
        f.1 = f.1.max(allocated.count.saturating_sub(blocks));
        StackTotals {
            allocated_bytes: f.0 + bytes,
            allocations: f.1 + blocks,
            freed_bytes: f.0,
            frees: f.1,
        }
    }
}

/// Reads the kernel's accounting as one snapshot: what each stack
/// allocated (`STACK_TOTALS`), then one pass over the live table for what
/// each still holds and the ages of its blocks, and the loss counters.
/// A stack freed what it allocated less what it holds. The kernel puts a
/// block in the live table before it counts it allocated, and takes it
/// out to free it, so a block counted here and not seen in the table was
/// freed, with one exception: a realloc's old block, taken out at the
/// call's entry, goes back if the call fails (or never returns), so a
/// pass during such a call counts it freed. Otherwise the difference can
/// only come out low: a block allocated while the totals are read, or
/// whose allocation count comes just after, is seen live but not counted.
/// [`Freed`] keeps the highest, and a stack's outstanding bytes and
/// blocks are always what the pass saw, the sums of its ages (its
/// allocations are its frees plus those: at least what was counted).
pub fn read_kernel(
    bpf: &Ebpf,
    min_age_secs: f64,
    freed: &mut Freed,
) -> Result<(KernelTotals, HashMap<StackKey, AgeStats>)> {
    let mut allocated = Vec::new();
    visit_hash(
        bpf.map("STACK_TOTALS")
            .context("STACK_TOTALS map missing")?,
        |key: &StackKey, a: &StackAllocated| allocated.push((*key, *a)),
    )?;
    let ages = read_live_ages(bpf, min_age_secs)?;
    let counted: HashSet<StackKey> = allocated.iter().map(|(k, _)| *k).collect();
    // A block whose stack has no totals: allocated while its idle stack
    // was being taken out of the tables (see [`recycle_stacks`]), its count
    // lost with them. It counts as allocated, so no byte goes unseen.
    let uncounted: Vec<(StackKey, StackAllocated)> = ages
        .keys()
        .filter(|k| !counted.contains(k))
        .map(|k| (*k, StackAllocated::default()))
        .collect();
    let stacks = allocated
        .into_iter()
        .chain(uncounted)
        .map(|(key, a)| {
            let live = ages.get(&key).map_or((0, 0), AgeStats::totals);
            (key, freed.totals(key, a, live))
        })
        .collect();
    let per_cpu: PerCpuArray<_, u64> =
        PerCpuArray::try_from(bpf.map("STATS").context("STATS map missing")?)?;
    let mut stats = [0u64; STAT_COUNT as usize];
    for (i, slot) in stats.iter_mut().enumerate() {
        *slot = per_cpu.get(&(i as u32), 0)?.iter().sum();
    }
    Ok((KernelTotals { stacks, stats }, ages))
}

/// The kernel's clock for allocation timestamps (`bpf_ktime_get_ns`:
/// CLOCK_MONOTONIC), now.
pub fn kernel_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Ages of the live heap allocations, per stack: one pass over the kernel's
/// live table, read in place (see `live_table.rs`): its cost grows with
/// `--max-live`, not with what is live (docs/performance.md has the
/// figures).
fn read_live_ages(bpf: &Ebpf, min_age_secs: f64) -> Result<HashMap<StackKey, AgeStats>> {
    let now = kernel_now_ns();
    let mut ages: HashMap<StackKey, AgeStats> = HashMap::new();
    live_table::scan(live_table::table(bpf.map("LIVE"))?, |block| {
        let age = now.saturating_sub(block.timestamp_ns) as f64 / 1e9;
        ages.entry(StackKey {
            tgid: block.tgid,
            stack_id: block.stack_id,
        })
        .or_default()
        .add(age, block.size, 1, min_age_secs);
        false
    })?;
    Ok(ages)
}

/// Visits every entry of a BPF hash map: in batches where the kernel can,
/// else one entry at a time (entries deleted meanwhile are skipped).
fn visit_hash<K: Pod + Default, V: Pod + Default>(
    map: &Map,
    mut visit: impl FnMut(&K, &V),
) -> Result<()> {
    if let Map::HashMap(data) = map {
        if lookup_batch(data, &mut visit).is_ok() {
            return Ok(());
        }
    }
    let hash: BpfHashMap<_, K, V> = BpfHashMap::try_from(map)?;
    for (key, value) in hash.iter().filter_map(Result::ok) {
        visit(&key, &value);
    }
    Ok(())
}

/// Entries per BPF_MAP_LOOKUP_BATCH call. A hash bucket must fit in one
/// batch (else ENOSPC); buckets hold a handful of entries.
const BATCH: usize = 4096;

/// Visits every entry of a BPF hash map with BPF_MAP_LOOKUP_BATCH (aya 0.14
/// has no batch API). Err if the kernel refuses the command before anything
/// was visited, so the caller can fall back to iterating.
fn lookup_batch<K: Pod + Default, V: Pod + Default>(
    map: &MapData,
    visit: &mut impl FnMut(&K, &V),
) -> std::io::Result<()> {
    use aya_obj::generated::{bpf_attr, bpf_cmd};
    use std::os::fd::{AsFd, AsRawFd};
    let fd = map.fd().as_fd().as_raw_fd();
    let mut keys = vec![K::default(); BATCH];
    let mut values = vec![V::default(); BATCH];
    // The hash map's batch token: a bucket index.
    let (mut token, mut next) = (0u32, 0u32);
    let mut first = true;
    loop {
        // SAFETY: bpf_attr is a plain C union; all-zero is its default.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        // SAFETY: writing the `batch` member of the zeroed union.
        let batch = unsafe { &mut attr.batch };
        batch.in_batch = if first {
            0
        } else {
            &token as *const u32 as u64
        };
        batch.out_batch = &mut next as *mut u32 as u64;
        batch.keys = keys.as_mut_ptr() as u64;
        batch.values = values.as_mut_ptr() as u64;
        batch.count = BATCH as u32;
        batch.map_fd = fd as u32;
        // SAFETY: the attr points at buffers of `count` keys and values of
        // the map's key and value types, and at u32 batch tokens, all alive
        // for the call; the kernel writes at most `count` of each.
        let rc = unsafe { crate::bpf::multi::bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr) };
        let done = match &rc {
            Ok(_) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) if first => return Err(std::io::Error::new(e.kind(), e.to_string())),
            // A later failure: what was visited stands; stop there.
            Err(_) => true,
        };
        // SAFETY: the kernel wrote back how many it copied.
        let n = (unsafe { attr.batch.count } as usize).min(BATCH);
        for (k, v) in keys[..n].iter().zip(&values[..n]) {
            visit(k, v);
        }
        if done {
            return Ok(());
        }
        token = next;
        first = false;
    }
}

/// A walked stack as the kernel recorded it.
#[derive(Clone, Debug, Default)]
pub struct Walked {
    /// Innermost first; empty when lost or unknown.
    pub frames: Vec<u64>,
    /// The walk stopped before the outermost frame.
    pub truncated: bool,
    /// The Python frames the thread ran (CPython processes), innermost
    /// first, and whether their walk was cut.
    pub python: Vec<PyFrameRef>,
    pub python_truncated: bool,
}

/// Frames of kernel stack ids, read once per id (an id is only reused after
/// [`purge_processes`] or [`recycle_stacks`] removed it, which the caller
/// then says).
#[derive(Default)]
pub struct StackCache {
    frames: HashMap<u32, Walked>,
}

impl StackCache {
    /// Forgets ids removed from the kernel's stack table.
    pub fn forget(&mut self, ids: &[u32]) {
        for id in ids {
            self.frames.remove(id);
        }
    }

    pub fn frames(&mut self, bpf: &Ebpf, stack_id: u32) -> Result<&Walked> {
        let frames = match self.frames.entry(stack_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(read_stack(bpf, stack_id)?),
        };
        Ok(frames)
    }
}

/// The frames of a kernel stack id (empty when lost or unknown).
fn read_stack(bpf: &Ebpf, stack_id: u32) -> Result<Walked> {
    if stack_id == UNKNOWN_STACK {
        return Ok(Walked::default());
    }
    let map: BpfHashMap<_, u32, StackFrames> =
        BpfHashMap::try_from(bpf.map("STACKS").context("STACKS map missing")?)?;
    Ok(match map.get(&stack_id, 0) {
        Ok(walk) => Walked {
            frames: walk.frames[..(walk.nr as usize).min(walk.frames.len())].to_vec(),
            truncated: walk.flags & STACK_TRUNCATED != 0,
            python: walk.python[..(walk.py_nr as usize).min(walk.python.len())].to_vec(),
            python_truncated: walk.py_flags & PY_TRUNCATED != 0,
        },
        Err(_) => Walked::default(),
    })
}

/// The ring buffer of mapping events, taken out of the loaded object.
pub fn take_events(bpf: &mut Ebpf) -> Result<RingBuf<MapData>> {
    let map = bpf.take_map("EVENTS").context("EVENTS map missing")?;
    Ok(RingBuf::try_from(map)?)
}

/// An event from the ring buffer.
pub enum Event {
    Mapping(Box<MmapEvent>),
    Process(ProcessEvent),
}

/// Pops every pending event.
pub fn drain_events(ring: &mut RingBuf<MapData>, mut sink: impl FnMut(Event)) {
    while let Some(item) = ring.next() {
        if let Some(event) = parse_event(&item) {
            sink(event);
        }
    }
}

fn parse_event(item: &[u8]) -> Option<Event> {
    let kind = u32::from_ne_bytes(item.get(..4)?.try_into().ok()?);
    if EventKind::is_process(kind) {
        (item.len() >= size_of::<ProcessEvent>()).then(|| {
            // SAFETY: the kernel wrote a whole event of that kind (plain old
            // data, size checked); the read is unaligned-safe.
            Event::Process(unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) })
        })
    } else {
        (item.len() >= size_of::<MmapEvent>()).then(|| {
            // SAFETY: as above, for a mapping event.
            Event::Mapping(Box::new(unsafe {
                std::ptr::read_unaligned(item.as_ptr().cast())
            }))
        })
    }
}

/// Removes what processes that exited left in the kernel's tables: their
/// live blocks, their per-stack totals, and the stack traces no remaining
/// process uses (so that a busy node's exits do not fill the stack table).
/// Returns the stack ids removed: the kernel may hand them out again. One
/// pass over each table, done at most once per interval for every exit
/// since.
pub fn purge_processes(bpf: &mut Ebpf, gone: &HashSet<u32>) -> Result<Vec<u32>> {
    if gone.is_empty() {
        return Ok(Vec::new());
    }
    live_table::scan(live_table::table(bpf.map("LIVE"))?, |block| {
        gone.contains(&block.tgid)
    })?;
    let mut dead = Vec::new();
    let mut in_use = HashSet::new();
    visit_hash(
        bpf.map("STACK_TOTALS")
            .context("STACK_TOTALS map missing")?,
        |k: &StackKey, _: &StackAllocated| match gone.contains(&k.tgid) {
            true => dead.push(*k),
            false => {
                in_use.insert(k.stack_id);
            }
        },
    )?;
    let mut totals: BpfHashMap<_, StackKey, StackAllocated> = BpfHashMap::try_from(
        bpf.map_mut("STACK_TOTALS")
            .context("STACK_TOTALS map missing")?,
    )?;
    for key in &dead {
        let _ = totals.remove(key);
    }
    let mut ids: Vec<u32> = dead
        .iter()
        .map(|k| k.stack_id)
        .filter(|id| *id != UNKNOWN_STACK && !in_use.contains(id))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut stacks: BpfHashMap<_, u32, StackFrames> =
        BpfHashMap::try_from(bpf.map_mut("STACKS").context("STACKS map missing")?)?;
    ids.retain(|id| stacks.remove(id).is_ok());
    Ok(ids)
}

/// Takes stacks out of the kernel's tables: the traces of `ids`, then the
/// totals of `keys` (every process's totals of those ids). The caller
/// chose stacks that hold nothing and have been idle, so that the table
/// has room for new ones; one that allocates again is walked and counted
/// anew. The trace goes first: an allocation after that inserts it again,
/// and one already past its lookup counts into totals that either go now
/// (its block stays in the live table, counted there: see
/// [`read_kernel`]) or are inserted again after.
pub fn recycle_stacks(bpf: &mut Ebpf, ids: &[u32], keys: &[StackKey]) -> Result<()> {
    let mut stacks: BpfHashMap<_, u32, StackFrames> =
        BpfHashMap::try_from(bpf.map_mut("STACKS").context("STACKS map missing")?)?;
    for id in ids {
        let _ = stacks.remove(id);
    }
    let mut totals: BpfHashMap<_, StackKey, StackAllocated> = BpfHashMap::try_from(
        bpf.map_mut("STACK_TOTALS")
            .context("STACK_TOTALS map missing")?,
    )?;
    for key in keys {
        let _ = totals.remove(key);
    }
    Ok(())
}

/// After `tgid` called exec (at `exec_ns`), the blocks its old image had
/// outstanding no longer exist. Removes them from the kernel's live table,
/// which makes them count as freed (see [`read_kernel`]). Blocks the new
/// image allocated since (later timestamps) are kept. One pass over the
/// live table: rare, and bounded by --max-live.
pub fn release_image(bpf: &Ebpf, tgid: u32, exec_ns: u64) -> Result<()> {
    live_table::scan(live_table::table(bpf.map("LIVE"))?, |block| {
        block.tgid == tgid && block.timestamp_ns < exec_ns
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(allocated: u64, allocations: u64, freed: u64, frees: u64) -> StackTotals {
        StackTotals {
            allocated_bytes: allocated,
            allocations,
            freed_bytes: freed,
            frees,
        }
    }

    #[test]
    fn frees_are_what_was_counted_less_what_is_live_and_never_go_down() {
        let key = StackKey {
            tgid: 9,
            stack_id: 4,
        };
        let counted = |bytes, count| StackAllocated { bytes, count };
        let mut freed = Freed::default();
        // 10 blocks of 100 counted, 4 live: 6 freed.
        assert_eq!(
            freed.totals(key, counted(1000, 10), (400, 4)),
            totals(1000, 10, 600, 6)
        );
        // A pass that sees 2 blocks allocated after the count was read:
        // frees stay at 6 (not 4), outstanding is what the pass saw and
        // the 2 count allocated.
        assert_eq!(
            freed.totals(key, counted(1000, 10), (600, 6)),
            totals(1200, 12, 600, 6)
        );
        // Counted since, and 3 more freed.
        assert_eq!(
            freed.totals(key, counted(1200, 12), (300, 3)),
            totals(1200, 12, 900, 9)
        );
        // Another process's stack of the same id starts from nothing;
        // forgetting the first starts it over.
        let other = StackKey { tgid: 10, ..key };
        assert_eq!(
            freed.totals(other, counted(100, 1), (100, 1)),
            totals(100, 1, 0, 0)
        );
        freed.forget(&HashSet::from([9]));
        assert_eq!(
            freed.totals(key, counted(500, 5), (500, 5)),
            totals(500, 5, 0, 0)
        );
    }
}

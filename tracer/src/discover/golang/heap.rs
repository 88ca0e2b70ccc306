//! One read of a Go program's heap profile: the runtime's memory-profile
//! buckets (`runtime.mbuckets`, linked through `allnext`), each a header,
//! its stack of return PCs (innermost first) and its `memRecord`. What is
//! read is what `runtime.MemProfile` returns: each bucket's published
//! cycle (`active`: allocations and frees as of the last completed garbage
//! collection), or, when no bucket has any yet (no collection finished),
//! the cycles still being counted added to it, as `MemProfile` does then.
//! The counts are of sampled allocations: [`scale`] unbiases them as pprof
//! does.
//!
//! Buckets are never freed and are prepended at the head with `allnext`
//! set first, so a walk from the head read once sees a consistent list,
//! and a later pass walks only the buckets made since ([`List`]). A bucket
//! that does not parse (its type is not a memory profile's, its stack depth
//! is out of range, a read fails) is skipped and counted.

use super::layout::Layout;
use crate::discover::memory::{u64_at, Memory};

/// `bucketType` of a memory-profile bucket (`memProfile`).
const MEM_PROFILE: u64 = 1;
/// Deepest stack a bucket may hold (`maxProfStackDepth` in Go 1.23+; 32
/// before).
pub const MAX_STACK: u64 = 1024;
/// Buckets read at most in one pass (a list longer than this is cut and
/// said so).
pub const MAX_BUCKETS: usize = 1 << 20;

/// One cycle's sampled counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cycle {
    pub allocs: u64,
    pub frees: u64,
    pub alloc_bytes: u64,
    pub free_bytes: u64,
}

impl Cycle {
    fn add(&mut self, o: &Cycle) {
        self.allocs += o.allocs;
        self.frees += o.frees;
        self.alloc_bytes += o.alloc_bytes;
        self.free_bytes += o.free_bytes;
    }

    fn is_empty(&self) -> bool {
        self.allocs == 0 && self.frees == 0
    }
}

/// A bucket as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Its address: buckets are never freed, so it names one stack for the
    /// process's life.
    pub addr: u64,
    /// Its return PCs, innermost first, when asked for.
    pub stack: Option<Vec<u64>>,
    pub counts: Cycle,
}

/// One pass over the list.
#[derive(Debug, Default)]
pub struct Profile {
    pub buckets: Vec<Bucket>,
    /// Buckets that did not parse.
    pub skipped: u64,
    /// The walk stopped early: at a bucket whose header did not parse (its
    /// link cannot be trusted), or at [`MAX_BUCKETS`].
    pub cut: bool,
}

/// The list as walked so far, newest bucket first. Buckets are never freed
/// and only ever prepended, so a pass walks only the buckets made since the
/// last one (down to the head it knew), and reads every bucket's counts
/// at its known address in batches.
#[derive(Debug, Default)]
pub struct List {
    head: u64,
    buckets: Vec<Known>,
}

/// A bucket whose header was read.
#[derive(Clone, Copy, Debug)]
struct Known {
    addr: u64,
    nstk: u64,
    /// Its objects' size (bytes are counts times it where the runtime
    /// keeps no byte counts).
    size: u64,
}

impl Known {
    fn stack_at(&self, layout: &Layout) -> u64 {
        self.addr + layout.bucket_size
    }

    fn record_at(&self, layout: &Layout) -> u64 {
        self.stack_at(layout) + self.nstk * 8
    }
}

/// Reads the profile at `head_addr` (`runtime.mbuckets`), walking only
/// what `list` does not know yet; `cycle`: the runtime's `mProfCycle` as
/// read (which future cycle `MemProfile` would flush first); `stack_of`
/// says for which buckets (address, and every cycle's counts added up) the
/// stack is read too.
pub fn read(
    mem: &Memory,
    layout: &Layout,
    head_addr: u64,
    cycle: Option<u32>,
    list: &mut List,
    mut stack_of: impl FnMut(u64, &Cycle) -> bool,
) -> Profile {
    let mut p = Profile::default();
    let Some(head) = mem.u64(head_addr) else {
        p.cut = true;
        return p;
    };
    walk_new(mem, layout, head, list, &mut p);
    // mProfCycle holds the cycle shifted by one (bit 0: flushed).
    let flushed = cycle.map(|c| u64::from(c >> 1) % layout.futures);
    // A cycle's counts; bytes are counts times the bucket's object size
    // where the cycle keeps none (Go 1.27).
    let cycle_at = |buf: &[u8], base: u64, size: u64| -> Option<Cycle> {
        let allocs = u64_at(buf, base + layout.cycle_allocs)?;
        let frees = u64_at(buf, base + layout.cycle_frees)?;
        let (alloc_bytes, free_bytes) = match (layout.cycle_alloc_bytes, layout.cycle_free_bytes) {
            (Some(a), Some(f)) => (u64_at(buf, base + a)?, u64_at(buf, base + f)?),
            _ => (allocs.checked_mul(size)?, frees.checked_mul(size)?),
        };
        Some(Cycle {
            allocs,
            frees,
            alloc_bytes,
            free_bytes,
        })
    };
    let record_size = layout.record_size as usize;
    let pieces: Vec<(u64, usize)> = list
        .buckets
        .iter()
        .map(|k| (k.record_at(layout), record_size))
        .collect();
    let mut records = vec![0u8; pieces.len() * record_size];
    let read = mem.read_many(&pieces, &mut records);
    let mut futures: Vec<Cycle> = Vec::new();
    let mut wanted: Vec<usize> = Vec::new();
    for (i, k) in list.buckets.iter().enumerate() {
        let record = &records[i * record_size..(i + 1) * record_size];
        let counts = read[i].then_some(()).and_then(|_| {
            let mut active = cycle_at(record, layout.record_active, k.size)?;
            let mut future = Cycle::default();
            for f in 0..layout.futures {
                let c = cycle_at(record, layout.record_future + f * layout.cycle_size, k.size)?;
                // The cycle MemProfile flushes into the published one
                // before it reads (allocations swept since the last
                // collection's end).
                match Some(f) == flushed {
                    true => active.add(&c),
                    false => future.add(&c),
                }
            }
            Some((active, future))
        });
        let Some((active, future)) = counts else {
            p.skipped += 1;
            continue;
        };
        let mut all = active;
        all.add(&future);
        if stack_of(k.addr, &all) {
            wanted.push(p.buckets.len());
        }
        p.buckets.push(Bucket {
            addr: k.addr,
            stack: None,
            counts: active,
        });
        futures.push(future);
    }
    read_stacks(mem, layout, list, &mut p, &wanted);
    // No collection has published anything yet: what MemProfile reads then.
    if !p.buckets.is_empty() && p.buckets.iter().all(|b| b.counts.is_empty()) {
        for (bucket, future) in p.buckets.iter_mut().zip(&futures) {
            bucket.counts.add(future);
        }
    }
    p
}

/// Walks the buckets made since `list` was last walked (from `head` down
/// to the head it knew) and puts them in front of it. A header that does
/// not parse leaves `list` as it was (its link cannot be trusted): the
/// pass is cut.
fn walk_new(mem: &Memory, layout: &Layout, head: u64, list: &mut List, p: &mut Profile) {
    let mut header = vec![0u8; layout.bucket_size as usize];
    let mut new: Vec<Known> = Vec::new();
    let mut b = head;
    while b != 0 && b != list.head {
        if new.len() + list.buckets.len() >= MAX_BUCKETS {
            p.cut = true;
            break;
        }
        let parsed = mem.read(b, &mut header).and_then(|_| {
            let typ = u64_at(&header, layout.bucket_typ)?;
            let nstk = u64_at(&header, layout.bucket_nstk)?;
            let next = u64_at(&header, layout.bucket_allnext)?;
            let size = u64_at(&header, layout.bucket_object_size)?;
            (typ == MEM_PROFILE && (1..=MAX_STACK).contains(&nstk)).then_some((nstk, next, size))
        });
        let Some((nstk, next, size)) = parsed else {
            p.skipped += 1;
            p.cut = true;
            return;
        };
        new.push(Known {
            addr: b,
            nstk,
            size,
        });
        b = next;
    }
    if b == 0 && list.head != 0 {
        // The head it knew was not met: not the list it walked before.
        list.buckets.clear();
    }
    list.buckets.splice(0..0, new);
    list.head = head;
}

/// Reads the stacks of the buckets at `wanted` (indices into `p.buckets`),
/// in batches.
fn read_stacks(mem: &Memory, layout: &Layout, list: &List, p: &mut Profile, wanted: &[usize]) {
    if wanted.is_empty() {
        return;
    }
    let known: std::collections::HashMap<u64, Known> =
        list.buckets.iter().map(|k| (k.addr, *k)).collect();
    let pieces: Vec<(u64, usize)> = wanted
        .iter()
        .map(|&i| {
            let k = known[&p.buckets[i].addr];
            (k.stack_at(layout), k.nstk as usize * 8)
        })
        .collect();
    let mut raw = vec![0u8; pieces.iter().map(|p| p.1).sum()];
    let read = mem.read_many(&pieces, &mut raw);
    let mut at = 0;
    for (n, &i) in wanted.iter().enumerate() {
        let len = pieces[n].1;
        if read[n] {
            p.buckets[i].stack = Some(
                raw[at..at + len]
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            );
        }
        at += len;
    }
}

/// Unbiases sampled `(count, bytes)` as pprof does (`scaleHeapSample` in
/// runtime/pprof): each sampled object of the bucket's average size stood
/// for `1 / (1 - e^(-size/rate))` objects.
pub fn scale(count: u64, bytes: u64, rate: u64) -> (u64, u64) {
    if count == 0 || bytes == 0 {
        return (0, 0);
    }
    if rate <= 1 {
        return (count, bytes);
    }
    let avg = bytes as f64 / count as f64;
    let factor = 1.0 / (1.0 - (-avg / rate as f64).exp());
    (
        (count as f64 * factor) as u64,
        (bytes as f64 * factor) as u64,
    )
}

impl Bucket {
    /// In-use objects and bytes, unbiased for `rate`.
    pub fn in_use(&self, rate: u64) -> (u64, u64) {
        let c = &self.counts;
        scale(
            c.allocs.saturating_sub(c.frees),
            c.alloc_bytes.saturating_sub(c.free_bytes),
            rate,
        )
    }

    /// Allocated objects and bytes, unbiased for `rate`.
    pub fn allocated(&self, rate: u64) -> (u64, u64) {
        scale(self.counts.allocs, self.counts.alloc_bytes, rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_as_pprof() {
        // A 1 KiB object sampled at the default 512 KiB rate stood for
        // 1/(1-e^(-1/512)) ≈ 512.5 of them.
        assert_eq!(scale(1, 1024, 512 * 1024), (512, 524_800));
        // Objects far larger than the rate are all sampled.
        assert_eq!(scale(2, 64 << 20, 512 * 1024), (2, 64 << 20));
        assert_eq!(scale(0, 0, 512 * 1024), (0, 0));
        assert_eq!(scale(3, 300, 1), (3, 300));
    }
}

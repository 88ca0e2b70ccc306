//! The live-block table: every outstanding heap block, (tgid, address) →
//! size, stack and timestamp. A hash table of memtrace's own in a BPF
//! array (`LIVE`) rather than a BPF hash map: each allocation inserts into
//! it and each free takes out of it, and the kernel's hash map costs
//! 70-120 ns an operation here (jhash, a bucket lock taken with interrupts
//! off, the free list of preallocated elements); an insert and a take here
//! cost a multiply-shift hash, the verifier's inlined array access, a few
//! compares and one compare-and-swap each.
//!
//! Two-choice hashing into buckets of [`LIVE_WAYS`] slots: a block lives in
//! its first bucket, or in its second when the first was full at its
//! insert; the first bucket's bit in `LIVE_SPILL` then says to look there
//! too, so a lookup of a block that is not in the table (every unsampled
//! free) reads one bucket unless that bucket has ever overflowed: the bits
//! are never cleared (clearing one while a block lives in its second
//! bucket would lose the block's free), so in a long run near capacity
//! more and more misses read two. The table has two slots per --max-live
//! block (see `tracer_common::live_buckets`); an insert that finds both
//! buckets full is counted (`Stat::LiveMapFull`), never lost silently.
//!
//! Concurrency: a slot's `addr` is its lock. An insert claims a free slot
//! (0 → [`LIVE_BUSY`]) by compare-and-swap, writes the record, then
//! publishes the address; a take compares and swaps the address back to 0,
//! so a block is taken once even if two CPUs free it at once. Userspace
//! removes blocks of exited processes the same way (through a memory
//! mapping of the array) and reads the table in place.
//!
//! Owns the table (`LIVE`), its spill bits (`LIVE_SPILL`) and its size
//! (`LIVE_BUCKETS`, set by userspace). Used by `alloc`; imports no other
//! module of the crate.

use aya_ebpf::{bindings::BPF_F_MMAPABLE, macros::map, maps::Array};
use core::intrinsics::{atomic_cxchg, atomic_or, AtomicOrdering};
use tracer_common::{LiveAlloc, LiveBucket, LiveSlot, LIVE_BUSY, LIVE_WAYS};

/// Buckets of the live table (`tracer_common::live_buckets(--max-live)`),
/// patched by userspace at load time together with the map sizes.
#[unsafe(no_mangle)]
static LIVE_BUCKETS: u32 = 1;

/// The live table's buckets (sized by userspace, which reads it through a
/// memory mapping).
#[map]
pub(crate) static LIVE: Array<LiveBucket> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// One bit per bucket: an insert found the bucket full and went to its
/// block's second bucket.
#[map]
pub(crate) static LIVE_SPILL: Array<u64> = Array::with_max_entries(1, 0);

/// What [`put`] did.
pub(crate) enum Put {
    /// The block is recorded.
    New,
    /// The address was still recorded for this process: its free was
    /// missed and the allocator has handed it out again (the old record is
    /// replaced), or, with `replace` false, the block is there already
    /// (left as it is).
    Present,
    /// Both of the block's buckets are full.
    Full,
}

/// The two buckets of a block: the high halves of two multiplicative
/// hashes of (tgid, addr), scaled to the table size (no division).
#[inline(always)]
fn buckets(tgid: u32, addr: u64) -> (u32, u32) {
    // SAFETY: a plain read of a static patched at load time.
    let n = unsafe { core::ptr::read_volatile(&LIVE_BUCKETS) } as u64;
    let h = (addr ^ (tgid as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let g = (h ^ (h >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (
        (((h >> 32) * n) >> 32) as u32,
        (((g >> 32) * n) >> 32) as u32,
    )
}

/// The slot of bucket `b` that holds (tgid, addr), if any: up to eight
/// compares over four adjacent cache lines.
#[inline(always)]
fn find(b: u32, tgid: u32, addr: u64) -> Option<*mut LiveSlot> {
    let bucket = LIVE.get_ptr_mut(b)?;
    let mut i = 0;
    while i < LIVE_WAYS {
        // SAFETY: a valid map value; the address is read once, whatever
        // other CPUs do to it.
        unsafe {
            let slot = &raw mut (*bucket).slots[i];
            if core::ptr::read_volatile(&raw const (*slot).addr) == addr
                && core::ptr::read_volatile(&raw const (*slot).tgid) == tgid
            {
                return Some(slot);
            }
        }
        i += 1;
    }
    None
}

/// Whether bucket `b` has sent blocks to their second bucket.
#[inline(always)]
fn spilled(b: u32) -> bool {
    LIVE_SPILL
        .get(b / 64)
        .is_some_and(|w| w & (1u64 << (b % 64)) != 0)
}

/// The slot holding (tgid, addr): in its `first` bucket, or in its
/// `second` if the first has spilled.
#[inline(always)]
fn locate(first: u32, second: u32, tgid: u32, addr: u64) -> Option<*mut LiveSlot> {
    match find(first, tgid, addr) {
        Some(slot) => Some(slot),
        None if spilled(first) => find(second, tgid, addr),
        None => None,
    }
}

#[inline(always)]
fn cas(word: *mut u64, old: u64, new: u64) -> bool {
    // SAFETY: `word` is in a map value; a BPF compare-and-swap (lock
    // cmpxchg).
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(word, old, new)
            .1
    }
}

#[inline(always)]
fn record(slot: *const LiveSlot) -> LiveAlloc {
    // SAFETY: a valid map value.
    unsafe {
        LiveAlloc {
            size: (*slot).size,
            timestamp_ns: (*slot).timestamp_ns,
            stack_id: (*slot).stack_id,
            _pad: 0,
        }
    }
}

/// Writes a block into a slot this CPU holds, the address last, so that
/// whoever sees the address sees the rest: volatile stores stay in program
/// order, and x86 keeps stores in order (the BPF target has no fence).
#[inline(always)]
fn fill(slot: *mut LiveSlot, tgid: u32, addr: u64, block: &LiveAlloc) {
    // SAFETY: a valid map value this CPU has claimed.
    unsafe {
        core::ptr::write_volatile(&raw mut (*slot).size, block.size);
        core::ptr::write_volatile(&raw mut (*slot).timestamp_ns, block.timestamp_ns);
        core::ptr::write_volatile(&raw mut (*slot).stack_id, block.stack_id);
        core::ptr::write_volatile(&raw mut (*slot).tgid, tgid);
        core::ptr::write_volatile(&raw mut (*slot).addr, addr);
    }
}

/// Claims a free slot of bucket `b` for (tgid, addr) and fills it.
#[inline(always)]
fn claim(b: u32, tgid: u32, addr: u64, block: &LiveAlloc) -> bool {
    let Some(bucket) = LIVE.get_ptr_mut(b) else {
        return false;
    };
    let mut i = 0;
    while i < LIVE_WAYS {
        // SAFETY: a valid map value.
        let slot = unsafe { &raw mut (*bucket).slots[i] };
        // SAFETY: as above.
        let word = unsafe { &raw mut (*slot).addr };
        // SAFETY: as above.
        if unsafe { core::ptr::read_volatile(word) } == 0 && cas(word, 0, LIVE_BUSY) {
            fill(slot, tgid, addr, block);
            return true;
        }
        i += 1;
    }
    false
}

/// Records a block. One bucket read to find a record of the same address
/// (two if the bucket has spilled), then a compare-and-swap on a free slot
/// of the first bucket, else of the second (an insert and its take cost
/// ~30 ns together, measured on the bench against no live-table work at
/// all). A record found is replaced (`replace`: locked as a free slot is
/// claimed, so that nobody reads or takes it half written) or left as it
/// is.
#[inline(always)]
pub(crate) fn put(tgid: u32, addr: u64, block: &LiveAlloc, replace: bool) -> Put {
    if addr <= LIVE_BUSY {
        // Not a heap address (and 1 would match a slot being written).
        return Put::Full;
    }
    let (first, second) = buckets(tgid, addr);
    if let Some(slot) = locate(first, second, tgid, addr) {
        if !replace {
            return Put::Present;
        }
        // SAFETY: a valid map value.
        if cas(unsafe { &raw mut (*slot).addr }, addr, LIVE_BUSY) {
            fill(slot, tgid, addr, block);
            return Put::Present;
        }
        // Taken meanwhile: a new record, then.
    }
    if claim(first, tgid, addr, block) {
        return Put::New;
    }
    // Mark the first bucket before the block can be looked up (it cannot
    // be freed before its allocation returns).
    if let Some(word) = LIVE_SPILL.get_ptr_mut(first / 64) {
        // SAFETY: a map value; a BPF atomic or.
        unsafe { atomic_or::<u64, u64, { AtomicOrdering::SeqCst }>(word, 1u64 << (first % 64)) };
    }
    match claim(second, tgid, addr, block) {
        true => Put::New,
        false => Put::Full,
    }
}

/// Takes the record of (tgid, addr) out of the table, if there is one:
/// one bucket read (two if it has spilled) and a compare-and-swap.
#[inline(always)]
pub(crate) fn take(tgid: u32, addr: u64) -> Option<LiveAlloc> {
    if addr <= LIVE_BUSY {
        return None;
    }
    let (first, second) = buckets(tgid, addr);
    let slot = locate(first, second, tgid, addr)?;
    let block = record(slot);
    // SAFETY: a valid map value.
    cas(unsafe { &raw mut (*slot).addr }, addr, 0).then_some(block)
}

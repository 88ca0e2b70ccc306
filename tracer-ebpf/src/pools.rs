//! pymalloc pools recorded whole: in an interpreter whose callers have
//! pymalloc's fast path inlined (link-time optimized builds such as
//! Debian's `python3.11`), no call marks a small object's allocation, but
//! each pool pymalloc takes for a size class is (`allocate_from_new_pool`,
//! see `tracer_common::AllocFn::NewPool`), and `alloc` records it at the
//! pool's address. A pool that empties goes back to its arena unseen: it
//! counts freed when it is handed out again (`Stat::PoolReused`), or here,
//! when its arena is unmapped.
//!
//! Owns the pool size of each process that recorded one (`POOL_SIZE`).
//! Used by `alloc` and `mapping`; imports `live` and `stats`.

use aya_ebpf::{cty::c_void, helpers::generated::bpf_loop, macros::map, maps::LruHashMap};
use tracer_common::{Stat, POOLS_PER_UNMAP};

use crate::{live, stats::count};

/// Pool size by process, written at its first pool: a munmap of a process
/// not in it costs this one lookup (~50 ns; munmaps are rare). A process
/// id reused by another process keeps the entry, which is harmless: a
/// record inside unmapped memory is of a block that is gone whatever it
/// was.
#[map]
static POOL_SIZE: LruHashMap<u32, u64> = LruHashMap::with_max_entries(1024, 0);

/// Process `tgid` records pools of `size` bytes (one lookup per pool
/// taken, an insert the first time).
#[inline(always)]
pub(crate) fn note(tgid: u32, size: u64) {
    if POOL_SIZE.get_ptr(&tgid).is_none() {
        let _ = POOL_SIZE.insert(&tgid, &size, 0);
    }
}

/// The pools of one unmapped range, for [`take_pool`].
#[repr(C)]
struct Unmapped {
    tgid: u32,
    first: u64,
    size: u64,
}

/// Process `tgid` unmapped `len` bytes at `addr`: the pools recorded in
/// that range are gone (an arena pymalloc released: at most
/// [`POOLS_PER_UNMAP`] pools, one live-table take each).
#[inline(always)]
pub(crate) fn unmapped(tgid: u32, addr: u64, len: u64) {
    let Some(size) = POOL_SIZE.get_ptr(&tgid) else {
        return;
    };
    // SAFETY: a valid map value.
    let size = unsafe { *size };
    if size == 0 || size & (size - 1) != 0 {
        return;
    }
    let first = (addr + size - 1) & !(size - 1);
    let end = addr.saturating_add(len);
    if first >= end {
        return;
    }
    let pools = ((end - first) / size).min(POOLS_PER_UNMAP as u64) as u32;
    let mut range = Unmapped { tgid, first, size };
    // One verified callback per pool rather than an unrolled loop.
    // SAFETY: the callback reads `range` on this stack only.
    unsafe { bpf_loop(pools, take_pool as *mut c_void, (&raw mut range).cast(), 0) };
}

/// `bpf_loop` callback: takes pool `index` of the range out of the live
/// table if it is there.
extern "C" fn take_pool(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the caller's `Unmapped`, alive for the loop.
    let range = unsafe { &*ctx.cast::<Unmapped>() };
    if live::take(range.tgid, range.first + index * range.size).is_some() {
        count(Stat::PoolUnmapped);
    }
    0
}

//! Allocator uprobes. One generic entry program serves every allocation
//! function (the attach cookie says which one, see `tracer_common::AllocFn`),
//! one return program completes them, and `free` has an entry probe only.
//!
//! Hot-path cost per malloc+free pair, beyond the trap itself: entry = the
//! thread's INFLIGHT record (task storage, ~25 ns); return = the same record, stack id,
//! STACK_TOTALS lookup, LIVE lookup + insert; free = LIVE lookup + delete +
//! STACK_TOTALS lookup. With `--sample-bytes`, an unsampled call costs the
//! INFLIGHT record and the per-CPU countdown at entry, the record again at
//! return, and its free one LIVE lookup.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::bpf_get_attach_cookie,
    },
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
    EbpfContext,
};
use tracer_common::{AllocFn, InFlight, Stat};

use crate::{
    maps::{
        account_free, count, is_self, open_call, record_alloc, restore_live, sample, sample_bytes,
        take_live, INFLIGHT,
    },
    stack::user_stack_id,
};

#[inline(always)]
fn arg(ctx: &ProbeContext, n: usize) -> u64 {
    ctx.arg::<u64>(n).unwrap_or(0)
}

/// `a * b`, or None when it overflows. Done on 32-bit halves: LLVM turns
/// `checked_mul` and a division check into a 128-bit multiply
/// (`__multi3`), which BPF lacks.
#[inline(always)]
fn product(a: u64, b: u64) -> Option<u64> {
    let (a_hi, a_lo) = (a >> 32, a & 0xffff_ffff);
    let (b_hi, b_lo) = (b >> 32, b & 0xffff_ffff);
    if a_hi != 0 && b_hi != 0 {
        return None;
    }
    // One of the high halves is zero, so each term is below 2^64.
    let cross = a_hi * b_lo + a_lo * b_hi;
    if cross >> 32 != 0 {
        return None;
    }
    let low = a_lo * b_lo;
    let total = low.wrapping_add(cross << 32);
    if total < low {
        None
    } else {
        Some(total)
    }
}

/// An entry open longer than this lost its return (see `InFlight::entry_ns`).
const STALE_AFTER_NS: u64 = 1_000_000_000;

#[uprobe]
pub fn alloc_enter(ctx: ProbeContext) -> u32 {
    try_alloc_enter(&ctx);
    0
}

#[inline(always)]
fn try_alloc_enter(ctx: &ProbeContext) {
    let tid = bpf_get_current_pid_tgid();
    if is_self((tid >> 32) as u32) {
        return; // with --all, memtrace's own calls trap too
    }
    // SAFETY: ctx.regs is the probe's register set.
    let sp = unsafe { (*ctx.regs).rsp };
    // SAFETY: plain helper call (~20 ns).
    let now = unsafe { bpf_ktime_get_ns() };
    // The thread's record, created on its first call: one task-storage
    // access serves both the nesting check and the new call.
    let slot = INFLIGHT.current(true);
    // SAFETY: the thread's own record.
    if let Some(open) = slot.filter(|&c| unsafe { (*c).active != 0 }) {
        // SAFETY: valid map value pointer for this thread only.
        let open = unsafe { &mut *open };
        if sp <= open.entry_sp && now.wrapping_sub(open.entry_ns) < STALE_AFTER_NS {
            // Called from inside an open allocator call (or tail-called by
            // it, same stack pointer): the outermost call accounts for it.
            open.depth += 1;
            count(Stat::NestedCall);
            return;
        }
        // The open call's frame is gone (or it has been open far longer than
        // any allocator call takes): it never returned. A realloc's old
        // block goes back to the live map: dropping it would leave its bytes
        // outstanding forever (if the address was in fact freed and handed
        // out again, the new allocation will count it freed).
        count(Stat::StaleEntry);
        open.active = 0;
        if open.old_valid != 0 {
            restore_live((tid >> 32) as u32, open.ptr, &open.old);
        }
    }
    // SAFETY: the cookie helper only reads the probe's attach cookie.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let Some(func) = AllocFn::from_cookie(cookie) else {
        return;
    };
    // Overflowing products make the call fail (and are flagged so that its
    // NULL is not mistaken for realloc(p, 0)).
    let (size, ptr) = match func {
        AllocFn::Malloc => (Some(arg(ctx, 0)), 0),
        AllocFn::Calloc => (product(arg(ctx, 0), arg(ctx, 1)), 0),
        AllocFn::Realloc => (Some(arg(ctx, 1)), arg(ctx, 0)),
        AllocFn::ReallocArray => (product(arg(ctx, 1), arg(ctx, 2)), arg(ctx, 0)),
        AllocFn::PosixMemalign => (Some(arg(ctx, 2)), arg(ctx, 0)),
        AllocFn::AlignedAlloc => (Some(arg(ctx, 1)), 0),
    };
    // With --sample-bytes, only sampled allocations are followed (an
    // overflowing size fails: not sampled). Full tracing samples all.
    let sampled = sample_bytes() == 0 || size.is_some_and(sample);
    let mut call = InFlight {
        entry_sp: sp,
        depth: 0,
        func: func as u32,
        size: size.unwrap_or(0),
        entry_ns: now,
        ptr,
        size_overflow: size.is_none() as u32,
        sampled: sampled as u32,
        ..InFlight::default()
    };
    if matches!(func, AllocFn::Realloc | AllocFn::ReallocArray) && ptr != 0 {
        // Take the old block out now: once realloc frees it internally,
        // another thread may be handed the same address before we return.
        if let Some(old) = take_live((tid >> 32) as u32, ptr) {
            call.old = old;
            call.old_valid = 1;
        }
    }
    // Unsampled calls are recorded too (the slot is already at hand): the
    // record marks mmaps made inside the call as the allocator's, and
    // nested calls as nested; the return then only clears it.
    match slot {
        // SAFETY: the thread's own record.
        Some(slot) => unsafe {
            call.active = 1;
            *slot = call;
        },
        None => {
            count(Stat::InFlightFull);
            if call.old_valid != 0 {
                restore_live((tid >> 32) as u32, ptr, &call.old);
            }
        }
    }
}

#[uretprobe]
pub fn alloc_return(ctx: RetProbeContext) -> u32 {
    try_alloc_return(&ctx);
    0
}

#[inline(always)]
fn try_alloc_return(ctx: &RetProbeContext) {
    let tid = bpf_get_current_pid_tgid();
    let tgid = (tid >> 32) as u32;
    if is_self(tgid) {
        return;
    }
    let Some(open) = open_call() else {
        count(Stat::ReturnWithoutEntry);
        return;
    };
    // SAFETY: valid map value pointer for this thread only.
    let call = unsafe {
        if (*open).depth > 0 {
            (*open).depth -= 1;
            return;
        }
        (*open).active = 0;
        *open
    };
    let ret: u64 = ctx.ret();
    let Some(func) = AllocFn::from_cookie(call.func as u64) else {
        return;
    };
    let addr = match func {
        AllocFn::PosixMemalign => {
            if ret != 0 {
                0
            } else {
                // SAFETY: reads the caller's out-parameter; failure = 0.
                unsafe { bpf_probe_read_user(call.ptr as *const u64).unwrap_or(0) }
            }
        }
        _ => ret,
    };
    let reallocating = matches!(func, AllocFn::Realloc | AllocFn::ReallocArray);
    if addr == 0 {
        if reallocating && call.size == 0 && call.size_overflow == 0 {
            // realloc(p, 0) freed p: a success, not a failed call.
            if call.old_valid != 0 {
                account_free(tgid, &call.old);
            }
            return;
        }
        if reallocating && call.old_valid != 0 {
            // Failed realloc: p is still valid and still outstanding.
            restore_live(tgid, call.ptr, &call.old);
        }
        count(Stat::FailedAlloc);
        return;
    }
    if reallocating && call.old_valid != 0 {
        account_free(tgid, &call.old);
    }
    if call.sampled == 0 {
        return;
    }
    let stack_id = user_stack_id(ctx, tgid);
    // The entry's timestamp serves as the block's: one clock read per call.
    record_alloc(tgid, addr, call.size, stack_id, call.entry_ns);
}

#[uprobe]
pub fn free_enter(ctx: ProbeContext) -> u32 {
    let addr = arg(&ctx, 0);
    if addr == 0 {
        return 0;
    }
    let tid = bpf_get_current_pid_tgid();
    let tgid = (tid >> 32) as u32;
    if is_self(tgid) {
        return 0;
    }
    match take_live(tgid, addr) {
        Some(record) => account_free(tgid, &record),
        // Sampling: most blocks are not recorded; a miss is no news (and
        // costs this one lookup only).
        None if sample_bytes() != 0 => {}
        // Misses only: one more lookup to tell glibc's realloc(p, 0) — which
        // frees p internally after its entry probe took p's record — from a
        // free of a block allocated before tracing.
        None => {
            let inside_realloc_of_addr = open_call()
                // SAFETY: valid map value pointer for this thread only.
                .is_some_and(|open| unsafe { (*open).ptr == addr && (*open).old_valid != 0 });
            if !inside_realloc_of_addr {
                count(Stat::FreeUnknown);
            }
        }
    }
    0
}

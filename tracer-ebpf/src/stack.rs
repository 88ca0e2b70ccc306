//! User stack capture. Allocator stacks are taken at the *return* probe,
//! where the instruction pointer is the return address into the direct
//! caller, so the walk keeps the caller (at the entry probe it would skip
//! it); they are walked — by frame pointer, or by the unwind tables
//! userspace builds from each file's `.eh_frame` (`unwind.rs` there) — and
//! deduplicated here rather than with `bpf_get_stackid`. Mapping syscalls carry the raw stack plus the word at the
//! user stack pointer, from which userspace recovers the direct caller.

use aya_ebpf::{
    bindings::{pt_regs, BPF_F_USER_STACK},
    cty::c_void,
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{bpf_get_current_task_btf, bpf_get_stack, bpf_loop, bpf_task_pt_regs},
    },
    programs::RetProbeContext,
    EbpfContext,
};
use tracer_common::{
    row, StackFrames, Stat, UnwindKind, UnwindMapping, UnwindPageKey, MAX_FRAMES, STACK_DEPTH,
    STACK_TRUNCATED, UNKNOWN_STACK, UNWIND_MAX_MAPPINGS, UNWIND_PAGE_SHIFT,
};

use crate::maps::{count, unwind_tables, STACKS, UNWIND_PAGES, UNWIND_PROCS, UNWIND_ROWS, WALK};

/// Stack id of the current user stack, walked from the return probe's
/// registers (the return address, then each caller's), its frames hashed,
/// and the table entry of that hash compared frame by frame — a different
/// stack with the same hash is counted lost, never merged. A full table is
/// counted lost too. Lost stacks map to [`UNKNOWN_STACK`].
///
/// Each step up is by frame pointer or, with `--unwind dwarf|auto`, by the
/// unwind table of the code it is in (see [`table_step`]). Cost: a frame-
/// pointer step is one user read (~40 ns); a table step two hash lookups,
/// two short binary searches and one or two user reads. Then a lookup
/// (~60 ns) and a compare; measured against `bpf_get_stackid`, whose fixed
/// cost was ~700 ns even for two frames (see README).
#[inline(always)]
pub fn user_stack_id(ctx: &RetProbeContext, tgid: u32) -> u32 {
    let Some(walk) = WALK.get_ptr_mut(0) else {
        return UNKNOWN_STACK;
    };
    // SAFETY: this CPU's scratch slot (the program runs with migration
    // disabled); ctx.regs is the probe's register set.
    let (walk, regs) = unsafe { (&mut *walk, &*ctx.regs) };
    walk.ip = regs.rip;
    walk.sp = regs.rsp;
    walk.bp = regs.rbp;
    walk.stack_low = regs.rsp;
    walk.hash = FNV_OFFSET;
    walk.tgid = tgid;
    walk.stack.nr = 0;
    walk.stack.flags = 0;
    walk.mapping.start = 0;
    walk.mapping.end = 0;
    if unwind_tables() {
        // One verified callback per frame instead of an unrolled loop the
        // verifier would have to walk 32 times.
        // SAFETY: the callback takes no context (it finds the walk in its
        // per-CPU slot).
        unsafe {
            bpf_loop(
                STACK_DEPTH as u32,
                table_frame as *mut c_void,
                core::ptr::null_mut(),
                0,
            )
        };
    } else {
        let mut i = 0;
        while i < STACK_DEPTH {
            if !frame(walk, false) {
                break;
            }
            i += 1;
        }
    }
    if walk.stack.flags & STACK_TRUNCATED != 0 {
        count(Stat::StackTruncated);
    }
    let n = walk.stack.nr as usize;
    let hash = walk.hash;
    let id = ((hash >> 32) ^ hash) as u32;
    let id = if id == UNKNOWN_STACK { id - 1 } else { id };
    let walk = &walk.stack;
    if let Some(known) = STACKS.get_ptr(&id) {
        // SAFETY: a valid map value.
        return match same_frames(unsafe { &*known }, walk, n) {
            true => id,
            false => lost(),
        };
    }
    if STACKS.insert(&id, walk, BPF_NOEXIST).is_ok() {
        return id;
    }
    // Full, or another CPU inserted this hash just now: compare with it.
    match STACKS.get_ptr(&id) {
        // SAFETY: a valid map value.
        Some(known) if same_frames(unsafe { &*known }, walk, n) => id,
        _ => lost(),
    }
}

/// A stack walk in progress, in a per-CPU map slot (`WALK`): the frame
/// being recorded (its instruction pointer and the stack and frame
/// pointers it had) and what was recorded so far. Kept in map memory, not
/// on the BPF stack, so that the verifier sees its values as unknown
/// numbers at every step: with exact values, each outcome of the binary
/// searches below would be a state of its own and verification would not
/// end.
#[repr(C)]
pub struct Walk {
    ip: u64,
    sp: u64,
    bp: u64,
    /// The stack pointer at the probe: every frame lies above it.
    stack_low: u64,
    hash: u64,
    tgid: u32,
    /// Binary search bounds.
    lo: u32,
    hi: u32,
    _pad: u32,
    /// The mapping the last table step found (an empty range at first):
    /// callers in the same file skip the process lookup and its search.
    mapping: UnwindMapping,
    /// The frames so far (and, when done, whether the walk was cut).
    stack: StackFrames,
}

/// How a step up the stack went.
enum Step {
    /// The cursor now holds the caller's frame.
    Up,
    /// The frame was the outermost: the walk is complete.
    Outermost,
    /// The caller could not be found: the walk is truncated.
    Lost,
}

/// `bpf_loop` callback: one frame of a table walk. Returns 1 to stop.
extern "C" fn table_frame(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(walk) = WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's slot (migration is disabled).
    match frame(unsafe { &mut *walk }, true) {
        true => 0,
        false => 1,
    }
}

/// Records the walk's current frame and steps to its caller; false once
/// the walk is over (complete, or truncated as its flags say).
#[inline(always)]
fn frame(walk: &mut Walk, tables: bool) -> bool {
    let ip = walk.ip;
    let Some(slot) = walk.stack.frames.get_mut(walk.stack.nr as usize) else {
        // More frames than kept: the outer ones are cut.
        walk.stack.flags |= STACK_TRUNCATED;
        return false;
    };
    *slot = ip;
    walk.hash = (walk.hash ^ ip).wrapping_mul(FNV_PRIME);
    walk.stack.nr += 1;
    let step = match tables {
        true => table_step(walk),
        false => fp_step(walk),
    };
    match step {
        Step::Up => true,
        Step::Outermost => false,
        Step::Lost => {
            walk.stack.flags |= STACK_TRUNCATED;
            false
        }
    }
}

/// A step by frame pointer: the frame is [saved rbp, return address] at
/// rbp. Code built without frame pointers uses rbp as a plain register: a
/// "frame pointer" outside the thread's stack, or not above the stack
/// pointer, ends the walk (truncated) rather than reading garbage frames.
/// A zero rbp (cleared by `_start`) or return address is the outermost
/// frame. Cost: one user read (~40 ns).
#[inline(always)]
fn fp_step(walk: &mut Walk) -> Step {
    let bp = walk.bp;
    if bp == 0 {
        return Step::Outermost;
    }
    if bp < walk.sp || bp - walk.stack_low >= MAX_STACK_SPAN {
        return Step::Lost;
    }
    // SAFETY: a user read; a fault returns an error.
    let Ok(frame) = (unsafe { bpf_probe_read_user(bp as *const [u64; 2]) }) else {
        return Step::Lost;
    };
    if frame[1] == 0 {
        return Step::Outermost;
    }
    walk.ip = frame[1];
    walk.sp = bp + 16;
    walk.bp = frame[0];
    Step::Up
}

/// A search bound as the verifier must see it: read back from map memory
/// (an unknown number), so that every search path ends in the same state.
#[inline(always)]
fn bound(at: &u32) -> u32 {
    // SAFETY: a plain read of a field of the walk.
    unsafe { core::ptr::read_volatile(at) }
}

/// A step by the unwind table of the code at the cursor: the process's
/// mapping of that address (the previous frame's, or [`find_mapping`]),
/// the table page of the file's address (a
/// hash lookup) and the row among that page's (a binary search of at most
/// 13 array reads, ~10 ns each), then the return address (and rbp, if the
/// function saved it) read at the canonical frame address. Code without a
/// table, or in a file that keeps frame pointers, is stepped by frame
/// pointer.
#[inline(always)]
fn table_step(walk: &mut Walk) -> Step {
    // The frame's address is a return address: look up the call, which
    // is the instruction before it (a call ending a function that never
    // returns is followed by the next function).
    let pc = walk.ip.wrapping_sub(1);
    let m = if walk.mapping.start <= pc && pc < walk.mapping.end {
        // The same file as the frame below (most callers are): ~5 ns.
        walk.mapping
    } else {
        match find_mapping(walk, pc) {
            Some(m) => {
                walk.mapping = m;
                m
            }
            None => return Step::Lost,
        }
    };
    if m.end == 0 {
        // No mapping holds pc (counted): JIT code, a library mapped since
        // userspace last looked.
        return fp_step(walk);
    }
    if m.kind == UnwindKind::FramePointer as u32 {
        return fp_step(walk);
    }
    let vaddr = pc.wrapping_sub(m.bias);
    if vaddr > u32::MAX as u64 {
        count(Stat::UnwindNoTable);
        return fp_step(walk);
    }
    let key = UnwindPageKey {
        file_id: m.file_id,
        page: (vaddr >> UNWIND_PAGE_SHIFT) as u32,
    };
    // No page: no function of the file covers it (or the table was not
    // loaded: a full row table).
    let Some(page) = UNWIND_PAGES.get_ptr(&key) else {
        return fp_step(walk);
    };
    // SAFETY: a valid map value.
    let page = unsafe { *page };
    let vaddr = vaddr as u32;
    // The last row starting at or below vaddr (the page's first one starts
    // at or below the page start).
    walk.lo = page.first;
    walk.hi = page.first.saturating_add(page.count);
    let mut i = 0;
    while i < 13 {
        let (lo, hi) = (bound(&walk.lo), bound(&walk.hi));
        if hi <= lo + 1 {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        match UNWIND_ROWS.get(mid) {
            Some(r) if r.pc <= vaddr => walk.lo = mid,
            Some(_) => walk.hi = mid,
            None => return Step::Lost,
        }
        i += 1;
    }
    let Some(r) = UNWIND_ROWS.get(bound(&walk.lo)) else {
        return Step::Lost;
    };
    if r.pc > vaddr {
        // Before the page's first row: no function covers it.
        return fp_step(walk);
    }
    let cfa = match r.kind {
        row::CFA_RSP => walk.sp,
        row::CFA_RBP => walk.bp,
        row::OUTERMOST => return Step::Outermost,
        row::NONE => return fp_step(walk),
        _ => return Step::Lost,
    }
    .wrapping_add(r.cfa_offset as i64 as u64);
    // Every caller's frame lies above the callee's.
    if cfa <= walk.sp || cfa - walk.stack_low >= MAX_STACK_SPAN {
        return Step::Lost;
    }
    // SAFETY: user reads; a fault returns an error.
    let Ok(ra) = (unsafe { bpf_probe_read_user((cfa - 8) as *const u64) }) else {
        return Step::Lost;
    };
    if r.rbp_slot != 0 {
        let at = cfa.wrapping_add((r.rbp_slot as i64 * 8) as u64);
        // SAFETY: as above.
        match unsafe { bpf_probe_read_user(at as *const u64) } {
            Ok(bp) => walk.bp = bp,
            Err(_) => return Step::Lost,
        }
    }
    if ra == 0 {
        return Step::Outermost;
    }
    walk.ip = ra;
    walk.sp = cfa;
    Step::Up
}

/// The process's mapping holding `pc`: a hash lookup (~60 ns) and a binary
/// search of at most 9 steps in its value. None when the process has no
/// mappings yet (the walk is then truncated); a mapping with `end` 0 when
/// none holds pc (both counted).
#[inline(always)]
fn find_mapping(walk: &mut Walk, pc: u64) -> Option<UnwindMapping> {
    let Some(procs) = UNWIND_PROCS.get_ptr(&walk.tgid) else {
        // memtrace has not read this process's mappings yet (its first
        // calls, or right after an exec): the first frame, the allocator's
        // caller, is right whatever the code; a frame-pointer walk on
        // through code without them would record garbage. Userspace folds
        // this truncated walk into the complete one of the same call, once
        // there is one.
        count(Stat::UnwindNoTable);
        return None;
    };
    // SAFETY: a valid map value.
    let procs = unsafe { &*procs };
    // The last mapping starting at or below pc.
    walk.lo = 0;
    walk.hi = procs.nr.min(UNWIND_MAX_MAPPINGS as u32);
    let mut i = 0;
    while i < 9 {
        let (lo, hi) = (bound(&walk.lo), bound(&walk.hi));
        if lo >= hi {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        match procs.mappings.get(mid as usize & (UNWIND_MAX_MAPPINGS - 1)) {
            Some(m) if m.start <= pc => walk.lo = mid + 1,
            Some(_) => walk.hi = mid,
            None => break,
        }
        i += 1;
    }
    let found = (bound(&walk.lo) as usize).wrapping_sub(1) & (UNWIND_MAX_MAPPINGS - 1);
    match procs.mappings.get(found) {
        Some(m) if walk.lo > 0 && m.start <= pc && pc < m.end => Some(*m),
        _ => {
            count(Stat::UnwindNoTable);
            Some(UnwindMapping::default())
        }
    }
}

/// How far above the stack pointer a frame may be: thread stacks are at
/// most a few MiB (8 MiB by default for the main thread).
const MAX_STACK_SPAN: u64 = 64 << 20;
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
const BPF_NOEXIST: u64 = 1;

#[inline(always)]
fn lost() -> u32 {
    count(Stat::StackLost);
    UNKNOWN_STACK
}

/// Whether a recorded stack is the walked one (its first `n` frames).
#[inline(always)]
fn same_frames(known: &StackFrames, walk: &StackFrames, n: usize) -> bool {
    if known.nr as usize != n {
        return false;
    }
    let mut i = 0;
    while i < STACK_DEPTH {
        if i >= n {
            return true;
        }
        if known.frames[i] != walk.frames[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Copies the current user stack (innermost first) into `frames`; returns
/// the number of frames.
#[inline(always)]
pub fn copy_user_stack<C: EbpfContext>(ctx: &C, frames: &mut [u64; MAX_FRAMES]) -> u32 {
    // SAFETY: `frames` is writable memory of exactly the size passed.
    let bytes = unsafe {
        bpf_get_stack(
            ctx.as_ptr(),
            frames.as_mut_ptr().cast(),
            (MAX_FRAMES * 8) as u32,
            BPF_F_USER_STACK as u64,
        )
    };
    if bytes < 0 {
        count(Stat::StackLost);
        0
    } else {
        (bytes as u32) / 8
    }
}

/// The word at the current task's user stack pointer (from the saved user
/// registers), or 0 if unreadable.
#[inline(always)]
pub fn user_sp_word() -> u64 {
    // SAFETY: helpers validate their arguments; reads may fail and return 0.
    unsafe {
        let task = bpf_get_current_task_btf();
        let regs = bpf_task_pt_regs(task) as *const pt_regs;
        if regs.is_null() {
            return 0;
        }
        let sp: u64 = bpf_probe_read_kernel(&raw const (*regs).rsp).unwrap_or(0);
        if sp == 0 {
            return 0;
        }
        bpf_probe_read_user(sp as *const u64).unwrap_or(0)
    }
}

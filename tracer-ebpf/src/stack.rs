//! User stack capture. Allocator stacks are taken at the *return* probe,
//! where the instruction pointer is the return address into the direct
//! caller, so the frame-pointer walk keeps the caller (at the entry probe it
//! would skip it); they are walked and deduplicated here rather than with
//! `bpf_get_stackid`. Mapping syscalls carry the raw stack plus the word at the
//! user stack pointer, from which userspace recovers the direct caller.

use aya_ebpf::{
    bindings::{pt_regs, BPF_F_USER_STACK},
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{bpf_get_current_task_btf, bpf_get_stack, bpf_task_pt_regs},
    },
    programs::RetProbeContext,
    EbpfContext,
};
use tracer_common::{StackFrames, Stat, MAX_FRAMES, STACK_DEPTH, UNKNOWN_STACK};

use crate::maps::{count, STACKS, STACK_SCRATCH};

/// Stack id of the current user stack: a frame-pointer walk from the
/// return probe's registers (the return address, then each frame's saved
/// return address), its frames hashed, and the table entry of that hash
/// compared frame by frame — a different stack with the same hash is
/// counted lost, never merged. Cost: one user read per frame (~40 ns), a
/// lookup (~60 ns), a compare; measured against `bpf_get_stackid`, whose
/// fixed cost was ~700 ns even for two frames (see README). A full table
/// is counted lost too. Lost stacks map to [`UNKNOWN_STACK`].
#[inline(always)]
pub fn user_stack_id(ctx: &RetProbeContext) -> u32 {
    let Some(walk) = STACK_SCRATCH.get_ptr_mut(0) else {
        return UNKNOWN_STACK;
    };
    // SAFETY: this CPU's scratch slot; the program runs with migration
    // disabled. ctx.regs is the probe's register set.
    let (walk, regs) = unsafe { (&mut *walk, &*ctx.regs) };
    let mut hash = FNV_OFFSET;
    let mut ip = regs.rip;
    // Code built without frame pointers uses rbp as a plain register: a
    // "frame pointer" outside the thread's stack ends the walk rather than
    // reading garbage frames (each garbage stack would be a new entry).
    let stack_low = regs.rsp;
    let in_stack = |fp: u64| fp >= stack_low && fp - stack_low < MAX_STACK_SPAN;
    let mut fp = if in_stack(regs.rbp) { regs.rbp } else { 0 };
    let mut n = 0usize;
    while n < STACK_DEPTH {
        walk.frames[n] = ip;
        hash = (hash ^ ip).wrapping_mul(FNV_PRIME);
        n += 1;
        // A frame: [saved rbp, return address]. The walk ends at a zero or
        // unreadable frame pointer, or one that does not go up the stack.
        if fp == 0 {
            break;
        }
        // SAFETY: a user read; a fault returns an error.
        let Ok(frame) = (unsafe { bpf_probe_read_user(fp as *const [u64; 2]) }) else {
            break;
        };
        if frame[1] == 0 {
            break;
        }
        ip = frame[1];
        fp = if frame[0] > fp && in_stack(frame[0]) {
            frame[0]
        } else {
            0
        };
    }
    walk.nr = n as u32;
    walk._pad = 0;
    let id = ((hash >> 32) ^ hash) as u32;
    let id = if id == UNKNOWN_STACK { id - 1 } else { id };
    if let Some(known) = STACKS.get_ptr(&id) {
        // SAFETY: a valid map value.
        return match same_frames(unsafe { &*known }, walk, n) {
            true => id,
            false => lost(),
        };
    }
    if STACKS.insert(&id, &*walk, BPF_NOEXIST).is_ok() {
        return id;
    }
    // Full, or another CPU inserted this hash just now: compare with it.
    match STACKS.get_ptr(&id) {
        // SAFETY: a valid map value.
        Some(known) if same_frames(unsafe { &*known }, walk, n) => id,
        _ => lost(),
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

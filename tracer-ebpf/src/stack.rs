//! User stack capture. Allocator stacks are taken at the *return* probe,
//! where the instruction pointer is the return address into the direct
//! caller, so the frame-pointer walk keeps the caller (at the entry probe it
//! would skip it). Mapping syscalls carry the raw stack plus the word at the
//! user stack pointer, from which userspace recovers the direct caller.

use aya_ebpf::{
    bindings::{pt_regs, BPF_F_USER_STACK},
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{bpf_get_current_task_btf, bpf_get_stack, bpf_task_pt_regs},
    },
    programs::tracing::StackIdContext,
    programs::RetProbeContext,
    EbpfContext,
};
use tracer_common::{Stat, MAX_FRAMES, UNKNOWN_STACK};

use crate::maps::{count, STACKS};

/// Stack id of the current user stack, deduplicated in the kernel's stack
/// map (hash of the frames + bucket compare: ~1 µs for deep stacks). A full
/// map or a hash collision is counted and mapped to [`UNKNOWN_STACK`].
#[inline(always)]
pub fn user_stack_id(ctx: &RetProbeContext) -> u32 {
    match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
        Ok(id) => id as u32,
        Err(_) => {
            count(Stat::StackLost);
            UNKNOWN_STACK
        }
    }
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

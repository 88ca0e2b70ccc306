//! `--sample-bytes`: which allocations are traced when not all are. Owns
//! the setting (`SAMPLE_BYTES`), the per-CPU byte countdown (`COUNTDOWN`)
//! and the exponential draws it is reset from (`DRAWS`). Used by `alloc`;
//! imports no other module of the crate.

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
};
use tracer_common::EXP_DRAWS;

/// `--sample-bytes` (see `tracer_common::config`), patched by userspace at
/// load time. Read with a volatile load so the compiler cannot fold the
/// default; each read is one load from the program's .rodata (~1 ns).
#[unsafe(no_mangle)]
static SAMPLE_BYTES: u64 = 0;

/// `--sample-bytes` (0: trace every allocation).
#[inline(always)]
pub(crate) fn sample_bytes() -> u64 {
    // SAFETY: a plain read of a static.
    unsafe { core::ptr::read_volatile(&SAMPLE_BYTES) }
}

/// Byte countdown of the sampler, per CPU: bytes left before the next
/// sampled allocation. A per-CPU slot (~10 ns, no hash, nothing to clean
/// up when threads exit) rather than per thread: the countdown is
/// memoryless, so which allocations share one does not change the
/// probability 1-exp(-size/SIZE) of each.
#[map]
static COUNTDOWN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Exponential draws of mean --sample-bytes (see `tracer_common::EXP_DRAWS`).
#[map]
static DRAWS: Array<u64> = Array::with_max_entries(EXP_DRAWS, 0);

/// Whether an allocation of `size` bytes is sampled: the countdown goes
/// down by `size`; when it runs out, the allocation is sampled and a new
/// countdown is drawn. One per-CPU slot, plus a random number and an array
/// read when sampling (~30 ns).
#[inline(always)]
pub(crate) fn sample(size: u64) -> bool {
    let Some(left) = COUNTDOWN.get_ptr_mut(0) else {
        return true;
    };
    // SAFETY: this CPU's slot; the program runs with migration disabled.
    unsafe {
        if *left > size {
            *left -= size;
            return false;
        }
        // SAFETY: plain helper call.
        let r = aya_ebpf::helpers::bpf_get_prandom_u32() % EXP_DRAWS;
        *left = DRAWS.get(r).copied().unwrap_or(1).max(1);
    }
    true
}

//! Which processes are traced: the process ids of the targets (`TARGETS`),
//! `--all` (`TRACE_ALL`) and memtrace's own process id (`SELF_TGID`), never
//! traced; and the text of a target's allocator library when it has one of
//! its own (`ALLOC_TEXT`). Used by the program modules; imports no other
//! module of the crate.

use aya_ebpf::{macros::map, maps::HashMap};
use tracer_common::MAX_TARGETS;

/// Global settings (see `tracer_common::config`), patched by userspace at
/// load time. Read with a volatile load so the compiler cannot fold the
/// default; each read is one load from the program's .rodata (~1 ns).
#[unsafe(no_mangle)]
static TRACE_ALL: u32 = 0;
#[unsafe(no_mangle)]
static SELF_TGID: u32 = 0;

#[inline(always)]
fn setting(value: &u32) -> u32 {
    // SAFETY: a plain read of a static.
    unsafe { core::ptr::read_volatile(value) }
}

/// Process ids (tgid) being traced. Only the tracepoints consult it (and
/// not with `--all`): uprobes are attached per process, or for every
/// process with `--all`, so the kernel filters them for free.
#[map]
static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// The text (start, end) of each target's allocator library when it is
/// one of its own (jemalloc, tcmalloc, mimalloc; see
/// `tracer_common::COOKIE_SKIP_OWN_TEXT`), by tgid. Written by userspace
/// when it hooks the library in that process; gone at its exec (the
/// library is mapped elsewhere, if at all) and its exit.
#[map]
static ALLOC_TEXT: HashMap<u32, [u64; 2]> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// Whether `tgid`'s allocator library's text is known. One hash lookup
/// (~50 ns), on unsampled calls that may skip their return only.
#[inline(always)]
pub(crate) fn has_allocator_text(tgid: u32) -> bool {
    ALLOC_TEXT.get_ptr(tgid).is_some()
}

/// Whether any of the `addresses` (read only if `tgid` has an entry) lies
/// in `tgid`'s allocator library's text. One hash lookup, on targets'
/// mmaps outside an open allocator call.
#[inline(always)]
pub(crate) fn in_allocator_text(tgid: u32, addresses: impl FnOnce() -> [u64; 2]) -> bool {
    let Some(text) = ALLOC_TEXT.get_ptr(tgid) else {
        return false;
    };
    // SAFETY: a valid map value pointer, read once.
    let [start, end] = unsafe { *text };
    addresses().iter().any(|a| (start..end).contains(a))
}

/// `tgid`'s image was replaced: its allocator library's text is not known
/// any more. One hash delete.
#[inline(always)]
pub(crate) fn forget_allocator_text(tgid: u32) {
    let _ = ALLOC_TEXT.remove(&tgid);
}

/// Whether `tgid` is memtrace itself, whose own allocations trap too when
/// the allocator is probed for every process (`--all`); never traced.
#[inline(always)]
pub(crate) fn is_self(tgid: u32) -> bool {
    tgid == setting(&SELF_TGID)
}

/// Whether the current process is a target of the tracepoints. One hash
/// lookup (~50 ns), paid by every mmap/munmap/mremap on the node; with
/// `--all`, two loads.
#[inline(always)]
pub(crate) fn is_target(tgid: u32) -> bool {
    if setting(&TRACE_ALL) != 0 {
        return !is_self(tgid);
    }
    TARGETS.get_ptr(tgid).is_some()
}

/// Makes `tgid` a target (a followed fork's child); fails when `TARGETS`
/// is full. One hash insert.
#[inline(always)]
pub(crate) fn add(tgid: u32) -> Result<(), i32> {
    TARGETS.insert(&tgid, &1, 0)
}

/// `tgid` is no longer a target (it exited). Two hash deletes.
#[inline(always)]
pub(crate) fn remove(tgid: u32) {
    let _ = TARGETS.remove(&tgid);
    forget_allocator_text(tgid);
}

//! Anonymous-mapping syscalls (mmap/munmap/mremap) of traced processes, seen
//! through the syscall tracepoints so that runtimes bypassing libc are seen
//! too. Calls made inside an open allocator call belong to that call (glibc
//! serves large mallocs and grows arenas with them) and are skipped. The
//! rest go to userspace through the ring buffer, where the range arithmetic
//! (partial munmap, mremap moves) is done exactly; they are rare next to
//! malloc. Every syscall on the node pays one TARGETS lookup (~50 ns). An
//! mmap of a CPython process also walks its Python frames (`python::walk`,
//! a few µs: mmaps are rare).
//!
//! A munmap also takes out the pymalloc pools recorded in the range
//! (`pools::unmapped`: one lookup unless the process records pools).
//!
//! Owns the arguments kept between a syscall's enter and exit
//! (`SYSCALL_ARGS`).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use tracer_common::{EventKind, MmapEvent, Stat, SyscallArgs};

use crate::{
    alloc::open_call,
    events::EVENTS,
    pools, python,
    stack::{copy_user_stack, user_ip_and_sp_word, user_sp_word},
    stats::count,
    targets::{in_allocator_text, is_target},
};

/// mmap/munmap/mremap arguments between syscall enter and exit, by thread.
#[map]
static SYSCALL_ARGS: LruHashMap<u64, SyscallArgs> = LruHashMap::with_max_entries(4096, 0);

const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED: u64 = 0x10;
const PROT_READ: u64 = 0x1;
const PROT_WRITE: u64 = 0x2;
const PROT_EXEC: u64 = 0x4;
/// Offsets in the syscall tracepoints' records (see the tracefs `format`
/// files): arguments start at 16, one u64 each; `ret` of sys_exit is at 16.
const ARG0: usize = 16;

#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    // SAFETY: offsets within the syscall tracepoint record.
    unsafe { ctx.read_at::<u64>(ARG0 + 8 * n).unwrap_or(0) }
}

/// Records the syscall's arguments for its exit, if the thread belongs to a
/// target and is not inside an allocator call.
#[inline(always)]
fn remember(kind: EventKind, addr: u64, len: u64, new_len: u64) {
    let tid = bpf_get_current_pid_tgid();
    if !is_target((tid >> 32) as u32) {
        return;
    }
    // Mappings created inside an allocator call belong to it, and so do
    // those an allocator library of its own makes from its text (at any
    // time; its unsampled calls may leave no record, see
    // `tracer_common::COOKIE_SKIP_OWN_TEXT`). Releases (munmap, MAP_FIXED
    // replacement) always go through: they only ever release ranges
    // userspace recorded.
    let creates = kind == EventKind::Mmap || kind == EventKind::Mremap;
    if creates
        && (open_call().is_some() || in_allocator_text((tid >> 32) as u32, user_ip_and_sp_word))
    {
        count(Stat::NestedMapping);
        return;
    }
    let args = SyscallArgs {
        kind: kind as u32,
        _pad: 0,
        addr,
        len,
        new_len,
    };
    let _ = SYSCALL_ARGS.insert(&tid, &args, 0);
}

/// Counts anonymous mappings that are memory. A PROT_NONE mapping is an
/// address-space reservation (glibc reserves each new arena that way — even
/// from inside free(), which has no return probe to mark it nested — and so
/// do Go and the JVM); the memory is committed later and, for allocator
/// arenas, counted block by block through malloc.
#[tracepoint]
pub(crate) fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    let flags = arg(&ctx, 3);
    let accessible = arg(&ctx, 2) & (PROT_READ | PROT_WRITE | PROT_EXEC) != 0;
    if flags & MAP_ANONYMOUS != 0 && accessible {
        remember(EventKind::Mmap, 0, arg(&ctx, 1), 0);
        return 0;
    }
    if flags & MAP_ANONYMOUS != 0 && is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        count(Stat::Reservation);
    }
    // Not counted itself, but a MAP_FIXED mapping replaces what was there:
    // memory decommitted by mapping PROT_NONE over it (JVM, V8), or a file
    // mapped over anonymous memory, is released.
    if flags & MAP_FIXED != 0 {
        remember(EventKind::FixedReplace, arg(&ctx, 0), arg(&ctx, 1), 0);
    }
    0
}

#[tracepoint]
pub(crate) fn sys_enter_munmap(ctx: TracePointContext) -> u32 {
    remember(EventKind::Munmap, arg(&ctx, 0), arg(&ctx, 1), 0);
    0
}

#[tracepoint]
pub(crate) fn sys_enter_mremap(ctx: TracePointContext) -> u32 {
    remember(EventKind::Mremap, arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2));
    0
}

/// Shared by the three sys_exit programs: sends the completed call.
#[inline(always)]
fn complete(ctx: &TracePointContext) {
    let tid = bpf_get_current_pid_tgid();
    // Cheap miss for every non-target syscall: one lookup in a small map.
    let Some(args) = SYSCALL_ARGS.get_ptr(&tid) else {
        return;
    };
    // SAFETY: valid map value; copied before the delete.
    let args = unsafe { *args };
    let _ = SYSCALL_ARGS.remove(&tid);
    // SAFETY: `ret` is at offset 16 of every sys_exit record.
    let ret = unsafe { ctx.read_at::<i64>(ARG0).unwrap_or(-1) };
    let mut kind = args.kind;
    let failed = if kind == EventKind::Munmap as u32 {
        ret != 0
    } else {
        (-4095..0).contains(&ret)
    };
    if failed {
        return;
    }
    if kind == EventKind::FixedReplace as u32 {
        kind = EventKind::Munmap as u32;
    }
    if kind == EventKind::Munmap as u32 {
        // Pools recorded in an arena pymalloc released are gone.
        pools::unmapped((tid >> 32) as u32, args.addr, args.len);
    }
    let Some(mut entry) = EVENTS.reserve::<MmapEvent>(0) else {
        count(Stat::RingBufFull);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: `event` points to reserved ring-buffer memory of the right size;
    // every field is written before submit.
    unsafe {
        (*event).kind = kind;
        (*event).tgid = (tid >> 32) as u32;
        (*event).timestamp_ns = bpf_ktime_get_ns();
        (*event)._pad = 0;
        if kind == EventKind::Mmap as u32 {
            (*event).addr = ret as u64;
            (*event).len = args.len;
            (*event).new_addr = 0;
            (*event).new_len = 0;
            (*event).user_sp_word = user_sp_word();
            (*event).nr_frames = copy_user_stack(ctx, &mut (*event).frames);
            // In a CPython process, the Python frames that made it (a
            // pymalloc arena: which line's objects needed it).
            let e = &mut *event;
            python::walk(e.tgid, &mut e.py_nr, &mut e.py_flags, &mut e.python);
        } else {
            (*event).addr = args.addr;
            (*event).len = args.len;
            (*event).new_addr = if kind == EventKind::Mremap as u32 {
                ret as u64
            } else {
                0
            };
            (*event).new_len = args.new_len;
            (*event).user_sp_word = 0;
            (*event).nr_frames = 0;
            (*event).py_nr = 0;
            (*event).py_flags = 0;
        }
    }
    entry.submit(0);
}

#[tracepoint]
pub(crate) fn sys_exit_mmap(ctx: TracePointContext) -> u32 {
    complete(&ctx);
    0
}

#[tracepoint]
pub(crate) fn sys_exit_munmap(ctx: TracePointContext) -> u32 {
    complete(&ctx);
    0
}

#[tracepoint]
pub(crate) fn sys_exit_mremap(ctx: TracePointContext) -> u32 {
    complete(&ctx);
    0
}

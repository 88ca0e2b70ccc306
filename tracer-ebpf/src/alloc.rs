//! Allocator uprobes. One generic entry program serves every allocation
//! function (the attach cookie says which one, see `tracer_common::AllocFn`),
//! one return program completes them, and `free` has an entry probe only.
//! On kernels with uprobe session programs (6.13+), `alloc_session` does
//! both in one program instead (loaded and attached by userspace, see
//! tracer/src/multi.rs), and its entry run decides whether the return run
//! happens at all: an unsampled call that needs nothing at its return
//! costs one trap instead of two.
//!
//! Owns the per-thread record of an open allocator call (`INFLIGHT`) and
//! what each stack allocated (`STACK_TOTALS`); blocks go to the live table
//! (`live`), stacks to the stack table (`stack`).
//!
//! Hot-path cost per malloc+free pair, beyond the trap itself: entry = the
//! thread's INFLIGHT record (task storage, ~25 ns); return = the same
//! record, stack id, STACK_TOTALS lookup, a live-table insert (`live.rs`);
//! free = the attach cookie and a live-table take, nothing else (what each
//! stack freed is what it allocated less what it still holds, which
//! userspace reads from the live table); an outer free (C++'s `operator
//! delete`) also leaves its block in the thread's INFLIGHT record. With `--sample-bytes`, an unsampled call costs the INFLIGHT
//! record and the per-CPU countdown at entry, the record again at return,
//! and its free one live-table lookup; on the session path, an unsampled
//! malloc or calloc of glibc (see `tracer_common::COOKIE_MAY_SKIP`) costs
//! the INFLIGHT lookup (nesting check), the countdown and a STATS slot at
//! entry, no return trap, and its free one live-table lookup; one of
//! jemalloc, tcmalloc or mimalloc (`COOKIE_SKIP_OWN_TEXT`) also an
//! ALLOC_TEXT lookup.

use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::{bpf_get_attach_cookie, bpf_get_func_ip},
    },
    macros::{map, uprobe, uretprobe},
    maps::HashMap,
    programs::{ProbeContext, RetProbeContext},
    EbpfContext,
};
use core::intrinsics::{atomic_xadd, AtomicOrdering};
use tracer_common::{
    cookie_arg_register, cookie_pool_bits, return_cookie_pid, AllocFn, InFlight, LiveAlloc,
    StackAllocated, StackKey, Stat, COOKIE_ARGS_SHIFT, COOKIE_FREE_OUTER, COOKIE_FREE_SECOND,
    COOKIE_MAY_SKIP, COOKIE_SKIP_OWN_TEXT, COOKIE_STEPPED, SKIP_BELOW_BYTES,
};

use crate::{
    live::{self, Put},
    pools,
    sample::{sample, sample_bytes},
    stack::user_stack_id,
    stats::count,
    targets::{has_allocator_text, is_self},
    task_storage::TaskStorage,
};

/// Allocator calls between entry and return, per thread (`active` set while
/// one is open).
#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "INFLIGHT")]
static INFLIGHT: TaskStorage<InFlight> = TaskStorage::new();

/// 1: the programs return at once (`--empty-programs`, the bench's floor:
/// what the traps at memtrace's probe points cost alone), patched by
/// userspace at load time.
#[unsafe(no_mangle)]
static EMPTY_PROGRAMS: u32 = 0;

/// Whether the programs are to do nothing: one load from .rodata (~1 ns).
#[inline(always)]
fn empty() -> bool {
    // SAFETY: a plain read of a static patched at load time.
    unsafe { core::ptr::read_volatile(&EMPTY_PROGRAMS) != 0 }
}

/// The current thread's open allocator call, if any (~25 ns). `mapping`
/// asks too: mmaps made inside an allocator call are the allocator's.
#[inline(always)]
pub(crate) fn open_call() -> Option<*mut InFlight> {
    // SAFETY: the thread's own record.
    INFLIGHT
        .current(false)
        .filter(|&c| unsafe { (*c).active != 0 })
}

/// What each (tgid, stack id) allocated. Userspace reads this every interval.
#[map]
static STACK_TOTALS: HashMap<StackKey, StackAllocated> = HashMap::with_max_entries(32_768, 0);

/// The first three arguments: from the registers the ABI passes them in
/// (rdi, rsi, rdx), each read once at a constant offset, unless the
/// cookie says the probe's placement found one in another register (see
/// `tracer_common::COOKIE_ARGS_SHIFT`; a few more loads and compares,
/// only then). Volatile reads: LLVM would otherwise merge the loads of
/// different `match` arms into one load from a computed offset of the
/// context, which the verifier rejects ("dereference of modified ctx
/// ptr").
#[inline(always)]
fn args3(ctx: &ProbeContext, cookie: u64) -> [u64; 3] {
    let regs = ctx.regs;
    // SAFETY: ctx.regs is the probe's register set.
    let abi = unsafe {
        [
            core::ptr::read_volatile(&raw const (*regs).rdi),
            core::ptr::read_volatile(&raw const (*regs).rsi),
            core::ptr::read_volatile(&raw const (*regs).rdx),
        ]
    };
    if cookie >> COOKIE_ARGS_SHIFT == 0 {
        return abi;
    }
    [
        register(ctx, cookie_arg_register(cookie, 0), abi[0]),
        register(ctx, cookie_arg_register(cookie, 1), abi[1]),
        register(ctx, cookie_arg_register(cookie, 2), abi[2]),
    ]
}

/// The register of index `index` of `tracer_common::ARG_REGISTERS` (plus
/// one), or `abi` for index 0.
#[inline(always)]
fn register(ctx: &ProbeContext, index: u64, abi: u64) -> u64 {
    let r = ctx.regs;
    // SAFETY: ctx.regs is the probe's register set.
    unsafe {
        match index {
            1 => core::ptr::read_volatile(&raw const (*r).rdi),
            2 => core::ptr::read_volatile(&raw const (*r).rsi),
            3 => core::ptr::read_volatile(&raw const (*r).rdx),
            4 => core::ptr::read_volatile(&raw const (*r).rcx),
            5 => core::ptr::read_volatile(&raw const (*r).r8),
            6 => core::ptr::read_volatile(&raw const (*r).r9),
            7 => core::ptr::read_volatile(&raw const (*r).rax),
            8 => core::ptr::read_volatile(&raw const (*r).rbx),
            9 => core::ptr::read_volatile(&raw const (*r).rbp),
            10 => core::ptr::read_volatile(&raw const (*r).r10),
            11 => core::ptr::read_volatile(&raw const (*r).r11),
            12 => core::ptr::read_volatile(&raw const (*r).r12),
            13 => core::ptr::read_volatile(&raw const (*r).r13),
            14 => core::ptr::read_volatile(&raw const (*r).r14),
            15 => core::ptr::read_volatile(&raw const (*r).r15),
            _ => abi,
        }
    }
}

/// A requested size: the bytes, and whether computing them overflowed
/// (then `bytes` is 0). Plain values rather than an `Option`: LLVM may
/// leave the payload of a `None` in an unwritten register and copy it
/// along, which the verifier rejects (`!read_ok`).
#[derive(Clone, Copy)]
struct Size {
    bytes: u64,
    overflow: bool,
}

impl Size {
    #[inline(always)]
    const fn of(bytes: u64) -> Size {
        Size {
            bytes,
            overflow: false,
        }
    }

    const OVERFLOW: Size = Size {
        bytes: 0,
        overflow: true,
    };
}

/// `a * b`, flagged when it overflows. Done on 32-bit halves: LLVM turns
/// `checked_mul` and a division check into a 128-bit multiply
/// (`__multi3`), which BPF lacks.
#[inline(always)]
fn product(a: u64, b: u64) -> Size {
    let (a_hi, a_lo) = (a >> 32, a & 0xffff_ffff);
    let (b_hi, b_lo) = (b >> 32, b & 0xffff_ffff);
    if a_hi != 0 && b_hi != 0 {
        return Size::OVERFLOW;
    }
    // One of the high halves is zero, so each term is below 2^64.
    let cross = a_hi * b_lo + a_lo * b_hi;
    if cross >> 32 != 0 {
        return Size::OVERFLOW;
    }
    let low = a_lo * b_lo;
    let total = low.wrapping_add(cross << 32);
    if total < low {
        Size::OVERFLOW
    } else {
        Size::of(total)
    }
}

/// An entry open longer than this lost its return (see `InFlight::entry_ns`).
const STALE_AFTER_NS: u64 = 1_000_000_000;

#[uprobe]
pub(crate) fn alloc_enter(ctx: ProbeContext) -> u32 {
    if !empty() {
        try_alloc_enter(&ctx, false);
    }
    0
}

/// The failure path of an allocation function whose other calls go on to
/// another hooked function (glibc's `reallocarray`: its overflow path;
/// the calls that pass go on to `realloc`, whose probes see them): each
/// run is a failed call. One task-storage lookup (~25 ns), and only on a
/// failure: a call nested in an open allocator call is that call's to
/// account (as for nested entries).
#[uprobe]
pub(crate) fn failed_call(ctx: ProbeContext) -> u32 {
    if empty() || is_self((bpf_get_current_pid_tgid() >> 32) as u32) {
        return 0;
    }
    // SAFETY: ctx.regs is the probe's register set.
    let sp = unsafe { (*ctx.regs).rsp };
    // SAFETY: the thread's own record.
    let nested = open_call().is_some_and(|open| unsafe {
        sp <= (*open).entry_sp && bpf_ktime_get_ns().wrapping_sub((*open).entry_ns) < STALE_AFTER_NS
    });
    count(match nested {
        true => Stat::NestedCall,
        false => Stat::FailedAlloc,
    });
    0
}

/// Entry and return of every allocation function in one uprobe session
/// program (`BPF_TRACE_UPROBE_SESSION`, kernels 6.13+). The kernel runs it
/// at the entry and, only if that run returned 0, again at the return.
///
/// Which run is this: `bpf_get_func_ip` is the probed address at both
/// runs, while the registers' instruction pointer is that address at the
/// entry and the caller's return address at the return (the kernel puts
/// the original return address back before it runs return handlers). No
/// kfunc needed (`bpf_session_is_return` would be, with its BTF id
/// resolved at load time), and exact: a return address is never the probed
/// address itself (that would need a call ending where the function
/// starts, i.e. the function calling itself at its first instruction).
/// The in-flight record's stack pointer would tell them apart too (at the
/// return sp = entry sp + 8), but not always: a new call's entry after a
/// longjmp out of an open call can have that same sp.
///
/// Written out rather than with `#[uprobe]`, whose wrapper returns 0
/// whatever the function returns; the section makes it a uprobe for the
/// object parser (userspace loads it, see tracer/src/multi.rs).
#[unsafe(no_mangle)]
#[unsafe(link_section = "uprobe")]
pub(crate) fn alloc_session(ctx: *mut c_void) -> u32 {
    if empty() {
        // Both runs, as full tracing has them.
        return 0;
    }
    let ctx = ProbeContext::new(ctx);
    // SAFETY: ctx.regs is the probe's register set.
    let ip = unsafe { (*ctx.regs).rip };
    // SAFETY: the helper reads the run context the kernel set up (~5 ns).
    let probed = unsafe { bpf_get_func_ip(ctx.as_ptr()) };
    if ip != probed {
        try_alloc_return(&RetProbeContext::new(ctx.as_ptr()));
        return 0;
    }
    match try_alloc_enter(&ctx, true) {
        true => 0,
        // 1: the kernel skips this call's return run.
        false => 1,
    }
}

/// The entry of an allocation call: records it in the thread's INFLIGHT
/// record for the return. Returns whether the call must be followed to
/// its return; `session` (the session program, which can skip a return)
/// lets it say no. The classic return probe runs whatever this says.
///
/// When the return may be skipped (session path, and only then; see
/// [`skip_return`] for the rule): memtrace's own calls, calls nested in an
/// open call (the outer call accounts for them; the classic path counts
/// them in `depth` for their return instead), calls that found no room
/// for a record, and unsampled glibc mallocs and callocs below the mmap
/// threshold.
#[inline(always)]
fn try_alloc_enter(ctx: &ProbeContext, session: bool) -> bool {
    let tid = bpf_get_current_pid_tgid();
    if is_self((tid >> 32) as u32) {
        return false; // with --all, memtrace's own calls trap too
    }
    // SAFETY: ctx.regs is the probe's register set.
    let sp = unsafe { (*ctx.regs).rsp };
    // The clock (~20 ns) is read only when needed: not by a call that
    // skips its return.
    // SAFETY: plain helper call.
    let clock = || unsafe { bpf_ktime_get_ns() };
    // The thread's record, created on its first call: one task-storage
    // access serves both the nesting check and the new call.
    let slot = INFLIGHT.current(true);
    // SAFETY: the thread's own record.
    if let Some(open) = slot.filter(|&c| unsafe { (*c).active != 0 }) {
        // SAFETY: valid map value pointer for this thread only.
        let open = unsafe { &mut *open };
        if sp <= open.entry_sp && clock().wrapping_sub(open.entry_ns) < STALE_AFTER_NS {
            // Called from inside an open allocator call (or tail-called by
            // it, same stack pointer): the outermost call accounts for it.
            // Its return has nothing to do but keep count: the session
            // program skips it.
            if !session {
                open.depth += 1;
            }
            count(Stat::NestedCall);
            return false;
        }
        // The open call's frame is gone (or it has been open far longer than
        // any allocator call takes): it never returned. A realloc's old
        // block goes back to the live table: dropping it would leave its bytes
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
    if cookie & COOKIE_STEPPED != 0 {
        // A per-CPU counter, on single-stepped probes only (~10 µs each).
        count(Stat::SteppedProbe);
    }
    let Some(func) = AllocFn::from_cookie(cookie) else {
        return false;
    };
    // Overflowing products make the call fail (and are flagged so that its
    // NULL is not mistaken for realloc(p, 0)).
    let a = args3(ctx, cookie);
    let (size, ptr) = match func {
        AllocFn::Malloc => (Size::of(a[0]), 0),
        AllocFn::Calloc => (product(a[0], a[1]), 0),
        AllocFn::Realloc => (Size::of(a[1]), a[0]),
        AllocFn::ReallocArray => (product(a[1], a[2]), a[0]),
        AllocFn::PosixMemalign => (Size::of(a[2]), a[0]),
        AllocFn::AlignedAlloc => (Size::of(a[1]), 0),
        AllocFn::NewPool => (Size::of(1 << cookie_pool_bits(cookie)), 0),
    };
    // With --sample-bytes, only sampled allocations are followed (an
    // overflowing size fails: not sampled). Full tracing samples all.
    let sampled = sample_bytes() == 0 || (!size.overflow && sample(size.bytes));
    if session && !sampled && skip_return(cookie, func, size, (tid >> 32) as u32) {
        // No record: nothing at the return would use it (see skip_return).
        count(Stat::ReturnSkipped);
        return false;
    }
    let Some(slot) = slot else {
        count(Stat::InFlightFull);
        return false;
    };
    // Written field by field into the thread's record (no copy of a whole
    // record built on the stack). Unsampled calls are recorded too (the
    // slot is already at hand): the record marks mmaps made inside the
    // call as the allocator's, and nested calls as nested; the return then
    // only clears it.
    // SAFETY: the thread's own record.
    let call = unsafe { &mut *slot };
    call.entry_sp = sp;
    call.depth = 0;
    call.func = func as u32;
    call.size = size.bytes;
    call.entry_ns = clock();
    call.ptr = ptr;
    call.size_overflow = size.overflow as u32;
    call.sampled = sampled as u32;
    call.tgid = (tid >> 32) as u32;
    call.old_valid = 0;
    if matches!(func, AllocFn::Realloc | AllocFn::ReallocArray) && ptr != 0 {
        // Take the old block out now: once realloc frees it internally,
        // another thread may be handed the same address before we return.
        if let Some(old) = live::take((tid >> 32) as u32, ptr) {
            call.old = old;
            call.old_valid = 1;
        }
    }
    call.active = 1;
    true
}

/// Whether an unsampled call may skip its return (session path). Its
/// return would do nothing for the accounting — the new block is not
/// recorded — but clear the in-flight record, and the record matters
/// while the call runs in two ways: mmaps made inside it are the
/// allocator's (`mapping.rs` skips them rather than count them again),
/// and allocator calls inside it are nested (counted once, and drawn
/// once by the sampler). So only when neither can happen:
/// - userspace set [`COOKIE_MAY_SKIP`] on this function: glibc's malloc
///   or calloc, which call no other probed function. Never realloc: its
///   old block may be recorded (taken out of the live table at the entry, it is
///   put back at the return if the call failed) or be an mmapped chunk it mremaps; never
///   posix_memalign, aligned_alloc or memalign (for an alignment glibc
///   gives anyway they call malloc); never another allocator's functions
///   this way (jemalloc, tcmalloc, mimalloc map their arenas from small
///   calls: see below);
/// - the request is below [`SKIP_BELOW_BYTES`]: glibc
///   mmaps a chunk of its own only from its mmap threshold (128 KiB by
///   default); smaller requests are served from the arenas, which grow by
///   brk or mprotect, or by PROT_NONE reservations `mapping.rs` ignores.
///
/// Or userspace set [`COOKIE_SKIP_OWN_TEXT`] on this function: the malloc
/// or calloc of an allocator in a library of its own (jemalloc, tcmalloc,
/// mimalloc), which call no other probed function either, and whose mmaps
/// `mapping.rs` tells by where they are made from, while the kernel holds
/// that library's text for the process (one lookup, here and only here);
/// below the same size, so that a large unsampled call still maps inside
/// a record.
///
/// Unsampled calls that fail (NULL) are then not counted in
/// `failed_allocations`.
#[inline(always)]
fn skip_return(cookie: u64, func: AllocFn, size: Size, tgid: u32) -> bool {
    matches!(func, AllocFn::Malloc | AllocFn::Calloc)
        && !size.overflow
        && size.bytes < SKIP_BELOW_BYTES
        && (cookie & COOKIE_MAY_SKIP != 0
            || (cookie & COOKIE_SKIP_OWN_TEXT != 0 && has_allocator_text(tgid)))
}

#[uretprobe]
pub(crate) fn alloc_return(ctx: RetProbeContext) -> u32 {
    if empty() {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // One helper call and a compare: on older kernels (6.1) this program
    // also runs for the returns of other processes whose entries trapped
    // (see `return_cookie`); those are their own link's to close.
    // SAFETY: the cookie helper only reads the probe's attach cookie.
    let owner = return_cookie_pid(unsafe { bpf_get_attach_cookie(ctx.as_ptr()) });
    if (owner != 0 && owner != tgid) || is_self(tgid) {
        return 0;
    }
    try_alloc_return(&ctx);
    0
}

/// The return of an allocation call, past memtrace's own calls (on the
/// session path the entry run passed over them): the thread's record says
/// who called.
#[inline(always)]
fn try_alloc_return(ctx: &RetProbeContext) {
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
    let tgid = call.tgid;
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
        // The pool of the first block it hands out.
        AllocFn::NewPool => ret & !(call.size - 1),
        _ => ret,
    };
    let reallocating = matches!(func, AllocFn::Realloc | AllocFn::ReallocArray);
    if addr == 0 {
        if reallocating && call.size == 0 && call.size_overflow == 0 {
            // realloc(p, 0) freed p (taken out of the live table at the
            // entry): a success, not a failed call.
            return;
        }
        if reallocating && call.old_valid != 0 {
            // Failed realloc: p is still valid and still outstanding.
            restore_live(tgid, call.ptr, &call.old);
        }
        count(Stat::FailedAlloc);
        return;
    }
    // (The old block, taken out of the live table at the entry, counts as
    // freed from there: see `record_alloc`.)
    if call.sampled == 0 {
        return;
    }
    let stack_id = user_stack_id(ctx, tgid);
    // The entry's timestamp serves as the block's: one clock read per call.
    let reused = match func {
        AllocFn::NewPool => {
            pools::note(tgid, call.size);
            Stat::PoolReused
        }
        _ => Stat::AddressReused,
    };
    record_alloc(tgid, addr, call.size, stack_id, call.entry_ns, reused);
}

#[uprobe]
pub(crate) fn free_enter(ctx: ProbeContext) -> u32 {
    if empty() {
        return 0;
    }
    // SAFETY: the cookie helper only reads the probe's attach cookie.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    if cookie & COOKIE_STEPPED != 0 {
        count(Stat::SteppedProbe);
    }
    let [first, second, _] = args3(&ctx, cookie);
    let addr = match cookie & COOKIE_FREE_SECOND {
        0 => first,
        _ => second,
    };
    if addr == 0 {
        return 0;
    }
    let tid = bpf_get_current_pid_tgid();
    let tgid = (tid >> 32) as u32;
    if is_self(tgid) {
        return 0;
    }
    // SAFETY: ctx.regs is the probe's register set.
    let sp = unsafe { (*ctx.regs).rsp };
    let outer = cookie & COOKIE_FREE_OUTER != 0;
    let known = live::take(tgid, addr).is_some();
    // Sampling: most blocks are not recorded; a miss is no news (and costs
    // this one lookup only).
    let unknown = !known && sample_bytes() == 0 && !nested_free(addr, sp);
    if unknown {
        count(Stat::FreeUnknown);
    }
    if outer && (known || unknown) {
        // The outermost of an outer free (operator delete): the frees
        // inside it of the same block are its own (one task-storage
        // access, ~25 ns, per delete).
        if let Some(record) = INFLIGHT.current(true) {
            // SAFETY: valid map value pointer for this thread only.
            unsafe {
                (*record).free_addr = addr;
                (*record).free_sp = sp;
            }
        }
    }
    0
}

/// Whether a free of `addr` (at stack pointer `sp`) that found no block is
/// part of a call of this thread that already accounted for it: glibc's
/// realloc(p, 0), which frees p internally after its entry probe took p's
/// record, or a free inside an outer free of the same block (from deeper
/// on the stack, or tail-called: the same stack pointer; `_ZdlPvm` calls
/// `_ZdlPv`, which calls `free`). One task-storage access.
#[inline(always)]
fn nested_free(addr: u64, sp: u64) -> bool {
    let Some(record) = INFLIGHT.current(false) else {
        return false;
    };
    // SAFETY: valid map value pointer for this thread only.
    let record = unsafe { &mut *record };
    if record.active != 0 && record.ptr == addr && record.old_valid != 0 {
        return true;
    }
    if record.free_addr == addr && sp <= record.free_sp {
        count(Stat::NestedCall);
        return true;
    }
    false
}

#[inline(always)]
fn atomic_add(field: *mut u64, value: u64) {
    // SAFETY: `field` points into a map value that lives as long as the map.
    // A BPF atomic add (lock xadd, ~20 ns) keeps concurrent CPUs consistent;
    // core's AtomicU64::fetch_add is not available on the BPF target.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, value) };
}

/// Records a new block: the live entry first, then the stack totals, so that
/// a block counted in the totals always has a live entry for its free to
/// find (a failed insert therefore loses an allocation, never invents one).
/// The kernel counts what each stack allocated only; what it freed is
/// what it allocated less what the live table still holds of it, which
/// userspace reads every interval (`tracer/src/drain.rs`): a free, a block
/// taken out by a realloc or replaced below, is one live-table take and
/// no totals update. Since the live entry comes first, a block counted
/// allocated and not in the table has been taken out: freed, never a
/// phantom. Cost: totals lookup (+ insert the first time a stack is seen)
/// and the live table's insert.
#[inline(always)]
fn record_alloc(tgid: u32, addr: u64, size: u64, stack_id: u32, now: u64, reused: Stat) {
    let stack_key = StackKey { tgid, stack_id };
    let totals = match STACK_TOTALS.get_ptr_mut(&stack_key) {
        Some(t) => t,
        None => {
            let _ = STACK_TOTALS.insert(&stack_key, &StackAllocated::default(), BPF_NOEXIST);
            match STACK_TOTALS.get_ptr_mut(&stack_key) {
                Some(t) => t,
                None => {
                    count(Stat::StackTotalsFull);
                    return;
                }
            }
        }
    };
    let block = LiveAlloc {
        size,
        timestamp_ns: now,
        stack_id,
        _pad: 0,
    };
    match live::put(tgid, addr, &block, true) {
        Put::New => {}
        // The address is still recorded: it was handed out again, so its
        // free was missed (`reused` says how that is counted: a pool's
        // return to its arena is never seen). The old block, out of the
        // table, counts freed.
        Put::Present => count(reused),
        Put::Full => {
            count(Stat::LiveMapFull);
            return;
        }
    }
    // SAFETY: valid map value pointer; fields updated atomically.
    unsafe {
        atomic_add(&raw mut (*totals).bytes, size);
        atomic_add(&raw mut (*totals).count, 1);
    }
}

/// Puts a record back (a failed realloc leaves its old block valid).
#[inline(always)]
fn restore_live(tgid: u32, addr: u64, record: &LiveAlloc) {
    // Recorded again meanwhile (a stale record: the address was freed and
    // handed out again since): the newer record stands. Full: the block
    // counts freed (it is out of the table) rather than leave a phantom.
    if let Put::Full = live::put(tgid, addr, record, false) {
        count(Stat::LiveMapFull);
    }
}

const BPF_NOEXIST: u64 = 1;

//! The `#[repr(C)]` types that the eBPF programs (`tracer-ebpf`) and the
//! userspace tracer (`memtrace`) both read: map keys and values, ring-buffer
//! events, loss counters and the attach-cookie encoding. Nothing else lives
//! here; both sides must agree on every byte, so every type is plain old data,
//! and each struct's size is asserted at compile time right after it: a
//! change of layout fails the build until the assert is changed too, on
//! purpose, for both sides.
#![no_std]

/// Which allocator entry point a uprobe is attached to. Passed to the single
/// generic entry program as the uprobe's attach cookie, so one BPF program
/// serves every allocation function.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocFn {
    /// `malloc(size)`, `valloc(size)`, `pvalloc(size)`: size in arg 0.
    Malloc = 1,
    /// `calloc(nmemb, size)`: product of arg 0 and arg 1 (overflow ⇒ not recorded).
    Calloc = 2,
    /// `realloc(ptr, size)`.
    Realloc = 3,
    /// `reallocarray(ptr, nmemb, size)`.
    ReallocArray = 4,
    /// `posix_memalign(void **memptr, align, size)`: result written to `*memptr`, returns 0.
    PosixMemalign = 5,
    /// `aligned_alloc(align, size)`, `memalign(align, size)`: size in arg 1.
    AlignedAlloc = 6,
    /// pymalloc's `allocate_from_new_pool(size_class)` in an interpreter
    /// whose callers have pymalloc's fast path inlined (link-time optimized
    /// builds such as Debian's `python3.11`): it returns the first block of
    /// a pool it took for a size class. Recorded as the whole pool (the
    /// cookie's [`cookie_pool_bits`]) at the pool's address.
    NewPool = 7,
}

impl AllocFn {
    /// The function of an attach cookie (its low 32 bits; the bits above
    /// are flags such as [`COOKIE_MAY_SKIP`]).
    pub const fn from_cookie(cookie: u64) -> Option<AllocFn> {
        Some(match cookie & 0xffff_ffff {
            1 => AllocFn::Malloc,
            2 => AllocFn::Calloc,
            3 => AllocFn::Realloc,
            4 => AllocFn::ReallocArray,
            5 => AllocFn::PosixMemalign,
            6 => AllocFn::AlignedAlloc,
            7 => AllocFn::NewPool,
            _ => return None,
        })
    }
}

/// Attach-cookie flag of the uprobe session path: an unsampled call of
/// this function may skip its return (the entry program returns 1 and
/// writes no in-flight record) when the request is below
/// [`SKIP_BELOW_BYTES`]. Userspace sets it only on glibc's leaf allocation
/// functions, `malloc` and `calloc`: they call no other probed function
/// (so no nested call goes unrecognised; glibc's aligned functions call
/// `malloc` for small alignments), and they mmap only for chunks at or
/// above glibc's mmap threshold (128 KiB unless the program lowers it),
/// so the record that marks an allocator's mmaps as its own is not needed.
pub const COOKIE_MAY_SKIP: u64 = 1 << 32;

/// Attach-cookie flag of the uprobe session path: as [`COOKIE_MAY_SKIP`],
/// for the `malloc` and `calloc` of an allocator in a library of its own
/// (jemalloc, tcmalloc, mimalloc), but only while the kernel holds that
/// library's text for the process (`ALLOC_TEXT`, one lookup). These
/// allocators map memory from small calls too; an mmap made from their
/// text (the syscall's instruction, or its caller as glibc's `mmap` and
/// `syscall` wrappers leave it on top of the stack) is then known as
/// theirs without the call's record. Their `malloc` and `calloc` call no
/// other probed function.
pub const COOKIE_SKIP_OWN_TEXT: u64 = 1 << 33;

/// Where an [`AllocFn::NewPool`] cookie says how large a pool is: bits
/// 40..46 hold log2 of its size (14: pymalloc's 16 KiB pools of 3.10+).
pub const COOKIE_POOL_SHIFT: u64 = 40;

/// The pool size's log2 in an [`AllocFn::NewPool`] cookie.
pub const fn cookie_pool_bits(cookie: u64) -> u64 {
    (cookie >> COOKIE_POOL_SHIFT) & 0x3f
}

/// Where the probe of a function reads its arguments when its placement
/// moved it past code that copied an argument to another register and
/// then overwrote the first (mimalloc's `malloc`: `mov rsi,rdi` ... `mov
/// rdi,fs:[rax]` before its first branch): 4 bits per argument from this
/// shift, argument 0 lowest, each 0 for the register the ABI passes it in
/// or an index of [`ARG_REGISTERS`] plus one.
pub const COOKIE_ARGS_SHIFT: u64 = 48;

/// Attach-cookie flag of a probe on an instruction the kernel single-steps
/// (no emulated one in reach, see the placement): its runs are counted
/// ([`Stat::SteppedProbe`]), so that what they cost can be told.
pub const COOKIE_STEPPED: u64 = 1 << 62;

/// Attach cookie of a classic-path return probe (`alloc_return`): the
/// process it was attached for, or 0 for every process. Older kernels
/// (Debian 12's 6.1; not 6.18) run a uretprobe's program for the returns
/// of every process whose entry trapped, not only the one its link names, so
/// with two traced processes each return would run twice; the program
/// leaves the other process's returns alone.
pub const fn return_cookie(pid: u32) -> u64 {
    pid as u64
}

/// The process a return probe's cookie names (0: any).
pub const fn return_cookie_pid(cookie: u64) -> u32 {
    cookie as u32
}

/// The registers an argument may be read from, by the cookie's index
/// minus one (see [`COOKIE_ARGS_SHIFT`]).
pub const ARG_REGISTERS: [&str; 15] = [
    "rdi", "rsi", "rdx", "rcx", "r8", "r9", "rax", "rbx", "rbp", "r10", "r11", "r12", "r13", "r14",
    "r15",
];

/// The register index (0: the ABI's own) of argument `arg` in a cookie.
pub const fn cookie_arg_register(cookie: u64, arg: u64) -> u64 {
    (cookie >> (COOKIE_ARGS_SHIFT + 4 * arg)) & 0xf
}

/// At most this many pools are taken out of the live table when a
/// process that records pools unmaps memory (a pymalloc arena holds 64:
/// 1 MiB of 16 KiB pools from 3.10, 256 KiB of 4 KiB before).
pub const POOLS_PER_UNMAP: u32 = 64;

/// Attach cookie of a free function that may free its block through
/// another probed free function (C++'s `operator delete`, which
/// libstdc++ implements with `free`): it leaves the block's address in the
/// thread's record ([`InFlight::free_addr`]) so that the inner free of the
/// same block is known as nested, not as a free of an unknown block.
pub const COOKIE_FREE_OUTER: u64 = 1;

/// Attach cookie of a free function whose block is its second argument
/// (CPython's pymalloc `_PyObject_Free(ctx, p)`), not its first.
pub const COOKIE_FREE_SECOND: u64 = 2;

/// See [`COOKIE_MAY_SKIP`]: glibc serves a chunk with its own mmap from
/// 128 KiB (its default `M_MMAP_THRESHOLD`, which only ever rises by
/// itself); requests below 124 KiB, with the chunk header and rounding,
/// stay well under it.
pub const SKIP_BELOW_BYTES: u64 = 124 * 1024;

/// Stack id used when the stack could not be captured (stack map full, hash
/// collision, unwinding failure). The bytes are still accounted, under this
/// pseudo stack, so that a lost stack never loses bytes.
pub const UNKNOWN_STACK: u32 = u32::MAX;

/// Frames kept per allocation stack (innermost first); deeper stacks lose
/// their outermost frames.
pub const STACK_DEPTH: usize = 32;

/// Value of the allocation stack table: the walk from the allocator's
/// return, keyed by a hash of its frames.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StackFrames {
    /// Number of valid entries in `frames`.
    pub nr: u32,
    /// [`STACK_TRUNCATED`] when the walk stopped before the outermost frame.
    pub flags: u32,
    pub frames: [u64; STACK_DEPTH],
    /// Number of valid entries in `python` (0 outside CPython processes).
    pub py_nr: u32,
    /// [`PY_TRUNCATED`] when the Python walk stopped before the outermost
    /// frame.
    pub py_flags: u32,
    /// The interpreter frames the thread was running, innermost first
    /// (see `PyProc`).
    pub python: [PyFrameRef; PY_DEPTH],
    /// The walk's 64-bit hash of its frames and its Python frames, by
    /// which the probe tells this stack from another that drew the same
    /// 32-bit id (see the eBPF side's `user_stack_id`).
    pub hash: u64,
}
const _: () = assert!(core::mem::size_of::<StackFrames>() == 280 + 16 * PY_DEPTH);

/// Python frames kept per allocation stack (innermost first); deeper
/// stacks lose their outermost frames.
pub const PY_DEPTH: usize = 24;

/// [`StackFrames::py_flags`]: the Python walk did not reach the outermost
/// frame (the depth limit, or a frame it could not read).
pub const PY_TRUNCATED: u32 = 1;

/// A CPython frame as the kernel read it: its code object and its
/// instruction field as stored (an `int` f_lasti zero-extended, or a
/// pointer into the code), with [`PY_ENTRY`] set on the outermost frame
/// one run of `_PyEval_EvalFrameDefault` executes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PyFrameRef {
    pub code: u64,
    pub instr: u64,
}

/// [`PyFrameRef::instr`]: the frame is where its run of the evaluation
/// loop started (user addresses and 32-bit ints never have this bit).
pub const PY_ENTRY: u64 = 1 << 63;

/// Not present (an offset [`PyProc`] has no field for).
pub const PY_NONE: u32 = u32::MAX;

/// How the kernel reads a CPython process's frames, written by userspace
/// once it has checked the offsets against the running process (see
/// tracer/src/discover/python): the main interpreter's thread list, and
/// the byte offsets of what a walk reads in a thread state and a frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PyProc {
    /// Address of the main interpreter's thread list head.
    pub threads_head: u64,
    /// The main interpreter: a thread state's `interp` must be it.
    pub interp: u64,
    /// Thread state: `next`, `interp`, the thread's key and its frame
    /// (`frame`, `cframe` or `current_frame`).
    pub tstate_next: u32,
    pub tstate_interp: u32,
    pub tstate_key: u32,
    /// [`PY_KEY_TID`]: the key is `native_thread_id` (3.11+), the kernel's
    /// thread id; [`PY_KEY_PTHREAD`]: `thread_id`, `pthread_self()`, which
    /// is the thread's fs base on x86-64.
    pub key_kind: u32,
    pub tstate_frame: u32,
    /// `_PyCFrame.current_frame` (3.11–3.12), or [`PY_NONE`].
    pub cframe_current_frame: u32,
    pub frame_previous: u32,
    pub frame_code: u32,
    pub frame_instr: u32,
    /// `owner` (3.12+: frames the C stack owns are not Python), or [`PY_NONE`].
    pub frame_owner: u32,
    /// `is_entry` (3.11), or [`PY_NONE`].
    pub frame_is_entry: u32,
    /// 1: the instruction field is an `int` (`f_lasti`, 3.8–3.10), each
    /// frame its own run of the evaluation loop; 0: a pointer.
    pub instr_is_int: u32,
    /// Bytes read of a thread state and of a frame: up to the last field
    /// read (a frame may end a mapping), at most [`PY_SPAN`].
    pub tstate_span: u32,
    pub frame_span: u32,
}
const _: () = assert!(core::mem::size_of::<PyProc>() == 72);

/// [`PyProc::key_kind`] values.
pub const PY_KEY_TID: u32 = 0;
pub const PY_KEY_PTHREAD: u32 = 1;
/// The frame owner the C stack's entry frames have (3.12+).
pub const PY_OWNED_BY_CSTACK: u8 = 3;
/// Bytes of a thread state or a frame the kernel copies at once: every
/// offset in [`PyProc`] is below this less 8.
pub const PY_SPAN: usize = 256;

/// [`StackFrames::flags`]: the walk did not reach the outermost frame (the
/// depth limit, an unreadable or implausible frame, code it could not
/// unwind): the stack lacks its outer callers.
pub const STACK_TRUNCATED: u32 = 1;

/// How the stack walk steps through a file's frames (`--unwind`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnwindKind {
    /// Through the file's unwind table (`UNWIND_PAGES`, `UNWIND_ROWS`).
    Table = 0,
    /// By frame pointer: the file keeps them, no table needed.
    FramePointer = 1,
}

/// Executable mappings kept per process for the unwinder; a process with
/// more has its extra files walked by frame pointer (counted).
pub const UNWIND_MAX_MAPPINGS: usize = 256;

/// One executable file mapping of a process, for the unwinder.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindMapping {
    pub start: u64,
    pub end: u64,
    /// Address minus the file's virtual address (what the tables use).
    pub bias: u64,
    /// The file's page index: `UNWIND_PAGES[pages + i]` covers its page
    /// `first_page + i` (see [`UNWIND_PAGE_SHIFT`]), for `i < page_count`.
    pub pages: u32,
    /// [`UnwindKind`] as u32.
    pub kind: u32,
    pub first_page: u32,
    pub page_count: u32,
}
const _: () = assert!(core::mem::size_of::<UnwindMapping>() == 40);

/// Value of `UNWIND_PROCS`: a process's executable mappings sorted by
/// address (the first `nr`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ProcUnwind {
    pub nr: u32,
    pub _pad: u32,
    pub mappings: [UnwindMapping; UNWIND_MAX_MAPPINGS],
}
const _: () = assert!(core::mem::size_of::<ProcUnwind>() == 10248);

/// Table pages: rows are found by (file, virtual address >> this) first,
/// then by a binary search among that page's rows (at most 4,097).
pub const UNWIND_PAGE_SHIFT: u32 = 12;

/// An entry of `UNWIND_PAGES`, an array holding each file's page index in
/// a range of its own: the rows `first..first+count` of `UNWIND_ROWS`
/// cover the page (the first one starts at or before the page's start);
/// `count` 0: no row does (a gap between functions).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindPage {
    pub first: u32,
    pub count: u32,
}
const _: () = assert!(core::mem::size_of::<UnwindPage>() == 8);

/// One row of an unwind table: from virtual address `pc` to the next row's,
/// how to find the caller's frame. 8 bytes, so a big binary's table fits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRow {
    pub pc: u32,
    /// The canonical frame address is this plus rsp or rbp (`kind`).
    pub cfa_offset: i16,
    /// The caller's rbp is saved at CFA + 8 × this; 0: rbp is unchanged.
    pub rbp_slot: i8,
    /// One of the `row` constants.
    pub kind: u8,
}
const _: () = assert!(core::mem::size_of::<UnwindRow>() == 8);

/// [`UnwindRow::kind`] values.
pub mod row {
    /// No unwind information here (between functions, or code without
    /// CFI): walked by frame pointer.
    pub const NONE: u8 = 0;
    /// CFA = rsp + offset.
    pub const CFA_RSP: u8 = 1;
    /// CFA = rbp + offset.
    pub const CFA_RBP: u8 = 2;
    /// The outermost frame (its return address is undefined: `_start`,
    /// a thread's entry): the walk is complete.
    pub const OUTERMOST: u8 = 3;
    /// A rule the unwinder does not follow (DWARF expressions, other
    /// registers): the walk stops here, truncated.
    pub const UNSUPPORTED: u8 = 4;
}

/// A heap block's record, as a live-table slot holds it (see [`LiveSlot`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveAlloc {
    /// Requested size in bytes.
    pub size: u64,
    /// `bpf_ktime_get_ns()` at the allocation call's entry.
    pub timestamp_ns: u64,
    /// Stack id in the stack-trace map, or [`UNKNOWN_STACK`].
    pub stack_id: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<LiveAlloc>() == 24);

/// One slot of the live-block table (`LIVE`, see tracer-ebpf's `live.rs`):
/// an outstanding heap block of process `tgid` at `addr`. `addr` is 0 when
/// the slot is free and [`LIVE_BUSY`] while an insert writes the rest; it
/// changes only by compare-and-swap, so that two CPUs (or userspace) never
/// take the same slot or remove the same block twice.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveSlot {
    pub addr: u64,
    /// Requested size in bytes.
    pub size: u64,
    /// `bpf_ktime_get_ns()` at the allocation call's entry.
    pub timestamp_ns: u64,
    /// Stack id in the stack-trace map, or [`UNKNOWN_STACK`].
    pub stack_id: u32,
    pub tgid: u32,
}
const _: () = assert!(core::mem::size_of::<LiveSlot>() == 32);

/// Slots per bucket of the live-block table: a block lives in one of the
/// [`LIVE_WAYS`] slots of one of its two buckets (256 bytes, four cache
/// lines each).
pub const LIVE_WAYS: usize = 8;

/// A bucket of the live-block table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveBucket {
    pub slots: [LiveSlot; LIVE_WAYS],
}
const _: () = assert!(core::mem::size_of::<LiveBucket>() == 256);

/// [`LiveSlot::addr`] of a slot being written (no heap block is at 1).
pub const LIVE_BUSY: u64 = 1;

/// Buckets of the live-block table for `max_live` blocks: two slots per
/// block. Simulated with random hashes (a block goes to its first bucket
/// with room, else its second): with `max_live` blocks outstanding and
/// churning, ~0.1 % of inserts find both buckets full; at 80 % of it,
/// ~0.02 %; at half of it, none.
pub const fn live_buckets(max_live: u32) -> u32 {
    let buckets = (max_live as u64 * 2).div_ceil(LIVE_WAYS as u64);
    if buckets < 1 {
        1
    } else {
        buckets as u32
    }
}

/// Words of the live table's spill bits (`LIVE_SPILL`): one bit per bucket.
pub const fn live_spill_words(buckets: u32) -> u32 {
    buckets.div_ceil(64)
}

/// Key of the per-stack totals map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackKey {
    pub tgid: u32,
    pub stack_id: u32,
}
const _: () = assert!(core::mem::size_of::<StackKey>() == 8);

/// What a (process, stack) has allocated: the value of the kernel's
/// `STACK_TOTALS`, counted by the probes with atomic adds. The kernel
/// counts no frees: what a stack freed is what it allocated less what the
/// live table still holds of it (userspace's `StackTotals`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackAllocated {
    pub bytes: u64,
    pub count: u64,
}
const _: () = assert!(core::mem::size_of::<StackAllocated>() == 16);

/// State of an allocator call between its entry and return probe, one per
/// thread (the thread's task storage).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct InFlight {
    /// User stack pointer at the outermost call's entry; a later entry with
    /// a *higher* stack pointer proves the recorded call never returned
    /// (longjmp, thread cancellation) and replaces it.
    pub entry_sp: u64,
    /// Number of nested probed calls still open on this thread (glibc's
    /// realloc(NULL, n) tail-calls malloc, for example); only the outermost
    /// call is accounted.
    pub depth: u32,
    /// [`AllocFn`] as u32.
    pub func: u32,
    /// Requested size in bytes (calloc/reallocarray: already multiplied).
    pub size: u64,
    /// `bpf_ktime_get_ns()` at the entry: an entry open for over a second
    /// cannot be the caller of a nested call (those follow within
    /// microseconds); it lost its return and is stale.
    pub entry_ns: u64,
    /// realloc: old pointer. posix_memalign: the `memptr` out-parameter.
    pub ptr: u64,
    /// realloc: the old block's record, taken out of the live table at entry so
    /// that a concurrent malloc reusing the address cannot be confused with
    /// it. `old.size == 0 && old_valid == 0` when the old block was unknown.
    pub old: LiveAlloc,
    pub old_valid: u32,
    /// The size computation overflowed (calloc, reallocarray): the call
    /// fails; a NULL return is then not `realloc(p, 0)`.
    pub size_overflow: u32,
    /// With `--sample-bytes`: whether the new block is recorded (a realloc
    /// of a sampled block is followed to its return for the old block's
    /// sake even when the new one is not sampled).
    pub sampled: u32,
    /// 1 while the call is open (the record lives in the thread's task
    /// storage, which outlives calls).
    pub active: u32,
    /// The calling process, for the return (which then needs no helper
    /// call to know it).
    pub tgid: u32,
    pub _pad: u32,
    /// The block the thread's last outer free ([`COOKIE_FREE_OUTER`]) was
    /// given, and the stack pointer at its entry: a free of the same block
    /// from deeper on the stack is its inner free (0: none pending).
    pub free_addr: u64,
    pub free_sp: u64,
}
const _: () = assert!(core::mem::size_of::<InFlight>() == 104);

/// Arguments of an mmap/munmap/mremap syscall between enter and exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SyscallArgs {
    /// [`EventKind`] as u32.
    pub kind: u32,
    pub _pad: u32,
    pub addr: u64,
    pub len: u64,
    /// mremap: new length.
    pub new_len: u64,
}
const _: () = assert!(core::mem::size_of::<SyscallArgs>() == 32);

/// Kind of an event in the ring buffer. Every event starts with its kind
/// (a u32): mapping kinds are [`MmapEvent`]s, process kinds
/// [`ProcessEvent`]s. One ring buffer keeps them in order (an exec or exit
/// comes after the mapping calls that preceded it).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Mmap = 1,
    Munmap = 2,
    Mremap = 3,
    /// Kernel side only: a MAP_FIXED mapping that is not counted itself
    /// (PROT_NONE, file-backed) but replaces whatever was in its range;
    /// sent to userspace as [`EventKind::Munmap`] when it succeeds.
    FixedReplace = 4,
    /// A process called exec: its old image's memory is gone (and, when
    /// processes are being watched, it may now be one to trace).
    Exec = 5,
    /// A process (its main thread) exited.
    Exit = 6,
    /// The kernel's OOM killer chose a victim (`oom/mark_victim`).
    OomVictim = 7,
    /// A target forked a process (not a thread) while forks are followed:
    /// the child is a target from its fork on.
    Fork = 8,
    /// A CPython target armed to stop at its end (`EXIT_HOLD`) reached it
    /// (`Py_FinalizeEx`, or `_exit`): it is stopped until userspace has
    /// named its last stacks, which needs its code objects.
    ExitStop = 9,
}

impl EventKind {
    pub const fn is_process(kind: u32) -> bool {
        kind == EventKind::Exec as u32
            || kind == EventKind::Exit as u32
            || kind == EventKind::OomVictim as u32
            || kind == EventKind::Fork as u32
            || kind == EventKind::ExitStop as u32
    }
}

/// Where each field of the `oom/mark_victim` record is (byte offsets, from
/// the tracepoint's format; [`OOM_FIELD_ABSENT`] for a field this kernel's
/// record does not have: before 6.8 it has only `pid`). The defaults are
/// 6.8's layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomFields {
    pub pid: u32,
    /// `__data_loc char[] comm`: (length << 16) | offset of the string.
    pub comm: u32,
    pub total_vm: u32,
    pub anon_rss: u32,
    pub file_rss: u32,
    pub shmem_rss: u32,
    pub uid: u32,
    pub pgtables: u32,
    pub oom_score_adj: u32,
}

/// [`OomFields`]: the record has no such field (it reads as zero).
pub const OOM_FIELD_ABSENT: u32 = u32::MAX;

impl OomFields {
    /// The layout of 6.8 and later.
    pub const LATEST: OomFields = OomFields {
        pid: 8,
        comm: 12,
        total_vm: 16,
        anon_rss: 24,
        file_rss: 32,
        shmem_rss: 40,
        uid: 48,
        pgtables: 56,
        oom_score_adj: 64,
    };
}

/// An exec, an exit, a followed fork or an OOM kill, sent through the ring
/// buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEvent {
    /// [`EventKind`] as u32.
    pub kind: u32,
    /// The process (exec, exit), the new child (fork) or the OOM victim.
    pub tgid: u32,
    pub timestamp_ns: u64,
    /// OOM: the process whose allocation made the kernel kill (often the
    /// victim itself). Fork: the parent.
    pub trigger_tgid: u32,
    /// OOM: the victim's user id.
    pub uid: u32,
    /// OOM: the victim's memory when it was chosen, in KiB, as the
    /// tracepoint reports it.
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    pub pgtables_kb: u64,
    /// OOM: the victim's `oom_score_adj` (-1000..1000).
    pub oom_score_adj: i32,
    /// Fork: 1 when the child stops at its first return to user space
    /// until userspace releases it (targets are held), 0 when it is not
    /// held (it runs on while its probes go in).
    pub held: u32,
    /// The process's name (exec: the new one; fork: the parent's, which
    /// the child shares; OOM: the victim's), NUL padded.
    pub comm: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<ProcessEvent>() == 88);

/// Maximum user frames captured for a mapping event (the kernel limit for
/// `bpf_get_stack` is `PERF_MAX_STACK_DEPTH` = 127).
pub const MAX_FRAMES: usize = 127;

/// A successful anonymous mmap, a munmap, or an mremap made by a traced
/// process outside any allocator call, sent through the ring buffer. Mapping
/// calls are rare compared to malloc, and range arithmetic (partial munmap,
/// mremap moves) is exact and simple in userspace, so they are accounted
/// there. mmap events carry the user stack.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MmapEvent {
    /// [`EventKind`] as u32.
    pub kind: u32,
    pub tgid: u32,
    pub timestamp_ns: u64,
    /// mmap: returned address. munmap: start. mremap: old address.
    pub addr: u64,
    /// mmap/munmap: length. mremap: old length.
    pub len: u64,
    /// mremap: new address (the syscall's return value).
    pub new_addr: u64,
    /// mremap: new length.
    pub new_len: u64,
    /// The word at the user stack pointer when the syscall was made: the
    /// return address into the direct caller when the syscall came from a
    /// libc wrapper that does not touch the stack (glibc's mmap does not).
    pub user_sp_word: u64,
    /// Number of valid entries in `frames`.
    pub nr_frames: u32,
    pub _pad: u32,
    /// User stack, innermost first; `frames[0]` is the syscall instruction.
    pub frames: [u64; MAX_FRAMES],
    /// mmap in a CPython process: the Python frames the thread ran (as in
    /// [`StackFrames`]); pymalloc's arenas, where its allocator is inlined
    /// into its callers (link-time optimized builds), are seen only here.
    pub py_nr: u32,
    pub py_flags: u32,
    pub python: [PyFrameRef; PY_DEPTH],
}
const _: () = assert!(core::mem::size_of::<MmapEvent>() == 1088 + 16 * PY_DEPTH);

/// Defines [`Stat`] and [`Stat::ALL`] from one list of counters, so that
/// their number ([`STAT_COUNT`], the size of the `STATS` map) is counted by
/// the compiler rather than kept by hand.
macro_rules! stats {
    (
        $(#[$meta:meta])*
        pub enum Stat { $($(#[$counter_meta:meta])* $counter:ident = $slot:literal,)* }
    ) => {
        $(#[$meta])*
        pub enum Stat { $($(#[$counter_meta])* $counter = $slot,)* }

        impl Stat {
            /// Every counter, in slot order.
            pub const ALL: &'static [Stat] = &[$(Stat::$counter),*];
        }
    };
}

stats! {
    /// Loss and diagnostic counters, one slot each in a per-CPU array.
    /// Userspace sums the CPUs. Every way an event can be dropped has a
    /// counter here. A new counter goes last, with the next slot number.
    #[repr(u32)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Stat {
        /// An allocation could not be recorded: the live-allocation map was full.
        LiveMapFull = 0,
        /// A stack could not be recorded (stack table full, or other stacks
        /// at each of its candidate ids: detected by comparing the frames,
        /// never merged); the bytes went to the unknown-stack bucket.
        StackLost = 1,
        /// The per-stack totals map was full; the allocation is not recorded in
        /// the live table either, so its free cannot create a phantom.
        StackTotalsFull = 2,
        /// A return probe fired with no entry recorded for the thread (probes
        /// attached mid-call, or the in-flight map was full).
        ReturnWithoutEntry = 3,
        /// An entry was found stale (its call never returned: longjmp,
        /// cancellation) and was replaced.
        StaleEntry = 4,
        /// The in-flight map was full; the call was not traced.
        InFlightFull = 5,
        /// An allocator returned an address that was still recorded live: the
        /// old block's free was missed (e.g. freed through an unprobed path). The
        /// old record is counted as freed, never as a leak.
        AddressReused = 6,
        /// A mapping event could not be sent: ring buffer full.
        RingBufFull = 7,
        /// Frees of addresses not recorded (allocated before attach, or by an
        /// unprobed allocator). Not a loss, but reported.
        FreeUnknown = 8,
        /// Allocation calls that failed (NULL / non-zero return): not recorded.
        FailedAlloc = 9,
        /// Mapping syscalls made inside an allocator call and so attributed to
        /// that call rather than counted again.
        NestedMapping = 10,
        /// Anonymous PROT_NONE mappings: address-space reservations (glibc
        /// arenas, Go, the JVM), not memory; not counted.
        Reservation = 11,
        /// Allocator calls made inside another probed allocator call (glibc's
        /// realloc(NULL, n) tail-calls malloc): accounted by the outer call.
        NestedCall = 12,
        /// A followed fork's child could not be made a target: the TARGETS
        /// table was full ([`MAX_TARGETS`]); it is not traced.
        TargetsFull = 13,
        /// Frames the unwinder stepped by frame pointer for want of a table
        /// (JIT code, a library mapped since memtrace's last look at the
        /// process, a process with too many files), and walks of processes
        /// whose mappings memtrace had not read yet (cut after their first
        /// frame).
        UnwindNoTable = 14,
        /// Stack walks that stopped before the outermost frame.
        StackTruncated = 15,
        /// Unsampled allocator calls whose return probe was skipped (uprobe
        /// session path, see [`COOKIE_MAY_SKIP`]). Not a loss.
        ReturnSkipped = 16,
        /// A followed fork's child could not be held until its probes were
        /// in (the table of held children was full, [`MAX_HELD`]): what it
        /// allocated before them is not seen (its target says how long).
        HoldFull = 17,
        /// Allocations in a CPython process made by a thread the kernel
        /// found no Python thread state for (a thread that never ran
        /// Python, or a state being created): no Python frames.
        PythonNoThread = 18,
        /// Python walks that stopped before the outermost frame (the depth
        /// limit, or a frame that could not be read).
        PythonTruncated = 19,
        /// pymalloc pools handed out again while still recorded (see
        /// [`AllocFn::NewPool`]): the pool emptied and went back to its
        /// arena, which no probe sees; the old record counts freed. Not a
        /// loss: how emptied pools are learnt of.
        PoolReused = 20,
        /// Pool records taken out because their arena was unmapped.
        PoolUnmapped = 21,
        /// Stacks recorded at another candidate id because their first
        /// one held a different stack (a 32-bit id collision). Not a loss.
        StackIdMoved = 22,
        /// Runs of probes that sit on an instruction the kernel
        /// single-steps (~10 µs a trap, against ~1 where it emulates it;
        /// userspace marks them with [`COOKIE_STEPPED`]). Calls nested in
        /// another allocator call are not counted. Not a loss: a cost.
        SteppedProbe = 23,
    }
}

/// Number of [`Stat`] slots.
pub const STAT_COUNT: u32 = Stat::ALL.len() as u32;

// Every counter's slot is its position in the list: slots 0..STAT_COUNT.
const _: () = {
    let mut i = 0;
    while i < Stat::ALL.len() {
        assert!(Stat::ALL[i] as usize == i);
        i += 1;
    }
};

/// Capacity of the `TARGETS` map (processes traced one by one).
pub const MAX_TARGETS: u32 = 4096;

/// Children of targets held at once, between their fork and the moment
/// userspace has put their probes in (milliseconds each).
pub const MAX_HELD: u32 = 1024;

/// Names of the eBPF programs' global settings, written by userspace at
/// load time (`EbpfLoader::set_global`); each is a u32, 0 by default.
pub mod config {
    /// 1: every process is traced (`--all`); TARGETS is not consulted.
    pub const TRACE_ALL: &str = "TRACE_ALL";
    /// memtrace's own process id: never traced, whatever the mode.
    pub const SELF_TGID: &str = "SELF_TGID";
    /// 1: every exec on the node is reported (processes are being watched
    /// for ones to trace), not only targets'.
    pub const WATCH_EXEC: &str = "WATCH_EXEC";
    /// `--sample-bytes` as a u64 (0: every allocation is traced).
    pub const SAMPLE_BYTES: &str = "SAMPLE_BYTES";
    /// 1: stacks are walked with unwind tables (`--unwind dwarf|auto`);
    /// 0: by frame pointer only.
    pub const UNWIND_TABLES: &str = "UNWIND_TABLES";
    /// `memtrace -- CMD` with unwind tables: the command's pid, stopped
    /// (SIGSTOP) at each of its execs until userspace has set a stop at
    /// the new image's entry point (0: none).
    pub const STOP_AT_EXEC: &str = "STOP_AT_EXEC";

    /// Offset of `group_dead` in the `sched/sched_process_exit` record, or
    /// 0 where the kernel's record has no such field (before 6.x): then a
    /// process's exit is its main thread's.
    pub const EXIT_GROUP_DEAD: &str = "EXIT_GROUP_DEAD";
    /// Offsets of the fields of the `oom/mark_victim` record
    /// ([`super::OomFields`]), from its format.
    pub const OOM_FIELDS: &str = "OOM_FIELDS";
    /// Buckets of the live-block table (`live_buckets(--max-live)`).
    pub const LIVE_BUCKETS: &str = "LIVE_BUCKETS";
    /// Offset of `fsbase` in `task_struct` (its `thread.fsbase`, from the
    /// kernel's BTF), 0 when unknown: how the kernel finds a 3.8–3.10
    /// Python thread's state (see `PY_KEY_PTHREAD`).
    pub const TASK_FSBASE: &str = "TASK_FSBASE";
    /// 1: the allocator programs return at once (`--empty-programs`: the
    /// bench's floor, what the traps at memtrace's probe points cost).
    pub const EMPTY_PROGRAMS: &str = "EMPTY_PROGRAMS";
    /// 1: every stack's first candidate id is the same (the hidden
    /// `--stack-ids-collide`, for the test of colliding ids).
    pub const STACK_IDS_COLLIDE: &str = "STACK_IDS_COLLIDE";
}

/// Entries of the `EXP_DRAWS` map: draws of the exponential distribution
/// of mean `--sample-bytes`, at evenly spaced quantiles, filled by
/// userspace; the byte countdown picks one at random when it expires.
pub const EXP_DRAWS: u32 = 4096;

#[cfg(feature = "user")]
mod user {
    use super::*;

    /// `aya::Pod` for types userspace reads from or writes to maps.
    macro_rules! pod {
        ($($t:ty),*) => {$(
            // SAFETY: a #[repr(C)] type of integers with explicit padding:
            // every bit pattern is a value, and it holds no pointer.
            unsafe impl aya::Pod for $t {}
        )*};
    }

    pod!(
        StackKey,
        StackAllocated,
        StackFrames,
        OomFields,
        PyProc,
        ProcUnwind,
        UnwindPage,
        UnwindRow
    );
}

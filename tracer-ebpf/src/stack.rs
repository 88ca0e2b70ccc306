//! User stack capture. Allocator stacks are taken at the *return* probe,
//! where the instruction pointer is the return address into the direct
//! caller, so the walk keeps the caller (at the entry probe it would skip
//! it); they are walked — by frame pointer, or by the unwind tables
//! userspace builds from each file's `.eh_frame` (`unwind.rs` there) — and
//! deduplicated here rather than with `bpf_get_stackid`. Mapping syscalls
//! carry the raw stack plus the word at the user stack pointer, from which
//! userspace recovers the direct caller.
//!
//! Owns the stack table (`STACKS`), the per-CPU walk in progress (`WALK`),
//! the unwind tables userspace writes (`UNWIND_PROCS`, `UNWIND_PAGES`,
//! `UNWIND_ROWS`, and their generation `UNWIND_EPOCH`) and the `--unwind`
//! setting (`UNWIND_TABLES`).

use aya_ebpf::{
    bindings::{pt_regs, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BPF_F_USER_STACK},
    cty::c_void,
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{
            self as gen, bpf_get_current_task_btf, bpf_get_stack, bpf_loop, bpf_task_pt_regs,
        },
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
    programs::RetProbeContext,
    EbpfContext,
};
use core::intrinsics::{atomic_xadd, AtomicOrdering};
use tracer_common::{
    row, ProcUnwind, StackFrames, Stat, UnwindKind, UnwindMapping, UnwindPage, UnwindRow,
    MAX_FRAMES, MAX_TARGETS, STACK_DEPTH, STACK_TRUNCATED, UNKNOWN_STACK, UNWIND_MAX_MAPPINGS,
    UNWIND_PAGE_SHIFT,
};

use crate::{python, stats::count};

/// `--unwind dwarf|auto` (see `tracer_common::config`), patched by
/// userspace at load time. Read with a volatile load so the compiler
/// cannot fold the default; each read is one load from the program's
/// .rodata (~1 ns).
#[unsafe(no_mangle)]
static UNWIND_TABLES: u32 = 0;

/// Whether stacks are walked with unwind tables (`--unwind dwarf|auto`).
#[inline(always)]
fn unwind_tables() -> bool {
    // SAFETY: a plain read of a static.
    unsafe { core::ptr::read_volatile(&UNWIND_TABLES) != 0 }
}

/// Allocation stacks by the 32-bit hash of their frames (see
/// [`user_stack_id`]). Sized by userspace; allocated as stacks appear
/// (an insert, ~0.3 µs more without preallocation, happens once per new
/// stack), so a table sized for an interpreter's many stacks costs memory
/// only where they exist.
#[map]
static STACKS: HashMap<u32, StackFrames> = HashMap::with_max_entries(16_384, BPF_F_NO_PREALLOC);

/// Per-CPU room for the stack being walked (too big for the BPF stack).
#[map]
static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// The unwinder's view of each traced process: its executable mappings,
/// sorted (written by userspace when it looks at the process's maps).
/// Allocated on demand: ~8 KiB per process.
#[map]
static UNWIND_PROCS: HashMap<u32, ProcUnwind> =
    HashMap::with_max_entries(MAX_TARGETS, BPF_F_NO_PREALLOC);

/// Unwind table pages: each file's page index, in a range of its own
/// (`UnwindMapping::pages`): the rows of `UNWIND_ROWS` that cover a page
/// of its virtual addresses. An array, so a frame finds its page by index
/// (~2 ns, inlined by the verifier) rather than by a hash lookup (~50 ns).
/// Sized by userspace (1 entry with `--unwind fp`), which writes it through
/// a memory mapping.
#[map]
static UNWIND_PAGES: Array<UnwindPage> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Every loaded file's unwind rows, each file's sorted by address in a
/// range of its own. Sized by userspace (1 entry with `--unwind fp`), which
/// writes it through a memory mapping.
#[map]
static UNWIND_ROWS: Array<UnwindRow> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Generations of `UNWIND_PROCS`: [0] is bumped by userspace after it
/// changes a process's mappings, [1] by the exec tracepoint after it
/// deletes a process's. A stack walk keeps the mappings it found in its
/// per-CPU slot for later walks only while the sum is unchanged.
#[map]
static UNWIND_EPOCH: Array<u64> = Array::with_max_entries(2, 0);

/// The current generation of `UNWIND_PROCS` (two inlined array reads).
#[inline(always)]
fn unwind_epoch() -> u64 {
    let user = UNWIND_EPOCH.get(0).copied().unwrap_or(0);
    let kernel = UNWIND_EPOCH.get(1).copied().unwrap_or(0);
    user.wrapping_add(kernel)
}

/// Marks every mapping kept by a walk stale (after the kernel deleted a
/// process's mappings).
#[inline(always)]
fn bump_unwind_epoch() {
    if let Some(slot) = UNWIND_EPOCH.get_ptr_mut(1) {
        // SAFETY: `slot` points into a map value that lives as long as the
        // map. A BPF atomic add (lock xadd, ~20 ns) keeps concurrent CPUs
        // consistent; core's AtomicU64::fetch_add is not available on the
        // BPF target.
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, 1) };
    }
}

/// Forgets the executable mappings of process `tgid`, whose image an exec
/// replaced: its unwind rows would be applied to the new image's code
/// until userspace has read the new mappings (one hash delete).
#[inline(always)]
pub(crate) fn forget_mappings(tgid: u32) {
    if UNWIND_PROCS.remove(&tgid).is_ok() {
        // Walks on other CPUs may keep some of them (see UNWIND_EPOCH).
        bump_unwind_epoch();
    }
}

/// Stack id of the current user stack, walked from the return probe's
/// registers (the return address, then each caller's), its frames hashed,
/// and the table entry of that hash compared frame by frame — a different
/// stack with the same id tries the next of [`ID_CANDIDATES`] ids, never
/// merged; past them, or in a full table, it is counted lost. Lost stacks
/// map to [`UNKNOWN_STACK`].
///
/// Each step up is by frame pointer or, with `--unwind dwarf|auto`, by the
/// unwind table of the code it is in (see [`table_step`]). The words each
/// step needs come from one copy of the stack ([`stack_word`]): a user
/// read costs ~80 ns here, plus ~70 ns of the kernel's check of where it
/// writes, whatever its size. An extra frame costs ~20 ns (bench program
/// with 8 more frames), by frame pointer or by a rule an earlier walk on
/// this CPU kept ([`KnownRule`]). Then a lookup and a compare, too cheap
/// to tell on the bench. `bpf_get_stackid` costs ~700 ns even for two
/// frames (see README).
#[inline(always)]
pub(crate) fn user_stack_id(ctx: &RetProbeContext, tgid: u32) -> u32 {
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
    // Nothing of the stack copied yet.
    walk.window_len = 0;
    if unwind_tables() {
        walk.epoch = unwind_epoch();
    }
    // One verified callback per frame instead of an unrolled loop the
    // verifier would have to walk 32 times (and smaller code to run).
    // SAFETY: the callback takes no context (it finds the walk in its
    // per-CPU slot).
    unsafe {
        bpf_loop(
            STACK_DEPTH as u32,
            walk_frame as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    if walk.stack.flags & STACK_TRUNCATED != 0 {
        count(Stat::StackTruncated);
    }
    // The Python frames it runs, in a CPython process: one stack per
    // Python call path, though the native frames are the same.
    let s = &mut walk.stack;
    let py = python::walk(tgid, &mut s.py_nr, &mut s.py_flags, &mut s.python);
    let hash = walk.hash ^ py.wrapping_mul(FNV_PRIME);
    s.hash = hash;
    let first = match ids_collide() {
        true => 0x5eed,
        false => ((hash >> 32) ^ hash) as u32,
    };
    let walk = &walk.stack;
    // Ids are 32 bits, and they collide: a CPython start that imports a
    // few packages (47,000 stacks) has about one collision a run. A stack
    // whose id is taken by another tries the next candidates, each one
    // more lookup, paid only on a collision.
    let mut k = 0;
    while k < ID_CANDIDATES {
        let id = first.wrapping_add(k.wrapping_mul(ID_STEP));
        k += 1;
        if id == UNKNOWN_STACK {
            continue;
        }
        if let Some(known) = STACKS.get_ptr(&id) {
            // SAFETY: a valid map value.
            match same_frames(unsafe { &*known }, walk) {
                true => return id,
                false => continue,
            }
        }
        if STACKS.insert(&id, walk, BPF_NOEXIST).is_ok() {
            if k > 1 {
                count(Stat::StackIdMoved);
            }
            return id;
        }
        // Full, or another CPU inserted this id just now: compare with it.
        match STACKS.get_ptr(&id) {
            // SAFETY: a valid map value.
            Some(known) if same_frames(unsafe { &*known }, walk) => return id,
            Some(_) => continue,
            None => return lost(),
        }
    }
    lost()
}

/// 1: every stack's first candidate id is the same (the hidden
/// `--stack-ids-collide`, for the test of colliding ids), patched by
/// userspace at load time.
#[unsafe(no_mangle)]
static STACK_IDS_COLLIDE: u32 = 0;

/// Whether every stack collides: one load from .rodata (~1 ns).
#[inline(always)]
fn ids_collide() -> bool {
    // SAFETY: a plain read of a static patched at load time.
    unsafe { core::ptr::read_volatile(&STACK_IDS_COLLIDE) != 0 }
}

/// Ids a stack may take when its hash's id holds another stack (see
/// [`user_stack_id`]); past them it is counted lost.
const ID_CANDIDATES: u32 = 4;
/// The distance between a stack's candidate ids (odd, so that no two of
/// them are the same).
const ID_STEP: u32 = 0x9e37_79b9;

/// A stack walk in progress, in a per-CPU map slot (`WALK`): the frame
/// being recorded (its instruction pointer and the stack and frame
/// pointers it had) and what was recorded so far. Kept in map memory, not
/// on the BPF stack, so that the verifier sees its values as unknown
/// numbers at every step: with exact values, each outcome of the binary
/// searches below would be a state of its own and verification would not
/// end.
#[repr(C)]
struct Walk {
    ip: u64,
    sp: u64,
    bp: u64,
    /// The stack pointer at the probe: every frame lies above it.
    stack_low: u64,
    hash: u64,
    /// `UNWIND_PROCS`'s generation when the walk began.
    epoch: u64,
    tgid: u32,
    /// Binary search bounds.
    lo: u32,
    hi: u32,
    _pad: u32,
    /// The mapping the last table lookup used (an empty range at first):
    /// callers in the same file look no further.
    mapping: UnwindMapping,
    /// Rules of code addresses earlier walks on this CPU stepped through,
    /// still good while the generation is the same: a program allocates
    /// from a few call paths, whose frames then cost no table lookup, and
    /// touch no table memory (which the traced program's own work, and
    /// the live table's, evicts from the cache between two calls).
    known: [[KnownRule; 2]; KNOWN_SETS],
    /// The frames so far (and, when done, whether the walk was cut).
    stack: StackFrames,
    /// A copy of the user stack from `window_start`, `window_len` bytes
    /// of it (see [`stack_word`]).
    window_start: u64,
    window_len: u64,
    window: [u64; WINDOW_WORDS],
}

/// Most bytes of user stack copied at once: each frame's words come from
/// the copy instead of a user read of their own, so a walk pays for one
/// read per page of stack it crosses instead of one or two per frame (a
/// read's cost hardly depends on its size: 512 bytes and 2 KiB cost the
/// same).
const WINDOW: u64 = 2048;
const WINDOW_WORDS: usize = WINDOW as usize / 8;

/// Sets of rules kept per CPU across walks, two rules (32 bytes each) a
/// set, the newer first: a walk's code addresses fall in random sets (the
/// code is where ASLR put it), and two addresses of one walk in the same
/// set would evict each other at every walk if a set held one rule (two
/// table lookups a walk); with two, it takes three.
const KNOWN_SETS: usize = 64;

/// The rule an earlier walk of process `tgid` followed at `pc`.
#[repr(C)]
#[derive(Clone, Copy)]
struct KnownRule {
    pc: u64,
    epoch: u64,
    tgid: u32,
    _pad: u32,
    rule: UnwindRow,
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

/// `bpf_loop` callback: one frame of the walk. Returns 1 to stop.
extern "C" fn walk_frame(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(walk) = WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's slot (migration is disabled).
    match frame(unsafe { &mut *walk }, unwind_tables()) {
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
/// frame. Its two words come from the walk's copy of the stack.
#[inline(always)]
fn fp_step(walk: &mut Walk) -> Step {
    let bp = walk.bp;
    if bp == 0 {
        return Step::Outermost;
    }
    if bp < walk.sp || bp - walk.stack_low >= MAX_STACK_SPAN {
        return Step::Lost;
    }
    let Some(saved_bp) = stack_word(walk, bp) else {
        return Step::Lost;
    };
    let Some(ra) = stack_word(walk, bp + 8) else {
        return Step::Lost;
    };
    if ra == 0 {
        return Step::Outermost;
    }
    walk.ip = ra;
    walk.sp = bp + 16;
    walk.bp = saved_bp;
    Step::Up
}

/// The user stack's word at `addr`, from the walk's copy of the stack;
/// outside it, the copy is taken again from `addr` up to the end of its
/// page, at most [`WINDOW`] bytes: never into the next page, which may lie
/// past the top of the stack (a faulting read costs a page fault). None if
/// unreadable or misaligned (no saved register or return address is).
#[inline(always)]
fn stack_word(walk: &mut Walk, addr: u64) -> Option<u64> {
    if addr & 7 != 0 {
        return None;
    }
    let mut at = addr.wrapping_sub(walk.window_start);
    if at >= walk.window_len {
        let to_page_end = 4096 - (addr & 4095);
        let len = if to_page_end < WINDOW {
            to_page_end
        } else {
            WINDOW
        };
        let buf = walk.window.as_mut_ptr().cast::<c_void>();
        // SAFETY: a user read into the walk's window, of at most its size;
        // a fault returns an error.
        if unsafe { gen::bpf_probe_read_user(buf, len as u32, addr as *const c_void) } != 0 {
            walk.window_len = 0;
            return None;
        }
        walk.window_start = addr;
        walk.window_len = len;
        at = 0;
    }
    walk.window
        .get((at / 8) as usize & (WINDOW_WORDS - 1))
        .copied()
}

/// A search bound as the verifier must see it: read back from map memory
/// (an unknown number), so that every search path ends in the same state.
#[inline(always)]
fn bound(at: &u32) -> u32 {
    // SAFETY: a plain read of a field of the walk.
    unsafe { core::ptr::read_volatile(at) }
}

/// A step by the unwind table of the code at the cursor: the rule for its
/// address, from this CPU's [`KnownRule`]s or else looked up
/// ([`lookup_rule`]), then followed ([`follow_rule`]).
#[inline(always)]
fn table_step(walk: &mut Walk) -> Step {
    // The frame's address is a return address: look up the call, which
    // is the instruction before it (a call ending a function that never
    // returns is followed by the next function).
    let pc = walk.ip.wrapping_sub(1);
    let set = ((pc ^ (pc >> 7) ^ (pc >> 17)) as usize) & (KNOWN_SETS - 1);
    if let Some(ways) = walk.known.get(set) {
        for k in ways {
            if k.pc == pc && k.tgid == walk.tgid && k.epoch == walk.epoch {
                let r = k.rule;
                return follow_rule(walk, r);
            }
        }
    }
    let (r, keep) = lookup_rule(walk, pc);
    if keep {
        let (tgid, epoch) = (walk.tgid, walk.epoch);
        if let Some(ways) = walk.known.get_mut(set) {
            // The newer first; the older of the two goes.
            ways[1] = ways[0];
            ways[0] = KnownRule {
                pc,
                epoch,
                tgid,
                _pad: 0,
                rule: r,
            };
        }
    }
    follow_rule(walk, r)
}

/// A rule that steps by frame pointer.
const BY_FRAME_POINTER: UnwindRow = UnwindRow {
    pc: 0,
    cfa_offset: 0,
    rbp_slot: 0,
    kind: row::NONE,
};

/// The rule for the code at `pc`, and whether it may be kept for later
/// walks (not when it comes from a miss that is counted at each frame, nor
/// from a process whose mappings are not in yet). The process's mapping of
/// that address (the previous frame's, or [`find_mapping`]), the table
/// page of the file's address (an array read) and the row among that
/// page's (a binary search of at most 13 array reads). Code without a
/// table, or in a file that keeps frame pointers, is stepped by frame
/// pointer.
#[inline(always)]
fn lookup_rule(walk: &mut Walk, pc: u64) -> (UnwindRow, bool) {
    const LOST: UnwindRow = UnwindRow {
        pc: 0,
        cfa_offset: 0,
        rbp_slot: 0,
        kind: row::UNSUPPORTED,
    };
    let m = if walk.mapping.start <= pc && pc < walk.mapping.end {
        // The same file as the frame below (most callers are).
        walk.mapping
    } else {
        match find_mapping(walk, pc) {
            Some(m) => {
                walk.mapping = m;
                m
            }
            None => return (LOST, false),
        }
    };
    if m.end == 0 {
        // No mapping holds pc (counted): JIT code, a library mapped since
        // userspace last looked.
        return (BY_FRAME_POINTER, false);
    }
    if m.kind == UnwindKind::FramePointer as u32 {
        return (BY_FRAME_POINTER, true);
    }
    let vaddr = pc.wrapping_sub(m.bias);
    if vaddr > u32::MAX as u64 {
        count(Stat::UnwindNoTable);
        return (BY_FRAME_POINTER, false);
    }
    // The file's page index (an array read): no page, or a page no row
    // covers, means no function of the file covers the address.
    let rel = ((vaddr >> UNWIND_PAGE_SHIFT) as u32).wrapping_sub(m.first_page);
    if rel >= m.page_count {
        return (BY_FRAME_POINTER, true);
    }
    let Some(page) = UNWIND_PAGES.get(m.pages.wrapping_add(rel)) else {
        return (BY_FRAME_POINTER, true);
    };
    let page = *page;
    if page.count == 0 {
        return (BY_FRAME_POINTER, true);
    }
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
            None => return (LOST, true),
        }
        i += 1;
    }
    match UNWIND_ROWS.get(bound(&walk.lo)) {
        // Before the page's first row: no function covers it.
        Some(r) if r.pc > vaddr => (BY_FRAME_POINTER, true),
        Some(r) => (*r, true),
        None => (LOST, true),
    }
}

/// Steps to the caller by rule `r`: the return address (and rbp, if the
/// function saved it) read at the canonical frame address, or by frame
/// pointer.
#[inline(always)]
fn follow_rule(walk: &mut Walk, r: UnwindRow) -> Step {
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
    // The saved rbp first: it lies below the return address, and the copy
    // of the stack is taken from the first word read up (reading the
    // return address first would make every walk copy the stack twice).
    if r.rbp_slot != 0 {
        match stack_word(walk, cfa.wrapping_add((r.rbp_slot as i64 * 8) as u64)) {
            Some(bp) => walk.bp = bp,
            None => return Step::Lost,
        }
    }
    let Some(ra) = stack_word(walk, cfa - 8) else {
        return Step::Lost;
    };
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

/// Whether a recorded stack is the walked one: the same number of frames
/// and Python frames, and the same 64-bit hash of them. (Two different
/// stacks have the same hash with a chance of about one in 10^19 a pair.
/// A compare of every frame, with its loops, was most of the verifier's
/// 770,000 instructions for this program: a second at each start.)
#[inline(always)]
fn same_frames(known: &StackFrames, walk: &StackFrames) -> bool {
    known.hash == walk.hash && known.nr == walk.nr && known.py_nr == walk.py_nr
}

/// Copies the current user stack (innermost first) into `frames`; returns
/// the number of frames.
#[inline(always)]
pub(crate) fn copy_user_stack<C: EbpfContext>(ctx: &C, frames: &mut [u64; MAX_FRAMES]) -> u32 {
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
pub(crate) fn user_sp_word() -> u64 {
    user_ip_and_sp_word()[1]
}

/// The current task's user instruction pointer and the word at its user
/// stack pointer (in a syscall: where it was made, and the return address
/// of a wrapper that pushed nothing), 0 where unreadable.
#[inline(always)]
pub(crate) fn user_ip_and_sp_word() -> [u64; 2] {
    // SAFETY: helpers validate their arguments; reads may fail and return 0.
    unsafe {
        let task = bpf_get_current_task_btf();
        let regs = bpf_task_pt_regs(task) as *const pt_regs;
        if regs.is_null() {
            return [0, 0];
        }
        let ip: u64 = bpf_probe_read_kernel(&raw const (*regs).rip).unwrap_or(0);
        let sp: u64 = bpf_probe_read_kernel(&raw const (*regs).rsp).unwrap_or(0);
        if sp == 0 {
            return [ip, 0];
        }
        [ip, bpf_probe_read_user(sp as *const u64).unwrap_or(0)]
    }
}

//! CPython frames at an allocation: in a process userspace has described
//! (`PY_PROCS`, written once its offsets were checked against the running
//! interpreter), the allocating thread's state is found in the main
//! interpreter's thread list, and its frame chain is walked, innermost
//! first: per frame, the code object and the instruction field as stored.
//! Userspace turns them into names and lines, and puts them in place of
//! the `_PyEval_EvalFrameDefault` frames of the native stack.
//!
//! Owns `PY_PROCS`, `PY_ANY`, the per-thread cache of thread states
//! (`PY_THREADS`) and the per-CPU walk in progress (`PY_WALK`).
//!
//! Cost per recorded allocation in a CPython process: one thread-state
//! copy when the thread's cached state still holds (a user read, ~100 ns),
//! one copy of its `_PyCFrame` pointer on 3.11–3.12, then one copy per
//! frame (~100 ns each, at most [`PY_DEPTH`] frames plus the entry frames
//! of 3.12+); a thread whose state is not cached reads the thread list
//! once (one copy per thread state). Elsewhere: one array read (`PY_ANY`).

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    cty::c_void,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{self as gen, bpf_get_current_task_btf, bpf_loop},
    },
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use tracer_common::{
    PyFrameRef, PyProc, Stat, MAX_TARGETS, PY_DEPTH, PY_ENTRY, PY_KEY_TID, PY_NONE,
    PY_OWNED_BY_CSTACK, PY_SPAN, PY_TRUNCATED,
};

use crate::{stats::count, task_storage::TaskStorage};

/// Offset of `fsbase` in `task_struct`, patched by userspace from the
/// kernel's BTF (0: unknown, and 3.8–3.10 processes get no Python frames).
#[unsafe(no_mangle)]
static TASK_FSBASE: u32 = 0;

/// How to read each CPython process's frames, by tgid (written by
/// userspace; allocated on demand).
#[map]
static PY_PROCS: HashMap<u32, PyProc> = HashMap::with_max_entries(MAX_TARGETS, BPF_F_NO_PREALLOC);

/// [0]: 1 once userspace has described any process in `PY_PROCS`: until
/// then, an allocation costs this array read and no hash lookup.
#[map]
static PY_ANY: Array<u32> = Array::with_max_entries(1, 0);

/// The thread state a thread had at its last walk (or, `tstate` 0, when
/// its last search found none), and the process it was found in.
#[repr(C)]
struct PyThread {
    tstate: u64,
    tgid: u32,
    _pad: u32,
    /// When the last search found nothing: searched again 100 ms later.
    missed_ns: u64,
}

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "PY_THREADS")]
static PY_THREADS: TaskStorage<PyThread> = TaskStorage::new();

/// A thread without a thread state is searched for again after this.
const MISS_RETRY_NS: u64 = 100_000_000;
/// Thread states looked at in one search of the thread list.
const MAX_THREADS: u32 = 64;

/// The walk in progress, per CPU (a `bpf_loop` callback takes no
/// pointer to the program's stack that the verifier can follow).
#[repr(C)]
struct PyWalk {
    p: PyProc,
    tgid: u32,
    n: u32,
    /// The thread's key (see `PyProc::key_kind`).
    key: u64,
    /// Search: the thread state being looked at, and the one found.
    tstate: u64,
    found: u64,
    /// Walk: the frame being read.
    frame: u64,
    flags: u32,
    _pad: u32,
    buf: [u8; PY_SPAN],
    frames: [PyFrameRef; PY_DEPTH],
}

#[map]
static PY_WALK: PerCpuArray<PyWalk> = PerCpuArray::with_max_entries(1, 0);

/// The u64 at byte `at` of the copy (offsets are 8-aligned).
#[inline(always)]
fn u64_at(buf: &[u8; PY_SPAN], at: u32) -> u64 {
    let i = (at as usize) & (PY_SPAN - 8);
    // SAFETY: i + 8 <= PY_SPAN.
    unsafe { core::ptr::read_unaligned(buf.as_ptr().add(i).cast::<u64>()) }
}

/// The u32 at byte `at` of the copy (offsets are 4-aligned).
#[inline(always)]
fn u32_at(buf: &[u8; PY_SPAN], at: u32) -> u32 {
    let i = (at as usize) & (PY_SPAN - 4);
    // SAFETY: i + 4 <= PY_SPAN.
    unsafe { core::ptr::read_unaligned(buf.as_ptr().add(i).cast::<u32>()) }
}

/// The byte at `at` of the copy.
#[inline(always)]
fn u8_at(buf: &[u8; PY_SPAN], at: u32) -> u8 {
    buf[(at as usize) & (PY_SPAN - 1)]
}

/// Copies `len` bytes of user memory at `addr` into the walk's buffer (one
/// user read, ~100 ns). False when any of it cannot be read.
#[inline(always)]
fn copy(w: &mut PyWalk, addr: u64, len: u32) -> bool {
    let len = (len as usize) & (PY_SPAN - 1);
    if len == 0 || addr == 0 {
        return false;
    }
    // SAFETY: the helper checks the user address; the buffer holds len.
    unsafe {
        gen::bpf_probe_read_user(
            w.buf.as_mut_ptr().cast::<c_void>(),
            len as u32,
            addr as *const c_void,
        ) == 0
    }
}

/// The current thread's fs base (`pthread_self()` on x86-64), 0 unknown.
#[inline(always)]
fn fs_base() -> u64 {
    // SAFETY: a plain read of a static patched at load time.
    let at = unsafe { core::ptr::read_volatile(&TASK_FSBASE) };
    if at == 0 {
        return 0;
    }
    // SAFETY: the helper checks the kernel address it reads.
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        bpf_probe_read_kernel(task.add(at as usize) as *const u64).unwrap_or(0)
    }
}

/// Walks the current thread's Python frames into `out` (`nr` of them,
/// `flags`) when `tgid` is a CPython process userspace described; returns
/// a hash of them (0: none) for the stack's id.
#[inline(always)]
pub(crate) fn walk(
    tgid: u32,
    nr: &mut u32,
    flags: &mut u32,
    out: &mut [PyFrameRef; PY_DEPTH],
) -> u64 {
    *nr = 0;
    *flags = 0;
    if PY_ANY.get(0).copied().unwrap_or(0) == 0 {
        return 0;
    }
    // A hash lookup (~50 ns), in processes that run Python only then.
    let Some(p) = PY_PROCS.get_ptr(&tgid) else {
        return 0;
    };
    let Some(w) = PY_WALK.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot (programs run with migration disabled).
    let w = unsafe { &mut *w };
    // One helper copy (a struct assignment would be a call to memcpy,
    // which BPF has not). SAFETY: p is a valid map value of that size.
    if unsafe {
        gen::bpf_probe_read_kernel(
            (&raw mut w.p).cast::<c_void>(),
            core::mem::size_of::<PyProc>() as u32,
            p.cast::<c_void>(),
        )
    } != 0
    {
        return 0;
    }
    w.tgid = tgid;
    w.key = match w.p.key_kind {
        // The kernel's thread id (~10 ns), asked only here.
        PY_KEY_TID => bpf_get_current_pid_tgid() & 0xffff_ffff,
        _ => fs_base(),
    };
    if w.key == 0 {
        return 0;
    }
    if !thread_state(w) {
        count(Stat::PythonNoThread);
        return 0;
    }
    // The buffer holds the thread state (see thread_state).
    let mut frame = u64_at(&w.buf, w.p.tstate_frame);
    if w.p.cframe_current_frame != PY_NONE && frame != 0 {
        // SAFETY: the helper checks the user address.
        frame = unsafe {
            bpf_probe_read_user((frame + w.p.cframe_current_frame as u64) as *const u64)
                .unwrap_or(0)
        };
    }
    w.frame = frame;
    w.n = 0;
    w.flags = 0;
    // Entry frames (3.12+) take a step without a frame: twice the depth.
    // SAFETY: the callback finds the walk in its per-CPU slot.
    unsafe {
        bpf_loop(
            2 * PY_DEPTH as u32,
            walk_frame as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    if w.frame != 0 {
        w.flags |= PY_TRUNCATED;
    }
    if w.flags & PY_TRUNCATED != 0 {
        count(Stat::PythonTruncated);
    }
    *nr = w.n;
    *flags = w.flags;
    // Frame by frame (a whole-array copy would be a call to memcpy, which
    // BPF has not), hashed on the way.
    let mut hash = FNV_OFFSET;
    let mut i = 0;
    while i < PY_DEPTH {
        if i as u32 >= w.n {
            break;
        }
        let f = w.frames[i];
        out[i] = f;
        hash = (hash ^ f.code).wrapping_mul(FNV_PRIME);
        hash = (hash ^ f.instr).wrapping_mul(FNV_PRIME);
        i += 1;
    }
    hash
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// The thread's state, its copy left in the walk's buffer: the cached one
/// when it still is this thread's, else found in the thread list.
#[inline(always)]
fn thread_state(w: &mut PyWalk) -> bool {
    // One task-storage access (~25 ns).
    let Some(cache) = PY_THREADS.current(true) else {
        return false;
    };
    // SAFETY: the thread's own record.
    let cache = unsafe { &mut *cache };
    if cache.tgid == w.tgid {
        if cache.tstate != 0 {
            let t = cache.tstate;
            if copy(w, t, w.p.tstate_span) && owns(w) {
                return true;
            }
        } else {
            // SAFETY: plain helper call.
            let now = unsafe { bpf_ktime_get_ns() };
            if now.wrapping_sub(cache.missed_ns) < MISS_RETRY_NS {
                return false;
            }
        }
    }
    cache.tgid = w.tgid;
    // SAFETY: the helper checks the user address.
    w.tstate = unsafe { bpf_probe_read_user(w.p.threads_head as *const u64).unwrap_or(0) };
    w.found = 0;
    // SAFETY: the callback finds the search in its per-CPU slot.
    unsafe {
        bpf_loop(
            MAX_THREADS,
            search_thread as *mut c_void,
            core::ptr::null_mut(),
            0,
        )
    };
    cache.tstate = w.found;
    if w.found == 0 {
        // SAFETY: plain helper call.
        cache.missed_ns = unsafe { bpf_ktime_get_ns() };
        return false;
    }
    // The search left the found state's copy in the buffer.
    true
}

/// Whether the thread state in the buffer is the current thread's.
#[inline(always)]
fn owns(w: &PyWalk) -> bool {
    u64_at(&w.buf, w.p.tstate_key) == w.key && u64_at(&w.buf, w.p.tstate_interp) == w.p.interp
}

/// One thread state of the search (a `bpf_loop` callback): 1 stops.
extern "C" fn search_thread(_i: u32, _ctx: *mut c_void) -> i64 {
    let Some(w) = PY_WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's slot.
    let w = unsafe { &mut *w };
    let t = w.tstate;
    if !copy(w, t, w.p.tstate_span) {
        return 1;
    }
    if owns(w) {
        w.found = t;
        return 1;
    }
    w.tstate = u64_at(&w.buf, w.p.tstate_next);
    0
}

/// One frame of the walk (a `bpf_loop` callback): 1 stops.
extern "C" fn walk_frame(_i: u32, _ctx: *mut c_void) -> i64 {
    let Some(w) = PY_WALK.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's slot.
    let w = unsafe { &mut *w };
    let f = w.frame;
    if f == 0 {
        return 1;
    }
    if !copy(w, f, w.p.frame_span) {
        // Unreadable: the rest of the chain is lost.
        w.flags |= PY_TRUNCATED;
        w.frame = 0;
        return 1;
    }
    let previous = u64_at(&w.buf, w.p.frame_previous);
    let n = w.n as usize;
    if w.p.frame_owner != PY_NONE && u8_at(&w.buf, w.p.frame_owner) == PY_OWNED_BY_CSTACK {
        // An entry frame (3.12+): the frame below it started its run.
        let last = n.wrapping_sub(1);
        if last < PY_DEPTH {
            w.frames[last].instr |= PY_ENTRY;
        }
        w.frame = previous;
        return 0;
    }
    if n >= PY_DEPTH {
        // More frames than kept: the walk ends here, cut.
        return 1;
    }
    let (instr, entry) = match w.p.instr_is_int {
        0 => (
            u64_at(&w.buf, w.p.frame_instr),
            w.p.frame_is_entry != PY_NONE && u8_at(&w.buf, w.p.frame_is_entry) != 0,
        ),
        _ => (u32_at(&w.buf, w.p.frame_instr) as u64, true),
    };
    w.frames[n] = PyFrameRef {
        code: u64_at(&w.buf, w.p.frame_code),
        instr: if entry { instr | PY_ENTRY } else { instr },
    };
    w.n += 1;
    w.frame = previous;
    0
}

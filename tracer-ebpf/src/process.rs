//! Process lifecycle and OOM kills: fork (a target's child is followed),
//! exec (a target's image is replaced, or a watched node runs a new
//! program), exit (per-process state can go; the pid is free) and the OOM
//! killer's choice of a victim. All are rare next to malloc; each sends one
//! small [`ProcessEvent`] through the shared ring buffer (`events`), in
//! order with the mapping events.
//!
//! Owns the stops that let userspace put probes in before a process runs
//! on: a followed fork's child at its first return to user space (`HELD`),
//! a target at its execs, a command at its entry point (`ENTRY_REACHED`),
//! a CPython command at its end (`EXIT_HOLD`);
//! whether they are on (`HOLDING`); and the settings of these programs
//! (`WATCH_EXEC`, `STOP_AT_EXEC`, `EXIT_GROUP_DEAD`, `OOM_FIELDS`).

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::bpf_send_signal,
    },
    macros::{map, tracepoint, uprobe},
    maps::{Array, HashMap},
    programs::{ProbeContext, TracePointContext},
};
use tracer_common::{EventKind, OomFields, ProcessEvent, Stat, MAX_HELD, OOM_FIELD_ABSENT};

use crate::{events::EVENTS, stack, stats::count, targets};

/// Global settings (see `tracer_common::config`), patched by userspace at
/// load time. Read with a volatile load so the compiler cannot fold the
/// default; each read is one load from the program's .rodata (~1 ns).
#[unsafe(no_mangle)]
static WATCH_EXEC: u32 = 0;
#[unsafe(no_mangle)]
static STOP_AT_EXEC: u32 = 0;
#[unsafe(no_mangle)]
static EXIT_GROUP_DEAD: u32 = 0;

#[inline(always)]
fn setting(value: &u32) -> u32 {
    // SAFETY: a plain read of a static.
    unsafe { core::ptr::read_volatile(value) }
}

/// Whether every exec on the node is to be reported.
#[inline(always)]
fn watch_exec() -> bool {
    setting(&WATCH_EXEC) != 0
}

/// The process to stop at its execs (`-- CMD` with unwind tables), or 0.
#[inline(always)]
fn stop_at_exec() -> u32 {
    setting(&STOP_AT_EXEC)
}

/// 1 while targets are held as userspace hooks them: a followed fork's
/// child until its probes are in, a target that execs until its new
/// image's are (`-- CMD`, `--follow-forks`). A map rather than a setting:
/// userspace turns it off before its last look at the events, so that
/// nothing stops once nobody will continue it.
#[map]
static HOLDING: Array<u32> = Array::with_max_entries(1, 0);

/// Whether targets are held now (one array lookup, ~5 ns; paid at forks
/// and execs of targets only).
#[inline(always)]
fn holding() -> bool {
    HOLDING.get(0).is_some_and(|on| *on != 0)
}

/// Offset of `group_dead` in the `sched_process_exit` record (0: none).
#[inline(always)]
fn exit_group_dead_offset() -> usize {
    setting(&EXIT_GROUP_DEAD) as usize
}

/// The last process stopped by `entry_stop` (userspace waits for it).
#[map]
static ENTRY_REACHED: Array<u32> = Array::with_max_entries(1, 0);

/// Children forked by targets that stop at their first return to user
/// space, before any instruction of theirs runs, until userspace has put
/// their probes in. Whoever deletes a child's entry first decides: the
/// child (it stays stopped; userspace continues it) or userspace (the child
/// never stops). See [`fork_return`].
#[map]
static HELD: HashMap<u32, u8> = HashMap::with_max_entries(MAX_HELD, 0);

const SIGSTOP: u32 = 19;
const SIGCONT: u32 = 18;

/// Sends `event` (its timestamp is set here); false if the ring buffer was
/// full (counted).
#[inline(always)]
fn send(mut event: ProcessEvent) -> bool {
    // SAFETY: plain helper call.
    event.timestamp_ns = unsafe { bpf_ktime_get_ns() };
    if EVENTS.output::<ProcessEvent>(&event, 0).is_err() {
        count(Stat::RingBufFull);
        return false;
    }
    true
}

/// CPython targets memtrace started (`-- CMD` and its followed children)
/// whose end is to stop them, armed by userspace once their frames are
/// walked. As with `HELD`, whoever deletes a process's entry decides: the
/// process at its end (it stops; userspace continues it) or userspace at
/// the end of the run (the process never stops).
#[map]
static EXIT_HOLD: HashMap<u32, u8> = HashMap::with_max_entries(MAX_HELD, 0);

/// A CPython target's end: uprobes at `Py_FinalizeEx` and libc's `_exit`
/// (`os._exit`), attached for armed processes only. While the process
/// lives its code objects can be read, and its last stacks named: it
/// stops (SIGSTOP) and says so; userspace takes in its stacks and
/// continues it. Once per process (the entry is taken).
#[uprobe]
pub(crate) fn exit_stop(_ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if EXIT_HOLD.remove(&tgid).is_err() {
        return 0;
    }
    let sent = send(ProcessEvent {
        kind: EventKind::ExitStop as u32,
        tgid,
        ..ProcessEvent::default()
    });
    if sent {
        // SAFETY: plain helper call; signals the current process.
        unsafe { bpf_send_signal(SIGSTOP) };
    }
    0
}

/// `memtrace -- CMD`: a uprobe at the program's entry point, for the
/// command only (set while it is stopped at its exec, see
/// `sched_process_exec`). The dynamic loader has mapped every library by
/// then, and the program has not allocated: it stops (SIGSTOP) and says so
/// in `ENTRY_REACHED`; userspace loads the unwind tables of its files and
/// continues it.
#[uprobe]
pub(crate) fn entry_stop(_ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if let Some(slot) = ENTRY_REACHED.get_ptr_mut(0) {
        // SAFETY: the map's only slot; a plain store.
        unsafe { *slot = tgid };
    }
    // SAFETY: plain helper call; signals the current process.
    unsafe { bpf_send_signal(SIGSTOP) };
    0
}

/// exec() replaces the address space: what the old image held is gone.
/// Reported for targets, and for every process while processes are watched
/// (`--all`, `--comm`, `--cgroup`, `--container`). One TARGETS lookup per
/// exec on the node otherwise.
#[tracepoint]
pub(crate) fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !watch_exec() && !targets::is_target(tgid) {
        return 0;
    }
    // The old image's executable mappings are gone (one hash delete per
    // exec of interest), its allocator library's text too (another).
    stack::forget_mappings(tgid);
    targets::forget_allocator_text(tgid);
    let sent = send(ProcessEvent {
        kind: EventKind::Exec as u32,
        tgid,
        comm: bpf_get_current_comm().unwrap_or_default(),
        ..ProcessEvent::default()
    });
    if sent && (tgid == stop_at_exec() || (holding() && targets::is_target(tgid))) {
        // A target stops before its loader runs, until userspace has hooked
        // its new image (and, for the command with unwind tables, set the
        // stop at its entry point). Exec events are rare: a comparison and
        // at most one more TARGETS lookup per exec of interest. Only if
        // userspace hears of it: nothing else would continue it. (The stop
        // takes effect when the exec returns to user space, after this
        // program.)
        // SAFETY: plain helper call; signals the current process.
        unsafe { bpf_send_signal(SIGSTOP) };
    }
    0
}

/// A target exits: its blocks and regions can be dropped, and its pid is
/// no longer a target's (another process may be given it). The exit is the
/// last thread's where the record says (`group_dead`), else the main
/// thread's. Other exits cost a byte read or the tgid/pid compare.
#[tracepoint]
pub(crate) fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let last = match exit_group_dead_offset() {
        0 => id as u32 == tgid,
        // SAFETY: an offset within the record, per its format (read by
        // userspace); a failed read counts as "not the last".
        offset => unsafe { ctx.read_at::<u8>(offset).unwrap_or(0) != 0 },
    };
    if !last || !targets::is_target(tgid) {
        return 0;
    }
    if exit_group_dead_offset() != 0 {
        // Gone for good (a thread that calls exec outlives its main
        // thread, which is why only `group_dead` says so): one delete.
        targets::remove(tgid);
    }
    let _ = send(ProcessEvent {
        kind: EventKind::Exit as u32,
        tgid,
        ..ProcessEvent::default()
    });
    0
}

/// Offsets in the `task/task_newtask` record (the same since Linux 3.x).
mod newtask {
    pub(crate) const PID: usize = 8;
    pub(crate) const CLONE_FLAGS: usize = 32;
}
const CLONE_THREAD: u64 = 0x0001_0000;

/// A task was created: when a target forks a process (not a thread), the
/// child is a target from here on — its mapping calls count from its first
/// — and userspace attaches its allocator probes. Attached only while
/// forks are followed; runs in the parent, before the child ever does. A
/// flags read per task created on the node, and one TARGETS lookup per
/// process created.
#[tracepoint]
pub(crate) fn task_newtask(ctx: TracePointContext) -> u32 {
    let flags = field::<u64>(&ctx, newtask::CLONE_FLAGS).unwrap_or(CLONE_THREAD);
    let parent = (bpf_get_current_pid_tgid() >> 32) as u32;
    if flags & CLONE_THREAD != 0 || !targets::is_target(parent) {
        return 0;
    }
    let child = field::<i32>(&ctx, newtask::PID).unwrap_or(0) as u32;
    if child == 0 {
        return 0;
    }
    if targets::add(child).is_err() {
        count(Stat::TargetsFull);
        return 0;
    }
    // Held before userspace can hear of it (one hash insert per process a
    // target forks); never held unless it does.
    let mut held = false;
    if holding() {
        held = HELD.insert(&child, &1, 0).is_ok();
        if !held {
            count(Stat::HoldFull);
        }
    }
    let sent = send(ProcessEvent {
        kind: EventKind::Fork as u32,
        tgid: child,
        trigger_tgid: parent,
        held: held as u32,
        comm: bpf_get_current_comm().unwrap_or_default(),
        ..ProcessEvent::default()
    });
    if held && !sent {
        let _ = HELD.remove(&child);
    }
    0
}

/// A fork, vfork or clone returns (`syscalls/sys_exit_{clone,clone3,fork,
/// vfork}`, attached while targets are held): in a child held by
/// [`task_newtask`], before its first user instruction, it stops (SIGSTOP,
/// taken on the way out to user space) unless userspace has released it
/// already. The signal goes first and the claim second, so that userspace,
/// which continues the child only when it finds the claim taken, always
/// continues after the stop; a child that lost the claim takes its own stop
/// back (SIGCONT, before it ever stops). Costs every clone return on the
/// node one hash lookup (~50 ns); threads' returns, a compare. Once
/// userspace has stopped holding, nothing stops.
#[tracepoint]
pub(crate) fn fork_return(_ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if id as u32 != tgid || HELD.get_ptr(&tgid).is_none() || !holding() {
        return 0;
    }
    // SAFETY: plain helper calls; they signal the current process.
    unsafe {
        bpf_send_signal(SIGSTOP);
        if HELD.remove(&tgid).is_err() {
            bpf_send_signal(SIGCONT);
        }
    }
    0
}

/// The field of a tracepoint's record at `offset` (per the tracepoint's
/// format), None when it cannot be read.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: usize) -> Option<T> {
    // SAFETY: read_at copies size_of::<T>() bytes at `offset` of the record
    // with a checked kernel read: a bad offset fails, it never faults; the
    // types read are integers and byte arrays, valid for any bytes.
    unsafe { ctx.read_at::<T>(offset) }.ok()
}

/// Where the `oom/mark_victim` record's fields are: patched at load from
/// the tracepoint's format (the defaults are 6.8's).
#[unsafe(no_mangle)]
static OOM_FIELDS: OomFields = OomFields::LATEST;

/// The victim record's field at `offset`, None when this kernel's record
/// has no such field.
#[inline(always)]
fn victim_field<T>(ctx: &TracePointContext, offset: u32) -> Option<T> {
    match offset {
        OOM_FIELD_ABSENT => None,
        offset => field::<T>(ctx, offset as usize),
    }
}

/// The OOM killer chose a victim: always reported, for any process.
/// Userspace captures the victim's stacks at once if it is traced.
#[tracepoint]
pub(crate) fn oom_mark_victim(ctx: TracePointContext) -> u32 {
    // SAFETY: a plain read of a static patched at load time.
    let f = unsafe { core::ptr::read_volatile(&OOM_FIELDS) };
    // A field this kernel's record lacks, or that fails to read, is zero.
    let read_u64 = |offset| victim_field::<u64>(&ctx, offset).unwrap_or(0);
    let pid = victim_field::<i32>(&ctx, f.pid).unwrap_or(0) as u32;
    let mut comm = [0u8; 16];
    let loc = victim_field::<u32>(&ctx, f.comm).unwrap_or(0);
    let offset = (loc & 0xffff) as usize;
    if offset != 0 {
        // At most 15 bytes and a NUL: TASK_COMM_LEN.
        comm = field::<[u8; 16]>(&ctx, offset).unwrap_or([0; 16]);
        comm[15] = 0;
    }
    let _ = send(ProcessEvent {
        kind: EventKind::OomVictim as u32,
        tgid: pid,
        trigger_tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        uid: victim_field::<u32>(&ctx, f.uid).unwrap_or(0),
        total_vm_kb: read_u64(f.total_vm),
        anon_rss_kb: read_u64(f.anon_rss),
        file_rss_kb: read_u64(f.file_rss),
        shmem_rss_kb: read_u64(f.shmem_rss),
        pgtables_kb: read_u64(f.pgtables),
        oom_score_adj: victim_field::<i16>(&ctx, f.oom_score_adj).unwrap_or(0) as i32,
        comm,
        ..ProcessEvent::default()
    });
    0
}

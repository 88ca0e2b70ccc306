//! The BPF maps of kernel-side accounting and the small helpers that update
//! them. Costs quoted are per call on this machine kind (hash map lookups are
//! a jhash of the key plus a bucket walk: ~50-100 ns; per-CPU array slots
//! are a pointer offset: ~10 ns).
//!
//! Sizes here are defaults; userspace overrides the big ones at load time
//! (`--max-live`, `--max-stacks`).

use aya_ebpf::{
    bindings::{bpf_map_type, BPF_F_MMAPABLE, BPF_F_NO_PREALLOC, BPF_LOCAL_STORAGE_GET_F_CREATE},
    helpers::generated::{bpf_get_current_task_btf, bpf_task_storage_get},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use core::intrinsics::{atomic_xadd, AtomicOrdering};

use crate::{
    live::{self, Put},
    stack::Walk,
};
use tracer_common::{
    InFlight, LiveAlloc, ProcUnwind, StackAllocated, StackFrames, StackKey, Stat, SyscallArgs,
    UnwindPage, UnwindRow, EXP_DRAWS, MAX_TARGETS, STAT_COUNT,
};

/// Global settings (see `tracer_common::config`), patched by userspace at
/// load time. Read with a volatile load so the compiler cannot fold the
/// default; each read is one load from the program's .rodata (~1 ns).
#[unsafe(no_mangle)]
static TRACE_ALL: u32 = 0;
#[unsafe(no_mangle)]
static SELF_TGID: u32 = 0;
#[unsafe(no_mangle)]
static WATCH_EXEC: u32 = 0;
#[unsafe(no_mangle)]
static SAMPLE_BYTES: u64 = 0;
#[unsafe(no_mangle)]
static UNWIND_TABLES: u32 = 0;
#[unsafe(no_mangle)]
static STOP_AT_EXEC: u32 = 0;
#[unsafe(no_mangle)]
static EXIT_GROUP_DEAD: u32 = 0;

#[inline(always)]
fn setting(value: &u32) -> u32 {
    // SAFETY: a plain read of a static.
    unsafe { core::ptr::read_volatile(value) }
}

/// Whether `tgid` is memtrace itself, whose own allocations trap too when
/// the allocator is probed for every process (`--all`); never traced.
#[inline(always)]
pub fn is_self(tgid: u32) -> bool {
    tgid == setting(&SELF_TGID)
}

/// `--sample-bytes` (0: trace every allocation).
#[inline(always)]
pub fn sample_bytes() -> u64 {
    // SAFETY: a plain read of a static.
    unsafe { core::ptr::read_volatile(&SAMPLE_BYTES) }
}

/// Byte countdown of the sampler, per CPU: bytes left before the next
/// sampled allocation. A per-CPU slot (~10 ns, no hash, nothing to clean
/// up when threads exit) rather than per thread: the countdown is
/// memoryless, so which allocations share one does not change the
/// probability 1-exp(-size/SIZE) of each.
#[map]
pub static COUNTDOWN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Exponential draws of mean --sample-bytes (see `tracer_common::EXP_DRAWS`).
#[map]
pub static DRAWS: Array<u64> = Array::with_max_entries(EXP_DRAWS, 0);

/// Whether an allocation of `size` bytes is sampled: the countdown goes
/// down by `size`; when it runs out, the allocation is sampled and a new
/// countdown is drawn. One per-CPU slot, plus a random number and an array
/// read when sampling (~30 ns).
#[inline(always)]
pub fn sample(size: u64) -> bool {
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

/// Whether stacks are walked with unwind tables (`--unwind dwarf|auto`).
#[inline(always)]
pub fn unwind_tables() -> bool {
    setting(&UNWIND_TABLES) != 0
}

/// The process to stop at its execs (`-- CMD` with unwind tables), or 0.
#[inline(always)]
pub fn stop_at_exec() -> u32 {
    setting(&STOP_AT_EXEC)
}

/// The last process stopped by `entry_stop` (userspace waits for it).
#[map]
pub static ENTRY_REACHED: Array<u32> = Array::with_max_entries(1, 0);

/// Offset of `group_dead` in the `sched_process_exit` record (0: none).
#[inline(always)]
pub fn exit_group_dead_offset() -> usize {
    setting(&EXIT_GROUP_DEAD) as usize
}

/// Whether every exec on the node is to be reported.
#[inline(always)]
pub fn watch_exec() -> bool {
    setting(&WATCH_EXEC) != 0
}

/// Process ids (tgid) being traced. Only the tracepoints consult it (and
/// not with `--all`): uprobes are attached per process, or for every
/// process with `--all`, so the kernel filters them for free.
#[map]
pub static TARGETS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// A task storage map (`BPF_MAP_TYPE_TASK_STORAGE`): one value per thread,
/// reached from the current task in a few loads (~20-30 ns) instead of a
/// hash lookup, created on first use and freed by the kernel with the
/// thread. aya-ebpf 0.2 has no wrapper for it; like its BTF maps, the
/// definition is carried by the field types (libbpf's `.maps` convention).
#[repr(C)]
pub struct TaskStorage<T> {
    r#type: *const [i32; bpf_map_type::BPF_MAP_TYPE_TASK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; BPF_F_NO_PREALLOC as usize],
}

// SAFETY: placeholder pointers patched by the loader, never dereferenced.
unsafe impl<T> Sync for TaskStorage<T> {}

impl<T> TaskStorage<T> {
    pub const fn new() -> Self {
        TaskStorage {
            r#type: core::ptr::null(),
            key: core::ptr::null(),
            value: core::ptr::null(),
            max_entries: core::ptr::null(),
            map_flags: core::ptr::null(),
        }
    }

    /// The current thread's value; created (zeroed) when `create` and
    /// missing. None when missing (or out of memory).
    #[inline(always)]
    pub fn current(&self, create: bool) -> Option<*mut T> {
        let flags = if create {
            BPF_LOCAL_STORAGE_GET_F_CREATE as u64
        } else {
            0
        };
        // SAFETY: the map pointer is this map definition; the task comes
        // from the kernel; a null value means "create zeroed".
        let value = unsafe {
            bpf_task_storage_get(
                core::ptr::from_ref(self).cast_mut().cast(),
                bpf_get_current_task_btf().cast(),
                core::ptr::null_mut(),
                flags,
            )
        };
        (!value.is_null()).then_some(value.cast())
    }
}

/// Allocator calls between entry and return, per thread (`active` set while
/// one is open).
#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "INFLIGHT")]
pub static INFLIGHT: TaskStorage<InFlight> = TaskStorage::new();

/// The current thread's open allocator call, if any (~25 ns).
#[inline(always)]
pub fn open_call() -> Option<*mut InFlight> {
    // SAFETY: the thread's own record.
    INFLIGHT
        .current(false)
        .filter(|&c| unsafe { (*c).active != 0 })
}

/// What each (tgid, stack id) allocated. Userspace reads this every interval.
#[map]
pub static STACK_TOTALS: HashMap<StackKey, StackAllocated> = HashMap::with_max_entries(32_768, 0);

/// Allocation stacks by the 32-bit hash of their frames (see `stack.rs`).
#[map]
pub static STACKS: HashMap<u32, StackFrames> = HashMap::with_max_entries(16_384, 0);

/// The unwinder's view of each traced process: its executable mappings,
/// sorted (written by userspace when it looks at the process's maps).
/// Allocated on demand: ~8 KiB per process.
#[map]
pub static UNWIND_PROCS: HashMap<u32, ProcUnwind> =
    HashMap::with_max_entries(MAX_TARGETS, BPF_F_NO_PREALLOC);

/// Unwind table pages: each file's page index, in a range of its own
/// (`UnwindMapping::pages`): the rows of `UNWIND_ROWS` that cover a page
/// of its virtual addresses. An array, so a frame finds its page by index
/// (~2 ns, inlined by the verifier) rather than by a hash lookup (~50 ns).
/// Sized by userspace (1 entry with `--unwind fp`), which writes it through
/// a memory mapping.
#[map]
pub static UNWIND_PAGES: Array<UnwindPage> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Generations of `UNWIND_PROCS`: [0] is bumped by userspace after it
/// changes a process's mappings, [1] by the exec tracepoint after it
/// deletes a process's. A stack walk keeps the mappings it found in its
/// per-CPU slot for later walks only while the sum is unchanged.
#[map]
pub static UNWIND_EPOCH: Array<u64> = Array::with_max_entries(2, 0);

/// The current generation of `UNWIND_PROCS` (two inlined array reads).
#[inline(always)]
pub fn unwind_epoch() -> u64 {
    let user = UNWIND_EPOCH.get(0).copied().unwrap_or(0);
    let kernel = UNWIND_EPOCH.get(1).copied().unwrap_or(0);
    user.wrapping_add(kernel)
}

/// Marks every mapping kept by a walk stale (after the kernel deleted a
/// process's mappings).
#[inline(always)]
pub fn bump_unwind_epoch() {
    if let Some(slot) = UNWIND_EPOCH.get_ptr_mut(1) {
        atomic_add(slot, 1);
    }
}

/// Every loaded file's unwind rows, each file's sorted by address in a
/// range of its own. Sized by userspace (1 entry with `--unwind fp`), which
/// writes it through a memory mapping.
#[map]
pub static UNWIND_ROWS: Array<UnwindRow> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Per-CPU room for the stack being walked (too big for the BPF stack).
#[map]
pub static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// Loss and diagnostic counters, indexed by [`Stat`].
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// mmap/munmap/mremap arguments between syscall enter and exit, by thread.
#[map]
pub static SYSCALL_ARGS: LruHashMap<u64, SyscallArgs> = LruHashMap::with_max_entries(4096, 0);

/// Mapping events for userspace (see `tracer_common::MmapEvent`, ~1 KiB each).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Bumps a loss/diagnostic counter. Per-CPU slot, no atomics needed: ~10 ns.
#[inline(always)]
pub fn count(stat: Stat) {
    if let Some(slot) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: the slot belongs to this CPU and the program runs with
        // migration disabled.
        unsafe { *slot += 1 };
    }
}

/// Whether the current process is a target of the tracepoints. One hash
/// lookup (~50 ns), paid by every mmap/munmap/mremap on the node; with
/// `--all`, two loads.
#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    if setting(&TRACE_ALL) != 0 {
        return !is_self(tgid);
    }
    TARGETS.get_ptr(tgid).is_some()
}

#[inline(always)]
fn atomic_add(field: *mut u64, value: u64) {
    // SAFETY: `field` points into a map value that lives as long as the map.
    // A BPF atomic add (lock xadd, ~20 ns) keeps concurrent CPUs consistent;
    // core's AtomicU64::fetch_add is not available on the BPF target.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(field, value) };
}

/// Takes the live record of `addr` out of the live table, if there is one
/// (see `live.rs`).
#[inline(always)]
pub fn take_live(tgid: u32, addr: u64) -> Option<LiveAlloc> {
    live::take(tgid, addr)
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
pub fn record_alloc(tgid: u32, addr: u64, size: u64, stack_id: u32, now: u64) {
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
        // free was missed. The old block, out of the table, counts freed.
        Put::Present => count(Stat::AddressReused),
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
pub fn restore_live(tgid: u32, addr: u64, record: &LiveAlloc) {
    // Recorded again meanwhile (a stale record: the address was freed and
    // handed out again since): the newer record stands. Full: the block
    // counts freed (it is out of the table) rather than leave a phantom.
    if let Put::Full = live::put(tgid, addr, record, false) {
        count(Stat::LiveMapFull);
    }
}

const BPF_NOEXIST: u64 = 1;

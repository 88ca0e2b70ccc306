//! Loading the embedded eBPF object and attaching its programs: the
//! tracepoints once (the OOM killer's in every mode, the fork one while
//! forks are followed; how this kernel reports exits is read from tracefs),
//! and the allocator uprobes per (process, allocator file) — or per
//! allocator file for every process with `--all`. The probes of processes
//! gone are detached on a helper thread; dropping [`Probes`] detaches
//! everything.
//!
//! Allocator functions are probed one of two ways ([`ProbePath`]): where
//! the kernel has uprobe session programs (6.13+), the allocation
//! functions by one session program (`alloc_session`, loaded by `multi`),
//! whose entry run can skip the return of an unsampled call, and the free
//! functions by `free_enter` as a uprobe_multi program, in two links per
//! (process, file); elsewhere with aya, an entry uprobe and a uretprobe per
//! allocation function and an entry uprobe per free function.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    num::NonZeroU32,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use aya::{
    maps::{Array, HashMap as BpfHashMap, PerCpuArray, PerCpuValues},
    programs::{
        trace_point::TracePointLinkId,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
        TracePoint, UProbe,
    },
    Ebpf, EbpfLoader,
};
use tracer_common::{
    config, live_spill_words, return_cookie, AllocFn, OomFields, COOKIE_FREE_OUTER,
    COOKIE_FREE_SECOND, COOKIE_MAY_SKIP, COOKIE_POOL_SHIFT, COOKIE_SKIP_OWN_TEXT, COOKIE_STEPPED,
    EXP_DRAWS, OOM_FIELD_ABSENT,
};

use crate::{
    bpf::multi::{Kind, MultiProgram},
    discover::select::AllocatorFile,
    discover::select::FileId,
    discover::{
        allocator::{Hook, ProbePoint, Skip, When},
        pymalloc, target,
    },
};

/// How allocation functions are probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbePath {
    /// A uprobe session program for the allocation functions and a
    /// uprobe_multi one for the free functions (two links per process and
    /// file): an unsampled glibc malloc or calloc skips its return.
    Session,
    /// An entry uprobe and a uretprobe per function; why not sessions.
    Classic(String),
}

impl ProbePath {
    /// `session` or `classic`.
    pub fn name(&self) -> &'static str {
        match self {
            ProbePath::Session => "session",
            ProbePath::Classic(_) => "classic",
        }
    }

    /// One line for `--verbose` and the report.
    pub fn describe(&self) -> String {
        match self {
            ProbePath::Session => "uprobe session programs (an unsampled call skips its \
                                   return probe)"
                .to_string(),
            ProbePath::Classic(why) => format!("uprobes and uretprobes ({why})"),
        }
    }
}

/// An attachment of allocator probes.
enum Attached {
    /// An aya uprobe of the named program.
    Uprobe(&'static str, UProbeLinkId),
    /// A uprobe_multi link (closed to detach).
    Multi(OwnedFd),
}

/// An attachment taken out of the program (a `UProbeLink`, a link's
/// `OwnedFd`), to be dropped — detached — on the helper thread.
type Detach = Box<dyn Send>;

/// The programs of the session path.
struct Multi {
    /// `alloc_session` as a uprobe session program.
    alloc: MultiProgram,
    /// `free_enter` as a uprobe_multi program.
    free: MultiProgram,
}

/// Set to `classic` to probe with uprobes and uretprobes even where the
/// kernel has uprobe session programs (tests of the fallback; comparisons).
pub const PROBES_ENV: &str = "MEMTRACE_PROBES";

/// Object built by tracer/build.rs from tracer-ebpf.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

/// Tracepoints of allocation tracing: (category, name, program).
const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("syscalls", "sys_enter_mmap", "sys_enter_mmap"),
    ("syscalls", "sys_exit_mmap", "sys_exit_mmap"),
    ("syscalls", "sys_enter_munmap", "sys_enter_munmap"),
    ("syscalls", "sys_exit_munmap", "sys_exit_munmap"),
    ("syscalls", "sys_enter_mremap", "sys_enter_mremap"),
    ("syscalls", "sys_exit_mremap", "sys_exit_mremap"),
    EXEC_TRACEPOINT,
    ("sched", "sched_process_exit", "sched_process_exit"),
];
const EXEC_TRACEPOINT: (&str, &str, &str) = ("sched", "sched_process_exec", "sched_process_exec");
/// Attached while forks are followed (`-- CMD`, `--follow-forks`).
const FORK_TRACEPOINT: (&str, &str, &str) = ("task", "task_newtask", "task_newtask");
/// Attached while targets are held (see [`Settings::hold_targets`]): the
/// returns of the calls that make processes, where a held child stops.
const FORK_RETURN_TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("syscalls", "sys_exit_clone", "fork_return"),
    ("syscalls", "sys_exit_clone3", "fork_return"),
    ("syscalls", "sys_exit_fork", "fork_return"),
    ("syscalls", "sys_exit_vfork", "fork_return"),
];
/// Attached in every mode.
const OOM_TRACEPOINT: (&str, &str, &str) = ("oom", "mark_victim", "oom_mark_victim");

/// The loaded programs and maps.
pub struct Probes {
    pub bpf: Ebpf,
    /// The tracepoints' links, by program.
    tracepoints: Vec<(&'static str, TracePointLinkId)>,
    /// (process or every process, file) pairs already hooked.
    attached: HashSet<(Option<u32>, FileId)>,
    /// Links of probes attached for one process, dropped when it exits.
    links: HashMap<u32, Vec<Attached>>,
    /// Multi links attached for every process (closed on drop).
    global_links: Vec<OwnedFd>,
    /// The programs of the session path, when on it.
    multi: Option<Multi>,
    /// How allocation functions are probed.
    pub path: ProbePath,
    /// Allocator probes and session links attached now (each takes the
    /// kernel ~80 ms to detach, one after the other).
    pub probe_count: usize,
    /// Exit events are sent when a process's last thread exits, and its
    /// pid is forgotten then (the kernel's record says `group_dead`); else
    /// they are its main thread's.
    pub exits_are_final: bool,
    /// The kernel's OOM records carry the victim's memory (`anon_rss`…).
    oom_victim_memory: bool,
    /// Feeds the thread that detaches the probes of processes gone.
    detacher: Option<std::sync::mpsc::Sender<Vec<Detach>>>,
    /// Targets may be held (see [`Settings::hold_targets`]).
    pub holds: bool,
    /// The kernel knows where a thread's fs base is (see `bpf::python`).
    pub fs_base_known: bool,
    /// The pool size of an interpreter with pymalloc inlined that was
    /// hooked (its pools are the unit, see `pymalloc::inlined_pools`).
    pub pymalloc_pools: Option<u64>,
    /// The functions hooked whose probe the kernel single-steps (`malloc
    /// in /path`).
    pub single_stepped: BTreeSet<String>,
    /// Processes armed to stop at their end (see [`Probes::hold_exit`]).
    exit_armed: HashSet<u32>,
    /// Processes with an allocator library of its own hooked: the first
    /// such library (whose unsampled calls may skip their returns), and
    /// whether the kernel holds its text (see
    /// [`Probes::hold_allocator_text`]).
    own_text: HashMap<u32, (FileId, bool)>,
}

impl Drop for Probes {
    /// However the run ends, nothing is held once memtrace is gone: what
    /// has not stopped yet will not.
    fn drop(&mut self) {
        if self.holds {
            let _ = self.stop_holding();
            self.release_all_held();
        }
        self.release_exit_holds();
    }
}

/// How the programs are loaded: map sizes chosen on the command line and
/// the global settings of the eBPF side.
pub struct Settings {
    pub max_live: u32,
    pub max_stacks: u32,
    /// Every process is traced (`--all`).
    pub trace_all: bool,
    /// Every exec on the node is reported (processes are watched).
    pub watch_exec: bool,
    /// Only the OOM tracepoint is attached (`--oom-only`).
    pub oom_only: bool,
    /// `--sample-bytes` (None: every allocation is traced).
    pub sample_bytes: Option<u64>,
    /// Stacks are walked with unwind tables (`--unwind dwarf|auto`).
    pub unwind_tables: bool,
    /// The command to stop at its execs (`-- CMD` with unwind tables).
    pub stop_at_exec: Option<u32>,
    /// The processes targets fork become targets (`-- CMD`,
    /// `--follow-forks`).
    pub follow_forks: bool,
    /// Targets are held while their probes go in: a child a target forks
    /// stops at its first return to user space, and a target at each exec,
    /// until userspace continues it (forks followed, on given targets).
    pub hold_targets: bool,
    /// The allocator programs return at once (the bench's floor).
    pub empty_programs: bool,
    /// Every stack's first kernel id is the same (tests).
    pub stack_ids_collide: bool,
}

impl Probes {
    pub fn load(settings: &Settings) -> Result<Probes> {
        let me = std::process::id();
        let flag = |b: bool| b as u32;
        let trace_all = flag(settings.trace_all);
        let watch_exec = flag(settings.watch_exec);
        let sample_bytes = settings.sample_bytes.unwrap_or(0);
        let unwind_tables = flag(settings.unwind_tables);
        // Without tables, their maps stay at one entry.
        let (rows, pages) = match settings.unwind_tables {
            true => (crate::bpf::unwind::MAX_ROWS, crate::bpf::unwind::MAX_PAGES),
            false => (1, 1),
        };
        let group_dead = exit_group_dead_offset();
        let oom = oom_fields();
        let fs_base = crate::bpf::python::task_fs_base_offset();
        let live_buckets = tracer_common::live_buckets(settings.max_live);
        let mut bpf = EbpfLoader::new()
            // INFLIGHT is a task storage map, which aya creates but has no
            // userspace type for (only the programs use it).
            .allow_unsupported_maps()
            .override_global(config::SELF_TGID, &me, true)
            .override_global(config::TRACE_ALL, &trace_all, true)
            .override_global(config::WATCH_EXEC, &watch_exec, true)
            .override_global(config::SAMPLE_BYTES, &sample_bytes, true)
            .override_global(config::UNWIND_TABLES, &unwind_tables, true)
            .override_global(
                config::STOP_AT_EXEC,
                &settings.stop_at_exec.unwrap_or(0),
                true,
            )
            .map_max_entries("UNWIND_ROWS", rows)
            .map_max_entries("UNWIND_PAGES", pages)
            .override_global(config::EXIT_GROUP_DEAD, &group_dead, true)
            .override_global(config::OOM_FIELDS, &oom, true)
            .override_global(config::LIVE_BUCKETS, &live_buckets, true)
            .override_global(config::TASK_FSBASE, &fs_base, true)
            .override_global(config::EMPTY_PROGRAMS, &flag(settings.empty_programs), true)
            .override_global(
                config::STACK_IDS_COLLIDE,
                &flag(settings.stack_ids_collide),
                true,
            )
            .map_max_entries("LIVE", live_buckets)
            .map_max_entries("LIVE_SPILL", live_spill_words(live_buckets))
            .map_max_entries("STACKS", settings.max_stacks)
            // Stacks of every target share the stack map but have totals
            // per process; leave room for a few processes per stack.
            .map_max_entries("STACK_TOTALS", settings.max_stacks.saturating_mul(2))
            .load(EBPF_OBJECT)
            .context("loading the eBPF programs into the kernel")?;
        // --oom-only watches exec too: it keeps every process's cgroup, since
        // a victim's own is gone by the time userspace can read it.
        let tracepoints = match settings.oom_only {
            true => &[EXEC_TRACEPOINT][..],
            false => TRACEPOINTS,
        };
        let fork = settings.follow_forks.then_some(&FORK_TRACEPOINT);
        let fork_returns = match settings.hold_targets {
            true => FORK_RETURN_TRACEPOINTS,
            false => &[],
        };
        let mut tp_links = Vec::new();
        for &(category, name, program) in tracepoints
            .iter()
            .chain(fork)
            .chain(fork_returns)
            .chain([&OOM_TRACEPOINT])
        {
            let tp: &mut TracePoint = bpf
                .program_mut(program)
                .with_context(|| format!("program {program} missing from the eBPF object"))?
                .try_into()?;
            // (One program may serve several tracepoints: loaded once.)
            if tp.fd().is_err() {
                tp.load()
                    .with_context(|| format!("loading eBPF program {program} (verifier)"))?;
            }
            let link = tp
                .attach(category, name)
                .with_context(|| format!("attaching tracepoint {category}/{name}"))?;
            tp_links.push((program, link));
        }
        if let Some(mean) = settings.sample_bytes {
            fill_sampler(&mut bpf, mean)?;
        }
        let mut multi = None;
        let mut path = ProbePath::Classic("not tracing allocations".to_string());
        if !settings.oom_only {
            let entry_stop = settings.unwind_tables.then_some("entry_stop");
            for name in ["free_enter", "failed_call", "exit_stop"]
                .into_iter()
                .chain(entry_stop)
            {
                uprobe(&mut bpf, name)?
                    .load()
                    .with_context(|| format!("loading eBPF program {name} (verifier)"))?;
            }
            match load_session(&mut bpf) {
                Ok(programs) => {
                    multi = Some(programs);
                    path = ProbePath::Session;
                }
                Err(why) => {
                    path = ProbePath::Classic(format!("{why:#}"));
                    for name in ["alloc_enter", "alloc_return"] {
                        uprobe(&mut bpf, name)?
                            .load()
                            .with_context(|| format!("loading eBPF program {name} (verifier)"))?;
                    }
                }
            }
        }
        Ok(Probes {
            bpf,
            tracepoints: tp_links,
            attached: HashSet::new(),
            links: HashMap::new(),
            global_links: Vec::new(),
            multi,
            path,
            probe_count: 0,
            exits_are_final: group_dead != 0,
            oom_victim_memory: oom.anon_rss != OOM_FIELD_ABSENT,
            detacher: None,
            holds: settings.hold_targets,
            fs_base_known: fs_base != 0,
            pymalloc_pools: None,
            single_stepped: BTreeSet::new(),
            exit_armed: HashSet::new(),
            own_text: HashMap::new(),
        })
    }

    /// The kernel's table of allocator libraries' text, by process.
    fn allocator_text_map(&mut self) -> Option<BpfHashMap<&mut aya::maps::MapData, u32, [u64; 2]>> {
        BpfHashMap::try_from(self.bpf.map_mut("ALLOC_TEXT")?).ok()
    }

    /// Tells the kernel where the text of the allocator library of its own
    /// (jemalloc, tcmalloc, mimalloc) hooked in process `pid` lies there
    /// (`ALLOC_TEXT`), unless it holds it already: mmaps made from there
    /// are the allocator's, so its unsampled calls may skip their returns
    /// (`COOKIE_SKIP_OWN_TEXT`; until then they do not). Called when the
    /// library is hooked, and again whenever the process's mappings are
    /// read (a command's libraries are hooked before its loader maps them;
    /// an exec makes the kernel forget). Nothing when the library is not
    /// mapped executable yet, or the kernel's table is full.
    pub fn hold_allocator_text(&mut self, pid: u32) {
        if !matches!(self.own_text.get(&pid), Some((_, false))) {
            return;
        }
        if let Ok(maps) = target::read_maps(pid) {
            self.hold_allocator_text_in(pid, &maps);
        }
    }

    /// [`Probes::hold_allocator_text`] with `pid`'s mappings just read.
    pub fn hold_allocator_text_in(&mut self, pid: u32, maps: &[target::Mapping]) {
        let Some(&(id, false)) = self.own_text.get(&pid) else {
            return;
        };
        // /proc/PID/maps shows the device as major:minor in hex.
        let dev = format!("{:02x}:{:02x}", libc::major(id.0), libc::minor(id.0));
        let text = maps
            .iter()
            .filter(|m| m.executable && m.inode == id.1 && m.dev == dev);
        let (Some(start), Some(end)) = (
            text.clone().map(|m| m.start).min(),
            text.map(|m| m.end).max(),
        ) else {
            return;
        };
        let Some(mut table) = self.allocator_text_map() else {
            return;
        };
        if table.insert(pid, [start, end], 0).is_ok() {
            self.own_text.insert(pid, (id, true));
        }
    }

    /// `pid` exec'd: the kernel forgot its allocator library's text (the
    /// library, if the new image maps it, lies elsewhere).
    pub fn allocator_text_forgotten(&mut self, pid: u32) {
        if let Some((_, held)) = self.own_text.get_mut(&pid) {
            *held = false;
        }
    }

    /// An attachment taken out of its program, to be dropped (detached).
    fn take_out(&mut self, attached: Attached) -> Option<Detach> {
        match attached {
            Attached::Uprobe(program, id) => {
                let link = uprobe(&mut self.bpf, program).ok()?.take_link(id).ok()?;
                Some(Box::new(link))
            }
            Attached::Multi(fd) => Some(Box::new(fd)),
        }
    }

    /// Detaches every tracepoint and probe at the end of a run, all at
    /// once. Each tracepoint's detach waits for the kernel's grace periods
    /// (60-170 ms here); one after the other, at memtrace's exit, they kept
    /// it a second past its report. Waits from several threads share them.
    pub fn detach_all(&mut self) {
        let mut owned: Vec<Detach> = Vec::new();
        for (program, id) in std::mem::take(&mut self.tracepoints) {
            let tp: Option<&mut TracePoint> = self
                .bpf
                .program_mut(program)
                .and_then(|p| p.try_into().ok());
            if let Some(link) = tp.and_then(|tp| tp.take_link(id).ok()) {
                owned.push(Box::new(link));
            }
        }
        for (_, links) in std::mem::take(&mut self.links) {
            owned.extend(links.into_iter().filter_map(|a| self.take_out(a)));
        }
        owned.extend(
            std::mem::take(&mut self.global_links)
                .into_iter()
                .map(|fd| Box::new(fd) as Detach),
        );
        self.attached.clear();
        self.probe_count = 0;
        // At most 64 threads, each dropping its share.
        let threads = owned.len().clamp(1, 64);
        let mut shares: Vec<Vec<Detach>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, d) in owned.into_iter().enumerate() {
            shares[i % threads].push(d);
        }
        std::thread::scope(|s| {
            for share in shares {
                s.spawn(move || drop(share));
            }
        });
    }

    /// Stops tracing `pid` (it exited): its tracepoint registration goes,
    /// and its probes are detached on the helper thread (each uprobe detach
    /// waits for the kernel, ~80 ms here; the run loop must not). One thread
    /// for all: a run that sees thousands of processes exit (forks followed,
    /// a busy node) queues their probes rather than starting a thread each.
    pub fn forget_target(&mut self, pid: u32) {
        let owned = self.unhook(pid);
        if owned.is_empty() {
            return;
        }
        let detacher = self.detacher.get_or_insert_with(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Vec<Detach>>();
            std::thread::spawn(move || rx.into_iter().for_each(drop));
            tx
        });
        // (Should the thread be gone, the links come back and drop here.)
        let _ = detacher.send(owned);
    }

    /// [`Probes::forget_target`], its probes detached before it returns.
    pub fn forget_target_now(&mut self, pid: u32) {
        drop(self.unhook(pid));
    }

    /// Takes `pid` out of the kernel's tables and out of the links: the
    /// links to detach.
    fn unhook(&mut self, pid: u32) -> Vec<Detach> {
        if let Ok(mut targets) =
            BpfHashMap::<_, u32, u8>::try_from(self.bpf.map_mut("TARGETS").expect("TARGETS map"))
        {
            let _ = targets.remove(&pid);
        }
        if self.exit_armed.remove(&pid) {
            if let Some(mut hold) = self
                .bpf
                .map_mut("EXIT_HOLD")
                .and_then(|m| BpfHashMap::<_, u32, u8>::try_from(m).ok())
            {
                let _ = hold.remove(&pid);
            }
        }
        if self.own_text.remove(&pid).is_some_and(|(_, held)| held) {
            if let Some(mut text) = self.allocator_text_map() {
                let _ = text.remove(&pid);
            }
        }
        self.attached.retain(|(p, _)| *p != Some(pid));
        let Some(links) = self.links.remove(&pid) else {
            return Vec::new();
        };
        self.probe_count -= links.len();
        links.into_iter().filter_map(|a| self.take_out(a)).collect()
    }

    /// Releases `pid`, a child held by the kernel at its first return to
    /// user space (a fork event that said `held`), now that its probes are
    /// in. True when it had stopped already and must be continued; false
    /// when it had not got there yet and now will not stop.
    pub fn release_held(&mut self, pid: u32) -> Result<bool> {
        let mut held: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(self.bpf.map_mut("HELD").context("HELD map missing")?)?;
        match held.remove(&pid) {
            Ok(()) => Ok(false),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(true)
            }
            Err(e) => Err(e).context("releasing a held child"),
        }
    }

    /// Starts holding targets while their probes go in (see
    /// [`Settings::hold_targets`]); a no-op unless that was set at load.
    pub fn start_holding(&mut self) -> Result<()> {
        self.set_holding(true)
    }

    /// Stops holding: nothing stops from here on. What was held before is
    /// released by the events still to be read; a child whose event is
    /// lost is released here (it will not stop).
    pub fn stop_holding(&mut self) -> Result<()> {
        self.set_holding(false)
    }

    fn set_holding(&mut self, on: bool) -> Result<()> {
        if on && !self.holds {
            return Ok(());
        }
        let mut holding: Array<_, u32> =
            Array::try_from(self.bpf.map_mut("HOLDING").context("HOLDING map missing")?)?;
        holding.set(0, on as u32, 0)?;
        Ok(())
    }

    /// Releases every child still held that has not stopped yet (they will
    /// not); for the end of a run, after [`Probes::stop_holding`] and a
    /// last read of the events.
    pub fn release_all_held(&mut self) {
        let Ok(mut held) = self
            .bpf
            .map_mut("HELD")
            .context("HELD map missing")
            .and_then(|m| Ok(BpfHashMap::<_, u32, u8>::try_from(m)?))
        else {
            return;
        };
        let pids: Vec<u32> = held.keys().filter_map(|k| k.ok()).collect();
        for pid in pids {
            let _ = held.remove(&pid);
        }
    }

    /// Stops `pid` at the entry point of `program` (at file offset
    /// `offset`) when it gets there (see the eBPF `entry_stop`). The
    /// returned link is for [`Probes::detach_entry_stop`].
    pub fn stop_at_entry(&mut self, pid: u32, program: &Path, offset: u64) -> Result<UProbeLinkId> {
        let mut reached: Array<_, u32> = Array::try_from(
            self.bpf
                .map_mut("ENTRY_REACHED")
                .context("ENTRY_REACHED missing")?,
        )?;
        reached.set(0, 0, 0)?;
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).context("pid 0")?);
        uprobe(&mut self.bpf, "entry_stop")?
            .attach(UProbeAttachLocation::AbsoluteOffset(offset), program, scope)
            .with_context(|| format!("attaching to the entry point of {}", program.display()))
    }

    /// Stops CPython process `pid` at its end, once, until userspace has
    /// taken in its last stacks and continues it (see the eBPF
    /// `exit_stop`): a uprobe at each of `points` (file, offset) for it
    /// alone, going with its other probes, and its `EXIT_HOLD` entry.
    pub fn hold_exit(&mut self, pid: u32, points: &[(PathBuf, u64)]) -> Result<()> {
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).context("pid 0")?);
        let mut links = Vec::new();
        for (file, offset) in points {
            let id = uprobe(&mut self.bpf, "exit_stop")?
                .attach(UProbeAttachLocation::AbsoluteOffset(*offset), file, scope)
                .with_context(|| {
                    format!("attaching to the end of pid {pid} in {}", file.display())
                })?;
            links.push(Attached::Uprobe("exit_stop", id));
        }
        self.probe_count += links.len();
        self.links.entry(pid).or_default().extend(links);
        let mut hold: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(self.bpf.map_mut("EXIT_HOLD").context("EXIT_HOLD missing")?)?;
        hold.insert(pid, 1, 0)
            .with_context(|| format!("arming pid {pid}'s stop at its end"))?;
        self.exit_armed.insert(pid);
        Ok(())
    }

    /// `pid` stopped at its end (its `exit_stop` event): no longer armed.
    pub fn exit_stopped(&mut self, pid: u32) {
        self.exit_armed.remove(&pid);
    }

    /// Disarms every process armed to stop at its end: one that took its
    /// entry meanwhile is stopped, or about to be, with its event unread,
    /// and is continued here. For the end of a run (and memtrace's own).
    pub fn release_exit_holds(&mut self) {
        let Some(mut hold) = self
            .bpf
            .map_mut("EXIT_HOLD")
            .and_then(|m| BpfHashMap::<_, u32, u8>::try_from(m).ok())
        else {
            return;
        };
        for pid in std::mem::take(&mut self.exit_armed) {
            if hold.remove(&pid).is_err() {
                // SAFETY: plain syscall; a stopped process's pid is still
                // its own. (SIGCONT also discards a stop still pending.)
                unsafe { libc::kill(pid as i32, libc::SIGCONT) };
            }
        }
    }

    /// The process `entry_stop` stopped last (0: none since
    /// [`Probes::stop_at_entry`]).
    pub fn entry_reached(&self) -> u32 {
        self.bpf
            .map("ENTRY_REACHED")
            .and_then(|m| Array::<_, u32>::try_from(m).ok())
            .and_then(|a| a.get(&0, 0).ok())
            .unwrap_or(0)
    }

    /// Detaches the entry stop: on another thread (detaching waits for the
    /// kernel, ~80 ms), or with `wait`, before returning.
    pub fn detach_entry_stop(&mut self, link: UProbeLinkId, wait: bool) {
        if let Ok(p) = uprobe(&mut self.bpf, "entry_stop") {
            if let Ok(link) = p.take_link(link) {
                if wait {
                    drop(link);
                } else {
                    std::thread::spawn(move || drop(link));
                }
            }
        }
    }

    /// Makes `pid`'s mapping syscalls count.
    pub fn add_target(&mut self, pid: u32) -> Result<()> {
        let mut targets: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(self.bpf.map_mut("TARGETS").context("TARGETS map missing")?)?;
        targets
            .insert(pid, 1, 0)
            .with_context(|| format!("registering pid {pid} as a target"))
    }

    /// Hooks the allocator in `file` for process `pid` only (other
    /// processes mapping the same file never trap), or with `None` for
    /// every process. Returns false if this pair was already hooked: files
    /// are told apart by identity (device, inode), checked before their
    /// path is touched (it may run through a process that is gone).
    pub fn attach_allocator(&mut self, pid: Option<u32>, file: &AllocatorFile) -> Result<bool> {
        let first = !self.attached.iter().any(|&(_, id)| id == file.id);
        let (file_id, own_text) = (file.id, file.points.iter().any(|p| p.skip == Skip::OwnText));
        if !self.attached.insert((pid, file.id)) {
            return Ok(false);
        }
        if let Some(pools) = file.points.iter().find(|p| p.pool_bits != 0) {
            let bytes = 1u64 << pools.pool_bits;
            self.pymalloc_pools = Some(bytes);
            if first {
                crate::note(&format!(
                    "{} has pymalloc inlined into its callers: Python objects under 512 B are \
                     counted by the {} KiB pool pymalloc takes for them, at the line that \
                     needed the pool",
                    file.path.display(),
                    bytes / 1024
                ));
            }
        }
        // CPython's frees: in pymalloc itself where the process runs the
        // default allocator (only known of a given process), else at the
        // public functions (see `pymalloc`).
        let default_pymalloc = pid.is_some_and(pymalloc::default_allocator);
        let points: Vec<&ProbePoint> = file
            .points
            .iter()
            .filter(|p| match p.when {
                When::Always => true,
                When::DefaultAllocator => default_pymalloc,
                When::ReplacedAllocator => !default_pymalloc,
            })
            .collect();
        // (memtrace's own calls, probed to time them, are no target's.)
        let own = pid == Some(std::process::id());
        for point in points.iter().filter(|p| p.stepped && !own) {
            self.single_stepped
                .insert(format!("{} in {}", point.symbol, file.name));
        }
        let file = file.path.as_path();
        let scope = match pid {
            Some(pid) => UProbeScope::OneProcess(NonZeroU32::new(pid).context("pid 0")?),
            None => UProbeScope::AllProcesses,
        };
        let whom = pid.map_or("every process".to_string(), |p| format!("pid {p}"));
        let what = |point: &ProbePoint| {
            format!(
                "attaching to {} in {} ({whom})",
                point.symbol,
                file.display()
            )
        };
        let mut links = Vec::new();
        // Order matters while the target runs: free first, so every block
        // recorded later has its free seen; then each allocation function's
        // return probe right before its entry probe, so every recorded entry
        // sees its return (an entry without one would make later calls at
        // that depth look nested). Functions go in `HOOKED` order, callees
        // first (realloc(NULL, n) calls malloc, reallocarray tail-calls
        // realloc): a nested call's probes are complete before its caller's
        // entry is. Pairs keep the window in which calls return without a
        // recorded entry to one attach per function (~80 ms of a busy
        // target's calls were lost per function when all returns went
        // first). On the session path, one link places all of a file's
        // free functions, a second all its allocation functions (a session
        // program's entry and return come and go together).
        // An allocator in a library of its own skips unsampled returns on
        // the session path, per process only (the kernel needs where its
        // text lies: held now if the library is mapped yet, else once it
        // is, see `hold_allocator_text`), and one such library per process.
        let text_skips = match pid {
            Some(pid) if self.multi.is_some() && own_text && !self.own_text.contains_key(&pid) => {
                self.own_text.insert(pid, (file_id, false));
                self.hold_allocator_text(pid);
                true
            }
            _ => false,
        };
        if let Some(multi) = &self.multi {
            // A process whose environment tunes glibc's malloc to map small
            // chunks keeps every return (per process only: with --all the
            // rule is glibc's default).
            let tuned = pid.is_some_and(crate::discover::allocator::malloc_maps_small);
            let (mut frees, mut allocs) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
            for &point in &points {
                let (list, cookie) = match point.hook {
                    // (Classic uprobes on both paths, below.)
                    Hook::FailurePath => continue,
                    Hook::Free | Hook::FreeSecond => (&mut frees, free_cookie(point)),
                    Hook::Alloc(_) => {
                        let skip = match point.skip {
                            Skip::Glibc if !tuned => COOKIE_MAY_SKIP,
                            Skip::OwnText if text_skips => COOKIE_SKIP_OWN_TEXT,
                            _ => 0,
                        };
                        (&mut allocs, alloc_cookie(point) | skip)
                    }
                };
                list.0.push(point.entry_offset);
                list.1.push(cookie);
            }
            for (program, (offsets, cookies)) in [(&multi.free, frees), (&multi.alloc, allocs)] {
                if offsets.is_empty() {
                    continue;
                }
                let link = program
                    .attach(file, &offsets, &cookies, pid)
                    .with_context(|| {
                        format!("attaching to the allocator in {} ({whom})", file.display())
                    })?;
                match pid {
                    Some(_) => links.push(Attached::Multi(link)),
                    None => {
                        self.global_links.push(link);
                        self.probe_count += 1;
                    }
                }
            }
        }
        for &point in points
            .iter()
            .filter(|p| matches!(p.hook, Hook::Free | Hook::FreeSecond) && self.multi.is_none())
        {
            let location = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(point.entry_offset),
                cookie: Some(free_cookie(point)),
            };
            let id = uprobe(&mut self.bpf, "free_enter")?
                .attach(location, file, scope)
                .with_context(|| what(point))?;
            links.push(Attached::Uprobe("free_enter", id));
        }
        // Failure paths run once per failed call: a classic uprobe, on
        // either path.
        for &point in points.iter().filter(|p| p.hook == Hook::FailurePath) {
            let location = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(point.entry_offset),
                cookie: None,
            };
            let id = uprobe(&mut self.bpf, "failed_call")?
                .attach(location, file, scope)
                .with_context(|| what(point))?;
            links.push(Attached::Uprobe("failed_call", id));
        }
        for &point in points.iter().filter(|_| self.multi.is_none()) {
            let Hook::Alloc(_) = point.hook else {
                continue;
            };
            let at = || UProbeAttachLocation::AbsoluteOffset(point.entry_offset);
            let ret = UProbeAttachPoint {
                location: at(),
                cookie: Some(return_cookie(pid.unwrap_or(0))),
            };
            let id = uprobe(&mut self.bpf, "alloc_return")?
                .attach(ret, file, scope)
                .with_context(|| what(point))?;
            links.push(Attached::Uprobe("alloc_return", id));
            let entry = UProbeAttachPoint {
                location: at(),
                cookie: Some(alloc_cookie(point)),
            };
            let id = uprobe(&mut self.bpf, "alloc_enter")?
                .attach(entry, file, scope)
                .with_context(|| what(point))?;
            links.push(Attached::Uprobe("alloc_enter", id));
        }
        self.probe_count += links.len();
        if let Some(pid) = pid {
            self.links.entry(pid).or_default().extend(links);
        }
        Ok(true)
    }
}

impl Probes {
    /// What memtrace found this kernel to have, by the names of
    /// docs/kernels.md's table (`--verbose`; the kernel matrix checks them
    /// against the table); None for sessions not tried ([`PROBES_ENV`]).
    pub fn kernel_features(&self) -> Vec<(&'static str, Option<bool>)> {
        let forced = std::env::var(PROBES_ENV).is_ok_and(|v| v == "classic");
        vec![
            (
                "uprobe_session",
                (!forced).then_some(self.path == ProbePath::Session),
            ),
            ("group_dead", Some(self.exits_are_final)),
            ("oom_victim_memory", Some(self.oom_victim_memory)),
            (
                "exact_rss_counters",
                Some(!crate::discover::target::status_counters_lag()),
            ),
        ]
    }
}

/// Run counts and times (ns) of the allocator programs, while BPF
/// statistics are enabled (see `overhead`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    /// Entry runs of allocation functions; on the session path, runs of
    /// the session program, entries and returns together.
    pub alloc: (u64, u64),
    /// Return runs (classic path only: the session's are in `alloc`).
    pub ret: (u64, u64),
    pub free: (u64, u64),
}

impl Probes {
    /// How often and how long the allocator programs ran.
    pub fn run_stats(&self) -> RunStats {
        if let Some(multi) = &self.multi {
            return RunStats {
                alloc: multi.alloc.run_stats(),
                ret: (0, 0),
                free: multi.free.run_stats(),
            };
        }
        let program = |name: &str| {
            self.bpf
                .program(name)
                .and_then(|p| <&UProbe>::try_from(p).ok())
                .and_then(|p| p.info().ok())
                .map(|i| (i.run_count(), i.run_time().as_nanos() as u64))
                .unwrap_or((0, 0))
        };
        RunStats {
            alloc: program("alloc_enter"),
            ret: program("alloc_return"),
            free: program("free_enter"),
        }
    }
}

/// Loads the programs of the session path where the kernel has uprobe
/// session programs; the error says why not.
fn load_session(bpf: &mut Ebpf) -> Result<Multi> {
    if std::env::var(PROBES_ENV).is_ok_and(|v| v == "classic") {
        anyhow::bail!("{PROBES_ENV}=classic");
    }
    // The object's BTF as aya loaded it, through a program aya loaded.
    let btf_id = uprobe(bpf, "free_enter")?
        .info()?
        .btf_id()
        .context("the eBPF object's BTF is not loaded")?;
    let alloc = MultiProgram::load(bpf, EBPF_OBJECT, "alloc_session", btf_id, Kind::Session)?;
    alloc.attaches()?;
    let free = MultiProgram::load(bpf, EBPF_OBJECT, "free_enter", btf_id, Kind::Entry)?;
    Ok(Multi { alloc, free })
}

/// Offset of `group_dead` in this kernel's `sched/sched_process_exit`
/// record (tracefs `format`), or 0 when it has none (older kernels) or
/// tracefs cannot be read: exits are then main threads' exits.
fn exit_group_dead_offset() -> u32 {
    tracepoint_format("sched/sched_process_exit")
        .and_then(|format| field_offset(&format, "group_dead"))
        .unwrap_or(0)
}

/// Where the `oom/mark_victim` record's fields are, from its format (6.8's
/// layout when the format cannot be read).
fn oom_fields() -> OomFields {
    match tracepoint_format("oom/mark_victim") {
        Some(format) => oom_fields_of(&format),
        None => OomFields::LATEST,
    }
}

/// [`oom_fields`] of a format text: each field's offset, or
/// [`OOM_FIELD_ABSENT`].
fn oom_fields_of(format: &str) -> OomFields {
    let at = |name| field_offset(format, name).unwrap_or(OOM_FIELD_ABSENT);
    OomFields {
        pid: at("pid"),
        comm: at("comm"),
        total_vm: at("total_vm"),
        anon_rss: at("anon_rss"),
        file_rss: at("file_rss"),
        shmem_rss: at("shmem_rss"),
        uid: at("uid"),
        pgtables: at("pgtables"),
        oom_score_adj: at("oom_score_adj"),
    }
}

/// The `format` file of tracepoint `event` ("category/name").
fn tracepoint_format(event: &str) -> Option<String> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|root| std::fs::read_to_string(format!("{root}/events/{event}/format")).ok())
}

/// The offset of field `name` in a tracepoint `format` text.
fn field_offset(format: &str, name: &str) -> Option<u32> {
    let line = format.lines().find(|l| l.contains(&format!(" {name};")))?;
    let offset = line.split("offset:").nth(1)?.split(';').next()?;
    offset.trim().parse().ok()
}

/// The sampler's exponential draws of mean `mean` bytes, one at each of
/// [`EXP_DRAWS`] evenly spaced quantiles (so their mean is `mean` to within
/// the truncated tail, -0.1 %), and every CPU's first countdown.
fn fill_sampler(bpf: &mut Ebpf, mean: u64) -> Result<()> {
    let draw = |q: f64| ((-(1.0 - q).ln()) * mean as f64).round().max(1.0) as u64;
    let mut draws: Array<_, u64> =
        Array::try_from(bpf.map_mut("DRAWS").context("DRAWS map missing")?)?;
    for i in 0..EXP_DRAWS {
        draws.set(i, draw((f64::from(i) + 0.5) / f64::from(EXP_DRAWS)), 0)?;
    }
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let first: Vec<u64> = (0..cpus)
        .map(|c| draw((c as f64 + 0.5) / cpus as f64))
        .collect();
    let mut countdown: PerCpuArray<_, u64> =
        PerCpuArray::try_from(bpf.map_mut("COUNTDOWN").context("COUNTDOWN map missing")?)?;
    countdown.set(0, PerCpuValues::try_from(first)?, 0)?;
    Ok(())
}

fn uprobe<'a>(bpf: &'a mut Ebpf, name: &str) -> Result<&'a mut UProbe> {
    Ok(bpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing from the eBPF object"))?
        .try_into()?)
}

/// The attach cookie of an allocation function: which one it is, and for
/// pymalloc's new-pool function the pool size (see
/// `tracer_common::AllocFn::NewPool`).
fn alloc_cookie(point: &ProbePoint) -> u64 {
    let func = match point.hook {
        Hook::Alloc(AllocFn::NewPool) => {
            AllocFn::NewPool as u64 | u64::from(point.pool_bits) << COOKIE_POOL_SHIFT
        }
        Hook::Alloc(func) => func as u64,
        Hook::Free | Hook::FreeSecond | Hook::FailurePath => 0,
    };
    func | point.argument_bits | stepped(point)
}

/// [`COOKIE_STEPPED`] on a probe the kernel single-steps.
fn stepped(point: &ProbePoint) -> u64 {
    match point.stepped {
        true => COOKIE_STEPPED,
        false => 0,
    }
}

/// The attach cookie of a free function: C++'s `operator delete` frees
/// through `free` (libstdc++'s does), and so do CPython's frees for blocks
/// pymalloc did not serve; the inner call of the same block is then known
/// as nested (see `tracer_common::COOKIE_FREE_OUTER`).
fn free_cookie(point: &ProbePoint) -> u64 {
    let outer = match crate::discover::allocator::is_outer_free(&point.symbol) {
        true => COOKIE_FREE_OUTER,
        false => 0,
    };
    let which = match point.hook {
        Hook::FreeSecond => COOKIE_FREE_SECOND,
        _ => 0,
    };
    outer | which | point.argument_bits | stepped(point)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_group_dead_in_the_exit_format() {
        let format = "name: sched_process_exit\nformat:\n\
            \tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\
            \tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n";
        assert_eq!(field_offset(format, "group_dead"), Some(32));
        assert_eq!(
            field_offset("\tfield:pid_t pid;\toffset:24;\n", "group_dead"),
            None
        );
    }

    /// This kernel's mark_victim record is the layout the programs default
    /// to (6.18's, and Debian's 6.1.0-57's); earlier 6.1 builds had only
    /// the pid (the rest then reads as zero).
    #[test]
    fn finds_the_oom_victims_fields_in_its_format() {
        let here = tracepoint_format("oom/mark_victim").expect("tracefs is mounted");
        assert_eq!(oom_fields_of(&here), OomFields::LATEST);
        let v6_1 = "name: mark_victim\nID: 448\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
            \tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n";
        let old = oom_fields_of(v6_1);
        assert_eq!(
            (old.pid, old.comm, old.anon_rss),
            (8, OOM_FIELD_ABSENT, OOM_FIELD_ABSENT)
        );
        assert_eq!(old.oom_score_adj, OOM_FIELD_ABSENT);
    }
}

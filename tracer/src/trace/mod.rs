//! A tracing session: attaches to the targets (given ones and the
//! processes they fork when forks are followed, or on a watched node every
//! matching process as it appears), then every interval drains the
//! kernel's totals into the aggregator, applies mapping and process events
//! as they arrive (fork, exec, exit, OOM kills), keeps the targets'
//! mappings for symbolization, and ends — on Ctrl-C, SIGTERM, --duration,
//! the exit of every target or the OOM kill of a --pid target — with the
//! final report.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};
use tracer_common::{EventKind, MmapEvent, ProcessEvent, StackKey, STAT_COUNT};

use memtrace_report::{
    render::{
        live::Live,
        text::{oom_line, oom_log_line},
    },
    MemorySample, OomKill, ProbesReport, Report, TargetReport, Unwind,
};

use crate::{
    accounting::{
        regions::MappingTracker,
        report::{self, ReportContext},
        series::{self, Aggregator, StackIdentity, StackKind},
        verdict,
    },
    bpf::{
        drain::{self, Event, StackCache},
        overhead,
        probes::{ProbePath, Probes, Settings},
        unwind::{self, Unwinder},
    },
    config::{self, Mode, Selection},
    discover::{
        allocator,
        cgroup::{self, Container},
        launch::{self, HeldChild},
        select::{self, AllocatorFiles},
        target::{self, TargetInfo},
    },
    output,
    symbolize::Symbolizer,
};

pub mod oom;

/// Points kept per stack series (~4 KiB); longer runs are decimated.
const MAX_SAMPLES: usize = 120;
/// How often target liveness is checked (a read of /proc/PID/stat).
const HOUSEKEEPING: Duration = Duration::from_millis(200);
/// Mappings are re-read every this many housekeeping ticks (1 s), and at
/// every tick during the first second, while a started command loads its
/// libraries. Symbolization misses refresh on demand too.
const MAPS_EVERY: u64 = 5;
/// On a watched node, a process that exec'd is looked at again every
/// housekeeping tick for this long (its loader maps its libraries after the
/// exec; a new allocator file gets hooked then).
const AFTER_EXEC: Duration = Duration::from_secs(2);
/// On a watched node, every process is looked at again this often
/// (housekeeping ticks: 10 s): libraries loaded later, processes forked
/// without exec.
const RESCAN_EVERY: u64 = 50;
/// How long a started command may take to reach its entry point (exec and
/// its dynamic loader) before it runs on without waiting for its unwind
/// tables.
const ENTRY_WAIT: Duration = Duration::from_secs(5);

struct Target {
    info: TargetInfo,
    allocators: Vec<String>,
    exited: bool,
    /// Resident memory at every sample while it lives (bounded like the
    /// stack series).
    memory: VecDeque<MemorySample>,
    cgroup: Option<String>,
    container: Option<Container>,
}

impl Target {
    /// A target, placed by reading its cgroup.
    fn new(info: TargetInfo, allocators: Vec<String>) -> Target {
        let cgroup = cgroup::read(info.pid);
        let container = cgroup.as_deref().and_then(cgroup::container_of);
        Target::placed(info, allocators, cgroup, container)
    }

    fn placed(
        info: TargetInfo,
        allocators: Vec<String>,
        cgroup: Option<String>,
        container: Option<Container>,
    ) -> Target {
        Target {
            info,
            allocators,
            exited: false,
            memory: VecDeque::new(),
            cgroup,
            container,
        }
    }
}

/// A watched node (`--all`, `--comm`, `--cgroup`, `--container`).
struct Watcher {
    selection: Selection,
    /// Processes that exec'd lately, looked at again every tick.
    recent: HashMap<u32, Instant>,
    /// Processes looked at that do not match (until they exec, or the next
    /// full scan).
    ignored: HashSet<u32>,
}

/// Everything a running session owns.
struct Session {
    mode: Mode,
    probes: Probes,
    targets: BTreeMap<u32, Target>,
    watcher: Option<Watcher>,
    /// The allocator files seen, by inode (and the discovery overrides).
    files: AllocatorFiles,
    verbose: bool,
    /// Processes that exited on a watched node: their state goes at the
    /// next sample.
    gone: HashSet<u32>,
    oom_kills: VecDeque<OomKill>,
    /// With --all: what tracing costs the node.
    meter: Option<overhead::Meter>,
    /// --oom-only: every process's cgroup (refreshed at exec and every
    /// rescan), for victims that are gone before they can be looked at.
    cgroups: HashMap<u32, Option<String>>,
    /// Watched processes whose state was dropped after they exited.
    processes_dropped: u64,
    child: Option<HeldChild>,
    stacks: StackCache,
    agg: Aggregator,
    mappings: MappingTracker,
    symbolizer: Symbolizer,
    /// The unwind tables of the targets' files (None with `--unwind fp`).
    unwinder: Option<Unwinder>,
    stats: [u64; STAT_COUNT as usize],
    /// Anonymous mappings made by the dynamic loader for itself, not counted.
    loader_mappings: u64,
    housekeeping_ticks: u64,
    /// What each heap stack had freed at the last read.
    freed: drain::Freed,
    started: Instant,
}

pub async fn run(cfg: config::Trace, child: Option<HeldChild>) -> Result<()> {
    let cfg = &cfg;
    // Handlers first: a Ctrl-C while the probes go in (seconds on a busy
    // node) then ends the run as soon as it starts, with a report.
    let mut stop = Stop {
        int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
        term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
    };
    let outputs = &cfg.outputs.list;
    let mode = cfg.mode.clone();
    let watching = matches!(mode, Mode::Watch(_));
    let unwind_tables = cfg.attach.unwind != Unwind::Fp && mode != Mode::OomOnly;
    let settings = Settings {
        max_live: cfg.attach.max_live,
        max_stacks: cfg.attach.max_stacks,
        trace_all: mode == Mode::Watch(Selection::All),
        watch_exec: watching || mode == Mode::OomOnly,
        oom_only: mode == Mode::OomOnly,
        sample_bytes: cfg.sampling.sample_bytes,
        unwind_tables,
        // The command stops at each exec, for its tables to be loaded
        // before it runs (see `Session::continue_at_entry`).
        stop_at_exec: child.as_ref().filter(|_| unwind_tables).map(|c| c.pid),
        follow_forks: cfg.follow_forks,
    };
    let mut files = AllocatorFiles::new(
        cfg.attach.symbol_prefixes.clone(),
        &cfg.attach.allocator_libs,
    )?;
    let mut probes = Probes::load(&settings)?;
    if cfg.verbose && !settings.oom_only {
        crate::note(&format!("allocation functions: {}", probes.path.describe()));
    }
    let mut unwinder = match settings.unwind_tables {
        true => Some(Unwinder::new(&mut probes.bpf, cfg.attach.unwind)?),
        false => None,
    };
    let mut targets = BTreeMap::new();
    match (&mode, &child) {
        (Mode::Command, Some(c)) => {
            targets.insert(c.pid, attach_command(&mut probes, &files, c, cfg.verbose)?);
        }
        (Mode::Pids, _) => {
            for &pid in &cfg.pids {
                // Tables first: the first calls the probes see are walked
                // whole (else by frame pointer, as a stack of their own).
                if let Some(u) = &mut unwinder {
                    u.update(pid);
                }
                targets.insert(pid, attach_pid(&mut probes, &mut files, pid, cfg.verbose)?);
            }
        }
        _ => {}
    }
    let events = drain::take_events(&mut probes.bpf)?;
    let watcher = match &mode {
        Mode::Watch(selection) => Some(Watcher {
            selection: selection.clone(),
            recent: HashMap::new(),
            ignored: HashSet::new(),
        }),
        _ => None,
    };
    let mut session = Session {
        mode,
        probes,
        targets,
        watcher,
        files,
        verbose: cfg.verbose,
        gone: HashSet::new(),
        oom_kills: VecDeque::new(),
        meter: None,
        cgroups: HashMap::new(),
        processes_dropped: 0,
        child,
        stacks: StackCache::default(),
        agg: Aggregator::new(MAX_SAMPLES, max_series(cfg.attach.max_stacks), min_gap(cfg)),
        mappings: MappingTracker::new(cfg.attach.max_live as usize),
        symbolizer: Symbolizer::new(),
        unwinder,
        stats: [0; STAT_COUNT as usize],
        loader_mappings: 0,
        housekeeping_ticks: 0,
        freed: drain::Freed::default(),
        started: Instant::now(),
    };
    if session.watcher.is_some() {
        // memtrace's own allocator (the host's libc, as a rule) is known
        // from the start: processes that exec are probed on it at once.
        session.files.of(std::process::id());
    }
    if session.mode == Mode::Watch(Selection::All) {
        // Timed before any probe goes in, and again after (see `overhead`).
        session.meter = Some(overhead::Meter::start()?);
    }
    session.scan_node();
    if session.mode == Mode::OomOnly {
        session.remember_cgroups();
    }
    if let Some(meter) = &mut session.meter {
        // memtrace's own allocator is hooked too (its calls return at once
        // in the programs) so that the calibration times probed calls.
        let me = std::process::id();
        for file in session.files.of(me) {
            session.probes.attach_allocator(None, &file)?;
        }
        meter.calibrate();
    }
    // (A held child is still a copy of memtrace until it execs: its
    // mappings are read then.)
    let held = session.child.as_ref().map(|c| c.pid);
    let pids: Vec<u32> = session.targets.keys().copied().collect();
    for pid in pids.into_iter().filter(|&p| Some(p) != held) {
        session.refresh_maps(pid);
    }
    if session.child.is_none() {
        // (A held child is still a copy of memtrace until it execs.)
        session.sample_memory(0.0, cfg);
    }
    announce(&session, cfg);
    if let Some(c) = session.child.as_mut() {
        c.release()?;
    }
    // SAFETY: the ring buffer owns its fd and is moved into the AsyncFd,
    // which keeps it open until it deregisters it.
    let mut events = unsafe { AsyncFd::register(events) }
        .map_err(|e| e.into_parts().1)
        .context("polling the event ring buffer")?;
    let mut live = match session.mode {
        Mode::OomOnly => Live::choose(false, true),
        _ => Live::choose(cfg.live_table, output::machine_on_stdout(outputs)),
    };
    session
        .event_loop(cfg, &mut events, &mut live, &mut stop)
        .await?;
    live.finish();

    // Final drain: whatever arrived since the last tick.
    session.drain(cfg, events.get_mut())?;
    if session.mode == Mode::OomOnly {
        // The kills went out as they happened; files get the whole report.
        let files: Vec<config::Output> = outputs
            .iter()
            .filter(|o| o.path.is_some())
            .cloned()
            .collect();
        let report = session.report(cfg, 0);
        return output::write_report(&report, &files, cfg.outputs.render_options());
    }
    session.sample(cfg)?;
    session.stop_child();
    let report = session.report(cfg, output::stacks_needed(&cfg.outputs));
    output::write_report(&report, outputs, cfg.outputs.render_options())?;
    let probes = session.probes.probe_count;
    if probes * DETACH_MS > 2000 {
        crate::note(&format!(
            "detaching {probes} probes: the kernel takes ~{DETACH_MS} ms for each, one at a \
             time (~{} s)",
            probes * DETACH_MS / 1000
        ));
    }
    Ok(())
}

/// What the kernel takes to detach one uprobe here (measured, serialized:
/// closing them from several threads at once took as long).
const DETACH_MS: usize = 80;

fn announce(session: &Session, cfg: &config::Trace) {
    if let Some(d) = cfg
        .sampling
        .duration
        .filter(|_| session.mode != Mode::OomOnly)
    {
        let intervals = d.as_secs_f64() / cfg.sampling.interval.as_secs_f64();
        if intervals < verdict::MIN_LEAK_INTERVALS as f64 {
            crate::note(&format!(
                "note: --duration {} is {intervals:.1} intervals of {}: calling a leak takes \
                 {}; a shorter --interval gives more",
                humantime::format_duration(d),
                humantime::format_duration(cfg.sampling.interval),
                verdict::MIN_LEAK_INTERVALS
            ));
        }
    }
    let until = match cfg.sampling.duration {
        Some(d) => format!("for {}", humantime::format_duration(d)),
        None => "until Ctrl-C".to_string(),
    };
    let hooked = || {
        let mut files: Vec<&str> = session
            .targets
            .values()
            .flat_map(|t| t.allocators.iter().map(String::as_str))
            .collect();
        files.sort_unstable();
        files.dedup();
        files.join(", ")
    };
    match &session.mode {
        Mode::OomOnly => {
            return crate::note(&format!("watching for OOM kills on this node {until}"));
        }
        Mode::Watch(Selection::All) => {
            return crate::note(&format!(
                "tracing every process ({} now) {until}; allocator probed for all processes in: {}",
                session.targets.len(),
                hooked()
            ));
        }
        Mode::Watch(Selection::Matching(f)) => {
            let mut criteria = Vec::new();
            for c in &f.comm {
                criteria.push(format!("--comm {c}"));
            }
            if let Some(c) = &f.cgroup {
                criteria.push(format!("--cgroup {c}"));
                if !select::cgroup_exists(c) {
                    crate::note(&format!(
                        "warning: no cgroup {c} under /sys/fs/cgroup (v2 or any v1 \
                         hierarchy): no process is in it now"
                    ));
                }
            }
            if let Some(c) = &f.container {
                criteria.push(format!("--container {c}"));
            }
            let pids: Vec<String> = session.targets.keys().map(|p| p.to_string()).collect();
            return crate::note(&format!(
                "tracing processes matching {} as they appear {until} ({} now{})",
                criteria.join(" "),
                pids.len(),
                if pids.is_empty() {
                    String::new()
                } else {
                    format!(": pid {}", pids.join(", "))
                }
            ));
        }
        _ => {}
    }
    let what: Vec<String> = session
        .targets
        .values()
        .map(|t| {
            let via = match t.allocators.is_empty() {
                true => "its mmap calls".to_string(),
                false => t.allocators.join(", "),
            };
            format!("pid {} ({}) via {via}", t.info.pid, t.info.comm)
        })
        .collect();
    crate::note(&format!("tracing {} {until}", what.join(", ")));
}

/// With --verbose: where each function's probes went (see `placement`).
fn describe_probes(verbose: bool, file: &std::path::Path, points: &[allocator::ProbePoint]) {
    if !verbose {
        return;
    }
    for p in points {
        crate::note(&format!(
            "{} in {} (file offset {:#x}): {}",
            p.symbol,
            file.display(),
            p.file_offset,
            p.placement
        ));
    }
}

/// Hooks every allocator mapped by a running process (and the
/// `--allocator-lib` ones).
fn attach_pid(
    probes: &mut Probes,
    files: &mut AllocatorFiles,
    pid: u32,
    verbose: bool,
) -> Result<Target> {
    let info = target::inspect(pid)?;
    // Unreadable maps are an error here (the allocator cache below would
    // just see no files).
    target::read_maps(pid)?;
    probes.add_target(pid)?;
    let mut allocators: Vec<String> = Vec::new();
    for file in files.of(pid) {
        probes.attach_allocator(Some(pid), &file)?;
        describe_probes(verbose, &file.path, &file.points);
        if !allocators.contains(&file.name) {
            allocators.push(file.name.clone());
        }
    }
    if allocators.is_empty() {
        if !allocator::is_go_executable(Path::new(&format!("/proc/{pid}/exe"))) {
            bail!(
                "no allocator symbols (malloc/free) found in pid {pid} ({}): none of its mapped \
                 files exports them (--allocator-lib and --symbol-prefix name others)",
                info.comm
            );
        }
        crate::note(&format!(
            "pid {pid} ({}) is a Go program: its heap is traced through the runtime's mmap \
             calls (Go code gets no probes)",
            info.comm
        ));
    }
    Ok(Target::new(info, allocators))
}

/// Hooks the allocator of a held child's program before it execs.
fn attach_command(
    probes: &mut Probes,
    files: &AllocatorFiles,
    child: &HeldChild,
    verbose: bool,
) -> Result<Target> {
    let pid = child.pid;
    probes.add_target(pid)?;
    let mut allocators = Vec::new();
    let mut libraries = launch::libraries_of(&child.program)?;
    libraries.extend(files.forced().iter().map(|f| f.path.clone()));
    for path in libraries {
        let name = path.display().to_string();
        let Some(file) = files
            .open(path, name)
            .context("reading the symbols of the program's libraries")?
        else {
            continue;
        };
        if probes.attach_allocator(Some(pid), &file)? {
            describe_probes(verbose, &file.path, &file.points);
            allocators.push(file.name.clone());
        }
    }
    let comm = child
        .program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if allocators.is_empty() {
        if !allocator::is_go_executable(&child.program) {
            bail!(
                "no allocator symbols (malloc/free) found in {} or the libraries it loads",
                child.program.display()
            );
        }
        crate::note(&format!(
            "{} is a Go program: its heap is traced through the runtime's mmap calls (Go code \
             gets no probes)",
            child.program.display()
        ));
    }
    let exe = std::fs::canonicalize(&child.program).unwrap_or(child.program.clone());
    let info = TargetInfo {
        pid,
        comm,
        exe: Some(exe.display().to_string()),
        // The held child's: exec keeps it.
        start_time: target::start_time(pid).unwrap_or(0),
    };
    Ok(Target::new(info, allocators))
}

impl Session {
    async fn event_loop(
        &mut self,
        cfg: &config::Trace,
        events: &mut AsyncFd<RingBuf<MapData>>,
        live: &mut Live,
        stop: &mut Stop,
    ) -> Result<()> {
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + cfg.sampling.interval,
            cfg.sampling.interval,
        );
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let deadline = cfg
            .sampling
            .duration
            .map(|d| tokio::time::Instant::now() + d);
        loop {
            tokio::select! {
                _ = stop.int.recv() => break,
                _ = stop.term.recv() => break,
                _ = sleep_until(deadline) => break,
                guard = events.readable_mut() => {
                    let mut guard = guard.context("waiting for events")?;
                    self.drain(cfg, guard.get_inner_mut())?;
                    guard.clear_ready();
                }
                _ = tick.tick(), if self.mode != Mode::OomOnly => {
                    self.sample(cfg)?;
                    let rows = live.rows(self.targets.len(), cfg.outputs.text_top());
                    let report = self.report(cfg, rows);
                    live.draw(&report);
                }
                _ = housekeeping.tick() => {
                    if self.housekeeping()? {
                        break; // every target has exited
                    }
                }
            }
        }
        Ok(())
    }

    /// Handles every pending event of the ring buffer.
    fn drain(&mut self, cfg: &config::Trace, ring: &mut RingBuf<MapData>) -> Result<()> {
        let mut batch = Vec::new();
        drain::drain_events(ring, |e| batch.push(e));
        for event in batch {
            match event {
                Event::Mapping(e) => self.on_mapping_event(&e),
                Event::Process(e) => self.on_process_event(cfg, &e)?,
            }
        }
        Ok(())
    }

    fn on_process_event(&mut self, cfg: &config::Trace, e: &ProcessEvent) -> Result<()> {
        let pid = e.tgid;
        match e.kind {
            k if k == EventKind::Exec as u32 && self.mode == Mode::OomOnly => {
                self.cgroups.insert(pid, cgroup::read(pid));
            }
            k if k == EventKind::Exec as u32 => {
                if self.targets.contains_key(&pid) {
                    self.on_exec(pid, e.timestamp_ns);
                    // Its new image's allocator hooked, the command (stopped
                    // by the kernel at its exec) runs on.
                    if self.unwinder.is_some() && self.child.as_ref().is_some_and(|c| c.pid == pid)
                    {
                        self.continue_at_entry(pid);
                    }
                } else if let Some(w) = &mut self.watcher {
                    w.ignored.remove(&pid);
                    w.recent.insert(pid, Instant::now());
                    self.consider(pid);
                }
            }
            k if k == EventKind::Exit as u32 => self.on_exit(pid),
            k if k == EventKind::Fork as u32 => self.on_fork(pid, e),
            k if k == EventKind::OomVictim as u32 => self.on_oom(cfg, e)?,
            _ => {}
        }
        Ok(())
    }

    /// A process exited. On a watched node everything about it goes (at the
    /// next sample, in one pass over the kernel tables); a given target is
    /// kept, with what it held when it exited, and nothing that comes for
    /// its pid later is its (the pid may go to another process at once).
    fn on_exit(&mut self, pid: u32) {
        let Some(w) = &mut self.watcher else {
            // Where exits are main threads', the process may live on (a
            // thread that called exec); housekeeping sees it end otherwise.
            let gone = self.probes.exits_are_final
                || self.targets.get(&pid).is_some_and(|t| !t.info.is_alive());
            if gone {
                self.retire(pid);
            }
            return;
        };
        w.ignored.remove(&pid);
        w.recent.remove(&pid);
        if self.targets.remove(&pid).is_some() {
            self.probes.forget_target(pid);
            self.gone.insert(pid);
        }
    }

    /// A target forked `child` (forks are followed): the child is a target
    /// of its own — the kernel counts its mapping calls from its fork — and
    /// gets probes on the allocator files it maps (its parent's, unless it
    /// has exec'd already). What it allocates before they are in place (a
    /// few milliseconds) is not seen; its frees of the blocks it inherited
    /// are frees of unknown blocks, never its parent's.
    fn on_fork(&mut self, child: u32, e: &ProcessEvent) {
        let parent = e.trigger_tgid;
        let Some(p) = self.targets.get(&parent) else {
            return;
        };
        let inherited = TargetInfo {
            pid: child,
            comm: p.info.comm.clone(),
            exe: p.info.exe.clone(),
            start_time: 0,
        };
        if self.targets.contains_key(&child) {
            // A followed process that had this pid is long gone: what it
            // left goes now, before anything of the new one is recorded.
            self.gone.insert(child);
            if let Err(err) = self.purge_gone() {
                crate::note(&format!("warning: pid {child} reused: {err:#}"));
            }
        }
        // Gone already (it lived a few milliseconds): kept, exited.
        let (info, exited) = match target::inspect(child) {
            Ok(info) => (info, false),
            Err(_) => (inherited, true),
        };
        let mut t = Target::new(info, Vec::new());
        t.exited = exited;
        self.targets.insert(child, t);
        if exited {
            return;
        }
        // Its tables before its probes (its parent's files, as a rule).
        self.refresh_maps(child);
        self.attach_files(child, false);
        if self.verbose {
            let after = drain::kernel_now_ns().saturating_sub(e.timestamp_ns);
            crate::note(&format!(
                "pid {child} (forked by pid {parent}): followed, its probes in place {:.1} ms \
                 after its fork",
                after as f64 / 1e6
            ));
        }
    }

    /// The OOM killer chose a victim: if it is traced, its stacks are read
    /// from the kernel tables right away (they outlive the process until
    /// memtrace drops them) and symbolized through the files kept open for
    /// it. With --pid, an OOM-killed target ends the run.
    fn on_oom(&mut self, cfg: &config::Trace, e: &ProcessEvent) -> Result<()> {
        let pid = e.tgid;
        let t = self.started.elapsed().as_secs_f64();
        // Read now unless it is already exiting (the kill is quick; cgroup
        // v1 then shows the root): else what was last known of it.
        let known = match self.targets.get(&pid) {
            Some(target) => target.cgroup.clone(),
            None => self.cgroups.get(&pid).cloned().flatten(),
        };
        // Read first, then check: a read that may have raced with the exit
        // is not trusted.
        let fresh = cgroup::read(pid);
        let cgroup_path = match target::is_exiting(pid) {
            false => fresh.or(known),
            true => known,
        };
        let container = cgroup_path.as_deref().and_then(cgroup::container_of);
        let mut kill = oom::kill_from_event(e, t, cgroup_path, container);
        if self.targets.contains_key(&pid) {
            self.sample(cfg)?;
            let (stacks, total) = {
                let symbolizer = &mut self.symbolizer;
                report::largest_stacks_of(
                    &self.agg,
                    &mut |pid, addrs| symbolizer.frames(pid, addrs),
                    pid,
                    oom::TOP_STACKS,
                )
            };
            kill.traced = true;
            kill.top_stacks = stacks;
            kill.traced_outstanding_bytes = total;
        }
        if self.mode == Mode::OomOnly {
            let line = match cfg.oom_json_lines {
                true => serde_json::to_string(&kill)?,
                false => oom_log_line(&kill),
            };
            output::write(None, format!("{line}\n").as_bytes())?;
        } else {
            crate::note(&oom_line(&kill));
        }
        if let Some(t) = self
            .targets
            .get_mut(&pid)
            .filter(|_| self.watcher.is_none())
        {
            // A --pid target ends here (the run ends once every target
            // has: for a single one, now).
            t.exited = true;
        }
        if self.oom_kills.len() == oom::MAX_KILLS {
            self.oom_kills.pop_front();
        }
        self.oom_kills.push_back(kill);
        Ok(())
    }

    /// --oom-only: reads every process's cgroup (at start and every
    /// [`RESCAN_EVERY`] ticks; bounded by the processes on the node).
    fn remember_cgroups(&mut self) {
        self.cgroups = select::pids()
            .into_iter()
            .map(|pid| (pid, cgroup::read(pid)))
            .collect();
    }

    /// On a watched node: looks at every process (at start, then every
    /// [`RESCAN_EVERY`] ticks) and hooks the ones selected.
    fn scan_node(&mut self) {
        let Some(w) = &mut self.watcher else {
            return;
        };
        // Processes not selected are looked at again too: a cgroup move or
        // a renamed process may select them now. Targets' cgroups are read
        // again for the same reason.
        w.ignored.clear();
        for t in self.targets.values_mut() {
            let fresh = cgroup::read(t.info.pid);
            if !target::is_exiting(t.info.pid) {
                t.container = fresh.as_deref().and_then(cgroup::container_of);
                t.cgroup = fresh;
            }
        }
        let pids = select::pids();
        if let (true, Some(u)) = (w.selection.system_wide(), &mut self.unwinder) {
            // Every process's tables before the first file's probes go in
            // for all of them: their first calls are walked whole.
            let me = std::process::id();
            for &pid in pids.iter().filter(|&&p| p != me) {
                u.update(pid);
            }
        }
        for pid in pids {
            self.consider(pid);
        }
    }

    /// On a watched node: makes `pid` a target if it is selected, or hooks
    /// the allocator files it maps that are new since it was looked at.
    fn consider(&mut self, pid: u32) {
        let Some(w) = &mut self.watcher else {
            return;
        };
        if w.ignored.contains(&pid) {
            return;
        }
        if !self.targets.contains_key(&pid) {
            let Some(process) = select::describe(pid) else {
                return; // gone, or a kernel thread
            };
            if !w.selection.matches(&process) {
                w.ignored.insert(pid);
                return;
            }
            let Ok(info) = target::inspect(pid) else {
                return;
            };
            if !w.selection.system_wide() {
                if let Err(e) = self.probes.add_target(pid) {
                    // The target table is full: the node goes on without it.
                    crate::note(&format!("warning: not tracing pid {pid}: {e:#}"));
                    w.ignored.insert(pid);
                    return;
                }
            }
            let t = Target::placed(info, Vec::new(), process.cgroup, process.container);
            self.targets.insert(pid, t);
            let fresh = !w.selection.system_wide() && w.recent.contains_key(&pid);
            self.refresh_maps(pid);
            if fresh {
                // Just exec'd: its loader has not mapped its libraries yet.
                // Probes for it on the allocator files already known are
                // placed now (the kernel installs them when it maps one),
                // so it is traced from its first malloc if it uses one of
                // them; others are found as it maps them.
                for file in self.files.host_files() {
                    if let Err(e) = self.probes.attach_allocator(Some(pid), &file) {
                        crate::note(&format!("warning: pid {pid}: {e:#}"));
                    }
                }
            }
        }
        self.attach_files(pid, false);
    }

    /// Hooks the allocator files `pid` maps that are not hooked yet: on a
    /// watched node at each look (for every process with --all, else for
    /// `pid`), for a followed child at its fork, and for a given target at
    /// each maps refresh — a library it loads later (dlopen) is hooked
    /// within a second, and said so when `loaded_later`. A file that cannot
    /// be hooked is noted, not fatal.
    fn attach_files(&mut self, pid: u32, loaded_later: bool) {
        let Some(t) = self.targets.get_mut(&pid) else {
            return;
        };
        let system_wide = self
            .watcher
            .as_ref()
            .is_some_and(|w| w.selection.system_wide());
        let scope = (!system_wide).then_some(pid);
        for file in self.files.of(pid) {
            let new = match self.probes.attach_allocator(scope, &file) {
                Ok(new) => new,
                Err(e) => {
                    crate::note(&format!("warning: pid {pid}: {e:#}"));
                    continue;
                }
            };
            if new {
                describe_probes(self.verbose, &file.path, &file.points);
                if loaded_later {
                    crate::note(&format!(
                        "pid {pid} loaded the allocator {}: hooked",
                        file.name
                    ));
                }
            }
            // A given target lists what it was hooked on (at start under
            // the loader's name for it); a watched one every file it maps.
            if !t.allocators.contains(&file.name) && (new || self.watcher.is_some()) {
                t.allocators.push(file.name.clone());
            }
        }
    }

    /// The command exec'd, and the kernel stopped it there (with unwind
    /// tables, see `STOP_AT_EXEC`): it runs on to its entry point, where
    /// its loader has mapped its libraries and it stops again (up to
    /// [`ENTRY_WAIT`]); their tables are loaded, and it continues. Whatever
    /// fails on the way, it is continued.
    fn continue_at_entry(&mut self, pid: u32) {
        let cont = || {
            // SAFETY: signalling our own child, not reaped yet: it is
            // stopped, not exited.
            unsafe { libc::kill(pid as i32, libc::SIGCONT) };
        };
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let link = unwind::entry_offset(&exe)
            .and_then(|offset| self.probes.stop_at_entry(pid, &exe, offset).ok());
        cont();
        let Some(link) = link else {
            return;
        };
        let deadline = Instant::now() + ENTRY_WAIT;
        while Instant::now() < deadline {
            if self.probes.entry_reached() == pid && target::state(pid) == Some('T') {
                self.refresh_maps(pid);
                break;
            }
            if !target::is_alive(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if self.probes.entry_reached() == pid {
            cont();
            // Its entry point is behind it: the probe cannot fire again.
            self.probes.detach_entry_stop(link, false);
        } else {
            // Not there in time (a slow loader or constructor) or gone:
            // the probe goes first, then the process continues, so that a
            // stop on its way out cannot be left pending.
            self.probes.detach_entry_stop(link, true);
            cont();
        }
    }

    /// Looks at `pid`'s mappings again: for symbols, and for the unwinder.
    fn refresh_maps(&mut self, pid: u32) {
        self.symbolizer.refresh(pid);
        if let Some(u) = &mut self.unwinder {
            u.update(pid);
        }
    }

    /// Drops what processes that exited on a watched node left behind: in
    /// the kernel tables, the series, the mapping regions and the
    /// symbolizer.
    fn purge_gone(&mut self) -> Result<()> {
        if self.gone.is_empty() {
            return Ok(());
        }
        let gone = std::mem::take(&mut self.gone);
        self.processes_dropped += gone.len() as u64;
        let ids = drain::purge_processes(&mut self.probes.bpf, &gone)?;
        self.stacks.forget(&ids);
        let remap = self.agg.remove_pids(&gone);
        self.mappings.forget(&gone, &remap);
        self.symbolizer.forget_processes(&gone);
        if let Some(u) = &mut self.unwinder {
            for &pid in &gone {
                u.forget(pid);
            }
        }
        self.freed.forget(&gone);
        Ok(())
    }

    /// A given (or followed) target has exited: its regions and blocks stay
    /// recorded — memory held at exit, and its ages, is what the report
    /// shows — but its pid is no longer traced and its probes go (on a
    /// helper thread: the kernel takes ~80 ms for each).
    fn retire(&mut self, pid: u32) {
        if let Some(t) = self.targets.get_mut(&pid).filter(|t| !t.exited) {
            t.exited = true;
            self.probes.forget_target(pid);
            if let Some(u) = &mut self.unwinder {
                u.forget(pid);
            }
        }
    }

    /// Whether a new stack gets a series: when the table is full, the series
    /// holding nothing make room (see [`Aggregator::make_room`]).
    fn room_for_a_stack(&mut self) -> bool {
        if !self.agg.is_full() {
            return true;
        }
        // Mapping series get their totals at each sample: what an evicted
        // one counted since must be in it.
        for (stack, totals) in self.mappings.totals() {
            self.agg.update(stack, *totals);
        }
        if let Some(remap) = self.agg.make_room(|| self.mappings.stacks_in_use()) {
            self.mappings.follow(&remap);
        }
        !self.agg.is_full()
    }

    /// Refreshes mappings of live targets and notes exits; on a watched
    /// node, looks at processes that exec'd lately and, now and then, at
    /// every process. True once every given target has exited.
    fn housekeeping(&mut self) -> Result<bool> {
        if let Some(child) = &mut self.child {
            child.try_reap();
        }
        self.housekeeping_ticks += 1;
        if let Some(w) = &mut self.watcher {
            w.recent.retain(|_, at| at.elapsed() < AFTER_EXEC);
            let recent: Vec<u32> = w.recent.keys().copied().collect();
            for pid in recent {
                self.consider(pid);
                self.refresh_maps(pid);
            }
            if self.housekeeping_ticks.is_multiple_of(RESCAN_EVERY) {
                self.scan_node();
                let pids: Vec<u32> = self.targets.keys().copied().collect();
                for pid in pids {
                    self.refresh_maps(pid);
                }
            }
            return Ok(false);
        }
        if self.mode == Mode::OomOnly {
            if self.housekeeping_ticks.is_multiple_of(RESCAN_EVERY) {
                self.remember_cgroups();
            }
            return Ok(false);
        }
        let refresh_maps = self.housekeeping_ticks <= MAPS_EVERY
            || self.housekeeping_ticks.is_multiple_of(MAPS_EVERY);
        let mut new_maps = Vec::new();
        let mut ended = Vec::new();
        for t in self.targets.values_mut() {
            if t.exited {
                continue;
            }
            if t.info.is_alive() {
                if refresh_maps {
                    new_maps.push(t.info.pid);
                }
            } else {
                ended.push(t.info.pid);
            }
        }
        for pid in ended {
            self.retire(pid);
        }
        for pid in new_maps {
            self.refresh_maps(pid);
            self.attach_files(pid, true);
        }
        Ok(self.targets.values().all(|t| t.exited))
    }

    /// Reads the kernel's totals and the ages of live allocations, appends
    /// a sample to every series, and reads the targets' resident memory.
    fn sample(&mut self, cfg: &config::Trace) -> Result<()> {
        self.purge_gone()?;
        let (kernel, ages) = self.read_kernel(cfg)?;
        self.stats = kernel.stats;
        // With --sample-bytes: each heap stack's unbiasing factor.
        let mut factors: HashMap<StackKey, f64> = HashMap::new();
        for (key, totals) in kernel.stacks {
            if !self.targets.contains_key(&key.tgid) {
                // --all: a process first seen by its allocations (forked
                // without exec, or started between scans).
                self.consider(key.tgid);
                if !self.targets.contains_key(&key.tgid) {
                    if self.watcher.is_some() && !target::is_alive(key.tgid) {
                        self.gone.insert(key.tgid);
                    }
                    continue;
                }
            }
            if self.agg.heap_stack(&key).is_none() {
                if self.agg.is_dormant(&key, &totals) {
                    continue;
                }
                if !self.room_for_a_stack() {
                    self.agg.refuse(Some((key, totals)));
                    continue;
                }
                let walked = self.stacks.frames(&self.probes.bpf, key.stack_id)?;
                // A frame-pointer step through code without frame pointers
                // reads data as return addresses: cut there, so that walks
                // differing only in that garbage are one stack (truncated).
                let code = self.symbolizer.in_code(key.tgid, &walked.frames);
                let cut = code < walked.frames.len();
                self.agg
                    .intern_heap(key, &walked.frames[..code], walked.truncated || cut);
            }
            let totals = match cfg.sampling.sample_bytes {
                Some(mean) => {
                    let (unbiased, factor) = series::unbias(totals, mean);
                    factors.insert(key, factor);
                    unbiased
                }
                None => totals,
            };
            self.agg.update_heap(key, totals);
        }
        let mapped: Vec<_> = self.mappings.totals().map(|(s, t)| (s, *t)).collect();
        for (stack, totals) in mapped {
            self.agg.update(stack, totals);
        }
        let ages = ages
            .into_iter()
            .map(|(key, a)| (key, a.scaled(factors.get(&key).copied().unwrap_or(1.0))))
            .collect();
        self.set_ages(cfg, ages);
        let t = self.started.elapsed().as_secs_f64();
        self.agg.sample(t);
        self.sample_memory(t, cfg);
        Ok(())
    }

    /// Appends the targets' resident memory (and what their traced stacks
    /// hold) at `t` to their memory series.
    fn sample_memory(&mut self, t: f64, cfg: &config::Trace) {
        for target in self.targets.values_mut() {
            if target.exited {
                continue;
            }
            let Some((rss, anon)) = target::memory_usage(target.info.pid) else {
                continue;
            };
            let pid = target.info.pid;
            let traced = self
                .agg
                .stacks
                .iter()
                .filter(|s| s.identity.pid == pid)
                .map(|s| s.outstanding_bytes())
                .sum();
            let sample = MemorySample {
                t,
                rss_bytes: rss,
                anon_bytes: anon,
                traced_bytes: traced,
            };
            let replace_last = target.memory.back().is_some_and(|b| t - b.t < min_gap(cfg));
            series::push_bounded(&mut target.memory, sample, MAX_SAMPLES, replace_last);
        }
    }

    /// Reads the kernel's per-stack totals and the ages of its live blocks
    /// as one snapshot (see [`drain::read_kernel`]).
    fn read_kernel(
        &mut self,
        cfg: &config::Trace,
    ) -> Result<(drain::KernelTotals, HashMap<StackKey, series::AgeStats>)> {
        let min_age = cfg.sampling.min_age_secs().unwrap_or(f64::INFINITY);
        drain::read_kernel(&self.probes.bpf, min_age, &mut self.freed)
    }

    /// Sets every stack's live-allocation ages: heap blocks from the
    /// kernel's timestamps, mappings from their mmap events'. Stacks with
    /// nothing live get empty ages.
    fn set_ages(&mut self, cfg: &config::Trace, heap: HashMap<StackKey, series::AgeStats>) {
        let min_age = cfg.sampling.min_age_secs().unwrap_or(f64::INFINITY);
        for i in 0..self.agg.stacks.len() {
            self.agg.set_ages(i, series::AgeStats::default());
        }
        for (key, ages) in heap {
            if let Some(i) = self.agg.heap_stack(&key) {
                self.agg.add_ages(i, &ages);
            }
        }
        for (stack, ages) in self.mappings.ages(drain::kernel_now_ns(), min_age) {
            self.agg.set_ages(stack, ages);
        }
    }

    fn on_mapping_event(&mut self, e: &MmapEvent) {
        let pid = e.tgid;
        if self.watcher.is_none() && self.targets.get(&pid).is_none_or(|t| t.exited) {
            // Sent before the kernel learnt of an exit: the pid's next
            // owner; or a child whose fork event was lost (ring buffer full).
            return;
        }
        if !self.targets.contains_key(&pid) && self.watcher.is_some() {
            // --all: a process first seen by a mapping call.
            self.consider(pid);
            if !self.targets.contains_key(&pid) {
                return;
            }
        }
        match e.kind {
            k if k == EventKind::Mmap as u32 => {
                let frames = match self.mmap_caller_frames(e) {
                    MmapCaller::Program(frames) => frames,
                    MmapCaller::Loader => {
                        self.loader_mappings += 1;
                        return;
                    }
                };
                let identity = StackIdentity {
                    pid,
                    kind: StackKind::Mmap,
                    frames,
                };
                if !self.agg.is_interned(&identity) && !self.room_for_a_stack() {
                    self.agg.refuse(None);
                    // What it maps over is replaced all the same.
                    self.mappings.unmap(pid, e.addr, e.len);
                    return;
                }
                let stack = self.agg.intern(identity);
                self.mappings
                    .mmap(pid, e.addr, e.len, stack, e.timestamp_ns);
            }
            k if k == EventKind::Munmap as u32 => self.mappings.unmap(pid, e.addr, e.len),
            k if k == EventKind::Mremap as u32 => self
                .mappings
                .mremap(pid, e.addr, e.len, e.new_addr, e.new_len),
            _ => {}
        }
    }

    /// A target called exec: what its old image held is released, its
    /// mappings and name are re-read, and the new image's allocator is
    /// hooked if it is another file (the same libc stays hooked: probes are
    /// per file and process, and survive exec).
    fn on_exec(&mut self, pid: u32, exec_ns: u64) {
        if let Some(t) = self
            .targets
            .get_mut(&pid)
            .filter(|_| self.watcher.is_none())
        {
            // Exec keeps the start time: a process with another is the next
            // owner of the pid, not this target (older kernels report
            // exits without forgetting the pid).
            if target::start_time(pid).is_some_and(|now| now != t.info.start_time) {
                t.exited = true;
                return;
            }
            // A thread that calls exec outlives the main thread, whose exit
            // those kernels take for the process's.
            t.exited = false;
        }
        // Blocks the old image left behind count as released.
        if let Err(e) = drain::release_image(&self.probes.bpf, pid, exec_ns) {
            crate::note(&format!("warning: pid {pid} exec'd: {e:#}"));
        }
        self.mappings.release_all(pid);
        self.symbolizer.forget(pid);
        if let Some(u) = &mut self.unwinder {
            // (The kernel dropped the old image's mappings at the exec.)
            u.invalidate(pid);
        }
        self.refresh_maps(pid);
        if let Some(w) = &mut self.watcher {
            // A watched node: the new program may not be selected any more
            // (--comm); if it is, its libraries are hooked as it maps them.
            let selected = select::describe(pid).is_some_and(|p| w.selection.matches(&p));
            if !selected {
                w.ignored.insert(pid);
                if self.targets.remove(&pid).is_some() {
                    self.probes.forget_target(pid);
                    self.gone.insert(pid);
                }
                return;
            }
            w.recent.insert(pid, Instant::now());
            if let (Some(t), Ok(info)) = (self.targets.get_mut(&pid), target::inspect(pid)) {
                t.info = info;
            }
            self.attach_files(pid, false);
            return;
        }
        let Some(t) = self.targets.get_mut(&pid) else {
            return;
        };
        if let Ok(info) = target::inspect(pid) {
            t.info = info;
        }
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let Ok(libraries) = launch::libraries_of(&exe) else {
            return;
        };
        for path in libraries {
            // The program itself (a static one is its own allocator) is
            // named by its path, not by /proc/PID/exe, gone with it.
            let name = match (&t.info.exe, path == exe) {
                (Some(program), true) => program.clone(),
                _ => path.display().to_string(),
            };
            let Ok(Some(file)) = self.files.open(path, name) else {
                continue;
            };
            match self.probes.attach_allocator(Some(pid), &file) {
                Ok(true) => {
                    describe_probes(self.verbose, Path::new(&file.name), &file.points);
                    if !t.allocators.contains(&file.name) {
                        t.allocators.push(file.name.clone());
                    }
                }
                Ok(false) => {}
                Err(e) => crate::note(&format!("warning: pid {pid} exec'd: {e:#}")),
            }
        }
    }

    /// The stack of an mmap, starting at the function that called it. The
    /// kernel's frame-pointer walk from the syscall starts inside the libc
    /// wrapper and skips the wrapper's caller (the wrapper has no frame);
    /// the word at the stack pointer is that caller's return address. So
    /// when the syscall instruction is in a shared library, frame 0 is
    /// replaced by it. A syscall made directly by the program (Go, static
    /// binaries) keeps its frames as they are. None for mappings the dynamic
    /// loader makes for itself (zero-fill of loaded libraries, its private
    /// malloc): loader bookkeeping, not the program's memory.
    fn mmap_caller_frames(&mut self, e: &MmapEvent) -> MmapCaller {
        let n = (e.nr_frames as usize).min(e.frames.len());
        // The frame-pointer walk ends with a zero when it leaves code built
        // with frame pointers; such entries are not frames.
        let frames: Vec<u64> = e.frames[..n]
            .iter()
            .copied()
            .take_while(|&f| f != 0)
            .collect();
        let Some(&first) = frames.first() else {
            return MmapCaller::Program(Vec::new());
        };
        let pid = e.tgid;
        if self.symbolizer.mapping(pid, first).is_none() {
            self.refresh_maps(pid);
        }
        let module = self
            .symbolizer
            .mapping(pid, first)
            .and_then(|m| m.path.as_deref());
        if module.is_some_and(is_dynamic_loader) {
            return MmapCaller::Loader;
        }
        let exe = self.targets.get(&pid).and_then(|t| t.info.exe.clone());
        let in_library = self
            .symbolizer
            .mapping(pid, first)
            .is_some_and(|m| m.is_file() && m.path != exe);
        if in_library && e.user_sp_word != 0 {
            return MmapCaller::Program(
                std::iter::once(e.user_sp_word)
                    .chain(frames[1..].iter().copied())
                    .collect(),
            );
        }
        MmapCaller::Program(frames)
    }

    /// In `-- CMD` mode, stops CMD if it still runs (SIGTERM, then SIGKILL
    /// after 2 s) and reaps it. The processes it forked are its own.
    fn stop_child(&mut self) {
        let Some(child) = &mut self.child else { return };
        child.stop(Duration::from_secs(2));
        if let Some(t) = self.targets.get_mut(&child.pid) {
            t.exited = true;
        }
    }

    /// The report as of now, with the `top` first stacks.
    fn report(&mut self, cfg: &config::Trace, top: usize) -> Report {
        for t in self.targets.values_mut() {
            t.exited |= !t.info.is_alive();
        }
        // On a watched node, the processes that allocated while traced (the
        // others would only make the list long).
        let with_stacks: HashSet<u32> = self.agg.stacks.iter().map(|s| s.identity.pid).collect();
        let targets = self
            .targets
            .values()
            .filter(|t| self.watcher.is_none() || with_stacks.contains(&t.info.pid))
            .map(|t| TargetReport {
                pid: t.info.pid,
                comm: t.info.comm.clone(),
                exe: t.info.exe.clone(),
                cgroup: t.cgroup.clone(),
                container: t.container.clone(),
                exited: t.exited,
                allocators: t.allocators.clone(),
                outstanding_bytes: 0,
                stacks_holding_memory: 0,
                growing_stacks: 0,
                memory: (!t.memory.is_empty()).then(|| {
                    report::memory_report(
                        t.memory.iter().copied().collect(),
                        cfg.sampling.rss_alert,
                    )
                }),
            })
            .collect();
        let ctx = ReportContext {
            duration_secs: self.started.elapsed().as_secs_f64(),
            interval_secs: cfg.sampling.interval.as_secs_f64(),
            targets,
            stats: &self.stats,
            loader_mappings: self.loader_mappings,
            processes_dropped: self.processes_dropped,
            mapping_table_full: self.mappings.table_full,
            top,
            sort: cfg.sampling.sort,
            min_age_secs: cfg.sampling.min_age_secs(),
            oom_kills: self.oom_kills.iter().cloned().collect(),
            overhead: self.meter.as_ref().map(|m| m.read(&self.probes)),
            sample_bytes: cfg.sampling.sample_bytes,
            probes: (self.mode != Mode::OomOnly).then(|| ProbesReport {
                path: match self.probes.path {
                    ProbePath::Session => "session",
                    ProbePath::Classic(_) => "classic",
                }
                .to_string(),
                detail: self.probes.path.describe(),
            }),
            unwind: (self.mode != Mode::OomOnly).then(|| {
                (
                    cfg.attach.unwind,
                    self.unwinder.as_ref().map(Unwinder::stats),
                )
            }),
        };
        let symbolizer = &mut self.symbolizer;
        report::build(ctx, &self.agg, &mut |pid, addrs| {
            symbolizer.frames(pid, addrs)
        })
    }
}

/// Stack series memtrace keeps: one per kernel stack (`--max-stacks`), and
/// an eighth more for what the kernel table does not hold — each process's
/// unknown stack, mapping stacks.
fn max_series(max_stacks: u32) -> usize {
    max_stacks as usize + max_stacks as usize / 8
}

/// A sample closer than this to the previous one (the final sample right
/// after an interval's) replaces it rather than making a short interval.
fn min_gap(cfg: &config::Trace) -> f64 {
    cfg.sampling.interval.as_secs_f64() / 4.0
}

/// The signals that end a run (installed before anything is attached).
struct Stop {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

/// Who made an anonymous mapping.
enum MmapCaller {
    /// The program: counted, with these frames.
    Program(Vec<u64>),
    /// The dynamic loader, for itself.
    Loader,
}

/// Whether a mapped file is a dynamic loader (glibc's ld-linux, musl's
/// ld-musl).
fn is_dynamic_loader(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with("ld-linux") || name.starts_with("ld-musl") || name == "ld.so"
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

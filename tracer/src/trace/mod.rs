//! One trace run: attaches to the targets (given ones and the
//! processes they fork when forks are followed, or on a watched node every
//! matching process as it appears), then every interval drains the
//! kernel's totals into the aggregator, applies mapping and process events
//! as they arrive (fork, exec, exit, OOM kills), keeps the targets'
//! mappings for symbolization, and ends — on Ctrl-C, SIGTERM, --duration,
//! the exit of every target or the OOM kill of a --pid target — with the
//! final report. This file owns the run's state ([`Tracing`]) and its loop; each
//! concern is a file of its own: `start` (the given targets hooked),
//! `targets` (the lifecycle: fork, exec, exit, OOM), `kernel` (what the
//! lifecycle asks of the machinery below, behind a trait), `sample` (every
//! interval, and the report), `mmap_events`, `node` (watched nodes),
//! `command` (`-- CMD`), `oom`, `python` (CPython targets' frames),
//! `recycle` (room in the kernel's stack table).

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};
use tracer_common::{EventKind, ProcessEvent, STAT_COUNT};

use memtrace_report::{render::live::Live, OomKill, Unseen, Unwind};

use crate::{
    accounting::{regions::MappingTracker, series::Aggregator},
    bpf::{
        drain::{self, Event, StackCache},
        overhead,
        probes::{Probes, Settings},
        unwind::Unwinder,
    },
    config::{self, Mode, Selection},
    discover::{
        cgroup::{self},
        launch::HeldChild,
        select::{AllocatorFile, AllocatorFiles},
    },
    output,
    symbolize::Symbolizer,
};

mod command;
mod golang;
mod java;
mod kernel;
mod mmap_events;
mod node;
mod nodejs;
pub mod oom;
mod python;
mod recycle;
mod runtime;
mod sample;
mod start;
mod targets;

use kernel::{Kernel, Machinery};
use targets::{Targets, Watcher};

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

/// Everything a running trace owns.
struct Tracing {
    mode: Mode,
    /// The targets and their lifecycle.
    life: Targets,
    /// Everything kept per process below the lifecycle.
    m: Machinery,
    oom_kills: VecDeque<OomKill>,
    /// What tracing costs the targets (or, with --all, the node).
    meter: Option<overhead::Meter>,
    /// --oom-only: every process's cgroup, read at exec and every rescan,
    /// for kills of processes gone before theirs can be read.
    cgroups: HashMap<u32, Option<String>>,
    child: Option<HeldChild>,
    stats: [u64; STAT_COUNT as usize],
    /// Anonymous mappings the dynamic loader made for itself.
    loader_mappings: u64,
    housekeeping_ticks: u64,
    started: Instant,
    /// How the start went (said once with --verbose, when the command
    /// runs its first instruction or the probes are in place).
    startup: Option<Startup>,
}

/// Start-up phases, from memtrace's own start.
struct Startup {
    load: Duration,
    attach: Duration,
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
        // before it runs (see `Tracing::continue_at_entry`).
        stop_at_exec: child.as_ref().filter(|_| unwind_tables).map(|c| c.pid),
        follow_forks: cfg.follow_forks,
        // Given targets whose forks are followed are held while their
        // probes go in (a watched node hooks what it finds as it can).
        hold_targets: cfg.follow_forks && matches!(mode, Mode::Command | Mode::Pids),
        empty_programs: cfg.attach.empty_programs,
        stack_ids_collide: cfg.attach.stack_ids_collide,
    };
    let files = AllocatorFiles::new(
        cfg.attach.symbol_prefixes.clone(),
        &cfg.attach.allocator_libs,
    )?;
    let loading = Instant::now();
    let mut probes = Probes::load(&settings)?;
    let load = loading.elapsed();
    if cfg.verbose && !settings.oom_only {
        crate::note(&format!("allocation functions: {}", probes.path.describe()));
        let features: Vec<String> = probes
            .kernel_features()
            .iter()
            .map(|(name, has)| {
                let has = match has {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "not tried",
                };
                format!("{name} {has}")
            })
            .collect();
        crate::note(&format!(
            "kernel {}: {} (docs/kernels.md)",
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim(),
            features.join(", ")
        ));
    }
    let unwinder = match settings.unwind_tables {
        true => Some(Unwinder::new(&mut probes.bpf, cfg.attach.unwind)?),
        false => None,
    };
    let mut m = Machinery {
        probes,
        files,
        unwinder,
        symbolizer: Symbolizer::new(),
        stacks: StackCache::default(),
        agg: Aggregator::new(MAX_SAMPLES, max_series(cfg.attach.max_stacks), min_gap(cfg)),
        mappings: MappingTracker::new(cfg.attach.max_live as usize),
        freed: drain::Freed::default(),
        // The command's CPython processes stop at their end until their
        // last stacks are named.
        python: python::PythonTargets::new(mode == Mode::Command),
        golang: golang::GoTargets::new(cfg.attach.go_enable_heap_profile, cfg.verbose),
        // Not on a whole node (--all): SIGUSR1 to every Node process on it
        // is more than a user asks by watching.
        node: nodejs::NodeTargets::new(
            cfg.attach.node_inspector
                && !matches!(&mode, Mode::Watch(selection) if selection.system_wide()),
            cfg.attach.node_sampling_interval,
            cfg.attach.node_heap_diff,
            cfg.verbose,
        ),
        // Not on a whole node either: SIGQUIT and a recording in every JVM.
        java: java::JavaTargets::new(
            cfg.attach.node_inspector
                && !matches!(&mode, Mode::Watch(selection) if selection.system_wide()),
            cfg.sampling.interval,
            cfg.verbose,
        ),
        recycler: recycle::Recycler::new(cfg.attach.max_stacks),
        verbose: cfg.verbose,
        placements: Default::default(),
    };
    let mut life = Targets {
        watcher: match &mode {
            Mode::Watch(selection) => Some(Watcher::new(selection.clone())),
            _ => None,
        },
        ..Targets::default()
    };
    // What tracing costs is timed before any target's probes go in:
    // attaching or detaching probes on a file while a target runs on it
    // made the kernel drop some of the target's own (--all: later, its
    // probes stay).
    let meter = match &mode {
        Mode::OomOnly | Mode::Watch(Selection::All) => None,
        _ => calibrated_meter(&mut m),
    };
    let attaching = Instant::now();
    match (&mode, &child) {
        (Mode::Command, Some(c)) => {
            life.by_pid.insert(c.pid, start::attach_command(&mut m, c)?);
        }
        (Mode::Pids, _) => {
            for &pid in &cfg.pids {
                // Tables first: the first calls the probes see are walked
                // whole (else by frame pointer, as a stack of their own).
                if let Some(u) = &mut m.unwinder {
                    u.update(pid);
                }
                life.by_pid.insert(pid, start::attach_pid(&mut m, pid)?);
            }
        }
        _ => {}
    }
    let attach = attaching.elapsed();
    let events = drain::take_events(&mut m.probes.bpf)?;
    let mut tracing = Tracing {
        mode,
        life,
        m,
        oom_kills: VecDeque::new(),
        meter,
        cgroups: HashMap::new(),
        child,
        stats: [0; STAT_COUNT as usize],
        loader_mappings: 0,
        housekeeping_ticks: 0,
        started: Instant::now(),
        startup: cfg.verbose.then_some(Startup { load, attach }),
    };
    if tracing.life.watcher.is_some() {
        // memtrace's own allocator (the host's libc, as a rule) is known
        // from the start: processes that exec are probed on it at once.
        tracing.m.files.of(std::process::id());
    }
    if tracing.mode == Mode::Watch(Selection::All) {
        // Timed before any probe goes in, and again after (see `overhead`).
        tracing.meter = Some(overhead::Meter::start()?);
    }
    tracing.scan_node();
    if tracing.mode == Mode::OomOnly {
        tracing.remember_cgroups();
    }
    if let Some(meter) = tracing
        .meter
        .as_mut()
        .filter(|_| tracing.mode == Mode::Watch(Selection::All))
    {
        // memtrace's own allocator is hooked too (its calls return at once
        // in the programs) so that the calibration times probed calls.
        if let Some(path) = overhead::own_allocator() {
            let name = path.display().to_string();
            if let Some(file) = tracing.m.files.open(path, name)? {
                tracing.m.probes.attach_allocator(None, &file)?;
            }
        }
        meter.calibrate();
    }
    // (A held child is still a copy of memtrace until it execs: its
    // mappings are read then.)
    let held = tracing.child.as_ref().map(|c| c.pid);
    let pids: Vec<u32> = tracing.life.by_pid.keys().copied().collect();
    for pid in pids.into_iter().filter(|&p| Some(p) != held) {
        tracing.m.refresh_maps(pid);
    }
    if tracing.child.is_none() {
        // (A held child is still a copy of memtrace until it execs.)
        tracing.sample_memory(0.0, cfg);
    }
    start::announce(&tracing, cfg);
    tracing.m.probes.start_holding()?;
    if let Some(c) = tracing.child.as_mut() {
        c.release()?;
    }
    // (A command stopped at its exec starts at its entry point.)
    if settings.stop_at_exec.is_none() {
        tracing.say_started();
    }
    // SAFETY: the ring buffer owns its fd and is moved into the AsyncFd,
    // which keeps it open until it deregisters it.
    let mut events = unsafe { AsyncFd::register(events) }
        .map_err(|e| e.into_parts().1)
        .context("polling the event ring buffer")?;
    // Never on a stdout that is not a terminal: with `-- CMD` it is the
    // command's (and the report's, with no -o).
    let mut live = Live::choose(cfg.live_table && tracing.mode != Mode::OomOnly);
    tracing
        .event_loop(cfg, &mut events, &mut live, &mut stop)
        .await?;
    live.finish();

    // Final drain: whatever arrived since the last tick. Nothing is held
    // from here on; what was is released by its event, or here.
    tracing.m.probes.stop_holding()?;
    tracing.drain(cfg, events.get_mut())?;
    tracing.m.probes.release_all_held();
    tracing.m.probes.release_exit_holds();
    if tracing.mode == Mode::OomOnly {
        // The kills went out as they happened; files get the whole report.
        let files: Vec<config::Output> = outputs
            .iter()
            .filter(|o| o.path.is_some())
            .cloned()
            .collect();
        let report = tracing.report(cfg, 0);
        return output::write_report(&report, &cfg.outputs, &files);
    }
    tracing.m.node.read_all_next();
    tracing.m.java.read_all_next();
    tracing.sample(cfg)?;
    // Sampling stopped, inspectors closed and recordings stopped before
    // the report says so.
    tracing.m.node.finish();
    tracing.m.java.finish();
    tracing.stop_child();
    let report = tracing.report(cfg, output::stacks_needed(&cfg.outputs));
    output::write_report(&report, &cfg.outputs, outputs)?;
    warn_of_stepped_probes(&report);
    let probes = tracing.m.probes.probe_count;
    if probes * DETACH_MS > 2000 {
        crate::note(&format!(
            "detaching {probes} probes: the kernel takes ~{DETACH_MS} ms for each, one at a \
             time (~{} s)",
            probes * DETACH_MS / 1000
        ));
    }
    tracing.m.probes.detach_all();
    Ok(())
}

/// Times malloc+free pairs in memtrace's own process, unprobed and then
/// with its libc probed for it alone (the programs return at once for
/// memtrace), its probes detached again before this returns (see
/// `overhead`); or takes the times of an earlier run of this boot. None,
/// said once, when the kernel's BPF statistics cannot be enabled.
fn calibrated_meter(m: &mut Machinery) -> Option<overhead::Meter> {
    let mut meter = match overhead::Meter::start() {
        Ok(meter) => meter,
        Err(e) => {
            crate::note(&format!("warning: tracing cost not measured: {e:#}"));
            return None;
        }
    };
    let path = overhead::own_allocator()?;
    let key = format!("{} {}", m.probes.path.name(), path.display());
    if meter.reuse(&key) {
        return Some(meter);
    }
    let me = std::process::id();
    let name = path.display().to_string();
    // Only the pair timed is probed: every probe more is a detach to wait
    // for (~80 ms each on the classic path).
    let file = m
        .files
        .open(path, name)
        .ok()
        .flatten()
        .map(|f| AllocatorFile {
            points: f
                .points
                .iter()
                .filter(|p| p.symbol == "malloc" || p.symbol == "free")
                .cloned()
                .collect(),
            wrappers: Vec::new(),
            ..(*f).clone()
        });
    if file.is_some_and(|f| m.probes.attach_allocator(Some(me), &f).unwrap_or(false)) {
        meter.calibrate();
        meter.keep(&key);
    }
    m.probes.forget_target_now(me);
    Some(meter)
}

/// Says on stderr when single-stepped probes ran often enough to matter
/// (over 1,000 times a second: 1 % of a CPU at ~10 µs each); the report
/// has them whenever they ran.
fn warn_of_stepped_probes(report: &memtrace_report::Report) {
    let runs = report.counters.stepped_probe_runs as f64;
    if runs / report.duration_secs.max(1.0) > 1000.0 {
        if let Some(line) = memtrace_report::render::text::stepped(report) {
            crate::note(&format!(
                "warning: {line} (see docs/performance.md, Probe placement)"
            ));
        }
    }
}

/// What the kernel takes to detach one uprobe here (measured, serialized:
/// closing them from several threads at once took as long).
const DETACH_MS: usize = 80;

impl Tracing {
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
                    // Events first: a target found gone below must not
                    // lose the mappings it made before it went.
                    self.drain(cfg, events.get_mut())?;
                    self.sample(cfg)?;
                    let rows = live.rows(cfg.outputs.text_top());
                    let report = self.report(cfg, rows);
                    live.draw(&report);
                }
                _ = housekeeping.tick() => {
                    // (Events first, as above: /proc may say a target is
                    // gone before its last events are read.)
                    self.drain(cfg, events.get_mut())?;
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
                // Held targets (and the command, with unwind tables) were
                // stopped by the kernel at this exec: every exec event of
                // such a run is of a target, and each is continued, known
                // to the lifecycle or not.
                let stopped = self.m.probes.holds
                    || (self.m.unwinder.is_some()
                        && self.child.as_ref().is_some_and(|c| c.pid == pid));
                if self.life.by_pid.contains_key(&pid) {
                    self.life.on_exec(&mut self.m, pid, e.timestamp_ns);
                    self.life.named(pid, &e.comm);
                    // Its new image's allocator hooked, it runs on (to its
                    // entry point first, for its unwind tables).
                    if stopped && self.m.unwinder.is_some() {
                        self.continue_at_entry(pid);
                    } else if stopped {
                        command::cont(pid);
                    }
                } else if stopped {
                    command::cont(pid);
                } else if let Some(w) = &mut self.life.watcher {
                    w.ignored.remove(&pid);
                    w.recent.insert(pid, Instant::now());
                    self.life.consider(&mut self.m, pid);
                }
            }
            k if k == EventKind::Exit as u32 => self.life.on_exit(&mut self.m, pid),
            k if k == EventKind::Fork as u32 => self.on_fork(pid, e),
            k if k == EventKind::OomVictim as u32 => self.on_oom(cfg, e)?,
            k if k == EventKind::ExitStop as u32 => {
                // A CPython target stopped at its end: its last stacks are
                // taken in (named while its code objects live), then it
                // goes on.
                self.m.probes.exit_stopped(pid);
                let stopped = Instant::now();
                let sampled = self.sample(cfg);
                // What it holds at its end is in: its series end here.
                if let Some(t) = self.life.by_pid.get_mut(&pid) {
                    t.series_closed = true;
                }
                command::cont(pid);
                if self.m.verbose {
                    crate::note(&format!(
                        "pid {pid} held at its end for {:.1} ms while its stacks were named",
                        stopped.elapsed().as_secs_f64() * 1e3
                    ));
                }
                sampled?;
            }
            _ => {}
        }
        Ok(())
    }

    /// A target forked `pid`: it is followed, and, if the kernel held it at
    /// its first return to user space, released now that its probes are
    /// in (whatever became of it). One not held ran meanwhile: how long
    /// it ran unseen is kept with it.
    fn on_fork(&mut self, pid: u32, e: &ProcessEvent) {
        let parent = e.trigger_tgid;
        let followed = self.life.on_fork(&mut self.m, pid, parent)
            && self.life.by_pid.get(&pid).is_some_and(|t| !t.exited);
        let after_ms = drain::kernel_now_ns().saturating_sub(e.timestamp_ns) as f64 / 1e6;
        if e.held != 0 {
            match self.m.probes.release_held(pid) {
                Ok(true) => command::cont(pid),
                Ok(false) => {}
                Err(err) => crate::note(&format!("warning: pid {pid}: {err:#}")),
            }
        } else if let Some(t) = self.life.by_pid.get_mut(&pid).filter(|_| followed) {
            t.unseen = Some(Unseen {
                after: "fork".into(),
                ms: after_ms,
            });
        }
        if followed && self.m.verbose {
            let held = match e.held {
                0 => "not held: it ran meanwhile",
                _ => "held until then",
            };
            crate::note(&format!(
                "pid {pid} (forked by pid {parent}): followed, its probes in place \
                 {after_ms:.1} ms after its fork ({held})"
            ));
        }
    }

    /// Refreshes mappings of live targets and notes exits; on a watched
    /// node, looks at processes that exec'd lately and, now and then, at
    /// every process. True once every given target has exited.
    fn housekeeping(&mut self) -> Result<bool> {
        if let Some(child) = &mut self.child {
            child.try_reap();
        }
        self.housekeeping_ticks += 1;
        if let Some(w) = &mut self.life.watcher {
            w.recent.retain(|_, at| at.elapsed() < AFTER_EXEC);
            let recent: Vec<u32> = w.recent.keys().copied().collect();
            for pid in recent {
                self.life.consider(&mut self.m, pid);
                self.m.refresh_maps(pid);
            }
            if self.housekeeping_ticks.is_multiple_of(RESCAN_EVERY) {
                self.scan_node();
                let pids: Vec<u32> = self.life.by_pid.keys().copied().collect();
                for pid in pids {
                    self.m.refresh_maps(pid);
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
        let alive = self.life.retire_ended(&mut self.m);
        for pid in alive.into_iter().filter(|_| refresh_maps) {
            self.m.refresh_maps(pid);
            self.life.attach_files(&mut self.m, pid, true);
        }
        Ok(self.life.all_exited())
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

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

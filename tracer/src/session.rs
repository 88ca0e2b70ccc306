//! A tracing session: attaches to the targets, then every interval drains
//! the kernel's totals into the aggregator, applies mapping events as they
//! arrive, keeps the targets' mappings for symbolization, and ends — on
//! Ctrl-C, SIGTERM, --duration or the exit of every target — with the final
//! report.

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{signal, SignalKind},
};
use tracer_common::{MmapEvent, MmapEventKind, StackKey, StackTotals, STAT_COUNT};

use crate::{
    aggregate::{self, Aggregator, StackIdentity, StackKind},
    allocator,
    attach::{Capacity, Probes},
    cli::Cli,
    drain::{self, StackCache},
    launch::{self, HeldChild},
    mappings::MappingTracker,
    output,
    report::{self, live::Live, MemoryReport, MemorySample, ReportContext, TargetReport},
    symbolize::Symbolizer,
    target::{self, TargetInfo},
};

/// Points kept per stack series (~4 KiB); longer runs are decimated.
const MAX_SAMPLES: usize = 120;
/// Reads of totals and ages tried for one quiet snapshot (see
/// `Session::read_kernel`).
const SNAPSHOT_TRIES: u32 = 3;
/// How often target liveness is checked (a read of /proc/PID/stat).
const HOUSEKEEPING: Duration = Duration::from_millis(200);
/// Mappings are re-read every this many housekeeping ticks (1 s), and at
/// every tick during the first second, while a started command loads its
/// libraries. Symbolization misses refresh on demand too.
const MAPS_EVERY: u64 = 5;

struct Target {
    info: TargetInfo,
    allocators: Vec<String>,
    exited: bool,
    /// Resident memory at every sample while it lives (bounded like the
    /// stack series).
    memory: VecDeque<MemorySample>,
}

/// Everything a running session owns.
struct Session {
    probes: Probes,
    targets: Vec<Target>,
    child: Option<HeldChild>,
    stacks: StackCache,
    agg: Aggregator,
    mappings: MappingTracker,
    symbolizer: Symbolizer,
    stats: [u64; STAT_COUNT as usize],
    /// Anonymous mappings made by the dynamic loader for itself, not counted.
    loader_mappings: u64,
    housekeeping_ticks: u64,
    /// Per kernel stack: blocks released by an exec of their process.
    exec_released: HashMap<StackKey, StackTotals>,
    started: Instant,
}

pub async fn run(cli: Cli, child: Option<HeldChild>) -> Result<()> {
    let outputs = &cli.outputs;
    let capacity = Capacity {
        max_live: cli.max_live,
        max_stacks: cli.max_stacks,
    };
    let mut probes = Probes::load(&capacity)?;
    let mut targets = Vec::new();
    match &child {
        Some(c) => targets.push(attach_command(&mut probes, c, cli.verbose)?),
        None => {
            for &pid in &cli.pids {
                targets.push(attach_pid(&mut probes, pid, cli.verbose)?);
            }
        }
    }
    let events = drain::take_events(&mut probes.bpf)?;
    let mut session = Session {
        probes,
        targets,
        child,
        stacks: StackCache::default(),
        agg: Aggregator::new(MAX_SAMPLES, min_gap(&cli)),
        mappings: MappingTracker::default(),
        symbolizer: Symbolizer::new(),
        stats: [0; STAT_COUNT as usize],
        loader_mappings: 0,
        housekeeping_ticks: 0,
        exec_released: HashMap::new(),
        started: Instant::now(),
    };
    for t in &session.targets {
        session.symbolizer.refresh(t.info.pid);
    }
    if session.child.is_none() {
        // (A held child is still a copy of memtrace until it execs.)
        session.sample_memory(0.0, &cli);
    }
    announce(&session, &cli);
    if let Some(c) = session.child.as_mut() {
        c.release()?;
    }
    // SAFETY: the ring buffer owns its fd and is moved into the AsyncFd,
    // which keeps it open until it deregisters it.
    let mut events = unsafe { AsyncFd::register(events) }
        .map_err(|e| e.into_parts().1)
        .context("polling the event ring buffer")?;
    let mut live = Live::choose(!cli.no_live, output::machine_on_stdout(outputs));
    session.event_loop(&cli, &mut events, &mut live).await?;
    live.finish();

    // Final drain: whatever arrived since the last tick.
    drain::drain_events(events.get_mut(), |e| session.on_mapping_event(e));
    session.sample(&cli)?;
    session.stop_child();
    let report = session.report(&cli, output::stacks_needed(&cli.out, outputs));
    output::write_report(&report, outputs, &cli.out)
}

fn announce(session: &Session, cli: &Cli) {
    let what: Vec<String> = session
        .targets
        .iter()
        .map(|t| {
            format!(
                "pid {} ({}) via {}",
                t.info.pid,
                t.info.comm,
                t.allocators.join(", ")
            )
        })
        .collect();
    let until = match cli.duration {
        Some(d) => format!("for {}", humantime::format_duration(d)),
        None => "until Ctrl-C".to_string(),
    };
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

/// Hooks every allocator mapped by a running process.
fn attach_pid(probes: &mut Probes, pid: u32, verbose: bool) -> Result<Target> {
    let info = target::inspect(pid)?;
    let maps = target::read_maps(pid)?;
    probes.add_target(pid)?;
    let mut allocators: Vec<String> = Vec::new();
    for mapping in maps.iter().filter(|m| m.executable) {
        let (Some(name), Some(file)) = (&mapping.path, target::mapped_file_path(pid, mapping))
        else {
            continue;
        };
        if allocators.contains(name) {
            continue;
        }
        let Ok(points) = allocator::probe_points(&file) else {
            continue; // unreadable or not ELF: nothing to hook there
        };
        if points.is_empty() {
            continue;
        }
        probes.attach_allocator(pid, &file, &points)?;
        describe_probes(verbose, &file, &points);
        allocators.push(name.clone());
    }
    if allocators.is_empty() {
        bail!(
            "no allocator symbols (malloc/free) found in pid {pid} ({}): none of its mapped \
             files exports them",
            info.comm
        );
    }
    Ok(Target {
        info,
        allocators,
        exited: false,
        memory: VecDeque::new(),
    })
}

/// Hooks the allocator of a held child's program before it execs.
fn attach_command(probes: &mut Probes, child: &HeldChild, verbose: bool) -> Result<Target> {
    let pid = child.pid;
    probes.add_target(pid)?;
    let mut allocators = Vec::new();
    for file in launch::libraries_of(&child.program)? {
        let points = allocator::probe_points(&file)
            .with_context(|| format!("reading symbols of {}", file.display()))?;
        if points.is_empty() {
            continue;
        }
        probes.attach_allocator(pid, &file, &points)?;
        describe_probes(verbose, &file, &points);
        allocators.push(file.display().to_string());
    }
    let comm = child
        .program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if allocators.is_empty() {
        bail!(
            "no allocator symbols (malloc/free) found in {} or the libraries it loads",
            child.program.display()
        );
    }
    let exe = std::fs::canonicalize(&child.program).unwrap_or(child.program.clone());
    Ok(Target {
        info: TargetInfo {
            pid,
            comm,
            exe: Some(exe.display().to_string()),
        },
        allocators,
        exited: false,
        memory: VecDeque::new(),
    })
}

impl Session {
    async fn event_loop(
        &mut self,
        cli: &Cli,
        events: &mut AsyncFd<RingBuf<MapData>>,
        live: &mut Live,
    ) -> Result<()> {
        let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + cli.interval, cli.interval);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        let deadline = cli.duration.map(|d| tokio::time::Instant::now() + d);
        loop {
            tokio::select! {
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                _ = sleep_until(deadline) => break,
                guard = events.readable_mut() => {
                    let mut guard = guard.context("waiting for mapping events")?;
                    drain::drain_events(guard.get_inner_mut(), |e| self.on_mapping_event(e));
                    guard.clear_ready();
                }
                _ = tick.tick() => {
                    self.sample(cli)?;
                    let rows = live.rows(self.targets.len(), cli.out.text_top());
                    let report = self.report(cli, rows);
                    live.draw(&report);
                }
                _ = housekeeping.tick() => {
                    if self.housekeeping() {
                        break; // every target has exited
                    }
                }
            }
        }
        Ok(())
    }

    /// Refreshes mappings of live targets and notes exits. True once every
    /// target has exited.
    fn housekeeping(&mut self) -> bool {
        if let Some(child) = &mut self.child {
            child.try_reap();
        }
        self.housekeeping_ticks += 1;
        let refresh_maps = self.housekeeping_ticks <= MAPS_EVERY
            || self.housekeeping_ticks.is_multiple_of(MAPS_EVERY);
        for t in &mut self.targets {
            if t.exited {
                continue;
            }
            if target::is_alive(t.info.pid) {
                if refresh_maps {
                    self.symbolizer.refresh(t.info.pid);
                }
            } else {
                // Its regions stay recorded: memory held at exit (and its
                // ages) is what the report shows.
                t.exited = true;
            }
        }
        self.targets.iter().all(|t| t.exited)
    }

    /// Reads the kernel's totals and the ages of live allocations, appends
    /// a sample to every series, and reads the targets' resident memory.
    fn sample(&mut self, cli: &Cli) -> Result<()> {
        let (kernel, ages) = self.read_kernel(cli)?;
        self.stats = kernel.stats;
        for (key, totals) in kernel.stacks {
            let stack = match self.agg.heap_stack(&key) {
                Some(i) => i,
                None => {
                    let frames = self.stacks.frames(&self.probes.bpf, key.stack_id)?.to_vec();
                    self.agg.intern_heap(key, &frames)
                }
            };
            let totals = match self.exec_released.get(&key) {
                // Blocks an exec'd image left behind count as released.
                Some(r) => StackTotals {
                    freed_bytes: totals.freed_bytes + r.freed_bytes,
                    frees: totals.frees + r.frees,
                    ..totals
                },
                None => totals,
            };
            self.agg.update(stack, totals);
        }
        let mapped: Vec<_> = self.mappings.totals().map(|(s, t)| (s, *t)).collect();
        for (stack, totals) in mapped {
            self.agg.update(stack, totals);
        }
        self.set_ages(cli, ages);
        let t = self.started.elapsed().as_secs_f64();
        self.agg.sample(t);
        self.sample_memory(t, cli);
        Ok(())
    }

    /// Appends the targets' resident memory (and what their traced stacks
    /// hold) at `t` to their memory series.
    fn sample_memory(&mut self, t: f64, cli: &Cli) {
        for target in &mut self.targets {
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
            let replace_last = target.memory.back().is_some_and(|b| t - b.t < min_gap(cli));
            aggregate::push_bounded(&mut target.memory, sample, MAX_SAMPLES, replace_last);
        }
    }

    /// Reads the kernel's per-stack totals and the ages of its live blocks
    /// as one snapshot: the totals are read again after the ages, and the
    /// pair is retried (up to [`SNAPSHOT_TRIES`] times) while they changed
    /// in between, so a stack's age histogram adds up to its outstanding
    /// blocks unless the target allocates without pause.
    fn read_kernel(
        &self,
        cli: &Cli,
    ) -> Result<(drain::KernelTotals, HashMap<StackKey, aggregate::AgeStats>)> {
        let min_age = cli.min_age_secs().unwrap_or(f64::INFINITY);
        let bpf = &self.probes.bpf;
        let mut before = drain::read_totals(bpf)?;
        let mut tries = 0;
        loop {
            let ages = drain::read_live_ages(bpf, min_age)?;
            let after = drain::read_totals(bpf)?;
            tries += 1;
            let quiet = same_totals(&before.stacks, &after.stacks);
            if quiet || tries == SNAPSHOT_TRIES {
                return Ok((after, ages));
            }
            before = after;
        }
    }

    /// Sets every stack's live-allocation ages: heap blocks from the
    /// kernel's timestamps, mappings from their mmap events'. Stacks with
    /// nothing live get empty ages.
    fn set_ages(&mut self, cli: &Cli, heap: HashMap<StackKey, aggregate::AgeStats>) {
        let min_age = cli.min_age_secs().unwrap_or(f64::INFINITY);
        for i in 0..self.agg.stacks.len() {
            self.agg.set_ages(i, aggregate::AgeStats::default());
        }
        for (key, ages) in heap {
            if let Some(i) = self.agg.heap_stack(&key) {
                self.agg.set_ages(i, ages);
            }
        }
        for (stack, ages) in self.mappings.ages(drain::kernel_now_ns(), min_age) {
            self.agg.set_ages(stack, ages);
        }
    }

    fn on_mapping_event(&mut self, e: &MmapEvent) {
        let pid = e.tgid;
        match e.kind {
            k if k == MmapEventKind::Mmap as u32 => {
                let Some(frames) = self.mmap_caller_frames(e) else {
                    self.loader_mappings += 1;
                    return;
                };
                let stack = self.agg.intern(StackIdentity {
                    pid,
                    kind: StackKind::Mmap,
                    frames,
                });
                self.mappings
                    .mmap(pid, e.addr, e.len, stack, e.timestamp_ns);
            }
            k if k == MmapEventKind::Munmap as u32 => self.mappings.unmap(pid, e.addr, e.len),
            k if k == MmapEventKind::Mremap as u32 => self
                .mappings
                .mremap(pid, e.addr, e.len, e.new_addr, e.new_len),
            k if k == MmapEventKind::Exec as u32 => self.on_exec(pid, e.timestamp_ns),
            _ => {}
        }
    }

    /// A target called exec: what its old image held is released, its
    /// mappings and name are re-read, and the new image's allocator is
    /// hooked if it is another file (the same libc stays hooked: probes are
    /// per file and process, and survive exec).
    fn on_exec(&mut self, pid: u32, exec_ns: u64) {
        match drain::release_image(&mut self.probes.bpf, pid, exec_ns) {
            Ok(released) => {
                for (key, t) in released {
                    let r = self.exec_released.entry(key).or_default();
                    r.freed_bytes += t.freed_bytes;
                    r.frees += t.frees;
                }
            }
            Err(e) => crate::note(&format!("warning: pid {pid} exec'd: {e:#}")),
        }
        self.mappings.release_all(pid);
        self.symbolizer.forget(pid);
        self.symbolizer.refresh(pid);
        let Some(t) = self.targets.iter_mut().find(|t| t.info.pid == pid) else {
            return;
        };
        if let Ok(info) = target::inspect(pid) {
            t.info = info;
        }
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let Ok(libraries) = launch::libraries_of(&exe) else {
            return;
        };
        for file in libraries {
            let Ok(points) = allocator::probe_points(&file) else {
                continue;
            };
            if points.is_empty() {
                continue;
            }
            let name = file.display().to_string();
            match self.probes.attach_allocator(pid, &file, &points) {
                Ok(true) if !t.allocators.contains(&name) => t.allocators.push(name),
                Ok(_) => {}
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
    fn mmap_caller_frames(&mut self, e: &MmapEvent) -> Option<Vec<u64>> {
        let n = (e.nr_frames as usize).min(e.frames.len());
        // The frame-pointer walk ends with a zero when it leaves code built
        // with frame pointers; such entries are not frames.
        let frames: Vec<u64> = e.frames[..n]
            .iter()
            .copied()
            .take_while(|&f| f != 0)
            .collect();
        let Some(&first) = frames.first() else {
            return Some(Vec::new());
        };
        let pid = e.tgid;
        if self.symbolizer.mapping(pid, first).is_none() {
            self.symbolizer.refresh(pid);
        }
        let module = self
            .symbolizer
            .mapping(pid, first)
            .and_then(|m| m.path.as_deref());
        if module.is_some_and(is_dynamic_loader) {
            return None;
        }
        let exe = self
            .targets
            .iter()
            .find(|t| t.info.pid == pid)
            .and_then(|t| t.info.exe.clone());
        let in_library = self
            .symbolizer
            .mapping(pid, first)
            .is_some_and(|m| m.is_file() && m.path != exe);
        Some(if in_library && e.user_sp_word != 0 {
            std::iter::once(e.user_sp_word)
                .chain(frames[1..].iter().copied())
                .collect()
        } else {
            frames
        })
    }

    /// In `-- CMD` mode, stops CMD if it still runs (SIGTERM, then SIGKILL
    /// after 2 s) and reaps it.
    fn stop_child(&mut self) {
        let Some(child) = &mut self.child else { return };
        child.stop(Duration::from_secs(2));
        for t in &mut self.targets {
            t.exited = true;
        }
    }

    /// The report as of now, with the `top` first stacks.
    fn report(&mut self, cli: &Cli, top: usize) -> report::Report {
        for t in &mut self.targets {
            t.exited |= !target::is_alive(t.info.pid);
        }
        let targets = self
            .targets
            .iter()
            .map(|t| TargetReport {
                pid: t.info.pid,
                comm: t.info.comm.clone(),
                exe: t.info.exe.clone(),
                exited: t.exited,
                allocators: t.allocators.clone(),
                memory: (!t.memory.is_empty())
                    .then(|| MemoryReport::new(t.memory.iter().copied().collect(), cli.rss_alert)),
            })
            .collect();
        let ctx = ReportContext {
            duration_secs: self.started.elapsed().as_secs_f64(),
            interval_secs: cli.interval.as_secs_f64(),
            targets,
            stats: &self.stats,
            loader_mappings: self.loader_mappings,
            top,
            sort: cli.sort,
            min_age_secs: cli.min_age_secs(),
        };
        report::build(ctx, &self.agg, &mut self.symbolizer)
    }
}

/// A sample closer than this to the previous one (the final sample right
/// after an interval's) replaces it rather than making a short interval.
fn min_gap(cli: &Cli) -> f64 {
    cli.interval.as_secs_f64() / 4.0
}

/// Whether two reads of the per-stack totals are the same.
fn same_totals(a: &[(StackKey, StackTotals)], b: &[(StackKey, StackTotals)]) -> bool {
    a.len() == b.len() && {
        let a: HashMap<_, _> = a.iter().copied().collect();
        b.iter().all(|(k, t)| a.get(k) == Some(t))
    }
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

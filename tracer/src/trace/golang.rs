//! Go targets: a Go process among the targets has its runtime read from
//! outside every interval, without a probe or a stop. Its heap profile's
//! buckets become stacks of kind `go-heap`: in-use bytes and objects
//! unbiased as pprof does, the runtime's own frames above the allocating
//! function left out as pprof leaves them out. Its goroutine list becomes a
//! count with a verdict, and groups by creation site, start function and
//! state. A Go program memtrace cannot read is said once, in one line; its
//! heap is then seen through the runtime's mmap calls only, as is the heap
//! of a program whose memory profiling is off (unless the user asked for it
//! to be switched on).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::Path,
    time::Instant,
};

use memtrace_report::{CountSample, Frame, GoReport, GoroutineGroup, GoroutinesReport, StackKind};

use super::{Tracing, MAX_SAMPLES};
use crate::{
    accounting::{
        series::{push_bounded, StackIdentity, StackTotals},
        verdict,
    },
    discover::{
        allocator,
        golang::{self, heap::Bucket, GoProcess},
        target,
    },
    symbolize::Symbolizer,
};

/// Goroutine groups kept per process; the goroutines of any further ones
/// count in one group of their own ("other").
const MAX_GROUPS: usize = 256;

/// Bucket stacks kept per process; past it the cache starts again (stacks
/// are read again from the runtime as needed).
const MAX_CACHED_STACKS: usize = 1 << 16;

pub(super) struct GoTargets {
    by_pid: HashMap<u32, GoTarget>,
    /// Processes looked at that are not Go programs memtrace reads.
    passed: HashSet<u32>,
    /// `--go-enable-heap-profile`.
    enable_profile: bool,
    /// `--verbose`.
    verbose_attach: bool,
    /// memtrace's own start (clock ticks since boot): a process started
    /// since is seen from its start.
    started: u64,
    /// The lines said (see [`GoTargets::say`]).
    said: HashSet<String>,
}

/// Whether a Go target's heap profile is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HeapProfile {
    /// Read (once the runtime is initialized and its rate is not 0).
    Read,
    /// Memory profiling is off.
    Off,
    /// To be switched on once the runtime is initialized (a command held
    /// at its start: the runtime's own initialization sets the rate).
    Enabling,
    /// Switched on by memtrace (`--go-enable-heap-profile`).
    Enabled,
    /// Its first read did not parse as the layout says: read no more.
    Unreadable,
}

impl HeapProfile {
    fn name(self) -> &'static str {
        match self {
            HeapProfile::Off => "off",
            HeapProfile::Read => "read",
            HeapProfile::Enabling | HeapProfile::Enabled => "enabled",
            HeapProfile::Unreadable => "unreadable",
        }
    }

    /// Whether the heap's bytes are the profile's (its growth by mmap is
    /// then not a stack of its own).
    fn reads(self) -> bool {
        !matches!(self, HeapProfile::Off | HeapProfile::Unreadable)
    }
}

struct GoTarget {
    go: GoProcess,
    heap_profile: HeapProfile,
    rate: u64,
    /// Each bucket's stack as interned, by bucket address.
    stacks: HashMap<u64, Vec<u64>>,
    /// No read of its profile yet, and it ran before memtrace: the stacks
    /// the first read finds held memory before tracing began.
    first_read: bool,
    reads: u64,
    buckets: u64,
    skipped: u64,
    cut: u64,
    read_ms: f64,
    /// What the runtime mapped for its heap while traced.
    heap_mapped_bytes: u64,
    goroutines: Goroutines,
}

#[derive(Default)]
struct Goroutines {
    read: bool,
    /// The first read did not parse as the layout says: read no more.
    refused: bool,
    count: u64,
    stack_bytes: u64,
    skipped: u64,
    series: VecDeque<CountSample>,
    groups: HashMap<GroupKey, Group>,
    /// Start functions by entry PC (None: unnamed).
    starts: HashMap<u64, Option<String>>,
}

/// Goroutines created at one `go` statement (its return PC), started at
/// one function, in one state; go_pc 0: the "other" group.
#[derive(Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    go_pc: u64,
    start_pc: u64,
    state: String,
}

#[derive(Default)]
struct Group {
    count: u64,
    stack_bytes: u64,
    series: VecDeque<(f64, f64)>,
}

impl GoTargets {
    pub(super) fn new(enable_profile: bool, verbose: bool) -> GoTargets {
        GoTargets {
            by_pid: HashMap::new(),
            passed: HashSet::new(),
            enable_profile,
            verbose_attach: verbose,
            started: target::start_time(std::process::id()).unwrap_or(0),
            said: HashSet::new(),
        }
    }

    /// Attaches `pid` if it is a Go program not looked at yet: called
    /// whenever its mappings are read again. Says in one line what it
    /// found.
    pub(super) fn consider(&mut self, pid: u32) {
        if self.by_pid.contains_key(&pid) || !self.passed.insert(pid) {
            return;
        }
        if !allocator::is_go_executable(Path::new(&format!("/proc/{pid}/exe"))) {
            return;
        }
        let go = match GoProcess::attach(pid) {
            Ok(go) => go,
            Err(e) => {
                crate::note(&format!(
                    "{e:#}: its heap is seen through the runtime's mmap calls only"
                ));
                return;
            }
        };
        if self.verbose_attach {
            crate::note(&format!(
                "pid {pid}: {}: layouts from {}",
                go.version,
                go.source.describe()
            ));
        }
        let (heap_profile, line) = first_decision(pid, &go, self.enable_profile);
        self.say(line);
        // Started before memtrace: what its profile holds at the first read
        // was there before tracing began.
        let before = target::start_time(pid).is_some_and(|t| t < self.started);
        self.passed.remove(&pid);
        self.by_pid.insert(
            pid,
            GoTarget {
                go,
                heap_profile,
                rate: 0,
                stacks: HashMap::new(),
                first_read: before,
                reads: 0,
                buckets: 0,
                skipped: 0,
                cut: 0,
                read_ms: 0.0,
                heap_mapped_bytes: 0,
                goroutines: Goroutines::default(),
            },
        );
    }

    /// Once `pid`'s runtime is initialized: switches its heap profile on
    /// if asked, and finds whether the program itself set its rate to 0.
    fn decide(&mut self, pid: u32) {
        let Some(t) = self.by_pid.get_mut(&pid) else {
            return;
        };
        if !matches!(t.heap_profile, HeapProfile::Enabling | HeapProfile::Read)
            || !t.go.initialized()
        {
            return;
        }
        let rate = t.go.profile_rate().unwrap_or(0);
        let (state, line) = match (t.heap_profile, rate) {
            (HeapProfile::Enabling, 0) => enable(pid, &t.go),
            (HeapProfile::Enabling, _) => (HeapProfile::Enabled, None),
            (HeapProfile::Read, 0) => off(pid, &t.go, false),
            (state, _) => (state, None),
        };
        t.heap_profile = state;
        self.say(line);
    }

    /// Says `line` on stderr, once: a process looked at again (its image
    /// seen before and after its exec event) says nothing new.
    fn say(&mut self, line: Option<String>) {
        let Some(line) = line else { return };
        if self.said.len() > 4096 {
            self.said.clear();
        }
        if self.said.insert(line.clone()) {
            crate::note(&line);
        }
    }

    /// Whether an mmap of `pid` with these frames is its Go heap growing
    /// (made under `runtime.(*mheap).grow` or `sysAlloc`) while its heap
    /// profile is read: its bytes are then the profile's stacks', and the
    /// mapping is counted here rather than as a stack of its own.
    pub(super) fn heap_mapping(
        &mut self,
        pid: u32,
        frames: &[u64],
        len: u64,
        symbolizer: &mut Symbolizer,
    ) -> bool {
        let Some(t) = self.by_pid.get_mut(&pid) else {
            return false;
        };
        if !t.heap_profile.reads() {
            return false;
        }
        // The caller of the runtime's mmap wrappers (sysMmap, sysMap,
        // sysAllocOS, ...): the heap's when it is the heap growing (its
        // metadata, mapped further down, stays a stack of its own).
        let caller = frames
            .iter()
            .map(|&pc| symbolizer.function_at(pid, pc))
            .find(|f| !f.as_deref().is_some_and(|f| f.starts_with("runtime.sys")));
        let heap = caller
            .flatten()
            .is_some_and(|f| f == "runtime.(*mheap).grow" || f == "runtime.(*mheap).sysAlloc");
        if heap {
            t.heap_mapped_bytes += len;
        }
        heap
    }

    /// Reads `pid` no more, nor looks at it again until it execs or goes.
    fn pass(&mut self, pid: u32) {
        self.by_pid.remove(&pid);
        self.passed.insert(pid);
    }

    pub(super) fn forget(&mut self, pid: u32) {
        self.by_pid.remove(&pid);
        self.passed.remove(&pid);
    }

    /// What was read from `pid`'s runtime, for its report.
    pub(super) fn report(&self, pid: u32, symbolizer: &mut Symbolizer) -> Option<GoReport> {
        let t = self.by_pid.get(&pid)?;
        Some(GoReport {
            version: t.go.version.clone(),
            layout: match t.go.source {
                golang::layout::Source::Dwarf => "dwarf".into(),
                golang::layout::Source::Table(_) => "table".into(),
            },
            heap_profile: t.heap_profile.name().into(),
            profile_rate: t.rate,
            reads: t.reads,
            buckets: t.buckets,
            buckets_skipped: t.skipped,
            reads_cut: t.cut,
            read_ms: t.read_ms,
            heap_mapped_bytes: t.heap_mapped_bytes,
            goroutines: t
                .goroutines
                .read
                .then(|| t.goroutines.report(pid, symbolizer)),
        })
    }
}

/// A goroutine count that moved by fewer than this over the run is stable,
/// whatever its shape (a few goroutines changing state are no leak).
const MIN_COUNT_CHANGE: f64 = 10.0;

/// The verdict and growth (per second) of a series of goroutine counts:
/// judged as a stack's bytes are, once it moved by [`MIN_COUNT_CHANGE`].
fn count_verdict(points: &[(f64, f64)]) -> verdict::Analysis {
    let mut a = verdict::analyse_points(points, None);
    let (lo, hi) = points.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    if hi - lo < MIN_COUNT_CHANGE {
        a.verdict = memtrace_report::Verdict::Stable;
        a.growth_bytes_per_sec = 0.0;
    }
    a
}

/// Whether `pid`'s heap profile is read, and the line that says so: from
/// its rate once its runtime is initialized, before that (a command held
/// at its start) from whether the linker switched profiling off.
fn first_decision(pid: u32, go: &GoProcess, enable_profile: bool) -> (HeapProfile, Option<String>) {
    let rate = match go.initialized() {
        true => go.profile_rate().unwrap_or(0),
        false => match go.profiling_disabled_by_linker() {
            true => 0,
            false => golang::DEFAULT_PROFILE_RATE,
        },
    };
    match (rate, enable_profile, go.initialized()) {
        (0, false, _) => off(pid, go, go.profiling_disabled_by_linker()),
        (0, true, true) => enable(pid, go),
        (0, true, false) => (HeapProfile::Enabling, None),
        _ => (
            HeapProfile::Read,
            Some(format!(
                "pid {pid}: {}: its heap profile and goroutines are read from the runtime every \
                 interval",
                go.version
            )),
        ),
    }
}

/// That `pid`'s memory profiling is off, and the line that says why.
fn off(pid: u32, go: &GoProcess, by_linker: bool) -> (HeapProfile, Option<String>) {
    let why = match by_linker {
        true => "switched off by the linker: the program never references runtime.MemProfile",
        false => "the program set runtime.MemProfileRate to 0",
    };
    let line = format!(
        "pid {pid}: {}: Go memory profiling is off ({why}); its heap is seen through the \
         runtime's mmap calls only (--go-enable-heap-profile switches it on)",
        go.version
    );
    (HeapProfile::Off, Some(line))
}

/// Sets `pid`'s `runtime.MemProfileRate` (`--go-enable-heap-profile`); the
/// line that says so.
fn enable(pid: u32, go: &GoProcess) -> (HeapProfile, Option<String>) {
    match go.enable_heap_profile() {
        Ok(()) => (
            HeapProfile::Enabled,
            Some(format!(
                "pid {pid}: {}: Go memory profiling was off; memtrace set \
                 runtime.MemProfileRate to {} (--go-enable-heap-profile): allocations from now \
                 on are sampled",
                go.version,
                golang::DEFAULT_PROFILE_RATE
            )),
        ),
        Err(e) => (
            HeapProfile::Off,
            Some(format!("pid {pid}: --go-enable-heap-profile: {e:#}")),
        ),
    }
}

impl Goroutines {
    fn report(&self, pid: u32, symbolizer: &mut Symbolizer) -> GoroutinesReport {
        let points: Vec<(f64, f64)> = self.series.iter().map(|s| (s.t, s.count as f64)).collect();
        let total = count_verdict(&points);
        let mut groups: Vec<GoroutineGroup> = self
            .groups
            .iter()
            .filter(|(_, g)| g.count > 0)
            .map(|(key, g)| {
                let points: Vec<(f64, f64)> = g.series.iter().copied().collect();
                let a = count_verdict(&points);
                let start = self.starts.get(&key.start_pc).cloned().flatten();
                // The main goroutine is made by the runtime's start, in
                // no `go` statement.
                let created_at: Vec<Frame> = match (key.go_pc, start.as_deref()) {
                    (0, _) | (_, Some("runtime.main")) => Vec::new(),
                    (pc, _) => symbolizer.frames_at(pid, pc),
                };
                GoroutineGroup {
                    count: g.count,
                    stack_bytes: g.stack_bytes,
                    state: key.state.clone(),
                    created_at,
                    start,
                    verdict: a.verdict,
                    growth_per_sec: a.growth_bytes_per_sec,
                }
            })
            .collect();
        groups.sort_by(|a, b| b.count.cmp(&a.count).then(a.state.cmp(&b.state)));
        GoroutinesReport {
            count: self.count,
            stack_bytes: self.stack_bytes,
            series: self.series.iter().copied().collect(),
            verdict: total.verdict,
            growth_per_sec: total.growth_bytes_per_sec,
            skipped: self.skipped,
            groups,
        }
    }
}

/// Whether a goroutine started at `start` is one of the runtime's own, as
/// `runtime.isSystemGoroutine` decides: started in a `runtime.` function
/// other than `runtime.main`, `handleAsyncEvent` and (Go 1.22+)
/// `corostart`. The finalizer goroutine (`runtime.runfinq`) and Go 1.25's
/// cleanup goroutines count as the runtime's, as they do while they run
/// no finalizer or cleanup.
fn is_system(start: Option<&str>) -> bool {
    start.is_some_and(|f| {
        f.starts_with("runtime.")
            && !matches!(
                f,
                "runtime.main" | "runtime.handleAsyncEvent" | "runtime.corostart"
            )
    })
}

/// A bucket's stack as the frames it stands for (one per entry: see
/// [`Symbolizer::logical_frame`]), without the runtime's frames above the
/// allocating function (pprof's rule: leading frames in the runtime's
/// packages are hidden; all of them kept when nothing else is there).
fn logical_stack(symbolizer: &mut Symbolizer, pid: u32, pcs: &[u64]) -> Vec<u64> {
    let frames: Vec<Frame> = pcs
        .iter()
        .map(|&pc| symbolizer.logical_frame(pid, pc))
        .collect();
    let first = frames
        .iter()
        .position(|f| !f.function.as_deref().is_some_and(is_runtime))
        .unwrap_or(0);
    frames
        .into_iter()
        .skip(first)
        .map(|f| symbolizer.frame_token(f))
        .collect()
}

/// Whether a function is the Go runtime's own (its package, or since Go
/// 1.21 the internal/runtime ones).
fn is_runtime(function: &str) -> bool {
    function.starts_with("runtime.") || function.starts_with("internal/runtime/")
}

impl Tracing {
    /// Reads every Go target's heap profile into its `go-heap` stacks and
    /// its goroutines into their series; `replace`: this sample replaces
    /// the previous one (too close to it).
    pub(super) fn sample_go(&mut self, t: f64, replace: bool) {
        let pids: Vec<u32> = self.m.golang.by_pid.keys().copied().collect();
        for pid in pids {
            // Looked at but not (or no longer) a target: a watched node's
            // process that its selection left out.
            if !self.life.by_pid.contains_key(&pid) {
                self.m.golang.pass(pid);
                continue;
            }
            let started = Instant::now();
            self.read_go_heap(pid);
            self.read_goroutines(pid, t, replace);
            if let Some(g) = self.m.golang.by_pid.get_mut(&pid) {
                g.read_ms = started.elapsed().as_secs_f64() * 1e3;
            }
        }
    }

    fn read_go_heap(&mut self, pid: u32) {
        self.m.golang.decide(pid);
        let Some(target) = self.m.golang.by_pid.get_mut(&pid) else {
            return;
        };
        if !target.heap_profile.reads() {
            return;
        }
        let Some(rate) = target.go.profile_rate() else {
            return;
        };
        target.rate = rate;
        if rate == 0 {
            return;
        }
        // Past the cache's bound it starts again, every stack read anew (a
        // stack that holds nothing now must still reach its series).
        let refill = target.stacks.len() > MAX_CACHED_STACKS;
        if refill {
            target.stacks.clear();
        }
        let cached = &target.stacks;
        let profile = target.go.heap(|addr, counts| {
            !cached.contains_key(&addr) && (refill || counts.alloc_bytes > counts.free_bytes)
        });
        if target.reads == 0 && profile.buckets.is_empty() && profile.skipped > 0 {
            // Not one bucket reads as the layout says: refused, not guessed.
            target.heap_profile = HeapProfile::Unreadable;
            let line = format!(
                "pid {pid}: {}: its heap profile does not read as the layout from {} says: \
                 not read; its heap is seen through the runtime's mmap calls only",
                target.go.version,
                target.go.source.describe()
            );
            self.m.golang.say(Some(line));
            return;
        }
        target.reads += 1;
        target.buckets = profile.buckets.len() as u64;
        target.skipped += profile.skipped;
        target.cut += u64::from(profile.cut);
        let first = std::mem::replace(&mut target.first_read, false);
        // Per stack: its totals, and the variance of its in-use bytes from
        // sampling.
        let mut totals: HashMap<Vec<u64>, (StackTotals, f64)> = HashMap::new();
        for b in &profile.buckets {
            if let Some(raw) = &b.stack {
                let frames = logical_stack(&mut self.m.symbolizer, pid, raw);
                target.stacks.insert(b.addr, frames);
            }
            let Some(frames) = target.stacks.get(&b.addr) else {
                continue;
            };
            let (t, variance) = totals.entry(frames.clone()).or_default();
            add_bucket(t, b, rate);
            *variance += sampling_variance(b, rate);
        }
        for (frames, (totals, variance)) in totals {
            let identity = StackIdentity {
                pid,
                kind: StackKind::GoHeap,
                frames,
            };
            if !self.m.agg.is_interned(&identity) {
                if totals.allocated_bytes == totals.freed_bytes {
                    continue;
                }
                if !self.room_for_a_stack() {
                    self.m.agg.refuse(None);
                    continue;
                }
            }
            let i = match first {
                true => self.m.agg.intern_present(identity),
                false => self.m.agg.intern(identity),
            };
            self.m.agg.update(i, totals);
            self.m.agg.stacks[i].noise_bytes = 2.0 * variance.sqrt();
        }
    }

    fn read_goroutines(&mut self, pid: u32, t: f64, replace: bool) {
        let Some(target) = self.m.golang.by_pid.get_mut(&pid) else {
            return;
        };
        if target.goroutines.refused {
            return;
        }
        if !target.goroutines.read && !target.go.initialized() {
            return;
        }
        let list = target.go.goroutines();
        // A running program's list holds its main goroutine, started in
        // runtime.main: without it, the list does not read as the layout
        // says. Refused, not guessed.
        let mut has_main = || {
            list.goroutines.iter().any(|g| {
                target
                    .goroutines
                    .starts
                    .entry(g.start_pc)
                    .or_insert_with(|| self.m.symbolizer.function_at(pid, g.start_pc + 1))
                    .as_deref()
                    == Some("runtime.main")
            })
        };
        if !target.goroutines.read && list.entries > 0 && !has_main() {
            target.goroutines.refused = true;
            let line = format!(
                "pid {pid}: {}: its goroutine list does not read as the layout from {} says: \
                 not read",
                target.go.version,
                target.go.source.describe()
            );
            self.m.golang.say(Some(line));
            return;
        }
        let gs = &mut target.goroutines;
        gs.read = true;
        gs.skipped += list.skipped;
        let (mut count, mut stack_bytes) = (0, 0);
        let mut now: HashMap<GroupKey, (u64, u64)> = HashMap::new();
        for g in &list.goroutines {
            let start = gs
                .starts
                .entry(g.start_pc)
                // An entry, not a return address: one past it names it.
                .or_insert_with(|| self.m.symbolizer.function_at(pid, g.start_pc + 1));
            if is_system(start.as_deref()) {
                continue;
            }
            count += 1;
            stack_bytes += g.stack_bytes;
            let mut key = GroupKey {
                go_pc: g.go_pc,
                start_pc: g.start_pc,
                state: target.go.state(g.status, g.wait_reason),
            };
            if !gs.groups.contains_key(&key) && gs.groups.len() >= MAX_GROUPS {
                key = GroupKey {
                    go_pc: 0,
                    start_pc: 0,
                    state: "other".into(),
                };
            }
            let e = now.entry(key).or_default();
            e.0 += 1;
            e.1 += g.stack_bytes;
        }
        gs.count = count;
        gs.stack_bytes = stack_bytes;
        let replace_series = replace && gs.series.back().is_some();
        push_bounded(
            &mut gs.series,
            CountSample { t, count },
            MAX_SAMPLES,
            replace_series,
        );
        for key in now.keys() {
            gs.groups.entry(key.clone()).or_default();
        }
        for (key, group) in &mut gs.groups {
            let (n, bytes) = now.get(key).copied().unwrap_or_default();
            group.count = n;
            group.stack_bytes = bytes;
            // A new group's series starts from none at the previous read.
            if group.series.is_empty() {
                if let Some(prev) = gs.series.iter().rev().nth(1) {
                    group.series.push_back((prev.t, 0.0));
                }
            }
            let replace_last = replace && group.series.len() > 1;
            push_bounded(&mut group.series, (t, n as f64), MAX_SAMPLES, replace_last);
        }
    }
}

/// The variance of a bucket's unbiased in-use bytes from sampling alone:
/// each live object of its average size s was recorded with probability
/// p = 1 - e^(-s/rate) and stands for 1/p of them, so n recorded ones give
/// an estimate B with variance B² (1 - p) / n (0 when every allocation is
/// recorded: objects far larger than the rate, or a rate of 1).
fn sampling_variance(b: &Bucket, rate: u64) -> f64 {
    let c = &b.counts;
    let n = c.allocs.saturating_sub(c.frees);
    if n == 0 || rate <= 1 || c.allocs == 0 {
        return 0.0;
    }
    let size = c.alloc_bytes as f64 / c.allocs as f64;
    let p = 1.0 - (-size / rate as f64).exp();
    let (_, bytes) = b.in_use(rate);
    (bytes as f64).powi(2) * (1.0 - p) / n as f64
}

/// Adds a bucket's counts, unbiased for `rate`, to a stack's totals: what
/// it allocated, and what of that is freed (allocated minus in use).
fn add_bucket(t: &mut StackTotals, b: &Bucket, rate: u64) {
    let (objects, bytes) = b.allocated(rate);
    let (live_objects, live_bytes) = b.in_use(rate);
    t.allocations += objects;
    t.allocated_bytes += bytes;
    t.frees += objects.saturating_sub(live_objects);
    t.freed_bytes += bytes.saturating_sub(live_bytes);
}

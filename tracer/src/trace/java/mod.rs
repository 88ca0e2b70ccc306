//! Java targets: a HotSpot JVM among the targets is attached to through
//! its attach mechanism (as `jcmd` does) and runs a JFR recording of its
//! memory events for memtrace, dumped and read every interval. The leak
//! profiler's live object samples, per Java allocation stack, become
//! stacks of kind `java-heap` (frames `language: "java"`): each site's
//! share of the samples' weight (each weighed by the allocation buffer
//! refill it was taken at, scaled by its stretch's sampling: `acceptance`)
//! applied to the heap's growth after collections since the recording
//! began. The heap after each collection is the JVM's memory line. Each dump has the JVM find each sample's path to a GC root
//! (a bounded walk of its heap), which tells the samples still reachable
//! from the garbage it has not collected yet. At the end the recording is
//! stopped and memtrace's files removed. A JVM that cannot be attached to
//! (the mechanism disabled, SIGQUIT not caught, no JFR) is said once, in
//! one line, and keeps its native view only.

mod acceptance;

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use memtrace_report::{Frame, JavaReport, JavaRetention, Language, StackKind};

use super::{
    runtime::{self, ReadSchedule},
    Tracing,
};
use crate::discover::{
    java::{self, attach::Attach, HeapAfterGc, JavaFrame, OldSample, Recording, Refill},
    target,
};

/// How long a JVM started since memtrace may take to catch SIGQUIT (it
/// does so once its signal dispatcher runs); one that ran before is
/// refused at once.
const HANDLER_WAIT: Duration = Duration::from_secs(10);

/// How long its attach listener may take to start after SIGQUIT.
const ATTACH_WAIT: Duration = Duration::from_secs(5);

/// Java stacks followed per process; further ones are left out.
const MAX_STACKS: usize = 1 << 14;

/// Collections kept in a JVM's heap series.
const MAX_HEAP_POINTS: usize = 4096;

pub(super) struct JavaTargets {
    by_pid: HashMap<u32, JavaTarget>,
    /// JVMs may be attached to (not `--no-runtime-attach`, not `--all`).
    enabled: bool,
    /// The recording's `maxage`: what a dump holds.
    maxage: Duration,
    verbose: bool,
    /// memtrace's own start (clock ticks since boot), and as nanoseconds
    /// since the epoch (JFR's clock).
    started: u64,
    started_nanos: i64,
}

enum State {
    /// Its SIGQUIT handler is not installed yet (a JVM just started).
    Waiting {
        since: Instant,
        fresh: bool,
    },
    Recording(Box<Recording>),
    Refused,
    Lost,
    /// Stopped by memtrace at the end.
    Done,
}

struct JavaTarget {
    state: State,
    reason: Option<String>,
    recording: Option<String>,
    reads: u64,
    reads_failed: u64,
    read_ms: f64,
    dump_bytes: u64,
    samples: u64,
    own_samples: u64,
    stopped: bool,
    /// The heap after each collection seen, by GC id.
    heap: Vec<HeapAfterGc>,
    /// Each live sample's weight, by (thread, allocation ticks); each
    /// thread's last allocation buffer size; samples weighed by a guess,
    /// and not weighed (left out).
    weights: HashMap<(i64, i64), u64>,
    buffers: HashMap<i64, u64>,
    unweighed: (u64, u64),
    /// How many of each stretch's allocations were sampled.
    acceptance: acceptance::Acceptance,
    /// The heap after the JVM's last collection before recording began.
    base: Option<u64>,
    /// The samples reached by the walks since the collection `reached_gc`
    /// (so live at it: what is unreachable never is reachable again).
    reached: HashSet<(i64, i64)>,
    reached_gc: i64,
    /// Per Java stack (its frames' tokens): what it held at the last
    /// read, and what was seen rise and fall since recording began.
    seen: HashMap<Vec<u64>, super::runtime::Seen>,
    stacks_left_out: u64,
    retained: Vec<JavaRetention>,
    /// The last dump's walk for paths to GC roots (ms), whether it told
    /// reachability; when the next read may be (each walk stops the JVM).
    walk_ms: f64,
    reachable: bool,
    schedule: ReadSchedule,
}

impl JavaTargets {
    pub(super) fn new(enabled: bool, interval: Duration, verbose: bool) -> JavaTargets {
        let now_nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        JavaTargets {
            by_pid: HashMap::new(),
            enabled,
            // Each dump closes a chunk: two intervals' worth keeps the
            // one read and the one before.
            maxage: (interval * 2).max(Duration::from_secs(2)),
            verbose,
            started: target::start_time(std::process::id()).unwrap_or(0),
            started_nanos: now_nanos,
        }
    }

    /// Looks at `pid` if it is not a target yet (called whenever its
    /// mappings are read again: the `java` launcher loads the JVM after
    /// its start, so a process is looked at again each time): a JVM is
    /// attached to at the next sample, or refused in one line.
    pub(super) fn consider(&mut self, pid: u32) {
        if !self.enabled || self.by_pid.contains_key(&pid) || !java::is_jvm(pid) {
            return;
        }
        let mut t = JavaTarget {
            state: State::Waiting {
                since: Instant::now(),
                fresh: target::start_time(pid).is_some_and(|t| t >= self.started),
            },
            reason: None,
            recording: None,
            reads: 0,
            reads_failed: 0,
            read_ms: 0.0,
            dump_bytes: 0,
            samples: 0,
            own_samples: 0,
            stopped: false,
            heap: Vec::new(),
            weights: HashMap::new(),
            buffers: HashMap::new(),
            unweighed: (0, 0),
            acceptance: Default::default(),
            base: None,
            reached: HashSet::new(),
            reached_gc: -1,
            seen: HashMap::new(),
            stacks_left_out: 0,
            retained: Vec::new(),
            walk_ms: 0.0,
            reachable: false,
            schedule: ReadSchedule::new(),
        };
        if java::attach_disabled(pid) {
            refuse(
                pid,
                &mut t,
                "it was started with -XX:+DisableAttachMechanism".into(),
            );
        }
        self.by_pid.insert(pid, t);
    }

    pub(super) fn forget(&mut self, pid: u32) {
        self.by_pid.remove(&pid);
    }

    /// Moves `pid` on: attached and recording once it catches SIGQUIT.
    /// True when its recording is to be read now.
    fn advance(&mut self, pid: u32) -> bool {
        let (maxage, verbose) = (self.maxage, self.verbose);
        let Some(t) = self.by_pid.get_mut(&pid) else {
            return false;
        };
        match &t.state {
            State::Waiting { since, fresh } => {
                let attach = match Attach::existing(pid) {
                    Some(a) => Ok(a),
                    None => match target::catches_signal(pid, 3) {
                        Ok(false) if *fresh && since.elapsed() < HANDLER_WAIT => return false,
                        Err(_) => return false,
                        Ok(_) => Attach::start(pid, ATTACH_WAIT),
                    },
                };
                let recording = attach.and_then(|a| Recording::start(pid, a, maxage));
                match recording {
                    Ok(r) => {
                        crate::note(&format!(
                            "pid {pid}: JFR recording {:?} of its memory events started through \
                             the JVM's attach mechanism; dumped every interval, stopped at the \
                             end{}",
                            r.name,
                            match verbose {
                                true => format!(" (maxage {} s)", maxage.as_secs()),
                                false => String::new(),
                            }
                        ));
                        t.recording = Some(r.name.clone());
                        t.state = State::Recording(Box::new(r));
                        true
                    }
                    Err(e) => {
                        refuse(pid, t, format!("{e:#}"));
                        false
                    }
                }
            }
            State::Recording(_) => t.schedule.due(),
            State::Refused | State::Lost | State::Done => false,
        }
    }

    /// The processes whose recording this sample did not read: their
    /// `java-heap` stacks take no point now.
    pub(super) fn unread(&mut self) -> HashSet<u32> {
        runtime::unread(
            self.by_pid
                .iter_mut()
                .map(|(&pid, t)| (pid, &mut t.schedule)),
        )
    }

    /// The next sample reads every recording (the run's final sample).
    pub(super) fn read_all_next(&mut self) {
        runtime::read_all_next(self.by_pid.values_mut().map(|t| &mut t.schedule));
    }

    /// Stops every recording memtrace started. Idempotent.
    pub(super) fn finish(&mut self) {
        for (&pid, t) in &mut self.by_pid {
            let State::Recording(_) = t.state else {
                continue;
            };
            let State::Recording(r) = std::mem::replace(&mut t.state, State::Done) else {
                unreachable!()
            };
            match r.stop() {
                Ok(()) => t.stopped = true,
                Err(e) if target::is_alive(pid) => crate::note(&format!(
                    "warning: pid {pid}: stopping JFR recording {:?}: {e:#}",
                    r.name
                )),
                // The JVM exited: its recording ended with it.
                Err(_) => t.stopped = true,
            }
        }
    }

    /// What was read from `pid`'s recording, for its report.
    pub(super) fn report(&self, pid: u32) -> Option<JavaReport> {
        let t = self.by_pid.get(&pid)?;
        Some(JavaReport {
            state: match t.state {
                State::Refused => "refused",
                State::Lost => "lost",
                State::Waiting { .. } => "attaching",
                State::Recording(_) | State::Done => "recorded",
            }
            .into(),
            reason: t.reason.clone(),
            recording: t.recording.clone(),
            reads: t.reads,
            reads_failed: t.reads_failed,
            read_ms: t.read_ms,
            dump_bytes: t.dump_bytes,
            samples: t.samples,
            own_samples: t.own_samples,
            samples_weight_guessed: t.unweighed.0,
            samples_unweighed: t.unweighed.1,
            stacks_left_out: t.stacks_left_out,
            heap_after_gc: t
                .heap
                .iter()
                .map(|h| ((h.nanos - self.started_nanos) as f64 / 1e9, h.used))
                .collect(),
            retained: t.retained.clone(),
            walk_ms: t.walk_ms,
            reachability: t.reachable,
            stopped: t.stopped,
        })
    }
}

impl Drop for JavaTargets {
    /// A recording memtrace started is stopped whatever ends the run.
    fn drop(&mut self) {
        self.finish();
    }
}

fn refuse(pid: u32, t: &mut JavaTarget, reason: String) {
    crate::note(&format!(
        "pid {pid}: its Java heap not read: {reason}; its native memory only"
    ));
    t.reason = Some(reason);
    t.state = State::Refused;
}

/// A JFR frame as a report frame.
fn frame_of(f: &JavaFrame) -> Frame {
    Frame {
        function: Some(format!("{}.{}", f.class, f.method)),
        line: f.line,
        language: Some(Language::Java),
        ..Frame::default()
    }
}

/// The heap after the JVM's last collection before recording began: the
/// leak profiler notes the heap after the last collection with each
/// sample, so the earliest sample allocated before the first collection
/// recorded tells it; without one, that first collection's. Never more
/// than that first collection's (after a full collection forced from
/// outside, as `jcmd GC.class_histogram` does, the noted figure was seen
/// above every later one: every site then read 0).
fn base(samples: &[OldSample], heap: &[HeapAfterGc]) -> Option<u64> {
    let first = heap.first()?;
    let noted = samples
        .iter()
        .filter(|s| s.allocated_nanos < first.nanos)
        .min_by_key(|s| s.allocated_nanos)
        .map(|s| s.heap_used);
    Some(noted.map_or(first.used, |n| n.min(first.used)))
}

/// The longest a refill event and the sample taken at it may be apart
/// (both read the clock at the same allocation), in seconds.
const MATCH_SECS: f64 = 0.005;

/// Each live sample's weight: the bytes of allocation it stands for. The
/// leak profiler samples at refills of a thread's allocation buffer (the
/// object that no longer fits, chosen with a chance of its size over the
/// buffer's) and at allocations outside it (always): so a sample stands
/// for the buffer's size, or for its own. A sample's refill is the
/// thread's one at the same moment, found in the dump after the one it
/// was taken in and remembered for its life; without it, the thread's
/// last buffer size (`guessed`), or none (`missing`: left out).
fn weigh(
    samples: &[OldSample],
    refills: &[Refill],
    ticks_per_second: i64,
    weights: &mut HashMap<(i64, i64), u64>,
    buffers: &mut HashMap<i64, u64>,
    missed: &mut (u64, u64),
) {
    let mut by_thread: HashMap<i64, Vec<&Refill>> = HashMap::new();
    for r in refills {
        by_thread.entry(r.thread_id).or_default().push(r);
    }
    for list in by_thread.values_mut() {
        list.sort_by_key(|r| r.ticks);
        if let Some(last) = list.iter().rev().find(|r| !r.outside) {
            buffers.insert(last.thread_id, last.weight);
        }
    }
    let live: HashSet<(i64, i64)> = samples
        .iter()
        .map(|s| (s.thread_id, s.allocated_ticks))
        .collect();
    let tolerance = (ticks_per_second as f64 * MATCH_SECS) as i64;
    weights.retain(|k, _| live.contains(k));
    for key in live {
        if weights.contains_key(&key) {
            continue;
        }
        let nearest = by_thread.get(&key.0).and_then(|list| {
            let i = list.partition_point(|r| r.ticks < key.1);
            [i.checked_sub(1), Some(i)]
                .into_iter()
                .flatten()
                .filter_map(|i| list.get(i))
                .min_by_key(|r| (r.ticks - key.1).abs())
                .filter(|r| (r.ticks - key.1).abs() <= tolerance)
        });
        let weight = match nearest {
            Some(r) => r.weight,
            None => match buffers.get(&key.0) {
                Some(&w) => {
                    missed.0 += 1;
                    w
                }
                None => {
                    missed.1 += 1;
                    continue;
                }
            },
        };
        weights.insert(key, weight);
    }
}

impl Tracing {
    /// Starts the recordings of JVMs that are ready, and reads each one
    /// recording into its `java-heap` stacks.
    pub(super) fn sample_java(&mut self) {
        let pids: Vec<u32> = self.m.java.by_pid.keys().copied().collect();
        for pid in pids {
            if self.life.by_pid.get(&pid).is_none_or(|t| t.exited) {
                continue;
            }
            if self.m.java.advance(pid) {
                self.read_java_heap(pid);
            }
        }
    }

    fn read_java_heap(&mut self, pid: u32) {
        let Some(t) = self.m.java.by_pid.get_mut(&pid) else {
            return;
        };
        let State::Recording(r) = &t.state else {
            return;
        };
        let started = Instant::now();
        let (chunks, bytes) = match r.dump() {
            Ok(d) => d,
            Err(e) => {
                t.reads_failed += 1;
                if !target::is_alive(pid) {
                    return;
                }
                // Said once; counted in the report.
                if t.reads_failed == 1 {
                    crate::note(&format!("pid {pid}: reading its JFR recording: {e:#}"));
                }
                if t.reads_failed > 2 && t.reads == 0 {
                    t.reason = Some(format!("{e:#}"));
                    t.state = State::Lost;
                }
                return;
            }
        };
        t.reads += 1;
        t.read_ms = started.elapsed().as_secs_f64() * 1e3;
        t.dump_bytes = bytes;
        let (samples, heap, refills, ticks_per_second) = java::samples(&chunks);
        // One point per collection (G1 may write its summary twice), the
        // ones not seen before.
        for h in heap {
            let newest = t.heap.last().map_or(-1, |l| l.gc_id);
            if h.gc_id > newest && t.heap.len() < MAX_HEAP_POINTS {
                t.heap.push(h);
            }
        }
        t.samples = samples.len() as u64;
        // The walk for paths to GC roots stops the JVM.
        let walk = Duration::from_nanos(samples.iter().map(|s| s.emit_ns).max().unwrap_or(0));
        t.walk_ms = walk.as_secs_f64() * 1e3;
        t.schedule.paused(walk);
        // Reachability is known when a walk ran (a dump without one emits
        // its samples in no time) and ended within its cutoff: a sample
        // it did not reach is garbage the JVM has not collected yet.
        let reached = !walk.is_zero() && walk < java::WALK_CUTOFF;
        t.reachable = reached;
        t.retained = retention(&samples);
        weigh(
            &samples,
            &refills,
            ticks_per_second,
            &mut t.weights,
            &mut t.buffers,
            &mut t.unweighed,
        );
        t.acceptance.take(&refills);
        let first_seen: Vec<(i64, u64)> = samples
            .iter()
            .filter_map(|s| {
                let w = t.weights.get(&(s.thread_id, s.allocated_ticks))?;
                Some((s.allocated_nanos, *w))
            })
            .collect();
        t.acceptance.close(&t.heap, &first_seen);
        if t.base.is_none() {
            t.base = base(&samples, &t.heap);
        }
        // The samples stand for the heap after the last collection grown
        // since recording began (they are of objects allocated since
        // then, which that collection kept: garbage it has not reached
        // yet included). Each site holds its reachable samples' share of
        // the samples' weight (all of its samples' when reachability is
        // not known) of that growth. Until a collection, nothing is known
        // live.
        let (Some(base), Some(gc)) = (t.base, t.heap.last().copied()) else {
            return;
        };
        t.schedule.read();
        let grown = gc.used.saturating_sub(base) as f64;
        let (own, kept): (Vec<&OldSample>, Vec<&OldSample>) = samples
            .iter()
            .filter(|s| s.allocated_nanos <= gc.nanos)
            .partition(|s| s.is_recordings_own());
        t.own_samples = own.len() as u64;
        // A sample's refill, scaled by how sparsely its stretch between
        // collections was sampled.
        let weight = |s: &OldSample| {
            let w = *t.weights.get(&(s.thread_id, s.allocated_ticks))?;
            Some(w as f64 * t.acceptance.factor(s.allocated_nanos))
        };
        let total: f64 = kept.iter().filter_map(|s| weight(s)).sum();
        // The samples' effective number (unequal weights count for less).
        let squares: f64 = kept
            .iter()
            .filter_map(|s| weight(s))
            .map(|w| w.powi(2))
            .sum();
        let effective = total * total / squares.max(1.0);
        // The sites are taken as of the last collection (its heap is the
        // bytes shared out; samples allocated after it are not counted): a
        // sample is live at it when a walk since it reached the sample. A
        // walk later than that collection misses what died in between;
        // reads with no collection between them add up what their walks
        // reached. (Taking only this walk's, a cache's share fell at every
        // read without a collection since the last: its evicted entries
        // left, its new ones were not counted yet. Garbage is reached by
        // no walk.)
        if reached {
            let now = kept
                .iter()
                .filter(|s| s.root.is_some())
                .map(|s| (s.thread_id, s.allocated_ticks));
            if t.reached_gc != gc.gc_id {
                t.reached.clear();
                t.reached_gc = gc.gc_id;
            }
            t.reached.extend(now);
        }
        let reachable =
            |s: &OldSample| !reached || t.reached.contains(&(s.thread_id, s.allocated_ticks));
        let mut sites: HashMap<Vec<u64>, (u64, f64)> = HashMap::new();
        for s in kept.iter().filter(|s| reachable(s)) {
            let Some(w) = weight(s) else {
                continue;
            };
            let tokens: Vec<u64> = s
                .frames
                .iter()
                .map(|f| self.m.symbolizer.frame_token(frame_of(f)))
                .collect();
            if !t.seen.contains_key(&tokens) && t.seen.len() >= MAX_STACKS {
                t.stacks_left_out += 1;
                continue;
            }
            let e = sites.entry(tokens).or_default();
            e.0 += 1;
            e.1 += w / total;
        }
        for frames in t.seen.keys() {
            sites.entry(frames.clone()).or_default();
        }
        let updates: Vec<_> = sites
            .into_iter()
            // A site's share of the samples' weight, of the growth; the
            // share's variance is binomial's, p (1 - p) / n.
            .map(|(frames, (k, share))| {
                let seen = t.seen.entry(frames.clone()).or_default();
                super::runtime::rise_and_fall(seen, (grown * share).round() as u64, k);
                let variance = grown * grown * share * (1.0 - share).max(0.0) / effective;
                (frames, seen.totals, variance)
            })
            .collect();
        for (frames, totals, variance) in updates {
            // Recording began with memtrace: every stack starts from zero.
            self.update_runtime_stack(pid, StackKind::JavaHeap, frames, totals, variance);
        }
    }
}

/// The samples' paths to GC roots, per allocating frame, class and path,
/// most samples first.
fn retention(samples: &[OldSample]) -> Vec<JavaRetention> {
    let mut by: HashMap<String, JavaRetention> = HashMap::new();
    for s in samples
        .iter()
        .filter(|s| !s.path.is_empty() && !s.is_recordings_own())
    {
        let (function, line) = s.frames.first().map_or(("?".to_string(), None), |f| {
            (format!("{}.{}", f.class, f.method), f.line)
        });
        let r = JavaRetention {
            function,
            line,
            class: s.class.clone(),
            samples: 0,
            // Array indexes differ per object: one path per shape.
            path: s.path.iter().map(|p| without_index(p)).collect(),
            root: s.root.clone(),
        };
        let key = format!(
            "{}:{:?}:{:?}:{}",
            r.function,
            r.line,
            r.class,
            r.path.join("\n")
        );
        by.entry(key).or_insert(r).samples += 1;
    }
    let mut out: Vec<JavaRetention> = by.into_values().collect();
    out.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.function.cmp(&b.function)));
    out.truncate(32);
    out
}

/// `java.lang.Object[][50868]` → `java.lang.Object[][i]`.
fn without_index(step: &str) -> String {
    match step.rsplit_once('[') {
        Some((head, tail))
            if tail
                .trim_end_matches(']')
                .chars()
                .all(|c| c.is_ascii_digit())
                && !tail.starts_with(']') =>
        {
            format!("{head}[i]")
        }
        _ => step.to_string(),
    }
}

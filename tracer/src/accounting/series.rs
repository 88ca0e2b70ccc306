//! Aggregation: one series per allocation stack. Stacks from the kernel's
//! heap accounting and from userspace mapping accounting are interned into
//! one table; every interval each stack gets a sample of its outstanding
//! bytes and count, and the ages of its live allocations. A series has at
//! most `max_samples` points: when full, every other one is dropped, so it
//! spans the whole run in bounded memory (the same rule bounds the
//! per-process memory series, see [`push_bounded`]). The table holds at
//! most `max_series` series (`--max-stacks`): when a new stack finds it
//! full, the series holding nothing are evicted (a heap stack's come back
//! when its kernel totals change; what evicted series counted stays in the
//! totals), and if none is, the new stack gets no series (`series_full`),
//! so a target churning millions of stacks cannot grow memtrace.
//!
//! Each series, and each process's stacks together, also keep their peak:
//! the most outstanding at any sample, updated at every sample (so
//! decimation never loses it), with a bound on what the samples may have
//! missed between them ([`Peak`]). The kernel keeps no per-stack
//! outstanding count (only what was allocated; the live table says what was
//! freed), so an exact peak would cost a lookup on every free: the peak is
//! as sampled, every `--interval`.

use std::collections::{HashMap, HashSet, VecDeque};

pub use memtrace_report::StackKind;
use tracer_common::StackKey;

/// A stack's running totals, `outstanding = allocated - freed`. Heap
/// stacks: what the kernel counted allocated, freed what the live table no
/// longer holds (see `drain::read_kernel`); mapping stacks: counted from
/// mmap and munmap events (`mappings`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackTotals {
    pub allocated_bytes: u64,
    pub allocations: u64,
    pub freed_bytes: u64,
    pub frees: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StackIdentity {
    pub pid: u32,
    pub kind: StackKind,
    /// Return addresses, innermost first; empty when the stack was lost.
    pub frames: Vec<u64>,
}

/// Outstanding memory of one stack at one sampling time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Seconds since tracing started.
    pub t: f64,
    pub bytes: u64,
    pub count: u64,
    /// The zero a new stack's series starts from (true by construction:
    /// nothing of it was outstanding before), not a measurement.
    pub origin: bool,
}

/// Upper edges (seconds) of the age buckets of live bytes; the last bucket
/// is open-ended.
pub const AGE_EDGES: [f64; 4] = [10.0, 60.0, 600.0, 3600.0];
pub const AGE_BUCKETS: usize = AGE_EDGES.len() + 1;

/// Ages of one stack's live allocations at one time (from the kernel's
/// per-allocation timestamps, or the mmap event's for mappings).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AgeStats {
    /// Age of the oldest live allocation (0 with none).
    pub oldest_secs: f64,
    pub bytes: [u64; AGE_BUCKETS],
    pub allocations: [u64; AGE_BUCKETS],
    /// Bytes and allocations at least `--min-age` old.
    pub old_bytes: u64,
    pub old_allocations: u64,
}

impl AgeStats {
    /// The same ages with bytes and allocations multiplied by `factor`
    /// (sampling's unbiasing; see [`unbias`]).
    pub fn scaled(self, factor: f64) -> AgeStats {
        let scale = |v: u64| (v as f64 * factor).round() as u64;
        AgeStats {
            oldest_secs: self.oldest_secs,
            bytes: self.bytes.map(scale),
            allocations: self.allocations.map(scale),
            old_bytes: scale(self.old_bytes),
            old_allocations: scale(self.old_allocations),
        }
    }

    /// Bytes and allocations counted, all ages together.
    pub fn totals(&self) -> (u64, u64) {
        (self.bytes.iter().sum(), self.allocations.iter().sum())
    }

    /// Adds `other`'s allocations (another kernel stack of the same
    /// series).
    pub fn merge(&mut self, other: &AgeStats) {
        self.oldest_secs = self.oldest_secs.max(other.oldest_secs);
        for b in 0..AGE_BUCKETS {
            self.bytes[b] += other.bytes[b];
            self.allocations[b] += other.allocations[b];
        }
        self.old_bytes += other.old_bytes;
        self.old_allocations += other.old_allocations;
    }

    /// Counts one live allocation of `bytes`, `age_secs` old; `allocations`
    /// is 0 for a further piece of an allocation already counted.
    pub fn add(&mut self, age_secs: f64, bytes: u64, allocations: u64, min_age_secs: f64) {
        let bucket = AGE_EDGES
            .iter()
            .position(|&edge| age_secs < edge)
            .unwrap_or(AGE_EDGES.len());
        self.bytes[bucket] += bytes;
        self.allocations[bucket] += allocations;
        self.oldest_secs = self.oldest_secs.max(age_secs);
        if age_secs >= min_age_secs {
            self.old_bytes += bytes;
            self.old_allocations += allocations;
        }
    }
}

/// The most held at one sample, and a bound on what was held between
/// samples: over every interval, what was outstanding at its start plus
/// every byte allocated during it. `bytes == bound`: exact.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Peak {
    pub bytes: u64,
    pub count: u64,
    /// The first sample that held `bytes` (seconds since tracing started).
    pub t: f64,
    pub bound: u64,
}

impl Peak {
    /// Takes in one sample at `t`; `bound` is its interval's (never below
    /// what the sample holds).
    fn see(&mut self, t: f64, bytes: u64, count: u64, bound: u64) {
        if bytes > self.bytes {
            (self.bytes, self.count, self.t) = (bytes, count, t);
        }
        self.bound = self.bound.max(bound).max(bytes);
    }
}

/// A process's peaks: its traced stacks together, and its resident memory.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessPeaks {
    pub traced: Peak,
    /// The highest RSS read and when (None before the first read).
    pub rss: Option<(u64, f64)>,
}

pub struct StackSeries {
    pub identity: StackIdentity,
    /// Latest cumulative totals.
    pub totals: StackTotals,
    pub samples: VecDeque<Sample>,
    /// Ages of the live allocations at the latest sample.
    pub ages: AgeStats,
    /// The kernel's walk of this stack stopped before the outermost frame.
    pub truncated: bool,
    /// How far its latest sample may stray from the truth by sampling
    /// alone (a Go heap profile's: twice its standard error), in bytes; 0
    /// when counted exactly.
    pub noise_bytes: f64,
    /// The kernel heap stacks whose totals this series adds up: one, or
    /// also truncated walks of the same calls (see
    /// [`Aggregator::intern_heap`]).
    pub keys: Vec<StackKey>,
    /// What kernel stacks of it counted before they were taken out of the
    /// kernel's tables (see [`Aggregator::retire_heap`]): they count from
    /// zero again if they come back.
    retired: StackTotals,
    /// The most it held at a sample.
    pub peak: Peak,
    /// Outstanding bytes and allocated bytes at the previous sample (the
    /// start of the interval that [`Peak::bound`] bounds).
    last_outstanding: u64,
    last_allocated: u64,
}

impl StackSeries {
    pub fn outstanding_bytes(&self) -> u64 {
        self.totals
            .allocated_bytes
            .saturating_sub(self.totals.freed_bytes)
    }

    pub fn outstanding_allocations(&self) -> u64 {
        self.totals.allocations.saturating_sub(self.totals.frees)
    }
}

pub struct Aggregator {
    index: HashMap<StackIdentity, usize>,
    heap_index: HashMap<StackKey, usize>,
    /// Latest totals of each kernel heap stack.
    heap_totals: HashMap<StackKey, StackTotals>,
    /// Heap series by (pid, first frame): where a truncated walk's
    /// completion is looked for.
    by_head: HashMap<(u32, u64), Vec<usize>>,
    /// Truncated walks folded into a complete one, by (pid, first frame):
    /// their kernel stack and frames, taken apart again should a second
    /// complete walk begin with the same frames.
    folded: HashMap<(u32, u64), Vec<FoldedWalk>>,
    pub stacks: Vec<StackSeries>,
    /// Samples kept per stack; older ones are dropped.
    max_samples: usize,
    /// Series kept at most.
    max_series: usize,
    /// A sample closer than this to the previous one replaces it (the final
    /// sample right after an interval's).
    min_gap: f64,
    last_sample_t: f64,
    /// Heap stacks without a series (evicted while holding nothing, or
    /// refused while the table was full), with their totals as last read:
    /// they get a series again when those change. Bounded by the kernel's
    /// per-stack table.
    dormant: HashMap<StackKey, StackTotals>,
    /// What evicted mapping series had counted, and how many there were
    /// (a mapping stack seen again starts a new series of its own).
    retired: StackTotals,
    retired_stacks: u64,
    /// The same for dormant heap stacks taken out of the kernel's tables.
    retired_heap: StackTotals,
    retired_heap_stacks: u64,
    /// Series evicted to make room.
    pub evicted: u64,
    /// New stacks that found the table full of stacks holding memory.
    pub series_full: u64,
    /// The last eviction freed little: no other until the next sample.
    crowded: bool,
    /// Each process's peaks, by pid.
    pub peaks: HashMap<u32, ProcessPeaks>,
}

/// A truncated walk's kernel stack and frames (see `Aggregator::folded`).
type FoldedWalk = (StackKey, Vec<u64>);

/// What the stacks without a series add up to (see [`Aggregator::departed`]),
/// by kind.
pub struct Departed {
    /// Dormant heap stacks (evicted while holding nothing, or refused).
    pub heap: DepartedKind,
    /// Evicted mapping stacks.
    pub mmap: DepartedKind,
}

/// [`Departed`] of one kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DepartedKind {
    pub totals: StackTotals,
    pub stacks: u64,
    /// Of them, stacks holding memory (refused ones: the table was full).
    pub holding_memory: u64,
}

/// Where each old index of a series went after a removal (None: removed).
pub type Remap = Vec<Option<usize>>;

impl Aggregator {
    pub fn new(max_samples: usize, max_series: usize, min_gap: f64) -> Self {
        Aggregator {
            index: HashMap::new(),
            heap_index: HashMap::new(),
            heap_totals: HashMap::new(),
            by_head: HashMap::new(),
            folded: HashMap::new(),
            stacks: Vec::new(),
            max_samples: max_samples.max(2),
            max_series: max_series.max(1),
            min_gap,
            last_sample_t: 0.0,
            dormant: HashMap::new(),
            retired: StackTotals::default(),
            retired_stacks: 0,
            retired_heap: StackTotals::default(),
            retired_heap_stacks: 0,
            evicted: 0,
            series_full: 0,
            crowded: false,
            peaks: HashMap::new(),
        }
    }

    /// Whether `key` has no series and its totals are still `totals` (so it
    /// stays without one).
    pub fn is_dormant(&self, key: &StackKey, totals: &StackTotals) -> bool {
        self.dormant.get(key) == Some(totals)
    }

    /// Before a new stack is interned: when the table is full, evicts every
    /// series that holds nothing and is not `pinned` (a mapping stack with
    /// live regions), unless the last eviction since the previous sample
    /// freed less than an eighth of the table. Returns where the series
    /// went if any was evicted; [`Aggregator::is_full`] then tells whether
    /// the new stack fits.
    pub fn make_room(&mut self, pinned: impl FnOnce() -> HashSet<usize>) -> Option<Remap> {
        if !self.is_full() || self.crowded {
            return None;
        }
        let pinned = pinned();
        let idle: Vec<bool> = self
            .stacks
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.outstanding_bytes() == 0
                    && s.outstanding_allocations() == 0
                    && !pinned.contains(&i)
            })
            .collect();
        for (key, &i) in &self.heap_index {
            if idle[i] {
                let totals = self.heap_totals.remove(key).unwrap_or_default();
                self.dormant.insert(*key, totals);
            }
        }
        for s in self
            .stacks
            .iter()
            .zip(&idle)
            .filter(|&(_, &i)| i)
            .map(|(s, _)| s)
        {
            match s.identity.kind {
                StackKind::Mmap => {
                    add_totals(&mut self.retired, &s.totals);
                    self.retired_stacks += 1;
                }
                // What its kernel stacks taken out of the tables counted
                // (its others go dormant with their own).
                StackKind::Heap => {
                    add_totals(&mut self.retired_heap, &s.retired);
                    self.retired_heap_stacks += u64::from(s.keys.is_empty());
                }
                // Its totals are the runtime's own profile's: read again
                // should it hold memory again.
                StackKind::GoHeap | StackKind::JsHeap | StackKind::JavaHeap => {}
            }
        }
        let freed = idle.iter().filter(|&&i| i).count();
        self.evicted += freed as u64;
        self.crowded = freed < (self.max_series / 8).max(1);
        Some(self.remove_where(|i, _| idle[i]))
    }

    /// Whether the table is full.
    pub fn is_full(&self) -> bool {
        self.stacks.len() >= self.max_series
    }

    /// A new stack found no room: its bytes count in the totals, under no
    /// stack (a heap stack stays dormant with `totals`, and tries again when
    /// they change).
    pub fn refuse(&mut self, heap: Option<(StackKey, StackTotals)>) {
        self.series_full += 1;
        if let Some((key, totals)) = heap {
            self.dormant.insert(key, totals);
        }
    }

    /// What the stacks without a series count (dormant heap stacks, evicted
    /// mapping series).
    pub fn departed(&self) -> Departed {
        let mut heap = DepartedKind {
            totals: self.retired_heap,
            stacks: self.dormant.len() as u64 + self.retired_heap_stacks,
            ..DepartedKind::default()
        };
        for t in self.dormant.values() {
            add_totals(&mut heap.totals, t);
            heap.holding_memory += u64::from(t.allocated_bytes > t.freed_bytes);
        }
        Departed {
            heap,
            mmap: DepartedKind {
                totals: self.retired,
                stacks: self.retired_stacks,
                holding_memory: 0,
            },
        }
    }

    /// Index of a stack, created on first sight.
    pub fn intern(&mut self, identity: StackIdentity) -> usize {
        self.intern_from(identity, true)
    }

    /// Index of a stack, created on first sight without a starting zero:
    /// a stack that held memory before tracing began (a Go heap profile's,
    /// counted by the runtime since the program started), whose series
    /// starts at its first sample.
    pub fn intern_present(&mut self, identity: StackIdentity) -> usize {
        self.intern_from(identity, false)
    }

    fn intern_from(&mut self, identity: StackIdentity, from_zero: bool) -> usize {
        if let Some(&i) = self.index.get(&identity) {
            return i;
        }
        let i = self.stacks.len();
        // Nothing was outstanding for a new stack at the previous sample
        // (or at attach time): that is where its series starts.
        let origin = Sample {
            t: self.last_sample_t,
            bytes: 0,
            count: 0,
            origin: true,
        };
        let samples = match from_zero {
            true => VecDeque::from([origin]),
            false => VecDeque::new(),
        };
        self.stacks.push(StackSeries {
            identity: identity.clone(),
            totals: StackTotals::default(),
            samples,
            ages: AgeStats::default(),
            truncated: false,
            noise_bytes: 0.0,
            keys: Vec::new(),
            retired: StackTotals::default(),
            peak: Peak::default(),
            last_outstanding: 0,
            last_allocated: 0,
        });
        self.index.insert(identity, i);
        i
    }

    /// Whether a stack has a series.
    pub fn is_interned(&self, identity: &StackIdentity) -> bool {
        self.index.contains_key(identity)
    }

    /// Index of a kernel heap stack, if already interned.
    pub fn heap_stack(&self, key: &StackKey) -> Option<usize> {
        self.heap_index.get(key).copied()
    }

    /// The series of kernel heap stack `key`, walked as `frames`
    /// (`truncated`: the walk stopped before the outermost frame).
    ///
    /// A truncated walk whose frames begin a complete walk of the same
    /// process is those calls seen before their unwind tables were loaded
    /// (a process's first calls, or a library's before memtrace's next look
    /// at the mappings): its totals go to the complete walk's series, one
    /// stack in the report rather than a second, partial one. Folded only
    /// when exactly one complete walk matches; taken apart again when a
    /// second one appears.
    pub fn intern_heap(&mut self, key: StackKey, frames: &[u64], truncated: bool) -> usize {
        self.dormant.remove(&key);
        let folded = match truncated {
            true => self.completion(key.tgid, frames),
            false => None,
        };
        if let (Some(_), Some(&head)) = (folded, frames.first()) {
            let list = self.folded.entry((key.tgid, head)).or_default();
            if !list.iter().any(|(k, _)| *k == key) {
                list.push((key, frames.to_vec()));
            }
        }
        let i = folded.unwrap_or_else(|| {
            let identity = StackIdentity {
                pid: key.tgid,
                kind: StackKind::Heap,
                frames: frames.to_vec(),
            };
            let new = !self.index.contains_key(&identity);
            let i = self.intern(identity);
            if let (true, Some(&head)) = (new, frames.first()) {
                self.by_head.entry((key.tgid, head)).or_default().push(i);
            }
            i
        });
        self.stacks[i].truncated |= truncated && folded.is_none();
        self.attach_key(key, i);
        if !truncated {
            self.unfold_ambiguous(key.tgid, frames, i);
            // Truncated walks seen earlier that this one completes.
            let partial: Vec<StackKey> = self
                .candidates(key.tgid, frames)
                .iter()
                .filter(|&&j| {
                    let partial = &self.stacks[j];
                    // A walk this one does not begin with is not completed
                    // by it: checked first, since the head's list can be
                    // long (an interpreter's allocation call sites).
                    j != i
                        && partial.truncated
                        && frames.len() > partial.identity.frames.len()
                        && frames.starts_with(&partial.identity.frames)
                        && self.completion(key.tgid, &partial.identity.frames) == Some(i)
                })
                .flat_map(|&j| self.stacks[j].keys.clone())
                .collect();
            for k in partial {
                self.attach_key(k, i);
            }
        }
        i
    }

    /// Complete walk `i` of `pid` (`frames`) begins with the frames of
    /// truncated walks folded into another complete walk: which of the two
    /// they belong to cannot be told, so each goes back to a series of its
    /// own (flagged truncated).
    fn unfold_ambiguous(&mut self, pid: u32, frames: &[u64], i: usize) {
        let Some(&head) = frames.first() else {
            return;
        };
        let Some(list) = self.folded.get_mut(&(pid, head)) else {
            return;
        };
        let heap_index = &self.heap_index;
        let mut undo = Vec::new();
        list.retain(|(k, f)| match heap_index.get(k) {
            // Its series was removed since: nothing to take apart.
            None => false,
            Some(&j) if j != i && f.len() < frames.len() && frames.starts_with(f) => {
                undo.push((*k, f.clone()));
                false
            }
            Some(_) => true,
        });
        for (key, frames) in undo {
            let identity = StackIdentity {
                pid,
                kind: StackKind::Heap,
                frames,
            };
            let new = !self.index.contains_key(&identity);
            let j = self.intern(identity);
            if new {
                self.by_head.entry((pid, head)).or_default().push(j);
            }
            self.stacks[j].truncated = true;
            self.attach_key(key, j);
        }
    }

    /// Heap series of `pid` whose first frame is `frames`'s.
    fn candidates(&self, pid: u32, frames: &[u64]) -> Vec<usize> {
        frames
            .first()
            .and_then(|&head| self.by_head.get(&(pid, head)))
            .cloned()
            .unwrap_or_default()
    }

    /// The only complete heap walk of `pid` that `prefix` begins (and is
    /// shorter than), if there is exactly one.
    fn completion(&self, pid: u32, prefix: &[u64]) -> Option<usize> {
        let mut found = self.candidates(pid, prefix).into_iter().filter(|&j| {
            let s = &self.stacks[j];
            !s.truncated
                && s.identity.frames.len() > prefix.len()
                && s.identity.frames.starts_with(prefix)
        });
        match (found.next(), found.next()) {
            (Some(j), None) => Some(j),
            _ => None,
        }
    }

    /// Makes kernel stack `key` count in series `i` (and no other).
    fn attach_key(&mut self, key: StackKey, i: usize) {
        if let Some(old) = self.heap_index.insert(key, i) {
            self.stacks[old].keys.retain(|k| *k != key);
            self.sum_heap(old);
        }
        self.stacks[i].keys.push(key);
        self.sum_heap(i);
    }

    /// Sets kernel heap stack `key`'s latest cumulative totals.
    pub fn update_heap(&mut self, key: StackKey, totals: StackTotals) {
        if self.heap_totals.insert(key, totals) == Some(totals) {
            return;
        }
        if let Some(&i) = self.heap_index.get(&key) {
            self.sum_heap(i);
        }
    }

    /// Kernel heap stacks `keys` were taken out of the kernel's tables
    /// (holding nothing): what they counted stays with their series, or in
    /// the departed totals, and each counts from zero if it comes back.
    pub fn retire_heap(&mut self, keys: &[StackKey]) {
        for key in keys {
            let totals = self.heap_totals.remove(key);
            if let Some(i) = self.heap_index.remove(key) {
                let s = &mut self.stacks[i];
                s.keys.retain(|k| k != key);
                add_totals(&mut s.retired, &totals.unwrap_or_default());
                self.sum_heap(i);
            } else if let Some(t) = self.dormant.remove(key) {
                add_totals(&mut self.retired_heap, &t);
                self.retired_heap_stacks += 1;
            }
        }
    }

    fn sum_heap(&mut self, i: usize) {
        let mut sum = self.stacks[i].retired;
        for k in &self.stacks[i].keys {
            if let Some(t) = self.heap_totals.get(k) {
                sum.allocated_bytes += t.allocated_bytes;
                sum.allocations += t.allocations;
                sum.freed_bytes += t.freed_bytes;
                sum.frees += t.frees;
            }
        }
        self.stacks[i].totals = sum;
    }

    /// Sets a stack's latest cumulative totals (mapping stacks: one source
    /// each).
    pub fn update(&mut self, stack: usize, totals: StackTotals) {
        self.stacks[stack].totals = totals;
    }

    /// Sets a stack's live-allocation ages.
    pub fn set_ages(&mut self, stack: usize, ages: AgeStats) {
        self.stacks[stack].ages = ages;
    }

    /// Adds to a stack's live-allocation ages (another of its kernel
    /// stacks).
    pub fn add_ages(&mut self, stack: usize, ages: &AgeStats) {
        self.stacks[stack].ages.merge(ages);
    }

    /// Drops the stacks of processes that are gone (bounded memory on a
    /// watched node). Returns where each old index went (None: dropped), for
    /// holders of indices to follow.
    pub fn remove_pids(&mut self, gone: &HashSet<u32>) -> Remap {
        self.dormant.retain(|k, _| !gone.contains(&k.tgid));
        self.peaks.retain(|pid, _| !gone.contains(pid));
        self.remove_where(|_, s| gone.contains(&s.identity.pid))
    }

    /// Removes the series `(index, series)` selects; returns where each old
    /// index went.
    fn remove_where(&mut self, remove: impl Fn(usize, &StackSeries) -> bool) -> Remap {
        let mut remap = Vec::with_capacity(self.stacks.len());
        let mut next = 0;
        for (i, s) in self.stacks.iter().enumerate() {
            match remove(i, s) {
                true => remap.push(None),
                false => {
                    remap.push(Some(next));
                    next += 1;
                }
            }
        }
        let mut i = 0;
        self.stacks.retain(|_| {
            i += 1;
            remap[i - 1].is_some()
        });
        self.index.retain(|_, i| match remap[*i] {
            Some(n) => {
                *i = n;
                true
            }
            None => false,
        });
        self.heap_index.retain(|_, i| match remap[*i] {
            Some(n) => {
                *i = n;
                true
            }
            None => false,
        });
        let heap_index = &self.heap_index;
        self.heap_totals.retain(|k, _| heap_index.contains_key(k));
        self.folded.retain(|_, list| {
            list.retain(|(k, _)| heap_index.contains_key(k));
            !list.is_empty()
        });
        self.by_head.retain(|_, series| {
            series.retain_mut(|i| match remap[*i] {
                Some(n) => {
                    *i = n;
                    true
                }
                None => false,
            });
            !series.is_empty()
        });
        remap
    }

    /// Appends a sample at `t` of every stack's current outstanding memory,
    /// and takes it into the stacks' and processes' peaks; but not of the
    /// stacks `skip` names (their process's series have their last point,
    /// or their source was not read again since the last).
    pub fn sample(&mut self, t: f64, skip: impl Fn(&StackIdentity) -> bool) {
        self.crowded = false;
        let replace = t - self.last_sample_t < self.min_gap;
        // Per process: bytes, allocations and bound of its stacks together.
        let mut sums: HashMap<u32, (u64, u64, u64)> = HashMap::new();
        for s in &mut self.stacks {
            if skip(&s.identity) {
                continue;
            }
            let sample = Sample {
                t,
                bytes: s.outstanding_bytes(),
                count: s.outstanding_allocations(),
                origin: false,
            };
            let allocated = s.totals.allocated_bytes;
            let since = allocated.saturating_sub(s.last_allocated);
            let bound = (s.last_outstanding + since).max(sample.bytes);
            s.peak.see(t, sample.bytes, sample.count, bound);
            (s.last_outstanding, s.last_allocated) = (sample.bytes, allocated);
            let sum = sums.entry(s.identity.pid).or_default();
            sum.0 += sample.bytes;
            sum.1 += sample.count;
            sum.2 += bound;
            let replace_last = replace
                && s.samples
                    .back()
                    .is_some_and(|b| !b.origin && b.t == self.last_sample_t);
            push_bounded(&mut s.samples, sample, self.max_samples, replace_last);
        }
        for (pid, (bytes, count, bound)) in sums {
            let peaks = self.peaks.entry(pid).or_default();
            peaks.traced.see(t, bytes, count, bound);
        }
        self.last_sample_t = t;
    }

    /// Takes a process's resident memory read at `t` into its peaks.
    pub fn see_rss(&mut self, pid: u32, t: f64, rss: u64) {
        let peak = &mut self.peaks.entry(pid).or_default().rss;
        if peak.is_none_or(|(bytes, _)| rss > bytes) {
            *peak = Some((rss, t));
        }
    }
}

/// Adds `t` to `sum`.
fn add_totals(sum: &mut StackTotals, t: &StackTotals) {
    sum.allocated_bytes += t.allocated_bytes;
    sum.allocations += t.allocations;
    sum.freed_bytes += t.freed_bytes;
    sum.frees += t.frees;
}

/// With `--sample-bytes MEAN`, a stack's sampled totals stand for more: an
/// allocation of `size` bytes was sampled with probability
/// 1-exp(-size/MEAN), so each sampled one counts 1/(1-exp(-size/MEAN))
/// times. As pprof does for Go heap profiles, the stack's average
/// allocation size stands for its sizes (exact when they are all one size);
/// every field gets the same factor, so outstanding = allocated - freed
/// still holds. Returns the unbiased totals and the factor.
pub fn unbias(t: StackTotals, mean: u64) -> (StackTotals, f64) {
    if t.allocations == 0 || mean == 0 {
        return (t, 1.0);
    }
    let average = t.allocated_bytes as f64 / t.allocations as f64;
    let factor = 1.0 / -(-average / mean as f64).exp_m1();
    let scale = |v: u64| (v as f64 * factor).round() as u64;
    let unbiased = StackTotals {
        allocated_bytes: scale(t.allocated_bytes),
        allocations: scale(t.allocations),
        freed_bytes: scale(t.freed_bytes),
        frees: scale(t.frees),
    };
    (unbiased, factor)
}

/// Appends to a series of at most `max` points, or replaces its last point
/// (`replace_last`: a final sample taken right after an interval's). When
/// full, every other point is dropped first (the first is kept): the series
/// still spans the whole run, at half the resolution.
pub fn push_bounded<T>(series: &mut VecDeque<T>, point: T, max: usize, replace_last: bool) {
    if replace_last {
        series.pop_back();
    }
    if series.len() >= max.max(2) {
        let mut i = 0;
        series.retain(|_| {
            i += 1;
            i % 2 == 1
        });
    }
    series.push_back(point);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(alloc: u64, freed: u64) -> StackTotals {
        StackTotals {
            allocated_bytes: alloc,
            allocations: alloc / 10,
            freed_bytes: freed,
            frees: freed / 10,
        }
    }

    #[test]
    fn series_start_at_zero_and_stay_bounded() {
        let mut agg = Aggregator::new(4, 100, 0.25);
        let key = StackKey {
            tgid: 5,
            stack_id: 9,
        };
        let i = agg.intern_heap(key, &[1, 2], false);
        assert_eq!(agg.heap_stack(&key), Some(i));
        for n in 1..=6u64 {
            agg.update(i, totals(100 * n, 10 * n));
            agg.sample(n as f64, |_| false);
        }
        let s = &agg.stacks[i];
        // origin,1,2,3 full at the 4th sample: decimated to origin,2 then
        // 4,5 appended; full again at 6: origin,4 then 6.
        let times: Vec<f64> = s.samples.iter().map(|x| x.t).collect();
        assert_eq!(times, [0.0, 4.0, 6.0]);
        assert!(s.samples[0].origin);
        assert_eq!(s.samples.back().unwrap().bytes, 540);
        // A stack first seen later starts from the previous sample time.
        let j = agg.intern(StackIdentity {
            pid: 5,
            kind: StackKind::Mmap,
            frames: vec![3],
        });
        assert_eq!(
            agg.stacks[j].samples[0],
            Sample {
                t: 6.0,
                bytes: 0,
                count: 0,
                origin: true
            }
        );
        // The final sample right after an interval's replaces it.
        agg.update(i, totals(800, 60));
        agg.sample(6.1, |_| false);
        let s = &agg.stacks[i];
        let times: Vec<f64> = s.samples.iter().map(|x| x.t).collect();
        assert_eq!(times, [0.0, 4.0, 6.1]);
        assert_eq!(s.samples.back().unwrap().bytes, 740);
        assert_eq!(agg.stacks[j].samples.len(), 2);
        // Its process ended: its series stops at its last point.
        agg.sample(9.0, |s| s.pid == 5);
        assert_eq!(agg.stacks[i].samples.back().unwrap().t, 6.1);
        assert_eq!(agg.stacks[j].samples.len(), 2);
    }

    #[test]
    fn peaks_survive_decimation_with_their_bound() {
        let mut agg = Aggregator::new(4, 100, 0.1);
        let key = |stack_id| StackKey { tgid: 5, stack_id };
        let spike = agg.intern_heap(key(1), &[1], false);
        let leak = agg.intern_heap(key(2), &[2], false);
        // The spike: 4000 bytes within one interval, held two, freed.
        let steps = [(4000, 0), (4000, 0), (4000, 4000), (4000, 4000)];
        for (n, &(alloc, freed)) in steps.iter().enumerate() {
            agg.update_heap(key(1), totals(alloc, freed));
            agg.update_heap(key(2), totals(100 * (n as u64 + 1), 0));
            agg.sample(n as f64 + 1.0, |_| false);
        }
        // Then 1000 more allocated and freed between two samples: not seen,
        // bounded.
        agg.update_heap(key(1), totals(5000, 5000));
        agg.sample(5.0, |_| false);
        agg.sample(6.0, |_| false);
        let s = &agg.stacks[spike];
        assert!(s.samples.iter().all(|p| p.bytes == 0), "decimated away");
        assert_eq!(
            s.peak,
            Peak {
                bytes: 4000,
                count: 400,
                t: 1.0,
                bound: 4000
            }
        );
        assert_eq!(s.outstanding_bytes(), 0);
        // The process: 4200 at 2 s, the most; bounded by the interval that
        // began with 4000 + 200 outstanding and allocated 100 more.
        let p = agg.peaks[&5].traced;
        assert_eq!((p.bytes, p.t, p.bound), (4200, 2.0, 4300));
        assert_eq!(agg.stacks[leak].peak.bytes, 400);
        // What was allocated and freed between samples: in the bound only.
        agg.update_heap(key(1), totals(11000, 11000));
        agg.sample(7.0, |_| false);
        let s = &agg.stacks[spike];
        assert_eq!((s.peak.bytes, s.peak.bound), (4000, 6000));
        // RSS: the highest read, the first time.
        agg.see_rss(5, 1.0, 10);
        agg.see_rss(5, 2.0, 30);
        agg.see_rss(5, 3.0, 30);
        assert_eq!(agg.peaks[&5].rss, Some((30, 2.0)));
        agg.remove_pids(&HashSet::from([5]));
        assert!(agg.peaks.is_empty());
    }

    #[test]
    fn removing_processes_keeps_the_others_indexed() {
        let mut agg = Aggregator::new(4, 100, 0.25);
        let key = |tgid, stack_id| StackKey { tgid, stack_id };
        agg.intern_heap(key(1, 1), &[1], false);
        agg.intern_heap(key(2, 1), &[1], false);
        let b = agg.intern_heap(key(1, 2), &[2], false);
        agg.update(b, totals(100, 0));
        let remap = agg.remove_pids(&HashSet::from([2]));
        assert_eq!(remap, [Some(0), None, Some(1)]);
        assert_eq!(agg.stacks.len(), 2);
        assert_eq!(agg.heap_stack(&key(1, 2)), Some(1));
        assert_eq!(agg.heap_stack(&key(2, 1)), None);
        assert_eq!(agg.stacks[1].outstanding_bytes(), 100);
        let again = agg.intern_heap(key(1, 2), &[2], false);
        assert_eq!(again, 1);
    }

    #[test]
    fn a_full_table_evicts_what_holds_nothing() {
        let mut agg = Aggregator::new(4, 4, 0.25);
        let key = |stack_id| StackKey { tgid: 1, stack_id };
        for id in 0..3 {
            agg.intern_heap(key(id), &[u64::from(id)], false);
            // Stacks 0 and 2 hold memory; 1 allocated and freed it all.
            agg.update_heap(key(id), totals(100, if id == 1 { 100 } else { 0 }));
        }
        let mapping = agg.intern(StackIdentity {
            pid: 1,
            kind: StackKind::Mmap,
            frames: vec![9],
        });
        agg.update(mapping, totals(40, 40));
        assert!(agg.is_full());
        // The mapping stack still has a live region: pinned.
        let remap = agg.make_room(|| HashSet::from([mapping])).expect("evicted");
        assert_eq!(remap, [Some(0), None, Some(1), Some(2)]);
        assert!(!agg.is_full());
        assert_eq!((agg.evicted, agg.series_full), (1, 0));
        assert!(agg.is_dormant(&key(1), &totals(100, 100)));
        assert!(!agg.is_dormant(&key(1), &totals(200, 100)));
        assert_eq!(agg.heap_stack(&key(2)), Some(1));
        let departed = agg.departed().heap;
        assert_eq!((departed.stacks, departed.holding_memory), (1, 0));
        assert_eq!(departed.totals, totals(100, 100));
        // Back when it allocates again: a new series, out of the dormant.
        let back = agg.intern_heap(key(1), &[1], false);
        assert_eq!(back, 3);
        assert_eq!(agg.departed().heap.stacks, 0);
        // Full of stacks holding memory: the next stack is refused, and no
        // other eviction is tried before the next sample.
        agg.update_heap(key(1), totals(10, 0));
        agg.update(2, totals(40, 0));
        let all_kept = (0..4).map(Some).collect::<Vec<_>>();
        assert_eq!(agg.make_room(HashSet::new), Some(all_kept));
        assert!(agg.is_full());
        agg.refuse(Some((key(5), totals(30, 0))));
        assert_eq!(agg.series_full, 1);
        assert!(agg
            .make_room(|| unreachable!("crowded until the next sample"))
            .is_none());
        let departed = agg.departed().heap;
        assert_eq!((departed.stacks, departed.holding_memory), (1, 1));
        agg.sample(1.0, |_| false);
        agg.update_heap(key(0), totals(100, 100));
        let remap = agg.make_room(HashSet::new).expect("evicted");
        assert_eq!(remap, [None, Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn unbiasing_follows_the_sampling_probability() {
        let mean = 512 * 1024;
        // 100 sampled blocks of 64 B: each was sampled with probability
        // 1-exp(-64/524288) ~ 1/8192.5, so each stands for ~8192.5.
        let sampled = StackTotals {
            allocated_bytes: 6400,
            allocations: 100,
            freed_bytes: 640,
            frees: 10,
        };
        let (t, f) = unbias(sampled, mean);
        assert!((f - 8192.5).abs() < 0.1, "{f}");
        assert_eq!(t.allocated_bytes, (6400.0 * f).round() as u64);
        assert_eq!(t.allocations, (100.0 * f).round() as u64);
        assert_eq!(t.frees, (10.0 * f).round() as u64);
        // Blocks far above the mean are always sampled: no change.
        let big = StackTotals {
            allocated_bytes: 100 << 20,
            allocations: 10,
            freed_bytes: 0,
            frees: 0,
        };
        assert_eq!(unbias(big, mean).0, big);
        assert_eq!(unbias(StackTotals::default(), mean).1, 1.0);
    }

    #[test]
    fn ages_fill_buckets() {
        let mut a = AgeStats::default();
        a.add(3.0, 100, 1, 5.0);
        a.add(30.0, 200, 1, 5.0);
        a.add(30.0, 50, 0, 5.0); // second piece of the same mapping
        a.add(7200.0, 1, 1, 5.0);
        assert_eq!(a.bytes, [100, 250, 0, 0, 1]);
        assert_eq!(a.allocations, [1, 1, 0, 0, 1]);
        assert_eq!((a.old_bytes, a.old_allocations), (251, 2));
        assert_eq!(a.oldest_secs, 7200.0);
    }

    #[test]
    fn truncated_walks_fold_into_the_complete_one() {
        let key = |id| StackKey {
            tgid: 7,
            stack_id: id,
        };
        let complete = [1, 2, 3, 4, 5];
        // A truncated walk first (before the tables), then the complete one.
        let mut agg = Aggregator::new(10, 100, 0.1);
        let early = agg.intern_heap(key(1), &[1, 2, 3], true);
        agg.update_heap(key(1), totals(100, 0));
        agg.sample(1.0, |_| false);
        let whole = agg.intern_heap(key(2), &complete, false);
        agg.update_heap(key(2), totals(300, 50));
        assert_ne!(early, whole);
        assert_eq!(agg.stacks[whole].totals, totals(400, 50));
        assert_eq!(agg.stacks[early].totals, StackTotals::default());
        assert!(!agg.stacks[whole].truncated);
        // Another truncated walk of the same calls, after: folded at once.
        assert_eq!(agg.intern_heap(key(3), &[1, 2], true), whole);
        agg.update_heap(key(3), totals(10, 0));
        assert_eq!(agg.stacks[whole].totals, totals(410, 50));
        // Other calls (another return address) and other processes stay
        // apart, and keep their flag.
        let other = agg.intern_heap(key(4), &[1, 9], true);
        assert_ne!(other, whole);
        assert!(agg.stacks[other].truncated);
        let elsewhere = StackKey {
            tgid: 8,
            stack_id: 5,
        };
        assert_ne!(agg.intern_heap(elsewhere, &[1, 2, 3], true), whole);
        // Two complete walks it could begin: not folded.
        let mut agg = Aggregator::new(10, 100, 0.1);
        agg.intern_heap(key(1), &[1, 2, 3, 4], false);
        agg.intern_heap(key(2), &[1, 2, 3, 5], false);
        let partial = agg.intern_heap(key(3), &[1, 2, 3], true);
        assert!(agg.stacks[partial].truncated);
        assert_eq!(agg.stacks.len(), 3);
        // Folded while one complete walk matched; a second appears: taken
        // apart again, back to a truncated series of its own.
        let mut agg = Aggregator::new(10, 100, 0.1);
        let path1 = agg.intern_heap(key(1), &[1, 2, 3, 4], false);
        agg.update_heap(key(1), totals(10, 0));
        assert_eq!(agg.intern_heap(key(2), &[1], true), path1);
        agg.update_heap(key(2), totals(200, 0));
        assert_eq!(agg.stacks[path1].totals, totals(210, 0));
        let path2 = agg.intern_heap(key(3), &[1, 5, 6], false);
        agg.update_heap(key(3), totals(10, 0));
        assert_eq!(agg.stacks[path1].totals, totals(10, 0));
        assert_eq!(agg.stacks[path2].totals, totals(10, 0));
        let apart = agg.heap_stack(&key(2)).unwrap();
        assert!(agg.stacks[apart].truncated);
        assert_eq!(agg.stacks[apart].identity.frames, [1]);
        assert_eq!(agg.stacks[apart].totals, totals(200, 0));
        // Seen again later: still apart.
        assert_eq!(agg.intern_heap(key(2), &[1], true), apart);
    }
}

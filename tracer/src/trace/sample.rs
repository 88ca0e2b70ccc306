//! Every interval: the kernel's per-stack totals and the ages of live
//! blocks read as one snapshot, new stacks given series (or refused when
//! the table is full), a sample appended to every series, and the targets'
//! resident memory read; and the report made from it all.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use memtrace_report::{MemorySample, ProbesReport, Report, StackKind, TargetReport, Weight};
use tracer_common::StackKey;

use super::{min_gap, recycle, Tracing, MAX_SAMPLES};
use crate::{
    accounting::{
        report::{self, ReportContext},
        series,
    },
    bpf::{drain, probes::ProbePath, unwind::Unwinder},
    config::{self, Mode},
    discover::target,
};

impl Tracing {
    /// Reads the kernel's totals and the ages of live allocations, appends
    /// a sample to every series, and reads the targets' resident memory.
    pub(super) fn sample(&mut self, cfg: &config::Trace) -> Result<()> {
        self.life.purge_gone(&mut self.m)?;
        let (kernel, ages) = self.read_kernel(cfg)?;
        // The moment the counts are of: naming new stacks can take long
        // (seconds for tens of thousands at a CPython's end), and a point
        // stamped after it would put that time into the series' slope.
        let t = self.started.elapsed().as_secs_f64();
        self.stats = kernel.stats;
        let recycle = self.m.recycler.round(&kernel.stacks, &ages);
        self.m.python.new_pass();
        // With --sample-bytes: each heap stack's unbiasing factor.
        let mut factors: HashMap<StackKey, f64> = HashMap::new();
        for (key, totals) in kernel.stacks {
            if !self.life.by_pid.contains_key(&key.tgid) {
                // --all: a process first seen by its allocations (forked
                // without exec, or started between scans).
                self.life.consider(&mut self.m, key.tgid);
                if !self.life.by_pid.contains_key(&key.tgid) {
                    if self.life.watcher.is_some() && !target::is_alive(key.tgid) {
                        self.life.gone.insert(key.tgid);
                    }
                    continue;
                }
            }
            if self.m.agg.heap_stack(&key).is_none() {
                if self.m.agg.is_dormant(&key, &totals) {
                    continue;
                }
                if !self.room_for_a_stack() {
                    self.m.agg.refuse(Some((key, totals)));
                    continue;
                }
                let walked = self.m.stacks.frames(&self.m.probes.bpf, key.stack_id)?;
                // A frame-pointer step through code without frame pointers
                // reads data as return addresses: cut there, so that walks
                // differing only in that garbage are one stack (truncated).
                let code = self.m.symbolizer.in_code(key.tgid, &walked.frames);
                let cut = code < walked.frames.len();
                // (A Python walk cut at its depth is not a native walk
                // cut short: its stack is not folded into longer ones.)
                let truncated = walked.truncated || cut;
                // In a CPython process, the Python frames it ran in place
                // of the evaluation loop's.
                let frames = self.m.python.frames(
                    key.tgid,
                    &walked.frames[..code],
                    walked,
                    &mut self.m.symbolizer,
                );
                self.m.agg.intern_heap(key, &frames, truncated);
            }
            let totals = match cfg.sampling.sample_bytes {
                Some(mean) => {
                    let (unbiased, factor) = series::unbias(totals, mean);
                    factors.insert(key, factor);
                    unbiased
                }
                None => totals,
            };
            self.m.agg.update_heap(key, totals);
        }
        if let Some(round) = recycle {
            self.recycle(round)?;
        }
        let mapped: Vec<_> = self.m.mappings.totals().map(|(s, t)| (s, *t)).collect();
        for (stack, totals) in mapped {
            self.m.agg.update(stack, totals);
        }
        let ages = ages
            .into_iter()
            .map(|(key, a)| (key, a.scaled(factors.get(&key).copied().unwrap_or(1.0))))
            .collect();
        self.set_ages(cfg, ages);
        let replace = self
            .life
            .by_pid
            .values()
            .filter_map(|t| t.memory.back())
            .any(|last| t - last.t < min_gap(cfg));
        self.sample_go(t, replace);
        self.sample_node();
        self.sample_java();
        let closed: HashSet<u32> = self
            .life
            .by_pid
            .values()
            .filter(|t| t.series_closed)
            .map(|t| t.info.pid)
            .collect();
        let unread = self.m.node.unread();
        let unread_java = self.m.java.unread();
        self.m.agg.sample(t, |s| {
            closed.contains(&s.pid)
                || (s.kind == StackKind::JsHeap && unread.contains(&s.pid))
                || (s.kind == StackKind::JavaHeap && unread_java.contains(&s.pid))
        });
        for target in self.life.by_pid.values_mut() {
            target.series_closed |= target.exited;
        }
        self.sample_memory(t, cfg);
        Ok(())
    }

    /// Takes a round's idle stacks out of the kernel's tables and the
    /// aggregator's keys (see `recycle`); forgets the frames of the
    /// previous round's.
    fn recycle(&mut self, round: recycle::Round) -> Result<()> {
        drain::recycle_stacks(&mut self.m.probes.bpf, &round.ids, &round.keys)?;
        self.m.freed.forget_keys(&round.keys);
        self.m.agg.retire_heap(&round.keys);
        let previous = std::mem::replace(&mut self.m.recycler.previous, round.ids);
        self.m.stacks.forget(&previous);
        if self.m.verbose {
            crate::note(&format!(
                "kernel stack table three quarters full: {} idle stacks holding nothing \
                 taken out",
                self.m.recycler.previous.len()
            ));
        }
        Ok(())
    }

    /// Appends the targets' resident memory (and what their traced stacks
    /// hold) at `t` to their memory series.
    pub(super) fn sample_memory(&mut self, t: f64, cfg: &config::Trace) {
        for target in self.life.by_pid.values_mut() {
            if target.exited {
                continue;
            }
            if !target.leaderless_said && target::main_thread_gone(target.info.pid) {
                target.leaderless_said = true;
                let pid = target.info.pid;
                match &self.m.probes.path {
                    // A uprobe opened for a process belongs to the thread
                    // it names, its main thread: gone with it.
                    ProbePath::Classic(_) => {
                        target.probes_lost_at = Some(t);
                        crate::note(&format!(
                            "warning: pid {pid}: its main thread has exited while other threads \
                             run on, and on this kernel's probe path its probes went with it: \
                             what it allocates and frees from here on is not seen (the report \
                             shows what it held by {t:.1} s)"
                        ));
                    }
                    ProbePath::Session => crate::note(&format!(
                        "warning: pid {pid}: its main thread has exited while other threads run \
                         on: the kernel drops its probes whenever another tracer attaches to or \
                         detaches from the same files (the probes' process filter follows the \
                         main thread); what it allocates after that is not seen, and not counted \
                         as lost"
                    )),
                }
            }
            let Some((rss, anon)) = target::memory_usage(target.info.pid) else {
                continue;
            };
            let pid = target.info.pid;
            self.m.agg.see_rss(pid, t, rss);
            let traced = self
                .m
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
    pub(super) fn read_kernel(
        &mut self,
        cfg: &config::Trace,
    ) -> Result<(drain::KernelTotals, HashMap<StackKey, series::AgeStats>)> {
        let min_age = cfg.sampling.min_age_secs().unwrap_or(f64::INFINITY);
        drain::read_kernel(&self.m.probes.bpf, min_age, &mut self.m.freed)
    }

    /// Sets every stack's live-allocation ages: heap blocks from the
    /// kernel's timestamps, mappings from their mmap events'. Stacks with
    /// nothing live get empty ages.
    pub(super) fn set_ages(
        &mut self,
        cfg: &config::Trace,
        heap: HashMap<StackKey, series::AgeStats>,
    ) {
        let min_age = cfg.sampling.min_age_secs().unwrap_or(f64::INFINITY);
        for i in 0..self.m.agg.stacks.len() {
            self.m.agg.set_ages(i, series::AgeStats::default());
        }
        for (key, ages) in heap {
            if let Some(i) = self.m.agg.heap_stack(&key) {
                self.m.agg.add_ages(i, &ages);
            }
        }
        for (stack, ages) in self.m.mappings.ages(drain::kernel_now_ns(), min_age) {
            self.m.agg.set_ages(stack, ages);
        }
    }

    /// Whether a new stack gets a series: when the table is full, the series
    /// holding nothing make room (see [`Aggregator::make_room`](crate::accounting::series::Aggregator::make_room)).
    pub(super) fn room_for_a_stack(&mut self) -> bool {
        if !self.m.agg.is_full() {
            return true;
        }
        // Mapping series get their totals at each sample: what an evicted
        // one counted since must be in it.
        for (stack, totals) in self.m.mappings.totals() {
            self.m.agg.update(stack, *totals);
        }
        if let Some(remap) = self.m.agg.make_room(|| self.m.mappings.stacks_in_use()) {
            self.m.mappings.follow(&remap);
        }
        !self.m.agg.is_full()
    }

    /// The report as of now, with the `top` first stacks.
    pub(super) fn report(&mut self, cfg: &config::Trace, top: usize) -> Report {
        for t in self.life.by_pid.values_mut().filter(|t| !t.info.is_alive()) {
            t.set_exited();
        }
        // On a watched node, the processes that allocated while traced (the
        // others would only make the list long).
        let with_stacks: HashSet<u32> = self.m.agg.stacks.iter().map(|s| s.identity.pid).collect();
        let targets = self
            .life
            .by_pid
            .values()
            .filter(|t| self.life.watcher.is_none() || with_stacks.contains(&t.info.pid))
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
                peak: None,
                unseen: t.unseen.clone(),
                probes_lost_at_s: t.probes_lost_at,
                mappings: Vec::new(),
                go: self.m.golang.report(t.info.pid, &mut self.m.symbolizer),
                node: self.m.node.report(t.info.pid),
                java: self.m.java.report(t.info.pid),
                memory: (!t.memory.is_empty()).then(|| {
                    report::memory_report(
                        t.memory.iter().copied().collect(),
                        cfg.sampling.rss_alert,
                        self.m.agg.peaks.get(&t.info.pid).and_then(|p| p.rss),
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
            processes_dropped: self.life.processes_dropped,
            stacks_recycled: self.m.recycler.recycled,
            mapping_table_full: self.m.mappings.table_full,
            top,
            sort: cfg.sampling.sort,
            by_peak: cfg.outputs.weight == Weight::Peak,
            min_age_secs: cfg.sampling.min_age_secs(),
            oom_kills: self.oom_kills.iter().cloned().collect(),
            overhead: self.meter.as_ref().and_then(|m| m.read(&self.m.probes)),
            sample_bytes: cfg.sampling.sample_bytes,
            probes: (self.mode != Mode::OomOnly).then(|| ProbesReport {
                path: match self.m.probes.path {
                    ProbePath::Session => "session",
                    ProbePath::Classic(_) => "classic",
                }
                .to_string(),
                detail: self.m.probes.path.describe(),
                pymalloc_pool_bytes: self.m.probes.pymalloc_pools,
                single_stepped: self.m.probes.single_stepped.iter().cloned().collect(),
                placements: self.m.placements.iter().cloned().collect(),
            }),
            unwind: (self.mode != Mode::OomOnly).then(|| {
                (
                    cfg.attach.unwind,
                    self.m.unwinder.as_ref().map(Unwinder::stats),
                )
            }),
        };
        let symbolizer = &mut self.m.symbolizer;
        let mut report = report::build(ctx, &self.m.agg, &mut |pid, addrs| {
            symbolizer.frames(pid, addrs)
        });
        symbolizer.describe(&mut report);
        report
    }
}

//! The JSON report as the tests read it: through the report crate
//! (`memtrace_report`, whose serde model is the schema), with what the
//! tests check on top of it: the values serde cannot check (age buckets,
//! non-empty series and reasons, `0x` addresses), lookups by
//! `frames[0].function`, the consistency rules every report must satisfy,
//! and descriptions for failure messages.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::ops::Deref;

use memtrace_report::{
    self as model, name_of, AgeBucket, SeriesPoint, SortBy, StackKind, StackReport, Totals,
};
use serde_json::Value;

/// The `--top` used by every JSON test run ([`crate::JSON_ARGS`]).
pub const TOP: usize = 100;

/// Blocks by which a running target's `age_histogram` may differ from
/// its stack's outstanding allocations (see [`Report::stack_problems`]).
pub(crate) const HISTOGRAM_SLACK_BLOCKS: u64 = 2;

/// The buckets of `stacks[].age_histogram`, in order: `(min_secs,
/// max_secs)`, `None` for the last, unbounded one.
pub const AGE_BUCKETS: &[(f64, Option<f64>)] = &[
    (0.0, Some(10.0)),
    (10.0, Some(60.0)),
    (60.0, Some(600.0)),
    (600.0, Some(3600.0)),
    (3600.0, None),
];

/// Slack for comparing report-time ages and sample times with
/// `duration_secs` (the report is built a moment after tracing stops).
pub const TIME_SLACK_SECS: f64 = 2.0;

/// Allocator and mapping entry points; `frames[0]` must never be one of
/// these (it is the function that called the allocator).
pub const ALLOCATOR_SYMBOLS: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "reallocarray",
    "free",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "valloc",
    "pvalloc",
    "__libc_malloc",
    "__libc_calloc",
    "__libc_realloc",
    "__libc_memalign",
    "__libc_valloc",
    "__libc_pvalloc",
    "__posix_memalign",
    "_mid_memalign",
    "mmap",
    "mmap64",
    "__mmap",
    "__mmap64",
    "__GI___mmap64",
    "munmap",
    "__munmap",
    "mremap",
    "__mremap",
];

/// The losses ([`model::Losses::nonzero`] names) that drop bytes or
/// stacks: [`Report::assert_no_losses`] wants them 0 for the small test
/// workloads.
pub const DROPPING_LOSSES: &[&str] = &[
    "live_map_full",
    "stack_lost",
    "stack_totals_full",
    "inflight_full",
    "ring_buffer_full",
];

/// What the tests read off one stack of the report crate.
pub trait StackExt {
    /// `frames[0].function`.
    fn function(&self) -> Option<&str>;
    /// Function names from innermost outwards ("?" when unsymbolized).
    fn functions(&self) -> Vec<&str>;
    /// The age bucket starting at `min_secs` (one of [`AGE_BUCKETS`]).
    fn age_bucket(&self, min_secs: f64) -> &AgeBucket;
    /// The series as `t:bytes` pairs (for failure messages).
    fn series_text(&self) -> String;
    /// The verdict's evidence on one line (for failure messages).
    fn evidence(&self) -> String;
    /// One-line summary for failure messages.
    fn summary(&self) -> String;
}

impl StackExt for StackReport {
    fn function(&self) -> Option<&str> {
        self.frames.first()?.function.as_deref()
    }

    fn functions(&self) -> Vec<&str> {
        self.frames
            .iter()
            .map(|f| f.function.as_deref().unwrap_or("?"))
            .collect()
    }

    #[track_caller]
    fn age_bucket(&self, min_secs: f64) -> &AgeBucket {
        self.age_histogram
            .iter()
            .find(|b| b.min_secs == min_secs)
            .unwrap_or_else(|| {
                panic!(
                    "no age_histogram bucket starts at {min_secs}: {:?}",
                    self.age_histogram
                )
            })
    }

    fn series_text(&self) -> String {
        self.series
            .iter()
            .map(|p| format!("{:.1}:{}", p.t, p.bytes))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn evidence(&self) -> String {
        let buckets: Vec<String> = self
            .age_histogram
            .iter()
            .map(|b| {
                format!(
                    "[{}..{}) {}B/{}",
                    b.min_secs,
                    b.max_secs.map_or("inf".to_string(), |m| m.to_string()),
                    b.bytes,
                    b.allocations
                )
            })
            .collect();
        format!(
            "{} ({:?}) intervals {}/{} grew, early {:+}B late {:+}B, oldest {}, ages {}",
            name_of(&self.verdict),
            self.verdict_reason,
            self.grew_intervals,
            self.intervals,
            self.early_growth_bytes,
            self.late_growth_bytes,
            self.oldest_age_secs
                .map_or("none".to_string(), |a| format!("{a:.2}s")),
            buckets.join(" ")
        )
    }

    fn summary(&self) -> String {
        let mut chain = self.functions();
        let more = chain.len().saturating_sub(6);
        chain.truncate(6);
        let mut chain = chain.join(" <- ");
        if more > 0 {
            let _ = write!(chain, " <- ...{more} more");
        }
        format!(
            "pid={} kind={} outstanding={}B/{} allocated={}B/{} freed={}B/{} growth={:.1}B/s \
             {} [{}]",
            self.pid,
            name_of(&self.kind),
            self.outstanding_bytes,
            self.outstanding_allocations,
            self.allocated_bytes,
            self.allocations,
            self.freed_bytes,
            self.frees,
            self.growth_bytes_per_sec,
            name_of(&self.verdict),
            chain
        )
    }
}

/// Steps of a stack's series: `(before, after)`.
fn series_steps(s: &StackReport) -> impl Iterator<Item = (&SeriesPoint, &SeriesPoint)> {
    s.series.iter().zip(s.series.iter().skip(1))
}

/// `stacks` summed: their counts, how many there are (`stacks`) and how
/// many hold memory (`stacks_holding_memory`).
fn sum<'a>(stacks: impl IntoIterator<Item = &'a StackReport>) -> Totals {
    let mut t = Totals::default();
    for s in stacks {
        t.outstanding_bytes += s.outstanding_bytes;
        t.outstanding_allocations += s.outstanding_allocations;
        t.allocations += s.allocations;
        t.frees += s.frees;
        t.allocated_bytes += s.allocated_bytes;
        t.freed_bytes += s.freed_bytes;
        t.stacks += 1;
        t.stacks_holding_memory += u64::from(s.outstanding_bytes > 0);
    }
    t
}

/// The stacks whose `frames[0].function` is one function, summed.
#[derive(Debug, Default)]
pub struct FunctionSummary {
    /// How many stacks (0: the function is absent from `stacks`).
    pub stacks: usize,
    /// Their kinds, each once.
    pub kinds: Vec<StackKind>,
    pub totals: Totals,
}

/// A `--format json` report, read by the report crate into its model
/// ([`memtrace_report::Report`], which this derefs to) and value-checked,
/// with the memtrace command that produced it (for failure messages).
#[derive(Debug)]
pub struct Report {
    report: model::Report,
    /// The memtrace command that produced it.
    pub command: String,
}

impl Deref for Report {
    type Target = model::Report;

    fn deref(&self) -> &model::Report {
        &self.report
    }
}

/// A report's stacks, listed and in its OOM kills, with their paths in the
/// JSON document: `(stacks[3], /stacks/3, stack)`.
fn every_stack(r: &model::Report) -> Vec<(String, String, &StackReport)> {
    let listed = r
        .stacks
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("stacks[{i}]"), format!("/stacks/{i}"), s));
    let killed = r.oom_kills.iter().enumerate().flat_map(|(k, kill)| {
        kill.top_stacks.iter().enumerate().map(move |(i, s)| {
            (
                format!("oom_kills[{k}].top_stacks[{i}]"),
                format!("/oom_kills/{k}/top_stacks/{i}"),
                s,
            )
        })
    });
    listed.chain(killed).collect()
}

/// The values of a report read by the crate that its types do not check
/// (empty if none): reasons said, series not empty, exactly the
/// [`AGE_BUCKETS`], ages and thresholds not negative, and frame addresses
/// written `0x`-hex (the crate also reads bare hex).
fn value_problems(json: &Value, r: &model::Report) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(m) = r.min_age_secs.filter(|m| *m < 0.0) {
        problems.push(format!("min_age_secs: {m} is not a non-negative age"));
    }
    for (i, t) in r.targets.iter().enumerate() {
        let Some(m) = &t.memory else { continue };
        if m.alert_threshold_bytes_per_hour < 0.0 {
            problems.push(format!(
                "targets[{i}].memory.alert_threshold_bytes_per_hour: {} is negative",
                m.alert_threshold_bytes_per_hour
            ));
        }
    }
    for (path, pointer, s) in every_stack(r) {
        if s.verdict_reason.trim().is_empty() {
            problems.push(format!("{path}.verdict_reason: empty"));
        }
        let bounds: Vec<(f64, Option<f64>)> = s
            .age_histogram
            .iter()
            .map(|b| (b.min_secs, b.max_secs))
            .collect();
        if bounds != AGE_BUCKETS {
            problems.push(format!(
                "{path}.age_histogram: buckets (min_secs, max_secs) {bounds:?}, expected \
                 {AGE_BUCKETS:?}"
            ));
        }
        if s.series.is_empty() {
            problems.push(format!("{path}.series: empty"));
        }
        if let Some(age) = s.oldest_age_secs.filter(|a| *a < 0.0) {
            problems.push(format!(
                "{path}.oldest_age_secs: {age} is not a non-negative age"
            ));
        }
        for j in 0..s.frames.len() {
            let address = json.pointer(&format!("{pointer}/frames/{j}/address"));
            if !address
                .and_then(Value::as_str)
                .is_some_and(|a| a.starts_with("0x"))
            {
                problems.push(format!(
                    "{path}.frames[{j}].address: {address:?} is not written 0x-hex"
                ));
            }
        }
    }
    problems
}

impl Report {
    /// Reads a JSON report with the report crate ([`memtrace_report::load::parse`],
    /// what `memtrace report` loads snapshots with) and checks the values
    /// its types do not. `command` is kept for failure messages.
    pub fn parse(text: &str, command: &str) -> Result<Report, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let report = model::load::parse(text, "the report").map_err(|e| {
            // serde's message says what is wrong, not where.
            let at = serde_path_to_error::deserialize::<_, model::Report>(&json)
                .err()
                .map(|e| format!(" (at {})", e.path()))
                .unwrap_or_default();
            format!("{e:#}{at}")
        })?;
        let problems = value_problems(&json, &report);
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }
        Ok(Report {
            report,
            command: command.to_string(),
        })
    }

    /// Multi-line human summary (command, targets, totals, losses, every
    /// stack with its verdict's evidence and series) for failure messages.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "--- report of: {} ---", self.command);
        let _ = writeln!(
            s,
            "version {} duration {:.2}s sort {} min_age {:?}",
            self.version,
            self.duration_secs,
            name_of(&self.sort),
            self.min_age_secs
        );
        for t in &self.targets {
            let _ = writeln!(s, "target pid {} comm {:?} exe {:?}", t.pid, t.comm, t.exe);
            if let Some(m) = &t.memory {
                let samples: Vec<String> = m
                    .samples
                    .iter()
                    .map(|x| {
                        format!(
                            "{:.1}:{}/{}/{}",
                            x.t, x.rss_bytes, x.anon_bytes, x.traced_bytes
                        )
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    "  memory: rss {:.0}B/h anon {:.0}B/h traced {:.0}B/h explained {:?} \
                     alert {} (threshold {:.0}B/h); t:rss/anon/traced {}",
                    m.rss_growth_bytes_per_hour,
                    m.anon_growth_bytes_per_hour,
                    m.traced_growth_bytes_per_hour,
                    m.explained_share,
                    m.alert,
                    m.alert_threshold_bytes_per_hour,
                    samples.join(" ")
                );
            }
        }
        let _ = writeln!(s, "totals {:?}", self.totals);
        let _ = writeln!(s, "losses {:?}", self.losses.nonzero());
        let _ = writeln!(s, "stacks ({}):", self.stacks.len());
        for (i, st) in self.stacks.iter().enumerate() {
            let _ = writeln!(s, "  #{i} {}", st.summary());
            let _ = writeln!(s, "      {}", st.evidence());
            let _ = writeln!(s, "      series t:bytes {}", st.series_text());
        }
        s
    }

    /// `stacks[0]`; panics if there are no stacks.
    #[track_caller]
    pub fn top(&self) -> &StackReport {
        self.stacks
            .first()
            .unwrap_or_else(|| panic!("report has no stacks\n{}", self.describe()))
    }

    /// Stacks whose `frames[0].function` is `function`.
    pub fn stacks_of(&self, function: &str) -> Vec<&StackReport> {
        self.stacks
            .iter()
            .filter(|s| s.function() == Some(function))
            .collect()
    }

    /// The only stack whose `frames[0].function` is `function`; panics if
    /// there are none or several (the workloads allocate from one call path
    /// per function).
    #[track_caller]
    pub fn stack_of(&self, function: &str) -> &StackReport {
        match self.stacks_of(function).as_slice() {
            [one] => one,
            found => panic!(
                "expected exactly one stack with frames[0].function == {function:?}, found {}\n{}",
                found.len(),
                self.describe()
            ),
        }
    }

    /// Sum over the stacks whose `frames[0].function` is `function`.
    pub fn function_summary(&self, function: &str) -> FunctionSummary {
        let stacks = self.stacks_of(function);
        let mut kinds = Vec::new();
        for s in &stacks {
            if !kinds.contains(&s.kind) {
                kinds.push(s.kind);
            }
        }
        FunctionSummary {
            stacks: stacks.len(),
            kinds,
            totals: sum(stacks),
        }
    }

    /// Asserts the report has exactly one target, whose comm is `comm`
    /// (truncated to 15 bytes like the kernel's), whose exe's file name is
    /// `comm`, and, if given, whose pid is `pid`.
    #[track_caller]
    pub fn assert_target(&self, comm: &str, pid: Option<u32>) {
        let want_comm = &comm[..comm.len().min(15)];
        let ok = match self.targets.as_slice() {
            [t] => {
                t.comm == want_comm
                    && t.exe.as_deref().is_some_and(|exe| {
                        std::path::Path::new(exe)
                            .file_name()
                            .is_some_and(|n| n == comm)
                    })
                    && pid.is_none_or(|p| p == t.pid)
            }
            _ => false,
        };
        assert!(
            ok,
            "expected targets == [{{pid: {}, comm: {want_comm:?}, exe: \".../{comm}\"}}], got {:?}\n{}",
            pid.map_or("<any>".to_string(), |p| p.to_string()),
            self.targets,
            self.describe()
        );
    }

    /// Differences between the stacks whose `frames[0].function` is
    /// `function` (summed) and the expectation: present, all of `kind`,
    /// exactly `outstanding_bytes` in `outstanding_allocations`.
    pub fn function_mismatches(
        &self,
        function: &str,
        kind: StackKind,
        outstanding_bytes: u64,
        outstanding_allocations: u64,
    ) -> Vec<String> {
        let sum = self.function_summary(function);
        let kind_name = name_of(&kind);
        if sum.stacks == 0 {
            return vec![format!(
                "{function}: no stack has frames[0].function == {function:?} \
                 (expected {outstanding_bytes} B in {outstanding_allocations} {kind_name} \
                 allocations)"
            )];
        }
        let mut problems = Vec::new();
        if sum.kinds != [kind] {
            problems.push(format!(
                "{function}: kind {:?}, expected only {kind_name:?}",
                sum.kinds.iter().map(name_of).collect::<Vec<_>>()
            ));
        }
        if sum.totals.outstanding_bytes != outstanding_bytes {
            problems.push(format!(
                "{function}: outstanding_bytes {}, expected exactly {outstanding_bytes}",
                sum.totals.outstanding_bytes
            ));
        }
        if sum.totals.outstanding_allocations != outstanding_allocations {
            problems.push(format!(
                "{function}: outstanding_allocations {}, expected exactly {outstanding_allocations}",
                sum.totals.outstanding_allocations
            ));
        }
        problems
    }

    /// Asserts the [`DROPPING_LOSSES`] are all zero.
    #[track_caller]
    pub fn assert_no_losses(&self) {
        let bad: Vec<String> = self
            .losses
            .nonzero()
            .into_iter()
            .filter(|(k, _)| DROPPING_LOSSES.contains(k))
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        assert!(
            bad.is_empty(),
            "losses reported for a small workload: {}\n{}",
            bad.join(", "),
            self.describe()
        );
    }

    /// Problems with rules every report must satisfy (empty if none):
    /// - `outstanding_bytes == allocated_bytes - freed_bytes`, for the
    ///   totals and every stack (`<=` with `--min-age`, which leaves young
    ///   allocations out of the stacks' outstanding counts);
    /// - for heap stacks, `outstanding_allocations == allocations - frees`
    ///   (`<=` with `--min-age`);
    /// - stacks sorted by the report's `sort` key, descending
    ///   (`growth_bytes_per_sec`, `outstanding_bytes` or
    ///   `outstanding_allocations`), at most [`TOP`];
    /// - when fewer than [`TOP`] stacks are listed (none cut off), their
    ///   outstanding bytes add up to `totals.outstanding_bytes` (at most,
    ///   with `--min-age`) and their allocations/frees do not exceed the
    ///   totals';
    /// - every stack's pid is a target's;
    /// - `frames[0]` is never an allocator entry point itself;
    /// - the verdict's evidence, per stack: see [`Report::stack_problems`].
    pub fn consistency_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let t = &self.totals;
        let filtered = self.min_age_secs.is_some();
        let t_unfreed = t.allocated_bytes.checked_sub(t.freed_bytes);
        let t_ok = if filtered {
            t_unfreed.is_some_and(|u| t.outstanding_bytes <= u)
        } else {
            t_unfreed == Some(t.outstanding_bytes)
        };
        if !t_ok {
            problems.push(format!(
                "totals: outstanding_bytes {} {} allocated_bytes {} - freed_bytes {}",
                t.outstanding_bytes,
                if filtered {
                    "> (or freed > allocated)"
                } else {
                    "!="
                },
                t.allocated_bytes,
                t.freed_bytes
            ));
        }
        let pids: BTreeSet<u32> = self.targets.iter().map(|t| t.pid).collect();
        for (i, s) in self.stacks.iter().enumerate() {
            let unfreed = s.allocated_bytes.checked_sub(s.freed_bytes);
            let ok = if filtered {
                unfreed.is_some_and(|u| s.outstanding_bytes <= u)
            } else {
                unfreed == Some(s.outstanding_bytes)
            };
            if !ok {
                problems.push(format!(
                    "stacks[{i}]: outstanding_bytes {} {} allocated_bytes {} - freed_bytes {}",
                    s.outstanding_bytes,
                    if filtered {
                        "> (or freed > allocated)"
                    } else {
                        "!="
                    },
                    s.allocated_bytes,
                    s.freed_bytes
                ));
            }
            if s.kind == StackKind::Heap {
                let live = s.allocations.checked_sub(s.frees);
                let ok = if filtered {
                    live.is_some_and(|l| s.outstanding_allocations <= l)
                } else {
                    live == Some(s.outstanding_allocations)
                };
                if !ok {
                    problems.push(format!(
                        "stacks[{i}] (heap): outstanding_allocations {} {} allocations {} - \
                         frees {}",
                        s.outstanding_allocations,
                        if filtered {
                            "> (or frees > allocations)"
                        } else {
                            "!="
                        },
                        s.allocations,
                        s.frees
                    ));
                }
            }
            if !pids.contains(&s.pid) {
                problems.push(format!(
                    "stacks[{i}]: pid {} is not a target ({pids:?})",
                    s.pid
                ));
            }
            if let Some(f) = s.function() {
                if ALLOCATOR_SYMBOLS.contains(&f) {
                    problems.push(format!(
                        "stacks[{i}]: frames[0] is the allocator `{f}` itself, not its caller"
                    ));
                }
            }
            problems.extend(
                self.stack_problems(s)
                    .into_iter()
                    .map(|p| format!("stacks[{i}] ({}): {p}", s.function().unwrap_or("?"))),
            );
        }
        let key = |s: &StackReport| -> f64 {
            match self.sort {
                SortBy::Outstanding => s.outstanding_bytes as f64,
                SortBy::Count => s.outstanding_allocations as f64,
                SortBy::Growth => s.growth_bytes_per_sec,
                SortBy::Peak => s.peak.map_or(0.0, |p| p.bytes as f64),
            }
        };
        let key_name = match self.sort {
            SortBy::Outstanding => "outstanding_bytes",
            SortBy::Count => "outstanding_allocations",
            SortBy::Growth => "growth_bytes_per_sec",
            SortBy::Peak => "peak.bytes",
        };
        for (i, pair) in self.stacks.windows(2).enumerate() {
            if key(&pair[0]) < key(&pair[1]) {
                problems.push(format!(
                    "stacks not sorted by {key_name} (sort {:?}): stacks[{i}] has {} < \
                     stacks[{}] {}",
                    name_of(&self.sort),
                    key(&pair[0]),
                    i + 1,
                    key(&pair[1])
                ));
            }
        }
        if self.stacks.len() > TOP {
            problems.push(format!(
                "{} stacks listed, more than --top {TOP}",
                self.stacks.len()
            ));
        }
        if self.stacks.len() < TOP {
            let listed = sum(&self.stacks);
            let ok = if filtered {
                listed.outstanding_bytes <= t.outstanding_bytes
            } else {
                listed.outstanding_bytes == t.outstanding_bytes
            };
            if !ok {
                problems.push(format!(
                    "sum of stacks' outstanding_bytes {} {} totals.outstanding_bytes {} \
                     (no stack was cut off by --top)",
                    listed.outstanding_bytes,
                    if filtered { ">" } else { "!=" },
                    t.outstanding_bytes
                ));
            }
            if listed.allocations > t.allocations || listed.frees > t.frees {
                problems.push(format!(
                    "stacks count more allocations/frees ({}/{}) than totals ({}/{})",
                    listed.allocations, listed.frees, t.allocations, t.frees
                ));
            }
        }
        for (i, target) in self.targets.iter().enumerate() {
            if let Some(m) = &target.memory {
                for (j, pair) in m.samples.windows(2).enumerate() {
                    if pair[1].t < pair[0].t {
                        problems.push(format!(
                            "targets[{i}].memory.samples[{}].t {} < samples[{j}].t {}",
                            j + 1,
                            pair[1].t,
                            pair[0].t
                        ));
                    }
                }
            }
        }
        problems
    }

    /// Problems with one stack's verdict evidence (empty if none):
    /// - listed stacks hold memory (`outstanding_bytes > 0`, and
    ///   `outstanding_allocations > 0`), or, in a report `listed_by_peak`,
    ///   held some at a sample (`peak.bytes > 0`);
    /// - `peak`: at least every point of the series (and the outstanding
    ///   bytes, without `--min-age`), at most `peak.bound_bytes`, at a time
    ///   within the run;
    /// - `series`: times non-decreasing, within `0..=duration_secs` (plus
    ///   [`TIME_SLACK_SECS`]); the first point has 0 bytes in 0 allocations
    ///   (nothing was outstanding before tracing or before the stack first
    ///   appeared); the last point is the stack's `outstanding_bytes` and
    ///   `outstanding_allocations` (at least them, with `--min-age`);
    /// - `intervals` is the number of steps of the series (its length - 1)
    ///   and `grew_intervals` how many of them went up;
    /// - `age_histogram`'s bytes and allocations add up to
    ///   `outstanding_bytes` and `outstanding_allocations` (at least them
    ///   with `--min-age`: the histogram may cover every live allocation);
    ///   while a target still runs, the allocations may differ by
    ///   [`HISTOGRAM_SLACK_BLOCKS`] (or 1 %), the blocks allocated or freed
    ///   between the two kernel reads;
    /// - `oldest_age_secs` is set, at most `duration_secs` (plus
    ///   [`TIME_SLACK_SECS`]; only allocations made while tracing are
    ///   known), at least `--min-age`, and falls in the oldest non-empty
    ///   age bucket (within [`TIME_SLACK_SECS`] of its bounds).
    pub fn stack_problems(&self, s: &StackReport) -> Vec<String> {
        let mut problems = Vec::new();
        let filtered = self.min_age_secs.is_some();
        let horizon = self.duration_secs + TIME_SLACK_SECS;
        let peaked = self.listed_by_peak && s.peak.is_some_and(|p| p.bytes > 0);
        if (s.outstanding_bytes == 0 || s.outstanding_allocations == 0) && !peaked {
            problems.push(format!(
                "listed with outstanding_bytes {} in {} allocations: listed stacks hold memory \
                 (or, listed_by_peak, held some at a sample)",
                s.outstanding_bytes, s.outstanding_allocations
            ));
        }
        if let Some(p) = &s.peak {
            let highest = s.series.iter().map(|x| x.bytes).max().unwrap_or(0);
            if p.bytes < highest || p.bytes > p.bound_bytes {
                problems.push(format!(
                    "peak.bytes {} is below the series' highest point {highest} or above \
                     peak.bound_bytes {}",
                    p.bytes, p.bound_bytes
                ));
            }
            if !filtered && p.bytes < s.outstanding_bytes {
                problems.push(format!(
                    "peak.bytes {} is below outstanding_bytes {}",
                    p.bytes, s.outstanding_bytes
                ));
            }
            if p.bytes > 0 && !(0.0..=horizon).contains(&p.t) {
                problems.push(format!(
                    "peak.t {} outside 0..=duration_secs {} (+{TIME_SLACK_SECS})",
                    p.t, self.duration_secs
                ));
            }
        }

        for (j, (a, b)) in series_steps(s).enumerate() {
            if b.t < a.t {
                problems.push(format!(
                    "series[{}].t {} < series[{j}].t {}",
                    j + 1,
                    b.t,
                    a.t
                ));
            }
        }
        if let (Some(first), Some(last)) = (s.series.first(), s.series.last()) {
            if first.t < 0.0 || last.t > horizon {
                problems.push(format!(
                    "series spans {}..{} s, outside 0..=duration_secs {} (+{TIME_SLACK_SECS})",
                    first.t, last.t, self.duration_secs
                ));
            }
            if first.bytes != 0 || first.allocations != 0 {
                problems.push(format!(
                    "series[0] has {} bytes in {} allocations: it should be 0 (nothing of the \
                     stack was outstanding before it first appeared)",
                    first.bytes, first.allocations
                ));
            }
            let ok = if filtered {
                last.bytes >= s.outstanding_bytes && last.allocations >= s.outstanding_allocations
            } else {
                last.bytes == s.outstanding_bytes && last.allocations == s.outstanding_allocations
            };
            if !ok {
                problems.push(format!(
                    "the series ends at {} bytes in {} allocations, {} outstanding_bytes {} in \
                     outstanding_allocations {}",
                    last.bytes,
                    last.allocations,
                    if filtered {
                        "less than (--min-age)"
                    } else {
                        "not"
                    },
                    s.outstanding_bytes,
                    s.outstanding_allocations
                ));
            }
        }
        let steps = s.series.len().saturating_sub(1) as u64;
        let up = series_steps(s).filter(|(a, b)| b.bytes > a.bytes).count() as u64;
        if s.intervals != steps || s.grew_intervals != up {
            problems.push(format!(
                "intervals {} / grew_intervals {}: the series ({} points) has {steps} steps, \
                 {up} of them up",
                s.intervals,
                s.grew_intervals,
                s.series.len()
            ));
        }

        let bytes: u64 = s.age_histogram.iter().map(|b| b.bytes).sum();
        let allocations: u64 = s.age_histogram.iter().map(|b| b.allocations).sum();
        // The ages are read from the kernel right after the totals: on a
        // target still running, blocks allocated or freed in between make
        // the two differ by a few blocks (README: JSON report). Exact once
        // every target has exited.
        let running = self.targets.iter().any(|t| !t.exited);
        let slack = if running {
            HISTOGRAM_SLACK_BLOCKS.max(s.outstanding_allocations / 100)
        } else {
            0
        };
        let ok = if filtered {
            allocations + slack >= s.outstanding_allocations
                && (slack > 0 || bytes >= s.outstanding_bytes)
        } else if allocations == s.outstanding_allocations {
            bytes == s.outstanding_bytes
        } else {
            allocations.abs_diff(s.outstanding_allocations) <= slack
        };
        if !ok {
            problems.push(format!(
                "age_histogram adds up to {bytes} bytes in {allocations} allocations, {} \
                 outstanding_bytes {} in outstanding_allocations {}",
                if filtered {
                    "less than (--min-age)"
                } else {
                    "not"
                },
                s.outstanding_bytes,
                s.outstanding_allocations
            ));
        }
        for b in &s.age_histogram {
            if (b.bytes == 0) != (b.allocations == 0) {
                problems.push(format!(
                    "age bucket from {} s: {} bytes in {} allocations",
                    b.min_secs, b.bytes, b.allocations
                ));
            }
        }
        match s.oldest_age_secs {
            // Blocks allocated (or freed) between the two kernel reads of a
            // target that never pauses: see the histogram's slack above.
            None if allocations == 0 && s.outstanding_allocations <= slack => {}
            None if s.outstanding_allocations > 0 => problems.push(format!(
                "oldest_age_secs is null with {} outstanding allocations",
                s.outstanding_allocations
            )),
            None => {}
            Some(age) => {
                if age > horizon {
                    problems.push(format!(
                        "oldest_age_secs {age} is more than duration_secs {} \
                         (+{TIME_SLACK_SECS}): only allocations made while tracing are known",
                        self.duration_secs
                    ));
                }
                if let Some(min_age) = self.min_age_secs {
                    if age < min_age {
                        problems.push(format!(
                            "oldest_age_secs {age} is less than --min-age {min_age}"
                        ));
                    }
                }
                if let Some(b) = s.age_histogram.iter().rev().find(|b| b.allocations > 0) {
                    let above_min = age >= b.min_secs - TIME_SLACK_SECS;
                    let below_max = b.max_secs.is_none_or(|m| age <= m + TIME_SLACK_SECS);
                    if !above_min || !below_max {
                        problems.push(format!(
                            "oldest_age_secs {age} is not in the oldest non-empty age bucket \
                             {}..{:?} s",
                            b.min_secs, b.max_secs
                        ));
                    }
                }
            }
        }
        problems
    }

    /// Asserts [`Report::consistency_problems`] is empty.
    #[track_caller]
    pub fn assert_consistent(&self) {
        let problems = self.consistency_problems();
        assert!(
            problems.is_empty(),
            "report is inconsistent:\n  {}\n{}",
            problems.join("\n  "),
            self.describe()
        );
    }
}

#[cfg(test)]
mod tests {
    use memtrace_report::{
        Counters, Frame, Losses, MemoryReport, MemorySample, Peak, TargetReport, Verdict,
    };

    use super::*;

    /// A stack that grew to `outstanding` bytes in `allocs` allocations,
    /// all younger than 10 s, at `growth` bytes per second.
    fn stack_growing(
        function: &str,
        kind: StackKind,
        outstanding: u64,
        allocs: u64,
        growth: f64,
    ) -> StackReport {
        let frame =
            |address, function: Option<&str>, file: Option<&str>, line, module: Option<&str>| {
                Frame {
                    address,
                    function: function.map(str::to_string),
                    file: file.map(str::to_string),
                    line,
                    module: module.map(str::to_string),
                    inlined: false,
                    language: None,
                    column: None,
                }
            };
        StackReport {
            pid: 7,
            kind,
            outstanding_bytes: outstanding,
            outstanding_allocations: allocs,
            allocated_bytes: outstanding,
            freed_bytes: 0,
            allocations: allocs,
            frees: 0,
            verdict: Verdict::Growing,
            verdict_reason: "grew in 2/2 intervals".into(),
            growth_bytes_per_sec: growth,
            rated: true,
            intervals: 2,
            grew_intervals: 2,
            early_growth_bytes: 1,
            late_growth_bytes: 1,
            oldest_age_secs: Some(1.5),
            age_histogram: AGE_BUCKETS
                .iter()
                .enumerate()
                .map(|(i, &(min_secs, max_secs))| AgeBucket {
                    min_secs,
                    max_secs,
                    bytes: if i == 0 { outstanding } else { 0 },
                    allocations: if i == 0 { allocs } else { 0 },
                })
                .collect(),
            series: [
                (0.0, 0, 0),
                (1.0, outstanding / 2, allocs / 2),
                (2.0, outstanding, allocs),
            ]
            .map(|(t, bytes, allocations)| SeriesPoint {
                t,
                bytes,
                allocations,
            })
            .to_vec(),
            frames: vec![
                frame(0x1000, Some(function), Some("a.c"), Some(3), Some("/bin/a")),
                frame(0x2000, None, None, None, None),
            ],
            truncated: false,
            peak: Some(Peak {
                bytes: outstanding,
                allocations: allocs,
                t: 2.0,
                bound_bytes: outstanding,
            }),
        }
    }

    fn stack(function: &str, kind: StackKind, outstanding: u64, allocs: u64) -> StackReport {
        stack_growing(function, kind, outstanding, allocs, 1.5)
    }

    /// A report of `stacks` (of one exited target, pid 7, none cut off) as
    /// the JSON memtrace writes, for tests to edit.
    fn report_sorted(stacks: Vec<StackReport>, sort: SortBy) -> Value {
        let totals = sum(&stacks);
        let report = model::Report {
            version: model::REPORT_VERSION,
            duration_secs: 2.0,
            interval_secs: 1.0,
            sort,
            min_age_secs: None,
            targets: vec![TargetReport {
                pid: 7,
                comm: "a".into(),
                exe: Some("/bin/a".into()),
                cgroup: None,
                container: None,
                exited: true,
                allocators: vec!["/lib/libc.so.6".into()],
                outstanding_bytes: totals.outstanding_bytes,
                stacks_holding_memory: totals.stacks_holding_memory,
                growing_stacks: totals.stacks,
                peak: None,
                memory: None,
                unseen: None,
                probes_lost_at_s: None,
                mappings: Vec::new(),
                go: None,
                node: None,
                java: None,
            }],
            totals,
            losses: Losses::default(),
            counters: Counters::default(),
            oom_kills: Vec::new(),
            overhead: None,
            sample_bytes: None,
            probes: None,
            unwind: None,
            unnamed_frames: Vec::new(),
            listed_by_peak: false,
            stacks,
        };
        serde_json::to_value(&report).unwrap()
    }

    fn report(stacks: Vec<StackReport>) -> Value {
        report_sorted(stacks, SortBy::Outstanding)
    }

    fn problems(json: &Value) -> Vec<String> {
        Report::parse(&json.to_string(), "m")
            .unwrap()
            .consistency_problems()
    }

    #[test]
    fn parses_and_finds_functions() {
        let json = report(vec![
            stack("leak_a", StackKind::Heap, 300, 3),
            stack("leak_b", StackKind::Mmap, 200, 1),
            stack("leak_a", StackKind::Heap, 100, 1),
        ]);
        let r = Report::parse(&json.to_string(), "memtrace").unwrap();
        assert_eq!(r.stacks.len(), 3);
        assert_eq!(r.stacks[0].frames[0].address, 0x1000);
        assert_eq!(r.stacks[0].frames[1].function, None);
        assert_eq!(r.stacks[0].series.len(), 3);
        assert_eq!(r.stacks[0].age_bucket(0.0).bytes, 300);
        assert_eq!(r.stacks[0].age_bucket(3600.0).max_secs, None);
        assert_eq!(r.sort, SortBy::Outstanding);
        assert_eq!(r.min_age_secs, None);
        assert!(r.targets[0].memory.is_none());
        let a = r.function_summary("leak_a");
        assert_eq!((a.stacks, a.totals.outstanding_bytes), (2, 400));
        assert!(r
            .function_mismatches("leak_a", StackKind::Heap, 400, 4)
            .is_empty());
        assert_eq!(
            r.function_mismatches("leak_b", StackKind::Heap, 200, 1)
                .len(),
            1
        );
        assert_eq!(
            r.function_mismatches("absent", StackKind::Heap, 1, 1).len(),
            1
        );
        assert!(
            r.consistency_problems().is_empty(),
            "{:?}",
            r.consistency_problems()
        );
        r.assert_target("a", Some(7));
        assert!(r
            .describe()
            .contains("series t:bytes 0.0:0 1.0:150 2.0:300"));
    }

    #[test]
    fn parses_target_memory() {
        let mut json = report(vec![stack("f", StackKind::Heap, 10, 2)]);
        let sample = |t, rss_bytes, anon_bytes, traced_bytes| MemorySample {
            t,
            rss_bytes,
            anon_bytes,
            traced_bytes,
        };
        json["targets"][0]["memory"] = serde_json::to_value(MemoryReport {
            samples: vec![sample(0.0, 100, 50, 0), sample(1.0, 200, 150, 10)],
            rss_growth_bytes_per_hour: 360000.0,
            anon_growth_bytes_per_hour: 360000.0,
            traced_growth_bytes_per_hour: 3600.0,
            explained_share: Some(0.01),
            alert: true,
            alert_threshold_bytes_per_hour: 1000.0,
            peak_rss_bytes: 200,
            peak_rss_t: 1.0,
        })
        .unwrap();
        let r = Report::parse(&json.to_string(), "m").unwrap();
        let m = r.targets[0].memory.as_ref().unwrap();
        assert_eq!(
            (m.samples.len(), m.alert, m.explained_share),
            (2, true, Some(0.01))
        );
        assert!(r.consistency_problems().is_empty());
        json["targets"][0]["memory"]["alert"] = Value::from(1);
        assert!(Report::parse(&json.to_string(), "m").is_err());
    }

    #[test]
    fn rejects_schema_violations() {
        let one = || report(vec![stack("f", StackKind::Heap, 1, 1)]);
        let mut json = one();
        json["stacks"][0]["frames"][0]["address"] = Value::from("1000");
        let err = Report::parse(&json.to_string(), "m").unwrap_err();
        assert!(err.contains("stacks[0].frames[0].address"), "{err}");

        let mut json = one();
        json["stacks"][0]["kind"] = Value::from("stack");
        assert!(Report::parse(&json.to_string(), "m").is_err());

        let mut json = report(vec![]);
        json.as_object_mut().unwrap().remove("totals");
        let err = Report::parse(&json.to_string(), "m").unwrap_err();
        assert!(err.contains("totals"), "{err}");

        for verdict in [
            Verdict::Leak,
            Verdict::Plateau,
            Verdict::Growing,
            Verdict::Stable,
        ] {
            let mut json = one();
            json["stacks"][0]["verdict"] = Value::from(name_of(&verdict));
            assert!(Report::parse(&json.to_string(), "m").is_ok(), "{verdict:?}");
        }
        let mut json = one();
        json["stacks"][0]["verdict"] = Value::from("leaking");
        let err = Report::parse(&json.to_string(), "m").unwrap_err();
        assert!(err.contains("stacks[0].verdict"), "{err}");

        let mut json = one();
        json["stacks"][0]["verdict_reason"] = Value::from(" ");
        let err = Report::parse(&json.to_string(), "m").unwrap_err();
        assert!(err.contains("verdict_reason"), "{err}");

        let mut json = one();
        json["stacks"][0]["age_histogram"][4]["max_secs"] = Value::from(7200.0);
        let err = Report::parse(&json.to_string(), "m").unwrap_err();
        assert!(err.contains("age_histogram"), "{err}");

        let mut json = one();
        json["stacks"][0]["series"] = serde_json::json!([]);
        assert!(Report::parse(&json.to_string(), "m").is_err());

        let mut json = one();
        json["stacks"][0]["early_growth_bytes"] = Value::from(-5);
        assert!(Report::parse(&json.to_string(), "m").is_ok());
        json["stacks"][0]["late_growth_bytes"] = Value::from(0.5);
        assert!(Report::parse(&json.to_string(), "m").is_err());

        let mut json = report(vec![]);
        json["sort"] = Value::from("size");
        assert!(Report::parse(&json.to_string(), "m").is_err());

        let mut json = report(vec![]);
        json["version"] = Value::from(1);
        let err = Report::parse(&json.to_string(), "m").unwrap_err();
        assert!(err.contains("version"), "{err}");
    }

    #[test]
    fn dropping_losses_are_the_crates() {
        let names = serde_json::to_value(Losses::default()).unwrap();
        for name in DROPPING_LOSSES {
            assert!(names.get(name).is_some(), "losses.{name} is not in {names}");
        }
    }

    #[test]
    fn detects_inconsistencies() {
        // Unsorted, and frames[0] is malloc itself.
        let json = report(vec![
            stack("f", StackKind::Heap, 1, 1),
            stack("malloc", StackKind::Heap, 5, 1),
        ]);
        let problems = problems(&json);
        assert!(
            problems.iter().any(|p| p.contains("not sorted")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("`malloc`")),
            "{problems:?}"
        );

        // Totals that do not add up.
        let mut json = report(vec![stack("f", StackKind::Heap, 10, 1)]);
        json["totals"]["outstanding_bytes"] = Value::from(11);
        assert_eq!(
            super::tests::problems(&json).len(),
            2,
            "{:?}",
            super::tests::problems(&json)
        );
    }

    #[test]
    fn detects_evidence_inconsistencies() {
        let one = |edit: &dyn Fn(&mut Value), needle: &str| {
            let mut json = report(vec![stack("f", StackKind::Heap, 100, 4)]);
            edit(&mut json["stacks"][0]);
            let problems = problems(&json);
            assert!(
                problems.len() == 1 && problems[0].contains(needle),
                "expected one problem about {needle:?}: {problems:?}"
            );
        };
        one(
            &|s| s["age_histogram"][0]["bytes"] = Value::from(99),
            "age_histogram adds up",
        );
        one(
            &|s| {
                s["age_histogram"][0]["bytes"] = Value::from(75);
                s["age_histogram"][0]["allocations"] = Value::from(3);
                s["age_histogram"][1]["bytes"] = Value::from(25);
                s["age_histogram"][1]["allocations"] = Value::from(1);
            },
            "oldest_age_secs 1.5 is not in",
        );
        one(
            &|s| s["series"][2]["bytes"] = Value::from(90),
            "the series ends at 90 bytes",
        );
        one(&|s| s["series"][0]["bytes"] = Value::from(1), "series[0]");
        one(&|s| s["intervals"] = Value::from(3), "intervals 3");
        one(
            &|s| s["grew_intervals"] = Value::from(1),
            "grew_intervals 1",
        );
        one(&|s| s["series"][1]["t"] = Value::from(2.5), "series[2].t");
        one(
            &|s| s["oldest_age_secs"] = Value::Null,
            "oldest_age_secs is null",
        );
        one(
            &|s| s["oldest_age_secs"] = Value::from(5.0),
            "more than duration_secs",
        );
    }

    #[test]
    fn checks_the_order_of_each_sort_key() {
        // Growth order: a slow big stack after a fast small one.
        let stacks = vec![
            stack_growing("fast", StackKind::Heap, 10, 1, 100.0),
            stack_growing("slow", StackKind::Heap, 1000, 2, 1.0),
        ];
        assert!(problems(&report_sorted(stacks.clone(), SortBy::Growth)).is_empty());
        let p = problems(&report_sorted(stacks.clone(), SortBy::Outstanding));
        assert!(p.len() == 1 && p[0].contains("outstanding_bytes"), "{p:?}");
        let p = problems(&report_sorted(stacks, SortBy::Count));
        assert!(
            p.len() == 1 && p[0].contains("outstanding_allocations"),
            "{p:?}"
        );
        let stacks = vec![
            stack_growing("slow", StackKind::Heap, 1000, 2, 1.0),
            stack_growing("fast", StackKind::Heap, 10, 1, 100.0),
        ];
        let p = problems(&report_sorted(stacks, SortBy::Growth));
        assert!(
            p.len() == 1 && p[0].contains("growth_bytes_per_sec"),
            "{p:?}"
        );
    }

    #[test]
    fn min_age_counts_only_old_allocations() {
        // 3 of 4 allocations (75 of 100 bytes) are older than --min-age 5 s.
        let mut json = report(vec![stack("f", StackKind::Heap, 100, 4)]);
        json["min_age_secs"] = Value::from(5.0);
        let s = &mut json["stacks"][0];
        s["outstanding_bytes"] = Value::from(75);
        s["outstanding_allocations"] = Value::from(3);
        s["oldest_age_secs"] = Value::from(8.0);
        s["age_histogram"][0]["bytes"] = Value::from(75);
        s["age_histogram"][0]["allocations"] = Value::from(3);
        let json = {
            let mut j = json;
            j["duration_secs"] = Value::from(9.0);
            j
        };
        assert!(problems(&json).is_empty(), "{:?}", problems(&json));
        // The histogram may cover every live allocation, young ones too.
        let mut json = json;
        json["stacks"][0]["age_histogram"][0]["bytes"] = Value::from(100);
        json["stacks"][0]["age_histogram"][0]["allocations"] = Value::from(4);
        assert!(problems(&json).is_empty(), "{:?}", problems(&json));
        // But not fewer than the stack's outstanding ones.
        json["stacks"][0]["age_histogram"][0]["bytes"] = Value::from(50);
        json["stacks"][0]["age_histogram"][0]["allocations"] = Value::from(2);
        let p = problems(&json);
        assert!(
            p.len() == 1 && p[0].contains("less than (--min-age)"),
            "{p:?}"
        );
        // The oldest allocation shown is at least --min-age old.
        json["stacks"][0]["age_histogram"][0]["bytes"] = Value::from(75);
        json["stacks"][0]["age_histogram"][0]["allocations"] = Value::from(3);
        json["min_age_secs"] = Value::from(9.0);
        let p = problems(&json);
        assert!(
            p.len() == 1 && p[0].contains("less than --min-age"),
            "{p:?}"
        );
    }

    #[test]
    fn stacks_listed_by_peak_may_hold_nothing() {
        // A spike of 4096 bytes at 1 s, freed by 2 s.
        let mut spike = stack("spike", StackKind::Heap, 4096, 4);
        (spike.outstanding_bytes, spike.outstanding_allocations) = (0, 0);
        (spike.freed_bytes, spike.frees) = (4096, 4);
        spike.series[1] = SeriesPoint {
            t: 1.0,
            bytes: 4096,
            allocations: 4,
        };
        spike.series[2] = SeriesPoint {
            t: 2.0,
            bytes: 0,
            allocations: 0,
        };
        spike.grew_intervals = 1;
        spike.oldest_age_secs = None;
        spike.age_histogram.iter_mut().for_each(|b| {
            (b.bytes, b.allocations) = (0, 0);
        });
        spike.peak = Some(Peak {
            bytes: 4096,
            allocations: 4,
            t: 1.0,
            bound_bytes: 4096,
        });
        let mut json = report_sorted(vec![spike], SortBy::Peak);
        let p = problems(&json);
        assert!(
            p.len() == 1 && p[0].contains("listed stacks hold memory"),
            "{p:?}"
        );
        json["listed_by_peak"] = Value::from(true);
        assert!(problems(&json).is_empty(), "{:?}", problems(&json));
        // A peak below a point of its series, or above its bound: wrong.
        json["stacks"][0]["peak"]["bytes"] = Value::from(2048);
        let p = problems(&json);
        assert!(p.len() == 1 && p[0].contains("below the series"), "{p:?}");
        json["stacks"][0]["peak"]["bytes"] = Value::from(8192);
        let p = problems(&json);
        assert!(p.len() == 1 && p[0].contains("above peak.bound"), "{p:?}");
    }
}

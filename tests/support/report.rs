//! The JSON report: parsing with schema checks, lookups, and the
//! consistency rules every report must satisfy.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// The `--top` used by every JSON test run ([`crate::JSON_ARGS`]).
pub const TOP: usize = 100;

/// The report schema version these checks implement.
pub const REPORT_VERSION: u64 = 2;

/// Every value of `stacks[].verdict`.
pub const VERDICTS: &[&str] = &["leak", "plateau", "growing", "stable"];

/// Every value of the top-level `sort` (`--sort`).
pub const SORT_KEYS: &[&str] = &["growth", "outstanding", "count"];

/// Blocks by which a running target's `age_histogram` may differ from
/// its stack's outstanding allocations (see [`Report::stack_problems`]).
pub const HISTOGRAM_SLACK_BLOCKS: u64 = 2;

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

/// Loss counters that must be zero for the small test workloads: any of
/// them non-zero means bytes or stacks were dropped. Only the names present
/// in the report's `losses` object are checked.
pub const LOSS_COUNTERS: &[&str] = &[
    "live_map_full",
    "stack_lost",
    "stack_totals_full",
    "inflight_full",
    "in_flight_full",
    "ring_buffer_full",
    "ring_buf_full",
];

/// One frame of a stack.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub address: u64,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u64>,
    pub module: Option<String>,
}

/// One entry of `stacks`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stack {
    pub pid: u32,
    pub kind: String,
    pub outstanding_bytes: u64,
    pub outstanding_allocations: u64,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub allocations: u64,
    pub frees: u64,
    /// Growth rate in bytes per second (Theil–Sen).
    pub growth_bytes_per_sec: f64,
    /// One of [`VERDICTS`].
    pub verdict: String,
    /// Why, in words (never empty).
    pub verdict_reason: String,
    /// Steps in the series.
    pub intervals: u64,
    /// Steps of the series that went up.
    pub grew_intervals: u64,
    /// Growth over the first third of the stack's window.
    pub early_growth_bytes: i64,
    /// Growth over the last third of the stack's window.
    pub late_growth_bytes: i64,
    /// Age of the oldest live allocation at report time.
    pub oldest_age_secs: Option<f64>,
    /// Live bytes by age, the [`AGE_BUCKETS`] in order.
    pub age_histogram: Vec<AgeBucket>,
    /// Outstanding memory over time, oldest first.
    pub series: Vec<SeriesPoint>,
    /// Innermost first.
    pub frames: Vec<Frame>,
    /// The walk stopped before the outermost frame.
    pub truncated: bool,
}

/// One entry of `stacks[].age_histogram`: live memory allocated between
/// `min_secs` and `max_secs` (unbounded when `None`) ago.
#[derive(Debug, Clone, PartialEq)]
pub struct AgeBucket {
    pub min_secs: f64,
    pub max_secs: Option<f64>,
    pub bytes: u64,
    pub allocations: u64,
}

/// One point of `stacks[].series`.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesPoint {
    /// Seconds since tracing started.
    pub t: f64,
    pub bytes: u64,
    pub allocations: u64,
}

impl Stack {
    /// `frames[0].function`.
    pub fn function(&self) -> Option<&str> {
        self.frames.first()?.function.as_deref()
    }

    /// Function names from innermost outwards ("?" when unsymbolized).
    pub fn functions(&self) -> Vec<&str> {
        self.frames
            .iter()
            .map(|f| f.function.as_deref().unwrap_or("?"))
            .collect()
    }

    /// The age bucket starting at `min_secs` (one of [`AGE_BUCKETS`]).
    #[track_caller]
    pub fn age_bucket(&self, min_secs: f64) -> &AgeBucket {
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

    /// Steps of the series: `(before, after)`.
    pub fn steps(&self) -> impl Iterator<Item = (&SeriesPoint, &SeriesPoint)> {
        self.series.iter().zip(self.series.iter().skip(1))
    }

    /// The series as `t:bytes` pairs (for failure messages).
    pub fn series_text(&self) -> String {
        self.series
            .iter()
            .map(|p| format!("{:.1}:{}", p.t, p.bytes))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The verdict's evidence on one line (for failure messages).
    pub fn evidence(&self) -> String {
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
            self.verdict,
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

    /// One-line summary for failure messages.
    pub fn summary(&self) -> String {
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
            self.kind,
            self.outstanding_bytes,
            self.outstanding_allocations,
            self.allocated_bytes,
            self.allocations,
            self.freed_bytes,
            self.frees,
            self.growth_bytes_per_sec,
            self.verdict,
            chain
        )
    }
}

/// `totals`, also used for sums over stacks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub outstanding_bytes: u64,
    pub outstanding_allocations: u64,
    pub allocations: u64,
    pub frees: u64,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
}

impl Totals {
    fn add(&mut self, s: &Stack) {
        self.outstanding_bytes += s.outstanding_bytes;
        self.outstanding_allocations += s.outstanding_allocations;
        self.allocations += s.allocations;
        self.frees += s.frees;
        self.allocated_bytes += s.allocated_bytes;
        self.freed_bytes += s.freed_bytes;
    }
}

/// One entry of `targets`.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    /// Whether it had exited when the report was made.
    pub exited: bool,
    /// The allocator files hooked in it.
    pub allocators: Vec<String>,
    /// The process's own memory over time, when memtrace sampled it.
    pub memory: Option<TargetMemory>,
}

/// `targets[].memory`: the process's RSS next to what memtrace traced.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetMemory {
    pub samples: Vec<MemorySample>,
    pub rss_growth_bytes_per_hour: f64,
    pub anon_growth_bytes_per_hour: f64,
    pub traced_growth_bytes_per_hour: f64,
    /// Share of the growth the traced stacks explain, when defined.
    pub explained_share: Option<f64>,
    /// Whether the growth crossed `--rss-alert`.
    pub alert: bool,
    pub alert_threshold_bytes_per_hour: f64,
}

/// One entry of `targets[].memory.samples`.
#[derive(Debug, Clone, PartialEq)]
pub struct MemorySample {
    /// Seconds since tracing started.
    pub t: f64,
    pub rss_bytes: u64,
    pub anon_bytes: u64,
}

/// The stacks whose `frames[0].function` is one function, summed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionSummary {
    /// How many stacks (0: the function is absent from `stacks`).
    pub stacks: usize,
    pub kinds: BTreeSet<String>,
    pub totals: Totals,
}

/// One entry of `oom_kills`: a process the kernel's OOM killer chose.
#[derive(Debug, Clone)]
pub struct OomKill {
    pub pid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    pub anon_rss_bytes: u64,
    /// Whether memtrace traced it (only then are there stacks).
    pub traced: bool,
    pub traced_outstanding_bytes: u64,
    /// Largest first.
    pub top_stacks: Vec<Stack>,
}

/// A parsed, schema-checked `--format json` report.
#[derive(Debug, Clone)]
pub struct Report {
    pub version: u64,
    pub duration_secs: f64,
    /// How `stacks` are ordered: one of [`SORT_KEYS`].
    pub sort: String,
    /// `--min-age`: when set, stacks count only allocations at least this
    /// old, and stacks without any are left out.
    pub min_age_secs: Option<f64>,
    pub targets: Vec<Target>,
    pub totals: Totals,
    pub losses: BTreeMap<String, u64>,
    pub stacks: Vec<Stack>,
    pub oom_kills: Vec<OomKill>,
    /// The whole document.
    pub json: Value,
    /// The memtrace command that produced it.
    pub command: String,
}

/// A JSON object being read, with its path for error messages.
struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    fn new(path: impl Into<String>, value: &'a Value) -> Result<Obj<'a>, String> {
        let path = path.into();
        match value {
            Value::Object(map) => Ok(Obj { path, map }),
            other => Err(format!("{path}: expected an object, got {other}")),
        }
    }

    fn field(&self, key: &str) -> Result<&'a Value, String> {
        self.map
            .get(key)
            .ok_or_else(|| format!("{}: missing field `{key}`", self.path))
    }

    fn u64(&self, key: &str) -> Result<u64, String> {
        let v = self.field(key)?;
        v.as_u64().ok_or_else(|| {
            format!(
                "{}.{key}: expected a non-negative integer, got {v}",
                self.path
            )
        })
    }

    fn u32(&self, key: &str) -> Result<u32, String> {
        let v = self.u64(key)?;
        u32::try_from(v).map_err(|_| format!("{}.{key}: {v} does not fit a pid", self.path))
    }

    fn f64(&self, key: &str) -> Result<f64, String> {
        let v = self.field(key)?;
        v.as_f64()
            .ok_or_else(|| format!("{}.{key}: expected a number, got {v}", self.path))
    }

    fn string(&self, key: &str) -> Result<String, String> {
        let v = self.field(key)?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{}.{key}: expected a string, got {v}", self.path))
    }

    fn opt_string(&self, key: &str) -> Result<Option<String>, String> {
        match self.field(key)? {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            v => Err(format!(
                "{}.{key}: expected a string or null, got {v}",
                self.path
            )),
        }
    }

    fn i64(&self, key: &str) -> Result<i64, String> {
        let v = self.field(key)?;
        v.as_i64()
            .ok_or_else(|| format!("{}.{key}: expected an integer, got {v}", self.path))
    }

    fn bool(&self, key: &str) -> Result<bool, String> {
        let v = self.field(key)?;
        v.as_bool()
            .ok_or_else(|| format!("{}.{key}: expected true or false, got {v}", self.path))
    }

    /// A finite number.
    fn finite(&self, key: &str) -> Result<f64, String> {
        let v = self.f64(key)?;
        if v.is_finite() {
            Ok(v)
        } else {
            Err(format!("{}.{key}: {v} is not finite", self.path))
        }
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>, String> {
        match self.field(key)? {
            Value::Null => Ok(None),
            v => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("{}.{key}: expected a number or null, got {v}", self.path)),
        }
    }

    /// The objects of array `key`, with their paths.
    fn objects(&self, key: &str) -> Result<Vec<Obj<'a>>, String> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| Obj::new(format!("{}.{key}[{i}]", self.path), v))
            .collect()
    }

    fn opt_u64(&self, key: &str) -> Result<Option<u64>, String> {
        match self.field(key)? {
            Value::Null => Ok(None),
            v => v.as_u64().map(Some).ok_or_else(|| {
                format!("{}.{key}: expected an integer or null, got {v}", self.path)
            }),
        }
    }

    fn array(&self, key: &str) -> Result<&'a Vec<Value>, String> {
        let v = self.field(key)?;
        v.as_array()
            .ok_or_else(|| format!("{}.{key}: expected an array, got {v}", self.path))
    }

    fn child(&self, key: &str) -> Result<Obj<'a>, String> {
        Obj::new(format!("{}.{key}", self.path), self.field(key)?)
    }
}

fn parse_totals(o: &Obj) -> Result<Totals, String> {
    Ok(Totals {
        outstanding_bytes: o.u64("outstanding_bytes")?,
        outstanding_allocations: o.u64("outstanding_allocations")?,
        allocations: o.u64("allocations")?,
        frees: o.u64("frees")?,
        allocated_bytes: o.u64("allocated_bytes")?,
        freed_bytes: o.u64("freed_bytes")?,
    })
}

fn parse_frame(o: &Obj) -> Result<Frame, String> {
    let address = o.string("address")?;
    let hex = address
        .strip_prefix("0x")
        .ok_or_else(|| format!("{}.address: {address:?} does not start with 0x", o.path))?;
    let address = u64::from_str_radix(hex, 16)
        .map_err(|e| format!("{}.address: {address:?} is not hex: {e}", o.path))?;
    Ok(Frame {
        address,
        function: o.opt_string("function")?,
        file: o.opt_string("file")?,
        line: o.opt_u64("line")?,
        module: o.opt_string("module")?,
    })
}

fn parse_stack(o: &Obj) -> Result<Stack, String> {
    let kind = o.string("kind")?;
    if kind != "heap" && kind != "mmap" {
        return Err(format!(
            "{}.kind: expected \"heap\" or \"mmap\", got {kind:?}",
            o.path
        ));
    }
    let verdict = o.string("verdict")?;
    if !VERDICTS.contains(&verdict.as_str()) {
        return Err(format!(
            "{}.verdict: expected one of {VERDICTS:?}, got {verdict:?}",
            o.path
        ));
    }
    let verdict_reason = o.string("verdict_reason")?;
    if verdict_reason.trim().is_empty() {
        return Err(format!("{}.verdict_reason: empty", o.path));
    }
    let age_histogram = parse_age_histogram(o)?;
    let series = o
        .objects("series")?
        .iter()
        .map(|p| {
            Ok(SeriesPoint {
                t: p.finite("t")?,
                bytes: p.u64("bytes")?,
                allocations: p.u64("allocations")?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if series.is_empty() {
        return Err(format!("{}.series: empty", o.path));
    }
    let oldest_age_secs = o.opt_f64("oldest_age_secs")?;
    if let Some(age) = oldest_age_secs {
        if !age.is_finite() || age < 0.0 {
            return Err(format!(
                "{}.oldest_age_secs: {age} is not a non-negative age",
                o.path
            ));
        }
    }
    let frames = o
        .array("frames")?
        .iter()
        .enumerate()
        .map(|(i, f)| parse_frame(&Obj::new(format!("{}.frames[{i}]", o.path), f)?))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Stack {
        pid: o.u32("pid")?,
        kind,
        outstanding_bytes: o.u64("outstanding_bytes")?,
        outstanding_allocations: o.u64("outstanding_allocations")?,
        allocated_bytes: o.u64("allocated_bytes")?,
        freed_bytes: o.u64("freed_bytes")?,
        allocations: o.u64("allocations")?,
        frees: o.u64("frees")?,
        growth_bytes_per_sec: o.finite("growth_bytes_per_sec")?,
        verdict,
        verdict_reason,
        intervals: o.u64("intervals")?,
        grew_intervals: o.u64("grew_intervals")?,
        early_growth_bytes: o.i64("early_growth_bytes")?,
        late_growth_bytes: o.i64("late_growth_bytes")?,
        oldest_age_secs,
        age_histogram,
        series,
        frames,
        truncated: o.bool("truncated")?,
    })
}

/// `age_histogram`: exactly the [`AGE_BUCKETS`], in order.
fn parse_age_histogram(o: &Obj) -> Result<Vec<AgeBucket>, String> {
    let buckets = o
        .objects("age_histogram")?
        .iter()
        .map(|b| {
            Ok(AgeBucket {
                min_secs: b.f64("min_secs")?,
                max_secs: b.opt_f64("max_secs")?,
                bytes: b.u64("bytes")?,
                allocations: b.u64("allocations")?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let bounds: Vec<(f64, Option<f64>)> =
        buckets.iter().map(|b| (b.min_secs, b.max_secs)).collect();
    if bounds != AGE_BUCKETS {
        return Err(format!(
            "{}.age_histogram: buckets (min_secs, max_secs) {bounds:?}, expected {AGE_BUCKETS:?}",
            o.path
        ));
    }
    Ok(buckets)
}

fn parse_memory(o: &Obj) -> Result<TargetMemory, String> {
    let samples = o
        .objects("samples")?
        .iter()
        .map(|m| {
            Ok(MemorySample {
                t: m.finite("t")?,
                rss_bytes: m.u64("rss_bytes")?,
                anon_bytes: m.u64("anon_bytes")?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let explained_share = o.opt_f64("explained_share")?;
    if explained_share.is_some_and(|x| !x.is_finite()) {
        return Err(format!("{}.explained_share: not finite", o.path));
    }
    let alert_threshold_bytes_per_hour = o.finite("alert_threshold_bytes_per_hour")?;
    if alert_threshold_bytes_per_hour < 0.0 {
        return Err(format!(
            "{}.alert_threshold_bytes_per_hour: {alert_threshold_bytes_per_hour} is negative",
            o.path
        ));
    }
    Ok(TargetMemory {
        samples,
        rss_growth_bytes_per_hour: o.finite("rss_growth_bytes_per_hour")?,
        anon_growth_bytes_per_hour: o.finite("anon_growth_bytes_per_hour")?,
        traced_growth_bytes_per_hour: o.finite("traced_growth_bytes_per_hour")?,
        explained_share,
        alert: o.bool("alert")?,
        alert_threshold_bytes_per_hour,
    })
}

impl Report {
    /// Parses and schema-checks a JSON report. `command` is kept for
    /// failure messages.
    pub fn parse(text: &str, command: &str) -> Result<Report, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let top = Obj::new("report", &json)?;
        let version = top.u64("version")?;
        if version != REPORT_VERSION {
            return Err(format!(
                "report.version: {version}, these checks implement version {REPORT_VERSION}"
            ));
        }
        let duration_secs = top.finite("duration_secs")?;
        let sort = top.string("sort")?;
        if !SORT_KEYS.contains(&sort.as_str()) {
            return Err(format!(
                "report.sort: expected one of {SORT_KEYS:?}, got {sort:?}"
            ));
        }
        let min_age_secs = top.opt_f64("min_age_secs")?;
        if min_age_secs.is_some_and(|m| !m.is_finite() || m < 0.0) {
            return Err(format!(
                "report.min_age_secs: {min_age_secs:?} is not a non-negative age"
            ));
        }
        let targets = top
            .objects("targets")?
            .iter()
            .map(|o| {
                let memory = match o.field("memory")? {
                    Value::Null => None,
                    _ => Some(parse_memory(&o.child("memory")?)?),
                };
                let allocators = o
                    .array("allocators")?
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .ok_or_else(|| format!("targets[].allocators: {v} is not a string"))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Ok(Target {
                    pid: o.u32("pid")?,
                    comm: o.string("comm")?,
                    exe: o.string("exe")?,
                    exited: o.bool("exited")?,
                    allocators,
                    memory,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let totals = parse_totals(&top.child("totals")?)?;
        let losses_obj = top.child("losses")?;
        let mut losses = BTreeMap::new();
        for key in losses_obj.map.keys() {
            losses.insert(key.clone(), losses_obj.u64(key)?);
        }
        let stacks = top
            .array("stacks")?
            .iter()
            .enumerate()
            .map(|(i, s)| parse_stack(&Obj::new(format!("report.stacks[{i}]"), s)?))
            .collect::<Result<Vec<_>, _>>()?;
        let oom_kills = top
            .objects("oom_kills")?
            .iter()
            .map(|o| {
                let top_stacks = o
                    .array("top_stacks")?
                    .iter()
                    .enumerate()
                    .map(|(i, s)| parse_stack(&Obj::new(format!("{}.top_stacks[{i}]", o.path), s)?))
                    .collect::<Result<Vec<_>, String>>()?;
                let cgroup = match o.field("cgroup")? {
                    Value::Null => None,
                    _ => Some(o.string("cgroup")?),
                };
                Ok(OomKill {
                    pid: o.u32("pid")?,
                    comm: o.string("comm")?,
                    cgroup,
                    anon_rss_bytes: o.u64("anon_rss_bytes")?,
                    traced: o.bool("traced")?,
                    traced_outstanding_bytes: o.u64("traced_outstanding_bytes")?,
                    top_stacks,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Report {
            version,
            duration_secs,
            sort,
            min_age_secs,
            targets,
            totals,
            losses,
            stacks,
            oom_kills,
            json,
            command: command.to_string(),
        })
    }

    /// `counters.<name>` of the report (panics if missing or not a count).
    #[track_caller]
    pub fn counter(&self, name: &str) -> u64 {
        self.json["counters"][name].as_u64().unwrap_or_else(|| {
            panic!(
                "report has no integer counters.{name}: counters = {}\n{}",
                self.json["counters"],
                self.describe()
            )
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
            self.version, self.duration_secs, self.sort, self.min_age_secs
        );
        for t in &self.targets {
            let _ = writeln!(s, "target pid {} comm {:?} exe {:?}", t.pid, t.comm, t.exe);
            if let Some(m) = &t.memory {
                let samples: Vec<String> = m
                    .samples
                    .iter()
                    .map(|x| format!("{:.1}:{}/{}", x.t, x.rss_bytes, x.anon_bytes))
                    .collect();
                let _ = writeln!(
                    s,
                    "  memory: rss {:.0}B/h anon {:.0}B/h traced {:.0}B/h explained {:?} \
                     alert {} (threshold {:.0}B/h); t:rss/anon {}",
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
        let _ = writeln!(s, "losses {:?}", self.losses);
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
    pub fn top(&self) -> &Stack {
        self.stacks
            .first()
            .unwrap_or_else(|| panic!("report has no stacks\n{}", self.describe()))
    }

    /// Stacks whose `frames[0].function` is `function`.
    pub fn stacks_of(&self, function: &str) -> Vec<&Stack> {
        self.stacks
            .iter()
            .filter(|s| s.function() == Some(function))
            .collect()
    }

    /// The only stack whose `frames[0].function` is `function`; panics if
    /// there are none or several (the workloads allocate from one call path
    /// per function).
    #[track_caller]
    pub fn stack_of(&self, function: &str) -> &Stack {
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
        let mut sum = FunctionSummary::default();
        for s in self.stacks_of(function) {
            sum.stacks += 1;
            sum.kinds.insert(s.kind.clone());
            sum.totals.add(s);
        }
        sum
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
                    && std::path::Path::new(&t.exe)
                        .file_name()
                        .is_some_and(|n| n == comm)
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
        kind: &str,
        outstanding_bytes: u64,
        outstanding_allocations: u64,
    ) -> Vec<String> {
        let sum = self.function_summary(function);
        if sum.stacks == 0 {
            return vec![format!(
                "{function}: no stack has frames[0].function == {function:?} \
                 (expected {outstanding_bytes} B in {outstanding_allocations} {kind} allocations)"
            )];
        }
        let mut problems = Vec::new();
        if sum.kinds.len() != 1 || !sum.kinds.contains(kind) {
            problems.push(format!(
                "{function}: kind {:?}, expected only {kind:?}",
                sum.kinds
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

    /// Asserts the loss counters in [`LOSS_COUNTERS`] that the report has
    /// are all zero.
    #[track_caller]
    pub fn assert_no_losses(&self) {
        let bad: Vec<String> = LOSS_COUNTERS
            .iter()
            .filter_map(|&k| match self.losses.get(k) {
                Some(&v) if v != 0 => Some(format!("{k} = {v}")),
                _ => None,
            })
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
            if s.kind == "heap" {
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
        let key = |s: &Stack| -> f64 {
            match self.sort.as_str() {
                "outstanding" => s.outstanding_bytes as f64,
                "count" => s.outstanding_allocations as f64,
                _ => s.growth_bytes_per_sec,
            }
        };
        let key_name = match self.sort.as_str() {
            "outstanding" => "outstanding_bytes",
            "count" => "outstanding_allocations",
            _ => "growth_bytes_per_sec",
        };
        for (i, pair) in self.stacks.windows(2).enumerate() {
            if key(&pair[0]) < key(&pair[1]) {
                problems.push(format!(
                    "stacks not sorted by {key_name} (sort {:?}): stacks[{i}] has {} < \
                     stacks[{}] {}",
                    self.sort,
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
            let mut sum = Totals::default();
            for s in &self.stacks {
                sum.add(s);
            }
            let ok = if filtered {
                sum.outstanding_bytes <= t.outstanding_bytes
            } else {
                sum.outstanding_bytes == t.outstanding_bytes
            };
            if !ok {
                problems.push(format!(
                    "sum of stacks' outstanding_bytes {} {} totals.outstanding_bytes {} \
                     (no stack was cut off by --top)",
                    sum.outstanding_bytes,
                    if filtered { ">" } else { "!=" },
                    t.outstanding_bytes
                ));
            }
            if sum.allocations > t.allocations || sum.frees > t.frees {
                problems.push(format!(
                    "stacks count more allocations/frees ({}/{}) than totals ({}/{})",
                    sum.allocations, sum.frees, t.allocations, t.frees
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
    ///   `outstanding_allocations > 0`);
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
    pub fn stack_problems(&self, s: &Stack) -> Vec<String> {
        let mut problems = Vec::new();
        let filtered = self.min_age_secs.is_some();
        let horizon = self.duration_secs + TIME_SLACK_SECS;
        if s.outstanding_bytes == 0 || s.outstanding_allocations == 0 {
            problems.push(format!(
                "listed with outstanding_bytes {} in {} allocations: listed stacks hold memory",
                s.outstanding_bytes, s.outstanding_allocations
            ));
        }

        for (j, (a, b)) in s.steps().enumerate() {
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
        let up = s.steps().filter(|(a, b)| b.bytes > a.bytes).count() as u64;
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
    use super::*;

    /// A stack that grew to `outstanding` bytes in `allocs` allocations,
    /// all younger than 10 s, at `growth` bytes per second.
    fn stack_growing(
        function: &str,
        kind: &str,
        outstanding: u64,
        allocs: u64,
        growth: f64,
    ) -> Value {
        serde_json::json!({
            "pid": 7, "kind": kind,
            "outstanding_bytes": outstanding, "outstanding_allocations": allocs,
            "allocated_bytes": outstanding, "freed_bytes": 0,
            "allocations": allocs, "frees": 0,
            "growth_bytes_per_sec": growth, "verdict": "growing",
            "verdict_reason": "grew in 2/2 intervals",
            "intervals": 2, "grew_intervals": 2,
            "early_growth_bytes": 1, "late_growth_bytes": 1,
            "oldest_age_secs": 1.5,
            "age_histogram": [
                {"min_secs": 0.0, "max_secs": 10.0, "bytes": outstanding, "allocations": allocs},
                {"min_secs": 10.0, "max_secs": 60.0, "bytes": 0, "allocations": 0},
                {"min_secs": 60.0, "max_secs": 600.0, "bytes": 0, "allocations": 0},
                {"min_secs": 600.0, "max_secs": 3600.0, "bytes": 0, "allocations": 0},
                {"min_secs": 3600.0, "max_secs": null, "bytes": 0, "allocations": 0}
            ],
            "series": [
                {"t": 0.0, "bytes": 0, "allocations": 0},
                {"t": 1.0, "bytes": outstanding / 2, "allocations": allocs / 2},
                {"t": 2.0, "bytes": outstanding, "allocations": allocs}
            ],
            "frames": [
                {"address": "0x1000", "function": function, "file": "a.c", "line": 3,
                 "module": "/bin/a"},
                {"address": "0x2000", "function": null, "file": null, "line": null,
                 "module": null}
            ],
            "truncated": false
        })
    }

    fn stack(function: &str, kind: &str, outstanding: u64, allocs: u64) -> Value {
        stack_growing(function, kind, outstanding, allocs, 1.5)
    }

    fn report_sorted(stacks: Vec<Value>, sort: &str) -> Value {
        let out: u64 = stacks
            .iter()
            .map(|s| s["outstanding_bytes"].as_u64().unwrap())
            .sum();
        let n: u64 = stacks
            .iter()
            .map(|s| s["allocations"].as_u64().unwrap())
            .sum();
        serde_json::json!({
            "version": 2, "duration_secs": 2.0, "sort": sort, "min_age_secs": null,
            "targets": [{"pid": 7, "comm": "a", "exe": "/bin/a", "exited": true, "allocators": ["/lib/libc.so.6"], "memory": null}],
            "totals": {"outstanding_bytes": out, "outstanding_allocations": n,
                       "allocations": n, "frees": 0, "allocated_bytes": out, "freed_bytes": 0},
            "losses": {"live_map_full": 0},
            "oom_kills": [],
            "stacks": stacks
        })
    }

    fn report(stacks: Vec<Value>) -> Value {
        report_sorted(stacks, "outstanding")
    }

    fn problems(json: &Value) -> Vec<String> {
        Report::parse(&json.to_string(), "m")
            .unwrap()
            .consistency_problems()
    }

    #[test]
    fn parses_and_finds_functions() {
        let json = report(vec![
            stack("leak_a", "heap", 300, 3),
            stack("leak_b", "mmap", 200, 1),
            stack("leak_a", "heap", 100, 1),
        ]);
        let r = Report::parse(&json.to_string(), "memtrace").unwrap();
        assert_eq!(r.stacks.len(), 3);
        assert_eq!(r.stacks[0].frames[0].address, 0x1000);
        assert_eq!(r.stacks[0].frames[1].function, None);
        assert_eq!(r.stacks[0].series.len(), 3);
        assert_eq!(r.stacks[0].age_bucket(0.0).bytes, 300);
        assert_eq!(r.stacks[0].age_bucket(3600.0).max_secs, None);
        assert_eq!(r.sort, "outstanding");
        assert_eq!(r.min_age_secs, None);
        assert_eq!(r.targets[0].memory, None);
        let a = r.function_summary("leak_a");
        assert_eq!((a.stacks, a.totals.outstanding_bytes), (2, 400));
        assert!(r.function_mismatches("leak_a", "heap", 400, 4).is_empty());
        assert_eq!(r.function_mismatches("leak_b", "heap", 200, 1).len(), 1);
        assert_eq!(r.function_mismatches("absent", "heap", 1, 1).len(), 1);
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
        let mut json = report(vec![stack("f", "heap", 10, 2)]);
        json["targets"][0]["memory"] = serde_json::json!({
            "samples": [{"t": 0.0, "rss_bytes": 100, "anon_bytes": 50},
                        {"t": 1.0, "rss_bytes": 200, "anon_bytes": 150}],
            "rss_growth_bytes_per_hour": 360000.0, "anon_growth_bytes_per_hour": 360000.0,
            "traced_growth_bytes_per_hour": 3600.0, "explained_share": 0.01,
            "alert": true, "alert_threshold_bytes_per_hour": 1000.0
        });
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
        let mut json = report(vec![stack("f", "heap", 1, 1)]);
        json["stacks"][0]["frames"][0]["address"] = Value::from("1000");
        let err = Report::parse(&json.to_string(), "m").unwrap_err();
        assert!(err.contains("stacks[0].frames[0].address"), "{err}");

        let mut json = report(vec![stack("f", "heap", 1, 1)]);
        json["stacks"][0]["kind"] = Value::from("stack");
        assert!(Report::parse(&json.to_string(), "m").is_err());

        let mut json = report(vec![]);
        json.as_object_mut().unwrap().remove("totals");
        let err = Report::parse(&json.to_string(), "m").unwrap_err();
        assert!(err.contains("totals"), "{err}");

        for verdict in VERDICTS {
            let mut json = report(vec![stack("f", "heap", 1, 1)]);
            json["stacks"][0]["verdict"] = Value::from(*verdict);
            assert!(Report::parse(&json.to_string(), "m").is_ok(), "{verdict}");
        }
        let mut json = report(vec![stack("f", "heap", 1, 1)]);
        json["stacks"][0]["verdict"] = Value::from("leaking");
        let err = Report::parse(&json.to_string(), "m").unwrap_err();
        assert!(err.contains("stacks[0].verdict"), "{err}");

        let mut json = report(vec![stack("f", "heap", 1, 1)]);
        json["stacks"][0]["verdict_reason"] = Value::from(" ");
        let err = Report::parse(&json.to_string(), "m").unwrap_err();
        assert!(err.contains("verdict_reason"), "{err}");

        let mut json = report(vec![stack("f", "heap", 1, 1)]);
        json["stacks"][0]["age_histogram"][4]["max_secs"] = Value::from(7200.0);
        let err = Report::parse(&json.to_string(), "m").unwrap_err();
        assert!(err.contains("age_histogram"), "{err}");

        let mut json = report(vec![stack("f", "heap", 1, 1)]);
        json["stacks"][0]["series"] = serde_json::json!([]);
        assert!(Report::parse(&json.to_string(), "m").is_err());

        let mut json = report(vec![stack("f", "heap", 1, 1)]);
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
    fn detects_inconsistencies() {
        // Unsorted, and frames[0] is malloc itself.
        let json = report(vec![
            stack("f", "heap", 1, 1),
            stack("malloc", "heap", 5, 1),
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
        let mut json = report(vec![stack("f", "heap", 10, 1)]);
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
            let mut json = report(vec![stack("f", "heap", 100, 4)]);
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
            stack_growing("fast", "heap", 10, 1, 100.0),
            stack_growing("slow", "heap", 1000, 2, 1.0),
        ];
        assert!(problems(&report_sorted(stacks.clone(), "growth")).is_empty());
        let p = problems(&report_sorted(stacks.clone(), "outstanding"));
        assert!(p.len() == 1 && p[0].contains("outstanding_bytes"), "{p:?}");
        let p = problems(&report_sorted(stacks, "count"));
        assert!(
            p.len() == 1 && p[0].contains("outstanding_allocations"),
            "{p:?}"
        );
        let stacks = vec![
            stack_growing("slow", "heap", 1000, 2, 1.0),
            stack_growing("fast", "heap", 10, 1, 100.0),
        ];
        let p = problems(&report_sorted(stacks, "growth"));
        assert!(
            p.len() == 1 && p[0].contains("growth_bytes_per_sec"),
            "{p:?}"
        );
    }

    #[test]
    fn min_age_counts_only_old_allocations() {
        // 3 of 4 allocations (75 of 100 bytes) are older than --min-age 5 s.
        let mut json = report(vec![stack("f", "heap", 100, 4)]);
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
}

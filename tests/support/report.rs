//! The JSON report: parsing with schema checks, lookups, and the
//! consistency rules every report must satisfy.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::{Map, Value};

/// The `--top` used by every JSON test run ([`crate::JSON_ARGS`]).
pub const TOP: usize = 100;

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
    pub growth_bytes_per_sec: f64,
    pub verdict: String,
    /// Innermost first.
    pub frames: Vec<Frame>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
}

/// The stacks whose `frames[0].function` is one function, summed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FunctionSummary {
    /// How many stacks (0: the function is absent from `stacks`).
    pub stacks: usize,
    pub kinds: BTreeSet<String>,
    pub totals: Totals,
}

/// A parsed, schema-checked `--format json` report.
#[derive(Debug, Clone)]
pub struct Report {
    pub version: u64,
    pub duration_secs: f64,
    pub targets: Vec<Target>,
    pub totals: Totals,
    pub losses: BTreeMap<String, u64>,
    pub stacks: Vec<Stack>,
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
    if verdict != "growing" && verdict != "stable" {
        return Err(format!(
            "{}.verdict: expected \"growing\" or \"stable\", got {verdict:?}",
            o.path
        ));
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
        growth_bytes_per_sec: o.f64("growth_bytes_per_sec")?,
        verdict,
        frames,
    })
}

impl Report {
    /// Parses and schema-checks a JSON report. `command` is kept for
    /// failure messages.
    pub fn parse(text: &str, command: &str) -> Result<Report, String> {
        let json: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let top = Obj::new("report", &json)?;
        let version = top.u64("version")?;
        let duration_secs = top.f64("duration_secs")?;
        let targets = top
            .array("targets")?
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let o = Obj::new(format!("report.targets[{i}]"), t)?;
                Ok(Target {
                    pid: o.u32("pid")?,
                    comm: o.string("comm")?,
                    exe: o.string("exe")?,
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
        Ok(Report {
            version,
            duration_secs,
            targets,
            totals,
            losses,
            stacks,
            json,
            command: command.to_string(),
        })
    }

    /// Multi-line human summary (command, targets, totals, losses, every
    /// stack) for failure messages.
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

    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "--- report of: {} ---", self.command);
        let _ = writeln!(
            s,
            "version {} duration {:.2}s targets {:?}",
            self.version, self.duration_secs, self.targets
        );
        let _ = writeln!(s, "totals {:?}", self.totals);
        let _ = writeln!(s, "losses {:?}", self.losses);
        let _ = writeln!(s, "stacks ({}):", self.stacks.len());
        for (i, st) in self.stacks.iter().enumerate() {
            let _ = writeln!(s, "  #{i} {}", st.summary());
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
    ///   totals and every stack;
    /// - for heap stacks, `outstanding_allocations == allocations - frees`;
    /// - stacks sorted by `outstanding_bytes`, descending, at most [`TOP`];
    /// - when fewer than [`TOP`] stacks are listed (none cut off), their
    ///   outstanding bytes add up to `totals.outstanding_bytes` and their
    ///   allocations/frees do not exceed the totals';
    /// - every stack's pid is a target's;
    /// - `frames[0]` is never an allocator entry point itself.
    pub fn consistency_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let t = &self.totals;
        if t.allocated_bytes.checked_sub(t.freed_bytes) != Some(t.outstanding_bytes) {
            problems.push(format!(
                "totals: outstanding_bytes {} != allocated_bytes {} - freed_bytes {}",
                t.outstanding_bytes, t.allocated_bytes, t.freed_bytes
            ));
        }
        let pids: BTreeSet<u32> = self.targets.iter().map(|t| t.pid).collect();
        for (i, s) in self.stacks.iter().enumerate() {
            if s.allocated_bytes.checked_sub(s.freed_bytes) != Some(s.outstanding_bytes) {
                problems.push(format!(
                    "stacks[{i}]: outstanding_bytes {} != allocated_bytes {} - freed_bytes {}",
                    s.outstanding_bytes, s.allocated_bytes, s.freed_bytes
                ));
            }
            if s.kind == "heap"
                && s.allocations.checked_sub(s.frees) != Some(s.outstanding_allocations)
            {
                problems.push(format!(
                    "stacks[{i}] (heap): outstanding_allocations {} != allocations {} - frees {}",
                    s.outstanding_allocations, s.allocations, s.frees
                ));
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
        }
        for (i, pair) in self.stacks.windows(2).enumerate() {
            if pair[0].outstanding_bytes < pair[1].outstanding_bytes {
                problems.push(format!(
                    "stacks not sorted by outstanding_bytes: stacks[{i}] has {} < stacks[{}] {}",
                    pair[0].outstanding_bytes,
                    i + 1,
                    pair[1].outstanding_bytes
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
            if sum.outstanding_bytes != t.outstanding_bytes {
                problems.push(format!(
                    "sum of stacks' outstanding_bytes {} != totals.outstanding_bytes {} \
                     (no stack was cut off by --top)",
                    sum.outstanding_bytes, t.outstanding_bytes
                ));
            }
            if sum.allocations > t.allocations || sum.frees > t.frees {
                problems.push(format!(
                    "stacks count more allocations/frees ({}/{}) than totals ({}/{})",
                    sum.allocations, sum.frees, t.allocations, t.frees
                ));
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

    fn stack(function: &str, kind: &str, outstanding: u64, allocs: u64) -> Value {
        serde_json::json!({
            "pid": 7, "kind": kind,
            "outstanding_bytes": outstanding, "outstanding_allocations": allocs,
            "allocated_bytes": outstanding, "freed_bytes": 0,
            "allocations": allocs, "frees": 0,
            "growth_bytes_per_sec": 1.5, "verdict": "growing",
            "frames": [
                {"address": "0x1000", "function": function, "file": "a.c", "line": 3,
                 "module": "/bin/a"},
                {"address": "0x2000", "function": null, "file": null, "line": null,
                 "module": null}
            ]
        })
    }

    fn report(stacks: Vec<Value>) -> Value {
        let out: u64 = stacks
            .iter()
            .map(|s| s["outstanding_bytes"].as_u64().unwrap())
            .sum();
        let n: u64 = stacks
            .iter()
            .map(|s| s["allocations"].as_u64().unwrap())
            .sum();
        serde_json::json!({
            "version": 1, "duration_secs": 2.0,
            "targets": [{"pid": 7, "comm": "a", "exe": "/bin/a"}],
            "totals": {"outstanding_bytes": out, "outstanding_allocations": n,
                       "allocations": n, "frees": 0, "allocated_bytes": out, "freed_bytes": 0},
            "losses": {"live_map_full": 0},
            "stacks": stacks
        })
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
        let a = r.function_summary("leak_a");
        assert_eq!((a.stacks, a.totals.outstanding_bytes), (2, 400));
        assert!(r.function_mismatches("leak_a", "heap", 400, 4).is_empty());
        assert_eq!(r.function_mismatches("leak_b", "heap", 200, 1).len(), 1);
        assert_eq!(r.function_mismatches("absent", "heap", 1, 1).len(), 1);
        assert!(r.consistency_problems().is_empty());
        r.assert_target("a", Some(7));
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
    }

    #[test]
    fn detects_inconsistencies() {
        // Unsorted, and frames[0] is malloc itself.
        let json = report(vec![
            stack("f", "heap", 1, 1),
            stack("malloc", "heap", 5, 1),
        ]);
        let r = Report::parse(&json.to_string(), "m").unwrap();
        let problems = r.consistency_problems();
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
        let r = Report::parse(&json.to_string(), "m").unwrap();
        assert_eq!(
            r.consistency_problems().len(),
            2,
            "{:?}",
            r.consistency_problems()
        );
    }
}

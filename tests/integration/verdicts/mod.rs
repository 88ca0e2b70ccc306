//! Leak verdicts (report version 2) on verdict_mix.c, whose modes each
//! make one kind of memory behaviour, alone or interleaved in one thread,
//! at exact rates (ticks of 50 ms paced on a monotonic clock):
//! - `cache`: a 256-entry cache of 8 KiB values, full 2.55 s after the go,
//!   then only replacing its oldest entry: `plateau`, never `leak`;
//! - `leak`: 4 KiB leaked every 50 ms: `leak`;
//! - `churn`: 4 blocks of varying sizes malloc'd and freed every tick,
//!   nothing kept: absent from the report (or `stable`); and request-scoped
//!   blocks living 50 ms - 1 s, ~42 in flight at any sample, the amount
//!   jittering: `stable`;
//! - `all`: the three at once, each with its own verdict in one report.
//!
//! Also: the text format shows each stack's verdict and reason; `--sort
//! outstanding` and `--sort count` order stacks differently from the
//! default `--sort growth`; `--min-age` leaves young allocations out of the
//! stacks' outstanding counts (and stacks with none out of the report);
//! `--rss-alert` reports the process's memory growth and alerts on it.
//!
//! Every run attaches with `--pid` and lets the workload go once memtrace
//! is tracing, so the series start with the workload's first allocation.
//!
//! `full_cache`: a cache that fills up, then only replaces entries, next to
//! a steady leak (full_cache.c, `-- CMD` mode). `short_runs`: stacks with
//! too few intervals for a rate (late_small.c, leak_exit.c).

mod full_cache;
mod short_runs;

use memtrace_integration::{
    assert_within, compile_c, secs, trace_pid, Report, RunOutput, StackExt, Tracer, Workload,
};
use memtrace_report::{name_of, SortBy, StackKind, StackReport, Verdict};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// verdict_mix.c: ticks per second (one every 50 ms).
const TICKS_PER_SEC: f64 = 20.0;
/// verdict_mix.c cache_insert: 256 entries of 8 KiB values (2 MiB)...
const CACHE_ENTRIES: u64 = 256;
const CACHE_VALUE_SIZE: u64 = 8 * KIB;
const CACHE_BYTES: u64 = CACHE_ENTRIES * CACHE_VALUE_SIZE;
/// ...full 2.55 s after the go (5 entries per tick)...
const CACHE_FULL_SECS: f64 = 2.55;
/// ...then one replacement per tick, oldest entry first: every entry is
/// replaced every 256 ticks, so the oldest live one is 12.75-12.8 s old
/// once the run is longer than 2.55 + 12.8 s.
const CACHE_OLDEST_SECS: f64 = 12.8;
/// verdict_mix.c leak_steady: 4 KiB per tick, never freed.
const LEAK_SIZE: u64 = 4 * KIB;
/// verdict_mix.c churn_work: 4 blocks malloc'd and freed per tick.
const CHURN_ALLOCATIONS_PER_TICK: f64 = 4.0;
/// verdict_mix.c serve_request: 0-8 requests start per tick (mean 4), each
/// block freed 1-20 ticks later, so none is older than 1 s and at most
/// 8 * 20 are in flight.
const REQUESTS_PER_TICK: f64 = 4.0;
const REQUEST_MAX_AGE_SECS: f64 = 1.0;
const REQUESTS_MAX_IN_FLIGHT: u64 = 160;

/// Deadline for a traced run, from memtrace's start: attaching (several
/// instances load their programs at once), `--duration`, detaching.
const RUN_TIMEOUT_SECS: u64 = 150;

/// Tolerance on counts that follow from the run's duration: the workload
/// starts a few milliseconds after tracing does, and stops when memtrace
/// takes its last sample.
const RATE_TOLERANCE_PCT: f64 = 10.0;

/// A verdict_mix workload being traced.
struct Traced {
    workload: Workload,
    tracer: Tracer,
}

/// Starts `verdict_mix MODE`, attaches `memtrace --pid PID args...`, and
/// once memtrace is tracing, lets the workload go.
fn start(mode: &str, args: &[&str]) -> Traced {
    let workload = Workload::spawn_ready(&compile_c("verdict_mix"), &[mode]);
    let tracer = trace_pid(workload.pid(), args);
    workload.signal(libc::SIGUSR1);
    Traced { workload, tracer }
}

impl Traced {
    /// Waits for memtrace's `--duration` to end; asserts it succeeded.
    fn finish(self) -> (RunOutput, Workload) {
        let out = self.tracer.finish(secs(RUN_TIMEOUT_SECS));
        out.assert_success();
        (out, self.workload)
    }

    /// [`Traced::finish`], parsed as a JSON report, with the checks every
    /// report of these runs passes: one target (the workload), no losses,
    /// consistent.
    fn report(self) -> Report {
        let pid = self.workload.pid();
        let (out, workload) = self.finish();
        let report = out.report();
        report.assert_target(workload.name(), Some(pid));
        report.assert_no_losses();
        report.assert_consistent();
        report
    }
}

/// `--format json --top 100` and `extra`.
fn json_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--format", "json", "--top", "100"];
    args.extend_from_slice(extra);
    args
}

/// Ticks of verdict_mix.c in `seconds`.
fn ticks(seconds: f64) -> u64 {
    (seconds * TICKS_PER_SEC).round() as u64
}

#[track_caller]
fn assert_verdict(s: &StackReport, want: Verdict, why: &str, ctx: &str) {
    assert_eq!(
        s.verdict,
        want,
        "{}: verdict {:?}, expected {want:?}: {why}\n  evidence: {}\n  series t:bytes: {}\n{ctx}",
        s.function().unwrap_or("?"),
        s.verdict,
        s.evidence(),
        s.series_text()
    );
}

/// The cache of verdict_mix.c, full and replacing entries: exactly 256
/// blocks of 8 KiB (every free comes with a malloc of the same size), the
/// replacements as many as the ticks after the fill, and a plateau.
#[track_caller]
fn assert_cache_plateau(report: &Report, ctx: &str) -> StackReport {
    let cache = report.stack_of("cache_insert").clone();
    // A replacement frees the old value, then mallocs the new one: a report
    // taken between the two (the workload preempted there, seen once in
    // CI) holds one entry less.
    let held = cache.outstanding_allocations;
    assert!(
        held == CACHE_ENTRIES || held == CACHE_ENTRIES - 1,
        "cache_insert holds {held} blocks: a full 256-entry cache, or 255 mid-replacement\n{ctx}"
    );
    assert_eq!(
        (
            cache.kind,
            cache.outstanding_bytes,
            cache.allocations - cache.frees
        ),
        (StackKind::Heap, CACHE_VALUE_SIZE * held, held),
        "cache_insert: (kind, outstanding_bytes, allocations - frees) of its {held} blocks of \
         8 KiB\n{ctx}"
    );
    assert_within(
        &format!(
            "cache_insert frees: one replacement per tick after the fill ({:.2} s traced, full \
             after {CACHE_FULL_SECS} s; ±{RATE_TOLERANCE_PCT}%)",
            report.duration_secs
        ),
        cache.frees,
        ticks(report.duration_secs - CACHE_FULL_SECS),
        RATE_TOLERANCE_PCT,
        ctx,
    );
    assert_verdict(
        &cache,
        Verdict::Plateau,
        "the cache grew for 2.55 s, then stayed at exactly 2 MiB for the rest of the run \
         (its entries replaced, never added)",
        ctx,
    );
    cache
}

/// verdict_mix.c's steady leak: only mallocs of 4 KiB, none freed, 20 per
/// second since the go.
#[track_caller]
fn assert_steady_leak(report: &Report, ctx: &str) -> StackReport {
    let leak = report.stack_of("leak_steady").clone();
    assert_eq!(
        (
            leak.kind,
            leak.frees,
            leak.outstanding_allocations,
            leak.outstanding_bytes
        ),
        (
            StackKind::Heap,
            0,
            leak.allocations,
            LEAK_SIZE * leak.allocations
        ),
        "leak_steady: (kind, frees, outstanding_allocations, outstanding_bytes) should be \
         (heap, 0, allocations, 4096 * allocations): 4 KiB blocks, never freed\n{ctx}"
    );
    assert_within(
        &format!(
            "leak_steady allocations: 20 per second over {:.2} s (±{RATE_TOLERANCE_PCT}%)",
            report.duration_secs
        ),
        leak.allocations,
        ticks(report.duration_secs),
        RATE_TOLERANCE_PCT,
        ctx,
    );
    assert_verdict(
        &leak,
        Verdict::Leak,
        "4 KiB leaked every 50 ms from the go to the end, none ever freed",
        ctx,
    );
    assert!(
        !leak.verdict_reason.trim().is_empty(),
        "leak_steady: verdict_reason should say why\n{ctx}"
    );
    leak
}

/// The churn of verdict_mix.c keeps nothing across ticks: its stack is
/// absent (nothing outstanding), or, if a sample caught a tick's blocks in
/// flight, stable.
#[track_caller]
fn assert_churn_absent_or_stable(report: &Report, ctx: &str) {
    for churn in report.stacks_of("churn_work") {
        assert_verdict(
            churn,
            Verdict::Stable,
            "churn_work frees every block in the tick that allocated it",
            ctx,
        );
    }
}

/// The request-scoped blocks of verdict_mix.c are always some in flight,
/// never old, and their amount jitters without a trend: `stable`.
#[track_caller]
fn assert_requests_stable<'r>(report: &'r Report, ctx: &str) -> &'r StackReport {
    let requests = report.stack_of("serve_request");
    assert_verdict(
        requests,
        Verdict::Stable,
        "serve_request's blocks live at most 1 s; ~42 are in flight at any sample",
        ctx,
    );
    assert!(
        requests.outstanding_allocations <= REQUESTS_MAX_IN_FLIGHT,
        "serve_request: {} blocks outstanding, at most {REQUESTS_MAX_IN_FLIGHT} can be in \
         flight\n{ctx}",
        requests.outstanding_allocations
    );
    let oldest = requests.oldest_age_secs.unwrap_or(0.0);
    assert!(
        oldest <= REQUEST_MAX_AGE_SECS + 0.2,
        "serve_request: oldest live block {oldest} s old, none lives over 1 s\n{ctx}"
    );
    assert_within(
        "serve_request allocations: 4 per tick on average (±10%)",
        requests.allocations,
        (report.duration_secs * TICKS_PER_SEC * REQUESTS_PER_TICK).round() as u64,
        RATE_TOLERANCE_PCT,
        ctx,
    );
    requests
}

/// Index in `stacks` of the only stack whose frames[0] is `function`.
#[track_caller]
fn position(report: &Report, function: &str) -> usize {
    let found: Vec<usize> = (0..report.stacks.len())
        .filter(|&i| report.stacks[i].function() == Some(function))
        .collect();
    match found.as_slice() {
        [i] => *i,
        _ => panic!(
            "expected exactly one stack of {function}, found {}\n{}",
            found.len(),
            report.describe()
        ),
    }
}

#[test]
fn cache_fills_then_plateaus() {
    let report = start(
        "cache",
        &json_args(&["--interval", "1s", "--duration", "20s"]),
    )
    .report();
    let ctx = report.describe();
    let cache = assert_cache_plateau(&report, &ctx);

    assert!(
        cache.series.len() >= 15,
        "cache_insert: 20 s sampled every second should give at least 15 series points, got \
         {}\n{ctx}",
        cache.series.len()
    );
    // Replacements free first, then malloc: the cache never holds more than
    // 2 MiB, and once full holds 2 MiB but for a replacement in progress.
    for p in &cache.series {
        let full = p.t < CACHE_FULL_SECS + 1.0
            || p.bytes == CACHE_BYTES
            || p.bytes == CACHE_BYTES - CACHE_VALUE_SIZE;
        assert!(
            p.bytes <= CACHE_BYTES && full,
            "cache_insert: series point t={:.2} s bytes={} should be at most {CACHE_BYTES}, and \
             {CACHE_BYTES} (or one entry less, mid-replacement) from {} s on\n{ctx}",
            p.t,
            p.bytes,
            CACHE_FULL_SECS + 1.0
        );
    }
    // Theil–Sen over a series flat from 3 s to 20 s: the median pairwise
    // slope is 0.
    assert!(
        cache.growth_bytes_per_sec.abs() < CACHE_VALUE_SIZE as f64,
        "cache_insert: growth_bytes_per_sec {} should be ~0 (below one entry per second): \
         the robust slope of a series flat for 17 of its 20 s\n{ctx}",
        cache.growth_bytes_per_sec
    );
    assert!(
        cache.early_growth_bytes.abs_diff(CACHE_BYTES as i64) <= CACHE_VALUE_SIZE
            && cache.late_growth_bytes.unsigned_abs() <= CACHE_VALUE_SIZE,
        "cache_insert: early_growth_bytes {} should be the whole cache ({CACHE_BYTES} ± one \
         entry, filled in the first 2.55 s) and late_growth_bytes {} 0 (± one entry)\n{ctx}",
        cache.early_growth_bytes,
        cache.late_growth_bytes
    );
    // FIFO replacement: every entry is replaced every 12.8 s; the oldest
    // live entry does not age past that.
    let oldest = cache.oldest_age_secs.unwrap_or(f64::NAN);
    assert!(
        (CACHE_OLDEST_SECS - 0.55..=CACHE_OLDEST_SECS + 0.5).contains(&oldest),
        "cache_insert: oldest_age_secs {oldest} should be 12.75-12.8 s (±0.5 s): each entry is \
         replaced 256 ticks (12.8 s) after the one before it, and {:.2} s of tracing is more \
         than 2.55 + 12.8 s\n{ctx}",
        report.duration_secs
    );
    // Entries younger than 10 s: the 200 replaced in the last 10 s.
    let young = cache.age_bucket(0.0).allocations;
    assert!(
        young.abs_diff(200) <= 3,
        "cache_insert: age_histogram [0, 10 s) holds {young} allocations, expected the 200 \
         (±3) entries replaced in the last 10 s; [10 s, 60 s) the other 56\n{ctx}"
    );
    assert_eq!(
        report.totals.outstanding_bytes, CACHE_BYTES,
        "totals.outstanding_bytes: the cache is all the `cache` mode allocates\n{ctx}"
    );
}

#[test]
fn steady_leak_is_a_leak() {
    // Default --interval (5s).
    let report = start("leak", &json_args(&["--duration", "20s"])).report();
    let ctx = report.describe();
    let leak = assert_steady_leak(&report, &ctx);

    assert!(
        leak.series.len() >= 4,
        "leak_steady: 20 s sampled every 5 s should give at least 4 series points, got {}\n{ctx}",
        leak.series.len()
    );
    assert!(
        leak.intervals >= 3 && leak.grew_intervals + 1 >= leak.intervals,
        "leak_steady: grew in {} of {} intervals; it grows 400 KiB every 5 s, so every \
         interval but a last one shorter than a tick should go up\n{ctx}",
        leak.grew_intervals,
        leak.intervals
    );
    let oldest = leak.oldest_age_secs.unwrap_or(f64::NAN);
    assert!(
        oldest >= 15.0,
        "leak_steady: oldest_age_secs {oldest} should be >= 15: its first block was leaked \
         right after the go, {:.2} s before the report\n{ctx}",
        report.duration_secs
    );
    assert_within(
        "leak_steady growth_bytes_per_sec: 4096 bytes 20 times a second (±10%)",
        leak.growth_bytes_per_sec.round() as u64,
        LEAK_SIZE * 20,
        10.0,
        &ctx,
    );
    assert!(
        leak.early_growth_bytes > 0 && 2 * leak.late_growth_bytes >= leak.early_growth_bytes,
        "leak_steady: early_growth_bytes {} should be > 0 and late_growth_bytes {} at least \
         half of it: the leak grows at the same rate all along\n{ctx}",
        leak.early_growth_bytes,
        leak.late_growth_bytes
    );
    // Blocks younger than 10 s: the last 10 s of leaking.
    assert_within(
        "leak_steady age_histogram [0, 10 s) allocations: 10 s of leaking (±10%)",
        leak.age_bucket(0.0).allocations,
        ticks(10.0),
        RATE_TOLERANCE_PCT,
        &ctx,
    );
    assert_eq!(
        report.totals.outstanding_bytes, leak.outstanding_bytes,
        "totals.outstanding_bytes: the leak is all the `leak` mode allocates\n{ctx}"
    );
}

#[test]
fn churn_is_stable() {
    let report = start(
        "churn",
        &json_args(&["--interval", "1s", "--duration", "20s"]),
    )
    .report();
    let ctx = report.describe();
    assert_churn_absent_or_stable(&report, &ctx);
    let requests = assert_requests_stable(&report, &ctx);
    // churn_work was traced: 4 allocations per tick, all freed.
    assert_within(
        "totals.allocations - serve_request's: churn_work's 4 per tick (±10%)",
        report.totals.allocations - requests.allocations,
        (report.duration_secs * TICKS_PER_SEC * CHURN_ALLOCATIONS_PER_TICK).round() as u64,
        RATE_TOLERANCE_PCT,
        &ctx,
    );
    assert!(
        report.totals.frees + 4 + requests.outstanding_allocations >= report.totals.allocations,
        "totals.frees {} should be totals.allocations {} but for the requests in flight ({}) \
         and the blocks of a tick in progress: churn_work frees every block it allocates\n{ctx}",
        report.totals.frees,
        report.totals.allocations,
        requests.outstanding_allocations
    );
}

/// The stacks of a text report: for each block (a `#N ...` header and the
/// lines up to the next header), the function of its first frame line (a
/// line starting `0x`) and its other non-empty lines (header included).
fn text_blocks(text: &str) -> Vec<(Option<String>, Vec<String>)> {
    let mut blocks: Vec<(Option<String>, Vec<String>)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let is_header = trimmed
            .strip_prefix('#')
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
        if is_header {
            blocks.push((None, vec![line.to_string()]));
        } else if let Some((function, lines)) = blocks.last_mut() {
            if trimmed.starts_with("0x") {
                if function.is_none() {
                    *function = trimmed.split_whitespace().nth(1).map(str::to_string);
                }
            } else if !trimmed.is_empty() {
                lines.push(line.to_string());
            }
        }
    }
    blocks
}

/// Whether `text` has `word` delimited by characters that cannot be part
/// of an identifier (so `leak` does not match in `leak_steady`).
fn has_word(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        !text[..i].chars().next_back().is_some_and(ident)
            && !text[i + word.len()..].chars().next().is_some_and(ident)
    })
}

/// The words of a verdict reason that do not depend on its numbers: runs
/// of at least 3 lowercase letters (units like `KiB` are left out).
fn reason_words(reason: &str) -> Vec<&str> {
    let mut words: Vec<&str> = reason
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| w.len() >= 3 && w.chars().all(|c| c.is_ascii_lowercase()))
        .collect();
    words.sort_unstable();
    words.dedup();
    words
}

#[test]
fn mixed_workload_gets_one_verdict_per_stack_in_json_and_text() {
    // The same workload twice, at once: one run for JSON, one for text.
    let json_run = start(
        "all",
        &json_args(&["--interval", "1s", "--duration", "20s"]),
    );
    let text_run = start(
        "all",
        &["--format", "text", "--interval", "1s", "--duration", "20s"],
    );
    let report = json_run.report();
    let (text_out, _workload) = text_run.finish();
    let ctx = report.describe();

    assert_eq!(
        (report.sort, report.min_age_secs),
        (SortBy::Growth, None),
        "report (sort, min_age_secs) without --sort or --min-age\n{ctx}"
    );
    let cache = assert_cache_plateau(&report, &ctx);
    let leak = assert_steady_leak(&report, &ctx);
    assert_churn_absent_or_stable(&report, &ctx);
    assert_requests_stable(&report, &ctx);
    assert_eq!(
        report.top().function(),
        Some("leak_steady"),
        "stacks[0]: the default --sort growth ranks the leak (80 KiB/s) first, ahead of the \
         full cache (2 MiB, ~0 B/s)\n{ctx}"
    );

    // Text: each stack's block names its verdict and gives its reason.
    let text = &text_out.stdout;
    let text_ctx = format!("{}\n(the JSON run's report:)\n{ctx}", text_out.describe());
    let blocks = text_blocks(text);
    for (function, stack) in [("cache_insert", &cache), ("leak_steady", &leak)] {
        let found: Vec<&Vec<String>> = blocks
            .iter()
            .filter(|(f, _)| f.as_deref() == Some(function))
            .map(|(_, lines)| lines)
            .collect();
        let [lines] = found.as_slice() else {
            panic!(
                "the text report should have exactly one stack block whose first frame is \
                 {function}, found {}\n{text_ctx}",
                found.len()
            );
        };
        let block = lines.join("\n");
        assert!(
            has_word(&block, &name_of(&stack.verdict)),
            "text report, {function}: its block should name the verdict {:?} (outside its \
             frame lines):\n{block}\n{text_ctx}",
            stack.verdict
        );
        assert!(
            lines.len() >= 2,
            "text report, {function}: its block should have a reason line besides its \
             header:\n{block}\n{text_ctx}"
        );
        let missing: Vec<&str> = reason_words(&stack.verdict_reason)
            .into_iter()
            .filter(|w| !has_word(&block, w))
            .collect();
        assert!(
            missing.is_empty(),
            "text report, {function}: its block should give the verdict's reason, worded as \
             the JSON run's verdict_reason {:?}; missing the words {missing:?}:\n{block}\n\
             {text_ctx}",
            stack.verdict_reason
        );
    }
}

#[test]
fn sort_keys_order_the_stacks() {
    // 20 s of the mixed workload: the cache holds 2 MiB in 256 blocks, the
    // leak ~1.6 MB (< 2 MiB) in ~400 (the churn nothing). Growth (the
    // default) ranks the leak first (see the mixed test).
    let by_outstanding = start(
        "all",
        &json_args(&[
            "--sort",
            "outstanding",
            "--interval",
            "1s",
            "--duration",
            "20s",
        ]),
    );
    let by_count = start(
        "all",
        &json_args(&["--sort", "count", "--interval", "1s", "--duration", "20s"]),
    );
    for (traced, sort, order, why) in [
        (
            by_outstanding,
            "outstanding",
            ["cache_insert", "leak_steady"],
            "by outstanding_bytes: 2 MiB > ~1.6 MB",
        ),
        (
            by_count,
            "count",
            ["leak_steady", "cache_insert"],
            "by outstanding_allocations: ~400 > 256",
        ),
    ] {
        let report = traced.report();
        let ctx = report.describe();
        assert_eq!(
            name_of(&report.sort),
            sort,
            "report.sort for --sort {sort}\n{ctx}"
        );
        let leak = report.stack_of("leak_steady");
        assert!(
            leak.outstanding_bytes < CACHE_BYTES,
            "leak_steady holds {} bytes, the test needs less than the cache's {CACHE_BYTES} \
             (20 s of leaking is ~1.6 MB)\n{ctx}",
            leak.outstanding_bytes
        );
        let positions: Vec<usize> = order.iter().map(|f| position(&report, f)).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "--sort {sort}: {order:?} should come in this order ({why}), they are at stacks \
             {positions:?}\n{ctx}"
        );
    }
}

#[test]
fn min_age_hides_young_allocations() {
    let report = start(
        "all",
        &json_args(&["--min-age", "5s", "--interval", "1s", "--duration", "20s"]),
    )
    .report();
    let ctx = report.describe();
    assert_eq!(
        report.min_age_secs,
        Some(5.0),
        "report.min_age_secs for --min-age 5s\n{ctx}"
    );

    assert!(
        report.stacks_of("churn_work").is_empty(),
        "churn_work: none of its blocks lives 5 s (each is freed within its 50 ms tick), so \
         --min-age 5s leaves its stack out\n{ctx}"
    );
    assert!(
        report.stacks_of("serve_request").is_empty(),
        "serve_request: none of its blocks lives over 1 s, so --min-age 5s leaves its stack \
         out\n{ctx}"
    );

    // The leak: only the blocks leaked before the last 5 s.
    let leak = report.stack_of("leak_steady");
    let ticks_all = ticks(report.duration_secs);
    let hidden = leak.allocations - leak.outstanding_allocations;
    assert_eq!(
        (leak.frees, leak.outstanding_bytes),
        (0, LEAK_SIZE * leak.outstanding_allocations),
        "leak_steady: (frees, outstanding_bytes) should be (0, 4096 * outstanding_allocations)\
         \n{ctx}"
    );
    assert_within(
        "leak_steady allocations (all of them, young ones included): 20 per second (±10%)",
        leak.allocations,
        ticks_all,
        RATE_TOLERANCE_PCT,
        &ctx,
    );
    assert_within(
        "leak_steady allocations - outstanding_allocations: the blocks of the last 5 s, left \
         out by --min-age 5s (±10%)",
        hidden,
        ticks(5.0),
        RATE_TOLERANCE_PCT,
        &ctx,
    );
    let oldest = leak.oldest_age_secs.unwrap_or(f64::NAN);
    assert!(
        oldest >= 15.0,
        "leak_steady: oldest_age_secs {oldest} should still be >= 15\n{ctx}"
    );

    // The cache: the 100 entries replaced in the last 5 s are left out.
    let cache = report.stack_of("cache_insert");
    let shown = cache.outstanding_allocations;
    assert!(
        shown.abs_diff(CACHE_ENTRIES - 100) <= 3
            && cache.outstanding_bytes == CACHE_VALUE_SIZE * shown,
        "cache_insert: outstanding {} bytes in {shown} allocations, expected 156 (±3) entries \
         of 8 KiB: the 256 minus the 100 replaced in the last 5 s\n{ctx}",
        cache.outstanding_bytes
    );
}

#[test]
fn rss_alert_reports_the_process_memory_growth() {
    let report = start(
        "leak",
        &json_args(&[
            "--rss-alert",
            "50MiB/h",
            "--interval",
            "1s",
            "--duration",
            "12s",
        ]),
    )
    .report();
    let ctx = report.describe();
    assert_steady_leak(&report, &ctx);
    let memory = report.targets[0].memory.as_ref().unwrap_or_else(|| {
        panic!("targets[0].memory should be set with --rss-alert\n{ctx}");
    });
    // 4 KiB every 50 ms: 295 MB an hour traced; the process's anonymous
    // memory grows by the same plus malloc's 16-byte headers (memset
    // touches every page of each block).
    let leak_per_hour = LEAK_SIZE * 20 * 3600;
    let anon_per_hour = (LEAK_SIZE + 16) * 20 * 3600;
    assert_eq!(
        memory.alert_threshold_bytes_per_hour,
        (50 * MIB) as f64,
        "targets[0].memory.alert_threshold_bytes_per_hour for --rss-alert 50MiB/h\n{ctx}"
    );
    assert!(
        memory.samples.len() >= 3,
        "targets[0].memory.samples: 12 s sampled every second should give at least 3 \
         samples, got {}\n{ctx}",
        memory.samples.len()
    );
    assert_within(
        "targets[0].memory.traced_growth_bytes_per_hour: 4096 bytes 20 times a second (±10%)",
        memory.traced_growth_bytes_per_hour.round() as u64,
        leak_per_hour,
        10.0,
        &ctx,
    );
    for (what, value) in [
        (
            "anon_growth_bytes_per_hour",
            memory.anon_growth_bytes_per_hour,
        ),
        (
            "rss_growth_bytes_per_hour",
            memory.rss_growth_bytes_per_hour,
        ),
    ] {
        assert_within(
            &format!(
                "targets[0].memory.{what}: the leak's blocks and their malloc headers, written \
                 (±15%)"
            ),
            value.max(0.0).round() as u64,
            anon_per_hour,
            15.0,
            &ctx,
        );
    }
    assert!(
        memory.alert,
        "targets[0].memory.alert: the process grows ~280 MiB/h, over --rss-alert 50MiB/h\n{ctx}"
    );
    let share = memory.explained_share.unwrap_or(f64::NAN);
    assert!(
        (0.85..=1.15).contains(&share),
        "targets[0].memory.explained_share {share} should be ~1: the traced leak is all the \
         process's growth\n{ctx}"
    );
}

/// rss_only.c: 64 KiB of program break, written, every 50 ms (sleep-paced,
/// so a little slower): ~4.4 GiB/h of anonymous memory no allocator call
/// made.
const RSS_ONLY_PER_HOUR: u64 = 64 * KIB * 20 * 3600;

#[test]
fn rss_growth_no_stack_explains_still_alerts() {
    let workload = Workload::spawn_ready(&compile_c("rss_only"), &[] as &[&str]);
    let tracer = trace_pid(
        workload.pid(),
        &json_args(&["--interval", "1s", "--duration", "10s"]),
    );
    workload.signal(libc::SIGUSR1);
    let out = tracer.finish(secs(RUN_TIMEOUT_SECS));
    out.assert_success();
    let report = out.report();
    let ctx = report.describe();
    report.assert_consistent();
    assert!(
        report.stacks_of("grow_heap_directly").is_empty(),
        "sbrk is not an allocator call memtrace hooks: no stack of grow_heap_directly\n{ctx}"
    );
    let memory = report.targets[0]
        .memory
        .as_ref()
        .unwrap_or_else(|| panic!("targets[0].memory should be set\n{ctx}"));
    assert!(
        memory.alert,
        "targets[0].memory.alert: anonymous RSS grows ~4.4 GiB/h, far above the default \
         50 MiB/h, though no traced stack grows\n{ctx}"
    );
    // Sleep-paced ticks run a little slow: at least 75 % of the nominal rate.
    let anon = memory.anon_growth_bytes_per_hour;
    assert!(
        anon >= 0.75 * RSS_ONLY_PER_HOUR as f64 && anon <= 1.05 * RSS_ONLY_PER_HOUR as f64,
        "targets[0].memory.anon_growth_bytes_per_hour {anon}: expected 75-105 % of \
         {RSS_ONLY_PER_HOUR}\n{ctx}"
    );
    assert!(
        memory.traced_growth_bytes_per_hour.abs() < MIB as f64,
        "targets[0].memory.traced_growth_bytes_per_hour {}: nothing traced grows\n{ctx}",
        memory.traced_growth_bytes_per_hour
    );
    assert!(
        memory.explained_share.is_none_or(|s| s < 0.01),
        "targets[0].memory.explained_share {:?}: the traced stacks explain none of it\n{ctx}",
        memory.explained_share
    );
}

//! A hostile target churning over a million distinct stacks and addresses
//! for 10 s (stack_churn.c) leaves memtrace's peak RSS under the cap the
//! README gives for its `--max-stacks` and `--max-live`, with the
//! evictions counted, every allocation in the totals and the small leak
//! next to the churn reported exactly.

use memtrace_integration::{compile_c, consistency_problems_except, proc_memory, CMD_TIMEOUT};

/// The README's cap on memtrace's resident memory ("Hostile targets"):
/// 40 MiB, 18 KiB per `--max-stacks` (16 KiB per series, and an eighth
/// more series than stacks), 100 bytes per `--max-live` mapping.
fn rss_cap(max_stacks: u64, max_live: u64) -> u64 {
    40 * 1024 * 1024 + max_stacks * 18 * 1024 + max_live * 100
}

/// stack_churn.c: its leak, and how long it churns.
const ANCHORS: u64 = 100;

const ANCHOR_SIZE: u64 = 1000;
const CHURN_SECS: &str = "10";
const MMAP_EVERY: u64 = 8;

#[test]
fn hostile_target_leaves_memtrace_bounded() {
    let (max_stacks, max_live) = (2048u64, 65536u64);
    let exe = compile_c("stack_churn");
    let args: Vec<std::ffi::OsString> = [
        "--format",
        "json",
        "--interval",
        "1s",
        "--max-stacks",
        &max_stacks.to_string(),
        "--max-live",
        &max_live.to_string(),
        "--",
    ]
    .iter()
    .map(Into::into)
    .chain([exe.into_os_string(), CHURN_SECS.into()])
    .collect();
    let mut tracer = memtrace_integration::Tracer::spawn(&args);
    let pid = tracer.pid();
    let mut peak = 0;
    while tracer.is_running() {
        peak = proc_memory(pid, "VmHWM").unwrap_or(peak).max(peak);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = tracer.finish(CMD_TIMEOUT);
    out.assert_success();
    let report = out.report();
    let ctx = report.describe();
    let cap = rss_cap(max_stacks, max_live);
    assert!(
        peak > 0 && peak < cap,
        "memtrace's peak RSS {peak} B should stay under the documented cap {cap} B\n{ctx}"
    );
    let rounds: u64 = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("rounds "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("stack_churn printed no `rounds N`\n{}", out.describe()));
    assert!(
        rounds > 200_000,
        "stack_churn made {rounds} rounds: too few distinct stacks to be hostile"
    );
    // Every round mallocs once and every 8th mmaps (rounds come in
    // multiples of 256); the table of series was full many times over, and
    // what evicted series counted stays in the totals.
    assert_eq!(
        report.totals.allocations,
        ANCHORS + rounds + rounds / MMAP_EVERY,
        "totals.allocations: the anchors, a malloc per round, an mmap per {MMAP_EVERY}\n{ctx}"
    );
    let seen = report.totals.stacks;
    let evicted = report.counters.stacks_evicted;
    eprintln!(
        "stack_churn: {rounds} rounds, {seen} stacks seen, {evicted} evicted; memtrace peak \
         RSS {:.1} MiB (cap {:.1} MiB)",
        peak as f64 / 1048576.0,
        cap as f64 / 1048576.0
    );
    assert!(
        seen > 10 * max_stacks && evicted > seen - 2 * max_stacks,
        "stacks seen {seen} and evicted {evicted}: the table of {max_stacks} should have been \
         full many times over, all but the last table's worth evicted\n{ctx}"
    );
    let anchor = report.stack_of("leak_anchor");
    assert_eq!(
        (anchor.outstanding_bytes, anchor.outstanding_allocations),
        (ANCHORS * ANCHOR_SIZE, ANCHORS),
        "leak_anchor, next to the churn\n{ctx}"
    );
    // The kernel's stack table overflowed (counted) between intervals, and
    // at each one its idle stacks were taken out; nothing else was lost,
    // and the stacks holding memory always had room.
    let losses = &report.losses;
    assert!(losses.stack_lost > 0, "{ctx}");
    assert!(
        report.counters.stacks_recycled > max_stacks,
        "counters.stacks_recycled: the full table made room every interval\n{ctx}"
    );
    for (loss, n) in [
        ("series_full", losses.series_full),
        ("mapping_table_full", losses.mapping_table_full),
        ("live_map_full", losses.live_map_full),
        ("ring_buffer_full", losses.ring_buffer_full),
    ] {
        assert_eq!(n, 0, "losses.{loss}\n{ctx}");
    }
    // The churn's last stacks, one block each, found room in the recycled
    // table: the JSON lists every stack holding memory, more than --top.
    let problems = consistency_problems_except(&report, "stacks listed, more than --top");
    assert!(problems.is_empty(), "{}\n{ctx}", problems.join("\n"));
}

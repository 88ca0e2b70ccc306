//! Losses are never silent and never phantom leaks: a full live-block
//! table (`--max-live`) and a full stack table (`--max-stacks`) are
//! counted, named by the report (JSON and text), and leave the other
//! stacks' bytes and verdicts exact (loss_flood.c); below its capacity the
//! live table holds every block.

use std::ffi::OsString;
use std::path::PathBuf;

use memtrace_integration::{
    compile_c, consistency_problems_except, run_memtrace, scratch_dir, secs, Report, RunOutput,
    CMD_TIMEOUT,
};
use memtrace_report::{StackReport, Verdict};

/// `memtrace options -- exe args`, checked for success.
#[track_caller]
fn run_cmd(options: &[&str], exe: &PathBuf, args: &[&str]) -> RunOutput {
    let mut all: Vec<OsString> = options.iter().map(OsString::from).collect();
    all.push("--".into());
    all.push(exe.into());
    all.extend(args.iter().map(OsString::from));
    let out = run_memtrace(&all, CMD_TIMEOUT);
    out.assert_success();
    out
}

/// loss_flood.c: the steady leak next to the flood.
const STEADY_LEAKS: u64 = 32;
const STEADY_SIZE: u64 = 512;

/// loss_flood.c live: blocks allocated (and all freed) at once.
const FLOOD_BLOCKS: u64 = 3000;

/// loss_flood.c stacks: distinct call paths, one 16 B block kept each.
const PATHS: u64 = 4096;
const LEAF_SIZE: u64 = 16;

/// Runs loss_flood MODE with `extra` options, writing the JSON report to a
/// file; returns it and its text rendering (`memtrace report`).
fn loss_flood(mode: &str, extra: &[&str]) -> (Report, String) {
    let dir = scratch_dir(&format!("loss-{mode}"));
    let json = dir.join("report.json");
    let mut args: Vec<&str> = vec!["--interval", "400ms", "--top", "1000", "--output"];
    args.push(json.to_str().unwrap());
    args.extend_from_slice(extra);
    let out = run_cmd(&args, &compile_c("loss_flood"), &[mode]);
    let report = out.report_from(&std::fs::read_to_string(&json).expect("report.json"));
    let text = run_memtrace(&[OsString::from("report"), json.clone().into()], secs(30));
    text.assert_success();
    std::fs::remove_dir_all(&dir).unwrap();
    (report, text.stdout)
}

/// Asserts the steady leak is exact and still called a leak.
#[track_caller]
fn assert_steady_leak(report: &Report) {
    let s = report.stack_of("steady_leak");
    assert_eq!(
        (s.outstanding_bytes, s.outstanding_allocations, s.verdict),
        (STEADY_LEAKS * STEADY_SIZE, STEADY_LEAKS, Verdict::Leak),
        "steady_leak, whose stack and blocks were recorded before the table filled: \
         (outstanding_bytes, outstanding_allocations, verdict)\n{}",
        report.describe()
    );
}

/// The text report's `losses:` line.
fn losses_line(text: &str) -> &str {
    text.lines()
        .find(|l| l.starts_with("losses:"))
        .unwrap_or_else(|| panic!("no `losses:` line in the text report:\n{text}"))
}

#[test]
fn full_live_table_is_counted_not_leaked() {
    let (report, text) = loss_flood("live", &["--max-live", "1024"]);
    let ctx = report.describe();
    let lost = report.losses.live_map_full;
    let flood = report.function_summary("flood_alloc");
    assert!(
        lost > 0 && flood.totals.outstanding_bytes == 0,
        "losses.live_map_full {lost} should be > 0 (3000 blocks live at once, --max-live \
         1024), and flood_alloc, whose blocks were all freed, holds nothing ({} B)\n{ctx}",
        flood.totals.outstanding_bytes
    );
    // Recorded or counted lost, every flood allocation is one or the other;
    // the recorded ones are listed only while they hold memory, so they are
    // the allocations that are neither steady_leak's nor lost.
    assert_eq!(
        report.totals.allocations - STEADY_LEAKS + lost,
        FLOOD_BLOCKS,
        "allocations recorded besides steady_leak's + live_map_full = the flood's 3000\n{ctx}"
    );
    assert_eq!(
        report.counters.free_unknown, lost,
        "counters.free_unknown: the frees of the blocks not recorded, and nothing else\n{ctx}"
    );
    assert_steady_leak(&report);
    assert_eq!(
        report.totals.outstanding_bytes,
        STEADY_LEAKS * STEADY_SIZE,
        "totals.outstanding_bytes: steady_leak only, no phantom\n{ctx}"
    );
    assert_eq!(
        losses_line(&text),
        format!(
            "losses: live_map_full={lost} (report is incomplete, never inflated; raise \
             --max-live)"
        ),
        "the text report names the full table and what to do\n{text}"
    );
    // What --help says the table holds: more than --max-live blocks, never
    // more than twice as many.
    let recorded = FLOOD_BLOCKS - lost;
    assert!(
        recorded > 1024 && recorded <= 2048,
        "with --max-live 1024, {recorded} of the flood's 3000 blocks were recorded: between \
         1024 and 2048 (two slots per block)\n{ctx}"
    );
    let help = run_memtrace(&["--help"], secs(30));
    help.assert_success();
    let max_live = help
        .stdout
        .split("--max-live <N>")
        .nth(1)
        .and_then(|rest| rest.split("\n      --").next())
        .unwrap_or_else(|| panic!("no --max-live in --help:\n{}", help.stdout));
    let max_live = max_live.split_whitespace().collect::<Vec<_>>().join(" ");
    for says in [
        "two slots per block",
        "never holds more than 2 N",
        "raise --max-live",
    ] {
        assert!(
            max_live.contains(says),
            "--max-live's help should say {says:?}: {max_live}"
        );
    }
    report.assert_consistent();
}

/// The live table is memtrace's own hash table (two slots per --max-live
/// block, each block in one of two buckets): below its capacity it must
/// hold every block, with the flood's real, closely spaced addresses.
#[test]
fn live_table_below_capacity_records_every_block() {
    let (report, _) = loss_flood("live", &["--max-live", "4096"]);
    let ctx = report.describe();
    assert_eq!(
        report.losses.live_map_full, 0,
        "3032 blocks live at once, --max-live 4096: nothing lost\n{ctx}"
    );
    assert_eq!(
        report.totals.allocations,
        FLOOD_BLOCKS + STEADY_LEAKS,
        "every allocation recorded: the flood's 3000 and steady_leak's 32\n{ctx}"
    );
    assert_eq!(
        report.counters.free_unknown, 0,
        "every free found its block\n{ctx}"
    );
    assert_eq!(
        report
            .function_summary("flood_alloc")
            .totals
            .outstanding_bytes,
        0,
        "flood_alloc's blocks were all freed\n{ctx}"
    );
    assert_steady_leak(&report);
    report.assert_consistent();
}

#[test]
fn full_stack_table_is_counted_and_bytes_kept() {
    let (report, text) = loss_flood("stacks", &["--max-stacks", "256"]);
    let ctx = report.describe();
    let lost = report.losses.stack_lost;
    let unknown: Vec<&StackReport> = report
        .stacks
        .iter()
        .filter(|s| s.frames.is_empty())
        .collect();
    let leaves = report.function_summary("leaf_alloc");
    assert!(
        leaves.stacks > 0 && leaves.stacks < 256 && unknown.len() == 1,
        "leaf_alloc should have some stacks of its own (the table's room: {}, below 256) and the \
         rest one unknown stack (found {})\n{ctx}",
        leaves.stacks,
        unknown.len()
    );
    let unknown = unknown[0];
    assert_eq!(
        (lost, unknown.allocations),
        (PATHS - leaves.totals.allocations, lost),
        "losses.stack_lost counts each allocation whose stack did not fit, all of them in the \
         unknown stack: (stack_lost, unknown stack's allocations)\n{ctx}"
    );
    assert_eq!(
        leaves.totals.outstanding_bytes + unknown.outstanding_bytes,
        PATHS * LEAF_SIZE,
        "no byte of the 4096 leaves is lost: leaf_alloc's stacks + the unknown stack\n{ctx}"
    );
    assert_steady_leak(&report);
    assert_eq!(
        report.totals.outstanding_bytes,
        STEADY_LEAKS * STEADY_SIZE + PATHS * LEAF_SIZE,
        "totals.outstanding_bytes\n{ctx}"
    );
    assert_eq!(
        losses_line(&text),
        format!(
            "losses: stack_lost={lost} (report is incomplete, never inflated; raise \
             --max-stacks)"
        ),
        "the text report names the full table\n{text}"
    );
    // Every stack is listed (257, more than the --top the support checks
    // assume); the sums are checked above.
    let problems = consistency_problems_except(&report, "stacks listed, more than --top");
    assert!(problems.is_empty(), "{}\n{ctx}", problems.join("\n"));
}

/// Stack ids are 32-bit hashes of the frames: a stack whose id another
/// stack holds moves to the next of its four candidate ids. With every
/// stack's first id made the same (the hidden `--stack-ids-collide`),
/// steady_leak's stack takes it, the first three leaf paths move to the
/// other three, and the 4,093 paths after them are lost, bytes kept.
#[test]
fn colliding_stack_ids_move_to_the_next_id() {
    let (report, _) = loss_flood("stacks", &["--stack-ids-collide"]);
    let ctx = report.describe();
    let leaves = report.function_summary("leaf_alloc");
    let unknown: Vec<&StackReport> = report
        .stacks
        .iter()
        .filter(|s| s.frames.is_empty())
        .collect();
    assert_eq!(
        (
            report.counters.stack_ids_moved,
            leaves.stacks,
            leaves.totals.outstanding_bytes
        ),
        (3, 3, 3 * LEAF_SIZE),
        "three leaf paths recorded at the second, third and fourth ids: (counters.\
         stack_ids_moved, leaf_alloc's stacks, their bytes)\n{ctx}"
    );
    assert_eq!(
        (
            report.losses.stack_lost,
            unknown.len(),
            unknown.first().map(|s| s.outstanding_bytes)
        ),
        (PATHS - 3, 1, Some((PATHS - 3) * LEAF_SIZE)),
        "the other paths, all four ids taken, are lost into one unknown stack, their bytes \
         kept: (stack_lost, unknown stacks, its bytes)\n{ctx}"
    );
    assert_steady_leak(&report);
}

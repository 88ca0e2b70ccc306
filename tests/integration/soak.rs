//! Soak, one minute of it (`cargo xtask soak --minutes N` is the long
//! version): memtrace traces soak.c — a steady leak of 50,000 bytes a second
//! next to 50,000 malloc/free pairs a second through 512 stacks and an mmap
//! for every 64th pair — for 60 s. Its resident memory, read every 5 s, is
//! flat after the first 20 s (within 4 MiB: its series fill up to the end,
//! 513 of them holding 30 points), and the report finds the leak with the
//! bytes the workload says it leaked (within 1 %), as a `leak`, with no
//! losses.

use std::time::{Duration, Instant};

use memtrace_integration::{assert_within, compile_c, proc_memory, secs, Tracer, CMD_TIMEOUT};
use memtrace_report::Verdict;

const SOAK_SECS: u64 = 60;
/// When memtrace's memory is read, and from when it must be flat.
const READ_EVERY: Duration = Duration::from_secs(5);
const FLAT_FROM: Duration = Duration::from_secs(20);
const FLAT_WITHIN: u64 = 4 * 1024 * 1024;
/// soak.c: bytes of each leak_steady() block.
const LEAK_SIZE: u64 = 1000;

#[test]
fn a_minute_of_leak_and_churn_keeps_memtrace_flat() {
    let exe = compile_c("soak");
    let args: Vec<std::ffi::OsString> =
        ["--format", "json", "--top", "100", "--interval", "2s", "--"]
            .iter()
            .map(Into::into)
            .chain([exe.into_os_string(), SOAK_SECS.to_string().into()])
            .collect();
    let mut tracer = Tracer::spawn(&args);
    tracer.wait_tracing(secs(60));
    let pid = tracer.pid();
    let started = Instant::now();
    let mut readings: Vec<(Duration, u64)> = Vec::new();
    while tracer.is_running() {
        std::thread::sleep(READ_EVERY);
        if let Some(bytes) =
            proc_memory(pid, "VmRSS").filter(|_| started.elapsed() < secs(SOAK_SECS))
        {
            readings.push((started.elapsed(), bytes));
        }
    }
    let out = tracer.finish(CMD_TIMEOUT + secs(SOAK_SECS));
    out.assert_success();
    let report = out.report();
    let ctx = report.describe();

    let from = readings
        .iter()
        .find(|(t, _)| *t >= FLAT_FROM)
        .map(|&(_, b)| b)
        .unwrap_or_else(|| panic!("no reading after {FLAT_FROM:?}: {readings:?}"));
    let last = readings.last().map(|&(_, b)| b).unwrap_or(0);
    let mib = |b: u64| b as f64 / 1048576.0;
    let table: Vec<String> = readings
        .iter()
        .map(|(t, b)| format!("{:.0}s {:.1} MiB", t.as_secs_f64(), mib(*b)))
        .collect();
    eprintln!("memtrace RSS: {}", table.join(", "));
    assert!(
        last <= from + FLAT_WITHIN,
        "memtrace's RSS should be flat after {FLAT_FROM:?} (within {} MiB): {}",
        mib(FLAT_WITHIN),
        table.join(", ")
    );

    let leaked: u64 = out
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("leaked "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("soak printed no `leaked N`\n{}", out.describe()));
    let leak = report.stack_of("leak_steady");
    assert_eq!(leak.verdict, Verdict::Leak, "leak_steady's verdict\n{ctx}");
    assert_within(
        "leak_steady outstanding_bytes",
        leak.outstanding_bytes,
        leaked,
        1.0,
        &ctx,
    );
    assert_within(
        "leak_steady outstanding_allocations",
        leak.outstanding_allocations,
        leaked / LEAK_SIZE,
        1.0,
        &ctx,
    );
    report.assert_no_losses();
    report.assert_consistent();
}

//! Peaks (peak_spike.c): a stack that held 4 MiB for a while and freed it
//! before the end keeps its peak, exact bytes and the sample it was first
//! held at, in the JSON report, the text report and a `--weight peak`
//! flamegraph's folded stacks (live and from the saved snapshot); its
//! target keeps the peak of its stacks together. Sampled every 200 ms, the
//! spike is held for five samples (the test waits for memtrace's plain
//! lines showing it) before the workload is told to free it.

use memtrace_integration::{
    compile_c, path_str, run_memtrace, scratch_dir, secs, trace_pid, Workload,
};
use memtrace_report::Peak;

/// peak_spike.c: spike()'s 64 blocks of 64 KiB...
const SPIKE_BLOCKS: u64 = 64;
const SPIKE_BYTES: u64 = SPIKE_BLOCKS * 64 * 1024;
/// ...and small_leak()'s 10 blocks of 1000 bytes, never freed.
const LEAK_BLOCKS: u64 = 10;
const LEAK_BYTES: u64 = LEAK_BLOCKS * 1000;

/// Samples the spike is held for before it is freed.
const HELD_SAMPLES: usize = 5;

#[test]
fn a_freed_spike_keeps_its_peak() {
    let dir = scratch_dir("peaks");
    let (json, text, folded) = (
        dir.join("run.json"),
        dir.join("run.txt"),
        dir.join("run.folded"),
    );
    let mut workload = Workload::spawn_ready(&compile_c("peak_spike"), &[] as &[&str]);
    let pid = workload.pid();
    let mut tracer = trace_pid(
        pid,
        &[
            "--interval",
            "200ms",
            "--weight",
            "peak",
            "-o",
            path_str(&json),
            "-o",
            path_str(&text),
            "-o",
            path_str(&folded),
        ],
    );
    workload.signal(libc::SIGUSR1);
    workload.expect_line("held", secs(30));
    // memtrace's plain lines: `memtrace:    1.4s  4.0 MiB outstanding in 1
    // stacks; ...`, one per sample; the times of the first and last that
    // show the spike bound when it was held.
    let line_time = |line: &str| -> f64 {
        let t = line.trim_start_matches("memtrace:").trim_start();
        t[..t.find('s').expect("a time")].parse().expect("seconds")
    };
    let held: Vec<f64> = (0..HELD_SAMPLES)
        .map(|_| line_time(&tracer.wait_line("  4.0 MiB outstanding", secs(30))))
        .collect();
    workload.signal(libc::SIGUSR1);
    workload.expect_line("done", secs(30));
    let out = tracer.finish(secs(90));
    out.assert_success();
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}\n{}", p.display(), out.describe()))
    };
    let report = out.report_from(&read(&json));
    let ctx = report.describe();
    report.assert_consistent();
    report.assert_no_losses();
    assert!(report.listed_by_peak, "--weight peak lists by peak\n{ctx}");

    // The spike: nothing outstanding, its peak exact, first held at the
    // sample of the first line that showed it (the line is printed just
    // after its sample: within its 0.1 s rounding and the printing).
    let spike = report.stack_of("spike");
    assert_eq!(
        (
            spike.outstanding_bytes,
            spike.allocated_bytes,
            spike.freed_bytes
        ),
        (0, SPIKE_BYTES, SPIKE_BYTES),
        "{ctx}"
    );
    let peak: Peak = spike.peak.expect("the spike's peak");
    assert_eq!(
        (peak.bytes, peak.allocations, peak.bound_bytes),
        (SPIKE_BYTES, SPIKE_BLOCKS, SPIKE_BYTES),
        "4 MiB at its peak, exactly (no sample missed more)\n{ctx}"
    );
    assert!(
        peak.t >= held[0] - 0.2 && peak.t <= held[0] + 0.05,
        "peak at {} s, first shown held at {:.1} s (held until {:.1} s)\n{ctx}",
        peak.t,
        held[0],
        held[HELD_SAMPLES - 1]
    );
    // Every point of the spike's series is at most its peak; the series
    // ends at nothing.
    assert_eq!(spike.series.last().map(|p| p.bytes), Some(0), "{ctx}");

    let leak = report.stack_of("small_leak");
    assert_eq!(leak.outstanding_bytes, LEAK_BYTES, "{ctx}");
    assert_eq!(leak.peak.map(|p| p.bytes), Some(LEAK_BYTES), "{ctx}");

    // The target: its stacks together peaked with the spike (the leak came
    // after it was freed). Its bound: 4 MiB, plus the leak's bytes when
    // the free and the leak fell in one interval (the samples cannot tell
    // their order).
    let target = report
        .targets
        .iter()
        .find(|t| t.pid == pid)
        .expect("the target");
    let whole = target.peak.expect("the target's peak");
    assert_eq!((whole.bytes, whole.t), (SPIKE_BYTES, peak.t), "{ctx}");
    assert!(
        [SPIKE_BYTES, SPIKE_BYTES + LEAK_BYTES].contains(&whole.bound_bytes),
        "{whole:?}\n{ctx}"
    );
    let memory = target.memory.as_ref().expect("memory read");
    assert!(
        memory.peak_rss_bytes > SPIKE_BYTES,
        "peak RSS {} holds the touched spike\n{ctx}",
        memory.peak_rss_bytes
    );

    // The text report: the spike's peak under its stack, the target's.
    let text = read(&text);
    let at = format!("4.0 MiB at {:.1} s", peak.t);
    assert!(
        text.lines().any(|l| l == format!("    peak {at}")),
        "the spike's peak line ({at})\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(&format!("    peak: traced stacks {at}; RSS "))),
        "the target's peak line\n{text}"
    );

    // --weight peak: the spike weighs its peak.
    let folded = read(&folded);
    let weight_of = |leaf: &str| -> Vec<u64> {
        folded
            .lines()
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(frames, _)| frames.ends_with(&format!(";{leaf}")))
            .map(|(_, w)| w.parse().expect("a weight"))
            .collect()
    };
    assert_eq!(weight_of("spike"), [SPIKE_BYTES], "{folded}");
    assert_eq!(weight_of("small_leak"), [LEAK_BYTES], "{folded}");
    // The same from the saved snapshot.
    let offline = run_memtrace(
        &[
            "report",
            path_str(&json),
            "--weight",
            "peak",
            "--format",
            "folded",
        ],
        secs(60),
    );
    offline.assert_success();
    assert_eq!(offline.stdout, folded, "{}", offline.describe());
    let _ = std::fs::remove_dir_all(&dir);
}

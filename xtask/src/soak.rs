//! `cargo xtask soak`: memtrace over a long run. Traces
//! tests/workloads/soak.c (a steady leak of 50,000 bytes a second next to
//! 50,000 malloc/free pairs a second through 512 stacks and 780
//! mmap/munmap pairs) for `--minutes`, records memtrace's resident memory
//! and CPU at every `--sample-every` (a minute), prints them as a table as
//! they come, checks at the end that the report finds the leak with its
//! bytes, and writes everything to target/xtask/soak.json. Must run as
//! root.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use crate::{build, cmd};

#[derive(Args, Debug)]
pub(crate) struct SoakArgs {
    /// How long the workload runs, traced.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    minutes: u64,
    /// memtrace's --interval.
    #[arg(long, default_value = "5s")]
    interval: String,
    /// Seconds between two readings of memtrace's memory and CPU.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    sample_every: u64,
}

/// One reading of memtrace's own cost.
#[derive(Debug, Serialize)]
struct Sample {
    t_secs: f64,
    rss_bytes: u64,
    peak_rss_bytes: u64,
    /// CPU since the previous reading, as a share of one core.
    cpu_share_of_core: f64,
}

#[derive(Debug, Serialize)]
struct Results {
    minutes: u64,
    interval: String,
    samples: Vec<Sample>,
    /// Resident memory at the last reading less at the first.
    rss_growth_bytes: i64,
    /// memtrace's CPU over the whole run, as a share of one core.
    cpu_share_of_core: f64,
    leak_expected_bytes: u64,
    leak_reported_bytes: u64,
    leak_verdict: String,
    losses: Value,
    counters: Value,
}

pub(crate) fn run(args: SoakArgs) -> Result<()> {
    if !cmd::is_root() {
        bail!("the soak loads eBPF programs: run `cargo xtask soak` as root");
    }
    let memtrace = build::run()?;
    cmd::step("compile the soak workload");
    let workload = cmd::compile_workload("soak", &["-O0", "-g", "-fno-omit-frame-pointer"])?;
    let dir = cmd::target_dir().join("xtask");
    let report_path = dir.join("soak-report.json");
    cmd::step(&format!(
        "trace the soak workload for {} min, reading memtrace's cost every {} s",
        args.minutes, args.sample_every
    ));
    let mut child = Command::new(&memtrace)
        .args(["--interval", &args.interval, "--no-live", "-o"])
        .arg(&report_path)
        .arg("--")
        .arg(&workload)
        .arg((args.minutes * 60).to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting memtrace")?;
    let pid = child.id();
    // memtrace's stderr, which the workload shares: its `leaked N` line.
    let (lines_tx, lines) = mpsc::channel();
    let stderr = child.stderr.take().context("memtrace's stderr")?;
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });

    println!(
        "{:>8} {:>10} {:>10} {:>12}",
        "minute", "RSS MiB", "peak MiB", "CPU % core"
    );
    let started = Instant::now();
    let mut samples = Vec::new();
    let (mut last_cpu, mut last_t) = (0.0, 0.0);
    loop {
        let next = Duration::from_secs(args.sample_every * (samples.len() as u64 + 1));
        while started.elapsed() < next && child.try_wait()?.is_none() {
            thread::sleep(Duration::from_millis(200));
        }
        if child.try_wait()?.is_some() {
            break;
        }
        let (Ok(rss), Ok(peak), Ok(cpu)) = (
            cmd::memory_kib(pid, "VmRSS"),
            cmd::memory_kib(pid, "VmHWM"),
            cmd::cpu_secs(pid),
        ) else {
            break; // it is exiting
        };
        let t = started.elapsed().as_secs_f64();
        let sample = Sample {
            t_secs: t,
            rss_bytes: rss * 1024,
            peak_rss_bytes: peak * 1024,
            cpu_share_of_core: (cpu - last_cpu) / (t - last_t),
        };
        println!(
            "{:>8.1} {:>10.1} {:>10.1} {:>12.2}",
            t / 60.0,
            sample.rss_bytes as f64 / 1048576.0,
            sample.peak_rss_bytes as f64 / 1048576.0,
            sample.cpu_share_of_core * 100.0
        );
        (last_cpu, last_t) = (cpu, t);
        samples.push(sample);
    }
    let status = child.wait()?;
    let stderr: Vec<String> = lines.try_iter().collect();
    if !status.success() {
        bail!("memtrace failed ({status}): {}", stderr.join(" | "));
    }
    let expected: u64 = stderr
        .iter()
        .find_map(|l| l.strip_prefix("leaked "))
        .and_then(|n| n.trim().parse().ok())
        .context("the soak workload printed no `leaked N`")?;
    let results = results(&args, samples, last_cpu, expected, &report_path)?;
    print_summary(&results);
    let json = dir.join("soak.json");
    fs::write(&json, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", json.display()))?;
    eprintln!("results written to {}", json.display());
    let off = results.leak_reported_bytes.abs_diff(expected) as f64 / expected as f64;
    if results.leak_verdict != "leak" || off > 0.01 {
        bail!(
            "the leak was not found right: leak_steady {} bytes ({}), expected {expected}",
            results.leak_reported_bytes,
            results.leak_verdict
        );
    }
    Ok(())
}

/// The run's results, with what the report says of the leak.
fn results(
    args: &SoakArgs,
    samples: Vec<Sample>,
    cpu_secs: f64,
    expected: u64,
    report: &Path,
) -> Result<Results> {
    let text =
        fs::read_to_string(report).with_context(|| format!("reading {}", report.display()))?;
    let report: Value = serde_json::from_str(&text).context("the report is not JSON")?;
    let leak = report["stacks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["frames"][0]["function"] == "leak_steady");
    let rss_growth_bytes = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => b.rss_bytes as i64 - a.rss_bytes as i64,
        _ => 0,
    };
    let seconds = samples.last().map_or(1.0, |s| s.t_secs);
    Ok(Results {
        minutes: args.minutes,
        interval: args.interval.clone(),
        rss_growth_bytes,
        cpu_share_of_core: cpu_secs / seconds,
        samples,
        leak_expected_bytes: expected,
        leak_reported_bytes: leak
            .and_then(|s| s["outstanding_bytes"].as_u64())
            .unwrap_or(0),
        leak_verdict: leak
            .and_then(|s| s["verdict"].as_str())
            .unwrap_or("not found")
            .to_string(),
        losses: report["losses"].clone(),
        counters: report["counters"].clone(),
    })
}

fn print_summary(r: &Results) {
    let peak = r
        .samples
        .iter()
        .map(|s| s.peak_rss_bytes)
        .max()
        .unwrap_or(0);
    println!(
        "\nmemtrace over {} min (--interval {}): RSS {:+.1} MiB from the first reading to the \
         last, peak {:.1} MiB, CPU {:.2}% of a core",
        r.minutes,
        r.interval,
        r.rss_growth_bytes as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        r.cpu_share_of_core * 100.0
    );
    println!(
        "leak_steady: {} bytes reported ({}), {} leaked",
        r.leak_reported_bytes, r.leak_verdict, r.leak_expected_bytes
    );
    let losses: Vec<String> = r
        .losses
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| v.as_u64().is_some_and(|n| n > 0))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "losses: {}",
        if losses.is_empty() {
            "none".to_string()
        } else {
            losses.join(", ")
        }
    );
}

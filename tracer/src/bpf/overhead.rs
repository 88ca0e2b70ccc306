//! What tracing every process costs the node (`--all`): every malloc and
//! free on it traps into the kernel. Two measurements, both taken here:
//! the kernel's own run counts and run times of memtrace's allocator
//! programs (BPF statistics, enabled while memtrace runs), and the cost of
//! one probed malloc+free pair, timed in memtrace's own process before and
//! after the probes went in (its calls trap like anyone's, and the programs
//! return at once for it). Calls × trap cost + program time is the CPU the
//! node spends on tracing.

use std::{os::fd::OwnedFd, time::Instant};

use anyhow::{Context, Result};
use aya::sys::{enable_stats, Stats};

pub use memtrace_report::Overhead;

use crate::bpf::probes::Probes;

/// Pairs timed per calibration (~80 ms when probed, at ~4 µs a pair).
const CALIBRATION_PAIRS: u32 = 20_000;

/// Keeps BPF statistics on and knows the calibration.
pub struct Meter {
    /// Statistics stay enabled while this is open.
    _stats: OwnedFd,
    started: Instant,
    baseline_ns: f64,
    probed_ns: Option<f64>,
}

impl Meter {
    /// Enables the kernel's BPF statistics and times unprobed pairs. Call
    /// before any allocator probe is attached.
    pub fn start() -> Result<Meter> {
        let stats = enable_stats(Stats::RunTime).context("enabling BPF run-time statistics")?;
        Ok(Meter {
            _stats: stats,
            started: Instant::now(),
            baseline_ns: time_pairs(),
            probed_ns: None,
        })
    }

    /// Times probed pairs: call once the allocator probes are attached.
    pub fn calibrate(&mut self) {
        self.probed_ns = Some(time_pairs());
    }

    /// The cost so far.
    pub fn read(&self, probes: &Probes) -> Overhead {
        let stats = probes.run_stats();
        let (allocation_calls, enter_ns) = stats.alloc;
        let (_, return_ns) = stats.ret;
        let (frees, free_ns) = stats.free;
        let program_ns = enter_ns + return_ns + free_ns;
        let pair_overhead_ns = self
            .probed_ns
            .map_or(0.0, |p| (p - self.baseline_ns).max(0.0));
        let seconds = self.started.elapsed().as_secs_f64();
        let calls = (allocation_calls + frees) as f64;
        let cpu_seconds = (calls / 2.0 * pair_overhead_ns + program_ns as f64) / 1e9;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Overhead {
            seconds,
            allocation_calls,
            frees,
            program_ns,
            pair_overhead_ns,
            pair_baseline_ns: self.baseline_ns,
            cpu_seconds,
            cpu_share: if seconds > 0.0 {
                cpu_seconds / seconds / cpus as f64
            } else {
                0.0
            },
            cpus,
        }
    }
}

/// The fastest of 5 runs of the time of one malloc(64)+free pair (ns): the
/// run least disturbed by whatever else the node does.
fn time_pairs() -> f64 {
    let runs: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..CALIBRATION_PAIRS / 5 {
                // SAFETY: a plain malloc/free pair through libc (not the
                // Rust allocator, which may not call malloc for every
                // allocation); black_box keeps the pair from being elided.
                unsafe {
                    let p = libc::malloc(std::hint::black_box(64));
                    libc::free(std::hint::black_box(p));
                }
            }
            start.elapsed().as_nanos() as f64 / f64::from(CALIBRATION_PAIRS / 5)
        })
        .collect();
    runs.into_iter().fold(f64::INFINITY, f64::min)
}

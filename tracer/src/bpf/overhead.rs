//! What tracing costs the targets (with `--all`, the node): every probed
//! malloc and free traps into the kernel. Two measurements, both taken here:
//! the kernel's own run counts and run times of memtrace's allocator
//! programs (BPF statistics, enabled while memtrace runs), and the cost of
//! one probed malloc+free pair, timed in memtrace's own process before and
//! after its libc was probed (its calls trap like anyone's, and the programs
//! return at once for it), kept for the rest of the boot. Calls × trap cost
//! + program time is the CPU tracing takes.

use std::{os::fd::OwnedFd, path::Path, time::Instant};

use anyhow::{Context, Result};
use aya::sys::{enable_stats, Stats};

pub use memtrace_report::Overhead;

use crate::bpf::probes::Probes;

/// Pairs timed per calibration (~8 ms when probed, at ~1.5 µs a pair).
const CALIBRATION_PAIRS: u32 = 5_000;

/// Where a calibration is kept for the later runs of a boot: probing
/// memtrace's own allocator and letting it go again costs ~100 ms (the
/// kernel's detach waits), too much for every start.
const CACHE_DIR: &str = "/run/memtrace";
const CACHE_FILE: &str = "pair-cost";

/// This boot's id.
fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_string())
}

/// The (baseline, probed) ns of the calibration kept for `key` this boot.
fn cached(key: &str) -> Option<(f64, f64)> {
    let text = std::fs::read_to_string(Path::new(CACHE_DIR).join(CACHE_FILE)).ok()?;
    let boot = boot_id()?;
    text.lines().find_map(|line| {
        let mut fields = line.split('\t');
        if fields.next() != Some(boot.as_str()) || fields.next() != Some(key) {
            return None;
        }
        let baseline: f64 = fields.next()?.parse().ok()?;
        let probed: f64 = fields.next()?.parse().ok()?;
        (baseline.is_finite() && probed.is_finite()).then_some((baseline, probed))
    })
}

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
    /// before any allocator probe of memtrace's own is attached.
    pub fn start() -> Result<Meter> {
        let stats = enable_stats(Stats::RunTime).context("enabling BPF run-time statistics")?;
        Ok(Meter {
            _stats: stats,
            started: Instant::now(),
            baseline_ns: time_pairs(),
            probed_ns: None,
        })
    }

    /// Times probed pairs: call once memtrace's own allocator is probed.
    pub fn calibrate(&mut self) {
        self.probed_ns = Some(time_pairs());
    }

    /// Takes the calibration of an earlier run of this boot, when `key`
    /// (the probe path and the allocator file timed) is the one it was
    /// made with: true when there was one.
    pub fn reuse(&mut self, key: &str) -> bool {
        let Some((baseline, probed)) = cached(key) else {
            return false;
        };
        self.baseline_ns = baseline;
        self.probed_ns = Some(probed);
        true
    }

    /// Keeps this calibration for the later runs of this boot (best
    /// effort: a file under /run, which the next boot starts without).
    pub fn keep(&self, key: &str) {
        let (Some(probed), Some(boot)) = (self.probed_ns, boot_id()) else {
            return;
        };
        let _ = std::fs::create_dir_all(CACHE_DIR);
        let path = Path::new(CACHE_DIR).join(CACHE_FILE);
        // This boot's other keys stay (a line each).
        let mut text: String = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                let mut f = l.split('\t');
                f.next() == Some(boot.as_str()) && f.next() != Some(key)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        text += &format!("{boot}\t{key}\t{}\t{probed}\n", self.baseline_ns);
        let tmp = path.with_extension(format!("{}", std::process::id()));
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }

    /// The cost so far; None when no probed pair could be timed (the cost
    /// would read as the programs' time alone).
    pub fn read(&self, probes: &Probes) -> Option<Overhead> {
        self.probed_ns?;
        Some(self.read_counted(probes))
    }

    fn read_counted(&self, probes: &Probes) -> Overhead {
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

/// The file that defines the `malloc` the calibration calls (memtrace's
/// libc), as the dynamic loader knows it: the one file to probe for the
/// calibration (memtrace's own executable, tens of MB, is not parsed).
pub fn own_allocator() -> Option<std::path::PathBuf> {
    // SAFETY: dladdr only reads the loader's tables; info is written by it
    // before use, and dli_fname points into them for the process's life.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        let malloc = libc::malloc as *const libc::c_void;
        if libc::dladdr(malloc, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        let name = std::ffi::CStr::from_ptr(info.dli_fname);
        Some(std::path::PathBuf::from(name.to_str().ok()?))
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

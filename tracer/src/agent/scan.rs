//! The agent's cheap watch of every process: its resident memory read from
//! /proc each scan (two small files: `stat` for name and start time,
//! `statm` for resident and anonymous pages), a sliding series per process,
//! and its growth judged by the statistics of the stack verdicts
//! ([`verdict::analyse_points`]: robust Theil–Sen trend, significance,
//! plateau rule). Bounded: at most [`MAX_PROCESSES`] processes of
//! [`MAX_POINTS`] points each. A process the agent has traced is read from
//! `smaps` too, to leave out the text pages its probes copied.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fs,
    time::Instant,
};

use crate::{
    accounting::verdict::{self, Verdict},
    discover::cgroup::{self, Container},
    discover::select,
};

/// Points kept per process (a sliding window: 1 h at the default 30 s scan).
pub const MAX_POINTS: usize = 120;
/// Processes watched at once (~3.5 KiB each); more are counted as untracked.
pub const MAX_PROCESSES: usize = 16_384;

/// One reading of a process.
#[derive(Clone, Debug, PartialEq)]
pub struct Reading {
    pub comm: String,
    /// Start time in clock ticks since boot: with the pid, who it is (a
    /// reused pid is another process).
    pub start_ticks: u64,
    pub rss_bytes: u64,
    pub anon_bytes: u64,
}

/// Reads a process; None for kernel threads (no memory of their own) and
/// processes gone.
pub fn read(pid: u32) -> Option<Reading> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let statm = fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let (comm, start_ticks) = parse_stat(&stat)?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let (rss_bytes, anon_bytes) = parse_statm(&statm, page)?;
    Some(Reading {
        comm,
        start_ticks,
        rss_bytes,
        anon_bytes,
    })
}

/// Name and start time (field 22) from /proc/PID/stat; the name may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    // Fields after the name start at field 3 (state); start time is 22.
    let start = stat[close + 1..]
        .split_whitespace()
        .nth(22 - 3)?
        .parse()
        .ok()?;
    Some((comm, start))
}

/// Bytes of `pid`'s executable file mappings that are private copies
/// (`Anonymous:` in /proc/PID/smaps): the text pages that uprobes'
/// breakpoints copied (glibc's allocator functions span three), which the
/// kernel counts as anonymous memory while the probes are in place. Left
/// out of a traced process's anonymous memory, they would read as growth
/// when a trace starts. Measured rather than predicted, so it is exact
/// whenever the trace attaches or detaches. (A copy made otherwise, a
/// debugger's breakpoint, is left out too; it does not come and go with
/// the agent's traces, which always leave it out from the first one on.)
fn copied_text_bytes(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/smaps")).map_or(0, |s| parse_copied_text(&s))
}

/// See [`copied_text_bytes`].
fn parse_copied_text(smaps: &str) -> u64 {
    let (mut text, mut total) = (false, 0u64);
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if !first.ends_with(':') {
            // A mapping: start-end perms offset dev inode [path].
            let perms = fields.next().unwrap_or("");
            let inode = fields.nth(2).unwrap_or("0");
            text = perms.contains('x') && inode != "0";
        } else if text && first == "Anonymous:" {
            let kib: u64 = fields.next().and_then(|k| k.parse().ok()).unwrap_or(0);
            total = total.saturating_add(kib.saturating_mul(1024));
        }
    }
    total
}

/// Resident and anonymous bytes from /proc/PID/statm (`size resident
/// shared ...`, in pages; shared counts file and shmem pages, so resident −
/// shared is the anonymous part). None when nothing is resident (a kernel
/// thread), or for more bytes than a u64 holds.
pub fn parse_statm(statm: &str, page: u64) -> Option<(u64, u64)> {
    let mut fields = statm.split_whitespace().map(|f| f.parse::<u64>().ok());
    let (_size, resident, shared) = (fields.next()??, fields.next()??, fields.next()??);
    if resident == 0 {
        return None;
    }
    Some((
        resident.checked_mul(page)?,
        resident.saturating_sub(shared) * page,
    ))
}

/// Growth of a process's anonymous memory over its window.
#[derive(Clone, Debug)]
pub struct Growth {
    pub verdict: Verdict,
    pub bytes_per_hour: f64,
    pub reason: String,
    /// Intervals since the series started to move (its active window):
    /// a trace needs as many as a leak verdict does.
    pub active_intervals: u64,
}

/// The growth of a series of (seconds, anonymous bytes).
fn judge(points: &[(f64, f64)]) -> Growth {
    let a = verdict::analyse_points(points, None);
    Growth {
        verdict: a.verdict,
        bytes_per_hour: a.growth_bytes_per_sec * 3600.0,
        reason: a.reason,
        active_intervals: a.active_intervals,
    }
}

/// A watched process.
#[derive(Debug)]
pub struct Watched {
    pub pid: u32,
    pub comm: String,
    pub start_ticks: u64,
    pub cgroup: Option<String>,
    pub container: Option<Container>,
    /// Seconds since the agent started, when first seen.
    pub first_seen: f64,
    pub rss_bytes: u64,
    /// Without the text pages probes copied, once it has been traced.
    pub anon_bytes: u64,
    /// Traced by the agent at some scan: from then on the text pages its
    /// probes copied are left out of its anonymous memory
    /// ([`copied_text_bytes`]).
    probed: bool,
    /// (seconds since the agent started, anonymous bytes).
    points: VecDeque<(f64, f64)>,
    /// Resident bytes at the same scans (for the agent's page; f32 holds
    /// them to a part in ten million, at half the size).
    rss_points: VecDeque<f32>,
    pub growth: Option<Growth>,
}

impl Watched {
    /// Its series: (seconds since the agent started, resident bytes,
    /// anonymous bytes), oldest first.
    pub fn series(&self) -> impl Iterator<Item = (f64, f64, f64)> + '_ {
        self.points
            .iter()
            .zip(&self.rss_points)
            .map(|(&(t, anon), &rss)| (t, f64::from(rss), anon))
    }

    /// Seconds it has been watched.
    pub fn observed_secs(&self, now: f64) -> f64 {
        now - self.first_seen
    }

    /// Pod UID, else container id, else cgroup: where it runs, for
    /// recognising a container that comes back after an OOM kill.
    pub fn home(&self) -> Option<String> {
        home_of(self.cgroup.as_deref(), self.container.as_ref())
    }
}

/// See [`Watched::home`].
pub fn home_of(cgroup: Option<&str>, container: Option<&Container>) -> Option<String> {
    match container {
        Some(Container {
            pod_uid: Some(pod), ..
        }) => Some(format!("pod:{pod}")),
        Some(c) => Some(format!("container:{}", c.id)),
        None => cgroup.filter(|c| *c != "/").map(|c| format!("cgroup:{c}")),
    }
}

/// What one scan found.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// Processes seen for the first time (pids).
    pub new: Vec<u32>,
    /// Processes whose name changed since the last scan (an entrypoint
    /// that exec'd its program).
    pub renamed: Vec<u32>,
    pub gone: usize,
}

/// Every watched process and its series.
pub struct Scanner {
    started: Instant,
    /// Only processes with these names (all when empty).
    comms: Vec<String>,
    procs: HashMap<u32, Watched>,
    /// Processes not watched because [`MAX_PROCESSES`] were (last scan).
    pub untracked: u64,
}

impl Scanner {
    pub fn new(comms: Vec<String>) -> Scanner {
        Scanner {
            started: Instant::now(),
            comms,
            procs: HashMap::new(),
            untracked: 0,
        }
    }

    /// Seconds since the agent started.
    pub fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Reads every process but `skip` (the agent and its traces), adds a
    /// point to each series, judges each, and forgets processes gone.
    /// `traced`: the processes the agent's traces hold probes in now.
    pub fn scan(&mut self, skip: &HashSet<u32>, traced: &HashSet<u32>) -> ScanResult {
        let now = self.now();
        let mut result = ScanResult::default();
        let mut seen = HashSet::new();
        self.untracked = 0;
        for pid in select::pids() {
            if skip.contains(&pid) {
                continue;
            }
            let Some(r) = read(pid) else { continue };
            if !self.comms.is_empty() && !self.comms.contains(&r.comm) {
                continue;
            }
            let known = self
                .procs
                .get(&pid)
                .is_some_and(|w| w.start_ticks == r.start_ticks);
            if !known {
                if self.procs.len() >= MAX_PROCESSES && !self.procs.contains_key(&pid) {
                    self.untracked += 1;
                    continue;
                }
                let cgroup = cgroup::read(pid);
                let container = cgroup.as_deref().and_then(cgroup::container_of);
                self.procs.insert(
                    pid,
                    Watched {
                        pid,
                        comm: r.comm.clone(),
                        start_ticks: r.start_ticks,
                        cgroup,
                        container,
                        first_seen: now,
                        rss_bytes: 0,
                        anon_bytes: 0,
                        probed: false,
                        points: VecDeque::new(),
                        rss_points: VecDeque::new(),
                        growth: None,
                    },
                );
                result.new.push(pid);
            }
            seen.insert(pid);
            let w = self.procs.get_mut(&pid).expect("inserted above");
            if w.comm != r.comm {
                result.renamed.push(pid);
                w.comm = r.comm;
            }
            w.probed |= traced.contains(&pid);
            w.rss_bytes = r.rss_bytes;
            w.anon_bytes = match w.probed {
                true => r.anon_bytes.saturating_sub(copied_text_bytes(pid)),
                false => r.anon_bytes,
            };
            if w.points.len() == MAX_POINTS {
                w.points.pop_front();
                w.rss_points.pop_front();
            }
            w.points.push_back((now, w.anon_bytes as f64));
            w.rss_points.push_back(r.rss_bytes as f32);
            w.growth = Some(judge(w.points.make_contiguous()));
        }
        let before = self.procs.len();
        self.procs.retain(|pid, _| seen.contains(pid));
        result.gone = before - self.procs.len();
        result
    }

    pub fn get(&self, pid: u32) -> Option<&Watched> {
        self.procs.get(&pid)
    }

    pub fn processes(&self) -> impl Iterator<Item = &Watched> {
        self.procs.values()
    }

    /// How many processes are watched.
    pub fn watched(&self) -> usize {
        self.procs.len()
    }

    /// Processes growing faster than `threshold_per_hour` (verdict leak or
    /// growing: a significant trend, not a plateau) on the evidence a leak
    /// verdict needs (at least [`verdict::MIN_LEAK_INTERVALS`] intervals
    /// since the growth started: one step up is not a trend), after being
    /// watched for `min_observation` seconds; fastest first.
    pub fn suspects(&self, threshold_per_hour: f64, min_observation: f64) -> Vec<&Watched> {
        let now = self.now();
        let mut found: Vec<&Watched> = self
            .procs
            .values()
            .filter(|w| w.observed_secs(now) >= min_observation)
            .filter(|w| {
                w.growth.as_ref().is_some_and(|g| {
                    matches!(g.verdict, Verdict::Leak | Verdict::Growing)
                        && g.active_intervals >= verdict::MIN_LEAK_INTERVALS as u64
                        && g.bytes_per_hour > threshold_per_hour
                })
            })
            .collect();
        found.sort_by(|a, b| {
            let rate = |w: &Watched| w.growth.as_ref().map_or(0.0, |g| g.bytes_per_hour);
            rate(b).total_cmp(&rate(a))
        });
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_names() {
        let stat = "4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 12345678 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        assert_eq!(parse_stat(stat), Some(("my (odd) proc".into(), 987654)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn statm_pages_to_bytes() {
        assert_eq!(
            parse_statm("1000 300 100 10 0 200 0\n", 4096),
            Some((300 * 4096, 200 * 4096))
        );
        // Kernel threads have nothing resident.
        assert_eq!(parse_statm("0 0 0 0 0 0 0\n", 4096), None);
        assert_eq!(parse_statm("1 x", 4096), None);
        // Found by the proc_files fuzz target: pages * 4096 overflowed.
        assert_eq!(
            parse_statm("77 6667466666666665 0 123 666666665 0 123 0\n", 4096),
            None
        );
    }

    #[test]
    fn copied_text_is_what_executable_file_mappings_hold_anonymously() {
        let smaps = "\
55d0c7a00000-55d0c7a02000 r--p 00000000 fe:01 1234 /usr/bin/idle
Anonymous:             0 kB
7f1c2a028000-7f1c2a17d000 r-xp 00028000 fe:01 5678 /usr/lib/x86_64-linux-gnu/libc.so.6
Size:               1364 kB
Anonymous:            12 kB
VmFlags: rd ex mr mw me sd
7f1c2a200000-7f1c2a221000 rw-p 00000000 00:00 0 [heap]
Anonymous:           132 kB
7f1c2b000000-7f1c2b100000 rwxp 00000000 00:00 0
Anonymous:            64 kB
";
        // libc's text only: not the heap, nor anonymous executable memory
        // (a JIT's code).
        assert_eq!(parse_copied_text(smaps), 12 * 1024);
        assert_eq!(parse_copied_text(""), 0);
    }

    #[test]
    fn reads_itself() {
        let me = read(std::process::id()).expect("own /proc entry");
        assert!(me.rss_bytes >= me.anon_bytes && me.anon_bytes > 0);
        assert!(me.start_ticks > 0);
    }

    /// A scanner that has watched, for 30 s, one process (pid 1) whose
    /// anonymous memory was `values`, one scan a second.
    fn watching(values: &[f64]) -> Scanner {
        let mut scanner = Scanner::new(Vec::new());
        scanner.started -= std::time::Duration::from_secs(30);
        let points: VecDeque<(f64, f64)> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (30.0 - (values.len() - 1 - i) as f64, v))
            .collect();
        let growth = Some(judge(&points.iter().copied().collect::<Vec<_>>()));
        scanner.procs.insert(
            1,
            Watched {
                pid: 1,
                comm: "x".into(),
                start_ticks: 1,
                cgroup: None,
                container: None,
                first_seen: 0.0,
                rss_bytes: 0,
                anon_bytes: *values.last().unwrap() as u64,
                probed: false,
                rss_points: points.iter().map(|&(_, v)| v as f32).collect(),
                points,
                growth,
            },
        );
        scanner
    }

    #[test]
    fn a_trace_needs_the_intervals_a_leak_needs() {
        const MIB: f64 = 1048576.0;
        // Flat for 20 s, then one, two, three steps up: growing at
        // +3.5 GiB/h, but too few intervals to call a leak.
        for steps in 1..verdict::MIN_LEAK_INTERVALS {
            let mut v = vec![8.0 * MIB; 20];
            v.extend((1..=steps).map(|i| (8 + i) as f64 * MIB));
            let s = watching(&v);
            let g = s.get(1).unwrap().growth.clone().unwrap();
            assert_eq!(g.verdict, Verdict::Growing, "{g:?}");
            assert_eq!(g.active_intervals, steps as u64, "{g:?}");
            assert!(
                s.suspects(50.0 * MIB, 10.0).is_empty(),
                "{steps} steps: {g:?}"
            );
        }
        // Four steps: the evidence of a leak.
        let mut v = vec![8.0 * MIB; 20];
        v.extend((1..=4).map(|i| (8 + i) as f64 * MIB));
        let s = watching(&v);
        let g = s.get(1).unwrap().growth.clone().unwrap();
        assert_eq!((g.verdict, g.active_intervals), (Verdict::Leak, 4), "{g:?}");
        assert_eq!(s.suspects(50.0 * MIB, 10.0).len(), 1);
        // ...but not before --min-observation.
        assert!(s.suspects(50.0 * MIB, 60.0).is_empty());
    }

    #[test]
    fn home_prefers_the_pod() {
        let c = Container {
            runtime: "containerd".into(),
            id: "abcd".into(),
            pod_uid: Some("1234-5678".into()),
        };
        assert_eq!(
            home_of(Some("/x"), Some(&c)).as_deref(),
            Some("pod:1234-5678")
        );
        assert_eq!(home_of(Some("/"), None), None);
        assert_eq!(home_of(Some("/mt"), None).as_deref(), Some("cgroup:/mt"));
    }
}

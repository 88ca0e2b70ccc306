//! `memtrace agent`: the node agent. Every `--scan-interval` it reads every
//! process's memory from /proc (`scan`) and judges its growth; a process
//! growing faster than `--alert-growth` for long enough, or one that comes
//! back where the OOM killer struck (same pod, container or cgroup, same
//! name), is traced for `--trace-window` by a child memtrace (`traces`),
//! whose report becomes an incident on disk (`incidents`, with retention).
//! The OOM watch runs all along. `metrics`, `http` and its web `page`
//! (with `session`) expose it all. This file owns the loop and the state
//! the HTTP handlers share with it.

mod http;
pub mod incidents;
mod metrics;
mod page;
pub mod scan;
mod session;
mod traces;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use memtrace_report::{
    frame_name,
    render::text::oom_line,
    units::{bytes, rate_per_hour},
    OomKill, Verdict,
};

use crate::{
    bpf::preflight,
    config::{self, DEFAULT_MAX_LIVE, DEFAULT_MAX_STACKS},
    discover::cgroup::Container,
};
use incidents::{Incident, Store};
use metrics::Metrics;
use scan::Scanner;
pub use traces::name_after_argv0;
use traces::Children;

/// How long an OOM kill is remembered, for recognising the victim's
/// container when it comes back.
const OOM_MEMORY: Duration = Duration::from_secs(3600);
/// OOM kills remembered at once.
const OOM_KEPT: usize = 100;
/// OOM kills the page lists.
const OOM_SHOWN: usize = 20;
/// The reason of a trace of a process back where an OOM kill struck.
const OOM_RESTART: &str = "oom-restart";
/// The reason of traces asked for over HTTP.
const ON_DEMAND: &str = "on-demand";
/// How long shutdown waits for running traces to write their reports.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Trace slots: at most `--max-traces` at once, one per pid. On-demand
/// traces may take all but one (when there are several), so they cannot
/// starve incidents.
pub struct Slots {
    max: usize,
    /// Traced pid → whether the trace is on demand.
    active: Arc<Mutex<HashMap<u32, bool>>>,
}

/// A slot held; freed when dropped.
pub struct Slot {
    active: Arc<Mutex<HashMap<u32, bool>>>,
    pid: u32,
}

impl Slots {
    fn acquire(&self, pid: u32, on_demand: bool) -> Option<Slot> {
        let mut active = self.active.lock().expect("slots lock");
        let on_demand_max = self.max.saturating_sub(1).max(1);
        if active.len() >= self.max
            || active.contains_key(&pid)
            || (on_demand && active.values().filter(|&&d| d).count() >= on_demand_max)
        {
            return None;
        }
        active.insert(pid, on_demand);
        Some(Slot {
            active: self.active.clone(),
            pid,
        })
    }

    fn count(&self) -> usize {
        self.active.lock().expect("slots lock").len()
    }

    fn pids(&self) -> Vec<u32> {
        self.running().into_iter().map(|(pid, _)| pid).collect()
    }

    /// Pids traced now, each with whether its trace is on demand.
    fn running(&self) -> Vec<(u32, bool)> {
        let active = self.active.lock().expect("slots lock");
        active
            .iter()
            .map(|(&pid, &on_demand)| (pid, on_demand))
            .collect()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.active.lock().expect("slots lock").remove(&self.pid);
    }
}

/// What the loop shares with the HTTP handlers and trace tasks.
pub struct Shared {
    node: String,
    token: Option<String>,
    exe: PathBuf,
    store: Store,
    metrics: Metrics,
    slots: Slots,
    children: Children,
    last_scan: Mutex<Option<Instant>>,
    scan_interval: Duration,
    verbose: bool,
    /// `--runtime-attach`: its traces may open Node inspectors.
    runtime_attach: bool,
    serial: AtomicU64,
    started: Instant,
    oom_watch_up: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    /// Outstanding bytes of each live pid's last finished trace window.
    traced: Mutex<HashMap<u32, u64>>,
    /// The settings, one line (startup and the page).
    settings: String,
    /// The processes of the last scan the page shows (those with metrics).
    shown: Mutex<page::Shown>,
    /// Recent OOM kills, newest first (at most [`OOM_SHOWN`]).
    oom_kills: Mutex<VecDeque<page::Kill>>,
    /// The page's sessions.
    sessions: session::Sessions,
}

impl Shared {
    /// The running children's pids.
    fn child_pids(&self) -> Vec<u32> {
        let children = self.children.lock().expect("children lock");
        children.iter().copied().collect()
    }

    fn next_serial(&self) -> u64 {
        self.serial.fetch_add(1, Ordering::Relaxed)
    }

    fn count_trace(&self, reason: &str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.metrics
            .traces
            .with_label_values(&[reason, result])
            .inc();
    }

    /// The agent's own gauges, read when scraped.
    fn refresh_own_metrics(&self) {
        let m = &self.metrics;
        let rss = |pid: u32| scan::read(pid).map_or(0, |r| r.rss_bytes as i64);
        m.resident
            .with_label_values(&["agent"])
            .set(rss(std::process::id()));
        m.resident
            .with_label_values(&["traces"])
            .set(self.child_pids().into_iter().map(rss).sum());
        m.traces_active.set(self.slots.count() as i64);
        m.oom_watch_up
            .set(i64::from(self.oom_watch_up.load(Ordering::Relaxed)));
    }

    /// What the page shows, now, as JSON.
    fn page_state(&self) -> serde_json::Result<Vec<u8>> {
        let incidents = self.store.list();
        // Written while held (no await here): the rows and their series are
        // not copied.
        let shown = self.shown.lock().expect("shown lock");
        let shown_rows = &shown.rows;
        let mut running = self.slots.running();
        running.sort_unstable();
        let tracing = running
            .into_iter()
            .map(|(pid, on_demand)| page::Running {
                pid,
                comm: shown_rows
                    .iter()
                    .find(|r| r.pid == pid)
                    .map(|r| r.comm.clone())
                    .or_else(|| scan::read(pid).map(|r| r.comm))
                    .unwrap_or_default(),
                on_demand,
            })
            .collect();
        let oom_kills = self.oom_kills.lock().expect("oom_kills lock");
        serde_json::to_vec(&page::State {
            node: &self.node,
            version: env!("CARGO_PKG_VERSION"),
            settings: &self.settings,
            token: self.token.is_some(),
            scan_interval_secs: self.scan_interval.as_secs_f64(),
            scanned: shown.at,
            watched: self.metrics.processes.get() as usize,
            processes: shown_rows,
            tracing,
            oom_kills: &oom_kills,
            incidents: &incidents,
        })
    }

    fn refresh_store_metrics(&self) {
        let kept = self.store.list();
        self.metrics.reports.set(kept.len() as i64);
        self.metrics
            .report_bytes
            .set(kept.iter().map(|i| i.bytes as i64).sum());
    }
}

pub fn run(args: config::Agent) -> Result<()> {
    preflight::check_privileges()?;
    preflight::check_btf()?;
    preflight::check_kernel_features()?;
    preflight::ensure_tracefs()?;
    preflight::raise_resource_limits();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(agent(args))
}

/// The node's name: NODE_NAME (Kubernetes' downward API), else the host
/// name.
fn node_name() -> String {
    if let Some(n) = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()) {
        return n;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// A process to trace and why.
struct Suspect {
    pid: u32,
    comm: String,
    cgroup: Option<String>,
    container: Option<Container>,
    reason: &'static str,
    detail: String,
    growth_per_hour: Option<f64>,
}

async fn agent(args: config::Agent) -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // The port first: a second agent fails here, before it touches the
    // reports directory (whose lock it would not get either).
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let (store, pruned) = Store::open(
        &args.reports_dir,
        args.max_reports as usize,
        args.max_report_bytes,
    )?;
    // Children run this very file, even if the binary is replaced on disk.
    let exe = PathBuf::from("/proc/self/exe");
    let node = node_name();
    let shared = Arc::new(Shared {
        metrics: Metrics::new(&node),
        node,
        token: args.token.clone(),
        exe: exe.clone(),
        store,
        slots: Slots {
            max: args.max_traces as usize,
            active: Arc::default(),
        },
        children: Children::default(),
        last_scan: Mutex::new(None),
        scan_interval: args.scan_interval,
        verbose: args.verbose,
        runtime_attach: args.runtime_attach,
        serial: AtomicU64::new(0),
        started: Instant::now(),
        oom_watch_up: Arc::default(),
        stopping: Arc::default(),
        traced: Mutex::default(),
        settings: format!(
            "incidents in {}; scanning every {} for growth over {} after {}; traces of {} \
             (at most {} at once)",
            args.reports_dir.display(),
            humantime::format_duration(args.scan_interval),
            rate_per_hour(args.alert_growth),
            humantime::format_duration(args.min_observation),
            humantime::format_duration(args.trace_window),
            args.max_traces,
        ),
        shown: Mutex::default(),
        oom_kills: Mutex::default(),
        sessions: session::Sessions::default(),
    });
    shared.metrics.incidents_deleted.inc_by(pruned);
    shared.refresh_store_metrics();
    crate::note(&format!(
        "agent on node {}: http://{}/ (page, metrics, healthz, reports, trace){}; {}",
        shared.node,
        args.listen,
        if shared.token.is_some() {
            ", bearer token required"
        } else {
            ""
        },
        shared.settings,
    ));

    let (kills_tx, mut kills) = mpsc::unbounded_channel();
    tokio::spawn(traces::watch_ooms(
        exe,
        kills_tx,
        shared.children.clone(),
        shared.oom_watch_up.clone(),
        shared.stopping.clone(),
        args.verbose,
    ));
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(
        listener,
        http::router(shared.clone()),
        http_stopped,
    ));

    let mut scanner = Scanner::new(args.comm.clone());
    let mut last_traced: HashMap<(u32, u64), Instant> = HashMap::new();
    let mut ooms: VecDeque<(String, String, Instant)> = VecDeque::new();
    // Processes back after an OOM kill, waiting for a free slot.
    let mut waiting: Vec<Suspect> = Vec::new();
    let mut tick = tokio::time::interval(args.scan_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let mut found = scan_once(&shared, &mut scanner, &args, &mut ooms);
                found.splice(0..0, waiting.drain(..));
                for s in found {
                    let Some(w) = scanner.get(s.pid) else { continue };
                    let key = (s.pid, w.start_ticks);
                    if last_traced.get(&key).is_some_and(|t| t.elapsed() < args.retrace_after) {
                        continue;
                    }
                    let Some(slot) = shared.slots.acquire(s.pid, false) else {
                        if s.reason == OOM_RESTART && waiting.len() < OOM_KEPT {
                            waiting.push(s);
                        }
                        continue;
                    };
                    last_traced.insert(key, Instant::now());
                    tokio::spawn(trace_window(shared.clone(), slot, s, args.trace_window, args.window_interval));
                }
                last_traced.retain(|(pid, start), _| scanner.get(*pid).is_some_and(|w| w.start_ticks == *start));
            }
            Some(kill) = kills.recv() => on_oom(&shared, kill, &mut ooms),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    crate::note("agent: stopping; running traces write their reports");
    shared.stopping.store(true, Ordering::Relaxed);
    for pid in shared.child_pids() {
        // SAFETY: kill(2) on a child of ours that has not been reaped (its
        // pid leaves the set before it is waited for).
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while shared.slots.count() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_http.send(());
    // Connections still open (a client that never finishes its request)
    // do not hold the exit up for long (the server waits 2 s at most).
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}

/// One scan: reads every process, updates the metrics, and returns what to
/// trace: processes back where an OOM kill struck, then the fastest
/// growing.
fn scan_once(
    shared: &Shared,
    scanner: &mut Scanner,
    args: &config::Agent,
    ooms: &mut VecDeque<(String, String, Instant)>,
) -> Vec<Suspect> {
    let started = Instant::now();
    let mut skip: HashSet<u32> = shared.child_pids().into_iter().collect();
    skip.insert(std::process::id());
    let traced: HashSet<u32> = shared.slots.pids().into_iter().collect();
    let result = scanner.scan(&skip, &traced);
    let m = &shared.metrics;
    m.scans.inc();
    m.scan_seconds.set(started.elapsed().as_secs_f64());
    m.processes.set(scanner.watched() as i64);
    m.untracked.set(scanner.untracked as i64);

    ooms.retain(|(_, _, t)| t.elapsed() < OOM_MEMORY);
    let mut found = Vec::new();
    for &pid in result.new.iter().chain(&result.renamed) {
        let Some(w) = scanner.get(pid) else { continue };
        let Some(home) = w.home() else { continue };
        if let Some(i) = ooms.iter().position(|(h, c, _)| *h == home && *c == w.comm) {
            let (_, _, at) = ooms.remove(i).expect("found above");
            found.push(Suspect {
                pid,
                comm: w.comm.clone(),
                cgroup: w.cgroup.clone(),
                container: w.container.clone(),
                reason: OOM_RESTART,
                detail: format!(
                    "{} came back in {home} {:.0} s after an OOM kill there",
                    w.comm,
                    at.elapsed().as_secs_f64()
                ),
                growth_per_hour: None,
            });
        }
    }
    let suspects = scanner.suspects(args.alert_growth, args.min_observation.as_secs_f64());
    m.suspects.set(suspects.len() as i64);
    for w in &suspects {
        let g = w.growth.as_ref().expect("suspects have a growth");
        if args.verbose {
            crate::note(&format!(
                "agent: pid {} ({}) anon {} growing {} ({:?}: {})",
                w.pid,
                w.comm,
                bytes(w.anon_bytes),
                rate_per_hour(g.bytes_per_hour),
                g.verdict,
                g.reason
            ));
        }
        found.push(Suspect {
            pid: w.pid,
            comm: w.comm.clone(),
            cgroup: w.cgroup.clone(),
            container: w.container.clone(),
            reason: "growth",
            detail: format!(
                "anonymous memory {} growing {} over {:.0} s ({:?}: {})",
                bytes(w.anon_bytes),
                rate_per_hour(g.bytes_per_hour),
                w.observed_secs(scanner.now()),
                g.verdict,
                g.reason
            ),
            growth_per_hour: Some(g.bytes_per_hour),
        });
    }
    let suspect_pids: HashSet<u32> = suspects.iter().map(|w| w.pid).collect();
    publish_processes(shared, scanner, &suspect_pids);
    *shared.last_scan.lock().expect("last_scan lock") = Some(Instant::now());
    found
}

/// Per-process series: the largest by anonymous memory, every suspect,
/// every traced process.
fn publish_processes(shared: &Shared, scanner: &Scanner, suspects: &HashSet<u32>) {
    let m = &shared.metrics;
    for g in [&m.rss, &m.anon, &m.traced_outstanding] {
        g.reset();
    }
    m.growth.reset();
    let mut traced = shared.traced.lock().expect("traced lock");
    traced.retain(|pid, _| scanner.get(*pid).is_some());
    let tracing: HashSet<u32> = shared.slots.pids().into_iter().collect();
    let mut all: Vec<&scan::Watched> = scanner.processes().collect();
    all.sort_by_key(|w| std::cmp::Reverse(w.anon_bytes));
    let mut shown = Vec::new();
    for (rank, w) in all.into_iter().enumerate() {
        let wanted = rank < metrics::PROCESSES_SHOWN
            || suspects.contains(&w.pid)
            || tracing.contains(&w.pid)
            || traced.contains_key(&w.pid);
        if !wanted {
            continue;
        }
        let pid = w.pid.to_string();
        let container = w.container.as_ref().map_or("", |c| c.short_id());
        let pod = w
            .container
            .as_ref()
            .and_then(|c| c.pod_uid.as_deref())
            .unwrap_or("");
        let labels = [pid.as_str(), w.comm.as_str(), container, pod];
        m.rss.with_label_values(&labels).set(w.rss_bytes as i64);
        m.anon.with_label_values(&labels).set(w.anon_bytes as i64);
        let growth = w.growth.as_ref().map_or(0.0, |g| match g.verdict {
            Verdict::Leak | Verdict::Growing => g.bytes_per_hour,
            Verdict::Plateau | Verdict::Stable => 0.0,
        });
        m.growth.with_label_values(&labels).set(growth);
        if let Some(&held) = traced.get(&w.pid) {
            m.traced_outstanding
                .with_label_values(&labels)
                .set(held as i64);
        }
        let mut series = page::Series::default();
        for (t, rss, anon) in w.series() {
            series.t.push(t);
            series.rss.push(rss);
            series.anon.push(anon);
        }
        shown.push(page::Row {
            pid: w.pid,
            comm: w.comm.clone(),
            container: container.to_string(),
            pod: pod.to_string(),
            anon_bytes: w.anon_bytes,
            rss_bytes: w.rss_bytes,
            verdict: w
                .growth
                .as_ref()
                .map_or(String::new(), |g| format!("{:?}", g.verdict).to_lowercase()),
            bytes_per_hour: w.growth.as_ref().map_or(0.0, |g| g.bytes_per_hour),
            reason: w
                .growth
                .as_ref()
                .map_or(String::new(), |g| g.reason.clone()),
            suspect: suspects.contains(&w.pid),
            traced_bytes: traced.get(&w.pid).copied(),
            series,
        });
    }
    *shared.shown.lock().expect("shown lock") = page::Shown {
        at: scanner.now(),
        rows: shown,
    };
}

fn on_oom(shared: &Shared, kill: OomKill, ooms: &mut VecDeque<(String, String, Instant)>) {
    shared.metrics.oom_kills.inc();
    crate::note(&format!("agent: {}", oom_line(&kill)));
    {
        let mut shown = shared.oom_kills.lock().expect("oom_kills lock");
        if shown.len() == OOM_SHOWN {
            shown.pop_back();
        }
        let container = kill.container.as_ref();
        shown.push_front(page::Kill {
            time: kill.time.clone(),
            pid: kill.pid,
            comm: kill.comm.clone(),
            container: container.map_or("", |c| c.short_id()).to_string(),
            pod: container
                .and_then(|c| c.pod_uid.clone())
                .unwrap_or_default(),
            cgroup: kill.cgroup.clone().unwrap_or_default(),
            anon_rss_bytes: kill.anon_rss_bytes,
            total_vm_bytes: kill.total_vm_bytes,
        });
    }
    if let Some(home) = scan::home_of(kill.cgroup.as_deref(), kill.container.as_ref()) {
        if ooms.len() == OOM_KEPT {
            ooms.pop_front();
        }
        ooms.push_back((home, kill.comm, Instant::now()));
    }
}

/// Traces a suspect for the window and turns the report into an incident
/// (returned, or why there is none).
async fn trace_window(
    shared: Arc<Shared>,
    _slot: Slot,
    s: Suspect,
    window: Duration,
    interval: Duration,
) -> Result<Incident, String> {
    let id = shared.store.new_id(s.pid, &s.comm);
    let dir = match shared.store.begin(&id) {
        Ok(dir) => dir,
        Err(e) => {
            let why = format!("cannot write incident {id}: {e:#}");
            crate::note(&format!("agent: {why}"));
            return Err(why);
        }
    };
    crate::note(&format!(
        "agent: tracing pid {} ({}) for {}: {}",
        s.pid,
        s.comm,
        humantime::format_duration(window),
        s.detail
    ));
    let started = SystemTime::now();
    let spec = traces::TraceSpec {
        pid: s.pid,
        duration: window,
        interval,
        outputs: [
            incidents::REPORT,
            incidents::FLAMEGRAPH,
            incidents::PROFILE,
            incidents::PAGE,
        ]
        .iter()
        .map(|f| dir.join(f))
        .collect(),
        format: None,
        runtime_attach: shared.runtime_attach,
    };
    let failure = traces::run(&shared.exe, &spec, &shared.children, shared.verbose).await;
    let loaded = match failure {
        None => {
            memtrace_report::load::load(&dir.join(incidents::REPORT)).map_err(|e| format!("{e:#}"))
        }
        Some(why) => Err(why),
    };
    let report = match loaded {
        Ok(r) => r,
        Err(why) => {
            crate::note(&format!("agent: trace of pid {} failed: {why}", s.pid));
            shared.count_trace(s.reason, false);
            shared.store.discard(&id);
            return Err(why);
        }
    };
    shared.count_trace(s.reason, true);
    shared
        .metrics
        .count_trace(&report, DEFAULT_MAX_LIVE, DEFAULT_MAX_STACKS);
    let target = report.targets.iter().find(|t| t.pid == s.pid);
    let outstanding = target.map_or(0, |t| t.outstanding_bytes);
    shared
        .traced
        .lock()
        .expect("traced lock")
        .insert(s.pid, outstanding);
    let top = report.stacks.iter().find(|st| st.pid == s.pid);
    let outcome = if report.oom_kills.iter().any(|k| k.pid == s.pid) {
        "OOM-killed"
    } else if target.is_some_and(|t| t.exited) {
        "target exited"
    } else if shared.stopping.load(Ordering::Relaxed) {
        "cut short: the agent stopped"
    } else {
        "window ended"
    };
    let incident = Incident {
        id: id.clone(),
        node: shared.node.clone(),
        reason: s.reason.to_string(),
        detail: s.detail,
        pid: s.pid,
        comm: s.comm,
        cgroup: s.cgroup,
        container: s.container,
        anon_growth_bytes_per_hour: s.growth_per_hour,
        started: humantime::format_rfc3339_seconds(started).to_string(),
        ended: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        outcome: outcome.to_string(),
        outstanding_bytes: outstanding,
        top_function: top.and_then(|st| st.frames.first()).map(frame_name),
        top_verdict: top.map(|st| format!("{:?}", st.verdict).to_lowercase()),
        files: Vec::new(),
        bytes: 0,
    };
    if let Err(e) = shared.store.commit(&incident) {
        crate::note(&format!("agent: {e:#}"));
        shared.store.discard(&id);
        return Err(format!("{e:#}"));
    }
    shared.metrics.incidents_written.inc();
    let deleted = shared.store.prune();
    shared.metrics.incidents_deleted.inc_by(deleted);
    shared.refresh_store_metrics();
    crate::note(&format!(
        "agent: incident {id}: pid {} ({}) {outcome}; traced stacks hold {}{}",
        incident.pid,
        incident.comm,
        bytes(outstanding),
        incident
            .top_function
            .as_deref()
            .map_or(String::new(), |f| format!(
                ", top: {f} ({})",
                incident.top_verdict.as_deref().unwrap_or("?")
            ))
    ));
    // As listed: with its files and their size.
    let listed = shared.store.list().into_iter().find(|i| i.id == id);
    Ok(listed.unwrap_or(incident))
}

/// An on-demand trace kept as an incident (`POST /trace?keep=true`, the
/// page's "Trace" action).
async fn trace_kept(
    shared: Arc<Shared>,
    slot: Slot,
    pid: u32,
    comm: String,
    duration: Duration,
) -> Result<Incident, String> {
    let cgroup = crate::discover::cgroup::read(pid);
    let container = cgroup
        .as_deref()
        .and_then(crate::discover::cgroup::container_of);
    let suspect = Suspect {
        pid,
        comm,
        cgroup,
        container,
        reason: ON_DEMAND,
        detail: format!(
            "asked for: a trace of {}",
            humantime::format_duration(duration)
        ),
        growth_per_hour: None,
    };
    let interval = on_demand_interval(duration);
    trace_window(shared, slot, suspect, duration, interval).await
}

/// The interval of an on-demand trace: about thirty points, 1 to 10 s
/// apart.
fn on_demand_interval(duration: Duration) -> Duration {
    (duration / 30).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

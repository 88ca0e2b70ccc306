//! Node targets: a Node process among the targets gets SIGUSR1, which
//! opens its inspector on loopback in its own network namespace; memtrace
//! starts V8's sampling heap profiler there and reads the profile every
//! interval. Its live sampled objects, per JavaScript stack, become stacks
//! of kind `js-heap` (frames `language: "javascript"`), beside the native
//! view its probes give. At the end sampling stops and the inspector is
//! closed again; anyone else seen connected to it meanwhile is reported.
//! A process that cannot be opened so (the signal disabled or not caught,
//! its inspector open already or its port taken, not on loopback) is said
//! once, in one line, and keeps its native view only.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::SocketAddr,
    time::{Duration, Instant},
};

use memtrace_report::{Frame, HeapDiff, Language, NodeReport, StackKind};
use serde_json::json;

use super::{
    runtime::{self, ReadSchedule},
    Tracing,
};
use crate::{
    discover::{
        node::{
            self, heapdiff,
            inspector::Inspector,
            profile,
            snapshot::{Snapshot, Summary},
            sockets, Options,
        },
        target,
    },
    symbolize::Symbolizer,
};

/// The inspector's port when nothing says otherwise.
const DEFAULT_PORT: u16 = 9229;

/// How long a Node process started since memtrace may take to install its
/// SIGUSR1 handler (Node does it early in its start); one that ran before
/// is refused at once.
const HANDLER_WAIT: Duration = Duration::from_secs(10);

/// How long an inspector may take to listen after SIGUSR1.
const OPEN_WAIT: Duration = Duration::from_secs(5);

/// The longest wait for one answer of the inspector (it answers between
/// two JavaScript tasks, or at once from an interrupt).
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// JavaScript stacks followed per process; the profile's further stacks
/// are left out (counted in `stacks_left_out`).
const MAX_STACKS: usize = 1 << 16;

pub(super) struct NodeTargets {
    by_pid: HashMap<u32, NodeTarget>,
    /// Processes looked at that are not Node.
    passed: HashSet<u32>,
    /// Inspectors may be opened (not `--no-runtime-attach`, not `--all`).
    enabled: bool,
    interval_bytes: u64,
    /// `--node-heap-diff`: the largest heap snapshotted.
    heap_diff: Option<u64>,
    verbose: bool,
    /// memtrace's own start (clock ticks since boot).
    started: u64,
}

enum State {
    /// Its SIGUSR1 handler is not installed yet (a Node just started).
    /// (`fresh`: started since memtrace, it may install it still.)
    Waiting {
        since: Instant,
        fresh: bool,
    },
    /// SIGUSR1 sent: its inspector should start listening on `expected`.
    Signalled {
        at: Instant,
        port: u16,
        before: Vec<SocketAddr>,
    },
    Reading(Box<Inspector>),
    /// Not read (`reason`): native view only.
    Refused,
    /// The session ended early.
    Lost,
    /// Closed by memtrace at the end.
    Done,
}

struct NodeTarget {
    state: State,
    reason: Option<String>,
    address: Option<SocketAddr>,
    reads: u64,
    reads_failed: u64,
    read_ms: f64,
    /// Each read makes V8 collect all garbage first (a full, stopping
    /// collection: the profile holds live objects only).
    schedule: ReadSchedule,
    closed: bool,
    others: BTreeSet<SocketAddr>,
    /// Per JavaScript stack (its frames' tokens): what it held at the
    /// last read, and what was seen rise and fall since sampling began.
    seen: HashMap<Vec<u64>, runtime::Seen>,
    stacks_left_out: u64,
    /// Script ids' URLs, from the profile's frames (heap snapshots give
    /// ids only).
    scripts: HashMap<u32, String>,
    /// `--node-heap-diff`: the first snapshot's summary, and the diff.
    before: Option<Summary>,
    diff: Option<HeapDiff>,
}

impl NodeTargets {
    pub(super) fn new(
        enabled: bool,
        interval_bytes: u64,
        heap_diff: Option<u64>,
        verbose: bool,
    ) -> NodeTargets {
        NodeTargets {
            by_pid: HashMap::new(),
            passed: HashSet::new(),
            enabled,
            interval_bytes,
            heap_diff,
            verbose,
            started: target::start_time(std::process::id()).unwrap_or(0),
        }
    }

    /// Looks at `pid` if it was not yet (called whenever its mappings are
    /// read again): a Node process is opened at the next sample, or
    /// refused in one line.
    pub(super) fn consider(&mut self, pid: u32) {
        if !self.enabled || self.by_pid.contains_key(&pid) || !self.passed.insert(pid) {
            return;
        }
        if !node::is_node(pid) {
            return;
        }
        self.passed.remove(&pid);
        let options = Options::of(pid);
        let refusal = if options.sigusr1_disabled {
            Some("it was started with --disable-sigusr1".to_string())
        } else if options.inspect {
            Some("its inspector is open already (--inspect): memtrace does not share it".into())
        } else if !options.loopback() {
            Some(format!(
                "its inspector would listen on {}, not on loopback",
                options.host.as_deref().unwrap_or("?")
            ))
        } else {
            None
        };
        let mut t = NodeTarget {
            state: State::Waiting {
                since: Instant::now(),
                fresh: target::start_time(pid).is_some_and(|t| t >= self.started),
            },
            reason: None,
            address: None,
            reads: 0,
            reads_failed: 0,
            read_ms: 0.0,
            schedule: ReadSchedule::new(),
            closed: false,
            others: BTreeSet::new(),
            seen: HashMap::new(),
            stacks_left_out: 0,
            scripts: HashMap::new(),
            before: None,
            diff: None,
        };
        if let Some(reason) = refusal {
            refuse(pid, &mut t, reason);
        }
        self.by_pid.insert(pid, t);
    }

    pub(super) fn forget(&mut self, pid: u32) {
        self.by_pid.remove(&pid);
        self.passed.remove(&pid);
    }

    /// Moves `pid` on: signalled once its handler is in, connected once
    /// its inspector listens. True when its profile is to be read now.
    fn advance(&mut self, pid: u32) -> bool {
        let interval = self.interval_bytes;
        let heap_diff = self.heap_diff;
        let verbose = self.verbose;
        let Some(t) = self.by_pid.get_mut(&pid) else {
            return false;
        };
        match &t.state {
            State::Waiting { since, fresh } => {
                match node::catches_sigusr1(pid) {
                    Ok(true) => {}
                    Ok(false) if *fresh && since.elapsed() < HANDLER_WAIT => return false,
                    Ok(false) => {
                        refuse(pid, t, "it does not catch SIGUSR1".into());
                        return false;
                    }
                    Err(_) => return false,
                }
                let port = Options::of(pid).port.unwrap_or(DEFAULT_PORT);
                let before = sockets::listening(pid);
                if port != 0 && before.iter().any(|a| a.port() == port) {
                    refuse(
                        pid,
                        t,
                        format!(
                            "it listens on port {port} already (its inspector, open): memtrace \
                             does not share it"
                        ),
                    );
                    return false;
                }
                if port != 0 && sockets::port_taken(pid, port) {
                    refuse(
                        pid,
                        t,
                        format!("its inspector's port {port} is taken in its network namespace"),
                    );
                    return false;
                }
                if let Err(e) = node::signal_open(pid) {
                    refuse(pid, t, format!("{e:#}"));
                    return false;
                }
                t.state = State::Signalled {
                    at: Instant::now(),
                    port,
                    before,
                };
                false
            }
            State::Signalled { at, port, before } => {
                let port = *port;
                // (Port 0: one the kernel picks.)
                let opened = sockets::listening(pid)
                    .into_iter()
                    .find(|a| (port == 0 || a.port() == port) && !before.contains(a));
                let Some(addr) = opened else {
                    if at.elapsed() >= OPEN_WAIT {
                        let why = match port != 0 && sockets::port_taken(pid, port) {
                            true => format!("port {port} was taken in its network namespace"),
                            false => "nothing listened".into(),
                        };
                        refuse(
                            pid,
                            t,
                            format!(
                                "its inspector did not open within {} s of SIGUSR1 ({why})",
                                OPEN_WAIT.as_secs()
                            ),
                        );
                    }
                    return false;
                };
                t.address = Some(addr);
                if !addr.ip().is_loopback() {
                    // Opened where it should not be: closed at once.
                    if let Ok(i) = Inspector::open(pid, addr, ANSWER_WAIT) {
                        let _ = i.close_inspector(ANSWER_WAIT);
                    }
                    refuse(
                        pid,
                        t,
                        format!("its inspector opened on {addr}, not on loopback"),
                    );
                    return false;
                }
                let opened = Inspector::open(pid, addr, ANSWER_WAIT).and_then(|mut i| {
                    i.call(
                        "HeapProfiler.startSampling",
                        json!({ "samplingInterval": interval }),
                        ANSWER_WAIT,
                    )?;
                    Ok(i)
                });
                match opened {
                    Ok(i) => {
                        let mut i = Box::new(i);
                        // Before the line that says it is open: what comes
                        // after it is in the second snapshot only.
                        if let Some(limit) = heap_diff {
                            first_snapshot(pid, t, &mut i, limit);
                        }
                        crate::note(&format!(
                            "pid {pid}: Node's inspector opened at {addr} (SIGUSR1); V8 samples \
                             its JavaScript heap every {}{}{}; closed again at the end",
                            memtrace_report::units::bytes(interval),
                            match t.diff.as_ref().and_then(|d| d.pause_ms.first()) {
                                Some(ms) => format!(", a heap snapshot taken ({ms:.0} ms)"),
                                None => String::new(),
                            },
                            match verbose {
                                true => format!(" (session from {})", i.local),
                                false => String::new(),
                            }
                        ));
                        t.state = State::Reading(i);
                        true
                    }
                    Err(e) => {
                        refuse(pid, t, format!("its inspector at {addr}: {e:#}"));
                        false
                    }
                }
            }
            State::Reading(_) => t.schedule.due(),
            State::Refused | State::Lost | State::Done => false,
        }
    }

    /// The processes whose profile this sample did not read (too soon
    /// after the last read): their `js-heap` stacks take no point now.
    pub(super) fn unread(&mut self) -> HashSet<u32> {
        runtime::unread(
            self.by_pid
                .iter_mut()
                .map(|(&pid, t)| (pid, &mut t.schedule)),
        )
    }

    /// The next sample reads every open profile (the run's final sample).
    pub(super) fn read_all_next(&mut self) {
        runtime::read_all_next(self.by_pid.values_mut().map(|t| &mut t.schedule));
    }

    /// Stops sampling in every process read, closes their inspectors and
    /// checks that nothing listens where they did. Idempotent.
    pub(super) fn finish(&mut self) {
        for (&pid, t) in &mut self.by_pid {
            let State::Reading(_) = t.state else {
                continue;
            };
            let State::Reading(mut i) = std::mem::replace(&mut t.state, State::Done) else {
                unreachable!()
            };
            note_others(pid, &mut t.others, i.addr, i.local);
            if let Some(limit) = self.heap_diff {
                last_snapshot(pid, t, &mut i, limit);
            }
            let _ = i.call("HeapProfiler.stopSampling", json!({}), ANSWER_WAIT);
            if t.diff.is_some() {
                // V8 keeps the names and ids of what it snapshotted (tens
                // of MiB of native memory) until its heap profiler is
                // disabled.
                let _ = i.call("HeapProfiler.disable", json!({}), ANSWER_WAIT);
            }
            let addr = i.addr;
            if let Err(e) = i.close_inspector(ANSWER_WAIT) {
                crate::note(&format!(
                    "pid {pid}: closing Node's inspector at {addr}: {e:#}"
                ));
            }
            // The server stops on Node's own thread: listening ends within
            // moments of the session's end.
            let deadline = Instant::now() + ANSWER_WAIT;
            t.closed = loop {
                if !sockets::listening(pid).contains(&addr) {
                    break true;
                }
                if Instant::now() >= deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            if !t.closed && target::is_alive(pid) {
                crate::note(&format!(
                    "warning: pid {pid}: Node's inspector still listens at {addr} after memtrace \
                     closed it"
                ));
            }
        }
    }

    /// What was read from `pid`'s inspector, for its report.
    pub(super) fn report(&self, pid: u32) -> Option<NodeReport> {
        let t = self.by_pid.get(&pid)?;
        Some(NodeReport {
            inspector: match t.state {
                State::Refused => "refused",
                State::Lost => "lost",
                State::Waiting { .. } | State::Signalled { .. } => "opening",
                State::Reading(_) | State::Done => "read",
            }
            .into(),
            reason: t.reason.clone(),
            address: t.address.map(|a| a.to_string()),
            sampling_interval_bytes: self.interval_bytes,
            reads: t.reads,
            reads_failed: t.reads_failed,
            read_ms: t.read_ms,
            stacks_left_out: t.stacks_left_out,
            closed: t.closed,
            other_connections: t.others.iter().map(|a| a.to_string()).collect(),
            heap_diff: t.diff.clone(),
        })
    }
}

impl Drop for NodeTargets {
    /// An inspector memtrace opened is closed whatever ends the run.
    fn drop(&mut self) {
        self.finish();
    }
}

/// The longest a heap snapshot may take to stream.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(120);

/// A snapshot of `i`'s heap, if it holds at most `limit` bytes: parsed,
/// with how long it took (ms) and its text's size.
fn snapshot(i: &mut Inspector, limit: u64) -> Result<(Snapshot, f64, u64), (bool, String)> {
    let usage = i
        .call("Runtime.getHeapUsage", json!({}), ANSWER_WAIT)
        .map_err(|e| (false, format!("{e:#}")))?;
    let used = usage["usedSize"].as_f64().unwrap_or(0.0) as u64;
    if used > limit {
        return Err((
            true,
            format!(
                "its JavaScript heap holds {}, more than --node-heap-diff-limit {} (a snapshot \
                 stops the process while V8 writes it)",
                memtrace_report::units::bytes(used),
                memtrace_report::units::bytes(limit)
            ),
        ));
    }
    let started = Instant::now();
    let params = json!({"reportProgress": false, "captureNumericValue": false});
    let mut chunks = i
        .stream_chunks(
            "HeapProfiler.takeHeapSnapshot",
            params,
            started + SNAPSHOT_WAIT,
        )
        .map_err(|e| (false, format!("{e:#}")))?;
    let parsed = Snapshot::read(&mut chunks);
    let bytes = chunks.bytes;
    let drained = chunks.drain();
    let took = started.elapsed().as_secs_f64() * 1e3;
    let snapshot = parsed.map_err(|e| (false, format!("{e:#}")))?;
    drained.map_err(|e| (false, format!("{e:#}")))?;
    Ok((snapshot, took, bytes))
}

/// The heap diff's start: a snapshot summarized.
fn first_snapshot(pid: u32, t: &mut NodeTarget, i: &mut Inspector, limit: u64) {
    let mut diff = HeapDiff::default();
    match snapshot(i, limit) {
        Ok((s, ms, bytes)) => {
            let graph = s.graph(&s.retainers());
            t.before = Some(s.summary(&graph));
            diff.state = "compared".into();
            diff.pause_ms.push(ms);
            diff.snapshot_bytes.push(bytes);
        }
        Err((refused, reason)) => {
            crate::note(&format!("pid {pid}: no heap diff: {reason}"));
            diff.state = if refused { "refused" } else { "failed" }.into();
            diff.reason = Some(reason);
        }
    }
    t.diff = Some(diff);
}

/// The heap diff's end: a second snapshot, compared with the first.
fn last_snapshot(pid: u32, t: &mut NodeTarget, i: &mut Inspector, limit: u64) {
    let (Some(before), Some(diff)) = (t.before.take(), t.diff.as_mut()) else {
        return;
    };
    if !target::is_alive(pid) {
        diff.state = "refused".into();
        diff.reason = Some("the process ended before the second snapshot".into());
        return;
    }
    match snapshot(i, limit) {
        Ok((s, ms, bytes)) => {
            let retainers = s.retainers();
            let graph = s.graph(&retainers);
            let mut compared = heapdiff::compare(&before, &s, &graph, &retainers, &t.scripts);
            compared.pause_ms = std::mem::take(&mut diff.pause_ms);
            compared.pause_ms.push(ms);
            compared.snapshot_bytes = std::mem::take(&mut diff.snapshot_bytes);
            compared.snapshot_bytes.push(bytes);
            *diff = compared;
        }
        Err((refused, reason)) => {
            crate::note(&format!("pid {pid}: no heap diff: {reason}"));
            diff.state = if refused { "refused" } else { "failed" }.into();
            diff.reason = Some(reason);
        }
    }
}

fn refuse(pid: u32, t: &mut NodeTarget, reason: String) {
    crate::note(&format!(
        "pid {pid}: Node's JavaScript heap not read: {reason}; its native memory only"
    ));
    t.reason = Some(reason);
    t.state = State::Refused;
}

/// Says (once each) any peer of the inspector at `addr` that is not this
/// session's end (`local`).
fn note_others(pid: u32, others: &mut BTreeSet<SocketAddr>, addr: SocketAddr, local: SocketAddr) {
    for peer in sockets::peers_of(pid, addr.port()) {
        if peer != local && others.insert(peer) {
            crate::note(&format!(
                "warning: pid {pid}: something else ({peer}) connected to its inspector at \
                 {addr} while memtrace held it"
            ));
        }
    }
}

/// A protocol frame as a report frame (1-based line and column).
fn frame_of(f: &profile::CallFrame) -> Frame {
    let name = match f.function_name.as_str() {
        "" => "(anonymous)".to_string(),
        n => n.to_string(),
    };
    let file = f.url.strip_prefix("file://").unwrap_or(&f.url);
    Frame {
        function: Some(name),
        file: (!file.is_empty()).then(|| file.to_string()),
        line: u32::try_from(f.line_number + 1).ok().filter(|&l| l > 0),
        column: u32::try_from(f.column_number + 1).ok().filter(|&c| c > 0),
        language: Some(Language::Javascript),
        ..Frame::default()
    }
}

/// A stack's frames as tokens, without Node's own frames outside the
/// program's outermost one (`node:` scripts: the event loop, the HTTP
/// parser, `emit`): V8 inlines those into each other differently as it
/// optimizes, and they would split one allocation site into several
/// stacks whose shares come and go. A stack with no frame of the program's
/// is kept whole.
fn stack_tokens(symbolizer: &mut Symbolizer, frames: &[profile::CallFrame]) -> Vec<u64> {
    let outermost = frames
        .iter()
        .rposition(|f| !f.url.is_empty() && !f.url.starts_with("node:"))
        .map_or(frames.len(), |i| i + 1);
    frames[..outermost]
        .iter()
        .map(|f| symbolizer.frame_token(frame_of(f)))
        .collect()
}

impl Tracing {
    /// Opens the inspectors of Node targets that are ready, and reads the
    /// profile of each one open into its `js-heap` stacks.
    pub(super) fn sample_node(&mut self) {
        let pids: Vec<u32> = self.m.node.by_pid.keys().copied().collect();
        for pid in pids {
            if self.life.by_pid.get(&pid).is_none_or(|t| t.exited) {
                continue;
            }
            if self.m.node.advance(pid) {
                self.read_js_heap(pid);
            }
        }
    }

    fn read_js_heap(&mut self, pid: u32) {
        let interval = self.m.node.interval_bytes;
        let Some(t) = self.m.node.by_pid.get_mut(&pid) else {
            return;
        };
        let State::Reading(i) = &mut t.state else {
            return;
        };
        let started = Instant::now();
        let answer = i.call("HeapProfiler.getSamplingProfile", json!({}), ANSWER_WAIT);
        let stacks = match answer.and_then(|a| profile::stacks(a, interval)) {
            Ok(stacks) => stacks,
            Err(e) => {
                t.reads_failed += 1;
                // A session the process ended (it closed its inspector, or
                // is exiting) is not opened again.
                if !i.is_open() {
                    crate::note(&format!("pid {pid}: Node's inspector session ended: {e:#}"));
                    t.reason = Some(format!("{e:#}"));
                    t.state = State::Lost;
                }
                return;
            }
        };
        t.reads += 1;
        let took = started.elapsed();
        t.read_ms = took.as_secs_f64() * 1e3;
        t.schedule.paused(took);
        t.schedule.read();
        let (addr, local) = (i.addr, i.local);
        note_others(pid, &mut t.others, addr, local);
        // Per stack: live bytes, samples and the variance of the bytes.
        let mut now: HashMap<Vec<u64>, (f64, f64, f64)> = HashMap::new();
        for f in stacks.iter().flat_map(|s| &s.frames) {
            if let Ok(id) = f.script_id.parse::<u32>() {
                if !f.url.is_empty() && !t.scripts.contains_key(&id) {
                    t.scripts.insert(id, f.url.clone());
                }
            }
        }
        for s in &stacks {
            let tokens = stack_tokens(&mut self.m.symbolizer, &s.frames);
            if !t.seen.contains_key(&tokens) && t.seen.len() >= MAX_STACKS {
                t.stacks_left_out += 1;
                continue;
            }
            let e = now.entry(tokens).or_default();
            e.0 += s.bytes;
            e.1 += s.samples;
            e.2 += s.variance;
        }
        for frames in t.seen.keys() {
            now.entry(frames.clone()).or_default();
        }
        let updates: Vec<_> = now
            .into_iter()
            .map(|(frames, (bytes, samples, variance))| {
                let seen = t.seen.entry(frames.clone()).or_default();
                runtime::rise_and_fall(seen, bytes.round() as u64, samples as u64);
                (frames, seen.totals, variance)
            })
            .collect();
        for (frames, totals, variance) in updates {
            // Sampling began with memtrace: every stack starts from zero.
            self.update_runtime_stack(pid, StackKind::JsHeap, frames, totals, variance);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_one_based_and_named() {
        let f = frame_of(&profile::CallFrame {
            function_name: String::new(),
            url: "file:///srv/app/server.js".into(),
            script_id: "71".into(),
            line_number: 11,
            column_number: 4,
        });
        assert_eq!(f.function.as_deref(), Some("(anonymous)"));
        assert_eq!(f.file.as_deref(), Some("/srv/app/server.js"));
        assert_eq!((f.line, f.column), (Some(12), Some(5)));
        let native = frame_of(&profile::CallFrame {
            function_name: "(V8 API)".into(),
            url: String::new(),
            script_id: "0".into(),
            line_number: -1,
            column_number: -1,
        });
        assert_eq!(
            (native.file, native.line, native.column),
            (None, None, None)
        );
    }
}

//! The agent's tracing, done by child memtrace processes: a trace window is
//! `memtrace --pid PID --duration W -o ...` (exactly what an engineer would
//! run by hand, so an incident is that report; a trace that fails cannot
//! take the agent down, and its memory and probes go when it exits), and
//! the OOM watch is `memtrace --oom-only --format json`, restarted if it
//! dies. Children's pids are kept so the scan skips them and shutdown can
//! stop them (SIGTERM: they write their reports).

use std::{
    collections::{HashSet, VecDeque},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
    sync::mpsc,
};

use memtrace_report::OomKill;

/// Lines of a child's stderr kept to explain a failure.
const STDERR_LINES: usize = 8;

/// Pids of running children.
pub(super) type Children = Arc<Mutex<HashSet<u32>>>;

/// One trace to run.
pub(super) struct TraceSpec {
    pub pid: u32,
    pub duration: Duration,
    pub interval: Duration,
    /// Files to write (each in the format its extension names)...
    pub outputs: Vec<PathBuf>,
    /// ...or in this format.
    pub format: Option<&'static str>,
    /// The trace may open a Node process's inspector (the agent's
    /// `--runtime-attach`); else it runs with `--no-runtime-attach`.
    pub runtime_attach: bool,
}

/// How a trace ended: None when the child exited 0 (its report is
/// written), else its last error line.
pub(super) type Failure = Option<String>;

/// What the agent's children are called: their argv[0], and (by
/// [`name_after_argv0`]) their comm.
pub(super) const CHILD_NAME: &str = "memtrace";

/// A child memtrace: it gets SIGTERM if the agent dies (even by SIGKILL),
/// so it writes what it has and detaches instead of tracing on orphaned.
/// It runs `exe` (`/proc/self/exe`) as `memtrace`, the name `ps` shows.
fn child(exe: &Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg0(CHILD_NAME);
    let parent = std::process::id();
    // SAFETY: prctl and getppid are async-signal-safe and touch nothing of
    // the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The agent died between fork and prctl: no signal will come.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("the agent is gone"));
            }
            Ok(())
        });
    }
    cmd.kill_on_drop(true);
    cmd
}

/// Names this process after its argv[0] when the kernel named it
/// otherwise: the agent's children are exec'd through `/proc/self/exe`, which
/// makes their comm `exe` (`ps` would show `exe /proc/self/exe --pid ...`);
/// their argv[0] is [`CHILD_NAME`]. Called first thing by every memtrace.
pub fn name_after_argv0() {
    let Some(arg0) = std::env::args_os().next() else {
        return;
    };
    let Some(name) = Path::new(&arg0).file_name() else {
        return;
    };
    // The kernel keeps 15 bytes of a name.
    let name = &name.as_encoded_bytes()[..name.len().min(15)];
    let comm = std::fs::read("/proc/self/comm").unwrap_or_default();
    if name.is_empty() || comm.strip_suffix(b"\n") == Some(name) {
        return;
    }
    let Ok(name) = std::ffi::CString::new(name) else {
        return;
    };
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of ours.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

/// A child's pid in [`Children`] while it lives; removed when dropped, also
/// when the future that awaits the child is dropped (a client that hung up).
struct Registered<'a> {
    children: &'a Children,
    pid: Option<u32>,
}

impl<'a> Registered<'a> {
    fn new(children: &'a Children, pid: Option<u32>) -> Registered<'a> {
        if let Some(p) = pid {
            children.lock().expect("children lock").insert(p);
        }
        Registered { children, pid }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.pid {
            self.children.lock().expect("children lock").remove(&p);
        }
    }
}

/// Runs one trace to its end.
pub(super) async fn run(
    exe: &Path,
    spec: &TraceSpec,
    children: &Children,
    verbose: bool,
) -> Failure {
    let mut cmd = child(exe);
    cmd.arg("--pid")
        .arg(spec.pid.to_string())
        .arg("--duration")
        .arg(secs_arg(spec.duration))
        .arg("--interval")
        .arg(secs_arg(spec.interval))
        .arg("--no-live");
    if !spec.runtime_attach {
        cmd.arg("--no-runtime-attach");
    }
    if let Some(format) = spec.format {
        cmd.arg("--format").arg(format);
    }
    for path in &spec.outputs {
        cmd.arg("-o").arg(path);
    }
    if verbose {
        crate::note(&format!("agent: running {cmd:?}"));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut running = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Some(format!("cannot start {}: {e}", exe.display())),
    };
    let _registered = Registered::new(children, running.id());
    let mut tail = VecDeque::new();
    if let Some(stderr) = running.stderr.take() {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if verbose {
                crate::note(&format!("agent: trace of {}: {line}", spec.pid));
            }
            if tail.len() == STDERR_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
    let status = running.wait().await;
    if status.as_ref().is_ok_and(|s| s.success()) {
        return None;
    }
    let last = tail
        .iter()
        .rev()
        .find(|l| l.contains("error"))
        .or(tail.back());
    Some(last.map_or_else(
        || format!("memtrace ended with {status:?}"),
        |l| l.trim_start_matches("memtrace: ").to_string(),
    ))
}

/// A duration in memtrace's syntax (milliseconds).
fn secs_arg(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// Runs `memtrace --oom-only --format json` until `stopping`, sending each
/// kill it reports; restarts it (after 1 s, doubling to a minute while it
/// keeps failing) when it exits. `up` says whether it runs. Its stderr is
/// passed on (its start-up line only with `verbose`).
pub(super) async fn watch_ooms(
    exe: PathBuf,
    kills: mpsc::UnboundedSender<OomKill>,
    children: Children,
    up: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    verbose: bool,
) {
    let mut backoff = Duration::from_secs(1);
    while !stopping.load(Ordering::Relaxed) {
        let mut cmd = child(&exe);
        cmd.args(["--oom-only", "--format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = tokio::time::Instant::now();
        match cmd.spawn() {
            Ok(mut running) => {
                let _registered = Registered::new(&children, running.id());
                up.store(true, Ordering::Relaxed);
                if let Some(stderr) = running.stderr.take() {
                    tokio::spawn(async move {
                        let mut lines = BufReader::new(stderr).lines();
                        while let Ok(Some(line)) = lines.next_line().await {
                            if verbose || !line.contains("watching for OOM kills") {
                                crate::note(&format!("agent: OOM watch: {line}"));
                            }
                        }
                    });
                }
                if let Some(stdout) = running.stdout.take() {
                    let mut lines = BufReader::new(stdout).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        match serde_json::from_str::<OomKill>(&line) {
                            Ok(kill) => {
                                if kills.send(kill).is_err() {
                                    return;
                                }
                            }
                            Err(e) => crate::note(&format!("agent: OOM watch said {line:?}: {e}")),
                        }
                    }
                }
                let status = running.wait().await;
                up.store(false, Ordering::Relaxed);
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                let how = match status {
                    Ok(s) => s.to_string(),
                    Err(e) => e.to_string(),
                };
                crate::note(&format!(
                    "agent: the OOM watch ended ({how}); restarting it"
                ));
            }
            Err(e) => crate::note(&format!("agent: cannot start the OOM watch: {e}")),
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

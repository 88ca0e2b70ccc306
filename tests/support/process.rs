//! Running memtrace and the workloads: output capture on reader threads,
//! deadlines on every wait, and cleanup of everything a test started.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::{memtrace_bin, Report, TOP};

/// Options given to every JSON run by [`run_memtrace_cmd`]: JSON output,
/// enough `--top` to see every stack of the small workloads, and a 1 s
/// sampling interval.
pub const JSON_ARGS: &[&str] = &["--format", "json", "--top", "100", "--interval", "1s"];

/// [`JSON_ARGS`], then `extra`: the options of a JSON run sampled every
/// second (e.g. `json_args_with(&["--duration", "3s"])` for `--pid`).
pub fn json_args_with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args: Vec<&'a str> = JSON_ARGS.to_vec();
    args.extend_from_slice(extra);
    args
}

/// `JSON_ARGS... extra... -- cmd...`: the arguments of a JSON run of a
/// command.
pub fn json_cmd_args<E: AsRef<OsStr>, S: AsRef<OsStr>>(extra: &[E], cmd: &[S]) -> Vec<OsString> {
    let mut args: Vec<OsString> = JSON_ARGS.iter().map(OsString::from).collect();
    args.extend(extra.iter().map(|a| a.as_ref().to_os_string()));
    args.push("--".into());
    args.extend(cmd.iter().map(|a| a.as_ref().to_os_string()));
    args
}

/// How long memtrace may take to load and attach its programs (several
/// instances start at once on a 2-CPU machine).
pub const TRACING_TIMEOUT: Duration = Duration::from_secs(60);

/// Deadline for a whole `-- CMD` run of a short workload.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(90);

const STDOUT_EXCERPT: usize = 6000;

/// Collects everything a child writes to one pipe, on its own thread,
/// optionally forwarding each line to a channel as it arrives.
struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
    handle: Option<JoinHandle<()>>,
}

impl Collector {
    fn start<R: Read + Send + 'static>(reader: R, lines: Option<Sender<String>>) -> Collector {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let handle = thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        sink.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend_from_slice(&line);
                        if let Some(tx) = &lines {
                            let text = String::from_utf8_lossy(&line);
                            let _ = tx.send(text.trim_end_matches(['\n', '\r']).to_string());
                        }
                    }
                }
            }
        });
        Collector {
            buf,
            handle: Some(handle),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Waits up to `timeout` for end of file; false if the pipe is still
    /// held open (by a process that outlived the one we started).
    fn finish(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if let Some(handle) = &self.handle {
            while !handle.is_finished() {
                if Instant::now() >= deadline {
                    return false;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        true
    }
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn command_line(program: &Path, args: &[OsString]) -> String {
    std::iter::once(program.as_os_str())
        .chain(args.iter().map(|a| a.as_os_str()))
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe_status(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{status}"),
    }
}

fn excerpt(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}\n... ({} more bytes not shown)",
        &text[..end],
        text.len() - end
    )
}

/// Live (non-zombie) processes in process group `pgid`, as "pid (comm)".
fn live_group_members(pgid: i32) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut members = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...; comm may contain spaces or ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        if rest.len() >= 3 && rest[0] != "Z" && rest[2].parse::<i32>() == Ok(pgid) {
            members.push(format!("{pid} ({comm})"));
        }
    }
    members
}

/// Sends `sig` to process `pid`; panics if it cannot.
#[track_caller]
pub fn send_signal(pid: u32, sig: i32) {
    let pid = i32::try_from(pid).expect("pid fits in i32");
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}) failed: {}",
        std::io::Error::last_os_error()
    );
}

/// Sends `sig` to process group `pgid`, ignoring errors.
fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// What a finished memtrace run produced.
#[derive(Debug)]
pub struct RunOutput {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// Harness-detected problems that are failures of the run: processes of
    /// memtrace's process group still alive after it exited (a `-- CMD`
    /// child not reaped or not killed), or output pipes held open by them.
    pub problems: Vec<String>,
}

impl RunOutput {
    /// Multi-line description for failure messages: the command, how it
    /// ended, stderr in full and the start of stdout.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "command: {}", self.command);
        let _ = writeln!(
            s,
            "status: {} after {:.2}s",
            describe_status(&self.status),
            self.elapsed.as_secs_f64()
        );
        for p in &self.problems {
            let _ = writeln!(s, "problem: {p}");
        }
        let _ = writeln!(s, "--- stderr ---\n{}", self.stderr.trim_end());
        let _ = writeln!(
            s,
            "--- stdout ---\n{}",
            excerpt(self.stdout.trim_end(), STDOUT_EXCERPT)
        );
        s
    }

    /// Asserts exit code 0 and no harness-detected problems.
    #[track_caller]
    pub fn assert_success(&self) {
        assert!(
            self.status.success() && self.problems.is_empty(),
            "memtrace did not succeed:\n{}",
            self.describe()
        );
    }

    /// Asserts the run failed with `code` (any non-zero if None), wrote
    /// nothing on stdout and exactly one stderr line, starting
    /// `memtrace: error:` and containing every string of `needles` (no
    /// usage dump); returns that line.
    #[track_caller]
    pub fn one_line_error(&self, code: Option<i32>, needles: &[&str]) -> String {
        let code_ok = match code {
            Some(c) => self.status.code() == Some(c),
            None => matches!(self.status.code(), Some(c) if c != 0),
        };
        assert!(
            code_ok,
            "exit code should be {}\n{}",
            code.map_or("non-zero".to_string(), |c| c.to_string()),
            self.describe()
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(
            lines.len() == 1
                && lines[0].starts_with("memtrace: error:")
                && needles.iter().all(|n| lines[0].contains(n)),
            "stderr should be exactly one line starting `memtrace: error:` and containing \
             {needles:?}\n{}",
            self.describe()
        );
        assert!(
            self.stdout.is_empty(),
            "nothing should be written to stdout\n{}",
            self.describe()
        );
        lines[0].to_string()
    }

    /// Reads stdout as a JSON report ([`Report::parse`]); panics with the run's
    /// description if it is not one.
    #[track_caller]
    pub fn report(&self) -> Report {
        self.report_from(&self.stdout)
    }

    /// Like [`RunOutput::report`] for a report written elsewhere (--output).
    #[track_caller]
    pub fn report_from(&self, text: &str) -> Report {
        match Report::parse(text, &self.command) {
            Ok(report) => report,
            Err(e) => panic!(
                "memtrace's output is not a valid JSON report: {e}\n--- report text ---\n{}\n{}",
                excerpt(text, STDOUT_EXCERPT),
                self.describe()
            ),
        }
    }
}

/// How [`Running::spawn_with`] starts a process, beyond program and args.
#[derive(Default)]
struct SpawnOptions {
    /// Added to (or overriding) the inherited environment.
    env: Vec<(OsString, OsString)>,
    /// Give the process a stdout pipe whose read end is closed at once
    /// (nothing is captured from stdout).
    close_stdout: bool,
    /// Start from an empty environment: `env` is all of it.
    clear_env: bool,
    /// The working directory (else the test's).
    cwd: Option<PathBuf>,
}

/// A process started by a test in its own process group, with stdout and
/// stderr captured.
struct Running {
    child: Option<Child>,
    pgid: i32,
    command: String,
    stdout: Collector,
    stderr: Collector,
    started: Instant,
}

impl Running {
    fn spawn(
        program: &Path,
        args: &[OsString],
        stdout_lines: Option<Sender<String>>,
        stderr_lines: Option<Sender<String>>,
    ) -> Running {
        Running::spawn_with(
            program,
            args,
            &SpawnOptions::default(),
            stdout_lines,
            stderr_lines,
        )
    }

    fn spawn_with(
        program: &Path,
        args: &[OsString],
        options: &SpawnOptions,
        stdout_lines: Option<Sender<String>>,
        stderr_lines: Option<Sender<String>>,
    ) -> Running {
        let mut command = command_line(program, args);
        if !options.env.is_empty() {
            let env: Vec<String> = options
                .env
                .iter()
                .map(|(k, v)| {
                    let mut kv = k.clone();
                    kv.push("=");
                    kv.push(v);
                    quote(&kv)
                })
                .collect();
            command = format!("{} {command}", env.join(" "));
        }
        if options.clear_env {
            command = format!("env -i {command}");
        }
        let mut child = Command::new(program);
        if options.clear_env {
            child.env_clear();
        }
        if let Some(dir) = &options.cwd {
            command = format!("cd {} && {command}", quote(dir.as_os_str()));
            child.current_dir(dir);
        }
        let mut child = child
            .args(args)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
        let child_stdout = child.stdout.take().expect("piped stdout");
        let stdout = if options.close_stdout {
            // The read end is closed right after the spawn: the child's
            // writes to stdout fail with EPIPE (or raise SIGPIPE).
            drop(child_stdout);
            command.push_str(" >&- (stdout: a pipe whose read end is closed)");
            Collector::start(std::io::empty(), stdout_lines)
        } else {
            Collector::start(child_stdout, stdout_lines)
        };
        let stderr = Collector::start(child.stderr.take().expect("piped stderr"), stderr_lines);
        let pgid = i32::try_from(child.id()).expect("pid fits in i32");
        Running {
            child: Some(child),
            pgid,
            command,
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Exit status if the process has exited (and was reaped now).
    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn snapshot(&self) -> String {
        format!(
            "command: {}\n--- stderr so far ---\n{}\n--- stdout so far ---\n{}",
            self.command,
            self.stderr.text().trim_end(),
            excerpt(self.stdout.text().trim_end(), STDOUT_EXCERPT)
        )
    }

    /// Waits for exit. On timeout sends SIGINT (memtrace's Ctrl-C), then
    /// SIGKILL to the whole group, and panics with everything captured.
    fn wait(mut self, timeout: Duration) -> RunOutput {
        let deadline = self.started + timeout;
        let status = loop {
            if let Some(status) = self.try_wait() {
                break status;
            }
            if Instant::now() >= deadline {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe {
                    libc::kill(self.pgid, libc::SIGINT);
                }
                let grace = Instant::now() + Duration::from_secs(5);
                let status = loop {
                    if let Some(status) = self.try_wait() {
                        break Some(status);
                    }
                    if Instant::now() >= grace {
                        break None;
                    }
                    thread::sleep(Duration::from_millis(20));
                };
                signal_group(self.pgid, libc::SIGKILL);
                let status = status.or_else(|| self.child.as_mut()?.wait().ok());
                self.child = None;
                self.stdout.finish(Duration::from_secs(2));
                self.stderr.finish(Duration::from_secs(2));
                panic!(
                    "`{}` did not finish within {timeout:?} (then: SIGINT, {}, SIGKILL to its \
                     process group)\n{}",
                    self.command,
                    status.map_or("still running".to_string(), |s| describe_status(&s)),
                    self.snapshot()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let elapsed = self.started.elapsed();
        self.child = None;

        let mut problems = Vec::new();
        // The group may briefly contain an exiting CMD child; give it time.
        let grace = Instant::now() + Duration::from_secs(3);
        let mut members = live_group_members(self.pgid);
        while !members.is_empty() && Instant::now() < grace {
            thread::sleep(Duration::from_millis(50));
            members = live_group_members(self.pgid);
        }
        if !members.is_empty() {
            problems.push(format!(
                "processes of memtrace's process group still running 3s after memtrace exited: \
                 {} (killed them)",
                members.join(", ")
            ));
            signal_group(self.pgid, libc::SIGKILL);
        }
        for (name, collector) in [("stdout", &mut self.stdout), ("stderr", &mut self.stderr)] {
            if !collector.finish(Duration::from_secs(5)) {
                problems.push(format!(
                    "memtrace's {name} was still held open 5s after it exited"
                ));
            }
        }
        RunOutput {
            command: self.command.clone(),
            status,
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
            elapsed,
            problems,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_group(self.pgid, libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs memtrace with `args` to completion (deadline `timeout`), whatever
/// its exit status.
pub fn run_memtrace<S: AsRef<OsStr>>(args: &[S], timeout: Duration) -> RunOutput {
    let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_os_string()).collect();
    Running::spawn(&memtrace_bin(), &args, None, None).wait(timeout)
}

/// Like [`run_memtrace`], in `dir`, with `env` as memtrace's whole
/// environment (and so its command's).
pub fn run_memtrace_in_env<S: AsRef<OsStr>>(
    args: &[S],
    dir: &Path,
    env: &[(String, String)],
    timeout: Duration,
) -> RunOutput {
    let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_os_string()).collect();
    let options = SpawnOptions {
        env: env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
        clear_env: true,
        cwd: Some(dir.to_path_buf()),
        ..SpawnOptions::default()
    };
    Running::spawn_with(&memtrace_bin(), &args, &options, None, None).wait(timeout)
}

/// Like [`run_memtrace`], but memtrace's stdout is a pipe whose read end
/// the test closes right after the spawn: every write memtrace (or a
/// `-- CMD` child sharing its stdout) makes there fails with EPIPE.
/// `RunOutput::stdout` is empty.
pub fn run_memtrace_stdout_closed<S: AsRef<OsStr>>(args: &[S], timeout: Duration) -> RunOutput {
    let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_os_string()).collect();
    let options = SpawnOptions {
        close_stdout: true,
        ..SpawnOptions::default()
    };
    Running::spawn_with(&memtrace_bin(), &args, &options, None, None).wait(timeout)
}

/// Runs `memtrace JSON_ARGS... extra... -- cmd...`, asserts it succeeded and
/// returns the parsed report. The workload must not write to stdout, which
/// it shares with memtrace's report.
#[track_caller]
pub fn run_memtrace_cmd<S: AsRef<OsStr>>(extra: &[&str], cmd: &[S]) -> Report {
    let args = json_cmd_args(extra, cmd);
    let out = run_memtrace(&args, CMD_TIMEOUT);
    out.assert_success();
    let report = out.report();
    assert!(
        report.stacks.len() <= TOP,
        "report has {} stacks, more than --top {TOP}\n{}",
        report.stacks.len(),
        report.describe()
    );
    report
}

/// [`run_memtrace_cmd`] with `env` added to memtrace's environment.
#[track_caller]
pub fn run_memtrace_cmd_env<S: AsRef<OsStr>>(
    extra: &[&str],
    cmd: &[S],
    env: &[(&str, &str)],
) -> Report {
    let args = json_cmd_args(extra, cmd);
    let options = SpawnOptions {
        env: env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
        ..SpawnOptions::default()
    };
    let out = Running::spawn_with(&memtrace_bin(), &args, &options, None, None).wait(CMD_TIMEOUT);
    out.assert_success();
    out.report()
}

/// A running `memtrace` (typically in `--pid` mode), whose stderr is watched
/// line by line.
pub struct Tracer {
    run: Running,
    stderr_lines: Receiver<String>,
}

impl Tracer {
    /// Starts `memtrace --pid P... args...`.
    pub fn attach(pids: &[u32], args: &[&str]) -> Tracer {
        let mut all: Vec<OsString> = Vec::new();
        for pid in pids {
            all.push("--pid".into());
            all.push(pid.to_string().into());
        }
        all.extend(args.iter().map(OsString::from));
        Tracer::spawn(&all)
    }

    /// Starts memtrace with exactly `args`.
    pub fn spawn(args: &[OsString]) -> Tracer {
        let (tx, rx) = mpsc::channel();
        Tracer {
            run: Running::spawn(&memtrace_bin(), args, None, Some(tx)),
            stderr_lines: rx,
        }
    }

    /// memtrace's pid.
    pub fn pid(&self) -> u32 {
        self.run.pid()
    }

    /// Waits until memtrace prints its `memtrace: tracing` line on stderr;
    /// returns it. Panics if it exits first or `timeout` passes.
    #[track_caller]
    pub fn wait_tracing(&mut self, timeout: Duration) -> String {
        self.wait_line("memtrace: tracing", timeout)
    }

    /// Waits for the next stderr line of memtrace that contains `needle`
    /// (lines before it are passed over) and returns it. Panics if memtrace
    /// exits first or `timeout` passes.
    #[track_caller]
    pub fn wait_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!(
                    "memtrace printed no line with {needle:?} within {timeout:?}\n{}",
                    self.run.snapshot()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    // stderr closed: memtrace exited (or closed stderr).
                    thread::sleep(Duration::from_millis(200));
                    let status = self.run.try_wait();
                    panic!(
                        "memtrace closed stderr ({}) before printing a line with {needle:?}\n{}",
                        status.map_or("still running".to_string(), |s| describe_status(&s)),
                        self.run.snapshot()
                    );
                }
            }
        }
    }

    /// Whether memtrace is still running.
    pub fn is_running(&mut self) -> bool {
        self.run.try_wait().is_none()
    }

    /// What memtrace has written so far (for failure messages).
    pub fn snapshot(&self) -> String {
        self.run.snapshot()
    }

    /// Everything memtrace has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.run.stderr.text()
    }

    /// Sends signal `sig` to memtrace (not to its process group).
    #[track_caller]
    pub fn signal(&self, sig: i32) {
        send_signal(self.pid(), sig);
    }

    /// Waits until memtrace catches `sig` (its handler is installed: bit
    /// `sig - 1` of `SigCgt` in /proc/PID/status), so that sending it ends
    /// the run rather than killing memtrace. Panics if memtrace exits first
    /// or `timeout` passes.
    #[track_caller]
    pub fn wait_catching(&mut self, sig: i32, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let pid = self.pid();
        loop {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let caught = status
                .lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .is_some_and(|mask| mask & (1 << (sig - 1)) != 0);
            if caught {
                return;
            }
            assert!(self.is_running(), "memtrace exited\n{}", self.snapshot());
            assert!(
                Instant::now() < deadline,
                "memtrace did not catch signal {sig} within {timeout:?}\n{}",
                self.snapshot()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until what memtrace has written (stdout or stderr) contains
    /// `needle`; panics with `what` and all it wrote if `timeout` passes
    /// first.
    #[track_caller]
    pub fn wait_output(&self, needle: &str, timeout: Duration, what: &str) {
        let deadline = Instant::now() + timeout;
        while !self.snapshot().contains(needle) {
            assert!(Instant::now() < deadline, "{what}\n{}", self.snapshot());
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for memtrace to exit on its own (e.g. at the end of
    /// `--duration`) within `timeout` of its start.
    pub fn finish(self, timeout: Duration) -> RunOutput {
        self.run.wait(timeout)
    }

    /// Ctrl-C: sends SIGINT to memtrace, which ends the trace with its
    /// report, and waits for it to exit within `timeout` of its start.
    #[track_caller]
    pub fn interrupt(self, timeout: Duration) -> RunOutput {
        self.signal(libc::SIGINT);
        self.finish(timeout)
    }
}

/// Attaches `memtrace --pid pid args...` and waits for its
/// `memtrace: tracing` line.
#[track_caller]
pub fn trace_pid(pid: u32, args: &[&str]) -> Tracer {
    let mut tracer = Tracer::attach(&[pid], args);
    tracer.wait_tracing(TRACING_TIMEOUT);
    tracer
}

/// Traces `workload` (started, and ready for its go) with `memtrace --pid
/// P memtrace_args`, gives it the go (SIGUSR1) once memtrace is tracing and
/// waits (30 s at most) for its "done". Returns memtrace, still running.
#[track_caller]
pub fn trace_until_done(workload: &mut Workload, memtrace_args: &[&str]) -> Tracer {
    let tracer = trace_pid(workload.pid(), memtrace_args);
    workload.signal(libc::SIGUSR1);
    workload.expect_line("done", crate::secs(30));
    tracer
}

/// Starts `exe args`, waits for its "ready", traces it with `memtrace
/// --pid P --duration 60s memtrace_args`, gives the go (SIGUSR1), waits for
/// its "done", then, after `settle` (so that a last sample holds what was
/// done), ends the trace with Ctrl-C. Returns the report and the lines the
/// workload printed between the go and "done".
#[track_caller]
pub fn trace_handshake(
    exe: &Path,
    args: &[&str],
    memtrace_args: &[&str],
    settle: Duration,
) -> (crate::Report, Vec<String>) {
    let mut w = Workload::spawn_ready(exe, args);
    let mut all = memtrace_args.to_vec();
    all.extend(["--duration", "60s"]);
    let tracer = trace_pid(w.pid(), &all);
    w.signal(libc::SIGUSR1);
    let mut lines = Vec::new();
    loop {
        match w.next_line(crate::secs(20)) {
            line if line == "done" => break,
            line => lines.push(line),
        }
    }
    thread::sleep(settle);
    (tracer.interrupt(crate::secs(120)).report(), lines)
}

/// A workload started by the test (for `--pid` mode). Its stdout is read line
/// by line for handshakes; it is killed when dropped.
pub struct Workload {
    run: Running,
    name: String,
    lines: Receiver<String>,
}

impl Workload {
    /// Starts `exe args...`.
    pub fn spawn<S: AsRef<OsStr>>(exe: &Path, args: &[S]) -> Workload {
        Workload::spawn_with_env(exe, args, &[] as &[(&str, &str)])
    }

    /// Starts `exe args...` and waits (10 s at most) for its "ready" line,
    /// which the workloads print once they are set up (their SIGUSR1
    /// handler installed).
    #[track_caller]
    pub fn spawn_ready<S: AsRef<OsStr>>(exe: &Path, args: &[S]) -> Workload {
        let mut workload = Workload::spawn(exe, args);
        workload.expect_line("ready", crate::secs(10));
        workload
    }

    /// Starts `exe args...` with `env` added to (or overriding) the test's
    /// environment, e.g. `[("LD_LIBRARY_PATH", dir)]`.
    pub fn spawn_with_env<S, K, V>(exe: &Path, args: &[S], env: &[(K, V)]) -> Workload
    where
        S: AsRef<OsStr>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_os_string()).collect();
        let options = SpawnOptions {
            env: env
                .iter()
                .map(|(k, v)| (k.as_ref().to_os_string(), v.as_ref().to_os_string()))
                .collect(),
            ..SpawnOptions::default()
        };
        let (tx, rx) = mpsc::channel();
        Workload {
            run: Running::spawn_with(exe, &args, &options, Some(tx), None),
            name: exe.file_name().map_or_else(
                || exe.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            lines: rx,
        }
    }

    pub fn pid(&self) -> u32 {
        self.run.pid()
    }

    /// File name of the executable (its comm).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the next stdout line and returns it; panics (with what
    /// the workload printed) if it exits or `timeout` passes first.
    #[track_caller]
    pub fn next_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(e) => {
                let status = self.run.try_wait();
                panic!(
                    "workload {} (pid {}) printed no line within {timeout:?} ({}; {})\n{}",
                    self.name,
                    self.pid(),
                    if e == RecvTimeoutError::Timeout {
                        "timed out"
                    } else {
                        "stdout closed"
                    },
                    status.map_or("still running".to_string(), |s| describe_status(&s)),
                    self.run.snapshot()
                );
            }
        }
    }

    /// Waits for a stdout line equal to `want`; panics (with what the
    /// workload printed) if it exits or `timeout` passes first.
    #[track_caller]
    pub fn expect_line(&mut self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == want => return,
                Ok(_) => {}
                Err(e) => {
                    let status = self.run.try_wait();
                    panic!(
                        "workload {} (pid {}) did not print {want:?} within {timeout:?} ({}; {})\n{}",
                        self.name,
                        self.pid(),
                        if e == RecvTimeoutError::Timeout { "timed out" } else { "stdout closed" },
                        status.map_or("still running".to_string(), |s| describe_status(&s)),
                        self.run.snapshot()
                    );
                }
            }
        }
    }

    /// Its exit status if it has exited (reaped now); None while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.run.try_wait()
    }

    /// What it has written so far, stdout and stderr.
    pub fn output(&self) -> String {
        self.run.snapshot()
    }

    /// Waits up to `timeout` for the workload to exit on its own and reaps
    /// it; panics (with what it printed) if it is still running then.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.run.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "workload {} (pid {}) did not exit within {timeout:?}\n{}",
                    self.name,
                    self.pid(),
                    self.run.snapshot()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends signal `sig` to the workload.
    #[track_caller]
    pub fn signal(&self, sig: i32) {
        send_signal(self.pid(), sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let out = Running::spawn(
            Path::new("/bin/sh"),
            &["-c".into(), "echo out; echo err >&2; exit 3".into()],
            None,
            None,
        )
        .wait(Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str()),
            ("out\n", "err\n")
        );
        assert!(out.problems.is_empty(), "{:?}", out.problems);
    }

    #[test]
    fn timeout_panics_and_kills_the_group() {
        let marker = format!("/tmp/memtrace-integration-timeout-{}", std::process::id());
        let script = format!("sleep 30 & echo $! > {marker}; wait");
        let result = std::panic::catch_unwind(|| {
            Running::spawn(
                Path::new("/bin/sh"),
                &["-c".into(), script.into()],
                None,
                None,
            )
            .wait(Duration::from_millis(500))
        });
        let err = result.expect_err("wait should panic on timeout");
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("did not finish within"), "{msg}");
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = std::fs::remove_file(&marker);
        // SIGKILL takes effect asynchronously: poll for its end (gone, or a
        // zombie) with a deadline.
        let alive = || {
            // SAFETY: kill(2) with signal 0 only checks for existence.
            let exists = unsafe { libc::kill(pid, 0) } == 0;
            exists
                && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .unwrap_or_default()
                    .contains(") Z ")
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(), "background child {pid} survived the timeout");
    }
}

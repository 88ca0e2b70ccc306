//! Command-line interface: the options, their parsing and validation, and
//! the one-line error format for bad input.

use std::{
    io::IsTerminal,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use memtrace_report::{render::Format, SortBy, Unwind, Weight};

use crate::config::{
    self, Filter, Mode, Output, Outputs, Selection, DEFAULT_MAX_LIVE, DEFAULT_MAX_STACKS,
};

/// Longest duration any option takes: far beyond any run, far below what
/// would overflow a clock reading (`--duration 500000000000y` panicked).
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parses durations like `30s`, `5m`, `1h30m`, `500ms` (above zero, at
/// most a year).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (expected e.g. 500ms, 5s, 2m, 1h)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    if d > MAX_DURATION {
        return Err("at most a year (366 days)".into());
    }
    Ok(d)
}

/// Parses a growth rate like `50MiB/h`, `1.5GiB/h`, `200KiB/min`, `4096/s`
/// (IEC or SI units, per s|min|h; above zero) into bytes per hour.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    const HINT: &str = "expected a size per time, e.g. 50MiB/h, 200KiB/min, 4096B/s";
    let (size, per) = s.split_once('/').ok_or(HINT)?;
    let per_hour = match per.trim() {
        "s" | "sec" => 3600.0,
        "m" | "min" => 60.0,
        "h" | "hour" => 1.0,
        _ => return Err(HINT.into()),
    };
    match size_in_bytes(size).ok_or(HINT)? * per_hour {
        rate if rate > 0.0 => Ok(rate),
        _ => Err("must be above zero (e.g. 1MiB/h)".into()),
    }
}

/// `512KiB`, `1.5 MB`, `4096` (IEC or SI units) in bytes; None unless a
/// finite number with a known unit.
pub fn size_in_bytes(size: &str) -> Option<f64> {
    let size = size.trim();
    let split = size
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(size.len());
    let (number, unit) = size.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(number * unit).filter(|b| b.is_finite())
}

/// `--comm` names: what the kernel's comm can hold.
fn check_comms(names: &[String]) -> Result<(), String> {
    match names.iter().find(|c| c.is_empty() || c.len() > 15) {
        Some(c) => Err(format!(
            "--comm {c:?}: a process name has 1 to 15 characters (the kernel's comm)"
        )),
        None => Ok(()),
    }
}

/// `--cgroup`: a path that can name a cgroup. Empty would select every
/// process (as `/` does, on purpose), and `..` never matches anything.
fn check_cgroup(path: &str) -> Result<(), String> {
    if path.trim().is_empty() || path.split('/').any(|c| c == "..") {
        return Err(format!(
            "--cgroup {path:?}: expected a cgroup path without `..`, e.g. /kubepods/burstable \
             (or / for every cgroup)"
        ));
    }
    Ok(())
}

/// Parses a size like `256MiB` (at least 1 byte).
pub fn parse_size(s: &str) -> Result<u64, String> {
    match size_in_bytes(s) {
        Some(b) if b >= 1.0 => Ok(b.round() as u64),
        _ => Err("expected a size, e.g. 256MiB, 1GiB".into()),
    }
}

/// Parses `--sample-bytes`: a size of at least 1 byte and at most 1 GiB.
pub fn parse_sample_bytes(s: &str) -> Result<u64, String> {
    let bytes = size_in_bytes(s).ok_or("expected a size, e.g. 512KiB, 1MiB, 65536")?;
    if !(1.0..=(1u64 << 30) as f64).contains(&bytes) {
        return Err("must be between 1 byte and 1GiB".into());
    }
    Ok(bytes.round() as u64)
}

/// Where and how reports are written; shared by tracing and the offline
/// subcommands.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Report format. Default: from each --output file's extension, else text.
    #[arg(short, long, value_enum)]
    pub format: Option<Format>,

    /// Write the report to FILE instead of stdout; repeat for several
    /// outputs of one run. The format follows the extension (.txt, .json,
    /// .svg, .folded, .pb.gz, .html); --format may only agree with it, or name the
    /// format of a file without one. `-` (or /dev/stdout) is stdout. With
    /// only files and stdout a terminal, the text report still prints and
    /// each file written is named. Written atomically (a new file renamed
    /// over FILE), never through a symbolic link that someone other than
    /// root or memtrace's user owns.
    #[arg(short, long = "output", value_name = "FILE")]
    pub outputs: Vec<PathBuf>,

    /// What flamegraph widths and folded weights measure, and the sample
    /// type pprof shows first. `peak` lists every stack that held memory at
    /// a sample, freed since or not.
    #[arg(short, long, value_enum, default_value_t = Weight::Outstanding)]
    pub weight: Weight,

    /// Number of stacks in the text report (default 10) and in the plain
    /// live lines; the live table on a terminal fills the screen (small
    /// single-block stacks left out). JSON, SVG,
    /// folded and pprof outputs hold every stack holding memory (with --sort
    /// peak or --weight peak, every stack that held memory at a sample)
    /// unless --top is given.
    #[arg(short = 'n', long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub top: Option<u32>,
}

impl OutputArgs {
    /// The outputs these options ask for, checked: every file's format is
    /// known and agrees with `--format`, no file (nor stdout) is named
    /// twice, binary pprof does not go to a terminal, and a diff is written
    /// as text, JSON or SVG.
    fn plan(&self, diff: bool) -> Result<Outputs, String> {
        self.plan_for(diff, std::io::stdout().is_terminal())
    }

    /// [`plan`](Self::plan), with stdout a terminal or not.
    fn plan_for(&self, diff: bool, stdout_terminal: bool) -> Result<Outputs, String> {
        let mut list: Vec<Output> = Vec::new();
        for given in &self.outputs {
            let path = (!is_stdout(given)).then(|| given.clone());
            if list.iter().any(|o| o.path == path) {
                return Err(format!("--output {} is given twice", given.display()));
            }
            let format = match (self.format, from_extension(given)) {
                (Some(asked), Some(implied)) if asked != implied => {
                    return Err(format!(
                        "--format {} contradicts --output {} (a {} file): drop --format, or \
                         name the file for what it holds",
                        asked.name(),
                        given.display(),
                        implied.name()
                    ))
                }
                (_, Some(implied)) => implied,
                (Some(asked), None) => asked,
                (None, None) if path.is_none() => Format::Text,
                (None, None) => {
                    return Err(format!(
                        "--output {}: cannot tell the format from its extension (.txt, .json, \
                         .svg, .folded, .pb.gz, .html): add --format",
                        given.display()
                    ))
                }
            };
            list.push(Output { path, format });
        }
        let on_stdout = list.iter().any(|o| o.path.is_none());
        // Files only, on a terminal: the text report is shown too.
        let name_files = !list.is_empty() && !on_stdout && stdout_terminal;
        if list.is_empty() || name_files {
            let format = match name_files {
                true => Format::Text,
                false => self.format.unwrap_or(Format::Text),
            };
            list.push(Output { path: None, format });
        }
        if stdout_terminal
            && list
                .iter()
                .any(|o| o.path.is_none() && o.format == Format::Pprof)
        {
            return Err("pprof output is binary: write it to a file with -o FILE.pb.gz".into());
        }
        if diff {
            if let Some(o) = list.iter().find(|o| {
                !matches!(
                    o.format,
                    Format::Text | Format::Json | Format::Svg | Format::Html
                )
            }) {
                return Err(format!(
                    "memtrace diff writes text, json, svg or html, not {}",
                    o.format.name()
                ));
            }
        }
        Ok(Outputs {
            list,
            top: self.top,
            weight: self.weight,
            name_files,
        })
    }
}

/// Whether an `--output` names stdout: `-`, or stdout's own device names.
fn is_stdout(path: &Path) -> bool {
    ["-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"]
        .iter()
        .any(|name| path == Path::new(name))
}

/// The format a file's name implies.
fn from_extension(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    let formats = [
        (".txt", Format::Text),
        (".json", Format::Json),
        (".svg", Format::Svg),
        (".folded", Format::Folded),
        (".pb.gz", Format::Pprof),
        (".pprof", Format::Pprof),
        (".pb", Format::Pprof),
        (".html", Format::Html),
        (".htm", Format::Html),
    ];
    formats
        .into_iter()
        .find(|(ext, _)| name.ends_with(ext))
        .map(|(_, f)| f)
}

/// Subcommands: `report` and `diff` read saved reports, trace nothing and
/// need no privileges; `agent` runs the node agent.
#[derive(Debug, Subcommand)]
pub enum Subcommands {
    /// Render a saved JSON report (a snapshot) in any format.
    #[command(after_help = "EXAMPLES:
    memtrace report leak.json                       the text report again
    memtrace report leak.json -o leak.svg           flamegraph of it
    memtrace report leak.json -o leak.html          a page to explore it in a browser
    memtrace report leak.json -o leak.pb.gz         for go tool pprof, Pyroscope, Parca")]
    Report {
        /// A JSON report written by memtrace (--format json / -o FILE.json).
        #[arg(value_name = "SNAPSHOT.json")]
        snapshot: PathBuf,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Compare two snapshots: what grew, what is new, what went away, per
    /// stack (matched by frames, whatever the pids).
    #[command(after_help = "EXAMPLES:
    memtrace diff before.json after.json            per-stack deltas, largest growth first
    memtrace diff before.json after.json -o d.svg   differential flamegraph (red grew)
    memtrace diff before.json after.json -o d.html  grew, new and gone side by side
    memtrace diff a.folded b.folded --format json   folded stacks work too")]
    Diff {
        /// The earlier snapshot: a JSON report, or folded stacks.
        #[arg(value_name = "BEFORE")]
        before: PathBuf,
        /// The later snapshot.
        #[arg(value_name = "AFTER")]
        after: PathBuf,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Run as a node agent: watch every process's memory cheaply from
    /// /proc, trace the ones that keep growing (and containers that come
    /// back after an OOM kill) for a while, and keep incident reports;
    /// serve a web page, /metrics, /healthz, /reports and on-demand traces
    /// over HTTP.
    #[command(after_help = "EXAMPLES:
    sudo memtrace agent                                   defaults: scan every 30s, alert at 50MiB/h
    sudo memtrace agent --reports-dir /tmp/incidents --alert-growth 20MiB/h
    sudo MEMTRACE_TOKEN=$(cat token) memtrace agent --listen 0.0.0.0:9464
    http://localhost:9464/ in a browser                   the page: processes, OOM kills,
                                                          incidents, a Trace button
    curl localhost:9464/metrics                           Prometheus metrics
    curl localhost:9464/reports                           incidents, newest first (JSON)
    curl localhost:9464/reports/ID -o report.json         one incident's report (also
                                                          /reports/ID/flamegraph.svg, profile.pb.gz)
    curl -X POST 'localhost:9464/trace?pid=1234&duration=30s'          trace now, JSON report
    curl -X POST 'localhost:9464/trace?pid=1234&duration=1m&format=svg' a flamegraph

With a token (required off loopback) every endpoint but /healthz and the page's
own files needs `Authorization: Bearer TOKEN` (the page asks for it once).
Clients are bounded: 10 s to send a request's head, 16 KiB of head, no body
over 1 KiB, 64 connections (16 per address), 20 requests per second.
Each trace runs as a child `memtrace --pid PID` (what an engineer would run by
hand); an incident is a directory under --reports-dir holding incident.json,
report.json, report.html, flamegraph.svg and profile.pb.gz. NODE_NAME (or the
host name) names the node in incidents and metrics.")]
    Agent(AgentArgs),
    /// Reads every thread's Python stack of a running CPython process once,
    /// from outside, and prints it as JSON (how the tests check the frame
    /// walk; not a user feature yet).
    #[command(hide = true, name = "python-stacks")]
    PythonStacks {
        #[arg(long, value_name = "PID")]
        pid: u32,
        /// Read it with the offsets of CPython 3.MINOR, whatever it runs.
        #[arg(long, value_name = "MINOR")]
        offsets_of: Option<u32>,
    },
    /// Prints the Go runtime layouts memtrace reads in a Go binary: from
    /// its DWARF, and its version's row of the table used without DWARF,
    /// as JSON (how the tests check the table against every Go they can
    /// build; not a user feature).
    #[command(hide = true, name = "go-layout")]
    GoLayout {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Options of `memtrace agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Address and port of the HTTP endpoint. Anything but a loopback
    /// address needs --token.
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,

    /// Bearer token that every endpoint but /healthz requires (at least 16
    /// characters). Prefer the environment variable: a command line is
    /// readable by every user.
    #[arg(
        long,
        env = "MEMTRACE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,

    /// Where incidents are written (created if missing, mode 0700).
    #[arg(long, default_value = "/var/lib/memtrace/reports", value_name = "DIR")]
    pub reports_dir: PathBuf,

    /// How often every process's resident memory is read from /proc.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub scan_interval: Duration,

    /// Trace a process whose anonymous resident memory keeps growing faster
    /// than this (judged like a stack's verdict: a significant robust trend
    /// that is not a plateau).
    #[arg(long, default_value = "50MiB/h", value_parser = parse_rate, value_name = "RATE")]
    pub alert_growth: f64,

    /// Watch a process at least this long before it can be flagged.
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub min_observation: Duration,

    /// How long a flagged process is traced for its incident.
    #[arg(long, default_value = "10m", value_parser = parse_duration, value_name = "DURATION")]
    pub trace_window: Duration,

    /// Sampling interval inside a trace window. Default: a sixtieth of the
    /// window, between 1s and 30s.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub trace_interval: Option<Duration>,

    /// Traces running at once (windows and on-demand traces together).
    #[arg(long, default_value_t = 2, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=16))]
    pub max_traces: u32,

    /// A process traced once is traced again, if it still grows, only after
    /// this long.
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub retrace_after: Duration,

    /// Incidents kept; the oldest go first.
    #[arg(long, default_value_t = 50, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_reports: u32,

    /// Total size of the incidents kept (e.g. 256MiB); the oldest go first
    /// (the newest is always kept).
    #[arg(long, default_value = "256MiB", value_parser = parse_size, value_name = "SIZE")]
    pub max_report_bytes: u64,

    /// Only watch processes named exactly NAME (their comm, at most 15
    /// characters; repeatable). Default: every process. OOM kills are
    /// watched node-wide whatever this says.
    #[arg(long, value_name = "NAME")]
    pub comm: Vec<String>,

    /// Let the traces it runs drive runtimes from outside: open a Node
    /// process's inspector (SIGUSR1) to sample its JavaScript heap, start a
    /// JFR recording in a JVM through its attach mechanism. Off: its traces
    /// run with --no-runtime-attach, probes only.
    #[arg(long)]
    pub runtime_attach: bool,

    /// Log each scan's suspects and each trace's command on stderr.
    #[arg(short, long)]
    pub verbose: bool,
}

impl AgentArgs {
    /// The agent's settings, checked.
    fn into_config(self) -> Result<config::Agent, String> {
        self.validate()?;
        Ok(config::Agent {
            window_interval: self.window_interval(),
            listen: self.listen,
            token: self.token,
            reports_dir: self.reports_dir,
            scan_interval: self.scan_interval,
            alert_growth: self.alert_growth,
            min_observation: self.min_observation,
            trace_window: self.trace_window,
            max_traces: self.max_traces,
            retrace_after: self.retrace_after,
            max_reports: self.max_reports,
            max_report_bytes: self.max_report_bytes,
            comm: self.comm,
            verbose: self.verbose,
            runtime_attach: self.runtime_attach,
        })
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(token) = &self.token {
            if token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(
                    "--token: at least 16 characters, no spaces (e.g. `openssl rand -hex 32`)"
                        .into(),
                );
            }
        } else if !self.listen.ip().is_loopback() {
            return Err(format!(
                "--listen {}: off loopback every endpoint but /healthz needs a bearer token: give \
                 --token or set MEMTRACE_TOKEN",
                self.listen
            ));
        }
        check_comms(&self.comm)
    }

    /// Sampling interval of trace windows.
    fn window_interval(&self) -> Duration {
        self.trace_interval.unwrap_or_else(|| {
            (self.trace_window / 60).clamp(Duration::from_secs(1), Duration::from_secs(30))
        })
    }
}

/// Find memory leaks in running processes with eBPF, without restarting or
/// instrumenting them.
///
/// memtrace hooks the target's allocator (malloc, calloc, realloc,
/// posix_memalign, aligned_alloc, free, ...) and its anonymous mmap/munmap
/// calls, keeps what is still outstanding per call stack in the kernel,
/// samples it every interval, and reports the stacks whose unfreed memory
/// keeps growing, each with a verdict and its evidence: leak (keeps growing,
/// old allocations accumulate), plateau (grew, then flat: a cache that
/// filled), growing (too short or noisy to call) or stable. On a terminal
/// it shows a live table every interval. Needs root.
#[derive(Debug, Parser)]
#[command(
    name = "memtrace",
    version,
    args_conflicts_with_subcommands = true,
    after_help = "EXAMPLES:
    sudo memtrace --pid 1234                      trace pid 1234 until Ctrl-C
    sudo memtrace -p 1234 -p 5678 --duration 2m   two processes for two minutes
    sudo memtrace --format json -o leak.json --pid 1234
    sudo memtrace -- ./myprog --its-args           start ./myprog traced from its first malloc
    sudo memtrace --interval 1s --top 5 -- python3 app.py
    sudo memtrace -p $(pgrep -f server.js) -d 5m   a Node server's JavaScript heap, at its lines
    sudo memtrace -p 1234 --min-age 1m --sort outstanding   only blocks older than a minute
    sudo memtrace -p 1234 -d 30s -o leak.svg      a flamegraph of what is outstanding
    sudo memtrace -p 1234 -d 5m -o leak.html      charts, stacks and icicle graph in one page
    sudo memtrace -p 1234 -d 5m -o leak.json -o leak.svg -o leak.pb.gz
    sudo memtrace --comm nginx -d 10m             every nginx process, present and future
    sudo memtrace --container 3f2a9c -o c.json    the processes of one container
    sudo memtrace --all -d 1m --top 20            the whole node (every malloc traps: see cost)
    sudo memtrace --oom-only                      one line per OOM kill, until Ctrl-C
    memtrace report leak.json --format text       render a saved snapshot (no root)
    memtrace diff before.json after.json          what grew between two snapshots

Ctrl-C (or SIGTERM) stops tracing and prints the final report; so does the
exit of every target. In `-- CMD` mode memtrace exits 0 when CMD and the
processes it forked have exited, and stops CMD (SIGTERM) if --duration ends
first. CMD's stdout is memtrace's: nothing of memtrace's goes there while
CMD runs (progress goes to stderr), and the report only at the end when no
-o FILE is given.
Processes CMD forks are traced too, each as a target of its own
(--follow-forks does the same for --pid targets).
A CPython CMD is stopped where it is about to run its program, and it and
the Python processes it forks at their end, while memtrace reads their code
objects: milliseconds, a second after a start that makes tens of thousands
of stacks (--verbose says how long). A --pid target is never stopped.
A Node target's JavaScript heap is sampled by V8 itself, through the
inspector memtrace opens with SIGUSR1 and closes at the end; a HotSpot
JVM's by its own leak profiler, a JFR recording memtrace starts through
the JVM's attach mechanism and stops at the end (--no-runtime-attach:
neither).
Every mode watches the kernel's OOM killer: when it kills a traced process,
the report starts with the stacks that held its memory (and with --pid, an
OOM-killed target ends the run)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub subcommand: Option<Subcommands>,

    /// Process id to trace (repeat for several processes).
    #[arg(short, long = "pid", value_name = "PID",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Vec<u32>,

    /// Also trace the processes the --pid targets fork (and theirs), each
    /// from its fork on: probes go in within milliseconds of the fork (what
    /// a child allocates before is not seen). The run ends when every one
    /// has exited. Always on with `-- CMD`.
    #[arg(long, conflicts_with_all = ["all", "comm", "cgroup", "container", "oom_only"])]
    pub follow_forks: bool,

    /// Trace every process on the node (not memtrace itself), including
    /// ones started later. The allocator is probed for all processes, so
    /// every malloc on the node traps: memtrace measures and prints what
    /// that costs. Prefer --comm/--cgroup/--container when you know what to
    /// look at: only matching processes trap.
    #[arg(long, conflicts_with_all = ["pids", "command", "oom_only"])]
    pub all: bool,

    /// Trace every process named NAME (its comm, as `ps -o comm` shows it),
    /// now and as such processes start; repeat for several names. Only
    /// they trap.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["pids", "command", "all"])]
    pub comm: Vec<String>,

    /// Trace every process in cgroup PATH or below it, now and as they
    /// start (a cgroup path like /kubepods/burstable, or its directory
    /// under /sys/fs/cgroup).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["pids", "command", "all"])]
    pub cgroup: Option<String>,

    /// Trace every process of container ID (docker, containerd, cri-o; a
    /// prefix of at least 4 hex digits, or a Kubernetes pod UID), now and
    /// as they start.
    #[arg(long, value_name = "ID", conflicts_with_all = ["pids", "command", "all"])]
    pub container: Option<String>,

    /// Only report OOM kills on the node as they happen, one line each
    /// (JSON lines with --format json): no allocator probes, cheap enough to
    /// leave running. (Every other mode reports OOM kills too.)
    #[arg(long, conflicts_with_all = ["pids", "command", "all", "comm", "cgroup", "container"])]
    pub oom_only: bool,

    /// Stop after this long (e.g. 30s, 5m). Default: until Ctrl-C or every target exits.
    #[arg(short, long, value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// How often the kernel-side totals are sampled into the per-stack series.
    #[arg(short, long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub interval: Duration,

    /// Order of the stacks in the report and the live view.
    #[arg(short, long, value_enum, default_value_t = SortBy::Growth)]
    pub sort: SortBy,

    /// Hide allocations younger than this (e.g. 30s, 5m): stacks show only
    /// the bytes outstanding for at least that long.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub min_age: Option<Duration>,

    /// Flag a process whose RSS grows faster than this, whatever its stacks
    /// show.
    #[arg(long, default_value = "50MiB/h", value_parser = parse_rate, value_name = "RATE")]
    pub rss_alert: f64,

    /// Sample allocations instead of tracing each: on average one every SIZE
    /// bytes allocated (each allocation with probability
    /// 1-exp(-size/SIZE)); reported bytes and counts are estimates,
    /// unbiased per stack. Unsampled calls cost their traps only. E.g.
    /// 512KiB.
    #[arg(long, value_parser = parse_sample_bytes, value_name = "SIZE")]
    pub sample_bytes: Option<u64>,

    /// How stacks are walked: `fp` by frame pointer only (cheapest; stacks
    /// through code built without them — distribution libraries, -O2 C,
    /// Rust release builds — come out short or wrong); `dwarf` by unwind
    /// tables built from each file's .eh_frame, loaded into the kernel;
    /// `auto` by tables where the code lacks frame pointers and by frame
    /// pointer where it keeps them.
    #[arg(long, value_enum, default_value_t = Unwind::Auto)]
    pub unwind: Unwind,

    /// Hook the allocator in this file too, for every target, whether it is
    /// mapped yet or not (e.g. a library the program dlopens later, or one
    /// with unusual names: see --symbol-prefix). Repeatable.
    #[arg(long = "allocator-lib", value_name = "PATH")]
    pub allocator_libs: Vec<PathBuf>,

    /// Also recognise allocators that export malloc, free, calloc, ... as
    /// PREFIXmalloc, PREFIXfree, ... (built in: je_, _rjem_, tc_, mi_).
    /// Repeatable.
    #[arg(long = "symbol-prefix", value_name = "PREFIX")]
    pub symbol_prefixes: Vec<String>,

    /// Say more on stderr: where each probe was placed in each function,
    /// and which CPython a --pid target runs.
    #[arg(short, long)]
    pub verbose: bool,

    /// In a Go program whose memory profiling is off (it never references
    /// runtime.MemProfile, so the linker switched it off), switch it on:
    /// memtrace writes one word in the running program, setting
    /// runtime.MemProfileRate to 512 KiB (what the program could do
    /// itself), and its heap profile names the allocations made from then
    /// on. Without it such a program's heap is seen through the runtime's
    /// mmap calls only. Nothing is ever written otherwise.
    #[arg(long)]
    pub go_enable_heap_profile: bool,

    /// Drive no runtime from outside: no Node process has its inspector
    /// opened (by default a Node target gets SIGUSR1, which opens its
    /// inspector on loopback in its own network namespace; memtrace
    /// samples its JavaScript heap there and closes the inspector again at
    /// the end; Node prints "Debugger listening on ..." and "Debugger
    /// attached." on its stderr when that happens), no JVM gets a JFR
    /// recording (by default a HotSpot target's attach listener is started
    /// with SIGQUIT, as jcmd does, and a recording of its memory events runs
    /// until the end).
    #[arg(long)]
    pub no_runtime_attach: bool,

    /// V8's mean bytes between sampled JavaScript allocations in Node
    /// targets (the cost and resolution of the JavaScript heap's view).
    #[arg(long, default_value = "32KiB", value_parser = parse_sample_bytes, value_name = "SIZE")]
    pub node_sampling_interval: u64,

    /// Node targets: take a V8 heap snapshot when their inspector opens
    /// and another at the end, and report the objects whose retained size
    /// grew, with what holds them ("Map +8.6 MiB, 2,000 more entries, held
    /// by the variable sessions of handleRequest's scope, server.js:9"),
    /// and the constructors that grew. Each snapshot stops the process
    /// while V8 writes it: about 2 s for a 14 MiB heap here, as V8's
    /// native allocations for it are probed too (docs/usage.md).
    #[arg(long, conflicts_with = "no_runtime_attach")]
    pub node_heap_diff: bool,

    /// The largest JavaScript heap --node-heap-diff snapshots; a larger
    /// one is refused in one line (its pause would be too long).
    #[arg(long, default_value = "512MiB", value_parser = parse_size, value_name = "SIZE",
          requires = "node_heap_diff")]
    pub node_heap_diff_limit: u64,

    /// No live table on a terminal: one plain line per interval on stderr
    /// instead (what memtrace prints without a terminal).
    #[arg(long)]
    pub no_live: bool,

    #[command(flatten)]
    pub out: OutputArgs,

    /// Heap blocks outstanding at once (all targets together) that the
    /// kernel's live-block table is sized for: it has two slots per block
    /// (64 bytes of kernel memory for each N). Up to N blocks, ~0.1 % of
    /// allocations at most find no slot; beyond N it records more and more
    /// blocks but loses a growing share (~1 % at 1.2 N, ~5 % at 1.5 N, ~30 %
    /// at 1.8 N), and never holds more than 2 N. Allocations not recorded
    /// are counted (live_map_full), never reported as leaks: raise --max-live
    /// when there are any. Also the size of the table of live anonymous
    /// mappings.
    #[arg(long, default_value_t = DEFAULT_MAX_LIVE, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1024..=(1 << 24)))]
    pub max_live: u32,

    /// Size of the kernel's table of distinct allocation stacks (up to 32
    /// frames and 24 Python frames each: 656 bytes of kernel memory and the
    /// table's own per entry, allocated as used). At three quarters full,
    /// stacks idle and holding nothing are taken out; stacks beyond a full
    /// table are counted as stack_lost, their bytes kept under an unknown
    /// stack (a CPython start makes 10,000-50,000 stacks within a second:
    /// 131072 kept them all). Also the most stack series memtrace keeps
    /// (those holding nothing are evicted to make room; an eighth more for
    /// unknown and mapping stacks): its memory stays under 40 MiB + 18 KiB
    /// per stack + 100 bytes per --max-live.
    #[arg(long, default_value_t = DEFAULT_MAX_STACKS, value_name = "N",
          value_parser = clap::value_parser!(u32).range(256..=(1 << 20)))]
    pub max_stacks: u32,

    /// The bench's floor: the allocator programs return at once, so that
    /// a run costs the traps at memtrace's probe points and nothing else
    /// (nothing is counted).
    #[arg(long, hide = true)]
    pub empty_programs: bool,

    /// Tests: every stack's first kernel id is the same, so that each new
    /// stack collides (see `counters.stack_ids_moved`).
    #[arg(long, hide = true)]
    pub stack_ids_collide: bool,

    /// Command to start and trace from its first allocation.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl Cli {
    /// Parses and checks the command line into what to run. Help and
    /// version go to stdout as usual; any other problem becomes a single
    /// `memtrace: error: ...` line and exit code 2.
    pub fn parse_or_exit() -> config::Run {
        match Cli::try_parse() {
            Ok(cli) => match cli.into_run() {
                Ok(run) => run,
                Err(msg) => usage_error(&msg),
            },
            Err(e) => match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
                _ => usage_error(&one_line(&e.to_string())),
            },
        }
    }

    /// The settings of the mode asked for, checked.
    fn into_run(mut self) -> Result<config::Run, String> {
        Ok(match self.subcommand.take() {
            Some(Subcommands::Report { snapshot, out }) => {
                config::Run::Offline(config::Offline::Report {
                    snapshot,
                    outputs: out.plan(false)?,
                })
            }
            Some(Subcommands::Diff { before, after, out }) => {
                config::Run::Offline(config::Offline::Diff {
                    before,
                    after,
                    outputs: out.plan(true)?,
                })
            }
            Some(Subcommands::Agent(agent)) => config::Run::Agent(agent.into_config()?),
            Some(Subcommands::PythonStacks { pid, offsets_of }) => {
                config::Run::PythonStacks { pid, offsets_of }
            }
            Some(Subcommands::GoLayout { file }) => config::Run::GoLayout { file },
            None => config::Run::Trace(self.into_trace()?),
        })
    }

    /// A tracing run's settings, checked.
    fn into_trace(mut self) -> Result<config::Trace, String> {
        let outputs = self.out.plan(false)?;
        let me = std::process::id();
        if self.pids.contains(&me) {
            return Err(format!("pid {me} is memtrace itself"));
        }
        self.pids.sort_unstable();
        self.pids.dedup();
        if let Some(id) = &self.container {
            // kubectl prints ids as `containerd://ID`.
            let bare = id.split_once("://").map_or(id.as_str(), |(_, rest)| rest);
            if bare.len() < 4
                || !bare
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == '-' || c == '_')
            {
                return Err(format!(
                    "--container {id:?}: expected a container id (at least 4 hex digits) or a \
                     pod UID"
                ));
            }
        }
        check_comms(&self.comm)?;
        if let Some(c) = &self.cgroup {
            check_cgroup(c)?;
        }
        if let Some(p) = self
            .symbol_prefixes
            .iter()
            .find(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            return Err(format!(
                "--symbol-prefix {p:?}: letters, digits and _ only (e.g. my_ for my_malloc)"
            ));
        }
        if self.oom_only {
            if let Some(o) = outputs
                .list
                .iter()
                .find(|o| !matches!(o.format, Format::Text | Format::Json))
            {
                return Err(format!(
                    "--oom-only writes text lines or JSON lines (and a JSON report with -o \
                     FILE.json), not {}",
                    o.format.name()
                ));
            }
        }
        let watching = self.all || self.selection().is_some();
        match (self.pids.is_empty(), self.command.is_empty()) {
            _ if watching || self.oom_only => {}
            (true, true) => {
                return Err(
                    "nothing to trace: give --pid PID, a command after `--`, --all, \
                            --comm, --cgroup, --container or --oom-only (see --help)"
                        .into(),
                )
            }
            (false, false) => {
                return Err("give either --pid or a command after `--`, not both".into())
            }
            _ => {}
        }
        let mode = self.mode();
        Ok(config::Trace {
            follow_forks: self.follow_forks || mode == Mode::Command,
            mode,
            pids: self.pids,
            command: self.command,
            attach: config::Attach {
                allocator_libs: self.allocator_libs,
                symbol_prefixes: self.symbol_prefixes,
                unwind: self.unwind,
                max_live: self.max_live,
                max_stacks: self.max_stacks,
                empty_programs: self.empty_programs,
                stack_ids_collide: self.stack_ids_collide,
                go_enable_heap_profile: self.go_enable_heap_profile,
                node_inspector: !self.no_runtime_attach,
                node_sampling_interval: self.node_sampling_interval,
                node_heap_diff: self.node_heap_diff.then_some(self.node_heap_diff_limit),
            },
            sampling: config::Sampling {
                interval: self.interval,
                duration: self.duration,
                sample_bytes: self.sample_bytes,
                min_age: self.min_age,
                rss_alert: self.rss_alert,
                sort: self.sort,
            },
            outputs,
            live_table: !self.no_live,
            verbose: self.verbose,
            oom_json_lines: self.out.format == Some(Format::Json),
        })
    }

    /// What to trace, decided by the options.
    fn mode(&self) -> Mode {
        if self.oom_only {
            Mode::OomOnly
        } else if self.all {
            Mode::Watch(Selection::All)
        } else if let Some(s) = self.selection() {
            Mode::Watch(s)
        } else if !self.command.is_empty() {
            Mode::Command
        } else {
            Mode::Pids
        }
    }

    fn selection(&self) -> Option<Selection> {
        let filter = Filter {
            comm: self.comm.clone(),
            cgroup: self.cgroup.clone(),
            container: self.container.clone(),
        };
        (!filter.is_empty()).then_some(Selection::Matching(filter))
    }
}

/// First meaningful line of a clap error, without its `error: ` prefix.
/// A first line ending with `:` ("the following required arguments were
/// not provided:") gets the indented lines that follow it.
fn one_line(msg: &str) -> String {
    let mut lines = msg.lines().skip_while(|l| l.trim().is_empty());
    let mut line = lines.next().unwrap_or(msg).trim().to_string();
    if line.ends_with(':') {
        let items: Vec<&str> = lines
            .take_while(|l| l.starts_with(' ') && !l.trim().is_empty())
            .map(str::trim)
            .collect();
        line = format!("{line} {}", items.join(" "));
    }
    line.trim_start_matches("error: ").to_string()
}

fn usage_error(msg: &str) -> ! {
    eprintln!("memtrace: error: {msg}");
    std::process::exit(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("10").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("50MiB/h"), Ok(50.0 * 1024.0 * 1024.0));
        assert_eq!(parse_rate("1KiB/min"), Ok(60.0 * 1024.0));
        assert_eq!(parse_rate("2/s"), Ok(7200.0));
        assert_eq!(parse_rate("1.5 GB/h"), Ok(1.5e9));
        assert!(parse_rate("50MiB").is_err());
        assert!(parse_rate("fast/h").is_err());
        assert!(parse_rate("5XB/h").is_err());
    }

    #[test]
    fn pid_and_command_are_exclusive() {
        assert!(parsed(&["memtrace", "-p", "1", "--", "ls"]).is_err());
        assert!(parsed(&["memtrace"]).is_err());
        let trace = parsed(&["memtrace", "-p", "7", "-p", "3", "-p", "7"]).unwrap();
        assert_eq!(trace.pids, [3, 7]);
        let me = std::process::id().to_string();
        let err = parsed(&["memtrace", "-p", &me]).unwrap_err();
        assert!(err.contains("memtrace itself"));
        let trace = parsed(&["memtrace", "--", "ls", "-l"]).unwrap();
        assert_eq!(trace.command, ["ls", "-l"]);
    }

    #[test]
    fn sample_sizes() {
        assert_eq!(parse_sample_bytes("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_sample_bytes("1MB"), Ok(1_000_000));
        assert_eq!(parse_sample_bytes("4096"), Ok(4096));
        assert!(parse_sample_bytes("0").is_err());
        assert!(parse_sample_bytes("2GiB").is_err());
        assert!(parse_sample_bytes("lots").is_err());
    }

    /// A tracing run's settings from `args`, or the error.
    fn parsed(args: &[&str]) -> Result<config::Trace, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        match cli.into_run()? {
            config::Run::Trace(trace) => Ok(trace),
            run => panic!("not a tracing run: {run:?}"),
        }
    }

    #[test]
    fn modes() {
        let mode = |args: &[&str]| parsed(args).map(|trace| trace.mode);
        assert_eq!(
            mode(&["memtrace", "--all"]),
            Ok(Mode::Watch(Selection::All))
        );
        assert_eq!(mode(&["memtrace", "--oom-only"]), Ok(Mode::OomOnly));
        assert_eq!(mode(&["memtrace", "-p", "1"]), Ok(Mode::Pids));
        assert_eq!(mode(&["memtrace", "--", "ls"]), Ok(Mode::Command));
        assert_eq!(
            mode(&["memtrace", "--comm", "nginx", "--container", "abcd12"]),
            Ok(Mode::Watch(Selection::Matching(Filter {
                comm: vec!["nginx".into()],
                cgroup: None,
                container: Some("abcd12".into()),
            })))
        );
        assert!(mode(&["memtrace", "--all", "-p", "1"]).is_err());
        assert!(mode(&["memtrace", "--oom-only", "--all"]).is_err());
        assert!(mode(&["memtrace", "--comm", "x", "--", "ls"]).is_err());
        assert!(mode(&["memtrace", "--container", "zz"]).is_err());
        assert!(mode(&["memtrace", "--comm", "a-name-far-too-long"]).is_err());
        assert!(mode(&["memtrace", "--comm", "a", "--comm", "b"]).is_ok());
        assert!(mode(&["memtrace", "--oom-only", "--format", "svg"]).is_err());
        assert!(mode(&["memtrace", "--oom-only", "--format", "json"]).is_ok());
    }

    #[test]
    fn forks_are_followed_with_a_command_or_when_asked() {
        let follows = |args: &[&str]| parsed(args).map(|trace| trace.follow_forks);
        assert_eq!(follows(&["memtrace", "-p", "1"]), Ok(false));
        assert_eq!(
            follows(&["memtrace", "-p", "1", "--follow-forks"]),
            Ok(true)
        );
        assert_eq!(follows(&["memtrace", "--", "ls"]), Ok(true));
        assert_eq!(follows(&["memtrace", "--comm", "x"]), Ok(false));
        for watching in ["--all", "--oom-only"] {
            assert!(follows(&["memtrace", watching, "--follow-forks"]).is_err());
        }
        assert!(follows(&["memtrace", "--comm", "x", "--follow-forks"]).is_err());
    }

    #[test]
    fn clap_errors_become_one_line() {
        let err = Cli::try_parse_from(["memtrace", "-p", "1", "--duration", "soon"]).unwrap_err();
        let line = one_line(&err.to_string());
        assert!(
            line.starts_with("invalid value 'soon' for '--duration"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn missing_arguments_are_named_on_the_line() {
        let err = Cli::try_parse_from(["memtrace", "report"]).unwrap_err();
        assert_eq!(
            one_line(&err.to_string()),
            "the following required arguments were not provided: <SNAPSHOT.json>"
        );
    }

    #[test]
    fn limits_of_values() {
        assert!(parse_duration("366d").is_ok());
        assert_eq!(
            parse_duration("500000000000y"),
            Err("at most a year (366 days)".into())
        );
        assert!(parse_rate("0/h").is_err());
        assert!(parse_rate(&format!("{}/h", "9".repeat(400))).is_err());
        assert!(parse_size(&"9".repeat(400)).is_err());
        assert!(check_cgroup("").is_err());
        assert!(check_cgroup("/a/../b").is_err());
        assert!(check_cgroup("/").is_ok());
        assert!(check_cgroup("/sys/fs/cgroup/kubepods").is_ok());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
    fn plan(args: &OutputArgs, diff: bool) -> Result<Vec<Output>, String> {
        args.plan_for(diff, false).map(|o| o.list)
    }

    fn args(format: Option<Format>, outputs: &[&str]) -> OutputArgs {
        OutputArgs {
            format,
            outputs: outputs.iter().map(PathBuf::from).collect(),
            weight: Weight::Outstanding,
            top: None,
        }
    }

    fn formats(plan: Vec<Output>) -> Vec<Format> {
        plan.into_iter().map(|o| o.format).collect()
    }

    #[test]
    fn formats_follow_extensions_unless_given() {
        let p = plan(
            &args(
                None,
                &["a.json", "b.SVG", "c.folded", "d.txt", "e.pb.gz", "f.html"],
            ),
            false,
        );
        assert_eq!(
            formats(p.unwrap()),
            [
                Format::Json,
                Format::Svg,
                Format::Folded,
                Format::Text,
                Format::Pprof,
                Format::Html
            ]
        );
        let p = plan(&args(Some(Format::Json), &["report.out"]), false).unwrap();
        assert_eq!(p[0].path.as_deref(), Some(Path::new("report.out")));
        assert_eq!(formats(p), [Format::Json]);
        let p = plan(&args(Some(Format::Json), &["report.json"]), false).unwrap();
        assert_eq!(formats(p), [Format::Json]);
        let err = plan(&args(None, &["report.out"]), false).unwrap_err();
        assert!(err.contains("add --format"), "{err}");
        let err = plan(&args(None, &["a.json", "a.json"]), false).unwrap_err();
        assert!(err.contains("given twice"), "{err}");
        assert_eq!(
            plan(&args(None, &[]), false).unwrap(),
            [Output {
                path: None,
                format: Format::Text
            }]
        );
    }

    #[test]
    fn a_format_contradicting_an_extension_is_an_error() {
        assert_eq!(
            plan(&args(Some(Format::Text), &["a.json"]), false).unwrap_err(),
            "--format text contradicts --output a.json (a json file): drop --format, or name \
             the file for what it holds"
        );
        let err = plan(&args(Some(Format::Json), &["a.json", "b.svg"]), false).unwrap_err();
        assert!(
            err.starts_with("--format json contradicts --output b.svg"),
            "{err}"
        );
    }

    #[test]
    fn dash_and_dev_stdout_are_stdout() {
        for name in ["-", "/dev/stdout"] {
            assert_eq!(
                plan(&args(None, &[name, "a.json"]), false).unwrap(),
                [
                    Output {
                        path: None,
                        format: Format::Text
                    },
                    Output {
                        path: Some("a.json".into()),
                        format: Format::Json
                    }
                ],
                "{name}"
            );
        }
        let p = plan(&args(Some(Format::Json), &["-"]), false).unwrap();
        assert_eq!(formats(p), [Format::Json]);
        let err = plan(&args(None, &["-", "/dev/stdout"]), false).unwrap_err();
        assert!(err.contains("given twice"), "{err}");
    }

    #[test]
    fn files_on_a_terminal_show_the_text_report_too() {
        let on_terminal = |a: &OutputArgs| a.plan_for(false, true).unwrap();
        let o = on_terminal(&args(None, &["a.json", "a.svg"]));
        assert!(o.name_files);
        assert_eq!(
            formats(o.list),
            [Format::Json, Format::Svg, Format::Text],
            "the text report on stdout after the files"
        );
        // Not when stdout is asked for, nor when it is not a terminal.
        assert!(!on_terminal(&args(None, &["a.json", "-"])).name_files);
        assert!(!on_terminal(&args(None, &[])).name_files);
        let piped = args(None, &["a.json"]).plan_for(false, false).unwrap();
        assert!(!piped.name_files);
        assert_eq!(formats(piped.list), [Format::Json]);
        let err = args(Some(Format::Pprof), &[])
            .plan_for(false, true)
            .unwrap_err();
        assert!(err.starts_with("pprof output is binary"), "{err}");
    }

    #[test]
    fn diff_outputs_are_text_json_svg_or_html() {
        assert!(plan(&args(None, &["d.svg", "d.json", "d.html"]), true).is_ok());
        let err = plan(&args(None, &["d.pb.gz"]), true).unwrap_err();
        assert_eq!(
            err,
            "memtrace diff writes text, json, svg or html, not pprof"
        );
    }
}

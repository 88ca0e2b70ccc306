//! What a run was asked to do, as plain settings: the command line is
//! parsed and checked into these once, in `main` (`cli`), and nothing below
//! sees the parser's types. One struct per mode ([`Trace`], [`Offline`],
//! [`Agent`]), grouped by concern.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use memtrace_report::{
    render::{Format, Options},
    SortBy, Unwind, Weight,
};

/// Default `--max-live`.
pub const DEFAULT_MAX_LIVE: u32 = 262_144;
/// Default `--max-stacks`.
pub const DEFAULT_MAX_STACKS: u32 = 16_384;

/// Stacks in a text report or the live view without --top.
pub const DEFAULT_TOP: usize = 10;

/// What `memtrace` is to run.
#[derive(Debug)]
pub enum Run {
    Trace(Trace),
    Offline(Offline),
    Agent(Agent),
    /// `memtrace python-stacks --pid PID` (hidden): one read of a CPython
    /// process's stacks.
    PythonStacks {
        pid: u32,
        offsets_of: Option<u32>,
    },
    /// `memtrace go-layout FILE` (hidden): the Go runtime layouts of a
    /// binary, from its DWARF and from the table.
    GoLayout {
        file: PathBuf,
    },
}

/// A tracing run.
#[derive(Clone, Debug)]
pub struct Trace {
    pub mode: Mode,
    /// The `--pid` targets, sorted, without duplicates.
    pub pids: Vec<u32>,
    /// The command after `--` (empty without one).
    pub command: Vec<String>,
    /// Whether the processes targets fork are traced too (always with a
    /// command).
    pub follow_forks: bool,
    pub attach: Attach,
    pub sampling: Sampling,
    pub outputs: Outputs,
    /// The live table on a terminal (else plain lines).
    pub live_table: bool,
    /// Say more on stderr: where each probe was placed in each function.
    pub verbose: bool,
    /// `--oom-only --format json`: kills are printed as JSON lines.
    pub oom_json_lines: bool,
}

/// What a run traces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The processes given with --pid.
    Pids,
    /// The command after `--`, from its first allocation.
    Command,
    /// Every process, or every matching one, now and as they start.
    Watch(Selection),
    /// Only OOM kills, one line each.
    OomOnly,
}

/// Which processes a watching run traces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// Every process but memtrace.
    All,
    /// Processes matching every criterion given.
    Matching(Filter),
}

/// `--comm`, `--cgroup`, `--container`: a process must match each one given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Any of these names.
    pub comm: Vec<String>,
    pub cgroup: Option<String>,
    pub container: Option<String>,
}

/// How targets are hooked and what the kernel's tables hold.
#[derive(Clone, Debug)]
pub struct Attach {
    /// Files whose allocator is hooked in every target, mapped or not.
    pub allocator_libs: Vec<PathBuf>,
    /// Extra allocator symbol prefixes (`my_` for `my_malloc`).
    pub symbol_prefixes: Vec<String>,
    pub unwind: Unwind,
    /// Capacity of the live-allocation table (blocks).
    pub max_live: u32,
    /// Capacity of the stack table, and the most series kept.
    pub max_stacks: u32,
    /// The allocator programs do nothing (`--empty-programs`, the bench's
    /// floor).
    pub empty_programs: bool,
    /// Every stack's first kernel id is the same (`--stack-ids-collide`,
    /// tests).
    pub stack_ids_collide: bool,
    /// Set `runtime.MemProfileRate` in Go programs whose memory profiling
    /// is off (`--go-enable-heap-profile`).
    pub go_enable_heap_profile: bool,
    /// Open Node targets' inspectors to sample their JavaScript heaps
    /// (not `--no-runtime-attach`).
    pub node_inspector: bool,
    /// V8's mean bytes between sampled allocations.
    pub node_sampling_interval: u64,
    /// `--node-heap-diff`: the largest heap snapshotted.
    pub node_heap_diff: Option<u64>,
}

/// When and how much is measured, and how it is judged.
#[derive(Clone, Debug)]
pub struct Sampling {
    pub interval: Duration,
    /// None: until Ctrl-C or every target exits.
    pub duration: Option<Duration>,
    /// Mean bytes between sampled allocations (None: every allocation).
    pub sample_bytes: Option<u64>,
    /// Only allocations at least this old count in stacks.
    pub min_age: Option<Duration>,
    /// RSS growth (bytes per hour) that raises an alert.
    pub rss_alert: f64,
    /// Order of the stacks in reports.
    pub sort: SortBy,
}

impl Sampling {
    /// `--min-age` in seconds.
    pub fn min_age_secs(&self) -> Option<f64> {
        self.min_age.map(|d| d.as_secs_f64())
    }
}

/// Where reports go and how they are drawn.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    /// Every destination (at least one: stdout when no file is given), at
    /// most one of them stdout.
    pub list: Vec<Output>,
    /// `--top`: stacks listed (None: text shows [`DEFAULT_TOP`], the other
    /// formats every stack holding memory).
    pub top: Option<u32>,
    pub weight: Weight,
    /// Only files were asked for, with stdout a terminal: the text report
    /// is shown there too (an output of `list`), and each file written is
    /// named after it.
    pub name_files: bool,
}

/// One destination of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// None for stdout.
    pub path: Option<PathBuf>,
    pub format: Format,
}

impl Outputs {
    /// Stacks shown in text.
    pub fn text_top(&self) -> usize {
        self.top.map_or(DEFAULT_TOP, |n| n as usize)
    }

    /// The renderers' options.
    pub fn render_options(&self) -> Options {
        Options {
            text_top: self.text_top(),
            weight: self.weight,
        }
    }
}

/// `memtrace report` and `memtrace diff`.
#[derive(Clone, Debug)]
pub enum Offline {
    /// Render a saved report.
    Report { snapshot: PathBuf, outputs: Outputs },
    /// Compare two snapshots.
    Diff {
        before: PathBuf,
        after: PathBuf,
        outputs: Outputs,
    },
}

/// `memtrace agent`.
#[derive(Clone, Debug)]
pub struct Agent {
    pub listen: SocketAddr,
    pub token: Option<String>,
    pub reports_dir: PathBuf,
    pub scan_interval: Duration,
    /// Bytes per hour.
    pub alert_growth: f64,
    pub min_observation: Duration,
    pub trace_window: Duration,
    /// Sampling interval inside a trace window.
    pub window_interval: Duration,
    pub max_traces: u32,
    pub retrace_after: Duration,
    pub max_reports: u32,
    pub max_report_bytes: u64,
    pub comm: Vec<String>,
    pub verbose: bool,
    /// Its traces may open Node inspectors (`--runtime-attach`).
    pub runtime_attach: bool,
}

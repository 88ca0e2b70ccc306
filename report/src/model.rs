//! The report model: the one serde structure (the JSON snapshot's schema,
//! [`REPORT_VERSION`]) that every renderer reads and `memtrace report` and
//! `diff` load back. The tracer converts its series, verdicts and
//! symbolized stacks into it; nothing here knows how they were measured.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a stack's bytes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StackKind {
    /// malloc family, accounted in the kernel.
    Heap,
    /// Anonymous mmap made by the program itself.
    Mmap,
    /// A Go program's heap, from its runtime's own heap profile (the
    /// sampled allocations of the last completed garbage collection,
    /// unbiased as pprof does).
    #[serde(rename = "go-heap")]
    GoHeap,
    /// A Node process's JavaScript heap, from V8's sampling heap profiler
    /// (the sampled objects still live, unbiased as V8 does), read over
    /// its inspector.
    #[serde(rename = "js-heap")]
    JsHeap,
    /// A JVM's Java heap, from its leak profiler's live object samples
    /// (JFR's `jdk.OldObjectSample`), each site's share of the samples
    /// applied to the heap's growth after collections since recording
    /// began.
    #[serde(rename = "java-heap")]
    JavaHeap,
}

/// A stack's verdict, most severe first (the rules: docs/verdicts.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Leak,
    Growing,
    Plateau,
    Stable,
}

/// How the stacks of a report are ordered (`--sort`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum SortBy {
    /// Fastest-growing stacks first (robust slope of outstanding bytes).
    Growth,
    /// Most outstanding bytes first.
    Outstanding,
    /// Most outstanding allocations first.
    Count,
    /// Highest peak first (outstanding bytes at their most, at a sample):
    /// also lists the stacks that hold nothing at the end.
    Peak,
}

/// What a flamegraph's (and folded stacks') widths measure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Weight {
    /// Bytes still outstanding.
    #[default]
    Outstanding,
    /// Growth rate, bytes per hour (stacks that do not grow are left out).
    Growth,
    /// Bytes allocated while tracing, freed or not.
    Allocated,
    /// Allocations still outstanding.
    Count,
    /// Bytes outstanding at each stack's peak (as sampled): stacks that
    /// held memory and freed it count too.
    Peak,
}

/// `--unwind`: how allocation stacks are walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Unwind {
    /// Frame pointers only.
    Fp,
    /// Unwind tables (.eh_frame) for every file.
    Dwarf,
    /// Tables for files without frame pointers, frame pointers elsewhere.
    Auto,
}

/// One resolved frame. Unknown parts are None, never invented.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    #[serde(serialize_with = "hex", deserialize_with = "from_hex")]
    pub address: u64,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub module: Option<String>,
    /// A function the compiler inlined into the next frame, which has the
    /// same address: its own frame, with its own file and line (absent in
    /// JSON when false, and in reports from before this field).
    #[serde(default, skip_serializing_if = "is_false")]
    pub inlined: bool,
    /// The language of the code the frame runs: absent for native code
    /// (machine code, named by the ELF symbols or a perf map), `python`
    /// for a CPython frame (then `address` is 0, `file` and `line` are
    /// the source's, and `module` is absent), `javascript` for a frame of
    /// V8's heap profile (the same, with `column`), `java` for a frame of
    /// a JFR stack trace (`function` is `Class.method`, `file` absent: JFR
    /// does not give it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<Language>,
    /// The source column (1-based), where the language's runtime gives it
    /// (JavaScript); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

/// A frame's language, when it is not native code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Python,
    Javascript,
    Java,
}

impl Language {
    /// As reports write it.
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Javascript => "javascript",
            Language::Java => "java",
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !b
}

fn hex<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:#x}"))
}

fn from_hex<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    let digits = text.strip_prefix("0x").unwrap_or(&text);
    u64::from_str_radix(digits, 16)
        .map_err(|_| serde::de::Error::custom(format!("not a hex address: {text:?}")))
}

/// The container (and Kubernetes pod) a cgroup path belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// `"docker"`, `"containerd"`, `"cri-o"`, `"podman"`, or `"kubepods"`
    /// when the kubelet's cgroupfs driver names only a bare id (the runtime
    /// is not recorded in the path), and for pod-level cgroups.
    pub runtime: String,
    /// The full 64-hex container id; empty for a pod-level cgroup (the pod
    /// was found but no container below it).
    pub id: String,
    /// The Kubernetes pod UID with dashes (`1f2e3d4c-...`); static pods,
    /// whose UID is a 32-hex hash without dashes, keep that form.
    pub pod_uid: Option<String>,
}

impl Container {
    /// The id's first 12 characters, as `docker ps` shows it.
    pub fn short_id(&self) -> &str {
        let id = &self.id;
        id.char_indices().nth(12).map_or(id, |(i, _)| &id[..i])
    }
}

/// The cost of tracing, as of a report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Overhead {
    /// Seconds measured.
    pub seconds: f64,
    /// Probed allocation calls (malloc, calloc, realloc, ...) of the
    /// targets (with --all, the node's);
    /// with uprobe session programs, their entry runs and the return runs
    /// not skipped (each also a trap).
    pub allocation_calls: u64,
    /// Probed frees on the node.
    pub frees: u64,
    /// Time spent in memtrace's programs, all calls together (ns).
    pub program_ns: u64,
    /// Extra cost of one probed malloc+free pair over an unprobed one,
    /// measured in memtrace's own process at start (traps; ns).
    pub pair_overhead_ns: f64,
    /// Untraced malloc+free pair in memtrace's process, for scale (ns).
    pub pair_baseline_ns: f64,
    /// Estimated CPU time the node spent on tracing: trap cost of every
    /// call (half a pair each) plus program time.
    pub cpu_seconds: f64,
    /// `cpu_seconds` over the wall time, as a share of the node's CPUs.
    pub cpu_share: f64,
    pub cpus: usize,
}

impl Overhead {
    /// `cpu_seconds` over the wall time: the share of one CPU (what a
    /// single-threaded target is slowed by, about).
    pub fn one_cpu_share(&self) -> f64 {
        match self.seconds > 0.0 {
            true => self.cpu_seconds / self.seconds,
            false => 0.0,
        }
    }
}

/// What the tables cost and where they fell short over the run, for the
/// report.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct UnwindStats {
    /// Files whose frames were stepped through their table.
    pub files_with_tables: u64,
    /// Files stepped by frame pointer because their code keeps them.
    pub files_with_frame_pointers: u64,
    /// Files with no usable table (none in the file, unreadable, or no
    /// room left): stepped by frame pointer.
    pub files_without_tables: u64,
    /// Files whose tables were dropped: no traced process mapped them any
    /// more.
    #[serde(default)]
    pub files_dropped: u64,
    /// The most rows loaded into the kernel at once (8 bytes each).
    pub rows: u64,
    /// Mappings left out because a process had more than the walker keeps.
    pub mappings_dropped: u64,
    /// Processes whose mappings could not be given to the walker (its
    /// table of processes was full): walked by frame pointer.
    #[serde(default)]
    pub processes_without_tables: u64,
}

/// Bumped when a field changes meaning or disappears.
pub const REPORT_VERSION: u32 = 2;

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    pub duration_secs: f64,
    pub interval_secs: f64,
    /// How `stacks` are ordered.
    pub sort: SortBy,
    /// With `--min-age`: stacks count only allocations at least this old.
    pub min_age_secs: Option<f64>,
    pub targets: Vec<TargetReport>,
    pub totals: Totals,
    pub losses: Losses,
    pub counters: Counters,
    /// Processes the kernel's OOM killer chose while memtrace ran, in
    /// order, with what held their memory when they were traced.
    #[serde(default)]
    pub oom_kills: Vec<OomKill>,
    /// With --all: what tracing cost the node.
    #[serde(default)]
    pub overhead: Option<Overhead>,
    /// With --sample-bytes: the mean bytes between samples; heap bytes and
    /// counts are then unbiased estimates.
    #[serde(default)]
    pub sample_bytes: Option<u64>,
    /// How allocation functions were probed (None: not traced, or a report
    /// from before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<ProbesReport>,
    /// How heap stacks were walked, and how many came out truncated.
    #[serde(default)]
    pub unwind: Option<UnwindReport>,
    /// Files whose frames in `stacks` have no names (no symbols found).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unnamed_frames: Vec<UnnamedFrames>,
    /// Whether `stacks` lists every stack that held memory at a sample
    /// (`peak.bytes > 0`), those holding nothing at the end too (`--sort
    /// peak`, `--weight peak`); otherwise only the stacks holding memory.
    #[serde(default)]
    pub listed_by_peak: bool,
    pub stacks: Vec<StackReport>,
}

/// How allocation functions were probed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbesReport {
    /// `session`: uprobe session programs, whose unsampled calls skip their
    /// return probe (kernels 6.13+); `classic`: an entry uprobe and a
    /// uretprobe per function.
    pub path: String,
    /// The same in words (for `classic`, why).
    pub detail: String,
    /// An interpreter with pymalloc inlined into its callers was traced
    /// (link-time optimized CPython such as Debian's): its objects under
    /// 512 B were counted by the pool pymalloc takes for them, this many
    /// bytes each, at the line that needed the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pymalloc_pool_bytes: Option<u64>,
    /// The probed functions whose probe the kernel single-steps, no
    /// instruction it emulates being within reach (`malloc in
    /// /usr/lib/libfoo.so`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub single_stepped: Vec<String>,
    /// Where each hooked function's probe went (what `--verbose` says),
    /// by file and function.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<ProbePlacement>,
}

/// Where a hooked function's probe went.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProbePlacement {
    /// The file, as memtrace opened it.
    pub file: String,
    pub function: String,
    /// The function's offset in the file; absent for a wrapper left
    /// unprobed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_offset: Option<u64>,
    /// Where the probe is and why (`+3: je 0C8h (emulated by the kernel),
    /// after test rdi,rdi`), or why there is none (`not probed at its
    /// entry: it calls realloc (at +11), …`).
    pub placement: String,
}

/// How the heap stacks were walked (`--unwind`) and where walks fell short.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnwindReport {
    pub mode: Unwind,
    /// Distinct heap stacks whose walk stopped before the outermost frame
    /// (the frame limit, an unreadable frame, code the walker could not
    /// step through), of `heap_stacks`.
    pub truncated_stacks: u64,
    pub heap_stacks: u64,
    /// Allocations whose stack walk was truncated.
    pub truncated_walks: u64,
    /// Frames stepped by frame pointer for want of a table: JIT code (no
    /// file), a library mapped since memtrace last read the mappings.
    pub frames_without_table: u64,
    /// The tables loaded (None with `--unwind fp`).
    pub tables: Option<UnwindStats>,
}

/// A process the kernel's OOM killer chose (`oom/mark_victim`), and, when
/// memtrace traced it, the stacks holding its memory at that moment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OomKill {
    /// Seconds since tracing started.
    pub t: f64,
    /// Wall-clock time of the kill (RFC 3339, UTC).
    pub time: String,
    pub pid: u32,
    pub comm: String,
    pub uid: u32,
    /// The process whose allocation made the kernel kill (often the victim).
    pub trigger_pid: u32,
    /// The victim's memory when it was chosen, as the kernel reports it.
    pub total_vm_bytes: u64,
    pub anon_rss_bytes: u64,
    pub file_rss_bytes: u64,
    pub shmem_rss_bytes: u64,
    pub pgtables_bytes: u64,
    pub oom_score_adj: i32,
    /// Its cgroup (None when it was gone before memtrace could read it and
    /// was not traced).
    pub cgroup: Option<String>,
    pub container: Option<Container>,
    /// Whether memtrace traced it (only then are there stacks).
    pub traced: bool,
    /// Outstanding bytes of all its traced stacks when it was chosen.
    pub traced_outstanding_bytes: u64,
    /// Its stacks holding the most memory then, largest first.
    pub top_stacks: Vec<StackReport>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TargetReport {
    pub pid: u32,
    pub comm: String,
    pub exe: Option<String>,
    /// Its cgroup and the container that shows (watching modes; None when
    /// not known).
    #[serde(default)]
    pub cgroup: Option<String>,
    #[serde(default)]
    pub container: Option<Container>,
    /// Whether the process exited before the report.
    pub exited: bool,
    /// Allocator files hooked in it.
    pub allocators: Vec<String>,
    /// What its traced stacks hold at the end (all of them, not only the
    /// ones shown), and how many of those grow (verdict leak or growing).
    #[serde(default)]
    pub outstanding_bytes: u64,
    #[serde(default)]
    pub stacks_holding_memory: u64,
    #[serde(default)]
    pub growing_stacks: u64,
    /// Its traced stacks together at their most, as sampled (None in
    /// reports from before this field, or before any sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<Peak>,
    /// Its resident memory over time (None when /proc could not tell).
    pub memory: Option<MemoryReport>,
    /// How long it ran before its probes were in, when it could not be
    /// held until then (None: traced from its first instruction, or from
    /// the moment it was attached to by pid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseen: Option<Unseen>,
    /// Seconds into the run by which its probes were gone while it ran on:
    /// its main thread exited before its other threads, and on the classic
    /// probe path (kernels before 6.13) the kernel's per-process probes
    /// belong to the main thread. What it allocated and freed after that
    /// is not in the report, which shows what it held then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes_lost_at_s: Option<f64>,
    /// The file mappings its reported frames lie in, its executable first
    /// (absent in reports from before this field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mappings: Vec<CodeMapping>,
    /// What was read from its Go runtime (Go programs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go: Option<GoReport>,
    /// What was read through its inspector (Node processes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeReport>,
    /// What was read from its JFR recording (HotSpot JVMs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub java: Option<JavaReport>,
}

/// A HotSpot JVM's Java heap, read from a JFR recording of its memory
/// events that memtrace started through the JVM's attach mechanism and
/// stopped at the end.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JavaReport {
    /// "recorded" (its heap was read); "refused" (not attached: `reason`
    /// says why; its native memory is still traced); "lost" (the
    /// recording could no longer be read: `reason`); "attaching".
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The recording's name in the JVM (`jcmd PID JFR.check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// Dumps read; dumps that failed; how long the last took (ms,
    /// command and reading) and its size.
    pub reads: u64,
    pub reads_failed: u64,
    pub read_ms: f64,
    pub dump_bytes: u64,
    /// Live objects the leak profiler holds at the last read, and of
    /// those (left out of the stacks) the ones memtrace's attaching made:
    /// allocated by the JVM's attach listener or JFR's own threads.
    pub samples: u64,
    #[serde(default)]
    pub own_samples: u64,
    /// Samples whose allocation buffer refill was not in the dumps (a
    /// lost event): weighed by their thread's last buffer size; and those
    /// with none to go by, left out of the stacks.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub samples_weight_guessed: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub samples_unweighed: u64,
    /// Java stacks left out, past the most followed per process (16,384).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stacks_left_out: u64,
    /// The heap in use after each collection: (seconds since the run's
    /// start, bytes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub heap_after_gc: Vec<(f64, u64)>,
    /// Each sampled site's paths to a GC root, found by the JVM at the
    /// last read (the most common first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retained: Vec<JavaRetention>,
    /// How long the JVM's last walk for those paths took (ms; it stops
    /// the JVM, and is cut at 1 s), and whether it told which samples are
    /// reachable (then the stacks count those only).
    pub walk_ms: f64,
    pub reachability: bool,
    /// Whether its recording is known ended: stopped by memtrace at the
    /// end, or ended with the JVM.
    pub stopped: bool,
}

/// Live samples of one allocation site held along one path.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JavaRetention {
    /// The allocating frame (`Class.method`) and line.
    pub function: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The sampled objects' class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    pub samples: u64,
    /// From the object's referrer to the field nearest the root
    /// (`java.util.ArrayList.elementData`, `Leaks.retained (static)`).
    pub path: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
}

/// A Node process's JavaScript heap, sampled by V8 and read over the
/// process's own inspector (opened with SIGUSR1, closed again at the end).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// "read" (its heap was sampled); "refused" (not opened: `reason`
    /// says why; its native memory is still traced); "lost" (the session
    /// ended early: `reason`).
    pub inspector: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where its inspector listened, in its network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// V8's mean bytes between sampled allocations.
    pub sampling_interval_bytes: u64,
    /// Profiles read; reads that got no answer in time; how long the last
    /// took (ms).
    pub reads: u64,
    pub reads_failed: u64,
    pub read_ms: f64,
    /// JavaScript stacks of the profile left out, past the most followed
    /// per process (65,536).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stacks_left_out: u64,
    /// Whether memtrace closed the inspector at the end and saw nothing
    /// listen on its address afterwards.
    pub closed: bool,
    /// Peers other than memtrace seen connected to the inspector while it
    /// was open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub other_connections: Vec<String>,
    /// Two heap snapshots compared (`--node-heap-diff`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap_diff: Option<HeapDiff>,
}

/// A Node process's JavaScript heap at the start and at the end, from two
/// V8 heap snapshots: what grew, by object and retaining path, and by
/// constructor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeapDiff {
    /// "compared"; "refused" (its heap was larger than the limit, or the
    /// process ended before the second: `reason`); "failed" (`reason`).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The heap in each snapshot: objects and their own bytes.
    pub objects_before: u64,
    pub objects_after: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// How long each snapshot took, from the request to its last chunk
    /// parsed (ms; the process is stopped for most of it), and the text V8
    /// streamed for each (bytes).
    pub pause_ms: Vec<f64>,
    pub snapshot_bytes: Vec<u64>,
    /// Objects of the program that were there at the start and whose
    /// retained size grew the most, each with what holds it; the largest
    /// growth first. An object held by another listed one is left out
    /// when it explains most of that one's growth (the innermost named).
    pub grown: Vec<GrownObject>,
    /// Constructors whose objects' own bytes grew the most.
    pub constructors: Vec<ConstructorGrowth>,
}

/// An object whose retained size (what would be freed with it) grew.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GrownObject {
    /// Its constructor ("Map", "Array", a class), or "(closure)".
    pub constructor: String,
    /// V8's id of it (the same in both snapshots, and in DevTools).
    pub id: u64,
    pub retained_before: u64,
    pub retained_after: u64,
    /// A Map's or Set's entries, in each snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries_before: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries_after: Option<u64>,
    /// What holds it, nearest first, each step the nearest retainer to
    /// the heap's roots (as DevTools' retainers view lists them first).
    pub held_by: Vec<Retainer>,
}

/// One step of a retaining path: `holder` holds the object below it by
/// `edge` `name` (a "context" edge is a variable of a function's scope).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Retainer {
    /// "context" (a variable), "property", "element", "internal", ...
    pub edge: String,
    pub name: String,
    /// The holder's constructor ("system / Context" for a scope).
    pub holder: String,
    /// For a scope: the function whose scope it is, and where that
    /// function starts (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

/// One constructor's objects in both snapshots.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConstructorGrowth {
    pub constructor: String,
    pub objects_before: u64,
    pub objects_after: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// What memtrace read from a Go program's runtime, from outside.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoReport {
    /// The Go that built it ("go1.19.8").
    pub version: String,
    /// Where the runtime's layouts came from: "dwarf", or "table" (the
    /// binary has no DWARF: memtrace's checked table for its version).
    pub layout: String,
    /// The heap profile: "read"; "off" (the linker switched memory
    /// profiling off: the heap is seen through the runtime's mmap calls
    /// only); "enabled" (memtrace set `runtime.MemProfileRate`, as
    /// `--go-enable-heap-profile` asked: allocations since are sampled);
    /// "unreadable" (its first read did not parse as the layout says).
    pub heap_profile: String,
    /// `runtime.MemProfileRate` as last read (bytes per sample).
    pub profile_rate: u64,
    /// Reads of the profile; buckets in the last; buckets that did not
    /// parse (all reads); reads cut short (a bucket's link unreadable).
    pub reads: u64,
    pub buckets: u64,
    pub buckets_skipped: u64,
    pub reads_cut: u64,
    /// How long the last read of the profile and goroutines took (ms).
    pub read_ms: f64,
    /// What the runtime mapped for its heap while traced: counted by the
    /// heap profile's stacks, not as mappings of their own.
    #[serde(default)]
    pub heap_mapped_bytes: u64,
    /// The goroutines, when the list could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goroutines: Option<GoroutinesReport>,
}

/// A Go program's goroutines (the runtime's own ones left out, as
/// `runtime.NumGoroutine` and the goroutine profile count them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoroutinesReport {
    /// Goroutines at the last read, and their stacks' bytes.
    pub count: u64,
    pub stack_bytes: u64,
    /// The count over the run (sampled at each interval).
    pub series: Vec<CountSample>,
    /// The count's verdict and growth (goroutines per second).
    pub verdict: Verdict,
    pub growth_per_sec: f64,
    /// Goroutines that did not read or were left unread (all reads).
    pub skipped: u64,
    /// Live goroutines by where they were created, what they started in
    /// and what they are doing; most first.
    pub groups: Vec<GoroutineGroup>,
}

/// A count at a time.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CountSample {
    pub t: f64,
    pub count: u64,
}

/// Goroutines created at one `go` statement, started in one function,
/// in one state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoroutineGroup {
    pub count: u64,
    pub stack_bytes: u64,
    /// "chan receive", "select", "sleep", "IO wait", "running", ...
    pub state: String,
    /// The `go` statement (innermost first when inlined).
    pub created_at: Vec<Frame>,
    /// The function it started in.
    pub start: Option<String>,
    pub verdict: Verdict,
    pub growth_per_sec: f64,
}

/// A time a target ran unseen: allocations it made then are not in the
/// report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unseen {
    /// What it ran unseen after: "fork" (a followed child) or "exec" (its
    /// new image).
    pub after: String,
    /// For how long, in milliseconds.
    pub ms: f64,
}

/// Where a process mapped code from a file, as profilers and symbol servers
/// (pprof mappings, Parca, Pyroscope) identify it: the address range, the
/// file offset it starts at, the file and its GNU build id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeMapping {
    #[serde(serialize_with = "hex", deserialize_with = "from_hex")]
    pub start: u64,
    #[serde(serialize_with = "hex", deserialize_with = "from_hex")]
    pub end: u64,
    pub file_offset: u64,
    pub path: String,
    /// Lowercase hex (None: the file has none, or could not be read).
    pub build_id: Option<String>,
}

impl CodeMapping {
    pub fn contains(&self, address: u64) -> bool {
        self.start <= address && address < self.end
    }
}

/// Frames of one file that no symbol named, and what would name them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnnamedFrames {
    /// The file, as the process mapped it.
    pub module: String,
    /// Distinct frames (addresses) of the reported stacks left unnamed.
    pub frames: u64,
    /// What to install or set: `install memcached-dbgsym or point
    /// DEBUGINFOD_URLS at a debuginfod server`.
    pub hint: String,
}

/// One reading of a process's resident memory.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemorySample {
    /// Seconds since tracing started.
    pub t: f64,
    pub rss_bytes: u64,
    /// Anonymous resident memory (heap, anonymous mappings).
    pub anon_bytes: u64,
    /// Outstanding bytes of its traced stacks at that time.
    pub traced_bytes: u64,
}

/// A process's resident memory over the run and how much of its growth the
/// traced stacks explain.
#[derive(Debug, Serialize, Deserialize)]
pub struct MemoryReport {
    pub samples: Vec<MemorySample>,
    pub rss_growth_bytes_per_hour: f64,
    pub anon_growth_bytes_per_hour: f64,
    pub traced_growth_bytes_per_hour: f64,
    /// Traced growth / anonymous RSS growth (None while anonymous RSS does
    /// not grow). Above 1 when traced blocks are not all touched yet.
    pub explained_share: Option<f64>,
    /// RSS grows faster than the threshold (`--rss-alert`).
    pub alert: bool,
    pub alert_threshold_bytes_per_hour: f64,
    /// The highest RSS read, at every sample (not only the ones kept in
    /// `samples`), and when (0 in reports from before these fields).
    #[serde(default)]
    pub peak_rss_bytes: u64,
    #[serde(default)]
    pub peak_rss_t: f64,
}

/// The most memory held at one sample: a stack's outstanding memory, or a
/// target's stacks together. Sampled every `--interval`: what was
/// allocated and freed between two samples is not seen, which
/// `bound_bytes` bounds (docs/outputs.md#peaks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// Outstanding bytes at the peak (every outstanding allocation, with
    /// `--min-age` too).
    pub bytes: u64,
    pub allocations: u64,
    /// When, in seconds since tracing started: the first sample that held
    /// `bytes`.
    pub t: f64,
    /// The most that can have been outstanding at any time: over every
    /// interval, what was outstanding at its start plus every byte
    /// allocated during it. Equal to `bytes` when the peak is exact.
    pub bound_bytes: u64,
}

impl Peak {
    /// Whether no higher peak can have been missed between samples.
    pub fn exact(&self) -> bool {
        self.bytes >= self.bound_bytes
    }
}

/// Sums over every stack (not only the ones shown).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Totals {
    pub outstanding_bytes: u64,
    pub outstanding_allocations: u64,
    pub allocations: u64,
    pub frees: u64,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    /// Stacks seen while tracing.
    pub stacks: u64,
    /// Stacks with outstanding memory at the end.
    pub stacks_holding_memory: u64,
    /// The same sums for each kind of stack seen (heap blocks and
    /// mappings are different things: bytes add up, counts do not mean
    /// the same); empty in reports from before the split.
    #[serde(default)]
    pub by_kind: BTreeMap<StackKind, KindTotals>,
}

/// [`Totals`] of one kind of stack. For `mmap`, allocations are mmap
/// calls and frees the mappings wholly unmapped since.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindTotals {
    pub outstanding_bytes: u64,
    pub outstanding_allocations: u64,
    pub allocations: u64,
    pub frees: u64,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub stacks: u64,
    pub stacks_holding_memory: u64,
}

impl Totals {
    /// Adds sums of `kind`'s stacks to the totals and to that kind's.
    pub fn add(&mut self, kind: StackKind, t: &KindTotals) {
        self.by_kind.entry(kind).or_default().add(t);
        self.outstanding_bytes += t.outstanding_bytes;
        self.outstanding_allocations += t.outstanding_allocations;
        self.allocations += t.allocations;
        self.frees += t.frees;
        self.allocated_bytes += t.allocated_bytes;
        self.freed_bytes += t.freed_bytes;
        self.stacks += t.stacks;
        self.stacks_holding_memory += t.stacks_holding_memory;
    }
}

impl KindTotals {
    /// Adds `t` to these sums.
    pub fn add(&mut self, t: &KindTotals) {
        self.outstanding_bytes += t.outstanding_bytes;
        self.outstanding_allocations += t.outstanding_allocations;
        self.allocations += t.allocations;
        self.frees += t.frees;
        self.allocated_bytes += t.allocated_bytes;
        self.freed_bytes += t.freed_bytes;
        self.stacks += t.stacks;
        self.stacks_holding_memory += t.stacks_holding_memory;
    }
}

/// Events memtrace could not account. Non-zero values mean the report is
/// incomplete (never inflated: a lost allocation is missing, a lost free
/// cannot create a leak).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Losses {
    /// Allocations not recorded: live-allocation table full (`--max-live`).
    pub live_map_full: u64,
    /// Allocations whose stack could not be captured (stack table full, or
    /// other stacks at each of its candidate ids): counted under an unknown
    /// stack.
    pub stack_lost: u64,
    /// Allocations not recorded: per-stack table full (`--max-stacks`).
    pub stack_totals_full: u64,
    /// Allocator returns seen without their entry (attached mid-call).
    pub return_without_entry: u64,
    /// Allocator calls that never returned (longjmp) and were discarded.
    pub stale_entry: u64,
    /// Allocator calls not traced: in-flight table full.
    pub inflight_full: u64,
    /// Mapping events dropped: ring buffer full.
    pub ring_buffer_full: u64,
    /// Addresses handed out again while still recorded live: a free was
    /// missed (an unprobed path); the old block was counted as freed.
    pub address_reused: u64,
    /// Processes forked by targets that could not be followed: the kernel's
    /// target table was full.
    #[serde(default)]
    pub targets_full: u64,
    /// New stacks that got no series: memtrace's table of stacks
    /// (`--max-stacks`) was full of stacks holding memory. Their bytes are
    /// in the totals, under no stack.
    #[serde(default)]
    pub series_full: u64,
    /// Anonymous mappings not recorded: the table of live mappings
    /// (`--max-live`) was full.
    #[serde(default)]
    pub mapping_table_full: u64,
    /// Processes forked by targets that could not be held until their
    /// probes were in (the table of held children was full): each ran
    /// unseen for a while (its target says how long).
    #[serde(default)]
    pub hold_full: u64,
    /// Allocations in a CPython process recorded without Python frames:
    /// the allocating thread's state was not found in the interpreter's
    /// thread list (a thread starting or ending, or not running Python).
    #[serde(default)]
    pub python_no_thread: u64,
}

impl Losses {
    pub fn nonzero(&self) -> Vec<(&'static str, u64)> {
        [
            ("live_map_full", self.live_map_full),
            ("stack_lost", self.stack_lost),
            ("stack_totals_full", self.stack_totals_full),
            ("return_without_entry", self.return_without_entry),
            ("stale_entry", self.stale_entry),
            ("inflight_full", self.inflight_full),
            ("ring_buffer_full", self.ring_buffer_full),
            ("address_reused", self.address_reused),
            ("targets_full", self.targets_full),
            ("series_full", self.series_full),
            ("mapping_table_full", self.mapping_table_full),
            ("hold_full", self.hold_full),
            ("python_no_thread", self.python_no_thread),
        ]
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .collect()
    }

    /// What makes room against the non-zero losses: the options to raise,
    /// each once (`raise --max-live`), or None when no option would help.
    pub fn remedy(&self) -> Option<String> {
        let mut options: Vec<&str> = Vec::new();
        for (counter, _) in self.nonzero() {
            let option = match counter {
                "live_map_full" | "mapping_table_full" => "--max-live",
                "stack_lost" | "stack_totals_full" | "series_full" => "--max-stacks",
                _ => continue,
            };
            if !options.contains(&option) {
                options.push(option);
            }
        }
        (!options.is_empty()).then(|| format!("raise {}", options.join(" and ")))
    }
}

/// Informational counters (not losses).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Frees of blocks memtrace never saw allocated: allocated before
    /// tracing started, or by allocator internals (glibc frees its
    /// per-thread caches when threads exit).
    pub free_unknown: u64,
    /// Allocation calls that failed (returned NULL).
    pub failed_allocations: u64,
    /// mmap/mremap calls (attempts, failed ones included) made inside
    /// allocator calls: counted once, as the allocation that caused them.
    pub nested_mappings: u64,
    /// Anonymous mappings the dynamic loader made for itself (not counted).
    pub loader_mappings: u64,
    /// PROT_NONE anonymous mappings: address-space reservations, not memory
    /// (not counted).
    pub reservations: u64,
    /// Allocator calls made inside another probed allocator call (glibc's
    /// realloc(NULL, n) tail-calls malloc): accounted once, by the outer call.
    pub nested_calls: u64,
    /// Watched processes that exited and whose state memtrace dropped
    /// (kernel tables, series, mappings): what keeps a busy node bounded.
    #[serde(default)]
    pub processes_dropped: u64,
    /// Stack series dropped while they held nothing, to keep memtrace's
    /// table of stacks within `--max-stacks` (what they counted stays in
    /// the totals; a heap stack that allocates again gets a new series).
    #[serde(default)]
    pub stacks_evicted: u64,
    /// Stacks taken out of the kernel's stack table while they held
    /// nothing and were idle, to leave room for new ones when it was three
    /// quarters full (what they counted stays in the totals; one that
    /// allocates again is walked and counted anew).
    #[serde(default)]
    pub stacks_recycled: u64,
    /// Allocations whose Python frames were cut at the walk's depth (24) or
    /// at an unreadable frame: their outermost Python frames are missing
    /// (deep import chains, mostly).
    #[serde(default)]
    pub python_truncated: u64,
    /// Unsampled allocator calls whose return probe was skipped (uprobe
    /// session programs with `--sample-bytes`).
    #[serde(default)]
    pub returns_skipped: u64,
    /// pymalloc pools counted freed when pymalloc took them again (in an
    /// interpreter with pymalloc inlined, where pools are the unit): an
    /// emptied pool goes back to its arena unseen, and counts outstanding
    /// until then.
    #[serde(default)]
    pub pools_reused: u64,
    /// pymalloc pools counted freed when their arena was unmapped.
    #[serde(default)]
    pub pools_unmapped: u64,
    /// Stack walks recorded at another id because their first candidate
    /// held a different stack (32-bit ids collide: about once a run among
    /// an interpreter start's 47,000 stacks). Not a loss.
    #[serde(default)]
    pub stack_ids_moved: u64,
    /// Runs of probes on an instruction the kernel single-steps (~10 µs
    /// each; the functions are in `probes.single_stepped`). Not a loss: a
    /// cost.
    #[serde(default)]
    pub stepped_probe_runs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackReport {
    pub pid: u32,
    pub kind: StackKind,
    /// Outstanding now (with `--min-age`: only allocations at least that old).
    pub outstanding_bytes: u64,
    pub outstanding_allocations: u64,
    pub allocated_bytes: u64,
    pub freed_bytes: u64,
    pub allocations: u64,
    pub frees: u64,
    pub verdict: Verdict,
    pub verdict_reason: String,
    /// Robust (Theil–Sen) slope of the outstanding bytes since the series
    /// left its starting level (for a plateau: over its flat part); 0 when
    /// not `rated`.
    pub growth_bytes_per_sec: f64,
    /// Whether the series has the intervals a growth rate needs (as many as
    /// a leak: docs/verdicts.md). When not, no rate is shown and the stack
    /// ranks by its outstanding bytes; reports from before this field
    /// load as rated.
    #[serde(default = "rated_before")]
    pub rated: bool,
    pub intervals: u64,
    pub grew_intervals: u64,
    pub early_growth_bytes: i64,
    pub late_growth_bytes: i64,
    /// Age of the oldest live allocation (None when none is live).
    pub oldest_age_secs: Option<f64>,
    /// Live bytes by age.
    pub age_histogram: Vec<AgeBucket>,
    /// Outstanding memory at every sample (bounded: decimated on long runs).
    pub series: Vec<SeriesPoint>,
    /// Innermost first; frames[0] is the function that called the allocator.
    pub frames: Vec<Frame>,
    /// The walk stopped before the outermost frame: outer callers missing.
    #[serde(default)]
    pub truncated: bool,
    /// Its outstanding memory at its most (None in reports from before
    /// this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak: Option<Peak>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgeBucket {
    pub min_secs: f64,
    /// None for the last, open-ended bucket.
    pub max_secs: Option<f64>,
    pub bytes: u64,
    pub allocations: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeriesPoint {
    pub t: f64,
    pub bytes: u64,
    pub allocations: u64,
}

/// How many of `stacks` have each verdict, most severe first: "1 leak,
/// 2 plateau" (with `zeros`, every verdict is named, none or not).
pub fn verdict_counts<'a>(
    stacks: impl IntoIterator<Item = &'a StackReport>,
    zeros: bool,
) -> String {
    const ALL: [Verdict; 4] = [
        Verdict::Leak,
        Verdict::Growing,
        Verdict::Plateau,
        Verdict::Stable,
    ];
    let mut counts = [0usize; ALL.len()];
    for s in stacks {
        if let Some(i) = ALL.iter().position(|v| *v == s.verdict) {
            counts[i] += 1;
        }
    }
    ALL.iter()
        .zip(counts)
        .filter(|&(_, n)| zeros || n > 0)
        .map(|(v, n)| format!("{n} {}", name_of(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A frame's name in stack-based formats (folded, flamegraph, pprof
/// functions, diff keys): the function, else `module+0xaddress`, else the
/// address.
pub fn frame_name(f: &Frame) -> String {
    match (&f.function, &f.module) {
        (Some(function), _) => function.clone(),
        (None, Some(module)) => format!(
            "{}+{:#x}",
            module.rsplit('/').next().unwrap_or(module),
            f.address
        ),
        (None, None) => format!("{:#x}", f.address),
    }
}

/// What reports from before [`StackReport::rated`] meant.
fn rated_before() -> bool {
    true
}

/// A stack's weight in stack-based formats (0 leaves it out).
pub fn weight(s: &StackReport, weight: Weight) -> u64 {
    match weight {
        Weight::Outstanding => s.outstanding_bytes,
        Weight::Growth => (s.growth_bytes_per_sec * 3600.0).round().max(0.0) as u64,
        Weight::Allocated => s.allocated_bytes,
        Weight::Count => s.outstanding_allocations,
        Weight::Peak => s.peak.map_or(0, |p| p.bytes),
    }
}

/// The name a value serializes to (`leak`, `heap`, `growth`): what every
/// renderer prints for an enum of the model.
pub fn name_of<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Small reports for the renderers' unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A live target without memory series.
    pub(crate) fn target(pid: u32, comm: &str) -> TargetReport {
        TargetReport {
            pid,
            comm: comm.into(),
            exe: None,
            cgroup: None,
            container: None,
            exited: false,
            allocators: Vec::new(),
            outstanding_bytes: 0,
            stacks_holding_memory: 0,
            growing_stacks: 0,
            peak: None,
            memory: None,
            unseen: None,
            probes_lost_at_s: None,
            mappings: Vec::new(),
            go: None,
            node: None,
            java: None,
        }
    }

    pub(crate) fn stack(function: &str, verdict: Verdict, series: &[u64]) -> StackReport {
        StackReport {
            pid: 7,
            kind: StackKind::Heap,
            outstanding_bytes: *series.last().unwrap(),
            outstanding_allocations: 3,
            allocated_bytes: 0,
            freed_bytes: 0,
            allocations: 3,
            frees: 0,
            verdict,
            verdict_reason: String::new(),
            growth_bytes_per_sec: 1024.0 / 60.0,
            rated: true,
            intervals: 0,
            grew_intervals: 0,
            early_growth_bytes: 0,
            late_growth_bytes: 0,
            oldest_age_secs: None,
            age_histogram: Vec::new(),
            series: series
                .iter()
                .enumerate()
                .map(|(i, &bytes)| SeriesPoint {
                    t: i as f64,
                    bytes,
                    allocations: 0,
                })
                .collect(),
            frames: ["leaky", "main"]
                .iter()
                .map(|f| Frame {
                    address: 0x1000,
                    function: Some(f.to_string()),
                    file: None,
                    line: None,
                    module: None,
                    inlined: false,
                    language: None,
                    column: None,
                })
                .take(if function.is_empty() { 0 } else { 2 })
                .collect(),
            truncated: false,
            peak: None,
        }
    }

    pub(crate) fn report(stacks: Vec<StackReport>) -> Report {
        Report {
            version: 2,
            duration_secs: 12.0,
            interval_secs: 1.0,
            sort: SortBy::Growth,
            min_age_secs: None,
            targets: Vec::new(),
            totals: Totals {
                outstanding_bytes: 2048,
                stacks_holding_memory: 2,
                ..Totals::default()
            },
            losses: Losses::default(),
            oom_kills: Vec::new(),
            overhead: None,
            sample_bytes: None,
            probes: None,
            unwind: None,
            unnamed_frames: Vec::new(),
            listed_by_peak: false,
            counters: Counters::default(),
            stacks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_from_before_peaks_load() {
        let mut s = fixtures::stack("leaky", Verdict::Leak, &[0, 10]);
        s.peak = Some(Peak {
            bytes: 10,
            allocations: 1,
            t: 1.0,
            bound_bytes: 10,
        });
        let mut r = fixtures::report(vec![s]);
        r.listed_by_peak = true;
        let mut json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["stacks"][0]["peak"]["bound_bytes"], 10);
        json.as_object_mut().unwrap().remove("listed_by_peak");
        json["stacks"][0].as_object_mut().unwrap().remove("peak");
        let old: Report = serde_json::from_value(json).unwrap();
        assert!(!old.listed_by_peak);
        assert_eq!(old.stacks[0].peak, None);
    }

    #[test]
    fn short_ids() {
        let short = |id: &str| {
            let c = Container {
                runtime: "docker".into(),
                id: id.into(),
                pod_uid: None,
            };
            c.short_id().to_string()
        };
        let id = "3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e";
        assert_eq!(short(id), "3f4e5d6c7b8a");
        assert_eq!(short("abc"), "abc");
        assert_eq!(short(""), "");
        assert_eq!(short("ééééééééééééé"), "éééééééééééé");
    }
}

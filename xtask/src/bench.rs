//! `cargo xtask bench`: what tracing costs a malloc-heavy program, against
//! the peers, in one run. The program (tests/workloads/bench_alloc.c) times
//! allocate+free pairs over a ring of live blocks; it runs on a private copy
//! of libc, so that system-wide probes (bpftrace 0.17's `-p` does not filter
//! uprobes) only ever hit it. Configurations, interleaved and repeated:
//!
//! - untraced;
//! - the naive floor: empty bpftrace probes at offset 0 of each function
//!   (entry + return probe on the allocation functions, entry on free) —
//!   what any offset-0 tracer pays before doing any work;
//! - a bpftrace memleak-style script (per-address size and stack, per-stack
//!   outstanding sum), like bcc's memleak;
//! - memtrace, full tracing (stacks walked `--unwind auto`: the program's
//!   frames by frame pointer, libc's through its unwind table);
//! - memtrace, full tracing, `--unwind fp` and `--unwind dwarf` (every
//!   frame through a table): what the unwinder costs next to the
//!   frame-pointer walk;
//! - memtrace, sampled (`--sample-bytes 512KiB`).
//!
//! Then the same for a Python interpreter (`python`: per loop step, with
//! CPython's tracemalloc beside).
//!
//! A tracer counts as attached once its breakpoints are in the program's
//! libc (read back through /proc/PID/mem), so no pair is timed half-traced.
//! Prints a table of the medians and the ratios, memtrace's own CPU and peak
//! RSS, writes the same as JSON (target/xtask/bench.json) and, rendered
//! from that JSON as Markdown, into docs/performance.md between the lines
//! [`DOCS_BEGIN`] and [`DOCS_END`]. Benchmarks print numbers; tests never
//! assert timings.

use std::{
    fs,
    io::{BufRead, BufReader, Read, Seek, SeekFrom, Write},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{build, cmd};

mod allocators;
mod golang;
mod java;
mod node;
mod programs;
mod python;
mod startup;

#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// Repetitions of every configuration (the median is reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Timed pairs per run (fewer run faster; the slow configurations cost
    /// ~15 µs a pair).
    #[arg(long, default_value_t = 200_000)]
    pairs: u64,
    /// Time this memtrace binary instead of building one (`cargo xtask
    /// build`): to compare two builds, bench each with --no-docs.
    #[arg(long, value_name = "PATH")]
    memtrace: Option<PathBuf>,
    /// Leave docs/performance.md alone (the results still go to
    /// target/xtask/bench.json).
    #[arg(long)]
    no_docs: bool,
    /// Run only the Go part (reading a Go program's runtime from outside),
    /// in a minute or two; its table in docs/performance.md is its own.
    #[arg(long)]
    go_only: bool,
    /// Run only the Node part (an HTTP server's requests a second,
    /// untraced and traced), in a minute; its table in
    /// docs/performance.md is its own.
    #[arg(long)]
    node_only: bool,
    /// Run only the Java part (a JVM's requests a second, untraced and
    /// traced), in a minute; its table in docs/performance.md is its own.
    #[arg(long)]
    java_only: bool,
    /// Run only the start-up part (memtrace's time to the command's first
    /// instruction and to probes in place), in seconds; its table in
    /// docs/performance.md is its own.
    #[arg(long)]
    startup_only: bool,
    /// Run only the allocator part (a pair's cost, untraced and traced, on
    /// glibc, musl, jemalloc, tcmalloc, mimalloc and C++ new/delete), in a
    /// few minutes; its table in docs/performance.md is its own.
    #[arg(long)]
    allocators_only: bool,
    /// Run only the whole-program part (sqlite3 and cc1plus untraced and
    /// under heaptrack, bpftrace and memtrace; redis-server's SET rate
    /// untraced and traced), in ~10 minutes; its tables in
    /// docs/performance.md are their own.
    #[arg(long)]
    programs_only: bool,
}

/// The results go into docs/performance.md between these two lines.
pub(crate) const DOCS_BEGIN: &str = "<!-- bench:begin -->";
pub(crate) const DOCS_END: &str = "<!-- bench:end -->";

/// What traces the program in one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Config {
    Untraced,
    NaiveFloor,
    BpftraceScript,
    MemtraceFull,
    MemtraceFullFp,
    MemtraceFullDwarf,
    MemtraceSampled,
}

const CONFIGS: [Config; 7] = [
    Config::Untraced,
    Config::NaiveFloor,
    Config::BpftraceScript,
    Config::MemtraceFull,
    Config::MemtraceFullFp,
    Config::MemtraceFullDwarf,
    Config::MemtraceSampled,
];

impl Config {
    fn label(self) -> &'static str {
        match self {
            Config::Untraced => "untraced",
            Config::NaiveFloor => "empty probes at offset 0 (naive floor)",
            Config::BpftraceScript => "bpftrace memleak-style script",
            Config::MemtraceFull => "memtrace (full tracing)",
            Config::MemtraceFullFp => "memtrace --unwind fp",
            Config::MemtraceFullDwarf => "memtrace --unwind dwarf",
            Config::MemtraceSampled => "memtrace --sample-bytes 512KiB",
        }
    }
}

/// The program's allocation pattern.
const MODES: [&str; 2] = ["malloc", "mixed"];

/// One timed run.
#[derive(Clone, Debug, Serialize)]
struct Run {
    ns_per_pair: f64,
    /// memtrace only: its CPU time and peak RSS over the run.
    tracer_cpu_secs: Option<f64>,
    tracer_wall_secs: Option<f64>,
    tracer_max_rss_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Row {
    mode: &'static str,
    config: Config,
    runs: Vec<Run>,
    median_ns_per_pair: f64,
}

#[derive(Debug, Serialize)]
struct Results {
    /// Where it ran: kernel, CPUs, glibc.
    machine: String,
    /// The memtrace binary timed.
    memtrace_bin: PathBuf,
    pairs_per_run: u64,
    repeat: u32,
    rows: Vec<Row>,
    /// Per mode: memtrace full / naive floor, full / bpftrace script,
    /// sampled / bpftrace script.
    ratios: Vec<Ratios>,
    /// memtrace full tracing: CPU share of one core over whole bench runs
    /// (start and detach included), peak RSS.
    memtrace_cpu_share_of_core: f64,
    memtrace_max_rss_bytes: u64,
    /// memtrace's own cost in steady state and with many live blocks.
    own_cost: OwnCost,
    /// The Python part (None where pyenv's CPython 3.12 is missing).
    python: Option<python::PyResults>,
}

/// memtrace's own CPU and memory, measured on their own.
#[derive(Debug, Default, Serialize)]
struct OwnCost {
    /// Allocations per second the program made while traced (malloc +
    /// free pairs at a fixed rate).
    steady_allocations_per_sec: f64,
    /// memtrace's CPU over 10 s of that, as a share of one core (its start
    /// and detach excluded), at the default 5 s interval.
    steady_cpu_share_of_core: f64,
    /// Live blocks held while memtrace sampled them every second.
    live_blocks: u64,
    /// memtrace's peak RSS then (VmHWM).
    live_blocks_peak_rss_bytes: u64,
}

#[derive(Debug, Serialize)]
struct Ratios {
    mode: &'static str,
    full_vs_naive_floor: f64,
    full_vs_bpftrace_script: f64,
    sampled_vs_bpftrace_script: f64,
    /// ns per pair the stack walk adds over the frame-pointer walk: with
    /// unwind tables for code without frame pointers (auto, the default),
    /// and with tables for every frame (dwarf).
    auto_unwind_over_fp_ns: f64,
    dwarf_unwind_over_fp_ns: f64,
}

pub(crate) fn run(args: BenchArgs) -> Result<()> {
    if !cmd::is_root() {
        bail!("the bench loads eBPF programs: run `cargo xtask bench` as root");
    }
    // The arguments and docs/performance.md are checked now rather than
    // after the many minutes of the bench.
    let docs = cmd::workspace_root().join("docs/performance.md");
    if !args.no_docs {
        fill_docs(&read_docs(&docs)?, "")?;
    }
    let given = match &args.memtrace {
        Some(path) => {
            let path = path
                .canonicalize()
                .with_context(|| format!("--memtrace {}", path.display()))?;
            if !path.is_file() {
                bail!("--memtrace {}: not a file", path.display());
            }
            Some(path)
        }
        None => None,
    };
    ensure_tools()?;
    // The kernel's BPF statistics time every program run: with them on,
    // every traced configuration here ran 3-10 % slower.
    if fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1") {
        eprintln!(
            "warning: kernel.bpf_stats_enabled is 1: every BPF program run is timed, and the \
             traced configurations run slower (sysctl -w kernel.bpf_stats_enabled=0)"
        );
    }
    let memtrace = match given {
        Some(path) => path,
        None => build::run()?,
    };
    // Each runtime's part: its table printed, and written between its own
    // markers (unless --no-docs).
    let part = |table: String, begin: &str, end: &str| -> Result<()> {
        print!("{table}");
        if args.no_docs {
            return Ok(());
        }
        let filled = fill_between(&read_docs(&docs)?, &table, begin, end)?;
        fs::write(&docs, filled).with_context(|| format!("writing {}", docs.display()))
    };
    let scratch = cmd::target_dir().join("xtask");
    let only = args.go_only
        || args.node_only
        || args.java_only
        || args.startup_only
        || args.allocators_only
        || args.programs_only;
    if !only || args.allocators_only {
        let allocators = allocators::run(&memtrace, args.repeat, args.pairs)?;
        part(
            allocators::render_markdown(&allocators),
            allocators::DOCS_BEGIN,
            allocators::DOCS_END,
        )?;
    }
    if !only || args.programs_only {
        let programs = programs::run(&memtrace, &scratch, args.repeat)?;
        part(
            programs::render_markdown(&programs),
            programs::DOCS_BEGIN,
            programs::DOCS_END,
        )?;
    }
    if !only || args.startup_only {
        let startup = startup::run(&memtrace)?;
        part(
            startup::render_markdown(&startup),
            startup::DOCS_BEGIN,
            startup::DOCS_END,
        )?;
    }
    if !only || args.go_only {
        let go = golang::run(&memtrace, &scratch, args.repeat)?;
        part(
            golang::render_markdown(&go),
            golang::DOCS_BEGIN,
            golang::DOCS_END,
        )?;
    }
    if !only || args.node_only {
        let node = node::run(&memtrace, &scratch, args.repeat)?;
        part(
            node::render_markdown(&node),
            node::DOCS_BEGIN,
            node::DOCS_END,
        )?;
    }
    if !only || args.java_only {
        let java = java::run(&memtrace, &scratch, args.repeat)?;
        part(
            java::render_markdown(&java),
            java::DOCS_BEGIN,
            java::DOCS_END,
        )?;
    }
    if only {
        return Ok(());
    }
    cmd::step("compile the bench program");
    let program = cmd::compile_workload("bench_alloc", &["-O2", "-g", "-fno-omit-frame-pointer"])?;
    let dir = cmd::target_dir().join("xtask");
    let libc_dir = dir.join("bench-libc");
    let libc = private_libc(&program, &libc_dir)?;
    let bench = Bench {
        memtrace: memtrace.clone(),
        program,
        libc_dir,
        libc,
        pairs: args.pairs,
        scratch: dir.clone(),
    };

    let mut rows: Vec<Row> = Vec::new();
    for mode in MODES {
        for config in CONFIGS {
            rows.push(Row {
                mode,
                config,
                runs: Vec::new(),
                median_ns_per_pair: 0.0,
            });
        }
    }
    cmd::step(&format!(
        "{} runs of {} pairs each ({} configurations × {} modes × {})",
        rows.len() as u32 * args.repeat,
        args.pairs,
        CONFIGS.len(),
        MODES.len(),
        args.repeat
    ));
    for round in 1..=args.repeat {
        for row in &mut rows {
            let run = bench
                .measure(row.mode, row.config)
                .with_context(|| format!("{} ({})", row.config.label(), row.mode))?;
            eprintln!(
                "    round {round}/{}: {:<6} {:<40} {:>10.1} ns/pair",
                args.repeat,
                row.mode,
                row.config.label(),
                run.ns_per_pair
            );
            row.runs.push(run);
        }
    }
    for row in &mut rows {
        row.median_ns_per_pair = median(row.runs.iter().map(|r| r.ns_per_pair).collect());
    }
    cmd::step("memtrace's own cost: 200,000 allocations/s for 12 s; 1,000,000 live blocks");
    let own_cost = bench.own_cost()?;
    let python = python::run(&memtrace, &dir, args.repeat)?;
    let mut results = summarize(&args, rows, memtrace);
    results.own_cost = own_cost;
    results.python = python;
    print_table(&results);
    print!(
        "{}",
        python::render_markdown(Some(&serde_json::to_value(&results.python)?))?
    );
    let json = dir.join("bench.json");
    fs::write(&json, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("writing {}", json.display()))?;
    eprintln!("results written to {}", json.display());
    if !args.no_docs {
        let table = render_markdown(&serde_json::to_value(&results)?)?;
        let filled = fill_docs(&read_docs(&docs)?, &table)?;
        fs::write(&docs, filled).with_context(|| format!("writing {}", docs.display()))?;
        eprintln!("results written to {}", docs.display());
    }
    Ok(())
}

/// docs/performance.md's text; fails with one line if it is missing.
fn read_docs(docs: &Path) -> Result<String> {
    fs::read_to_string(docs).map_err(|err| {
        anyhow::anyhow!(
            "{}: {err}: the bench writes its results there, between the lines {DOCS_BEGIN} and \
             {DOCS_END} (or run it with --no-docs)",
            docs.display()
        )
    })
}

/// `docs` with `table` between its [`DOCS_BEGIN`] and [`DOCS_END`] lines
/// (what was there goes); fails with one line unless each marker is there
/// once, in that order.
fn fill_docs(docs: &str, table: &str) -> Result<String> {
    fill_between(docs, table, DOCS_BEGIN, DOCS_END)
}

/// `docs` with `table` between its lines `begin_marker` and `end_marker`.
fn fill_between(docs: &str, table: &str, begin_marker: &str, end_marker: &str) -> Result<String> {
    let find = |marker: &str| -> Result<usize> {
        let mut at = docs
            .lines()
            .enumerate()
            .filter(|(_, l)| l.trim() == marker)
            .map(|(i, _)| i);
        match (at.next(), at.next()) {
            (Some(i), None) => Ok(i),
            (None, _) => bail!(
                "docs/performance.md has no line {marker}: the bench writes its results \
                 between the lines {begin_marker} and {end_marker} (or run it with --no-docs)"
            ),
            (Some(_), Some(_)) => bail!("docs/performance.md has the line {marker} twice"),
        }
    };
    let (begin, end) = (find(begin_marker)?, find(end_marker)?);
    if end < begin {
        bail!("docs/performance.md has {end_marker} before {begin_marker}");
    }
    let lines: Vec<&str> = docs.lines().collect();
    let mut out = String::new();
    for line in &lines[..=begin] {
        out += line;
        out += "\n";
    }
    if !table.is_empty() {
        out += "\n";
        out += table.trim_end();
        out += "\n\n";
    }
    for line in &lines[end..] {
        out += line;
        out += "\n";
    }
    Ok(out)
}

/// The results as Markdown, from their JSON (the value written to
/// bench.json): the medians, the ratios per mode and memtrace's own cost.
fn render_markdown(results: &Value) -> Result<String> {
    let field = |v: &Value, key: &str| -> Result<Value> {
        v.get(key)
            .cloned()
            .with_context(|| format!("bench results without `{key}`"))
    };
    let num = |v: &Value, key: &str| -> Result<f64> {
        // serde_json writes NaN (a configuration that did not run) as null.
        Ok(field(v, key)?.as_f64().unwrap_or(f64::NAN))
    };
    let fixed = |x: f64, digits: usize| -> String {
        if x.is_finite() {
            format!("{x:.digits$}")
        } else {
            "n/a".to_string()
        }
    };
    let rows = field(results, "rows")?;
    let rows = rows
        .as_array()
        .context("bench results: `rows` is no list")?;
    let machine = results
        .get("machine")
        .and_then(Value::as_str)
        .map_or(String::new(), |m| format!("{m}; "));
    let mut md = format!(
        "{machine}ns per allocate+free pair, median of {} runs of {} pairs (`cargo xtask \
         bench`):\n\n",
        field(results, "repeat")?,
        field(results, "pairs_per_run")?
    );
    md += "| mode | configuration | ns/pair | × untraced |\n";
    md += "| --- | --- | ---: | ---: |\n";
    for row in rows {
        let mode = field(row, "mode")?;
        let mode = mode
            .as_str()
            .context("bench results: a row's `mode` is no string")?;
        let config: Config = serde_json::from_value(field(row, "config")?)
            .context("bench results: a row's `config`")?;
        let ns = num(row, "median_ns_per_pair")?;
        let untraced = rows
            .iter()
            .find(|r| {
                r.get("mode").and_then(Value::as_str) == Some(mode)
                    && r.get("config").and_then(Value::as_str) == Some("untraced")
            })
            .and_then(|r| r.get("median_ns_per_pair")?.as_f64())
            .unwrap_or(f64::NAN);
        md += &format!(
            "| {mode} | {} | {} | {} |\n",
            config.label(),
            fixed(ns, 1),
            fixed(ns / untraced, 1)
        );
    }
    md += "\n| mode | memtrace full / naive floor | full / bpftrace script | sampled / \
           bpftrace script | --unwind auto over fp | --unwind dwarf over fp |\n";
    md += "| --- | ---: | ---: | ---: | ---: | ---: |\n";
    let ratios = field(results, "ratios")?;
    for x in ratios
        .as_array()
        .context("bench results: `ratios` is no list")?
    {
        md += &format!(
            "| {} | {} | {} | {} | {:+.0} ns/pair | {:+.0} ns/pair |\n",
            field(x, "mode")?.as_str().unwrap_or("?"),
            fixed(num(x, "full_vs_naive_floor")?, 2),
            fixed(num(x, "full_vs_bpftrace_script")?, 2),
            fixed(num(x, "sampled_vs_bpftrace_script")?, 2),
            num(x, "auto_unwind_over_fp_ns")?,
            num(x, "dwarf_unwind_over_fp_ns")?,
        );
    }
    let own = field(results, "own_cost")?;
    md += &format!(
        "\n- memtrace's own CPU over whole full-tracing runs (start and detach included): {} % \
         of a core (median); peak RSS {} MiB.\n",
        fixed(num(results, "memtrace_cpu_share_of_core")? * 100.0, 1),
        fixed(num(results, "memtrace_max_rss_bytes")? / 1048576.0, 1)
    );
    md += &format!(
        "- memtrace's own CPU in steady state at {} allocations/s: {} % of a core; peak RSS \
         with {} live blocks: {} MiB.\n",
        fixed(num(&own, "steady_allocations_per_sec")?, 0),
        fixed(num(&own, "steady_cpu_share_of_core")? * 100.0, 2),
        field(&own, "live_blocks")?,
        fixed(num(&own, "live_blocks_peak_rss_bytes")? / 1048576.0, 1)
    );
    md += &python::render_markdown(results.get("python"))?;
    Ok(md)
}

/// "kernel 6.18.0, 2 CPUs, glibc 2.36": what the figures depend on.
fn machine() -> String {
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = thread::available_parallelism().map_or(0, |n| n.get());
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    let glibc = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    format!(
        "kernel {}, {cpus} CPUs, glibc {}",
        kernel.trim(),
        glibc.to_string_lossy()
    )
}

fn summarize(args: &BenchArgs, rows: Vec<Row>, memtrace_bin: PathBuf) -> Results {
    let get = |mode: &str, config: Config| {
        rows.iter()
            .find(|r| r.mode == mode && r.config == config)
            .map_or(f64::NAN, |r| r.median_ns_per_pair)
    };
    let ratios = MODES
        .iter()
        .map(|&mode| Ratios {
            mode,
            full_vs_naive_floor: get(mode, Config::MemtraceFull) / get(mode, Config::NaiveFloor),
            full_vs_bpftrace_script: get(mode, Config::MemtraceFull)
                / get(mode, Config::BpftraceScript),
            sampled_vs_bpftrace_script: get(mode, Config::MemtraceSampled)
                / get(mode, Config::BpftraceScript),
            auto_unwind_over_fp_ns: get(mode, Config::MemtraceFull)
                - get(mode, Config::MemtraceFullFp),
            dwarf_unwind_over_fp_ns: get(mode, Config::MemtraceFullDwarf)
                - get(mode, Config::MemtraceFullFp),
        })
        .collect();
    let full: Vec<&Run> = rows
        .iter()
        .filter(|r| r.config == Config::MemtraceFull)
        .flat_map(|r| &r.runs)
        .collect();
    let shares: Vec<f64> = full
        .iter()
        .filter_map(|r| Some(r.tracer_cpu_secs? / r.tracer_wall_secs?))
        .collect();
    let max_rss = full
        .iter()
        .filter_map(|r| r.tracer_max_rss_bytes)
        .max()
        .unwrap_or(0);
    Results {
        machine: machine(),
        memtrace_bin,
        pairs_per_run: args.pairs,
        repeat: args.repeat,
        rows,
        ratios,
        memtrace_cpu_share_of_core: median(shares),
        memtrace_max_rss_bytes: max_rss,
        own_cost: OwnCost::default(),
        python: None,
    }
}

fn print_table(r: &Results) {
    println!();
    println!(
        "ns per allocate+free pair, median of {} runs of {} pairs:",
        r.repeat, r.pairs_per_run
    );
    println!(
        "{:<8} {:<42} {:>12} {:>12}",
        "mode", "configuration", "ns/pair", "x untraced"
    );
    for row in &r.rows {
        let untraced = r
            .rows
            .iter()
            .find(|x| x.mode == row.mode && x.config == Config::Untraced)
            .map_or(f64::NAN, |x| x.median_ns_per_pair);
        println!(
            "{:<8} {:<42} {:>12.1} {:>12.0}",
            row.mode,
            row.config.label(),
            row.median_ns_per_pair,
            row.median_ns_per_pair / untraced
        );
    }
    println!();
    for x in &r.ratios {
        println!(
            "{:<6}: memtrace full / naive floor = {:.2}, full / bpftrace script = {:.2}, \
             sampled / bpftrace script = {:.2}",
            x.mode, x.full_vs_naive_floor, x.full_vs_bpftrace_script, x.sampled_vs_bpftrace_script
        );
        println!(
            "{:<6}: stack walk over the frame-pointer walk: {:+.0} ns/pair with --unwind auto, \
             {:+.0} ns/pair with --unwind dwarf (5 frames: allocate, main, 2 in libc, _start)",
            x.mode, x.auto_unwind_over_fp_ns, x.dwarf_unwind_over_fp_ns
        );
    }
    println!(
        "memtrace's own CPU over whole full-tracing runs (start and detach included): {:.1}% of \
         a core (median); peak RSS {:.1} MiB",
        r.memtrace_cpu_share_of_core * 100.0,
        r.memtrace_max_rss_bytes as f64 / 1048576.0
    );
    let o = &r.own_cost;
    println!(
        "memtrace's own CPU in steady state at {:.0} allocations/s: {:.2}% of a core; peak RSS \
         with {} live blocks: {:.1} MiB",
        o.steady_allocations_per_sec,
        o.steady_cpu_share_of_core * 100.0,
        o.live_blocks,
        o.live_blocks_peak_rss_bytes as f64 / 1048576.0
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// gcc and bpftrace (Debian packages), installed when missing.
fn ensure_tools() -> Result<()> {
    cmd::install_missing(&[("gcc", "gcc"), ("bpftrace", "bpftrace")])
}

/// Copies the libc `program` loads into `dir` (so probes on the copy only
/// hit programs run with `LD_LIBRARY_PATH=dir`).
fn private_libc(program: &Path, dir: &Path) -> Result<PathBuf> {
    let host = libc_of(program)?;
    fs::create_dir_all(dir)?;
    let copy = dir.join(host.file_name().context("libc path")?);
    fs::copy(&host, &copy)
        .with_context(|| format!("copying {} to {}", host.display(), copy.display()))?;
    Ok(copy)
}

/// The libc `program` loads, as ldd names it.
pub(super) fn libc_of(program: &Path) -> Result<PathBuf> {
    let listing = cmd::stdout_of(Command::new("ldd").arg(program))?;
    listing
        .lines()
        .filter_map(|l| l.split("=>").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .find(|path| path.contains("/libc.so"))
        .map(PathBuf::from)
        .with_context(|| format!("ldd names no libc.so for {}", program.display()))
}

struct Bench {
    memtrace: PathBuf,
    program: PathBuf,
    libc_dir: PathBuf,
    libc: PathBuf,
    pairs: u64,
    scratch: PathBuf,
}

impl Bench {
    fn measure(&self, mode: &'static str, config: Config) -> Result<Run> {
        let (mut program, mut lines) = self.spawn_program(&[mode, &self.pairs.to_string()])?;
        let pid = program.id();
        let mut tracer = self.start_tracer(mode, config, pid)?;
        if let Some(t) = &mut tracer {
            wait_for_breakpoints(pid, &self.libc, wanted_breakpoints(mode), t)?;
        }
        let started = Instant::now();
        let ns_per_pair = time_loop(&mut program, &mut lines)?;
        let status = program.wait()?;
        if !status.success() {
            bail!("the bench program failed: {status}");
        }
        let mut run = Run {
            ns_per_pair,
            tracer_cpu_secs: None,
            tracer_wall_secs: None,
            tracer_max_rss_bytes: None,
        };
        if let Some(mut t) = tracer {
            let is_memtrace = matches!(
                config,
                Config::MemtraceFull
                    | Config::MemtraceFullFp
                    | Config::MemtraceFullDwarf
                    | Config::MemtraceSampled
            );
            let usage = stop_tracer(&mut t, is_memtrace)?;
            if is_memtrace {
                let cpu = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
                run.tracer_cpu_secs = Some(cpu(usage.ru_utime) + cpu(usage.ru_stime));
                run.tracer_wall_secs = Some(started.elapsed().as_secs_f64());
                run.tracer_max_rss_bytes = Some(usage.ru_maxrss as u64 * 1024);
            }
        }
        Ok(run)
    }

    /// memtrace's own CPU while the program makes 200,000 allocations (and
    /// as many frees) per second, read from /proc between 2 s and 12 s, and
    /// its peak RSS while the program holds 1,000,000 live blocks that it
    /// samples every second.
    fn own_cost(&self) -> Result<OwnCost> {
        const RATE: u64 = 200_000;
        let (mut program, mut lines, mut memtrace) =
            self.start_traced(&["rate", &RATE.to_string(), "13"], &[])?;
        let started = Instant::now();
        thread::sleep(Duration::from_secs(2));
        let (cpu0, t0) = (cmd::cpu_secs(memtrace.id())?, started.elapsed());
        thread::sleep(Duration::from_secs(10));
        let (cpu1, t1) = (cmd::cpu_secs(memtrace.id())?, started.elapsed());
        let done = next_line(&mut lines)?;
        let pairs: f64 = done
            .strip_prefix("done ")
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("unexpected output of the bench program: {done:?}"))?;
        program.wait()?;
        wait_with_usage(&mut memtrace)?;
        let mut cost = OwnCost {
            steady_allocations_per_sec: pairs / 13.0,
            steady_cpu_share_of_core: (cpu1 - cpu0) / (t1 - t0).as_secs_f64(),
            ..OwnCost::default()
        };

        const BLOCKS: u64 = 1_000_000;
        let (mut program, mut lines, mut memtrace) = self.start_traced(
            &["hold", &BLOCKS.to_string()],
            &["--max-live", "2000000", "--interval", "1s"],
        )?;
        expect_line(&mut lines, "held")?;
        // Three intervals' passes over the live table.
        thread::sleep(Duration::from_millis(3500));
        cost.live_blocks = BLOCKS;
        cost.live_blocks_peak_rss_bytes = cmd::memory_kib(memtrace.id(), "VmHWM")? * 1024;
        program
            .stdin
            .take()
            .context("stdin")?
            .write_all(b"release\n")?;
        program.wait()?;
        wait_with_usage(&mut memtrace)?;
        Ok(cost)
    }

    /// Starts the bench program with `args` on the private libc and waits
    /// for its "ready".
    fn spawn_program(&self, args: &[&str]) -> Result<(Child, BufReader<ChildStdout>)> {
        let mut program = Command::new(&self.program)
            .args(args)
            .env("LD_LIBRARY_PATH", &self.libc_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the bench program")?;
        let mut lines = BufReader::new(program.stdout.take().context("stdout")?);
        expect_line(&mut lines, "ready")?;
        Ok((program, lines))
    }

    /// Starts `memtrace --pid pid --no-live extra...`, its JSON report to
    /// the scratch dir, its own output discarded.
    fn spawn_memtrace(&self, pid: u32, extra: &[&str]) -> Result<Child> {
        Command::new(&self.memtrace)
            .args(["--pid", &pid.to_string(), "--no-live"])
            .args(["--format", "json", "-o"])
            .arg(self.scratch.join("bench-report.json"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting memtrace")
    }

    /// Starts the program with `args` on the private libc, memtrace on it
    /// (full tracing, plus `extra`), waits for the probes, and sends the
    /// program its go line.
    fn start_traced(
        &self,
        args: &[&str],
        extra: &[&str],
    ) -> Result<(Child, BufReader<ChildStdout>, Child)> {
        let (mut program, lines) = self.spawn_program(args)?;
        let mut memtrace = self.spawn_memtrace(program.id(), extra)?;
        wait_for_breakpoints(
            program.id(),
            &self.libc,
            wanted_breakpoints("malloc"),
            &mut memtrace,
        )?;
        program
            .stdin
            .as_mut()
            .context("stdin")?
            .write_all(b"go\n")?;
        Ok((program, lines, memtrace))
    }

    /// Starts the tracer of `config` on program `pid`.
    fn start_tracer(&self, mode: &str, config: Config, pid: u32) -> Result<Option<Child>> {
        let bpftrace = |script: String| spawn_bpftrace(&self.scratch.join("bench.bt"), &script);
        let memtrace = |extra: &[&str]| {
            let mut args = vec!["--interval", "1s"];
            args.extend_from_slice(extra);
            self.spawn_memtrace(pid, &args)
        };
        let libc = self.libc.display();
        let allocators: &[&str] = match mode {
            "mixed" => &["malloc", "calloc", "realloc"],
            _ => &["malloc"],
        };
        Ok(match config {
            Config::Untraced => None,
            Config::NaiveFloor => {
                let mut script = format!("uprobe:{libc}:free {{}}\n");
                for f in allocators {
                    script += &format!("uprobe:{libc}:{f} {{}}\nuretprobe:{libc}:{f} {{}}\n");
                }
                Some(bpftrace(script)?)
            }
            Config::BpftraceScript => Some(bpftrace(memleak_script(&libc.to_string(), mode))?),
            Config::MemtraceFull => Some(memtrace(&[])?),
            Config::MemtraceFullFp => Some(memtrace(&["--unwind", "fp"])?),
            Config::MemtraceFullDwarf => Some(memtrace(&["--unwind", "dwarf"])?),
            Config::MemtraceSampled => Some(memtrace(&["--sample-bytes", "512KiB"])?),
        })
    }
}

/// A memleak-style bpftrace script: the requested size per thread at
/// entry; at return the block's size and stack by address and the stack's
/// outstanding sum; at free the reverse.
pub(super) fn memleak_script(libc: &str, mode: &str) -> String {
    let mut s = String::new();
    s += &format!("uprobe:{libc}:malloc {{ @size[tid] = arg0; }}\n");
    if mode == "mixed" {
        s += &format!("uprobe:{libc}:calloc {{ @size[tid] = arg0 * arg1; }}\n");
        s += &format!(
            "uprobe:{libc}:realloc {{ @size[tid] = arg1;\n\
             if (@addr_size[arg0]) {{ @outstanding[@addr_stack[arg0]] = sum(-@addr_size[arg0]);\n\
             delete(@addr_size[arg0]); delete(@addr_stack[arg0]); }} }}\n"
        );
    }
    let returns: &[&str] = match mode {
        "mixed" => &["malloc", "calloc", "realloc"],
        _ => &["malloc"],
    };
    for f in returns {
        s += &format!(
            "uretprobe:{libc}:{f} /@size[tid]/ {{\n\
             @addr_size[retval] = @size[tid]; @addr_stack[retval] = ustack;\n\
             @outstanding[ustack] = sum(@size[tid]); delete(@size[tid]); }}\n"
        );
    }
    s += &format!(
        "uprobe:{libc}:free /@addr_size[arg0]/ {{\n\
         @outstanding[@addr_stack[arg0]] = sum(-@addr_size[arg0]);\n\
         delete(@addr_size[arg0]); delete(@addr_stack[arg0]); }}\n"
    );
    s
}

/// The breakpoints a tracer of the bench program puts in its libc: one per
/// probed function (malloc and free; calloc and realloc too in mixed mode).
fn wanted_breakpoints(mode: &str) -> usize {
    if mode == "mixed" {
        4
    } else {
        2
    }
}

/// Waits until the tracer's breakpoints (int3, 0xcc) are in the program's
/// mapping of `lib`: at least `wanted`. Fails if the tracer exits or 60 s
/// pass.
pub(super) fn wait_for_breakpoints(
    pid: u32,
    lib: &Path,
    wanted: usize,
    tracer: &mut Child,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if breakpoints(pid, lib)? >= wanted {
            // Every probe of one function goes in at once; give the
            // tracer a moment to finish the rest of its attach calls.
            thread::sleep(Duration::from_millis(300));
            return Ok(());
        }
        if let Some(status) = tracer.try_wait()? {
            bail!("the tracer exited before attaching ({status})");
        }
        if Instant::now() > deadline {
            bail!("the tracer did not attach within 60 s");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Bytes of `pid`'s executable mapping of `libc` that are 0xcc in memory
/// but not in the file: uprobe breakpoints.
fn breakpoints(pid: u32, libc: &Path) -> Result<usize> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let name = libc.to_string_lossy();
    let Some((start, end, offset)) = maps.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 6 || !f[1].contains('x') || f[5] != name {
            return None;
        }
        let (s, e) = f[0].split_once('-')?;
        Some((
            u64::from_str_radix(s, 16).ok()?,
            u64::from_str_radix(e, 16).ok()?,
            u64::from_str_radix(f[2], 16).ok()?,
        ))
    }) else {
        return Ok(0);
    };
    let len = (end - start) as usize;
    let mut memory = vec![0u8; len];
    let mut mem = fs::File::open(format!("/proc/{pid}/mem"))?;
    mem.seek(SeekFrom::Start(start))?;
    mem.read_exact(&mut memory)?;
    let mut file = vec![0u8; len];
    let mut f = fs::File::open(libc)?;
    f.seek(SeekFrom::Start(offset))?;
    let n = f.read(&mut file)?;
    Ok(memory[..n]
        .iter()
        .zip(&file[..n])
        .filter(|&(&m, &f)| m == 0xcc && f != 0xcc)
        .count())
}

/// Sends a bench program (bench_alloc.c, bench_new.c) its go line and
/// reads the ns per pair its loop took.
pub(super) fn time_loop(program: &mut Child, lines: &mut BufReader<ChildStdout>) -> Result<f64> {
    program
        .stdin
        .take()
        .context("stdin")?
        .write_all(b"go\n")
        .context("starting the timed loop")?;
    let line = next_line(lines)?;
    line.strip_prefix("ns_per_pair ")
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("unexpected output of the bench program: {line:?}"))
}

pub(super) fn next_line(lines: &mut BufReader<ChildStdout>) -> Result<String> {
    let mut line = String::new();
    if lines.read_line(&mut line)? == 0 {
        bail!("the bench program closed its output");
    }
    Ok(line.trim_end().to_string())
}

pub(super) fn expect_line(lines: &mut BufReader<ChildStdout>, want: &str) -> Result<()> {
    let line = next_line(lines)?;
    if line != want {
        bail!("expected {want:?} from the bench program, got {line:?}");
    }
    Ok(())
}

/// Starts bpftrace on `script`, written to `file`.
pub(super) fn spawn_bpftrace(file: &Path, script: &str) -> Result<Child> {
    fs::write(file, script).with_context(|| format!("writing {}", file.display()))?;
    Command::new("bpftrace")
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting bpftrace")
}

/// Ends a tracer once the program is done: memtrace ends with its target
/// and must have succeeded; bpftrace runs until interrupted. Returns the
/// tracer's resource usage.
fn stop_tracer(tracer: &mut Child, memtrace: bool) -> Result<libc::rusage> {
    if !memtrace {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(tracer.id() as i32, libc::SIGINT) };
    }
    let (status, usage) = wait_with_usage(tracer)?;
    if memtrace && !status.success() {
        bail!("memtrace failed ({status})");
    }
    if !memtrace && status.signal().is_none() && !status.success() {
        bail!("bpftrace failed ({status})");
    }
    Ok(usage)
}

/// Waits for `child` and returns its status and resource usage.
fn wait_with_usage(child: &mut Child) -> Result<(std::process::ExitStatus, libc::rusage)> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child; the pointers are valid.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    Ok((std::process::ExitStatus::from_raw(status), usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bench.json of one mode with every configuration, as `run` writes it.
    fn results() -> Value {
        let row = |config: &str, ns: f64| {
            serde_json::json!({
                "mode": "malloc",
                "config": config,
                "runs": [{ "ns_per_pair": ns, "tracer_cpu_secs": null,
                           "tracer_wall_secs": null, "tracer_max_rss_bytes": null }],
                "median_ns_per_pair": ns,
            })
        };
        serde_json::json!({
            "memtrace_bin": "/work/target/release/memtrace",
            "pairs_per_run": 200000,
            "repeat": 5,
            "rows": [
                row("untraced", 20.0),
                row("naive_floor", 2000.0),
                row("bpftrace_script", 8000.0),
                row("memtrace_full", 572.5),
                row("memtrace_full_fp", 550.0),
                row("memtrace_full_dwarf", 640.0),
                row("memtrace_sampled", 1000.25),
            ],
            "ratios": [{
                "mode": "malloc",
                "full_vs_naive_floor": 0.28625,
                "full_vs_bpftrace_script": 0.0715625,
                "sampled_vs_bpftrace_script": 0.12503125,
                "auto_unwind_over_fp_ns": 22.5,
                "dwarf_unwind_over_fp_ns": 90.0,
            }],
            "memtrace_cpu_share_of_core": 0.004,
            "memtrace_max_rss_bytes": 38377881,
            "own_cost": {
                "steady_allocations_per_sec": 199876.4,
                "steady_cpu_share_of_core": 0.0041,
                "live_blocks": 1000000,
                "live_blocks_peak_rss_bytes": 38377881,
            },
        })
    }

    #[test]
    fn renders_the_results_as_markdown() {
        let md = render_markdown(&results()).unwrap();
        assert_eq!(
            md,
            "ns per allocate+free pair, median of 5 runs of 200000 pairs (`cargo xtask bench`):

| mode | configuration | ns/pair | × untraced |
| --- | --- | ---: | ---: |
| malloc | untraced | 20.0 | 1.0 |
| malloc | empty probes at offset 0 (naive floor) | 2000.0 | 100.0 |
| malloc | bpftrace memleak-style script | 8000.0 | 400.0 |
| malloc | memtrace (full tracing) | 572.5 | 28.6 |
| malloc | memtrace --unwind fp | 550.0 | 27.5 |
| malloc | memtrace --unwind dwarf | 640.0 | 32.0 |
| malloc | memtrace --sample-bytes 512KiB | 1000.2 | 50.0 |

| mode | memtrace full / naive floor | full / bpftrace script | sampled / bpftrace script | --unwind auto over fp | --unwind dwarf over fp |
| --- | ---: | ---: | ---: | ---: | ---: |
| malloc | 0.29 | 0.07 | 0.13 | +22 ns/pair | +90 ns/pair |

- memtrace's own CPU over whole full-tracing runs (start and detach included): 0.4 % of a core (median); peak RSS 36.6 MiB.
- memtrace's own CPU in steady state at 199876 allocations/s: 0.41 % of a core; peak RSS with 1000000 live blocks: 36.6 MiB.
"
        );
    }

    #[test]
    fn a_configuration_that_did_not_run_is_not_a_number() {
        let mut r = results();
        r["ratios"][0]["full_vs_naive_floor"] = Value::Null;
        let md = render_markdown(&r).unwrap();
        assert!(md.contains("| malloc | n/a | 0.07 |"), "{md}");
    }

    #[test]
    fn results_without_a_field_fail() {
        let mut r = results();
        r.as_object_mut().unwrap().remove("own_cost");
        let err = render_markdown(&r).unwrap_err().to_string();
        assert_eq!(err, "bench results without `own_cost`");
    }

    #[test]
    fn the_table_goes_between_the_markers() {
        let docs = "# Performance\n\nIntro.\n\n<!-- bench:begin -->\nold table\n\
                    old line\n<!-- bench:end -->\n\nAfter.\n";
        let filled = fill_docs(docs, "| a |\n| --- |\n").unwrap();
        assert_eq!(
            filled,
            "# Performance\n\nIntro.\n\n<!-- bench:begin -->\n\n| a |\n| --- |\n\n\
             <!-- bench:end -->\n\nAfter.\n"
        );
        // Filling again replaces the table.
        assert_eq!(fill_docs(&filled, "| a |\n| --- |\n").unwrap(), filled);
    }

    #[test]
    fn missing_or_misplaced_markers_fail_in_one_line() {
        let no_end = fill_docs("<!-- bench:begin -->\n", "t")
            .unwrap_err()
            .to_string();
        assert_eq!(
            no_end,
            "docs/performance.md has no line <!-- bench:end -->: the bench writes its results \
             between the lines <!-- bench:begin --> and <!-- bench:end --> (or run it with \
             --no-docs)"
        );
        let reversed = "<!-- bench:end -->\n<!-- bench:begin -->\n";
        assert_eq!(
            fill_docs(reversed, "t").unwrap_err().to_string(),
            "docs/performance.md has <!-- bench:end --> before <!-- bench:begin -->"
        );
        let twice = "<!-- bench:begin -->\n<!-- bench:begin -->\n<!-- bench:end -->\n";
        assert_eq!(
            fill_docs(twice, "t").unwrap_err().to_string(),
            "docs/performance.md has the line <!-- bench:begin --> twice"
        );
        assert!(read_docs(Path::new("/nonexistent/docs/performance.md"))
            .unwrap_err()
            .to_string()
            .starts_with("/nonexistent/docs/performance.md: No such file or directory"));
    }
}

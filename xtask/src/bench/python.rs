//! The bench's Python part: what tracing costs an interpreter that
//! allocates (tests/workloads/py_bench.py on pyenv's CPython 3.12, whose
//! allocator API is in its shared libpython), per step of two loops: one
//! that makes and drops objects, one that builds a dict. Configurations,
//! interleaved and repeated: untraced; CPython's own tracemalloc keeping 1
//! frame and 25 frames (`-X tracemalloc=N`); the naive floor, empty
//! bpftrace probes at offset 0 of the functions memtrace hooks in
//! libpython (entry + return probe on the allocation functions, entry on
//! the frees; libc's are left out, as system-wide probes there would hit
//! every process); the floor, memtrace's own probes with programs that
//! return at once (`--empty-programs`: the same probe points, placements
//! and traps, libc's included); memtrace full; memtrace `--sample-bytes
//! 512KiB`. And Debian's python3.11, whose pymalloc is inlined (memtrace
//! counts its pools), untraced and traced.

use std::{
    fs,
    io::{BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{median, next_line, spawn_bpftrace, stop_tracer, wait_for_breakpoints};
use crate::cmd;

/// The interpreter's minor version (pyenv's build of it).
const MINOR: &str = "3.12";

/// The loops of py_bench.py, and the steps each run times.
const MODES: [(&str, u64); 2] = [("churn", 50_000), ("dicts", 50_000)];

/// CPython's allocator API as memtrace hooks it: allocation functions
/// (entry and return probe) and frees (entry).
const ALLOCS: [&str; 6] = [
    "PyObject_Malloc",
    "PyObject_Calloc",
    "PyObject_Realloc",
    "PyMem_Malloc",
    "PyMem_Calloc",
    "PyMem_Realloc",
];
const FREES: [&str; 2] = ["PyObject_Free", "PyMem_Free"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum PyConfig {
    Untraced,
    Tracemalloc1,
    Tracemalloc25,
    NaiveFloor,
    Floor,
    MemtraceFull,
    MemtraceSampled,
    DebianUntraced,
    DebianMemtrace,
}

const CONFIGS: [PyConfig; 9] = [
    PyConfig::Untraced,
    PyConfig::Tracemalloc1,
    PyConfig::Tracemalloc25,
    PyConfig::NaiveFloor,
    PyConfig::Floor,
    PyConfig::MemtraceFull,
    PyConfig::MemtraceSampled,
    PyConfig::DebianUntraced,
    PyConfig::DebianMemtrace,
];

/// Debian's CPython 3.11 (static, link-time optimized: pymalloc inlined).
const DEBIAN_PYTHON: &str = "/usr/bin/python3.11";

impl PyConfig {
    fn label(self) -> &'static str {
        match self {
            PyConfig::Untraced => "untraced",
            PyConfig::Tracemalloc1 => "python -X tracemalloc=1",
            PyConfig::Tracemalloc25 => "python -X tracemalloc=25",
            PyConfig::NaiveFloor => "empty probes at offset 0 (naive floor)",
            PyConfig::Floor => "memtrace's probes, empty programs (floor)",
            PyConfig::MemtraceFull => "memtrace (full tracing)",
            PyConfig::MemtraceSampled => "memtrace --sample-bytes 512KiB",
            PyConfig::DebianUntraced => "Debian python3.11, untraced",
            PyConfig::DebianMemtrace => "Debian python3.11, memtrace (pools)",
        }
    }
}

#[derive(Debug, Serialize)]
struct PyRow {
    mode: &'static str,
    config: PyConfig,
    runs_ns_per_step: Vec<f64>,
    median_ns_per_step: f64,
}

#[derive(Debug, Serialize)]
pub(super) struct PyResults {
    /// The interpreter timed.
    python: PathBuf,
    repeat: u32,
    rows: Vec<PyRow>,
}

/// pyenv's CPython 3.12 and its libpython, if this machine has them.
fn interpreter() -> Option<(PathBuf, PathBuf)> {
    let versions = fs::read_dir("/root/.pyenv/versions").ok()?;
    let mut dirs: Vec<PathBuf> = versions
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.strip_prefix(MINOR).is_some_and(|r| r.starts_with('.')))
        })
        .collect();
    dirs.sort();
    let dir = dirs.pop()?;
    let python = dir.join(format!("bin/python{MINOR}"));
    let lib = dir.join(format!("lib/libpython{MINOR}.so.1.0"));
    (python.is_file() && lib.is_file()).then_some((python, lib))
}

/// Runs the Python part (None, said in one line, when pyenv's 3.12 is
/// not on this machine).
pub(super) fn run(memtrace: &Path, scratch: &Path, repeat: u32) -> Result<Option<PyResults>> {
    let Some((python, lib)) = interpreter() else {
        eprintln!(
            "warning: no pyenv CPython {MINOR} under /root/.pyenv/versions: Python part skipped"
        );
        return Ok(None);
    };
    let bench = PyBench {
        python: python.clone(),
        lib,
        script: cmd::workspace_root().join("tests/workloads/py_bench.py"),
        memtrace: memtrace.to_path_buf(),
        scratch: scratch.to_path_buf(),
    };
    let mut rows: Vec<PyRow> = MODES
        .iter()
        .flat_map(|&(mode, _)| {
            CONFIGS.iter().map(move |&config| PyRow {
                mode,
                config,
                runs_ns_per_step: Vec::new(),
                median_ns_per_step: f64::NAN,
            })
        })
        .collect();
    cmd::step(&format!(
        "Python: {} runs ({} configurations × {} loops × {repeat}) on {}",
        rows.len() as u32 * repeat,
        CONFIGS.len(),
        MODES.len(),
        python.display()
    ));
    for round in 1..=repeat {
        for row in &mut rows {
            let steps = MODES.iter().find(|m| m.0 == row.mode).map_or(0, |m| m.1);
            let ns = bench
                .measure(row.mode, steps, row.config)
                .with_context(|| format!("Python {} ({})", row.config.label(), row.mode))?;
            eprintln!(
                "    round {round}/{repeat}: {:<6} {:<40} {:>10.1} ns/step",
                row.mode,
                row.config.label(),
                ns
            );
            row.runs_ns_per_step.push(ns);
        }
    }
    for row in &mut rows {
        row.median_ns_per_step = median(row.runs_ns_per_step.clone());
    }
    Ok(Some(PyResults {
        python,
        repeat,
        rows,
    }))
}

struct PyBench {
    python: PathBuf,
    lib: PathBuf,
    script: PathBuf,
    memtrace: PathBuf,
    scratch: PathBuf,
}

impl PyBench {
    /// One timed run: ns per step of loop `mode`.
    fn measure(&self, mode: &str, steps: u64, config: PyConfig) -> Result<f64> {
        let debian = matches!(config, PyConfig::DebianUntraced | PyConfig::DebianMemtrace);
        let mut python = Command::new(match debian {
            true => Path::new(DEBIAN_PYTHON),
            false => &self.python,
        });
        match config {
            PyConfig::Tracemalloc1 => python.args(["-X", "tracemalloc=1"]),
            PyConfig::Tracemalloc25 => python.args(["-X", "tracemalloc=25"]),
            _ => &mut python,
        };
        let mut program = python
            .arg(&self.script)
            .args([mode, &steps.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the Python bench program")?;
        let mut lines = BufReader::new(program.stdout.take().context("stdout")?);
        let ready = next_line(&mut lines)?;
        if ready != "ready" {
            bail!("expected \"ready\" from py_bench.py, got {ready:?}");
        }
        let mut tracer = self.start_tracer(config, program.id())?;
        if let Some(t) = &mut tracer {
            // PyObject_Malloc and PyObject_Free at least; Debian's: the
            // new-pool function.
            match debian {
                true => wait_for_breakpoints(program.id(), Path::new(DEBIAN_PYTHON), 1, t)?,
                false => wait_for_breakpoints(program.id(), &self.lib, 2, t)?,
            }
        }
        program.stdin.take().context("stdin")?.write_all(b"go\n")?;
        let line = next_line(&mut lines)?;
        let ns: f64 = line
            .strip_prefix("ns_per_step ")
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("unexpected output of py_bench.py: {line:?}"))?;
        let status = program.wait()?;
        if !status.success() {
            bail!("py_bench.py failed: {status}");
        }
        if let Some(mut t) = tracer {
            let memtrace = !matches!(config, PyConfig::NaiveFloor);
            stop_tracer(&mut t, memtrace)?;
        }
        Ok(ns)
    }

    /// Starts the tracer of `config` on program `pid`.
    fn start_tracer(&self, config: PyConfig, pid: u32) -> Result<Option<Child>> {
        let memtrace = |extra: &[&str]| -> Result<Child> {
            Command::new(&self.memtrace)
                .args(["--pid", &pid.to_string(), "--no-live", "--interval", "1s"])
                .args(["--format", "json", "-o"])
                .arg(self.scratch.join("py-bench-report.json"))
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting memtrace")
        };
        Ok(match config {
            PyConfig::Untraced
            | PyConfig::Tracemalloc1
            | PyConfig::Tracemalloc25
            | PyConfig::DebianUntraced => None,
            PyConfig::NaiveFloor => {
                let lib = self.lib.display();
                let mut script = String::new();
                for f in FREES {
                    script += &format!("uprobe:{lib}:{f} {{}}\n");
                }
                for f in ALLOCS {
                    script += &format!("uprobe:{lib}:{f} {{}}\nuretprobe:{lib}:{f} {{}}\n");
                }
                Some(spawn_bpftrace(&self.scratch.join("py-bench.bt"), &script)?)
            }
            PyConfig::Floor => Some(memtrace(&["--empty-programs"])?),
            PyConfig::MemtraceFull | PyConfig::DebianMemtrace => Some(memtrace(&[])?),
            PyConfig::MemtraceSampled => Some(memtrace(&["--sample-bytes", "512KiB"])?),
        })
    }
}

/// The Python part of the results as Markdown (empty when it did not run).
pub(super) fn render_markdown(python: Option<&Value>) -> Result<String> {
    let Some(p) = python.filter(|p| !p.is_null()) else {
        return Ok(String::new());
    };
    let rows = p
        .get("rows")
        .and_then(Value::as_array)
        .context("bench results: python without `rows`")?;
    let get = |mode: &str, config: &str| -> f64 {
        rows.iter()
            .find(|r| {
                r.get("mode").and_then(Value::as_str) == Some(mode)
                    && r.get("config").and_then(Value::as_str) == Some(config)
            })
            .and_then(|r| r.get("median_ns_per_step")?.as_f64())
            .unwrap_or(f64::NAN)
    };
    let fixed = |x: f64, digits: usize| -> String {
        if x.is_finite() {
            format!("{x:.digits$}")
        } else {
            "n/a".to_string()
        }
    };
    let python = p.get("python").and_then(Value::as_str).unwrap_or("?");
    let mut md = format!(
        "\nPython ({python}): ns per loop step, median of {} runs of {} steps. `churn` makes \
         and drops 4 objects a step (a list, its items, a dict, an int); `dicts` keeps one \
         entry a step in a growing dict:\n\n",
        p.get("repeat").and_then(Value::as_u64).unwrap_or(0),
        MODES[0].1
    );
    md += "| loop | configuration | ns/step | × untraced |\n";
    md += "| --- | --- | ---: | ---: |\n";
    for row in rows {
        let mode = row.get("mode").and_then(Value::as_str).unwrap_or("?");
        let config: PyConfig = serde_json::from_value(
            row.get("config")
                .cloned()
                .context("bench results: a Python row without `config`")?,
        )?;
        let ns = row
            .get("median_ns_per_step")
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN);
        // Debian's rows against Debian's untraced run.
        let untraced = match config {
            PyConfig::DebianUntraced | PyConfig::DebianMemtrace => get(mode, "debian_untraced"),
            _ => get(mode, "untraced"),
        };
        md += &format!(
            "| {mode} | {} | {} | {} |\n",
            config.label(),
            fixed(ns, 1),
            fixed(ns / untraced, 1)
        );
    }
    md += "\n| loop | full / floor | sampled / floor | full / naive floor | full / tracemalloc=1 \
           | full / tracemalloc=25 |\n";
    md += "| --- | ---: | ---: | ---: | ---: | ---: |\n";
    for (mode, _) in MODES {
        let full = get(mode, "memtrace_full");
        let floor = get(mode, "floor");
        md += &format!(
            "| {mode} | {} | {} | {} | {} | {} |\n",
            fixed(full / floor, 2),
            fixed(get(mode, "memtrace_sampled") / floor, 2),
            fixed(full / get(mode, "naive_floor"), 2),
            fixed(full / get(mode, "tracemalloc1"), 1),
            fixed(full / get(mode, "tracemalloc25"), 1),
        );
    }
    Ok(md)
}

//! The bench's whole-program part: how much slower real programs nobody
//! here wrote run under each tracer. sqlite3 runs a bundled SQL script,
//! and gcc's C++ compiler proper (cc1plus) compiles a bundled source that
//! includes much of the standard library. Each runs under timed.c, which
//! times the program itself (no tracer's start or exit). Each is timed
//! untraced, under heaptrack, under a memleak-style bpftrace script, and
//! under `memtrace --` (full, and sampled at 512 KiB). redis-server
//! (jemalloc) serves `redis-benchmark -t set` on 127.0.0.1, untraced and
//! under `memtrace --pid` (full and sampled); its figure is requests a
//! second. Runs are interleaved round by round; the tables give medians.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::{libc_of, median, memleak_script, spawn_bpftrace, wait_for_breakpoints};
use crate::cmd;

/// The tables go into docs/performance.md between these lines.
pub(super) const DOCS_BEGIN: &str = "<!-- bench-programs:begin -->";
pub(super) const DOCS_END: &str = "<!-- bench-programs:end -->";

/// The tracers a program is timed under, in table order.
const TRACERS: [&str; 5] = [
    "untraced",
    "heaptrack",
    "bpftrace script",
    "memtrace",
    "memtrace --sample-bytes 512KiB",
];

/// The C++ source cc1plus compiles: the headers a service includes and a
/// little code that instantiates their templates.
const CXX_SOURCE: &str = r#"
#include <algorithm>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

struct Entry { std::string name; std::vector<int> values; };

std::map<std::string, std::vector<Entry>> index_by_prefix(const std::vector<Entry>& entries) {
    std::map<std::string, std::vector<Entry>> out;
    std::regex word("[a-z]+");
    for (const auto& e : entries) {
        std::smatch m;
        if (std::regex_search(e.name, m, word)) out[m.str()].push_back(e);
    }
    return out;
}

int main() {
    std::vector<Entry> entries;
    std::unordered_map<std::string, std::shared_ptr<Entry>> by_name;
    for (int i = 0; i < 100; i++) {
        std::ostringstream s;
        s << "entry" << i;
        entries.push_back({s.str(), {i, i * 2}});
        by_name[s.str()] = std::make_shared<Entry>(entries.back());
    }
    std::sort(entries.begin(), entries.end(),
              [](const Entry& a, const Entry& b) { return a.name < b.name; });
    std::function<size_t(const Entry&)> size = [](const Entry& e) { return e.values.size(); };
    auto index = index_by_prefix(entries);
    std::cout << index.size() << " " << size(entries[0]) << std::endl;
}
"#;

#[derive(Debug, Serialize)]
pub(super) struct ProgramRow {
    program: String,
    tracer: String,
    /// Seconds, one per round.
    runs: Vec<f64>,
    median: f64,
}

#[derive(Debug, Serialize)]
pub(super) struct RedisRow {
    tracer: String,
    /// SET requests a second, one per round.
    runs: Vec<f64>,
    median: f64,
}

#[derive(Debug, Serialize)]
pub(super) struct ProgramResults {
    rows: Vec<ProgramRow>,
    redis: Vec<RedisRow>,
    redis_requests: u32,
}

/// A program timed by the bench: its name and command line.
struct Program {
    name: &'static str,
    argv: Vec<String>,
}

pub(super) fn run(memtrace: &Path, scratch: &Path, repeat: u32) -> Result<ProgramResults> {
    ensure_tools()?;
    let dir = scratch.join("programs");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let timed = cmd::compile_workload("timed", &["-O2"])?;
    let programs = [sqlite_program(&dir)?, cxx_program(&dir)?];
    let libc = system_libc()?;
    cmd::step(&format!(
        "whole programs: {repeat} rounds of {} programs under {} tracers",
        programs.len(),
        TRACERS.len()
    ));
    let mut rows: Vec<ProgramRow> = Vec::new();
    for p in &programs {
        for tracer in TRACERS {
            rows.push(ProgramRow {
                program: p.name.to_string(),
                tracer: tracer.to_string(),
                runs: Vec::new(),
                median: 0.0,
            });
        }
    }
    for round in 1..=repeat {
        for (i, row) in rows.iter_mut().enumerate() {
            let p = &programs[i / TRACERS.len()];
            let secs = time_program(memtrace, &timed, &dir, &libc, p, &row.tracer)
                .with_context(|| format!("{} under {}", p.name, row.tracer))?;
            eprintln!(
                "    round {round}/{repeat}: {:<8} {:<32} {secs:>8.3} s",
                p.name, row.tracer
            );
            row.runs.push(secs);
        }
    }
    for row in &mut rows {
        row.median = median(row.runs.clone());
    }
    let requests = 100_000;
    let redis = redis(memtrace, &dir, repeat, requests)?;
    Ok(ProgramResults {
        rows,
        redis,
        redis_requests: requests,
    })
}

/// sqlite3, heaptrack, redis-server and redis-benchmark from Debian.
fn ensure_tools() -> Result<()> {
    cmd::install_missing(&[
        ("sqlite3", "sqlite3"),
        ("heaptrack", "heaptrack"),
        ("redis-server", "redis-server"),
        ("redis-benchmark", "redis-tools"),
        ("g++", "g++"),
    ])
}

/// sqlite3 on an in-memory database: 30,000 inserts of pseudo-random
/// 20-letter names in one transaction, an index, two queries (the same
/// script every run: a fixed generator).
fn sqlite_program(dir: &Path) -> Result<Program> {
    let script = dir.join("script.sql");
    let mut sql = String::from(
        "CREATE TABLE people(id INTEGER PRIMARY KEY, name TEXT, score INTEGER);\nBEGIN;\n",
    );
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        // xorshift64: the same names on every machine.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..30_000 {
        let name: String = (0..20)
            .map(|_| char::from(b'a' + (next() % 26) as u8))
            .collect();
        sql += &format!(
            "INSERT INTO people(id, name, score) VALUES({i}, '{name}', {});\n",
            next() % 1000
        );
    }
    sql += "COMMIT;\nCREATE INDEX by_name ON people(name);\n\
            SELECT count(*), avg(score) FROM people WHERE name LIKE 'a%';\n\
            SELECT name FROM people ORDER BY score DESC, name LIMIT 5;\n";
    fs::write(&script, sql).with_context(|| format!("writing {}", script.display()))?;
    Ok(Program {
        name: "sqlite3",
        argv: vec![
            "sqlite3".into(),
            ":memory:".into(),
            format!(".read {}", script.display()),
        ],
    })
}

/// cc1plus, g++'s compiler proper, compiling [`CXX_SOURCE`] at -O1 from
/// its preprocessed form (the preprocessing, done once here, is not
/// timed).
fn cxx_program(dir: &Path) -> Result<Program> {
    let source = dir.join("service.cpp");
    let preprocessed = dir.join("service.ii");
    fs::write(&source, CXX_SOURCE).with_context(|| format!("writing {}", source.display()))?;
    cmd::run(
        Command::new("g++")
            .args(["-E", "-o"])
            .arg(&preprocessed)
            .arg(&source),
    )?;
    let cc1plus = cmd::stdout_of(Command::new("g++").arg("-print-prog-name=cc1plus"))?;
    Ok(Program {
        name: "cc1plus",
        argv: vec![
            cc1plus.trim().to_string(),
            "-quiet".into(),
            "-fpreprocessed".into(),
            preprocessed.display().to_string(),
            "-O1".into(),
            "-o".into(),
            "/dev/null".into(),
        ],
    })
}

/// The libc this machine's programs load (what bpftrace's script probes).
/// The path is the one /proc/PID/maps shows (symbolic links resolved).
fn system_libc() -> Result<PathBuf> {
    let libc = libc_of(Path::new("/bin/true"))?;
    fs::canonicalize(&libc).with_context(|| format!("resolving {}", libc.display()))
}

/// Runs `program` under timed.c and `tracer`; the seconds timed.c wrote.
fn time_program(
    memtrace: &Path,
    timed: &Path,
    dir: &Path,
    libc: &Path,
    program: &Program,
    tracer: &str,
) -> Result<f64> {
    let out = dir.join("elapsed");
    let _ = fs::remove_file(&out);
    let mut timed_argv: Vec<String> = vec![timed.display().to_string(), out.display().to_string()];
    timed_argv.extend(program.argv.iter().cloned());
    let mut bpftrace: Option<Child> = None;
    let mut command = match tracer {
        "untraced" => command(&timed_argv),
        "heaptrack" => {
            let mut c = Command::new("heaptrack");
            c.arg("-o").arg(dir.join("heaptrack")).args(&timed_argv);
            c
        }
        "bpftrace script" => {
            let script = memleak_script(&libc.display().to_string(), "mixed");
            let mut child = spawn_bpftrace(&dir.join("memleak.bt"), &script)?;
            // Its probes are in every process mapping the libc: this one.
            wait_for_breakpoints(std::process::id(), libc, 4, &mut child)?;
            bpftrace = Some(child);
            command(&timed_argv)
        }
        "memtrace" | "memtrace --sample-bytes 512KiB" => {
            let mut c = Command::new(memtrace);
            c.args(["--no-live", "--format", "json", "-o"])
                .arg(dir.join("report.json"));
            if tracer != "memtrace" {
                c.args(["--sample-bytes", "512KiB"]);
            }
            c.arg("--").args(&timed_argv);
            c
        }
        other => bail!("no tracer {other}"),
    };
    let status = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running {}", program.name))?;
    if let Some(mut b) = bpftrace {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(b.id() as i32, libc::SIGINT) };
        let _ = b.wait();
    }
    if !status.success() {
        bail!("{} exited with {status}", program.name);
    }
    let text = fs::read_to_string(&out).with_context(|| format!("reading {}", out.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: {text:?}", out.display()))
}

fn command(argv: &[String]) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c
}

/// The port the bench's redis-server listens on (127.0.0.1 only).
const REDIS_PORT: &str = "6399";

/// redis-server, and `redis-benchmark -t set -n requests` against it
/// untraced and under `memtrace --pid`, round by round.
fn redis(memtrace: &Path, dir: &Path, repeat: u32, requests: u32) -> Result<Vec<RedisRow>> {
    const CONFIGS: [&str; 3] = ["untraced", "memtrace", "memtrace --sample-bytes 512KiB"];
    cmd::step(&format!(
        "redis-benchmark SET, {requests} requests: {repeat} rounds untraced and traced"
    ));
    let mut server = Command::new("redis-server")
        .args(["--port", REDIS_PORT, "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting redis-server")?;
    let result = (|| {
        wait_for_redis()?;
        let mut rows: Vec<RedisRow> = CONFIGS
            .iter()
            .map(|c| RedisRow {
                tracer: c.to_string(),
                runs: Vec::new(),
                median: 0.0,
            })
            .collect();
        for round in 1..=repeat {
            for row in &mut rows {
                let mut tracer = match row.tracer.as_str() {
                    "untraced" => None,
                    config => {
                        let mut extra = vec![];
                        if config != "memtrace" {
                            extra = vec!["--sample-bytes", "512KiB"];
                        }
                        Some(super::allocators::attach(memtrace, server.id(), &extra)?)
                    }
                };
                let rate = set_rate(requests);
                if let Some(t) = tracer.as_mut() {
                    // SAFETY: kill(2) of our own child.
                    unsafe { libc::kill(t.id() as i32, libc::SIGINT) };
                    let _ = t.wait();
                }
                let rate = rate?;
                eprintln!(
                    "    round {round}/{repeat}: redis SET {:<32} {rate:>10.0} requests/s",
                    row.tracer
                );
                row.runs.push(rate);
            }
        }
        for row in &mut rows {
            row.median = median(row.runs.clone());
        }
        Ok(rows)
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// Waits (10 s at most) until redis-server answers a PING.
fn wait_for_redis() -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pong = Command::new("redis-cli")
            .args(["-p", REDIS_PORT, "ping"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG");
        if pong {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("redis-server did not answer on port {REDIS_PORT} within 10 s");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// One `redis-benchmark -t set` run: its requests a second.
fn set_rate(requests: u32) -> Result<f64> {
    let out = cmd::stdout_of(Command::new("redis-benchmark").args([
        "-p",
        REDIS_PORT,
        "-t",
        "set",
        "-n",
        &requests.to_string(),
        "-q",
    ]))?;
    parse_set_rate(&out)
        .with_context(|| format!("no SET rate in redis-benchmark's output: {out:?}"))
}

/// The final rate of `redis-benchmark -q` output ("SET: 31847.13 requests
/// per second, p50=0.791 msec"), past its progress lines ("SET: rps=…").
fn parse_set_rate(out: &str) -> Option<f64> {
    out.split(['\r', '\n'])
        .filter_map(|l| l.strip_prefix("SET: "))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|n| n.parse::<f64>().ok())
        .next_back()
}

/// The tables: each program's seconds and slowdown under each tracer,
/// memtrace's against heaptrack's; redis's requests a second.
pub(super) fn render_markdown(r: &ProgramResults) -> String {
    let mut out = String::from(
        "| program (median run) | untraced | heaptrack | bpftrace script | memtrace | memtrace \
         sampled 512 KiB |\n|---|---:|---:|---:|---:|---:|\n",
    );
    let mut ratios = String::new();
    for chunk in r.rows.chunks(TRACERS.len()) {
        let base = chunk[0].median;
        let cell = |row: &ProgramRow| match row.tracer.as_str() {
            "untraced" => format!("{:.2} s", row.median),
            _ => format!("{:.2} s ({:.1}×)", row.median, row.median / base),
        };
        out += &format!(
            "| {} | {} |\n",
            chunk[0].program,
            chunk.iter().map(cell).collect::<Vec<_>>().join(" | ")
        );
        let slowdown = |tracer: &str| {
            chunk
                .iter()
                .find(|row| row.tracer == tracer)
                .map_or(f64::NAN, |row| row.median / base)
        };
        ratios += &format!(
            "- {}: memtrace's slowdown is {:.1}× heaptrack's full, {:.1}× sampled.\n",
            chunk[0].program,
            slowdown("memtrace") / slowdown("heaptrack"),
            slowdown("memtrace --sample-bytes 512KiB") / slowdown("heaptrack")
        );
    }
    out += "\n";
    out += &ratios;
    if let Some(base) = r.redis.first().map(|row| row.median) {
        out += &format!(
            "\n| redis-benchmark SET, {} requests (median run) | requests a second | of untraced |\n\
             |---|---:|---:|\n",
            r.redis_requests
        );
        for row in &r.redis {
            out += &format!(
                "| redis-server {} | {:.0} | {:.0} % |\n",
                row.tracer,
                row.median,
                100.0 * row.median / base
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_set_rate_is_read_past_the_progress_lines() {
        let out = "SET: rps=71234.0 (overall: 70000.0) avg_msec=0.6 (overall: 0.6)\r\
                   SET: rps=88000.0 (overall: 85000.3) avg_msec=0.5 (overall: 0.5)\r\
                   SET: 89127.45 requests per second, p50=0.463 msec\n\n";
        assert_eq!(parse_set_rate(out), Some(89127.45));
        assert_eq!(parse_set_rate("ERROR: connection refused\n"), None);
    }

    #[test]
    fn tables_give_slowdowns_against_untraced_and_heaptrack() {
        let row = |tracer: &str, median: f64| ProgramRow {
            program: "sqlite3".into(),
            tracer: tracer.into(),
            runs: vec![median],
            median,
        };
        let results = ProgramResults {
            rows: vec![
                row("untraced", 0.1),
                row("heaptrack", 0.2),
                row("bpftrace script", 5.0),
                row("memtrace", 2.0),
                row("memtrace --sample-bytes 512KiB", 1.0),
            ],
            redis: vec![
                RedisRow {
                    tracer: "untraced".into(),
                    runs: vec![80000.0],
                    median: 80000.0,
                },
                RedisRow {
                    tracer: "memtrace".into(),
                    runs: vec![40000.0],
                    median: 40000.0,
                },
            ],
            redis_requests: 1000,
        };
        let md = render_markdown(&results);
        assert!(
            md.contains(
                "| sqlite3 | 0.10 s | 0.20 s (2.0×) | 5.00 s (50.0×) | 2.00 s (20.0×) | 1.00 s \
                 (10.0×) |"
            ),
            "{md}"
        );
        assert!(
            md.contains("- sqlite3: memtrace's slowdown is 10.0× heaptrack's full, 5.0× sampled."),
            "{md}"
        );
        assert!(
            md.contains("| redis-server memtrace | 40000 | 50 % |"),
            "{md}"
        );
    }
}

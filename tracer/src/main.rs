//! memtrace: finds memory leaks in running processes with eBPF.
//!
//! Data flow, one module per stage: `target`/`allocator`/`launch` find what
//! to hook (`watch` and `cgroup` on a watched node) → `attach` loads and attaches the eBPF programs (tracer-ebpf) →
//! `drain` reads kernel-side accounting → `mappings` accounts anonymous
//! mappings → `aggregate` keeps a series per stack → `analysis` computes
//! growth and verdicts → `symbolize` resolves frames → `report` builds the
//! one report model that every renderer reads; `output` writes it in each
//! format asked for. `session` runs the loop (`oom` describes OOM
//! kills); `offline` renders and diffs saved reports; `agent` is the node
//! agent (`memtrace agent`). This file only wires.

mod agent;
mod aggregate;
mod allocator;
mod analysis;
mod attach;
mod cgroup;
mod cli;
mod drain;
mod launch;
mod mappings;
mod offline;
mod oom;
mod outfile;
mod output;
mod overhead;
mod perfmap;
mod placement;
mod preflight;
mod report;
mod session;
mod symbolize;
mod target;
mod units;
mod unwind;
mod watch;

use std::process::ExitCode;

use anyhow::Result;

fn main() -> ExitCode {
    let cli = cli::Cli::parse_or_exit();
    let result = match cli.subcommand {
        Some(cli::Subcommands::Agent(args)) => agent::run(args),
        Some(ref command) => offline::run(command, &cli.outputs),
        None => run(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its context chain.
            note(&format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Writes `memtrace: MSG` to stderr, ignoring a closed stderr (eprintln!
/// would panic on EPIPE).
pub fn note(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "memtrace: {msg}");
}

fn run(cli: cli::Cli) -> Result<()> {
    preflight::check_privileges()?;
    preflight::check_btf()?;
    preflight::ensure_tracefs()?;
    preflight::raise_resource_limits();
    for &pid in &cli.pids {
        target::inspect(pid)?;
    }
    // A report that cannot be written is found out now, not after tracing.
    output::check_files(&cli.outputs)?;
    // Fork CMD (held before exec) while still single-threaded.
    let child = match cli.command.is_empty() {
        true => None,
        false => Some(launch::spawn_held(&cli.command)?),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(session::run(cli, child))
}

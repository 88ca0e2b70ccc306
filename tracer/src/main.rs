//! memtrace: finds memory leaks in running processes with eBPF.
//!
//! Data flow, one module per stage: `target`/`allocator`/`launch` find what
//! to hook → `attach` loads and attaches the eBPF programs (tracer-ebpf) →
//! `drain` reads kernel-side accounting → `mappings` accounts anonymous
//! mappings → `aggregate` keeps a series per stack → `analysis` computes
//! growth and verdicts → `symbolize` resolves frames → `report` builds the
//! one report model that every renderer reads. `session` runs the loop;
//! this file only wires.

mod aggregate;
mod allocator;
mod analysis;
mod attach;
mod cli;
mod drain;
mod launch;
mod mappings;
mod preflight;
mod report;
mod session;
mod symbolize;
mod target;
mod units;

use std::process::ExitCode;

use anyhow::{Context, Result};

fn main() -> ExitCode {
    let cli = cli::Cli::parse_or_exit();
    match run(cli) {
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
    for &pid in &cli.pids {
        target::inspect(pid)?;
    }
    // A report that cannot be written is found out now, not after tracing.
    if let Some(path) = &cli.output {
        std::fs::File::create(path)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
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

//! The `memtrace` binary: parses the command line, runs the mode it asks
//! for (tracing, `report`/`diff`, `agent`) from the library, and turns an
//! error into one line on stderr.

use std::process::ExitCode;

use anyhow::Result;
use memtrace::{agent, cli, launch, note, offline, output, preflight, session, target};

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

//! The `memtrace` binary: parses the command line into settings once, runs
//! the mode they ask for (tracing, `report`/`diff`, `agent`) from the
//! library, and turns an error into one line on stderr.

use std::process::ExitCode;

use anyhow::Result;
use memtrace::{
    agent,
    bpf::preflight,
    cli, config,
    discover::{launch, target},
    note, offline, output, trace,
};

fn main() -> ExitCode {
    agent::name_after_argv0();
    let result = match cli::Cli::parse_or_exit() {
        config::Run::Agent(settings) => agent::run(settings),
        config::Run::Offline(command) => offline::run(&command),
        config::Run::Trace(settings) => run(settings),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Each output that failed was reported on its own line.
        Err(e) if e.is::<output::NotWritten>() => ExitCode::FAILURE,
        Err(e) => {
            // One line: the error and its context chain.
            note(&format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn run(settings: config::Trace) -> Result<()> {
    preflight::check_privileges()?;
    preflight::check_btf()?;
    preflight::ensure_tracefs()?;
    preflight::raise_resource_limits();
    for &pid in &settings.pids {
        target::inspect(pid)?;
    }
    // A report that cannot be written is found out now, not after tracing.
    output::check_files(&settings.outputs.list)?;
    // Fork CMD (held before exec) while still single-threaded.
    let child = match settings.command.is_empty() {
        true => None,
        false => Some(launch::spawn_held(&settings.command)?),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(trace::run(settings, child))
}

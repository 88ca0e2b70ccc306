//! The `memtrace` binary: parses the command line into settings once, runs
//! the mode they ask for (tracing, `report`/`diff`, `agent`) from the
//! library, and turns an error into one line on stderr.

use std::process::ExitCode;

use anyhow::Result;
use memtrace::{
    agent,
    bpf::preflight,
    cli, config,
    discover::{golang, launch, python::Python, target},
    note, offline, output, symbolize, trace,
};

fn main() -> ExitCode {
    memtrace::mark_start();
    agent::name_after_argv0();
    let result = match cli::Cli::parse_or_exit() {
        config::Run::Agent(settings) => agent::run(settings),
        config::Run::Offline(command) => offline::run(&command),
        config::Run::Trace(settings) => run(settings),
        config::Run::PythonStacks { pid, offsets_of } => python_stacks(pid, offsets_of),
        config::Run::GoLayout { file } => go_layout(&file),
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
    preflight::check_kernel_features()?;
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

/// `memtrace python-stacks --pid PID`: attaches to a CPython process (the
/// offsets checked against it), walks every thread's stack once and prints
/// it as JSON; the check's result goes to stderr. `--offsets-of MINOR`
/// reads it with another version's offsets (to test the check).
fn python_stacks(pid: u32, offsets_of: Option<u32>) -> Result<()> {
    preflight::check_privileges()?;
    target::inspect(pid)?;
    let python = Python::attach_as(pid, offsets_of)?;
    note(&python.describe());
    let mut cache = symbolize::python::CodeCache::default();
    let stacks = symbolize::python::stacks(&python, &mut cache)
        .ok_or_else(|| anyhow::anyhow!("pid {pid}: the interpreter is gone"))?;
    println!("{}", serde_json::to_string_pretty(&stacks)?);
    Ok(())
}

/// `memtrace go-layout FILE`: the Go version of a binary, the layouts its
/// DWARF gives (or why not) and its version's row of the table, as JSON.
fn go_layout(file: &std::path::Path) -> Result<()> {
    let data = std::fs::read(file)?;
    let obj = object::File::parse(&*data)?;
    let version = golang::build_version(&obj);
    let minor = version.as_deref().and_then(golang::minor_of);
    let dwarf = match golang::layout::Layout::from_dwarf(&obj) {
        Ok(layout) => serde_json::to_value(layout)?,
        Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
    };
    let table = minor.and_then(golang::layout::table_row);
    let out = serde_json::json!({ "version": version, "dwarf": dwarf, "table": table });
    use std::io::Write;
    writeln!(std::io::stdout(), "{}", serde_json::to_string_pretty(&out)?)?;
    Ok(())
}

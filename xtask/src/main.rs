//! `cargo xtask`: developer and CI tasks for memtrace. This file only wires
//! the command line to the task modules and turns errors into one line.

mod bench;
mod build;
mod cmd;
mod demo;
mod fuzz;
mod kernel;
mod lint;
mod prereqs;
mod soak;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Developer and CI tasks for memtrace (run as `cargo xtask <TASK>`).
///
/// Works from any directory inside the repository.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Install missing prerequisites, then build target/release/memtrace.
    ///
    /// Prerequisites: a `stable` rustc built on LLVM 22, its `rust-src`
    /// component (added with rustup if missing) and bpf-linker 0.10.4
    /// (installed with `cargo install --locked` if missing or a different
    /// version, ~1.5 min). tracer/build.rs then compiles the eBPF program and
    /// embeds it into the binary.
    Build,

    /// Build memtrace, then trace a small leaking demo program.
    ///
    /// Compiles tests/workloads/demo_leak.c to target/xtask/demo_leak and runs
    /// `memtrace --interval 3s --duration <DURATION> -- target/xtask/demo_leak`,
    /// printing memtrace's report on stdout. memtrace needs root; when not
    /// root it is started through sudo.
    Demo(demo::DemoArgs),

    /// Build, lint, then run the workspace tests. Must run as root.
    ///
    /// Steps: `cargo xtask build`, the checks of `cargo xtask lint`, then
    /// `cargo test --workspace --release` with MEMTRACE_BIN pointing at
    /// target/release/memtrace. Stops at the first failing step.
    ///
    /// With `--kernel 6.1`: the kernel-dependent integration tests on
    /// Debian's 6.1 kernel instead, booted under QEMU with virtme-ng (both
    /// installed when missing; docs/kernels.md).
    Test(test::TestArgs),

    /// Time a malloc-heavy program untraced, under empty probes at offset 0
    /// (the naive floor), under a bpftrace memleak-style script, and under
    /// memtrace (full and sampled); print the medians and ratios, memtrace's
    /// own CPU and peak RSS, and write target/xtask/bench.json. Must run as
    /// root; installs bpftrace (Debian) when missing.
    ///
    /// The same results, as Markdown tables, replace what is between the
    /// lines `<!-- bench:begin -->` and `<!-- bench:end -->` of
    /// docs/performance.md (checked before the bench starts; --no-docs
    /// leaves the file alone). --memtrace PATH times that binary instead of
    /// building one, for before/after comparisons.
    Bench(bench::BenchArgs),

    /// Trace a workload with a steady leak and heavy churn for --minutes,
    /// recording memtrace's resident memory and CPU every minute; print
    /// them, check the leak is found with its bytes, and write
    /// target/xtask/soak.json. Must run as root.
    Soak(soak::SoakArgs),

    /// Run every cargo fuzz target of fuzz/ (the parsers of outside input:
    /// /proc files, cgroup paths, perf maps, snapshots, units, incident
    /// ids) for --seconds each, from the seeds in fuzz/seeds/; print the
    /// executions and any crash. Needs the nightly toolchain; installs
    /// cargo-fuzz when missing.
    Fuzz(fuzz::FuzzArgs),

    /// Check formatting (`cargo fmt --check`) and run clippy with -D warnings.
    ///
    /// Runs `cargo fmt --all -- --check`, `rustfmt --check` on the eBPF crate
    /// (tracer-ebpf is outside the workspace), `cargo clippy --workspace
    /// --all-targets -- -D warnings`, and clippy -D warnings on tracer-ebpf
    /// for bpfel-unknown-none (as tracer/build.rs builds it, target dir
    /// target/ebpf-clippy), then the import-structure check: no import
    /// cycle between the top-level modules of tracer/src, tracer-ebpf/src
    /// or report/src, and tracer/src and tracer-ebpf/src follow the layer
    /// tables in xtask/src/lint.rs (one line per problem, with file and
    /// edge). Checks the eBPF build prerequisites first, because clippy
    /// compiles tracer/build.rs.
    ///
    /// `--imports` runs only the import-structure check (on the crates
    /// under DIR when given, e.g. another checkout).
    Lint {
        #[arg(long, value_name = "DIR", num_args = 0..=1)]
        imports: Option<Option<std::path::PathBuf>>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Build => build::run().map(drop),
        Task::Demo(args) => demo::run(args),
        Task::Test(args) => test::run(args),
        Task::Lint { imports: None } => lint::run(true),
        Task::Lint {
            imports: Some(root),
        } => lint::run_imports(root.as_deref()),
        Task::Bench(args) => bench::run(args),
        Task::Soak(args) => soak::run(args),
        Task::Fuzz(args) => fuzz::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` joins the context chain into a single line.
            let msg = format!("{err:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

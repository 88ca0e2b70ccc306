//! `cargo xtask test`: build memtrace, lint, then run the workspace tests
//! (including the root-only eBPF integration tests) against that binary.

use std::ffi::OsString;

use anyhow::{bail, Result};
use clap::Args;

use crate::{build, cmd, lint};

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and `cargo clippy`.
    #[arg(long)]
    no_lint: bool,

    /// Extra arguments for `cargo test`, after `--`
    /// (e.g. `cargo xtask test -- --test leaks -- --nocapture`).
    #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
    cargo_test_args: Vec<OsString>,
}

pub fn run(args: TestArgs) -> Result<()> {
    // Checked first so a non-root run fails fast instead of after the build.
    if !cmd::is_root() {
        bail!(
            "the integration tests load eBPF programs and must run as root: \
             re-run `cargo xtask test` as root"
        );
    }

    let bin = build::run()?;
    ensure_test_tools()?;

    if !args.no_lint {
        lint::run(false)?;
    }

    cmd::step("cargo test (release)");
    cmd::run(
        cmd::cargo()
            .args(["test", "--workspace", "--release"])
            .args(&args.cargo_test_args)
            .env("MEMTRACE_BIN", &bin),
    )?;
    eprintln!("==> all steps passed");
    Ok(())
}

/// Programs the integration tests drive, by Debian package: gcc compiles
/// the workloads, tmux is the real terminal of the live-view test, go runs
/// `go tool pprof` on memtrace's pprof output.
const TEST_TOOLS: [(&str, &str); 3] = [("gcc", "gcc"), ("tmux", "tmux"), ("go", "golang-go")];

/// Installs the test tools that are missing (with apt-get, as root).
fn ensure_test_tools() -> Result<()> {
    let missing: Vec<&str> = TEST_TOOLS
        .iter()
        .filter(|(program, _)| cmd::which(program).is_none())
        .map(|&(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    cmd::step(&format!("installing test tools: {}", missing.join(" ")));
    cmd::run(std::process::Command::new("apt-get").args(["update", "-q"]))?;
    cmd::run(
        std::process::Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

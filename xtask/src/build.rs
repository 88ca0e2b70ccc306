//! `cargo xtask build`: ensure the prerequisites, then build the release
//! `memtrace` binary (tracer/build.rs embeds the eBPF object into it).

use std::path::PathBuf;

use anyhow::{ensure, Result};

use crate::{cmd, prereqs};

/// Build `target/release/memtrace` and return its path.
pub(crate) fn run() -> Result<PathBuf> {
    cmd::step("prerequisites");
    prereqs::ensure_all()?;

    cmd::step("build memtrace (release)");
    cmd::run(cmd::cargo().args(["build", "--release", "-p", "memtrace"]))?;

    let bin = cmd::memtrace_bin();
    ensure!(
        bin.is_file(),
        "cargo build succeeded but {} does not exist",
        bin.display()
    );
    eprintln!("    built {}", bin.display());
    Ok(bin)
}

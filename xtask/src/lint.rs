//! `cargo xtask lint`: `cargo fmt --check` and `cargo clippy -D warnings`
//! over the whole workspace, plus a rustfmt check of the eBPF crate and of
//! the fuzz targets (both excluded from the workspace, so `cargo fmt
//! --all` does not see them).

use std::process::Command;

use anyhow::Result;

use crate::{cmd, prereqs};

/// Run the format check and clippy. Clippy compiles tracer/build.rs, which
/// builds the eBPF object, so the eBPF prerequisites are checked first
/// unless the caller already did (`check_prereqs: false`).
pub(crate) fn run(check_prereqs: bool) -> Result<()> {
    if check_prereqs {
        cmd::step("prerequisites");
        prereqs::ensure_all()?;
    }
    // Lints run on the active toolchain.
    prereqs::ensure_component(None, "rustfmt")?;
    prereqs::ensure_component(None, "clippy")?;

    cmd::step("rustfmt");
    cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))?;
    // rustfmt follows `mod` declarations from the crate root. Edition as in
    // tracer-ebpf/Cargo.toml.
    cmd::run(
        Command::new("rustfmt")
            .args(["--check", "--edition", "2021", "tracer-ebpf/src/main.rs"])
            .args(fuzz_targets()?)
            .current_dir(cmd::workspace_root()),
    )?;

    cmd::step("clippy");
    cmd::run(cmd::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

/// The fuzz targets' sources (each is a crate root), relative to the
/// workspace root.
fn fuzz_targets() -> Result<Vec<std::path::PathBuf>> {
    let dir = cmd::workspace_root().join("fuzz/fuzz_targets");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

//! `cargo xtask lint`: `cargo fmt --check` and `cargo clippy -D warnings`
//! over the whole workspace, plus a rustfmt check of the eBPF crate and of
//! the fuzz targets (both excluded from the workspace, so `cargo fmt
//! --all` does not see them), and clippy on the eBPF crate (built for the
//! BPF target as tracer/build.rs builds it).

use std::process::Command;

use anyhow::Result;

use crate::{cmd, prereqs};

/// Run the format check and clippy. Clippy compiles tracer/build.rs, which
/// builds the eBPF object, so the eBPF prerequisites are checked first
/// unless the caller already did (`check_prereqs: false`).
pub fn run(check_prereqs: bool) -> Result<()> {
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
    ]))?;

    cmd::step("clippy (tracer-ebpf, bpfel-unknown-none)");
    cmd::run(&mut clippy_ebpf())
}

/// `cargo clippy` on tracer-ebpf, invoked the way aya-build 0.2 invokes
/// `cargo build` for it from tracer/build.rs: in the crate's own directory
/// (its own workspace), `--bins --release --target bpfel-unknown-none -Z
/// build-std=core` with RUSTC_BOOTSTRAP=1 on this (stable) toolchain, the
/// same encoded rustflags, RUSTC and RUSTC_WORKSPACE_WRAPPER unset, and a
/// target dir of its own (target/ebpf-clippy) so that it neither waits for
/// nor invalidates the outer build.
fn clippy_ebpf() -> Command {
    let mut clippy = cmd::cargo();
    clippy
        .current_dir(cmd::workspace_root().join("tracer-ebpf"))
        .args(["clippy", "--package", "tracer-ebpf", "--bins", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(cmd::target_dir().join("ebpf-clippy"))
        .args(["--", "-D", "warnings"])
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                &format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
                "-Cdebuginfo=2",
                "-Clink-arg=--btf",
            ]
            .join("\x1f"),
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    clippy
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

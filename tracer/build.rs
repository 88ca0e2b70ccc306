//! Builds the eBPF programs (tracer-ebpf) for bpfel-unknown-none with
//! aya-build and leaves the object in OUT_DIR for `include_bytes_aligned!`.
//!
//! The eBPF crate needs `-Z build-std=core`. Rather than require a nightly
//! toolchain, the nested cargo runs on the current (stable) toolchain with
//! RUSTC_BOOTSTRAP=1 set for it alone (setting it on the outer cargo would
//! change every crate's fingerprint and rebuild everything).
//! Prerequisites (rust-src, bpf-linker 0.10.4) are installed by
//! `cargo xtask build`.
//!
//! Fuzz builds (`cargo fuzz`, which sets `--cfg fuzzing`) get an empty
//! object instead: the fuzz targets exercise parsers and never load BPF,
//! and the nested eBPF build cannot take the sanitizer flags.

use std::{env, path::PathBuf};

fn main() -> anyhow::Result<()> {
    if env::var_os("CARGO_CFG_FUZZING").is_some() {
        let out = PathBuf::from(env::var("OUT_DIR")?).join("tracer");
        std::fs::write(out, [])?;
        return Ok(());
    }
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("../tracer-ebpf").canonicalize()?;
    let common_dir = manifest_dir.join("../tracer-common").canonicalize()?;
    println!("cargo:rerun-if-changed={}", common_dir.display());
    // The nested `cargo build --package tracer-ebpf` runs in our working
    // directory; tracer-ebpf is its own workspace, so run it from there.
    env::set_current_dir(&ebpf_dir)?;
    // SAFETY (edition 2021: set_var is safe): build scripts are
    // single-threaded here.
    env::set_var("RUSTC_BOOTSTRAP", "1");
    let toolchain = env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".to_string());
    let ebpf = aya_build::Package {
        name: "tracer-ebpf",
        root_dir: ebpf_dir.to_str().expect("utf-8 path"),
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], aya_build::Toolchain::Custom(&toolchain))
}

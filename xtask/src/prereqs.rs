//! Prerequisites of the eBPF build, checked (and installed when missing)
//! before anything is compiled: a rustc whose LLVM bpf-linker supports, the
//! `rust-src` component, and bpf-linker itself at an exact version. Also
//! the small output parsers these checks rely on.

use std::process::Command;

use anyhow::{bail, Result};

use crate::cmd;

/// Toolchain that `tracer/build.rs` hands to aya-build, which builds the eBPF
/// crate with `rustup run <toolchain> cargo build -Z build-std=core`
/// (unstable flags unlocked by `RUSTC_BOOTSTRAP=1` in build.rs). The checks
/// below therefore target this toolchain, not whatever is active.
pub(crate) const EBPF_TOOLCHAIN: &str = "stable";

/// The bpf-linker release we build with.
pub(crate) const BPF_LINKER_VERSION: &str = "0.10.4";

/// LLVM major version bpf-linker 0.10.4 works with. bpf-linker loads the
/// libLLVM that ships with rustc, and this release supports LLVM 22 only.
/// It does not report this itself (`bpf-linker --version` prints just
/// `bpf-linker 0.10.4` and `--help` has no version info), so it is
/// hard-coded here; update it together with `BPF_LINKER_VERSION`.
pub(crate) const BPF_LINKER_LLVM_MAJOR: u32 = 22;

/// Check and install everything `cargo build -p memtrace` needs.
pub(crate) fn ensure_all() -> Result<()> {
    check_rustc_llvm()?;
    ensure_component(Some(EBPF_TOOLCHAIN), "rust-src")?;
    ensure_bpf_linker()
}

/// Fail with a one-line fix if the eBPF toolchain's LLVM is not the one
/// bpf-linker supports. Cheap, so it runs before any slow install.
fn check_rustc_llvm() -> Result<()> {
    let out = cmd::stdout_of(rustup().args(["run", EBPF_TOOLCHAIN, "rustc", "-vV"]))?;
    let Some(major) = parse_llvm_major(&out) else {
        bail!(
            "could not find an `LLVM version:` line in `rustc -vV` (toolchain `{EBPF_TOOLCHAIN}`)"
        );
    };
    let release = parse_rustc_release(&out).unwrap_or("?");
    if major != BPF_LINKER_LLVM_MAJOR {
        bail!(
            "rustc {release} (toolchain `{EBPF_TOOLCHAIN}`) uses LLVM {major} but bpf-linker \
             {BPF_LINKER_VERSION} needs LLVM {BPF_LINKER_LLVM_MAJOR}: use a Rust toolchain \
             whose `rustc -vV` reports LLVM {BPF_LINKER_LLVM_MAJOR} (Rust 1.95)"
        );
    }
    eprintln!("    ok: rustc {release} ({EBPF_TOOLCHAIN}) uses LLVM {major}");
    Ok(())
}

/// Make sure a rustup component is installed, adding it if it is not.
/// `toolchain: None` means the active toolchain.
pub(crate) fn ensure_component(toolchain: Option<&str>, component: &str) -> Result<()> {
    let with_toolchain = |cmd: &mut Command| {
        if let Some(tc) = toolchain {
            cmd.args(["--toolchain", tc]);
        }
    };
    let mut list = rustup();
    list.args(["component", "list", "--installed"]);
    with_toolchain(&mut list);
    let which = toolchain.unwrap_or("active");
    if has_component(&cmd::stdout_of(&mut list)?, component) {
        eprintln!("    ok: {component} is installed ({which} toolchain)");
        return Ok(());
    }
    eprintln!("    installing missing rustup component {component} ({which} toolchain)");
    let mut add = rustup();
    add.args(["component", "add", component]);
    with_toolchain(&mut add);
    cmd::run(&mut add)
}

/// Install bpf-linker `BPF_LINKER_VERSION` unless exactly that is on PATH.
fn ensure_bpf_linker() -> Result<()> {
    let mut force = false;
    match bpf_linker_version() {
        Some(Ok(v)) if v == BPF_LINKER_VERSION => {
            eprintln!("    ok: bpf-linker {v}");
            return Ok(());
        }
        // A different version is replaced by `cargo install` on its own.
        Some(Ok(v)) => eprintln!("    found bpf-linker {v}, need {BPF_LINKER_VERSION}"),
        Some(Err(why)) => {
            eprintln!("    found an unusable bpf-linker ({why})");
            // cargo may think this exact version is already installed.
            force = true;
        }
        None => eprintln!("    bpf-linker is not installed"),
    }
    eprintln!(
        "    installing bpf-linker {BPF_LINKER_VERSION} with `cargo install` \
         (takes about 1.5 minutes)..."
    );
    let mut install = cmd::cargo();
    install.args([
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
    ]);
    if force {
        install.arg("--force");
    }
    cmd::run(&mut install)?;

    let found = match bpf_linker_version() {
        Some(Ok(v)) if v == BPF_LINKER_VERSION => {
            eprintln!("    ok: bpf-linker {v}");
            return Ok(());
        }
        None => "no bpf-linker".to_owned(),
        Some(found) => {
            let at = cmd::which("bpf-linker").unwrap_or_default();
            match found {
                Ok(v) => format!("bpf-linker {v} at {}", at.display()),
                Err(why) => format!("a broken bpf-linker at {} ({why})", at.display()),
            }
        }
    };
    bail!(
        "after `cargo install bpf-linker@{BPF_LINKER_VERSION}`, PATH still has {found}: \
         put cargo's bin dir (usually ~/.cargo/bin) first on PATH"
    )
}

/// `None` if bpf-linker is not on PATH, else its version or why we could
/// not get one.
fn bpf_linker_version() -> Option<Result<String, String>> {
    cmd::which("bpf-linker")?;
    let out = match Command::new("bpf-linker").arg("--version").output() {
        Ok(out) => out,
        Err(err) => return Some(Err(format!("`bpf-linker --version`: {err}"))),
    };
    if !out.status.success() {
        return Some(Err(format!(
            "`bpf-linker --version` failed ({})",
            out.status
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Some(
        parse_bpf_linker_version(&stdout)
            .map(str::to_owned)
            .ok_or_else(|| format!("unrecognised `bpf-linker --version` output {stdout:?}")),
    )
}

fn rustup() -> Command {
    Command::new("rustup")
}

/// `bpf-linker 0.10.4` -> `0.10.4`.
pub(crate) fn parse_bpf_linker_version(version_output: &str) -> Option<&str> {
    version_output.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("bpf-linker"), Some(v)) if v.starts_with(|c: char| c.is_ascii_digit()) => Some(v),
            _ => None,
        }
    })
}

/// The major version from the `LLVM version: 22.1.2` line of `rustc -vV`.
pub(crate) fn parse_llvm_major(rustc_vv: &str) -> Option<u32> {
    rustc_vv.lines().find_map(|line| {
        let version = line.trim().strip_prefix("LLVM version:")?.trim();
        version.split('.').next()?.parse().ok()
    })
}

/// The `release: 1.95.0` line of `rustc -vV`.
pub(crate) fn parse_rustc_release(rustc_vv: &str) -> Option<&str> {
    rustc_vv
        .lines()
        .find_map(|line| line.trim().strip_prefix("release:"))
        .map(str::trim)
}

/// Whether `rustup component list --installed` output lists `component`,
/// either bare (`rust-src`) or with a target suffix (`clippy-x86_64-...`).
pub(crate) fn has_component(list: &str, component: &str) -> bool {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|name| {
            name == component
                || name
                    .strip_prefix(component)
                    .is_some_and(|rest| rest.starts_with('-'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUSTC_VV: &str = "rustc 1.95.0 (59807616e 2026-04-14)
binary: rustc
commit-hash: 59807616e1fa2540724bfbac14d7976d7e4a3860
commit-date: 2026-04-14
host: x86_64-unknown-linux-gnu
release: 1.95.0
LLVM version: 22.1.2
";

    #[test]
    fn bpf_linker_version_is_parsed() {
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.10.4\n"),
            Some("0.10.4")
        );
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.9.15"),
            Some("0.9.15")
        );
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.11.0 (LLVM 23)\n"),
            Some("0.11.0")
        );
    }

    #[test]
    fn bpf_linker_version_rejects_garbage() {
        assert_eq!(parse_bpf_linker_version(""), None);
        assert_eq!(parse_bpf_linker_version("bpf-linker"), None);
        assert_eq!(parse_bpf_linker_version("bpf-linker: error"), None);
        assert_eq!(parse_bpf_linker_version("cargo 1.95.0"), None);
    }

    #[test]
    fn llvm_major_is_parsed() {
        assert_eq!(parse_llvm_major(RUSTC_VV), Some(22));
        assert_eq!(parse_llvm_major("LLVM version: 23.0.0\n"), Some(23));
        assert_eq!(parse_llvm_major("LLVM version: 21\n"), Some(21));
    }

    #[test]
    fn llvm_major_missing_or_malformed() {
        assert_eq!(parse_llvm_major("rustc 1.95.0\nrelease: 1.95.0\n"), None);
        assert_eq!(parse_llvm_major("LLVM version: unknown\n"), None);
    }

    #[test]
    fn rustc_release_is_parsed() {
        assert_eq!(parse_rustc_release(RUSTC_VV), Some("1.95.0"));
        assert_eq!(parse_rustc_release("nothing"), None);
    }

    #[test]
    fn components_are_detected() {
        let list = "cargo-x86_64-unknown-linux-gnu
clippy-x86_64-unknown-linux-gnu
rust-docs-x86_64-unknown-linux-gnu
rust-src
rust-std-x86_64-unknown-linux-gnu
rustc-x86_64-unknown-linux-gnu
rustfmt-x86_64-unknown-linux-gnu
";
        assert!(has_component(list, "rust-src"));
        assert!(has_component(list, "clippy"));
        assert!(has_component(list, "rustfmt"));
        assert!(!has_component(list, "rust-analyzer"));
        assert!(!has_component(list, "rust-s"));
        assert!(!has_component(
            "rust-std-x86_64-unknown-linux-gnu\n",
            "rust-src"
        ));
        assert!(!has_component("", "rust-src"));
    }
}

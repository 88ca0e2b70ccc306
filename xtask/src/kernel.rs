//! `cargo xtask test --kernel VERSION`: the integration tests that depend
//! on the kernel, run on another kernel than this machine's. Debian's
//! generic kernel package of that version (`linux-image-6.1.0-N-amd64-
//! unsigned`, the newest ABI apt knows) is downloaded and unpacked into
//! /var/cache/memtrace/kernels, and booted under QEMU with virtme-ng (from
//! PyPI, in a venv under target/xtask/) with this machine's filesystem as
//! its root: read-only, but /tmp (where the tests build their workloads)
//! and the target dir (the test binary and memtrace) writable. The VM
//! emulates its CPUs in software (no nested KVM here), so it runs the
//! subset in [`SUBSET`], not the whole suite.

use std::{
    ffi::OsString,
    fs,
    io::{BufRead, BufReader, Read, Seek, SeekFrom},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// The virtme-ng release the runs were made with.
const VIRTME_NG: &str = "virtme-ng==1.42";

/// Where the unpacked kernels are kept between runs (and clones).
const CACHE: &str = "/var/cache/memtrace/kernels";

/// The tests run inside the VM, by name prefix, and what each exercises
/// that depends on the kernel. Software emulation runs them ~4x slower
/// than the host (~4 min against ~1); the runtimes' tests (Go, Node, Java, Python's versions)
/// read process memory the same way on every kernel and stay on the host.
const SUBSET: &[&str] = &[
    // Forks followed and held (task_newtask, the fork-return tracepoints,
    // bpf_send_signal), exec, pid reuse; two traced processes' returns.
    "lifecycle::",
    // Main-thread exit without `group_dead`; thread churn.
    "threads::",
    // The oom/mark_victim tracepoint's fields as this kernel has them.
    "oom::",
    // Resident memory that moves in steps before 6.2.
    "verdicts::rss_",
    // Exact counts on the fallback probe path, every entry point.
    "semantics::",
    "allocators::each_entry_point_of_each_allocator_counts_once",
    "allocators::single_stepped_probes_are_counted_and_named",
    "allocators::reallocarray_is_seen_through_realloc_and_its_failure_path",
    // The mapping tracepoints.
    "mappings::",
    // Modes and their errors; `--all`, and processes selected by name and
    // cgroup. Not node::all_attributes_each_leak_to_its_process: Go's
    // linker cannot map its output file on the VM's 9p /tmp. Not
    // node::all_drops_processes_that_exit: its 20 processes of a few
    // milliseconds each must be seen before they exit, and under emulation
    // `--all` sampled every 3 s instead of every 1 s and missed some.
    "attach::",
    "node::all_hooks_a_libc_that_is_another_file",
    "node::comm_and_cgroup_select_processes_as_they_start",
    // Nothing of memtrace left in the kernel after Ctrl-C and SIGKILL.
    "robustness::cleanup::",
    // The kernel features memtrace finds, against docs/kernels.md.
    "kernels::",
];

/// memtrace's unit tests that read the running kernel: its BTF (every
/// helper the programs call, the fs base), the tracepoint formats
/// (`group_dead`, the OOM victim's fields), a process's memory.
const UNIT_SUBSET: &[&str] = &[
    "bpf::btf::",
    "bpf::preflight::",
    "bpf::probes::",
    "discover::target::",
];

/// At most this long for the whole VM run (boot, tests, power-off): the
/// runs so far took 4-5 min; one of them wedged (both CPUs busy, no test
/// output for minutes), and its console is what the next one must show.
const TIMEOUT: Duration = Duration::from_secs(20 * 60);

pub(crate) fn run(version: &str, bin: &Path, test_args: &[OsString]) -> Result<()> {
    let vng = ensure_vm_tools()?;
    let kernel = unpacked_kernel(version)?;
    cmd::step("building the tests");
    let unit = test_binary(&["-p", "memtrace", "--lib"], "memtrace", "lib")?;
    let tests = test_binary(
        &["-p", "memtrace-integration", "--test", "integration"],
        "integration",
        "test",
    )?;
    let dir = cmd::target_dir()
        .join("xtask")
        .join(format!("kernel-{version}"));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let status = dir.join("status");
    let log = dir.join("tests.log");
    for file in [&status, &log] {
        let _ = fs::remove_file(file);
    }
    let script = dir.join("run.sh");
    let filters: Vec<String> = match test_args.is_empty() {
        true => SUBSET.iter().map(|s| s.to_string()).collect(),
        false => test_args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    };
    write_script(&script, [&unit, &tests], bin, &filters, &status, &log)?;
    cmd::step(&format!(
        "integration tests on Linux {} (QEMU, software emulation)",
        kernel.release
    ));
    let started = Instant::now();
    let mut vm = Command::new(&vng);
    // vng runs virtme-run, from its venv.
    let venv_bin = vng.parent().context("vng's directory")?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![venv_bin.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    vm.env("PATH", std::env::join_paths(paths)?)
        .arg("--run")
        .arg(&kernel.image)
        .args([
            "--verbose",
            "--disable-kvm",
            "--force-9p",
            "--cpus",
            "2",
            "--memory",
            "4G",
        ])
        .args(["--rwdir", "/tmp", "--rwdir"])
        .arg(cmd::target_dir())
        .arg("--exec")
        .arg(&script)
        .current_dir(cmd::workspace_root());
    run_with_timeout(&mut vm, TIMEOUT, &log, &dir.join("console.log"))?;
    let code = fs::read_to_string(&status).with_context(|| {
        format!(
            "the VM ended without the tests' exit status ({} not written): it did not boot or \
             was stopped",
            status.display()
        )
    })?;
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    match code.trim() {
        "0" => {
            eprintln!(
                "==> integration tests passed on Linux {} ({minutes:.1} min with boot)",
                kernel.release
            );
            Ok(())
        }
        other => bail!(
            "integration tests failed on Linux {} (exit status {other}, {minutes:.1} min)",
            kernel.release
        ),
    }
}

/// QEMU and a static busybox (virtme-ng's initramfs) from Debian, and
/// virtme-ng; returns the `vng` executable.
fn ensure_vm_tools() -> Result<PathBuf> {
    let mut missing = Vec::new();
    if cmd::which("qemu-system-x86_64").is_none() {
        missing.push("qemu-system-x86");
    }
    if !Path::new("/bin/busybox").exists() {
        missing.push("busybox-static");
    }
    if !missing.is_empty() {
        cmd::apt_install(&missing)?;
    }
    cmd::venv_tool("vng-venv", VIRTME_NG, "vng")
}

/// A kernel unpacked from its Debian package.
struct Kernel {
    /// `6.1.0-50-amd64`
    release: String,
    /// Its vmlinuz.
    image: PathBuf,
}

/// The newest generic Debian kernel of `version` (`6.1`) apt knows,
/// downloaded and unpacked unless it already is; its modules linked into
/// /lib/modules, where virtme-ng and the booted system look for them.
fn unpacked_kernel(version: &str) -> Result<Kernel> {
    let pattern = format!(
        "^linux-image-{}\\.0-[0-9]+-amd64-unsigned$",
        version.replace('.', "\\.")
    );
    let search =
        || cmd::stdout_of(Command::new("apt-cache").args(["search", "--names-only", &pattern]));
    let mut package = newest_package(&search()?, version);
    if package.is_none() {
        // A machine whose package lists were never fetched.
        cmd::run(Command::new("apt-get").args(["update", "-q"]))?;
        package = newest_package(&search()?, version);
    }
    let package = package.with_context(|| {
        format!(
            "apt knows no Debian kernel package matching {pattern} (is bookworm in sources.list?)"
        )
    })?;
    let release = package
        .trim_start_matches("linux-image-")
        .trim_end_matches("-unsigned")
        .to_string();
    let root = Path::new(CACHE).join(&release);
    let image = root.join("boot").join(format!("vmlinuz-{release}"));
    let modules = root.join("lib/modules").join(&release);
    if !image.is_file() || !modules.is_dir() {
        cmd::step(&format!("downloading {package}"));
        let download = Path::new(CACHE).join("download");
        fs::create_dir_all(&download)
            .with_context(|| format!("creating {}", download.display()))?;
        cmd::run(
            Command::new("apt-get")
                .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
                .arg(&package)
                .current_dir(&download),
        )?;
        let deb = fs::read_dir(&download)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            })
            .with_context(|| format!("apt-get download left no {package}_*.deb"))?;
        let partial = root.with_extension("partial");
        let _ = fs::remove_dir_all(&partial);
        cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
        let _ = fs::remove_dir_all(&root);
        fs::rename(&partial, &root).with_context(|| format!("moving into {}", root.display()))?;
        let _ = fs::remove_file(&deb);
    }
    let link = Path::new("/lib/modules").join(&release);
    if fs::read_link(&link).ok().as_deref() != Some(modules.as_path()) {
        if link.exists() && fs::read_link(&link).is_err() {
            // An installed kernel of that release: its modules serve.
        } else {
            let _ = fs::remove_file(&link);
            fs::create_dir_all("/lib/modules")?;
            std::os::unix::fs::symlink(&modules, &link)
                .with_context(|| format!("linking {} to {}", link.display(), modules.display()))?;
        }
    }
    Ok(Kernel { release, image })
}

/// The package of the highest ABI number among `apt-cache search` lines
/// (`linux-image-6.1.0-50-amd64-unsigned - Linux 6.1 for 64-bit PCs`).
fn newest_package(listed: &str, version: &str) -> Option<String> {
    let prefix = format!("linux-image-{version}.0-");
    listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| {
            let abi = name
                .strip_prefix(&prefix)?
                .strip_suffix("-amd64-unsigned")?;
            Some((abi.parse::<u32>().ok()?, name.to_string()))
        })
        .max()
        .map(|(_, name)| name)
}

/// Builds the tests `selection` picks (release) and returns the executable
/// of target `name` of `kind` (`lib`, `test`).
fn test_binary(selection: &[&str], name: &str, kind: &str) -> Result<PathBuf> {
    let out = cmd::stdout_of(
        cmd::cargo()
            .args(["test", "--release", "--no-run", "--message-format=json"])
            .args(selection),
    )?;
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| {
            m["target"]["name"] == name
                && m["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == kind))
        })
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo built no {kind} test executable of {name}"))
}

/// Trace events the VM keeps enabled for its whole life (recording off),
/// so that no test's attach or detach patches kernel code. A tracepoint's
/// first probe flips its static key and its second turns its static call
/// into a loop over probes, and x86 rewrites the call sites for both with
/// `text_poke_bp`. QEMU's software emulation once locked up a vCPU at such
/// a site in `syscall_trace_enter` (the sys_enter tracepoint's jump, in a
/// CI run at 24ea3e1: "soft lockup - CPU#1 stuck for 935s", the test
/// harness stuck at that instruction). The syscall tracepoints, run by
/// every system call, get two probes each (the raw_syscalls event's, and
/// the one all syscalls events share); the others, run only at process
/// starts, exits and OOM kills, get their key held.
const HELD_EVENTS: &[&str] = &[
    "raw_syscalls/sys_enter",
    "raw_syscalls/sys_exit",
    "syscalls/sys_enter_mmap",
    "syscalls/sys_exit_mmap",
    "sched/sched_process_exit",
    "sched/sched_process_exec",
    "task/task_newtask",
    "oom/mark_victim",
];

/// The script the VM runs: the memory controller enabled for the OOM
/// tests' groups (the host's init does it; virtme-ng's does not),
/// [`HELD_EVENTS`] enabled, the unit tests that read the kernel, then the integration tests as `cargo
/// xtask test` runs them, their output and exit
/// status written where the host reads them (on 6.1, virtme-ng's init
/// finds no serial ports for the script's output in time and sends it to
/// the console).
fn write_script(
    script: &Path,
    [unit, tests]: [&Path; 2],
    bin: &Path,
    filters: &[String],
    status: &Path,
    log: &Path,
) -> Result<()> {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let path = std::env::var("PATH").unwrap_or_default();
    let text = format!(
        "#!/bin/sh\n\
         # Written by `cargo xtask test --kernel`: run inside the VM.\n\
         echo +memory > /sys/fs/cgroup/cgroup.subtree_control\n\
         cd {root}\n\
         export CI=true MEMTRACE_BIN={bin} PATH={path} TMPDIR=/tmp\n\
         exec > {log} 2>&1\n\
         t=/sys/kernel/tracing\n\
         [ -e $t/tracing_on ] || mount -t tracefs tracefs $t\n\
         echo 0 > $t/tracing_on\n\
         for e in {held}; do\n\
         \x20 echo 1 > $t/events/$e/enable || {{ echo \"cannot enable $e\"; echo 1 > {status}; exit 1; }}\n\
         done\n\
         echo \"==> $(uname -r): {unit} {unit_filters}\"\n\
         {unit} {unit_filters}\n\
         unit=$?\n\
         echo \"==> $(uname -r): {tests} {filters}\"\n\
         {tests} --test-threads 2 {filters}\n\
         echo $((unit | $?)) > {status}\n",
        held = HELD_EVENTS.join(" "),
        root = quote(&cmd::workspace_root().to_string_lossy()),
        bin = quote(&bin.to_string_lossy()),
        path = quote(&path),
        unit = quote(&unit.to_string_lossy()),
        unit_filters = UNIT_SUBSET.join(" "),
        tests = quote(&tests.to_string_lossy()),
        filters = filters
            .iter()
            .map(|f| quote(f))
            .collect::<Vec<_>>()
            .join(" "),
        status = quote(&status.to_string_lossy()),
        log = quote(&log.to_string_lossy()),
    );
    fs::write(script, text).with_context(|| format!("writing {}", script.display()))?;
    fs::set_permissions(script, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Runs `command` (vng), what the VM writes to `log` streamed and its own
/// output (the kernel's console, with `--verbose`) kept in `console`;
/// kills its whole process group (QEMU included) after `limit`, or as soon
/// as the kernel reports a lockup, and then shows the console from there
/// (or its end). Its streams are pipes: QEMU reopens its own
/// stdout and stderr by path (with O_TRUNC), which would empty a file
/// they were redirected to.
fn run_with_timeout(
    command: &mut Command,
    limit: Duration,
    log: &Path,
    console: &Path,
) -> Result<()> {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    eprintln!("    $ {}", cmd::display(command));
    eprintln!("    (the VM's console: {})", console.display());
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", cmd::display(command)))?;
    let file =
        fs::File::create(console).with_context(|| format!("creating {}", console.display()))?;
    let echo = |stream: Box<dyn Read + Send>, mut file: fs::File| {
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
            }
        })
    };
    let echo_out = echo(
        Box::new(child.stdout.take().context("no stdout pipe")?),
        file.try_clone()?,
    );
    let echo_err = echo(
        Box::new(child.stderr.take().context("no stderr pipe")?),
        file,
    );
    let started = Instant::now();
    let mut shown = 0;
    loop {
        shown = show_new(log, shown);
        // (vng's own status says nothing of the tests': the status file
        // does.)
        if child.try_wait()?.is_some() {
            let _ = echo_out.join();
            let _ = echo_err.join();
            show_new(log, shown);
            return Ok(());
        }
        let text = fs::read_to_string(console).unwrap_or_default();
        let stuck = first_lockup(&text);
        if stuck.is_some() || started.elapsed() > limit {
            // SAFETY: kill(2) of the process group vng leads.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            let lines: Vec<&str> = text.lines().collect();
            let (from, what) = match stuck {
                Some(at) => (at, "from its first lockup report"),
                None => (lines.len().saturating_sub(60), "last 60 lines"),
            };
            eprintln!("==> the VM's console, {what}:");
            for line in lines.iter().skip(from).take(60) {
                eprintln!("{line}");
            }
            match stuck {
                Some(_) => bail!(
                    "the VM's kernel reported a lockup after {:.1} min: stopped (the whole \
                     console: {})",
                    started.elapsed().as_secs_f64() / 60.0,
                    console.display()
                ),
                None => bail!(
                    "the VM run took more than {} min: stopped",
                    limit.as_secs() / 60
                ),
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The line of the first lockup or stall the kernel reported on its
/// console: the VM will not recover from it, and waiting for the time
/// limit would only hide it.
fn first_lockup(console: &str) -> Option<usize> {
    const REPORTS: [&str; 4] = [
        "soft lockup - CPU#",
        "hard LOCKUP",
        "detected stalls on CPUs",
        "self-detected stall on CPU",
    ];
    console
        .lines()
        .position(|line| REPORTS.iter().any(|r| line.contains(r)))
}

/// Prints what `log` holds past byte `from`; returns where it ends.
fn show_new(log: &Path, from: u64) -> u64 {
    let Ok(mut file) = fs::File::open(log) else {
        return from;
    };
    let mut new = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_end(&mut new).is_err() {
        return from;
    }
    print!("{}", String::from_utf8_lossy(&new));
    from + new.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_abi_is_chosen() {
        let listed = "linux-image-6.1.0-47-amd64-unsigned - Linux 6.1 for 64-bit PCs\n\
                      linux-image-6.1.0-50-amd64-unsigned - Linux 6.1 for 64-bit PCs\n\
                      linux-image-6.1.0-9-amd64-unsigned - Linux 6.1 for 64-bit PCs\n\
                      linux-image-6.1.0-50-cloud-amd64-unsigned - Linux 6.1 for x86-64 cloud\n";
        assert_eq!(
            newest_package(listed, "6.1").as_deref(),
            Some("linux-image-6.1.0-50-amd64-unsigned")
        );
        assert_eq!(newest_package("", "6.1"), None);
    }

    #[test]
    fn lockups_are_found_on_the_console() {
        let console = "[    1.0] virtme-ng-init: mount /tmp\n\
                       [  258.1] rcu: INFO: rcu_preempt self-detected stall on CPU\n\
                       [ 1193.1] watchdog: BUG: soft lockup - CPU#1 stuck for 935s! [threads::thread:2333]\n";
        assert_eq!(first_lockup(console), Some(1));
        assert_eq!(first_lockup("[ 0.1] Linux version 6.1.0-57-amd64\n"), None);
    }
}

//! Checks before anything is loaded, each failing with one line that names
//! the fix: privileges, kernel BTF, and tracefs (mounted here if missing,
//! since aya resolves tracepoint ids through it); and resource limits.

use std::{ffi::CString, fs, path::Path};

use anyhow::{bail, Context, Result};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability bits of this process.
fn effective_caps() -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .context("no CapEff in /proc/self/status")?;
    u64::from_str_radix(hex.trim(), 16).context("parsing CapEff")
}

pub fn check_privileges() -> Result<()> {
    let caps = effective_caps()?;
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if !(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) {
        bail!("root is needed to load eBPF programs and attach uprobes: run memtrace with sudo");
    }
    Ok(())
}

pub fn check_btf() -> Result<()> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): memtrace needs a kernel \
             built with CONFIG_DEBUG_INFO_BTF=y"
        );
    }
    Ok(())
}

/// Makes sure tracefs is mounted where aya looks for it.
pub fn ensure_tracefs() -> Result<()> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(());
        }
        if fs::metadata(dir).is_ok() && fs::read_dir(dir).is_err() {
            bail!("cannot read tracefs at {dir} (permission denied): run memtrace as root");
        }
    }
    let target = "/sys/kernel/tracing";
    let c = |s: &str| CString::new(s).expect("no NUL");
    // SAFETY: valid NUL-terminated strings; mount(2) has no other preconditions.
    let rc = unsafe {
        libc::mount(
            c("tracefs").as_ptr(),
            c(target).as_ptr(),
            c("tracefs").as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "tracefs is not mounted and mounting it on {target} failed ({}): run `mount -t tracefs \
             nodev {target}`",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Raises resource limits: the soft limit on open files to the hard limit
/// (the symbolizer keeps every mapped executable of the traced processes
/// open, so stacks of processes that are gone still resolve: thousands of
/// files on a watched node), and the locked-memory limit to unlimited
/// (kernels before 5.11 charge BPF maps to it; needs CAP_SYS_RESOURCE).
/// Failing only means fewer files kept, or map creation failing on old
/// kernels with its own error.
pub fn raise_resource_limits() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        let unlimited = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited);
    }
}

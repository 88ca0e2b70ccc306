//! Checks before anything is loaded, each failing with one line that names
//! the fix: privileges, kernel BTF, the eBPF helpers the programs call (the
//! oldest kernel memtrace runs on), and tracefs (mounted here if missing,
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

/// The eBPF helpers memtrace's programs call that came after the ring
/// buffer, and the Linux release that brought each: the newest is the
/// oldest kernel memtrace runs on.
const HELPERS: [(&str, &str); 7] = [
    ("BPF_FUNC_ringbuf_reserve", "5.8"),
    ("BPF_FUNC_get_current_task_btf", "5.11"),
    ("BPF_FUNC_task_storage_get", "5.11"),
    ("BPF_FUNC_get_func_ip", "5.15"),
    ("BPF_FUNC_get_attach_cookie", "5.15"),
    ("BPF_FUNC_task_pt_regs", "5.15"),
    ("BPF_FUNC_loop", "5.17"),
];

/// Checks that the kernel has every eBPF helper the programs call (from
/// its BTF's `enum bpf_func_id`): else one line naming the first missing
/// one, rather than a verifier error at load.
pub fn check_kernel_features() -> Result<()> {
    let Some(have) = super::btf::Btf::kernel().and_then(|b| b.enum_values("bpf_func_id")) else {
        // (Unreadable BTF: the load says what is wrong.)
        return Ok(());
    };
    match missing_helper(&have) {
        None => Ok(()),
        Some(why) => bail!(
            "{why}: memtrace needs Linux 5.17 or later (this kernel is {})",
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
        ),
    }
}

/// The first helper of [`HELPERS`] not in `have`, said.
fn missing_helper(have: &[&str]) -> Option<String> {
    HELPERS
        .iter()
        .find(|(h, _)| !have.contains(h))
        .map(|(h, v)| {
            format!(
                "this kernel has no eBPF helper bpf_{} (Linux {v})",
                h.trim_start_matches("BPF_FUNC_")
            )
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_has_every_helper() {
        let btf = crate::bpf::btf::Btf::kernel().expect("this machine's kernel has BTF");
        let have = btf.enum_values("bpf_func_id").unwrap();
        assert_eq!(missing_helper(&have), None);
        check_kernel_features().unwrap();
    }

    #[test]
    fn a_kernel_without_bpf_loop_is_named_for_it() {
        // What 5.15 has of them.
        let have: Vec<&str> = HELPERS
            .iter()
            .map(|(h, _)| *h)
            .filter(|h| *h != "BPF_FUNC_loop")
            .collect();
        assert_eq!(
            missing_helper(&have).as_deref(),
            Some("this kernel has no eBPF helper bpf_loop (Linux 5.17)")
        );
    }
}

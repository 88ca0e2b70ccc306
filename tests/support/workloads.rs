//! Workloads that several test modules start the same way, and the
//! interpreters they run.

use std::path::{Path, PathBuf};

use crate::{compile_c, Workload};

/// busy_loop.c: bytes of each busy_leak() block.
pub const BUSY_LEAK_SIZE: u64 = 4096;

/// busy_loop.c, started and ready: it loops until killed, always inside
/// malloc or free (malloc(64) and free), and every 2000 iterations
/// busy_leak() keeps a [`BUSY_LEAK_SIZE`] block.
#[track_caller]
pub fn busy_loop() -> Workload {
    Workload::spawn_ready(&compile_c("busy_loop"), &[] as &[&str])
}

/// leak_signal.c, started and ready: on SIGUSR1, leak_fixed() (called from
/// main) mallocs `size` bytes `count` times, `interval_us` apart, never
/// freed; then it prints "done".
#[track_caller]
pub fn leak_signal(count: u64, size: u64, interval_us: u64) -> Workload {
    Workload::spawn_ready(
        &compile_c("leak_signal"),
        &[count.to_string(), size.to_string(), interval_us.to_string()],
    )
}

/// The interpreter of pyenv's CPython `minor` (e.g. "3.11"), newest patch
/// release first; panics naming what is missing.
pub fn pyenv_python(minor: &str) -> PathBuf {
    let versions = Path::new("/root/.pyenv/versions");
    let mut found: Vec<PathBuf> = std::fs::read_dir(versions)
        .unwrap_or_else(|e| panic!("{}: {e} (CPython {minor} from pyenv)", versions.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|dir| {
            dir.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{minor}.")))
        })
        .map(|dir| dir.join("bin").join(format!("python{minor}")))
        .filter(|exe| exe.is_file())
        .collect();
    // By patch number: 3.11.10 is newer than 3.11.7.
    let patch = |exe: &PathBuf| -> u32 {
        exe.ancestors()
            .nth(2)
            .and_then(|dir| dir.file_name()?.to_str()?.rsplit('.').next()?.parse().ok())
            .unwrap_or(0)
    };
    found.sort_by_key(patch);
    found
        .pop()
        .unwrap_or_else(|| panic!("no CPython {minor} under {}", versions.display()))
}

/// The libc the workloads are linked against, from `ldd exe`, or the
/// Debian path if ldd does not name it.
pub fn system_libc(exe: &Path) -> PathBuf {
    let out = std::process::Command::new("ldd")
        .arg(exe)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ldd: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("libc.so.6 => "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(PathBuf::from)
        .next()
        .unwrap_or_else(|| PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"))
}

/// A directory under the scratch area `name` holding a copy of `exe`'s
/// libc, for `LD_LIBRARY_PATH`: a program run on it shares its allocator
/// file with no other tracer.
pub fn private_libc_dir(exe: &Path, name: &str) -> PathBuf {
    let dir = crate::scratch_dir(name).join("lib");
    std::fs::create_dir_all(&dir).expect("create scratch lib dir");
    let libc = system_libc(exe);
    std::fs::copy(&libc, dir.join("libc.so.6"))
        .unwrap_or_else(|e| panic!("cannot copy {}: {e}", libc.display()));
    dir
}

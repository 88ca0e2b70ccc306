//! Memory cgroups for the OOM tests: a fresh group with a limit (cgroup
//! v1's memory hierarchy where it is mounted, else v2's), removed when
//! dropped.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::Workload;

/// A memory cgroup with a limit, removed when dropped. cgroup v1's memory
/// hierarchy where it is mounted (this machine kind), else v2's.
pub struct MemoryCgroup {
    pub dir: PathBuf,
    /// The path a process in it shows in /proc/PID/cgroup.
    pub path: String,
}

impl MemoryCgroup {
    pub fn new(tag: &str, limit: u64) -> MemoryCgroup {
        let name = format!("memtrace-test-{tag}-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists();
        let (base, limit_file) = if v1 {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else {
            let unified = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
                .into_iter()
                .find(|d| {
                    std::fs::read_to_string(format!("{d}/cgroup.controllers"))
                        .is_ok_and(|c| c.split_whitespace().any(|w| w == "memory"))
                })
                .expect("neither a cgroup v1 memory hierarchy nor a v2 memory controller");
            (unified, "memory.max")
        };
        let dir = Path::new(base).join(&name);
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", dir.display()));
        std::fs::write(dir.join(limit_file), limit.to_string())
            .unwrap_or_else(|e| panic!("cannot set {limit_file} in {}: {e}", dir.display()));
        if !v1 {
            let _ = std::fs::write(dir.join("memory.swap.max"), "0");
        }
        MemoryCgroup {
            dir,
            path: format!("/{name}"),
        }
    }

    /// Starts `exe args...` inside the group from its first instruction, as
    /// a container's process is: a shell writes its own pid to the group's
    /// `cgroup.procs`, then execs the program (same pid).
    pub fn spawn(&self, exe: &Path, args: &[&str]) -> Workload {
        let mut script = format!(
            "echo $$ > {} && exec {}",
            self.dir.join("cgroup.procs").display(),
            exe.display()
        );
        for arg in args {
            script.push(' ');
            script.push_str(arg);
        }
        Workload::spawn(Path::new("/bin/sh"), &["-c", &script])
    }

    pub fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("cannot move pid {pid} into {}: {e}", self.dir.display()));
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Its processes are dead (OOM-killed, or killed by Workload's drop).
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

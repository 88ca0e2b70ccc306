//! `-- CMD` and held targets: a target stopped by the kernel at its exec
//! (run on to its entry point, where its libraries are mapped and their
//! unwind tables loaded, then continued), and the command at the end of
//! the run (stopped and reaped).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{kernel::Kernel, Tracing, ENTRY_WAIT};
use crate::{
    bpf::unwind,
    discover::{
        python::{self, runtime},
        target,
    },
};

/// How long a CPython target continued from its entry point may take to
/// reach its main program (milliseconds; seconds on a machine starved of
/// CPU).
const PYTHON_WAIT: Duration = Duration::from_secs(2);

/// Continues `pid`, stopped by the kernel for its probes to go in (see
/// `HOLDING` in the eBPF side). It is stopped, so cannot have exited: its
/// pid is still its own.
pub(super) fn cont(pid: u32) {
    // SAFETY: plain syscall; signals one process.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
}

impl Tracing {
    /// A target exec'd, and the kernel stopped it there (the command with
    /// unwind tables, see `STOP_AT_EXEC`, and every held target): it runs
    /// on to its entry point, where its loader has mapped its libraries and
    /// it stops again (up to [`ENTRY_WAIT`]); their tables are loaded, and
    /// it continues. A CPython program then stops again where its
    /// interpreter is about to run its main program (`Py_RunMain`), and
    /// the kernel walks its frames from there on. Whatever fails on the
    /// way, it is continued.
    pub(super) fn continue_at_entry(&mut self, pid: u32) {
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let at_entry = unwind::entry_offset(&exe).is_some_and(|offset| {
            self.run_to(pid, &exe, offset, ENTRY_WAIT, |t| t.m.refresh_maps(pid))
        });
        if !at_entry || !python::runs_python(pid) {
            return;
        }
        let Some((runtime, offset)) = runtime::start_point(pid) else {
            return;
        };
        // (A program embedding CPython that does not get there is
        // attached by the looks at its mappings, as with --pid.)
        self.run_to(pid, &runtime, offset, PYTHON_WAIT, |t| {
            let held = Instant::now();
            let m = &mut t.m;
            m.python.attach_at_start(pid, &mut m.probes, m.verbose);
            if m.verbose {
                crate::note(&format!(
                    "pid {pid} held before its program for {:.1} ms while its interpreter \
                     was read",
                    held.elapsed().as_secs_f64() * 1e3
                ));
            }
        });
    }

    /// Makes `pid`, stopped now, run to file offset `offset` of `file` and
    /// stop there (see the eBPF `entry_stop`; up to `wait`), does
    /// `stopped` while it is, and continues it. Whether it got there.
    fn run_to(
        &mut self,
        pid: u32,
        file: &Path,
        offset: u64,
        wait: Duration,
        stopped: impl FnOnce(&mut Tracing),
    ) -> bool {
        let link = self.m.probes.stop_at_entry(pid, file, offset).ok();
        cont(pid);
        let Some(link) = link else {
            return false;
        };
        let deadline = Instant::now() + wait;
        let mut there = false;
        while Instant::now() < deadline {
            if self.m.probes.entry_reached() == pid && target::state(pid) == Some('T') {
                there = true;
                break;
            }
            if !target::is_alive(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if there {
            stopped(self);
        }
        if self.m.probes.entry_reached() == pid {
            cont(pid);
            // The point is behind it (each is reached once).
            self.m.probes.detach_entry_stop(link, false);
        } else {
            // Not there in time (a slow loader or constructor) or gone:
            // the probe goes first, then the process continues, so that a
            // stop on its way out cannot be left pending.
            self.m.probes.detach_entry_stop(link, true);
            cont(pid);
        }
        there
    }

    /// In `-- CMD` mode, stops CMD if it still runs (SIGTERM, then SIGKILL
    /// after 2 s) and reaps it. The processes it forked are its own.
    pub(super) fn stop_child(&mut self) {
        let Some(child) = &mut self.child else { return };
        child.stop(Duration::from_secs(2));
        if let Some(t) = self.life.by_pid.get_mut(&child.pid) {
            t.set_exited();
        }
    }
}

//! `-- CMD` and held targets: a target stopped by the kernel at its exec
//! (run on to its entry point, where its libraries are mapped and their
//! unwind tables loaded, then continued), and the command at the end of
//! the run (stopped and reaped).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::programs::uprobe::UProbeLinkId;

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
        let link = unwind::entry_offset(&exe)
            .and_then(|offset| self.m.probes.stop_at_entry(pid, &exe, offset).ok());
        if link.is_none() {
            self.say_started();
        }
        cont(pid);
        let Some(link) = link else {
            return;
        };
        if !self.stopped_there(pid, ENTRY_WAIT) {
            self.say_started();
            self.release(pid, link);
            return;
        }
        self.m.refresh_maps(pid);
        // A CPython program: its next stop is set before it goes on (a
        // fast interpreter would be past it otherwise).
        let next = python::runs_python(pid)
            .then(|| runtime::start_point(pid))
            .flatten()
            .and_then(|(file, offset)| self.m.probes.stop_at_entry(pid, &file, offset).ok());
        self.say_started();
        cont(pid);
        // Its entry point is behind it: the probe cannot fire again.
        self.m.probes.detach_entry_stop(link, false);
        let Some(next) = next else {
            return;
        };
        if self.stopped_there(pid, PYTHON_WAIT) {
            let held = Instant::now();
            let m = &mut self.m;
            m.python.attach_at_start(pid, &mut m.probes, m.verbose);
            if m.verbose {
                crate::note(&format!(
                    "pid {pid} held before its program for {:.1} ms while its interpreter \
                     was read",
                    held.elapsed().as_secs_f64() * 1e3
                ));
            }
        }
        // (A program embedding CPython that does not get there is
        // attached by the looks at its mappings, as with --pid.)
        self.release(pid, next);
    }

    /// Whether `pid` stopped at the stop set last (see the eBPF
    /// `entry_stop`) within `wait`.
    fn stopped_there(&self, pid: u32, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self.m.probes.entry_reached() == pid && target::state(pid) == Some('T') {
                return true;
            }
            if !target::is_alive(pid) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// Continues `pid` and takes its stop `link` out.
    fn release(&mut self, pid: u32, link: UProbeLinkId) {
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

//! `-- CMD` and held targets: a target stopped by the kernel at its exec
//! (run on to its entry point, where its libraries are mapped and their
//! unwind tables loaded, then continued), and the command at the end of
//! the run (stopped and reaped).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use super::{kernel::Kernel, Tracing, ENTRY_WAIT};
use crate::{bpf::unwind, discover::target};

/// How long a target continued from its entry point is watched for a
/// CPython interpreter becoming readable (a few milliseconds after its
/// start; seconds on a machine starved of CPU).
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
    /// it continues. Whatever fails on the way, it is continued.
    pub(super) fn continue_at_entry(&mut self, pid: u32) {
        let cont = || cont(pid);
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let link = unwind::entry_offset(&exe)
            .and_then(|offset| self.m.probes.stop_at_entry(pid, &exe, offset).ok());
        cont();
        let Some(link) = link else {
            return;
        };
        let deadline = Instant::now() + ENTRY_WAIT;
        while Instant::now() < deadline {
            if self.m.probes.entry_reached() == pid && target::state(pid) == Some('T') {
                self.m.refresh_maps(pid);
                break;
            }
            if !target::is_alive(pid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if self.m.probes.entry_reached() == pid {
            cont();
            // Its entry point is behind it: the probe cannot fire again.
            self.m.probes.detach_entry_stop(link, false);
            // A CPython program: its frames are walked from its first
            // Python code on, not from the next look at its mappings.
            let m = &mut self.m;
            m.python
                .await_ready(pid, &mut m.probes, m.verbose, PYTHON_WAIT);
        } else {
            // Not there in time (a slow loader or constructor) or gone:
            // the probe goes first, then the process continues, so that a
            // stop on its way out cannot be left pending.
            self.m.probes.detach_entry_stop(link, true);
            cont();
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

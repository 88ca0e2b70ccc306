//! A watched node (`--all`, `--comm`, `--cgroup`, `--container`, and the
//! cgroups `--oom-only` remembers): every process looked at, at start and
//! every rescan.

use super::Tracing;
use crate::discover::{cgroup, select, target};

impl Tracing {
    /// --oom-only: reads every process's cgroup (at start and every
    /// [`RESCAN_EVERY`](super::RESCAN_EVERY) ticks; bounded by the processes on the node).
    pub(super) fn remember_cgroups(&mut self) {
        self.cgroups = select::pids()
            .into_iter()
            .map(|pid| (pid, cgroup::read(pid)))
            .collect();
    }

    /// On a watched node: looks at every process (at start, then every
    /// [`RESCAN_EVERY`](super::RESCAN_EVERY) ticks) and hooks the ones selected.
    pub(super) fn scan_node(&mut self) {
        let Some(w) = &mut self.life.watcher else {
            return;
        };
        // Processes not selected are looked at again too: a cgroup move or
        // a renamed process may select them now. Targets' cgroups are read
        // again for the same reason.
        w.ignored.clear();
        for t in self.life.by_pid.values_mut() {
            let fresh = cgroup::read(t.info.pid);
            if !target::is_exiting(t.info.pid) {
                t.container = fresh.as_deref().and_then(cgroup::container_of);
                t.cgroup = fresh;
            }
        }
        let pids = select::pids();
        if let (true, Some(u)) = (w.selection.system_wide(), &mut self.m.unwinder) {
            // Every process's tables before the first file's probes go in
            // for all of them: their first calls are walked whole.
            let me = std::process::id();
            for &pid in pids.iter().filter(|&&p| p != me) {
                u.update(pid);
            }
        }
        for pid in pids {
            self.life.consider(&mut self.m, pid);
        }
    }
}

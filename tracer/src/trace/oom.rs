//! OOM kills: the kernel's `oom/mark_victim` event made into the report's
//! [`OomKill`] (the victim, its memory as the kernel saw it, its cgroup and
//! container) and, for a traced victim, the stacks that held its memory;
//! printed as it happens (the report crate's `oom_line`), kept for the
//! report, and the end of the run when a `--pid` target is the victim.

use std::time::SystemTime;

use tracer_common::ProcessEvent;

use memtrace_report::OomKill;

use anyhow::Result;
use memtrace_report::render::text::{oom_line, oom_log_line};

use super::Tracing;
use crate::{
    accounting::report,
    config::{self, Mode},
    discover::{
        cgroup::{self, Container},
        target,
    },
    output,
};

/// Stacks kept per OOM-killed traced process.
pub const TOP_STACKS: usize = 10;

/// OOM kills kept per run (the oldest go first): a node in an OOM loop must
/// not grow memtrace.
pub const MAX_KILLS: usize = 100;

/// What the kernel told about a victim, and where it lived.
pub fn kill_from_event(
    e: &ProcessEvent,
    t: f64,
    cgroup_path: Option<String>,
    container: Option<Container>,
) -> OomKill {
    let comm_len = e.comm.iter().position(|&b| b == 0).unwrap_or(e.comm.len());
    let kib = |v: u64| v.saturating_mul(1024);
    let container = container.or_else(|| cgroup_path.as_deref().and_then(cgroup::container_of));
    OomKill {
        t: (t * 1000.0).round() / 1000.0,
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        pid: e.tgid,
        comm: String::from_utf8_lossy(&e.comm[..comm_len]).into_owned(),
        uid: e.uid,
        trigger_pid: e.trigger_tgid,
        total_vm_bytes: kib(e.total_vm_kb),
        anon_rss_bytes: kib(e.anon_rss_kb),
        file_rss_bytes: kib(e.file_rss_kb),
        shmem_rss_bytes: kib(e.shmem_rss_kb),
        pgtables_bytes: kib(e.pgtables_kb),
        oom_score_adj: e.oom_score_adj,
        cgroup: cgroup_path,
        container,
        traced: false,
        traced_outstanding_bytes: 0,
        top_stacks: Vec::new(),
    }
}

impl Tracing {
    /// The OOM killer chose a victim: if it is traced, its stacks are read
    /// from the kernel tables right away (they outlive the process until
    /// memtrace drops them) and symbolized through the files kept open for
    /// it. With --pid, an OOM-killed target ends the run.
    pub(super) fn on_oom(&mut self, cfg: &config::Trace, e: &ProcessEvent) -> Result<()> {
        let pid = e.tgid;
        let t = self.started.elapsed().as_secs_f64();
        // Read now unless it is already exiting (the kill is quick; cgroup
        // v1 then shows the root): else what was last known of it.
        let known = match self.life.by_pid.get(&pid) {
            Some(target) => target.cgroup.clone(),
            None => self.cgroups.get(&pid).cloned().flatten(),
        };
        // Read first, then check: a read that may have raced with the exit
        // is not trusted.
        let fresh = cgroup::read(pid);
        let cgroup_path = match target::is_exiting(pid) {
            false => fresh.or(known),
            true => known,
        };
        let container = cgroup_path.as_deref().and_then(cgroup::container_of);
        let mut kill = kill_from_event(e, t, cgroup_path, container);
        if self.life.by_pid.contains_key(&pid) {
            self.sample(cfg)?;
            let (stacks, total) = {
                let symbolizer = &mut self.m.symbolizer;
                report::largest_stacks_of(
                    &self.m.agg,
                    &mut |pid, addrs| symbolizer.frames(pid, addrs),
                    pid,
                    TOP_STACKS,
                )
            };
            kill.traced = true;
            kill.top_stacks = stacks;
            kill.traced_outstanding_bytes = total;
        }
        if self.mode == Mode::OomOnly {
            let line = match cfg.oom_json_lines {
                true => serde_json::to_string(&kill)?,
                false => oom_log_line(&kill),
            };
            output::write(None, format!("{line}\n").as_bytes())?;
        } else {
            crate::note(&oom_line(&kill));
        }
        self.life.oom_killed(pid);
        if self.oom_kills.len() == MAX_KILLS {
            self.oom_kills.pop_front();
        }
        self.oom_kills.push_back(kill);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_becomes_a_kill() {
        let mut comm = [0u8; 16];
        comm[..8].copy_from_slice(b"oom_leak");
        let e = ProcessEvent {
            tgid: 77,
            trigger_tgid: 77,
            uid: 1000,
            anon_rss_kb: 65536,
            total_vm_kb: 70000,
            comm,
            ..ProcessEvent::default()
        };
        let id = "b".repeat(64);
        let path = format!("/system.slice/docker-{id}.scope");
        let k = kill_from_event(&e, 1.5, Some(path), None);
        assert_eq!((k.pid, k.comm.as_str(), k.uid), (77, "oom_leak", 1000));
        assert_eq!(k.anon_rss_bytes, 64 << 20);
        assert_eq!(
            k.container.as_ref().map(|c| c.id.as_str()),
            Some(id.as_str())
        );
        assert_eq!(
            k.container.as_ref().map(|c| c.runtime.as_str()),
            Some("docker")
        );
    }
}

//! OOM kills: turning the kernel's `oom/mark_victim` event into the report's
//! [`OomKill`] (victim, its memory as the kernel saw it, cgroup and
//! container), (its one-line form, printed as kills happen, is the report crate's
//! `render::text::oom_line`). Capturing a
//! traced victim's stacks is the session's (it owns the kernel tables).

use std::time::SystemTime;

use tracer_common::ProcessEvent;

use memtrace_report::OomKill;

use crate::discover::cgroup::{self, Container};

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

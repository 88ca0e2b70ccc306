//! The targets of a trace and their lifecycle: who is traced, and what
//! happens to a target when it forks (the child becomes a target, a pid
//! still held by a dead one is purged first), execs (its old image's blocks
//! are released, its new image hooked, or it is found to be the pid's next
//! owner), exits (kept with what it held, or dropped on a watched node),
//! and is OOM-killed (a `--pid` target's kill ends the run). Everything
//! below the lifecycle — probes, kernel tables, unwind tables, symbols,
//! series — is reached through the [`Kernel`] trait, so this logic is
//! tested without eBPF (see the tests below).

use std::{
    collections::{btree_map::Entry, BTreeMap, HashMap, HashSet, VecDeque},
    time::Instant,
};

use anyhow::Result;
use memtrace_report::{MemorySample, Unseen};

use super::kernel::Kernel;
use crate::{
    config::Selection,
    discover::{
        cgroup::{self, Container},
        target::TargetInfo,
    },
};

/// One traced process.
pub(super) struct Target {
    pub(super) info: TargetInfo,
    /// The allocator files hooked in it, as the report names them.
    pub(super) allocators: Vec<String>,
    pub(super) exited: bool,
    /// Resident memory at every sample while it lives (bounded like the
    /// stack series).
    pub(super) memory: VecDeque<MemorySample>,
    pub(super) cgroup: Option<String>,
    pub(super) container: Option<Container>,
    /// How long it ran before its probes were in (not held until then).
    pub(super) unseen: Option<Unseen>,
    /// When it was found exited (kernel clock, ns; 0 while it runs): its
    /// events from before then, read later, are still its own.
    pub(super) gone_ns: u64,
    /// Its series have their last point (the first sample after it
    /// exited, or the one taken while it was held at its end): later
    /// samples would add time in which it could not grow.
    pub(super) series_closed: bool,
    /// Its main thread was seen gone while other threads run (said once).
    pub(super) leaderless_said: bool,
    /// When (seconds into the run) its probes were seen gone with its main
    /// thread (classic probe path).
    pub(super) probes_lost_at: Option<f64>,
}

impl Target {
    /// A target, placed by reading its cgroup.
    pub(super) fn new(info: TargetInfo, allocators: Vec<String>) -> Target {
        let cgroup = cgroup::read(info.pid);
        let container = cgroup.as_deref().and_then(cgroup::container_of);
        Target::placed(info, allocators, cgroup, container)
    }

    pub(super) fn placed(
        info: TargetInfo,
        allocators: Vec<String>,
        cgroup: Option<String>,
        container: Option<Container>,
    ) -> Target {
        Target {
            info,
            allocators,
            exited: false,
            memory: VecDeque::new(),
            cgroup,
            container,
            unseen: None,
            gone_ns: 0,
            series_closed: false,
            leaderless_said: false,
            probes_lost_at: None,
        }
    }

    /// It has exited (or its pid is another process's): nothing sent for
    /// its pid from now on is its.
    pub(super) fn set_exited(&mut self) {
        if !self.exited {
            self.exited = true;
            self.gone_ns = crate::bpf::drain::kernel_now_ns();
        }
    }

    /// Whether an event sent at `timestamp_ns` (kernel clock) for its pid
    /// is its own: sent while it ran, however late it is read.
    pub(super) fn owns_event(&self, timestamp_ns: u64) -> bool {
        !self.exited || timestamp_ns <= self.gone_ns
    }

    /// Adds the names of allocator files hooked in it that it does not list.
    fn hooked(&mut self, names: impl IntoIterator<Item = String>) {
        for name in names {
            if !self.allocators.contains(&name) {
                self.allocators.push(name);
            }
        }
    }
}

/// A watched node (`--all`, `--comm`, `--cgroup`, `--container`).
pub(super) struct Watcher {
    pub(super) selection: Selection,
    /// Processes that exec'd lately, looked at again every tick.
    pub(super) recent: HashMap<u32, Instant>,
    /// Processes looked at that do not match (until they exec, or the next
    /// full scan).
    pub(super) ignored: HashSet<u32>,
}

impl Watcher {
    pub(super) fn new(selection: Selection) -> Watcher {
        Watcher {
            selection,
            recent: HashMap::new(),
            ignored: HashSet::new(),
        }
    }
}

/// The trace's targets and what is known of processes gone.
#[derive(Default)]
pub(super) struct Targets {
    pub(super) by_pid: BTreeMap<u32, Target>,
    /// Set on a watched node (`--all`, `--comm`, ...).
    pub(super) watcher: Option<Watcher>,
    /// Processes gone whose state is dropped at the next purge.
    pub(super) gone: HashSet<u32>,
    /// Processes whose state was dropped so far.
    pub(super) processes_dropped: u64,
}

impl Targets {
    /// Whether the targets are a watched node's (every matching process)
    /// rather than given ones.
    pub(super) fn watching(&self) -> bool {
        self.watcher.is_some()
    }

    /// Whether probes go in for every process at once (`--all`).
    pub(super) fn system_wide(&self) -> bool {
        self.watcher
            .as_ref()
            .is_some_and(|w| w.selection.system_wide())
    }

    /// Whether every target has exited (what ends a run of given targets).
    pub(super) fn all_exited(&self) -> bool {
        self.by_pid.values().all(|t| t.exited)
    }

    /// A process exited. On a watched node everything about it goes (at the
    /// next purge, in one pass over the kernel tables); a given target is
    /// kept, with what it held when it exited, and nothing that comes for
    /// its pid later is its (the pid may go to another process at once).
    pub(super) fn on_exit(&mut self, k: &mut impl Kernel, pid: u32) {
        let Some(w) = &mut self.watcher else {
            // Where exits are main threads', the process may live on (a
            // thread that called exec); housekeeping sees it end otherwise.
            let gone =
                k.exits_are_final() || self.by_pid.get(&pid).is_some_and(|t| !k.is_alive(&t.info));
            if gone {
                self.retire(k, pid);
            }
            return;
        };
        w.ignored.remove(&pid);
        w.recent.remove(&pid);
        if self.by_pid.remove(&pid).is_some() {
            k.forget_target(pid);
            self.gone.insert(pid);
        }
    }

    /// A target forked `child` (forks are followed): the child is a target
    /// of its own — the kernel counts its mapping calls from its fork — and
    /// gets probes on the allocator files it maps (its parent's, unless it
    /// has exec'd already). What it allocates before they are in place is
    /// not seen; its frees of the blocks it inherited are frees of unknown
    /// blocks, never its parent's. False when `parent` is no target.
    pub(super) fn on_fork(&mut self, k: &mut impl Kernel, child: u32, parent: u32) -> bool {
        let Some(p) = self.by_pid.get(&parent) else {
            return false;
        };
        let inherited = TargetInfo {
            pid: child,
            comm: p.info.comm.clone(),
            exe: p.info.exe.clone(),
            start_time: 0,
        };
        if self.by_pid.contains_key(&child) {
            // A followed process that had this pid is long gone: what it
            // left goes now, before anything of the new one is recorded.
            self.gone.insert(child);
            if let Err(err) = self.purge_gone(k) {
                crate::note(&format!("warning: pid {child} reused: {err:#}"));
            }
        }
        // Gone already (it lived a few milliseconds): kept, exited.
        let (info, exited) = match k.inspect(child) {
            Some(info) => (info, false),
            None => (inherited, true),
        };
        let mut t = k.place(info);
        if exited {
            t.set_exited();
        }
        self.by_pid.insert(child, t);
        if !exited {
            // Its tables before its probes (its parent's files, as a rule).
            k.refresh_maps(child);
            self.attach_files(k, child, false);
        }
        true
    }

    /// A target called exec: what its old image held is released, its
    /// mappings and name are re-read, and the new image's allocator is
    /// hooked if it is another file (the same libc stays hooked: probes are
    /// per file and process, and survive exec). On a watched node a program
    /// no longer selected stops being a target.
    pub(super) fn on_exec(&mut self, k: &mut impl Kernel, pid: u32, exec_ns: u64) {
        if let Some(t) = self.by_pid.get_mut(&pid).filter(|_| self.watcher.is_none()) {
            // Exec keeps the start time: a process with another is the next
            // owner of the pid, not this target (older kernels report
            // exits without forgetting the pid).
            if k.start_time(pid)
                .is_some_and(|now| now != t.info.start_time)
            {
                t.set_exited();
                return;
            }
            // A thread that calls exec outlives the main thread, whose exit
            // those kernels take for the process's.
            t.exited = false;
            t.series_closed = false;
        }
        // Blocks the old image left behind count as released.
        k.release_image(pid, exec_ns);
        k.refresh_maps(pid);
        if let Some(w) = &mut self.watcher {
            // The new program may not be selected any more (--comm); if it
            // is, its libraries are hooked as it maps them.
            if !k.describe(pid).is_some_and(|p| w.selection.matches(&p)) {
                w.ignored.insert(pid);
                if self.by_pid.remove(&pid).is_some() {
                    k.forget_target(pid);
                    self.gone.insert(pid);
                }
                return;
            }
            w.recent.insert(pid, Instant::now());
            if let (Some(t), Some(info)) = (self.by_pid.get_mut(&pid), k.inspect(pid)) {
                t.info = info;
            }
            self.attach_files(k, pid, false);
            return;
        }
        let Some(t) = self.by_pid.get_mut(&pid) else {
            return;
        };
        match k.inspect(pid) {
            Some(info) => t.info = info,
            // Gone already: its old image's file is not its name any more.
            None => t.info.exe = None,
        }
        let hooked = k.attach_image(pid, t.info.exe.as_deref());
        t.hooked(hooked);
    }

    /// The name the kernel gave `pid` at its exec (`comm`, NUL padded),
    /// for a target whose /proc entry was gone before it could be read.
    /// Not for one that has exited: the exec was its pid's next owner's.
    pub(super) fn named(&mut self, pid: u32, comm: &[u8]) {
        let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        if let Some(t) = self.by_pid.get_mut(&pid).filter(|t| len > 0 && !t.exited) {
            t.info.comm = String::from_utf8_lossy(&comm[..len]).into_owned();
        }
    }

    /// A given (or followed) target has exited: its regions and blocks stay
    /// recorded — memory held at exit, and its ages, is what the report
    /// shows — but its pid is no longer traced and its probes go.
    pub(super) fn retire(&mut self, k: &mut impl Kernel, pid: u32) {
        if let Some(t) = self.by_pid.get_mut(&pid).filter(|t| !t.exited) {
            t.set_exited();
            k.forget_target(pid);
            k.forget_unwind(pid);
        }
    }

    /// The OOM killer chose `pid`: a given target ends there (the run ends
    /// once every target has: for a single one, now). A watched one goes
    /// with its exit, as any process.
    pub(super) fn oom_killed(&mut self, pid: u32) {
        if let Some(t) = self.by_pid.get_mut(&pid).filter(|_| self.watcher.is_none()) {
            t.set_exited();
        }
    }

    /// Drops what processes gone left behind, everywhere below.
    pub(super) fn purge_gone(&mut self, k: &mut impl Kernel) -> Result<()> {
        if self.gone.is_empty() {
            return Ok(());
        }
        let gone = std::mem::take(&mut self.gone);
        self.processes_dropped += gone.len() as u64;
        k.purge(&gone)
    }

    /// Retires the given targets that ended without an exit event seen
    /// (a missed event, a main thread's exit on older kernels), and returns
    /// the live ones.
    pub(super) fn retire_ended(&mut self, k: &mut impl Kernel) -> Vec<u32> {
        let mut alive = Vec::new();
        let mut ended = Vec::new();
        for t in self.by_pid.values().filter(|t| !t.exited) {
            match k.is_alive(&t.info) {
                true => alive.push(t.info.pid),
                false => ended.push(t.info.pid),
            }
        }
        for pid in ended {
            self.retire(k, pid);
        }
        alive
    }

    /// On a watched node: makes `pid` a target if it is selected, or hooks
    /// the allocator files it maps that are new since it was looked at.
    pub(super) fn consider(&mut self, k: &mut impl Kernel, pid: u32) {
        let Some(w) = &mut self.watcher else {
            return;
        };
        if w.ignored.contains(&pid) {
            return;
        }
        if let Entry::Vacant(slot) = self.by_pid.entry(pid) {
            let Some(process) = k.describe(pid) else {
                return; // gone, or a kernel thread
            };
            if !w.selection.matches(&process) {
                w.ignored.insert(pid);
                return;
            }
            let Some(info) = k.inspect(pid) else {
                return;
            };
            let system_wide = w.selection.system_wide();
            if !system_wide {
                if let Err(e) = k.add_target(pid) {
                    // The target table is full: the node goes on without it.
                    crate::note(&format!("warning: not tracing pid {pid}: {e:#}"));
                    w.ignored.insert(pid);
                    return;
                }
            }
            let just_execd = !system_wide && w.recent.contains_key(&pid);
            slot.insert(Target::placed(
                info,
                Vec::new(),
                process.cgroup,
                process.container,
            ));
            k.refresh_maps(pid);
            if just_execd {
                // Its loader has not mapped its libraries yet. Probes for
                // it on the allocator files already known are placed now
                // (the kernel installs them when it maps one), so it is
                // traced from its first malloc if it uses one of them;
                // others are found as it maps them.
                k.attach_known_files(pid);
            }
        }
        self.attach_files(k, pid, false);
    }

    /// Hooks the allocator files `pid` maps that are not hooked yet (for
    /// every process with --all, else for `pid`); see
    /// [`Kernel::attach_files`]. A given target lists what it was hooked on
    /// (at start under the loader's name for it); a watched one every file
    /// it maps.
    pub(super) fn attach_files(&mut self, k: &mut impl Kernel, pid: u32, loaded_later: bool) {
        let scope = (!self.system_wide()).then_some(pid);
        let watching = self.watching();
        let Some(t) = self.by_pid.get_mut(&pid) else {
            return;
        };
        let files = k.attach_files(pid, scope, loaded_later);
        t.hooked(
            files
                .into_iter()
                .filter(|f| f.new || watching)
                .map(|f| f.name),
        );
    }
}

#[cfg(test)]
mod tests {
    //! The lifecycle against a fake kernel: processes are what the test
    //! says they are, and every kernel operation is logged in order.

    use super::*;
    use crate::{config::Filter, discover::select::Process, trace::kernel::HookedFile};

    #[derive(Default)]
    struct Fake {
        /// Live processes: pid → (start time, comm).
        procs: HashMap<u32, (u64, String)>,
        exits_are_final: bool,
        /// What the lifecycle asked, in order.
        log: Vec<String>,
    }

    impl Fake {
        fn with(procs: &[(u32, u64, &str)]) -> Fake {
            Fake {
                procs: procs
                    .iter()
                    .map(|&(pid, start, comm)| (pid, (start, comm.to_string())))
                    .collect(),
                exits_are_final: true,
                log: Vec::new(),
            }
        }

        fn info(&self, pid: u32) -> Option<TargetInfo> {
            self.procs.get(&pid).map(|(start, comm)| TargetInfo {
                pid,
                comm: comm.clone(),
                exe: Some(format!("/bin/{comm}")),
                start_time: *start,
            })
        }

        fn took(&mut self) -> Vec<String> {
            std::mem::take(&mut self.log)
        }
    }

    impl Kernel for Fake {
        fn inspect(&mut self, pid: u32) -> Option<TargetInfo> {
            self.info(pid)
        }
        fn is_alive(&self, info: &TargetInfo) -> bool {
            self.procs
                .get(&info.pid)
                .is_some_and(|(start, _)| *start == info.start_time)
        }
        fn start_time(&self, pid: u32) -> Option<u64> {
            self.procs.get(&pid).map(|(start, _)| *start)
        }
        fn describe(&self, pid: u32) -> Option<Process> {
            self.procs.get(&pid).map(|(_, comm)| Process {
                comm: comm.clone(),
                cgroup: None,
                container: None,
            })
        }
        fn place(&mut self, info: TargetInfo) -> Target {
            Target::placed(info, Vec::new(), None, None)
        }
        fn exits_are_final(&self) -> bool {
            self.exits_are_final
        }
        fn add_target(&mut self, pid: u32) -> Result<()> {
            self.log.push(format!("add {pid}"));
            Ok(())
        }
        fn forget_target(&mut self, pid: u32) {
            self.log.push(format!("forget {pid}"));
        }
        fn forget_unwind(&mut self, pid: u32) {
            self.log.push(format!("forget unwind {pid}"));
        }
        fn attach_files(
            &mut self,
            pid: u32,
            scope: Option<u32>,
            _loaded_later: bool,
        ) -> Vec<HookedFile> {
            self.log.push(format!("attach {pid} scope {scope:?}"));
            vec![HookedFile {
                name: "libc.so.6".into(),
                new: true,
            }]
        }
        fn attach_known_files(&mut self, pid: u32) {
            self.log.push(format!("attach known {pid}"));
        }
        fn attach_image(&mut self, pid: u32, _program: Option<&str>) -> Vec<String> {
            self.log.push(format!("attach image {pid}"));
            vec!["libjemalloc.so.2".into()]
        }
        fn refresh_maps(&mut self, pid: u32) {
            self.log.push(format!("maps {pid}"));
        }
        fn release_image(&mut self, pid: u32, _exec_ns: u64) {
            self.log.push(format!("release {pid}"));
        }
        fn purge(&mut self, gone: &HashSet<u32>) -> Result<()> {
            let mut pids: Vec<u32> = gone.iter().copied().collect();
            pids.sort_unstable();
            self.log.push(format!("purge {pids:?}"));
            Ok(())
        }
    }

    /// Given targets (`--pid`), alive in `k`.
    fn given(k: &mut Fake, pids: &[u32]) -> Targets {
        let mut targets = Targets::default();
        for &pid in pids {
            let info = k.info(pid).expect("a process of the fake");
            targets.by_pid.insert(
                pid,
                Target::placed(info, vec!["libc.so.6".into()], None, None),
            );
        }
        targets
    }

    fn watching(selection: Selection) -> Targets {
        Targets {
            watcher: Some(Watcher::new(selection)),
            ..Targets::default()
        }
    }

    #[test]
    fn a_forked_child_is_a_target_with_tables_before_probes() {
        let mut k = Fake::with(&[(10, 100, "parent"), (11, 200, "child")]);
        let mut targets = given(&mut k, &[10]);
        assert!(targets.on_fork(&mut k, 11, 10));
        assert_eq!(k.took(), ["maps 11", "attach 11 scope Some(11)"]);
        let child = &targets.by_pid[&11];
        assert!(!child.exited);
        assert_eq!(child.info.comm, "child");
        assert_eq!(child.allocators, ["libc.so.6"]);
        // A fork by a process that is no target is none of ours.
        k.procs.insert(21, (300, "other".into()));
        assert!(!targets.on_fork(&mut k, 21, 20));
        assert!(k.took().is_empty());
        assert!(!targets.by_pid.contains_key(&21));
    }

    #[test]
    fn pid_reused_at_fork_purges_the_old_target_first() {
        let mut k = Fake::with(&[(10, 100, "parent"), (11, 50, "old")]);
        let mut targets = given(&mut k, &[10, 11]);
        k.procs.remove(&11);
        targets.on_exit(&mut k, 11);
        assert_eq!(k.took(), ["forget 11", "forget unwind 11"]);
        assert!(targets.by_pid[&11].exited);
        // The pid comes back as a new child of 10.
        k.procs.insert(11, (400, "new".into()));
        targets.on_fork(&mut k, 11, 10);
        assert_eq!(
            k.took(),
            ["purge [11]", "maps 11", "attach 11 scope Some(11)"]
        );
        let t = &targets.by_pid[&11];
        assert_eq!((t.info.comm.as_str(), t.exited), ("new", false));
        assert_eq!(targets.processes_dropped, 1);
    }

    #[test]
    fn a_child_gone_before_it_was_seen_is_kept_exited_without_probes() {
        let mut k = Fake::with(&[(10, 100, "parent")]);
        let mut targets = given(&mut k, &[10]);
        targets.on_fork(&mut k, 12, 10);
        assert!(k.took().is_empty());
        let t = &targets.by_pid[&12];
        assert!(t.exited);
        assert_eq!(t.info.comm, "parent", "named after its parent");
    }

    #[test]
    fn exec_releases_the_old_image_and_hooks_the_new_one() {
        let mut k = Fake::with(&[(10, 100, "sh")]);
        let mut targets = given(&mut k, &[10]);
        k.procs.insert(10, (100, "python3".into()));
        targets.on_exec(&mut k, 10, 5);
        assert_eq!(k.took(), ["release 10", "maps 10", "attach image 10"]);
        let t = &targets.by_pid[&10];
        assert_eq!(t.info.comm, "python3");
        assert_eq!(t.allocators, ["libc.so.6", "libjemalloc.so.2"]);
    }

    #[test]
    fn exec_by_the_pids_next_owner_ends_the_target_and_releases_nothing() {
        let mut k = Fake::with(&[(10, 100, "leaky")]);
        let mut targets = given(&mut k, &[10]);
        k.procs.insert(10, (999, "stranger".into()));
        targets.on_exec(&mut k, 10, 5);
        // (The exec event's name comes next; it is the stranger's.)
        targets.named(10, b"stranger\0\0");
        assert!(k.took().is_empty());
        let t = &targets.by_pid[&10];
        assert!(t.exited);
        assert_eq!(t.info.comm, "leaky");
    }

    #[test]
    fn main_thread_exit_is_not_the_end_where_exits_are_not_final() {
        let mut k = Fake::with(&[(10, 100, "leaky")]);
        k.exits_are_final = false;
        let mut targets = given(&mut k, &[10]);
        targets.on_exit(&mut k, 10);
        assert!(
            !targets.by_pid[&10].exited,
            "still alive: a thread lives on"
        );
        // It ends for real: housekeeping finds it gone and retires it.
        k.procs.remove(&10);
        assert!(targets.retire_ended(&mut k).is_empty());
        assert!(targets.by_pid[&10].exited);
        assert_eq!(k.took(), ["forget 10", "forget unwind 10"]);
        assert!(targets.all_exited());
    }

    #[test]
    fn an_oom_kill_of_a_given_target_ends_the_run() {
        let mut k = Fake::with(&[(10, 100, "a"), (11, 100, "b")]);
        let mut targets = given(&mut k, &[10, 11]);
        targets.oom_killed(10);
        assert!(!targets.all_exited(), "11 still runs");
        targets.oom_killed(11);
        assert!(targets.all_exited());
        // On a watched node a kill ends nothing: the exit removes it.
        let mut node = watching(Selection::All);
        node.consider(&mut k, 10);
        node.oom_killed(10);
        assert!(!node.by_pid[&10].exited);
    }

    #[test]
    fn a_watched_process_that_exits_is_dropped_at_the_next_purge() {
        let mut k = Fake::with(&[(10, 100, "nginx"), (11, 100, "bash")]);
        let mut node = watching(Selection::Matching(Filter {
            comm: vec!["nginx".into()],
            ..Filter::default()
        }));
        node.consider(&mut k, 10);
        node.consider(&mut k, 11);
        assert_eq!(k.took(), ["add 10", "maps 10", "attach 10 scope Some(10)"]);
        assert!(!node.by_pid.contains_key(&11), "not selected");
        node.on_exit(&mut k, 10);
        assert!(!node.by_pid.contains_key(&10));
        assert_eq!(k.took(), ["forget 10"]);
        node.purge_gone(&mut k).unwrap();
        assert_eq!(k.took(), ["purge [10]"]);
        assert_eq!(node.processes_dropped, 1);
    }

    #[test]
    fn a_watched_process_that_execs_into_an_unselected_program_is_dropped() {
        let mut k = Fake::with(&[(10, 100, "nginx")]);
        let mut node = watching(Selection::Matching(Filter {
            comm: vec!["nginx".into()],
            ..Filter::default()
        }));
        node.consider(&mut k, 10);
        k.took();
        k.procs.insert(10, (100, "sleep".into()));
        node.on_exec(&mut k, 10, 5);
        assert_eq!(k.took(), ["release 10", "maps 10", "forget 10"]);
        assert!(!node.by_pid.contains_key(&10));
        assert!(node.gone.contains(&10));
    }
}

//! What the targets' lifecycle (`targets`) needs from below it, as a trait
//! ([`Kernel`]), and the real thing ([`Machinery`]): the loaded eBPF
//! programs and their tables, the allocator files, the unwind tables, the
//! symbolizer and the per-stack series — everything a trace keeps per
//! process. The lifecycle decides; this carries it out. Tests put a fake in
//! its place.

use std::{
    collections::{BTreeSet, HashSet},
    path::PathBuf,
};

use anyhow::Result;
use memtrace_report::ProbePlacement;

use super::{
    golang::GoTargets, java::JavaTargets, nodejs::NodeTargets, python::PythonTargets,
    recycle::Recycler, targets::Target,
};
use crate::{
    accounting::{regions::MappingTracker, series::Aggregator},
    bpf::{
        drain::{self, StackCache},
        probes::Probes,
        unwind::Unwinder,
    },
    discover::{
        allocator::Hook,
        launch,
        select::{self, AllocatorFile, AllocatorFiles, Process},
        target::{self, TargetInfo},
    },
    symbolize::Symbolizer,
};

/// An allocator file hooked (or found hooked already) in a process.
pub(super) struct HookedFile {
    /// As the report names it.
    pub(super) name: String,
    /// Whether its probes went in just now.
    pub(super) new: bool,
}

/// The operations the lifecycle asks for.
pub(super) trait Kernel {
    /// A process's identity now (None: gone).
    fn inspect(&mut self, pid: u32) -> Option<TargetInfo>;
    /// Whether the process `info` describes still runs (not its pid's next
    /// owner).
    fn is_alive(&self, info: &TargetInfo) -> bool;
    /// When `pid` started, if it exists.
    fn start_time(&self, pid: u32) -> Option<u64>;
    /// What selects a process on a watched node (None: gone, or a kernel
    /// thread).
    fn describe(&self, pid: u32) -> Option<Process>;
    /// A new target for `info`, placed in its cgroup and container.
    fn place(&mut self, info: TargetInfo) -> Target;
    /// Whether this kernel's exit events are whole processes' (else a main
    /// thread's, which a thread calling exec outlives).
    fn exits_are_final(&self) -> bool;
    /// Makes `pid` a target in the kernel's table.
    fn add_target(&mut self, pid: u32) -> Result<()>;
    /// `pid` is no target any more: out of the kernel's table, its probes
    /// detached.
    fn forget_target(&mut self, pid: u32);
    /// `pid`'s mappings out of the unwinder.
    fn forget_unwind(&mut self, pid: u32);
    /// Hooks the allocator files `pid` maps that are not hooked yet, for
    /// `scope` (None: every process) — a library it loaded later is said
    /// so when `loaded_later`. A file that cannot be hooked is noted, not
    /// fatal.
    fn attach_files(&mut self, pid: u32, scope: Option<u32>, loaded_later: bool)
        -> Vec<HookedFile>;
    /// Places `pid`'s probes on every allocator file known so far (a
    /// process that just exec'd, before its loader maps them).
    fn attach_known_files(&mut self, pid: u32);
    /// Hooks the allocator of the image `pid` exec'd (`program`: its path as
    /// the target knows it); the names of the files newly hooked.
    fn attach_image(&mut self, pid: u32, program: Option<&str>) -> Vec<String>;
    /// Reads `pid`'s mappings again, for symbols and the unwinder.
    fn refresh_maps(&mut self, pid: u32);
    /// `pid` exec'd at `exec_ns`: what its old image held counts as
    /// released, and what was known of its mappings goes.
    fn release_image(&mut self, pid: u32, exec_ns: u64);
    /// Drops everything kept for processes gone: kernel tables, stacks,
    /// series, regions, symbols, unwind tables.
    fn purge(&mut self, gone: &HashSet<u32>) -> Result<()>;
}

/// Everything a trace keeps per process, below its lifecycle.
pub(super) struct Machinery {
    pub(super) probes: Probes,
    pub(super) files: AllocatorFiles,
    /// With unwind tables (`--unwind dwarf|auto`).
    pub(super) unwinder: Option<Unwinder>,
    pub(super) symbolizer: Symbolizer,
    pub(super) stacks: StackCache,
    pub(super) agg: Aggregator,
    pub(super) mappings: MappingTracker,
    /// What each heap stack freed, as last computed (see
    /// [`drain::read_kernel`]).
    pub(super) freed: drain::Freed,
    /// The CPython processes among the targets.
    pub(super) python: PythonTargets,
    /// The Go processes among the targets.
    pub(super) golang: GoTargets,
    /// The Node processes among the targets.
    pub(super) node: NodeTargets,
    pub(super) java: JavaTargets,
    /// Room in the kernel's stack table.
    pub(super) recycler: Recycler,
    pub(super) verbose: bool,
    /// Where each hooked function's probe went, as `--verbose` says it (the
    /// report's `probes`). At most [`MAX_PLACEMENTS`].
    pub(super) placements: BTreeSet<ProbePlacement>,
}

/// Placements the report keeps (a node traced with `--all` may hook a
/// libc of each container image: ~10 functions each).
const MAX_PLACEMENTS: usize = 4096;

impl Machinery {
    /// Notes where each function's probes went in a file just hooked (see
    /// `placement`) for the report, and says so with --verbose.
    pub(super) fn describe_probes(&mut self, path: &std::path::Path, file: &AllocatorFile) {
        let file_name = path.display().to_string();
        let mut placements = Vec::new();
        for (operator, call) in &file.wrappers {
            let checked = file
                .points
                .iter()
                .any(|p| p.hook == Hook::FailurePath && p.symbol == *operator);
            let which = match checked {
                true => "the calls that pass its checks (its failure path is probed, below)",
                false => "each of its calls",
            };
            placements.push(ProbePlacement {
                function: operator.clone(),
                file: file_name.clone(),
                file_offset: None,
                placement: format!(
                    "not probed at its entry: it calls {} (at +{}), whose probe sees {which}",
                    call.callee, call.at
                ),
            });
        }
        for p in &file.points {
            placements.push(ProbePlacement {
                function: p.symbol.clone(),
                file: file_name.clone(),
                file_offset: Some(p.file_offset),
                placement: format!("{}{}{}", p.placement, p.when.describe(), p.skip.describe()),
            });
        }
        for p in placements {
            if self.verbose {
                let offset = p
                    .file_offset
                    .map_or(String::new(), |o| format!(" (file offset {o:#x})"));
                crate::note(&format!(
                    "{} in {}{offset}: {}",
                    p.function, p.file, p.placement
                ));
            }
            if self.placements.len() < MAX_PLACEMENTS {
                self.placements.insert(p);
            }
        }
    }
}

impl Kernel for Machinery {
    fn inspect(&mut self, pid: u32) -> Option<TargetInfo> {
        target::inspect(pid).ok()
    }

    fn is_alive(&self, info: &TargetInfo) -> bool {
        info.is_alive()
    }

    fn start_time(&self, pid: u32) -> Option<u64> {
        target::start_time(pid)
    }

    fn describe(&self, pid: u32) -> Option<Process> {
        select::describe(pid)
    }

    fn place(&mut self, info: TargetInfo) -> Target {
        Target::new(info, Vec::new())
    }

    fn exits_are_final(&self) -> bool {
        self.probes.exits_are_final
    }

    fn add_target(&mut self, pid: u32) -> Result<()> {
        self.probes.add_target(pid)
    }

    fn forget_target(&mut self, pid: u32) {
        self.probes.forget_target(pid);
    }

    fn forget_unwind(&mut self, pid: u32) {
        if let Some(u) = &mut self.unwinder {
            u.forget(pid);
        }
    }

    fn attach_files(
        &mut self,
        pid: u32,
        scope: Option<u32>,
        loaded_later: bool,
    ) -> Vec<HookedFile> {
        let mut hooked = Vec::new();
        for file in self.files.of(pid) {
            let new = match self.probes.attach_allocator(scope, &file) {
                Ok(new) => new,
                Err(e) => {
                    crate::note(&format!("warning: pid {pid}: {e:#}"));
                    continue;
                }
            };
            if new {
                self.describe_probes(&file.path, &file);
                if loaded_later {
                    crate::note(&format!(
                        "pid {pid} loaded the allocator {}: hooked",
                        file.name
                    ));
                }
            }
            hooked.push(HookedFile {
                name: file.name.clone(),
                new,
            });
        }
        hooked
    }

    fn attach_known_files(&mut self, pid: u32) {
        for file in self.files.host_files() {
            if let Err(e) = self.probes.attach_allocator(Some(pid), &file) {
                crate::note(&format!("warning: pid {pid}: {e:#}"));
            }
        }
    }

    fn attach_image(&mut self, pid: u32, program: Option<&str>) -> Vec<String> {
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let Ok(libraries) = launch::libraries_of(&exe) else {
            return Vec::new();
        };
        let mut hooked = Vec::new();
        for path in libraries {
            // The program itself (a static one is its own allocator) is
            // named by its path, not by /proc/PID/exe, gone with it.
            let name = match (program, path == exe) {
                (Some(program), true) => program.to_string(),
                _ => path.display().to_string(),
            };
            let Ok(Some(file)) = self.files.open(path, name) else {
                continue;
            };
            match self.probes.attach_allocator(Some(pid), &file) {
                Ok(true) => {
                    self.describe_probes(std::path::Path::new(&file.name), &file);
                    hooked.push(file.name.clone());
                }
                Ok(false) => {}
                Err(e) => crate::note(&format!("warning: pid {pid} exec'd: {e:#}")),
            }
        }
        hooked
    }

    fn refresh_maps(&mut self, pid: u32) {
        // Read once for all three (a process may map 100,000 regions).
        if let Ok(maps) = target::read_maps(pid) {
            self.probes.hold_allocator_text_in(pid, &maps);
            if let Some(u) = &mut self.unwinder {
                u.update_from(pid, &maps);
            }
            self.symbolizer.refresh_from(pid, maps);
        }
        self.python.consider(pid, &mut self.probes, self.verbose);
        self.golang.consider(pid);
        self.node.consider(pid);
        self.java.consider(pid);
    }

    fn release_image(&mut self, pid: u32, exec_ns: u64) {
        self.probes.allocator_text_forgotten(pid);
        if let Err(e) = drain::release_image(&self.probes.bpf, pid, exec_ns) {
            crate::note(&format!("warning: pid {pid} exec'd: {e:#}"));
        }
        self.mappings.release_all(pid);
        self.symbolizer.forget(pid);
        self.python.forget(pid, &mut self.probes);
        self.golang.forget(pid);
        self.node.forget(pid);
        self.java.forget(pid);
        if let Some(u) = &mut self.unwinder {
            // (The kernel dropped the old image's mappings at the exec.)
            u.invalidate(pid);
        }
    }

    fn purge(&mut self, gone: &HashSet<u32>) -> Result<()> {
        let ids = drain::purge_processes(&mut self.probes.bpf, gone)?;
        self.stacks.forget(&ids);
        let remap = self.agg.remove_pids(gone);
        self.mappings.forget(gone, &remap);
        self.symbolizer.forget_processes(gone);
        for &pid in gone {
            self.python.forget(pid, &mut self.probes);
            self.golang.forget(pid);
            self.node.forget(pid);
            self.java.forget(pid);
            self.java.forget(pid);
        }
        if let Some(u) = &mut self.unwinder {
            for &pid in gone {
                u.forget(pid);
            }
        }
        self.freed.forget(gone);
        Ok(())
    }
}

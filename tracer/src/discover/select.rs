//! Watching a node for processes to trace (`--all`, `--comm`, `--cgroup`,
//! `--container`): what selects a process, what is known of one (name,
//! cgroup, container), the processes present at start, and the allocator
//! files processes map — each distinct file (by inode) parsed once however
//! many processes map it, so that a busy node costs one ELF parse per
//! library, not per process (every mode uses that cache: a traced process
//! that loads an allocator later is hooked on it too).

use std::{collections::HashMap, fs, os::unix::fs::MetadataExt, path::PathBuf, sync::Arc};

use anyhow::{bail, Context, Result};

use crate::{
    config::{Filter, Selection},
    discover::{
        allocator::{self, ProbePoint},
        cgroup::{self, Container},
        target,
        wrapper::Wrapped,
    },
};

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.comm.is_empty() && self.cgroup.is_none() && self.container.is_none()
    }

    pub fn matches(&self, p: &Process) -> bool {
        (self.comm.is_empty() || self.comm.contains(&p.comm))
            && self.cgroup.as_ref().is_none_or(|want| {
                p.cgroup
                    .as_deref()
                    .is_some_and(|path| cgroup::in_cgroup(path, want))
            })
            && self.container.as_ref().is_none_or(|want| {
                p.container
                    .as_ref()
                    .is_some_and(|c| cgroup::matches_container(c, want))
            })
    }
}

impl Selection {
    pub fn matches(&self, p: &Process) -> bool {
        match self {
            Selection::All => true,
            Selection::Matching(f) => f.matches(p),
        }
    }

    /// Whether the allocator is probed for every process at once (else per
    /// matching process).
    pub fn system_wide(&self) -> bool {
        matches!(self, Selection::All)
    }
}

/// What is known of a process on the node.
#[derive(Clone, Debug)]
pub struct Process {
    pub comm: String,
    pub cgroup: Option<String>,
    pub container: Option<Container>,
}

/// Describes a user process; None for kernel threads and processes gone.
pub fn describe(pid: u32) -> Option<Process> {
    let info = target::inspect(pid).ok()?;
    let cgroup = cgroup::read(pid);
    let container = cgroup.as_deref().and_then(cgroup::container_of);
    Some(Process {
        comm: info.comm,
        cgroup,
        container,
    })
}

/// Whether cgroup `wanted` (as `--cgroup` takes it: a cgroup path, or a
/// directory under /sys/fs/cgroup) exists in some hierarchy: the v2 one or
/// any v1 one mounted under /sys/fs/cgroup.
pub fn cgroup_exists(wanted: &str) -> bool {
    let root = std::path::Path::new("/sys/fs/cgroup");
    if wanted.starts_with("/sys/fs/cgroup") {
        return std::path::Path::new(wanted).is_dir();
    }
    let relative = wanted.trim_start_matches('/');
    if root.join(relative).is_dir() {
        return true;
    }
    fs::read_dir(root).is_ok_and(|dir| {
        dir.filter_map(Result::ok)
            .any(|hierarchy| hierarchy.path().join(relative).is_dir())
    })
}

/// Every process id on the node (thread-group leaders only), but memtrace's.
pub fn pids() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&p| p != me)
        .collect();
    pids.sort_unstable();
    pids
}

/// Identity of a file as the kernel sees it through the path memtrace
/// opened: (st_dev, st_ino). Uprobes live on inodes, so this is what
/// "attached once" is counted by.
pub type FileId = (u64, u64);

/// An allocator implementation in one file.
#[derive(Clone, Debug)]
pub struct AllocatorFile {
    pub id: FileId,
    /// How memtrace opens it (through the first process found mapping it).
    pub path: PathBuf,
    /// How that process names it.
    pub name: String,
    pub points: Vec<ProbePoint>,
    /// Its C++ operators left unprobed: each calls a hooked function first
    /// (see `wrapper`).
    pub wrappers: Vec<(String, Wrapped)>,
}

/// Cache of allocator discovery by the (device, inode) that /proc/PID/maps
/// shows: files that are not allocators are remembered as such too. Also
/// holds the discovery overrides: extra symbol prefixes, and the files
/// given with `--allocator-lib` (hooked for every target, mapped yet or
/// not: the kernel installs a file's probes when a process maps it).
#[derive(Default)]
pub struct AllocatorFiles {
    known: HashMap<(String, u64), Option<Arc<AllocatorFile>>>,
    prefixes: Vec<String>,
    forced: Vec<Arc<AllocatorFile>>,
}

impl AllocatorFiles {
    /// Discovery with `prefixes` besides the built-in ones, and `forced`
    /// files hooked for every target (each must implement an allocator).
    pub fn new(prefixes: Vec<String>, forced: &[PathBuf]) -> Result<AllocatorFiles> {
        let mut files = AllocatorFiles {
            prefixes,
            ..AllocatorFiles::default()
        };
        for path in forced {
            let file = files
                .open(path.clone(), path.display().to_string())
                .with_context(|| format!("--allocator-lib {}", path.display()))?;
            let Some(file) = file else {
                bail!(
                    "--allocator-lib {}: it defines no malloc and free (bare or under a prefix; \
                     add --symbol-prefix for its own)",
                    path.display()
                );
            };
            files.forced.push(file);
        }
        Ok(files)
    }

    /// The `--allocator-lib` files.
    pub fn forced(&self) -> &[Arc<AllocatorFile>] {
        &self.forced
    }

    /// The allocator files `pid` maps now, and the `--allocator-lib` ones.
    /// Files seen before (in any process) cost a hash lookup; new ones are
    /// parsed once.
    pub fn of(&mut self, pid: u32) -> Vec<Arc<AllocatorFile>> {
        let Ok(maps) = target::read_maps(pid) else {
            return Vec::new();
        };
        let mut found: Vec<Arc<AllocatorFile>> = self.forced.clone();
        for mapping in maps.iter().filter(|m| m.executable && m.is_file()) {
            let key = (mapping.dev.clone(), mapping.inode);
            let entry = match self.known.get(&key) {
                Some(e) => e.clone(),
                None => {
                    let Some(path) = target::mapped_file_path(pid, mapping) else {
                        continue;
                    };
                    let file = self.inspect_file(path, mapping.path.clone().unwrap_or_default());
                    // A file that vanished with its process is not
                    // remembered: another process may map it readably.
                    if file.is_none() && !target::is_alive(pid) {
                        continue;
                    }
                    self.known.insert(key, file.clone());
                    file
                }
            };
            if let Some(f) = entry {
                if !found.iter().any(|g| g.id == f.id) {
                    found.push(f);
                }
            }
        }
        found
    }
}

impl AllocatorFiles {
    /// Allocator files found so far that memtrace reaches by their own path
    /// (not through another process's /proc entry, which may be gone).
    pub fn host_files(&self) -> Vec<Arc<AllocatorFile>> {
        let mut files: Vec<Arc<AllocatorFile>> = Vec::new();
        for f in self.known.values().flatten() {
            if !f.path.starts_with("/proc/") && !files.iter().any(|g| g.id == f.id) {
                files.push(f.clone());
            }
        }
        files
    }
}

impl AllocatorFiles {
    /// The allocator in the ELF file at `path` (named `name`), or None when
    /// it implements none.
    pub fn open(&self, path: PathBuf, name: String) -> Result<Option<Arc<AllocatorFile>>> {
        let meta = fs::metadata(&path).with_context(|| format!("opening {}", path.display()))?;
        let probes = allocator::file_probes(&path, &self.prefixes)?;
        if probes.points.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(AllocatorFile {
            id: (meta.dev(), meta.ino()),
            path,
            name,
            points: probes.points,
            wrappers: probes.wrappers,
        })))
    }

    /// [`AllocatorFiles::open`], with None also when it cannot be read.
    fn inspect_file(&self, path: PathBuf, name: String) -> Option<Arc<AllocatorFile>> {
        self.open(path, name).ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(comm: &str, cgroup: Option<&str>) -> Process {
        Process {
            comm: comm.into(),
            cgroup: cgroup.map(String::from),
            container: cgroup.and_then(cgroup::container_of),
        }
    }

    #[test]
    fn filters_need_every_criterion() {
        let id = "a".repeat(64);
        let docker = format!("/system.slice/docker-{id}.scope");
        let p = process("nginx", Some(&docker));
        let f = |comm: Option<&str>, cg: Option<&str>, ct: Option<&str>| Filter {
            comm: comm.map(String::from).into_iter().collect(),
            cgroup: cg.map(String::from),
            container: ct.map(String::from),
        };
        assert!(f(Some("nginx"), None, None).matches(&p));
        assert!(!f(Some("nginx2"), None, None).matches(&p));
        assert!(f(None, Some("/system.slice"), None).matches(&p));
        assert!(f(Some("nginx"), None, Some("aaaaaaaaaaaa")).matches(&p));
        assert!(!f(Some("nginx"), None, Some("bbbbbbbb")).matches(&p));
        assert!(!f(None, None, Some("aaaa")).matches(&process("nginx", None)));
        assert!(Selection::All.matches(&p));
    }

    #[test]
    fn cgroups_that_exist() {
        assert!(cgroup_exists("/"));
        assert!(cgroup_exists("/sys/fs/cgroup"));
        assert!(!cgroup_exists("/memtrace-no-such-cgroup-here"));
        assert!(!cgroup_exists(
            "/sys/fs/cgroup/memtrace-no-such-cgroup-here"
        ));
    }

    #[test]
    fn finds_own_allocator_once() {
        let mut files = AllocatorFiles::default();
        let me = std::process::id();
        let first = files.of(me);
        assert!(
            first.iter().any(|f| f.name.contains("libc")),
            "{:?}",
            first.iter().map(|f| &f.name).collect::<Vec<_>>()
        );
        let again = files.of(me);
        assert_eq!(first.len(), again.len());
        assert!(Arc::ptr_eq(&first[0], &again[0]));
        assert!(describe(me).is_some_and(|p| !p.comm.is_empty()));
        assert!(pids().iter().all(|&p| p != me) && !pids().is_empty());
    }
}

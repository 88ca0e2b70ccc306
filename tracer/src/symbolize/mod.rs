//! Symbolization: addresses → function, file:line, module. Each target's
//! mappings are snapshotted while it lives, and every executable file they
//! map is kept open (once per file, by device and inode), so stacks of a
//! process that has exited — an OOM-killed one, a container's that is gone
//! — still resolve against the very files it ran. Addresses become (file,
//! file offset), and blazesym resolves those from the ELF symbols and DWARF,
//! caching every binary it parsed. Results are cached per (file, offset).
//! Generated code (anonymous executable memory) is named from the process's
//! perf map when it writes one (`perfmap`).

use std::{
    collections::{hash_map::Entry, HashMap, HashSet},
    fs::File,
    os::fd::AsRawFd,
    path::PathBuf,
};

use blazesym::symbolize::{
    source::{Elf, Source},
    Input, Symbolized, Symbolizer as Blaze,
};
pub use memtrace_report::Frame;

use crate::discover::target::{self, Mapping};

pub mod perfmap;

use perfmap::PerfMaps;

#[derive(Clone, Default)]
struct Resolved {
    function: Option<String>,
    file: Option<String>,
    line: Option<u32>,
}

/// A mapped file, as /proc/PID/maps identifies it: (device, inode).
type FileKey = (String, u64);

pub struct Symbolizer {
    blaze: Blaze,
    /// Names of JIT-generated code, from the processes' perf maps.
    perf: PerfMaps,
    maps: HashMap<u32, Vec<Mapping>>,
    /// Executable files the known mappings map, kept open.
    files: HashMap<FileKey, File>,
    cache: HashMap<(FileKey, u64), Resolved>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        Symbolizer {
            blaze: Blaze::builder()
                .enable_code_info(true)
                .enable_demangling(true)
                .enable_inlined_fns(false)
                .build(),
            perf: PerfMaps::default(),
            maps: HashMap::new(),
            files: HashMap::new(),
            cache: HashMap::new(),
        }
    }

    /// Re-reads `pid`'s mappings. Mappings that disappeared (a library
    /// unloaded) are kept unless something new overlaps them, so older
    /// stacks still resolve. A process that is gone keeps its last snapshot.
    pub fn refresh(&mut self, pid: u32) {
        let Ok(fresh) = target::read_maps(pid) else {
            return;
        };
        // /proc/PID/maps is sorted by address; the overlap test is a binary
        // search, so a process with 100k mappings stays cheap.
        let old = self.maps.remove(&pid).unwrap_or_default();
        let overlaps_fresh = |o: &Mapping| {
            let i = fresh.partition_point(|n| n.end <= o.start);
            fresh.get(i).is_some_and(|n| n.start < o.end)
        };
        let kept: Vec<Mapping> = old.into_iter().filter(|o| !overlaps_fresh(o)).collect();
        for m in fresh.iter().filter(|m| m.executable && m.is_file()) {
            if let Entry::Vacant(slot) = self.files.entry((m.dev.clone(), m.inode)) {
                if let Some(file) =
                    target::mapped_file_path(pid, m).and_then(|p| File::open(p).ok())
                {
                    slot.insert(file);
                }
            }
        }
        let mut merged = fresh;
        merged.extend(kept);
        merged.sort_by_key(|m| m.start);
        if merged.iter().any(|m| m.executable && !m.is_file()) {
            // Anonymous executable memory: generated code, maybe named.
            self.perf.refresh(pid);
        }
        self.maps.insert(pid, merged);
    }

    /// Drops `pid`'s mappings (its address space was replaced by exec).
    pub fn forget(&mut self, pid: u32) {
        self.maps.remove(&pid);
        self.perf.forget(pid);
    }

    /// Drops the mappings of processes that are gone, and closes the files
    /// no remaining process maps.
    pub fn forget_processes(&mut self, gone: &HashSet<u32>) {
        self.maps.retain(|pid, _| !gone.contains(pid));
        for &pid in gone {
            self.perf.forget(pid);
        }
        let used: HashSet<FileKey> = self
            .maps
            .values()
            .flatten()
            .map(|m| (m.dev.clone(), m.inode))
            .collect();
        self.files.retain(|key, _| used.contains(key));
        self.cache.retain(|(key, _), _| used.contains(key));
    }

    /// The mapping of `pid` containing `addr`, if known.
    pub fn mapping(&self, pid: u32, addr: u64) -> Option<&Mapping> {
        let maps = self.maps.get(&pid)?;
        let i = maps.partition_point(|m| m.start <= addr);
        maps[..i].last().filter(|m| m.contains(addr))
    }

    /// Resolves a stack of return addresses (innermost first). A
    /// frame-pointer walk that strays into code without frame pointers reads
    /// data as return addresses: the stack ends at the first address outside
    /// any executable mapping (frame 0 is kept, as unknown, even then).
    pub fn frames(&mut self, pid: u32, addrs: &[u64]) -> Vec<Frame> {
        let keep = self.in_code(pid, addrs);
        addrs[..keep].iter().map(|&a| self.frame(pid, a)).collect()
    }

    /// How many of `addrs` (innermost first) lie in executable mappings
    /// before the first that does not (frame 0 always counts).
    pub fn in_code(&self, pid: u32, addrs: &[u64]) -> usize {
        addrs
            .iter()
            .enumerate()
            .take_while(|&(i, &a)| {
                i == 0
                    || self
                        .mapping(pid, a.saturating_sub(1))
                        .is_some_and(|m| m.executable)
            })
            .count()
    }

    fn frame(&mut self, pid: u32, address: u64) -> Frame {
        // Return addresses point after the call; the call itself is one
        // byte earlier, which is what file:line should describe.
        let lookup = address.saturating_sub(1);
        let Some(mapping) = self.mapping(pid, lookup).cloned() else {
            return Frame {
                address,
                function: None,
                file: None,
                line: None,
                module: None,
            };
        };
        let key = (mapping.dev.clone(), mapping.inode);
        let file = match self.files.get(&key) {
            // The open file: still there when the process is gone.
            Some(f) => Some(PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))),
            None => target::mapped_file_path(pid, &mapping),
        };
        let resolved = match file {
            Some(file) if mapping.is_file() => {
                let offset = lookup - mapping.start + mapping.offset;
                self.resolve(key, file, offset)
            }
            _ => {
                if let Some((name, map)) = self.perf.lookup(pid, lookup) {
                    return Frame {
                        address,
                        function: Some(name),
                        file: None,
                        line: None,
                        module: Some(map),
                    };
                }
                Resolved::default()
            }
        };
        Frame {
            address,
            function: resolved.function,
            file: resolved.file,
            line: resolved.line,
            module: mapping.path,
        }
    }

    fn resolve(&mut self, file_key: FileKey, file: PathBuf, offset: u64) -> Resolved {
        let key = (file_key, offset);
        if let Some(r) = self.cache.get(&key) {
            return r.clone();
        }
        let src = Source::Elf(Elf::new(&file));
        let resolved = match self.blaze.symbolize_single(&src, Input::FileOffset(offset)) {
            Ok(Symbolized::Sym(sym)) => Resolved {
                function: Some(sym.name.to_string()),
                file: sym
                    .code_info
                    .as_ref()
                    .map(|c| c.to_path().to_string_lossy().into_owned()),
                line: sym.code_info.as_ref().and_then(|c| c.line),
            },
            _ => Resolved::default(),
        };
        self.cache.insert(key, resolved.clone());
        resolved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn marker_function_for_symbolizer_test() -> u64 {
        marker_function_for_symbolizer_test as *const () as u64
    }

    #[test]
    fn resolves_own_function_and_unknowns_stay_null() {
        let mut sym = Symbolizer::new();
        let pid = std::process::id();
        sym.refresh(pid);
        // +1: frames are return addresses; the symbolizer looks one byte back.
        let addr = marker_function_for_symbolizer_test() + 1;
        let f = sym.frames(pid, &[addr, 0x10, addr]);
        let name = f[0].function.as_deref().unwrap_or_default();
        assert!(
            name.contains("marker_function_for_symbolizer_test"),
            "{f:?}"
        );
        assert!(f[0].module.as_deref().is_some_and(|m| m.starts_with('/')));
        // 0x10 is no code: the stack ends there.
        assert_eq!(f.len(), 1, "{f:?}");
        let f = sym.frames(pid, &[0x10]);
        assert_eq!((f[0].function.clone(), f[0].module.clone()), (None, None));
    }
}

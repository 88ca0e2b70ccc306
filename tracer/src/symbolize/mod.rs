//! Symbolization: addresses → function, file:line, module. Each target's
//! mappings are snapshotted while it lives, and every executable file they
//! map is kept open (once per file, by device and inode), so stacks of a
//! process that has exited — an OOM-killed one, a container's that is gone
//! — still resolve against the very files it ran. Addresses become (file,
//! file offset), and blazesym resolves those from the ELF symbols and DWARF,
//! caching every binary it parsed. Results are cached per (file, offset).
//! Generated code (anonymous executable memory) is named from the process's
//! perf map when it writes one (`perfmap`). CPython code objects become
//! qualified names, files and lines through `python`.
//!
//! A call the compiler inlined is a frame of its own: one address becomes
//! the inlined functions (innermost first, each with its own file and
//! line, marked `inlined`) and then the function they were inlined into.
//! A file without line tables of its own is read through its separate
//! debug file (`debuginfo`: by build id, debug link, debuginfod). A
//! function its symbol table names by an internal alias is named by the
//! name the file exports at its address (`elf`).

use std::{
    collections::{hash_map::Entry, HashMap, HashSet},
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use blazesym::symbolize::{
    source::{Elf, Source},
    Input, Symbolized, Symbolizer as Blaze,
};
pub use memtrace_report::Frame;
use memtrace_report::{CodeMapping, Language, Report, UnnamedFrames};

use crate::discover::{
    allocator,
    target::{self, Mapping},
};

pub mod debuginfo;
pub mod elf;
pub mod perfmap;
pub mod python;

use elf::ElfInfo;
use perfmap::PerfMaps;

/// One function at an address: the outer one, or one inlined into it.
#[derive(Clone, Default)]
struct Resolved {
    function: Option<String>,
    file: Option<String>,
    line: Option<u32>,
}

/// Where a mapped file's symbols come from.
struct FileSymbols {
    /// Its ELF facts (None: not readable as an object file).
    info: Option<ElfInfo>,
    /// Its separate debug file, when it has no line tables of its own.
    debug: Option<PathBuf>,
}

/// A mapped file, as /proc/PID/maps identifies it: (device, inode).
type FileKey = (String, u64);

/// The path a process was started by (None: its executable's own), read
/// for the executable of that (device, inode).
type StartedAs = (Option<(u64, u64)>, Option<String>);

pub struct Symbolizer {
    blaze: Blaze,
    /// Names of JIT-generated code, from the processes' perf maps.
    perf: PerfMaps,
    maps: HashMap<u32, Vec<Mapping>>,
    /// Executable files the known mappings map, kept open.
    files: HashMap<FileKey, File>,
    /// Each file's symbol sources, found when its first frame resolves.
    symbols: HashMap<FileKey, FileSymbols>,
    /// The functions at each (file, offset), innermost first.
    cache: HashMap<(FileKey, u64), Vec<Resolved>>,
    /// The path each process was started by, when a link to its
    /// executable (read while it runs, kept after).
    started_as: HashMap<u32, StartedAs>,
    /// What would name a file's unnamed frames (asked once per file).
    hints: HashMap<FileKey, String>,
    /// The frames named when their stacks were made (Python frames, a Go
    /// heap profile's), each once: a token's frame is at its index (see
    /// [`Symbolizer::frame_token`]). Bounded by the stacks kept times
    /// their depth.
    token_frames: Vec<Frame>,
    token_index: HashMap<Frame, u64>,
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
                .enable_inlined_fns(true)
                .build(),
            perf: PerfMaps::default(),
            maps: HashMap::new(),
            files: HashMap::new(),
            symbols: HashMap::new(),
            cache: HashMap::new(),
            started_as: HashMap::new(),
            hints: HashMap::new(),
            token_frames: Vec::new(),
            token_index: HashMap::new(),
        }
    }

    /// Re-reads `pid`'s mappings. Mappings that disappeared (a library
    /// unloaded) are kept unless something new overlaps them, so older
    /// stacks still resolve. A process that is gone keeps its last snapshot.
    pub fn refresh(&mut self, pid: u32) {
        if let Ok(fresh) = target::read_maps(pid) {
            self.refresh_from(pid, fresh);
        }
    }

    /// [`Symbolizer::refresh`] with the mappings just read.
    pub fn refresh_from(&mut self, pid: u32, fresh: Vec<Mapping>) {
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
        // Read again when the process exec'd another executable.
        let exe = std::fs::metadata(format!("/proc/{pid}/exe"))
            .map(|m| (m.dev(), m.ino()))
            .ok();
        if self.started_as.get(&pid).is_none_or(|(e, _)| *e != exe) {
            self.started_as.insert(pid, (exe, target::started_as(pid)));
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
        self.started_as.remove(&pid);
        self.perf.forget(pid);
    }

    /// Drops the mappings of processes that are gone, and closes the files
    /// no remaining process maps.
    pub fn forget_processes(&mut self, gone: &HashSet<u32>) {
        self.maps.retain(|pid, _| !gone.contains(pid));
        self.started_as.retain(|pid, _| !gone.contains(pid));
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
        self.symbols.retain(|key, _| used.contains(key));
        self.hints.retain(|key, _| used.contains(key));
        self.cache.retain(|(key, _), _| used.contains(key));
    }

    /// The stand-in address of a Python frame in a stack (see
    /// [`python::is_token`]): the same frame, the same token.
    pub fn python_token(&mut self, frame: python::PyFrame) -> u64 {
        self.frame_token(Frame {
            function: Some(frame.function),
            file: Some(frame.file),
            line: frame.line,
            language: Some(Language::Python),
            ..Frame::default()
        })
    }

    /// The stand-in address of a frame named when its stack was made (a
    /// Python frame; a Go heap profile's logical frame): the same frame,
    /// the same token.
    pub fn frame_token(&mut self, frame: Frame) -> u64 {
        if let Some(&token) = self.token_index.get(&frame) {
            return token;
        }
        let token = python::TOKEN_BASE | self.token_frames.len() as u64;
        self.token_frames.push(frame.clone());
        self.token_index.insert(frame, token);
        token
    }

    /// A Go heap profile's stack entry as one frame (to stand in the stack
    /// as a [`Symbolizer::frame_token`]): Go records a return PC per
    /// logical frame, an inlined call's caller included, so the entry
    /// names the innermost function at it, never the inlined calls DWARF
    /// would add.
    pub fn logical_frame(&mut self, pid: u32, address: u64) -> Frame {
        self.frame(pid, address)
            .into_iter()
            .next()
            .map(|f| Frame {
                inlined: false,
                ..f
            })
            .unwrap_or(Frame {
                address,
                ..Frame::default()
            })
    }

    /// The frame a token stands for.
    fn token_frame(&self, token: u64) -> Option<Frame> {
        if !python::is_token(token) {
            return None;
        }
        self.token_frames
            .get((token & !python::TOKEN_BASE) as usize)
            .cloned()
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
        let mut frames: Vec<Frame> = addrs[..keep]
            .iter()
            .flat_map(|&a| self.frame(pid, a))
            .collect();
        let allocator = allocator_frames(&frames);
        frames.drain(..allocator);
        frames
    }

    /// The frames at one return address: the functions inlined there
    /// (innermost first), then the function they were inlined into.
    pub fn frames_at(&mut self, pid: u32, address: u64) -> Vec<Frame> {
        self.frame(pid, address)
    }

    /// The function a return address lies in (not one inlined there).
    pub fn function_at(&mut self, pid: u32, address: u64) -> Option<String> {
        self.frame(pid, address).pop().and_then(|f| f.function)
    }

    /// How many of `addrs` (innermost first) lie in executable mappings
    /// before the first that does not (frame 0 always counts).
    pub fn in_code(&self, pid: u32, addrs: &[u64]) -> usize {
        addrs
            .iter()
            .enumerate()
            .take_while(|&(i, &a)| {
                i == 0
                    || python::is_token(a)
                    || self
                        .mapping(pid, a.saturating_sub(1))
                        .is_some_and(|m| m.executable)
            })
            .count()
    }

    /// What a report says of the files behind its frames: each target's
    /// code mappings its frames lie in (its executable first; with build
    /// ids, for pprof), the path it was started by when that is a link to
    /// its executable, and for each file with unnamed frames what would
    /// name them.
    pub fn describe(&mut self, report: &mut Report) {
        for t in &mut report.targets {
            let pid = t.pid;
            let mut addresses: Vec<u64> = report
                .stacks
                .iter()
                .filter(|s| s.pid == pid)
                .flat_map(|s| s.frames.iter().map(|f| f.address.saturating_sub(1)))
                .collect();
            addresses.sort_unstable();
            addresses.dedup();
            let mut mappings: Vec<CodeMapping> = Vec::new();
            for m in self.maps.get(&pid).into_iter().flatten() {
                if !m.executable || !m.is_file() {
                    continue;
                }
                let i = addresses.partition_point(|&a| a < m.start);
                if addresses.get(i).is_none_or(|&a| a >= m.end) {
                    continue;
                }
                let key = (m.dev.clone(), m.inode);
                let build_id = self
                    .symbols
                    .get(&key)
                    .and_then(|s| s.info.as_ref())
                    .and_then(ElfInfo::build_id_hex);
                mappings.push(CodeMapping {
                    start: m.start,
                    end: m.end,
                    file_offset: m.offset,
                    path: m.path.clone().unwrap_or_default(),
                    build_id,
                });
            }
            // The executable first (pprof takes the first mapping for it).
            mappings.sort_by_key(|m| (t.exe.as_deref() != Some(m.path.as_str()), m.start));
            t.mappings = mappings;
            if let Some((_, Some(path))) = self.started_as.get(&pid) {
                t.exe = Some(path.clone());
            }
        }
        // Unnamed frames per file: the file's path, its distinct frames.
        let mut unnamed: Vec<(FileKey, String)> = Vec::new();
        let mut seen: HashMap<FileKey, HashSet<(u32, u64)>> = HashMap::new();
        for s in &report.stacks {
            for f in s.frames.iter().filter(|f| f.function.is_none()) {
                let Some(m) = self.mapping(s.pid, f.address.saturating_sub(1)) else {
                    continue;
                };
                let (Some(path), true) = (&m.path, m.is_file()) else {
                    continue;
                };
                let key = (m.dev.clone(), m.inode);
                if !seen.contains_key(&key) {
                    unnamed.push((key.clone(), path.clone()));
                }
                seen.entry(key).or_default().insert((s.pid, f.address));
            }
        }
        report.unnamed_frames = unnamed
            .into_iter()
            .map(|(key, module)| {
                let frames = seen.get(&key).map_or(0, HashSet::len) as u64;
                let info = self.symbols.get(&key).and_then(|s| s.info.as_ref());
                let hint = self
                    .hints
                    .entry(key)
                    .or_insert_with(|| debuginfo::hint(&module, info))
                    .clone();
                UnnamedFrames {
                    module,
                    frames,
                    hint,
                }
            })
            .collect();
    }

    /// The frames at one return address: the functions inlined there
    /// (innermost first), then the function they were inlined into.
    fn frame(&mut self, pid: u32, address: u64) -> Vec<Frame> {
        // Return addresses point after the call; the call itself is one
        // byte earlier, which is what file:line should describe.
        let lookup = address.saturating_sub(1);
        if let Some(frame) = self.token_frame(address) {
            return vec![frame];
        }
        let unknown = |module: Option<String>| Frame {
            address,
            module,
            ..Frame::default()
        };
        let Some(mapping) = self.mapping(pid, lookup).cloned() else {
            return vec![unknown(None)];
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
                    return vec![Frame {
                        function: Some(name),
                        ..unknown(Some(map))
                    }];
                }
                Vec::new()
            }
        };
        if resolved.is_empty() {
            return vec![unknown(mapping.path)];
        }
        let last = resolved.len() - 1;
        resolved
            .into_iter()
            .enumerate()
            .map(|(i, r)| Frame {
                address,
                function: r.function,
                file: r.file,
                line: r.line,
                module: mapping.path.clone(),
                inlined: i < last,
                language: None,
                column: None,
            })
            .collect()
    }

    /// The symbol sources of a mapped file (`path`: where memtrace opens
    /// it), looked up once.
    fn symbols<'a>(
        symbols: &'a mut HashMap<FileKey, FileSymbols>,
        key: &FileKey,
        path: &Path,
    ) -> &'a FileSymbols {
        symbols.entry(key.clone()).or_insert_with(|| {
            let info = ElfInfo::read(path);
            let debug = info.as_ref().filter(|i| !i.has_lines).and_then(|i| {
                // Where the file is (debug links are relative to it).
                let real = std::fs::read_link(path).unwrap_or_else(|_| path.to_path_buf());
                debuginfo::find(real.parent(), i)
            });
            FileSymbols { info, debug }
        })
    }

    /// The functions at `offset` of a file, innermost first (empty when
    /// nothing names it).
    fn resolve(&mut self, file_key: FileKey, file: PathBuf, offset: u64) -> Vec<Resolved> {
        let key = (file_key, offset);
        if let Some(r) = self.cache.get(&key) {
            return r.clone();
        }
        let symbols = Self::symbols(&mut self.symbols, &key.0, &file);
        // A separate debug file is read at the virtual address the file's
        // own segments give the offset.
        let (src, input) = match (
            &symbols.debug,
            symbols.info.as_ref().and_then(|i| i.vaddr(offset)),
        ) {
            (Some(debug), Some(vaddr)) => (Source::Elf(Elf::new(debug)), Input::VirtOffset(vaddr)),
            _ => (Source::Elf(Elf::new(&file)), Input::FileOffset(offset)),
        };
        let location = |c: Option<&blazesym::symbolize::CodeInfo<'_>>| {
            (
                c.map(|c| c.to_path().to_string_lossy().into_owned()),
                c.and_then(|c| c.line),
            )
        };
        let resolved = match self.blaze.symbolize_single(&src, input) {
            Ok(Symbolized::Sym(sym)) => {
                let name = match symbols
                    .info
                    .as_ref()
                    .and_then(|i| i.public_name(sym.addr, &sym.name))
                {
                    Some(public) => public.to_string(),
                    None => unaliased(&sym.name).to_string(),
                };
                let (file, line) = location(sym.code_info.as_deref());
                let mut frames: Vec<Resolved> = sym
                    .inlined
                    .iter()
                    .rev()
                    .map(|f| {
                        let (file, line) = location(f.code_info.as_ref());
                        Resolved {
                            function: Some(unaliased(&f.name).to_string()),
                            file,
                            line,
                        }
                    })
                    .collect();
                frames.push(Resolved {
                    function: Some(name),
                    file,
                    line,
                });
                frames
            }
            _ => Vec::new(),
        };
        self.cache.insert(key, resolved.clone());
        resolved
    }
}

/// glibc's internal alias of a function (`__GI_name`, what its own calls
/// bind to) under the function's name.
fn unaliased(name: &str) -> &str {
    name.strip_prefix("__GI_")
        .filter(|n| !n.is_empty())
        .unwrap_or(name)
}

/// Rust's global allocator shims, the allocator's own code as much as
/// malloc's internals are: `alloc::alloc::alloc` and its kin, the
/// `Allocator` impl of `Global`, the `__rust_alloc` symbols and the
/// `System` allocator (prefixes of demangled names).
const RUST_ALLOCATOR_SHIMS: &[&str] = &[
    "alloc::alloc::",
    "<alloc::alloc::Global",
    "__rust_alloc",
    "__rust_realloc",
    "__rustc::__rdl_",
    "__rdl_alloc",
    "__rdl_realloc",
    "<std::alloc::System",
    "std::sys::alloc::",
];

/// How many frames at the top of a stack (innermost first) are the
/// allocator's own, which the probe stands for: an allocator entry point
/// inlined into its caller (ld.so's calloc, an inline wrapper around
/// libc's), Rust's global allocator shims (inlined or not), and C++'s
/// `operator new` around the probed malloc (one not probed because it only
/// calls malloc, `discover::wrapper`: libstdc++'s, a program's own; a
/// hooked one is the probe's own site and has no frame). The
/// stack starts at the caller; at least one frame is kept.
fn allocator_frames(frames: &[Frame]) -> usize {
    let own = |f: &Frame| {
        f.function.as_deref().is_some_and(|n| {
            (f.inlined && allocator::HOOKED.iter().any(|(h, _)| *h == n))
                || RUST_ALLOCATOR_SHIMS.iter().any(|p| n.starts_with(p))
                || n.starts_with("operator new")
        })
    };
    frames
        .iter()
        .take_while(|f| own(f))
        .count()
        .min(frames.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(function: &str, inlined: bool) -> Frame {
        Frame {
            address: 0x1000,
            function: Some(function.to_string()),
            file: None,
            line: None,
            module: None,
            inlined,
            language: None,
            column: None,
        }
    }

    /// A Rust release build's allocation, as blazesym names it with inlined
    /// frames: the shims go, `RawVec` and the user's function stay.
    #[test]
    fn allocator_shims_are_not_the_callers() {
        let stack = [
            named("alloc::alloc::alloc", true),
            named("<alloc::alloc::Global>::alloc_impl_runtime", true),
            named(
                "<alloc::alloc::Global as core::alloc::Allocator>::allocate",
                true,
            ),
            named("alloc::raw_vec::RawVecInner<A>::try_allocate_in", false),
            named("app::remember_request", false),
        ];
        assert_eq!(allocator_frames(&stack), 3);
        let stack = [named("calloc", true), named("_dl_allocate_tls", false)];
        assert_eq!(allocator_frames(&stack), 1);
        // A hooked name that is not inlined is the caller's own function
        // (a program's own `malloc`-named wrapper calling the probed one).
        assert_eq!(
            allocator_frames(&[named("malloc", false), named("main", false)]),
            0
        );
        // At least one frame stays.
        assert_eq!(allocator_frames(&[named("__rust_alloc", false)]), 0);
        // libstdc++'s operator new around malloc.
        let stack = [
            named("operator new(unsigned long)", false),
            named("SessionStore::remember(int)", false),
        ];
        assert_eq!(allocator_frames(&stack), 1);
    }

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

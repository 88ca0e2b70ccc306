//! The unwind tables the kernel-side stack walker follows (`--unwind dwarf`
//! and `auto`): built once per file (by device and inode) from its call
//! frame information (`table`), loaded into the kernel's row array and page
//! index array, and shared by every process that maps the file; each traced
//! process gets its list of executable mappings (and the walker's kept
//! copies of them are marked stale). A file no process maps any more has
//! its table dropped.
//!
//! With `auto`, a file whose code keeps frame pointers gets no table: its
//! frames are stepped by frame pointer, the cheap way.

pub mod table;

use std::{
    collections::{hash_map::Entry, HashMap},
    fs::File,
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, HashMap as BpfHashMap, Map, MapData},
    Ebpf,
};
use tracer_common::{
    ProcUnwind, UnwindKind, UnwindMapping, UnwindPage, UnwindRow, UNWIND_MAX_MAPPINGS,
    UNWIND_PAGE_SHIFT,
};

use memtrace_report::Unwind;
pub use memtrace_report::UnwindStats;

use crate::{
    bpf::window::{Window, PAGE},
    discover::target,
};

/// Rows the kernel keeps for every file together (8 bytes each): libc has
/// ~25,000, a big C++ or Rust program a few hundred thousand.
pub const MAX_ROWS: u32 = 4 << 20;
/// Page index entries (8 bytes each), one per 4 KiB page of code with a
/// table: 1 GiB of code, far more than [`MAX_ROWS`] rows cover.
pub const MAX_PAGES: u32 = 1 << 18;

/// A mapped file, whatever path or namespace names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct FileKey {
    dev: String,
    inode: u64,
}

struct FileTable {
    kind: UnwindKind,
    /// Its rows in the kernel's array (None: walked by frame pointer).
    rows: Option<Extent>,
    /// Its page index in the kernel's array, from page `first_page` of its
    /// virtual addresses.
    pages: Option<Extent>,
    first_page: u32,
    segments: Vec<(u64, u64, u64)>,
    /// Its code keeps frame pointers.
    frame_pointers: bool,
    /// Processes mapping it now.
    users: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Extent {
    first: u32,
    len: u32,
}

/// Free rows of the row array: extents sorted by first row, neighbours
/// merged; first fit.
#[derive(Debug, PartialEq, Eq)]
struct FreeList {
    capacity: u32,
    free: Vec<Extent>,
}

impl FreeList {
    fn new(capacity: u32) -> FreeList {
        FreeList {
            capacity,
            free: vec![Extent {
                first: 0,
                len: capacity,
            }],
        }
    }

    /// Where `len` rows would go (first fit), without taking them.
    fn find(&self, len: u32) -> Option<Extent> {
        let e = self.free.iter().find(|e| e.len >= len)?;
        Some(Extent {
            first: e.first,
            len,
        })
    }

    /// Takes `extent`, as [`FreeList::find`] returned it.
    fn take(&mut self, extent: Extent) {
        if let Some(i) = self.free.iter().position(|e| e.first == extent.first) {
            self.free[i].first += extent.len;
            self.free[i].len -= extent.len;
            if self.free[i].len == 0 {
                self.free.remove(i);
            }
        }
    }

    fn release(&mut self, extent: Extent) {
        let at = self.free.partition_point(|e| e.first < extent.first);
        self.free.insert(at, extent);
        // Merge with the neighbours.
        if at + 1 < self.free.len()
            && self.free[at].first + self.free[at].len == self.free[at + 1].first
        {
            self.free[at].len += self.free[at + 1].len;
            self.free.remove(at + 1);
        }
        if at > 0 && self.free[at - 1].first + self.free[at - 1].len == self.free[at].first {
            self.free[at - 1].len += self.free[at].len;
            self.free.remove(at);
        }
    }

    fn used(&self) -> u64 {
        u64::from(self.capacity) - self.free.iter().map(|e| u64::from(e.len)).sum::<u64>()
    }
}

/// A kernel array of files' ranges (BPF_F_MMAPABLE; the rows, the page
/// index): a file's entries are copied in through a mapping of just the
/// pages they fall in, made for the copy — one copy instead of a syscall
/// per entry, and the array (kernel memory) never counts in memtrace's
/// resident set for more than that moment.
struct Slab<T> {
    map: MapData,
    free: FreeList,
    _entries: std::marker::PhantomData<T>,
}

impl<T: Copy> Slab<T> {
    fn new(map: MapData, capacity: u32) -> Slab<T> {
        Slab {
            map,
            free: FreeList::new(capacity),
            _entries: std::marker::PhantomData,
        }
    }

    /// Copies `entries` into a free range, or None when none is left (or
    /// the copy fails).
    fn store(&mut self, entries: &[T]) -> Option<Extent> {
        let extent = self.free.find(u32::try_from(entries.len()).ok()?)?;
        self.copy(extent, entries).ok()?;
        self.free.take(extent);
        Some(extent)
    }

    /// Writes `entries` at `extent` through a shared mapping of its pages.
    fn copy(&self, extent: Extent, rows: &[T]) -> Result<()> {
        let start = extent.first as usize * size_of::<T>();
        let end = start + std::mem::size_of_val(rows);
        let offset = start / PAGE * PAGE;
        let len = end.div_ceil(PAGE) * PAGE - offset;
        // The extent lies below `capacity`, so within the map.
        let window =
            Window::map(&self.map, offset, len).context("mapping an unwind table array")?;
        // SAFETY: `start - offset + rows` lies within the `len` bytes
        // mapped; no other extent uses these rows, and the kernel reads
        // them only through pages inserted afterwards.
        unsafe {
            std::ptr::copy_nonoverlapping(
                rows.as_ptr(),
                window.as_mut_ptr().add(start - offset).cast::<T>(),
                rows.len(),
            );
        }
        Ok(())
    }
}

/// What a process was last given: the files it holds a reference to, and
/// the mappings the kernel has for it (`loaded`: written to `UNWIND_PROCS`
/// and still there — not after an exec, when the kernel drops them, nor
/// when the map was full: `refused`).
struct Given {
    files: Vec<FileKey>,
    mappings: Vec<UnwindMapping>,
    loaded: bool,
    refused: bool,
}

/// The tables of the files the traced processes map.
pub struct Unwinder {
    mode: Unwind,
    rows: Slab<UnwindRow>,
    pages: Slab<UnwindPage>,
    procs: BpfHashMap<MapData, u32, ProcUnwind>,
    /// `UNWIND_EPOCH`, whose slot 0 is bumped after every change to
    /// `procs` (the kernel bumps slot 1).
    epoch: Array<MapData, u64>,
    generation: u64,
    files: HashMap<FileKey, FileTable>,
    /// What each process was last given.
    processes: HashMap<u32, Given>,
    stats: UnwindStats,
}

impl Unwinder {
    /// Takes the unwinder's maps out of the loaded object (`mode` is not
    /// `fp`, for which they were created with one entry).
    pub fn new(bpf: &mut Ebpf, mode: Unwind) -> Result<Unwinder> {
        let mut take = |name: &str| {
            bpf.take_map(name)
                .with_context(|| format!("{name} map missing"))
        };
        let Map::Array(rows) = take("UNWIND_ROWS")? else {
            bail!("UNWIND_ROWS is not an array");
        };
        let Map::Array(pages) = take("UNWIND_PAGES")? else {
            bail!("UNWIND_PAGES is not an array");
        };
        Ok(Unwinder {
            mode,
            rows: Slab::new(rows, MAX_ROWS),
            pages: Slab::new(pages, MAX_PAGES),
            procs: BpfHashMap::try_from(take("UNWIND_PROCS")?)?,
            epoch: Array::try_from(take("UNWIND_EPOCH")?)?,
            generation: 0,
            files: HashMap::new(),
            processes: HashMap::new(),
            stats: UnwindStats::default(),
        })
    }

    /// Gives `pid`'s current executable mappings to the walker, building
    /// the tables of files it maps for the first time. Cheap when nothing
    /// changed since the last call. Unreadable maps leave it as it was.
    pub fn update(&mut self, pid: u32) {
        if let Ok(maps) = target::read_maps(pid) {
            self.update_from(pid, &maps);
        }
    }

    /// [`Unwinder::update`] with the mappings just read.
    pub fn update_from(&mut self, pid: u32, maps: &[target::Mapping]) {
        let mut keys = Vec::new();
        let mut mappings = Vec::new();
        for m in maps.iter().filter(|m| m.executable && m.is_file()) {
            let key = FileKey {
                dev: m.dev.clone(),
                inode: m.inode,
            };
            let Some(file) = self.file(pid, m, &key) else {
                continue;
            };
            if let Some(vaddr) = table_vaddr(&file.segments, m.offset) {
                mappings.push(UnwindMapping {
                    start: m.start,
                    end: m.end,
                    bias: m.start.wrapping_sub(vaddr),
                    pages: file.pages.map_or(0, |e| e.first),
                    kind: file.kind as u32,
                    first_page: file.first_page,
                    page_count: file.pages.map_or(0, |e| e.len),
                });
            }
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        let dropped = keep_mappings(&mut mappings);
        for key in &keys {
            if let Some(f) = self.files.get_mut(key) {
                f.users += 1;
            }
        }
        let unchanged = self
            .processes
            .get(&pid)
            .is_some_and(|old| old.loaded && old.mappings == mappings);
        let given = Given {
            files: keys,
            mappings,
            loaded: true,
            refused: false,
        };
        let old = self.processes.insert(pid, given);
        let was_refused = old.as_ref().is_some_and(|o| o.refused);
        if !unchanged {
            self.give(pid, dropped, was_refused);
        }
        // Only once the kernel has the new mappings: the old ones may
        // point into these files' rows.
        if let Some(old) = old {
            self.release_files(&old.files);
        }
    }

    /// Writes `pid`'s mappings (as last given) to the kernel.
    fn give(&mut self, pid: u32, dropped: usize, was_refused: bool) {
        // Counted when the mappings change, not at every look.
        self.stats.mappings_dropped += dropped as u64;
        let given = &self.processes[&pid];
        let mut value = ProcUnwind {
            nr: given.mappings.len() as u32,
            _pad: 0,
            mappings: [UnwindMapping::default(); UNWIND_MAX_MAPPINGS],
        };
        value.mappings[..given.mappings.len()].copy_from_slice(&given.mappings);
        let inserted = self.procs.insert(pid, value, 0);
        self.bump_epoch();
        if inserted.is_err() {
            // Tried again at the next look (once per process in the stats).
            if !was_refused {
                self.stats.processes_without_tables += 1;
            }
            if let Some(g) = self.processes.get_mut(&pid) {
                g.loaded = false;
                g.refused = true;
            }
        }
    }

    /// `pid` exec'd: the kernel dropped its mappings; the next
    /// [`Unwinder::update`] gives them again even if they look the same.
    pub fn invalidate(&mut self, pid: u32) {
        if let Some(g) = self.processes.get_mut(&pid) {
            g.loaded = false;
        }
    }

    /// `pid` is gone: its mappings go, and the tables of files nobody maps
    /// any more.
    pub fn forget(&mut self, pid: u32) {
        if self.procs.remove(&pid).is_ok() {
            self.bump_epoch();
        }
        if let Some(g) = self.processes.remove(&pid) {
            self.release_files(&g.files);
        }
    }

    pub fn stats(&self) -> UnwindStats {
        self.stats
    }

    /// Marks the mappings stack walks kept stale (after a change to
    /// `procs`). A write of an index within the array, which does not fail.
    fn bump_epoch(&mut self) {
        self.generation += 1;
        let _ = self.epoch.set(0, self.generation, 0);
    }

    fn release_files(&mut self, keys: &[FileKey]) {
        for key in keys {
            let Some(f) = self.files.get_mut(key) else {
                continue;
            };
            f.users = f.users.saturating_sub(1);
            if f.users > 0 {
                continue;
            }
            self.stats.files_dropped += 1;
            let f = self.files.remove(key).expect("present");
            if let Some(extent) = f.pages {
                self.pages.free.release(extent);
            }
            if let Some(extent) = f.rows {
                self.rows.free.release(extent);
            }
        }
    }

    /// The table of the file behind `m`, built and loaded the first time.
    fn file(&mut self, pid: u32, m: &target::Mapping, key: &FileKey) -> Option<&FileTable> {
        if let Entry::Vacant(e) = self.files.entry(key.clone()) {
            let path = target::mapped_file_path(pid, m)?;
            let table = File::open(&path)
                .ok()
                // SAFETY: a read-only private mapping; a file changed under
                // it gives a wrong table, never unsafety in memtrace (the
                // bytes are only parsed).
                .and_then(|f| unsafe { memmap2::Mmap::map(&f) }.ok())
                .and_then(|data| table::build(&data).ok())
                .unwrap_or_default();
            let mut file = FileTable {
                kind: UnwindKind::FramePointer,
                rows: None,
                pages: None,
                first_page: 0,
                segments: table.segments.clone(),
                frame_pointers: table.frame_pointers,
                users: 0,
            };
            let wanted = !(self.mode == Unwind::Auto && table.frame_pointers);
            if wanted && !table.rows.is_empty() {
                if let Some(rows) = self.rows.store(&table.rows) {
                    let (first_page, index) = page_index(&table.rows, rows);
                    match self.pages.store(&index) {
                        Some(pages) => {
                            file.rows = Some(rows);
                            file.pages = Some(pages);
                            file.first_page = first_page;
                            file.kind = UnwindKind::Table;
                        }
                        None => self.rows.free.release(rows),
                    }
                }
            }
            let s = &mut self.stats;
            match (file.rows, file.frame_pointers && !wanted) {
                (Some(_), _) => s.files_with_tables += 1,
                (None, true) => s.files_with_frame_pointers += 1,
                (None, false) => s.files_without_tables += 1,
            }
            s.rows = s.rows.max(self.rows.free.used());
            e.insert(file);
        }
        self.files.get(key)
    }
}

/// File offset of the entry point of the ELF program at `path` (None for a
/// script or anything else that is not one).
pub fn entry_offset(path: &std::path::Path) -> Option<u64> {
    use object::{Object, ObjectSegment};
    let file = File::open(path).ok()?;
    // SAFETY: a read-only private mapping, only parsed.
    let data = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    let elf = object::File::parse(&*data).ok()?;
    let entry = elf.entry();
    elf.segments().find_map(|s| {
        let (offset, size) = s.file_range();
        (entry >= s.address() && entry - s.address() < size).then(|| entry - s.address() + offset)
    })
}

/// The page index of a file's rows stored at `extent`: its first page and,
/// for each page from there to its last row's, the rows covering it (none
/// when only a gap does: the walker steps by frame pointer there anyway).
fn page_index(rows: &[UnwindRow], extent: Extent) -> (u32, Vec<UnwindPage>) {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return (0, Vec::new());
    };
    let (first_page, last_page) = (first.pc >> UNWIND_PAGE_SHIFT, last.pc >> UNWIND_PAGE_SHIFT);
    let index = (first_page..=last_page)
        .map(|page| {
            let start = page << UNWIND_PAGE_SHIFT;
            let end = start.saturating_add(1 << UNWIND_PAGE_SHIFT);
            // The row covering the page's start, then every row inside it.
            let from = rows.partition_point(|r| r.pc <= start).saturating_sub(1);
            let to = rows.partition_point(|r| r.pc < end);
            if to <= from || (to - from == 1 && rows[from].kind == tracer_common::row::NONE) {
                return UnwindPage::default();
            }
            UnwindPage {
                first: extent.first + from as u32,
                count: (to - from) as u32,
            }
        })
        .collect();
    (first_page, index)
}

/// The virtual address of file offset `offset` (where an executable
/// mapping starts) in a file's executable segments. The mapping starts at
/// the page holding the segment's first byte, which lld, unlike GNU ld,
/// does not place at a page boundary: the segment's offset is rounded down
/// before comparing.
fn table_vaddr(segments: &[(u64, u64, u64)], offset: u64) -> Option<u64> {
    segments
        .iter()
        .find(|&&(start, size, _)| offset >= start & !0xfff && offset < start + size.max(1))
        .map(|&(start, _, vaddr)| (vaddr + offset).wrapping_sub(start))
}

/// Sorts a process's mappings by address for the walker's binary search,
/// keeping at most [`UNWIND_MAX_MAPPINGS`]; returns how many were dropped.
/// Those of files that keep frame pointers go first (a frame outside every
/// mapping is stepped by frame pointer anyway), then the lowest addresses
/// but the first: libraries are mapped top-down, so those are the last
/// loaded, while the program (lowest) and the libraries it was linked with
/// — libc among them — stay.
fn keep_mappings(mappings: &mut Vec<UnwindMapping>) -> usize {
    mappings.sort_by_key(|m| m.start);
    let excess = mappings.len().saturating_sub(UNWIND_MAX_MAPPINGS);
    if excess > 0 {
        let first = mappings[0].start;
        let fp = |m: &UnwindMapping| m.kind == UnwindKind::FramePointer as u32;
        // Most expendable first.
        let mut order: Vec<UnwindMapping> = mappings.clone();
        order.sort_by_key(|m| (!fp(m), m.start == first, m.start));
        let dropped: Vec<u64> = order[..excess].iter().map(|m| m.start).collect();
        mappings.retain(|m| !dropped.contains(&m.start));
    }
    excess
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_rows_are_reused_and_merged() {
        let mut f = FreeList::new(100);
        let ext = |first, len| Extent { first, len };
        let (a, b, c) = (ext(0, 10), ext(10, 20), ext(30, 5));
        for e in [a, b, c] {
            assert_eq!(f.find(e.len), Some(e));
            f.take(e);
        }
        assert_eq!(f.used(), 35);
        assert_eq!(f.find(70), None);
        f.release(b);
        // First fit: the hole left by b.
        assert_eq!(f.find(15), Some(ext(10, 15)));
        f.release(a);
        f.release(c);
        assert_eq!(f, FreeList::new(100));
    }

    #[test]
    fn too_many_mappings_drop_frame_pointer_files_then_the_last_loaded() {
        let m = |start: u64, kind: UnwindKind| UnwindMapping {
            start,
            end: start + 0x1000,
            kind: kind as u32,
            ..UnwindMapping::default()
        };
        // The program lowest, then libraries downwards from libc (highest):
        // two of them keep frame pointers.
        let n = UNWIND_MAX_MAPPINGS as u64 + 3;
        let mut all: Vec<UnwindMapping> = (1..n)
            .map(|i| {
                let fp = i == 7 || i == 9;
                m(
                    0x7f00_0000_0000 + i * 0x10_0000,
                    match fp {
                        true => UnwindKind::FramePointer,
                        false => UnwindKind::Table,
                    },
                )
            })
            .collect();
        all.push(m(0x5555_0000_0000, UnwindKind::Table));
        all.reverse();
        let libc = 0x7f00_0000_0000 + (n - 1) * 0x10_0000;
        assert_eq!(keep_mappings(&mut all), 3);
        assert_eq!(all.len(), UNWIND_MAX_MAPPINGS);
        assert!(all.windows(2).all(|w| w[0].start < w[1].start));
        let kept = |start: u64| all.iter().any(|x| x.start == start);
        assert!(kept(0x5555_0000_0000) && kept(libc));
        // Both frame-pointer files and the lowest library went.
        assert!(!kept(0x7f00_0070_0000) && !kept(0x7f00_0090_0000));
        assert!(!kept(0x7f00_0010_0000) && kept(0x7f00_0020_0000));
        let mut few = vec![m(2, UnwindKind::Table), m(1, UnwindKind::FramePointer)];
        assert_eq!(keep_mappings(&mut few), 0);
        assert_eq!(few[0].start, 1);
    }

    #[test]
    fn page_index_points_each_page_at_the_rows_covering_it() {
        use tracer_common::row;
        let r = |pc: u32, kind: u8| UnwindRow {
            pc,
            kind,
            ..UnwindRow::default()
        };
        // A function at 0x1100..0x1200, a gap, one from 0x3ff0 over the
        // page boundary, then the end.
        let rows = [
            r(0x1100, row::CFA_RSP),
            r(0x1180, row::CFA_RBP),
            r(0x1200, row::NONE),
            r(0x3ff0, row::CFA_RSP),
            r(0x4010, row::NONE),
        ];
        let (first_page, index) = page_index(&rows, Extent { first: 100, len: 5 });
        assert_eq!(first_page, 1);
        let page = |first, count| UnwindPage { first, count };
        assert_eq!(
            index,
            vec![
                page(100, 3),
                // Only the gap's row covers page 2: none.
                page(0, 0),
                page(102, 2),
                page(103, 2),
            ]
        );
        assert_eq!(page_index(&[], Extent { first: 0, len: 0 }), (0, vec![]));
    }

    #[test]
    fn mapping_offsets_become_table_addresses() {
        // GNU ld: the executable segment starts on a page, at the same
        // offset and address.
        let gnu = [(0x1000, 0x5000, 0x1000)];
        assert_eq!(table_vaddr(&gnu, 0x1000), Some(0x1000));
        // lld: the segment starts mid-page (offset 0x13f30, address
        // 0x14f30); the mapping starts at the page holding it.
        let lld = [(0x13f30, 0x40000, 0x14f30)];
        assert_eq!(table_vaddr(&lld, 0x13000), Some(0x14000));
        assert_eq!(table_vaddr(&lld, 0x60000), None);
    }
}

//! JIT frames: names from the perf map a runtime writes for its generated
//! code (`/tmp/perf-PID.map`: `START SIZE NAME` per line, hexadecimal; Node
//! with `--perf-basic-prof`, JVM agents, LuaJIT, ...). Read through the
//! process's own root (a container's /tmp) under the pid its namespace
//! gave it; appended-to files are read incrementally at each refresh, so
//! names stay known after the process is gone (a file replaced or cut
//! short is read again from the start). The file is anyone's to create in
//! /tmp: it is used only if it is a regular file (never a FIFO or a
//! symlink, opened without blocking) owned by the process's user or root,
//! as perf requires. Bounded: at most [`MAX_ENTRIES`] names per process.
//!
//! A JIT reuses code space: a region named again later (V8 optimizing a
//! function into the space of older code) is named by the later line, the
//! way `perf report` reads the file. The regions are kept as disjoint
//! intervals, each later line painted over what it covers.

use crate::discover::target;
use std::{
    collections::{BTreeMap, HashMap},
    io::{Read, Seek, SeekFrom},
    path::PathBuf,
    sync::Arc,
};

/// Names kept per process (~100 bytes each).
pub const MAX_ENTRIES: usize = 200_000;
/// Bytes read per refresh at most (the rest at the next one).
const READ_CHUNK: u64 = 16 << 20;

/// Named code regions, disjoint: a region added later replaces whatever
/// part of older ones it covers.
#[derive(Default)]
struct Regions {
    /// start → (end, name), non-overlapping.
    by_start: BTreeMap<u64, (u64, Arc<str>)>,
}

impl Regions {
    /// Names [start, end) `name`, over any older names there.
    fn insert(&mut self, start: u64, end: u64, name: &str) {
        if start >= end {
            return;
        }
        // An older region starting before `start` and reaching into it
        // keeps its part before `start` (and after `end`, if it spans it).
        let before = self
            .by_start
            .range(..start)
            .next_back()
            .filter(|(_, (e, _))| *e > start)
            .map(|(&s, (e, n))| (s, *e, n.clone()));
        if let Some((s, e, n)) = before {
            self.by_start.insert(s, (start, n.clone()));
            if e > end {
                self.by_start.insert(end, (e, n));
            }
        }
        // Older regions starting inside [start, end): dropped, or cut to
        // their part after `end`.
        let inside: Vec<u64> = self.by_start.range(start..end).map(|(&s, _)| s).collect();
        for s in inside {
            if let Some((e, n)) = self.by_start.remove(&s) {
                if e > end {
                    self.by_start.insert(end, (e, n));
                }
            }
        }
        self.by_start.insert(start, (end, Arc::from(name)));
    }

    /// The name of the region containing `addr`.
    fn lookup(&self, addr: u64) -> Option<&str> {
        let (_, (end, name)) = self.by_start.range(..=addr).next_back()?;
        (addr < *end).then_some(&**name)
    }

    fn len(&self) -> usize {
        self.by_start.len()
    }

    fn clear(&mut self) {
        self.by_start.clear();
    }
}

/// One process's perf map: what was read of it so far.
#[derive(Default)]
struct PerfMap {
    /// The named regions read so far.
    entries: Regions,
    /// Bytes of the file consumed (whole lines only).
    read: u64,
    /// Where the file is (found once).
    path: Option<PathBuf>,
    /// The file name as the process wrote it, for the frame's module.
    name: String,
    /// The file read: (device, inode).
    file: Option<(u64, u64)>,
    /// The process's user: the file must be its or root's.
    uid: u32,
}

#[derive(Default)]
pub struct PerfMaps {
    maps: HashMap<u32, PerfMap>,
}

/// Parses whole lines of a perf map into `out`; returns the bytes consumed
/// (up to the last newline).
pub fn parse(text: &[u8], out: &mut Vec<(u64, u64, String)>) -> usize {
    let Some(end) = text.iter().rposition(|&b| b == b'\n') else {
        return 0;
    };
    for line in String::from_utf8_lossy(&text[..end]).lines() {
        let mut parts = line.splitn(3, ' ');
        let (Some(start), Some(size), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        if let (Some(start), Some(size)) = (hex(start), hex(size)) {
            out.push((start, start.saturating_add(size), name.trim().to_string()));
        }
    }
    end + 1
}

impl PerfMaps {
    /// Reads what `pid` appended to its perf map since the last call.
    pub fn refresh(&mut self, pid: u32) {
        use std::os::unix::fs::MetadataExt;
        let map = self.maps.entry(pid).or_default();
        if map.path.is_none() {
            let Some((ns, uid)) = target::namespace_pid_and_uid(pid) else {
                return;
            };
            map.name = format!("/tmp/perf-{ns}.map");
            map.path = Some(PathBuf::from(format!("/proc/{pid}/root/tmp/perf-{ns}.map")));
            map.uid = uid;
        }
        let Some(path) = &map.path else { return };
        let Some((mut file, meta)) = target::open_checked(path, map.uid) else {
            return;
        };
        let id = (meta.dev(), meta.ino());
        let len = meta.len();
        if map.file != Some(id) || len < map.read {
            // Another file, or rewritten: start over.
            map.entries.clear();
            map.read = 0;
            map.file = Some(id);
        }
        if len <= map.read || map.entries.len() >= MAX_ENTRIES {
            return;
        }
        if file.seek(SeekFrom::Start(map.read)).is_err() {
            return;
        }
        let mut text = Vec::new();
        if file
            .take((len - map.read).min(READ_CHUNK))
            .read_to_end(&mut text)
            .is_err()
        {
            return;
        }
        let mut lines = Vec::new();
        map.read += parse(&text, &mut lines) as u64;
        // In file order: code space is reused, the later line wins.
        for (start, end, name) in lines {
            if map.entries.len() >= MAX_ENTRIES {
                break;
            }
            map.entries.insert(start, end, &name);
        }
    }

    /// The name of the generated code at `addr` in `pid`, and the perf map
    /// file that named it.
    pub fn lookup(&self, pid: u32, addr: u64) -> Option<(String, String)> {
        let map = self.maps.get(&pid)?;
        let name = map.entries.lookup(addr)?;
        Some((name.to_string(), map.name.clone()))
    }

    pub fn forget(&mut self, pid: u32) {
        self.maps.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_of_the_user_or_root() {
        let dir = std::env::temp_dir().join(format!("memtrace-perfmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo.map");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(
            target::open_checked(&fifo, 0).is_none(),
            "a FIFO never blocks us"
        );
        let plain = dir.join("plain.map");
        std::fs::write(&plain, "1000 10 f\n").unwrap();
        assert!(target::open_checked(&plain, 4242).is_some(), "root's file");
        let link = dir.join("link.map");
        std::os::unix::fs::symlink(&plain, &link).unwrap();
        assert!(
            target::open_checked(&link, 0).is_none(),
            "never through a symlink"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parses_whole_lines_and_looks_up() {
        let mut entries = Vec::new();
        let text = b"7f0000001000 100 LazyCompile:*rememberRequest /app/cache.js:13\n\
                     7f0000002000 0x40 Builtin:ArgumentsAdaptorTrampoline\n\
                     7f00000030";
        let used = parse(text, &mut entries);
        assert_eq!(used, text.len() - "7f00000030".len());
        assert_eq!(entries.len(), 2);
        let mut maps = PerfMaps::default();
        let mut regions = Regions::default();
        for (start, end, name) in entries {
            regions.insert(start, end, &name);
        }
        maps.maps.insert(
            1,
            PerfMap {
                entries: regions,
                name: "/tmp/perf-1.map".into(),
                ..PerfMap::default()
            },
        );
        let (name, file) = maps.lookup(1, 0x7f00_0000_1080).unwrap();
        assert_eq!(name, "LazyCompile:*rememberRequest /app/cache.js:13");
        assert_eq!(file, "/tmp/perf-1.map");
        assert!(maps.lookup(1, 0x7f00_0000_1100).is_none());
        assert!(maps.lookup(1, 0x7f00_0000_2010).is_some());
        assert!(maps.lookup(2, 0x7f00_0000_2010).is_none());
    }

    /// Node's case (issue 21): an address covered by an older, wider entry
    /// and by a newer one; the newer names it, wherever the two start.
    #[test]
    fn later_entries_win() {
        let dir =
            std::env::temp_dir().join(format!("memtrace-perfmap-later-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("perf.map");
        // The older entry starts after the newer one: sorting by start and
        // taking the latest-starting region picked the older.
        std::fs::write(
            &path,
            "7f0000001100 1000 JS:~ node:internal/streams/writable:1:1\n\
             7f0000001000 400 JS:*rememberRequest /tmp/ux/nodeapp.js:4:25\n\
             7f0000002000 100 JS:~ old\n\
             7f0000002000 100 JS:* new\n\
             7f0000003000 1000 JS:~ wide\n\
             7f0000003400 100 JS:* narrow\n",
        )
        .unwrap();
        let mut maps = PerfMaps::default();
        maps.maps.insert(
            1,
            PerfMap {
                path: Some(path),
                name: "/tmp/perf-1.map".into(),
                uid: 0,
                ..PerfMap::default()
            },
        );
        maps.refresh(1);
        let name = |addr: u64| maps.lookup(1, addr).map(|(n, _)| n);
        let remember = Some("JS:*rememberRequest /tmp/ux/nodeapp.js:4:25".to_string());
        assert_eq!(name(0x7f00_0000_1200), remember);
        assert_eq!(name(0x7f00_0000_1000), remember);
        assert_eq!(name(0x7f00_0000_13ff), remember);
        // Past the newer entry, the older one still names its code.
        assert_eq!(
            name(0x7f00_0000_1400).as_deref(),
            Some("JS:~ node:internal/streams/writable:1:1")
        );
        assert_eq!(name(0x7f00_0000_2010).as_deref(), Some("JS:* new"));
        // A narrow newer entry inside a wide older one: the older keeps
        // both of its ends.
        assert_eq!(name(0x7f00_0000_3010).as_deref(), Some("JS:~ wide"));
        assert_eq!(name(0x7f00_0000_3410).as_deref(), Some("JS:* narrow"));
        assert_eq!(name(0x7f00_0000_3f00).as_deref(), Some("JS:~ wide"));
        assert_eq!(name(0x7f00_0000_4000), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

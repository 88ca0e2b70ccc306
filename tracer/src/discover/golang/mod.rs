//! Go programs, read from outside without stopping them or probing them:
//! which Go built the executable (its build info), where the runtime's
//! heap profile and goroutine list are (its symbol table), the layouts of
//! what is read there (`layout`: DWARF, else a checked table per version),
//! one read of the heap profile's buckets (`heap`) and one of the
//! goroutine list (`goroutines`), through `/proc/PID/mem`. The reads race
//! with the program by nature: what does not parse is skipped and
//! counted, never trusted.
//!
//! Nothing is written to the process, except the one word
//! [`GoProcess::enable_heap_profile`] sets when the user asks
//! (`--go-enable-heap-profile`).

pub mod goroutines;
pub mod heap;
pub mod layout;

use std::{fs::File, path::Path};

use anyhow::{bail, Context, Result};
use object::{Object, ObjectSection, ObjectSymbol};

use crate::discover::{
    image,
    memory::Memory,
    target::{self, Mapping},
};
use layout::{Layout, Source};

/// The sampling rate `runtime.MemProfileRate` starts with (512 KiB), what
/// `--go-enable-heap-profile` sets.
pub const DEFAULT_PROFILE_RATE: u64 = 512 * 1024;

/// An attached Go process.
pub struct GoProcess {
    pub pid: u32,
    /// "go1.19.8", from the build info.
    pub version: String,
    pub layout: Layout,
    pub source: Source,
    vars: Vars,
    /// `runtime.waitReasonStrings`, read once.
    pub wait_reasons: Vec<String>,
    mem: Memory,
    /// The profile's buckets as walked so far.
    buckets: heap::List,
}

/// The runtime's variables read, at their process addresses.
struct Vars {
    mbuckets: u64,
    mem_profile_rate: u64,
    disable_memory_profiling: Option<u64>,
    allgs: u64,
    allglen: u64,
    /// `runtime.mProfCycle`.
    mprof_cycle: Option<u64>,
    /// `runtime..inittask`: its first word is 2 once the runtime package's
    /// variables are initialized (`MemProfileRate` among them).
    init_task: Option<u64>,
}

/// Whether an ELF file was built by Go.
pub fn is_go(obj: &object::File) -> bool {
    [".go.buildinfo", ".gopclntab", ".note.go.buildid"]
        .iter()
        .any(|name| obj.section_by_name(name).is_some())
}

/// The Go version in a binary's build info ("go1.19.8"): the
/// `.go.buildinfo` section of Go 1.18 and later holds it inline.
pub fn build_version(obj: &object::File) -> Option<String> {
    let data = obj.section_by_name(".go.buildinfo")?.data().ok()?;
    if data.get(..14)? != b"\xff Go buildinf:" {
        return None;
    }
    // Flag 2: strings inline (Go 1.18+), as uvarint length then bytes.
    if data.get(15)? & 2 == 0 {
        return None;
    }
    let mut at = 32;
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let b = *data.get(at)?;
        at += 1;
        len |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
    let v = std::str::from_utf8(data.get(at..at + len)?).ok()?;
    v.starts_with("go").then(|| v.to_string())
}

/// The minor version of "go1.19.8" (19); development builds
/// ("devel go1.24-…") are read by the version they name.
pub fn minor_of(version: &str) -> Option<u32> {
    let rest = &version[version.find("go1.")? + 4..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl GoProcess {
    /// Reads `pid`'s executable (its build info, symbols and layouts) and
    /// opens its memory. One line of why not when it is not a Go program
    /// memtrace reads.
    pub fn attach(pid: u32) -> Result<GoProcess> {
        let maps = target::read_maps(pid)?;
        let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
            .with_context(|| format!("pid {pid}: reading its executable's path"))?;
        let exe = exe.to_string_lossy();
        let exe = exe.trim_end_matches(" (deleted)");
        let holder: &Mapping = maps
            .iter()
            .find(|m| m.is_file() && m.path.as_deref() == Some(exe))
            .with_context(|| format!("pid {pid}: its executable is not mapped"))?;
        let path = target::mapped_file_path(pid, holder)
            .with_context(|| format!("pid {pid}: no path to {exe}"))?;
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: mapped read-only and private; a file truncated under us
        // can fault, as with every reader of mapped files.
        let data = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("mapping {}", path.display()))?;
        let obj = object::File::parse(&*data).with_context(|| format!("{exe}: not an ELF file"))?;
        let name = Path::new(exe)
            .file_name()
            .map_or_else(|| exe.to_string(), |n| n.to_string_lossy().into_owned());
        if !is_go(&obj) {
            bail!("pid {pid} ({name}) is not a Go program");
        }
        let version = build_version(&obj).with_context(|| {
            format!(
                "pid {pid} ({name}): no Go version in its build info (Go 1.{} or later is read)",
                layout::OLDEST_MINOR
            )
        })?;
        let minor = minor_of(&version)
            .with_context(|| format!("pid {pid} ({name}): unreadable Go version {version:?}"))?;
        if minor < layout::OLDEST_MINOR {
            bail!(
                "pid {pid} ({name}) was built by {version}: Go 1.{} or later is read",
                layout::OLDEST_MINOR
            );
        }
        let wanted = [
            "runtime.mbuckets",
            "runtime.MemProfileRate",
            "runtime.disableMemoryProfiling",
            "runtime.allgs",
            "runtime.allglen",
            "runtime.waitReasonStrings",
            "runtime..inittask",
            "runtime.mProfCycle",
        ];
        let symbols = image::symbols(&obj, &wanted);
        if symbols.is_empty() {
            bail!("pid {pid} ({name}): {version} binary without a symbol table (built with -ldflags=-s): its runtime's variables cannot be found");
        }
        let bias = image::load_bias(&obj, &maps, holder)
            .with_context(|| format!("pid {pid}: where {name} is loaded"))?;
        let at = |s: &str| symbols.get(s).map(|&v| v.wrapping_add(bias));
        let need = |s: &str| {
            at(s).with_context(|| format!("pid {pid} ({name}, {version}): no {s} symbol"))
        };
        let (layout, source) =
            Layout::of(&obj, minor).with_context(|| format!("pid {pid} ({name}, {version})"))?;
        let vars = Vars {
            mbuckets: need("runtime.mbuckets")?,
            mem_profile_rate: need("runtime.MemProfileRate")?,
            disable_memory_profiling: at("runtime.disableMemoryProfiling"),
            allgs: need("runtime.allgs")?,
            allglen: need("runtime.allglen")?,
            init_task: at("runtime..inittask"),
            mprof_cycle: at("runtime.mProfCycle"),
        };
        let mem = Memory::open(pid)?;
        let reasons = obj
            .symbols()
            .find(|s| s.name() == Ok("runtime.waitReasonStrings"))
            .map(|s| (s.address().wrapping_add(bias), s.size() / 16));
        let wait_reasons = match reasons {
            Some((addr, n)) => goroutines::read_strings(&mem, addr, n),
            None => Vec::new(),
        };
        Ok(GoProcess {
            pid,
            version,
            layout,
            source,
            vars,
            wait_reasons,
            mem,
            buckets: heap::List::default(),
        })
    }

    /// Whether the runtime package is initialized (before that,
    /// `MemProfileRate` is not yet what the program runs with): its init
    /// task done, or, without that symbol, a goroutine made.
    pub fn initialized(&self) -> bool {
        match self.vars.init_task {
            Some(task) => self
                .mem
                .u64(task)
                .is_some_and(|state| state & 0xffff_ffff == 2),
            None => self.mem.u64(self.vars.allglen).is_some_and(|n| n > 0),
        }
    }

    /// `runtime.MemProfileRate` now (None: unreadable).
    pub fn profile_rate(&self) -> Option<u64> {
        self.mem.u64(self.vars.mem_profile_rate)
    }

    /// Whether the linker switched memory profiling off (the program never
    /// references `runtime.MemProfile`): the runtime then set the rate to 0
    /// at its start.
    pub fn profiling_disabled_by_linker(&self) -> bool {
        self.vars
            .disable_memory_profiling
            .and_then(|addr| {
                let mut b = [0u8; 1];
                self.mem.read(addr, &mut b).map(|_| b[0] != 0)
            })
            .unwrap_or(false)
    }

    /// Sets `runtime.MemProfileRate` to [`DEFAULT_PROFILE_RATE`]: one word
    /// written (what the program could do itself); the runtime samples
    /// from its next allocations on.
    pub fn enable_heap_profile(&self) -> Result<()> {
        crate::discover::memory::write_u64(
            self.pid,
            self.vars.mem_profile_rate,
            DEFAULT_PROFILE_RATE,
        )
    }

    /// One read of the heap profile (see [`heap::read`]); `stack_of`
    /// says which buckets' stacks are wanted.
    pub fn heap(&mut self, stack_of: impl FnMut(u64, &heap::Cycle) -> bool) -> heap::Profile {
        let cycle = self.vars.mprof_cycle.and_then(|a| self.mem.u32(a));
        heap::read(
            &self.mem,
            &self.layout,
            self.vars.mbuckets,
            cycle,
            &mut self.buckets,
            stack_of,
        )
    }

    /// One read of the goroutine list (see [`goroutines::read`]).
    pub fn goroutines(&self) -> goroutines::List {
        goroutines::read(&self.mem, &self.layout, self.vars.allgs, self.vars.allglen)
    }

    /// What a goroutine's status and wait reason say it is doing.
    pub fn state(&self, status: u32, wait_reason: u8) -> String {
        goroutines::state(status, wait_reason, &self.wait_reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minors() {
        assert_eq!(minor_of("go1.19.8"), Some(19));
        assert_eq!(minor_of("go1.25.5"), Some(25));
        assert_eq!(minor_of("go1.21rc2"), Some(21));
        assert_eq!(minor_of("devel go1.24-abcdef Tue"), Some(24));
        assert_eq!(minor_of("gccgo"), None);
    }
}

//! CPython processes, read from outside without stopping them: which
//! interpreter a process runs and where its runtime is (`runtime`), the
//! offsets of what a frame walk reads, per minor version 3.8–3.13
//! (`offsets`), reading its memory (`memory`), and one walk of every
//! thread's Python stack (`walk`). [`Python::attach`] checks the offsets
//! against the running process before anything trusts them: a table that
//! does not fit the build is a one-line "unsupported build" error, never
//! frames made of garbage.
//!
//! The kernel-side walk at each allocation mirrors [`Python::walk`]; this
//! side turns its code objects into names and lines
//! (`symbolize::python`).

pub mod memory;
pub mod offsets;
pub mod runtime;
pub mod walk;

use anyhow::Result;

use memory::Memory;
use offsets::Offsets;
use runtime::Runtime;

/// An attached CPython process.
pub struct Python {
    pub runtime: Runtime,
    pub offsets: Offsets,
    pub mem: Memory,
    /// What the attach check found.
    pub check: Check,
}

/// What the check of the offsets against the running process found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// The thread list and at least one frame chain read as they must:
    /// this many thread states, this many frames.
    Readable { threads: usize, frames: usize },
    /// Nothing to check yet (the runtime is not initialized, or no thread
    /// runs Python code): the reason.
    NotYet(String),
}

/// How many times the check walks before it calls a build unsupported:
/// the target runs while it is read, so one walk can catch a thread
/// between two writes; a wrong table fails every time.
const CHECK_ATTEMPTS: usize = 3;

impl Python {
    /// Finds the interpreter `pid` runs, its offsets, and checks them.
    pub fn attach(pid: u32) -> Result<Python> {
        Python::attach_as(pid, None)
    }

    /// [`Python::attach`], reading the process with the offsets of
    /// 3.`minor` whatever it runs (`Some`): how the tests show that the
    /// check refuses a table that does not fit.
    pub fn attach_as(pid: u32, minor: Option<u32>) -> Result<Python> {
        let mem = Memory::open(pid)?;
        let runtime = runtime::find(pid, &mem)?;
        let offsets = match minor.unwrap_or(runtime.minor()) {
            13 => {
                let raw = mem
                    .bytes(runtime.runtime, offsets::DEBUG_OFFSETS_SIZE_313 as u64)
                    .ok_or_else(|| unsupported(&runtime, "_PyRuntime is not readable"))?;
                offsets::from_debug_offsets(&raw, runtime.version)
                    .map_err(|e| unsupported(&runtime, &format!("{e}")))?
            }
            minor => offsets::for_version(minor)?,
        };
        let mut python = Python {
            runtime,
            offsets,
            mem,
            check: Check::NotYet(String::new()),
        };
        python.recheck()?;
        Ok(python)
    }

    /// Checks the offsets against the process as it is now (again: after
    /// [`Check::NotYet`], once the runtime runs code).
    pub fn recheck(&mut self) -> Result<&Check> {
        let mut failure = String::new();
        for _ in 0..CHECK_ATTEMPTS {
            match walk::check(self) {
                Ok(check) => {
                    self.check = check;
                    return Ok(&self.check);
                }
                Err(why) => failure = why,
            }
        }
        Err(unsupported(&self.runtime, &failure))
    }

    /// `pid N: CPython 3.11.7 (libpython3.11.so.1.0), frames readable`.
    pub fn describe(&self) -> String {
        let state = match &self.check {
            Check::Readable { .. } => "frames readable".to_string(),
            Check::NotYet(why) => format!("frames not checked yet ({why})"),
        };
        format!(
            "pid {}: {}, {state}",
            self.runtime.pid,
            self.runtime.describe()
        )
    }

    /// A Python `str` at `addr`, if it reads as one (a compact string, the
    /// kind every code object's names are).
    pub fn read_str(&self, addr: u64) -> Option<String> {
        let o = &self.offsets;
        let head = self.mem.bytes(addr, o.unicode_compact_size)?;
        if memory::u64_at(&head, offsets::OB_TYPE)? != self.runtime.unicode_type {
            return None;
        }
        let state = memory::u32_at(&head, o.unicode_state)?;
        let (kind, compact, ascii) = ((state >> 2) & 7, (state >> 5) & 1, (state >> 6) & 1);
        let len = memory::u64_at(&head, o.unicode_length)?;
        if compact == 0 || !matches!(kind, 1 | 2 | 4) || len > 1 << 16 {
            return None;
        }
        let data = match ascii {
            1 => o.unicode_ascii_size,
            _ => o.unicode_compact_size,
        };
        let raw = self.mem.bytes(addr + data, len * u64::from(kind))?;
        match (kind, ascii) {
            (1, 1) => String::from_utf8(raw).ok(),
            (1, _) => Some(raw.iter().map(|&b| char::from(b)).collect()),
            (2, _) => Some(
                raw.chunks_exact(2)
                    .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                    .map(|c| char::from_u32(c).unwrap_or('\u{fffd}'))
                    .collect(),
            ),
            _ => Some(
                raw.chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .map(|c| char::from_u32(c).unwrap_or('\u{fffd}'))
                    .collect(),
            ),
        }
    }

    /// The contents of a Python `bytes` object at `addr`, if it reads as
    /// one.
    pub fn read_bytes(&self, addr: u64) -> Option<Vec<u8>> {
        let head = self.mem.bytes(addr, offsets::BYTES_DATA)?;
        if memory::u64_at(&head, offsets::OB_TYPE)? != self.runtime.bytes_type {
            return None;
        }
        let len = memory::u64_at(&head, offsets::OB_SIZE)?;
        self.mem.bytes(addr + offsets::BYTES_DATA, len)
    }
}

/// The one-line error of a build whose layout is not what memtrace expects.
fn unsupported(runtime: &Runtime, why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "pid {}: unsupported CPython build ({}): {why}",
        runtime.pid,
        runtime.describe()
    )
}

/// For `--verbose`: one line on the CPython a target runs, `pid N: CPython
/// 3.11.7 (libpython3.11.so.1.0), frames readable`, or why its frames
/// cannot be read; None for a process that maps no libpython and whose
/// executable is not named python*.
pub fn verbose_line(pid: u32) -> Option<String> {
    let maps = crate::discover::target::read_maps(pid).ok()?;
    let named = |p: &str, prefix: &str| {
        std::path::Path::new(p)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
    };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let python = maps
        .iter()
        .filter_map(|m| m.path.as_deref())
        .any(|p| named(p, "libpython"))
        || named(&exe.to_string_lossy(), "python");
    if !python {
        return None;
    }
    Some(match Python::attach(pid) {
        Ok(python) => python.describe(),
        Err(e) => format!("{e:#}"),
    })
}

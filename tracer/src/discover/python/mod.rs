//! CPython processes, read from outside without stopping them: which
//! interpreter a process runs and where its runtime is (`runtime`), the
//! offsets of what a frame walk reads, per minor version 3.8–3.13
//! (`offsets`), and one walk of every
//! thread's Python stack (`walk`). [`Python::attach`] checks the offsets
//! against the running process before anything trusts them: a table that
//! does not fit the build is a one-line "unsupported build" error, never
//! frames made of garbage.
//!
//! The kernel-side walk at each allocation mirrors [`Python::walk`]; this
//! side turns its code objects into names and lines
//! (`symbolize::python`).

pub mod offsets;
pub mod runtime;
pub mod walk;

use anyhow::Result;
use tracer_common::{PyProc, PY_KEY_PTHREAD, PY_KEY_TID, PY_NONE, PY_SPAN};

use super::memory::{self, Memory};
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
    /// The thread list reads as it must, and one of its thread states is
    /// a thread of the process, but no thread runs Python code: the frame
    /// fields are not checked yet (an interpreter about to run its main
    /// program).
    ThreadsOnly,
    /// Nothing to check yet (the runtime is not initialized): the reason.
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
            Check::ThreadsOnly => "threads readable, frames not checked yet".to_string(),
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

impl Python {
    /// How the kernel reads this process's frames at each allocation (see
    /// `tracer_common::PyProc`), once the check found them readable:
    /// the main interpreter's thread list, and where each field is. Before
    /// 3.11 a thread state is known by `pthread_self()`, which the kernel
    /// reads as the thread's fs base (`fs_base_known`: the kernel's BTF
    /// said where it is). Also with only its threads checked (the caller
    /// has the frames checked later). Err: why the kernel cannot walk it.
    pub fn kernel_view(&self, fs_base_known: bool) -> Result<PyProc> {
        let o = &self.offsets;
        if !matches!(self.check, Check::Readable { .. } | Check::ThreadsOnly) {
            anyhow::bail!("its frames were not checked yet");
        }
        let main = self
            .mem
            .u64(self.runtime.runtime + o.runtime_interpreters_head + offsets::INTERPRETERS_MAIN)
            .filter(|&m| m != 0)
            .ok_or_else(|| anyhow::anyhow!("its main interpreter is not readable"))?;
        let (key, key_kind) = match o.tstate_native_thread_id {
            Some(at) => (at, PY_KEY_TID),
            None if fs_base_known => (o.tstate_thread_id, PY_KEY_PTHREAD),
            None => anyhow::bail!(
                "the kernel's BTF does not say where a thread's fs base is, which CPython 3.{} \
                 threads are known by",
                o.minor
            ),
        };
        let narrow = |v: u64| u32::try_from(v).unwrap_or(PY_NONE);
        let int_instr = o.instr != offsets::Instr::Pointer;
        // 3.11 marks the first frame of each run of the evaluation loop
        // (`is_entry`, the byte before `owner`); 3.12+ pushes an entry
        // frame the C stack owns before it (`owner` tells it).
        let (owner, is_entry) = match (o.minor, o.frame_owner) {
            (11, Some(owner)) => (PY_NONE, narrow(owner - 1)),
            (12.., Some(owner)) => (narrow(owner), PY_NONE),
            _ => (PY_NONE, PY_NONE),
        };
        let tstate_span = [o.tstate_next, o.tstate_interp, key, o.tstate_frame]
            .into_iter()
            .max()
            .unwrap_or(0)
            + 8;
        let instr_end = o.frame_instr + if int_instr { 4 } else { 8 };
        let frame_span = [
            o.frame_previous + 8,
            o.frame_code + 8,
            instr_end,
            o.frame_owner.map_or(0, |at| at + 1),
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
        .next_multiple_of(8);
        if tstate_span > PY_SPAN as u64 || frame_span > PY_SPAN as u64 {
            anyhow::bail!("its thread states or frames are larger than the kernel reads");
        }
        Ok(PyProc {
            threads_head: main + o.interp_threads_head,
            interp: main,
            tstate_next: narrow(o.tstate_next),
            tstate_interp: narrow(o.tstate_interp),
            tstate_key: narrow(key),
            key_kind,
            tstate_frame: narrow(o.tstate_frame),
            cframe_current_frame: o.cframe_current_frame.map_or(PY_NONE, narrow),
            frame_previous: narrow(o.frame_previous),
            frame_code: narrow(o.frame_code),
            frame_instr: narrow(o.frame_instr),
            frame_owner: owner,
            frame_is_entry: is_entry,
            instr_is_int: int_instr as u32,
            tstate_span: tstate_span as u32,
            frame_span: frame_span as u32,
        })
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
    if !runs_python(pid) {
        return None;
    }
    Some(match Python::attach(pid) {
        Ok(python) => python.describe(),
        Err(e) => format!("{e:#}"),
    })
}

/// Whether `pid` looks like a CPython process: it maps a libpython, or its
/// executable is named python*.
pub fn runs_python(pid: u32) -> bool {
    let Ok(maps) = crate::discover::target::read_maps(pid) else {
        return false;
    };
    let named = |p: &str, prefix: &str| {
        std::path::Path::new(p)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
    };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    maps.iter()
        .filter_map(|m| m.path.as_deref())
        .any(|p| named(p, "libpython"))
        || named(&exe.to_string_lossy(), "python")
}

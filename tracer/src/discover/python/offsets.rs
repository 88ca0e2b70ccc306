//! Where CPython keeps what a frame walk reads, per minor version: the
//! runtime's interpreter list, each interpreter's thread states, each
//! thread's current frame, each frame's caller, code object and
//! instruction, and each code object's names, first line and line table.
//!
//! 3.13 publishes these in `_Py_DebugOffsets`, at the start of
//! `_PyRuntime` ([`from_debug_offsets`], checked by its cookie and
//! version). For 3.8–3.12 they come from a table per minor version
//! ([`for_version`]), laid out after CPython's own headers for x86-64 and
//! aarch64 (LP64): `Include/internal/pycore_runtime.h` and
//! `pycore_interp.h` (runtime, interpreter), `Include/cpython/pystate.h`
//! (thread state, `_PyCFrame`), `Include/cpython/frameobject.h` (3.8–3.10
//! `PyFrameObject`), `Include/internal/pycore_frame.h` (3.11+
//! `_PyInterpreterFrame`), `Include/cpython/code.h` and
//! `Include/cpython/unicodeobject.h`. A table is a claim about a build; the
//! attach check (`python::attach`) tests it against the running process.

use anyhow::{bail, Result};

use crate::discover::memory::u64_at;

/// Which frame structure the thread state points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameLayout {
    /// `PyFrameObject` (3.8–3.10): a Python object with its own type.
    Object,
    /// `_PyInterpreterFrame` (3.11+), in the thread's data stack or a
    /// generator.
    Interpreter,
}

/// What a frame's instruction field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instr {
    /// `f_lasti`, an `int`: the byte offset of the last instruction
    /// (3.8–3.9).
    LastiBytes,
    /// `f_lasti`, an `int` counting 2-byte code units (3.10).
    LastiUnits,
    /// A pointer into the code object's `co_code_adaptive` (3.11–3.12
    /// `prev_instr`, 3.13 `instr_ptr`).
    Pointer,
}

/// How a code object maps bytecode offsets to lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineTable {
    /// `co_lnotab` (3.8–3.9): (byte increment, signed line increment) pairs.
    Lnotab,
    /// `co_linetable` of 3.10: (byte length, signed line delta) pairs,
    /// -128 for "no line".
    Lines310,
    /// `co_linetable` of 3.11+: the location table, in code units.
    Locations,
}

/// Everything the walk reads, as byte offsets into each structure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub minor: u32,
    /// `_PyRuntime.initialized`, an `int`: 1 once `Py_Initialize` is done.
    pub runtime_initialized: u64,
    /// `_PyRuntime.interpreters.head`; `interpreters.main` follows it
    /// ([`INTERPRETERS_MAIN`]).
    pub runtime_interpreters_head: u64,
    /// `_PyRuntime.main_thread` (the main thread's `pthread_self()`);
    /// 3.8–3.10 check their thread list against it.
    pub runtime_main_thread: Option<u64>,
    /// `PyInterpreterState.next`.
    pub interp_next: u64,
    /// `tstate_head` (3.8–3.10), `threads.head` (3.11+).
    pub interp_threads_head: u64,
    /// `PyThreadState.next`.
    pub tstate_next: u64,
    /// `PyThreadState.interp`, which points back at the interpreter.
    pub tstate_interp: u64,
    /// `frame` (3.8–3.10), `cframe` (3.11–3.12), `current_frame` (3.13).
    pub tstate_frame: u64,
    /// 3.11–3.12: `_PyCFrame.current_frame`, read through `tstate_frame`.
    pub cframe_current_frame: Option<u64>,
    /// `PyThreadState.thread_id` (`pthread_self()`).
    pub tstate_thread_id: u64,
    /// `PyThreadState.native_thread_id` (the kernel's thread id, 3.11+).
    pub tstate_native_thread_id: Option<u64>,
    pub frame: FrameLayout,
    /// `f_back` (3.8–3.10), `previous` (3.11+).
    pub frame_previous: u64,
    /// `f_code` (3.8–3.12), `f_executable` (3.13).
    pub frame_code: u64,
    /// `f_lasti`, `prev_instr` or `instr_ptr`.
    pub frame_instr: u64,
    /// `owner` (one byte, 3.11+).
    pub frame_owner: Option<u64>,
    pub instr: Instr,
    pub code_filename: u64,
    /// `co_qualname` (3.11+), `co_name` before (there is no qualified name).
    pub code_name: u64,
    /// `co_firstlineno`, an `int`.
    pub code_firstlineno: u64,
    /// `co_lnotab` (3.8–3.9), `co_linetable` (3.10+): a bytes object.
    pub code_linetable: u64,
    /// `co_code` (3.8–3.10): the bytecode, a bytes object.
    pub code_code: Option<u64>,
    /// `co_code_adaptive` (3.11+): where the instructions start, inside
    /// the code object (whose `ob_size` counts them, in 2-byte units).
    pub code_adaptive: Option<u64>,
    pub line_table: LineTable,
    /// `PyASCIIObject.length`, `state` (a 32-bit bit field: interned:2,
    /// kind:3, compact:1, ascii:1), and the sizes of `PyASCIIObject` and
    /// `PyCompactUnicodeObject`, after which a compact string's characters
    /// start.
    pub unicode_length: u64,
    pub unicode_state: u64,
    pub unicode_ascii_size: u64,
    pub unicode_compact_size: u64,
}

/// `_PyRuntime.interpreters.main`, after `head` (`struct pyinterpreters`:
/// mutex, head, main, next_id in every version 3.8–3.13).
pub const INTERPRETERS_MAIN: u64 = 8;
/// `PyObject.ob_type` (no free-threaded build is supported).
pub const OB_TYPE: u64 = 8;
/// `PyVarObject.ob_size`, `PyBytesObject.ob_size`.
pub const OB_SIZE: u64 = 16;
/// `PyBytesObject.ob_sval`.
pub const BYTES_DATA: u64 = 32;
/// `_PyInterpreterFrame.owner` of the entry frames the C stack owns
/// (`FRAME_OWNED_BY_CSTACK`, 3.12+): not Python code.
pub const FRAME_OWNED_BY_CSTACK: u8 = 3;

impl Offsets {
    /// Bytes to read of a thread state to have every field the walk uses.
    pub fn tstate_span(&self) -> u64 {
        [
            self.tstate_next,
            self.tstate_interp,
            self.tstate_frame,
            self.tstate_thread_id,
            self.tstate_native_thread_id.unwrap_or(0),
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
            + 8
    }

    /// Bytes to read of a frame.
    pub fn frame_span(&self) -> u64 {
        [
            self.frame_previous,
            self.frame_code,
            self.frame_instr,
            self.frame_owner.unwrap_or(0),
            OB_TYPE,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
            + 8
    }

    /// Bytes to read of a code object's header.
    pub fn code_span(&self) -> u64 {
        [
            OB_SIZE,
            self.code_code.unwrap_or(0),
            self.code_filename,
            self.code_name,
            self.code_firstlineno,
            self.code_linetable,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
            + 8
    }

    /// The byte offset into the code's instructions of a frame's
    /// instruction field as read (`raw`: the `int` f_lasti sign-extended,
    /// or the pointer), for the code object at `code`.
    pub fn instruction_offset(&self, code: u64, raw: u64) -> i64 {
        match self.instr {
            Instr::LastiBytes => raw as u32 as i32 as i64,
            Instr::LastiUnits => (raw as u32 as i32 as i64) * 2,
            Instr::Pointer => {
                let start = code.wrapping_add(self.code_adaptive.unwrap_or(0));
                raw.wrapping_sub(start) as i64
            }
        }
    }
}

/// The table for CPython 3.`minor` (3.8–3.12); 3.13 reads its offsets from
/// the process ([`from_debug_offsets`]).
pub fn for_version(minor: u32) -> Result<Offsets> {
    // Shared by 3.8–3.10: the thread state's head and the frame object
    // kept their places; PyCodeObject too.
    let frame_object = |f_lasti, instr, line_table| Offsets {
        minor,
        runtime_initialized: 12,
        runtime_interpreters_head: 32,
        runtime_main_thread: Some(72),
        interp_next: 0,
        interp_threads_head: 8,
        tstate_next: 8,
        tstate_interp: 16,
        tstate_frame: 24,
        cframe_current_frame: None,
        tstate_thread_id: 176,
        tstate_native_thread_id: None,
        frame: FrameLayout::Object,
        frame_previous: 24,
        frame_code: 32,
        frame_instr: f_lasti,
        frame_owner: None,
        instr,
        code_filename: 104,
        code_name: 112,
        code_firstlineno: 40,
        code_linetable: 120,
        code_code: Some(48),
        code_adaptive: None,
        line_table,
        unicode_length: 16,
        unicode_state: 32,
        unicode_ascii_size: 48,
        unicode_compact_size: 72,
    };
    Ok(match minor {
        8 | 9 => frame_object(104, Instr::LastiBytes, LineTable::Lnotab),
        10 => frame_object(96, Instr::LastiUnits, LineTable::Lines310),
        11 => Offsets {
            minor,
            runtime_initialized: 16,
            runtime_interpreters_head: 40,
            runtime_main_thread: Some(80),
            interp_next: 0,
            interp_threads_head: 16,
            tstate_next: 8,
            tstate_interp: 16,
            tstate_frame: 56,
            cframe_current_frame: Some(8),
            tstate_thread_id: 152,
            tstate_native_thread_id: Some(160),
            frame: FrameLayout::Interpreter,
            frame_previous: 48,
            frame_code: 32,
            frame_instr: 56,
            frame_owner: Some(69),
            instr: Instr::Pointer,
            code_filename: 112,
            code_name: 128,
            code_firstlineno: 72,
            code_linetable: 136,
            code_code: None,
            code_adaptive: Some(184),
            line_table: LineTable::Locations,
            unicode_length: 16,
            unicode_state: 32,
            unicode_ascii_size: 48,
            unicode_compact_size: 72,
        },
        12 => Offsets {
            minor,
            runtime_initialized: 16,
            runtime_interpreters_head: 40,
            runtime_main_thread: Some(64),
            interp_next: 0,
            interp_threads_head: 72,
            tstate_next: 8,
            tstate_interp: 16,
            tstate_frame: 56,
            cframe_current_frame: Some(0),
            tstate_thread_id: 136,
            tstate_native_thread_id: Some(144),
            frame: FrameLayout::Interpreter,
            frame_previous: 8,
            frame_code: 0,
            frame_instr: 56,
            frame_owner: Some(70),
            instr: Instr::Pointer,
            code_filename: 112,
            code_name: 128,
            code_firstlineno: 68,
            code_linetable: 136,
            code_code: None,
            code_adaptive: Some(192),
            line_table: LineTable::Locations,
            unicode_length: 16,
            unicode_state: 32,
            unicode_ascii_size: 40,
            unicode_compact_size: 56,
        },
        _ => {
            bail!("CPython 3.{minor} has no offset table (3.8 to 3.12 do; 3.13 publishes its own)")
        }
    })
}

/// The cookie `_Py_DebugOffsets` starts with.
pub const DEBUG_COOKIE: &[u8; 8] = b"xdebugpy";

/// Bytes of `_Py_DebugOffsets` that 3.13 has (`sizeof` in 3.13.0).
pub const DEBUG_OFFSETS_SIZE_313: usize = 584;

/// Offsets from the `_Py_DebugOffsets` at the start of a 3.13 `_PyRuntime`
/// (`Include/internal/pycore_runtime.h`), `raw` being its first
/// [`DEBUG_OFFSETS_SIZE_313`] bytes; `version` is the build's
/// `PY_VERSION_HEX` (from `Py_Version`). Fails on a wrong cookie, another
/// version than the build's, a free-threaded build, or an offset past the
/// size the structure itself declares.
pub fn from_debug_offsets(raw: &[u8], version: u32) -> Result<Offsets> {
    if raw.len() < DEBUG_OFFSETS_SIZE_313 || &raw[..8] != DEBUG_COOKIE {
        bail!("_PyRuntime does not start with _Py_DebugOffsets (no \"xdebugpy\" cookie)");
    }
    let at = |off: u64| u64_at(raw, off).unwrap_or(u64::MAX);
    let published = at(8);
    if published >> 16 != u64::from(version >> 16) {
        bail!("_Py_DebugOffsets says version {published:#x}, the build says {version:#x}");
    }
    if published >> 16 != 0x030d {
        bail!(
            "_Py_DebugOffsets of version {}.{} are not read yet (3.13 are)",
            published >> 24,
            (published >> 16) & 0xff
        );
    }
    if at(16) != 0 {
        bail!("free-threaded CPython (3.13t) is not supported yet");
    }
    // Each group starts with the structure's size; every offset read from
    // a group must fit in it.
    let group = |base: u64, fields: &[u64]| -> Result<Vec<u64>> {
        let size = at(base);
        fields
            .iter()
            .map(|&f| {
                let v = at(base + f);
                if v.saturating_add(1) > size {
                    bail!("_Py_DebugOffsets: offset {v} past its structure's size {size}");
                }
                Ok(v)
            })
            .collect()
    };
    // runtime_state: size, finalizing, interpreters_head.
    let runtime = group(24, &[16])?;
    // interpreter_state: size, id, next, threads_head, ...
    let interp = group(48, &[16, 24])?;
    // thread_state: size, prev, next, interp, current_frame, thread_id,
    // native_thread_id, ...
    let tstate = group(152, &[16, 24, 32, 40, 48])?;
    // interpreter_frame: size, previous, executable, instr_ptr, localsplus,
    // owner.
    let frame = group(224, &[8, 16, 24, 40])?;
    // code_object: size, filename, name, qualname, linetable, firstlineno,
    // argcount, localsplusnames, localspluskinds, co_code_adaptive.
    let code = group(272, &[8, 24, 32, 40, 72])?;
    // unicode_object: size, state, length, asciiobject_size.
    let unicode = [at(544), at(552), at(560)];
    if unicode.iter().any(|&v| v > 64) {
        bail!("_Py_DebugOffsets: implausible str layout {unicode:?}");
    }
    Ok(Offsets {
        minor: 13,
        // Not published: `initialized` follows the debug offsets and
        // `_initialized`, `preinitializing`, `preinitialized`,
        // `core_initialized` (pycore_runtime.h, 3.13).
        runtime_initialized: DEBUG_OFFSETS_SIZE_313 as u64 + 16,
        runtime_interpreters_head: runtime[0],
        runtime_main_thread: None,
        interp_next: interp[0],
        interp_threads_head: interp[1],
        tstate_next: tstate[0],
        tstate_interp: tstate[1],
        tstate_frame: tstate[2],
        cframe_current_frame: None,
        tstate_thread_id: tstate[3],
        tstate_native_thread_id: Some(tstate[4]),
        frame: FrameLayout::Interpreter,
        frame_previous: frame[0],
        frame_code: frame[1],
        frame_instr: frame[2],
        frame_owner: Some(frame[3]),
        instr: Instr::Pointer,
        code_filename: code[0],
        code_name: code[1],
        code_firstlineno: code[3],
        code_linetable: code[2],
        code_code: None,
        code_adaptive: Some(code[4]),
        line_table: LineTable::Locations,
        unicode_length: unicode[1],
        unicode_state: unicode[0],
        unicode_ascii_size: unicode[2],
        // PyCompactUnicodeObject adds utf8_length and utf8 (3.12+).
        unicode_compact_size: unicode[2] + 16,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3.13.0 `_Py_DebugOffsets`, as the pyenv build's `_PyRuntime`
    /// holds it (the fields the walk reads; sizes of each group).
    fn debug_offsets_313() -> Vec<u8> {
        let mut raw = vec![0u8; DEBUG_OFFSETS_SIZE_313];
        raw[..8].copy_from_slice(DEBUG_COOKIE);
        let mut put = |at: usize, v: u64| raw[at..at + 8].copy_from_slice(&v.to_le_bytes());
        put(8, 0x030d_00f0);
        put(16, 0);
        put(24, 1536); // runtime size
        put(40, 632); // interpreters_head
        put(48, 200_000); // interpreter size
        put(64, 7264); // next
        put(72, 7344); // threads_head
        put(152, 320); // thread state size
        put(168, 8); // next
        put(176, 16); // interp
        put(184, 72); // current_frame
        put(192, 152); // thread_id
        put(200, 160); // native_thread_id
        put(224, 80); // frame size
        put(232, 8); // previous
        put(240, 0); // executable
        put(248, 56); // instr_ptr
        put(264, 70); // owner
        put(272, 208); // code size
        put(280, 112); // filename
        put(296, 128); // qualname
        put(304, 136); // linetable
        put(312, 68); // firstlineno
        put(344, 200); // co_code_adaptive
        put(536, 40); // str size
        put(544, 32); // state
        put(552, 16); // length
        put(560, 40); // asciiobject_size
        raw
    }

    #[test]
    fn debug_offsets_of_313_read() {
        let o = from_debug_offsets(&debug_offsets_313(), 0x030d_00f0).unwrap();
        assert_eq!(o.runtime_interpreters_head, 632);
        assert_eq!((o.interp_next, o.interp_threads_head), (7264, 7344));
        assert_eq!((o.tstate_frame, o.tstate_native_thread_id), (72, Some(160)));
        assert_eq!((o.frame_previous, o.frame_code, o.frame_instr), (8, 0, 56));
        assert_eq!(o.frame_owner, Some(70));
        assert_eq!(
            (o.code_filename, o.code_name, o.code_linetable),
            (112, 128, 136)
        );
        assert_eq!((o.code_firstlineno, o.code_adaptive), (68, Some(200)));
        assert_eq!((o.unicode_ascii_size, o.unicode_compact_size), (40, 56));
    }

    #[test]
    fn debug_offsets_checked() {
        let good = debug_offsets_313();
        let mut bad_cookie = good.clone();
        bad_cookie[0] = b'y';
        assert!(from_debug_offsets(&bad_cookie, 0x030d_00f0).is_err());
        // The build says 3.12: the offsets are not its own.
        assert!(from_debug_offsets(&good, 0x030c_01f0).is_err());
        let mut free_threaded = good.clone();
        free_threaded[16] = 1;
        let e = from_debug_offsets(&free_threaded, 0x030d_00f0).unwrap_err();
        assert!(e.to_string().contains("free-threaded"), "{e}");
        // An offset past its structure's declared size.
        let mut past = good;
        past[184..192].copy_from_slice(&4000u64.to_le_bytes());
        assert!(from_debug_offsets(&past, 0x030d_00f0).is_err());
    }

    #[test]
    fn tables_cover_38_to_312() {
        for minor in 8..=12 {
            assert_eq!(for_version(minor).unwrap().minor, minor);
        }
        assert!(for_version(7).is_err());
        assert!(for_version(13).is_err());
    }

    #[test]
    fn instruction_offsets() {
        let o38 = for_version(8).unwrap();
        assert_eq!(o38.instruction_offset(0x1000, 24), 24);
        let o310 = for_version(10).unwrap();
        assert_eq!(o310.instruction_offset(0x1000, 12), 24);
        assert_eq!(o310.instruction_offset(0x1000, u64::from(u32::MAX)), -2);
        let o312 = for_version(12).unwrap();
        assert_eq!(o312.instruction_offset(0x1000, 0x1000 + 192 + 30), 30);
        assert_eq!(o312.instruction_offset(0x1000, 0x1000 + 192 - 2), -2);
    }
}

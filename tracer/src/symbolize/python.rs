//! Python code objects to names and lines: a code object's address and an
//! instruction offset (what a frame walk records) become its qualified
//! name (3.11+; the plain name before), file name and line, read from the
//! target's memory and decoded from each version's line table: `co_lnotab`
//! (3.8–3.9), the 3.10 `co_linetable`, the 3.11+ location table.
//!
//! Code objects are cached per process by address. A code object freed
//! and another allocated at its address must not answer with the old one's
//! names, so the first lookup of an address in each pass (an interval's new
//! stacks) reads the code object's header again and compares its identity
//! (file name, name and line table pointers, first line) before it uses
//! what the cache holds.

use std::collections::HashMap;

use serde::Serialize;

use crate::discover::{
    memory::{u32_at, u64_at},
    python::{
        offsets::{LineTable, OB_TYPE},
        walk::RawFrame,
        Python,
    },
};

/// One resolved Python frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PyFrame {
    /// `Class.method` (3.11+), the function's name before.
    pub function: String,
    pub file: String,
    /// None where the code has no line (an instruction the compiler added).
    pub line: Option<u32>,
}

/// What tells one code object from another allocated later at its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    filename: u64,
    name: u64,
    linetable: u64,
    firstlineno: u32,
}

struct Code {
    identity: Identity,
    /// The pass that last read its header.
    checked: u64,
    function: String,
    file: String,
    table: Vec<u8>,
}

/// The code objects of one process, resolved.
#[derive(Default)]
pub struct CodeCache {
    codes: HashMap<u64, Code>,
    pass: u64,
}

impl CodeCache {
    /// A new pass: each code object's header is read again at its next
    /// lookup.
    pub fn new_pass(&mut self) {
        self.pass += 1;
    }

    /// Resolves `frame` of `python`'s process; None when its code object
    /// does not read as one (freed since the walk, or not code).
    pub fn resolve(&mut self, python: &Python, frame: RawFrame) -> Option<PyFrame> {
        let checked = self
            .codes
            .get(&frame.code)
            .is_some_and(|c| c.checked == self.pass);
        if !checked {
            self.check(python, frame.code)?;
        }
        let code = &self.codes[&frame.code];
        Some(PyFrame {
            function: code.function.clone(),
            file: code.file.clone(),
            line: line(
                python.offsets.line_table,
                &code.table,
                code.identity.firstlineno as i32,
                frame.offset,
            ),
        })
    }

    /// Reads the header of the code object at `addr`: what the cache holds
    /// for that address when the identity is the same, else read anew.
    /// None when it does not read as a code object.
    fn check(&mut self, python: &Python, addr: u64) -> Option<()> {
        let o = &python.offsets;
        let head = python.mem.bytes(addr, o.code_span())?;
        if u64_at(&head, OB_TYPE)? != python.runtime.code_type {
            return None;
        }
        let identity = Identity {
            filename: u64_at(&head, o.code_filename)?,
            name: u64_at(&head, o.code_name)?,
            linetable: u64_at(&head, o.code_linetable)?,
            firstlineno: u32_at(&head, o.code_firstlineno)?,
        };
        match self.codes.get_mut(&addr) {
            Some(code) if code.identity == identity => code.checked = self.pass,
            _ => {
                let code = Code {
                    identity,
                    checked: self.pass,
                    function: python.read_str(identity.name)?,
                    file: python.read_str(identity.filename)?,
                    table: python.read_bytes(identity.linetable)?,
                };
                self.codes.insert(addr, code);
            }
        }
        Some(())
    }

    /// How many code objects are cached.
    pub fn len(&self) -> usize {
        self.codes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }
}

/// The line of the instruction at byte offset `offset` of a code object
/// whose first line is `first` and line table `table`. A frame that has
/// not started (negative offset) is at its first line.
pub fn line(kind: LineTable, table: &[u8], first: i32, offset: i64) -> Option<u32> {
    if offset < 0 {
        return u32::try_from(first).ok();
    }
    let line = match kind {
        LineTable::Lnotab => lnotab_line(table, first, offset),
        LineTable::Lines310 => lines310_line(table, first, offset),
        LineTable::Locations => locations_line(table, first, offset / 2),
    }?;
    u32::try_from(line).ok()
}

/// `co_lnotab` (3.8–3.9): pairs of (bytecode increment, signed line
/// increment); the line of `offset` is the sum of the line increments of
/// every pair that starts at or before it.
fn lnotab_line(table: &[u8], first: i32, offset: i64) -> Option<i32> {
    let (mut line, mut addr) = (first, 0i64);
    for pair in table.chunks_exact(2) {
        addr += i64::from(pair[0]);
        if addr > offset {
            break;
        }
        line += i32::from(pair[1] as i8);
    }
    Some(line)
}

/// The 3.10 `co_linetable`: pairs of (bytes covered, signed line delta),
/// the delta -128 meaning "no line" for those bytes (the line the deltas
/// add up to carries on past them).
fn lines310_line(table: &[u8], first: i32, offset: i64) -> Option<i32> {
    let (mut line, mut end) = (first, 0i64);
    for pair in table.chunks_exact(2) {
        let start = end;
        end += i64::from(pair[0]);
        let delta = pair[1] as i8;
        let here = match delta {
            -128 => None,
            d => {
                line += i32::from(d);
                Some(line)
            }
        };
        if start <= offset && offset < end {
            return here;
        }
    }
    None
}

/// The 3.11+ location table (`Objects/locations.md`): entries of a first
/// byte `1cccclll` (code c, length l+1 code units), then per code: 0–9 a
/// short form on the same line (one more byte), 10–12 one line with line
/// delta c-10 (two bytes of columns), 13 no columns (a signed varint line
/// delta), 14 the long form (a signed varint line delta, then end line
/// and columns), 15 no location. Varints are 6 bits a byte, little end
/// first, bit 6 set on every byte but the last; a signed one keeps its
/// sign in bit 0.
fn locations_line(table: &[u8], first: i32, unit: i64) -> Option<i32> {
    let mut line = first;
    let mut addr = 0i64;
    let mut i = 0usize;
    let varint = |i: &mut usize| -> Option<u32> {
        let mut b = *table.get(*i)?;
        *i += 1;
        let mut val = u32::from(b & 63);
        let mut shift = 0;
        while b & 64 != 0 {
            b = *table.get(*i)?;
            *i += 1;
            shift += 6;
            if shift > 30 {
                return None;
            }
            val |= u32::from(b & 63) << shift;
        }
        Some(val)
    };
    let svarint = |i: &mut usize| -> Option<i32> {
        let v = varint(i)?;
        Some(match v & 1 {
            1 => -((v >> 1) as i32),
            _ => (v >> 1) as i32,
        })
    };
    while i < table.len() {
        let head = table[i];
        i += 1;
        if head & 0x80 == 0 {
            return None;
        }
        let code = (head >> 3) & 15;
        let length = i64::from(head & 7) + 1;
        let delta = match code {
            15 => 0,
            14 => {
                let d = svarint(&mut i)?;
                for _ in 0..3 {
                    varint(&mut i)?;
                }
                d
            }
            13 => svarint(&mut i)?,
            10..=12 => {
                i += 2;
                i32::from(code) - 10
            }
            _ => {
                i += 1;
                0
            }
        };
        line += delta;
        if addr <= unit && unit < addr + length {
            return (code != 15).then_some(line);
        }
        addr += length;
    }
    None
}

/// One thread's Python stack, resolved, innermost frame first.
#[derive(Clone, Debug, Serialize)]
pub struct ThreadStack {
    pub thread_id: u64,
    pub native_id: Option<u64>,
    pub frames: Vec<PyFrame>,
    /// The stack went on past the walk's depth.
    pub cut: bool,
}

/// Every thread's Python stack, read once.
#[derive(Clone, Debug, Serialize)]
pub struct Stacks {
    /// `CPython 3.11.7 (libpython3.11.so.1.0)`.
    pub interpreter: String,
    pub threads: Vec<ThreadStack>,
    /// Frames that did not parse or resolve (the process runs while it is
    /// read), skipped.
    pub skipped: u32,
}

/// Walks `python`'s threads once and resolves their frames; None when the
/// runtime has no interpreter (yet, or any more).
pub fn stacks(python: &Python, cache: &mut CodeCache) -> Option<Stacks> {
    let walk = python.walk()?;
    let mut skipped = walk.skipped;
    let threads = walk
        .threads
        .into_iter()
        .map(|t| ThreadStack {
            thread_id: t.thread_id,
            native_id: t.native_id,
            frames: t
                .frames
                .iter()
                .filter_map(|&f| {
                    let resolved = cache.resolve(python, f);
                    skipped += u32::from(resolved.is_none());
                    resolved
                })
                .collect(),
            cut: t.cut,
        })
        .collect();
    Some(Stacks {
        interpreter: python.runtime.describe(),
        threads,
        skipped,
    })
}

/// Python frames stand in a stack's addresses as tokens: this bit and an
/// index (see `Symbolizer::python_token`). No user address has it (they
/// are below 2^47), so a token is never taken for code.
pub const TOKEN_BASE: u64 = 0xf000_0000_0000_0000;

/// Whether a stack address is a Python frame's token.
pub fn is_token(address: u64) -> bool {
    address & TOKEN_BASE == TOKEN_BASE
}

/// One stack, both worlds: each native frame in the evaluation loop
/// (`eval`: `_PyEval_EvalFrameDefault`'s start and end) is replaced by the
/// Python frames that run of the loop was executing — `python`, innermost
/// first, as (token, whether it is the first frame of its run) — the way
/// py-spy's `--native` shows it. Runs left over (the native walk stopped
/// before their loop's frame) go after the native frames; native frames in
/// the loop left over (the Python walk was cut) stay as they are.
pub fn splice(native: &[u64], eval: Option<(u64, u64)>, python: &[(u64, bool)]) -> Vec<u64> {
    let mut runs = python.split_inclusive(|&(_, entry)| entry);
    let mut out = Vec::with_capacity(native.len() + python.len());
    for &address in native {
        // A return address points after its call: the call is before it.
        let call = address.wrapping_sub(1);
        let in_loop = eval.is_some_and(|(start, end)| (start..end).contains(&call));
        if in_loop {
            if let Some(run) = runs.next() {
                out.extend(run.iter().map(|&(token, _)| token));
                continue;
            }
        }
        out.push(address);
    }
    for run in runs {
        out.extend(run.iter().map(|&(token, _)| token));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Python frames take the place of the loop's native frames, one run
    /// each; what is left of either goes where it was.
    #[test]
    fn python_runs_replace_the_evaluation_loop_frames() {
        let eval = Some((0x1000, 0x2000));
        let (a, b, c, d) = (
            TOKEN_BASE | 1,
            TOKEN_BASE | 2,
            TOKEN_BASE | 3,
            TOKEN_BASE | 4,
        );
        // malloc's caller, the loop running a and b (b its first frame),
        // a C function, the loop running c, main.
        let native = [0x500, 0x1010, 0x600, 0x1020, 0x700];
        let python = [(a, false), (b, true), (c, true)];
        assert_eq!(
            splice(&native, eval, &python),
            vec![0x500, a, b, 0x600, c, 0x700]
        );
        // The native walk stopped early: the outer run follows it.
        assert_eq!(splice(&native[..2], eval, &python), vec![0x500, a, b, c]);
        // The Python walk was cut (d's run has no first frame): the loop's
        // second frame stays native.
        assert_eq!(
            splice(&native, eval, &[(d, false)]),
            vec![0x500, d, 0x600, 0x1020, 0x700]
        );
        // A return address just past the loop's end is not in it; one at
        // its end is (the call is the loop's last instruction).
        assert_eq!(splice(&[0x2001], eval, &[(a, true)]), vec![0x2001, a]);
        assert_eq!(splice(&[0x2000], eval, &[(a, true)]), vec![a]);
        // No loop known: the Python frames follow the native ones.
        assert_eq!(splice(&[0x500], None, &[(a, true)]), vec![0x500, a]);
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The line table of one function, as each version compiles it, and
    /// the line of every instruction (2 bytes apart; 0: no line) as that
    /// interpreter itself says (`dis.findlinestarts` before 3.10,
    /// `co_lines()` after). The function, at line 42 of its file:
    ///
    /// ```python
    /// def sample(items):
    ///     total = 0
    ///     for x in items:
    ///         try:
    ///             total += x
    ///
    ///         except TypeError:
    ///             continue
    ///     return [total,
    ///             len(items)]
    /// ```
    const SAMPLES: &[(LineTable, &str, &[u32])] = &[
        // 3.8
        (
            LineTable::Lnotab,
            "00010401080102010c020e010c01020106ff",
            &[43, 43, 44, 44, 44, 44, 45, 46, 46, 46, 46, 46, 46, 48, 48, 48, 48, 48, 48, 48, 49, 49, 49, 49, 49, 49, 50, 51, 51, 51, 50, 50],
        ),
        // 3.9
        (
            LineTable::Lnotab,
            "00010401080102010c020c010c01020106ff",
            &[43, 43, 44, 44, 44, 44, 45, 46, 46, 46, 46, 46, 46, 48, 48, 48, 48, 48, 48, 49, 49, 49, 49, 49, 49, 50, 51, 51, 51, 50, 50],
        ),
        // 3.10
        (
            LineTable::Lines310,
            "0401080102010c010c02040102ff0202060104ff",
            &[43, 43, 44, 44, 44, 44, 45, 46, 46, 46, 46, 46, 46, 48, 48, 48, 48, 48, 48, 49, 49, 48, 50, 51, 51, 51, 50, 50],
        ),
        // 3.11
        (
            LineTable::Locations,
            "8000d80c0d8045d80d12f000050515f0000505158801f002040915d80c119051894a88458845f8e50f18f000010915f000010915f000010915d80c148848f003010915f8f8f8e00c11dd0c0f9005894a8c4af003010c18f000010518",
            &[42, 43, 43, 44, 44, 44, 44, 45, 46, 46, 46, 46, 46, 46, 0, 48, 48, 48, 48, 48, 48, 48, 48, 48, 49, 49, 48, 0, 0, 0, 50, 51, 51, 51, 51, 51, 51, 51, 51, 51, 51, 51, 51, 51, 51, 50, 50],
        ),
        // 3.12
        (
            LineTable::Locations,
            "8000d80c0d8045d80d12f2000505158801f002040915d80c119051894a8945f005050515f00c000d12dc0c0f90058b4af003010c18f000010518f8f405001019f200010915d90c14f003010915fa",
            &[42, 43, 43, 44, 44, 44, 44, 44, 45, 46, 46, 46, 46, 46, 46, 44, 50, 51, 51, 51, 51, 51, 51, 51, 51, 51, 51, 50, 50, 0, 48, 48, 48, 48, 48, 48, 48, 48, 49, 49, 48, 0, 0, 0],
        ),
        // 3.13
        (
            LineTable::Locations,
            "8000d80c0d8045db0d128801f002040915d80c11894a8a45f105000e13f00c000d12dc0c0f90058b4af003010c18f000010518f8f405001019f300010915da0c14f003010915fa",
            &[42, 43, 43, 44, 44, 44, 44, 44, 45, 46, 46, 46, 46, 46, 46, 44, 44, 50, 51, 51, 51, 51, 51, 51, 51, 51, 51, 51, 50, 50, 0, 48, 48, 48, 48, 48, 48, 48, 48, 48, 49, 49, 49, 48, 0, 0, 0],
        ),
    ];

    #[test]
    fn every_versions_line_table_decodes_as_cpython_does() {
        for (n, &(kind, table, lines)) in SAMPLES.iter().enumerate() {
            let table = unhex(table);
            for (i, &want) in lines.iter().enumerate() {
                let got = line(kind, &table, 42, 2 * i as i64);
                assert_eq!(
                    got,
                    (want != 0).then_some(want),
                    "sample {n} ({kind:?}), byte offset {}",
                    2 * i
                );
            }
        }
    }

    #[test]
    fn a_frame_not_started_is_at_its_first_line() {
        assert_eq!(line(LineTable::Lines310, &[], 42, -2), Some(42));
        assert_eq!(line(LineTable::Lnotab, &[], 42, 0), Some(42));
    }

    /// A cached code object answers only while its identity holds: the
    /// cache is used (a name planted in it comes back), and a changed
    /// identity (what a new code object at a reused address has) reads
    /// the code object again. Runs Debian's python3.11 (needs root).
    #[test]
    fn cached_code_objects_are_checked_for_reuse() {
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};

        let script = "import os\ndef waits():\n    print('ready', flush=True); os.read(os.pipe()[0], 1)\nwaits()\n";
        let mut child = Command::new("/usr/bin/python3.11")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .expect("/usr/bin/python3.11");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready, "ready\n");
        let python = Python::attach(child.id()).unwrap();
        let walk = python.walk().unwrap();
        let frame = walk.threads[0].frames[0];
        let mut cache = CodeCache::default();
        let first = cache.resolve(&python, frame).unwrap();
        assert_eq!((first.function.as_str(), first.line), ("waits", Some(3)));
        cache.codes.get_mut(&frame.code).unwrap().function = "planted".into();
        assert_eq!(cache.resolve(&python, frame).unwrap().function, "planted");
        cache
            .codes
            .get_mut(&frame.code)
            .unwrap()
            .identity
            .firstlineno += 1;
        // Checked once per pass: within it, what the cache holds.
        assert_eq!(cache.resolve(&python, frame).unwrap().function, "planted");
        cache.new_pass();
        assert_eq!(cache.resolve(&python, frame).unwrap(), first);
        assert_eq!(cache.len(), 1);
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn malformed_tables_give_no_line() {
        // A location entry must start with bit 7 set; a varint cut short.
        assert_eq!(line(LineTable::Locations, &[0x05], 1, 0), None);
        assert_eq!(line(LineTable::Locations, &[0xe8, 0x41], 1, 0), None);
        // Past the end of a 3.10 table.
        assert_eq!(line(LineTable::Lines310, &[2, 1], 1, 4), None);
    }
}

//! CPython's frees, probed where the kernel emulates the probe. In a
//! default build `PyObject_Free(p)` and `PyMem_Free(p)` are three
//! instructions: `mov %rdi,%rsi; mov ctx(%rip),%rdi; jmp *free(%rip)`, a
//! tail call through the domain's allocator table, whose `free` is
//! pymalloc's `_PyObject_Free(ctx, p)` in both domains. Their first two
//! instructions write the argument register or load through the
//! instruction pointer, so a probe on either function is single-stepped
//! (~5-10 µs a free); `_PyObject_Free` starts with `test %rsi,%rsi; je`,
//! and the `je` is emulated. So where the file shows exactly that shape —
//! both tail calls through table slots whose initial value is
//! `_PyObject_Free` — the frees are probed once, in `_PyObject_Free`, the
//! block being its second argument.
//!
//! The tables can change at run time: `PYTHONMALLOC=debug` (or `-X dev`)
//! puts debug hooks in front, which hand pymalloc a pointer 16 bytes
//! below the caller's, and an embedding application may install its own
//! allocator. So `_PyObject_Free` is probed only in processes whose
//! environment and command line leave the default allocator
//! ([`default_allocator`]); the others get the two public functions. A
//! program that replaces its allocator through the C API itself is not
//! seen: its frees would be missed (docs/usage.md says so).

use std::fs;

use iced_x86::{Code, Decoder, DecoderOptions, Register};
use object::{
    Object, ObjectSection, ObjectSymbol, ObjectSymbolTable, RelocationTarget, SymbolKind,
};

/// pymalloc's free, where the object and memory domains' frees tail-call
/// it by default: its address in the file, or None when the file does not
/// have exactly that shape (a debug build, no pymalloc, no local symbols:
/// Debian's stripped and link-time optimized python3.11).
pub fn inner_free(file: &object::File, data: &[u8], frees: &[u64]) -> Option<u64> {
    let inner = file.symbols().find_map(|s| {
        (s.name() == Ok("_PyObject_Free") && s.kind() == SymbolKind::Text && s.address() != 0)
            .then(|| s.address())
    })?;
    frees
        .iter()
        .all(|&f| {
            tail_slot(file, data, f).and_then(|slot| initial_pointer(file, data, slot))
                == Some(inner)
        })
        .then_some(inner)
}

/// The table slot through which the function at `vaddr` tail-calls with
/// its first argument moved to the second: `mov %rdi,%rsi`, then loads
/// that leave %rsi alone, then `jmp *slot(%rip)` (3.8-3.11) or `jmp
/// *off(%reg)` where %reg was loaded from a GOT entry (3.12+: the table is
/// in `_PyRuntime`).
fn tail_slot(file: &object::File, data: &[u8], vaddr: u64) -> Option<u64> {
    let offset = super::allocator::file_offset(file, vaddr)? as usize;
    let code = data.get(offset..data.len().min(offset + 32))?;
    let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    // A register loaded with a pointer the file gives (a GOT entry's).
    let mut loaded: Option<(Register, u64)> = None;
    let mut moved = false;
    for _ in 0..5 {
        let instr = decoder.decode();
        let (dst, src) = (instr.op0_register(), instr.op1_register());
        match instr.code() {
            Code::Jmp_rm64 if moved => {
                if instr.is_ip_rel_memory_operand() {
                    return Some(instr.ip_rel_memory_address());
                }
                let (reg, base) = loaded?;
                let plain = instr.memory_base() == reg && instr.memory_index() == Register::None;
                return plain.then(|| base.wrapping_add(instr.memory_displacement64()));
            }
            Code::Mov_r64_rm64 | Code::Mov_rm64_r64
                if dst == Register::RSI && src == Register::RDI =>
            {
                moved = true;
            }
            Code::Mov_r64_rm64 if dst != Register::RSI && src == Register::None => {
                loaded = match instr.is_ip_rel_memory_operand() {
                    true => {
                        initial_pointer(file, data, instr.ip_rel_memory_address()).map(|p| (dst, p))
                    }
                    false => loaded.filter(|(reg, _)| *reg != dst),
                };
            }
            _ => return None,
        }
    }
    None
}

/// The pointer a data slot holds when the file is loaded: its relocation's
/// (a relative one's addend, or a symbol's address), else the bytes in the
/// file.
fn initial_pointer(file: &object::File, data: &[u8], slot: u64) -> Option<u64> {
    if let Some(relocations) = file.dynamic_relocations() {
        for (at, r) in relocations {
            if at != slot {
                continue;
            }
            return match r.target() {
                RelocationTarget::Absolute => u64::try_from(r.addend()).ok(),
                RelocationTarget::Symbol(i) => {
                    let s = file.dynamic_symbol_table()?.symbol_by_index(i).ok()?;
                    Some(s.address().wrapping_add(r.addend() as u64))
                }
                _ => None,
            };
        }
    }
    let section = file
        .sections()
        .find(|s| s.address() <= slot && slot + 8 <= s.address() + s.size())?;
    let (start, _) = section.file_range()?;
    let at = (start + slot - section.address()) as usize;
    let bytes: [u8; 8] = data.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Whether process `pid` runs CPython's default allocator, as far as its
/// environment and command line tell: no `PYTHONMALLOC` other than
/// `pymalloc`, no development mode (`PYTHONDEVMODE`, `-X dev`). False when
/// they cannot be read.
pub fn default_allocator(pid: u32) -> bool {
    let (Ok(environ), Ok(cmdline)) = (
        fs::read(format!("/proc/{pid}/environ")),
        fs::read(format!("/proc/{pid}/cmdline")),
    ) else {
        return false;
    };
    leaves_default(&environ, &cmdline)
}

/// [`default_allocator`] on an environment block and a command line (both
/// NUL-separated).
fn leaves_default(environ: &[u8], cmdline: &[u8]) -> bool {
    let replaced = environ.split(|&b| b == 0).any(|var| {
        var.strip_prefix(b"PYTHONMALLOC=")
            .is_some_and(|v| !v.is_empty() && v != b"pymalloc")
            || var
                .strip_prefix(b"PYTHONDEVMODE=")
                .is_some_and(|v| !v.is_empty())
    });
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let dev = args.iter().enumerate().any(|(i, a)| {
        a.starts_with(b"-Xdev")
            || (*a == b"-X" && args.get(i + 1).is_some_and(|n| n.starts_with(b"dev")))
    });
    !replaced && !dev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_and_arguments_that_replace_the_allocator() {
        let python = b"/usr/bin/python3\0app.py\0";
        assert!(leaves_default(b"PATH=/bin\0", python));
        assert!(leaves_default(b"PYTHONMALLOC=pymalloc\0", python));
        assert!(leaves_default(b"PYTHONMALLOC=\0", python));
        assert!(!leaves_default(b"PYTHONMALLOC=debug\0", python));
        assert!(!leaves_default(b"A=1\0PYTHONMALLOC=malloc\0", python));
        assert!(!leaves_default(b"PYTHONDEVMODE=1\0", python));
        assert!(!leaves_default(b"", b"python3\0-X\0dev\0app.py\0"));
        assert!(!leaves_default(b"", b"python3\0-Xdev\0app.py\0"));
        assert!(leaves_default(b"", b"python3\0-X\0tracemalloc=5\0app.py\0"));
    }

    #[test]
    fn pyenv_frees_tail_call_pymalloc() {
        let Some(lib) = pyenv_libpython() else {
            panic!("no pyenv libpython3.12 on this machine");
        };
        let data = fs::read(&lib).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let address = |name: &str| {
            file.dynamic_symbols()
                .find(|s| s.name() == Ok(name))
                .map(|s| s.address())
                .unwrap()
        };
        let frees = [address("PyObject_Free"), address("PyMem_Free")];
        let inner = inner_free(&file, &data, &frees).expect("_PyObject_Free");
        let named = file
            .symbols()
            .find(|s| s.name() == Ok("_PyObject_Free"))
            .unwrap();
        assert_eq!(inner, named.address());
        // PyObject_Malloc has the same shape, through its own slot (to
        // `_PyObject_Malloc`): not pymalloc's free.
        assert_eq!(
            inner_free(&file, &data, &[frees[0], address("PyObject_Malloc")]),
            None
        );
    }

    fn pyenv_libpython() -> Option<std::path::PathBuf> {
        let mut dirs: Vec<_> = fs::read_dir("/root/.pyenv/versions")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().contains("/3.12."))
            .collect();
        dirs.sort();
        let lib = dirs.pop()?.join("lib/libpython3.12.so.1.0");
        lib.is_file().then_some(lib)
    }
}

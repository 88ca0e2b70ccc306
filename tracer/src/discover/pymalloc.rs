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

/// pymalloc inlined into its callers (link-time optimized builds such as
/// Debian's `python3.11`): where pymalloc takes a new pool, and the pool
/// size's log2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InlinedPools {
    /// `allocate_from_new_pool`'s address in the file.
    pub new_pool: u64,
    pub pool_bits: u32,
}

/// Calls of the new-pool function that show pymalloc's fast path inlined
/// into callers all over the interpreter (Debian's 3.11 has 171; a build
/// that calls pymalloc through its allocator table has 3: pymalloc's own
/// malloc, calloc and realloc).
const INLINED_CALLERS: usize = 16;

/// Whether the interpreter's own code allocates objects with pymalloc
/// inlined, so that no call marks an allocation: link-time optimization
/// copies `PyObject_Malloc`'s body, speculatively devirtualized (`mov
/// slot(%rip),%rax; cmp $pymalloc_malloc,%rax; jne indirect`), into every
/// caller. Then the one call left on the way is the slow path's, when a
/// size class needs a new pool: `allocate_from_new_pool`, the first direct
/// call in pymalloc's malloc, made from at least [`INLINED_CALLERS`]
/// places. The pool size comes from `PyObject_Free`, which finds a block's
/// pool by masking its address (`and $~(pool size - 1)`).
pub fn inlined_pools(
    file: &object::File,
    data: &[u8],
    object_malloc: u64,
    object_free: u64,
) -> Option<InlinedPools> {
    let decode = |vaddr: u64, len: usize| {
        let offset = super::allocator::file_offset(file, vaddr)? as usize;
        let code = data.get(offset..data.len().min(offset + len))?;
        Some(Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE))
    };
    // pymalloc's malloc: what PyObject_Malloc compares its table slot
    // with, the slot's own initial value.
    let mut slots = Vec::new();
    let mut inner = None;
    for instr in decode(object_malloc, 64)?.into_iter().take(12) {
        if instr.code() == Code::Mov_r64_rm64 && instr.is_ip_rel_memory_operand() {
            slots.extend(initial_pointer(file, data, instr.ip_rel_memory_address()));
        }
        let compare = matches!(instr.code(), Code::Cmp_rm64_imm32 | Code::Cmp_RAX_imm32);
        if compare && instr.op0_register() != Register::None {
            let target = instr.immediate32to64() as u64;
            inner = slots.contains(&target).then_some(target);
            break;
        }
    }
    let inner = inner?;
    let plt: Vec<(u64, u64)> = file
        .sections()
        .filter(|s| s.name().is_ok_and(|n| n.starts_with(".plt")))
        .map(|s| (s.address(), s.address() + s.size()))
        .collect();
    let new_pool = decode(inner, 512)?.into_iter().find_map(|instr| {
        let target = instr.near_branch_target();
        (instr.code() == Code::Call_rel32_64
            && !plt.iter().any(|&(a, b)| a <= target && target < b))
        .then_some(target)
    })?;
    if direct_calls(file, data, new_pool) < INLINED_CALLERS {
        return None;
    }
    let pool_bits = decode(object_free, 128)?
        .into_iter()
        .take(32)
        .find_map(|instr| {
            let mask = match instr.code() {
                Code::And_rm64_imm32 | Code::And_RAX_imm32
                    if instr.op0_register() != Register::None =>
                {
                    instr.immediate32to64() as u64
                }
                _ => return None,
            };
            let bits = (!mask).count_ones();
            ((12..=16).contains(&bits) && !mask == (1u64 << bits) - 1).then_some(bits)
        })?;
    Some(InlinedPools {
        new_pool,
        pool_bits,
    })
}

/// Direct calls (`call rel32`) to `target` in the file's code, counted by
/// their encoding (a byte scan: an 0xe8 byte inside another instruction
/// that happens to encode a call to exactly `target` is vanishingly rare).
fn direct_calls(file: &object::File, data: &[u8], target: u64) -> usize {
    file.sections()
        .filter(|s| s.kind() == object::SectionKind::Text)
        .filter_map(|s| Some((s.address(), s.file_range()?)))
        .map(|(address, (offset, size))| {
            let Some(code) = data.get(offset as usize..(offset + size) as usize) else {
                return 0;
            };
            code.windows(5)
                .enumerate()
                .filter(|(i, w)| {
                    let rel = i32::from_le_bytes([w[1], w[2], w[3], w[4]]) as i64;
                    w[0] == 0xe8 && (address + *i as u64 + 5).wrapping_add(rel as u64) == target
                })
                .count()
        })
        .sum()
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

    fn exported(file: &object::File, name: &str) -> u64 {
        file.dynamic_symbols()
            .find(|s| s.name() == Ok(name))
            .map(|s| s.address())
            .unwrap_or_else(|| panic!("{name} not exported"))
    }

    #[test]
    fn debian_python_has_pymalloc_inlined() {
        let data = fs::read("/usr/bin/python3.11").expect("Debian's python3.11");
        let file = object::File::parse(&*data).unwrap();
        let (malloc, free) = (
            exported(&file, "PyObject_Malloc"),
            exported(&file, "PyObject_Free"),
        );
        let pools = inlined_pools(&file, &data, malloc, free).expect("pymalloc inlined");
        // 16 KiB pools (3.10+ on 64-bit); the function follows pymalloc's
        // malloc and is called from all over the interpreter.
        assert_eq!(pools.pool_bits, 14);
        assert!(direct_calls(&file, &data, pools.new_pool) > 100);
    }

    #[test]
    fn pyenv_python_calls_pymalloc() {
        for lib in pyenv_libpythons() {
            let data = fs::read(&lib).unwrap();
            let file = object::File::parse(&*data).unwrap();
            let (malloc, free) = (
                exported(&file, "PyObject_Malloc"),
                exported(&file, "PyObject_Free"),
            );
            assert_eq!(inlined_pools(&file, &data, malloc, free), None, "{lib:?}");
        }
    }

    fn pyenv_libpythons() -> Vec<std::path::PathBuf> {
        let Ok(dirs) = fs::read_dir("/root/.pyenv/versions") else {
            return Vec::new();
        };
        dirs.filter_map(|e| {
            let dir = e.ok()?.path();
            let minor = dir.file_name()?.to_str()?.rsplit_once('.')?.0.to_string();
            let lib = dir.join(format!("lib/libpython{minor}.so.1.0"));
            lib.is_file().then_some(lib)
        })
        .collect()
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

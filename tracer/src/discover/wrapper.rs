//! C++ operators that only hand each call on to a hooked function: a
//! program's own `operator new` that calls `malloc` first thing (groff's
//! troff), an `operator delete` that jumps to `free`. They are not probed:
//! the callee's probe sees each call exactly once, where probing both
//! would trap twice a call (and a wrapper that starts with `sub rsp` is
//! single-stepped). The stack walk goes through the wrapper's frame, which
//! the symbolizer leaves out (`symbolize::allocator_frames`), so a stack
//! still starts at the code that wrote `new`.
//!
//! A wrapper is recognised by its code, not its name: from its first
//! instruction, straight-line code (no branch, no return, the stack pointer
//! free to move) reaches a call or jump whose target is a hooked function:
//! one the file defines, or one it imports through its PLT or GOT. Every
//! call of the wrapper then calls the hooked function before anything
//! else can happen.

use std::collections::HashMap;

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, OpKind};
use object::{Object, ObjectSymbol, ObjectSymbolTable, RelocationTarget};

use super::allocator::file_offset;

/// How far into a wrapper to look for its call.
const MAX_INSTRUCTIONS: usize = 24;

/// Names of the functions a file calls, by the address the call goes
/// through: its own functions' addresses, and the GOT slots of the ones it
/// imports (where their PLT stubs jump through).
pub struct Callees {
    by_address: HashMap<u64, String>,
}

impl Callees {
    /// The file's defined text symbols and its dynamic relocations that
    /// name a symbol (versions cut: `malloc@GLIBC_2.2.5` is `malloc`).
    pub fn of(file: &object::File) -> Callees {
        let mut by_address = HashMap::new();
        let cut = |name: &str| name.split('@').next().unwrap_or(name).to_string();
        for symbol in file.dynamic_symbols().chain(file.symbols()) {
            if symbol.is_definition() && symbol.address() != 0 {
                if let Ok(name) = symbol.name() {
                    by_address
                        .entry(symbol.address())
                        .or_insert_with(|| cut(name));
                }
            }
        }
        if let (Some(relocations), Some(table)) =
            (file.dynamic_relocations(), file.dynamic_symbol_table())
        {
            for (slot, relocation) in relocations {
                let RelocationTarget::Symbol(index) = relocation.target() else {
                    continue;
                };
                if let Some(name) = table
                    .symbol_by_index(index)
                    .ok()
                    .and_then(|s| s.name().ok())
                {
                    by_address.insert(slot, cut(name));
                }
            }
        }
        Callees { by_address }
    }
}

/// A wrapper's call: the hooked function it reaches and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wrapped {
    pub callee: String,
    /// Bytes from the wrapper's start.
    pub at: u64,
}

/// The function that the code at `vaddr` reaches by straight-line code
/// first, when `hooked` accepts its name. With `may_return_early` (a free,
/// which may skip a null pointer: `test rdi,rdi; je` to its `ret`), a
/// conditional branch to a plain return on the way is passed too: that
/// path frees nothing (and the callee's probe ignores a null pointer).
pub fn wrapped_call(
    data: &[u8],
    file: &object::File,
    callees: &Callees,
    vaddr: u64,
    may_return_early: bool,
    hooked: impl Fn(&str) -> bool,
) -> Option<Wrapped> {
    let code = code_at(data, file, vaddr)?;
    let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    for _ in 0..MAX_INSTRUCTIONS {
        if !decoder.can_decode() {
            return None;
        }
        let instr = decoder.decode();
        match instr.flow_control() {
            FlowControl::Next => continue,
            FlowControl::ConditionalBranch
                if may_return_early && returns_at(data, file, instr.near_branch_target()) =>
            {
                continue
            }
            FlowControl::Call | FlowControl::UnconditionalBranch => {
                let target = instr.near_branch_target();
                let name = callees.by_address.get(&target).or_else(|| {
                    plt_slot(data, file, target).and_then(|s| callees.by_address.get(&s))
                })?;
                return hooked(name).then(|| Wrapped {
                    callee: name.clone(),
                    at: instr.ip() - vaddr,
                });
            }
            FlowControl::IndirectCall | FlowControl::IndirectBranch => {
                let name = got_slot(&instr).and_then(|s| callees.by_address.get(&s))?;
                return hooked(name).then(|| Wrapped {
                    callee: name.clone(),
                    at: instr.ip() - vaddr,
                });
            }
            _ => return None,
        }
    }
    None
}

/// Whether the instruction at `vaddr` is a return.
fn returns_at(data: &[u8], file: &object::File, vaddr: u64) -> bool {
    code_at(data, file, vaddr).is_some_and(|code| {
        let instr = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE).decode();
        instr.flow_control() == FlowControl::Return
    })
}

/// The file's bytes from `vaddr` on (at most a few hundred).
fn code_at<'a>(data: &'a [u8], file: &object::File, vaddr: u64) -> Option<&'a [u8]> {
    let start = file_offset(file, vaddr)? as usize;
    data.get(start..data.len().min(start + 256))
}

/// The GOT slot that the PLT stub at `vaddr` jumps through (`endbr64`
/// first in a CET build's `.plt.sec`).
fn plt_slot(data: &[u8], file: &object::File, vaddr: u64) -> Option<u64> {
    let code = code_at(data, file, vaddr)?;
    let mut decoder = Decoder::with_ip(64, code, vaddr, DecoderOptions::NONE);
    for _ in 0..2 {
        let instr = decoder.decode();
        if instr.code() == Code::Endbr64 {
            continue;
        }
        return got_slot(&instr);
    }
    None
}

/// The slot of a `call`/`jmp qword ptr [rip+disp]`.
fn got_slot(instr: &Instruction) -> Option<u64> {
    let through_memory = matches!(instr.code(), Code::Jmp_rm64 | Code::Call_rm64)
        && instr.op0_kind() == OpKind::Memory
        && instr.is_ip_rel_memory_operand();
    through_memory.then(|| instr.ip_rel_memory_address())
}

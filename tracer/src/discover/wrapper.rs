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
//!
//! An allocation function whose probe the kernel would single-step may be
//! a checked wrapper ([`checked_call`]): glibc's `reallocarray` checks that
//! `nmemb * size` does not overflow, then jumps to `realloc`. Its probe
//! goes on the failure path instead, which sees only the calls that fail
//! there.

use std::collections::HashMap;

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, OpKind,
    Register,
};
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
    let passes = |target| may_return_early && returns_at(data, file, target);
    reached_call(data, file, callees, vaddr, passes, hooked)
}

/// The hooked function (`hooked` accepts its name) that straight-line code
/// from `vaddr` reaches first, passing only the conditional branches whose
/// targets `passes` accepts.
fn reached_call(
    data: &[u8],
    file: &object::File,
    callees: &Callees,
    vaddr: u64,
    mut passes: impl FnMut(u64) -> bool,
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
            FlowControl::ConditionalBranch if passes(instr.near_branch_target()) => continue,
            _ => return hooked_callee(data, file, callees, vaddr, &instr, &hooked),
        }
    }
    None
}

/// The hooked function that the call or jump `instr` goes to, directly,
/// through a PLT stub or through a GOT slot; None for any other
/// instruction or callee.
fn hooked_callee(
    data: &[u8],
    file: &object::File,
    callees: &Callees,
    vaddr: u64,
    instr: &Instruction,
    hooked: &impl Fn(&str) -> bool,
) -> Option<Wrapped> {
    let name = match instr.flow_control() {
        FlowControl::Call | FlowControl::UnconditionalBranch => {
            let target = instr.near_branch_target();
            callees
                .by_address
                .get(&target)
                .or_else(|| plt_slot(data, file, target).and_then(|s| callees.by_address.get(&s)))?
        }
        FlowControl::IndirectCall | FlowControl::IndirectBranch => {
            got_slot(instr).and_then(|s| callees.by_address.get(&s))?
        }
        _ => return None,
    };
    hooked(name).then(|| Wrapped {
        callee: name.clone(),
        at: instr.ip() - vaddr,
    })
}

/// An allocation function that checks its arguments, then hands the call
/// on: the hooked function it reaches, and where its failure paths start
/// (bytes from its start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub call: Wrapped,
    pub failures: Vec<u64>,
}

/// How far along a failure path to look for its return.
const MAX_FAILURE_INSTRUCTIONS: usize = 8;

/// The allocation function at `vaddr` as a [`Checked`] wrapper: from its
/// first instruction, straight-line code reaches a call or jump to a
/// function `hooked` accepts, and each conditional branch passed on the
/// way goes to a failure path: straight-line code, calling nothing, to a
/// return of NULL. glibc's `reallocarray` is one: `jo` to its ENOMEM path
/// when `nmemb * size` overflows, else `jmp realloc`. The callee's probe
/// sees every call that passes the checks, once; a probe on each failure
/// path sees the others (and none on the entry, which the kernel would
/// single-step: `mul` writes rdx first).
pub fn checked_call(
    data: &[u8],
    file: &object::File,
    callees: &Callees,
    vaddr: u64,
    hooked: impl Fn(&str) -> bool,
) -> Option<Checked> {
    let mut failures = Vec::new();
    let passes = |target: u64| {
        let fails = code_at(data, file, target).is_some_and(fails_at);
        if fails {
            failures.push(target - vaddr);
        }
        fails
    };
    let call = reached_call(data, file, callees, vaddr, passes, hooked)?;
    Some(Checked { call, failures })
}

/// Whether `code` is a failure path: straight-line code that leaves the
/// stack pointer alone and calls nothing, to a return with rax zeroed
/// (`xor eax,eax` or `mov eax,0` the last write to it).
fn fails_at(code: &[u8]) -> bool {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    let mut zeroed = false;
    for _ in 0..MAX_FAILURE_INSTRUCTIONS {
        if !decoder.can_decode() {
            return false;
        }
        let instr = decoder.decode();
        match instr.flow_control() {
            FlowControl::Return => return zeroed,
            FlowControl::Next => {}
            _ => return false,
        }
        let written = super::placement::written(&mut info, &instr);
        if written.contains(&Register::RSP) {
            return false;
        }
        if written.contains(&Register::RAX) {
            zeroed = zeroes_rax(&instr);
        }
    }
    false
}

/// `xor eax,eax` (or rax), or `mov eax,0`.
fn zeroes_rax(instr: &Instruction) -> bool {
    let eax = |i: u32| {
        instr.op_kind(i) == OpKind::Register
            && matches!(instr.op_register(i), Register::EAX | Register::RAX)
    };
    match instr.code() {
        Code::Xor_r32_rm32 | Code::Xor_rm32_r32 | Code::Xor_r64_rm64 | Code::Xor_rm64_r64 => {
            eax(0) && eax(1) && instr.op0_register() == instr.op1_register()
        }
        Code::Mov_r32_imm32 | Code::Mov_rm32_imm32 => eax(0) && instr.immediate32() == 0,
        _ => false,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_path_returns_null_and_calls_nothing() {
        // glibc 2.36 reallocarray's: mov rax,[rip+..]; mov dword fs:[rax],0Ch
        // (errno = ENOMEM); xor eax,eax; ret.
        let glibc = [
            0x48, 0x8b, 0x05, 0xe9, 0x85, 0x13, 0x00, 0x64, 0xc7, 0x00, 0x0c, 0x00, 0x00, 0x00,
            0x31, 0xc0, 0xc3,
        ];
        assert!(fails_at(&glibc));
        // mov eax,0; ret.
        assert!(fails_at(&[0xb8, 0x00, 0x00, 0x00, 0x00, 0xc3]));
        // mov eax,1; ret: not NULL.
        assert!(!fails_at(&[0xb8, 0x01, 0x00, 0x00, 0x00, 0xc3]));
        // xor eax,eax; mov rax,rdi; ret: zeroed, then overwritten.
        assert!(!fails_at(&[0x31, 0xc0, 0x48, 0x89, 0xf8, 0xc3]));
        // xor eax,eax; call +0; ret: calls something.
        assert!(!fails_at(&[0x31, 0xc0, 0xe8, 0x00, 0x00, 0x00, 0x00, 0xc3]));
        // xor eax,eax; pop rbx; ret: moves the stack pointer.
        assert!(!fails_at(&[0x31, 0xc0, 0x5b, 0xc3]));
        // xor eax,eax; jmp: no return in straight line.
        assert!(!fails_at(&[0x31, 0xc0, 0xeb, 0x00]));
    }
}

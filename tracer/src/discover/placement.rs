//! Probe placement: where in a hooked function its probes go.
//!
//! A uprobe costs ~0.75 µs when the kernel emulates the probed instruction
//! (relative jumps, calls and conditional branches; `push` on recent
//! kernels such as this project's 6.18) and ~10 µs when it must
//! single-step it out of line. glibc's `free` starts with `test %rdi,%rdi`
//! (single-stepped) and then `je` (emulated), so its probe goes on the `je`.
//!
//! The probe moves forward over straight-line code only: every instruction
//! it passes executes normally and falls through (no branch, call or
//! return), and none writes the stack pointer. So every call still
//! reaches the probe — with the return address still on top of the stack,
//! which is all a uretprobe needs: allocation functions' entry and return
//! probes move together (past `endbr64` and the like: a CET build's
//! function starts with `endbr64`, often followed by `test %rdi,%rdi`,
//! both single-stepped). The arguments the probe reads must still be in
//! some register there: a 64-bit `mov` between registers passed on the way
//! copies an argument, and an argument overwritten in the register the ABI
//! passed it in is read from its copy (mimalloc's `malloc` moves its size
//! to rsi and loads its heap into rdi before its first branch; the attach
//! cookie says where, `tracer_common::COOKIE_ARGS_SHIFT`). Anything else
//! keeps the probe at offset 0.

use iced_x86::{
    Code, Decoder, DecoderOptions, FastFormatter, FlowControl, Instruction, InstructionInfoFactory,
    OpAccess, OpKind, Register,
};

/// How far into the function to look (jemalloc's `free` computes its
/// thread cache's slot in ten instructions before its first branch).
const MAX_INSTRUCTIONS: usize = 16;

/// The bytes of code that many instructions may take, at most.
pub const CODE_BYTES: usize = 128;

/// Where a probe goes, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Bytes from the function's start.
    pub offset: u64,
    /// For `--verbose`: the probed instruction and what was passed over.
    pub reason: String,
    /// Whether the kernel emulates the probed instruction (else it
    /// single-steps it, ~10 µs a hit).
    pub emulated: bool,
    /// Where each of the arguments asked for is at the probe, in their
    /// order: the register the ABI passed it in while that still holds
    /// it, else a register it was copied to.
    pub registers: Vec<Register>,
}

/// Places an entry-only probe in the function whose first bytes are `code`,
/// where the probe reads `arguments` (full 64-bit registers).
pub fn place(code: &[u8], arguments: &[Register]) -> Placement {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    let mut passed: Vec<String> = Vec::new();
    // Per argument, the registers holding it: the ABI's first.
    let mut holders: Vec<Vec<Register>> = arguments.iter().map(|&r| vec![r]).collect();
    // (Kept at +0 only when the instruction there is not emulated.)
    let at_entry = |why: String| Placement {
        offset: 0,
        reason: why,
        emulated: false,
        registers: arguments.to_vec(),
    };
    for _ in 0..MAX_INSTRUCTIONS {
        if !decoder.can_decode() {
            break;
        }
        let instr = decoder.decode();
        if instr.is_invalid() {
            return at_entry("kept at +0: undecodable code".into());
        }
        let text = format_instr(&instr);
        if emulated(&instr) {
            let skipped = if passed.is_empty() {
                String::new()
            } else {
                format!(", after {}", passed.join("; "))
            };
            let registers: Vec<Register> = holders.iter().map(|h| h[0]).collect();
            let moved: Vec<String> = arguments
                .iter()
                .zip(&registers)
                .filter(|(abi, at)| abi != at)
                .map(|(abi, at)| format!("{abi:?} read from {at:?}").to_lowercase())
                .collect();
            let moved = match moved.is_empty() {
                true => String::new(),
                false => format!(" ({})", moved.join(", ")),
            };
            return Placement {
                offset: instr.ip(),
                reason: format!(
                    "+{}: {text} (emulated by the kernel){skipped}{moved}",
                    instr.ip()
                ),
                emulated: true,
                registers,
            };
        }
        if instr.flow_control() != FlowControl::Next {
            return at_entry(format!("kept at +0: {text} at +{} branches", instr.ip()));
        }
        let written = written(&mut info, &instr);
        if written.contains(&Register::RSP) {
            return at_entry(format!("kept at +0: {text} at +{} writes RSP", instr.ip()));
        }
        let copied = register_copy(&instr);
        for h in &mut holders {
            let copy = copied.filter(|(_, from)| h.contains(from));
            h.retain(|r| !written.contains(r));
            if let Some((to, _)) = copy {
                h.push(to);
            }
        }
        if let Some(i) = holders.iter().position(Vec::is_empty) {
            return at_entry(format!(
                "kept at +0: {text} at +{} writes {:?}",
                instr.ip(),
                arguments[i]
            ));
        }
        passed.push(text);
    }
    at_entry("kept at +0: no emulated instruction in straight-line reach".into())
}

/// A 64-bit `mov` from one general register to another: (to, from).
fn register_copy(instr: &Instruction) -> Option<(Register, Register)> {
    let copies = matches!(instr.code(), Code::Mov_r64_rm64 | Code::Mov_rm64_r64)
        && instr.op0_kind() == OpKind::Register
        && instr.op1_kind() == OpKind::Register;
    copies.then(|| (instr.op0_register(), instr.op1_register()))
}

/// Whether the kernel's x86 uprobe code emulates this instruction instead
/// of single-stepping it: relative branches and calls without prefixes
/// (`branch_setup_xol_ops`), `push` of a 64-bit register
/// (`push_setup_xol_ops`, recent kernels; on an older one a probed push
/// is single-stepped: slower, still correct).
fn emulated(instr: &Instruction) -> bool {
    let plain_branch =
        (instr.is_jcc_short_or_near() || instr.is_jmp_short_or_near() || instr.is_call_near())
            && matches!(instr.len(), 2 | 5 | 6)
            && !instr.has_repne_prefix()
            && !instr.has_rep_prefix()
            && instr.segment_prefix() == Register::None;
    plain_branch || instr.code() == Code::Push_r64
}

/// The full registers the instruction may write.
pub(super) fn written(info: &mut InstructionInfoFactory, instr: &Instruction) -> Vec<Register> {
    info.info(instr)
        .used_registers()
        .iter()
        .filter(|used| {
            matches!(
                used.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            )
        })
        .map(|used| used.register().full_register())
        .collect()
}

fn format_instr(instr: &Instruction) -> String {
    let mut text = String::new();
    FastFormatter::new().format(instr, &mut text);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const RDI: &[Register] = &[Register::RDI];

    #[test]
    fn glibc_free_is_probed_at_its_branch() {
        // glibc 2.36 free: test rdi,rdi; je +0xbf; push rbp; lea rsi,[rdi-10h]
        let code = [
            0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0x00, 0x00, 0x00, 0x55, 0x48, 0x8d, 0x77, 0xf0,
        ];
        let p = place(&code, RDI);
        assert_eq!(p.offset, 3, "{p:?}");
        assert!(
            p.reason.contains("je") && p.reason.contains("after test rdi,rdi"),
            "{p:?}"
        );
    }

    #[test]
    fn jemalloc_free_is_probed_at_its_first_branch() {
        // Debian's libjemalloc2 5.3 free: mov rax,rdi; mov rdx,[rip+..];
        // mov rcx,rdi; shr rax,1Ah; and rcx,..; and eax,0F0h; add
        // rax,fs:[0]; add rax,rdx; cmp rcx,[rax+1B0h]; jne (the tenth).
        let code = [
            0x48, 0x89, 0xf8, 0x48, 0x8b, 0x15, 0x0e, 0x53, 0x0a, 0x00, 0x48, 0x89, 0xf9, 0x48,
            0xc1, 0xe8, 0x1a, 0x48, 0x81, 0xe1, 0x00, 0x00, 0x00, 0xc0, 0x25, 0xf0, 0x00, 0x00,
            0x00, 0x64, 0x48, 0x03, 0x04, 0x25, 0x00, 0x00, 0x00, 0x00, 0x48, 0x01, 0xd0, 0x48,
            0x3b, 0x88, 0xb0, 0x01, 0x00, 0x00, 0x0f, 0x85, 0x8a, 0x00, 0x00, 0x00,
        ];
        let p = place(&code, RDI);
        assert_eq!(p.offset, 0x30, "{p:?}");
        assert!(p.reason.contains("jne"), "{p:?}");
    }

    #[test]
    fn already_emulated_at_entry() {
        // push r12; push rbp (glibc malloc)
        assert_eq!(place(&[0x41, 0x54, 0x55], RDI).offset, 0);
    }

    #[test]
    fn passes_over_code_that_leaves_the_arguments_alone() {
        // cmp byte [rip+0x140e71],0; mov rax,rsi; push rbx
        let code = [
            0x80, 0x3d, 0x71, 0x0e, 0x14, 0x00, 0x00, 0x48, 0x89, 0xf0, 0x53,
        ];
        let p = place(&code, RDI);
        assert_eq!(p.offset, 10, "{p:?}");
    }

    #[test]
    fn reads_an_argument_from_its_copy() {
        // mimalloc 2.0's malloc: mov rax,[rip+..]; mov rsi,rdi; mov
        // rdi,fs:[rax]; cmp rsi,400h; ja: the size is in rsi at the ja.
        let code = [
            0x48, 0x8b, 0x05, 0x49, 0xb4, 0x00, 0x00, 0x48, 0x89, 0xfe, 0x64, 0x48, 0x8b, 0x38,
            0x48, 0x81, 0xfe, 0x00, 0x04, 0x00, 0x00, 0x77, 0x29,
        ];
        let p = place(&code, RDI);
        assert_eq!(
            (p.offset, p.registers.as_slice()),
            (21, &[Register::RSI][..]),
            "{p:?}"
        );
        assert!(p.reason.ends_with("(rdi read from rsi)"), "{p:?}");
        // Its realloc: mov rax,[rip+..]; mov rdx,rsi; mov rsi,rdi; mov
        // rax,fs:[rax]; mov rdi,rax; jmp mi_heap_realloc: both moved.
        let code = [
            0x48, 0x8b, 0x05, 0x49, 0xa9, 0x00, 0x00, 0x48, 0x89, 0xf2, 0x48, 0x89, 0xfe, 0x64,
            0x48, 0x8b, 0x00, 0x48, 0x89, 0xc7, 0xe9, 0xf7, 0x4e, 0xff, 0xff,
        ];
        let p = place(&code, &[Register::RDI, Register::RSI]);
        assert_eq!(
            (p.offset, p.registers.as_slice()),
            (20, &[Register::RSI, Register::RDX][..]),
            "{p:?}"
        );
        // A copy overwritten in turn loses the argument: mov rsi,rdi; mov
        // rdi,rax; mov rsi,rax; ja.
        let code = [
            0x48, 0x89, 0xfe, 0x48, 0x89, 0xc7, 0x48, 0x89, 0xc6, 0x77, 0x29,
        ];
        let p = place(&code, RDI);
        assert_eq!((p.offset, p.registers.as_slice()), (0, RDI), "{p:?}");
        assert!(p.reason.contains("writes RDI"), "{p:?}");
        // A 32-bit copy truncates: not a copy.
        let code = [0x89, 0xfe, 0x48, 0x89, 0xc7, 0x77, 0x29];
        assert_eq!(place(&code, RDI).offset, 0);
    }

    #[test]
    fn stays_at_entry_when_unsure() {
        // mov rdi,rsi; push rbx: the argument is overwritten first.
        let p = place(&[0x48, 0x89, 0xf7, 0x53], RDI);
        assert_eq!(p.offset, 0, "{p:?}");
        assert!(p.reason.contains("writes RDI"), "{p:?}");
        // sub rsp,0x18; push rbx: the stack pointer moves.
        assert_eq!(place(&[0x48, 0x83, 0xec, 0x18, 0x53], RDI).offset, 0);
        // ret: control flow leaves.
        assert_eq!(place(&[0xc3, 0x53], RDI).offset, 0);
        // Nothing emulated within reach (sixteen `test rdi,rdi`).
        assert_eq!(place(&[0x48, 0x85, 0xff].repeat(16), RDI).offset, 0);
        // Truncated code.
        assert_eq!(place(&[0x48, 0x85], RDI).offset, 0);
    }
}

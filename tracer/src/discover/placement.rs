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
//! return), and none writes the registers the probe reads (the argument
//! registers given) or the stack pointer. So every call still reaches the
//! probe, with its arguments intact — and with the return address still on
//! top of the stack, which is all a uretprobe needs: allocation functions'
//! entry and return probes move together (past `endbr64` and the like:
//! a CET build's function starts with `endbr64`, often followed by `test
//! %rdi,%rdi`, both single-stepped). Anything else keeps the probe at
//! offset 0.

use iced_x86::{
    Code, Decoder, DecoderOptions, FastFormatter, FlowControl, Instruction, InstructionInfoFactory,
    OpAccess, Register,
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
}

/// Places an entry-only probe in the function whose first bytes are `code`,
/// where the probe reads `arguments` (full 64-bit registers).
pub fn place(code: &[u8], arguments: &[Register]) -> Placement {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut info = InstructionInfoFactory::new();
    let mut passed: Vec<String> = Vec::new();
    let at_entry = |why: String| Placement {
        offset: 0,
        reason: why,
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
            return Placement {
                offset: instr.ip(),
                reason: format!("+{}: {text} (emulated by the kernel){skipped}", instr.ip()),
            };
        }
        if instr.flow_control() != FlowControl::Next {
            return at_entry(format!("kept at +0: {text} at +{} branches", instr.ip()));
        }
        if let Some(reg) = writes_any(&mut info, &instr, arguments) {
            return at_entry(format!(
                "kept at +0: {text} at +{} writes {reg:?}",
                instr.ip()
            ));
        }
        passed.push(text);
    }
    at_entry("kept at +0: no emulated instruction in straight-line reach".into())
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

/// The first of `registers` (or the stack pointer) the instruction may
/// write.
fn writes_any(
    info: &mut InstructionInfoFactory,
    instr: &Instruction,
    registers: &[Register],
) -> Option<Register> {
    info.info(instr).used_registers().iter().find_map(|used| {
        let reg = used.register().full_register();
        let writes = matches!(
            used.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        );
        (writes && (reg == Register::RSP || registers.contains(&reg))).then_some(reg)
    })
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

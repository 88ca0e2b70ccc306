//! Unwind tables from a file's call frame information: every row of every
//! FDE of `.eh_frame` (or `.debug_frame` when there is none), parsed with
//! gimli and reduced to what the kernel-side walker follows (CFA from rsp
//! or rbp plus an offset, where rbp was saved, return address at CFA-8),
//! sorted by address, gaps between functions marked, repeats dropped.

use anyhow::{Context, Result};
use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, LittleEndian, RegisterRule,
    UnwindContext, UnwindSection, X86_64,
};
use object::{Object, ObjectSection, ObjectSegment};
use tracer_common::{row, UnwindRow};

/// A file's unwind information as the walker uses it.
#[derive(Debug, Default)]
pub struct Table {
    /// Sorted by `pc`, no two rows with the same `pc` or the same rule in a
    /// row.
    pub rows: Vec<UnwindRow>,
    /// The file's code keeps frame pointers: nearly every function of some
    /// size sets up rbp as its frame's base (see [`FP_SHARE`]).
    pub frame_pointers: bool,
    /// Executable loadable segments: (file offset, file size, virtual
    /// address), to turn a mapping's file offset into the addresses the
    /// rows use.
    pub segments: Vec<(u64, u64, u64)>,
}

/// Share of the functions (of at least [`FP_MIN_FUNCTION`] bytes) that
/// must build an rbp frame for a file to count as keeping frame pointers.
/// Built with `-fno-omit-frame-pointer` every one of them does; without,
/// only those with variable-size frames do (under 10 % in Debian's libc).
const FP_SHARE: f64 = 0.9;
const FP_MIN_FUNCTION: u64 = 32;
/// Fewer functions than this: too few to tell, the table is used.
const FP_MIN_FUNCTIONS: usize = 8;

/// Builds the table of an ELF file's bytes.
pub fn build(data: &[u8]) -> Result<Table> {
    let file = object::File::parse(data).context("parsing the ELF file")?;
    let segments = file
        .segments()
        .filter(|s| matches!(s.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0))
        .map(|s| {
            let (offset, size) = s.file_range();
            (offset, size, s.address())
        })
        .collect();
    let address = |name: &str| file.section_by_name(name).map(|s| s.address());
    let mut bases = BaseAddresses::default();
    if let Some(text) = address(".text") {
        bases = bases.set_text(text);
    }
    if let Some(got) = address(".got") {
        bases = bases.set_got(got);
    }
    let mut builder = Builder::default();
    match file.section_by_name(".eh_frame") {
        Some(section) => {
            let data = section.data().context("reading .eh_frame")?;
            let bases = bases.set_eh_frame(section.address());
            let eh_frame = EhFrame::new(data, LittleEndian);
            builder.section(&eh_frame, &bases)?;
        }
        None => {
            if let Some(section) = file.section_by_name(".debug_frame") {
                let data = section.data().context("reading .debug_frame")?;
                let debug_frame = DebugFrame::new(data, LittleEndian);
                builder.section(&debug_frame, &bases)?;
            }
        }
    }
    Ok(builder.finish(segments))
}

#[derive(Default)]
struct Builder {
    /// Every row that changes the rule (`pc` set), and a `row::NONE` at
    /// each function's end; sorted and reduced by `finish`. Rows beyond
    /// 4 GiB are left out: no file a process maps has code there, and
    /// their code would be walked by frame pointer.
    rows: Vec<UnwindRow>,
    functions: usize,
    with_frame: usize,
}

impl Builder {
    fn section<'a, S>(&mut self, section: &S, bases: &BaseAddresses) -> Result<()>
    where
        S: UnwindSection<gimli::EndianSlice<'a, LittleEndian>>,
    {
        let mut ctx = Box::new(UnwindContext::new());
        let mut entries = section.entries(bases);
        // A malformed entry ends the walk through the section; the rows
        // gathered so far stay (code after it is walked by frame pointer).
        while let Ok(Some(entry)) = entries.next() {
            let CieOrFde::Fde(partial) = entry else {
                continue;
            };
            let Ok(fde) = partial.parse(|s, b, o| s.cie_from_offset(b, o)) else {
                continue;
            };
            let (start, end) = (fde.initial_address(), fde.end_address());
            if end <= start {
                continue;
            }
            let Ok(mut table) = fde.rows(section, bases, &mut ctx) else {
                continue;
            };
            let (mut has_frame, mut compiled) = (false, true);
            let mut last: Option<UnwindRow> = None;
            while let Ok(Some(r)) = table.next_row() {
                let mut unwind = convert(r.cfa(), r.register(X86_64::RA), r.register(X86_64::RBP));
                has_frame |= unwind.kind == row::CFA_RBP && unwind.rbp_slot == -2;
                // Hand-written entry code (`_start`) and the PLT (DWARF
                // expressions) say nothing of how the file was compiled.
                compiled &= !matches!(unwind.kind, row::OUTERMOST | row::UNSUPPORTED);
                // Rows that only move other registers' rules change
                // nothing here (about half of them).
                if last.is_some_and(|l| same_rule(&l, &unwind)) {
                    continue;
                }
                last = Some(unwind);
                if let Ok(pc) = u32::try_from(r.start_address()) {
                    unwind.pc = pc;
                    self.rows.push(unwind);
                }
            }
            if let Ok(pc) = u32::try_from(end) {
                self.rows.push(UnwindRow {
                    pc,
                    ..UnwindRow::default()
                });
            }
            if compiled && end - start >= FP_MIN_FUNCTION {
                self.functions += 1;
                self.with_frame += usize::from(has_frame);
            }
        }
        Ok(())
    }

    fn finish(mut self, segments: Vec<(u64, u64, u64)>) -> Table {
        // A function's first row wins over the end mark of the one before
        // it at the same address (stable sort: marks come after the rows
        // they end, so rows of a function starting there come later).
        self.rows.sort_by_key(|r| (r.pc, r.kind != row::NONE));
        let mut rows: Vec<UnwindRow> = Vec::with_capacity(self.rows.len());
        for r in self.rows {
            match rows.last_mut() {
                Some(last) if last.pc == r.pc => *last = r,
                Some(last) if same_rule(last, &r) => {}
                _ => rows.push(r),
            }
        }
        // Same-address replacements may have left repeats behind.
        rows.dedup_by(|r, prev| same_rule(prev, r));
        rows.shrink_to_fit();
        let frame_pointers = self.functions >= FP_MIN_FUNCTIONS
            && self.with_frame as f64 >= FP_SHARE * self.functions as f64;
        Table {
            rows,
            frame_pointers,
            segments,
        }
    }
}

fn same_rule(a: &UnwindRow, b: &UnwindRow) -> bool {
    (a.kind, a.cfa_offset, a.rbp_slot) == (b.kind, b.cfa_offset, b.rbp_slot)
}

/// One row's rules as the walker follows them, or `row::UNSUPPORTED`.
fn convert<T: gimli::ReaderOffset>(
    cfa: &CfaRule<T>,
    ra: Option<RegisterRule<T>>,
    rbp: Option<RegisterRule<T>>,
) -> UnwindRow {
    let unsupported = UnwindRow {
        kind: row::UNSUPPORTED,
        ..UnwindRow::default()
    };
    match ra {
        Some(RegisterRule::Undefined) => {
            return UnwindRow {
                kind: row::OUTERMOST,
                ..UnwindRow::default()
            }
        }
        Some(RegisterRule::Offset(-8)) => {}
        _ => return unsupported,
    }
    let (kind, offset) = match *cfa {
        CfaRule::RegisterAndOffset { register, offset } => match register {
            X86_64::RSP => (row::CFA_RSP, offset),
            X86_64::RBP => (row::CFA_RBP, offset),
            _ => return unsupported,
        },
        CfaRule::Expression(_) => return unsupported,
    };
    let Ok(cfa_offset) = i16::try_from(offset) else {
        return unsupported;
    };
    let rbp_slot = match rbp {
        None | Some(RegisterRule::SameValue) | Some(RegisterRule::Undefined) => 0,
        Some(RegisterRule::Offset(o)) if o % 8 == 0 && o != 0 => match i8::try_from(o / 8) {
            Ok(slot) => slot,
            Err(_) => return unsupported,
        },
        Some(_) => return unsupported,
    };
    UnwindRow {
        pc: 0,
        cfa_offset,
        rbp_slot,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_of(path: &str) -> Table {
        build(&std::fs::read(path).unwrap()).unwrap()
    }

    /// The walker's view of `pc` in `table`: the last row at or below it.
    fn lookup(table: &Table, pc: u64) -> UnwindRow {
        let i = table.rows.partition_point(|r| u64::from(r.pc) <= pc);
        table.rows[i - 1]
    }

    #[test]
    fn rows_are_sorted_and_reduced() {
        let t = table_of("/proc/self/exe");
        assert!(t.rows.len() > 1000, "{} rows", t.rows.len());
        for w in t.rows.windows(2) {
            assert!(w[0].pc < w[1].pc, "{:?}", w);
            assert!(!same_rule(&w[0], &w[1]), "{:?}", w);
        }
    }

    #[test]
    fn libc_has_no_frame_pointers_and_a_start_of_thread() {
        let t = table_of("/lib/x86_64-linux-gnu/libc.so.6");
        assert!(!t.frame_pointers);
        // clone3's child side marks its return address undefined: the
        // outermost frame of every thread.
        assert!(t.rows.iter().any(|r| r.kind == row::OUTERMOST));
        let kinds = |k: u8| t.rows.iter().filter(|r| r.kind == k).count();
        assert!(kinds(row::CFA_RSP) > 10 * kinds(row::UNSUPPORTED));
    }

    #[test]
    fn function_entry_is_cfa_rsp_plus_8() {
        let t = table_of("/lib/x86_64-linux-gnu/libc.so.6");
        // Every function starts with the return address at the stack
        // pointer: CFA = rsp + 8.
        let data = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        let file = object::File::parse(&*data).unwrap();
        use object::ObjectSymbol;
        let malloc = file
            .dynamic_symbols()
            .find(|s| s.name() == Ok("malloc"))
            .unwrap()
            .address();
        let r = lookup(&t, malloc);
        assert_eq!((r.kind, r.cfa_offset, r.rbp_slot), (row::CFA_RSP, 8, 0));
    }
}

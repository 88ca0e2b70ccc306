//! One read of a Go program's goroutine list: `runtime.allgs` (a slice of
//! `*g`, `runtime.allglen` long), each goroutine's id, status, wait
//! reason, the PC of the `go` statement that created it, its start
//! function's PC and its stack's bounds. Dead goroutines (kept by the
//! runtime for reuse) are left out; a `g` that does not read is counted.

use super::layout::Layout;
use crate::discover::memory::{u32_at, u64_at, Memory, MAX_OBJECT_BYTES};

/// Goroutines read at most in one pass.
pub const MAX_GOROUTINES: u64 = 1 << 20;

/// `_Gscan`: set on a status while the garbage collector scans the stack.
const SCAN: u32 = 0x1000;
const IDLE: u32 = 0;
const WAITING: u32 = 4;
const DEAD: u32 = 6;
/// Go 1.26: a goroutine the runtime found leaked (blocked for ever).
const LEAKED: u32 = 10;
/// Go 1.26: a goroutine kept for cgo callbacks on extra Ms (dead before).
const DEAD_EXTRA: u32 = 11;

/// A live goroutine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Goroutine {
    pub id: u64,
    /// Its status without the scan bit.
    pub status: u32,
    pub wait_reason: u8,
    /// The return address of the `go` statement's call into the runtime.
    pub go_pc: u64,
    /// Its start function's entry.
    pub start_pc: u64,
    /// Its stack's size (bytes).
    pub stack_bytes: u64,
}

/// One pass over the list.
#[derive(Debug, Default)]
pub struct List {
    pub goroutines: Vec<Goroutine>,
    /// Entries of `allgs` read (dead goroutines included).
    pub entries: u64,
    /// Entries that did not read, read as nothing a goroutine can be, or
    /// were left unread (past [`MAX_GOROUTINES`], or a part of the slice
    /// that did not read).
    pub skipped: u64,
}

/// Reads the list at `allgs` (the slice header) of `allglen` entries.
pub fn read(mem: &Memory, layout: &Layout, allgs: u64, allglen: u64) -> List {
    let mut list = List::default();
    let (Some(len), Some(array)) = (mem.u64(allglen), mem.u64(allgs)) else {
        return list;
    };
    list.skipped = len.saturating_sub(MAX_GOROUTINES);
    let len = len.min(MAX_GOROUTINES);
    let per_read = MAX_OBJECT_BYTES / 8;
    let g_size = layout.g_size as usize;
    let mut start = 0;
    while start < len {
        let n = per_read.min(len - start);
        let Some(raw) = mem.bytes(array + start * 8, n * 8) else {
            list.skipped += len - start;
            break;
        };
        // Every g of this part of the slice, read in batches.
        let pieces: Vec<(u64, usize)> = raw
            .chunks_exact(8)
            .map(|c| (u64::from_le_bytes(c.try_into().unwrap()), g_size))
            .collect();
        let mut gs = vec![0u8; pieces.len() * g_size];
        let read = mem.read_many(&pieces, &mut gs);
        list.entries += pieces.len() as u64;
        for (i, g) in gs.chunks_exact(g_size).enumerate() {
            match read[i].then_some(()).and_then(|_| parse(g, layout)) {
                Some(Some(gr)) => list.goroutines.push(gr),
                Some(None) => {}
                None => list.skipped += 1,
            }
        }
        start += n;
    }
    list
}

/// One `g`: None when it does not parse, Some(None) when it is dead.
fn parse(g: &[u8], l: &Layout) -> Option<Option<Goroutine>> {
    let status = u32_at(g, l.g_status)? & !SCAN;
    if status == DEAD || status == IDLE || status == DEAD_EXTRA {
        return Some(None);
    }
    if status > LEAKED {
        return None;
    }
    // A live goroutine's stack is a power of two of at least 2 KiB, and
    // its id is not 0: what a wrong layout reads fails this.
    let (lo, hi) = (u64_at(g, l.g_stack_lo)?, u64_at(g, l.g_stack_hi)?);
    let size = hi.checked_sub(lo)?;
    let id = u64_at(g, l.g_goid)?;
    if !size.is_power_of_two() || size < 2048 || id == 0 {
        return None;
    }
    Some(Some(Goroutine {
        id,
        status,
        wait_reason: *g.get(l.g_waitreason as usize)?,
        go_pc: u64_at(g, l.g_gopc)?,
        start_pc: u64_at(g, l.g_startpc)?,
        stack_bytes: size,
    }))
}

/// What a goroutine is doing, as `runtime.Stack` writes it: its wait
/// reason when waiting ("chan receive"), else its status.
pub fn state(status: u32, wait_reason: u8, reasons: &[String]) -> String {
    match status {
        1 => "runnable".into(),
        2 => "running".into(),
        3 => "syscall".into(),
        WAITING => match reasons.get(usize::from(wait_reason)) {
            Some(r) if !r.is_empty() => r.clone(),
            _ => "waiting".into(),
        },
        8 => "copystack".into(),
        9 => "preempted".into(),
        LEAKED => "leaked".into(),
        _ => format!("status {status}"),
    }
}

/// `n` Go strings (pointer, length) at `addr`: `runtime.waitReasonStrings`.
pub fn read_strings(mem: &Memory, addr: u64, n: u64) -> Vec<String> {
    let Some(raw) = mem.bytes(addr, n.min(1024) * 16) else {
        return Vec::new();
    };
    raw.chunks_exact(16)
        .map(|s| {
            let ptr = u64::from_le_bytes(s[..8].try_into().unwrap());
            let len = u64::from_le_bytes(s[8..].try_into().unwrap());
            match len {
                0 => String::new(),
                1..=256 => mem
                    .bytes(ptr, len)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default(),
                _ => String::new(),
            }
        })
        .collect()
}

//! Userspace's side of the kernel's live-block table (`LIVE`, a table of
//! memtrace's own in a `BPF_F_MMAPABLE` array, see tracer-ebpf's
//! `live.rs`): reading every outstanding heap block in place, and taking
//! out the blocks of exited processes and replaced images. The array is
//! mapped a window at a time ([`WINDOW`]), so that however large
//! `--max-live` makes it, it adds at most one window to memtrace's
//! resident set, and only while a scan runs.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use aya::maps::{Map, MapData};
use tracer_common::{LiveBucket, LiveSlot, LIVE_BUSY};

use crate::bpf::window::{Window, PAGE};

/// An outstanding heap block as the kernel recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveBlock {
    pub tgid: u32,
    pub addr: u64,
    pub size: u64,
    pub timestamp_ns: u64,
    pub stack_id: u32,
}

/// Bytes of the table mapped at once.
const WINDOW: usize = 4 << 20;

/// The live table's map (an array of buckets).
pub fn table(map: Option<&Map>) -> Result<&MapData> {
    match map {
        Some(Map::Array(data)) => Ok(data),
        Some(_) => bail!("LIVE is not an array"),
        None => bail!("LIVE map missing"),
    }
}

/// Visits every block in the table, and takes out those `take` returns
/// true for; returns the blocks taken (not those freed meanwhile). A block
/// being written or freed while the scan passes it may be missed or seen
/// once more: the scan is not a snapshot.
pub fn scan(map: &MapData, mut take: impl FnMut(&LiveBlock) -> bool) -> Result<Vec<LiveBlock>> {
    let buckets = map.info().context("reading LIVE's size")?.max_entries() as usize;
    let bytes = (buckets * size_of::<LiveBucket>()).div_ceil(PAGE) * PAGE;
    let mut taken = Vec::new();
    let mut offset = 0;
    while offset < bytes {
        let len = WINDOW.min(bytes - offset);
        let window = Window::map(map, offset, len).context("mapping the live table")?;
        let first = offset / size_of::<LiveBucket>();
        let count = (len / size_of::<LiveBucket>()).min(buckets - first);
        // SAFETY: `count` whole buckets lie within the mapping (buckets
        // are 256 bytes, windows a multiple of it); the kernel changes them
        // concurrently, which `visit_window` reads for.
        unsafe {
            visit_window(
                window.as_mut_ptr().cast::<LiveBucket>(),
                count,
                &mut take,
                &mut taken,
            )
        };
        offset += len;
    }
    Ok(taken)
}

/// Visits `count` buckets at `buckets`, memory the kernel writes
/// concurrently: a slot's address is read before and after its other
/// fields, and the slot skipped if it changed (freed, or reused, meanwhile).
/// A block is taken out by a compare-and-swap of its address, as the
/// kernel's frees do. One race is left: if the kernel records the same
/// address for the same process again (its free missed, the address handed
/// out anew) between the second read and the swap, the new block is taken
/// on the old record's say: a block counted freed, never a phantom.
///
/// # Safety
/// `buckets` points at `count` buckets of a live mapping of the table.
unsafe fn visit_window(
    buckets: *mut LiveBucket,
    count: usize,
    take: &mut impl FnMut(&LiveBlock) -> bool,
    taken: &mut Vec<LiveBlock>,
) {
    for b in 0..count {
        for way in 0..tracer_common::LIVE_WAYS {
            // SAFETY: within the mapping (see above).
            let slot: *mut LiveSlot = unsafe { &raw mut (*buckets.add(b)).slots[way] };
            // SAFETY: an aligned u64 of shared memory, accessed atomically
            // by the kernel's programs too.
            let word = unsafe { AtomicU64::from_ptr(&raw mut (*slot).addr) };
            let addr = word.load(Ordering::Acquire);
            if addr == 0 || addr == LIVE_BUSY {
                continue;
            }
            // SAFETY: as above; plain reads of fields that may be changing.
            let block = unsafe {
                LiveBlock {
                    tgid: std::ptr::read_volatile(&raw const (*slot).tgid),
                    addr,
                    size: std::ptr::read_volatile(&raw const (*slot).size),
                    timestamp_ns: std::ptr::read_volatile(&raw const (*slot).timestamp_ns),
                    stack_id: std::ptr::read_volatile(&raw const (*slot).stack_id),
                }
            };
            // The field reads above must not move below this second read.
            std::sync::atomic::fence(Ordering::Acquire);
            if word.load(Ordering::Acquire) != addr {
                continue;
            }
            if take(&block)
                && word
                    .compare_exchange(addr, 0, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                taken.push(block);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(tgid: u32, addr: u64, size: u64) -> LiveSlot {
        LiveSlot {
            addr,
            size,
            timestamp_ns: size * 10,
            stack_id: size as u32 + 1,
            tgid,
        }
    }

    #[test]
    fn scan_skips_free_and_busy_slots_and_takes_what_it_is_asked_to() {
        let mut table = vec![LiveBucket::default(); 3];
        table[0].slots[1] = slot(7, 0x1000, 16);
        table[0].slots[3] = slot(8, 0x2000, 32);
        table[1].slots[0] = LiveSlot {
            addr: LIVE_BUSY,
            ..slot(7, 0, 99)
        };
        table[2].slots[2] = slot(7, 0x3000, 48);
        let mut seen = Vec::new();
        let mut taken = Vec::new();
        // SAFETY: three buckets of plain memory.
        unsafe {
            visit_window(
                table.as_mut_ptr(),
                table.len(),
                &mut |b: &LiveBlock| {
                    seen.push(b.addr);
                    b.tgid == 7
                },
                &mut taken,
            )
        };
        assert_eq!(seen, [0x1000, 0x2000, 0x3000]);
        assert_eq!(
            taken,
            [
                LiveBlock {
                    tgid: 7,
                    addr: 0x1000,
                    size: 16,
                    timestamp_ns: 160,
                    stack_id: 17
                },
                LiveBlock {
                    tgid: 7,
                    addr: 0x3000,
                    size: 48,
                    timestamp_ns: 480,
                    stack_id: 49
                },
            ]
        );
        // Taken slots are free again; the other process's block and the
        // slot being written are untouched.
        assert_eq!(table[0].slots[1].addr, 0);
        assert_eq!(table[2].slots[2].addr, 0);
        assert_eq!(table[0].slots[3], slot(8, 0x2000, 32));
        assert_eq!(table[1].slots[0].addr, LIVE_BUSY);
    }
}

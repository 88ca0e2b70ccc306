//! Accounting of anonymous memory mappings made by the targets themselves
//! (not by their allocator): region arithmetic for mmap, partial munmap,
//! MAP_FIXED replacement and mremap moves, per allocation stack. At most
//! `max_mappings` mmap calls are recorded live at once (`--max-live`, like
//! the kernel's table of heap blocks): beyond, a mapping is counted as
//! lost (`mapping_table_full`), never as a leak.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::accounting::series::{AgeStats, StackTotals};

/// Opaque stack handle chosen by the caller (the aggregator's stack index).
pub type StackRef = usize;

#[derive(Clone, Copy, Debug)]
struct Piece {
    end: u64,
    stack: StackRef,
    /// The mmap call this piece comes from: a region split by a partial
    /// munmap is still one allocation until its last piece goes.
    origin: u64,
    /// When that mmap happened (kernel monotonic ns).
    since_ns: u64,
}

/// Live anonymous regions of every target and what they add up to per stack.
pub struct MappingTracker {
    /// pid → start → piece.
    regions: HashMap<u32, BTreeMap<u64, Piece>>,
    /// origin → number of live pieces.
    pieces_of: HashMap<u64, u32>,
    next_origin: u64,
    totals: HashMap<StackRef, StackTotals>,
    /// Live mmap calls recorded at most.
    max_mappings: usize,
    /// Mappings not recorded: the table was full.
    pub table_full: u64,
}

impl MappingTracker {
    pub fn new(max_mappings: usize) -> MappingTracker {
        MappingTracker {
            regions: HashMap::new(),
            pieces_of: HashMap::new(),
            next_origin: 0,
            totals: HashMap::new(),
            max_mappings,
            table_full: 0,
        }
    }

    /// Whether another mapping can be recorded.
    pub fn has_room(&self) -> bool {
        self.pieces_of.len() < self.max_mappings
    }

    /// A successful anonymous mmap of `[addr, addr+len)` at `since_ns`; not
    /// recorded (but replacing what it maps over) when the table is full.
    pub fn mmap(&mut self, pid: u32, addr: u64, len: u64, stack: StackRef, since_ns: u64) {
        if len == 0 {
            return;
        }
        // MAP_FIXED over our own regions replaces them.
        self.unmap(pid, addr, len);
        if !self.has_room() {
            self.table_full += 1;
            return;
        }
        self.next_origin += 1;
        let origin = self.next_origin;
        self.insert_piece(
            pid,
            addr,
            Piece {
                end: addr + len,
                stack,
                origin,
                since_ns,
            },
        );
        let t = self.totals.entry(stack).or_default();
        t.allocated_bytes += len;
        t.allocations += 1;
    }

    /// A successful munmap: every byte of our regions inside the range is
    /// freed; ranges we never recorded are ignored.
    pub fn unmap(&mut self, pid: u32, addr: u64, len: u64) {
        for (piece, bytes) in self.cut(pid, addr, addr.saturating_add(len)) {
            let gone = self.drop_piece(piece.origin);
            let t = self.totals.entry(piece.stack).or_default();
            t.freed_bytes += bytes;
            if gone {
                t.frees += 1;
            }
        }
    }

    /// A successful mremap: the bytes of `[old, old+old_len)` move to
    /// `[new, new+new_len)` keeping their stack; growth is allocated to it,
    /// shrinkage freed from it.
    pub fn mremap(&mut self, pid: u32, old: u64, old_len: u64, new: u64, new_len: u64) {
        let cut = self.cut(pid, old, old.saturating_add(old_len));
        let Some(&(first, _)) = cut.first() else {
            return; // not one of ours
        };
        let moved: u64 = cut.iter().map(|(_, b)| b).sum();
        for (piece, _) in &cut {
            self.drop_piece(piece.origin);
        }
        self.unmap(pid, new, new_len);
        self.insert_piece(
            pid,
            new,
            Piece {
                end: new + new_len,
                ..first
            },
        );
        let t = self.totals.entry(first.stack).or_default();
        if new_len > moved {
            t.allocated_bytes += new_len - moved;
        } else {
            t.freed_bytes += moved - new_len;
        }
    }

    /// The process called exec: every region of the old image is released.
    pub fn release_all(&mut self, pid: u32) {
        let Some(regions) = self.regions.remove(&pid) else {
            return;
        };
        for (start, piece) in regions {
            let gone = self.drop_piece(piece.origin);
            let t = self.totals.entry(piece.stack).or_default();
            t.freed_bytes += piece.end - start;
            if gone {
                t.frees += 1;
            }
        }
    }

    /// Forgets processes that are gone, and follows the stack handles that
    /// moved (`remap[old]`, None for stacks dropped with them).
    pub fn forget(&mut self, gone: &HashSet<u32>, remap: &[Option<StackRef>]) {
        for pid in gone {
            for piece in self
                .regions
                .remove(pid)
                .into_iter()
                .flat_map(|r| r.into_values())
            {
                self.drop_piece(piece.origin);
            }
        }
        self.follow(remap);
    }

    /// The stacks that live regions belong to.
    pub fn stacks_in_use(&self) -> HashSet<StackRef> {
        self.regions
            .values()
            .flat_map(|r| r.values().map(|p| p.stack))
            .collect()
    }

    /// Follows the stack handles that moved (`remap[old]`); the totals of
    /// stacks removed (None) go, and no live region may belong to one.
    pub fn follow(&mut self, remap: &[Option<StackRef>]) {
        let follow = |s: StackRef| remap.get(s).copied().flatten();
        for piece in self.regions.values_mut().flat_map(|r| r.values_mut()) {
            // A live process's stacks are its own: they all stay.
            piece.stack = follow(piece.stack).unwrap_or(piece.stack);
        }
        self.totals = std::mem::take(&mut self.totals)
            .into_iter()
            .filter_map(|(s, t)| Some((follow(s)?, t)))
            .collect();
    }

    pub fn totals(&self) -> impl Iterator<Item = (StackRef, &StackTotals)> {
        self.totals.iter().map(|(s, t)| (*s, t))
    }

    /// Ages of the live regions at `now_ns`, per stack; a region split by
    /// partial unmaps counts as one allocation.
    pub fn ages(&self, now_ns: u64, min_age_secs: f64) -> HashMap<StackRef, AgeStats> {
        let mut ages: HashMap<StackRef, AgeStats> = HashMap::new();
        let mut counted = HashSet::new();
        for (start, piece) in self.regions.values().flatten() {
            let age = now_ns.saturating_sub(piece.since_ns) as f64 / 1e9;
            let new = u64::from(counted.insert(piece.origin));
            ages.entry(piece.stack)
                .or_default()
                .add(age, piece.end - start, new, min_age_secs);
        }
        ages
    }

    fn insert_piece(&mut self, pid: u32, start: u64, piece: Piece) {
        *self.pieces_of.entry(piece.origin).or_default() += 1;
        self.regions.entry(pid).or_default().insert(start, piece);
    }

    /// Removes one piece of `origin`; true if it was the last one.
    fn drop_piece(&mut self, origin: u64) -> bool {
        match self.pieces_of.get_mut(&origin) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                self.pieces_of.remove(&origin);
                true
            }
        }
    }

    /// Cuts `[start, end)` out of pid's regions. Returns the pieces touched
    /// (as they were) with the bytes removed from each; the parts of them
    /// outside the range are put back as new pieces of the same origin.
    fn cut(&mut self, pid: u32, start: u64, end: u64) -> Vec<(Piece, u64)> {
        let Some(regions) = self.regions.get_mut(&pid) else {
            return Vec::new();
        };
        let overlapping: Vec<u64> = regions
            .range(..end)
            .rev()
            .take_while(|(_, p)| p.end > start)
            .map(|(s, _)| *s)
            .collect();
        let mut cut = Vec::new();
        let mut remnants = Vec::new();
        for piece_start in overlapping {
            let piece = regions.remove(&piece_start).expect("key just listed");
            let lo = piece_start.max(start);
            let hi = piece.end.min(end);
            cut.push((piece, hi - lo));
            if piece_start < lo {
                remnants.push((piece_start, Piece { end: lo, ..piece }));
            }
            if hi < piece.end {
                remnants.push((hi, piece));
            }
        }
        for (s, piece) in remnants {
            // A remnant is a new piece of the same origin.
            *self.pieces_of.entry(piece.origin).or_default() += 1;
            regions.insert(s, piece);
        }
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;

    fn outstanding(t: &MappingTracker, stack: StackRef) -> (u64, u64) {
        let s = t.totals.get(&stack).copied().unwrap_or_default();
        (s.allocated_bytes - s.freed_bytes, s.allocations - s.frees)
    }

    #[test]
    fn a_full_table_records_no_more_mappings() {
        let mut t = MappingTracker::new(2);
        t.mmap(1, 0x10000, 4 * KIB, 7, 0);
        t.mmap(1, 0x20000, 4 * KIB, 7, 0);
        t.mmap(1, 0x30000, 4 * KIB, 8, 0);
        assert_eq!(t.table_full, 1);
        assert_eq!(outstanding(&t, 8), (0, 0));
        assert_eq!(t.stacks_in_use(), HashSet::from([7]));
        // One that maps over a recorded region still replaces it.
        t.mmap(1, 0x40000, 4 * KIB, 8, 0);
        t.mmap(1, 0x10000, 4 * KIB, 8, 0);
        assert_eq!(outstanding(&t, 7), (4 * KIB, 1));
        assert_eq!(t.table_full, 2);
        let remap: Vec<_> = [None; 7].into_iter().chain([Some(3), Some(0)]).collect();
        t.follow(&remap);
        assert_eq!(t.stacks_in_use(), HashSet::from([3, 0]));
        assert_eq!(outstanding(&t, 0), (4 * KIB, 1));
    }

    #[test]
    fn full_unmap_frees_everything() {
        let mut t = MappingTracker::new(1 << 20);
        t.mmap(1, 0x10000, 64 * KIB, 7, 0);
        assert_eq!(outstanding(&t, 7), (64 * KIB, 1));
        t.unmap(1, 0x10000, 64 * KIB);
        assert_eq!(outstanding(&t, 7), (0, 0));
    }

    #[test]
    fn partial_unmaps_keep_the_rest() {
        let mut t = MappingTracker::new(1 << 20);
        let base = 0x100000;
        t.mmap(1, base, 1024 * KIB, 1, 0);
        t.unmap(1, base, 256 * KIB); // head
        t.unmap(1, base + 768 * KIB, 256 * KIB); // tail
        assert_eq!(outstanding(&t, 1), (512 * KIB, 1));
        t.unmap(1, base + 384 * KIB, 128 * KIB); // hole in the middle
        assert_eq!(outstanding(&t, 1), (384 * KIB, 1));
        t.unmap(1, base, 1024 * KIB); // everything left, in two pieces
        assert_eq!(outstanding(&t, 1), (0, 0));
    }

    #[test]
    fn unknown_ranges_and_other_pids_are_ignored() {
        let mut t = MappingTracker::new(1 << 20);
        t.mmap(1, 0x10000, 4 * KIB, 1, 0);
        t.unmap(2, 0x10000, 4 * KIB);
        t.unmap(1, 0x90000, 4 * KIB);
        assert_eq!(outstanding(&t, 1), (4 * KIB, 1));
    }

    #[test]
    fn unmap_spanning_several_regions() {
        let mut t = MappingTracker::new(1 << 20);
        t.mmap(1, 0x10000, 4 * KIB, 1, 0);
        t.mmap(1, 0x11000, 4 * KIB, 2, 0);
        t.unmap(1, 0x10800, 4 * KIB);
        assert_eq!(outstanding(&t, 1), (2 * KIB, 1));
        assert_eq!(outstanding(&t, 2), (2 * KIB, 1));
    }

    #[test]
    fn fixed_mapping_replaces_old_region() {
        let mut t = MappingTracker::new(1 << 20);
        t.mmap(1, 0x10000, 8 * KIB, 1, 0);
        t.mmap(1, 0x10000, 8 * KIB, 2, 0);
        assert_eq!(outstanding(&t, 1), (0, 0));
        assert_eq!(outstanding(&t, 2), (8 * KIB, 1));
    }

    #[test]
    fn exec_releases_every_region() {
        let mut t = MappingTracker::new(1 << 20);
        t.mmap(1, 0x100000, 1024 * KIB, 1, 0);
        t.unmap(1, 0x100000 + 256 * KIB, 256 * KIB); // split in two pieces
        t.mmap(1, 0x900000, 8 * KIB, 2, 0);
        t.mmap(2, 0x900000, 8 * KIB, 3, 0);
        t.release_all(1);
        assert_eq!(outstanding(&t, 1), (0, 0));
        assert_eq!(outstanding(&t, 2), (0, 0));
        assert_eq!(outstanding(&t, 3), (8 * KIB, 1));
    }

    #[test]
    fn ages_count_a_split_region_once() {
        let mut t = MappingTracker::new(1 << 20);
        t.mmap(1, 0x100000, 1024 * KIB, 1, 1_000_000_000);
        t.unmap(1, 0x100000 + 256 * KIB, 256 * KIB);
        t.mmap(1, 0x900000, 8 * KIB, 2, 20_000_000_000);
        let ages = t.ages(31_000_000_000, 15.0);
        let a = ages[&1];
        assert_eq!(a.oldest_secs, 30.0);
        assert_eq!((a.bytes[1], a.allocations[1]), (768 * KIB, 1));
        assert_eq!((a.old_bytes, a.old_allocations), (768 * KIB, 1));
        let b = ages[&2];
        assert_eq!((b.bytes[1], b.allocations[1], b.old_bytes), (8 * KIB, 1, 0));
    }

    #[test]
    fn mremap_moves_and_resizes() {
        let mut t = MappingTracker::new(1 << 20);
        t.mmap(1, 0x10000, 8 * KIB, 3, 0);
        t.mremap(1, 0x10000, 8 * KIB, 0x80000, 32 * KIB);
        assert_eq!(outstanding(&t, 3), (32 * KIB, 1));
        t.unmap(1, 0x10000, 8 * KIB); // old place is no longer ours
        assert_eq!(outstanding(&t, 3), (32 * KIB, 1));
        t.mremap(1, 0x80000, 32 * KIB, 0x80000, 4 * KIB);
        assert_eq!(outstanding(&t, 3), (4 * KIB, 1));
        t.unmap(1, 0x80000, 4 * KIB);
        assert_eq!(outstanding(&t, 3), (0, 0));
    }
}

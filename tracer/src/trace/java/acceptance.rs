//! How many of a JVM's allocations the leak profiler kept a sample of, per
//! stretch between two collections: the correction that makes samples
//! taken at different times weigh alike.
//!
//! The leak profiler keeps at most 256 samples. While dead objects it has
//! not been told of yet (garbage in the old generation, until a collection
//! of it) fill its queue, it takes fewer new samples: a full cache, whose
//! old entries leave and whose new ones are sampled less and less, reads
//! as shrinking. Each stretch's surviving samples, as first seen after the
//! collection that ended it, are scaled to the bytes allocated in it (the
//! refills JFR reports, every one): a sample's weight is its refill's size
//! times its stretch's allocated bytes over its stretch's surviving
//! samples' refill sizes. Later deaths do not change a stretch's factor.

use std::collections::HashMap;

use crate::discover::java::{HeapAfterGc, Refill};

/// Refills held waiting for the collection that ends their stretch; past
/// this (no collection for long), coverage starts again.
const MAX_PENDING: usize = 1 << 20;
/// Stretches remembered (as many as heap points).
const MAX_STRETCHES: usize = 4096;

#[derive(Debug, Default)]
pub(super) struct Acceptance {
    /// Per thread, the newest refill counted (dumps overlap).
    counted: HashMap<i64, i64>,
    /// Refills (nanos, bytes) not in a closed stretch yet.
    pending: Vec<(i64, u64)>,
    /// Refills are known without a gap from this time on.
    covered_from: Option<i64>,
    /// The newest refill seen in any dump.
    newest: Option<i64>,
    /// Per stretch, in order: the collection that ended it (nanos) and its
    /// factor (none: its refills were not all seen, or it kept no sample).
    stretches: Vec<(i64, Option<f64>)>,
    /// The median of the known factors: for samples of other stretches.
    typical: f64,
}

impl Acceptance {
    /// Takes one dump's refills (each counted once across dumps).
    pub(super) fn take(&mut self, refills: &[Refill]) {
        let Some(oldest) = refills.iter().map(|r| r.nanos).min() else {
            return;
        };
        // A dump that starts after the last one's newest refill missed
        // some (reads spaced beyond the recording's maxage).
        if self.newest.is_none_or(|n| oldest > n) {
            self.covered_from = Some(oldest);
        }
        let mut refills: Vec<&Refill> = refills.iter().collect();
        refills.sort_by_key(|r| r.ticks);
        for r in refills {
            let counted = self.counted.entry(r.thread_id).or_insert(i64::MIN);
            if r.ticks <= *counted {
                continue;
            }
            *counted = r.ticks;
            self.newest = Some(self.newest.map_or(r.nanos, |n| n.max(r.nanos)));
            if self.pending.len() >= MAX_PENDING {
                self.pending.clear();
                self.covered_from = self.newest;
            }
            self.pending.push((r.nanos, r.weight));
        }
    }

    /// Closes the stretches ended by collections not seen before, with
    /// the samples first seen in them: (allocated nanos, refill size).
    pub(super) fn close(&mut self, heap: &[HeapAfterGc], samples: &[(i64, u64)]) {
        let mut closed = false;
        for gc in heap {
            let start = self.stretches.last().map(|s| s.0);
            if start.is_some_and(|s| gc.nanos <= s) || self.stretches.len() >= MAX_STRETCHES {
                continue;
            }
            let inside = |n: i64| start.is_none_or(|s| n > s) && n <= gc.nanos;
            let allocated: u64 = self
                .pending
                .iter()
                .filter(|p| inside(p.0))
                .map(|p| p.1)
                .sum();
            self.pending.retain(|p| p.0 > gc.nanos);
            let sampled: u64 = samples.iter().filter(|s| inside(s.0)).map(|s| s.1).sum();
            // The first stretch runs from the recording's start, which the
            // first dump covers.
            let complete = match (start, self.covered_from) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(s), Some(c)) => c <= s,
            };
            let factor = (complete && allocated > 0 && sampled > 0)
                .then(|| allocated as f64 / sampled as f64);
            self.stretches.push((gc.nanos, factor));
            closed = true;
        }
        if closed {
            let mut known: Vec<f64> = self.stretches.iter().filter_map(|s| s.1).collect();
            known.sort_by(f64::total_cmp);
            self.typical = known.get(known.len() / 2).copied().unwrap_or(1.0);
        }
    }

    /// The factor for a sample allocated at `nanos`.
    pub(super) fn factor(&self, nanos: i64) -> f64 {
        let i = self.stretches.partition_point(|s| s.0 < nanos);
        match self.stretches.get(i) {
            Some((_, Some(f))) => *f,
            _ if self.typical > 0.0 => self.typical,
            _ => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refill(thread_id: i64, nanos: i64, weight: u64) -> Refill {
        Refill {
            thread_id,
            ticks: nanos,
            nanos,
            weight,
            outside: false,
        }
    }

    fn gc(gc_id: i64, nanos: i64) -> HeapAfterGc {
        HeapAfterGc {
            nanos,
            gc_id,
            used: 0,
        }
    }

    #[test]
    fn a_stretch_sampled_less_weighs_its_samples_more() {
        let mut a = Acceptance::default();
        // Two stretches of 4 refills of 100 bytes each: the first kept two
        // samples, the second one (a fuller queue).
        let first: Vec<Refill> = (1..=4).map(|i| refill(1, i * 10, 100)).collect();
        let second: Vec<Refill> = (6..=9).map(|i| refill(1, i * 10, 100)).collect();
        a.take(&first);
        a.close(&[gc(1, 50)], &[(10, 100), (30, 100)]);
        // The next dump overlaps the first: its refills count once.
        a.take(&[first.clone(), second].concat());
        a.close(&[gc(1, 50), gc(2, 100)], &[(10, 100), (30, 100), (70, 100)]);
        assert_eq!(a.factor(30), 2.0);
        assert_eq!(a.factor(70), 4.0);
        // Past the last collection: the median factor.
        assert_eq!(a.factor(120), 4.0);
    }

    #[test]
    fn a_gap_in_the_refills_leaves_the_stretch_unknown() {
        let mut a = Acceptance::default();
        a.take(&[refill(1, 10, 100), refill(1, 20, 100)]);
        a.close(&[gc(1, 30)], &[(10, 100)]);
        // The next dump starts after the last refill seen: a gap.
        a.take(&[refill(1, 60, 100), refill(1, 70, 100)]);
        a.close(&[gc(1, 30), gc(2, 80)], &[(10, 100), (70, 100)]);
        assert_eq!(a.stretches[1], (80, None));
        assert_eq!(a.factor(70), a.factor(10));
    }
}

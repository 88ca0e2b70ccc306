//! Room in the kernel's stack table: when it is three quarters full, the
//! stacks that hold nothing and have not allocated for two intervals are
//! taken out of the kernel's tables (oldest idle first, down to half full),
//! so that a process making stacks by the ten thousand — an interpreter's
//! imports, each at its own line — leaves room for the ones that come
//! later. What they counted stays in the totals; one that allocates again
//! is walked and counted anew.

use std::collections::{HashMap, HashSet};

use tracer_common::{StackKey, UNKNOWN_STACK};

use crate::accounting::series::{AgeStats, StackTotals};

/// Intervals a stack must have been idle to be taken out.
const IDLE_INTERVALS: u64 = 2;

/// Which stacks were idle since when, from one interval's kernel totals to
/// the next.
pub(super) struct Recycler {
    /// The kernel's stack table size (`--max-stacks`).
    capacity: usize,
    /// Intervals seen.
    interval: u64,
    /// Each kernel stack's allocation count at its last change, and that
    /// interval (bounded by the kernel's totals table).
    last_change: HashMap<StackKey, (u64, u64)>,
    /// Ids taken out at the previous round: their frames are kept one
    /// interval more, for a block allocated while they went (see
    /// `drain::recycle_stacks`).
    pub(super) previous: Vec<u32>,
    /// Stacks taken out so far.
    pub(super) recycled: u64,
}

/// What a round takes out: kernel stack ids, and every process's totals
/// of them.
pub(super) struct Round {
    pub(super) ids: Vec<u32>,
    pub(super) keys: Vec<StackKey>,
}

impl Recycler {
    pub(super) fn new(capacity: u32) -> Self {
        Recycler {
            capacity: capacity as usize,
            interval: 0,
            last_change: HashMap::new(),
            previous: Vec::new(),
            recycled: 0,
        }
    }

    /// Notes this interval's totals (`stacks`) and live blocks (`ages`);
    /// returns the stacks to take out, if the table needs room.
    pub(super) fn round(
        &mut self,
        stacks: &[(StackKey, StackTotals)],
        ages: &HashMap<StackKey, AgeStats>,
    ) -> Option<Round> {
        self.interval += 1;
        let now = self.interval;
        let mut last = HashMap::with_capacity(stacks.len());
        for (key, t) in stacks {
            let since = match self.last_change.get(key) {
                Some(&(count, since)) if count == t.allocations => since,
                _ => now,
            };
            last.insert(*key, (t.allocations, since));
        }
        self.last_change = last;
        let ids: HashSet<u32> = stacks
            .iter()
            .map(|(k, _)| k.stack_id)
            .filter(|&id| id != UNKNOWN_STACK)
            .collect();
        if ids.len() * 4 <= self.capacity * 3 {
            return None;
        }
        // Per id: the interval its keys last changed, None if any holds a
        // block or changed lately.
        let mut idle: HashMap<u32, Option<u64>> = HashMap::new();
        for (key, &(_, since)) in &self.last_change {
            if key.stack_id == UNKNOWN_STACK {
                continue;
            }
            let ok = !ages.contains_key(key) && now - since >= IDLE_INTERVALS;
            let e = idle.entry(key.stack_id).or_insert(Some(0));
            *e = match (*e, ok) {
                (Some(s), true) => Some(s.max(since)),
                _ => None,
            };
        }
        let mut idle: Vec<(u64, u32)> = idle
            .into_iter()
            .filter_map(|(id, since)| since.map(|s| (s, id)))
            .collect();
        idle.sort_unstable();
        let take = ids.len().saturating_sub(self.capacity / 2);
        let ids: HashSet<u32> = idle.into_iter().take(take).map(|(_, id)| id).collect();
        if ids.is_empty() {
            return None;
        }
        let keys: Vec<StackKey> = self
            .last_change
            .keys()
            .filter(|k| ids.contains(&k.stack_id))
            .copied()
            .collect();
        for k in &keys {
            self.last_change.remove(k);
        }
        self.recycled += ids.len() as u64;
        Some(Round {
            ids: ids.into_iter().collect(),
            keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tgid: u32, stack_id: u32) -> StackKey {
        StackKey { tgid, stack_id }
    }

    fn totals(allocations: u64) -> StackTotals {
        StackTotals {
            allocations,
            ..StackTotals::default()
        }
    }

    #[test]
    fn idle_stacks_holding_nothing_go_oldest_first_when_three_quarters_full() {
        let mut r = Recycler::new(7);
        let mut ages = HashMap::new();
        // Ids 1-6: 1 and 2 idle from the start, 3 holds a block, 4 and 5
        // idle from the second interval, 6 always allocating.
        ages.insert(key(10, 3), AgeStats::default());
        let round = |r: &mut Recycler, i: u64| {
            let stacks: Vec<_> = (1..=6)
                .map(|id| {
                    let n = match id {
                        4 | 5 if i < 2 => i,
                        6 => i,
                        _ => 1,
                    };
                    (key(10, id), totals(n))
                })
                .collect();
            r.round(&stacks, &ages)
        };
        // 6 of 7: over three quarters, but nothing idle for two intervals.
        assert!(round(&mut r, 0).is_none());
        assert!(round(&mut r, 1).is_none());
        // Interval 3: 1 and 2 idle since 1 (two intervals); 4 and 5
        // changed at 2.
        let got = round(&mut r, 2).expect("a round");
        let mut ids = got.ids.clone();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2]);
        assert_eq!(got.keys.len(), 2);
        assert_eq!(r.recycled, 2);
    }

    #[test]
    fn a_stack_held_by_any_process_stays() {
        let mut r = Recycler::new(4);
        let stacks: Vec<_> = [(1, 7), (2, 7), (1, 8), (1, 9), (1, 10)]
            .into_iter()
            .map(|(tgid, id)| (key(tgid, id), totals(1)))
            .collect();
        let ages = HashMap::from([(key(2, 7), AgeStats::default())]);
        for _ in 0..3 {
            if let Some(round) = r.round(&stacks, &ages) {
                assert!(!round.ids.contains(&7), "7 holds a block in process 2");
                // Down to half of 4: two of the three idle ids go.
                assert_eq!(round.ids.len(), 2);
                return;
            }
        }
        panic!("no round");
    }
}

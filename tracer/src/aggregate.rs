//! Aggregation: one series per allocation stack. Stacks from the kernel's
//! heap accounting and from userspace mapping accounting are interned into
//! one table; every interval each stack gets a sample of its outstanding
//! bytes and count. A series has at most `max_samples` points: when full,
//! every other one is dropped, so it spans the whole run in bounded memory.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;
use tracer_common::{StackKey, StackTotals};

/// Where a stack's bytes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StackKind {
    /// malloc family, accounted in the kernel.
    Heap,
    /// Anonymous mmap made by the program itself.
    Mmap,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StackIdentity {
    pub pid: u32,
    pub kind: StackKind,
    /// Return addresses, innermost first; empty when the stack was lost.
    pub frames: Vec<u64>,
}

/// Outstanding memory of one stack at one sampling time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Seconds since tracing started.
    pub t: f64,
    pub bytes: u64,
    pub count: u64,
    /// The zero a new stack's series starts from (true by construction:
    /// nothing of it was outstanding before), not a measurement.
    pub origin: bool,
}

pub struct StackSeries {
    pub identity: StackIdentity,
    /// Latest cumulative totals.
    pub totals: StackTotals,
    pub samples: VecDeque<Sample>,
}

impl StackSeries {
    pub fn outstanding_bytes(&self) -> u64 {
        self.totals
            .allocated_bytes
            .saturating_sub(self.totals.freed_bytes)
    }

    pub fn outstanding_allocations(&self) -> u64 {
        self.totals.allocations.saturating_sub(self.totals.frees)
    }
}

pub struct Aggregator {
    index: HashMap<StackIdentity, usize>,
    heap_index: HashMap<StackKey, usize>,
    pub stacks: Vec<StackSeries>,
    /// Samples kept per stack; older ones are dropped.
    max_samples: usize,
    last_sample_t: f64,
}

impl Aggregator {
    pub fn new(max_samples: usize) -> Self {
        Aggregator {
            index: HashMap::new(),
            heap_index: HashMap::new(),
            stacks: Vec::new(),
            max_samples: max_samples.max(2),
            last_sample_t: 0.0,
        }
    }

    /// Index of a stack, created on first sight.
    pub fn intern(&mut self, identity: StackIdentity) -> usize {
        if let Some(&i) = self.index.get(&identity) {
            return i;
        }
        let i = self.stacks.len();
        // Nothing was outstanding for a new stack at the previous sample
        // (or at attach time): that is where its series starts.
        let origin = Sample {
            t: self.last_sample_t,
            bytes: 0,
            count: 0,
            origin: true,
        };
        self.stacks.push(StackSeries {
            identity: identity.clone(),
            totals: StackTotals::default(),
            samples: VecDeque::from([origin]),
        });
        self.index.insert(identity, i);
        i
    }

    /// Index of a kernel heap stack, if already interned.
    pub fn heap_stack(&self, key: &StackKey) -> Option<usize> {
        self.heap_index.get(key).copied()
    }

    pub fn intern_heap(&mut self, key: StackKey, frames: &[u64]) -> usize {
        let i = self.intern(StackIdentity {
            pid: key.tgid,
            kind: StackKind::Heap,
            frames: frames.to_vec(),
        });
        self.heap_index.insert(key, i);
        i
    }

    /// Sets a stack's latest cumulative totals.
    pub fn update(&mut self, stack: usize, totals: StackTotals) {
        self.stacks[stack].totals = totals;
    }

    /// Appends a sample of every stack's current outstanding memory.
    pub fn sample(&mut self, t: f64) {
        for s in &mut self.stacks {
            let sample = Sample {
                t,
                bytes: s.outstanding_bytes(),
                count: s.outstanding_allocations(),
                origin: false,
            };
            if s.samples.len() >= self.max_samples {
                // Full: keep every other sample. The series still spans the
                // whole run, at half the resolution, in bounded memory.
                let mut i = 0;
                s.samples.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
            }
            s.samples.push_back(sample);
        }
        self.last_sample_t = t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(alloc: u64, freed: u64) -> StackTotals {
        StackTotals {
            allocated_bytes: alloc,
            allocations: alloc / 10,
            freed_bytes: freed,
            frees: freed / 10,
        }
    }

    #[test]
    fn series_start_at_zero_and_stay_bounded() {
        let mut agg = Aggregator::new(4);
        let key = StackKey {
            tgid: 5,
            stack_id: 9,
        };
        let i = agg.intern_heap(key, &[1, 2]);
        assert_eq!(agg.heap_stack(&key), Some(i));
        for n in 1..=6u64 {
            agg.update(i, totals(100 * n, 10 * n));
            agg.sample(n as f64);
        }
        let s = &agg.stacks[i];
        // origin,1,2,3 full at the 4th sample: decimated to origin,2 then
        // 4,5 appended; full again at 6: origin,4 then 6.
        let times: Vec<f64> = s.samples.iter().map(|x| x.t).collect();
        assert_eq!(times, [0.0, 4.0, 6.0]);
        assert!(s.samples[0].origin);
        assert_eq!(s.samples.back().unwrap().bytes, 540);
        // A stack first seen later starts from the previous sample time.
        let j = agg.intern(StackIdentity {
            pid: 5,
            kind: StackKind::Mmap,
            frames: vec![3],
        });
        assert_eq!(
            agg.stacks[j].samples[0],
            Sample {
                t: 6.0,
                bytes: 0,
                count: 0,
                origin: true
            }
        );
    }
}

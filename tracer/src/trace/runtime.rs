//! What the targets read through their runtime's own sampler (Node's V8,
//! a JVM's JFR) share. When they are read: a read that stops the program
//! (V8's full collection before its profile, the JVM's walk for paths to
//! GC roots) is followed by a wait long enough that these pauses take at
//! most 1/[`PAUSE_SHARE`] of its time, and a sample in which a target was
//! not read adds no point to its stacks' series (rather than a repeat of
//! the last). How their live samples become stacks' totals: what was seen
//! rise and fall, interned as a stack once it holds something.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use memtrace_report::StackKind;

use super::Tracing;
use crate::accounting::series::{StackIdentity, StackTotals};

/// The program's time its reads may stop it: at most 1/PAUSE_SHARE (a
/// read that took 50 ms waits a second before the next).
pub(super) const PAUSE_SHARE: u32 = 20;

pub(super) struct ReadSchedule {
    /// Not read before then.
    next: Instant,
    /// Read in this sample.
    read_now: bool,
}

impl ReadSchedule {
    pub(super) fn new() -> ReadSchedule {
        ReadSchedule {
            next: Instant::now(),
            read_now: false,
        }
    }

    /// Whether a read is due.
    pub(super) fn due(&self) -> bool {
        Instant::now() >= self.next
    }

    /// A read stopped the program for `pause`: the next waits 20 times it.
    pub(super) fn paused(&mut self, pause: Duration) {
        self.next = Instant::now() + pause * PAUSE_SHARE;
    }

    /// This sample's read gave the target's stacks a point.
    pub(super) fn read(&mut self) {
        self.read_now = true;
    }
}

/// The targets that this sample did not read (their stacks take no point
/// now); starts the next sample's count.
pub(super) fn unread<'a>(
    schedules: impl Iterator<Item = (u32, &'a mut ReadSchedule)>,
) -> HashSet<u32> {
    schedules
        .filter_map(|(pid, s)| (!std::mem::take(&mut s.read_now)).then_some(pid))
        .collect()
}

/// The next sample reads every target, however recent its last read (the
/// run's final sample).
pub(super) fn read_all_next<'a>(schedules: impl Iterator<Item = &'a mut ReadSchedule>) {
    for s in schedules {
        s.next = Instant::now();
    }
}

/// A runtime-sourced stack: what it held at the last read, and what was
/// seen rise and fall since sampling began.
#[derive(Default)]
pub(super) struct Seen {
    live_bytes: u64,
    live_samples: u64,
    pub(super) totals: StackTotals,
}

/// Takes a stack's live bytes and samples now into what was seen rise
/// (allocated) and fall (freed) since sampling began: the samplers hold
/// live objects only, so these are lower bounds, and allocated minus freed
/// is what is live.
pub(super) fn rise_and_fall(seen: &mut Seen, bytes: u64, samples: u64) {
    let t = &mut seen.totals;
    t.allocated_bytes += bytes.saturating_sub(seen.live_bytes);
    t.freed_bytes += seen.live_bytes.saturating_sub(bytes);
    t.allocations += samples.saturating_sub(seen.live_samples);
    t.frees += seen.live_samples.saturating_sub(samples);
    seen.live_bytes = bytes;
    seen.live_samples = samples;
}

impl Tracing {
    /// Takes a runtime-sourced stack's totals (and the variance of its
    /// live bytes from sampling) into its series; a stack not yet followed
    /// that holds nothing is not made one.
    pub(super) fn update_runtime_stack(
        &mut self,
        pid: u32,
        kind: StackKind,
        frames: Vec<u64>,
        totals: StackTotals,
        variance: f64,
    ) {
        let identity = StackIdentity { pid, kind, frames };
        if !self.m.agg.is_interned(&identity) {
            if totals.allocated_bytes == totals.freed_bytes {
                return;
            }
            if !self.room_for_a_stack() {
                self.m.agg.refuse(None);
                return;
            }
        }
        let s = self.m.agg.intern(identity);
        self.m.agg.update(s, totals);
        self.m.agg.stacks[s].noise_bytes = 2.0 * variance.sqrt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rises_and_falls_add_up_to_what_is_live() {
        let mut s = Seen::default();
        for (bytes, samples) in [(100, 2), (300, 5), (50, 1), (50, 1), (400, 4)] {
            rise_and_fall(&mut s, bytes, samples);
            let t = &s.totals;
            assert_eq!(t.allocated_bytes - t.freed_bytes, bytes);
            assert_eq!(t.allocations - t.frees, samples);
        }
        assert_eq!((s.totals.allocated_bytes, s.totals.freed_bytes), (650, 250));
    }
}

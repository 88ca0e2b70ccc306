//! Anonymous mmap accounting in `-- CMD` mode: fully unmapped regions leave
//! nothing outstanding; partial munmaps (at both ends, and a hole that
//! splits a region) leave exactly the bytes still mapped; and JVM/V8-style
//! decommit (decommit.c) — a `PROT_NONE` `MAP_FIXED` mapping over committed
//! memory — releases it; and mmap stacks the kernel's walk cut short
//! (its frame limit, code without frame pointers) are flagged truncated,
//! whole ones not (mmap_walks.c). (A user mremap, a `PROT_NONE`
//! reservation: `semantics`.)

use memtrace_integration::{compile_c, run_memtrace_cmd, StackExt};
use memtrace_report::StackKind;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// munmap_regions.c: map_and_unmap() maps and unmaps 16 x 64 KiB.
const FULL_REGIONS: u64 = 16;

/// munmap_regions.c: partial_unmap() maps 4 x 1 MiB, unmaps the first and
/// last 256 KiB of each and a 256 KiB hole in the middle of the first.
const PARTIAL_REMAINING: u64 = 4 * 512 * KIB - 256 * KIB;

#[test]
fn munmap_removes_regions() {
    let report = run_memtrace_cmd(&["--duration", "30s"], &[compile_c("munmap_regions")]);
    let ctx = report.describe();
    report.assert_target("munmap_regions", None);

    let partial = report.function_summary("partial_unmap");
    assert!(
        partial.stacks > 0 && partial.kinds.len() == 1 && partial.kinds.contains(&StackKind::Mmap),
        "partial_unmap should be reported as mmap stack(s), got {} stacks of kinds {:?}\n{ctx}",
        partial.stacks,
        partial.kinds
    );
    assert_eq!(
        partial.totals.outstanding_bytes, PARTIAL_REMAINING,
        "partial_unmap outstanding_bytes: 3 x 512 KiB + 2 x 128 KiB still mapped\n{ctx}"
    );

    let full = report.function_summary("map_and_unmap");
    if full.stacks > 0 {
        let t = &full.totals;
        assert_eq!(
            (t.outstanding_bytes, t.outstanding_allocations),
            (0, 0),
            "map_and_unmap unmapped everything: (outstanding_bytes, outstanding_allocations)\n{ctx}"
        );
        assert_eq!(
            (t.allocations, t.allocated_bytes, t.freed_bytes),
            (
                FULL_REGIONS,
                FULL_REGIONS * 64 * KIB,
                FULL_REGIONS * 64 * KIB
            ),
            "map_and_unmap (allocations, allocated_bytes, freed_bytes)\n{ctx}"
        );
        assert!(
            full.kinds.len() == 1 && full.kinds.contains(&StackKind::Mmap),
            "map_and_unmap kind {:?}\n{ctx}",
            full.kinds
        );
    }
    report.assert_no_losses();
    report.assert_consistent();
}

/// decommit.c: 1 MiB chunks, 30 commit/decommit cycles, then 10 commits
/// kept.
const CHUNK: u64 = MIB;
const DECOMMIT_CYCLES: u64 = 30;
const KEPT_COMMITS: u64 = 10;

#[test]
fn prot_none_map_fixed_decommits() {
    let report = run_memtrace_cmd(&["--duration", "30s"], &[compile_c("decommit")]);
    let ctx = report.describe();
    let problems = report.function_mismatches(
        "commit",
        StackKind::Mmap,
        KEPT_COMMITS * CHUNK,
        KEPT_COMMITS,
    );
    assert!(
        problems.is_empty(),
        "commit: the 30 committed chunks that were decommitted (PROT_NONE MAP_FIXED over \
         them) are released; only the last 10 commits hold memory:\n  {}\n{ctx}",
        problems.join("\n  ")
    );
    assert_eq!(
        (
            report.totals.outstanding_bytes,
            report.totals.outstanding_allocations
        ),
        (KEPT_COMMITS * CHUNK, KEPT_COMMITS),
        "totals (outstanding_bytes, outstanding_allocations): the reservation and the \
         decommits are not memory, and the program allocates nothing else\n{ctx}"
    );
    let reservations = report.counters.reservations;
    assert!(
        reservations > DECOMMIT_CYCLES,
        "counters.reservations {reservations} should count the 64 MiB PROT_NONE reservation \
         and the {DECOMMIT_CYCLES} decommits (>= {})\n{ctx}",
        DECOMMIT_CYCLES + 1
    );
    report.assert_target("decommit", None);
    report.assert_no_losses();
    report.assert_consistent();
}

/// mmap_walks.c: map_region()'s 1 MiB, mapped from main, 200 calls deep,
/// and from qsort's comparator.
#[test]
fn mmap_stacks_cut_short_are_flagged_truncated() {
    let report = run_memtrace_cmd(&[], &[compile_c("mmap_walks")]);
    let ctx = report.describe();
    let stacks = report.stacks_of("map_region");
    assert_eq!(stacks.len(), 3, "{ctx}");
    let by_caller = |caller: &str| {
        stacks
            .iter()
            .find(|s| s.functions().get(1) == Some(&caller))
            .unwrap_or_else(|| panic!("no map_region stack called from {caller}\n{ctx}"))
    };
    for s in &stacks {
        assert_eq!(
            (s.kind, s.outstanding_bytes),
            (StackKind::Mmap, MIB),
            "{ctx}"
        );
    }
    let whole = by_caller("main");
    assert!(
        !whole.truncated,
        "a walk down to libc's start of main is whole: {:?}\n{ctx}",
        whole.functions()
    );
    let deep = by_caller("recurse");
    assert_eq!(deep.frames.len(), 127, "the walk's frame limit\n{ctx}");
    assert!(deep.truncated, "cut at the frame limit\n{ctx}");
    let sorted = by_caller("compare");
    assert!(
        !sorted.functions().contains(&"main"),
        "the walk was expected to be lost in libc's qsort: {:?}\n{ctx}",
        sorted.functions()
    );
    assert!(
        sorted.truncated,
        "lost in code without frame pointers: {:?}\n{ctx}",
        sorted.functions()
    );
}

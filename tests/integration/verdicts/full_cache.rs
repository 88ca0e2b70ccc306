//! A cache that fills up, then only replaces entries (full_cache.c), is a
//! `plateau`, never a leak, while a steady leak next to it is a `leak`
//! (`-- CMD` mode).

use memtrace_integration::{compile_c, run_memtrace_cmd};
use memtrace_report::{StackKind, Verdict};

/// full_cache.c: 200 entries of 256 bytes, filled in the first ~0.1 s, then
/// one random entry replaced per tick (680 ticks, 10 ms apart on average),
/// the cache's size jittering between 199 and 200 entries.
const CACHE_ENTRIES: u64 = 200;
const CACHE_ENTRY_SIZE: u64 = 256;
const CACHE_REPLACEMENTS: u64 = 680;

/// full_cache.c: steady_leak() mallocs 1000 bytes every other tick (every
/// 20 ms on average).
const STEADY_LEAKS: u64 = 350;
const STEADY_LEAK_SIZE: u64 = 1000;

#[test]
fn full_cache_is_a_plateau_next_to_a_steady_leak() {
    let report = run_memtrace_cmd(&["--duration", "60s"], &[compile_c("full_cache")]);
    let ctx = report.describe();

    let cache = report.stack_of("cache_insert");
    assert_eq!(
        (
            cache.kind,
            cache.outstanding_bytes,
            cache.outstanding_allocations,
            cache.allocations,
            cache.frees
        ),
        (
            StackKind::Heap,
            CACHE_ENTRIES * CACHE_ENTRY_SIZE,
            CACHE_ENTRIES,
            CACHE_ENTRIES + CACHE_REPLACEMENTS,
            CACHE_REPLACEMENTS
        ),
        "cache_insert: (kind, outstanding_bytes, outstanding_allocations, allocations, frees)\n{ctx}"
    );
    assert_eq!(
        cache.verdict,
        Verdict::Plateau,
        "cache_insert: a cache full after ~0.1 s whose entries are only replaced afterwards \
         (its samples jittering between 199 and 200 entries) grew, then stayed flat\n{ctx}"
    );

    let steady = report.stack_of("steady_leak");
    assert_eq!(
        (
            steady.kind,
            steady.outstanding_bytes,
            steady.outstanding_allocations
        ),
        (
            StackKind::Heap,
            STEADY_LEAKS * STEADY_LEAK_SIZE,
            STEADY_LEAKS
        ),
        "steady_leak: (kind, outstanding_bytes, outstanding_allocations)\n{ctx}"
    );
    assert_eq!(
        steady.verdict,
        Verdict::Leak,
        "steady_leak: 1000 bytes every 20 ms for ~7 s, none freed, is a leak\n{ctx}"
    );
    report.assert_target("full_cache", None);
    report.assert_no_losses();
    report.assert_consistent();
}

//! Heap accounting per allocation entry point, in `-- CMD` mode: malloc/free
//! churn leaves nothing outstanding; calloc, a realloc growth chain,
//! posix_memalign, aligned_alloc and anonymous mmap are each attributed to
//! their calling function with exact byte counts; and large mallocs that
//! glibc serves with mmap are counted once, as heap, not again as mappings.

use memtrace_integration::{assert_within, compile_c, run_memtrace_cmd};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// churn.c: churn() mallocs and frees CHURN_SIZE bytes CHURN_ROUNDS times.
const CHURN_SIZE: u64 = 4096;
const CHURN_ROUNDS: u64 = 10_000;
/// churn.c: leak_anchor() leaks ANCHOR_COUNT blocks of ANCHOR_SIZE bytes.
const ANCHOR_SIZE: u64 = 512;
const ANCHOR_COUNT: u64 = 10;

/// big_leak.c: leak_big() keeps 8 x 1 MiB; churn_big() mallocs and frees
/// 4 x 1 MiB.
const BIG: u64 = MIB;
const BIG_LEAKS: u64 = 8;
const BIG_CHURNS: u64 = 4;

#[test]
fn churn_leaves_nothing_outstanding() {
    let report = run_memtrace_cmd(&["--duration", "30s"], &[compile_c("churn")]);
    let ctx = report.describe();
    report.assert_target("churn", None);

    let problems = report.function_mismatches(
        "leak_anchor",
        "heap",
        ANCHOR_COUNT * ANCHOR_SIZE,
        ANCHOR_COUNT,
    );
    assert!(problems.is_empty(), "{}\n{ctx}", problems.join("\n"));

    // The churn stack may be listed (with at most one block outstanding) or
    // left out for having nothing outstanding; either way its calls must be
    // in the totals.
    let churn = report.function_summary("churn");
    if churn.stacks > 0 {
        let t = &churn.totals;
        assert!(
            t.outstanding_bytes <= CHURN_SIZE && t.outstanding_allocations <= 1,
            "churn: at most one {CHURN_SIZE}-byte block may be outstanding, got {} B in {}\n{ctx}",
            t.outstanding_bytes,
            t.outstanding_allocations
        );
        assert!(
            t.allocations > 0 && t.frees > 0,
            "churn: allocations and frees should both be counted\n{ctx}"
        );
        assert_eq!(
            (t.allocations, t.frees),
            (CHURN_ROUNDS, CHURN_ROUNDS),
            "churn: (allocations, frees)\n{ctx}"
        );
    }
    assert!(
        report.totals.allocations >= CHURN_ROUNDS + ANCHOR_COUNT
            && report.totals.frees >= CHURN_ROUNDS,
        "totals should include churn's {CHURN_ROUNDS} mallocs and frees (and the \
         {ANCHOR_COUNT} anchor mallocs)\n{ctx}"
    );
    report.assert_no_losses();
    report.assert_consistent();
}

#[test]
fn each_allocator_attributed_to_its_caller() {
    let report = run_memtrace_cmd(&["--duration", "30s"], &[compile_c("alloc_variants")]);
    report.assert_target("alloc_variants", None);

    // (function, kind, outstanding bytes, outstanding allocations)
    let expected: &[(&str, &str, u64, u64)] = &[
        ("leak_calloc", "heap", 5 * 100 * 40, 5),
        // realloc 16 -> 32 -> ... -> 64 KiB: only the final block remains.
        ("grow_realloc", "heap", 64 * KIB, 1),
        ("leak_posix_memalign", "heap", 3 * 1000, 3),
        ("leak_aligned_alloc", "heap", 4 * 2048, 4),
        ("leak_mmap", "mmap", 3 * 64 * KIB, 3),
    ];
    let problems: Vec<String> = expected
        .iter()
        .flat_map(|&(f, kind, bytes, allocs)| report.function_mismatches(f, kind, bytes, allocs))
        .collect();
    assert!(
        problems.is_empty(),
        "per-function expectations not met:\n  {}\n{}",
        problems.join("\n  "),
        report.describe()
    );
    report.assert_no_losses();
    report.assert_consistent();
}

#[test]
fn large_malloc_counted_once() {
    let report = run_memtrace_cmd(&["--duration", "30s"], &[compile_c("big_leak")]);
    let ctx = report.describe();
    report.assert_target("big_leak", None);

    let big = report.function_summary("leak_big");
    assert!(
        big.stacks > 0 && big.kinds.len() == 1 && big.kinds.contains("heap"),
        "leak_big should be reported as heap stack(s), got {} stacks of kinds {:?}\n{ctx}",
        big.stacks,
        big.kinds
    );
    assert_within(
        "leak_big outstanding_bytes (tolerance ±5%)",
        big.totals.outstanding_bytes,
        BIG_LEAKS * BIG,
        5.0,
        &ctx,
    );
    assert_eq!(
        big.totals.outstanding_allocations, BIG_LEAKS,
        "leak_big outstanding_allocations\n{ctx}"
    );

    let churn = report.function_summary("churn_big");
    if churn.stacks > 0 {
        let t = &churn.totals;
        assert_eq!(
            (t.outstanding_bytes, t.allocations, t.frees),
            (0, BIG_CHURNS, BIG_CHURNS),
            "churn_big: (outstanding_bytes, allocations, frees)\n{ctx}"
        );
    }

    // The mmaps inside malloc are the heap blocks themselves: counted once.
    let total = report.totals.outstanding_bytes;
    assert!(
        total < BIG_LEAKS * BIG + MIB,
        "totals.outstanding_bytes {total} should be < {} (8 MiB leaked, counted once)\n{ctx}",
        BIG_LEAKS * BIG + MIB
    );
    for s in report.stacks.iter().filter(|s| s.kind == "mmap") {
        assert!(
            s.outstanding_bytes < MIB
                && !s
                    .functions()
                    .iter()
                    .any(|f| *f == "leak_big" || *f == "churn_big"),
            "an mmap-kind stack holds malloc's 1 MiB blocks (double counting): {}\n{ctx}",
            s.summary()
        );
    }
    report.assert_no_losses();
    report.assert_consistent();
}

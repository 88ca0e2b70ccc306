//! The allocator semantics the README promises, with exact expectations on
//! real traced workloads in `-- CMD` mode:
//! - alloc_semantics.c: `realloc(NULL, n)` is a malloc, `realloc(p, 0)` a
//!   free, a failed realloc leaves `p` outstanding, failed calls (calloc
//!   overflow, `malloc(SIZE_MAX)`) are not recorded but counted in
//!   `counters.failed_allocations`, reallocarray/memalign/valloc/pvalloc
//!   are attributed to their callers with the requested sizes, a user
//!   mremap that grows or shrinks a mapping adjusts its bytes, and a
//!   `PROT_NONE` mapping is a reservation, not memory;
//! - per entry point: malloc/free churn leaves nothing outstanding; calloc,
//!   a realloc growth chain, posix_memalign, aligned_alloc and anonymous
//!   mmap are each attributed to their calling function with exact byte
//!   counts; and large mallocs that glibc serves with mmap are counted
//!   once, as heap, not again as mappings;
//! - an overflowing `reallocarray` (reallocarray_overflow.c) is a failed
//!   call that leaves its block outstanding, not a free;
//! - bad allocator traffic (bad_traffic.c): free(NULL), a double free and
//!   an interior free caught by glibc, reallocarray whose size wraps to 0,
//!   posix_memalign failing, munmap of ranges never or partly mapped — no
//!   phantom bytes.

use std::sync::OnceLock;

use memtrace_integration::{assert_within, compile_c, run_memtrace_cmd, Report, StackExt};
use memtrace_report::{StackKind, StackReport};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// alloc_semantics.c: the sizes each function keeps (see its header).
const REALLOC_FROM_NULL: u64 = 1234;
const ZERO_REALLOC_MALLOC: u64 = 3000;
const FAILED_REALLOC_KEPT: u64 = 5000;
const REALLOCARRAY: u64 = 10 * 100;
const MEMALIGN: u64 = 700;
const VALLOC: u64 = 900;

/// pvalloc(100): glibc rounds the block up to a whole page, but memtrace
/// accounts the *requested* size, like for every other entry point.
const PVALLOC: u64 = 100;

/// leak_mremap_grow: 64 KiB mapped, then mremap'ed to 256 KiB.
const MREMAP_GROWN: u64 = 256 * KIB;

/// shrink_then_unmap: 128 KiB mapped, shrunk to 32 KiB, unmapped.
const SHRUNK_MAPPING: u64 = 128 * KIB;

/// The failing allocator calls alloc_semantics makes: realloc(p, 1 << 60),
/// calloc(SIZE_MAX / 2, 4), malloc(SIZE_MAX). glibc makes no failing call of
/// its own in this program (a run of an otherwise empty program reports 0),
/// and the nested malloc glibc's failed realloc retries with is part of the
/// realloc call.
const FAILED_CALLS: u64 = 3;

/// alloc_semantics.c traced from its start, once for all the tests below.
fn semantics_report() -> &'static Report {
    static REPORT: OnceLock<Report> = OnceLock::new();
    REPORT.get_or_init(|| {
        let report = run_memtrace_cmd(&["--duration", "30s"], &[compile_c("alloc_semantics")]);
        report.assert_target("alloc_semantics", None);
        report
    })
}

/// Asserts that no stack's frames[0] is `function` (nothing recorded).
#[track_caller]
fn assert_absent(report: &Report, function: &str, why: &str) {
    let found = report.stacks_of(function);
    assert!(
        found.is_empty(),
        "{function}: {why}, but {} stack(s) name it as frames[0]: {}\n{}",
        found.len(),
        found
            .iter()
            .map(|s| s.summary())
            .collect::<Vec<_>>()
            .join("; "),
        report.describe()
    );
}

/// Asserts that `function` has either no stack listed or only stacks with
/// nothing outstanding.
#[track_caller]
fn assert_nothing_outstanding(report: &Report, function: &str) {
    let sum = report.function_summary(function);
    assert_eq!(
        (
            sum.totals.outstanding_bytes,
            sum.totals.outstanding_allocations
        ),
        (0, 0),
        "{function}: (outstanding_bytes, outstanding_allocations) should be 0\n{}",
        report.describe()
    );
}

#[test]
fn realloc_of_null_is_a_malloc() {
    let report = semantics_report();
    let s = report.stack_of("realloc_from_null");
    assert_eq!(
        (
            s.kind,
            s.outstanding_bytes,
            s.outstanding_allocations,
            s.allocations
        ),
        (StackKind::Heap, REALLOC_FROM_NULL, 1, 1),
        "realloc_from_null: realloc(NULL, {REALLOC_FROM_NULL}) is one malloc (glibc's \
         nested malloc counted once): (kind, outstanding_bytes, outstanding_allocations, \
         allocations)\n{}",
        report.describe()
    );
}

#[test]
fn realloc_to_zero_is_a_free() {
    let report = semantics_report();
    let ctx = report.describe();
    // Listed or not, the malloc(3000) stack holds nothing any more.
    assert_nothing_outstanding(report, "malloc_then_zero_realloc");
    let sum = report.function_summary("malloc_then_zero_realloc");
    if sum.stacks > 0 {
        assert_eq!(
            (
                sum.totals.allocations,
                sum.totals.frees,
                sum.totals.freed_bytes
            ),
            (1, 1, ZERO_REALLOC_MALLOC),
            "malloc_then_zero_realloc: (allocations, frees, freed_bytes)\n{ctx}"
        );
    }
    // realloc(p, 0) frees a block allocated while tracing: it is neither a
    // free of an unknown address nor a failed allocation (failed calls are
    // counted exactly in failed_calls_are_not_recorded).
    assert_eq!(
        report.counters.free_unknown, 0,
        "counters.free_unknown: in -- CMD mode every freed block was allocated while \
         tracing; realloc(p, 0) of malloc_then_zero_realloc frees a known block\n{ctx}"
    );
    report.assert_consistent();
}

#[test]
fn failed_realloc_keeps_the_block() {
    let report = semantics_report();
    let s = report.stack_of("keep_after_failed_realloc");
    assert_eq!(
        (
            s.kind,
            s.outstanding_bytes,
            s.outstanding_allocations,
            s.frees
        ),
        (StackKind::Heap, FAILED_REALLOC_KEPT, 1, 0),
        "keep_after_failed_realloc: realloc(p, 1 << 60) failed, so malloc(5000)'s block is \
         still outstanding: (kind, outstanding_bytes, outstanding_allocations, frees)\n{}",
        report.describe()
    );
    assert!(
        report.counters.failed_allocations >= 1,
        "counters.failed_allocations should count the failed realloc\n{}",
        report.describe()
    );
}

#[test]
fn failed_calls_are_not_recorded() {
    let report = semantics_report();
    assert_absent(
        report,
        "fail_calloc_overflow",
        "calloc(SIZE_MAX / 2, 4) overflows and returns NULL",
    );
    assert_absent(report, "fail_malloc_huge", "malloc(SIZE_MAX) returns NULL");
    assert_eq!(
        report.counters.failed_allocations,
        FAILED_CALLS,
        "counters.failed_allocations: the workload makes exactly {FAILED_CALLS} failing calls \
         (realloc(p, 1 << 60), calloc(SIZE_MAX / 2, 4), malloc(SIZE_MAX)); realloc(p, 0) is a \
         free, not a failure\n{}",
        report.describe()
    );
}

#[test]
fn other_entry_points_attributed_with_requested_sizes() {
    let report = semantics_report();
    // pvalloc: the requested 100 bytes, not glibc's page-rounded block.
    let expected: &[(&str, u64)] = &[
        ("leak_reallocarray", REALLOCARRAY),
        ("leak_memalign", MEMALIGN),
        ("leak_valloc", VALLOC),
        ("leak_pvalloc", PVALLOC),
    ];
    let problems: Vec<String> = expected
        .iter()
        .flat_map(|&(f, bytes)| {
            let mut p = report.function_mismatches(f, StackKind::Heap, bytes, 1);
            if report.stacks_of(f).len() > 1 {
                p.push(format!("{f}: one call site, but several stacks"));
            }
            p
        })
        .collect();
    assert!(
        problems.is_empty(),
        "per-function expectations not met:\n  {}\n{}",
        problems.join("\n  "),
        report.describe()
    );
}

#[test]
fn user_mremap_adjusts_the_mapping() {
    let report = semantics_report();
    let s = report.stack_of("leak_mremap_grow");
    assert_eq!(
        (s.kind, s.outstanding_bytes, s.outstanding_allocations),
        (StackKind::Mmap, MREMAP_GROWN, 1),
        "leak_mremap_grow: a 64 KiB mapping mremap'ed to 256 KiB is one region of 256 KiB: \
         (kind, outstanding_bytes, outstanding_allocations)\n{}",
        report.describe()
    );
    assert_nothing_outstanding(report, "shrink_then_unmap");
    let shrunk = report.function_summary("shrink_then_unmap");
    if shrunk.stacks > 0 {
        assert_eq!(
            (shrunk.totals.allocated_bytes, shrunk.totals.freed_bytes),
            (SHRUNK_MAPPING, SHRUNK_MAPPING),
            "shrink_then_unmap: 128 KiB mapped, 96 KiB released by mremap and 32 KiB by \
             munmap: (allocated_bytes, freed_bytes)\n{}",
            report.describe()
        );
    }
}

#[test]
fn prot_none_mapping_is_a_reservation() {
    let report = semantics_report();
    assert_absent(
        report,
        "reserve_only",
        "a 1 MiB PROT_NONE mapping reserves address space, it is not memory",
    );
    assert!(
        report.counters.reservations >= 1,
        "counters.reservations should count reserve_only's PROT_NONE mapping\n{}",
        report.describe()
    );
}

#[test]
fn semantics_report_totals_are_exact() {
    let report = semantics_report();
    let ctx = report.describe();
    // Everything the program allocates is traced (-- CMD mode), and the
    // workload allocates nothing besides the calls in its header.
    let outstanding = REALLOC_FROM_NULL
        + FAILED_REALLOC_KEPT
        + REALLOCARRAY
        + MEMALIGN
        + VALLOC
        + PVALLOC
        + MREMAP_GROWN;
    assert_eq!(
        (
            report.totals.outstanding_bytes,
            report.totals.outstanding_allocations,
            report.totals.freed_bytes
        ),
        (outstanding, 7, ZERO_REALLOC_MALLOC + SHRUNK_MAPPING),
        "totals (outstanding_bytes, outstanding_allocations, freed_bytes): the 7 kept blocks \
         and regions; realloc(p, 0)'s 3000 B and shrink_then_unmap's 128 KiB freed\n{ctx}"
    );
    report.assert_no_losses();
    report.assert_consistent();
}

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
        StackKind::Heap,
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
    let expected: &[(&str, StackKind, u64, u64)] = &[
        ("leak_calloc", StackKind::Heap, 5 * 100 * 40, 5),
        // realloc 16 -> 32 -> ... -> 64 KiB: only the final block remains.
        ("grow_realloc", StackKind::Heap, 64 * KIB, 1),
        ("leak_posix_memalign", StackKind::Heap, 3 * 1000, 3),
        ("leak_aligned_alloc", StackKind::Heap, 4 * 2048, 4),
        ("leak_mmap", StackKind::Mmap, 3 * 64 * KIB, 3),
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
        big.stacks > 0 && big.kinds.len() == 1 && big.kinds.contains(&StackKind::Heap),
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
    for s in report.stacks.iter().filter(|s| s.kind == StackKind::Mmap) {
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

/// reallocarray_overflow.c: malloc(1000) kept after a failed reallocarray.
const OVERFLOW_KEPT: u64 = 1000;

#[test]
fn reallocarray_overflow_is_a_failed_call() {
    let report = run_memtrace_cmd(
        &["--duration", "30s"],
        &[compile_c("reallocarray_overflow")],
    );
    let ctx = report.describe();
    let s = report.stack_of("keep_after_overflow");
    assert_eq!(
        (
            s.kind,
            s.outstanding_bytes,
            s.outstanding_allocations,
            s.frees
        ),
        (StackKind::Heap, OVERFLOW_KEPT, 1, 0),
        "keep_after_overflow: reallocarray(p, SIZE_MAX / 2, 4) overflows and returns NULL, \
         leaving malloc(1000)'s block outstanding: (kind, outstanding_bytes, \
         outstanding_allocations, frees)\n{ctx}"
    );
    assert_eq!(
        report.counters.failed_allocations, 1,
        "counters.failed_allocations: the overflowing reallocarray is the program's only \
         failing allocator call\n{ctx}"
    );
    report.assert_target("reallocarray_overflow", None);
    report.assert_no_losses();
    report.assert_consistent();
}

/// bad_traffic.c: the heap blocks kept (see its header).
const BAD_TRAFFIC_HEAP: &[(&str, u64)] = &[
    ("interior_alloc", 200),
    ("wrap_alloc", 300),
    ("ma_alloc", 80),
];

/// keep_mapping: 128 KiB mapped, 16 KiB and 32 KiB unmapped at its ends.
const MAPPED: u64 = 128 * KIB;
const MAPPING_LEFT: u64 = 80 * KIB;

/// The heap allocations bad_traffic makes (df_alloc's freed block too).
const HEAP_ALLOCATIONS: u64 = 4;

/// glibc keeps its last fatal message in a page it maps for it.
const ABORT_MESSAGE_MAX: u64 = 4096;

#[test]
fn bad_allocator_traffic_leaves_no_phantom() {
    let report = run_memtrace_cmd(&["--duration", "30s"], &[compile_c("bad_traffic")]);
    let ctx = report.describe();
    report.assert_target("bad_traffic", None);
    let mut problems: Vec<String> = BAD_TRAFFIC_HEAP
        .iter()
        .flat_map(|&(f, bytes)| report.function_mismatches(f, StackKind::Heap, bytes, 1))
        .collect();
    problems.extend(report.function_mismatches("keep_mapping", StackKind::Mmap, MAPPING_LEFT, 1));
    assert!(problems.is_empty(), "{}\n{ctx}", problems.join("\n"));
    let mapping = report.stack_of("keep_mapping");
    assert_eq!(
        (mapping.allocated_bytes, mapping.freed_bytes),
        (MAPPED, MAPPED - MAPPING_LEFT),
        "keep_mapping: (allocated_bytes, freed_bytes): munmaps of ranges never mapped and an \
         unaligned one change nothing; the two straddling its ends release 48 KiB\n{ctx}"
    );
    // What else holds memory: glibc's message page only.
    let expected: Vec<&str> = BAD_TRAFFIC_HEAP
        .iter()
        .map(|(f, _)| *f)
        .chain(["keep_mapping"])
        .collect();
    let glibc: Vec<&StackReport> = report
        .stacks
        .iter()
        .filter(|s| !s.function().is_some_and(|f| expected.contains(&f)))
        .collect();
    let in_libc = |s: &StackReport| {
        s.frames
            .first()
            .and_then(|f| f.module.as_deref())
            .is_some_and(|m| m.ends_with("/libc.so.6"))
    };
    assert!(
        glibc.iter().all(|s| s.kind == StackKind::Mmap
            && in_libc(s)
            && s.outstanding_bytes <= ABORT_MESSAGE_MAX),
        "besides the kept blocks, only glibc's page for its abort message may hold memory \
         (df_alloc's block was freed once; its second free and the interior free are no \
         frees)\n{ctx}"
    );
    let glibc_bytes: u64 = glibc.iter().map(|s| s.outstanding_bytes).sum();
    let glibc_allocs: u64 = glibc.iter().map(|s| s.allocations).sum();
    let glibc_frees: u64 = glibc.iter().map(|s| s.frees).sum();
    let heap: u64 = BAD_TRAFFIC_HEAP.iter().map(|(_, b)| b).sum();
    assert_eq!(
        (
            report.totals.outstanding_bytes - glibc_bytes,
            report.totals.allocations - glibc_allocs,
            report.totals.frees - glibc_frees
        ),
        (heap + MAPPING_LEFT, HEAP_ALLOCATIONS + 1, 1),
        "totals without glibc's message page: (outstanding_bytes, allocations, frees): the \
         kept blocks and mapping; 4 heap allocations + 1 mapping; df_alloc's one real free\n{ctx}"
    );
    assert_eq!(
        (
            report.counters.free_unknown,
            report.counters.failed_allocations
        ),
        (2, 2),
        "(counters.free_unknown, counters.failed_allocations): the double free and the \
         interior free; reallocarray's overflow and posix_memalign's EINVAL (free(NULL) is \
         neither)\n{ctx}"
    );
    report.assert_no_losses();
    report.assert_consistent();
}

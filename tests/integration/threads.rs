//! Multi-threaded accounting in `-- CMD` mode: four threads leaking at once
//! are counted exactly, blocks allocated on one thread and freed on another
//! leave nothing outstanding, the arena glibc maps inside a thread's first
//! free() is not reported as an mmap leak, and 1,000 threads created and
//! joined while traced are counted exactly (thread_storm.c), and a program
//! whose main thread exits first is traced until its last thread ends
//! (main_thread_exit.c).

use memtrace_integration::{
    compile_c, private_libc_dir, run_memtrace_cmd, run_memtrace_cmd_env, Report, StackExt,
};
use memtrace_report::StackKind;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// threads.c: 4 threads x 1000 calls of thread_leak(), 100 bytes each.
const LEAK_THREADS: u64 = 4;
const LEAKS_PER_THREAD: u64 = 1000;
const LEAK_SIZE: u64 = 100;

/// threads.c: cross_alloc() mallocs 1000 x 256 bytes, freed by another thread.
const CROSS_COUNT: u64 = 1000;

#[test]
fn threads_and_cross_thread_frees() {
    let report = run_memtrace_cmd(&["--duration", "30s"], &[compile_c("threads")]);
    let ctx = report.describe();
    report.assert_target("threads", None);

    let leak = report.function_summary("thread_leak");
    let t = &leak.totals;
    assert!(
        leak.stacks > 0 && leak.kinds.len() == 1 && leak.kinds.contains(&StackKind::Heap),
        "thread_leak should be reported as heap stack(s), got {} stacks of kinds {:?}\n{ctx}",
        leak.stacks,
        leak.kinds
    );
    assert_eq!(
        (
            t.outstanding_bytes,
            t.outstanding_allocations,
            t.allocations
        ),
        (
            LEAK_THREADS * LEAKS_PER_THREAD * LEAK_SIZE,
            LEAK_THREADS * LEAKS_PER_THREAD,
            LEAK_THREADS * LEAKS_PER_THREAD
        ),
        "thread_leak (outstanding_bytes, outstanding_allocations, allocations), exact\n{ctx}"
    );

    let cross = report.function_summary("cross_alloc");
    if cross.stacks > 0 {
        let t = &cross.totals;
        assert_eq!(
            (t.outstanding_bytes, t.allocations, t.frees),
            (0, CROSS_COUNT, CROSS_COUNT),
            "cross_alloc: blocks freed on the consumer thread: (outstanding_bytes, \
             allocations, frees)\n{ctx}"
        );
    }
    assert!(
        report.totals.frees >= CROSS_COUNT,
        "totals.frees should include the {CROSS_COUNT} cross-thread frees\n{ctx}"
    );
    report.assert_no_losses();
    report.assert_consistent();
}

/// free_first.c: make_blocks() mallocs 10 x 1000 bytes, another thread frees
/// them (its first allocator call).
const FREE_FIRST_BLOCKS: u64 = 10;

/// glibc malloc internals that make mappings for the allocator's own use
/// (new arenas, heap growth); a mapping made by them inside an allocator
/// call belongs to that call, never to an "mmap" stack of its own.
const MALLOC_INTERNALS: &[&str] = &[
    "alloc_new_heap",
    "new_heap",
    "_int_new_arena",
    "arena_get2",
    "tcache_init",
    "sysmalloc",
    "_int_malloc",
    "_int_free",
    "malloc",
    "__libc_malloc",
    "free",
    "__libc_free",
];

#[test]
fn arena_created_inside_free_is_not_an_mmap_leak() {
    let report = run_memtrace_cmd(&["--duration", "30s"], &[compile_c("free_first")]);
    let ctx = report.describe();
    report.assert_target("free_first", None);

    let made = report.function_summary("make_blocks");
    if made.stacks > 0 {
        let t = &made.totals;
        assert_eq!(
            (t.outstanding_bytes, t.allocations, t.frees),
            (0, FREE_FIRST_BLOCKS, FREE_FIRST_BLOCKS),
            "make_blocks: all blocks freed by the other thread: (outstanding_bytes, \
             allocations, frees)\n{ctx}"
        );
    }
    assert!(
        report.totals.frees >= FREE_FIRST_BLOCKS,
        "totals.frees should include the {FREE_FIRST_BLOCKS} frees\n{ctx}"
    );
    for s in report.stacks.iter().filter(|s| s.kind == StackKind::Mmap) {
        let internal: Vec<&str> = s
            .functions()
            .into_iter()
            .filter(|f| MALLOC_INTERNALS.contains(f))
            .collect();
        assert!(
            internal.is_empty(),
            "a mapping made inside the allocator (by {internal:?}) is reported as an mmap \
             stack: {}\n{ctx}",
            s.summary()
        );
    }
    let mmap_outstanding: u64 = report
        .stacks
        .iter()
        .filter(|s| s.kind == StackKind::Mmap)
        .map(|s| s.outstanding_bytes)
        .sum();
    assert!(
        mmap_outstanding <= MIB,
        "mmap-kind stacks hold {mmap_outstanding} bytes; the only mapping the program makes \
         itself is a 256 KiB thread stack (glibc's 64 MiB arena belongs to free())\n{ctx}"
    );
    report.assert_no_losses();
    report.assert_consistent();
}

/// thread_storm.c: 1000 threads, each 100 churn pairs and one 1000 B leak.
const STORM_THREADS: u64 = 1000;
const STORM_CHURN: u64 = 100;
const STORM_LEAK: u64 = 1000;

#[test]
fn thousand_threads_are_counted_exactly() {
    let report = run_memtrace_cmd(&["--duration", "60s"], &[compile_c("thread_storm")]);
    let ctx = report.describe();
    report.assert_target("thread_storm", None);
    let leak = report.stack_of("storm_leak");
    assert_eq!(
        (
            leak.outstanding_bytes,
            leak.outstanding_allocations,
            leak.frees
        ),
        (STORM_THREADS * STORM_LEAK, STORM_THREADS, 0),
        "storm_leak: one 1000 B block kept by each of the 1000 threads: (outstanding_bytes, \
         outstanding_allocations, frees)\n{ctx}"
    );
    assert!(
        report.stacks_of("storm_churn").is_empty(),
        "storm_churn frees every block it allocates: nothing outstanding\n{ctx}"
    );
    // Everything else is glibc's own thread bookkeeping (allocate_dtv).
    let (others, other_allocs, other_frees) = report
        .stacks
        .iter()
        .filter(|s| s.function() != Some("storm_leak"))
        .fold((Vec::new(), 0, 0), |(mut names, a, f), s| {
            names.push(s.function().unwrap_or("?"));
            (names, a + s.allocations, f + s.frees)
        });
    assert!(
        others
            .iter()
            .all(|f| f.contains("dtv") || f.contains("tls")),
        "stacks holding memory besides storm_leak should be glibc's thread setup only: \
         {others:?}\n{ctx}"
    );
    let churn = STORM_THREADS * STORM_CHURN;
    assert_eq!(
        (
            report.totals.allocations - STORM_THREADS - other_allocs,
            report.totals.frees - other_frees
        ),
        (churn, churn),
        "storm_churn's (allocations, frees): 100 pairs per thread\n{ctx}"
    );
    report.assert_no_losses();
    report.assert_consistent();
}

/// main_thread_exit.c: after the main thread's pthread_exit(), its worker
/// keeps 200 x 4096 bytes in late_leak() over 2 s. The process's leader is
/// a zombie all that time (state Z, with a thread still running): it is
/// not taken as exited, every allocation is counted and its memory read.
/// (On a libc of its
/// own: the kernel drops a process's pid-filtered probes when another
/// tracer of the same file attaches or detaches while its main thread is
/// gone, and other tests run memtrace at the same time.) On the classic
/// probe path (every kernel before 6.13, 6.1 among them) the probes belong
/// to the main thread and go with it: the report says by when, and holds
/// nothing the worker allocated after its first interval.
#[test]
fn main_thread_exit_is_not_the_process_exit() {
    let exe = compile_c("main_thread_exit");
    let lib = private_libc_dir(&exe, "main-thread-exit");
    for probes in ["auto", "classic"] {
        let report = run_memtrace_cmd_env(
            &["--duration", "30s"],
            &[&exe],
            &[
                ("LD_LIBRARY_PATH", lib.to_str().unwrap()),
                ("MEMTRACE_PROBES", probes),
            ],
        );
        let ctx = format!("MEMTRACE_PROBES={probes}\n{}", report.describe());
        let classic = report.probes.as_ref().is_some_and(|p| p.path == "classic");
        assert_main_thread_exit(&report, classic, &ctx);
    }
}

/// What a run of main_thread_exit.c must report on a probe path.
#[track_caller]
fn assert_main_thread_exit(report: &Report, classic: bool, ctx: &str) {
    report.assert_target("main_thread_exit", None);
    let lost = report.targets[0].probes_lost_at_s;
    // Its memory read all along (from its running thread's /proc entry).
    let memory = report.targets[0].memory.as_ref().expect("a memory series");
    assert!(
        memory.samples.len() >= 2 && memory.samples.iter().all(|m| m.rss_bytes > 0),
        "{:?}",
        memory.samples
    );
    if classic {
        // Seen gone at an interval's end, the first or (when the first
        // came before the main thread went: a slow start) the second; the
        // kernel took the probes out before the leader became the zombie
        // the worker waits for, so none of late_leak's calls was seen.
        let at = lost.unwrap_or_else(|| panic!("targets[0].probes_lost_at_s unset\n{ctx}"));
        let by = memory.samples[1].t;
        let seen = report.stacks_of("late_leak").len();
        assert!(
            at <= by && seen == 0,
            "probes lost at {at} s (by the second sample, {by} s), {seen} late_leak stacks \
             (none)\n{ctx}"
        );
    } else {
        assert_eq!(lost, None, "targets[0].probes_lost_at_s\n{ctx}");
        let t = report.function_summary("late_leak").totals;
        assert_eq!(
            (
                t.outstanding_bytes,
                t.outstanding_allocations,
                t.allocations
            ),
            (200 * 4096, 200, 200),
            "late_leak: (outstanding_bytes, outstanding_allocations, allocations)\n{ctx}"
        );
    }
    report.assert_no_losses();
}

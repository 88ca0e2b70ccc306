//! memtrace's eBPF programs, built for `bpfel-unknown-none` by
//! tracer/build.rs and embedded in the `memtrace` binary. Each map lives
//! in the module that uses it; the two that every program uses have a
//! module of their own (`stats`, `events`). From the programs down:
//!
//! - programs: allocator uprobes (`alloc`), anonymous-mapping syscall
//!   tracepoints (`mapping`), process lifecycle and OOM kills (`process`);
//! - what they account with: the live-block table (`live`), stack capture
//!   and the unwind tables (`stack`), CPython frames (`python`), pymalloc
//!   pools recorded whole (`pools`),
//!   `--sample-bytes` (`sample`), which processes are traced (`targets`);
//! - shared by all: loss counters (`stats`), the ring buffer to userspace
//!   (`events`), the task storage map type (`task_storage`).
//!
//! A module imports only modules of its own group or below, and no two
//! modules import each other, even through others (`cargo xtask lint`
//! checks both).
#![no_std]
#![no_main]
// Atomic adds on map values (the BPF target has no AtomicU64::fetch_add).
#![allow(internal_features)]
#![feature(core_intrinsics)]
// aya-ebpf's map methods take keys and values as `impl Borrow<K>`: passed
// by value, each is copied to a stack slot of its own first, which costs
// instructions on the hot path (alloc_return 1,124 instead of 1,116), so
// they are passed by reference.
#![allow(clippy::needless_borrows_for_generic_args)]

mod alloc;
mod events;
mod live;
mod mapping;
mod pools;
mod process;
mod python;
mod sample;
mod stack;
mod stats;
mod targets;
mod task_storage;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

//! memtrace's eBPF programs: allocator uprobes (`alloc`), anonymous-mapping
//! syscall tracepoints (`mapping`), process lifecycle and OOM kills
//! (`process`), the maps they account into (`maps`), the live-block
//! table (`live`) and
//! stack capture (`stack`). Built for `bpfel-unknown-none` by tracer/build.rs
//! and embedded in the `memtrace` binary.
#![no_std]
#![no_main]
// Atomic adds on map values (the BPF target has no AtomicU64::fetch_add).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod alloc;
mod live;
mod mapping;
mod maps;
mod process;
mod stack;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

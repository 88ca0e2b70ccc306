//! Workloads that several test modules start the same way.

use crate::{compile_c, Workload};

/// busy_loop.c: bytes of each busy_leak() block.
pub const BUSY_LEAK_SIZE: u64 = 4096;

/// busy_loop.c, started and ready: it loops until killed, always inside
/// malloc or free (malloc(64) and free), and every 2000 iterations
/// busy_leak() keeps a [`BUSY_LEAK_SIZE`] block.
#[track_caller]
pub fn busy_loop() -> Workload {
    Workload::spawn_ready(&compile_c("busy_loop"), &[] as &[&str])
}

/// leak_signal.c, started and ready: on SIGUSR1, leak_fixed() (called from
/// main) mallocs `size` bytes `count` times, `interval_us` apart, never
/// freed; then it prints "done".
#[track_caller]
pub fn leak_signal(count: u64, size: u64, interval_us: u64) -> Workload {
    Workload::spawn_ready(
        &compile_c("leak_signal"),
        &[count.to_string(), size.to_string(), interval_us.to_string()],
    )
}

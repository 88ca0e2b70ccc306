//! rust_leak.rs - a Rust program built `--release`-style (`rustc -O`: no
//! frame pointers) for the unwinding tests (tests/unwind.rs): handle_batch
//! calls remember_request, which leaks REQUESTS boxed buffers of
//! REQUEST_SIZE bytes (Box::leak), and drops as many temporary ones.
//!
//! Prints "ready", waits for SIGUSR1, leaks, prints "done", then sleeps
//! until killed. Uses only std (the signal handler through libc's
//! `signal`, which std links).

use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const REQUESTS: usize = 50;
const REQUEST_SIZE: usize = 6000;
const SIGUSR1: i32 = 10;

static GO: AtomicBool = AtomicBool::new(false);

extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
}

extern "C" fn on_go(_: i32) {
    GO.store(true, Ordering::SeqCst);
}

#[inline(never)]
fn remember_request(id: usize) -> &'static mut [u8] {
    let mut buffer = vec![0u8; REQUEST_SIZE].into_boxed_slice();
    buffer[id % REQUEST_SIZE] = id as u8;
    // A temporary of the same size, freed at once: churn, not a leak.
    let scratch = black_box(vec![1u8; REQUEST_SIZE]);
    buffer[0] ^= scratch[id % REQUEST_SIZE];
    Box::leak(black_box(buffer))
}

#[inline(never)]
fn handle_batch(count: usize) -> usize {
    let mut total = 0;
    for id in 0..count {
        total += remember_request(id).len();
        black_box(total);
    }
    total
}

fn main() {
    // SAFETY: installs an async-signal-safe handler (one atomic store).
    unsafe { signal(SIGUSR1, on_go) };
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    while !GO.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let total = handle_batch(REQUESTS);
    writeln!(out, "leaked {total}").unwrap();
    writeln!(out, "done").unwrap();
    out.flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

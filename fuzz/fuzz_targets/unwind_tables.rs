//! Unwind tables (unwind/table.rs): every executable file a target maps is
//! parsed — its ELF headers and its `.eh_frame` or `.debug_frame` — and a
//! hostile target can map any file it writes. Whatever the bytes, building
//! fails cleanly or yields rows the kernel-side binary search can use.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::bpf::unwind::table;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = table::build(data) {
        assert!(
            t.rows.windows(2).all(|w| w[0].pc < w[1].pc),
            "rows not strictly sorted by address"
        );
    }
});

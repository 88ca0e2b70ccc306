//! Perf maps (perfmap.rs): `/tmp/perf-PID.map`, written by the traced
//! process's JIT — by the target, so anything at all.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::symbolize::perfmap;

fuzz_target!(|data: &[u8]| {
    let mut symbols = Vec::new();
    let used = perfmap::parse(data, &mut symbols);
    assert!(used <= data.len());
    for (start, end, _name) in &symbols {
        assert!(start <= end);
    }
});

//! JFR dumps (discover/java/jfr.rs): written by the traced JVM into its
//! own /tmp, so anything at all. The reader must end in an error, never a
//! panic or an allocation the input's size does not bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::discover::java::{jfr, samples};

fuzz_target!(|data: &[u8]| {
    let wanted = [
        "jdk.OldObjectSample",
        "jdk.GCHeapSummary",
        "jdk.ObjectAllocationInNewTLAB",
        "jdk.ObjectAllocationOutsideTLAB",
    ];
    if let Ok(chunks) = jfr::read(data, &wanted) {
        let (old, _heap, _refills, _tps) = samples(&chunks);
        for s in &old {
            assert!(s.path.len() <= 64);
        }
    }
});

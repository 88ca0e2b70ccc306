//! Incident ids in the agent's URLs (agent/incidents.rs): whatever a
//! client sends. An id that passes must not be able to name another path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::agent::incidents;

fuzz_target!(|data: &[u8]| {
    let Ok(id) = std::str::from_utf8(data) else {
        return;
    };
    if incidents::valid_id(id) {
        assert!(!id.contains('/') && !id.contains("..") && !id.starts_with('.'));
        assert!(std::path::Path::new(id).components().count() == 1);
    }
});

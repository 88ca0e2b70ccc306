//! /proc files of a target, as memtrace parses them: `maps` (target.rs),
//! `stat` (target.rs, agent/scan.rs), `status` (target.rs) and `statm`
//! (agent/scan.rs). A process controls what some of them say (its name in
//! `stat`, the paths in `maps`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::{agent::scan, discover::target};

fuzz_target!(|data: &[u8]| {
    // memtrace reads these files with read_to_string: never other bytes.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let maps = target::parse_maps(text);
    assert!(maps.len() <= text.lines().count());
    for m in &maps {
        let _ = (m.contains(m.start), m.is_file());
    }
    if let Some(stat) = target::parse_stat(text) {
        assert!(!stat.state.is_empty());
        let _ = stat.exited();
    }
    let _ = target::parse_memory(text);
    if let Some((comm, _start)) = scan::parse_stat(text) {
        assert!(comm.len() < text.len());
    }
    if let Some((resident, anon)) = scan::parse_statm(text, 4096) {
        assert!(anon <= resident);
    }
});

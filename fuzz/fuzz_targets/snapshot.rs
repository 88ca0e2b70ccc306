//! Saved snapshots for `memtrace report` and `memtrace diff`
//! (memtrace-report's load.rs and folded::parse): a JSON report or folded
//! stacks from anywhere. A snapshot that parses is rendered in every format and
//! diffed against itself, as the subcommands would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace_report::{
    diff,
    load::{self, Snapshot},
    render::{folded, json, pprof, svg, text},
    Weight,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(snapshot) = Snapshot::parse(text, "fuzz input") else {
        return;
    };
    let d = match snapshot {
        Snapshot::Report(r) => {
            let _ = text::render(&r, 10);
            let mut json = Vec::new();
            json::write(&r, &mut json).expect("writes into a Vec");
            let again = load::parse(std::str::from_utf8(&json).unwrap(), "again");
            assert!(again.is_ok(), "a report memtrace wrote must read back");
            for weight in [
                Weight::Outstanding,
                Weight::Growth,
                Weight::Allocated,
                Weight::Count,
                Weight::Peak,
            ] {
                let _ = folded::render(&r, weight);
                let _ = svg::render(&r, weight);
                let _ = pprof::render(&r, weight);
            }
            diff::diff(&r, &r)
        }
        Snapshot::Folded(stacks) => diff::diff_folded(&stacks, &stacks),
    };
    let _ = diff::text(&d, 10);
    let _ = diff::json(&d);
    let _ = diff::svg(&d, "fuzz");
});

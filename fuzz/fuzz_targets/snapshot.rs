//! Saved snapshots for `memtrace report` and `memtrace diff` (offline.rs,
//! report::parse, folded::parse): a JSON report or folded stacks from
//! anywhere. A snapshot that parses is rendered in every format and
//! diffed against itself, as the subcommands would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::{
    cli::Weight,
    offline::Snapshot,
    report::{self, diff},
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
            let _ = report::text::render(&r, 10);
            let mut json = Vec::new();
            report::json::write(&r, &mut json).expect("writes into a Vec");
            let again = report::parse(std::str::from_utf8(&json).unwrap(), "again");
            assert!(again.is_ok(), "a report memtrace wrote must read back");
            for weight in [
                Weight::Outstanding,
                Weight::Growth,
                Weight::Allocated,
                Weight::Count,
            ] {
                let _ = report::folded::render(&r, weight);
                let _ = report::svg::render(&r, weight);
            }
            let _ = report::pprof::render(&r);
            diff::diff(&r, &r)
        }
        Snapshot::Folded(stacks) => diff::diff_folded(&stacks, &stacks),
    };
    let _ = diff::text(&d, 10);
    let _ = diff::json(&d);
    let _ = diff::svg(&d, "fuzz");
});

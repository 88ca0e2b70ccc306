//! Units on the command line and in the agent's requests (cli.rs):
//! durations, sizes, rates; and the renderers' sizes and rates
//! (memtrace-report's units.rs) of any number.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::cli;
use memtrace_report::units;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(d) = cli::parse_duration(text) {
            assert!(!d.is_zero() && d <= cli::MAX_DURATION);
        }
        if let Ok(rate) = cli::parse_rate(text) {
            assert!(rate > 0.0 && rate.is_finite());
        }
        if let Some(size) = cli::size_in_bytes(text) {
            assert!(size.is_finite());
        }
        if let Ok(size) = cli::parse_size(text) {
            assert!(size >= 1);
        }
        if let Ok(size) = cli::parse_sample_bytes(text) {
            assert!((1..=1 << 30).contains(&size));
        }
    }
    let mut word = [0u8; 8];
    let n = data.len().min(8);
    word[..n].copy_from_slice(&data[..n]);
    let _ = units::bytes(u64::from_le_bytes(word));
    let float = f64::from_le_bytes(word);
    let _ = (units::rate_per_min(float), units::rate_per_hour(float));
});

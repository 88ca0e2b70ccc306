//! Human-readable sizes and rates for the text renderers.

/// `1536` → `1.5 KiB`; exact below 1 KiB.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Signed rate per minute from bytes per second: `+1.2 MiB/min`.
pub fn rate_per_min(bytes_per_sec: f64) -> String {
    let per_min = bytes_per_sec * 60.0;
    let sign = if per_min < 0.0 { "-" } else { "+" };
    format!("{sign}{}/min", bytes(per_min.abs().round() as u64))
}

/// Signed rate per hour: `+50.0 MiB/h`.
pub fn rate_per_hour(bytes_per_hour: f64) -> String {
    let sign = if bytes_per_hour < 0.0 { "-" } else { "+" };
    format!("{sign}{}/h", bytes(bytes_per_hour.abs().round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(8 << 20), "8.0 MiB");
        assert_eq!(rate_per_min(1024.0 / 60.0), "+1.0 KiB/min");
        assert_eq!(rate_per_min(-2.0), "-120 B/min");
        assert_eq!(rate_per_hour(50.0 * 1048576.0), "+50.0 MiB/h");
    }
}

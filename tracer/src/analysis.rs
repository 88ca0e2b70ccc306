//! Analysis of per-stack series: growth rate and the verdict. (Growth is the
//! least-squares slope over the kept window; verdicts are `growing` or
//! `stable` until the leak/plateau classifier lands.)

use std::collections::VecDeque;

use serde::Serialize;

use crate::aggregate::Sample;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Growing,
    Stable,
}

/// Bytes per second, by least squares over the samples (0 with fewer than
/// two distinct sample times).
pub fn growth_bytes_per_sec(samples: &VecDeque<Sample>) -> f64 {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return 0.0;
    }
    let mean_t = samples.iter().map(|s| s.t).sum::<f64>() / n;
    let mean_b = samples.iter().map(|s| s.bytes as f64).sum::<f64>() / n;
    let (mut cov, mut var) = (0.0, 0.0);
    for s in samples {
        let dt = s.t - mean_t;
        cov += dt * (s.bytes as f64 - mean_b);
        var += dt * dt;
    }
    if var <= f64::EPSILON {
        0.0
    } else {
        cov / var
    }
}

/// `growing` when the stack ends the window higher than it started, trends
/// upward, and grew in at least two intervals (one step up — a thread stack,
/// a buffer made once — is not growth; with a single interval in the
/// window, that one step is all the evidence there is). `stable` otherwise.
pub fn verdict(samples: &VecDeque<Sample>, growth: f64) -> Verdict {
    let (Some(first), Some(last)) = (samples.front(), samples.back()) else {
        return Verdict::Stable;
    };
    let steps_up = samples
        .iter()
        .zip(samples.iter().skip(1))
        .filter(|(a, b)| b.bytes > a.bytes)
        .count();
    let enough_steps = steps_up >= 2 || samples.len() <= 2;
    if last.bytes > first.bytes && growth > 0.0 && enough_steps {
        Verdict::Growing
    } else {
        Verdict::Stable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: &[(f64, u64)]) -> VecDeque<Sample> {
        points
            .iter()
            .map(|&(t, bytes)| Sample { t, bytes, count: 0 })
            .collect()
    }

    #[test]
    fn linear_growth_is_measured_exactly() {
        let s = series(&[(0.0, 0), (1.0, 1000), (2.0, 2000), (3.0, 3000)]);
        assert!((growth_bytes_per_sec(&s) - 1000.0).abs() < 1e-9);
        assert_eq!(verdict(&s, growth_bytes_per_sec(&s)), Verdict::Growing);
    }

    #[test]
    fn flat_or_freed_is_stable() {
        let flat = series(&[(0.0, 500), (1.0, 500), (2.0, 500)]);
        assert_eq!(growth_bytes_per_sec(&flat), 0.0);
        assert_eq!(verdict(&flat, 0.0), Verdict::Stable);
        let once = series(&[(0.0, 0), (1.0, 8192), (2.0, 8192), (3.0, 8192)]);
        assert_eq!(verdict(&once, growth_bytes_per_sec(&once)), Verdict::Stable);
        let short = series(&[(0.0, 0), (0.4, 8192)]);
        assert_eq!(
            verdict(&short, growth_bytes_per_sec(&short)),
            Verdict::Growing
        );
        let freed = series(&[(0.0, 0), (1.0, 4096), (2.0, 0)]);
        assert_eq!(
            verdict(&freed, growth_bytes_per_sec(&freed)),
            Verdict::Stable
        );
        assert_eq!(growth_bytes_per_sec(&series(&[(1.0, 7)])), 0.0);
    }
}

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

/// Samples that are measurements: a series' synthetic starting zero only
/// counts while there are too few measurements to say anything else.
fn evidence(samples: &VecDeque<Sample>) -> Vec<Sample> {
    let measured: Vec<Sample> = samples.iter().filter(|s| !s.origin).copied().collect();
    if measured.len() >= MIN_MEASUREMENTS {
        measured
    } else {
        samples.iter().copied().collect()
    }
}

/// Fewer measurements than this and a stack's appearance is all the
/// evidence there is (short runs, stacks seen late).
const MIN_MEASUREMENTS: usize = 3;

/// Bytes per second, by least squares over the evidence (0 with fewer than
/// two distinct sample times).
pub fn growth_bytes_per_sec(samples: &VecDeque<Sample>) -> f64 {
    slope(&evidence(samples))
}

fn slope(samples: &[Sample]) -> f64 {
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

/// `growing` when, over the evidence, the stack trends upward, ends higher
/// than it started by more than its largest drop (so a full cache jittering
/// around its size is not growth), and grew in at least two intervals (one
/// step — a thread stack, a buffer made once — is not growth). With too few
/// measurements to tell (see [`MIN_MEASUREMENTS`]), holding memory that
/// appeared while tracing is `growing`. `stable` otherwise.
pub fn verdict(samples: &VecDeque<Sample>, growth: f64) -> Verdict {
    let evidence = evidence(samples);
    let (Some(first), Some(last)) = (evidence.first(), evidence.last()) else {
        return Verdict::Stable;
    };
    let steps = || evidence.iter().zip(evidence.iter().skip(1));
    let steps_up = steps().filter(|(a, b)| b.bytes > a.bytes).count();
    let largest_drop = steps()
        .map(|(a, b)| a.bytes.saturating_sub(b.bytes))
        .max()
        .unwrap_or(0);
    let short = evidence.iter().any(|s| s.origin);
    let grew = last.bytes.saturating_sub(first.bytes) > largest_drop;
    if growth > 0.0 && grew && (short || steps_up >= 2) {
        Verdict::Growing
    } else {
        Verdict::Stable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A series whose first point is the synthetic origin.
    fn series(points: &[(f64, u64)]) -> VecDeque<Sample> {
        points
            .iter()
            .enumerate()
            .map(|(i, &(t, bytes))| Sample {
                t,
                bytes,
                count: 0,
                origin: i == 0 && bytes == 0,
            })
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
        // A full cache jittering around 100 blocks is not growth.
        let cache = series(&[
            (0.0, 0),
            (5.0, 6400),
            (10.0, 6336),
            (15.0, 6400),
            (20.0, 6464),
        ]);
        assert_eq!(
            verdict(&cache, growth_bytes_per_sec(&cache)),
            Verdict::Stable
        );
        let freed = series(&[(0.0, 0), (1.0, 4096), (2.0, 0)]);
        assert_eq!(
            verdict(&freed, growth_bytes_per_sec(&freed)),
            Verdict::Stable
        );
        assert_eq!(growth_bytes_per_sec(&series(&[(1.0, 7)])), 0.0);
    }
}

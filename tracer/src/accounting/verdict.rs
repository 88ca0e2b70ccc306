//! Analysis of a series of outstanding bytes: its growth statistics and the
//! verdict — `leak`, `plateau`, `growing` or `stable` — with a one-line
//! reason. The same statistics serve per-stack series and per-process RSS.
//!
//! The rules — `plateau`, `stable`, `leak`, `growing`, in that order, and
//! what each looks at — are stated once, in docs/verdicts.md; the constants
//! below are their thresholds.

use memtrace_report::units::{bytes, rate_per_min};
pub use memtrace_report::Verdict;

use super::series::Sample;

/// A change smaller than this share of the series' peak is not material.
const BAND: f64 = 0.05;
/// The trend must exceed this many times the scatter around it.
const SIGNIFICANCE: f64 = 3.0;
/// Fewest intervals of growth that can make a leak.
pub const MIN_LEAK_INTERVALS: usize = 4;
/// A plateau is flat for at least this share of the window.
const SUSTAINED: f64 = 1.0 / 3.0;
/// A leak grows in at least this share of its intervals.
const MOSTLY: f64 = 0.6;
/// Mann–Kendall z above which a rising trend is significant (one-sided
/// p < 0.005).
const Z_CRITICAL: f64 = 2.576;

/// Growth statistics and verdict of one series.
#[derive(Clone, Debug, PartialEq)]
pub struct Analysis {
    pub verdict: Verdict,
    pub reason: String,
    /// Theil–Sen slope over the active window after its first point (for a
    /// plateau: over its flat part), bytes per second.
    pub growth_bytes_per_sec: f64,
    /// Whether the active window has the intervals a rate needs (as many
    /// as a leak, [`MIN_LEAK_INTERVALS`]). Below that the slope is an
    /// extrapolation: reasons give the rise seen instead, and a stack's
    /// report shows no rate and ranks by what it holds.
    pub rated: bool,
    /// Steps between consecutive samples, and how many of them went up.
    pub intervals: u64,
    pub grew_intervals: u64,
    /// Steps in the active window (docs/verdicts.md): the evidence a leak
    /// needs at least [`MIN_LEAK_INTERVALS`] of.
    pub active_intervals: u64,
    /// Net growth in the first and the last third of the active window.
    pub early_growth_bytes: i64,
    pub late_growth_bytes: i64,
}

/// Analyses a series (the first point may be a stack's starting zero: that
/// is a true measurement — nothing of it was outstanding then).
/// `oldest_age_secs` is the age of the oldest live allocation when known;
/// `noise_bytes` how far a sample may stray from the truth by sampling
/// alone (0: measured exactly), below which no change is material.
pub fn analyse<'a>(
    samples: impl IntoIterator<Item = &'a Sample>,
    oldest_age_secs: Option<f64>,
    noise_bytes: f64,
) -> Analysis {
    let points: Vec<(f64, f64)> = samples.into_iter().map(|s| (s.t, s.bytes as f64)).collect();
    analyse_noisy(&points, oldest_age_secs, noise_bytes)
}

/// [`analyse`] on `(seconds, bytes)` points measured exactly.
pub fn analyse_points(points: &[(f64, f64)], oldest_age_secs: Option<f64>) -> Analysis {
    analyse_noisy(points, oldest_age_secs, 0.0)
}

/// [`analyse`] on `(seconds, bytes)` points.
pub fn analyse_noisy(
    points: &[(f64, f64)],
    oldest_age_secs: Option<f64>,
    noise_bytes: f64,
) -> Analysis {
    let mut a = Analysis {
        verdict: Verdict::Stable,
        reason: String::new(),
        growth_bytes_per_sec: 0.0,
        rated: false,
        intervals: points.len().saturating_sub(1) as u64,
        grew_intervals: ups(points) as u64,
        active_intervals: 0,
        early_growth_bytes: 0,
        late_growth_bytes: 0,
    };
    let (Some(&first), Some(&last)) = (points.first(), points.last()) else {
        a.reason = "no samples".into();
        return a;
    };
    if points.len() < 2 {
        a.reason = "one sample: nothing to compare yet".into();
        return a;
    }
    let peak = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let band = (BAND * peak).max(noise_bytes);
    let span = last.0 - first.0;

    // The active window starts where the series last sat at its starting
    // level before it first moved away from it.
    let start = points
        .iter()
        .position(|p| (p.1 - first.1).abs() > band)
        .map_or(0, |i| i - 1);
    let active = &points[start..];
    a.active_intervals = (active.len() - 1) as u64;
    let active_span = last.0 - active[0].0;
    a.rated = active.len() > MIN_LEAK_INTERVALS;
    // The trend is judged after the window's first point: that point is
    // below everything after it by construction (a stack's zero before it
    // appeared; the level before a late start), which would make any
    // level with noise on it — what churn in flight looks like — trend up.
    // Very short windows keep it: they have nothing else.
    let trend = if active.len() > 3 {
        &active[1..]
    } else {
        active
    };
    let slope = theil_sen(trend);
    a.growth_bytes_per_sec = slope;
    let thirds = thirds(active);
    a.early_growth_bytes = thirds[0] as i64;
    a.late_growth_bytes = thirds[2] as i64;
    let net = last.1 - active[0].1;
    let scatter = scatter(trend, slope);
    let trend_span = last.0 - trend[0].0;
    // Clear of the noise: rising in most steps with a trend well above the
    // scatter (what a few clean samples of a leak show), or a trend the
    // Mann–Kendall test finds significant (what many noisy samples show).
    // Two intervals or fewer since it moved: that it rose is all there is.
    let steps = trend.len() - 1;
    let short = active.len() <= 3;
    // (A sampled estimate of what is never freed does not fall, but stays
    // level over an interval without a new sample: that counts as rising.)
    let rising_steps = match noise_bytes > 0.0 {
        true => trend.windows(2).filter(|w| w[1].1 >= w[0].1).count(),
        false => ups(trend),
    };
    let clear = slope * trend_span > SIGNIFICANCE * scatter && rising_steps >= steps - steps / 8;

    // Samples scattered by sampling alone spread over twice their noise.
    let scatter_of_sampling = 2.0 * noise_bytes;
    let tail = flat_tail(
        points,
        (BAND * peak).max(scatter_of_sampling),
        (noise_bytes > 0.0).then_some((BAND * peak / 4.0, scatter_of_sampling)),
    );
    let tail_start = points[tail];
    let tail_secs = last.0 - tail_start.0;
    let tail_steps = points.len() - 1 - tail;
    let tail_level = median(points[tail..].iter().map(|p| p.1).collect());
    // A sampled estimate's tail may sit within its noise while it still
    // climbs, never falling, at a good part of the rate it filled (a leak
    // slowed by a busy machine, say): no plateau.
    let filling = tail > 0 && noise_bytes > 0.0 && {
        let fill = &points[..=tail];
        let fill_rate = (fill[tail].1 - fill[0].1) / (fill[tail].0 - fill[0].0).max(1e-9);
        let tail_rate = (last.1 - tail_start.1) / tail_secs.max(1e-9);
        points[tail..].windows(2).all(|w| w[1].1 >= w[0].1) && tail_rate >= fill_rate / 4.0
    };
    // A clean rise that holds: from the active window's start to the flat
    // tail the series rises at every step but one in eight, by more than
    // the band (a cache that filled and is full, too briefly yet for a
    // plateau). Rising that cleanly, it grew, however few the points.
    let held_rise = tail > start + 1 && {
        let fill = &points[start..=tail];
        let fill_steps = fill.len() - 1;
        let rising = match noise_bytes > 0.0 {
            true => fill.windows(2).filter(|w| w[1].1 >= w[0].1).count(),
            false => ups(fill),
        };
        rising >= fill_steps - fill_steps / 8 && fill[fill_steps].1 - fill[0].1 > band
    };
    let significant = net > band
        && slope > 0.0
        && (short || clear || held_rise || mann_kendall_z(trend) > Z_CRITICAL);
    if tail_level - first.1 > band && tail_steps >= 2 && tail_secs >= SUSTAINED * span && !filling {
        a.verdict = Verdict::Plateau;
        // Its growth now is that of the flat part, not of the fill.
        a.growth_bytes_per_sec = theil_sen(&points[tail..]);
        a.reason = format!(
            "grew to {} by {:.0} s, then flat for {:.0} s ({}/{} intervals)",
            bytes(tail_level as u64),
            tail_start.0,
            tail_secs,
            tail_steps,
            a.intervals
        );
        return a;
    }
    if !significant {
        a.reason = if last.1 <= band && peak > 0.0 {
            format!(
                "back to {} after peaking at {}",
                bytes(last.1 as u64),
                bytes(peak as u64)
            )
        } else if net <= band {
            format!(
                "no net growth over {} intervals ({} → {})",
                a.intervals,
                bytes(first.1 as u64),
                bytes(last.1 as u64)
            )
        } else if slope <= 0.0 {
            format!(
                "no upward trend over {} intervals: around {} (±{}){}",
                a.intervals,
                bytes(median(trend.iter().map(|p| p.1).collect()) as u64),
                bytes(scatter as u64),
                rate_if(a.rated, ", ", slope)
            )
        } else {
            format!(
                "no sustained growth: trend{} is within the scatter (±{}) of {} intervals",
                rate_if(a.rated, " ", slope),
                bytes(scatter as u64),
                a.intervals
            )
        };
        return a;
    }

    let active_steps = active.len() - 1;
    let active_ups = ups(active);
    // Without the intervals a rate needs, what was seen: the rise and the
    // time it took.
    let evidence = match a.rated {
        true => format!(
            "grew in {active_ups}/{active_steps} intervals, {}",
            rate_per_min(slope)
        ),
        false => format!(
            "grew in {active_ups}/{active_steps} intervals, {} in {}",
            signed(net),
            match active_span < 10.0 {
                true => format!("{active_span:.1} s"),
                false => secs(active_span),
            }
        ),
    };
    let age = oldest_age_secs.map(|s| format!(", oldest live {}", secs(s)));
    let old_enough = oldest_age_secs.is_none_or(|s| s >= 0.5 * active_span);
    a.verdict = Verdict::Growing;
    a.reason = if active_steps < MIN_LEAK_INTERVALS {
        format!(
            "{evidence}; too few intervals to call a leak ({active_steps} of {MIN_LEAK_INTERVALS})"
        )
    } else if thirds.iter().any(|&g| g <= 0.0) || thirds[2] < thirds[0] / 3.0 {
        format!(
            "{evidence}, but slowing or uneven: {} in the first third, {} in the last",
            signed(thirds[0]),
            signed(thirds[2])
        )
    } else if (active_ups as f64) < MOSTLY * active_steps as f64 {
        format!("{evidence}: irregular growth")
    } else if !old_enough {
        format!(
            "{evidence}, but nothing older than {} is live: a backlog that drains, not (yet) \
             a leak",
            secs(oldest_age_secs.unwrap_or(0.0))
        )
    } else {
        a.verdict = Verdict::Leak;
        format!("{evidence}{}", age.unwrap_or_default())
    };
    a
}

/// `{prefix}+X/min`, or nothing when the rate rests on too few intervals.
fn rate_if(rated: bool, prefix: &str, slope: f64) -> String {
    match rated {
        true => format!("{prefix}{}", rate_per_min(slope)),
        false => String::new(),
    }
}

/// Steps that went up.
fn ups(points: &[(f64, f64)]) -> usize {
    points.windows(2).filter(|w| w[1].1 > w[0].1).count()
}

/// Median of pairwise slopes (Theil–Sen): robust to a few outlying samples.
/// 0 with fewer than two distinct times.
pub fn theil_sen(points: &[(f64, f64)]) -> f64 {
    let mut slopes = Vec::with_capacity(points.len() * points.len().saturating_sub(1) / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            let dt = b.0 - a.0;
            if dt > f64::EPSILON {
                slopes.push((b.1 - a.1) / dt);
            }
        }
    }
    if slopes.is_empty() {
        0.0
    } else {
        median(slopes)
    }
}

/// The Mann–Kendall trend statistic as a z-score (with continuity
/// correction; the tie correction of the variance is left out, which only
/// makes the test more conservative).
fn mann_kendall_z(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 3 {
        return 0.0;
    }
    let mut s = 0.0;
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            s += (b.1 - a.1).signum() * f64::from(b.1 != a.1);
        }
    }
    let var = n * (n - 1.0) * (2.0 * n + 5.0) / 18.0;
    if s > 0.0 {
        (s - 1.0) / var.sqrt()
    } else if s < 0.0 {
        (s + 1.0) / var.sqrt()
    } else {
        0.0
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    let (_, &mut upper, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    if v.len() % 2 == 1 {
        upper
    } else {
        let lower = v[..mid].iter().copied().fold(f64::MIN, f64::max);
        (lower + upper) / 2.0
    }
}

/// Scatter of the points around the line of `slope` (through the median
/// intercept): the root mean square of the residuals. Not robust on
/// purpose — an odd sample makes a trend less clear, never more — and,
/// unlike the median deviation, not fooled by a line that happens to pass
/// through most of a handful of noisy samples.
fn scatter(points: &[(f64, f64)], slope: f64) -> f64 {
    let intercept = median(points.iter().map(|p| p.1 - slope * p.0).collect());
    let squares: f64 = points
        .iter()
        .map(|p| (p.1 - slope * p.0 - intercept).powi(2))
        .sum();
    (squares / points.len().max(1) as f64).sqrt()
}

/// Net growth in each third of the points' time span; a step belongs to the
/// third holding its midpoint.
fn thirds(points: &[(f64, f64)]) -> [f64; 3] {
    let mut out = [0.0; 3];
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return out;
    };
    let span = last.0 - first.0;
    if span <= 0.0 {
        return out;
    }
    for w in points.windows(2) {
        let mid = (w[0].0 + w[1].0) / 2.0 - first.0;
        let third = ((mid / span * 3.0) as usize).min(2);
        out[third] += w[1].1 - w[0].1;
    }
    out
}

/// Index where the longest flat suffix starts: all its points within `band`
/// of each other, and not rising at every step (a slow steady climb is not
/// flat, however small its steps). The last point alone if none.
///
/// A sampled series (`sampled`: the least rise that is material, a quarter
/// of the band; and the scatter of sampling, twice its noise) climbs when
/// it never falls over three points and rises by more than both, or over
/// five points by more than the first and the noise: a leak's estimate
/// stays level over an interval without a new sample, and a level's
/// jitters up three times in a row one time in six, five times one time in
/// 120 — more often where samples outlive a read (V8's live while their
/// objects are, the level's estimate wandering as they turn over), but
/// then by less than its noise. Nor is a sampled climb one that ends no
/// more than the material rise above a point before it within the band: it
/// comes back to a level already held (a sawtooth's tooth, garbage counted
/// until a collection), it does not leave it.
fn flat_tail(points: &[(f64, f64)], band: f64, sampled: Option<(f64, f64)>) -> usize {
    let last = points.len() - 1;
    let (mut lo, mut hi) = (points[last].1, points[last].1);
    let mut rising = true;
    let mut start = last;
    // Sampled: where the tail would end at a climb, kept while the points
    // before the climb are scanned for one as high as its end.
    let mut climb_cut: Option<usize> = None;
    for k in (0..last).rev() {
        let y = points[k].1;
        lo = lo.min(y);
        hi = hi.max(y);
        if hi - lo > band {
            break;
        }
        let len = last - k + 1;
        let climbs = match sampled {
            None => {
                rising &= points[k + 1].1 > y;
                rising && len >= 3
            }
            Some((material, scatter)) => {
                rising &= points[k + 1].1 >= y;
                if !rising && y >= points[last].1 - material {
                    climb_cut = None;
                }
                rising
                    && len >= 3
                    && hi - lo > material
                    && (hi - lo > scatter || (len >= 5 && hi - lo > scatter / 2.0))
            }
        };
        match (climbs, sampled) {
            (true, None) => break,
            (true, Some(_)) => {
                climb_cut.get_or_insert(k + 1);
            }
            (false, _) => {}
        }
        start = k;
    }
    climb_cut.unwrap_or(start)
}

fn secs(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

fn signed(b: f64) -> String {
    let sign = if b < 0.0 { "-" } else { "+" };
    format!("{sign}{}", bytes(b.abs() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `values` sampled every `dt` seconds from t = 0.
    fn series(dt: f64, values: &[f64]) -> Vec<(f64, f64)> {
        values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as f64 * dt, v))
            .collect()
    }

    fn verdict(points: &[(f64, f64)], age: Option<f64>) -> Analysis {
        analyse_points(points, age)
    }

    /// Deterministic pseudo-random jitter in [-1, 1] (splitmix64).
    fn jitter(i: usize) -> f64 {
        let mut z = (i as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z % 2001) as f64 / 1000.0 - 1.0
    }

    #[test]
    fn theil_sen_ignores_an_outlier() {
        let mut p = series(1.0, &[0.0, 10.0, 20.0, 30.0, 40.0, 50.0]);
        assert!((theil_sen(&p) - 10.0).abs() < 1e-9);
        p[3].1 = 10_000.0;
        assert!((theil_sen(&p) - 10.0).abs() < 1e-9);
        assert_eq!(theil_sen(&p[..1]), 0.0);
    }

    #[test]
    fn ramp_is_a_leak() {
        // 4 KiB per second from attach, sampled every 5 s for 20 s.
        let p = series(5.0, &[0.0, 20480.0, 40960.0, 61440.0, 81920.0]);
        let a = verdict(&p, Some(19.5));
        assert_eq!(a.verdict, Verdict::Leak, "{a:?}");
        assert!((a.growth_bytes_per_sec - 4096.0).abs() < 1e-6);
        assert_eq!((a.intervals, a.grew_intervals), (4, 4));
        assert_eq!(
            a.reason,
            "grew in 4/4 intervals, +240.0 KiB/min, oldest live 20 s"
        );
        assert_eq!((a.early_growth_bytes, a.late_growth_bytes), (20480, 20480));
        // Without age information the growth alone decides.
        assert_eq!(verdict(&p, None).verdict, Verdict::Leak);
    }

    #[test]
    fn noisy_ramp_is_a_leak() {
        let values: Vec<f64> = (0..30)
            .map(|i| (i as f64 * 1000.0 + 300.0 * jitter(i)).max(0.0))
            .collect();
        let a = verdict(&series(1.0, &values), Some(29.0));
        assert_eq!(a.verdict, Verdict::Leak, "{a:?}");
        assert!((a.growth_bytes_per_sec - 1000.0).abs() < 50.0, "{a:?}");
    }

    #[test]
    fn too_short_is_growing() {
        let a = verdict(&series(5.0, &[0.0, 4096.0, 8192.0]), Some(10.0));
        assert_eq!(a.verdict, Verdict::Growing, "{a:?}");
        assert_eq!(
            a.reason,
            "grew in 2/2 intervals, +8.0 KiB in 10 s; too few intervals to call a leak (2 of 4)"
        );
        // No rate from so little: an extrapolation would rank it.
        assert!(!a.rated);
        assert_eq!(a.active_intervals, 2);
        // A late start: flat for 10 intervals, then one step up is one
        // interval of evidence, however long the series.
        let mut late = vec![1e6; 11];
        late.push(2e6);
        let a = verdict(&series(1.0, &late), None);
        assert_eq!(
            (a.verdict, a.intervals, a.active_intervals),
            (Verdict::Growing, 11, 1)
        );
        // A stack that appeared in the last interval.
        assert_eq!(
            verdict(&series(1.0, &[0.0, 8192.0]), None).verdict,
            Verdict::Growing
        );
    }

    #[test]
    fn step_is_a_plateau() {
        let mut v = vec![0.0; 4];
        v.extend([8192.0; 8]);
        let a = verdict(&series(1.0, &v), Some(8.0));
        assert_eq!(a.verdict, Verdict::Plateau, "{a:?}");
        assert_eq!(
            a.reason,
            "grew to 8.0 KiB by 4 s, then flat for 7 s (7/11 intervals)"
        );
        // A step in the last intervals is too recent to call flat.
        let mut v = vec![0.0; 10];
        v.extend([8192.0; 2]);
        assert_eq!(verdict(&series(1.0, &v), None).verdict, Verdict::Growing);
    }

    #[test]
    fn plateau_after_ramp() {
        // A cache filling over 5 s, then replacing entries (jitter ±1 %).
        let values: Vec<f64> = (0..21)
            .map(|i| {
                if i <= 5 {
                    i as f64 * 51_200.0
                } else {
                    256_000.0 + 2_560.0 * jitter(i)
                }
            })
            .collect();
        let a = verdict(&series(1.0, &values), Some(20.0));
        assert_eq!(a.verdict, Verdict::Plateau, "{a:?}");
        assert!(a.reason.starts_with("grew to 25"), "{}", a.reason);
        // Early in the run, while it is still filling, it is growth.
        let a = verdict(&series(1.0, &values[..5]), Some(4.0));
        assert_eq!(a.verdict, Verdict::Leak, "{a:?}");
    }

    #[test]
    fn a_rise_that_holds_too_briefly_for_a_plateau_is_growing() {
        // A cache filling over 5 s, then full for 2 s of a 7 s run: short
        // of a plateau's third, and too few points for the Mann-Kendall
        // test. It grew: not `stable`.
        let values = [
            0.0, 49_152.0, 98_304.0, 147_456.0, 196_608.0, 245_760.0, 245_760.0, 245_760.0,
        ];
        let a = verdict(&series(1.0, &values), Some(5.0));
        assert_eq!(a.verdict, Verdict::Growing, "{a:?}");
        assert!(a.reason.contains("slowing or uneven"), "{}", a.reason);
        // A third of the run flat: a plateau.
        let mut longer = values.to_vec();
        longer.push(245_760.0);
        let a = verdict(&series(1.0, &longer), Some(6.0));
        assert_eq!(a.verdict, Verdict::Plateau, "{a:?}");
        // (Noise that happens to end high is no such rise: the churn
        // tests below still pass.)
    }

    #[test]
    fn sawtooth_is_stable() {
        // A buffer that fills and is flushed every 4 intervals.
        let values: Vec<f64> = (0..24).map(|i| (i % 4) as f64 * 1000.0).collect();
        let a = verdict(&series(1.0, &values), Some(3.0));
        assert_eq!(a.verdict, Verdict::Stable, "{a:?}");
    }

    #[test]
    fn rising_sawtooth_is_growing_or_leak() {
        // The same buffer, leaking 500 bytes per flush.
        let values: Vec<f64> = (0..24)
            .map(|i| (i % 4) as f64 * 1000.0 + (i / 4) as f64 * 500.0)
            .collect();
        let a = verdict(&series(1.0, &values), Some(23.0));
        assert!(
            matches!(a.verdict, Verdict::Growing | Verdict::Leak),
            "{a:?}"
        );
    }

    #[test]
    fn noise_is_stable() {
        // Churn: whatever happens to be in flight at each sample.
        let values: Vec<f64> = (0..20).map(|i| 5000.0 + 4000.0 * jitter(i)).collect();
        let a = verdict(&series(1.0, &values), Some(0.5));
        assert_eq!(a.verdict, Verdict::Stable, "{a:?}");
        // The same from a starting zero (a churn stack's first samples).
        let mut v = vec![0.0];
        v.extend([300.0, 120.0, 500.0, 0.0, 250.0]);
        let a = verdict(&series(1.0, &v), Some(0.1));
        assert_eq!(a.verdict, Verdict::Stable, "{a:?}");
        let flat = series(1.0, &[500.0; 5]);
        assert_eq!(verdict(&flat, None).verdict, Verdict::Stable);
        let freed = series(1.0, &[0.0, 4096.0, 0.0]);
        let a = verdict(&freed, None);
        assert_eq!(a.verdict, Verdict::Stable);
        assert_eq!(a.reason, "back to 0 B after peaking at 4.0 KiB");
    }

    #[test]
    fn random_churn_is_rarely_called_growth() {
        // 1000 series of 20 samples of pure noise around a level: how often
        // does noise alone pass for growth?
        let mut called = 0;
        for seed in 0..1000 {
            let values: Vec<f64> = (0..20)
                .map(|i| 50_000.0 + 30_000.0 * jitter(seed * 20 + i))
                .collect();
            let a = verdict(&series(1.0, &values), Some(1.0));
            called += usize::from(a.verdict != Verdict::Stable);
        }
        assert!(called <= 10, "{called}/1000 noise series not stable");
    }

    #[test]
    fn churn_from_a_starting_zero_is_rarely_called_growth() {
        // A stack of request-scoped blocks: nothing before it appeared,
        // then whatever is in flight at each sample (±20 %).
        for n in [6, 12, 21, 60, 121] {
            let mut called = 0;
            for seed in 0..1000 {
                let mut values = vec![0.0];
                values.extend((1..n).map(|i| 90_000.0 * (1.0 + 0.2 * jitter(seed * 200 + i))));
                let a = verdict(&series(1.0, &values), Some(0.9));
                called += usize::from(!matches!(a.verdict, Verdict::Stable | Verdict::Plateau));
            }
            eprintln!("{n} samples: {called}/1000 called growth");
            assert!(called <= 10, "{n} samples: {called}/1000 called growth");
        }
    }

    #[test]
    fn late_starting_leak() {
        // Flat for 12 s, then a steady leak for 8 s.
        let values: Vec<f64> = (0..21)
            .map(|i| {
                if i < 12 {
                    0.0
                } else {
                    (i - 12) as f64 * 2048.0
                }
            })
            .collect();
        let a = verdict(&series(1.0, &values), Some(8.0));
        assert_eq!(a.verdict, Verdict::Leak, "{a:?}");
        assert!((a.growth_bytes_per_sec - 2048.0).abs() < 1e-6);
        // Judged on its own span: its first third grew too.
        assert_eq!(a.early_growth_bytes, 6144);
        // Only two intervals into it, too early.
        let a = verdict(&series(1.0, &values[..15]), Some(2.0));
        assert_eq!(a.verdict, Verdict::Growing, "{a:?}");
    }

    #[test]
    fn slowing_growth_is_not_a_leak() {
        // Approaching a cap: halves the distance every interval.
        let values: Vec<f64> = (0..8).map(|i| 100_000.0 * (1.0 - 0.5f64.powi(i))).collect();
        let a = verdict(&series(1.0, &values), Some(7.0));
        assert_ne!(a.verdict, Verdict::Leak, "{a:?}");
    }

    #[test]
    fn young_backlog_is_growing() {
        let p = series(5.0, &[0.0, 20480.0, 40960.0, 61440.0, 81920.0]);
        let a = verdict(&p, Some(2.0));
        assert_eq!(a.verdict, Verdict::Growing, "{a:?}");
        assert!(a.reason.contains("backlog"), "{}", a.reason);
    }

    #[test]
    fn slow_climb_on_a_big_base_is_not_flat() {
        // A full 1 MiB cache plus a 1 KiB-per-interval leak on one stack.
        let mut v = vec![0.0];
        v.extend((0..20).map(|i| 1_048_576.0 + i as f64 * 1024.0));
        let a = verdict(&series(1.0, &v), Some(20.0));
        assert_ne!(a.verdict, Verdict::Plateau, "{a:?}");
        assert_ne!(a.verdict, Verdict::Stable, "{a:?}");
    }
}

#[cfg(test)]
mod sampled {
    use super::*;

    /// A Go heap profile's bounded cache of 64 MiB, estimated from ~125
    /// recorded objects: filled in 3 s, then scattered by sampling alone.
    #[test]
    fn a_sampled_level_is_a_plateau() {
        let mib = [
            0.0, 11.7, 42.7, 62.0, 61.4, 66.0, 60.9, 50.3, 57.4, 62.5, 55.9, 63.0, 68.1,
        ];
        let points: Vec<(f64, f64)> = mib
            .iter()
            .enumerate()
            .map(|(i, m)| (i as f64, m * 1048576.0))
            .collect();
        let noise = 2.0 * 0.088 * 68.1 * 1048576.0;
        let a = analyse_noisy(&points, None, noise);
        assert_eq!(a.verdict, Verdict::Plateau, "{}", a.reason);
        // Measured exactly, the same numbers would be no plateau.
        assert_ne!(analyse_points(&points, None).verdict, Verdict::Plateau);
    }

    /// A Go map leak's heap profile estimate over four 2 s intervals (one
    /// sample per 512 KiB): its last three points lie within twice the
    /// level's noise, but they climb as fast as it filled.
    #[test]
    fn a_sampled_climb_at_its_fill_rate_is_no_plateau() {
        let mb = [0.0, 11.01, 19.92, 27.79, 37.23];
        let points: Vec<(f64, f64)> = mb
            .iter()
            .enumerate()
            .map(|(i, m)| (i as f64 * 2.1, m * 1e6))
            .collect();
        let weight: f64 = 524288.0;
        let noise = 2.0 * (37.23e6 / weight).sqrt() * weight;
        let a = analyse_noisy(&points, None, noise);
        assert_ne!(a.verdict, Verdict::Plateau, "{}", a.reason);
        assert_ne!(a.verdict, Verdict::Stable, "{}", a.reason);
    }

    /// The noise of a Go heap profile's estimate of `level` bytes of small
    /// objects (one sample per 512 KiB).
    fn go_noise(level: f64) -> f64 {
        let weight: f64 = 524288.0;
        2.0 * (level / weight).sqrt() * weight
    }

    /// A Go map leak on a busy machine (four programs and their tracers
    /// on two CPUs): it filled at 3.8 MB/s, then went on at half that,
    /// every read higher than the last, all within twice the noise.
    #[test]
    fn a_sampled_leak_that_slows_is_no_plateau() {
        let mb = [
            0.0, 4.5, 10.0, 15.0, 19.0, 22.0, 24.5, 27.0, 30.4, 31.5, 34.1, 35.7, 37.8,
        ];
        let points: Vec<(f64, f64)> = mb
            .iter()
            .enumerate()
            .map(|(i, m)| (i as f64, m * 1e6))
            .collect();
        let a = analyse_noisy(&points, None, go_noise(37.8e6));
        assert_eq!(a.verdict, Verdict::Leak, "{}", a.reason);
    }

    /// V8's estimate of a full LRU cache (one sample per 32 KiB, ~1,800
    /// samples), read every 0.5 s: its evicted entries stay counted until
    /// a major collection, so the level climbs between them, here for
    /// 3 s at the end back to where it had been.
    #[test]
    fn a_sampled_level_climbing_back_to_itself_is_a_plateau() {
        let mb = [
            0.0, 8.2, 16.6, 25.1, 34.2, 42.0, 49.5, 55.5, 56.9, 57.5, 58.0, 57.2, 56.6, 56.9, 56.3,
            55.6, 56.0, 56.5, 57.0, 57.6, 58.1, 58.6,
        ];
        let points: Vec<(f64, f64)> = mb
            .iter()
            .enumerate()
            .map(|(i, m)| (i as f64 * 0.5, m * 1e6))
            .collect();
        let noise = 2.0 * (58.6e6 * 32768.0_f64).sqrt();
        let a = analyse_noisy(&points, None, noise);
        assert_eq!(a.verdict, Verdict::Plateau, "{}", a.reason);
        // A climb to a level not held before is still one.
        let mut higher = points.clone();
        for (i, p) in higher.iter_mut().enumerate().skip(15) {
            p.1 += (i - 14) as f64 * 1.5e6;
        }
        let b = analyse_noisy(&higher, None, noise);
        assert_ne!(b.verdict, Verdict::Plateau, "{}", b.reason);
    }
}

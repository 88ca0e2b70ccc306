//! Checks of a report that several tests make with an exception of their
//! own (beside `report.rs`'s, which every report must pass).

use crate::Report;

/// The losses other than `kind` that are not 0, as `name = value`.
pub fn losses_except(report: &Report, kind: &str) -> Vec<String> {
    report
        .losses
        .nonzero()
        .into_iter()
        .filter(|&(k, _)| k != kind)
        .map(|(k, v)| format!("{k} = {v}"))
        .collect()
}

/// [`Report::consistency_problems`] but those containing `known` (a rule
/// the test knows does not hold for its run).
pub fn consistency_problems_except(report: &Report, known: &str) -> Vec<String> {
    report
        .consistency_problems()
        .into_iter()
        .filter(|p| !p.contains(known))
        .collect()
}

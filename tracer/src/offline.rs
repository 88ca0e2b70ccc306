//! The offline subcommands: `memtrace report` renders a saved JSON report
//! (a snapshot) in any format, `memtrace diff` compares two snapshots (JSON
//! reports or folded stacks). They read files only: no privileges needed.

use std::path::Path;

use anyhow::Result;
use memtrace_report::{diff, load::Snapshot};

use crate::{config::Offline, output};

/// Runs an offline subcommand.
pub fn run(command: &Offline) -> Result<()> {
    match command {
        Offline::Report { snapshot, outputs } => {
            let mut report = memtrace_report::load::load(snapshot)?;
            if let Some(n) = outputs.top {
                report.stacks.truncate(n as usize);
            }
            output::check_files(&outputs.list)?;
            output::write_report(&report, outputs, &outputs.list)
        }
        Offline::Diff {
            before,
            after,
            outputs,
        } => {
            let d = match (Snapshot::load(before)?, Snapshot::load(after)?) {
                (Snapshot::Report(b), Snapshot::Report(a)) => diff::diff(&b, &a),
                // A JSON report against folded stacks: compared as folded
                // stacks of outstanding bytes.
                (b, a) => diff::diff_folded(&b.into_folded(), &a.into_folded()),
            };
            let title = format!(
                "memtrace diff: {} → {}",
                file_name(before),
                file_name(after)
            );
            output::check_files(&outputs.list)?;
            output::write_diff(&d, &title, outputs)
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

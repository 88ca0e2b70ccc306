//! The offline subcommands: `memtrace report` renders a saved JSON report
//! (a snapshot) in any format, `memtrace diff` compares two snapshots (JSON
//! reports or folded stacks). They read files only: no privileges needed.

use std::path::Path;

use anyhow::{Context, Result};

use crate::{
    cli::{Subcommands, Weight},
    output,
    report::{self, diff, folded},
};

/// Runs an offline subcommand, writing to its planned `outputs`.
pub fn run(command: &Subcommands, outputs: &[output::Output]) -> Result<()> {
    match command {
        Subcommands::Report { snapshot, out } => {
            let mut report = report::load(snapshot)?;
            if let Some(n) = out.top {
                report.stacks.truncate(n as usize);
            }
            output::check_files(outputs)?;
            output::write_report(&report, outputs, out)
        }
        Subcommands::Diff { before, after, out } => {
            let d = match (load_either(before)?, load_either(after)?) {
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
            output::check_files(outputs)?;
            output::write_diff(&d, &title, outputs, out)
        }
        Subcommands::Agent(_) => unreachable!("main runs the agent"),
    }
}

/// A saved snapshot: a JSON report, or folded stacks.
pub enum Snapshot {
    Report(Box<report::Report>),
    Folded(Vec<(Vec<String>, u64)>),
}

impl Snapshot {
    /// A snapshot from its text (JSON when it starts with `{`); `name`
    /// names it in errors.
    pub fn parse(text: &str, name: &str) -> Result<Snapshot> {
        if text.trim_start().starts_with('{') {
            return Ok(Snapshot::Report(Box::new(report::parse(text, name)?)));
        }
        let stacks = folded::parse(text)
            .with_context(|| format!("{name} is neither a JSON report nor folded stacks"))?;
        Ok(Snapshot::Folded(stacks))
    }

    pub fn into_folded(self) -> Vec<(Vec<String>, u64)> {
        match self {
            Snapshot::Report(r) => folded::stacks(&r, Weight::Outstanding),
            Snapshot::Folded(f) => f,
        }
    }
}

/// A JSON report, or folded stacks (anything that does not start with `{`).
fn load_either(path: &Path) -> Result<Snapshot> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Snapshot::parse(&text, &path.display().to_string())
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

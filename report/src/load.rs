//! Reading saved reports back (snapshots): a JSON report of this
//! [`REPORT_VERSION`], or folded stacks, for `memtrace report` and
//! `memtrace diff`. Input comes from anywhere, so every failure is an error
//! that names the file, never a panic.

use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::{
    model::{Report, Weight, REPORT_VERSION},
    render::folded,
};

/// Reads a JSON report saved earlier (a snapshot) for offline rendering.
pub fn load(path: &Path) -> Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// Parses the text of a JSON report; `name` names it in errors.
pub fn parse(text: &str, name: &str) -> Result<Report> {
    let version = serde_json::from_str::<serde_json::Value>(text)
        .with_context(|| format!("{name} is not JSON"))?
        .get("version")
        .and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(REPORT_VERSION)) {
        bail!(
            "{name} is not a memtrace JSON report of version {REPORT_VERSION} (found version {})",
            version.map_or("none".to_string(), |v| v.to_string())
        );
    }
    serde_json::from_str(text).with_context(|| format!("{name} is not a valid memtrace report"))
}

/// A saved snapshot: a JSON report, or folded stacks.
pub enum Snapshot {
    Report(Box<Report>),
    Folded(Vec<(Vec<String>, u64)>),
}

impl Snapshot {
    /// A snapshot from its text (JSON when it starts with `{`); `name`
    /// names it in errors.
    pub fn parse(text: &str, name: &str) -> Result<Snapshot> {
        if text.trim_start().starts_with('{') {
            return Ok(Snapshot::Report(Box::new(parse(text, name)?)));
        }
        let stacks = folded::parse(text)
            .with_context(|| format!("{name} is neither a JSON report nor folded stacks"))?;
        Ok(Snapshot::Folded(stacks))
    }

    /// A JSON report, or folded stacks (anything that does not start with
    /// `{`), from a file.
    pub fn load(path: &Path) -> Result<Snapshot> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Snapshot::parse(&text, &path.display().to_string())
    }

    /// Its stacks as folded stacks of outstanding bytes.
    pub fn into_folded(self) -> Vec<(Vec<String>, u64)> {
        match self {
            Snapshot::Report(r) => folded::stacks(&r, Weight::Outstanding),
            Snapshot::Folded(f) => f,
        }
    }
}

//! Outputs of a run: where each report goes (stdout or files, several at
//! once), in which format (`--format`, else the file's extension), rendering
//! the report model — or a diff of two — into it, and writing it. Every
//! output that can be written is: one that fails is reported on its own
//! line and makes the run fail ([`NotWritten`]), after the others are
//! written.

use std::{fmt, io::Write, path::Path};

use anyhow::{Context, Result};

use memtrace_report::{
    diff::{self, Diff},
    render::{self, Format},
    units, Report,
};

use crate::config::{Output, Outputs, DEFAULT_TOP};

pub mod atomic;

/// Outputs that could not be written, each already reported on stderr
/// (`memtrace: error: ...`, one line each): what is left to say is the
/// exit status.
#[derive(Debug)]
pub struct NotWritten {
    pub failed: usize,
    pub of: usize,
}

impl fmt::Display for NotWritten {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} outputs not written", self.failed, self.of)
    }
}

impl std::error::Error for NotWritten {}

/// Checks every output file now, so one that cannot be written is found
/// out before tracing, not after (see [`atomic::check`]; nothing is
/// written or truncated yet). Each one that cannot is reported.
pub fn check_files(outputs: &[Output]) -> Result<()> {
    let files: Vec<&Path> = outputs.iter().filter_map(|o| o.path.as_deref()).collect();
    let failed = files
        .iter()
        .filter(|path| match atomic::check(path) {
            Ok(()) => false,
            Err(e) => {
                crate::note(&format!("error: {e:#}"));
                true
            }
        })
        .count();
    match failed {
        0 => Ok(()),
        failed => Err(NotWritten {
            failed,
            of: files.len(),
        }
        .into()),
    }
}

/// Whether an output wants every stack (all but text, which shows the top).
pub fn wants_all_stacks(outputs: &[Output]) -> bool {
    outputs.iter().any(|o| o.format != Format::Text)
}

/// Stacks a report needs to hold for these outputs.
pub fn stacks_needed(outputs: &Outputs) -> usize {
    match outputs.top {
        Some(n) => n as usize,
        None if wants_all_stacks(&outputs.list) => usize::MAX,
        None => DEFAULT_TOP,
    }
}

/// Renders the report into every output (JSON streamed into it).
pub fn write_report(report: &Report, outputs: &Outputs, list: &[Output]) -> Result<()> {
    let opts = outputs.render_options();
    write_all(list, outputs.name_files, |o, out| {
        render::render(report, o.format, opts, out).map_err(std::io::Error::other)
    })
}

/// Renders a diff into every output (text, JSON or SVG: the command line
/// allows no other).
pub fn write_diff(d: &Diff, title: &str, outputs: &Outputs) -> Result<()> {
    let opts = outputs.render_options();
    write_all(&outputs.list, outputs.name_files, |o, out| {
        let bytes = match o.format {
            Format::Json => diff::json(d).into_bytes(),
            Format::Svg => diff::svg(d, title).map_err(std::io::Error::other)?,
            Format::Html => diff::html(d, title).map_err(std::io::Error::other)?,
            _ => diff::text(d, opts.text_top).into_bytes(),
        };
        out.write_all(&bytes)
    })
}

/// Writes every output of `list` with `fill`, each whatever became of the
/// others: a failure is reported on its own line and the run fails once all
/// are done. With `name_files`, each file written is named on stdout after
/// the report there.
fn write_all(
    list: &[Output],
    name_files: bool,
    fill: impl Fn(&Output, &mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let mut failed = 0;
    let mut written = Vec::new();
    for o in list {
        match write_with(o.path.as_deref(), |out| fill(o, out)) {
            Ok(()) => written.extend(o.path.as_deref()),
            Err(e) => {
                crate::note(&format!("error: {e:#}"));
                failed += 1;
            }
        }
    }
    if name_files && !written.is_empty() {
        let names: String = written.iter().map(|p| written_line(p)).collect();
        write(None, names.as_bytes())?;
    }
    match failed {
        0 => Ok(()),
        failed => Err(NotWritten {
            failed,
            of: list.len(),
        }
        .into()),
    }
}

/// `memtrace: wrote leak.json (14.2 KiB)`, a line naming a file written.
fn written_line(path: &Path) -> String {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => format!(
            "memtrace: wrote {} ({})\n",
            path.display(),
            units::bytes(m.len())
        ),
        _ => format!("memtrace: wrote {}\n", path.display()),
    }
}

/// Writes to a file (atomically, never through a link another user
/// planted: see [`atomic`]), or to stdout (a reader that went away, as
/// with `| head`, is not an error).
pub fn write(path: Option<&Path>, bytes: &[u8]) -> Result<()> {
    write_with(path, |out| out.write_all(bytes))
}

/// Like [`write`], with what `fill` writes into the file or stdout
/// (buffered).
pub fn write_with(
    path: Option<&Path>,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    match path {
        Some(path) => atomic::write(path, fill)
            .with_context(|| format!("writing the report to {}", path.display())),
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            match fill(&mut out).and_then(|()| out.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                r => r.context("writing the report"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(formats: &[(Option<&str>, Format)], top: Option<u32>) -> Outputs {
        Outputs {
            list: formats
                .iter()
                .map(|&(path, format)| Output {
                    path: path.map(Into::into),
                    format,
                })
                .collect(),
            top,
            weight: Default::default(),
            name_files: false,
        }
    }

    #[test]
    fn stacks_for_machine_outputs() {
        assert_eq!(stacks_needed(&outputs(&[(None, Format::Text)], None)), 10);
        let json = outputs(&[(Some("a.json"), Format::Json)], None);
        assert_eq!(stacks_needed(&json), usize::MAX);
        assert_eq!(
            stacks_needed(&outputs(&[(Some("a.json"), Format::Json)], Some(3))),
            3
        );
    }
}

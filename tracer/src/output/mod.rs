//! Outputs of a run: where each report goes (stdout or files, several at
//! once), in which format (`--format`, else the file's extension), rendering
//! the report model — or a diff of two — into it, and writing it.

use std::{io::Write, path::Path};

use anyhow::{Context, Result};

use memtrace_report::{
    diff::{self, Diff},
    render::{self, Format, Options},
    Report,
};

use crate::config::{Output, Outputs, DEFAULT_TOP};

pub mod atomic;

/// Checks every output file now, so one that cannot be written is found
/// out before tracing, not after (see [`atomic::check`]; nothing is
/// written or truncated yet).
pub fn check_files(outputs: &[Output]) -> Result<()> {
    for path in outputs.iter().filter_map(|o| o.path.as_ref()) {
        atomic::check(path)?;
    }
    Ok(())
}

/// Whether an output wants every stack (all but text, which shows the top).
pub fn wants_all_stacks(outputs: &[Output]) -> bool {
    outputs.iter().any(|o| o.format != Format::Text)
}

/// Whether stdout carries a machine-readable report (so progress lines must
/// go elsewhere).
pub fn machine_on_stdout(outputs: &[Output]) -> bool {
    outputs
        .iter()
        .any(|o| o.path.is_none() && o.format != Format::Text)
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
pub fn write_report(report: &Report, outputs: &[Output], opts: Options) -> Result<()> {
    for o in outputs {
        write_with(o.path.as_deref(), |out| {
            render::render(report, o.format, opts, out).map_err(std::io::Error::other)
        })?;
    }
    Ok(())
}

/// Renders a diff into every output (text, JSON or SVG: the command line
/// allows no other).
pub fn write_diff(d: &Diff, title: &str, outputs: &[Output], opts: Options) -> Result<()> {
    for o in outputs {
        let bytes = match o.format {
            Format::Json => diff::json(d).into_bytes(),
            Format::Svg => diff::svg(d, title)?,
            _ => diff::text(d, opts.text_top).into_bytes(),
        };
        write(o.path.as_deref(), &bytes)?;
    }
    Ok(())
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
        assert!(!machine_on_stdout(&json.list));
        assert!(machine_on_stdout(
            &outputs(&[(None, Format::Json)], None).list
        ));
    }
}

//! Outputs of a run: where each report goes (stdout or files, several at
//! once), in which format (`--format`, else the file's extension), rendering
//! the report model — or a diff of two — into it, and writing it.

use std::{
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::{
    cli::{Format, OutputArgs},
    outfile,
    report::{self, diff::Diff, Report},
};

/// One destination of a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// None for stdout.
    pub path: Option<PathBuf>,
    pub format: Format,
}

/// The outputs the options ask for, checked: every file's format is known,
/// no file is named twice, binary pprof does not go to a terminal, and a
/// diff is written as text, JSON or SVG.
pub fn plan(args: &OutputArgs, diff: bool) -> Result<Vec<Output>, String> {
    let outputs = if args.outputs.is_empty() {
        let format = args.format.unwrap_or(Format::Text);
        if format == Format::Pprof && std::io::stdout().is_terminal() {
            return Err("pprof output is binary: write it to a file with -o FILE.pb.gz".into());
        }
        vec![Output { path: None, format }]
    } else {
        let mut outputs: Vec<Output> = Vec::new();
        for path in &args.outputs {
            if outputs.iter().any(|o| o.path.as_ref() == Some(path)) {
                return Err(format!("--output {} is given twice", path.display()));
            }
            let format = args
                .format
                .or_else(|| from_extension(path))
                .ok_or_else(|| {
                    format!(
                        "--output {}: cannot tell the format from its extension (.json, .svg, \
                         .folded, .txt, .pb.gz): add --format",
                        path.display()
                    )
                })?;
            outputs.push(Output {
                path: Some(path.clone()),
                format,
            });
        }
        outputs
    };
    if diff {
        if let Some(o) = outputs
            .iter()
            .find(|o| !matches!(o.format, Format::Text | Format::Json | Format::Svg))
        {
            return Err(format!(
                "memtrace diff writes text, json or svg, not {}",
                format_name(o.format)
            ));
        }
    }
    Ok(outputs)
}

/// The format a file's name implies.
fn from_extension(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    let formats = [
        (".json", Format::Json),
        (".svg", Format::Svg),
        (".folded", Format::Folded),
        (".txt", Format::Folded),
        (".pb.gz", Format::Pprof),
        (".pprof", Format::Pprof),
        (".pb", Format::Pprof),
    ];
    formats
        .into_iter()
        .find(|(ext, _)| name.ends_with(ext))
        .map(|(_, f)| f)
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Text => "text",
        Format::Json => "json",
        Format::Svg => "svg",
        Format::Folded => "folded",
        Format::Pprof => "pprof",
    }
}

/// Checks every output file now, so one that cannot be written is found
/// out before tracing, not after (see [`outfile::check`]; nothing is
/// written or truncated yet).
pub fn check_files(outputs: &[Output]) -> Result<()> {
    for path in outputs.iter().filter_map(|o| o.path.as_ref()) {
        outfile::check(path)?;
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
pub fn stacks_needed(args: &OutputArgs, outputs: &[Output]) -> usize {
    match args.top {
        Some(n) => n as usize,
        None if wants_all_stacks(outputs) => usize::MAX,
        None => crate::cli::DEFAULT_TOP,
    }
}

/// Renders the report into every output (JSON streamed into it).
pub fn write_report(report: &Report, outputs: &[Output], args: &OutputArgs) -> Result<()> {
    for o in outputs {
        let bytes = match o.format {
            Format::Text => report::text::render(report, args.text_top()).into_bytes(),
            Format::Json => {
                write_with(o.path.as_deref(), |out| report::json::write(report, out))?;
                continue;
            }
            Format::Svg => report::svg::render(report, args.weight)?,
            Format::Folded => report::folded::render(report, args.weight).into_bytes(),
            Format::Pprof => report::pprof::render(report)?,
        };
        write(o.path.as_deref(), &bytes)?;
    }
    Ok(())
}

/// Renders a diff into every output (text, JSON or SVG: see [`plan`]).
pub fn write_diff(diff: &Diff, title: &str, outputs: &[Output], args: &OutputArgs) -> Result<()> {
    for o in outputs {
        let bytes = match o.format {
            Format::Json => report::diff::json(diff).into_bytes(),
            Format::Svg => report::diff::svg(diff, title)?,
            _ => report::diff::text(diff, args.text_top()).into_bytes(),
        };
        write(o.path.as_deref(), &bytes)?;
    }
    Ok(())
}

/// Writes to a file (atomically, never through a link another user
/// planted: see [`outfile`]), or to stdout (a reader that went away, as
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
        Some(path) => outfile::write(path, fill)
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
    use crate::cli::Weight;

    fn args(format: Option<Format>, outputs: &[&str]) -> OutputArgs {
        OutputArgs {
            format,
            outputs: outputs.iter().map(PathBuf::from).collect(),
            weight: Weight::Outstanding,
            top: None,
        }
    }

    fn formats(plan: Vec<Output>) -> Vec<Format> {
        plan.into_iter().map(|o| o.format).collect()
    }

    #[test]
    fn formats_follow_extensions_unless_given() {
        let p = plan(
            &args(None, &["a.json", "b.SVG", "c.folded", "d.txt", "e.pb.gz"]),
            false,
        );
        assert_eq!(
            formats(p.unwrap()),
            [
                Format::Json,
                Format::Svg,
                Format::Folded,
                Format::Folded,
                Format::Pprof
            ]
        );
        let p = plan(&args(Some(Format::Json), &["report.out"]), false).unwrap();
        assert_eq!(p[0].path.as_deref(), Some(Path::new("report.out")));
        assert_eq!(formats(p), [Format::Json]);
        let err = plan(&args(None, &["report.out"]), false).unwrap_err();
        assert!(err.contains("add --format"), "{err}");
        let err = plan(&args(None, &["a.json", "a.json"]), false).unwrap_err();
        assert!(err.contains("given twice"), "{err}");
        assert_eq!(
            plan(&args(None, &[]), false).unwrap(),
            [Output {
                path: None,
                format: Format::Text
            }]
        );
    }

    #[test]
    fn diff_outputs_are_text_json_or_svg() {
        assert!(plan(&args(None, &["d.svg", "d.json"]), true).is_ok());
        let err = plan(&args(None, &["d.pb.gz"]), true).unwrap_err();
        assert_eq!(err, "memtrace diff writes text, json or svg, not pprof");
    }

    #[test]
    fn stacks_for_machine_outputs() {
        let text = plan(&args(None, &[]), false).unwrap();
        assert_eq!(stacks_needed(&args(None, &[]), &text), 10);
        let json = plan(&args(None, &["a.json"]), false).unwrap();
        assert_eq!(stacks_needed(&args(None, &["a.json"]), &json), usize::MAX);
        let mut top = args(None, &["a.json"]);
        top.top = Some(3);
        assert_eq!(stacks_needed(&top, &json), 3);
        assert!(!machine_on_stdout(&json));
        assert!(machine_on_stdout(
            &plan(&args(Some(Format::Json), &[]), false).unwrap()
        ));
    }
}

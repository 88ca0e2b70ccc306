//! The renderers: each reads the [`Report`] model and
//! nothing else. [`Format`] names the final formats and [`render`] picks the
//! renderer; `live` draws the view shown while tracing.

pub mod folded;
pub mod html;
pub mod json;
pub mod live;
pub mod pprof;
pub mod svg;
pub mod text;

use std::io::Write;

use anyhow::Result;

use crate::model::{Report, Weight};

/// A final report's format (`--format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Format {
    /// Human-readable report.
    Text,
    /// Machine-readable report, a complete snapshot (docs/outputs.md has the schema).
    Json,
    /// Interactive flamegraph (SVG), widths by --weight.
    Svg,
    /// Folded stacks (flamegraph.pl, inferno, speedscope), weights by --weight.
    Folded,
    /// gzip-compressed pprof profile (go tool pprof, Pyroscope, Parca, Grafana), shown
    /// by --weight first.
    Pprof,
    /// One self-contained page (charts, sortable stack table, icicle graph),
    /// opened from disk in a browser.
    Html,
}

impl Format {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Json => "json",
            Format::Svg => "svg",
            Format::Folded => "folded",
            Format::Pprof => "pprof",
            Format::Html => "html",
        }
    }
}

/// How renderers that choose show a report: stacks listed in text, and the
/// weight of stack-based formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Stacks shown in the text report.
    pub text_top: usize,
    /// What flamegraph widths and folded weights measure.
    pub weight: Weight,
}

/// Renders `report` as `format` into `out` (JSON streamed, never held whole).
pub fn render(report: &Report, format: Format, opts: Options, out: &mut dyn Write) -> Result<()> {
    match format {
        Format::Text => out.write_all(text::render(report, opts.text_top).as_bytes())?,
        Format::Json => json::write(report, out)?,
        Format::Svg => out.write_all(&svg::render(report, opts.weight)?)?,
        Format::Folded => out.write_all(folded::render(report, opts.weight).as_bytes())?,
        Format::Pprof => out.write_all(&pprof::render(report, opts.weight)?)?,
        Format::Html => out.write_all(&html::render(report)?)?,
    }
    Ok(())
}

//! Interactive flamegraph (SVG) of a report, drawn by the `inferno` crate
//! from the folded stacks: widths are the chosen weight, the allocating
//! functions are coloured by their stacks' verdict (leak red, growing
//! orange, plateau amber, stable grey) and the callers by a cool palette so
//! the two never mix up. Also the shared inferno plumbing `diff` uses.
//!
//! inferno colours by function name, so a function that allocates in
//! stacks of several verdicts takes the most severe one, and shows that
//! colour wherever it appears. Its `nameattr` map cannot set a fill, so the
//! colours go through a palette map; the attribute map only tags those
//! frames with `data-verdict`.

use std::collections::HashMap;

use inferno::flamegraph::{
    self,
    color::{BasicPalette, Color, Palette, PaletteMap},
    FuncFrameAttrsMap, Options,
};

use super::folded;
use crate::model::{name_of, verdict_counts, weight, Report, StackReport, Verdict, Weight};

/// The SVG flamegraph of a report; an empty one (nothing with a non-zero
/// weight) is a valid SVG saying so.
pub fn render(report: &Report, weight: Weight) -> anyhow::Result<Vec<u8>> {
    let stacks = folded::stacks(report, weight);
    let lines: Vec<String> = stacks
        .iter()
        .map(|(frames, w)| format!("{} {w}", frames.join(";")))
        .collect();
    let verdicts = leaf_verdicts(report, weight);
    let mut palette = PaletteMap::default();
    for (name, v) in &verdicts {
        palette.insert(name, verdict_color(*v));
    }
    let mut opt = options(title(report, weight), count_name(weight));
    opt.subtitle = Some(subtitle(report, weight));
    opt.colors = Palette::Basic(BasicPalette::Aqua);
    opt.palette_map = Some(&mut palette);
    opt.func_frameattrs = frame_attrs(&verdicts)?;
    draw(&mut opt, &lines, &format!("no stack has {}", what(weight)))
}

/// Options shared by memtrace's flamegraphs: deterministic colours, fluid
/// width, the title and the unit of the counts.
pub(crate) fn options<'a>(title: String, count_name: &str) -> Options<'a> {
    let mut opt = Options::default();
    opt.title = title;
    opt.count_name = count_name.to_string();
    opt.deterministic = true;
    opt
}

/// Draws folded lines (one or two counts) with inferno. Without any count
/// (inferno refuses that) it draws a single frame reading `empty`, counted
/// as 0.
pub(crate) fn draw(
    opt: &mut Options<'_>,
    lines: &[String],
    empty: &str,
) -> anyhow::Result<Vec<u8>> {
    let mut svg = Vec::new();
    let has_counts = lines
        .iter()
        .any(|l| l.rsplit_once(' ').is_some_and(|(_, n)| n != "0"));
    if has_counts {
        flamegraph::from_lines(opt, lines.iter().map(String::as_str), &mut svg)?;
    } else {
        let name = folded::sanitize(empty);
        opt.func_frameattrs =
            FuncFrameAttrsMap::from_reader(format!("{name}\ttitle={name}\n").as_bytes())?;
        // The frame needs a sample to be drawn; a factor of 0 reports it
        // (and the total) as 0.
        opt.factor = 0.0;
        flamegraph::from_lines(opt, [format!("{name} 1").as_str()], &mut svg)?;
    }
    Ok(svg)
}

/// The most severe verdict (`Verdict` orders `Leak` first) of the stacks
/// allocating in each function (the leaf of the folded stack), over the
/// stacks drawn.
fn leaf_verdicts(report: &Report, w: Weight) -> HashMap<String, Verdict> {
    let mut verdicts: HashMap<String, Verdict> = HashMap::new();
    for s in report.stacks.iter().filter(|s| weight(s, w) > 0) {
        let leaf = folded::frame_names(s).pop().unwrap_or_default();
        verdicts
            .entry(leaf)
            .and_modify(|v| *v = (*v).min(s.verdict))
            .or_insert(s.verdict);
    }
    verdicts
}

/// The fill of a function allocating in stacks of this verdict.
fn verdict_color(v: Verdict) -> Color {
    let (r, g, b) = match v {
        Verdict::Leak => (0xd6, 0x27, 0x28),
        Verdict::Growing => (0xff, 0x7f, 0x0e),
        Verdict::Plateau => (0xf2, 0xc1, 0x2e),
        Verdict::Stable => (0xb4, 0xb4, 0xb4),
    };
    Color { r, g, b }
}

/// Tags the allocating functions' frames with `data-verdict="…"`.
fn frame_attrs(verdicts: &HashMap<String, Verdict>) -> anyhow::Result<FuncFrameAttrsMap> {
    let lines: String = verdicts
        .iter()
        .map(|(name, v)| format!("{name}\tg_extra=data-verdict=\"{}\"\n", name_of(v)))
        .collect();
    Ok(FuncFrameAttrsMap::from_reader(lines.as_bytes())?)
}

/// `memtrace: demo_leak (pid 123), 15 s — outstanding bytes`.
fn title(report: &Report, w: Weight) -> String {
    let targets: Vec<String> = report
        .targets
        .iter()
        .map(|t| format!("{} (pid {})", t.comm, t.pid))
        .collect();
    let mut parts = targets;
    parts.push(seconds(report.duration_secs));
    format!("memtrace: {} — {}", parts.join(", "), what(w))
}

/// Verdict counts of the stacks drawn and the colour legend.
fn subtitle(report: &Report, w: Weight) -> String {
    let drawn: Vec<&StackReport> = report.stacks.iter().filter(|s| weight(s, w) > 0).collect();
    if drawn.is_empty() {
        return "no stacks".to_string();
    }
    format!(
        "{} stack{} ({}); allocating functions by verdict: leak red, growing orange, plateau \
         amber, stable grey",
        drawn.len(),
        if drawn.len() == 1 { "" } else { "s" },
        verdict_counts(drawn, false)
    )
}

/// What a weight measures, for titles.
fn what(w: Weight) -> &'static str {
    match w {
        Weight::Outstanding => "outstanding bytes",
        Weight::Growth => "growth (bytes/h)",
        Weight::Allocated => "allocated bytes",
        Weight::Count => "outstanding allocations",
        Weight::Peak => "peak outstanding bytes (as sampled)",
    }
}

fn count_name(w: Weight) -> &'static str {
    match w {
        Weight::Outstanding | Weight::Allocated | Weight::Peak => "bytes",
        Weight::Growth => "bytes/h",
        Weight::Count => "allocations",
    }
}

/// `15 s`, `1.5 s`.
pub(crate) fn seconds(secs: f64) -> String {
    if (secs - secs.round()).abs() < 0.05 {
        format!("{:.0} s", secs)
    } else {
        format!("{secs:.1} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{report, stack, target};

    fn text(svg: &[u8]) -> String {
        String::from_utf8(svg.to_vec()).unwrap()
    }

    /// The `<g ...>` opening tag and `<rect .../>` of the frame whose
    /// tooltip starts with `name (`.
    fn frame_of<'a>(svg: &'a str, name: &str) -> (&'a str, &'a str) {
        let title = svg.find(&format!("<title>{name} (")).expect(name);
        let g = svg[..title].rfind("<g").unwrap();
        let rect = title + svg[title..].find("<rect").unwrap();
        let end = rect + svg[rect..].find("/>").unwrap();
        (&svg[g..title], &svg[rect..end])
    }

    #[test]
    fn draws_title_functions_and_verdict_colours() {
        let mut growing = stack("x", Verdict::Growing, &[0, 100]);
        growing.frames[0].function = Some("cache_put".into());
        let mut r = report(vec![
            stack("leaky", Verdict::Leak, &[0, 1024, 2048]),
            stack("leaky", Verdict::Stable, &[5, 5]),
            growing,
        ]);
        r.targets.push(target(7, "demo_leak"));
        let svg = text(&render(&r, Weight::Outstanding).unwrap());
        assert!(svg.starts_with("<?xml"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(
            svg.contains("memtrace: demo_leak (pid 7), 12 s — outstanding bytes"),
            "{svg}"
        );
        assert!(
            svg.contains("3 stacks (1 leak, 1 growing, 1 stable)"),
            "{svg}"
        );
        assert!(svg.contains("<title>demo_leak (pid 7) (2,153 bytes, 100.00%)</title>"));
        // leaky has a leak and a stable stack: the leak wins.
        let (g, rect) = frame_of(&svg, "leaky");
        assert!(g.contains(r#"data-verdict="leak""#), "{g}");
        assert!(rect.contains(r#"fill="rgb(214,39,40)""#), "{rect}");
        let (g, rect) = frame_of(&svg, "cache_put");
        assert!(g.contains(r#"data-verdict="growing""#), "{g}");
        assert!(rect.contains(r#"fill="rgb(255,127,14)""#), "{rect}");
        // Callers are neither tagged nor in a verdict colour.
        let (g, rect) = frame_of(&svg, "main");
        assert!(!g.contains("data-verdict"), "{g}");
        assert!(!rect.contains("rgb(214,39,40)"), "{rect}");
        // Deterministic.
        assert_eq!(svg, text(&render(&r, Weight::Outstanding).unwrap()));
    }

    #[test]
    fn units_follow_the_weight() {
        let r = report(vec![stack("leaky", Verdict::Leak, &[0, 2048])]);
        let svg = text(&render(&r, Weight::Growth).unwrap());
        assert!(svg.contains("memtrace: 12 s — growth (bytes/h)"), "{svg}");
        assert!(
            svg.contains("<title>leaky (61,440 bytes/h, 100.00%)</title>"),
            "{svg}"
        );
        let svg = text(&render(&r, Weight::Count).unwrap());
        assert!(
            svg.contains("<title>leaky (3 allocations, 100.00%)</title>"),
            "{svg}"
        );
    }

    #[test]
    fn empty_report_says_so() {
        let svg = text(&render(&report(Vec::new()), Weight::Outstanding).unwrap());
        assert!(
            svg.contains("<title>no stack has outstanding bytes</title>"),
            "{svg}"
        );
        assert!(svg.contains("all (0 bytes, 100%)"), "{svg}");
        assert!(!svg.contains("ERROR"), "{svg}");
        // Stacks that all weigh 0 in growth are empty too.
        let mut flat = stack("leaky", Verdict::Stable, &[5, 5]);
        flat.growth_bytes_per_sec = 0.0;
        let svg = text(&render(&report(vec![flat]), Weight::Growth).unwrap());
        assert!(svg.contains("no stack has growth (bytes/h)"), "{svg}");
    }

    #[test]
    fn seconds_are_short() {
        assert_eq!(seconds(15.0), "15 s");
        assert_eq!(seconds(1.5), "1.5 s");
    }
}

//! The HTML report: one self-contained file that opens from disk, fetches
//! nothing and works offline. It holds the report (or a diff) as JSON, the
//! page's own script and styles (`report.js`, `report.css`, readable as
//! written; `common.js`, the helpers and charts the agent's page shares)
//! and uPlot, a small charting library for time series, vendored under
//! `vendor/` with its licence (the page's charts are uPlot's; the icicle
//! graph and sparklines are laid out by the page's own script).
//!
//! Frames repeat across stacks (every stack of a program shares its
//! outer frames), so the embedded report names each distinct frame once,
//! in a table, and the stacks list indices into it; a stack's series is
//! written as columns (`{"t": [..], "bytes": [..], "allocations": [..]}`)
//! rather than one object per point. A page of 10,000 stacks is then
//! about a third of their JSON report.

use std::collections::HashMap;

use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

use crate::model::Report;

/// uPlot 1.6.32 (MIT, github.com/leeoniya/uPlot), as published on npm.
pub const UPLOT_JS: &str = include_str!("vendor/uPlot.iife.min.js");
pub const UPLOT_CSS: &str = include_str!("vendor/uPlot.min.css");
/// What memtrace's pages share: helpers, charts, sparklines
/// (`memtraceUi`); the agent's page loads it too.
pub const COMMON_JS: &str = include_str!("common.js");
/// The pages' styles: colours (light and dark), panels, tables, badges.
pub const PAGE_CSS: &str = include_str!("report.css");
const PAGE_JS: &str = include_str!("report.js");

/// The page allows nothing from outside the file: no fetch, no font, no
/// image but its own inline ones (browsers also apply it to file://). The
/// agent sends it as a header too.
pub const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   img-src data:; base-uri 'none'; form-action 'none'";

/// What the page is given: the report or the diff, and the frame table.
#[derive(Serialize)]
struct Embedded<'a> {
    /// `memtrace-report` or `memtrace-diff` (which the diff carries itself).
    kind: &'a str,
    data: Value,
    /// Each distinct frame once; a report's stacks hold indices into it.
    frames: Vec<Value>,
}

/// The HTML page of a report.
pub fn render(report: &Report) -> Result<Vec<u8>> {
    let mut data = serde_json::to_value(report)?;
    let mut frames = FrameTable::default();
    if let Some(stacks) = data.get_mut("stacks") {
        frames.index_stacks(stacks);
    }
    if let Some(Value::Array(kills)) = data.get_mut("oom_kills") {
        for kill in kills {
            if let Some(stacks) = kill.get_mut("top_stacks") {
                frames.index_stacks(stacks);
            }
        }
    }
    let title = match report.targets.as_slice() {
        [] => "memtrace report".to_string(),
        [one] => format!("memtrace: {} ({})", one.comm, one.pid),
        [one, rest @ ..] => format!(
            "memtrace: {} ({}) and {} more",
            one.comm,
            one.pid,
            rest.len()
        ),
    };
    let embedded = Embedded {
        kind: "memtrace-report",
        data,
        frames: frames.list,
    };
    page(&title, &embedded)
}

/// The HTML page of another kind of data the page's script draws (a
/// diff: `memtrace-diff`, made by `diff::html`), titled `title`.
pub fn render_other(kind: &str, data: Value, title: &str) -> Result<Vec<u8>> {
    let embedded = Embedded {
        kind,
        data,
        frames: Vec::new(),
    };
    page(title, &embedded)
}

/// Distinct frames, each given the index of its first appearance.
#[derive(Default)]
struct FrameTable {
    list: Vec<Value>,
    index: HashMap<String, usize>,
}

impl FrameTable {
    /// Replaces each stack's `frames` (objects) by indices into the table,
    /// and its series by columns.
    fn index_stacks(&mut self, stacks: &mut Value) {
        let Value::Array(stacks) = stacks else {
            return;
        };
        for stack in stacks {
            if let Some(series) = stack.get_mut("series") {
                *series = columns(series, &["t", "bytes", "allocations"]);
            }
            let Some(Value::Array(frames)) = stack.get_mut("frames") else {
                continue;
            };
            for frame in frames.iter_mut() {
                let key = frame.to_string();
                let next = self.list.len();
                let i = *self.index.entry(key).or_insert(next);
                if i == next {
                    self.list.push(frame.take());
                }
                *frame = Value::from(i);
            }
        }
    }
}

/// An array of objects as one array per field.
fn columns(rows: &Value, fields: &[&str]) -> Value {
    let rows = rows.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut out = serde_json::Map::new();
    for field in fields {
        let column = rows.iter().map(|r| r[*field].clone()).collect();
        out.insert(field.to_string(), Value::Array(column));
    }
    Value::Object(out)
}

/// The whole file. The JSON goes in a `<script type="application/json">`
/// with every `<` escaped, so no function name (C++ templates have them)
/// can close that element.
fn page(title: &str, embedded: &Embedded) -> Result<Vec<u8>> {
    let json = serde_json::to_string(embedded)?.replace('<', "\\u003c");
    let scripts = UPLOT_JS.len() + COMMON_JS.len() + PAGE_JS.len();
    let mut out = String::with_capacity(json.len() + scripts + 8192);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(&format!(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
    ));
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str("<meta name=\"color-scheme\" content=\"light dark\">\n");
    // No icon to fetch (served by the agent, a browser would ask for one).
    out.push_str("<link rel=\"icon\" href=\"data:,\">\n");
    out.push_str(&format!("<title>{}</title>\n", escape(title)));
    out.push_str("<style>\n");
    out.push_str(UPLOT_CSS);
    out.push('\n');
    out.push_str(PAGE_CSS);
    out.push_str("</style>\n</head>\n<body>\n");
    out.push_str("<main id=\"app\"><noscript>This report needs JavaScript.</noscript></main>\n");
    out.push_str("<script type=\"application/json\" id=\"memtrace-data\">");
    out.push_str(&json);
    out.push_str("</script>\n<script>\n");
    out.push_str(UPLOT_JS);
    out.push_str("\n</script>\n<script>\n");
    out.push_str(COMMON_JS);
    out.push_str("</script>\n<script>\n");
    out.push_str(PAGE_JS);
    out.push_str("</script>\n</body>\n</html>\n");
    Ok(out.into_bytes())
}

/// Text for HTML element content and attribute values (the agent's index
/// page uses it too); control characters become U+FFFD.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{fixtures, Verdict};

    fn two_stacks() -> Report {
        fixtures::report(vec![
            fixtures::stack("leaky", Verdict::Leak, &[0, 10, 20]),
            fixtures::stack("leaky", Verdict::Stable, &[5, 5, 5]),
        ])
    }

    /// The embedded JSON of a page.
    fn embedded(page: &str) -> Value {
        let start = page.find("id=\"memtrace-data\">").unwrap() + "id=\"memtrace-data\">".len();
        let end = start + page[start..].find("</script>").unwrap();
        serde_json::from_str(&page[start..end]).unwrap()
    }

    #[test]
    fn frames_are_named_once_and_no_name_closes_the_script() {
        let mut report = two_stacks();
        report.stacks[0].frames[0].function = Some("f<</script><b>>".into());
        let shared = report.stacks[0].frames.last().cloned().unwrap();
        for stack in &mut report.stacks {
            stack.frames.push(shared.clone());
        }
        let page = String::from_utf8(render(&report).unwrap()).unwrap();
        assert_eq!(
            page.matches("</script>").count(),
            4,
            "data, uPlot, common, page"
        );
        let data = embedded(&page);
        let series = &data["data"]["stacks"][0]["series"];
        assert_eq!(series["t"], serde_json::json!([0.0, 1.0, 2.0]));
        assert_eq!(series["bytes"], serde_json::json!([0, 10, 20]));
        let frames = data["frames"].as_array().unwrap();
        assert_eq!(frames[0]["function"], "f<</script><b>>");
        let distinct: std::collections::HashSet<String> = report
            .stacks
            .iter()
            .flat_map(|s| s.frames.iter().map(|f| serde_json::to_string(f).unwrap()))
            .collect();
        assert_eq!(frames.len(), distinct.len());
        for (stack, embedded) in report
            .stacks
            .iter()
            .zip(data["data"]["stacks"].as_array().unwrap())
        {
            let named: Vec<&Value> = embedded["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| &frames[i.as_u64().unwrap() as usize])
                .collect();
            let original: Vec<Value> = stack
                .frames
                .iter()
                .map(|f| serde_json::to_value(f).unwrap())
                .collect();
            assert_eq!(named, original.iter().collect::<Vec<_>>());
        }
    }

    #[test]
    fn text_is_escaped_for_element_content_and_attributes() {
        assert_eq!(
            escape("<script>\"a\"&'b'\n"),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;\u{fffd}"
        );
    }

    #[test]
    fn the_page_fetches_nothing() {
        let page = String::from_utf8(render(&two_stacks()).unwrap()).unwrap();
        assert!(page.contains("default-src 'none'"));
        for outside in ["src=\"http", "href=\"http", "@import", "src=\"//"] {
            assert!(!page.contains(outside), "{outside}");
        }
        // Its one link, the icon, is inline (else a browser asks the
        // server for /favicon.ico).
        assert_eq!(page.matches("<link").count(), 1);
        assert!(page.contains("<link rel=\"icon\" href=\"data:,\">"));
    }
}

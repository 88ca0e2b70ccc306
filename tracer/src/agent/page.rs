//! The agent's index page (`GET /`): one plain HTML page that says what the
//! agent is doing — its settings, the endpoints, the traces running, the
//! processes it shows (those of the metrics: the largest, every suspect,
//! every traced one) and the incidents kept, each linked to its files.
//! Everything that comes from a process (names, cgroups) is escaped.

use std::fmt::Write;

use memtrace_report::{
    render::html::escape,
    units::{bytes, rate_per_hour},
};

use super::incidents::Incident;

/// A process as the index shows it (taken at each scan).
#[derive(Clone, Debug)]
pub(super) struct Row {
    pub pid: u32,
    pub comm: String,
    pub container: String,
    pub anon_bytes: u64,
    pub rss_bytes: u64,
    /// `leak`, `growing`, `plateau`, `stable`; empty before a second scan.
    pub verdict: String,
    pub bytes_per_hour: f64,
    pub reason: String,
    pub suspect: bool,
    /// What its last trace window's stacks held.
    pub traced_bytes: Option<u64>,
}

/// What the page shows.
pub(super) struct Page<'a> {
    pub node: &'a str,
    /// The agent's settings, one line.
    pub settings: &'a str,
    pub token: bool,
    pub watched: usize,
    pub processes: &'a [Row],
    /// Pids being traced now.
    pub tracing: &'a [u32],
    pub incidents: &'a [Incident],
}

/// The endpoints, as listed on the page: method, path, what it does.
pub(super) const ENDPOINTS: [(&str, &str, &str); 8] = [
    ("GET", "/", "this page"),
    ("GET", "/healthz", "ok while scans happen (no token needed)"),
    ("GET", "/metrics", "Prometheus metrics"),
    ("GET", "/reports", "incidents, newest first (JSON)"),
    (
        "GET",
        "/reports/ID?format=json|text|svg|folded|pprof|html",
        "an incident's report",
    ),
    (
        "GET",
        "/reports/ID/FILE",
        "an incident's incident.json, report.json, report.html, flamegraph.svg, profile.pb.gz",
    ),
    (
        "POST",
        "/trace?pid=P&duration=30s&format=json",
        "trace a process now and answer with its report (at most 10m)",
    ),
    ("HEAD", "(any GET above)", "its headers only"),
];

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em}\
table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;\
border-bottom:1px solid #ddd}td.n{text-align:right}";

/// The page.
pub(super) fn render(page: &Page) -> String {
    let mut h = String::new();
    let node = escape(page.node);
    // (Writing to a String cannot fail.)
    let _ = write!(
        h,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">\
         <title>memtrace agent on {node}</title><style>{STYLE}</style></head><body>\n\
         <h1>memtrace agent on {node}</h1>\n<p>memtrace {}; {}{}.</p>\n",
        env!("CARGO_PKG_VERSION"),
        escape(page.settings),
        if page.token {
            "; every endpoint but /healthz needs the bearer token"
        } else {
            ""
        }
    );

    h.push_str("<h2>Endpoints</h2>\n<table>\n");
    for (method, path, what) in ENDPOINTS {
        let shown = escape(path);
        let link = match method == "GET" && !path.contains("ID") {
            true => format!("<a href=\"{shown}\">{shown}</a>"),
            false => shown,
        };
        let _ = writeln!(
            h,
            "<tr><td>{method}</td><td>{link}</td><td>{}</td></tr>",
            escape(what)
        );
    }
    h.push_str("</table>\n");

    let name_of = |pid: u32| {
        page.processes
            .iter()
            .find(|r| r.pid == pid)
            .map_or(String::new(), |r| format!(" ({})", escape(&r.comm)))
    };
    let _ = writeln!(h, "<h2>Traces running: {}</h2>", page.tracing.len());
    if !page.tracing.is_empty() {
        h.push_str("<ul>\n");
        for &pid in page.tracing {
            let _ = writeln!(h, "<li>pid {pid}{}</li>", name_of(pid));
        }
        h.push_str("</ul>\n");
    }

    let _ = write!(
        h,
        "<h2>Processes</h2>\n<p>{} watched; shown: the largest by anonymous memory, every \
         suspect and every traced one.</p>\n",
        page.watched
    );
    if !page.processes.is_empty() {
        h.push_str(
            "<table>\n<tr><th>pid</th><th>name</th><th>container</th><th>anonymous</th>\
             <th>resident</th><th>growth</th><th>verdict</th><th>why</th><th>traced</th></tr>\n",
        );
        for r in page.processes {
            let growth = match r.verdict.as_str() {
                "leak" | "growing" => rate_per_hour(r.bytes_per_hour),
                _ => String::new(),
            };
            let traced = match (page.tracing.contains(&r.pid), r.traced_bytes) {
                (true, _) => "tracing now".to_string(),
                (false, Some(held)) => format!("held {}", bytes(held)),
                (false, None) => String::new(),
            };
            let verdict = match r.suspect {
                true => format!("<b>{}</b> (suspect)", escape(&r.verdict)),
                false => escape(&r.verdict),
            };
            let _ = writeln!(
                h,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{verdict}</td><td>{}</td>\
                 <td>{traced}</td></tr>",
                r.pid,
                escape(&r.comm),
                escape(&r.container),
                bytes(r.anon_bytes),
                bytes(r.rss_bytes),
                growth,
                escape(&r.reason),
            );
        }
        h.push_str("</table>\n");
    }

    let _ = writeln!(h, "<h2>Incidents: {}</h2>", page.incidents.len());
    if !page.incidents.is_empty() {
        h.push_str(
            "<table>\n<tr><th>incident</th><th>started</th><th>pid</th><th>name</th>\
             <th>reason</th><th>outcome</th><th>held</th><th>top</th><th>files</th></tr>\n",
        );
        for i in page.incidents {
            let id = escape(&i.id);
            let top = match (&i.top_function, &i.top_verdict) {
                (Some(f), Some(v)) => format!("{} ({})", escape(f), escape(v)),
                (Some(f), None) => escape(f),
                _ => String::new(),
            };
            let _ = writeln!(
                h,
                "<tr><td><a href=\"/reports/{id}?format=html\">{id}</a></td><td>{}</td>\
                 <td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
                 <td>{top}</td><td><a href=\"/reports/{id}?format=html\">html</a> \
                 <a href=\"/reports/{id}?format=text\">text</a> \
                 <a href=\"/reports/{id}\">json</a> <a href=\"/reports/{id}?format=svg\">svg</a> \
                 <a href=\"/reports/{id}?format=pprof\">pprof</a> \
                 <a href=\"/reports/{id}/incident.json\">incident.json</a></td></tr>",
                escape(&i.started),
                i.pid,
                escape(&i.comm),
                escape(&i.reason),
                escape(&i.outcome),
                bytes(i.outstanding_bytes),
            );
        }
        h.push_str("</table>\n");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped() {
        assert_eq!(
            escape("<script>\"a\"&'b'\n"),
            "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;\u{fffd}"
        );
        let row = Row {
            pid: 7,
            comm: "<img src=x>".into(),
            container: String::new(),
            anon_bytes: 1 << 20,
            rss_bytes: 2 << 20,
            verdict: "leak".into(),
            bytes_per_hour: 3600.0 * 1024.0,
            reason: "grew in 4/4 intervals".into(),
            suspect: true,
            traced_bytes: None,
        };
        let page = render(&Page {
            node: "n&1",
            settings: "scanning every 1s",
            token: false,
            watched: 1,
            processes: &[row],
            tracing: &[7],
            incidents: &[],
        });
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;img src=x&gt;"), "{page}");
        assert!(page.contains("memtrace agent on n&amp;1"), "{page}");
        assert!(
            page.contains("<li>pid 7 (&lt;img src=x&gt;)</li>"),
            "{page}"
        );
        assert!(page.contains("+3.5 MiB/h"), "{page}");
    }
}

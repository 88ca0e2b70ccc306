//! The agent's web page. `GET /` is a shell holding no data, and
//! `/ui/FILE` its scripts and styles: uPlot and the helpers and styles the
//! HTML report shares (`memtrace_report::render::html`), and the page's
//! own `page/agent.js` and `page/agent.css`. They are served without the
//! token, so a browser can load them; the page then asks for
//! `GET /api/state` ([`State`]: the processes shown with their series, the
//! traces running, recent OOM kills, the incidents) with the bearer token,
//! asking the user for it once when the agent has one. Names from
//! processes reach the page as JSON and are set as text, never as markup.

use serde::Serialize;

use memtrace_report::render::html::{self, escape};

use super::incidents::Incident;

/// A process as the page shows it (taken at each scan).
#[derive(Clone, Debug, Serialize)]
pub(super) struct Row {
    pub pid: u32,
    pub comm: String,
    /// Container id (12 characters) and pod UID, or empty.
    pub container: String,
    pub pod: String,
    pub anon_bytes: u64,
    pub rss_bytes: u64,
    /// `leak`, `growing`, `plateau`, `stable`; empty before a second scan.
    pub verdict: String,
    pub bytes_per_hour: f64,
    pub reason: String,
    /// Growing past `--alert-growth`: flagged for a trace.
    pub suspect: bool,
    /// What its last trace window's stacks held.
    pub traced_bytes: Option<u64>,
    pub series: Series,
}

/// The processes of the last scan the page shows.
#[derive(Clone, Debug, Default)]
pub(super) struct Shown {
    /// When that scan was, in seconds since the scanner started.
    pub at: f64,
    pub rows: Vec<Row>,
}

/// A process's scans as columns: seconds since the scanner started,
/// resident and anonymous bytes.
#[derive(Clone, Debug, Default, Serialize)]
pub(super) struct Series {
    pub t: Vec<f64>,
    pub rss: Vec<f64>,
    pub anon: Vec<f64>,
}

/// A trace running now.
#[derive(Debug, Serialize)]
pub(super) struct Running {
    pub pid: u32,
    pub comm: String,
    /// Asked for (`POST /trace`) rather than started on growth.
    pub on_demand: bool,
}

/// An OOM kill as the page lists it.
#[derive(Clone, Debug, Serialize)]
pub(super) struct Kill {
    /// RFC 3339.
    pub time: String,
    pub pid: u32,
    pub comm: String,
    pub container: String,
    pub pod: String,
    pub cgroup: String,
    pub anon_rss_bytes: u64,
    pub total_vm_bytes: u64,
}

/// What `GET /api/state` answers.
#[derive(Serialize)]
pub(super) struct State<'a> {
    pub node: &'a str,
    pub version: &'a str,
    /// The agent's settings, one line.
    pub settings: &'a str,
    pub token: bool,
    pub scan_interval_secs: f64,
    /// When the last scan was, on the series' clock (seconds).
    pub scanned: f64,
    pub watched: usize,
    pub processes: &'a [Row],
    pub tracing: Vec<Running>,
    /// Newest first.
    pub oom_kills: &'a std::collections::VecDeque<Kill>,
    pub incidents: &'a [Incident],
}

/// The page's policy, sent as a header: its own files only, no inline
/// script or style, requests to the agent only, never framed.
pub(super) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The endpoints, as the page lists them: method, path, what it does.
pub(super) const ENDPOINTS: [(&str, &str, &str); 11] = [
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
    (
        "POST",
        "/trace?pid=P&duration=30s&keep=true",
        "trace a process now, keep the trace as an incident and answer with it (JSON)",
    ),
    ("GET", "/api/state", "what this page shows (JSON)"),
    (
        "POST",
        "/api/session",
        "with the token: a session cookie, so this page's report links open",
    ),
    ("HEAD", "(any GET above)", "its headers only"),
];

const AGENT_JS: &str = include_str!("page/agent.js");
const AGENT_CSS: &str = include_str!("page/agent.css");

/// The files under `/ui/`: name → (content type, body).
pub(super) fn asset(name: &str) -> Option<(&'static str, &'static str)> {
    const JS: &str = "text/javascript; charset=utf-8";
    const CSS: &str = "text/css; charset=utf-8";
    Some(match name {
        "uPlot.js" => (JS, html::UPLOT_JS),
        "common.js" => (JS, html::COMMON_JS),
        "agent.js" => (JS, AGENT_JS),
        "uPlot.css" => (CSS, html::UPLOT_CSS),
        "report.css" => (CSS, html::PAGE_CSS),
        "agent.css" => (CSS, AGENT_CSS),
        _ => return None,
    })
}

/// The shell: the page's files and the endpoints (which hold nothing of
/// the node's); `agent.js` draws the rest into `<main>`.
pub(super) fn shell() -> String {
    let mut endpoints = String::new();
    for (method, path, what) in ENDPOINTS {
        let shown = escape(path);
        let link = match method == "GET" && !path.contains("ID") {
            true => format!("<a href=\"{shown}\">{shown}</a>"),
            false => shown,
        };
        endpoints.push_str(&format!(
            "<tr><td>{method}</td><td><code>{link}</code></td><td>{}</td></tr>\n",
            escape(what)
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"color-scheme\" content=\"light dark\">\n\
         <title>memtrace agent</title>\n\
         <link rel=\"icon\" href=\"data:,\">\n\
         <link rel=\"stylesheet\" href=\"/ui/uPlot.css\">\n\
         <link rel=\"stylesheet\" href=\"/ui/report.css\">\n\
         <link rel=\"stylesheet\" href=\"/ui/agent.css\">\n\
         <script src=\"/ui/uPlot.js\" defer></script>\n\
         <script src=\"/ui/common.js\" defer></script>\n\
         <script src=\"/ui/agent.js\" defer></script>\n\
         </head>\n<body>\n<main id=\"app\">\n\
         <noscript><p>This page needs JavaScript; the endpoints below work without it.</p></noscript>\n\
         </main>\n<footer>\n<details class=\"panel\" id=\"endpoints\"><summary>Endpoints \
         (memtrace {})</summary>\n<table>\n{endpoints}</table>\n</details>\n</footer>\n\
         </body>\n</html>\n",
        env!("CARGO_PKG_VERSION"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shell_holds_no_script_or_style_of_its_own() {
        let page = shell();
        assert!(
            !page.contains("<script>") && !page.contains("<style"),
            "{page}"
        );
        assert!(page.contains("<a href=\"/metrics\">/metrics</a>"), "{page}");
        assert!(
            page.contains("/trace?pid=P&amp;duration=30s&amp;keep=true"),
            "{page}"
        );
        for file in [
            "uPlot.js",
            "common.js",
            "agent.js",
            "uPlot.css",
            "report.css",
            "agent.css",
        ] {
            assert!(page.contains(&format!("/ui/{file}\"")), "{file}");
            assert!(
                asset(file).is_some_and(|(_, body)| !body.is_empty()),
                "{file}"
            );
        }
        assert!(asset("../agent.js").is_none());
    }
}

//! The agent's HTTP surface (axum): `/` and `/ui/{file}` (the web page,
//! `page`), `/api/state` (what the page shows) and `POST /api/session`
//! (its cookie), `/healthz`, `/metrics` (Prometheus text), `/reports`
//! (incidents, newest first), `/reports/{id}[?format=]` (an incident's
//! report in any format), `/reports/{id}/{file}` (one incident's files, by
//! validated id and a fixed list of names), and
//! `POST /trace?pid=&duration=&format=|keep=true` (an on-demand trace,
//! answered with its report, or kept as an incident and answered with
//! it). A wrong method is answered 405 with `Allow` and a body saying what
//! is allowed; an unknown path, 404 pointing at `/`. With a token every
//! endpoint but `/healthz` and the page's files (which hold no data)
//! requires `Authorization: Bearer TOKEN`, or for GET and HEAD the page's
//! session cookie (`session`). This file also owns the server's limits
//! (hyper's HTTP/1 connection builder, tower-http's body limit): how long a
//! request's head may take, how large it and its body may be, how many
//! connections are open and how many requests are served per second.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{atomic::Ordering, Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Path, Query, Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use serde::Deserialize;
use tokio::{net::TcpListener, sync::oneshot};
use tower_http::limit::RequestBodyLimitLayer;

use memtrace_report::{
    render::{self, Format, Options},
    Weight,
};

use super::{incidents, page, session::Sessions, traces, Shared};
use crate::config::DEFAULT_TOP;

/// How long /healthz gives the OOM watch to start.
const OOM_WATCH_GRACE: Duration = Duration::from_secs(60);
/// Longest on-demand trace.
const MAX_ON_DEMAND: Duration = Duration::from_secs(600);
const DEFAULT_ON_DEMAND: Duration = Duration::from_secs(30);

/// How long a request's line and headers may take to arrive, and how long
/// a kept-alive connection may wait for its next request: then it is
/// closed (a client sending its head byte by byte cannot hold it).
pub(super) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's line and headers (hyper's read buffer; its minimum is
/// 8 KiB): beyond it, 431.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Headers in one request: beyond it, 431.
const MAX_HEADERS: usize = 32;
/// Request bodies: none is expected; a longer one is answered 413.
const MAX_BODY_BYTES: usize = 1024;
/// Connections open at once, and from one address: more are answered 429
/// and closed.
const MAX_CONNECTIONS: usize = 64;
const MAX_CONNECTIONS_PER_CLIENT: usize = 16;
/// Requests served per second (past the token check, /healthz aside): a
/// bucket of `RATE_BURST` refilled at `RATE_PER_SEC`; when empty, 429.
const RATE_PER_SEC: f64 = 20.0;
const RATE_BURST: f64 = 50.0;
/// The longest a connection lives: the longest on-demand trace and a
/// minute (a client that stops reading its answer gives it up then).
const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(MAX_ON_DEMAND.as_secs() + 60);
/// How long stopping waits for requests in progress.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

pub(super) fn router(shared: Arc<Shared>) -> Router {
    let bucket = Arc::new(Mutex::new(Bucket::full()));
    let routes = Router::new()
        .route("/", get(index))
        .route("/ui/{file}", get(ui_file))
        .route("/api/state", get(state))
        .route("/api/session", get(signed_in).post(session))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/reports", get(list))
        .route("/reports/{id}", get(report))
        .route("/reports/{id}/{file}", get(report_file))
        .route("/trace", post(trace))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(bucket, throttle))
        .layer(middleware::from_fn_with_state(shared.clone(), authorize))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .with_state(shared);
    // Around the whole router: axum adds a 405's `Allow` header as the
    // route's answer leaves it, after any layer of the router's own.
    Router::new()
        .fallback_service(routes)
        .layer(middleware::from_fn(explain_method))
}

/// Serves `router` on `listener` within the limits above until `stop`
/// fires, then lets requests in progress finish for [`SHUTDOWN_WAIT`].
pub(super) async fn serve(listener: TcpListener, router: Router, mut stop: oneshot::Receiver<()>) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let graceful = GracefulShutdown::new();
    let open = Connections::default();
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => {
                    // Out of file descriptors, or a connection reset
                    // before it was accepted: try again shortly.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Some(permit) = open.admit(peer.ip()) else {
            // Best effort, without waiting: the socket's buffer is empty.
            let _ = socket.try_write(TOO_MANY_CONNECTIONS);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(socket), service));
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(MAX_CONNECTION_LIFE, connection).await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_WAIT, graceful.shutdown()).await;
}

const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\nconnection: close\r\n\r\n\
too many connections\n";

/// Open connections per client address.
#[derive(Clone, Default)]
struct Connections(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// A connection counted as open until dropped.
struct Admitted {
    open: Connections,
    ip: IpAddr,
}

impl Connections {
    /// Counts a new connection from `ip`, if within both limits.
    fn admit(&self, ip: IpAddr) -> Option<Admitted> {
        let mut open = self.0.lock().expect("connections lock");
        let total: usize = open.values().sum();
        let theirs = open.get(&ip).copied().unwrap_or(0);
        if total >= MAX_CONNECTIONS || theirs >= MAX_CONNECTIONS_PER_CLIENT {
            return None; // (and no entry for a client refused)
        }
        open.insert(ip, theirs + 1);
        Some(Admitted {
            open: self.clone(),
            ip,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.open.0.lock().expect("connections lock");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A token bucket for requests.
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    fn full() -> Bucket {
        Bucket {
            tokens: RATE_BURST,
            refilled: Instant::now(),
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * RATE_PER_SEC;
        self.tokens = (self.tokens + earned).min(RATE_BURST);
        self.refilled = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Answers 429 when requests come faster than the bucket allows (/healthz
/// aside, which probes call and which costs nothing). Behind the token
/// check: a client without the token cannot use the others' requests up.
async fn throttle(
    State(bucket): State<Arc<Mutex<Bucket>>>,
    request: Request,
    next: Next,
) -> Response {
    // Neither /healthz nor what anyone may ask (the page's fixed files and
    // whether it is signed in) uses up the rate of those with the token.
    if open_to_all(&request) || bucket.lock().expect("bucket lock").take() {
        return next.run(request).await;
    }
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, "1")],
        "too many requests: try again in a second\n",
    )
        .into_response()
}

/// Gives a 405 (which axum answers with `Allow` and no body) a body saying
/// what the endpoint takes.
async fn explain_method(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let mut response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .replace(',', ", ");
    let body = format!("{method} is not allowed on {path}: it takes {allow}\n");
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    headers.remove(header::CONTENT_LENGTH);
    *response.body_mut() = body.into();
    response
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "no such endpoint: GET / lists them\n",
    )
        .into_response()
}

/// Checks the bearer token (when there is one) on everything but /healthz,
/// the page's files and whether the page is signed in (`GET
/// /api/session`); GET and HEAD may show a session cookie instead.
async fn authorize(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if open_to_all(&request) || admitted(&shared, &request) {
        return next.run(request).await;
    }
    let mut response = (StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"memtrace\""),
    );
    response
}

/// Whether the request needs no token: /healthz, the page's files (which
/// hold no data) and whether the page is signed in (`GET /api/session`).
fn open_to_all(request: &Request) -> bool {
    let path = request.uri().path();
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    path == "/healthz"
        || path == "/"
        || path.starts_with("/ui/")
        || (path == "/api/session" && reads)
}

/// Whether the request may go on: there is no token, it carries the token,
/// or it only reads and shows an open session.
fn admitted(shared: &Shared, request: &Request) -> bool {
    let Some(token) = &shared.token else {
        return true;
    };
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    bearer_matches(request.headers(), token)
        || (reads
            && request
                .headers()
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|cookies| shared.sessions.admits(cookies)))
}

/// Whether the request carries `Authorization: Bearer TOKEN` (compared in
/// constant time).
fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Healthy while scans keep happening (within three scan intervals) and,
/// after a minute's grace, the OOM watch runs (it failing means BPF cannot
/// be loaded here: nothing could be traced either).
async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let last = *shared.last_scan.lock().expect("last_scan lock");
    let late = shared.scan_interval * 3 + Duration::from_secs(5);
    let unavailable = |why: String| (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    match last {
        Some(t) if t.elapsed() > late => {
            unavailable(format!("no scan for {:.0} s\n", t.elapsed().as_secs_f64()))
        }
        _ if shared.started.elapsed() > OOM_WATCH_GRACE
            && !shared.oom_watch_up.load(Ordering::Relaxed) =>
        {
            unavailable("the OOM watch is not running (see the agent's log)\n".into())
        }
        _ => "ok\n".into_response(),
    }
}

/// The page's shell (no data: the same for everyone).
async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, HTML),
            (header::CONTENT_SECURITY_POLICY, page::CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        page::shell(),
    )
        .into_response()
}

/// The page's scripts and styles (fixed files compiled in).
async fn ui_file(Path(file): Path<String>) -> Response {
    match page::asset(&file) {
        Some((kind, body)) => (
            [
                (header::CONTENT_TYPE, kind),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                // Revalidated, so an upgraded agent's page is never stale.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
        None => not_found().await,
    }
}

/// What the page shows.
async fn state(State(shared): State<Arc<Shared>>) -> Response {
    match shared.page_state() {
        Ok(json) => (
            [
                (header::CONTENT_TYPE, JSON),
                (header::CACHE_CONTROL, "no-store"),
            ],
            json,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Whether the page must ask for the token: `{"token": bool, "admitted":
/// bool}` (asked without one; a 401 would be logged by the browser).
async fn signed_in(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    Json(serde_json::json!({
        "token": shared.token.is_some(),
        "admitted": admitted(&shared, &request),
    }))
    .into_response()
}

/// A session for the page, once it has shown the token (this request got
/// past `authorize` with it): a cookie that lets incident reports open as
/// links. Without a token, none is needed.
async fn session(State(shared): State<Arc<Shared>>) -> Response {
    if shared.token.is_none() {
        return StatusCode::NO_CONTENT.into_response();
    }
    match shared.sessions.open() {
        Some(id) => (
            StatusCode::NO_CONTENT,
            [(header::SET_COOKIE, Sessions::cookie(&id))],
        )
            .into_response(),
        None => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "no randomness for a session\n",
        )
            .into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    shared.refresh_own_metrics();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}

async fn list(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.store.list()).into_response()
}

#[derive(Deserialize)]
struct ReportQuery {
    format: Option<String>,
}

/// An incident's report: report.json, or `?format=` svg and pprof (the
/// files the incident holds) or text and folded (rendered from
/// report.json, as `memtrace report` would).
async fn report(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Query(q): Query<ReportQuery>,
) -> Response {
    let format = q.format.as_deref().unwrap_or("json");
    let file = match format {
        "json" => incidents::REPORT,
        "svg" => incidents::FLAMEGRAPH,
        "pprof" => incidents::PROFILE,
        "html" => incidents::PAGE,
        "text" | "folded" => incidents::REPORT,
        _ => return bad_format(),
    };
    if !matches!(format, "text" | "folded") {
        return serve_file(&shared, &id, Some(file)).await;
    }
    if !incidents::valid_id(&id) {
        return (StatusCode::BAD_REQUEST, "not an incident id\n").into_response();
    }
    let Some(path) = shared.store.file(&id, Some(file)) else {
        return (StatusCode::NOT_FOUND, "no such incident or file\n").into_response();
    };
    let (format, top) = match format {
        "text" => (Format::Text, DEFAULT_TOP),
        _ => (Format::Folded, usize::MAX),
    };
    let render = move || -> anyhow::Result<Vec<u8>> {
        let report = memtrace_report::load::load(&path)?;
        let opts = Options {
            text_top: top,
            weight: Weight::default(),
        };
        let mut out = Vec::new();
        render::render(&report, format, opts, &mut out)?;
        Ok(out)
    };
    match tokio::task::spawn_blocking(render).await {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, TEXT)], text).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

fn bad_format() -> Response {
    (
        StatusCode::BAD_REQUEST,
        "format: json, text, svg, folded, pprof or html\n",
    )
        .into_response()
}

async fn report_file(
    State(shared): State<Arc<Shared>>,
    Path((id, file)): Path<(String, String)>,
) -> Response {
    serve_file(&shared, &id, Some(&file)).await
}

async fn serve_file(shared: &Shared, id: &str, file: Option<&str>) -> Response {
    if !incidents::valid_id(id) {
        return (StatusCode::BAD_REQUEST, "not an incident id\n").into_response();
    }
    let Some(path) = shared.store.file(id, file) else {
        return (StatusCode::NOT_FOUND, "no such incident or file\n").into_response();
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) if content_type(&path) == HTML => page(bytes),
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type(&path))], bytes).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "no such incident or file\n").into_response(),
    }
}

const JSON: &str = "application/json";
const SVG: &str = "image/svg+xml";
const BINARY: &str = "application/octet-stream";
const TEXT: &str = "text/plain; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// The content type of an incident's file, by its extension.
fn content_type(path: &std::path::Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => JSON,
        Some("svg") => SVG,
        Some("gz") => BINARY,
        Some("html") => HTML,
        _ => TEXT,
    }
}

/// An HTML report, with the policy it states itself as a header too:
/// nothing fetched, nothing run but its own inline scripts.
fn page(bytes: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, HTML),
            (header::CONTENT_SECURITY_POLICY, render::html::CSP),
        ],
        bytes,
    )
        .into_response()
}

#[derive(Deserialize)]
struct TraceQuery {
    pid: u32,
    duration: Option<String>,
    format: Option<String>,
    /// Keep the trace as an incident and answer with it (JSON).
    keep: Option<bool>,
}

/// Runs a trace now and answers with its report.
async fn trace(State(shared): State<Arc<Shared>>, Query(q): Query<TraceQuery>) -> Response {
    let duration = match q.duration.as_deref().map(humantime::parse_duration) {
        None => DEFAULT_ON_DEMAND,
        Some(Ok(d)) if !d.is_zero() && d <= MAX_ON_DEMAND => d,
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                "duration: e.g. 30s or 5m, at most 10m\n",
            )
                .into_response()
        }
    };
    const FORMATS: [&str; 6] = ["json", "text", "svg", "folded", "pprof", "html"];
    let format = match FORMATS
        .into_iter()
        .find(|f| *f == q.format.as_deref().unwrap_or("json"))
    {
        Some(f) => f,
        None => return bad_format(),
    };
    let keep = q.keep.unwrap_or(false);
    if keep && format != "json" {
        return (
            StatusCode::BAD_REQUEST,
            "keep=true answers with the incident, as JSON: give no format\n",
        )
            .into_response();
    }
    let Some(process) = super::scan::read(q.pid) else {
        return (
            StatusCode::NOT_FOUND,
            format!("pid {}: no such user process\n", q.pid),
        )
            .into_response();
    };
    let Some(slot) = shared.slots.acquire(q.pid, true) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "60")],
            "every trace slot is busy (or this pid is being traced): try later\n",
        )
            .into_response();
    };
    // In a task of its own: a client that hangs up does not cut the trace
    // short or leave its files behind.
    if keep {
        let traced = super::trace_kept(shared, slot, q.pid, process.comm, duration);
        return match tokio::spawn(traced).await {
            Ok(Ok(incident)) => Json(incident).into_response(),
            Ok(Err(why)) => (StatusCode::UNPROCESSABLE_ENTITY, format!("{why}\n")).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        };
    }
    match tokio::spawn(on_demand(shared, slot, q.pid, duration, format)).await {
        Ok(response) => response,
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Runs an on-demand trace into a staging directory, answers with the
/// report and removes the directory.
async fn on_demand(
    shared: Arc<Shared>,
    _slot: super::Slot,
    pid: u32,
    duration: Duration,
    format: &'static str,
) -> Response {
    let scratch = format!("on-demand-{pid}-{}", shared.next_serial());
    let Ok(dir) = shared.store.begin(&scratch) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot write a report\n").into_response();
    };
    let out = dir.join("report");
    let spec = traces::TraceSpec {
        pid,
        duration,
        interval: super::on_demand_interval(duration),
        outputs: vec![out.clone()],
        format: Some(format),
        runtime_attach: shared.runtime_attach,
    };
    let failure = traces::run(&shared.exe, &spec, &shared.children, shared.verbose).await;
    let reason = super::ON_DEMAND;
    let response = match failure {
        None => match tokio::fs::read(&out).await {
            Ok(bytes) if format == "html" => {
                shared.count_trace(reason, true);
                page(bytes)
            }
            Ok(bytes) => {
                shared.count_trace(reason, true);
                let kind = match format {
                    "json" => JSON,
                    "svg" => SVG,
                    "pprof" => BINARY,
                    _ => TEXT,
                };
                ([(header::CONTENT_TYPE, kind)], bytes).into_response()
            }
            Err(e) => {
                shared.count_trace(reason, false);
                (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response()
            }
        },
        Some(error) => {
            shared.count_trace(reason, false);
            (StatusCode::UNPROCESSABLE_ENTITY, format!("{error}\n")).into_response()
        }
    };
    let _ = tokio::fs::remove_dir_all(&dir).await;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_serves_a_burst_then_its_rate() {
        let mut bucket = Bucket::full();
        let served = (0..200).filter(|_| bucket.take()).count();
        assert!((RATE_BURST as usize..RATE_BURST as usize + 3).contains(&served));
        bucket.refilled -= Duration::from_millis(500);
        let again = (0..200).filter(|_| bucket.take()).count();
        // Half a second's refill, and what was left of a token.
        let half = (RATE_PER_SEC / 2.0) as usize;
        assert!((half..=half + 1).contains(&again), "{again}");
    }

    #[test]
    fn connections_are_bounded_per_client_and_in_all() {
        let open = Connections::default();
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        let mine: Vec<_> = (0..MAX_CONNECTIONS_PER_CLIENT)
            .map(|_| open.admit(ip(1)).unwrap())
            .collect();
        assert!(open.admit(ip(1)).is_none());
        let others: Vec<_> = (0..MAX_CONNECTIONS - MAX_CONNECTIONS_PER_CLIENT)
            .map(|i| {
                open.admit(ip(2 + (i / MAX_CONNECTIONS_PER_CLIENT) as u8))
                    .unwrap()
            })
            .collect();
        assert!(open.admit(ip(200)).is_none());
        drop(mine);
        assert!(open.admit(ip(1)).is_some());
        drop(others);
        assert!(open.0.lock().unwrap().is_empty());
    }

    #[test]
    fn bearer_token_must_match_exactly() {
        let mut h = HeaderMap::new();
        assert!(!bearer_matches(&h, "0123456789abcdef"));
        h.insert(
            header::AUTHORIZATION,
            "Bearer 0123456789abcdef".parse().unwrap(),
        );
        assert!(bearer_matches(&h, "0123456789abcdef"));
        assert!(!bearer_matches(&h, "0123456789abcdeg"));
        assert!(!bearer_matches(&h, "0123456789abcdef0"));
        h.insert(
            header::AUTHORIZATION,
            "Basic 0123456789abcdef".parse().unwrap(),
        );
        assert!(!bearer_matches(&h, "0123456789abcdef"));
    }
}

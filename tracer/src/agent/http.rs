//! The agent's HTTP surface (axum): `/healthz`, `/metrics` (Prometheus
//! text), `/reports` (incidents, newest first), `/reports/{id}[/{file}]`
//! (one incident's files, by validated id and a fixed list of names), and
//! `POST /trace?pid=&duration=&format=` (an on-demand trace, answered with
//! its report). With a token every endpoint but `/healthz` requires
//! `Authorization: Bearer TOKEN`. Requests carry no body (1 KiB at most).

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use axum::{
    extract::{DefaultBodyLimit, Path, Query, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;

use super::{traces, Shared};

/// How long /healthz gives the OOM watch to start.
const OOM_WATCH_GRACE: Duration = Duration::from_secs(60);
/// Longest on-demand trace.
const MAX_ON_DEMAND: Duration = Duration::from_secs(600);
const DEFAULT_ON_DEMAND: Duration = Duration::from_secs(30);

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/reports", get(list))
        .route("/reports/{id}", get(report))
        .route("/reports/{id}/{file}", get(report_file))
        .route("/trace", post(trace))
        .layer(middleware::from_fn_with_state(shared.clone(), authorize))
        .layer(DefaultBodyLimit::max(1024))
        .with_state(shared)
}

/// Checks the bearer token (when there is one) on everything but /healthz.
async fn authorize(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let Some(token) = &shared.token else {
        return next.run(request).await;
    };
    if request.uri().path() == "/healthz" || bearer_matches(request.headers(), token) {
        return next.run(request).await;
    }
    let mut response = (StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"memtrace\""),
    );
    response
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

async fn report(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    serve(&shared, &id, None).await
}

async fn report_file(
    State(shared): State<Arc<Shared>>,
    Path((id, file)): Path<(String, String)>,
) -> Response {
    serve(&shared, &id, Some(&file)).await
}

async fn serve(shared: &Shared, id: &str, file: Option<&str>) -> Response {
    if !super::incidents::valid_id(id) {
        return (StatusCode::BAD_REQUEST, "not an incident id\n").into_response();
    }
    let Some(path) = shared.store.file(id, file) else {
        return (StatusCode::NOT_FOUND, "no such incident or file\n").into_response();
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type(&path))], bytes).into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "no such incident or file\n").into_response(),
    }
}

const JSON: &str = "application/json";
const SVG: &str = "image/svg+xml";
const BINARY: &str = "application/octet-stream";
const TEXT: &str = "text/plain; charset=utf-8";

/// The content type of an incident's file, by its extension.
fn content_type(path: &std::path::Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => JSON,
        Some("svg") => SVG,
        Some("gz") => BINARY,
        _ => TEXT,
    }
}

#[derive(Deserialize)]
struct TraceQuery {
    pid: u32,
    duration: Option<String>,
    format: Option<String>,
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
    const FORMATS: [&str; 5] = ["json", "text", "svg", "folded", "pprof"];
    let format = match FORMATS
        .into_iter()
        .find(|f| *f == q.format.as_deref().unwrap_or("json"))
    {
        Some(f) => f,
        None => {
            return (
                StatusCode::BAD_REQUEST,
                "format: json, text, svg, folded or pprof\n",
            )
                .into_response()
        }
    };
    if super::scan::read(q.pid).is_none() {
        return (
            StatusCode::NOT_FOUND,
            format!("pid {}: no such user process\n", q.pid),
        )
            .into_response();
    }
    let Some(slot) = shared.slots.acquire(q.pid, true) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "every trace slot is busy (or this pid is being traced): try later\n",
        )
            .into_response();
    };
    // In a task of its own: a client that hangs up does not cut the trace
    // short or leave its files behind.
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
        interval: (duration / 30).clamp(Duration::from_secs(1), Duration::from_secs(10)),
        outputs: vec![out.clone()],
        format: Some(format),
    };
    let failure = traces::run(&shared.exe, &spec, &shared.children, shared.verbose).await;
    let reason = "on-demand";
    let response = match failure {
        None => match tokio::fs::read(&out).await {
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

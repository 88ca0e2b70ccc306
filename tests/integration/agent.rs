//! The node agent (`memtrace agent`) against real processes: it flags only
//! the process whose memory keeps growing (on four intervals of growth, never
//! one step up), traces it, writes incidents whose top stack names the
//! leaking function and whose incident.json agrees with `/reports`, keeps its
//! retention limits, serves metrics promtool accepts, a web page (driven
//! in a real browser: token, leak flagged, trace action), reports
//! in every format and an answer for a wrong method, names its children
//! memtrace, guards its HTTP surface (bearer token off
//! loopback, incident ids that cannot become paths, on-demand traces;
//! limits: a slow head is cut off at the header read timeout, large bodies
//! and heads are refused, connections and request rates are bounded), and
//! traces a process that comes back where the OOM killer struck; its
//! on-demand traces read Go programs' heap profiles, and open Node's
//! inspector only when configured to.
//!
//! Each test's agent watches only its own workloads (`--comm`), so tests
//! running side by side do not see each other's processes.

use std::{
    ffi::OsString,
    io::Write,
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use memtrace_integration::{
    assert_within,
    browser::Browser,
    compile_c,
    http::{self, Response},
    proc_stat, run_memtrace, scratch_dir, secs, MemoryCgroup, Report, StackExt, Tracer, Workload,
};
use serde_json::Value;

const TOKEN: &str = "agent-test-token-0123456789abcdef";
/// An agent that scans every second, flags growth after 2 s and traces
/// for 3 s.
const QUICK: [&str; 6] = [
    "--scan-interval",
    "1s",
    "--min-observation",
    "2s",
    "--trace-window",
    "3s",
];
/// The leaking workload's rate (KiB/s).
const LEAK_KIB_PER_SEC: u64 = 1024;

fn start_agent(listen: SocketAddr, reports: &Path, extra: &[&str]) -> Tracer {
    let mut args: Vec<OsString> = vec![
        "agent".into(),
        "--listen".into(),
        listen.to_string().into(),
        "--reports-dir".into(),
        reports.into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    Tracer::spawn(&args)
}

/// Waits until the agent answers /healthz with 200.
#[track_caller]
fn wait_healthy(agent: &mut Tracer, addr: SocketAddr) {
    let deadline = Instant::now() + secs(20);
    while Instant::now() < deadline {
        if http::request(addr, "GET", "/healthz", None).is_some_and(|r| r.status == 200) {
            return;
        }
        assert!(agent.is_running(), "agent exited\n{}", agent.snapshot());
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("agent never became healthy\n{}", agent.snapshot());
}

/// The value of the sample `name{labels}` (labels as printed, sorted by the
/// encoder), or of `name` without labels.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A per-process series' value, for one pid.
fn process_metric(text: &str, name: &str, pid: u32) -> Option<f64> {
    let want = format!("pid=\"{pid}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&want))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn stop(mut agent: Tracer) -> memtrace_integration::RunOutput {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGTERM) };
    let _ = agent.is_running();
    agent.finish(secs(60))
}

/// `promtool check metrics` on an exposition; panics with its output when
/// it finds a problem.
fn promtool_check(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; `cargo xtask test` installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

#[test]
fn flags_only_the_leak_traces_it_and_keeps_retention() {
    let exe = compile_c("agent_mix");
    let leak = Workload::spawn_ready(&exe, &["leak", &LEAK_KIB_PER_SEC.to_string()]);
    let steady = Workload::spawn_ready(&exe, &["steady"]);
    let dir = scratch_dir("agent-flags");
    let reports = dir.join("reports");
    let addr: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();
    let mut agent = start_agent(
        addr,
        &reports,
        &[
            "--scan-interval",
            "1s",
            "--min-observation",
            "5s",
            "--trace-window",
            "4s",
            "--retrace-after",
            "1s",
            "--max-reports",
            "2",
            "--comm",
            "agent_mix",
        ],
    );
    wait_healthy(&mut agent, addr);
    // Started under the agent's eyes: it grows fast (16 MiB in about a
    // second), then stays flat — a cache that filled, not a leak.
    let plateau = Workload::spawn_ready(&exe, &["plateau", "16"]);

    // Three incidents written (so retention had to delete one).
    let deadline = Instant::now() + secs(90);
    let metrics = loop {
        let m = http::get(addr, "/metrics", None).text();
        if metric(&m, "memtrace_agent_incidents_written_total").unwrap_or(0.0) >= 3.0
            // The plateau process has been watched past --min-observation.
            && metric(&m, "memtrace_agent_scans_total").unwrap_or(0.0) >= 12.0
        {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than 3 incidents in 90 s\n{m}\n{}",
            agent.snapshot()
        );
        assert!(agent.is_running(), "agent exited\n{}", agent.snapshot());
        std::thread::sleep(Duration::from_millis(500));
    };
    promtool_check(&metrics);

    let growth = |pid| process_metric(&metrics, "memtrace_process_anon_growth_bytes_per_hour", pid);
    let leak_rate = growth(leak.pid()).expect("the leak's growth metric");
    // 1 MiB/s is 3.5 GiB/h; /proc's view includes allocator rounding.
    assert_within(
        "leak growth (bytes/h)",
        leak_rate as u64,
        LEAK_KIB_PER_SEC * 1024 * 3600,
        15.0,
        &metrics,
    );
    for (what, pid) in [("plateau", plateau.pid()), ("steady", steady.pid())] {
        assert_eq!(
            growth(pid),
            Some(0.0),
            "{what} pid {pid} must not grow\n{metrics}"
        );
    }
    assert!(metric(&metrics, "memtrace_agent_incidents_deleted_total").unwrap() >= 1.0);
    assert_eq!(
        metric(&metrics, "memtrace_agent_reports"),
        Some(2.0),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "memtrace_agent_traces_total{reason=\"growth\",result=\"ok\"}"
        )
        .unwrap()
            >= 3.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "memtrace_agent_oom_watch_up"), Some(1.0));

    // The incidents: only the leak's, its leaking function on top.
    let listed = json(&http::get(addr, "/reports", None));
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 2, "--max-reports 2: {listed:#?}");
    let mut on_disk: Vec<String> = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    on_disk.sort();
    let mut ids: Vec<String> = listed
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(
        on_disk, ids,
        "the directory holds exactly the incidents listed"
    );
    for incident in listed {
        let summary = incident.to_string();
        assert_eq!(incident["pid"], leak.pid(), "{summary}");
        assert_eq!(incident["reason"], "growth", "{summary}");
        assert_eq!(incident["top_function"], "append_audit_record", "{summary}");
        assert_eq!(incident["top_verdict"], "leak", "{summary}");
        assert_eq!(
            incident["files"],
            serde_json::json!([
                "incident.json",
                "report.json",
                "flamegraph.svg",
                "profile.pb.gz",
                "report.html"
            ]),
            "{summary}"
        );
    }
    let newest = listed[0]["id"].as_str().unwrap();
    let response = http::get(addr, &format!("/reports/{newest}"), None);
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-type"), Some("application/json"));
    let report = Report::parse(&response.text(), "agent incident").expect("a valid report");
    let top = &report.stacks[0];
    assert_eq!(top.pid, leak.pid());
    assert_eq!(
        top.function(),
        Some("append_audit_record"),
        "{}",
        top.summary()
    );
    // What the window saw leak: 1 MiB/s for its duration.
    let expected = (report.duration_secs * (LEAK_KIB_PER_SEC * 1024) as f64) as u64;
    assert_within(
        "window's leak",
        top.outstanding_bytes,
        expected,
        15.0,
        &top.summary(),
    );
    let svg = http::get(addr, &format!("/reports/{newest}/flamegraph.svg"), None);
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert!(svg.text().contains("append_audit_record"));
    let pprof = http::get(addr, &format!("/reports/{newest}/profile.pb.gz"), None);
    assert_eq!(&pprof.body[..2], &[0x1f, 0x8b], "gzip");
    // The page, with the policy it states as a header too.
    let page = http::get(addr, &format!("/reports/{newest}?format=html"), None);
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.header("content-security-policy")
            .is_some_and(|p| p.starts_with("default-src 'none'")),
        "{:?}",
        page.header("content-security-policy")
    );
    assert!(
        page.text().starts_with("<!DOCTYPE html>") && page.text().contains("append_audit_record")
    );

    let out = stop(agent);
    out.assert_success();
    let traced: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("memtrace: agent: tracing pid"))
        .collect();
    assert!(traced.len() >= 3, "{}", out.stderr);
    let leak_line = format!("memtrace: agent: tracing pid {} ", leak.pid());
    for line in traced {
        assert!(
            line.starts_with(&leak_line),
            "only the leak is traced: {line}"
        );
    }

    // Stopping wrote the window in progress (its trace ended early with a
    // report): the newest incident is now that one, or the last listed.
    let newest = std::fs::read_dir(&reports)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .max()
        .unwrap();
    assert!(newest.as_str() >= listed[0]["id"].as_str().unwrap());

    // Byte retention: an agent started with a smaller budget keeps only the
    // newest incident (each is ~25 KB).
    let mut agent = start_agent(
        addr,
        &reports,
        &["--max-report-bytes", "20KB", "--comm", "no_such_proc"],
    );
    wait_healthy(&mut agent, addr);
    let listed = json(&http::get(addr, "/reports", None));
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![newest.as_str()],
        "the newest is kept whatever its size"
    );
    stop(agent).assert_success();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn http_surface_needs_a_token_off_loopback_and_refuses_paths() {
    let dir = scratch_dir("agent-http");
    let reports = dir.join("reports");
    let port = http::free_port();
    let open: SocketAddr = format!("0.0.0.0:{port}").parse().unwrap();

    // Off loopback without a token: refused before anything starts.
    let out = run_memtrace(
        &["agent", "--listen", &open.to_string(), "--reports-dir"]
            .iter()
            .map(OsString::from)
            .chain([reports.clone().into_os_string()])
            .collect::<Vec<_>>(),
        secs(10),
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--token"), "{}", out.stderr);

    let mut agent = start_agent(
        open,
        &reports,
        &[
            "--token",
            TOKEN,
            "--comm",
            "no_such_proc",
            "--scan-interval",
            "1s",
        ],
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_healthy(&mut agent, addr); // /healthz needs no token

    for path in ["/metrics", "/reports", "/reports/20261125T000000Z-1-x"] {
        let r = http::get(addr, path, None);
        assert_eq!(r.status, 401, "GET {path} without a token");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"memtrace\"")
        );
        assert_eq!(
            http::get(addr, path, Some("wrong-token-0123456789abcdef")).status,
            401
        );
    }
    let r = http::request(addr, "POST", "/trace?pid=1", None).unwrap();
    assert_eq!(r.status, 401, "POST /trace without a token");
    let metrics = http::get(addr, "/metrics", Some(TOKEN));
    assert_eq!(metrics.status, 200);
    promtool_check(&metrics.text());

    // The page's session: given for the token only; a cookie that reads
    // (what lets reports open as links) but never starts a trace.
    assert_eq!(
        http::request(
            addr,
            "POST",
            "/api/session",
            Some("wrong-token-0123456789abcdef")
        )
        .unwrap()
        .status,
        401
    );
    let r = http::request(addr, "POST", "/api/session", Some(TOKEN)).unwrap();
    assert_eq!(r.status, 204);
    let cookie = r.header("set-cookie").unwrap_or("").to_string();
    assert!(
        cookie.contains("; HttpOnly; SameSite=Strict; Path=/"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let with_cookie = |method: &str, path: &str, cookie: &str| {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        http::send(addr, head.as_bytes()).expect("an answer").status
    };
    assert_eq!(with_cookie("GET", "/api/state", &session), 200);
    assert_eq!(with_cookie("GET", "/reports", &session), 200);
    assert_eq!(with_cookie("POST", "/trace?pid=1", &session), 401);
    assert_eq!(with_cookie("GET", "/reports", "memtrace_session=0123"), 401);
    let signed_in = |cookie: &str| {
        let head = format!(
            "GET /api/session HTTP/1.1\r\nHost: {addr}\r\nCookie: {cookie}\r\n\
             Connection: close\r\n\r\n"
        );
        let r = http::send(addr, head.as_bytes()).expect("an answer");
        serde_json::from_slice::<Value>(&r.body).unwrap()
    };
    assert_eq!(
        signed_in(&session),
        serde_json::json!({"token": true, "admitted": true})
    );
    assert_eq!(
        signed_in("x=y"),
        serde_json::json!({"token": true, "admitted": false})
    );

    // Incident ids never become paths, however they are spelled.
    for (path, want) in [
        ("/reports/../x", [400, 404]),
        ("/reports/..", [400, 404]),
        ("/reports/..%2Fx", [400, 400]),
        ("/reports/%2e%2e%2f%2e%2e%2fetc%2fpasswd", [400, 400]),
        (
            "/reports/20261125T000000Z-1-x/..%2f..%2f..%2fetc%2fpasswd",
            [404, 404],
        ),
        (
            "/reports/20261125T000000Z-1-x/../../../etc/passwd",
            [400, 404],
        ),
    ] {
        let r = http::get(addr, path, Some(TOKEN));
        assert!(
            want.contains(&r.status),
            "GET {path}: {} {}",
            r.status,
            r.text()
        );
        assert!(!r.text().contains("root:"), "GET {path} leaked a file");
    }

    // An on-demand trace answers with the report.
    let exe = compile_c("agent_mix");
    let copy = dir.join("ondemand_leak");
    std::fs::copy(&exe, &copy).unwrap();
    let leak = Workload::spawn_ready(&copy, &["leak", "512"]);
    let path = format!("/trace?pid={}&duration=3s", leak.pid());
    let r = http::request(addr, "POST", &path, Some(TOKEN)).expect("an answer");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let report = Report::parse(&r.text(), "on-demand trace").expect("a valid report");
    let stack = report
        .stacks
        .iter()
        .find(|s| s.function() == Some("append_audit_record"))
        .unwrap_or_else(|| panic!("no append_audit_record stack: {}", r.text()));
    assert_eq!(stack.pid, leak.pid());
    let expected = (report.duration_secs * (512 * 1024) as f64) as u64;
    assert_within(
        "on-demand leak",
        stack.outstanding_bytes,
        expected,
        15.0,
        &stack.summary(),
    );
    for (path, status) in [
        ("/trace?pid=999999999&duration=3s".to_string(), 404),
        (format!("/trace?pid={}&duration=1h", leak.pid()), 400),
        (format!("/trace?pid={}&format=xml", leak.pid()), 400),
        (
            format!("/trace?pid={}&keep=true&format=text", leak.pid()),
            400,
        ),
        ("/trace?pid=abc".to_string(), 400),
    ] {
        let r = http::request(addr, "POST", &path, Some(TOKEN)).unwrap();
        assert_eq!(r.status, status, "POST {path}: {}", r.text());
    }

    // A client that hangs up does not cut its trace short nor leave files.
    let ok_before = metric(
        &http::get(addr, "/metrics", Some(TOKEN)).text(),
        "memtrace_agent_traces_total{reason=\"on-demand\",result=\"ok\"}",
    );
    {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        let req = format!(
            "POST /trace?pid={}&duration=2s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \
             {TOKEN}\r\nContent-Length: 0\r\n\r\n",
            leak.pid()
        );
        conn.write_all(req.as_bytes()).unwrap();
        // Hang up once its trace runs.
        wait_child(&mut agent, &format!("--pid {} ", leak.pid()));
    }
    let deadline = Instant::now() + secs(30);
    loop {
        let m = http::get(addr, "/metrics", Some(TOKEN)).text();
        let ok = metric(
            &m,
            "memtrace_agent_traces_total{reason=\"on-demand\",result=\"ok\"}",
        );
        if ok > ok_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned trace never finished\n{m}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let staging: Vec<_> = std::fs::read_dir(reports.join(".staging"))
        .unwrap()
        .collect();
    assert!(staging.is_empty(), "left behind: {staging:?}");

    // One agent per reports directory.
    let other: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();
    let out = start_agent(other, &reports, &["--comm", "no_such_proc"]).finish(secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("another memtrace agent uses"),
        "{}",
        out.stderr
    );

    // A request that never ends does not hold up the exit.
    let mut stuck = std::net::TcpStream::connect(addr).unwrap();
    stuck
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let stopping = Instant::now();
    stop(agent).assert_success();
    assert!(
        stopping.elapsed() < secs(15),
        "took {:?}",
        stopping.elapsed()
    );
    drop(stuck);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The HTTP limits of tracer/src/agent/http.rs.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: usize = 64;
const MAX_CONNECTIONS_PER_CLIENT: usize = 16;
const RATE_PER_SEC: f64 = 20.0;
const RATE_BURST: usize = 50;

/// Writes `head` byte by byte, one every 200 ms (again and again if
/// `repeat`, else once), until the server closes the connection; returns
/// how long that took from the connection, and what the server sent.
fn trickle(addr: SocketAddr, head: &[u8], repeat: bool) -> (Duration, Vec<u8>) {
    use std::io::Read;
    let started = Instant::now();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut answer = Vec::new();
    let bytes = head.iter().cycle().take(match repeat {
        true => usize::MAX,
        false => head.len(),
    });
    for byte in bytes.map(Some).chain(std::iter::repeat(None)) {
        // A write may still succeed after the close (the peer's RST comes
        // later); the read sees the end of the stream.
        if let Some(byte) = byte {
            let _ = conn.write_all(&[*byte]);
        }
        let mut buf = [0u8; 512];
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        assert!(
            started.elapsed() < HEADER_READ_TIMEOUT * 3,
            "a client sending its request head slowly was never cut off"
        );
    }
    (started.elapsed(), answer)
}

/// A connection from `from` the server has admitted: it has answered a
/// kept-alive `GET /healthz` on it.
fn answered(from: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    use std::io::Read;
    let mut conn = http::connect_from(from, addr)?;
    conn.set_read_timeout(Some(secs(10)))?;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    while !answer.ends_with(b"\r\n\r\nok\n") {
        match conn.read(&mut buf)? {
            0 => {
                return Err(std::io::Error::other(format!(
                    "closed after {:?}",
                    String::from_utf8_lossy(&answer)
                )))
            }
            n => answer.extend_from_slice(&buf[..n]),
        }
    }
    Ok(conn)
}

#[test]
fn http_limits_bound_slow_large_and_bursty_clients() {
    let dir = scratch_dir("agent-limits");
    let reports = dir.join("reports");
    let addr: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();
    let mut agent = start_agent(
        addr,
        &reports,
        &["--token", TOKEN, "--comm", "no_such_proc"],
    );
    wait_healthy(&mut agent, addr);

    // A head sent byte by byte (slowloris) is cut off at the header read
    // timeout, without an answer; so is a kept-alive connection that
    // sends nothing after its first request.
    let (took, answer) = trickle(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ", true);
    assert!(
        took >= HEADER_READ_TIMEOUT - secs(1) && took <= HEADER_READ_TIMEOUT + secs(3),
        "a slow head should be cut off at the {HEADER_READ_TIMEOUT:?} timeout, after {took:?}"
    );
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    let keep_alive = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let (took, answer) = trickle(addr, &keep_alive[..], false);
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        took <= Duration::from_millis(200 * keep_alive.len() as u64)
            + HEADER_READ_TIMEOUT
            + secs(3),
        "an idle kept-alive connection should be closed within the timeout, after {took:?}"
    );

    // Too large: a body (413, before the token is even looked at), a head
    // (431), too many headers (431).
    let r = http::send(
        addr,
        b"POST /trace?pid=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
    )
    .expect("an answer");
    assert_eq!(r.status, 413, "{}", r.text());
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let r = http::send(addr, big.as_bytes()).expect("an answer");
    assert_eq!(r.status, 431, "{}", r.text());
    let many: String = (0..40).map(|i| format!("X-H{i}: {i}\r\n")).collect();
    let r = http::send(
        addr,
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    )
    .expect("an answer");
    assert_eq!(r.status, 431, "{}", r.text());

    // Connections: 16 per client address, 64 in all; the next one is
    // answered 429 and closed; once they are gone, requests are served.
    // Each connection is counted once it has been answered (a connect
    // alone completes in the kernel, before the server accepts it); it
    // then idles, kept alive, well within the header read timeout.
    let ip = |last: u8| std::net::IpAddr::from([127, 0, 0, last]);
    let mut idle = Vec::new();
    for n in 0..MAX_CONNECTIONS_PER_CLIENT {
        idle.push(answered(ip(2), addr).unwrap_or_else(|e| panic!("connection {n}: {e}")));
    }
    let mut refused = http::connect_from(ip(2), addr).expect("connect");
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut refused, &mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 429") && answer.contains("too many connections"),
        "connection {} from one address: {answer:?}",
        MAX_CONNECTIONS_PER_CLIENT + 1
    );
    for last in 3..3 + (MAX_CONNECTIONS / MAX_CONNECTIONS_PER_CLIENT - 1) as u8 {
        for n in 0..MAX_CONNECTIONS_PER_CLIENT {
            idle.push(answered(ip(last), addr).unwrap_or_else(|e| panic!("connection {n}: {e}")));
        }
    }
    let mut refused = http::connect_from(ip(20), addr).expect("connect");
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut refused, &mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 429"),
        "connection {} in all: {answer:?}",
        MAX_CONNECTIONS + 1
    );
    // Once the server has seen them close, a connection is served again.
    // Until then it is refused: answered 429, or reset before the answer
    // is read (the server closes it with the request unread, and the
    // kernel then resets it, which may discard the 429).
    drop(idle);
    let deadline = Instant::now() + secs(10);
    loop {
        let status = http::request(addr, "GET", "/healthz", None).map(|r| r.status);
        if status == Some(200) {
            break;
        }
        assert!(
            matches!(status, Some(429) | None) && Instant::now() < deadline,
            "GET /healthz after the connections closed: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Requests: clients without the token, and the page's files, use
    // nothing up; then a burst of
    // authorized ones gets its first RATE_BURST (and the refill) served and
    // the rest 429 with Retry-After, while /healthz keeps answering; a
    // second later requests are served again.
    for _ in 0..100 {
        assert_eq!(http::get(addr, "/reports", None).status, 401);
        // (The page's files, which anyone may load.)
        assert_eq!(http::get(addr, "/ui/agent.js", None).status, 200);
    }
    let burst = Instant::now();
    let statuses: Vec<Response> = (0..150)
        .map(|_| http::get(addr, "/reports", Some(TOKEN)))
        .collect();
    let took = burst.elapsed().as_secs_f64();
    let served = statuses.iter().filter(|r| r.status == 200).count();
    let limited: Vec<&Response> = statuses.iter().filter(|r| r.status == 429).collect();
    assert_eq!(served + limited.len(), 150, "only 200 or 429");
    let most = RATE_BURST + (RATE_PER_SEC * took).ceil() as usize;
    assert!(
        served >= RATE_BURST && served <= most,
        "{served} of 150 requests in {took:.2} s served: expected {RATE_BURST} to {most}"
    );
    assert!(limited.iter().all(|r| r.header("retry-after") == Some("1")));
    assert_eq!(http::get(addr, "/healthz", None).status, 200);
    std::thread::sleep(secs(1));
    assert_eq!(http::get(addr, "/reports", Some(TOKEN)).status, 200);

    stop(agent).assert_success();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Waits until `ready(metrics)` holds, polling /metrics.
#[track_caller]
fn wait_metrics(agent: &mut Tracer, addr: SocketAddr, what: &str, ready: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + secs(60);
    loop {
        let m = http::get(addr, "/metrics", None).text();
        if ready(&m) {
            return;
        }
        assert!(agent.is_running(), "agent exited\n{}", agent.snapshot());
        assert!(
            Instant::now() < deadline,
            "{what}: not within 60 s\n{m}\n{}",
            agent.snapshot()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// oom_hoard started inside `cgroup` from its first instruction (as a
/// container's process is), waiting for SIGUSR1 to hoard.
fn hoarder_in(cgroup: &MemoryCgroup) -> Workload {
    let mut w = cgroup.spawn(&compile_c("oom_hoard"), &[]);
    w.expect_line("ready", secs(10));
    w
}

#[test]
fn a_process_back_where_the_oom_killer_struck_is_traced() {
    const LIMIT: u64 = 64 << 20;
    let cgroup = MemoryCgroup::new("agent-oom", LIMIT);
    let dir = scratch_dir("agent-oom");
    let reports = dir.join("reports");
    let addr: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();
    // Growth alone never flags here (--min-observation 1h): only the kill.
    let mut agent = start_agent(
        addr,
        &reports,
        &[
            "--scan-interval",
            "1s",
            "--min-observation",
            "1h",
            "--trace-window",
            "60s",
            "--comm",
            "oom_hoard",
            "--verbose",
        ],
    );
    wait_healthy(&mut agent, addr);
    wait_metrics(&mut agent, addr, "the OOM watch", |m| {
        metric(m, "memtrace_agent_oom_watch_up") == Some(1.0)
    });

    let mut first = hoarder_in(&cgroup);
    let first_pid = first.pid();
    first.signal(libc::SIGUSR1);
    let status = first.wait_exit(secs(60));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "the first oom_hoard is OOM-killed"
    );
    wait_metrics(&mut agent, addr, "the kill counted", |m| {
        metric(m, "memtrace_oom_kills_total").unwrap_or(0.0) >= 1.0
    });

    // It comes back in the same cgroup: the agent traces it at once.
    let mut second = hoarder_in(&cgroup);
    let pid = second.pid();
    let attached = format!("trace of {pid}: memtrace: tracing pid {pid}");
    agent.wait_output(&attached, secs(30), "the returning process was not traced");
    second.signal(libc::SIGUSR1);
    let status = second.wait_exit(secs(60));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    // Its trace ends with the kill; the incident says what held the memory.
    wait_metrics(&mut agent, addr, "the incident", |m| {
        metric(m, "memtrace_agent_incidents_written_total") == Some(1.0)
    });
    let listed = json(&http::get(addr, "/reports", None));
    let incident = &listed[0];
    let summary = incident.to_string();
    assert_eq!(incident["pid"], pid, "{summary}");
    assert_eq!(incident["reason"], "oom-restart", "{summary}");
    assert_eq!(incident["outcome"], "OOM-killed", "{summary}");
    assert_eq!(incident["cgroup"], cgroup.path.as_str(), "{summary}");
    assert_eq!(incident["top_function"], "hoard_chunk", "{summary}");
    let id = incident["id"].as_str().unwrap();
    let report = http::get(addr, &format!("/reports/{id}"), None);
    let report = Report::parse(&report.text(), "oom-restart incident").expect("a valid report");
    let kill = report
        .oom_kills
        .iter()
        .find(|k| k.pid == pid)
        .unwrap_or_else(|| panic!("the kill is in the report: {}", report.describe()));
    let held = kill.top_stacks[0].outstanding_bytes;
    assert_within("held at the kill", held, LIMIT, 15.0, &report.describe());
    // The page's state lists both kills in the cgroup, newest first (the
    // watch sees the whole node: other tests' kills may be there too).
    let state = json(&http::get(addr, "/api/state", None));
    let ours: Vec<&Value> = state["oom_kills"]
        .as_array()
        .expect("oom_kills")
        .iter()
        .filter(|k| k["cgroup"] == cgroup.path.as_str())
        .collect();
    let pids: Vec<u64> = ours.iter().map(|k| k["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids, [u64::from(pid), u64::from(first_pid)], "{ours:?}");
    for k in ours {
        assert_eq!(k["comm"], "oom_hoard", "{k}");
        let anon = k["anon_rss_bytes"].as_u64().unwrap();
        assert!(anon > LIMIT / 2 && anon <= LIMIT, "{k}");
    }
    // And the page shows them (no token here: it asks for none).
    let mut browser = Browser::launch(1400, 1000);
    browser.visit(&format!("http://{addr}/"));
    browser.wait_for("document.body.dataset.ready === '1'", secs(30));
    let kills = browser.eval("document.getElementById('oom-kills').innerText");
    let kills = kills.as_str().unwrap_or("");
    for p in [pid, first_pid] {
        assert!(
            kills.contains(&format!("oom_hoard (pid {p}) at ")),
            "{kills}"
        );
    }
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "the page logged {errors:#?}");
    drop(browser);
    stop(agent).assert_success();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The children of `parent` (by /proc), as (pid, comm, argv joined by
/// spaces).
fn children_of(parent: u32) -> Vec<(u32, String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if proc_stat(pid).and_then(|f| f.get(1)?.parse::<u32>().ok()) != Some(parent) {
            continue;
        }
        let read = |file: &str| std::fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default();
        let comm = String::from_utf8_lossy(&read("comm"))
            .trim_end()
            .to_string();
        let args: Vec<String> = read("cmdline")
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        found.push((pid, comm, args.join(" ")));
    }
    found
}

/// Polls the children of `parent` until one's argv contains `needle`;
/// returns it. Panics after 30 s (or once the agent exits).
#[track_caller]
fn wait_child(agent: &mut Tracer, needle: &str) -> (u32, String, String) {
    let deadline = Instant::now() + secs(30);
    loop {
        let children = children_of(agent.pid());
        if let Some(c) = children.iter().find(|c| c.2.contains(needle)) {
            return c.clone();
        }
        assert!(agent.is_running(), "agent exited\n{}", agent.snapshot());
        assert!(
            Instant::now() < deadline,
            "no child of the agent with {needle:?} in 30 s: {children:?}\n{}",
            agent.snapshot()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What `ps -o comm=,args= -p PID` shows.
fn ps_line(pid: u32) -> String {
    let out = Command::new("ps")
        .args(["-o", "comm=,args=", "-p", &pid.to_string()])
        .output()
        .expect("ps (procps)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The agent as a user meets it: a page at `/` listing the endpoints, and
/// the state it draws (`/api/state`) holding the processes it watches and
/// its incidents; incident.json on disk saying what `/reports` says of it;
/// `/reports/ID?format=` in every format; a body for a wrong method (with
/// `Allow`) and for an unknown path; its children named memtrace in `ps`.
/// Every problem is collected, so one run lists all that is wrong.
#[test]
fn index_incident_files_formats_methods_and_child_names() {
    let dir = scratch_dir("agent-index");
    // A name that is HTML: the page must show it as text.
    const NAME: &str = "a<b>&c";
    let exe = dir.join(NAME);
    std::fs::copy(compile_c("agent_mix"), &exe).unwrap();
    let leak = Workload::spawn_ready(&exe, &["leak", &LEAK_KIB_PER_SEC.to_string()]);
    let reports = dir.join("reports");
    let addr: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();
    let mut agent = start_agent(addr, &reports, &[&QUICK[..], &["--comm", NAME]].concat());
    wait_healthy(&mut agent, addr);
    let mut problems: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            problems.push(what);
        }
    };

    // Children: the OOM watch, and an on-demand trace while it runs.
    let (watch, comm, args) = wait_child(&mut agent, "--oom-only");
    check(
        comm == "memtrace" && args == "memtrace --oom-only --format json",
        format!("the OOM watch is comm {comm:?}, args {args:?}"),
    );
    let ps = ps_line(watch);
    check(
        ps == "memtrace        memtrace --oom-only --format json",
        format!("ps shows the OOM watch as {ps:?}"),
    );
    // (Of a process of its own: the leak's growth trace may hold its pid.)
    let steady = Workload::spawn_ready(&exe, &["steady"]);
    let path = format!("/trace?pid={}&duration=2s&format=text", steady.pid());
    let on_demand = std::thread::spawn(move || http::request(addr, "POST", &path, None));
    let pid_arg = format!("--pid {} ", steady.pid());
    let (trace, comm, args) = wait_child(&mut agent, &pid_arg);
    check(
        comm == "memtrace" && args.starts_with(&format!("memtrace {pid_arg}")),
        format!("a trace is comm {comm:?}, args {args:?}"),
    );
    let ps = ps_line(trace);
    check(
        ps.starts_with(&format!("memtrace        memtrace {pid_arg}")),
        format!("ps shows a trace as {ps:?}"),
    );
    let answer = on_demand.join().unwrap().expect("an answer to POST /trace");
    check(
        answer.status == 200
            // (OOM kills on the node, other tests', may come first.)
            && answer.text().contains("memtrace report:")
            && answer
                .text()
                .contains(&format!("pid {} ({NAME})", steady.pid())),
        format!("POST /trace: {} {}", answer.status, answer.text()),
    );

    // An incident of the leak.
    wait_metrics(&mut agent, addr, "an incident", |m| {
        metric(m, "memtrace_agent_incidents_written_total").unwrap_or(0.0) >= 1.0
    });
    let listed = json(&http::get(addr, "/reports", None));
    let incident = &listed[0];
    let id = incident["id"].as_str().expect("an incident id").to_string();
    let on_disk: Value = serde_json::from_slice(
        &std::fs::read(reports.join(&id).join("incident.json")).expect("incident.json"),
    )
    .expect("incident.json is JSON");
    check(
        &on_disk == incident,
        format!("incident.json on disk\n{on_disk:#}\nis not what /reports lists\n{incident:#}"),
    );
    let files = [
        "incident.json",
        "report.json",
        "flamegraph.svg",
        "profile.pb.gz",
        "report.html",
    ];
    let sizes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(reports.join(&id).join(f)).map_or(0, |m| m.len()))
        .sum();
    check(
        on_disk["files"] == serde_json::json!(files) && on_disk["bytes"] == sizes,
        format!(
            "incident.json lists {} and {} bytes; the directory holds {files:?}, {sizes} bytes",
            on_disk["files"], on_disk["bytes"]
        ),
    );

    // Its report in every format.
    for (format, kind, starts) in [
        ("json", "application/json", &b"{"[..]),
        // (OOM kills on the node, other tests', come first in the text.)
        ("text", "text/plain; charset=utf-8", &b""[..]),
        ("folded", "text/plain; charset=utf-8", &b""[..]),
        ("svg", "image/svg+xml", b"<?xml"),
        ("pprof", "application/octet-stream", &[0x1f, 0x8b]),
    ] {
        let r = http::get(addr, &format!("/reports/{id}?format={format}"), None);
        let wants_function = !matches!(format, "pprof");
        check(
            r.status == 200
                && r.header("content-type") == Some(kind)
                && r.body.starts_with(starts)
                && (!wants_function || r.text().contains("append_audit_record"))
                && (format != "text" || r.text().contains("memtrace report:")),
            format!(
                "GET /reports/ID?format={format}: {} {:?} {:?}",
                r.status,
                r.header("content-type"),
                r.text().chars().take(200).collect::<String>()
            ),
        );
    }
    let r = http::get(addr, &format!("/reports/{id}?format=xml"), None);
    check(
        r.status == 400 && r.text() == "format: json, text, svg, folded, pprof or html\n",
        format!(
            "GET ?format=xml: {} {:?}",
            r.status,
            r.text().chars().take(200).collect::<String>()
        ),
    );

    // The page: a shell listing the endpoints, and the state it draws
    // (names as JSON strings, which the page sets as text).
    let page = http::get(addr, "/", None);
    let html = page.text();
    check(
        page.status == 200 && page.header("content-type") == Some("text/html; charset=utf-8"),
        format!("GET /: {} {:?}", page.status, page.header("content-type")),
    );
    for wanted in [
        "<a href=\"/metrics\">/metrics</a>",
        "<a href=\"/reports\">/reports</a>",
        "<a href=\"/healthz\">/healthz</a>",
        "/trace?pid=P&amp;duration=30s&amp;format=json",
    ] {
        check(html.contains(wanted), format!("GET / lacks {wanted:?}"));
    }
    let state = json(&http::get(addr, "/api/state", None));
    let row = state["processes"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["pid"] == leak.pid()));
    check(
        row.is_some_and(|r| r["comm"] == NAME && r["suspect"] == true),
        format!("/api/state lists the leak as {row:?}"),
    );
    check(
        state["incidents"][0]["id"] == id.as_str()
            && state["incidents"][0]["top_function"] == "append_audit_record",
        format!("/api/state's incidents: {}", state["incidents"]),
    );

    // Wrong methods and unknown paths are explained.
    for (method, path, allow) in [
        ("POST", "/reports", "GET,HEAD"),
        ("DELETE", "/", "GET,HEAD"),
        ("GET", "/trace?pid=1", "POST"),
        ("PUT", &format!("/reports/{id}") as &str, "GET,HEAD"),
    ] {
        let r = http::request(addr, method, path, None).expect("an answer");
        let route = path.split('?').next().unwrap();
        let body = format!(
            "{method} is not allowed on {route}: it takes {}\n",
            allow.replace(',', ", ")
        );
        check(
            r.status == 405 && r.header("allow") == Some(allow) && r.text() == body,
            format!(
                "{method} {path}: {} allow {:?} {:?}",
                r.status,
                r.header("allow"),
                r.text()
            ),
        );
    }
    let r = http::get(addr, "/no/such/thing", None);
    check(
        r.status == 404 && r.text() == "no such endpoint: GET / lists them\n",
        format!("GET /no/such/thing: {} {:?}", r.status, r.text()),
    );

    let out = stop(agent);
    let startup = out.stderr.lines().next().unwrap_or("");
    check(
        startup.contains(&format!(
            "http://{addr}/ (page, metrics, healthz, reports, trace)"
        )),
        format!("startup line: {startup}"),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    out.assert_success();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A process whose memory stepped up once and stayed flat showed one
/// interval of growth ("too few intervals to call a leak (1 of 4)"): not
/// the evidence a trace starts on. A leak running beside it is traced
/// (so the agent could trace, and did, on four intervals).
#[test]
fn one_interval_of_growth_does_not_start_a_trace() {
    const STEP_MIB: u64 = 32;
    let exe = compile_c("agent_mix");
    let mut step = Workload::spawn_ready(&exe, &["step", &STEP_MIB.to_string()]);
    let dir = scratch_dir("agent-step");
    let leak_exe = dir.join("agent_leaker");
    std::fs::copy(&exe, &leak_exe).unwrap();
    let leak = Workload::spawn_ready(&leak_exe, &["leak", &LEAK_KIB_PER_SEC.to_string()]);
    let addr: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();
    let mut agent = start_agent(
        addr,
        &dir.join("reports"),
        &[
            "--scan-interval",
            "1s",
            "--min-observation",
            "2s",
            "--trace-window",
            "2s",
            "--comm",
            "agent_mix",
            "--comm",
            "agent_leaker",
        ],
    );
    wait_healthy(&mut agent, addr);
    let scans = |m: &str| metric(m, "memtrace_agent_scans_total").unwrap_or(0.0);
    // Watched past --min-observation (first seen at the first scan).
    wait_metrics(&mut agent, addr, "four scans", |m| scans(m) >= 4.0);
    step.signal(libc::SIGUSR1);
    step.expect_line("filled", secs(10));
    let stepped = scans(&http::get(addr, "/metrics", None).text());
    // The step seen, then judged over more intervals than a leak needs.
    let metrics = {
        let pid = step.pid();
        let step_bytes = STEP_MIB << 20;
        wait_metrics(&mut agent, addr, "the step seen", |m| {
            process_metric(m, "memtrace_process_anon_resident_bytes", pid)
                .is_some_and(|b| b as u64 >= step_bytes)
        });
        wait_metrics(&mut agent, addr, "eight scans after the step", |m| {
            scans(m) >= stepped + 8.0
        });
        http::get(addr, "/metrics", None).text()
    };
    let out = stop(agent);
    let traced: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("memtrace: agent: tracing pid"))
        .collect();
    assert!(
        traced
            .iter()
            .all(|l| !l.starts_with(&format!("memtrace: agent: tracing pid {} ", step.pid()))),
        "a process that stepped up once was traced:\n{}\n{metrics}",
        out.stderr
    );
    let leak_line = format!("memtrace: agent: tracing pid {} ", leak.pid());
    let leak_traced = traced.iter().find(|l| l.starts_with(&leak_line));
    let leak_traced =
        leak_traced.unwrap_or_else(|| panic!("the leak was not traced\n{}", out.stderr));
    // ...on the evidence of a leak: four intervals or more.
    let intervals: u64 = leak_traced
        .split("grew in ")
        .nth(1)
        .and_then(|r| r.split('/').nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no `grew in N/M intervals` in {leak_traced}"));
    assert!(intervals >= 4, "{leak_traced}");
    out.assert_success();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The agent's traces open no Node inspector unless the agent was started
/// with `--runtime-attach`: an on-demand trace of a Node server is native
/// only (nothing new listens in it), then, with the flag, has its
/// JavaScript heap.
#[test]
fn traces_open_node_inspectors_only_when_configured() {
    let server = memtrace_integration::NodeServer::start("map_cache", &["--inspect-port=0"]);
    let _load = server.load(300, None);
    for attach in [false, true] {
        let report = trace_through_agent("agent-node", server.pid(), "3s", attach);
        let node = report.targets[0].node.as_ref();
        let js = report
            .stacks
            .iter()
            .filter(|s| s.kind == memtrace_report::StackKind::JsHeap)
            .count();
        match attach {
            false => assert!(node.is_none() && js == 0, "{node:?}, {js} js-heap stacks"),
            true => {
                let node = node.expect("a node section");
                assert_eq!((node.inspector.as_str(), node.closed), ("read", true));
                assert!(js > 0, "no js-heap stack");
            }
        }
        assert_eq!(
            memtrace_integration::listening_ports(server.pid()),
            vec![server.port]
        );
    }
}

/// An on-demand trace of `pid` for `duration` through an agent of its own
/// (with `--runtime-attach` when `attach`), stopped again: its report.
fn trace_through_agent(name: &str, pid: u32, duration: &str, attach: bool) -> Report {
    let dir = scratch_dir(&format!("{name}-{attach}"));
    let addr: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();
    let extra: &[&str] = if attach { &["--runtime-attach"] } else { &[] };
    let mut agent = start_agent(addr, &dir.join("reports"), extra);
    wait_healthy(&mut agent, addr);
    let path = format!("/trace?pid={pid}&duration={duration}");
    let r = http::request(addr, "POST", &path, None).expect("an answer");
    assert_eq!(r.status, 200, "{}", r.text());
    let report = Report::parse(&r.text(), "on-demand trace").expect("a valid report");
    stop(agent).assert_success();
    report
}

/// The same for a JVM: without `--runtime-attach` an on-demand trace sends
/// it nothing (no recording, no attach file); with it, the trace records
/// the JVM's leak profiler, names its leak at its Java method and stops the
/// recording again.
#[test]
fn traces_record_jvms_only_when_configured() {
    use memtrace_integration::{jcmd, start_leaks, JDK17};
    let jvm = start_leaks(JDK17, &[], &["list", "1000"]);
    for attach in [false, true] {
        let report = trace_through_agent("agent-java", jvm.pid(), "8s", attach);
        let java = report.targets[0].java.as_ref();
        let remember = report.stacks.iter().find(|s| {
            s.kind == memtrace_report::StackKind::JavaHeap && s.function() == Some("Leaks.remember")
        });
        match attach {
            false => {
                assert!(java.is_none() && remember.is_none(), "{java:?}");
                let tmp = format!("/proc/{}/root/tmp/.attach_pid{}", jvm.pid(), jvm.pid());
                assert!(!std::path::Path::new(&tmp).exists(), "{tmp}");
            }
            true => {
                let java = java.expect("a java section");
                assert_eq!((java.state.as_str(), java.stopped), ("recorded", true));
                let remember = remember.unwrap_or_else(|| {
                    panic!(
                        "no java-heap stack at Leaks.remember\n{}",
                        report.describe()
                    )
                });
                assert!(
                    remember.outstanding_bytes > 1 << 20,
                    "{}",
                    remember.summary()
                );
            }
        }
        let check = jcmd(JDK17, jvm.pid(), &["JFR.check"]);
        assert!(check.contains("No available recordings"), "{check}");
    }
}

#[test]
fn traces_read_go_programs() {
    // An on-demand trace is `memtrace --pid`: a Go program's heap profile
    // is read from outside (nothing written to it, so it needs no
    // --runtime-attach), and its map leak is named at its function.
    let go = Workload::spawn(&memtrace_integration::go_leaks_as("go_agent"), &["map"]);
    let dir = scratch_dir("agent-go");
    let addr: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();
    let mut agent = start_agent(addr, &dir.join("reports"), &[]);
    wait_healthy(&mut agent, addr);
    let path = format!("/trace?pid={}&duration=6s", go.pid());
    let r = http::request(addr, "POST", &path, None).expect("an answer");
    assert_eq!(r.status, 200, "{}", r.text());
    let report = Report::parse(&r.text(), "on-demand trace").expect("a valid report");
    let ctx = report.describe();
    let read = report.targets[0]
        .go
        .as_ref()
        .map(|g| g.heap_profile.as_str());
    assert_eq!(read, Some("read"), "{ctx}");
    assert!(
        report
            .stacks
            .iter()
            .any(|s| s.kind == memtrace_report::StackKind::GoHeap
                && s.function() == Some("main.remember")
                && s.outstanding_bytes > 1 << 20),
        "the Go map leak at main.remember\n{ctx}"
    );
    stop(agent).assert_success();
}

/// The text of each cell of the process table's row of `pid`, and its
/// badge's class (its verdict) and whether it is flagged.
fn page_row(browser: &mut Browser, pid: u32) -> Value {
    browser.eval(&format!(
        "(() => {{ const tr = document.querySelector('#process-table tr[data-pid=\"{pid}\"]'); \
         if (!tr) return null; const badge = tr.querySelector('.badge'); \
         return {{ name: tr.querySelector('button.name').textContent, \
         verdict: badge ? badge.className.replace('badge ', '') : '', \
         flagged: tr.classList.contains('flagged'), \
         lines: tr.querySelectorAll('svg.spark polyline').length, \
         cells: Array.from(tr.cells).map(td => td.innerText.trim()) }}; }})()"
    ))
}

/// The agent's page as a user meets it, in a real browser (headless
/// Chromium over the DevTools protocol), with a token: it asks for the
/// token once, lists the leaking process flagged with verdict `leak` beside
/// two stable ones (a name that is HTML shown as text), with sparklines
/// and a chart on a click; the leak's incident opens its HTML report as a
/// plain link (the session cookie); "Trace…" run from the keyboard traces
/// a stable process and shows the incident it made; nothing is logged as an
/// error, nothing is asked of anything but the agent, and dark follows the
/// preference. Screenshots: agent.png, agent-trace.png, agent-dark.png.
#[test]
fn page_in_a_browser_lists_the_leak_and_traces_on_demand() {
    // (Not the index test's name: each test's agent watches its own.)
    const NAME: &str = "p<q>&r";
    const STEADY: &str = "steady_svc";
    let dir = scratch_dir("agent-page");
    let leak_exe = dir.join(NAME);
    let steady_exe = dir.join(STEADY);
    std::fs::copy(compile_c("agent_mix"), &leak_exe).unwrap();
    std::fs::copy(compile_c("agent_mix"), &steady_exe).unwrap();
    let steady = [
        Workload::spawn_ready(&steady_exe, &["steady"]),
        Workload::spawn_ready(&steady_exe, &["steady"]),
    ];
    let leak = Workload::spawn_ready(&leak_exe, &["leak", &LEAK_KIB_PER_SEC.to_string()]);
    let addr: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();
    let mut agent = start_agent(
        addr,
        &dir.join("reports"),
        &[
            &QUICK[..],
            &["--token", TOKEN, "--comm", NAME, "--comm", STEADY],
        ]
        .concat(),
    );
    wait_healthy(&mut agent, addr);

    // The page's files need no token and hold no data; its state does.
    let shell = http::get(addr, "/", None);
    assert_eq!(shell.status, 200);
    let csp = shell.header("content-security-policy").unwrap_or("");
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains("connect-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe"),
        "{csp}"
    );
    assert!(!shell.text().contains(STEADY), "{}", shell.text());
    assert_eq!(http::get(addr, "/ui/agent.js", None).status, 200);
    assert_eq!(http::get(addr, "/api/state", None).status, 401);
    let r = http::request(addr, "POST", "/api/session", None).unwrap();
    assert_eq!(r.status, 401, "a session without the token");

    let mut browser = Browser::launch(1400, 1000);
    let home = format!("http://{addr}/");
    browser.visit(&home);
    // Asked for the token once.
    browser.wait_for("document.getElementById('token') !== null", secs(30));
    browser.eval("document.getElementById('token').focus()");
    browser.type_text(TOKEN);
    browser.press("Enter", 13);
    browser.wait_for("document.body.dataset.ready === '1'", secs(30));

    // The leak flagged with verdict leak; the two stable processes beside it.
    let leak_pid = leak.pid();
    let deadline = Instant::now() + secs(60);
    loop {
        let row = page_row(&mut browser, leak_pid);
        let steady_rows: Vec<Value> = steady
            .iter()
            .map(|w| page_row(&mut browser, w.pid()))
            .collect();
        let incidents = browser
            .eval("document.querySelectorAll('#incident-table tbody tr').length")
            .as_u64()
            .unwrap_or(0);
        let done = row["verdict"] == "leak"
            && row["flagged"] == true
            && steady_rows
                .iter()
                .all(|r| r["verdict"] == "stable" && r["flagged"] == false)
            && incidents >= 1;
        if done {
            assert_eq!(row["name"], NAME, "the name is shown as text: {row}");
            assert_eq!(row["lines"], 2, "resident and anonymous sparklines: {row}");
            break;
        }
        assert!(agent.is_running(), "agent exited\n{}", agent.snapshot());
        assert!(
            Instant::now() < deadline,
            "the page never showed the leak flagged beside two stable processes and an \
             incident: leak {row}, stable {steady_rows:?}, {incidents} incidents\n{}",
            agent.snapshot()
        );
        browser.eval("new Promise(r => setTimeout(() => r(true), 500))");
    }
    // Flagged first.
    let first = browser.eval("document.querySelector('#process-table tbody tr').dataset.pid");
    assert_eq!(first, leak_pid.to_string());
    // Its chart, from the keyboard (the page keeps the focus on the control
    // that had it when it redraws; a mouse click could fall between the
    // press and the release of a redraw).
    browser.enter_on(&format!("button[data-key=\"open-{leak_pid}\"]"));
    browser.wait_for(
        "document.querySelector('#process-chart canvas') !== null",
        secs(10),
    );
    let legend = browser.eval(
        "Array.from(document.querySelectorAll('#process-chart .u-legend .u-label')).map(e => e.textContent)",
    );
    assert_eq!(legend, serde_json::json!(["time", "resident", "anonymous"]));
    let shots = crate::outputs::html::screenshot_dir();
    browser.screenshot(&shots.join("agent.png"));

    // The leak's incident, from the incident table.
    let incident = browser.eval(
        "Array.from(document.querySelectorAll('#incident-table tbody tr'))\
         .map(tr => [tr.cells[3].innerText, tr.cells[7].innerText, tr.querySelector('a').getAttribute('href')])",
    );
    let leak_incident = incident
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i[0] == NAME)
        .unwrap_or_else(|| panic!("no incident of the leak: {incident}"))
        .clone();
    assert!(
        leak_incident[1]
            .as_str()
            .unwrap()
            .starts_with("append_audit_record"),
        "{leak_incident}"
    );
    let files = browser
        .eval("document.querySelector('#incident-table tbody tr td.files').innerText.trim()");
    assert_eq!(files, "text json svg pprof");

    // "Trace…" a stable process, from the keyboard.
    let target = steady[0].pid();
    browser.enter_on(&format!("button[data-key=\"trace-{target}\"]"));
    browser.wait_for(
        "document.activeElement && document.activeElement.id === 'trace-start'",
        secs(10),
    );
    let form = browser.eval("document.getElementById('trace-form').innerText");
    assert!(
        form.as_str()
            .unwrap()
            .starts_with(&format!("Trace pid {target} ({STEADY}) for")),
        "{form}"
    );
    browser.press("Enter", 13);
    browser.wait_for(
        "document.getElementById('trace-progress') !== null",
        secs(10),
    );
    browser.wait_for("document.getElementById('trace-done') !== null || document.getElementById('trace-error') !== null", secs(90));
    let focused = browser.eval("document.activeElement.id");
    assert_eq!(focused, "trace-report", "the focus goes to the result");
    let done = browser.eval("document.getElementById('trace-result').innerText");
    let done = done.as_str().unwrap().to_string();
    assert!(
        done.starts_with(&format!("Traced pid {target} ({STEADY}): window ended;")),
        "{done}"
    );
    let link = browser
        .eval("document.getElementById('trace-report').getAttribute('href')")
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        link.starts_with("/reports/") && link.ends_with("?format=html"),
        "{link}"
    );
    // The page refreshed: the new incident is listed.
    browser.wait_for(
        &format!(
            "Array.from(document.querySelectorAll('#incident-table a')).some(a => a.getAttribute('href') === {})",
            serde_json::to_string(&link).unwrap()
        ),
        secs(10),
    );
    browser.screenshot(&shots.join("agent-trace.png"));
    browser.color_scheme("dark");
    browser.wait_for(
        "getComputedStyle(document.body).backgroundColor === 'rgb(21, 23, 26)'",
        secs(10),
    );
    browser.screenshot(&shots.join("agent-dark.png"));
    browser.color_scheme("light");

    // The reports open as plain links: the session cookie, no token in the
    // URL. A page loaded again after its cookie is gone (the agent
    // restarted, it expired) gets a new one with the token it keeps.
    browser.call("Network.clearBrowserCookies", serde_json::json!({}));
    browser.visit(&home);
    browser.wait_for("document.body.dataset.ready === '1'", secs(30));
    let leak_report = leak_incident[2].as_str().unwrap().to_string();
    for (report, comm, pid) in [(&leak_report, NAME, leak_pid), (&link, STEADY, target)] {
        browser.navigate(&format!("http://{addr}{report}"));
        let title = browser.eval("document.title");
        assert_eq!(title, format!("memtrace: {comm} ({pid})"), "{report}");
        if comm == NAME {
            let first = browser.eval("document.querySelector('#stack-table tbody tr').innerText");
            assert!(
                first.as_str().unwrap_or("").contains("append_audit_record"),
                "{report}: {first}"
            );
        }
    }

    let errors = browser.console_errors();
    assert!(errors.is_empty(), "the pages logged {errors:#?}");
    let elsewhere: Vec<String> = browser
        .requests()
        .into_iter()
        .filter(|url| !url.starts_with(&home))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "requests beyond the agent: {elsewhere:?}"
    );
    let with_token: Vec<String> = browser
        .requests()
        .into_iter()
        .filter(|url| url.contains(TOKEN))
        .collect();
    assert!(with_token.is_empty(), "the token in a URL: {with_token:?}");
    drop(browser);
    stop(agent).assert_success();
    drop(leak);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `Anonymous:` bytes of `pid`'s executable file mappings (/proc/PID/smaps):
/// text pages that breakpoints copied.
fn copied_text(pid: u32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut text = false;
    let mut kib = 0;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [first, perms, _, _, inode, ..] if !first.ends_with(':') => {
                text = perms.contains('x') && *inode != "0";
            }
            ["Anonymous:", n, "kB"] if text => kib += n.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    kib * 1024
}

/// A process the agent traces keeps the anonymous memory it had. While a
/// trace's probes are in place the kernel counts the text pages their
/// breakpoints copied (glibc's allocator functions span three: 12 KiB) as
/// the process's anonymous memory; the agent leaves them out, so an idle
/// process of ~100 KiB does not read `growing` because it was traced.
#[test]
fn a_traced_process_is_not_grown_by_its_probes() {
    let dir = scratch_dir("agent-probed");
    const NAME: &str = "probed_idle";
    let exe = dir.join(NAME);
    std::fs::copy(compile_c("agent_mix"), &exe).unwrap();
    let idle = Workload::spawn_ready(&exe, &["idle"]);
    let pid = idle.pid();
    let reports = dir.join("reports");
    let addr: SocketAddr = format!("127.0.0.1:{}", http::free_port()).parse().unwrap();
    let mut agent = start_agent(addr, &reports, &[&QUICK[..], &["--comm", NAME]].concat());
    wait_healthy(&mut agent, addr);
    let anon = |m: &str| process_metric(m, "memtrace_process_anon_resident_bytes", pid);
    wait_metrics(&mut agent, addr, "the idle process watched", |m| {
        anon(m).is_some()
    });
    let before = anon(&http::get(addr, "/metrics", None).text()).unwrap();
    assert_eq!(copied_text(pid), 0, "no copied text before the trace");

    let path = format!("/trace?pid={pid}&duration=10s&format=text");
    let on_demand = std::thread::spawn(move || http::request(addr, "POST", &path, None));
    let deadline = Instant::now() + secs(30);
    while copied_text(pid) == 0 {
        assert!(Instant::now() < deadline, "no text page copied in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Three scans with the probes in place, then a look while they still
    // are (the trace holds them for 10 s).
    let scans = |m: &str| metric(m, "memtrace_agent_scans_total").unwrap_or(0.0);
    let from = scans(&http::get(addr, "/metrics", None).text());
    wait_metrics(&mut agent, addr, "three scans", |m| scans(m) >= from + 3.0);
    let state = json(&http::get(addr, "/api/state", None));
    let copied = copied_text(pid);
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    let pages: Vec<u64> = statm
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    let raw_anon = (pages[1] - pages[2]) * 4096;
    assert!(
        copied >= 4096 && raw_anon == before as u64 + copied,
        "the probes' copies ({copied} B) are in the kernel's figure ({raw_anon} B, {before} B \
         before the trace)"
    );
    let row = state["processes"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["pid"] == pid))
        .unwrap_or_else(|| panic!("/api/state lacks pid {pid}: {state:#}"));
    let series: Vec<f64> = row["series"]["anon"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        row["anon_bytes"] == before as u64
            && series.iter().all(|&a| a == before)
            && row["verdict"] == "stable",
        "while traced, the agent reads {row:#}; before the trace {before} B"
    );
    let answer = on_demand.join().unwrap().expect("an answer to POST /trace");
    assert_eq!(answer.status, 200, "{}", answer.text());
    stop(agent);
}

//! Node processes' JavaScript heaps, sampled by V8 through the inspector
//! memtrace opens with SIGUSR1: leak patterns of HTTP servers under load
//! from another process (an unbounded Map cache, a listener added per
//! request, a timer closure keeping an array: `leak` at the request
//! handler's line; a bounded cache: `plateau`; a server that keeps
//! nothing: no leak); V8's own heap figures as the anchor; the process
//! left running with its inspector closed; `-- node`, `--comm`, a network
//! namespace of its own, the processes refused in one line, `--no-runtime-attach`,
//! and another client of the inspector reported; `--node-heap-diff` naming
//! the Map that grew and the variable holding it.

use std::net::TcpStream;
use std::path::PathBuf;

use memtrace_integration::{
    default_inspector_port, listening_ports, marked_line, node_workload, secs, trace_pid,
    NodeServer, Report, StackExt, Tracer, Workload, CMD_TIMEOUT, NODE,
};
use memtrace_report::{Language, NodeReport, StackKind, StackReport, Verdict};

/// Requests a second the leak patterns are loaded with (each keeps ~4 KiB:
/// ~37 of V8's samples a second at its default 32 KiB; a leak needs some
/// 150 in its window to stand clear of the sampling noise).
const RATE: u32 = 300;

/// memtrace's options for these runs (JSON on stdout).
fn options(duration: &str) -> Vec<&str> {
    vec![
        "--format",
        "json",
        "--top",
        "100",
        "--interval",
        "500ms",
        "--duration",
        duration,
    ]
}

/// Traces `server` under load for `duration`; returns the report, with the
/// server still running.
fn trace_loaded(server: &NodeServer, duration: &str, extra: &[&str]) -> Report {
    let mut args = options(duration);
    args.extend_from_slice(extra);
    trace_loaded_with(server, &args)
}

/// [`trace_loaded`] with the whole argument list given.
fn trace_loaded_with(server: &NodeServer, args: &[&str]) -> Report {
    let mut load = server.load(RATE, None);
    let tracer = trace_pid(server.pid(), args);
    let report = tracer.finish(CMD_TIMEOUT).report();
    assert!(
        load.try_wait().is_none(),
        "the load stopped before the trace's end\n{}",
        load.output()
    );
    report
}

/// The target's Node section.
#[track_caller]
fn node_of(report: &Report) -> &NodeReport {
    report.targets[0]
        .node
        .as_ref()
        .unwrap_or_else(|| panic!("no node section\n{}", report.describe()))
}

/// The js-heap stacks, most outstanding first.
fn js_stacks(report: &Report) -> Vec<&StackReport> {
    let mut js: Vec<&StackReport> = report
        .stacks
        .iter()
        .filter(|s| s.kind == StackKind::JsHeap)
        .collect();
    js.sort_by_key(|s| std::cmp::Reverse(s.outstanding_bytes));
    js
}

/// Asserts that the js-heap stack holding the most is `function` of
/// workload `name` at its marked line (`// MARKER: function`), with
/// `verdict`; returns it.
#[track_caller]
fn assert_top_at<'a>(
    report: &'a Report,
    name: &str,
    marker: &str,
    verdict: Verdict,
) -> &'a StackReport {
    let script = node_workload(name);
    let line = marked_line(&script, &format!("// {marker}: handleRequest"));
    let js = js_stacks(report);
    let top = js
        .first()
        .unwrap_or_else(|| panic!("{name}: no js-heap stack\n{}", report.describe()));
    let f = &top.frames[0];
    let at = (f.function.as_deref(), f.file.as_deref(), f.line, f.language);
    assert_eq!(
        at,
        (
            Some("handleRequest"),
            script.to_str(),
            Some(line),
            Some(Language::Javascript)
        ),
        "{name}: the top js-heap stack is not at handleRequest ({}:{line})\n{}\n{:?}",
        script.display(),
        js.iter()
            .take(5)
            .map(|s| format!("{}\n  {}", s.summary(), s.series_text()))
            .collect::<Vec<_>>()
            .join("\n"),
        report.targets[0].node
    );
    assert_eq!(
        top.verdict,
        verdict,
        "{name}: {}\n{}\n{}",
        top.summary(),
        top.evidence(),
        top.series_text()
    );
    top
}

/// Asserts that the server runs on after memtrace, listening where it
/// serves and nowhere else (its inspector closed), and that the report
/// says memtrace closed it after reading its profile 10 times or more.
#[track_caller]
fn assert_left_as_found(server: &NodeServer, report: &Report) {
    assert_closed_and_running(server, report);
    let node = node_of(report);
    assert!(node.reads >= 10, "{node:?}");
}

/// Asserts that the server runs on after memtrace, its inspector closed.
#[track_caller]
fn assert_closed_and_running(server: &NodeServer, report: &Report) {
    let pid = server.pid();
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        state
            .split(") ")
            .nth(1)
            .is_some_and(|s| !s.starts_with('Z')),
        "pid {pid} did not run on after memtrace: {state:?}"
    );
    assert_eq!(
        listening_ports(pid),
        vec![server.port],
        "pid {pid} should listen only where it serves (its inspector closed)"
    );
    let node = node_of(report);
    assert_eq!(
        (node.inspector.as_str(), node.closed),
        ("read", true),
        "{node:?}"
    );
    assert!(node.other_connections.is_empty(), "{node:?}");
}

#[test]
fn map_cache_leaks_at_its_handler() {
    let server = NodeServer::start("map_cache", &["--inspect-port=0"]);
    let report = trace_loaded(&server, "8s", &[]);
    assert_top_at(&report, "map_cache", "leak", Verdict::Leak);
    assert_left_as_found(&server, &report);
}

#[test]
fn listeners_added_per_request_leak_at_their_handler() {
    let server = NodeServer::start("listeners", &["--inspect-port=0"]);
    let report = trace_loaded(&server, "8s", &[]);
    assert_top_at(&report, "listeners", "leak", Verdict::Leak);
    assert_left_as_found(&server, &report);
}

#[test]
fn timer_closures_leak_at_their_handler() {
    let server = NodeServer::start("timer_closure", &["--inspect-port=0"]);
    let report = trace_loaded(&server, "8s", &[]);
    assert_top_at(&report, "timer_closure", "leak", Verdict::Leak);
    // The timers themselves: Node's Timeout objects, made by setTimeout
    // under the handler (~100 bytes a request: a few of V8's samples).
    let timers = js_stacks(&report)
        .into_iter()
        .find(|s| s.functions().starts_with(&["setTimeout", "handleRequest"]))
        .unwrap_or_else(|| panic!("no setTimeout stack\n{}", report.describe()));
    assert!(timers.outstanding_bytes > 0, "{}", timers.summary());
    assert_left_as_found(&server, &report);
}

#[test]
fn bounded_cache_is_a_plateau_at_its_handler() {
    let server = NodeServer::start("lru_cache", &["--inspect-port=0"]);
    // (By outstanding bytes: by growth, a plateau ranks below a hundred
    // native stacks that grew by a few bytes.)
    let report = trace_loaded(&server, "12s", &["--sort", "outstanding"]);
    assert_top_at(&report, "lru_cache", "plateau", Verdict::Plateau);
    assert_left_as_found(&server, &report);
}

#[test]
fn server_that_keeps_nothing_shows_no_leak() {
    let server = NodeServer::start("stable_server", &["--inspect-port=0"]);
    // Without --top: the JSON then holds every stack holding memory, so a
    // growing JavaScript stack cannot fall past the cut behind thousands
    // of native ones (sampled stacks that hold nothing do).
    let mut args = options("8s");
    let top = args.iter().position(|a| *a == "--top").unwrap();
    args.drain(top..top + 2);
    let report = trace_loaded_with(&server, &args);
    // The heap must have been read, over and over (not a vacuous pass).
    // Whether any sample is live at a read is not asserted: a server that
    // keeps nothing holds one only when a read falls before a collection
    // (9 to 12 in 8 s here; one CI run saw none).
    assert_left_as_found(&server, &report);
    let js = js_stacks(&report);
    let growing: Vec<String> = js
        .iter()
        .filter(|s| matches!(s.verdict, Verdict::Leak | Verdict::Growing))
        .map(|s| s.summary())
        .collect();
    assert!(growing.is_empty(), "{}", growing.join("\n"));
}

/// What memtrace reports for the leaking handler against V8's own figure:
/// used_heap_size after a full collection, before and after a fixed number
/// of requests, all made while memtrace samples (after a warm-up, whose
/// code V8 compiles: code is heap too, but no stack's).
#[test]
fn heap_growth_matches_v8s_own_figures() {
    const REQUESTS: u32 = 4000;
    let mut server = NodeServer::start("map_cache", &["--inspect-port=0"]);
    server
        .load(RATE * 2, Some(REQUESTS / 2))
        .expect_line("done", secs(60));
    let mut tracer = Tracer::attach(&[server.pid()], &options("60s"));
    tracer.wait_line("Node's inspector opened", secs(30));
    let before = server.used_heap();
    let mut load = server.load(RATE * 2, Some(REQUESTS));
    load.expect_line("done", secs(60));
    let after = server.used_heap();
    let report = tracer.interrupt(CMD_TIMEOUT).report();
    let grown: u64 = js_stacks(&report)
        .iter()
        .filter(|s| s.functions().contains(&"handleRequest"))
        .map(|s| s.outstanding_bytes)
        .sum();
    let v8 = after.saturating_sub(before);
    memtrace_integration::assert_within(
        "js-heap bytes under handleRequest against V8's used_heap_size growth",
        grown,
        v8,
        25.0,
        &format!(
            "V8: {before} -> {after} B over {REQUESTS} requests\n{}",
            report.describe()
        ),
    );
    eprintln!(
        "map_cache, {REQUESTS} requests: memtrace {grown} B under handleRequest, V8 +{v8} B \
         ({:+.1} %)",
        (grown as f64 / v8 as f64 - 1.0) * 100.0
    );
}

/// `memtrace -- node app.js`: the inspector opens on its default port
/// once Node catches SIGUSR1, and is closed before memtrace stops it.
#[test]
fn command_mode_samples_from_the_start() {
    let _port = default_inspector_port();
    let dir = memtrace_integration::scratch_dir("node-cmd");
    let out = dir.join("report.json");
    let script = node_workload("map_cache");
    // (Sampling starts later than with --pid: once Node is up and catches
    // SIGUSR1.)
    let mut args: Vec<String> = options("12s").iter().map(|s| s.to_string()).collect();
    args.retain(|a| a != "--format" && a != "json");
    args.extend(["-o".into(), out.to_str().unwrap().into(), "--".into()]);
    args.extend([NODE.into(), script.to_str().unwrap().into()]);
    let os_args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    let mut tracer = Tracer::spawn(&os_args);
    tracer.wait_line("Node's inspector opened at 127.0.0.1:9229", secs(30));
    tracer.wait_output("listening ", secs(10), "the server printed no port");
    let port: u16 = tracer
        .snapshot()
        .lines()
        .find_map(|l| l.strip_prefix("listening "))
        .and_then(|p| p.trim().parse().ok())
        .expect("listening PORT");
    let load = memtrace_integration::NodeServer::load_on(port, RATE, None);
    let run = tracer.finish(CMD_TIMEOUT);
    drop(load);
    run.assert_success();
    let report = run.report_from(&std::fs::read_to_string(&out).unwrap());
    assert_top_at(&report, "map_cache", "leak", Verdict::Leak);
    let node = node_of(&report);
    assert_eq!(node.address.as_deref(), Some("127.0.0.1:9229"), "{node:?}");
    assert!(node.closed, "{node:?}");
}

/// `--comm`: a Node process selected by its name is sampled too (Node
/// run through a link named `node-comm`, a name no other test uses).
#[test]
fn comm_mode_samples_node_by_name() {
    let link = memtrace_integration::scratch_dir("node-comm").join("node-comm");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(NODE, &link).unwrap();
    let server = NodeServer::start_as(&link, "map_cache", &["--inspect-port=0"]);
    let _load = server.load(RATE, None);
    let mut args = options("8s");
    args.extend(["--comm", "node-comm"]);
    let os_args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    let run = Tracer::spawn(&os_args).finish(CMD_TIMEOUT);
    run.assert_success();
    let report = run.report();
    assert_top_at(&report, "map_cache", "leak", Verdict::Leak);
    assert_left_as_found(&server, &report);
}

/// A Node in a network namespace of its own (a container's): memtrace
/// connects to its loopback from inside that namespace.
#[test]
fn node_in_its_own_network_namespace() {
    let script = node_workload("map_cache");
    let shell = format!(
        "ip link set lo up && exec {NODE} --inspect-port=0 {}",
        script.display()
    );
    let mut process = Workload::spawn_ready(
        &PathBuf::from("/usr/bin/unshare"),
        &["-n", "sh", "-c", &shell],
    );
    let port: u16 = process
        .next_line(secs(10))
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .expect("listening PORT");
    let netns = format!("--net=/proc/{}/ns/net", process.pid());
    let load_script = node_workload("load");
    let (port_arg, rate_arg) = (port.to_string(), RATE.to_string());
    let _load = Workload::spawn_ready(
        &PathBuf::from("/usr/bin/nsenter"),
        &[
            netns.as_str(),
            NODE,
            load_script.to_str().unwrap(),
            &port_arg,
            &rate_arg,
        ],
    );
    let server = NodeServer { process, port };
    let tracer = trace_pid(server.pid(), &options("8s"));
    let report = tracer.finish(CMD_TIMEOUT).report();
    assert_top_at(&report, "map_cache", "leak", Verdict::Leak);
    assert_left_as_found(&server, &report);
}

/// Processes whose inspector memtrace does not open: each said in one
/// line, traced natively, and left running. (Node 20 has no
/// `--disable-sigusr1`; a program named `node` that does not catch SIGUSR1
/// stands for it: the signal would kill it.)
#[test]
fn refused_inspectors_are_said_and_left_alone() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let fake = memtrace_integration::scratch_dir("node-fake").join("node");
    std::fs::copy("/usr/bin/sleep", &fake).unwrap();
    let mut deaf = Workload::spawn(&fake, &["600"]);
    let open = NodeServer::start("stable_server", &["--inspect=127.0.0.1:0"]);
    let port_arg = format!("--inspect-port={taken_port}");
    let blocked = NodeServer::start("stable_server", &[&port_arg]);
    let open_ports = listening_ports(open.pid());
    let pids = [deaf.pid(), open.pid(), blocked.pid()];
    let tracer = Tracer::attach(&pids, &options("3s"));
    let run = tracer.finish(CMD_TIMEOUT);
    run.assert_success();
    let report = run.report();
    let reasons = [
        "it does not catch SIGUSR1",
        "its inspector is open already (--inspect): memtrace does not share it",
        &format!("its inspector's port {taken_port} is taken in its network namespace"),
    ];
    for (pid, reason) in pids.into_iter().zip(reasons) {
        let line = format!("pid {pid}: Node's JavaScript heap not read: {reason}");
        assert!(
            run.stderr.contains(&line),
            "no {line:?}\n{}",
            run.describe()
        );
        let target = report
            .targets
            .iter()
            .find(|t| t.pid == pid)
            .expect("a target");
        let node = target.node.as_ref().expect("a node section");
        assert_eq!(
            (node.inspector.as_str(), node.reason.as_deref()),
            ("refused", Some(reason)),
            "pid {pid}"
        );
    }
    assert!(report.stacks.iter().all(|s| s.kind != StackKind::JsHeap));
    // Signalled by nobody: they run on, listening as before.
    assert!(
        deaf.try_wait().is_none(),
        "the program that does not catch SIGUSR1 died"
    );
    assert_eq!(listening_ports(open.pid()), open_ports);
    assert_eq!(listening_ports(blocked.pid()), vec![blocked.port]);
    drop(taken);
}

#[test]
fn no_runtime_attach_opens_nothing() {
    let server = NodeServer::start("map_cache", &["--inspect-port=0"]);
    let _load = server.load(RATE, None);
    let mut args = options("2s");
    args.push("--no-runtime-attach");
    let run = trace_pid(server.pid(), &args).finish(CMD_TIMEOUT);
    run.assert_success();
    let report = run.report();
    assert!(report.targets[0].node.is_none(), "{}", run.describe());
    assert!(report.stacks.iter().all(|s| s.kind != StackKind::JsHeap));
    assert_eq!(listening_ports(server.pid()), vec![server.port]);
}

/// Someone else connecting to the inspector while memtrace holds it is
/// reported, on stderr and in the report.
#[test]
fn another_client_of_the_inspector_is_reported() {
    let server = NodeServer::start("stable_server", &["--inspect-port=0"]);
    let mut tracer = Tracer::attach(&[server.pid()], &options("60s"));
    let line = tracer.wait_line("Node's inspector opened at ", secs(30));
    let addr = line
        .split("opened at ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an address");
    let intruder = TcpStream::connect(addr).unwrap();
    let peer = intruder.local_addr().unwrap().to_string();
    tracer.wait_line(&format!("something else ({peer}) connected"), secs(30));
    let report = tracer.interrupt(CMD_TIMEOUT).report();
    let node = node_of(&report);
    assert_eq!(node.other_connections, vec![peer], "{node:?}");
}

/// A run that ends by Ctrl-C still closes the inspector.
#[test]
fn interrupted_run_closes_the_inspector() {
    let server = NodeServer::start("stable_server", &["--inspect-port=0"]);
    let mut tracer = Tracer::attach(&[server.pid()], &options("60s"));
    tracer.wait_line("Node's inspector opened", secs(30));
    let run = tracer.interrupt(CMD_TIMEOUT);
    run.assert_success();
    assert_eq!(
        listening_ports(server.pid()),
        vec![server.port],
        "{}",
        run.describe()
    );
    assert!(node_of(&run.report()).closed);
}

/// `--node-heap-diff`: a snapshot when the inspector opens, another at the
/// end. Between them the server gets exactly 2,000 requests: the Map
/// that keeps their sessions is the object that grew, by 2,000 entries,
/// held by the variable `sessions` of handleRequest's scope, and its
/// retained size grew by what V8's own used_heap_size did.
#[test]
fn heap_diff_names_the_map_and_its_variable() {
    const REQUESTS: u64 = 2000;
    let mut server = NodeServer::start("map_cache", &["--inspect-port=0"]);
    server
        .load(RATE * 2, Some(500))
        .expect_line("done", secs(60));
    let mut args = options("120s");
    args.push("--node-heap-diff");
    let mut tracer = Tracer::attach(&[server.pid()], &args);
    tracer.wait_line("a heap snapshot taken", secs(30));
    let before = server.used_heap();
    server
        .load(RATE * 2, Some(REQUESTS as u32))
        .expect_line("done", secs(60));
    let after = server.used_heap();
    let report = tracer.interrupt(CMD_TIMEOUT).report();
    let node = node_of(&report);
    let diff = node
        .heap_diff
        .as_ref()
        .unwrap_or_else(|| panic!("no heap diff: {node:?}"));
    let ctx = format!("{diff:#?}");
    assert_eq!(
        (diff.state.as_str(), diff.pause_ms.len()),
        ("compared", 2),
        "{ctx}"
    );
    let map = &diff.grown[0];
    let (was, is) = (
        map.entries_before.unwrap_or(0),
        map.entries_after.unwrap_or(0),
    );
    assert_eq!(
        (map.constructor.as_str(), is - was),
        ("Map", REQUESTS),
        "the object that grew most is the Map, by an entry a request\n{ctx}"
    );
    let script = node_workload("map_cache");
    let line = marked_line(&script, "// leak: handleRequest");
    let held = &map.held_by[0];
    assert_eq!(
        (
            held.edge.as_str(),
            held.name.as_str(),
            held.function.as_deref(),
            held.file.as_deref(),
            held.line
        ),
        (
            "context",
            "sessions",
            Some("handleRequest"),
            script.to_str(),
            Some(line)
        ),
        "held by the variable sessions of handleRequest's scope\n{ctx}"
    );
    memtrace_integration::assert_within(
        "the Map's retained growth against V8's used_heap_size growth",
        map.retained_after - map.retained_before,
        after.saturating_sub(before),
        10.0,
        &format!("V8: {before} -> {after} B\n{ctx}"),
    );
    // (Fewer reads: each snapshot holds the loop for a second or two.)
    assert_closed_and_running(&server, &report);
}

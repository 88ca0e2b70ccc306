//! The live view: under a real terminal (a tmux pane) memtrace redraws a
//! table every interval and leaves the final report on the normal screen;
//! with stdout piped it prints one plain line per interval, then the report.
//!
//! Workload: demo_leak (remember_session() leaks 512 bytes per request at
//! ~50 requests/s; cache_insert() fills a 200-entry cache).

use std::process::Command;
use std::time::{Duration, Instant};

use memtrace_integration::{compile_c, memtrace_bin, run_memtrace, secs};

/// Runs `tmux args...`, returning stdout; panics on failure.
fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run tmux {args:?}: {e} (tmux is a test prerequisite)"));
    assert!(
        out.status.success(),
        "tmux {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A detached tmux session running one shell command; killed on drop.
struct Pane {
    name: String,
}

impl Pane {
    fn start(command: &str) -> Pane {
        let name = format!("memtrace-live-{}", std::process::id());
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &name])
            .output();
        tmux(&[
            "new-session",
            "-d",
            "-s",
            &name,
            "-x",
            "140",
            "-y",
            "40",
            command,
        ]);
        Pane { name }
    }

    /// The visible screen (the alternate screen while a program uses it).
    fn screen(&self) -> String {
        tmux(&["capture-pane", "-p", "-t", &self.name])
    }

    /// Polls the screen until `pred` holds; panics after `timeout`.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; the pane shows:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .output();
    }
}

#[test]
fn live_table_on_a_terminal_then_the_report() {
    let demo = compile_c("demo_leak");
    let command = format!(
        "{} --interval 1s --duration 8s -- {} 30; echo memtrace-exit=$?; sleep 120",
        memtrace_bin().display(),
        demo.display()
    );
    let pane = Pane::start(&command);

    // While tracing: the table, with the leak's row naming its function and
    // caller, its verdict (a leak from its fourth interval on) and a
    // sparkline.
    let leak_row = |s: &str| {
        s.lines()
            .any(|l| l.starts_with("leak ") && l.contains("remember_session"))
    };
    let screen = pane.wait_for(
        "the live table calling remember_session a leak",
        secs(30),
        |s| s.contains("VERDICT") && leak_row(s),
    );
    let header = screen
        .lines()
        .find(|l| l.starts_with("VERDICT"))
        .expect("column titles");
    for column in ["BYTES", "BLOCKS", "GROWTH", "SERIES", "STACK"] {
        assert!(header.contains(column), "no {column} column:\n{screen}");
    }
    let row = screen
        .lines()
        .find(|l| l.contains("remember_session ← handle_request"))
        .unwrap_or_else(|| panic!("no row for remember_session ← handle_request:\n{screen}"));
    assert!(
        row.contains("iB/min") && row.contains('+'),
        "remember_session's row should show its growth per minute:\n{screen}"
    );
    assert!(
        row.chars().any(|c| ('▁'..='█').contains(&c)),
        "remember_session's row should have a sparkline:\n{screen}"
    );
    assert!(
        screen.starts_with("memtrace  "),
        "the table is drawn from the top of the screen:\n{screen}"
    );

    // After --duration: the normal screen is back with the final report.
    let screen = pane.wait_for("memtrace to exit", secs(40), |s| {
        s.contains("memtrace-exit=")
    });
    assert!(
        screen.contains("memtrace-exit=0"),
        "memtrace should exit 0:\n{screen}"
    );
    let history = tmux(&["capture-pane", "-p", "-S", "-200", "-t", &pane.name]);
    assert!(
        history.contains("memtrace report:") && history.contains("[leak] "),
        "the final report (with the leak) should be on the normal screen:\n{history}"
    );
    assert!(
        !history.contains("VERDICT"),
        "the live table should not be left on the normal screen:\n{history}"
    );
}

#[test]
fn plain_lines_when_piped() {
    let demo = compile_c("demo_leak");
    let out = run_memtrace(
        &[
            "--interval".as_ref(),
            "1s".as_ref(),
            "--duration".as_ref(),
            "5s".as_ref(),
            "--".as_ref(),
            demo.as_os_str(),
            "30".as_ref(),
        ],
        secs(60),
    );
    out.assert_success();
    let ctx = out.describe();
    // demo_leak prints one line of its own to the shared stdout.
    let report_at = out
        .stdout
        .find("memtrace report:")
        .unwrap_or_else(|| panic!("no final report on stdout\n{ctx}"));
    let lines: Vec<&str> = out.stdout[..report_at]
        .lines()
        .filter(|l| l.contains(" outstanding in "))
        .collect();
    assert!(
        (4..=6).contains(&lines.len()),
        "expected one line per 1 s interval of a 5 s run (4 to 6), got {}\n{ctx}",
        lines.len()
    );
    for l in &lines {
        assert!(
            !l.contains('\x1b'),
            "plain lines have no terminal escapes: {l:?}\n{ctx}"
        );
        assert!(l.contains("; top "), "{l:?}\n{ctx}");
    }
    let last = lines.last().expect("at least one line");
    assert!(
        last.contains("top: remember_session ← handle_request"),
        "by the last interval the leak is the fastest-growing stack: {last:?}\n{ctx}"
    );
}

//! The live view: under a real terminal (a tmux pane) memtrace redraws a
//! table every interval and leaves the final report on the normal screen
//! (with `-o` files, the text report too, and the files named); with
//! stdout piped it prints one plain line per interval on stderr, never on
//! stdout, which `-- CMD` shares: stdout holds the report alone, or nothing
//! with `-o`.
//!
//! Workload: demo_leak (remember_session() leaks 512 bytes per request at
//! ~50 requests/s; cache_insert() fills a 200-entry cache).

use std::process::Command;
use std::time::{Duration, Instant};

use memtrace_integration::{compile_c, memtrace_bin, run_memtrace, scratch_dir, secs};

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
    /// `tag` tells apart the panes of tests running at once.
    fn start(tag: &str, command: &str) -> Pane {
        let name = format!("memtrace-live-{}-{tag}", std::process::id());
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
    let pane = Pane::start("table", &command);

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

/// `memtrace -- CMD > FILE` on a terminal: the table is drawn on stderr's
/// terminal, and FILE, the command's stdout, gets the report alone.
#[test]
fn live_table_on_stderr_when_stdout_is_redirected() {
    let demo = compile_c("demo_leak");
    let dir = scratch_dir("table-on-stderr");
    let file = dir.join("out");
    let command = format!(
        "{} --interval 1s --duration 4s -- {} 30 > {}; echo memtrace-exit=$?; sleep 120",
        memtrace_bin().display(),
        demo.display(),
        file.display()
    );
    let pane = Pane::start("stderr", &command);
    pane.wait_for("the live table on stderr's terminal", secs(30), |s| {
        s.starts_with("memtrace  ") && s.contains("VERDICT")
    });
    let screen = pane.wait_for("memtrace to exit", secs(40), |s| {
        s.contains("memtrace-exit=")
    });
    assert!(
        screen.contains("memtrace-exit=0"),
        "memtrace should exit 0:\n{screen}"
    );
    let out = std::fs::read_to_string(&file).expect("the redirected stdout");
    assert!(
        out.starts_with("memtrace report:") && !out.contains('\x1b') && !out.contains("VERDICT"),
        "the redirected stdout should hold the report alone, no table:\n{out}"
    );
    let _ = std::fs::remove_dir_all(&dir);
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
    // demo_leak writes nothing to stdout: the report is all there is.
    assert!(
        out.stdout.starts_with("memtrace report:"),
        "stdout should hold the final report and nothing before it\n{ctx}"
    );
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("memtrace: "))
        .filter(|l| l.contains(" outstanding in "))
        .collect();
    assert!(
        (4..=6).contains(&lines.len()),
        "expected one stderr line per 1 s interval of a 5 s run (4 to 6), got {}\n{ctx}",
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

/// `memtrace -o r.json -- CMD > out`: stdout is the command's, and nothing
/// of memtrace's reaches it, however many intervals pass; the progress
/// lines are on stderr.
#[test]
fn progress_never_reaches_the_commands_stdout() {
    let demo = compile_c("demo_leak");
    let dir = scratch_dir("progress-stderr");
    let json = dir.join("r.json");
    let out = run_memtrace(
        &[
            "--interval".as_ref(),
            "250ms".as_ref(),
            "-o".as_ref(),
            json.as_os_str(),
            "--".as_ref(),
            demo.as_os_str(),
            "2".as_ref(),
        ],
        secs(60),
    );
    out.assert_success();
    let ctx = out.describe();
    assert_eq!(
        out.stdout, "",
        "demo_leak writes nothing to stdout, and memtrace must not either\n{ctx}"
    );
    let progress = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("memtrace: ") && l.contains(" outstanding in "))
        .count();
    assert!(
        progress >= 4,
        "a 2 s run sampled every 250 ms: its progress lines on stderr ({progress})\n{ctx}"
    );
    let report = out.report_from(&std::fs::read_to_string(&json).expect("r.json"));
    report.stack_of("remember_session");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `-o FILE` on a terminal: the file is written, and the text report is
/// shown all the same, followed by a line naming the file.
#[test]
fn files_on_a_terminal_are_named_after_the_text_report() {
    let leak = compile_c("leak_exit");
    let dir = scratch_dir("terminal-outputs");
    let json = dir.join("leak.json");
    let command = format!(
        "{} --no-live -o {} -- {}; echo memtrace-exit=$?; sleep 120",
        memtrace_bin().display(),
        json.display(),
        leak.display()
    );
    let pane = Pane::start("files", &command);
    let screen = pane.wait_for("memtrace to exit", secs(60), |s| {
        s.contains("memtrace-exit=")
    });
    assert!(
        screen.contains("memtrace-exit=0"),
        "memtrace should exit 0:\n{screen}"
    );
    let history = tmux(&["capture-pane", "-p", "-J", "-S", "-200", "-t", &pane.name]);
    let report_at = history
        .find("memtrace report:")
        .unwrap_or_else(|| panic!("the text report should be on the terminal:\n{history}"));
    let named = format!("memtrace: wrote {} (", json.display());
    let named_at = history
        .find(&named)
        .unwrap_or_else(|| panic!("no line `{named}...` on the terminal:\n{history}"));
    assert!(
        report_at < named_at && history[report_at..named_at].contains("leak_on_exit"),
        "the report (naming leak_on_exit), then the file:\n{history}"
    );
    let text = std::fs::read_to_string(&json).expect("leak.json written");
    assert!(text.contains("leak_on_exit"), "leak.json names the leak");
    let _ = std::fs::remove_dir_all(&dir);
}

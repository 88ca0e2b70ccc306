//! The HTML report in a real browser (headless Chromium over the DevTools
//! protocol): a traced leak's page loads with no console error and no
//! request but its own file, lists the leak first with verdict `leak`,
//! opens a stack's chart on a click (or Enter), filters its table on a
//! click in the icicle graph, follows a dark preference; a 10,000-stack
//! page is drawn in under 2 s; a diff and an OOM kill render. Screenshots
//! go to target/tmp/screenshots.
//!
//! Workloads: demo_leak (`cargo xtask demo`'s request handler: a leak in
//! remember_session, a bounded cache in cache_insert), leak_signal
//! (leak_fixed) for the diff and the large page, oom_hoard for the kill.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use memtrace_integration::{
    browser::{file_url, Browser},
    compile_c, path_str, run_memtrace, scratch_dir, secs, Report, StackExt, Tracer, CMD_TIMEOUT,
    TRACING_TIMEOUT,
};
use serde_json::Value;

use super::{read, traced_leak, two_snapshots};

/// Where the screenshots are kept, to be looked at after a run
/// (target/tmp/screenshots); the agent's page's too.
pub(crate) fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
}

/// The window the pages are drawn in.
const WIDTH: u32 = 1400;
const HEIGHT: u32 = 1000;

/// Opens `page` and checks what every page must hold to: drawn, nothing
/// logged as an error or warning, nothing asked of the network but the
/// file itself. Returns the time it took to draw.
fn open_clean(browser: &mut Browser, page: &Path) -> Duration {
    let took = browser.open(page);
    let errors = browser.console_errors();
    assert!(
        errors.is_empty(),
        "{}: the page logged {errors:#?}",
        page.display()
    );
    let own = file_url(page);
    let others: Vec<String> = browser
        .requests()
        .into_iter()
        .filter(|url| *url != own)
        .collect();
    assert!(
        others.is_empty(),
        "{}: requests besides the file itself: {others:?}",
        page.display()
    );
    took
}

/// The text of every row of the stack table, cell by cell.
fn rows(browser: &mut Browser) -> Vec<Vec<String>> {
    let rows = browser.eval(
        "Array.from(document.querySelectorAll('#stack-table tbody tr'))\
         .map(tr => Array.from(tr.cells).map(td => td.innerText.trim()))",
    );
    serde_json::from_value(rows).unwrap()
}

#[test]
fn html_report_of_a_leak_in_a_browser() {
    let dir = scratch_dir("html");
    let (json, html) = (dir.join("demo.json"), dir.join("demo.html"));
    let exe = compile_c("demo_leak");
    let out = run_memtrace(
        &[
            "--interval",
            "1s",
            "-o",
            path_str(&json),
            "-o",
            path_str(&html),
            "--",
            path_str(&exe),
            "10",
        ],
        CMD_TIMEOUT,
    );
    out.assert_success();
    let report = Report::parse(&read(&json), "demo_leak").unwrap_or_else(|e| panic!("{e}"));
    let ctx = report.describe();
    let leak = &report.stacks[0];
    assert_eq!(
        (leak.function(), leak.verdict),
        (Some("remember_session"), memtrace_report::Verdict::Leak),
        "the report's first stack is the leak\n{ctx}"
    );

    let mut browser = Browser::launch(WIDTH, HEIGHT);
    open_clean(&mut browser, &html);
    let shots = screenshot_dir();
    browser.screenshot(&shots.join("report-list.png"));

    // The table lists every stack of the report, in its order: the leak
    // first, with its badge and its bytes.
    let table = rows(&mut browser);
    assert_eq!(table.len(), report.stacks.len(), "{table:?}\n{ctx}");
    for (row, stack) in table.iter().zip(&report.stacks) {
        let function = stack.function().unwrap();
        assert!(
            row[0] == format!("{:?}", stack.verdict).to_lowercase() && row[6].starts_with(function),
            "row {row:?} should be {function}'s, verdict {:?}\n{ctx}",
            stack.verdict
        );
    }
    assert_eq!(table[0][0], "leak");
    assert_eq!(
        table[0][1],
        memtrace_report::units::bytes(leak.outstanding_bytes),
        "{ctx}"
    );

    // A click on the leak's row opens it: its chart with a point per
    // sample, its fitted growth line, its frames.
    browser.click("#stack-table tbody tr");
    browser.wait_for(
        "!!document.querySelector('#stack-chart .uplot canvas')",
        secs(10),
    );
    let detail = browser.eval(
        "({title: document.querySelector('#detail h2').innerText, \
           points: document.querySelector('#stack-chart').dataset.points, \
           legend: Array.from(document.querySelectorAll('#stack-chart .u-legend .u-label')).map(l => l.innerText), \
           frames: Array.from(document.querySelectorAll('#detail ol li code')).map(c => c.innerText)})",
    );
    assert!(
        detail["title"]
            .as_str()
            .unwrap()
            .ends_with("remember_session"),
        "{detail}"
    );
    assert_eq!(detail["points"], leak.series.len().to_string(), "{detail}");
    let legend = detail["legend"].to_string();
    assert!(
        legend.contains("outstanding") && legend.contains("fitted"),
        "the chart draws the series and its fitted line: {legend}"
    );
    let names: Vec<String> = serde_json::from_value(detail["frames"].clone()).unwrap();
    assert_eq!(
        names,
        leak.functions(),
        "every frame of the stack, in order"
    );
    browser.screenshot(&shots.join("report-stack.png"));

    // The keyboard does it too: Enter on the second row opens that stack.
    browser.enter_on("#stack-table tbody tr:nth-child(2)");
    let second = report.stacks[1].function().unwrap();
    browser.wait_for(
        &format!(
            "document.querySelector('#detail h2').innerText.endsWith({})",
            serde_json::to_string(second).unwrap()
        ),
        secs(10),
    );

    // A click on cache_insert in the icicle graph keeps the stacks through
    // it: the cache's only.
    let through: Vec<&str> = report
        .stacks
        .iter()
        .filter(|s| s.functions().contains(&"cache_insert"))
        .map(|s| s.function().unwrap())
        .collect();
    assert_eq!(through, ["cache_insert"], "{ctx}");
    browser.click("#icicle button[data-name='cache_insert']");
    browser.wait_for(
        "document.querySelectorAll('#stack-table tbody tr').length === 1",
        secs(10),
    );
    let filtered = rows(&mut browser);
    assert!(filtered[0][6].starts_with("cache_insert"), "{filtered:?}");
    let status = browser.eval("document.getElementById('stack-count').innerText");
    assert_eq!(
        status,
        Value::from(format!("1 of {} stacks", report.stacks.len()))
    );
    browser.screenshot(&shots.join("report-flame.png"));

    // Sorting by a column: outstanding bytes, largest first.
    browser.click("#icicle button[data-name='all']");
    browser.click("th button[data-key='outstanding']");
    let mut sorted: Vec<_> = report.stacks.iter().collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.outstanding_bytes));
    let by_size: Vec<&str> = sorted.iter().map(|s| s.function().unwrap()).collect();
    browser.wait_for(
        &format!(
            "document.querySelectorAll('#stack-table tbody tr').length === {}",
            report.stacks.len()
        ),
        secs(10),
    );
    let table = rows(&mut browser);
    let shown: Vec<&str> = table
        .iter()
        .map(|r| r[6].split(' ').next().unwrap())
        .collect();
    assert_eq!(shown, by_size);

    // The text filter (a file and line match) and the verdict filter.
    let cache = &report.stack_of("cache_insert").frames[0];
    let at = format!("demo_leak.c:{}", cache.line.expect("cache_insert's line"));
    browser.eval(&format!(
        "(() => {{ const s = document.querySelector('#stacks input[type=search]'); \
         s.value = '{at}'; s.dispatchEvent(new Event('input')); }})()"
    ));
    let matched = rows(&mut browser);
    assert!(
        matched.len() == 1 && matched[0][6].starts_with("cache_insert"),
        "{at} is in cache_insert only: {matched:?}"
    );
    browser.eval(
        "(() => { const s = document.querySelector('#stacks input[type=search]'); \
         s.value = ''; s.dispatchEvent(new Event('input')); \
         const v = document.querySelector('#stacks select'); v.value = 'leak'; \
         v.dispatchEvent(new Event('change')); })()",
    );
    let leaks = rows(&mut browser);
    let want = report
        .stacks
        .iter()
        .filter(|s| s.verdict == memtrace_report::Verdict::Leak)
        .count();
    assert!(
        leaks.len() == want && leaks.iter().all(|r| r[0] == "leak"),
        "the leak filter keeps the {want} leak stacks: {leaks:?}"
    );

    // A reader who prefers dark gets a dark page.
    browser.color_scheme("dark");
    browser.wait_for("document.body.dataset.scheme === 'dark'", secs(10));
    let background = browser.eval("getComputedStyle(document.body).backgroundColor");
    assert_eq!(background, "rgb(21, 23, 26)");
    browser.screenshot(&shots.join("report-dark.png"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The stacks of the large page, and how many distinct functions each
/// level of their call tree has (10 x 10 x 10 x 10 = 10,000 leaves).
const LARGE_STACKS: usize = 10_000;

#[test]
fn a_ten_thousand_stack_page_is_drawn_in_under_two_seconds() {
    let dir = scratch_dir("html-large");
    let json = dir.join("small.json");
    traced_leak(20, &["-o", path_str(&json)]);
    // The traced leak's stack, made 10,000 different ones: four levels of
    // ten handlers each between its allocating frame and its callers.
    let mut report: Value = serde_json::from_str(&read(&json)).unwrap();
    let stack = report["stacks"][0].clone();
    let frames = stack["frames"].as_array().unwrap().clone();
    let mut stacks = Vec::with_capacity(LARGE_STACKS);
    for i in 0..LARGE_STACKS {
        let mut s = stack.clone();
        let mut f = vec![frames[0].clone()];
        for level in 0..4 {
            let digit = i / 10usize.pow(level) % 10;
            let mut frame = frames[0].clone();
            frame["function"] = Value::from(format!("handler_l{level}_{digit}"));
            frame["address"] = Value::from(format!(
                "0x{:x}",
                0x40_0000 + level as usize * 0x100 + digit
            ));
            f.push(frame);
        }
        f.extend(frames[1..].iter().cloned());
        s["frames"] = Value::from(f);
        s["outstanding_bytes"] = Value::from(4096 * (1 + i as u64 % 97));
        stacks.push(s);
    }
    report["stacks"] = Value::from(stacks);
    let big = dir.join("large.json");
    std::fs::write(&big, serde_json::to_vec(&report).unwrap()).unwrap();
    let html = dir.join("large.html");
    let out = run_memtrace(&["report", path_str(&big), "-o", path_str(&html)], secs(60));
    out.assert_success();
    let size = std::fs::metadata(&html).unwrap().len();
    let json_size = std::fs::metadata(&big).unwrap().len();
    assert!(
        size < json_size,
        "the page ({size} bytes) names each frame once: smaller than the JSON ({json_size})"
    );

    let mut browser = Browser::launch(WIDTH, HEIGHT);
    // The page's own cost: the best of three loads (other tests share the
    // two CPUs).
    let mut took = open_clean(&mut browser, &html);
    for _ in 0..2 {
        took = took.min(browser.open(&html));
    }
    eprintln!(
        "{LARGE_STACKS} stacks: {size} bytes of HTML ({json_size} of JSON), drawn in {took:?}"
    );
    let timings = browser.eval("window.memtraceTimings");
    assert!(
        took < secs(2),
        "drawn in {took:?}, not under 2 s (ms since the navigation's start: {timings})"
    );
    let status = browser.eval("document.getElementById('stack-count').innerText");
    assert_eq!(status, Value::from("10,000 stacks"));
    assert_eq!(
        rows(&mut browser).len(),
        200,
        "the first 200 rows are drawn"
    );
    browser.click("#stacks > button");
    browser.wait_for(
        "document.querySelectorAll('#stack-table tbody tr').length === 400",
        secs(10),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn diff_page_shows_what_grew() {
    let (dir, before, after) = two_snapshots("html-diff");
    let html = dir.join("diff.html");
    let out = run_memtrace(
        &[
            "diff",
            path_str(&before),
            path_str(&after),
            "-o",
            path_str(&html),
        ],
        secs(60),
    );
    out.assert_success();
    let mut browser = Browser::launch(WIDTH, HEIGHT);
    open_clean(&mut browser, &html);
    // leak_fixed grew by 40 blocks of 4096 bytes.
    let grew = browser.eval(
        "Array.from(document.querySelectorAll('#diff-grew tbody tr'))\
         .map(tr => Array.from(tr.cells).map(td => td.innerText.trim()))",
    );
    let grew: Vec<Vec<String>> = serde_json::from_value(grew).unwrap();
    let row = grew
        .iter()
        .find(|r| r[2].contains("leak_fixed"))
        .unwrap_or_else(|| panic!("no leak_fixed among what grew: {grew:?}"));
    assert_eq!(row[0], "+160.0 KiB", "{row:?}");
    assert_eq!(row[1], "80.0 KiB → 240.0 KiB", "{row:?}");
    // Its frames are all shown (wrapped in the narrow column, not cut).
    let cut = browser.eval(
        "Array.from(document.querySelectorAll('#diff-grew td.frames'))\
         .filter(td => td.scrollWidth > td.clientWidth).length",
    );
    assert_eq!(cut, 0, "frames cut short in the grew column");
    for column in ["#diff-new", "#diff-gone"] {
        let present = browser.eval(&format!("!!document.querySelector('{column}')"));
        assert_eq!(present, Value::Bool(true), "{column}");
    }
    browser.screenshot(&screenshot_dir().join("diff.png"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn oom_page_opens_with_the_kill() {
    let (mut hoarder, _cgroup) = crate::oom::hoarder_in_cgroup("html-oom");
    let pid = hoarder.pid();
    let dir = scratch_dir("html-oom");
    let html = dir.join("oom.html");
    let mut tracer = Tracer::attach(&[pid], &["--no-live", "-o", path_str(&html)]);
    tracer.wait_tracing(TRACING_TIMEOUT);
    hoarder.signal(libc::SIGUSR1);
    hoarder.wait_exit(secs(60));
    tracer.finish(secs(60)).assert_success();

    let mut browser = Browser::launch(WIDTH, HEIGHT);
    open_clean(&mut browser, &html);
    let banners =
        browser.eval("Array.from(document.querySelectorAll('.banner')).map(b => b.innerText)");
    let banners: Vec<String> = serde_json::from_value(banners).unwrap();
    let ours = banners
        .iter()
        .find(|b| b.contains(&format!("oom_hoard ({pid})")))
        .unwrap_or_else(|| panic!("no banner for the kill of {pid}: {banners:?}"));
    assert!(ours.starts_with("OOM kill at "), "{ours}");
    assert!(ours.contains("hoard_chunk"), "the victim's stacks: {ours}");
    browser.screenshot(&screenshot_dir().join("oom.png"));
    // Its stack opens like any other.
    browser.click(&format!(".banner[data-pid='{pid}'] button"));
    browser.wait_for(
        "document.querySelector('#detail h2') && \
         document.querySelector('#detail h2').innerText.endsWith('hoard_chunk')",
        secs(10),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

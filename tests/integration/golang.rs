//! Go programs read from outside: the runtime's heap profile as `go-heap`
//! stacks at the leaking function and line (a map growing in a warm heap
//! with churn elsewhere: `leak`; a bounded cache: `plateau`), goroutines by
//! creation site and state with a count that has a verdict, memory
//! profiling switched off by the linker (one line, the mmap view) and
//! switched on with `--go-enable-heap-profile`; against the program's own
//! `/debug/pprof` at the same collection; and every Go from 1.19 to 1.27,
//! with DWARF and without (`-ldflags=-w`: the table's layouts).

use std::path::PathBuf;
use std::process::Command;

use memtrace_integration::{
    build_go, json_args_with, json_cmd_args, marked_line, memtrace_bin, run_memtrace, secs,
    trace_pid, Report, RunOutput, StackExt, Workload, CMD_TIMEOUT, DEBIAN_GO, GO_VERSIONS,
};
use memtrace_report::{GoReport, StackKind, StackReport, Verdict};

/// `tests/workloads/go_leaks/main.go`.
fn leaks_source() -> PathBuf {
    memtrace_integration::workspace_root().join("tests/workloads/go_leaks/main.go")
}

/// Runs `memtrace --duration SECS -- go_leaks PATTERN` (built by Go
/// `version` with `tags`, `ldflags`), with `extra` options.
fn run_pattern(
    version: &str,
    tags: &[&str],
    ldflags: &str,
    pattern: &str,
    secs: u32,
    extra: &[&str],
) -> (Report, RunOutput) {
    let exe = build_go(version, "go_leaks", tags, ldflags);
    let duration = format!("{secs}s");
    let mut options = vec!["--duration", duration.as_str()];
    options.extend_from_slice(extra);
    let args = json_cmd_args(&options, &[exe.to_str().unwrap(), pattern]);
    let out = run_memtrace(&args, CMD_TIMEOUT);
    out.assert_success();
    (out.report(), out)
}

/// What was read from the (one) target's Go runtime.
fn go_of(report: &Report) -> &GoReport {
    report.targets[0]
        .go
        .as_ref()
        .unwrap_or_else(|| panic!("no Go runtime read\n{}", report.describe()))
}

/// The go-heap stacks whose innermost frame is `function` (at `line`).
fn heap_stacks_at<'a>(
    report: &'a Report,
    function: &str,
    line: Option<u32>,
) -> Vec<&'a StackReport> {
    report
        .stacks
        .iter()
        .filter(|s| s.kind == StackKind::GoHeap)
        .filter(|s| {
            s.frames.first().is_some_and(|f| {
                f.function.as_deref() == Some(function) && (line.is_none() || f.line == line)
            })
        })
        .collect()
}

/// The stack of the map leak (`remember`'s marked line), with its verdict:
/// the sessions (the line also grows the map's table, by doubling: a stack
/// of its own).
fn assert_map_leak(report: &Report, with_lines: bool) {
    let ctx = report.describe();
    let line = with_lines.then(|| marked_line(&leaks_source(), "// map leak"));
    let stacks = heap_stacks_at(report, "main.remember", line);
    let top = stacks
        .iter()
        .filter(|s| s.verdict == Verdict::Leak)
        .max_by_key(|s| s.outstanding_bytes)
        .unwrap_or_else(|| panic!("no go-heap leak at main.remember:{line:?}\n{ctx}"));
    // ~40,000 sessions of 56 bytes a second: well over 4 MiB in 12 s.
    assert!(top.outstanding_bytes > 4 << 20, "{}", top.summary());
    let functions = top.functions();
    assert_eq!(functions.get(1), Some(&"main.main"), "{}", top.summary());
}

#[test]
fn go_map_leak_in_a_warm_heap_is_named_at_its_line() {
    let (report, out) = run_pattern(DEBIAN_GO, &[], "", "map", 12, &[]);
    let ctx = report.describe();
    assert!(
        out.stderr
            .contains("go1.19.8: its heap profile and goroutines are read from the runtime"),
        "{}",
        out.describe()
    );
    let go = go_of(&report);
    assert_eq!(
        (
            go.heap_profile.as_str(),
            go.layout.as_str(),
            go.profile_rate
        ),
        ("read", "dwarf", 512 * 1024),
        "{ctx}"
    );
    assert_eq!((go.buckets_skipped, go.reads_cut), (0, 0), "{ctx}");
    assert_map_leak(&report, true);
    // The 64 MiB kept from the start are there, at warmUp (64 objects of
    // 1 MiB, each recorded with probability 1 - e^-2: within ±20 %).
    let warm: u64 = heap_stacks_at(&report, "main.warmUp", None)
        .iter()
        .map(|s| s.outstanding_bytes)
        .sum();
    assert!(
        (52 << 20..77 << 20).contains(&warm),
        "warmUp holds {warm} B\n{ctx}"
    );
    // The heap's growth is the profile's: no mapping stack of its own.
    assert!(go.heap_mapped_bytes >= 64 << 20, "{ctx}");
    for s in report.stacks.iter().filter(|s| s.kind == StackKind::Mmap) {
        let caller = s
            .functions()
            .into_iter()
            .find(|f| !f.starts_with("runtime.sys"));
        assert!(
            !matches!(
                caller,
                Some("runtime.(*mheap).grow" | "runtime.(*mheap).sysAlloc")
            ),
            "the heap's own growth as a mapping stack: {}",
            s.summary()
        );
    }
    // The churn's buffers come and go: nothing of it grows.
    for s in heap_stacks_at(&report, "main.churn", None) {
        assert!(s.verdict != Verdict::Leak, "{}", s.summary());
    }
}

#[test]
fn go_bounded_cache_is_a_plateau() {
    let (report, _) = run_pattern(DEBIAN_GO, &[], "", "lru", 12, &[]);
    let ctx = report.describe();
    let line = marked_line(&leaks_source(), "// lru insert");
    let stacks = heap_stacks_at(&report, "main.(*lru).put", Some(line));
    let top = stacks
        .iter()
        .max_by_key(|s| s.outstanding_bytes)
        .unwrap_or_else(|| panic!("no go-heap stack at main.(*lru).put:{line}\n{ctx}"));
    // 4,000 entries of 16 KiB: 64 MiB (each recorded with probability
    // 1 - e^-4 at the rate of 4 KiB the program sets).
    assert!(
        (58 << 20..70 << 20).contains(&top.outstanding_bytes),
        "{}",
        top.summary()
    );
    assert_eq!(go_of(&report).profile_rate, 4096);
    assert_eq!(top.verdict, Verdict::Plateau, "{}\n{ctx}", top.summary());
}

#[test]
fn go_goroutine_leak_is_named_by_its_go_statement() {
    let (report, _) = run_pattern(DEBIAN_GO, &[], "", "goroutines", 8, &[]);
    let ctx = report.describe();
    let gs = go_of(&report)
        .goroutines
        .as_ref()
        .unwrap_or_else(|| panic!("no goroutines read\n{ctx}"));
    // One every 10 ms: hundreds in 8 s, all parked in a channel receive.
    let top = &gs.groups[0];
    assert_eq!(top.state, "chan receive", "{ctx}");
    assert!(top.count >= 300, "{} goroutines\n{ctx}", top.count);
    // Go 1.19 starts a `go` statement with arguments in a closure of its
    // own.
    assert_eq!(top.start.as_deref(), Some("main.spawn.func1"), "{ctx}");
    let created = &top.created_at[0];
    assert_eq!(
        (created.function.as_deref(), created.line),
        (
            Some("main.spawn"),
            Some(marked_line(&leaks_source(), "// go statement"))
        ),
        "{ctx}"
    );
    assert_eq!(top.verdict, Verdict::Leak, "{ctx}");
    assert!(top.growth_per_sec > 50.0, "{ctx}");
    assert_eq!(gs.verdict, Verdict::Leak, "{ctx}");
    // The rest: main and the churn, a goroutine each.
    assert_eq!(gs.count, top.count + 2, "{ctx}");
    assert!(gs.stack_bytes >= top.count * 2048, "{ctx}");
}

#[test]
fn go_profiling_off_is_said_and_switched_on_when_asked() {
    let (report, out) = run_pattern(DEBIAN_GO, &["noprofile"], "", "map", 6, &[]);
    let ctx = report.describe();
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("Go memory profiling is off"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", out.describe());
    assert!(
        lines[0].contains("the program never references runtime.MemProfile")
            && lines[0].contains("--go-enable-heap-profile"),
        "{}",
        lines[0]
    );
    assert_eq!(go_of(&report).heap_profile, "off", "{ctx}");
    assert!(
        report.stacks.iter().all(|s| s.kind != StackKind::GoHeap),
        "{ctx}"
    );
    // The heap is still seen, through the runtime's mmap calls.
    assert!(
        report.stacks.iter().any(|s| s.kind == StackKind::Mmap),
        "{ctx}"
    );

    let (report, out) = run_pattern(
        DEBIAN_GO,
        &["noprofile"],
        "",
        "map",
        12,
        &["--go-enable-heap-profile"],
    );
    assert!(
        out.stderr
            .contains("memtrace set runtime.MemProfileRate to 524288 (--go-enable-heap-profile)"),
        "{}",
        out.describe()
    );
    assert_eq!(
        go_of(&report).heap_profile,
        "enabled",
        "{}",
        report.describe()
    );
    assert_map_leak(&report, true);
}

/// `memtrace go-layout FILE`: the binary's version, and its layouts from
/// DWARF and from the table.
fn layouts(exe: &std::path::Path) -> serde_json::Value {
    let out = Command::new(memtrace_bin())
        .arg("go-layout")
        .arg(exe)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn go_versions_have_the_layouts_of_the_table() {
    // Each Go's DWARF, against the row memtrace reads builds without DWARF
    // with.
    for version in std::iter::once(DEBIAN_GO).chain(GO_VERSIONS) {
        let exe = build_go(version, "go_leaks", &[], "");
        let l = layouts(&exe);
        let built = l["version"].as_str().unwrap_or_default().to_string();
        assert!(built.starts_with(&format!("go{version}")), "{l}");
        assert!(l["dwarf"].get("error").is_none(), "go{version}: {l}");
        assert_eq!(l["dwarf"], l["table"], "go{version}");
    }
}

#[test]
fn go_versions_name_the_leak_with_and_without_dwarf() {
    // The oldest and newest of those on PyPI, and one in between with
    // another layout of g; the newest also without DWARF.
    let runs: Vec<(&str, &str)> = vec![
        ("1.21.13", ""),
        ("1.24.11", ""),
        ("1.27.3", ""),
        ("1.27.3", "-w"),
    ];
    let handles: Vec<_> = runs
        .into_iter()
        .map(|(version, ldflags)| {
            std::thread::spawn(move || {
                let (report, _) = run_pattern(version, &[], ldflags, "map", 12, &[]);
                (version, ldflags, report)
            })
        })
        .collect();
    for h in handles {
        let (version, ldflags, report) = h.join().unwrap();
        let go = go_of(&report);
        let ctx = format!("go{version} {ldflags}\n{}", report.describe());
        assert!(go.version.starts_with(&format!("go{version}")), "{ctx}");
        let layout = if ldflags.is_empty() { "dwarf" } else { "table" };
        assert_eq!(go.layout, layout, "{ctx}");
        assert_eq!((go.buckets_skipped, go.reads_cut), (0, 0), "{ctx}");
        // Without DWARF, frames have names (the symbol table) but no lines.
        assert_map_leak(&report, ldflags.is_empty());
    }
}

/// The flat in-use bytes per function of `go tool pprof -top` (the
/// runtime's own profile, served by the program), and its total.
fn pprof_top(port: u16) -> (Vec<(String, u64)>, u64) {
    let out = Command::new("go")
        .args([
            "tool",
            "pprof",
            "-sample_index=inuse_space",
            "-top",
            "-unit=B",
        ])
        .args(["-nodecount=1000"])
        .arg(format!("http://127.0.0.1:{port}/debug/pprof/heap"))
        .env("PPROF_TMPDIR", std::env::temp_dir())
        .output()
        .expect("go tool pprof");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut total = 0;
    let mut flat = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line
            .split(" of ")
            .nth(1)
            .filter(|_| line.starts_with("Showing nodes"))
        {
            total = rest
                .trim_end_matches(" total")
                .trim_end_matches('B')
                .parse()
                .unwrap();
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() == 6 && fields[0].ends_with('B') && fields[1].ends_with('%') {
            let bytes: u64 = fields[0].trim_end_matches('B').parse().unwrap();
            if bytes > 0 {
                flat.push((fields[5].to_string(), bytes));
            }
        }
    }
    (flat, total)
}

/// The goroutines `/debug/pprof/goroutine?debug=1` counts, without the
/// ones that serve that very request (a connection's own goroutines,
/// which exist only while it is served).
fn pprof_goroutines(port: u16) -> (u64, String) {
    let body = memtrace_integration::http::get(
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        "/debug/pprof/goroutine?debug=1",
        None,
    )
    .text();
    let total: u64 = body
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("goroutine profile: total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{body}"));
    let serving: u64 = body
        .split("\n\n")
        .filter(|group| {
            group.contains("net/http.(*conn).serve")
                || group.contains("net/http.(*connReader).backgroundRead")
                // One made for the request that has not run yet: its stack
                // is its exit's frame alone.
                || group.lines().count() == 1
        })
        .filter_map(|group| group.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    (total - serving, body)
}

#[test]
fn go_heap_matches_the_programs_own_pprof() {
    // The program serves net/http/pprof; once it says "quiet" it allocates
    // no more and its collector is off: memtrace and pprof read the same
    // published cycle.
    let exe = build_go(DEBIAN_GO, "go_pprof.go", &[], "");
    let mut w = Workload::spawn(&exe, &[] as &[&str]);
    let line = w.next_line(secs(30));
    let port: u16 = line
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    w.expect_line("quiet", secs(30));
    let tracer = trace_pid(w.pid(), &json_args_with(&["--duration", "2s"]));
    let out = tracer.finish(secs(60));
    out.assert_success();
    let report = out.report();
    let ctx = report.describe();
    let (pprof, pprof_total) = pprof_top(port);
    let (goroutines, profile) = pprof_goroutines(port);
    // memtrace's in-use bytes per innermost function, as -top's flat.
    let mut ours: std::collections::BTreeMap<String, u64> = Default::default();
    for s in report.stacks.iter().filter(|s| s.kind == StackKind::GoHeap) {
        *ours
            .entry(s.function().unwrap_or("?").to_string())
            .or_default() += s.outstanding_bytes;
    }
    let total: u64 = ours.values().sum();
    eprintln!(
        "in-use bytes: memtrace {total}, pprof {pprof_total}; top: {:?}; memtrace: {:?}",
        &pprof[..pprof.len().min(3)],
        pprof
            .iter()
            .take(3)
            .map(|(f, _)| ours.get(f).copied().unwrap_or(0))
            .collect::<Vec<_>>()
    );
    memtrace_integration::assert_within("in-use bytes", total, pprof_total, 1.0, &ctx);
    // The same top functions, each within 1 %.
    for (function, bytes) in pprof.iter().take(3) {
        let mine = ours.get(function).copied().unwrap_or(0);
        memtrace_integration::assert_within(function, mine, *bytes, 1.0, &ctx);
    }
    assert_eq!(pprof[0].0, "main.remember", "{pprof:?}");
    assert_eq!(pprof[1].0, "main.keep", "{pprof:?}");
    let gs = go_of(&report).goroutines.as_ref().unwrap();
    assert_eq!(gs.count, goroutines, "{profile}\n{ctx}");
    // 100 parked, main, the server's accept loop.
    assert_eq!(goroutines, 102, "{profile}");
}

#[test]
fn go_programs_selected_by_name_are_each_read() {
    // Two Go programs running before memtrace, selected by --comm: each
    // has its runtime read, its leak named (one leaks a map, the other
    // goroutines).
    // Under a name of their own: other tests run go_leaks at the same time.
    let exe = memtrace_integration::go_leaks_as("go_by_name");
    let map = Workload::spawn(&exe, &["map"]);
    let goroutines = Workload::spawn(&exe, &["goroutines"]);
    let args = json_args_with(&["--comm", "go_by_name", "--duration", "12s"]);
    let out = run_memtrace(&args, CMD_TIMEOUT);
    out.assert_success();
    let report = out.report();
    let ctx = report.describe();
    let target = |pid: u32| {
        report
            .targets
            .iter()
            .find(|t| t.pid == pid)
            .unwrap_or_else(|| panic!("pid {pid} not traced\n{ctx}"))
    };
    for pid in [map.pid(), goroutines.pid()] {
        let go = target(pid).go.as_ref().unwrap_or_else(|| panic!("{ctx}"));
        assert_eq!(go.heap_profile, "read", "{ctx}");
    }
    assert_map_leak(&report, true);
    assert!(
        report
            .stacks
            .iter()
            .filter(|s| s.function() == Some("main.remember"))
            .all(|s| s.pid == map.pid()),
        "map is pid {}\n{ctx}",
        map.pid()
    );
    let gs = target(goroutines.pid())
        .go
        .as_ref()
        .unwrap()
        .goroutines
        .as_ref()
        .unwrap();
    assert_eq!(
        (gs.groups[0].state.as_str(), gs.groups[0].verdict),
        ("chan receive", Verdict::Leak),
        "{ctx}"
    );
}

#[test]
fn go_a_layout_that_does_not_fit_is_refused() {
    // A Go 1.23 build without DWARF whose build info says 1.21 (the same
    // length, patched): memtrace takes 1.21's table, where a goroutine's
    // fields lie elsewhere. Its goroutine list does not read as that says:
    // refused in one line, never guessed. (A bucket's layout is the same in
    // both: the heap profile reads.)
    let built = build_go("1.23.9", "go_leaks", &[], "-w");
    let mut binary = std::fs::read(&built).unwrap();
    let info = binary
        .windows(14)
        .position(|w| w == b"\xff Go buildinf:")
        .expect("build info");
    let version = info
        + binary[info..info + 64]
            .windows(8)
            .position(|w| w == b"go1.23.9")
            .expect("the version in the build info");
    binary[version..version + 8].copy_from_slice(b"go1.21.9");
    let dir = memtrace_integration::scratch_dir("go-lie");
    let exe = dir.join("go_leaks");
    std::fs::write(&exe, &binary).unwrap();
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let args = json_cmd_args(
        &["--duration", "4s"],
        &[exe.to_str().unwrap(), "goroutines"],
    );
    let out = run_memtrace(&args, CMD_TIMEOUT);
    out.assert_success();
    let report = out.report();
    let refused: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("its goroutine list does not read as the layout from"))
        .collect();
    assert_eq!(refused.len(), 1, "{}", out.describe());
    assert!(refused[0].contains("table for Go 1.21"), "{}", refused[0]);
    let go = go_of(&report);
    assert_eq!(
        (go.version.as_str(), go.layout.as_str()),
        ("go1.21.9", "table")
    );
    assert!(go.goroutines.is_none(), "{}", report.describe());
    assert_eq!(go.heap_profile, "read", "{}", report.describe());
}

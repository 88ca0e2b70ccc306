//! pprof output read by the real `go tool pprof`: memtrace's profile of a
//! traced workload lists each allocating function with exactly the values
//! the workload produced under each of the four sample types of a Go heap
//! profile (`inuse_space` by default), with its caller, and the stack's
//! pid, verdict and kind as labels.
//!
//! - One live run writes a JSON snapshot and a pprof profile at once
//!   (`-o run.json -o run.pb.gz`, formats from the extensions); the profile
//!   matches the workload's known leak and the JSON report of the same run.
//! - The snapshot rendered offline (`memtrace report run.json --format
//!   pprof -o FILE`, as user nobody, and `-o FILE.pb.gz`) is the same
//!   profile: `go tool pprof -raw` and `-top` print the same as for the live
//!   run's file.
//! - `--format pprof -o out.pb.gz` on a live run of a workload whose
//!   allocations differ in all four values (allocated vs in use, blocks vs
//!   bytes; heap and mmap) puts each value under its sample type.
//!
//! Workloads (both start on SIGUSR1, once memtrace is tracing, and make no
//! other allocator calls then):
//! - leak_signal (`COUNT SIZE INTERVAL_US`): leak_fixed() (called from main)
//!   mallocs SIZE bytes COUNT times, never freed;
//! - pprof_mix (`COUNT SIZE REGIONS`): alloc_block() mallocs SIZE bytes
//!   COUNT times, every other block freed at once; map_region() mmaps
//!   64 KiB REGIONS times, kept; both called from main.
//!
//! `go` must be installed (Debian: golang-go; `cargo xtask test` installs
//! it); `$GO` names another go binary. go runs with HOME, GOPATH and
//! GOCACHE in the test's scratch directory, no toolchain downloads and no
//! module proxy, and is only ever given a local file.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use memtrace_integration::{
    compile_c, memtrace_bin, open_dir, path_str, scratch_dir, secs, trace_until_done, Report,
    RunOutput, Workload, NOBODY,
};
use memtrace_report::{name_of, Verdict};

use super::LEAK_SIZE;

/// Deadline of one `go tool pprof` or offline `memtrace report` run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts workload `name args...`, traces it with `memtrace --pid PID
/// --interval 1s --duration DURATION memtrace_args...`, lets it go once
/// memtrace is tracing and waits for its "done", which must come before
/// memtrace stops.
fn traced(name: &str, args: &[u64], duration: &str, memtrace_args: &[&str]) -> (RunOutput, u32) {
    let args: Vec<String> = args.iter().map(u64::to_string).collect();
    let mut workload = Workload::spawn_ready(&compile_c(name), &args);
    let pid = workload.pid();
    let mut all = vec!["--interval", "1s", "--duration", duration];
    all.extend_from_slice(memtrace_args);
    let mut tracer = trace_until_done(&mut workload, &all);
    assert!(
        tracer.is_running(),
        "memtrace (--duration {duration}) exited before {name} was done\n{}",
        tracer.snapshot()
    );
    let out = tracer.finish(secs(90));
    out.assert_success();
    (out, pid)
}

/// Runs `cmd` to completion within `timeout` (killing its process group
/// after: `go tool pprof` runs pprof as a child), with stdout and stderr
/// captured.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let pipe = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = pipe(child.stdout.take().map(|r| Box::new(r) as _));
    let stderr = pipe(child.stderr.take().map(|r| Box::new(r) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let group = i32::try_from(child.id()).expect("pid fits in i32");
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            let _ = child.wait();
            let err = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
            panic!("{what} did not finish within {timeout:?}\n--- stderr ---\n{err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// `go tool pprof` in a sandboxed Go environment under `home`.
struct Pprof {
    home: PathBuf,
}

impl Pprof {
    fn new(dir: &Path) -> Pprof {
        let home = dir.join("gohome");
        std::fs::create_dir_all(&home).expect("mkdir gohome");
        let pprof = Pprof { home };
        if let Err(e) = Command::new(pprof.go()).arg("version").output() {
            panic!(
                "cannot run {:?} ({e}): these tests need Go's `go tool pprof` (Debian: \
                 apt-get install golang-go; `cargo xtask test` installs it; or set $GO)",
                pprof.go()
            );
        }
        pprof
    }

    /// `$GO`, else `go` from PATH.
    fn go(&self) -> String {
        std::env::var("GO")
            .ok()
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| "go".to_string())
    }

    /// `go tool pprof args... file`; asserts it succeeded, returns stdout.
    #[track_caller]
    fn run(&self, args: &[&str], file: &Path) -> String {
        let mut cmd = Command::new(self.go());
        cmd.args(["tool", "pprof"])
            .args(args)
            .arg(file)
            .current_dir(&self.home)
            .env("HOME", &self.home)
            .env("GOPATH", self.home.join("go"))
            .env("GOCACHE", self.home.join("cache"))
            .env("PPROF_TMPDIR", self.home.join("pprof"))
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "")
            .env_remove("PPROF_BINARY_PATH");
        let out = run_with_timeout(cmd, TOOL_TIMEOUT);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "go tool pprof {} {} failed ({}):\n--- stderr ---\n{stderr}\n--- stdout ---\n{stdout}",
            args.join(" "),
            file.display(),
            out.status
        );
        // Every mapping says it has functions: pprof must not re-symbolize.
        assert!(
            !stderr.to_lowercase().contains("symbolization"),
            "go tool pprof tried to symbolize {}:\n{stderr}",
            file.display()
        );
        stdout
    }

    /// `go tool pprof -top -sample_index=INDEX [-unit=B] file`, parsed.
    #[track_caller]
    fn top(&self, sample_index: Option<&str>, file: &Path) -> Top {
        let index_arg = sample_index.map(|i| format!("-sample_index={i}"));
        let mut args = vec!["-top"];
        if let Some(a) = &index_arg {
            args.push(a);
        }
        // Exact bytes ("245760B", not "240kB"); counts print as plain numbers.
        if !sample_index.is_some_and(|i| i.ends_with("_objects")) {
            args.push("-unit=B");
        }
        let text = self.run(&args, file);
        Top::parse(&text)
    }
}

/// A `go tool pprof -top` table.
struct Top {
    text: String,
    /// `Type: ...` of the header.
    sample_type: String,
    /// `File: ...` of the header (the main binary's name).
    file: String,
    /// `... of TOTAL total`.
    total: u64,
    rows: Vec<TopRow>,
}

#[derive(Debug, Clone, PartialEq)]
struct TopRow {
    flat: u64,
    cum: u64,
    name: String,
}

/// `245760B`, `60` or `0` (pprof prints a zero without unit).
fn top_value(v: &str, text: &str) -> u64 {
    v.strip_suffix('B')
        .unwrap_or(v)
        .parse()
        .unwrap_or_else(|_| panic!("not an exact value: {v:?} in\n{text}"))
}

impl Top {
    fn parse(text: &str) -> Top {
        let header = |prefix: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} line in go tool pprof -top:\n{text}"))
                .trim()
                .to_string()
        };
        let showing = header("Showing nodes accounting for ");
        let total = showing
            .strip_suffix(" total")
            .and_then(|s| s.rsplit(' ').next())
            .map(|v| top_value(v, text))
            .unwrap_or_else(|| panic!("cannot read the total of {showing:?}:\n{text}"));
        let table_at = text
            .lines()
            .position(|l| {
                l.split_whitespace()
                    .eq(["flat", "flat%", "sum%", "cum", "cum%"])
            })
            .unwrap_or_else(|| panic!("no -top table header:\n{text}"));
        let rows = text
            .lines()
            .skip(table_at + 1)
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                assert!(cols.len() >= 6, "short -top row {l:?} in\n{text}");
                TopRow {
                    flat: top_value(cols[0], text),
                    cum: top_value(cols[3], text),
                    name: cols[5..].join(" "),
                }
            })
            .collect();
        Top {
            sample_type: header("Type: "),
            file: header("File: "),
            total,
            rows,
            text: text.to_string(),
        }
    }

    /// The row of `function`; panics if there is none or several.
    #[track_caller]
    fn row(&self, function: &str) -> &TopRow {
        let rows: Vec<&TopRow> = self.rows.iter().filter(|r| r.name == function).collect();
        assert_eq!(
            rows.len(),
            1,
            "expected one -top row for {function}:\n{}",
            self.text
        );
        rows[0]
    }
}

/// `go tool pprof -traces` of `file`: (labels as `key: value`, value,
/// functions leaf first) of the sample whose leaf is `leaf`.
#[track_caller]
fn trace_of(pprof: &Pprof, file: &Path, leaf: &str) -> (Vec<String>, u64, Vec<String>) {
    let text = pprof.run(&["-traces", "-unit=B"], file);
    let mut found = Vec::new();
    for block in text.split("-----------+").skip(1) {
        // The first line is the rest of the separator.
        let lines: Vec<&str> = block.lines().skip(1).collect();
        let value_at = lines
            .iter()
            .position(|l| !l.contains(':'))
            .unwrap_or(lines.len());
        let labels: Vec<String> = lines[..value_at]
            .iter()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let Some(first) = lines.get(value_at) else {
            continue;
        };
        let mut cols = first.split_whitespace();
        let value = cols.next().map(|v| top_value(v, &text)).unwrap_or(0);
        let mut functions: Vec<String> = vec![cols.collect::<Vec<_>>().join(" ")];
        functions.extend(
            lines[value_at + 1..]
                .iter()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()),
        );
        if functions[0] == leaf {
            found.push((labels, value, functions));
        }
    }
    assert_eq!(
        found.len(),
        1,
        "expected one sample with leaf {leaf} in go tool pprof -traces:\n{text}"
    );
    found.remove(0)
}

/// The checks of a leak_signal profile against the workload and the JSON
/// report of the same run: for each sample type, leak_fixed's flat value
/// is the leak (and main's cum includes it), the total is the report's.
#[track_caller]
fn assert_profile(pprof: &Pprof, file: &Path, report: &Report, pid: u32, count: u64) {
    let ctx = report.describe();
    let leak = report.stack_of("leak_fixed");
    assert_eq!(
        (leak.outstanding_bytes, leak.outstanding_allocations),
        (count * LEAK_SIZE, count),
        "the JSON report of the run: leak_fixed's outstanding bytes and blocks\n{ctx}"
    );

    // The default sample type is inuse_space.
    let default = pprof.top(None, file);
    assert_eq!(default.sample_type, "inuse_space", "{}", default.text);

    let want = [
        (
            "inuse_space",
            count * LEAK_SIZE,
            report.totals.outstanding_bytes,
        ),
        (
            "inuse_objects",
            count,
            report.totals.outstanding_allocations,
        ),
        (
            "alloc_space",
            count * LEAK_SIZE,
            report.totals.allocated_bytes,
        ),
        ("alloc_objects", count, report.totals.allocations),
    ];
    for (index, leaked, total) in want {
        let top = pprof.top(Some(index), file);
        assert_eq!(top.sample_type, index, "{}", top.text);
        assert_eq!(
            top.file, "leak_signal",
            "the main binary (mapping 0) is the workload's executable\n{}",
            top.text
        );
        let row = top.row("leak_fixed");
        assert_eq!(
            (row.flat, row.cum),
            (leaked, leaked),
            "-sample_index={index}: leak_fixed's flat and cum should be the leak \
             ({count} blocks of {LEAK_SIZE} bytes)\n{}\n{ctx}",
            top.text
        );
        let main = top.row("main");
        assert!(
            main.cum >= leaked && main.flat == 0,
            "-sample_index={index}: main calls leak_fixed (cum >= {leaked}) and allocates \
             nothing itself\n{}",
            top.text
        );
        // Every stack of the report is in the profile: the totals agree.
        assert_eq!(
            top.total, total,
            "-sample_index={index}: the profile's total is the report's total\n{}\n{ctx}",
            top.text
        );
    }

    // The stack, leaf first, and its labels.
    let (labels, value, functions) = trace_of(pprof, file, "leak_fixed");
    assert_eq!(
        value,
        count * LEAK_SIZE,
        "leak_fixed's trace: {functions:?}"
    );
    assert_eq!(
        functions.get(1).map(String::as_str),
        Some("main"),
        "leak_fixed's trace, leaf first: {functions:?}"
    );
    let mut labels = labels;
    labels.sort();
    let mut want = vec![
        "kind: heap".to_string(),
        format!("pid: {pid}"),
        format!("verdict: {}", name_of(&leak.verdict)),
    ];
    want.sort();
    assert_eq!(labels, want, "leak_fixed's sample labels\n{ctx}");
}

/// Runs `memtrace args...` with `uid` (None: as the test, root), within
/// [`TOOL_TIMEOUT`]; asserts it succeeded.
#[track_caller]
fn memtrace_offline(args: &[&str], uid: Option<u32>) {
    let mut cmd = Command::new(memtrace_bin());
    cmd.args(args);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let out = run_with_timeout(cmd, TOOL_TIMEOUT);
    assert!(
        out.status.success(),
        "memtrace {} (uid {uid:?}) failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn live_and_offline_profiles_show_the_leak() {
    const COUNT: u64 = 60;
    let dir = scratch_dir("pprof");
    let (json, live) = (dir.join("run.json"), dir.join("run.pb.gz"));
    let (out, pid) = traced(
        "leak_signal",
        &[COUNT, LEAK_SIZE, 50_000],
        "6s",
        &["-o", path_str(&json), "-o", path_str(&live)],
    );
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}\n{}", json.display(), out.describe()));
    let report = out.report_from(&text);
    report.assert_target("leak_signal", Some(pid));
    report.assert_no_losses();
    report.assert_consistent();

    let pprof = Pprof::new(&dir);
    assert_profile(&pprof, &live, &report, pid, COUNT);
    let comments = pprof.run(&["-comments"], &live);
    assert!(
        comments.contains(&format!("memtrace: pid {pid} (leak_signal)")),
        "the profile's comment names memtrace and its target:\n{comments}"
    );

    // The snapshot rendered offline: --format pprof (with an extension that
    // says nothing) as user nobody, and the format from .pb.gz.
    let open = open_dir(&dir);
    let offline = open.join("offline.prof");
    memtrace_offline(
        &[
            "report",
            path_str(&json),
            "--format",
            "pprof",
            "-o",
            path_str(&offline),
        ],
        Some(NOBODY),
    );
    let by_extension = dir.join("offline.pb.gz");
    memtrace_offline(
        &["report", path_str(&json), "-o", path_str(&by_extension)],
        None,
    );

    let live_raw = pprof.run(&["-raw"], &live);
    let live_top = pprof.top(Some("inuse_space"), &live).text;
    for file in [&offline, &by_extension] {
        assert_profile(&pprof, file, &report, pid, COUNT);
        assert_eq!(
            pprof.run(&["-raw"], file),
            live_raw,
            "{} (rendered from run.json) and run.pb.gz (the live run's) are the same profile",
            file.display()
        );
        assert_eq!(
            pprof.top(Some("inuse_space"), file).text,
            live_top,
            "{}: the same -top as the live run's",
            file.display()
        );
    }
    println!("go tool pprof -top -unit=B -sample_index=inuse_space run.pb.gz:\n{live_top}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// pprof_mix: alloc_block() calls (every other block freed at once).
const MIX_BLOCKS: u64 = 40;
/// pprof_mix: bytes per alloc_block() call.
const MIX_BLOCK_SIZE: u64 = 3000;
/// pprof_mix: map_region() calls, 64 KiB kept each.
const MIX_REGIONS: u64 = 4;
const MIX_REGION_SIZE: u64 = 64 * 1024;

#[test]
fn format_flag_writes_the_four_heap_profile_values() {
    let dir = scratch_dir("pprof-flag");
    let file = dir.join("out.pb.gz");
    let (out, pid) = traced(
        "pprof_mix",
        &[MIX_BLOCKS, MIX_BLOCK_SIZE, MIX_REGIONS],
        "3s",
        &["--format", "pprof", "-o", path_str(&file)],
    );
    let bytes = std::fs::read(&file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}\n{}", file.display(), out.describe()));
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "out.pb.gz is gzip");
    let pprof = Pprof::new(&dir);
    assert_eq!(pprof.top(None, &file).sample_type, "inuse_space");

    // (sample type, alloc_block's value, map_region's value): half of the
    // blocks are freed, none of the regions.
    let kept = MIX_BLOCKS / 2;
    let regions = MIX_REGIONS * MIX_REGION_SIZE;
    let want = [
        ("alloc_objects", MIX_BLOCKS, MIX_REGIONS),
        ("alloc_space", MIX_BLOCKS * MIX_BLOCK_SIZE, regions),
        ("inuse_objects", kept, MIX_REGIONS),
        ("inuse_space", kept * MIX_BLOCK_SIZE, regions),
    ];
    for (index, block, region) in want {
        let top = pprof.top(Some(index), &file);
        assert_eq!(top.sample_type, index, "{}", top.text);
        assert_eq!(top.file, "pprof_mix", "{}", top.text);
        let got = (
            top.row("alloc_block").flat,
            top.row("map_region").flat,
            top.row("main").cum,
            top.total,
        );
        assert_eq!(
            got,
            (block, region, block + region, block + region),
            "-sample_index={index}: (alloc_block flat, map_region flat, main cum, total) \
             for {MIX_BLOCKS} blocks of {MIX_BLOCK_SIZE} bytes, every other one freed, and \
             {MIX_REGIONS} mappings of 64 KiB kept\n{}",
            top.text
        );
    }
    for (leaf, kind, value) in [
        ("alloc_block", "heap", kept * MIX_BLOCK_SIZE),
        ("map_region", "mmap", regions),
    ] {
        let (labels, got, functions) = trace_of(&pprof, &file, leaf);
        assert_eq!(
            (got, functions.get(1).map(String::as_str)),
            (value, Some("main")),
            "{leaf}'s trace (inuse_space, leaf first): {functions:?}"
        );
        let verdict = labels
            .iter()
            .find_map(|l| l.strip_prefix("verdict: "))
            .unwrap_or_else(|| panic!("{leaf}: no verdict label in {labels:?}"));
        assert!(
            serde_json::from_value::<Verdict>(verdict.into()).is_ok(),
            "{leaf}: verdict {verdict:?}"
        );
        let mut labels = labels.clone();
        labels.sort();
        let mut want = vec![
            format!("kind: {kind}"),
            format!("pid: {pid}"),
            format!("verdict: {verdict}"),
        ];
        want.sort();
        assert_eq!(labels, want, "{leaf}'s sample labels");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

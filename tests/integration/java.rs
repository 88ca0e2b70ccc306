//! HotSpot JVMs' Java heaps, read from the JFR recording memtrace starts
//! through each JVM's attach mechanism: leak patterns of a request loop
//! (a static ArrayList of byte arrays, a HashMap cache keyed by request id,
//! listeners kept by a static registry: `leak` at the allocating method's
//! line, with the path that holds them; a bounded LinkedHashMap LRU:
//! `plateau`) on OpenJDK 17 and Temurin 25; the JVM left running with no
//! recording and no file of memtrace's; `-- java`; a JVM in its own pid
//! and mount namespaces; the JVM's own class histogram as the anchor; the
//! JVMs refused in one line, and `--no-runtime-attach`.

use std::path::{Path, PathBuf};

use memtrace_integration::{
    assert_within, histogram_bytes, jcmd, leaks_command, leaks_source, marked_line, run_memtrace,
    secs, start_leaks, trace_pid, Report, StackExt, Tracer, Workload, CMD_TIMEOUT, JDK17, JDK25,
    JVM_OPTIONS,
};
use memtrace_report::{JavaReport, Language, StackKind, StackReport, Verdict};

/// Requests a second of the leak patterns (each keeps ~1 KiB and makes an
/// 8 KiB buffer of garbage).
const RATE: &str = "1000";

/// memtrace's options for these runs (JSON on stdout). Most outstanding
/// first: a JVM makes thousands of native stacks, and a leak that stopped
/// (or a full cache) grows less than many of them.
fn options(duration: &str) -> Vec<&str> {
    vec![
        "--format",
        "json",
        "--sort",
        "outstanding",
        "--top",
        "500",
        "--interval",
        "2s",
        "--duration",
        duration,
    ]
}

/// A leak pattern of Leaks.java: its mode, the method that allocates what
/// it keeps and the comment marking that line, the static field that holds
/// it, and whether it grows without bound.
struct Pattern {
    mode: &'static str,
    method: &'static str,
    marker: &'static str,
    field: &'static str,
    leaks: bool,
}

const PATTERNS: [Pattern; 4] = [
    Pattern {
        mode: "list",
        method: "Leaks.remember",
        marker: "// list leak",
        field: "Leaks.retained (static)",
        leaks: true,
    },
    Pattern {
        mode: "map",
        method: "Leaks.cache",
        marker: "// map leak",
        field: "Leaks.sessions (static)",
        leaks: true,
    },
    Pattern {
        mode: "listeners",
        method: "Leaks.subscribe",
        marker: "// listener leak",
        field: "Leaks.listeners (static)",
        leaks: true,
    },
    Pattern {
        mode: "lru",
        method: "Leaks.recent",
        marker: "// lru cache",
        field: "Leaks.lru (static)",
        leaks: false,
    },
];

/// `pid`'s Java section.
#[track_caller]
fn java_of(report: &Report, pid: u32) -> &JavaReport {
    report
        .targets
        .iter()
        .find(|t| t.pid == pid)
        .and_then(|t| t.java.as_ref())
        .unwrap_or_else(|| panic!("pid {pid}: no java section\n{}", report.describe()))
}

/// `pid`'s java-heap stacks, most outstanding first.
fn java_stacks(report: &Report, pid: u32) -> Vec<&StackReport> {
    let mut java: Vec<&StackReport> = report
        .stacks
        .iter()
        .filter(|s| s.kind == StackKind::JavaHeap && s.pid == pid)
        .collect();
    java.sort_by_key(|s| std::cmp::Reverse(s.outstanding_bytes));
    java
}

/// Asserts that `pid` has a java-heap stack at `p`'s method and marked
/// line, called from `Leaks.handle`, and that the path the JVM found for
/// its samples ends at `p`'s field; returns the stack. (Its bytes are its
/// share of the JVM's few dozen live samples: not ranked here.)
#[track_caller]
fn assert_at_line<'a>(report: &'a Report, pid: u32, p: &Pattern) -> &'a StackReport {
    let line = marked_line(&leaks_source(), p.marker);
    let java = java_stacks(report, pid);
    let at = |s: &&StackReport| {
        let f = &s.frames[0];
        (f.function.as_deref(), f.file.as_deref(), f.line, f.language)
            == (Some(p.method), None, Some(line), Some(Language::Java))
    };
    let stack = java.iter().copied().find(at).unwrap_or_else(|| {
        panic!(
            "{}: no java-heap stack at {} line {line}\n{}\n{:?}",
            p.mode,
            p.method,
            java.iter()
                .take(5)
                .map(|s| format!("{}\n  {}", s.summary(), s.series_text()))
                .collect::<Vec<_>>()
                .join("\n"),
            java_of(report, pid)
        )
    });
    assert_eq!(
        stack.functions().get(1).copied(),
        Some("Leaks.handle"),
        "{}",
        stack.summary()
    );
    let j = java_of(report, pid);
    assert!(j.reachability, "{}: {j:?}", p.mode);
    let held = j
        .retained
        .iter()
        .find(|r| r.function == p.method && r.line == Some(line))
        .unwrap_or_else(|| panic!("{}: no path for {}: {j:?}", p.mode, p.method));
    assert_eq!(
        held.path.last().map(String::as_str),
        Some(p.field),
        "{}: {held:?}",
        p.mode
    );
    stack
}

/// [`assert_at_line`], and the stack's verdict: `leak` for the leaks, which
/// also hold at the end more than half again what they held at the run's
/// middle; `plateau` for the bounded cache (it fills in its first 10 s).
#[track_caller]
fn assert_pattern(report: &Report, pid: u32, p: &Pattern) {
    let stack = assert_at_line(report, pid, p);
    let verdict = match p.leaks {
        true => Verdict::Leak,
        false => Verdict::Plateau,
    };
    assert_eq!(
        stack.verdict,
        verdict,
        "{}: {}\n{}\n{}",
        p.mode,
        stack.summary(),
        stack.evidence(),
        stack.series_text()
    );
    if !p.leaks {
        return;
    }
    let end = report.duration_secs;
    let middle = stack
        .series
        .iter()
        .rev()
        .find(|s| s.t <= end / 2.0)
        .map_or(0, |s| s.bytes);
    assert!(
        stack.outstanding_bytes * 2 > middle * 3,
        "{}: {}\n{}\n{}",
        p.mode,
        stack.summary(),
        stack.evidence(),
        stack.series_text()
    );
}

/// Asserts that the JVM runs on with no recording (`jcmd JFR.check`), and
/// that no file memtrace (pid `memtrace`) made is left in its /tmp.
#[track_caller]
fn assert_left_as_found(jdk: &str, pid: u32, memtrace: u32, report: &Report) {
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        state
            .split(") ")
            .nth(1)
            .is_some_and(|s| !s.starts_with('Z')),
        "pid {pid} did not run on: {state:?}"
    );
    let check = jcmd(jdk, pid, &["JFR.check"]);
    assert!(
        check.contains("No available recordings"),
        "pid {pid}: a recording is left:\n{check}"
    );
    let j = java_of(report, pid);
    assert!(j.stopped && j.reads >= 5, "{j:?}");
    let tmp = PathBuf::from(format!("/proc/{pid}/root/tmp"));
    let left: Vec<String> = std::fs::read_dir(&tmp)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("memtrace-{memtrace}-")) || n.starts_with(".attach_pid"))
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", tmp.display());
}

/// The four patterns on `jdk`, one JVM each, traced together with `--pid`
/// for 26 s (the LRU fills in its first 10).
fn patterns_on(jdk: &str) {
    let jvms: Vec<Workload> = PATTERNS
        .iter()
        .map(|p| start_leaks(jdk, &[], &[p.mode, RATE]))
        .collect();
    let pids: Vec<u32> = jvms.iter().map(Workload::pid).collect();
    let mut tracer = Tracer::attach(&pids, &options("26s"));
    tracer.wait_tracing(secs(30));
    let memtrace = tracer.pid();
    let run = tracer.finish(CMD_TIMEOUT);
    run.assert_success();
    let report = run.report();
    for (p, &pid) in PATTERNS.iter().zip(&pids) {
        assert_pattern(&report, pid, p);
        assert_left_as_found(jdk, pid, memtrace, &report);
    }
    // Said once per JVM, on stderr only.
    for pid in &pids {
        assert_eq!(
            run.stderr
                .matches(&format!("pid {pid}: JFR recording"))
                .count(),
            1,
            "{}",
            run.stderr
        );
    }
}

#[test]
fn jdk17_leaks_are_named_at_their_lines_and_a_cache_is_a_plateau() {
    patterns_on(JDK17);
}

#[test]
fn temurin25_leaks_are_named_at_their_lines_and_a_cache_is_a_plateau() {
    patterns_on(JDK25);
}

/// `memtrace -- java ...`: the JVM is attached to once it catches SIGQUIT,
/// recorded from then on; it exits on its own and the run ends with it.
#[test]
fn a_java_command_is_recorded_from_its_start() {
    let dir = memtrace_integration::scratch_dir("java-command");
    let json = dir.join("report.json");
    let mut args: Vec<String> = ["--interval", "2s", "-o", json.to_str().unwrap(), "--"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(leaks_command(JDK25, &JVM_OPTIONS, &["list", RATE, "24"]));
    let run = run_memtrace(&args, CMD_TIMEOUT);
    run.assert_success();
    assert!(run.stdout.starts_with("ready\nrequests "), "{}", run.stdout);
    let report = run.report_from(&std::fs::read_to_string(&json).unwrap());
    let pid = report.targets[0].pid;
    assert_pattern(&report, pid, &PATTERNS[0]);
    let j = java_of(&report, pid);
    assert!(j.reads >= 5 && j.state == "recorded", "{j:?}");
}

/// A JVM running before memtrace, selected by `--comm` (under a name of its
/// own: other tests run JVMs at the same time): recorded, its leak named.
#[test]
fn a_jvm_selected_by_name() {
    let link = memtrace_integration::scratch_dir("java-by-name").join("java_by_name");
    std::os::unix::fs::symlink(Path::new(JDK17).join("bin/java"), &link).unwrap();
    let cmd = leaks_command(JDK17, &JVM_OPTIONS, &["list", RATE]);
    let jvm = Workload::spawn_ready(&link, &cmd[1..]);
    let mut args = options("16s");
    args.extend(["--comm", "java_by_name"]);
    let run = run_memtrace(&args, CMD_TIMEOUT);
    run.assert_success();
    let report = run.report();
    assert_pattern(&report, jvm.pid(), &PATTERNS[0]);
    assert_eq!(java_of(&report, jvm.pid()).state, "recorded");
}

/// A JVM in pid and mount namespaces of its own, with a /tmp of its own (a
/// container's): memtrace reaches its attach socket, writes and reads its
/// files there, and leaves nothing.
#[test]
fn a_jvm_in_its_own_namespaces() {
    // The classes stay reachable through a descriptor opened before the
    // new /tmp hides what was there (the workspace may be under /tmp).
    let classes = memtrace_integration::leaks_classes(JDK17);
    let java = Path::new(JDK17).join("bin/java");
    let shell = format!(
        "exec 3<{} && mount -t tmpfs tmpfs /tmp && exec {} {} -cp /proc/self/fd/3 Leaks list {RATE}",
        classes.display(),
        java.display(),
        JVM_OPTIONS.join(" ")
    );
    let unshare = Workload::spawn_ready(
        Path::new("/usr/bin/unshare"),
        &["-p", "-f", "-m", "--mount-proc", "sh", "-c", &shell],
    );
    // unshare forks the namespace's first process: the JVM, its pid 1.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.pid())).unwrap();
    let pid: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1")),
        "{status}"
    );
    let tracer = trace_pid(pid, &options("16s"));
    let memtrace = tracer.pid();
    let run = tracer.finish(CMD_TIMEOUT);
    run.assert_success();
    let report = run.report();
    assert_pattern(&report, pid, &PATTERNS[0]);
    assert_left_as_found(JDK17, pid, memtrace, &report);
    assert!(
        !Path::new("/tmp/.java_pid1").exists(),
        "the container's attach socket is in the host's /tmp"
    );
}

/// The JVM's own count: `GC.class_histogram` (live objects, after a full
/// collection) before memtrace attaches and after the leak stopped; the
/// growth of `byte[]` against what memtrace reports at the leaking line.
#[test]
fn the_leak_matches_the_jvms_class_histogram() {
    let mut jvm = start_leaks(JDK17, &[], &["list", RATE, "18", "stable"]);
    let before = histogram_bytes(&jcmd(JDK17, jvm.pid(), &["GC.class_histogram"]), "[B");
    let tracer = trace_pid(jvm.pid(), &options("26s"));
    let line = jvm.next_line(secs(30));
    assert!(line.starts_with("requests "), "{line}");
    let report = tracer.finish(CMD_TIMEOUT).report();
    let after = histogram_bytes(&jcmd(JDK17, jvm.pid(), &["GC.class_histogram"]), "[B");
    // (Its verdict: a leak that stopped.)
    let top = assert_at_line(&report, jvm.pid(), &PATTERNS[0]);
    eprintln!(
        "anchor: memtrace {} B at Leaks.remember, class histogram byte[] +{} B",
        top.outstanding_bytes,
        after - before
    );
    assert_within(
        "Leaks.remember's outstanding bytes against the histogram's byte[] growth",
        top.outstanding_bytes,
        after - before,
        30.0,
        &format!("{} {}", top.summary(), top.series_text()),
    );
}

/// JVMs memtrace does not attach to, each said in one line and traced
/// natively: the attach mechanism disabled (no SIGQUIT: it would print a
/// thread dump), a runtime without JFR (a jlink image of java.base); and
/// `--no-runtime-attach`. A JVM that does not catch SIGQUIT (`-Xrs`)
/// starts its attach listener with itself: it is recorded, no signal sent.
#[test]
fn refused_jvms_are_said_and_left_alone() {
    let jre = memtrace_integration::scratch_dir("jre-without-jfr").join("jre");
    let out = std::process::Command::new(Path::new(JDK25).join("bin/jlink"))
        .args(["--add-modules", "java.base", "--output"])
        .arg(&jre)
        .output()
        .expect("jlink");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let classes = memtrace_integration::leaks_classes(JDK25);
    let mut disabled = start_leaks(JDK17, &["-XX:+DisableAttachMechanism"], &["list", RATE]);
    let mut unsignalled = start_leaks(JDK17, &["-Xrs"], &["list", RATE]);
    let no_jfr = Workload::spawn_ready(
        &jre.join("bin/java"),
        &["-cp", classes.to_str().unwrap(), "Leaks", "list", RATE],
    );
    let pids = [disabled.pid(), unsignalled.pid(), no_jfr.pid()];
    let mut tracer = Tracer::attach(&pids, &options("6s"));
    tracer.wait_tracing(secs(30));
    let run = tracer.finish(CMD_TIMEOUT);
    run.assert_success();
    let report = run.report();
    assert_eq!(java_of(&report, pids[1]).state, "recorded");
    for (pid, why) in [
        (pids[0], "it was started with -XX:+DisableAttachMechanism"),
        (pids[2], "its runtime has no JFR (Module jdk.jfr not found."),
    ] {
        let lines: Vec<&str> = run
            .stderr
            .lines()
            .filter(|l| l.contains(&format!("pid {pid}: its Java heap not read")))
            .collect();
        assert!(
            lines.len() == 1
                && lines[0].contains(why)
                && lines[0].ends_with("its native memory only"),
            "pid {pid}: {lines:?}\n{}",
            run.stderr
        );
        let j = java_of(&report, pid);
        assert_eq!(j.state, "refused", "{j:?}");
        assert!(java_stacks(&report, pid).is_empty());
        assert!(
            report
                .stacks
                .iter()
                .any(|s| s.pid == pid && s.kind == StackKind::Heap),
            "pid {pid}: no native stack\n{}",
            report.describe()
        );
    }
    // Running, and no thread dump written into their output.
    for jvm in [&mut disabled, &mut unsignalled] {
        assert!(jvm.try_wait().is_none(), "pid {} ended", jvm.pid());
        assert!(
            !jvm.output().contains("Full thread dump"),
            "{}",
            jvm.output()
        );
    }
    // --no-runtime-attach: no signal, no recording, no section.
    let jvm = start_leaks(JDK17, &[], &["list", RATE]);
    let tracer = trace_pid(
        jvm.pid(),
        &[
            "--format",
            "json",
            "--duration",
            "4s",
            "--no-runtime-attach",
        ],
    );
    let report = tracer.finish(CMD_TIMEOUT).report();
    assert!(
        report.targets[0].java.is_none(),
        "{:?}",
        report.targets[0].java
    );
    assert!(!Path::new(&format!("/tmp/.java_pid{}", jvm.pid())).exists());
}

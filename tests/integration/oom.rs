//! OOM kills: a traced process the kernel OOM-kills in a memory cgroup is
//! reported with its leaking stack and the bytes it held (the text report,
//! rendered offline, starts with the kill), and `--oom-only` prints one
//! line per kill. (The agent tracing a process back where the OOM killer
//! struck: `agent`.)

use std::time::Duration;

use memtrace_integration::{
    compile_c, memtrace_bin, scratch_dir, MemoryCgroup, Report, StackExt, Tracer, Workload,
    TRACING_TIMEOUT,
};

/// The memory limit of the OOM tests' cgroups.
const LIMIT: u64 = 64 << 20;

/// Starts oom_hoard in a fresh cgroup limited to [`LIMIT`]; it waits for
/// SIGUSR1 before hoarding.
pub(crate) fn hoarder_in_cgroup(tag: &str) -> (Workload, MemoryCgroup) {
    let exe = compile_c("oom_hoard");
    let cgroup = MemoryCgroup::new(tag, LIMIT);
    let w = Workload::spawn_ready(&exe, &[] as &[&str]);
    cgroup.add(w.pid());
    (w, cgroup)
}

#[test]
fn oom_kill_of_a_traced_process_names_its_leaking_stack() {
    let (mut hoarder, cgroup) = hoarder_in_cgroup("oom");
    let pid = hoarder.pid();
    let dir = scratch_dir("oom");
    let json = dir.join("oom.json");
    let json_arg = json.to_str().unwrap();
    let mut tracer = Tracer::attach(&[pid], &["--no-live", "-o", json_arg]);
    tracer.wait_tracing(TRACING_TIMEOUT);
    hoarder.signal(libc::SIGUSR1);
    let status = hoarder.wait_exit(Duration::from_secs(60));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "oom_hoard should be OOM-killed (SIGKILL), got {status:?}"
    );
    // An OOM-killed --pid target ends the run by itself.
    let out = tracer.finish(Duration::from_secs(60));
    out.assert_success();
    let ctx = out.describe();
    assert!(
        out.stderr
            .contains(&format!("memtrace: OOM kill: pid {pid} (oom_hoard)")),
        "the kill is noted on stderr as it happens\n{ctx}"
    );
    let text = std::fs::read_to_string(&json).unwrap();
    let report = Report::parse(&text, "memtrace --pid (oom)").unwrap_or_else(|e| panic!("{e}"));
    let rctx = report.describe();
    // Every kill on the node is reported (tests running alongside may add
    // theirs); this one once.
    let kills: Vec<_> = report.oom_kills.iter().filter(|k| k.pid == pid).collect();
    assert_eq!(kills.len(), 1, "{text}");
    let kill = kills[0];
    assert_eq!(kill.comm, "oom_hoard", "{text}");
    assert!(kill.traced, "{text}");
    assert_eq!(kill.cgroup.as_deref(), Some(cgroup.path.as_str()), "{text}");
    // The kernel's anon RSS and the traced bytes are both close to the
    // limit: 1 MiB chunks, killed when the cgroup reaches 64 MiB (a few
    // MiB go to libc, page tables and the chunk being written).
    assert!(
        (LIMIT - (8 << 20)..=LIMIT + (1 << 20)).contains(&kill.anon_rss_bytes),
        "anon RSS at the kill {} not within 8 MiB of the {LIMIT} limit\n{text}",
        kill.anon_rss_bytes
    );
    let top = kill.top_stacks.first().expect("the victim's stacks");
    assert_eq!(
        top.functions()[..3],
        ["hoard_chunk", "grow_hoard", "main"],
        "{rctx}"
    );
    assert!(
        (LIMIT - (8 << 20)..=LIMIT + (1 << 20)).contains(&top.outstanding_bytes),
        "hoard_chunk held {} at the kill, expected within 8 MiB of {LIMIT}\n{rctx}",
        top.outstanding_bytes
    );
    assert_eq!(
        top.outstanding_bytes,
        top.outstanding_allocations * (1 << 20)
    );
    assert!(kill.traced_outstanding_bytes >= top.outstanding_bytes);

    // The text report starts with the kill (rendered offline from the
    // snapshot, which keeps it).
    let offline = std::process::Command::new(memtrace_bin())
        .args(["report", json_arg])
        .output()
        .unwrap();
    let rendered = String::from_utf8_lossy(&offline.stdout);
    assert!(rendered.starts_with("!!! OOM kill: pid "), "{rendered}");
    assert!(
        rendered.contains(&format!(
            "!!! OOM kill: pid {pid} (oom_hoard) uid 0 anon-rss "
        )),
        "{rendered}"
    );
    assert!(
        rendered.contains("hoard_chunk at ")
            && rendered.contains("when it was chosen; the largest:"),
        "{rendered}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn oom_only_prints_a_line_per_kill() {
    let (mut hoarder, cgroup) = hoarder_in_cgroup("oomonly");
    let pid = hoarder.pid();
    let mut tracer = Tracer::spawn(&["--oom-only".into(), "--duration".into(), "30s".into()]);
    wait_stderr_prefix(&mut tracer, "memtrace: watching for OOM kills");
    hoarder.signal(libc::SIGUSR1);
    // The victim is gone as soon as it is killed: its cgroup comes from
    // what memtrace read of every process when it started. (It is reaped
    // only once the line is out, so a failure shows the whole run.)
    let want = format!("OOM kill: pid {pid} ");
    tracer.wait_output(&want, Duration::from_secs(60), "no line for the kill");
    hoarder.wait_exit(Duration::from_secs(60));
    let out = tracer.interrupt(Duration::from_secs(30));
    out.assert_success();
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains(&format!("pid {pid} ")))
        .collect();
    assert_eq!(lines.len(), 1, "one line for the kill\n{}", out.describe());
    // "2026-11-25T00:08:40.123Z OOM kill: pid ...": a log line.
    let (time, line) = lines[0].split_once(' ').unwrap();
    assert!(time.len() == 24 && time.ends_with('Z'), "{time}");
    assert!(
        line.starts_with(&format!("OOM kill: pid {pid} (oom_hoard) uid 0 anon-rss ")),
        "{line}"
    );
    assert!(
        line.ends_with(&format!(" cgroup {}", cgroup.path)),
        "{line}"
    );
}

/// Waits for a stderr line of memtrace starting with `prefix`.
fn wait_stderr_prefix(tracer: &mut Tracer, prefix: &str) {
    let deadline = std::time::Instant::now() + TRACING_TIMEOUT;
    while std::time::Instant::now() < deadline {
        if tracer.snapshot().lines().any(|l| l.starts_with(prefix)) {
            return;
        }
        assert!(
            tracer.is_running(),
            "memtrace exited\n{}",
            tracer.snapshot()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no {prefix:?} line\n{}", tracer.snapshot());
}

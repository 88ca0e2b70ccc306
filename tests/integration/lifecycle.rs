//! Target lifecycle:
//! - exec: a target that calls exec releases its old image's memory — heap
//!   blocks still live in the kernel's table and anonymous mappings tracked
//!   in userspace — so only what the new image holds may be reported
//!   (exec_after_leak.c execs leak_in_script.c); a shell script after `--`
//!   (`#!/bin/sh` and `#!/usr/bin/env sh`) that `exec`s a leaky program is
//!   traced into the program; exec into an image whose allocator is
//!   another file (a static executable: late_image.c) is hooked again;
//! - exit: a `--pid` target that exits mid-trace (left unreaped) or is
//!   killed mid-call ends the trace early with its report and `exited:
//!   true`;
//! - forks are followed in `-- CMD` mode and with `--pid --follow-forks`,
//!   not with plain `--pid` (fork_follow.c), and children that allocate
//!   at once — forked, vfork'd and exec'd, posix_spawn'd, in constructors
//!   — are traced from their first allocation, under their own names
//!   (fork_first.c);
//! - a pid handed to another process right after the target exits is not
//!   mistaken for it (pid_reuse.c).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use memtrace_integration::{
    busy_loop, compile_c, compile_c_with, json_args_with, json_cmd_args, losses_except,
    run_memtrace, run_memtrace_cmd, run_memtrace_cmd_env, scratch_dir, secs, send_signal,
    trace_pid, Report, StackExt, Tracer, Workload, BUSY_LEAK_SIZE, CMD_TIMEOUT, TRACING_TIMEOUT,
};
use memtrace_report::{StackKind, StackReport};

#[test]
fn exec_releases_the_old_image() {
    let first = compile_c("exec_after_leak");
    let second = compile_c("leak_in_script");
    let report = run_memtrace_cmd(&[], &[first.as_os_str(), second.as_os_str()]);
    let ctx = report.describe();
    for gone in ["before_exec", "map_before_exec"] {
        assert!(
            report.stacks_of(gone).is_empty(),
            "{gone}'s memory was released by exec but is still reported\n{ctx}"
        );
    }
    let leak = report.stack_of("leak_in_script");
    assert_eq!(leak.outstanding_bytes, 60_000, "new image's leak\n{ctx}");
    assert_eq!(leak.outstanding_allocations, 30, "new image's leak\n{ctx}");
    assert_eq!(
        report.totals.outstanding_bytes, 60_000,
        "only the new image's leak may remain outstanding\n{ctx}"
    );
    report.assert_target("leak_in_script", None);
    report.assert_consistent();
}

/// leak_in_script.c: 30 x 2000 bytes leaked from leak_in_script().
const SCRIPT_LEAKS: u64 = 30;
const SCRIPT_LEAK_SIZE: u64 = 2000;

/// Writes an executable script `dir/name` with `shebang` that execs `exe`.
fn write_exec_script(dir: &Path, name: &str, shebang: &str, exe: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let exe = exe.to_str().expect("utf-8 workload path");
    assert!(!exe.contains('\''), "workload path {exe} contains a quote");
    let path = dir.join(name);
    std::fs::write(&path, format!("{shebang}\nexec '{exe}'\n"))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", path.display()));
    path
}

#[test]
fn script_after_dashdash_is_traced_into_its_exec() {
    let exe = compile_c("leak_in_script");
    let dir = scratch_dir("script");
    for (name, shebang) in [("sh.sh", "#!/bin/sh"), ("env.sh", "#!/usr/bin/env sh")] {
        let script = write_exec_script(&dir, name, shebang, &exe);
        let file = dir.join(format!("{name}.json"));
        let args = json_cmd_args(&[OsString::from("-o"), file.clone().into()], &[script]);
        let out = run_memtrace(&args, CMD_TIMEOUT);
        out.assert_success();
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "-o {} was not written: {e}\n{}",
                file.display(),
                out.describe()
            )
        });
        let report = out.report_from(&text);
        let ctx = format!("(script `{shebang}` + exec)\n{}", report.describe());
        let s = report.stack_of("leak_in_script");
        assert_eq!(
            (s.kind, s.outstanding_bytes, s.outstanding_allocations),
            (
                StackKind::Heap,
                SCRIPT_LEAKS * SCRIPT_LEAK_SIZE,
                SCRIPT_LEAKS
            ),
            "leak_in_script: (kind, outstanding_bytes, outstanding_allocations) {ctx}"
        );
        assert_eq!(
            report.totals.outstanding_bytes,
            SCRIPT_LEAKS * SCRIPT_LEAK_SIZE,
            "totals.outstanding_bytes: what the shell held was released by its exec, the \
             program leaks only leak_in_script's blocks {ctx}"
        );
        report.assert_target("leak_in_script", None);
        // The shell (and env) run first, traced, and allocate from dozens of
        // stacks walked without frame pointers (Debian builds): a
        // collision in the kernel's stack table (`stack_lost`, documented
        // in the README) happens in about one run in ten. Their bytes are
        // released by the exec anyway; every other loss must be 0.
        let losses = losses_except(&report, "stack_lost");
        assert!(
            losses.is_empty(),
            "losses other than stack_lost should be 0: {} {ctx}",
            losses.join(", ")
        );
        report.assert_consistent();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// late_image.c: 20 x 500 B kept after the exec.
const LATE_IMAGE_LEAK: u64 = 20 * 500;

#[test]
fn exec_into_another_allocator_is_hooked() {
    let first = compile_c("exec_after_leak");
    let late = compile_c_with("late_image", &["-static"]);
    let dir = scratch_dir("late-image");
    let go = dir.join("go");
    let args = json_cmd_args(
        &["--verbose"],
        &[first.as_os_str(), late.as_os_str(), go.as_os_str()],
    );
    let mut tracer = Tracer::spawn(&args);
    // The exec'd image allocates once its own probes are in place.
    tracer.wait_line(&format!("malloc in {} (", late.display()), CMD_TIMEOUT);
    std::fs::write(&go, "").expect("go file");
    let out = tracer.finish(CMD_TIMEOUT);
    out.assert_success();
    std::fs::remove_dir_all(&dir).unwrap();
    let report = out.report();
    let ctx = report.describe();
    report.assert_target("late_image", None);
    let t = &report.targets[0];
    assert!(
        t.allocators.iter().any(|a| a == late.to_str().unwrap()),
        "targets[0].allocators {:?} should name the static executable exec'd into ({}): its \
         allocator is hooked after the exec\n{ctx}",
        t.allocators,
        late.display()
    );
    let problems =
        report.function_mismatches("late_image_leak", StackKind::Heap, LATE_IMAGE_LEAK, 20);
    assert!(problems.is_empty(), "{problems:?}\n{ctx}");
    // Only the new image's memory remains (exec_after_leak's blocks went
    // with the exec): its leak, and what its static libc's startup keeps
    // (the command is hooked before its new image runs, so that is seen).
    let startup: u64 = report
        .stacks
        .iter()
        .filter(|s| s.functions().contains(&"__libc_init_first"))
        .map(|s| s.outstanding_bytes)
        .sum();
    assert_eq!(
        report.totals.outstanding_bytes,
        LATE_IMAGE_LEAK + startup,
        "only the new image's leak and its libc's startup remain\n{ctx}"
    );
    report.assert_no_losses();
    report.assert_consistent();
}

/// leak_then_exit.c: 20 x 1000 bytes leaked on SIGUSR1, exit 0.5 s later.
const EXIT_LEAKS: u64 = 20;
const EXIT_LEAK_SIZE: u64 = 1000;

#[test]
fn pid_target_exiting_ends_the_trace() {
    let mut workload = Workload::spawn_ready(&compile_c("leak_then_exit"), &[] as &[&str]);
    let pid = workload.pid();
    let tracer = trace_pid(pid, &json_args_with(&["--duration", "30s"]));
    workload.signal(libc::SIGUSR1);
    // The workload is left unreaped (a zombie) until memtrace is done: an
    // exited process must be noticed without its parent's wait.
    let out = tracer.finish(secs(60));
    let status = workload.wait_exit(secs(10));
    assert_eq!(
        status.code(),
        Some(0),
        "leak_then_exit should exit 0 on its own"
    );
    out.assert_success();
    assert!(
        out.elapsed < secs(15),
        "memtrace --duration 30s should end soon after its only target exits (~0.5 s after \
         SIGUSR1), not at the end of --duration\n{}",
        out.describe()
    );
    let report = out.report();
    let ctx = report.describe();
    report.assert_target(workload.name(), Some(pid));
    assert!(report.targets[0].exited, "targets[0].exited\n{ctx}");
    let s = report.stack_of("leak_then_exit");
    assert_eq!(
        (s.kind, s.outstanding_bytes, s.outstanding_allocations),
        (StackKind::Heap, EXIT_LEAKS * EXIT_LEAK_SIZE, EXIT_LEAKS),
        "leak_then_exit: (kind, outstanding_bytes, outstanding_allocations)\n{ctx}"
    );
    report.assert_no_losses();
    report.assert_consistent();
}

#[test]
fn target_killed_mid_call_ends_the_run_with_its_report() {
    let workload = busy_loop();
    let pid = workload.pid();
    let tracer = trace_pid(pid, &json_args_with(&["--duration", "60s"]));
    thread::sleep(Duration::from_millis(1500));
    // busy_loop is inside malloc or free nearly all the time.
    workload.signal(libc::SIGKILL);
    let out = tracer.finish(secs(120));
    out.assert_success();
    let report = out.report();
    let ctx = report.describe();
    assert!(
        report.duration_secs < 30.0,
        "memtrace --duration 60s should stop tracing soon after its only target died\n{ctx}"
    );
    report.assert_target("busy_loop", Some(pid));
    assert!(report.targets[0].exited, "targets[0].exited\n{ctx}");
    let leak = report.stack_of("busy_leak");
    assert!(
        leak.outstanding_allocations > 0
            && leak.outstanding_bytes == BUSY_LEAK_SIZE * leak.outstanding_allocations,
        "busy_leak: what the target held when it died, {BUSY_LEAK_SIZE} B per block\n{ctx}"
    );
    report.assert_consistent();
}

/// fork_follow.c: what each generation keeps.
const PARENT_LEAK: u64 = 10 * 1000;
const CHILD_LEAK: u64 = 20 * 2000;
const GRANDCHILD_LEAK: u64 = 5 * 3000;

/// The child frees its copies of the parent's 10 blocks.
const INHERITED_FREES: u64 = 10;

/// Asserts a followed family: three targets, all exited, each leak exact
/// under its own process, the child's frees of inherited blocks unknown.
#[track_caller]
fn assert_family(report: &Report, parent: Option<u32>) {
    let ctx = report.describe();
    let one = |f: &str, bytes: u64, allocs: u64| -> &StackReport {
        let s = report.stack_of(f);
        assert_eq!(
            (
                s.kind,
                s.outstanding_bytes,
                s.outstanding_allocations,
                s.frees
            ),
            (StackKind::Heap, bytes, allocs, 0),
            "{f}: (kind, outstanding_bytes, outstanding_allocations, frees)\n{ctx}"
        );
        s
    };
    let p = one("parent_leak", PARENT_LEAK, 10).pid;
    let c = one("child_leak", CHILD_LEAK, 20).pid;
    let g = one("grandchild_leak", GRANDCHILD_LEAK, 5).pid;
    assert!(
        parent.is_none_or(|want| want == p) && p != c && c != g && p != g,
        "parent_leak, child_leak and grandchild_leak should each be in its own process \
         (pids {p}, {c}, {g}; parent {parent:?})\n{ctx}"
    );
    let mut targets: Vec<u32> = report.targets.iter().map(|t| t.pid).collect();
    targets.sort_unstable();
    let mut want = vec![p, c, g];
    want.sort_unstable();
    assert_eq!(
        targets, want,
        "targets: the parent and the two it forked\n{ctx}"
    );
    assert!(
        report
            .targets
            .iter()
            .all(|t| t.exited && t.comm == "fork_follow"),
        "every target exited, named fork_follow\n{ctx}"
    );
    assert_eq!(
        report.totals.outstanding_bytes,
        PARENT_LEAK + CHILD_LEAK + GRANDCHILD_LEAK,
        "totals.outstanding_bytes: the three leaks, nothing else (the child's frees of its \
         parent's blocks are not the parent's)\n{ctx}"
    );
    assert_eq!(
        report.counters.free_unknown, INHERITED_FREES,
        "counters.free_unknown: the child's frees of the blocks it inherited\n{ctx}"
    );
    report.assert_no_losses();
    report.assert_consistent();
}

/// The only child of `pid` (`/proc/PID/task/PID/children`), once it has
/// one (within 10 s).
fn child_of(pid: u32) -> u32 {
    let deadline = Instant::now() + secs(10);
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if let Some(child) = children.split_whitespace().next() {
            return child.parse().expect("a pid");
        }
        assert!(
            Instant::now() < deadline,
            "pid {pid} forked no child within 10 s"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Lets fork_follow's child and grandchild allocate, each once memtrace
/// says its probes are in place (`--verbose`) when forks are followed, and
/// returns how long after its fork that was (ms), from lines `pid C
/// (forked by pid P): followed, its probes in place X ms after its fork`.
fn release_family(tracer: &mut Tracer, parent: u32, followed: bool) -> Vec<f64> {
    let mut delays = Vec::new();
    let mut pid = parent;
    for _generation in 0..2 {
        let child = child_of(pid);
        if followed {
            let line = tracer.wait_line(&format!("pid {child} (forked by pid {pid})"), secs(30));
            let ms = line
                .split_once("in place ")
                .and_then(|(_, rest)| rest.split_once(" ms")?.0.parse().ok())
                .unwrap_or_else(|| panic!("no delay in {line:?}"));
            delays.push(ms);
        }
        // Releases the child.
        send_signal(child, libc::SIGUSR1);
        pid = child;
    }
    delays
}

/// fork_first.c: what each kind of child keeps the instant it exists.
const FORKED: (u64, u64) = (8, 4000);
const EARLY: (u64, u64) = (3, 5000);
const EXECD: (u64, u64) = (4, 6000);
const GRANDCHILD: (u64, u64) = (2, 7000);

/// Children that allocate at once — after fork, vfork + exec and
/// posix_spawn, in a constructor before main, and a grandchild — are
/// traced from their first allocation (held by the kernel until their
/// probes are in), each under its own pid and name.
#[test]
fn command_mode_traces_children_from_their_first_allocation() {
    let exe = compile_c("fork_first");
    let dir = scratch_dir("fork_first");
    // A copy under another name: what the exec'd children run.
    let spawned = dir.join("first_spawned");
    std::fs::copy(&exe, &spawned).expect("copying fork_first");
    let report = run_memtrace_cmd(&[], &[exe.as_os_str(), spawned.as_os_str()]);
    let ctx = report.describe();
    // (function, blocks per process, size, processes)
    let want = [
        ("forked_leak", FORKED, 9),
        ("early_leak", EARLY, 2),
        ("exec_leak", EXECD, 1),
        ("spawn_leak", EXECD, 1),
        ("grandchild_leak", GRANDCHILD, 1),
    ];
    for (function, (blocks, size), processes) in want {
        let stacks = report.stacks_of(function);
        let mut pids: Vec<u32> = stacks.iter().map(|s| s.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        let bytes: u64 = stacks.iter().map(|s| s.outstanding_bytes).sum();
        let allocations: u64 = stacks.iter().map(|s| s.outstanding_allocations).sum();
        assert_eq!(
            (pids.len(), allocations, bytes),
            (
                processes,
                blocks * processes as u64,
                blocks * size * processes as u64
            ),
            "{function}: (processes, outstanding_allocations, outstanding_bytes)\n{ctx}"
        );
    }
    let spawned_pids: Vec<u32> = ["exec_leak", "spawn_leak"]
        .iter()
        .map(|f| report.stack_of(f).pid)
        .collect();
    let mut names: Vec<(&str, &str)> = report
        .targets
        .iter()
        .map(|t| {
            let exe = t.exe.as_deref().unwrap_or("?");
            (t.comm.as_str(), exe.rsplit('/').next().unwrap_or(exe))
        })
        .collect();
    names.sort_unstable();
    let mut want_names = vec![("fork_first", "fork_first"); 11];
    want_names.extend([("first_spawned", "first_spawned"); 2]);
    want_names.sort_unstable();
    assert_eq!(
        names, want_names,
        "targets (comm, exe's file name): the head, its 9 forked children and grandchild under \
         the head's name, the two exec'd under the copy's (pids {spawned_pids:?})\n{ctx}"
    );
    assert!(
        report
            .targets
            .iter()
            .all(|t| t.exited && t.unseen.is_none()),
        "every target exited, none attached late\n{ctx}"
    );
    assert_eq!(
        report.totals.outstanding_bytes,
        want.iter()
            .map(|(_, (blocks, size), n)| blocks * size * *n as u64)
            .sum::<u64>(),
        "totals.outstanding_bytes: the children's leaks, nothing else\n{ctx}"
    );
    report.assert_no_losses();
    report.assert_consistent();
}

#[test]
fn command_mode_follows_forks() {
    let exe = compile_c("fork_follow");
    let args = json_cmd_args(&["--verbose"], &[exe]);
    let mut tracer = Tracer::spawn(&args);
    let line = tracer.wait_tracing(TRACING_TIMEOUT);
    let parent: u32 = line
        .split_whitespace()
        .nth(3)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"));
    let delays = release_family(&mut tracer, parent, true);
    println!("fork_follow -- CMD: probes in place {delays:?} ms after each fork");
    let out = tracer.finish(CMD_TIMEOUT);
    out.assert_success();
    assert_family(&out.report(), Some(parent));
}

/// Two traced processes in one family call posix_memalign at once, each
/// with probes of its own (fork_memalign.c): each return closes its own
/// process's call once, on both probe paths. On 6.1's classic path every
/// return ran once per traced process: 2 of the 400 blocks were found, the
/// others counted as failed calls.
#[test]
fn each_return_is_its_own_processs_with_two_traced_processes() {
    let exe = compile_c("fork_memalign");
    for probes in ["auto", "classic"] {
        let report = run_memtrace_cmd_env(&[], &[&exe], &[("MEMTRACE_PROBES", probes)]);
        let ctx = format!("MEMTRACE_PROBES={probes}\n{}", report.describe());
        let parent = report.stack_of("parent_memalign");
        let child = report.stack_of("child_memalign");
        for (name, s) in [("parent_memalign", parent), ("child_memalign", child)] {
            assert_eq!(
                (s.outstanding_allocations, s.outstanding_bytes),
                (200, 200 * 256),
                "{name}: (outstanding_allocations, outstanding_bytes)\n{ctx}"
            );
        }
        assert_ne!(parent.pid, child.pid, "one leak per process\n{ctx}");
        // Each process's 300 churn pairs; each posix_memalign's malloc
        // nested in it; nothing closed twice (a return without its entry
        // is a loss).
        let c = &report.counters;
        assert_eq!(
            (report.totals.frees, c.failed_allocations, c.nested_calls),
            (600, 0, 400),
            "(totals.frees, counters.failed_allocations, nested_calls)\n{ctx}"
        );
        report.assert_no_losses();
        report.assert_consistent();
    }
}

/// Runs fork_follow in `--pid` mode with `extra` options; the report.
fn trace_fork_follow(extra: &[&str]) -> (Report, u32) {
    let mut workload = Workload::spawn_ready(&compile_c("fork_follow"), &["wait"]);
    let pid = workload.pid();
    let followed = extra.contains(&"--follow-forks");
    let mut tracer = trace_pid(pid, &json_args_with(&[extra, &["--verbose"]].concat()));
    workload.signal(libc::SIGUSR1);
    let delays = release_family(&mut tracer, pid, followed);
    println!("fork_follow --pid {extra:?}: probes in place {delays:?} ms after each fork");
    let out = tracer.finish(secs(60));
    out.assert_success();
    assert_eq!(
        workload.wait_exit(secs(10)).code(),
        Some(0),
        "fork_follow and its children should exit 0"
    );
    (out.report(), pid)
}

#[test]
fn pid_mode_follows_forks_when_asked() {
    let (report, pid) = trace_fork_follow(&["--follow-forks"]);
    assert_family(&report, Some(pid));
}

#[test]
fn pid_mode_does_not_follow_forks_unasked() {
    let (report, pid) = trace_fork_follow(&[]);
    report.assert_target("fork_follow", Some(pid));
    assert_only_leak(
        &report,
        ("parent_leak", PARENT_LEAK, 10),
        &["child_leak", "grandchild_leak"],
        "the forked children's, not traced without --follow-forks",
    );
    assert_eq!(
        report.counters.free_unknown,
        0,
        "counters.free_unknown: the child's frees are not seen either\n{}",
        report.describe()
    );
}

/// Asserts that `leak` = (function, bytes, allocations) is exactly what
/// is outstanding, and that none of `absent` (`why`) has a stack.
#[track_caller]
fn assert_only_leak(report: &Report, leak: (&str, u64, u64), absent: &[&str], why: &str) {
    let ctx = report.describe();
    let (function, bytes, allocations) = leak;
    let s = report.stack_of(function);
    assert_eq!(
        (
            s.outstanding_bytes,
            s.outstanding_allocations,
            report.totals.outstanding_bytes
        ),
        (bytes, allocations, bytes),
        "{function}: (outstanding_bytes, outstanding_allocations), and totals.outstanding_bytes: \
         nothing else\n{ctx}"
    );
    for f in absent {
        assert!(report.stacks_of(f).is_empty(), "{f}: {why}\n{ctx}");
    }
    report.assert_consistent();
}

/// pid_reuse.c: A's leak before it exits.
const FIRST_LIFE: u64 = 10 * 100;

#[test]
fn reused_pid_is_not_the_old_target() {
    let mut workload = Workload::spawn(&compile_c("pid_reuse"), &[] as &[&str]);
    // "A <pid>" from the parent and "ready" from A, in either order.
    let lines = [workload.next_line(secs(10)), workload.next_line(secs(10))];
    let a: u32 = lines
        .iter()
        .find_map(|l| l.strip_prefix("A ")?.parse().ok())
        .unwrap_or_else(|| panic!("pid_reuse printed {lines:?}, expected `A <pid>`"));
    assert!(
        lines.iter().any(|l| l == "ready"),
        "pid_reuse printed {lines:?}"
    );
    let tracer = trace_pid(a, &json_args_with(&["--duration", "60s"]));
    send_signal(a, libc::SIGUSR1);
    let reused = workload.next_line(secs(10));
    assert_eq!(
        reused,
        format!("reused {a}"),
        "pid_reuse should give A's pid to a new process at once (clone3 with set_tid)"
    );
    let out = tracer.finish(secs(60));
    out.assert_success();
    assert_eq!(
        workload.wait_exit(secs(10)).code(),
        Some(0),
        "pid_reuse exit code"
    );
    let report = out.report();
    let ctx = format!("{}\nstderr:\n{}", report.describe(), out.stderr);
    report.assert_target("pid_reuse", Some(a));
    assert!(report.targets[0].exited, "targets[0].exited\n{ctx}");
    // What A held when it exited: the new owner's exec is not A's.
    assert_only_leak(
        &report,
        ("first_life", FIRST_LIFE, 10),
        &["impostor_leak", "impostor_map"],
        "the process that got A's pid after A exited",
    );
    assert!(
        report.duration_secs < 30.0,
        "memtrace --duration 60s should stop when A exits, not trace its pid's next owner\n{ctx}"
    );
}

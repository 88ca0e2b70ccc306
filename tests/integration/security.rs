//! Security, with real processes and real BPF:
//! - reports never go through a link another user planted: one found at
//!   start is an error before anything is traced; one planted at the
//!   report's name while tracing is replaced by the report (renamed over
//!   it), a hard link too, and their targets stay as they were; no
//!   temporary file is left behind;
//! - reports hold addresses, sizes and symbols, never memory: a workload
//!   whose leaked blocks and mapping are full of a secret (secret_leak.c)
//!   is reported with its exact bytes, and the secret appears in no output
//!   format (text, JSON, SVG, folded, pprof), neither as text nor as hex
//!   (the agent's reports are these same files).
//!
//! (The agent's HTTP surface: `agent`; the manifests' capabilities:
//! `deploy`.)

use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use memtrace_integration::{
    compile_c, leak_signal, run_memtrace, scratch_dir, secs, trace_pid, CMD_TIMEOUT, NOBODY,
};
use memtrace_report::StackKind;

/// leak_signal.c, as run here: 20 blocks of 1000 bytes from leak_fixed.
const LINK_LEAKS: u64 = 20;
const LINK_LEAK_SIZE: u64 = 1000;

/// A directory of its own for `uid`, as a user would have.
fn user_dir(parent: &Path, uid: u32) -> PathBuf {
    let dir = parent.join("user");
    std::fs::create_dir(&dir).expect("create the user's directory");
    std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).expect("chown the user's directory");
    dir
}

/// A symlink at `link` to `target`, owned by `uid` (as if `uid` made it).
fn plant_symlink(target: &Path, link: &Path, uid: u32) {
    symlink(target, link).expect("plant a symlink");
    std::os::unix::fs::lchown(link, Some(uid), Some(uid)).expect("chown the symlink");
}

/// Files of root's that the planted links point at, with their content.
fn victims(parent: &Path) -> Vec<(PathBuf, &'static str)> {
    let dir = parent.join("root-only");
    std::fs::create_dir(&dir).expect("create root's directory");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod 700");
    let files = vec![
        (dir.join("victim"), "root's file\n"),
        (dir.join("hard-victim"), "root's other file\n"),
    ];
    for (path, content) in &files {
        std::fs::write(path, content).expect("write a victim file");
    }
    files
}

#[track_caller]
fn assert_untouched(victims: &[(PathBuf, &str)]) {
    for (path, content) in victims {
        let now = std::fs::read_to_string(path).expect("read a victim file");
        assert_eq!(
            &now,
            content,
            "{} was written through a planted link",
            path.display()
        );
    }
}

#[test]
fn planted_link_at_start_is_refused_before_tracing() {
    let dir = scratch_dir("planted-at-start");
    let victims = victims(&dir);
    let user = user_dir(&dir, NOBODY);
    let out_json = user.join("out.json");
    plant_symlink(&victims[0].0, &out_json, NOBODY);
    let arg = out_json.to_str().expect("utf-8 scratch path");
    let out = run_memtrace(&["--duration", "30s", "-o", arg, "--", "true"], secs(30));
    out.one_line_error(None, &[arg, "symbolic link owned by uid 65534"]);
    assert!(
        out.elapsed < secs(5),
        "the link should be refused before tracing, not after --duration 30s\n{}",
        out.describe()
    );
    assert_untouched(&victims);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn links_planted_while_tracing_are_replaced_not_followed() {
    let dir = scratch_dir("planted-while-tracing");
    let victims = victims(&dir);
    let user = user_dir(&dir, NOBODY);
    let (json, svg) = (user.join("late.json"), user.join("late.svg"));
    let mut workload = leak_signal(LINK_LEAKS, LINK_LEAK_SIZE, 10_000);
    let tracer = trace_pid(
        workload.pid(),
        &[
            "--duration",
            "3s",
            "--interval",
            "1s",
            "-o",
            json.to_str().expect("utf-8 path"),
            "-o",
            svg.to_str().expect("utf-8 path"),
        ],
    );
    // After memtrace checked its outputs: the user plants a symlink and a
    // hard link at their names.
    plant_symlink(&victims[0].0, &json, NOBODY);
    std::fs::hard_link(&victims[1].0, &svg).expect("plant a hard link");
    workload.signal(libc::SIGUSR1);
    workload.expect_line("done", secs(10));
    let out = tracer.finish(secs(60));
    out.assert_success();
    assert_untouched(&victims);
    for path in [&json, &svg] {
        let meta = std::fs::symlink_metadata(path).expect("the report exists");
        assert!(
            meta.is_file() && meta.nlink() == 1 && meta.uid() == 0,
            "{} should be root's own new file (a regular file, one link), not the planted \
             link: {meta:?}\n{}",
            path.display(),
            out.describe()
        );
    }
    assert_eq!(
        std::fs::metadata(&victims[1].0)
            .expect("hard victim")
            .nlink(),
        1,
        "the hard link's name now holds the report: the victim has its own name only"
    );
    let report = out.report_from(&std::fs::read_to_string(&json).expect("read the report"));
    let s = report.stack_of("leak_fixed");
    assert_eq!(
        (s.outstanding_bytes, s.outstanding_allocations),
        (LINK_LEAKS * LINK_LEAK_SIZE, LINK_LEAKS),
        "leak_fixed in the report written over the planted link\n{}",
        report.describe()
    );
    let svg_text = std::fs::read_to_string(&svg).expect("read the flamegraph");
    assert!(
        svg_text.contains("<svg") && svg_text.contains("leak_fixed"),
        "late.svg should be the flamegraph naming leak_fixed"
    );
    let mut names: Vec<String> = std::fs::read_dir(&user)
        .expect("list the user's directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["late.json", "late.svg"],
        "only the reports: no temporary file left behind"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// secret_leak.c: its secret, and what it leaks.
const SECRET: &str = "MEMTRACE-SECRET-5f0c2e91";
const SECRET_HOLDS: u64 = 40;
const SECRET_HOLD_SIZE: u64 = 4096;
const SECRET_MAP_SIZE: u64 = 64 * 1024;

/// The secret's bytes in lower- and upper-case hex.
fn secret_hex() -> [String; 2] {
    let hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
    [hex.clone(), hex.to_uppercase()]
}

#[test]
fn reports_hold_no_memory_contents() {
    let exe = compile_c("secret_leak");
    let dir = scratch_dir("secret");
    let files = ["r.json", "r.svg", "r.folded", "r.pb.gz"].map(|f| dir.join(f));
    // Formats from the extensions (JSON_ARGS would make them all JSON).
    let mut args: Vec<std::ffi::OsString> = vec!["--interval".into(), "1s".into()];
    for f in &files {
        args.extend(["-o".into(), f.clone().into_os_string()]);
    }
    args.extend(["--".into(), exe.clone().into_os_string()]);
    run_memtrace(&args, CMD_TIMEOUT).assert_success();
    let text = run_memtrace(
        &[
            std::ffi::OsStr::new("--format"),
            "text".as_ref(),
            "--".as_ref(),
            exe.as_os_str(),
        ],
        CMD_TIMEOUT,
    );
    text.assert_success();

    let json = std::fs::read_to_string(&files[0]).expect("the JSON report");
    let report = text.report_from(&json);
    let held = report.stack_of("hold_secret");
    assert_eq!(
        (
            held.kind,
            held.outstanding_bytes,
            held.outstanding_allocations
        ),
        (
            StackKind::Heap,
            SECRET_HOLDS * SECRET_HOLD_SIZE,
            SECRET_HOLDS
        ),
        "hold_secret: the secret's blocks are traced\n{}",
        report.describe()
    );
    let mapped = report.stack_of("map_secret");
    assert_eq!(
        (mapped.kind, mapped.outstanding_bytes),
        (StackKind::Mmap, SECRET_MAP_SIZE),
        "map_secret: the secret's mapping is traced\n{}",
        report.describe()
    );
    assert!(
        text.stdout.contains("hold_secret"),
        "the text report names hold_secret\n{}",
        text.describe()
    );

    let pprof = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(&files[3])
        .output()
        .expect("gzip -dc the pprof profile");
    assert!(pprof.status.success() && !pprof.stdout.is_empty());
    let mut outputs: Vec<(String, Vec<u8>)> = files[..3]
        .iter()
        .map(|f| {
            (
                f.display().to_string(),
                std::fs::read(f).expect("an output"),
            )
        })
        .collect();
    outputs.push(("pprof (decompressed)".into(), pprof.stdout));
    outputs.push(("text on stdout".into(), text.stdout.clone().into_bytes()));
    outputs.push((
        "stderr of both runs".into(),
        text.stderr.clone().into_bytes(),
    ));
    let mut needles = vec![SECRET.to_string()];
    needles.extend(secret_hex());
    // Any 8 bytes of it would be a leak of memory too.
    needles.extend((0..=SECRET.len() - 8).map(|i| SECRET[i..i + 8].to_string()));
    for (name, bytes) in &outputs {
        for needle in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{name} contains {needle:?}: memory contents in a report"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

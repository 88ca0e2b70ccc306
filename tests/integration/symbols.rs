//! Naming frames beyond a symbol table: calls the compiler inlined, glibc's
//! internal aliases, separate debug files (by build id, from a debuginfod
//! server), files left without names, pprof's build ids, and a program
//! started through a symbolic link.
//!
//! Workloads (`-- CMD` mode):
//! - symbols (compiled with -O2): read_table() → extend_table() (inlined)
//!   → malloc(40000), kept; strdup ×3; setlocale(LC_ALL, "C.UTF-8"); a
//!   FILE on /dev/null written once and never closed. glibc's debug file
//!   (Debian's libc6-dbg, which `cargo xtask test` installs) names glibc's
//!   functions.
//! - leak_exit: leak_on_exit() mallocs 2000 bytes 50 times, kept; here
//!   stripped (`strip -s`), its debug file kept apart, or run through a
//!   symbolic link.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use memtrace_integration::{
    compile_c, compile_c_with, path_str, run_memtrace, run_memtrace_cmd, run_memtrace_cmd_env,
    scratch_dir, secs, Report,
};
use memtrace_report::Frame;

/// The line of `tests/workloads/NAME.c` holding `marker`.
fn line_of(name: &str, marker: &str) -> u32 {
    let path = memtrace_integration::workspace_root().join(format!("tests/workloads/{name}.c"));
    let text = std::fs::read_to_string(&path).expect("workload source");
    let i = text
        .lines()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("{marker} not in {}", path.display()));
    u32::try_from(i + 1).expect("line")
}

fn names(frames: &[Frame]) -> Vec<&str> {
    frames
        .iter()
        .map(|f| f.function.as_deref().unwrap_or("??"))
        .collect()
}

/// Runs `cmd` under a tool, asserting it succeeds; returns its stdout.
fn tool(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The GNU build id of `file` (readelf -n), lowercase hex.
fn build_id(file: &Path) -> String {
    let notes = tool(Command::new("readelf").arg("-n").arg(file));
    notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .unwrap_or_else(|| panic!("{} has no build id:\n{notes}", file.display()))
        .trim()
        .to_string()
}

/// The text report of a JSON snapshot (`memtrace report FILE`).
fn text_of(json: &Path) -> String {
    let out = run_memtrace(&["report", "--top", "100", path_str(json)], secs(60));
    out.assert_success();
    out.stdout
}

/// The symbols workload traced once, with every output written.
struct SymbolsRun {
    report: Report,
    text: String,
    folded: String,
    exe: PathBuf,
}

fn symbols_run() -> &'static SymbolsRun {
    static RUN: std::sync::OnceLock<SymbolsRun> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        let exe = compile_c_with("symbols", &["-O2"]);
        let dir = scratch_dir("symbols");
        let (json, folded) = (dir.join("run.json"), dir.join("run.folded"));
        let args = [
            "--top",
            "100",
            "--interval",
            "1s",
            "-o",
            path_str(&json),
            "-o",
            path_str(&folded),
            "--",
            path_str(&exe),
        ];
        let out = run_memtrace(&args, secs(90));
        out.assert_success();
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", p.display(), out.describe()))
        };
        let run = SymbolsRun {
            report: out.report_from(&read(&json)),
            text: text_of(&json),
            folded: read(&folded),
            exe,
        };
        let _ = std::fs::remove_dir_all(&dir);
        run
    })
}

/// extend_table, inlined into read_table, is a frame of its own with its
/// own line, at the address of read_table's frame, in the JSON, text (of
/// the JSON snapshot) and folded outputs (pprof: its renderer's unit test).
#[test]
fn inlined_calls_are_frames_of_their_own() {
    let run = symbols_run();
    let r = &run.report;
    let s = r.stack_of("extend_table");
    assert_eq!(s.outstanding_bytes, 40000, "{}", r.describe());
    let f = &s.frames;
    assert_eq!(
        names(f)[..3],
        ["extend_table", "read_table", "main"],
        "{f:#?}"
    );
    let malloc_line = line_of("symbols", "/* LINE_MALLOC */");
    let extend_line = line_of("symbols", "/* LINE_EXTEND */");
    let at = |f: &Frame| {
        (
            f.file.as_deref().is_some_and(|p| p.ends_with("symbols.c")),
            f.line,
            f.inlined,
        )
    };
    assert_eq!(at(&f[0]), (true, Some(malloc_line), true), "{f:#?}");
    assert_eq!(at(&f[1]), (true, Some(extend_line), false), "{f:#?}");
    assert_eq!(f[0].address, f[1].address, "{f:#?}");
    assert!(!f[2].inlined, "{f:#?}");

    // (The source's path as the compiler recorded it: a cached build of the
    // workload may come from another checkout.)
    let src = f[0].file.as_deref().unwrap_or("?");
    let module = run.exe.file_name().unwrap().to_string_lossy();
    let pair = format!(
        "extend_table at {src}:{malloc_line} ({module}) [inlined]\n    {:#014x} read_table at \
         {src}:{extend_line} ({module})\n",
        f[1].address,
    );
    assert!(run.text.contains(&pair), "no {pair:?} in\n{}", run.text);
    assert!(
        run.folded
            .lines()
            .any(|l| l.contains(";main;read_table;extend_table 40000")),
        "{}",
        run.folded
    );
}

/// glibc's functions print as the names it exports, never as the internal
/// aliases its symbol table also has at their addresses.
#[test]
fn glibc_functions_by_their_public_names() {
    let run = symbols_run();
    let r = &run.report;
    let all: Vec<&str> = r.stacks.iter().flat_map(|s| names(&s.frames)).collect();
    let internal: Vec<&&str> = all
        .iter()
        .filter(|n| n.starts_with("__GI_") || **n == "_IO_new_file_overflow")
        .collect();
    assert!(
        internal.is_empty(),
        "internal names {internal:?}\n{}",
        r.describe()
    );
    let strdup = r
        .stacks_of("strdup")
        .into_iter()
        .find(|s| s.frames.get(1).and_then(|f| f.function.as_deref()) == Some("main"))
        .unwrap_or_else(|| panic!("no strdup ← main stack\n{}", r.describe()));
    assert_eq!(strdup.outstanding_allocations, 3, "{}", r.describe());
    for public in ["setlocale", "_IO_file_overflow"] {
        assert!(all.contains(&public), "no {public} frame\n{}", r.describe());
    }
}

/// pprof mappings need each file's build id and where it is mapped: the
/// report lists, for the target, its executable's code mapping first, with
/// the build id readelf reads.
#[test]
fn code_mappings_carry_build_ids() {
    let run = symbols_run();
    let t = &run.report.targets[0];
    let first = t
        .mappings
        .first()
        .unwrap_or_else(|| panic!("no mappings: {t:?}"));
    assert_eq!(Path::new(&first.path), run.exe, "{t:?}");
    assert_eq!(
        first.build_id.as_deref(),
        Some(build_id(&run.exe).as_str()),
        "{t:?}"
    );
    assert!(first.start < first.end && first.file_offset > 0, "{t:?}");
    let frame = &run.report.stack_of("extend_table").frames[0];
    assert!(first.contains(frame.address - 1), "{t:?} {frame:?}");
    let libc = t
        .mappings
        .iter()
        .find(|m| m.path.contains("libc.so"))
        .unwrap_or_else(|| panic!("no libc mapping: {t:?}"));
    assert_eq!(
        libc.build_id.as_deref(),
        Some(build_id(Path::new(&libc.path)).as_str())
    );
}

/// leak_exit with its symbols stripped (`strip -s`), its debug file kept
/// apart (`objcopy --only-keep-debug`, no debug link): returns (program,
/// debug file). `build_id` (hex) is the program's own, so that tests
/// running at once never find each other's debug files.
fn stripped_leak_exit(dir: &Path, build_id: &str) -> (PathBuf, PathBuf) {
    let exe = dir.join("leak_exit");
    let debug = dir.join("leak_exit.debug");
    let flag = format!("-Wl,--build-id=0x{build_id}");
    std::fs::copy(compile_c_with("leak_exit", &[&flag]), &exe).expect("copy");
    tool(
        Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&exe)
            .arg(&debug),
    );
    tool(Command::new("strip").arg("-s").arg(&exe));
    (exe, debug)
}

/// A stripped program's frames are named from its debug file, served by a
/// debuginfod server (a local one: `DEBUGINFOD_URLS`), and cached where
/// `DEBUGINFOD_CACHE_PATH` says.
#[test]
fn debuginfod_names_a_stripped_program() {
    let dir = scratch_dir("debuginfod");
    let (exe, debug) = stripped_leak_exit(&dir, "6d656d7472616365000000000000000000000001");
    let id = build_id(&exe);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let body = std::fs::read(&debug).expect("debug file");
    let want = format!("GET /buildid/{id}/debuginfo ");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            // The whole request is read before answering: closing a socket
            // with unread bytes resets the connection under the reply.
            let mut reader = BufReader::new(&conn);
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 0) && header.trim() != "" {
                header.clear();
            }
            let _ = if request.starts_with(&want) {
                write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .and_then(|()| conn.write_all(&body))
            } else {
                conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            };
        }
    });
    let cache = dir.join("cache");
    let r = run_memtrace_cmd_env(
        &[] as &[&str],
        &[path_str(&exe)],
        &[
            ("DEBUGINFOD_URLS", url.as_str()),
            ("DEBUGINFOD_CACHE_PATH", path_str(&cache)),
        ],
    );
    let s = r.stack_of("leak_on_exit");
    assert_eq!(s.outstanding_bytes, 100_000, "{}", r.describe());
    assert_eq!(
        s.frames[0].line,
        Some(line_of("leak_exit", "malloc(LEAK_SIZE)")),
        "{}",
        r.describe()
    );
    assert!(r.unnamed_frames.is_empty(), "{:?}", r.unnamed_frames);
    assert!(cache.join(&id).join("debuginfo").is_file(), "not cached");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A debug file under /usr/lib/debug/.build-id/ names a stripped program
/// that has no debug link to it.
#[test]
fn debug_file_found_by_build_id() {
    let dir = scratch_dir("build-id");
    let (exe, debug) = stripped_leak_exit(&dir, "6d656d7472616365000000000000000000000002");
    let id = build_id(&exe);
    let by_id = PathBuf::from(format!(
        "/usr/lib/debug/.build-id/{}/{}.debug",
        &id[..2],
        &id[2..]
    ));
    std::fs::create_dir_all(by_id.parent().unwrap()).expect("mkdir");
    std::fs::copy(&debug, &by_id).expect("install debug file");
    /// Removes the installed debug file, pass or fail.
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _installed = Remove(by_id);
    let r = run_memtrace_cmd(&[] as &[&str], &[path_str(&exe)]);
    let s = r.stack_of("leak_on_exit");
    assert_eq!(
        names(&s.frames)[..2],
        ["leak_on_exit", "main"],
        "{}",
        r.describe()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without any symbols, the report says which file's frames are unnamed and
/// what would name them, in one line.
#[test]
fn unnamed_frames_say_what_would_name_them() {
    let dir = scratch_dir("unnamed");
    let (exe, _) = stripped_leak_exit(&dir, "6d656d7472616365000000000000000000000003");
    let id = build_id(&exe);
    let json = dir.join("run.json");
    let args = ["-o", path_str(&json), "--", path_str(&exe)];
    let out = run_memtrace(&args, secs(90));
    out.assert_success();
    let r = out.report_from(&std::fs::read_to_string(&json).expect("json"));
    let unnamed = r
        .unnamed_frames
        .iter()
        .find(|u| Path::new(&u.module) == exe)
        .unwrap_or_else(|| panic!("{:?}\n{}", r.unnamed_frames, r.describe()));
    // leak_on_exit, main and _start.
    assert_eq!(unnamed.frames, 3, "{}", r.describe());
    let line = format!(
        "leak_exit: 3 frames unnamed: no symbols in {}: a debug file at \
         /usr/lib/debug/.build-id/{}/{}.debug would name them, or point DEBUGINFOD_URLS at a \
         debuginfod server\n",
        exe.display(),
        &id[..2],
        &id[2..]
    );
    let text = text_of(&json);
    assert!(text.contains(&line), "no {line:?} in\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A program run through a symbolic link under another name (Debian's
/// redis-server → redis-check-rdb) is reported by the path it was started
/// as, which its comm matches.
#[test]
fn program_started_through_a_symlink() {
    let dir = scratch_dir("symlink");
    let real = dir.join("leak-check-rdb");
    std::fs::copy(compile_c("leak_exit"), &real).expect("copy");
    let link = dir.join("leak-server");
    std::os::unix::fs::symlink("leak-check-rdb", &link).expect("symlink");
    let r = run_memtrace_cmd(&[] as &[&str], &[path_str(&link)]);
    r.assert_target("leak-server", None);
    assert_eq!(
        r.targets[0].exe.as_deref(),
        Some(path_str(&link)),
        "{}",
        r.describe()
    );
    assert_eq!(r.stack_of("leak_on_exit").outstanding_bytes, 100_000);
    let _ = std::fs::remove_dir_all(&dir);
}

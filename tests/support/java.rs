//! Java workloads: `tests/workloads/java_leaks/Leaks.java` compiled with
//! each JDK of the machine (once per test run), started as a JVM with a
//! service's heap settings, and `jcmd` run against it (the anchor's class
//! histogram, the check that no recording is left).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::{workspace_root, Workload};

/// The JDKs these machines have: Debian's OpenJDK 17 and Temurin 25.
pub const JDK17: &str = "/usr/lib/jvm/java-17-openjdk-amd64";
pub const JDK25: &str = "/usr/lib/jvm/temurin-25-jdk-amd64";

/// The JVM options of the workloads: a service's 256 MiB heap with a 16
/// MiB young generation, so that under their load collections come every
/// second or two (the leak profiler keeps a sample once it survives one).
pub const JVM_OPTIONS: [&str; 2] = ["-Xmx256m", "-Xmn16m"];

/// `tests/workloads/java_leaks/Leaks.java`.
pub fn leaks_source() -> PathBuf {
    workspace_root().join("tests/workloads/java_leaks/Leaks.java")
}

/// The directory of Leaks.class compiled by `jdk`'s javac (once per test
/// run and JDK), under `target/` (not /tmp: a JVM in a container of its
/// own has another /tmp).
pub fn leaks_classes(jdk: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(dir) = built.get(jdk) {
        return dir.clone();
    }
    let name = Path::new(jdk).file_name().unwrap().to_string_lossy();
    let dir = workspace_root().join("target/java-leaks").join(&*name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(Path::new(jdk).join("bin/javac"))
        .arg("-d")
        .arg(&dir)
        .arg(leaks_source())
        .output()
        .expect("javac");
    assert!(
        out.status.success(),
        "javac ({jdk}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    built.insert(jdk.to_string(), dir.clone());
    dir
}

/// `jdk`'s java running Leaks with `args`, after `jvm` options: its
/// command line (for `-- CMD`).
pub fn leaks_command(jdk: &str, jvm: &[&str], args: &[&str]) -> Vec<String> {
    let mut cmd = vec![Path::new(jdk).join("bin/java").display().to_string()];
    cmd.extend(jvm.iter().map(|s| s.to_string()));
    cmd.push("-cp".into());
    cmd.push(leaks_classes(jdk).display().to_string());
    cmd.push("Leaks".into());
    cmd.extend(args.iter().map(|s| s.to_string()));
    cmd
}

/// Starts Leaks with `args` on `jdk` (options: [`JVM_OPTIONS`] then
/// `jvm`) and waits for its "ready".
#[track_caller]
pub fn start_leaks(jdk: &str, jvm: &[&str], args: &[&str]) -> Workload {
    let mut options: Vec<&str> = JVM_OPTIONS.to_vec();
    options.extend_from_slice(jvm);
    let cmd = leaks_command(jdk, &options, args);
    Workload::spawn_ready(Path::new(&cmd[0]), &cmd[1..])
}

/// `jcmd PID LINE` with `jdk`'s jcmd: its output (panics when it fails).
#[track_caller]
pub fn jcmd(jdk: &str, pid: u32, line: &[&str]) -> String {
    let out = Command::new(Path::new(jdk).join("bin/jcmd"))
        .arg(pid.to_string())
        .args(line)
        .output()
        .expect("jcmd");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "jcmd {pid} {line:?}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The bytes of `class` (`[B`, `Leaks$Session`) in a
/// `GC.class_histogram` (which collects first: live objects only).
pub fn histogram_bytes(histogram: &str, class: &str) -> u64 {
    histogram
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4 && f[3] == class).then(|| f[2].parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {class} in the histogram:\n{histogram}"))
}

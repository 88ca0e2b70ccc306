//! Compiling the C workloads in `tests/workloads/`.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::{env, fs};

use crate::workspace_root;

/// Flags every workload is compiled with (the tests rely on frame pointers,
/// debug info and no inlining).
pub const CFLAGS: &[&str] = &[
    "-O0",
    "-g",
    "-fno-omit-frame-pointer",
    "-pthread",
    "-Wall",
    "-Wextra",
];

/// Compiles `tests/workloads/<name>.c` (with `$CC`, default `gcc`) and returns
/// the path of the executable, which is named `<name>` so that the traced
/// process's comm is `<name>`.
///
/// The output lives in `<temp dir>/memtrace-integration/<name>-<hash>/`, the
/// hash covering the sources (the workload and `common.h`), the compiler and
/// the flags; it is built under a unique temporary name and renamed into
/// place, so concurrent tests and test binaries never see a partial file.
/// Panics with the compiler's output on failure.
pub fn compile_c(name: &str) -> PathBuf {
    compile_c_with(name, &[])
}

/// Like [`compile_c`], with `extra` flags after [`CFLAGS`] (e.g. `-static`,
/// `-s`); the flags are part of the cache key and of the output directory's
/// hash, so one workload can be built several ways.
pub fn compile_c_with(name: &str, extra: &[&str]) -> PathBuf {
    let cc = env::var("CC")
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "gcc".to_string());
    compile_c_using(&cc, name, extra)
}

/// Like [`compile_c_with`], with the compiler `cc` (e.g. `musl-gcc`); the
/// extra flags go after the source, so libraries (`-ljemalloc`) link.
pub fn compile_c_using(cc: &str, name: &str, extra: &[&str]) -> PathBuf {
    /// (compiler, workload name, extra flags) -> executable.
    type Cache = HashMap<(String, String, Vec<String>), PathBuf>;
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);

    let key = (
        cc.to_string(),
        name.to_string(),
        extra.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
    );
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = cache.get(&key) {
        return path.clone();
    }

    let dir = workspace_root().join("tests/workloads");
    let src = dir.join(format!("{name}.c"));

    let mut hasher = DefaultHasher::new();
    for file in [src.clone(), dir.join("common.h")] {
        let text = fs::read(&file)
            .unwrap_or_else(|e| panic!("cannot read workload source {}: {e}", file.display()));
        text.hash(&mut hasher);
    }
    cc.hash(&mut hasher);
    CFLAGS.hash(&mut hasher);
    extra.hash(&mut hasher);

    let out_dir = env::temp_dir()
        .join("memtrace-integration")
        .join(format!("{name}-{:016x}", hasher.finish()));
    fs::create_dir_all(&out_dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", out_dir.display()));
    let exe = out_dir.join(name);

    if !exe.is_file() {
        let tmp = out_dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let output = Command::new(cc)
            .args(CFLAGS)
            .arg("-o")
            .arg(&tmp)
            .arg(&src)
            .args(extra)
            .output()
            .unwrap_or_else(|e| panic!("cannot run C compiler {cc:?}: {e}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            let _ = fs::remove_file(&tmp);
            panic!(
                "compiling {} failed ({}):\n{cc} {} -o {} {} {}\n{stderr}",
                src.display(),
                output.status,
                CFLAGS.join(" "),
                tmp.display(),
                src.display(),
                extra.join(" ")
            );
        }
        if !stderr.trim().is_empty() {
            eprintln!("warnings compiling {}:\n{stderr}", src.display());
        }
        fs::rename(&tmp, &exe).unwrap_or_else(|e| {
            panic!("cannot rename {} to {}: {e}", tmp.display(), exe.display())
        });
    }

    cache.insert(key, exe.clone());
    exe
}

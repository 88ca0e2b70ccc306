//! Cgroup paths (cgroup.rs): `/proc/PID/cgroup` text, the containers and
//! pods its path names, and matching against `--cgroup`/`--container`
//! arguments. A container runtime (or a process moving itself) chooses
//! the path. Input: the file's text, then `\0` and the argument.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memtrace::discover::cgroup;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (file, wanted) = text.split_once('\0').unwrap_or((text, "/"));
    let path = cgroup::parse_proc_cgroup(file);
    for p in path.iter().map(String::as_str).chain([file]) {
        let _ = cgroup::in_cgroup(p, wanted);
        if let Some(c) = cgroup::container_of(p) {
            let _ = cgroup::matches_container(&c, wanted);
            let _ = cgroup::short_id(&c.id);
        }
    }
    let _ = cgroup::short_id(wanted);
});

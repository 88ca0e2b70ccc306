//! Target processes: validating a pid, its name, executable and start time
//! (a pid given to another process later is told apart by it), and its
//! memory mappings from `/proc/PID/maps`. Files a target maps are opened
//! through `/proc/PID/root` so processes in other mount namespaces
//! (containers) resolve to their own files.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// What the report says about a target.
#[derive(Clone, Debug, Serialize)]
pub struct TargetInfo {
    pub pid: u32,
    pub comm: String,
    pub exe: Option<String>,
    /// When the process started (clock ticks since boot): a pid given to
    /// another process once this one is gone has another.
    #[serde(skip)]
    pub start_time: u64,
}

impl TargetInfo {
    /// Whether this process still runs: its pid exists, is no zombie, and
    /// has not been given to another process since.
    pub fn is_alive(&self) -> bool {
        read_stat(self.pid).is_some_and(|s| s.start_time == self.start_time && !s.exited())
    }
}

/// What memtrace reads of `/proc/PID/stat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    pub comm: String,
    /// `R`, `S`, `Z` (zombie), `X` (dead), …
    pub state: String,
    /// The kernel's `PF_*` flags.
    pub flags: u64,
    /// When the process started (clock ticks since boot; 0 if the line
    /// ends before it).
    pub start_time: u64,
    /// Its threads (0 if the line ends before the field).
    pub threads: u64,
}

const PF_EXITING: u64 = 0x4;
const PF_KTHREAD: u64 = 0x0020_0000;

impl ProcStat {
    /// Whether the process has exited: dead, or a zombie with no thread
    /// left (its main thread is a zombie too after `pthread_exit()`, while
    /// the others run on).
    pub fn exited(&self) -> bool {
        self.state == "X" || (self.state == "Z" && self.threads <= 1)
    }
}

/// Parses `/proc/PID/stat`: "pid (comm) state ppid ... flags ..."; the
/// comm may hold spaces and parentheses, so the fields are counted after
/// its last `)`. None when there is no `)`, state or flags.
pub fn parse_stat(stat: &str) -> Option<ProcStat> {
    let close = stat.rfind(')')?;
    let open = stat[..close].find('(').map_or(0, |i| i + 1);
    // Fields 3 (state) on, of proc(5)'s numbering.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let number = |n: usize| fields.get(n - 3).and_then(|f| f.parse().ok());
    Some(ProcStat {
        comm: stat[open..close].to_string(),
        state: fields.first()?.to_string(),
        flags: number(9)?,
        threads: number(20).unwrap_or(0),
        start_time: number(22).unwrap_or(0),
    })
}

fn read_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Validates that `pid` is a traceable user process and describes it.
pub fn inspect(pid: u32) -> Result<TargetInfo> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let stat = match fs::read_to_string(proc_dir.join("stat")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("pid {pid} does not exist")
        }
        Err(e) => return Err(e).with_context(|| format!("reading /proc/{pid}/stat")),
    };
    let parsed = parse_stat(&stat).with_context(|| format!("malformed /proc/{pid}/stat"))?;
    let exited = parsed.exited();
    let ProcStat {
        comm,
        flags,
        start_time,
        ..
    } = parsed;
    if flags & PF_KTHREAD != 0 {
        bail!("pid {pid} ({comm}) is a kernel thread: it has no user-space allocator to trace");
    }
    if exited {
        bail!("pid {pid} ({comm}) has already exited (zombie)");
    }
    let status = fs::read_to_string(proc_dir.join("status")).unwrap_or_default();
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse::<u32>().ok());
    if let Some(tgid) = tgid.filter(|&t| t != pid) {
        bail!("{pid} is a thread of process {tgid} ({comm}): trace the process with --pid {tgid}");
    }
    let exe = fs::read_link(proc_dir.join("exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    Ok(TargetInfo {
        pid,
        comm,
        exe,
        start_time,
    })
}

/// Whether the process `pid` still exists (and is not a zombie), whichever
/// process has that pid now (see [`TargetInfo::is_alive`]).
pub fn is_alive(pid: u32) -> bool {
    read_stat(pid).is_some_and(|s| !s.exited())
}

/// Whether `pid`'s main thread has exited while its other threads run on
/// (`pthread_exit()` in `main`): its leader is a zombie, the process is not.
pub fn main_thread_gone(pid: u32) -> bool {
    read_stat(pid).is_some_and(|s| s.state == "Z" && !s.exited())
}

/// When `pid` started (clock ticks since boot), if it exists.
pub fn start_time(pid: u32) -> Option<u64> {
    read_stat(pid).map(|s| s.start_time)
}

/// The process's state letter in /proc/PID/stat (R, S, T, Z, ...), None
/// when it is gone.
pub fn state(pid: u32) -> Option<char> {
    read_stat(pid)?.state.chars().next()
}

/// Whether the process is exiting (or gone): its cgroup then already reads
/// as the root on cgroup v1, so what /proc says of it is no longer its own.
pub fn is_exiting(pid: u32) -> bool {
    read_stat(pid).is_none_or(|s| s.exited() || s.flags & PF_EXITING != 0)
}

/// The path `pid` was started by, when it is a symbolic link to the
/// process's executable under another name (Debian's `redis-server` →
/// `redis-check-rdb`): the kernel names the executable by the link's
/// target, while users know the program by the name they ran. Found from
/// argv\[0\] (its first word too: servers rewrite their command line into
/// a title, `redis-server *:6379`): a path as given (relative ones from the
/// process's working directory), a bare name next to the executable. Only
/// a link that leads to the very executable (device and inode) counts;
/// None otherwise.
pub fn started_as(pid: u32) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let exe_link = format!("/proc/{pid}/exe");
    let exe = fs::read_link(&exe_link).ok()?;
    let target = fs::metadata(&exe_link).ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = String::from_utf8_lossy(cmdline.split(|&b| b == 0).next()?).into_owned();
    let mut words = vec![argv0.as_str()];
    words.extend(argv0.split_whitespace().next().filter(|w| *w != argv0));
    for word in words {
        let given = Path::new(word);
        let Some(name) = given.file_name() else {
            continue;
        };
        if exe.file_name() == Some(name) {
            return None;
        }
        let candidate = if word.contains('/') {
            match given.is_absolute() {
                true => given.to_path_buf(),
                false => fs::read_link(format!("/proc/{pid}/cwd")).ok()?.join(given),
            }
        } else {
            exe.parent()?.join(name)
        };
        let seen = host_path(pid, &candidate.to_string_lossy());
        let is_link = fs::symlink_metadata(&seen).is_ok_and(|m| m.file_type().is_symlink());
        let same =
            fs::metadata(&seen).is_ok_and(|m| m.dev() == target.dev() && m.ino() == target.ino());
        if is_link && same {
            return Some(normalize(&candidate).display().to_string());
        }
    }
    None
}

/// `a/./b/../c` → `a/c`, lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Resident memory of a process: (RSS, anonymous RSS) in bytes. None once
/// it is gone (or for a zombie, which has none). From `/proc/PID/status`,
/// or on kernels whose status counters lag (see [`status_counters_lag`])
/// from `/proc/PID/smaps_rollup`, which counts the pages themselves.
pub fn memory_usage(pid: u32) -> Option<(u64, u64)> {
    let read = |dir: &str| match status_counters_lag() {
        false => parse_memory(&fs::read_to_string(format!("{dir}/status")).ok()?),
        true => parse_rollup(&fs::read_to_string(format!("{dir}/smaps_rollup")).ok()?),
    };
    let own = format!("/proc/{pid}");
    read(&own).or_else(|| {
        // Its main thread gone (a zombie has no memory), another
        // thread's: they share its memory.
        fs::read_dir(format!("{own}/task"))
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() != *pid.to_string())
            .find_map(|e| read(e.path().to_str()?))
    })
}

/// Whether this kernel's per-process memory counters move in steps: before
/// 6.2 each thread kept its own page counts and added them to the
/// process's only every 64 page faults, so `/proc/PID/status` of a process
/// that leaks slowly stood still for seconds and then jumped (a slope
/// fitted to it read low or zero). `smaps_rollup` walks the process's page
/// tables under its mmap lock taken for reading, which its page faults
/// share (its mmap and munmap calls wait): ~13 ms per GiB resident on
/// these machines, once per interval and target.
pub fn status_counters_lag() -> bool {
    static LAG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LAG.get_or_init(|| {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        release_before(&release, (6, 2))
    })
}

/// Whether a kernel release string ("6.1.0-50-amd64") is older than
/// (major, minor); false for one that does not parse.
fn release_before(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>());
    match (parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b))) => (a, b) < (major, minor),
        _ => false,
    }
}

/// (VmRSS, RssAnon) in bytes from `/proc/PID/status` text.
pub fn parse_memory(status: &str) -> Option<(u64, u64)> {
    Some((kib(status, "VmRSS:")?, kib(status, "RssAnon:")?))
}

/// (Rss, Anonymous) in bytes from `/proc/PID/smaps_rollup` text.
fn parse_rollup(rollup: &str) -> Option<(u64, u64)> {
    Some((kib(rollup, "Rss:")?, kib(rollup, "Anonymous:")?))
}

/// The `field` line's kB in bytes.
fn kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .and_then(|k| k.checked_mul(1024))
}

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub executable: bool,
    /// The mapped file, or a pseudo name like `[heap]`, `[vdso]`; None for
    /// anonymous memory.
    pub path: Option<String>,
    /// The file was deleted or replaced on disk since it was mapped (a
    /// library upgraded under a running process): opening `path` would give
    /// another file.
    pub deleted: bool,
    /// Device (`major:minor` as maps prints it) and inode of the mapped
    /// file: which file it is, whatever path or mount namespace names it.
    pub dev: String,
    pub inode: u64,
}

impl Mapping {
    pub fn contains(&self, addr: u64) -> bool {
        (self.start..self.end).contains(&addr)
    }

    /// Whether the mapping is backed by a regular file (not `[heap]` etc.).
    pub fn is_file(&self) -> bool {
        self.path.as_deref().is_some_and(|p| p.starts_with('/'))
    }
}

/// Parses `/proc/PID/maps` text.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(6, ' ');
            let range = parts.next()?;
            let perms = parts.next()?;
            let offset = parts.next()?;
            let dev = parts.next()?;
            let inode = parts.next()?;
            let path = parts.next().map(str::trim).filter(|p| !p.is_empty());
            let (start, end) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                offset: u64::from_str_radix(offset, 16).ok()?,
                executable: perms.as_bytes().get(2) == Some(&b'x'),
                deleted: path.is_some_and(|p| p.ends_with(" (deleted)")),
                dev: dev.to_string(),
                inode: inode.parse().ok()?,
                path: path.map(|p| p.trim_end_matches(" (deleted)").to_string()),
            })
        })
        .collect()
}

pub fn read_maps(pid: u32) -> Result<Vec<Mapping>> {
    let path = format!("/proc/{pid}/maps");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(parse_maps(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "cannot read {path}: permission denied (memtrace needs root or CAP_SYS_PTRACE over \
             pid {pid}; a security module may protect it)"
        ),
        Err(e) => Err(e).with_context(|| format!("reading {path}")),
    }
}

/// Path through which memtrace opens the file behind `mapping` of `pid`.
/// A file deleted or replaced since it was mapped is reached through
/// `/proc/PID/map_files`, which still leads to the mapped inode (so probes
/// land in the code the process actually runs).
pub fn mapped_file_path(pid: u32, mapping: &Mapping) -> Option<PathBuf> {
    let path = mapping.path.as_deref().filter(|_| mapping.is_file())?;
    if mapping.deleted {
        return Some(PathBuf::from(format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            mapping.start, mapping.end
        )));
    }
    Some(host_path(pid, path))
}

/// Path through which memtrace opens a file that `pid` maps as `path`: the
/// process's own root, so that containers resolve to their own files — also
/// when only the mount namespace differs (a bind mount over a library). The
/// plain path when the process shares memtrace's root and mounts (or is
/// gone).
pub fn host_path(pid: u32, path: &str) -> PathBuf {
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let same_mounts = fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
        == fs::read_link("/proc/self/ns/mnt").ok();
    match fs::read_link(&root) {
        Ok(r) if r == Path::new("/") && same_mounts => PathBuf::from(path),
        Ok(_) => root.join(path.trim_start_matches('/')),
        Err(_) => PathBuf::from(path),
    }
}

/// The pid `pid` has in its own pid namespace (the one it names its perf
/// map and its JVM's attach files after), and its effective uid.
pub fn namespace_pid_and_uid(pid: u32) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name));
    let ns = field("NSpid:")
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(pid);
    let uid = field("Uid:")?.split_whitespace().nth(1)?.parse().ok()?;
    Some((ns, uid))
}

/// Opens a file a process wrote (a perf map, a JFR dump) without blocking or following a symlink; None unless
/// it is a regular file owned by `uid` or root.
pub fn open_checked(path: &std::path::Path, uid: u32) -> Option<(fs::File, fs::Metadata)> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    (meta.file_type().is_file() && (meta.uid() == uid || meta.uid() == 0)).then_some((file, meta))
}

/// `pid`'s command line and environment, each entry a string (lossy).
pub fn args_and_environ(pid: u32) -> (Vec<String>, Vec<String>) {
    let split = |file: &str| -> Vec<String> {
        fs::read(format!("/proc/{pid}/{file}"))
            .unwrap_or_default()
            .split(|&b| b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    };
    (split("cmdline"), split("environ"))
}

/// Whether `pid` has a handler for signal `signal` (`SigCgt` in its
/// status). A signal whose default action kills is never sent to a
/// process that does not catch it.
pub fn catches_signal(pid: u32, signal: i32) -> anyhow::Result<bool> {
    use anyhow::Context;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .context("no SigCgt in its status")?;
    Ok(mask >> (signal - 1) & 1 == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_from_status() {
        let status = "Name:\tx\nVmRSS:\t    2048 kB\nRssAnon:\t     512 kB\nRssFile:\t 1536 kB\n";
        assert_eq!(parse_memory(status), Some((2048 * 1024, 512 * 1024)));
        assert_eq!(parse_memory("Name:\tzombie\n"), None);
        // More kB than bytes fit in a u64: none (it overflowed before).
        assert_eq!(
            parse_memory("VmRSS:\t18014398509481984 kB\nRssAnon:\t1 kB\n"),
            None
        );
        let rollup = "00-ff ---p 00000000 00:00 0 [rollup]\nRss:  1636 kB\nPss:  762 kB\n\
                      Anonymous:  108 kB\nKSM:  0 kB\n";
        assert_eq!(parse_rollup(rollup), Some((1636 * 1024, 108 * 1024)));
        for (release, old) in [
            ("6.1.0-50-amd64", true),
            ("5.15.0", true),
            ("6.2.0", false),
            ("6.18.0-rc1\n", false),
            ("10.0", false),
            ("weird", false),
        ] {
            assert_eq!(release_before(release, (6, 2)), old, "{release}");
        }
        let me = memory_usage(std::process::id()).expect("own status");
        assert!(me.0 > 0 && me.1 <= me.0);
    }

    #[test]
    fn parses_maps_lines() {
        let text = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 123  /usr/bin/leaky
55d0c0a01000-55d0c0a02000 r-xp 00001000 fe:01 123  /usr/bin/leaky
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
7ffd1000-7ffd3000 r-xp 00000000 00:00 0                          [vdso]
7f1000000000-7f1000001000 r-xp 00002000 fe:01 9 /tmp/x (deleted)
";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 5);
        assert_eq!(maps[1].start, 0x55d0c0a01000);
        assert_eq!(maps[1].offset, 0x1000);
        assert!(maps[1].executable && !maps[0].executable);
        assert_eq!(maps[1].path.as_deref(), Some("/usr/bin/leaky"));
        assert_eq!(maps[2].path, None);
        assert!(!maps[3].is_file());
        assert_eq!(maps[4].path.as_deref(), Some("/tmp/x"));
        assert!(maps[4].deleted && !maps[1].deleted);
        assert_eq!((maps[1].dev.as_str(), maps[1].inode), ("fe:01", 123));
    }

    #[test]
    fn parses_stat_lines() {
        let stat = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 77 0";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                comm: "a) b) (c".into(),
                state: "S".into(),
                flags: 4194560,
                threads: 1,
                start_time: 77,
            })
        );
        let zombie = parse_stat("7 (x) Z 1 7 7 0 -1 4 0").unwrap();
        assert!(zombie.exited() && zombie.flags & PF_EXITING != 0);
        // A main thread gone with pthread_exit(), another running on.
        let leader = "9 (x) Z 1 9 9 0 -1 4 0 0 0 0 0 0 0 0 20 0 2 0 77 0";
        assert!(!parse_stat(leader).unwrap().exited());
        let last = "9 (x) Z 1 9 9 0 -1 4 0 0 0 0 0 0 0 0 20 0 1 0 77 0";
        assert!(parse_stat(last).unwrap().exited());
        assert_eq!(parse_stat("7 (x) S 1 2"), None);
        assert_eq!(parse_stat("7 x S 1 7 7 0 -1 4"), None);
    }

    #[test]
    fn inspects_self_and_rejects_missing_pid() {
        let me = inspect(std::process::id()).unwrap();
        assert!(!me.comm.is_empty());
        assert!(me.start_time > 0 && me.is_alive());
        let reused = TargetInfo {
            start_time: me.start_time + 1,
            ..me.clone()
        };
        assert!(!reused.is_alive(), "another start time is another process");
        let err = inspect(u32::MAX - 1).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}

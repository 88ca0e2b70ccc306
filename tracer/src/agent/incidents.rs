//! Incident reports on disk: one directory per incident under
//! `--reports-dir`, filled in `.staging/` and renamed into place when
//! complete (a reader never sees half an incident); listed and
//! served by validated id (no path ever comes from a request); pruned
//! oldest-first to `--max-reports` and `--max-report-bytes`.

use std::{
    fs,
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::discover::cgroup::Container;

/// What the agent wrote about an incident (incident.json).
pub const META: &str = "incident.json";
/// The trace's JSON report.
pub const REPORT: &str = "report.json";
pub const FLAMEGRAPH: &str = "flamegraph.svg";
pub const PROFILE: &str = "profile.pb.gz";
/// The report as a page to open in a browser.
pub const PAGE: &str = "report.html";
/// The files an incident may hold: the only names ever served.
pub const FILES: [&str; 5] = [META, REPORT, FLAMEGRAPH, PROFILE, PAGE];
/// Where incidents are written before they are complete.
const STAGING: &str = ".staging";
/// Locked by the agent using the directory.
const LOCK: &str = ".lock";

/// One incident, as incident.json holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub node: String,
    /// `growth` (anonymous memory kept growing), `oom-restart` (it came
    /// back where an OOM kill happened).
    pub reason: String,
    /// The evidence, one line.
    pub detail: String,
    pub pid: u32,
    pub comm: String,
    pub cgroup: Option<String>,
    pub container: Option<Container>,
    /// Growth of its anonymous memory when it was flagged.
    pub anon_growth_bytes_per_hour: Option<f64>,
    /// RFC 3339 times the trace started and ended.
    pub started: String,
    pub ended: String,
    /// How the trace ended: `window ended`, `target exited`, `OOM-killed`,
    /// `cut short: the agent stopped`.
    pub outcome: String,
    /// From the report: what the traced stacks held at the end, and the
    /// top stack's allocating function.
    pub outstanding_bytes: u64,
    pub top_function: Option<String>,
    pub top_verdict: Option<String>,
    /// Files present, and their total size (filled when listed).
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub bytes: u64,
}

/// `incident` as JSON whose `bytes` are `others` plus the JSON's own
/// length. That length depends on the digits of `bytes`, which grow with
/// it: starting from `others`, a few rounds settle.
fn with_own_size(incident: &mut Incident, others: u64) -> Result<Vec<u8>> {
    let mut own = 0;
    loop {
        incident.bytes = others + own;
        let json = serde_json::to_vec_pretty(&*incident)?;
        if json.len() as u64 == own {
            return Ok(json);
        }
        own = json.len() as u64;
    }
}

/// The reports directory and its limits.
pub struct Store {
    dir: PathBuf,
    max_reports: usize,
    max_bytes: u64,
    /// Holds the directory's lock.
    _lock: fs::File,
}

/// Whether `id` is one this store makes: `YYYYMMDDTHHMMSSZ-PID-NAME[-N]`,
/// letters, digits, `-` and `_` only. Rejects everything a path could be
/// made of (`..`, `/`, `%`, NUL) before any file is touched.
pub fn valid_id(id: &str) -> bool {
    (16..=80).contains(&id.len())
        && id.as_bytes()[0].is_ascii_digit()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Store {
    /// Opens the directory (creating it, mode 0700, if missing): it must be
    /// memtrace's user's own and writable by nobody else, and no other agent
    /// may use it (an exclusive lock on `.lock`, held while the store
    /// lives). Clears what an agent that died left in `.staging/` and
    /// applies the limits (they may have changed since the incidents were
    /// written); returns how many incidents that deleted.
    pub fn open(dir: &Path, max_reports: usize, max_bytes: u64) -> Result<(Store, u64)> {
        let show = dir.display();
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating --reports-dir {show}"))?;
        }
        let meta = fs::metadata(dir).with_context(|| format!("--reports-dir {show}"))?;
        if !meta.is_dir() {
            bail!("--reports-dir {show} is not a directory");
        }
        // SAFETY: geteuid has no preconditions.
        if meta.uid() != unsafe { libc::geteuid() } || meta.mode() & 0o022 != 0 {
            bail!(
                "--reports-dir {show} must belong to memtrace's user and be writable by nobody \
                 else (it is uid {}, mode {:o}): give a directory of its own",
                meta.uid(),
                meta.mode() & 0o7777
            );
        }
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(LOCK))
            .with_context(|| format!("opening {show}/{LOCK}"))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            bail!("another memtrace agent uses --reports-dir {show}");
        }
        let staging = dir.join(STAGING);
        let _ = fs::remove_dir_all(&staging);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .with_context(|| format!("creating {}", staging.display()))?;
        let store = Store {
            dir: dir.to_path_buf(),
            max_reports,
            max_bytes,
            _lock: lock,
        };
        let deleted = store.prune();
        Ok((store, deleted))
    }

    /// A fresh id for an incident of `pid` named `comm`, now.
    pub fn new_id(&self, pid: u32, comm: &str) -> String {
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let stamp: String = now.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let name: String = comm
            .chars()
            .map(|c| match c.is_ascii_alphanumeric() || c == '_' {
                true => c,
                false => '_',
            })
            .take(15)
            .collect();
        let base = format!("{stamp}-{pid}-{name}");
        let mut id = base.clone();
        let mut n = 1;
        while self.dir.join(&id).exists() || self.staging(&id).exists() {
            n += 1;
            id = format!("{base}-{n}");
        }
        id
    }

    /// Where an incident's files are written before it is committed.
    pub fn staging(&self, id: &str) -> PathBuf {
        self.dir.join(STAGING).join(id)
    }

    /// Creates the staging directory of `id`.
    pub fn begin(&self, id: &str) -> Result<PathBuf> {
        let dir = self.staging(id);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Writes incident.json, last, and moves the incident into place.
    /// Its `files` and `bytes` are what the directory then holds,
    /// incident.json included: what [`Store::list`] says of it.
    pub fn commit(&self, incident: &Incident) -> Result<()> {
        let staging = self.staging(&incident.id);
        let mut incident = incident.clone();
        incident.files.clear();
        let mut others = 0;
        for name in FILES {
            if name == META {
                incident.files.push(name.to_string());
            } else if let Ok(m) = fs::metadata(staging.join(name)) {
                incident.files.push(name.to_string());
                others += m.len();
            }
        }
        let json = with_own_size(&mut incident, others)?;
        fs::write(staging.join(META), json)?;
        fs::rename(&staging, self.dir.join(&incident.id))
            .with_context(|| format!("committing incident {}", incident.id))
    }

    pub fn discard(&self, id: &str) {
        let _ = fs::remove_dir_all(self.staging(id));
    }

    /// Every committed incident, newest first, with its files and size.
    pub fn list(&self) -> Vec<Incident> {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = dir
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| valid_id(name))
            .collect();
        // Ids start with their UTC time: by name is by age.
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.iter().filter_map(|id| self.load(id)).collect()
    }

    fn load(&self, id: &str) -> Option<Incident> {
        let dir = self.dir.join(id);
        let mut incident: Incident =
            serde_json::from_slice(&fs::read(dir.join(META)).ok()?).ok()?;
        incident.files.clear();
        incident.bytes = 0;
        for name in FILES {
            if let Ok(m) = fs::metadata(dir.join(name)) {
                incident.files.push(name.to_string());
                incident.bytes += m.len();
            }
        }
        Some(incident)
    }

    /// Deletes the oldest incidents while more than `--max-reports` are
    /// kept or they take more than `--max-report-bytes`; the newest is
    /// always kept. Returns how many went.
    pub fn prune(&self) -> u64 {
        let incidents = self.list();
        let mut total: u64 = incidents.iter().map(|i| i.bytes).sum();
        let mut kept = incidents.len();
        let mut deleted = 0;
        for old in incidents.iter().skip(1).rev() {
            if kept <= self.max_reports && total <= self.max_bytes {
                break;
            }
            if fs::remove_dir_all(self.dir.join(&old.id)).is_ok() {
                kept -= 1;
                total -= old.bytes;
                deleted += 1;
            }
        }
        deleted
    }

    /// The path of file `name` of incident `id`, when both are valid and it
    /// exists. `name` defaults to the report.
    pub fn file(&self, id: &str, name: Option<&str>) -> Option<PathBuf> {
        let name = name.unwrap_or(REPORT);
        if !valid_id(id) || !FILES.contains(&name) {
            return None;
        }
        let path = self.dir.join(id).join(name);
        // Only regular files, never through a symlink planted in the dir.
        let meta = fs::symlink_metadata(&path).ok()?;
        let parent = fs::symlink_metadata(self.dir.join(id)).ok()?;
        (meta.file_type().is_file() && parent.file_type().is_dir()).then_some(path)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn incident(id: &str) -> Incident {
        Incident {
            id: id.into(),
            node: "n".into(),
            reason: "growth".into(),
            detail: String::new(),
            pid: 1,
            comm: "x".into(),
            cgroup: None,
            container: None,
            anon_growth_bytes_per_hour: None,
            started: String::new(),
            ended: String::new(),
            outcome: String::new(),
            outstanding_bytes: 0,
            top_function: None,
            top_verdict: None,
            files: Vec::new(),
            bytes: 0,
        }
    }

    #[test]
    fn ids_are_never_paths() {
        assert!(valid_id("20261125T101500Z-42-leaky_app"));
        assert!(valid_id("20261125T101500Z-42-leaky_app-2"));
        for bad in [
            "..",
            "../x",
            "20261125T101500Z-42/../../etc",
            "20261125T101500Z-42-a.b",
            ".staging-20261125T101500Z-42-x",
            "20261125T101500Z-42-%2e%2e",
            "",
            "x20261125T101500Z-42-a",
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn commit_list_prune_and_serve() {
        let dir = std::env::temp_dir().join(format!("memtrace-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (store, _) = Store::open(&dir, 2, 10_000).unwrap();
        let mut ids = Vec::new();
        for n in 0..4 {
            let id = format!("2026112{n}T000000Z-1-x");
            let staging = store.begin(&id).unwrap();
            fs::write(staging.join(REPORT), vec![b'{'; 3000]).unwrap();
            store.commit(&incident(&id)).unwrap();
            ids.push(id);
            store.prune();
        }
        let listed = store.list();
        // incident.json on disk says what the listing says: its files
        // (itself included) and their size.
        for i in &listed {
            let on_disk: Incident =
                serde_json::from_slice(&fs::read(dir.join(&i.id).join(META)).unwrap()).unwrap();
            assert_eq!(on_disk.files, [META, REPORT]);
            assert_eq!(on_disk.files, i.files);
            assert_eq!(on_disk.bytes, i.bytes);
            let meta_len = fs::metadata(dir.join(&i.id).join(META)).unwrap().len();
            assert_eq!(on_disk.bytes, 3000 + meta_len);
        }
        let listed: Vec<String> = listed.into_iter().map(|i| i.id).collect();
        assert_eq!(listed, vec![ids[3].clone(), ids[2].clone()]);
        assert!(store.file(&ids[3], None).is_some());
        assert!(store.file(&ids[3], Some("../../etc/passwd")).is_none());
        assert!(store.file("..", None).is_none());
        assert!(store.file(&ids[0], None).is_none());
        // One agent per directory.
        assert!(Store::open(&dir, 2, 10_000).is_err());
        store.begin("20261130T000000Z-1-y").unwrap();
        drop(store);
        // Bytes: 2 × ~3.3 KB fits; a limit of one incident keeps the newest
        // (at open, counted).
        let (small, deleted) = Store::open(&dir, 10, 4000).unwrap();
        assert_eq!(deleted, 1);
        assert_eq!(small.list().len(), 1);
        assert_eq!(small.list()[0].id, ids[3]);
        // Staging leftovers go at open; a fresh id avoids existing ones.
        assert!(!small.staging("20261130T000000Z-1-y").exists());
        let id = small.new_id(7, "a b/c");
        assert!(valid_id(&id) && id.ends_with("-7-a_b_c"), "{id}");
        drop(small);
        // A directory others can write is refused.
        let shared = dir.join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        let err = Store::open(&shared, 1, 1).err().unwrap().to_string();
        assert!(err.contains("writable by nobody else"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}

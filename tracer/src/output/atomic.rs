//! Writing report files safely when memtrace runs as root in directories
//! other users can write to. A path is followed through symbolic links
//! owned by root or by memtrace's own user only. A link anyone else planted
//! on the way (a directory, or the file itself: `out.json -> /etc/shadow`)
//! is never followed: found when the outputs are checked at start, it is an
//! error; a link planted at the file's own name later is replaced by the
//! report. A regular file is written atomically: a new file in the same
//! directory (`O_CREAT|O_EXCL|O_NOFOLLOW`, so nothing planted under its name
//! is opened), then renamed over the name, which replaces whatever is there
//! (a link itself, not its target; a hard link to someone else's file loses
//! that name, the file is untouched). The directory is opened one component
//! at a time with `O_NOFOLLOW`, so a directory swapped for a link after the
//! check fails the write. Devices and pipes (`/dev/null`, `/dev/stdout`) are
//! written in place.

use std::{
    collections::VecDeque,
    ffi::{OsStr, OsString},
    fs,
    io::{self, ErrorKind, Write},
    os::{fd::OwnedFd, unix::fs::MetadataExt},
    path::{Component, Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, Mode, OFlags, CWD};

/// Where a report goes, once its path is resolved.
#[derive(Debug, PartialEq, Eq)]
enum Destination {
    /// A regular file (existing or not), replaced atomically: `name` in
    /// `dir`, a path without symbolic links.
    File { dir: PathBuf, name: OsString },
    /// A device, pipe or socket (or a /proc link to one), written in place.
    Stream(PathBuf),
}

/// Symbolic links followed in one path at most (the kernel's limit).
const MAX_LINKS: usize = 40;

/// Checks now that `path` can take a report (its directory exists and
/// takes a new file, links on the way are trusted, it is not a directory);
/// writes nothing.
pub fn check(path: &Path) -> Result<()> {
    match resolve(path, false)? {
        Destination::File { dir, name } => {
            let dirfd = open_dir(&dir)?;
            let (_, temp) = create_temp(&dirfd, &dir, &name)?;
            let _ = rustix::fs::unlinkat(&dirfd, &temp, AtFlags::empty());
            Ok(())
        }
        Destination::Stream(_) => Ok(()),
    }
}

/// Writes what `fill` writes to `path` as the module says: a regular file
/// atomically, a device or pipe in place.
pub fn write(path: &Path, fill: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<()> {
    match resolve(path, true)? {
        Destination::File { dir, name } => {
            let dirfd = open_dir(&dir)?;
            let (file, temp) = create_temp(&dirfd, &dir, &name)?;
            let mut out = io::BufWriter::new(fs::File::from(file));
            let written = fill(&mut out)
                .and_then(|()| out.into_inner().map_err(io::IntoInnerError::into_error))
                .and_then(|file| file.sync_all());
            let renamed = written.and_then(|()| {
                rustix::fs::renameat(&dirfd, &temp, &dirfd, &name).map_err(Into::into)
            });
            if renamed.is_err() {
                let _ = rustix::fs::unlinkat(&dirfd, &temp, AtFlags::empty());
            }
            renamed.with_context(|| format!("writing {}", path.display()))
        }
        Destination::Stream(target) => {
            let flags = OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOCTTY;
            let fd = rustix::fs::open(&target, flags, Mode::empty())
                .with_context(|| format!("opening {}", target.display()))?;
            let mut out = io::BufWriter::new(fs::File::from(fd));
            fill(&mut out)
                .and_then(|()| out.flush())
                .with_context(|| format!("writing {}", path.display()))
        }
    }
}

/// Follows `path` like the kernel does, but only through symbolic links
/// owned by root or by the user memtrace runs as. Another user's link is an
/// error, unless it is the last component and `replace_last`: then it is
/// the name to replace (when writing, after [`check`] found none there).
fn resolve(path: &Path, replace_last: bool) -> Result<Destination> {
    let me = rustix::process::geteuid().as_raw();
    let mut todo: VecDeque<OsString> = VecDeque::new();
    push_front(&mut todo, path);
    let mut done = match path.is_absolute() {
        true => PathBuf::from("/"),
        false => std::env::current_dir().context("reading the current directory")?,
    };
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        match part.as_os_str() {
            p if p == "/" => done = PathBuf::from("/"),
            p if p == "." => {}
            p if p == ".." => {
                done.pop();
            }
            name => {
                let next = done.join(name);
                let last = todo.is_empty();
                let meta = match fs::symlink_metadata(&next) {
                    Ok(m) => m,
                    Err(e) if e.kind() == ErrorKind::NotFound && last => {
                        done = next;
                        break;
                    }
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("cannot write to {}: {}", path.display(), next.display())
                        })
                    }
                };
                if !meta.file_type().is_symlink() {
                    done = next;
                    continue;
                }
                if meta.uid() != 0 && meta.uid() != me {
                    if last && replace_last {
                        return Ok(Destination::File {
                            dir: done,
                            name: name.to_os_string(),
                        });
                    }
                    bail!(
                        "not writing to {}: {} is a symbolic link owned by uid {}, not by root or \
                         memtrace's user; give the path it leads to",
                        path.display(),
                        next.display(),
                        meta.uid()
                    );
                }
                links += 1;
                if links > MAX_LINKS {
                    bail!(
                        "cannot write to {}: too many symbolic links",
                        path.display()
                    );
                }
                let target = fs::read_link(&next)
                    .with_context(|| format!("reading the link {}", next.display()))?;
                // /proc/PID/fd/N of a pipe or socket reads `pipe:[123]`:
                // not a path, only the kernel can open it.
                if next.starts_with("/proc") && !done.join(&target).exists() && last {
                    return Ok(Destination::Stream(next));
                }
                push_front(&mut todo, &target);
            }
        }
    }
    match fs::symlink_metadata(&done) {
        Ok(m) if m.is_dir() => bail!("cannot write to {}: it is a directory", path.display()),
        Ok(m) if !m.is_file() => return Ok(Destination::Stream(done)),
        _ => {}
    }
    let name = done
        .file_name()
        .with_context(|| format!("cannot write to {}: no file name", path.display()))?
        .to_os_string();
    done.pop();
    Ok(Destination::File { dir: done, name })
}

/// Puts the components of `path` in front of `todo`.
fn push_front(todo: &mut VecDeque<OsString>, path: &Path) {
    for c in path.components().rev() {
        let part: &OsStr = match c {
            Component::RootDir | Component::Prefix(_) => OsStr::new("/"),
            Component::CurDir => OsStr::new("."),
            Component::ParentDir => OsStr::new(".."),
            Component::Normal(n) => n,
        };
        todo.push_front(part.to_os_string());
    }
}

/// Opens directory `dir` (a path without links, from [`resolve`]) one
/// component at a time, none of them followed if it became a link.
fn open_dir(dir: &Path) -> Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut fd = rustix::fs::openat(CWD, "/", flags, Mode::empty())?;
    for c in dir.components() {
        if let Component::Normal(name) = c {
            fd = rustix::fs::openat(&fd, name, flags | OFlags::NOFOLLOW, Mode::empty())
                .with_context(|| {
                    format!(
                        "opening the directory {} (not following links)",
                        dir.display()
                    )
                })?;
        }
    }
    Ok(fd)
}

/// Creates a new, hidden file next to `name` in `dirfd`, which nothing
/// else can have planted: `O_EXCL` fails on anything already there, link
/// or not. Mode 0644 less the umask, as a plain create would give.
fn create_temp(dirfd: &OwnedFd, dir: &Path, name: &OsStr) -> Result<(OwnedFd, OsString)> {
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(
        ".memtrace-{}-{}",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    ));
    let fd = rustix::fs::openat(dirfd, &temp, flags, Mode::from_raw_mode(0o644))
        .with_context(|| format!("cannot write the report to {}", dir.join(name).display()))?;
    Ok((fd, temp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("memtrace-outfile-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn file(dir: &Path, name: &str) -> Destination {
        Destination::File {
            dir: dir.to_path_buf(),
            name: name.into(),
        }
    }

    #[test]
    fn writes_replace_the_file_and_leave_nothing_else() {
        let dir = scratch("replace");
        let out = dir.join("r.json");
        fs::write(&out, "old").unwrap();
        let inode = fs::metadata(&out).unwrap().ino();
        write(&out, |w| w.write_all(b"new")).unwrap();
        assert_eq!(fs::read_to_string(&out).unwrap(), "new");
        assert_ne!(
            fs::metadata(&out).unwrap().ino(),
            inode,
            "a new file, renamed"
        );
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["r.json"]);
        check(&dir.join("fresh.json")).unwrap();
        assert!(!dir.join("fresh.json").exists(), "check writes nothing");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn links_are_followed_only_when_trusted() {
        let dir = scratch("links");
        fs::create_dir(dir.join("real")).unwrap();
        symlink("real", dir.join("mine")).unwrap();
        symlink("real/x.json", dir.join("x.json")).unwrap();
        assert_eq!(
            resolve(&dir.join("mine/a.json"), false).unwrap(),
            file(&dir.join("real"), "a.json")
        );
        assert_eq!(
            resolve(&dir.join("x.json"), false).unwrap(),
            file(&dir.join("real"), "x.json")
        );
        assert_eq!(
            resolve(&dir.join("real/../real/./b.json"), false).unwrap(),
            file(&dir.join("real"), "b.json")
        );
        if rustix::process::geteuid().is_root() {
            // A link nobody (uid 65534) made, as file or as directory.
            let plant = |target: &str, link: &str| {
                symlink(target, dir.join(link)).unwrap();
                std::os::unix::fs::lchown(dir.join(link), Some(65534), None).unwrap();
            };
            plant("real", "theirs");
            plant("real", "theirs.json");
            let err = resolve(&dir.join("theirs/a.json"), true)
                .unwrap_err()
                .to_string();
            assert!(err.contains("owned by uid 65534"), "{err}");
            let err = check(&dir.join("theirs.json")).unwrap_err().to_string();
            assert!(err.contains("owned by uid 65534"), "{err}");
            // Planted after the check: replaced, its target untouched.
            fs::write(dir.join("real/kept"), "kept").unwrap();
            fs::remove_file(dir.join("theirs.json")).unwrap();
            plant("real/kept", "theirs.json");
            write(&dir.join("theirs.json"), |w| w.write_all(b"report")).unwrap();
            assert_eq!(fs::read_to_string(dir.join("real/kept")).unwrap(), "kept");
            assert!(fs::symlink_metadata(dir.join("theirs.json"))
                .unwrap()
                .is_file());
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn directories_devices_and_missing_directories() {
        let dir = scratch("kinds");
        let err = check(&dir).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        assert!(check(&dir.join("missing/r.json")).is_err());
        assert_eq!(
            resolve(Path::new("/dev/null"), false).unwrap(),
            Destination::Stream("/dev/null".into())
        );
        write(Path::new("/dev/null"), |w| w.write_all(b"report")).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_pipe_through_proc_is_written_in_place() {
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        let path = PathBuf::from(format!("/proc/self/fd/{}", {
            use std::os::fd::AsRawFd;
            writer.as_raw_fd()
        }));
        assert!(matches!(
            resolve(&path, false).unwrap(),
            Destination::Stream(_)
        ));
        write(&path, |w| w.write_all(b"hello")).unwrap();
        let mut buf = [0u8; 5];
        rustix::io::read(&reader, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
    }
}

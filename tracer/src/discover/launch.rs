//! `memtrace -- CMD`: starts CMD held just before exec, so that probes are in
//! place before its first allocation, and finds the libraries it will load.
//!
//! The child is forked before the async runtime starts (fork in a
//! multi-threaded process is unsafe) and blocks reading a pipe; `release`
//! lets it exec. If memtrace dies before that, the pipe closes and the child
//! exits 127 without ever running CMD untraced.

use std::{
    env,
    ffi::CString,
    fs,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::PermissionsExt},
    },
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

/// A forked child waiting to exec CMD.
pub struct HeldChild {
    pub pid: u32,
    pub program: PathBuf,
    go: Option<OwnedFd>,
    /// Set once waited for: its pid may then belong to another process and
    /// must never be signalled again.
    reaped: bool,
}

/// Resolves `name` like execvp would: as a path if it has a slash, else
/// through $PATH.
pub fn resolve_program(name: &str) -> Result<PathBuf> {
    let is_exec = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        if !p.exists() {
            bail!("command not found: {name}");
        }
        if !is_exec(&p) {
            bail!("{name} is not an executable file");
        }
        return Ok(p);
    }
    let path = env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_exec(p))
        .with_context(|| format!("command not found: {name}"))
}

/// Forks a child that will exec `argv` once released.
pub fn spawn_held(argv: &[String]) -> Result<HeldChild> {
    let program = resolve_program(&argv[0])?;
    let c_program = CString::new(program.as_os_str().as_bytes()).context("NUL in command")?;
    let c_args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .context("NUL in command arguments")?;
    let mut c_argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
    c_argv.push(std::ptr::null());

    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    let (read_fd, write_fd) = (fds[0], fds[1]);
    // SAFETY: fork; the child only calls async-signal-safe functions
    // (read, execv, _exit) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        // SAFETY: async-signal-safe calls only.
        unsafe {
            libc::close(write_fd);
            // Should memtrace die while the command is stopped (at its exec
            // or entry point, see trace::command::continue_at_entry), the kernel
            // continues it. Kept across exec (not for set-uid programs).
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGCONT);
            let mut byte = 0u8;
            let n = libc::read(read_fd, (&raw mut byte).cast(), 1);
            if n != 1 {
                libc::_exit(127);
            }
            libc::execv(c_program.as_ptr(), c_argv.as_ptr());
            libc::_exit(127);
        }
    }
    // SAFETY: read_fd is ours to close; write_fd is owned from here on.
    let go = unsafe {
        libc::close(read_fd);
        OwnedFd::from_raw_fd(write_fd)
    };
    Ok(HeldChild {
        pid: pid as u32,
        program,
        go: Some(go),
        reaped: false,
    })
}

impl HeldChild {
    /// Lets the child exec CMD.
    pub fn release(&mut self) -> Result<()> {
        if let Some(go) = self.go.take() {
            // SAFETY: writing one byte from a valid buffer to our pipe.
            let n = unsafe { libc::write(go.as_raw_fd(), b"g".as_ptr().cast(), 1) };
            if n != 1 {
                return Err(std::io::Error::last_os_error()).context("releasing the child");
            }
        }
        Ok(())
    }
    /// Reaps the child if it has exited (never blocks). True once reaped.
    pub fn try_reap(&mut self) -> bool {
        if !self.reaped {
            // SAFETY: non-blocking wait for our own child.
            let rc = unsafe { libc::waitpid(self.pid as i32, std::ptr::null_mut(), libc::WNOHANG) };
            self.reaped = rc == self.pid as i32;
        }
        self.reaped
    }

    /// Stops the child if it still runs (SIGTERM, then SIGKILL after
    /// `grace`) and reaps it.
    pub fn stop(&mut self, grace: std::time::Duration) {
        if self.try_reap() {
            return;
        }
        // SAFETY: signalling our own, not yet reaped, child.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let until = std::time::Instant::now() + grace;
        while !self.try_reap() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if !self.reaped {
            // SAFETY: as above; then a blocking wait for it.
            unsafe {
                libc::kill(self.pid as i32, libc::SIGKILL);
                libc::waitpid(self.pid as i32, std::ptr::null_mut(), 0);
            }
            self.reaped = true;
        }
    }
}

/// The shared libraries `program` will load, as its dynamic loader resolves
/// them (`ld.so --list`, the mechanism behind ldd), plus the program itself
/// (whose own allocator counts for static binaries).
pub fn libraries_of(program: &Path) -> Result<Vec<PathBuf>> {
    let data = fs::read(program).with_context(|| format!("reading {}", program.display()))?;
    // A script: what runs is its interpreter (`#!/usr/bin/env python3` is
    // env, which execs python3). Scripts can chain (pyenv shims): follow a
    // few levels.
    let mut program = program.to_path_buf();
    let mut data = data;
    for _ in 0..4 {
        let Some(interpreter) = shebang_interpreter(&data)? else {
            break;
        };
        program = interpreter;
        data = fs::read(&program).with_context(|| format!("reading {}", program.display()))?;
    }
    let program = program.as_path();
    let mut found = vec![program.to_path_buf()];
    let Some(interp) = interpreter(&data) else {
        return Ok(found); // statically linked
    };
    let out = Command::new(&interp)
        .arg("--list")
        .arg(program)
        .output()
        .with_context(|| format!("running {interp} --list {}", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    found.extend(parse_loader_list(&text));
    found.push(PathBuf::from(interp));
    found.sort();
    found.dedup();
    Ok(found)
}

/// The program a `#!` script runs: its interpreter, or for `env` the
/// command env runs (options like `-S` skipped). None if not a script.
fn shebang_interpreter(data: &[u8]) -> Result<Option<PathBuf>> {
    let Some(rest) = data.strip_prefix(b"#!") else {
        return Ok(None);
    };
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let Some(interpreter) = words.next() else {
        return Ok(None);
    };
    if interpreter.rsplit('/').next() == Some("env") {
        if let Some(cmd) = words.find(|w| !w.starts_with('-') && !w.contains('=')) {
            return resolve_program(cmd).map(Some);
        }
    }
    Ok(Some(PathBuf::from(interpreter)))
}

/// Paths from `ld.so --list` output (`\tlibc.so.6 => /lib/.../libc.so.6 (0x...)`).
fn parse_loader_list(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let rest = line.split_once("=>").map_or(line, |(_, r)| r).trim();
            let path = rest.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The ELF's PT_INTERP, if any.
fn interpreter(data: &[u8]) -> Option<String> {
    use object::read::elf::{FileHeader, ProgramHeader};
    let header = object::elf::FileHeader64::<object::Endianness>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    header
        .program_headers(endian, data)
        .ok()?
        .iter()
        .find_map(|ph| ph.interpreter(endian, data).ok().flatten())
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loader_output() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f2)\n";
        assert_eq!(
            parse_loader_list(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn finds_libc_of_a_dynamic_program() {
        let libs = libraries_of(&resolve_program("ls").unwrap()).unwrap();
        assert!(libs.iter().any(|p| p.ends_with("libc.so.6")), "{libs:?}");
    }

    #[test]
    fn scripts_run_their_interpreter() {
        assert_eq!(shebang_interpreter(b"\x7fELF").unwrap(), None);
        assert_eq!(
            shebang_interpreter(b"#!/bin/sh -e\necho").unwrap(),
            Some(PathBuf::from("/bin/sh"))
        );
        let via_env = shebang_interpreter(b"#!/usr/bin/env -S sh -x\n")
            .unwrap()
            .unwrap();
        assert!(via_env.ends_with("sh"), "{via_env:?}");
        let dir = std::env::temp_dir().join(format!("memtrace-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("s.sh");
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        let libs = libraries_of(&script).unwrap();
        assert!(libs.iter().any(|p| p.ends_with("libc.so.6")), "{libs:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_commands_are_one_line_errors() {
        let err = resolve_program("no-such-command-xyz")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "command not found: no-such-command-xyz");
    }
}

//! HotSpot's attach mechanism, spoken as `jcmd` speaks it: the JVM's
//! attach listener is started by a `.attach_pid<ns-pid>` file in its temp
//! directory and a SIGQUIT, then listens on the UNIX socket
//! `.java_pid<ns-pid>` there; each command is one connection (protocol 1:
//! `1\0jcmd\0<command line>\0\0\0`, answered by a status line and the
//! command's output). Paths are taken through `/proc/PID/root`, so a JVM in
//! a container is reached in its own mount and pid namespaces.

use std::{
    io::{Read, Write},
    os::unix::{
        fs::{FileTypeExt, MetadataExt, OpenOptionsExt},
        net::UnixStream,
    },
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::discover::target;

/// SIGQUIT: what makes HotSpot look for the attach file.
const SIGQUIT: i32 = 3;

/// The longest answer read (a JFR command's output is a few lines).
const MAX_ANSWER: u64 = 1 << 20;

/// A JVM's attach socket, found or started.
pub struct Attach {
    pid: u32,
    socket: PathBuf,
}

/// The JVM's temp directory as memtrace reaches it: HotSpot's is `/tmp`
/// on Linux, whatever `java.io.tmpdir` says.
pub fn temp_dir(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root/tmp"))
}

impl Attach {
    /// The attach socket of `pid` if its listener runs already (as after
    /// an earlier `jcmd`): nothing is sent to the process.
    pub fn existing(pid: u32) -> Option<Attach> {
        let (ns_pid, uid) = target::namespace_pid_and_uid(pid)?;
        let socket = temp_dir(pid).join(format!(".java_pid{ns_pid}"));
        is_socket_of(&socket, uid).then_some(Attach { pid, socket })
    }

    /// Starts `pid`'s attach listener: writes the attach file and sends
    /// SIGQUIT, which HotSpot then takes as the trigger (without the file
    /// it would print a thread dump to its standard output instead; the
    /// caller has made sure the attach mechanism is not disabled). Waits
    /// up to `wait` for the socket.
    pub fn start(pid: u32, wait: Duration) -> Result<Attach> {
        let (ns_pid, uid) = target::namespace_pid_and_uid(pid).context("reading its status")?;
        if !target::catches_signal(pid, SIGQUIT)? {
            // (-Xrs JVMs do not catch it, but start their listener with
            // themselves: found by `existing`.)
            bail!("it does not catch SIGQUIT and its attach listener is not running");
        }
        let dir = temp_dir(pid);
        let trigger = dir.join(format!(".attach_pid{ns_pid}"));
        let socket = dir.join(format!(".java_pid{ns_pid}"));
        // A file left by someone else is not trusted to be a plain file:
        // it is replaced by one made here, never followed.
        let _ = std::fs::remove_file(&trigger);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&trigger)
            .with_context(|| format!("creating {}", trigger.display()))?;
        // SAFETY: kill(2) with a valid signal number; no memory is passed.
        let sent = unsafe { libc::kill(pid as i32, SIGQUIT) } == 0;
        let err = std::io::Error::last_os_error();
        let deadline = Instant::now() + wait;
        let found = sent
            && loop {
                if is_socket_of(&socket, uid) {
                    break true;
                }
                if Instant::now() >= deadline || !target::is_alive(pid) {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
        let _ = std::fs::remove_file(&trigger);
        if !sent {
            return Err(err).context("sending SIGQUIT");
        }
        if !found {
            bail!(
                "its attach listener did not start within {} s of SIGQUIT",
                wait.as_secs()
            );
        }
        Ok(Attach { pid, socket })
    }

    /// Runs a diagnostic command (`jcmd PID <line>`) and returns its
    /// output; an error when the JVM reports one.
    pub fn jcmd(&self, line: &str, wait: Duration) -> Result<String> {
        let mut s = UnixStream::connect(&self.socket)
            .with_context(|| format!("connecting to {}", self.socket.display()))?;
        s.set_read_timeout(Some(wait))?;
        s.set_write_timeout(Some(wait))?;
        let mut request = Vec::with_capacity(line.len() + 12);
        for part in ["1", "jcmd", line, "", ""] {
            request.extend_from_slice(part.as_bytes());
            request.push(0);
        }
        s.write_all(&request)
            .with_context(|| format!("pid {}: sending {line:?}", self.pid))?;
        let mut answer = Vec::new();
        s.take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .with_context(|| format!("reading the answer to {line:?}"))?;
        parse_answer(&answer)
    }
}

/// An answer: a status line (0 when the command ran), then its output.
/// HotSpot reports a command that failed inside (an unknown command, bad
/// arguments) with status 0 and the Java exception's text; that text
/// counts as the error too.
fn parse_answer(answer: &[u8]) -> Result<String> {
    let text = String::from_utf8_lossy(answer);
    let (status, out) = text.split_once('\n').unwrap_or((&text, ""));
    let out = out.trim_end().to_string();
    match status.trim().parse::<i32>() {
        Ok(0) if !is_exception(&out) => Ok(out),
        Ok(_) => bail!("{}", first_line(&out)),
        Err(_) => bail!("not an attach answer: {:?}", first_line(&text)),
    }
}

fn is_exception(out: &str) -> bool {
    out.lines().next().is_some_and(|l| {
        l.starts_with("java.lang.") && (l.contains("Exception") || l.contains("Error"))
            || l.starts_with("Unknown diagnostic command")
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// Whether `path` is a socket the JVM's user (or root) made.
fn is_socket_of(path: &std::path::Path, uid: u32) -> bool {
    std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.file_type().is_socket() && (m.uid() == uid || m.uid() == 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_their_errors() {
        assert_eq!(
            parse_answer(b"0\nStarted recording 1.\n").unwrap(),
            "Started recording 1."
        );
        let e =
            parse_answer(b"0\njava.lang.IllegalArgumentException: Unknown diagnostic command\n")
                .unwrap_err();
        assert!(format!("{e}").contains("IllegalArgumentException"), "{e}");
        assert!(parse_answer(b"-1\nfailed\n").is_err());
        assert!(parse_answer(b"garbage").is_err());
    }
}

//! Node.js processes, driven from outside through their own inspector:
//! which processes are Node and whether their inspector may be opened
//! (`SIGUSR1` caught, not disabled, not open already), the inspector's
//! listening socket in the process's network namespace (`sockets`), the
//! DevTools protocol spoken to it (`inspector`), V8's sampling heap
//! profile read into stacks (`profile`), and heap snapshots streamed
//! (`snapshot`) and compared (`heapdiff`).

pub mod heapdiff;
pub mod inspector;
pub mod profile;
pub mod snapshot;
pub mod sockets;

use std::path::Path;

use anyhow::{bail, Context, Result};

/// SIGUSR1: what makes a Node process open its inspector.
const SIGUSR1: i32 = 10;

/// Whether `pid` runs Node: its executable is named `node` (or `nodejs`,
/// Debian's old name) or it maps `libnode`.
pub fn is_node(pid: u32) -> bool {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let named = exe
        .as_deref()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "node" || n == "nodejs" || n.starts_with("node-"));
    named
        || std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .is_ok_and(|m| m.lines().any(|l| l.contains("/libnode.so")))
}

/// What the process's command line and `NODE_OPTIONS` say about its
/// inspector.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `--disable-sigusr1`: the signal would not open it.
    pub sigusr1_disabled: bool,
    /// `--inspect`, `--inspect-brk`, `--inspect-wait`: open from its start.
    pub inspect: bool,
    /// `--inspect-port=[HOST:]PORT` (or `--debug-port`), or the port of
    /// `--inspect=`: where SIGUSR1 opens it (default 127.0.0.1:9229).
    pub host: Option<String>,
    pub port: Option<u16>,
}

impl Options {
    /// Reads the options from `pid`'s command line and environment.
    pub fn of(pid: u32) -> Options {
        let (args, env) = super::target::args_and_environ(pid);
        let node_options = env
            .iter()
            .find_map(|v| v.strip_prefix("NODE_OPTIONS="))
            .unwrap_or("");
        Options::parse(
            // Node's own options come before the script (the first
            // argument that is not an option).
            args.iter()
                .skip(1)
                .take_while(|a| a.starts_with('-'))
                .map(String::as_str)
                .chain(node_options.split_whitespace()),
        )
    }

    pub fn parse<'a>(args: impl Iterator<Item = &'a str>) -> Options {
        let mut o = Options::default();
        for arg in args {
            let (name, value) = match arg.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (arg, None),
            };
            match name {
                "--disable-sigusr1" => o.sigusr1_disabled = true,
                "--inspect" | "--inspect-brk" | "--inspect-wait" => {
                    o.inspect = true;
                    if let Some(v) = value {
                        o.set_address(v);
                    }
                }
                "--inspect-port" | "--debug-port" => {
                    if let Some(v) = value {
                        o.set_address(v);
                    }
                }
                _ => {}
            }
        }
        o
    }

    fn set_address(&mut self, value: &str) {
        let (host, port) = match value.rsplit_once(':') {
            Some((h, p)) => (Some(h), p),
            None => (None, value),
        };
        if let Some(h) = host {
            self.host = Some(h.trim_matches(['[', ']']).to_string());
        }
        if let Ok(p) = port.parse() {
            self.port = Some(p);
        }
    }

    /// Whether the inspector would listen on loopback only.
    pub fn loopback(&self) -> bool {
        self.host
            .as_deref()
            .is_none_or(|h| h == "localhost" || h == "::1" || h.starts_with("127."))
    }
}

/// Whether `pid` has a handler for SIGUSR1: Node installs one at start
/// unless `--disable-sigusr1`. Without it the signal's default action
/// would kill the process, so it is never sent.
pub fn catches_sigusr1(pid: u32) -> Result<bool> {
    super::target::catches_signal(pid, SIGUSR1)
}

/// Asks `pid` to open its inspector.
pub fn signal_open(pid: u32) -> Result<()> {
    if !catches_sigusr1(pid)? {
        bail!("it does not catch SIGUSR1");
    }
    // SAFETY: kill(2) with a valid signal number; no memory is passed.
    if unsafe { libc::kill(pid as i32, SIGUSR1) } != 0 {
        return Err(std::io::Error::last_os_error()).context("sending SIGUSR1");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_command_line_and_node_options() {
        let o = Options::parse(["--disable-sigusr1", "--max-old-space-size=100"].into_iter());
        assert!(o.sigusr1_disabled && !o.inspect && o.loopback());
        let o = Options::parse(["--inspect-port=0.0.0.0:9300"].into_iter());
        assert_eq!((o.host.as_deref(), o.port), (Some("0.0.0.0"), Some(9300)));
        assert!(!o.loopback());
        let o = Options::parse(["--inspect=9333"].into_iter());
        assert_eq!((o.inspect, o.port, o.loopback()), (true, Some(9333), true));
        let o = Options::parse(["--inspect-port=[::1]:9229"].into_iter());
        assert_eq!((o.host.as_deref(), o.loopback()), (Some("::1"), true));
    }
}

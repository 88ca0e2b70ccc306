//! Node workloads: the HTTP servers of `tests/workloads/node_leaks/`
//! (each leaking, or not, in its request handler), the load sent to them
//! from another Node process, V8's own heap figures they print, and the
//! TCP ports a process listens on (its inspector's, once opened).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::{secs, Workload};

/// Debian's Node 20.
pub const NODE: &str = "/usr/bin/node";

/// The port Node's inspector opens on by default: the tests that let it
/// hold this lock (the others pass `--inspect-port=0`).
static DEFAULT_INSPECTOR_PORT: Mutex<()> = Mutex::new(());

/// Holds port 9229 for the caller's Node processes.
pub fn default_inspector_port() -> MutexGuard<'static, ()> {
    DEFAULT_INSPECTOR_PORT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `tests/workloads/node_leaks/NAME.js`.
pub fn node_workload(name: &str) -> PathBuf {
    crate::workspace_root().join(format!("tests/workloads/node_leaks/{name}.js"))
}

/// A node_leaks server, running.
pub struct NodeServer {
    pub process: Workload,
    /// Where it serves, on 127.0.0.1.
    pub port: u16,
}

impl NodeServer {
    /// Starts `node NODE_ARGS NAME.js` and waits for its port.
    #[track_caller]
    pub fn start(name: &str, node_args: &[&str]) -> NodeServer {
        NodeServer::start_as(Path::new(NODE), name, node_args)
    }

    /// [`NodeServer::start`] with Node run as `exe` (a link to it under
    /// another name, for its comm).
    #[track_caller]
    pub fn start_as(exe: &Path, name: &str, node_args: &[&str]) -> NodeServer {
        let script = node_workload(name);
        let mut args: Vec<&str> = node_args.to_vec();
        args.push(script.to_str().unwrap());
        let mut process = Workload::spawn_ready(exe, &args);
        let line = process.next_line(secs(10));
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{name}: expected 'listening PORT', got {line:?}"));
        NodeServer { process, port }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Starts its load: `rate` requests a second (`count` of them, or
    /// until dropped).
    #[track_caller]
    pub fn load(&self, rate: u32, count: Option<u32>) -> Workload {
        NodeServer::load_on(self.port, rate, count)
    }

    /// Starts load on a node_leaks server serving on `port`.
    #[track_caller]
    pub fn load_on(port: u16, rate: u32, count: Option<u32>) -> Workload {
        let script = node_workload("load");
        let port = port.to_string();
        let rate = rate.to_string();
        let count = count.map(|c| c.to_string());
        let mut args = vec![script.to_str().unwrap(), port.as_str(), rate.as_str()];
        args.extend(count.as_deref());
        Workload::spawn_ready(&PathBuf::from(NODE), &args)
    }

    /// V8's used_heap_size after a full collection, as the server prints
    /// it on SIGUSR2.
    #[track_caller]
    pub fn used_heap(&mut self) -> u64 {
        self.process.signal(libc::SIGUSR2);
        let line = self.process.next_line(secs(10));
        line.strip_prefix("heap ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("expected 'heap BYTES', got {line:?}"))
    }
}

/// The TCP ports `pid` listens on (its sockets among the listening ones
/// of its network namespace).
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_str()?.to_string();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local address, state 0A (listen), inode.
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                let port = f[1].rsplit(':').next().unwrap_or("0");
                ports.push(u16::from_str_radix(port, 16).unwrap_or(0));
            }
        }
    }
    ports
}

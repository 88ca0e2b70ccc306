//! TCP sockets as a process's own network namespace sees them: the ones it
//! listens on (its fds' socket inodes in its `/proc/PID/net/tcp*`), and
//! the connections made to a port (who else talks to its inspector).

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

/// One row of `/proc/PID/net/tcp` or `tcp6`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The kernel's TCP state (`0A` listen, `01` established).
    pub state: u8,
    pub inode: u64,
}

const LISTEN: u8 = 0x0a;
const ESTABLISHED: u8 = 0x01;

/// Every TCP socket in `pid`'s network namespace (IPv4 and IPv6).
pub fn rows(pid: u32) -> Vec<Row> {
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(parse_row)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The socket inodes among `pid`'s open files.
pub fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The addresses `pid` itself listens on.
pub fn listening(pid: u32) -> Vec<SocketAddr> {
    let mine = socket_inodes(pid);
    rows(pid)
        .into_iter()
        .filter(|r| r.state == LISTEN && mine.contains(&r.inode))
        .map(|r| r.local)
        .collect()
}

/// Whether anything in `pid`'s namespace listens on `port`.
pub fn port_taken(pid: u32, port: u16) -> bool {
    rows(pid)
        .iter()
        .any(|r| r.state == LISTEN && r.local.port() == port)
}

/// The peers connected to `port` in `pid`'s namespace (the server side of
/// each connection: local port `port`).
pub fn peers_of(pid: u32, port: u16) -> Vec<SocketAddr> {
    rows(pid)
        .into_iter()
        .filter(|r| r.state == ESTABLISHED && r.local.port() == port)
        .map(|r| r.remote)
        .collect()
}

fn parse_row(line: &str) -> Option<Row> {
    let mut f = line.split_whitespace();
    let _slot = f.next()?;
    let local = parse_addr(f.next()?)?;
    let remote = parse_addr(f.next()?)?;
    let state = u8::from_str_radix(f.next()?, 16).ok()?;
    // tx:rx queues, timer, retransmits, uid, timeout, then the inode.
    let inode = f.nth(5)?.parse().ok()?;
    Some(Row {
        local,
        remote,
        state,
        inode,
    })
}

/// `0100007F:2405` (IPv4: one 32-bit word in host order) or 32 hex digits
/// (IPv6: four such words), then the port in hex.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_le_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_of_both_families() {
        let v4 = "   0: 0100007F:2405 00000000:0000 0A 00000000:00000000 00:00000000 \
                  00000000     0        0 123456 1 0000000000000000 100 0 0 10 0";
        let r = parse_row(v4).unwrap();
        assert_eq!(r.local, "127.0.0.1:9221".parse().unwrap());
        assert_eq!((r.state, r.inode), (LISTEN, 123456));
        let v6 = "   1: 00000000000000000000000001000000:2405 \
                  00000000000000000000000001000000:D431 01 00000000:00000000 00:00000000 \
                  00000000     0        0 777 1 0000000000000000 20 4 30 10 -1";
        let r = parse_row(v6).unwrap();
        assert_eq!(r.local, "[::1]:9221".parse().unwrap());
        assert_eq!(r.remote.port(), 0xd431);
        assert_eq!((r.state, r.inode), (ESTABLISHED, 777));
    }

    #[test]
    fn this_process_listens_where_it_bound() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let me = std::process::id();
        assert!(listening(me).contains(&addr));
        assert!(port_taken(me, addr.port()));
        let c = std::net::TcpStream::connect(addr).unwrap();
        let (_s, _) = l.accept().unwrap();
        assert_eq!(peers_of(me, addr.port()), vec![c.local_addr().unwrap()]);
    }
}

//! Separate debug information for a mapped file without line tables of its
//! own, found the way gdb and the debuginfod client look for it:
//!
//! 1. by build id: `/usr/lib/debug/.build-id/ab/cdef….debug`;
//! 2. by `.gnu_debuglink`: next to the file, in its `.debug/` folder, and
//!    under `/usr/lib/debug/` followed by the file's folder (CRC checked);
//! 3. in the debuginfod client's cache (`$DEBUGINFOD_CACHE_PATH`, else
//!    `$XDG_CACHE_HOME/debuginfod_client`, else
//!    `~/.cache/debuginfod_client`): `BUILDID/debuginfo`;
//! 4. when `DEBUGINFOD_URLS` is set, fetched from those servers
//!    (`URL/buildid/BUILDID/debuginfo`) into that cache, as
//!    `debuginfod-find debuginfo BUILDID` would. `http://` servers are
//!    fetched directly; `https://` ones through `curl` when it is
//!    installed. Each fetch is bounded ([`FETCH_TIMEOUT`]) and made once per
//!    file, when its first frame is symbolized.
//!
//! A candidate is used only if its build id (or, without one, the debug
//! link's CRC32) matches the file's.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpStream, ToSocketAddrs},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::elf::ElfInfo;

/// Folders of separate debug files.
pub const DEBUG_DIRS: &[&str] = &["/usr/lib/debug", "/lib/debug"];
/// The longest one debuginfod fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Redirects followed per fetch.
const MAX_REDIRECTS: usize = 4;

/// The separate debug file of `file` (a path memtrace can open; `folder` is
/// where the process sees it, for debug links), if one is found.
pub fn find(folder: Option<&Path>, info: &ElfInfo) -> Option<PathBuf> {
    by_build_id(info)
        .or_else(|| by_debuglink(folder, info))
        .or_else(|| debuginfod(info))
}

fn by_build_id(info: &ElfInfo) -> Option<PathBuf> {
    let id = info.build_id_hex().filter(|id| id.len() > 2)?;
    DEBUG_DIRS
        .iter()
        .map(|dir| Path::new(dir).join(format!(".build-id/{}/{}.debug", &id[..2], &id[2..])))
        .find(|p| matches(p, info, None))
}

fn by_debuglink(folder: Option<&Path>, info: &ElfInfo) -> Option<PathBuf> {
    let (name, crc) = info.debuglink.as_ref()?;
    // A link is a file name, never a path.
    if name.is_empty() || name.contains('/') {
        return None;
    }
    let folder = folder?;
    let mut candidates = vec![folder.join(name), folder.join(".debug").join(name)];
    let relative = folder.strip_prefix("/").unwrap_or(folder);
    candidates.extend(
        DEBUG_DIRS
            .iter()
            .map(|d| Path::new(d).join(relative).join(name)),
    );
    candidates
        .into_iter()
        .find(|p| matches(p, info, Some(*crc)))
}

/// Whether `candidate` is the debug file of the file `info` describes.
fn matches(candidate: &Path, info: &ElfInfo, crc: Option<u32>) -> bool {
    if !candidate.is_file() {
        return false;
    }
    match (&info.build_id, ElfInfo::read(candidate)) {
        (Some(id), Some(debug)) if debug.build_id.is_some() => debug.build_id.as_ref() == Some(id),
        (_, Some(_)) => crc.is_some_and(|crc| {
            std::fs::read(candidate).is_ok_and(|data| crc32fast::hash(&data) == crc)
        }),
        _ => false,
    }
}

/// The debuginfod client's cache folder.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = var("DEBUGINFOD_CACHE_PATH") {
        return Some(PathBuf::from(path));
    }
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return Some(PathBuf::from(xdg).join("debuginfod_client"));
    }
    var("HOME").map(|home| PathBuf::from(home).join(".cache/debuginfod_client"))
}

/// The servers `DEBUGINFOD_URLS` names (space-separated).
pub fn servers() -> Vec<String> {
    std::env::var("DEBUGINFOD_URLS")
        .unwrap_or_default()
        .split_whitespace()
        .map(|u| u.trim_end_matches('/').to_string())
        .collect()
}

fn debuginfod(info: &ElfInfo) -> Option<PathBuf> {
    let id = info.build_id_hex()?;
    let cached = cache_dir()?.join(&id).join("debuginfo");
    if matches(&cached, info, None) {
        return Some(cached);
    }
    for server in servers() {
        let url = format!("{server}/buildid/{id}/debuginfo");
        match fetch(&url, &cached) {
            Ok(()) if matches(&cached, info, None) => return Some(cached),
            Ok(()) => {
                let _ = std::fs::remove_file(&cached);
                crate::note(&format!(
                    "{url}: not the debug file of build id {id}; ignored"
                ));
            }
            // 404: that server does not have it; say nothing.
            Err(e) if e.to_string().contains(" 404") => {}
            Err(e) => crate::note(&format!("debuginfod: {url}: {e:#}")),
        }
    }
    None
}

/// Downloads `url` to `dest` (written to a temporary name, renamed into
/// place when complete).
fn fetch(url: &str, dest: &Path) -> anyhow::Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".debuginfo.{}.tmp", std::process::id()));
    let result = if url.starts_with("https://") {
        fetch_with_curl(url, &tmp)
    } else {
        let deadline = Instant::now() + FETCH_TIMEOUT;
        std::fs::File::create(&tmp)
            .map_err(anyhow::Error::from)
            .and_then(|mut out| http_get(url, &mut out, deadline, MAX_REDIRECTS))
    };
    match result {
        Ok(()) => Ok(std::fs::rename(&tmp, dest)?),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn fetch_with_curl(url: &str, out: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("curl")
        .args(["--fail", "--silent", "--show-error", "--location"])
        .arg("--max-time")
        .arg(FETCH_TIMEOUT.as_secs().to_string())
        .arg("--output")
        .arg(out)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| anyhow::anyhow!("https needs curl, which could not run: {e}"))?;
    anyhow::ensure!(status.success(), "curl failed ({status})");
    Ok(())
}

/// A plain HTTP/1.1 GET of `url` (`http://host[:port]/path`) into `out`:
/// Content-Length, chunked or close-delimited bodies, redirects to other
/// `http://` URLs.
fn http_get(
    url: &str,
    out: &mut impl Write,
    deadline: Instant,
    redirects: usize,
) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("not an http:// URL"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let host_port = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let addr = host_port
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{authority}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, left().min(Duration::from_secs(5)))?;
    stream.set_read_timeout(Some(left()))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: memtrace\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status)?;
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP response: {:?}", status.trim()))?;
    let mut length = None;
    let mut chunked = false;
    let mut location = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<u64>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "location" => location = Some(value.to_string()),
                _ => {}
            }
        }
    }
    match code {
        200 => {}
        301 | 302 | 303 | 307 | 308 if redirects > 0 => {
            let to = location.ok_or_else(|| anyhow::anyhow!("HTTP {code} without Location"))?;
            let to = if to.starts_with('/') {
                format!("http://{authority}{to}")
            } else {
                to
            };
            return http_get(&to, out, deadline, redirects - 1);
        }
        _ => anyhow::bail!("HTTP {code}"),
    }
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = u64::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| anyhow::anyhow!("bad chunk size {:?}", size.trim()))?;
            if size == 0 {
                break;
            }
            let copied = std::io::copy(&mut (&mut reader).take(size), out)?;
            anyhow::ensure!(copied == size, "connection closed mid-chunk");
            let mut crlf = String::new();
            reader.read_line(&mut crlf)?;
        }
    } else if let Some(length) = length {
        let copied = std::io::copy(&mut reader.take(length), out)?;
        anyhow::ensure!(
            copied == length,
            "connection closed after {copied} of {length} bytes"
        );
    } else {
        std::io::copy(&mut reader, out)?;
    }
    Ok(())
}

/// A one-line hint naming what would give a file's frames their names:
/// its Debian package's `-dbgsym` package, else its build id's debug file,
/// and DEBUGINFOD_URLS.
pub fn hint(file: &str, info: Option<&ElfInfo>) -> String {
    let debuginfod = if servers().is_empty() {
        "or point DEBUGINFOD_URLS at a debuginfod server"
    } else {
        "(DEBUGINFOD_URLS had none)"
    };
    if let Some(package) = debian_package(file) {
        return format!("install {package}-dbgsym {debuginfod}");
    }
    match info
        .and_then(ElfInfo::build_id_hex)
        .filter(|id| id.len() > 2)
    {
        Some(id) => format!(
            "no symbols in {file}: a debug file at {}/.build-id/{}/{}.debug would name them, \
             {debuginfod}",
            DEBUG_DIRS[0],
            &id[..2],
            &id[2..]
        ),
        None => {
            format!("{file} has no symbols and no build id: build it with -g, or keep its symbols")
        }
    }
}

/// The Debian package that installed `file` (`dpkg-query -S`), if any.
fn debian_package(file: &str) -> Option<String> {
    let out = std::process::Command::new("dpkg-query")
        .arg("-S")
        .arg(file)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    // "memcached: /usr/bin/memcached"; "libfoo1:amd64: /usr/lib/…"
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?;
    let (packages, _) = line.rsplit_once(": ")?;
    let package = packages.split(", ").next()?;
    let name = package.split(':').next()?.trim();
    (!name.is_empty() && !name.contains(' ')).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-shot HTTP server answering `response` to the first request,
    /// on a free local port; returns its URL and what it was asked.
    fn serve_once(response: Vec<u8>) -> (String, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(&response).unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        (url, handle)
    }

    #[test]
    fn http_bodies_by_length_chunks_and_close() {
        let deadline = Instant::now() + Duration::from_secs(10);
        for (response, body) in [
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA"[..], &b"hello"[..]),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
                b"abcde",
            ),
            (b"HTTP/1.0 200 OK\r\n\r\nuntil close", b"until close"),
        ] {
            let (url, server) = serve_once(response.to_vec());
            let mut out = Vec::new();
            http_get(&format!("{url}/buildid/ab/debuginfo"), &mut out, deadline, 0).unwrap();
            assert_eq!(out, body);
            let request = server.join().unwrap();
            assert!(request.starts_with("GET /buildid/ab/debuginfo HTTP/1.1\r\n"), "{request}");
        }
        let (url, _server) =
            serve_once(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec());
        let err = http_get(&url, &mut Vec::new(), deadline, 0).unwrap_err();
        assert_eq!(err.to_string(), "HTTP 404");
    }
}

//! The DevTools protocol spoken to a Node inspector: connected from inside
//! the target's network namespace (a short-lived thread that enters it, so
//! a container's loopback is reachable and nothing is exposed outside),
//! the session's WebSocket found through `/json/list`, then requests
//! answered by id, with a deadline each; events are skipped.

use std::{
    fs::File,
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tungstenite::{protocol::WebSocketConfig, Message, WebSocket};

/// The largest message read from an inspector (a sampling profile of a
/// large program is a few MiB); a larger one fails the request.
pub const MAX_MESSAGE: usize = 64 << 20;

/// The largest `/json/list` answer read.
const MAX_LIST: u64 = 1 << 20;

/// A connection to a Node process's inspector.
pub struct Inspector {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    /// Where the inspector listens (in the target's namespace).
    pub addr: SocketAddr,
    /// This end of the session's connection, as the target's namespace
    /// sees it: any other peer of the inspector is someone else.
    pub local: SocketAddr,
    /// The session ended (closed by the process, or broken).
    ended: bool,
}

/// A TCP connection to `addr` made in `pid`'s network namespace.
pub fn connect_in(pid: u32, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let theirs = format!("/proc/{pid}/ns/net");
    let same = match (
        std::fs::metadata("/proc/self/ns/net"),
        std::fs::metadata(&theirs),
    ) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    };
    if same {
        return TcpStream::connect_timeout(&addr, timeout)
            .with_context(|| format!("connecting to {addr}"));
    }
    let ns = File::open(&theirs).with_context(|| format!("opening {theirs}"))?;
    // A thread of its own enters the namespace (setns changes only the
    // calling thread's); the socket it makes stays in that namespace.
    std::thread::spawn(move || -> Result<TcpStream> {
        // SAFETY: setns(2) on an open namespace file descriptor.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("entering its network namespace");
        }
        TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connecting to {addr}"))
    })
    .join()
    .map_err(|_| anyhow!("the connecting thread panicked"))?
}

/// The WebSocket path of the inspector's session (from `/json/list`).
fn session_path(pid: u32, addr: SocketAddr, timeout: Duration) -> Result<String> {
    let mut s = connect_in(pid, addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET /json/list HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    let mut limited = s.take(MAX_LIST);
    // Node answers HTTP/1.0 with a Content-Length and closes.
    let mut buf = [0u8; 8192];
    loop {
        let n = match limited.read(&mut buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            n => n.context("reading /json/list")?,
        };
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if body_complete(&answer) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no HTTP answer from /json/list")?;
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1).is_none_or(|c| c != "200") {
        bail!("/json/list answered {}", head.lines().next().unwrap_or(""));
    }
    let list: Value = serde_json::from_str(body).context("/json/list is not JSON")?;
    let url = list
        .as_array()
        .and_then(|l| l.iter().find_map(|t| t["webSocketDebuggerUrl"].as_str()))
        .context("/json/list names no session")?;
    let path = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.find('/').map(|i| rest[i..].to_string()))
        .with_context(|| format!("unexpected session URL {url}"))?;
    Ok(path)
}

/// No answer within the deadline (it may come later: it is skipped then).
#[derive(Debug)]
struct Late(String, Duration);

impl std::fmt::Display for Late {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no answer to {} within {} ms",
            self.0,
            self.1.as_millis()
        )
    }
}

impl std::error::Error for Late {}

/// The inspector answered with an error.
#[derive(Debug)]
struct Refused(String, String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed: {}", self.0, self.1)
    }
}

impl std::error::Error for Refused {}

/// An I/O error that only means "not yet": a read timeout, or a signal.
fn retry(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

fn body_complete(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .is_some_and(|n| answer.len() >= end + 4 + n)
}

impl Inspector {
    /// Opens a session with the inspector listening at `addr` in `pid`'s
    /// namespace.
    pub fn open(pid: u32, addr: SocketAddr, timeout: Duration) -> Result<Inspector> {
        let path = session_path(pid, addr, timeout)?;
        let stream = connect_in(pid, addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let local = stream.local_addr()?;
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let (ws, _) = tungstenite::client::client_with_config(
            format!("ws://{addr}{path}"),
            stream,
            Some(config),
        )
        .map_err(|e| anyhow!("the WebSocket handshake failed: {e}"))?;
        Ok(Inspector {
            ws,
            next_id: 1,
            addr,
            local,
            ended: false,
        })
    }

    /// Whether the session still stands.
    pub fn is_open(&self) -> bool {
        !self.ended
    }

    /// Sends `method` and waits up to `timeout` for its answer's `result`.
    /// Answers to earlier requests that timed out, and events, are skipped.
    pub fn call(&mut self, method: &str, params: Value, timeout: Duration) -> Result<Value> {
        let answer = self.exchange(method, params, timeout);
        if let Err(e) = &answer {
            // Anything but a late answer or a refusal ends the session.
            self.ended |= !e.is::<Late>() && !e.is::<Refused>();
        }
        answer
    }

    fn exchange(&mut self, method: &str, params: Value, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let id = self.request(method, params, deadline)?;
        loop {
            let Some(text) = self.next_text(deadline)? else {
                return Err(Late(method.to_string(), timeout).into());
            };
            let mut answer: Value = super::profile::parse_deep(text.as_str())
                .with_context(|| format!("an answer to {method} that is not JSON"))?;
            if answer["id"].as_u64() != Some(id) {
                continue;
            }
            if let Some(e) = answer.get("error") {
                let message = e["message"].as_str().unwrap_or("?").to_string();
                return Err(Refused(method.to_string(), message).into());
            }
            return Ok(answer["result"].take());
        }
    }

    /// Sends `method` by `deadline`; returns its request id.
    fn request(&mut self, method: &str, params: Value, deadline: Instant) -> Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"id": id, "method": method, "params": params});
        self.send(request.to_string(), deadline)
            .with_context(|| format!("sending {method}"))?;
        Ok(id)
    }

    /// The next text message (an answer or an event), or None once
    /// `deadline` passes first. The session's end is an error.
    fn next_text(&mut self, deadline: Instant) -> Result<Option<tungstenite::Utf8Bytes>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.ws.get_mut().set_read_timeout(Some(left))?;
            match self.ws.read() {
                Ok(Message::Text(text)) => return Ok(Some(text)),
                Ok(Message::Close(_)) => bail!("the inspector closed the session"),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if retry(&e) => continue,
                Err(e) => return Err(e).context("reading from the inspector"),
            }
        }
    }

    /// Sends `method` and returns a reader of the text V8 streams back as
    /// `HeapProfiler.addHeapSnapshotChunk` events until it answers the
    /// request (the end of the text), all by `deadline`. Until the reader
    /// is dropped, nothing else is asked.
    pub fn stream_chunks(
        &mut self,
        method: &str,
        params: Value,
        deadline: Instant,
    ) -> Result<Chunks<'_>> {
        let id = self.request(method, params, deadline)?;
        Ok(Chunks {
            inspector: self,
            id,
            deadline,
            chunk: Vec::new(),
            at: 0,
            answered: false,
            bytes: 0,
        })
    }

    /// Sends one text message by `deadline` (a signal to memtrace, such as
    /// Ctrl-C, interrupts a write: it is taken up again).
    fn send(&mut self, text: String, deadline: Instant) -> Result<()> {
        let mut sent = self.ws.write(Message::text(text));
        loop {
            match sent {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if retry(&e) && Instant::now() < deadline => {}
                Err(e) => return Err(e.into()),
            }
            match self.ws.flush() {
                Ok(()) => return Ok(()),
                Err(e) => sent = Err(e),
            }
        }
    }

    /// Closes the inspector itself (Node's `process._debugEnd()`, which
    /// stops its server and ends every session, this one included), then
    /// waits up to `timeout` for the session to end.
    pub fn close_inspector(mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let params = json!({"expression": "process._debugEnd()"});
        self.request("Runtime.evaluate", params, deadline)?;
        // Whatever comes until the session ends (an error, the close).
        while self.next_text(deadline).is_ok_and(|t| t.is_some()) {}
        match Instant::now() < deadline {
            true => Ok(()),
            false => bail!("the inspector did not end the session"),
        }
    }
}

/// The text of a streamed answer (see [`Inspector::stream_chunks`]), read
/// chunk by chunk as it comes: a heap snapshot is never held whole.
pub struct Chunks<'a> {
    inspector: &'a mut Inspector,
    id: u64,
    deadline: Instant,
    chunk: Vec<u8>,
    at: usize,
    answered: bool,
    /// Bytes of text read so far.
    pub bytes: u64,
}

/// What a streamed message says: a chunk of the text, or the answer that
/// ends it.
#[derive(serde::Deserialize)]
struct Streamed {
    id: Option<u64>,
    method: Option<String>,
    params: Option<ChunkParams>,
    error: Option<Value>,
}

#[derive(serde::Deserialize)]
struct ChunkParams {
    chunk: Option<String>,
}

impl Chunks<'_> {
    /// Reads the next chunk into `self.chunk`; false at the text's end.
    fn next_chunk(&mut self) -> Result<bool> {
        while !self.answered {
            let Some(text) = self.inspector.next_text(self.deadline)? else {
                bail!("the inspector streamed for longer than memtrace waits");
            };
            let message: Streamed =
                serde_json::from_str(text.as_str()).context("a message that is not JSON")?;
            if message.id == Some(self.id) {
                if let Some(e) = message.error {
                    bail!(
                        "the inspector refused: {}",
                        e["message"].as_str().unwrap_or("?")
                    );
                }
                self.answered = true;
                break;
            }
            if message.method.as_deref() != Some("HeapProfiler.addHeapSnapshotChunk") {
                continue;
            }
            if let Some(chunk) = message.params.and_then(|p| p.chunk) {
                self.bytes += chunk.len() as u64;
                self.chunk = chunk.into_bytes();
                self.at = 0;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Reads what is left of the answer (a reader given up on early), so
    /// that the session is ready for the next request.
    pub fn drain(mut self) -> Result<()> {
        while self.next_chunk()? {}
        Ok(())
    }
}

impl Read for Chunks<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.chunk.len() {
            if !self.next_chunk().map_err(std::io::Error::other)? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.chunk.len() - self.at);
        out[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

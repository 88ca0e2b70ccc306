//! A headless Chromium driven over the DevTools protocol, for the HTML
//! reports: one page, real mouse clicks and key presses, and everything
//! the page logged or asked the network for.

use std::{
    io::{BufRead, BufReader},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// Debian's package (the test setup installs it).
const CHROMIUM: &str = "/usr/bin/chromium";

/// How long the browser may take to start, or a command to answer.
const TIMEOUT: Duration = Duration::from_secs(60);
/// What memtrace's pages say when drawn.
const READY: &str = "document.body && document.body.dataset.ready === '1'";

/// A page in a headless browser of its own (own profile, own process).
pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    session: String,
    /// Every event the page sent (console, exceptions, log, network).
    events: Vec<Value>,
    stderr: Arc<Mutex<String>>,
    profile: PathBuf,
}

impl Browser {
    /// Starts the browser with a `width` x `height` window and one blank
    /// page whose console, log and network are watched.
    pub fn launch(width: u32, height: u32) -> Browser {
        let profile = crate::scratch_dir("chromium-profile");
        let mut child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--remote-debugging-port=0",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));
        // Chromium names its DevTools endpoint on stderr; the rest of its
        // stderr is kept for failure messages.
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = BufReader::new(child.stderr.take().unwrap());
        let kept = stderr.clone();
        thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
                let mut kept = kept.lock().unwrap();
                if kept.len() < 64 << 10 {
                    kept.push_str(&line);
                    kept.push('\n');
                }
            }
        });
        let url = rx.recv_timeout(TIMEOUT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "{CHROMIUM} named no DevTools endpoint within {TIMEOUT:?}; its stderr:\n{}",
                stderr.lock().unwrap()
            )
        });
        let host = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_else(|| panic!("unexpected DevTools endpoint {url}"))
            .to_string();
        let stream = TcpStream::connect(&host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let (ws, _) = tungstenite::client::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("WebSocket handshake with {url}: {e}"));
        let mut browser = Browser {
            child,
            ws,
            next_id: 1,
            session: String::new(),
            events: Vec::new(),
            stderr,
            profile,
        };
        let targets = browser.call("Target.getTargets", json!({}));
        let page = targets["targetInfos"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["type"] == "page"))
            .unwrap_or_else(|| panic!("no page among {targets}"))["targetId"]
            .clone();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({"targetId": page, "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        for domain in [
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
            "Page.enable",
        ] {
            browser.call(domain, json!({}));
        }
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser
    }

    /// Sends a command (to the page once attached) and returns its result;
    /// events that come first are kept.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            request["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(request.to_string()))
            .unwrap_or_else(|e| panic!("sending {method}: {e}"));
        let deadline = Instant::now() + TIMEOUT;
        loop {
            assert!(
                Instant::now() < deadline,
                "{method}: no answer in {TIMEOUT:?}"
            );
            let message = match self.ws.read() {
                Ok(Message::Text(text)) => text,
                Ok(_) => continue,
                Err(e) => panic!(
                    "reading the browser's answer to {method}: {e}; its stderr:\n{}",
                    self.stderr.lock().unwrap()
                ),
            };
            let mut value: Value = serde_json::from_str(message.as_str()).unwrap();
            if value["id"].as_u64() == Some(id) {
                if let Some(error) = value.get("error") {
                    panic!("{method} failed: {error}");
                }
                return value["result"].take();
            }
            if value.get("method").is_some() {
                self.events.push(value);
            }
        }
    }

    /// Opens `file` and waits until the report says it is drawn; returns
    /// the time from the navigation's start to then.
    pub fn open(&mut self, file: &Path) -> Duration {
        self.navigate(&file_url(file))
    }

    /// Opens `url` and waits until the page says it is drawn (the report's
    /// and the agent's pages set `data-ready` on `<body>`); returns the
    /// time from the navigation's start to then, as the report measures it.
    pub fn navigate(&mut self, url: &str) -> Duration {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for(READY, TIMEOUT);
        let ms = self.eval("window.memtraceReady || 0").as_f64().unwrap();
        Duration::from_secs_f64(ms / 1000.0)
    }

    /// Opens `url` without waiting for anything but its load.
    pub fn visit(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
        self.wait_for("document.readyState === 'complete'", TIMEOUT);
    }

    /// Types `text` into the focused element.
    pub fn type_text(&mut self, text: &str) {
        self.call("Input.insertText", json!({"text": text}));
    }

    /// The value of a JavaScript expression (awaited if a promise).
    pub fn eval(&mut self, expression: &str) -> Value {
        let mut result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = result.get("exceptionDetails") {
            panic!("`{expression}` threw: {e}");
        }
        result["result"]["value"].take()
    }

    /// Waits until `expression` is true: evaluated after each of the
    /// page's animation frames, up to `timeout`.
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let frame = "new Promise(r => requestAnimationFrame(() => r(true)))";
        while self.eval(expression) != json!(true) {
            assert!(
                Instant::now() < deadline,
                "`{expression}` did not become true within {timeout:?}; the page's log: {:?}",
                self.console_errors()
            );
            self.eval(frame);
        }
    }

    /// Clicks the middle of the first element matching `selector` with the
    /// mouse (scrolled into view first), once it stays in place for an
    /// animation frame and nothing covers that point (charts drawn in a
    /// later frame move what is below them).
    pub fn click(&mut self, selector: &str) {
        let selector_js = serde_json::to_string(selector).unwrap();
        let settled = format!(
            "new Promise(done => {{ const e = document.querySelector({selector_js}); \
             if (!e) return done(null); e.scrollIntoView({{block: 'center'}}); \
             const at = () => {{ const r = e.getBoundingClientRect(); \
             return [r.left + Math.min(r.width / 2, 40), r.top + r.height / 2]; }}; \
             const before = at(); requestAnimationFrame(() => requestAnimationFrame(() => {{ \
             const after = at(); const hit = document.elementFromPoint(after[0], after[1]); \
             const still = before[0] === after[0] && before[1] === after[1] && hit !== null \
             && (hit === e || e.contains(hit)); done(still ? after : 'moving'); }})); }})"
        );
        let deadline = Instant::now() + TIMEOUT;
        let rect = loop {
            let rect = self.eval(&settled);
            if rect != json!("moving") {
                break rect;
            }
            assert!(
                Instant::now() < deadline,
                "{selector} did not settle within {TIMEOUT:?}"
            );
        };
        let (x, y) = match rect.as_array().map(Vec::as_slice) {
            Some([x, y]) => (x.as_f64().unwrap(), y.as_f64().unwrap()),
            _ => panic!("nothing on the page matches {selector}"),
        };
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Presses a key (a DOM key name, e.g. "Enter") on the focused element.
    /// Enter comes with its text, as a keyboard's does: it activates a
    /// focused button and submits a form.
    pub fn press(&mut self, key: &str, code: u32) {
        let text = if key == "Enter" { "\r" } else { "" };
        for kind in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": code,
                       "text": if kind == "keyDown" { text } else { "" }}),
            );
        }
    }

    /// Focuses the first element matching `selector` and presses Enter on it.
    pub fn enter_on(&mut self, selector: &str) {
        let selector_js = serde_json::to_string(selector).unwrap();
        let found = self.eval(&format!(
            "(() => {{ const e = document.querySelector({selector_js}); if (!e) return false; \
             e.focus(); return document.activeElement === e; }})()"
        ));
        assert_eq!(found, json!(true), "nothing focusable matches {selector}");
        self.press("Enter", 13);
    }

    /// Emulates the reader's colour preference (`light` or `dark`).
    pub fn color_scheme(&mut self, scheme: &str) {
        self.call(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        );
    }

    /// Saves a PNG of the whole page (beyond the window too).
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = data_encoding::BASE64
            .decode(shot["data"].as_str().unwrap().as_bytes())
            .unwrap();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// Console errors and warnings, uncaught exceptions and the browser's
    /// own error log (Content-Security-Policy refusals among them).
    pub fn console_errors(&self) -> Vec<String> {
        let mut out = Vec::new();
        for event in &self.events {
            let params = &event["params"];
            match event["method"].as_str() {
                Some("Runtime.consoleAPICalled")
                    if matches!(
                        params["type"].as_str(),
                        Some("error" | "warning" | "assert")
                    ) =>
                {
                    out.push(format!("console.{}: {}", params["type"], params["args"]))
                }
                Some("Runtime.exceptionThrown") => {
                    out.push(format!("exception: {}", params["exceptionDetails"]))
                }
                Some("Log.entryAdded")
                    if matches!(params["entry"]["level"].as_str(), Some("error" | "warning")) =>
                {
                    out.push(format!("log: {}", params["entry"]))
                }
                _ => {}
            }
        }
        out
    }

    /// Every URL the page asked for (the page itself included).
    pub fn requests(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["method"] == "Network.requestWillBeSent")
            .map(|e| {
                e["params"]["request"]["url"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string()
            })
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `file://` URL of an absolute path (percent-encoding what a URL path
/// cannot hold).
pub fn file_url(path: &Path) -> String {
    let mut url = String::from("file://");
    for byte in path.to_string_lossy().bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                url.push(byte as char)
            }
            _ => url.push_str(&format!("%{byte:02X}")),
        }
    }
    url
}

//! Headless Chromium driven through the DevTools protocol, over a minimal
//! WebSocket client on std TCP (RFC 6455, client side: masked frames out,
//! fragmented messages in, pings answered).
//!
//! [`Browser::launch`] runs Debian's `chromium` headless with a profile in
//! a temp dir and `--remote-debugging-port=0`, learns the port from the
//! profile's `DevToolsActivePort`, and attaches to its first page. A
//! [`Page`] sends commands ([`Page::call`]) and keeps every event it sees
//! ([`Page::events`]): network requests, console calls, exceptions and log
//! entries, which tests check afterwards.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::herd::PATIENCE;

/// The browser binary: `$CHROMIUM`, else the first of Debian's names found.
pub fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// A running headless browser; killed and reaped when dropped.
pub struct Browser {
    child: Child,
    port: u16,
}

impl Browser {
    /// Starts `binary` headless with its profile under `profile`, the
    /// window `width`×`height`.
    pub fn launch(binary: &Path, profile: &Path, width: u32, height: u32) -> Browser {
        std::fs::create_dir_all(profile).expect("profile dir");
        let mut cmd = Command::new(binary);
        cmd.arg("--headless")
            .arg("--remote-debugging-port=0")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--window-size={width},{height}"))
            .args([
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-gpu",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--hide-scrollbars",
                "--mute-audio",
                // Root (CI containers) cannot use the sandbox.
                "--no-sandbox",
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("spawn chromium");
        let mut browser = Browser { child, port: 0 };
        let file = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                if let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok()) {
                    browser.port = port;
                    break;
                }
            }
            if let Ok(Some(status)) = browser.child.try_wait() {
                panic!("chromium exited ({status}) before it listened");
            }
            assert!(Instant::now() < deadline, "chromium never wrote {file:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        browser
    }

    /// Attaches to the browser's first page (the `about:blank` it opened).
    pub fn page(&self) -> Page {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let list = http_get(self.port, "/json/list").unwrap_or_default();
            let targets: Value = serde_json::from_str(&list).unwrap_or(Value::Null);
            let ws = targets.as_array().and_then(|t| {
                t.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(String::from))
            });
            if let Some(url) = ws {
                return Page::connect(&url);
            }
            assert!(Instant::now() < deadline, "no page target: {list}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` from the DevTools HTTP endpoint on 127.0.0.1:`port`.
fn http_get(port: u16, path: &str) -> io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(PATIENCE))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    // The DevTools server keeps the connection open: read the head, then
    // exactly Content-Length bytes.
    let mut reader = BufReader::new(s);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::other("cut short"));
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    String::from_utf8(body).map_err(io::Error::other)
}

/// A DevTools session with one page.
pub struct Page {
    ws: WebSocket,
    next_id: u64,
    /// Every event received so far, in order.
    pub events: Vec<Value>,
}

impl Page {
    fn connect(url: &str) -> Page {
        let ws = WebSocket::connect(url).unwrap_or_else(|e| panic!("DevTools {url}: {e}"));
        Page {
            ws,
            next_id: 1,
            events: Vec::new(),
        }
    }

    /// Sends `method` with `params` and returns its result; events that
    /// arrive meanwhile are kept. Panics on a protocol error.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params});
        self.ws.send(&msg.to_string()).expect("send to DevTools");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no answer to {method}");
            let Some(text) = self.ws.recv(left).expect("DevTools") else {
                continue;
            };
            let v: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
            if v.get("id").and_then(Value::as_u64) == Some(id) {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
            if v.get("method").is_some() {
                self.events.push(v);
            }
        }
    }

    /// Takes the events that arrived without a command (up to `wait`).
    pub fn pump(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.ws.recv(left).expect("DevTools") {
                Some(text) => {
                    if let Ok(v) = serde_json::from_str::<Value>(&text) {
                        if v.get("method").is_some() {
                            self.events.push(v);
                        }
                    }
                }
                None => return,
            }
        }
    }

    /// The value of the JavaScript expression `expr` in the page (JSON).
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expr}: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Polls `expr` until `ok` holds for its value; returns the value and
    /// how long it took. Panics (with the last value) after `limit`.
    pub fn wait_for(
        &mut self,
        what: &str,
        expr: &str,
        limit: Duration,
        ok: impl Fn(&Value) -> bool,
    ) -> (Value, Duration) {
        let start = Instant::now();
        loop {
            let v = self.eval(expr);
            if ok(&v) {
                return (v, start.elapsed());
            }
            assert!(
                start.elapsed() < limit,
                "{what}: not within {limit:?}; last {v}"
            );
            self.pump(Duration::from_millis(50));
        }
    }

    /// A PNG of the page as it looks now.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let r = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        base64_decode(r["data"].as_str().expect("screenshot data"))
    }

    /// The events with `method`.
    pub fn events_named(&self, method: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["method"] == method)
            .collect()
    }
}

/// Standard base64 (with padding) to bytes.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A client WebSocket: enough of RFC 6455 for DevTools.
pub struct WebSocket {
    reader: BufReader<TcpStream>,
    stream: TcpStream,
}

impl WebSocket {
    /// Connects to `ws://HOST:PORT/PATH` and completes the handshake.
    pub fn connect(url: &str) -> io::Result<WebSocket> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| io::Error::other("not a ws:// URL"))?;
        let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let stream = TcpStream::connect(hostport)?;
        stream.set_nodelay(true)?;
        let mut w = stream.try_clone()?;
        // Any 16 bytes, base64: the server's Sec-WebSocket-Accept is not
        // checked (this client talks to a browser it started).
        write!(
            w,
            "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )?;
        stream.set_read_timeout(Some(PATIENCE))?;
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status)?;
        if !status.starts_with("HTTP/1.1 101") {
            return Err(io::Error::other(format!("handshake: {status:?}")));
        }
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Err(io::Error::other("handshake cut short"));
            }
            if line == "\r\n" {
                break;
            }
        }
        Ok(WebSocket { reader, stream: w })
    }

    fn frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask: [u8; 4] = fastrand_mask();
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&f)
    }

    /// Sends a text message.
    pub fn send(&mut self, text: &str) -> io::Result<()> {
        self.frame(0x1, text.as_bytes())
    }

    /// The next text message, or `None` if none began within `wait`.
    pub fn recv(&mut self, wait: Duration) -> io::Result<Option<String>> {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            let first = self.reader.buffer().is_empty() && message.is_empty();
            if first {
                self.reader
                    .get_ref()
                    .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
                match self.reader.read_exact(&mut head[..1]) {
                    Ok(()) => {}
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::TimedOut =>
                    {
                        return Ok(None)
                    }
                    Err(e) => return Err(e),
                }
                self.reader.get_ref().set_read_timeout(Some(PATIENCE))?;
                self.reader.read_exact(&mut head[1..])?;
            } else {
                self.reader.read_exact(&mut head)?;
            }
            let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
            let masked = head[1] & 0x80 != 0;
            let len = match head[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.reader.read_exact(&mut b)?;
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.reader.read_exact(&mut b)?;
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let mut mask = [0u8; 4];
            if masked {
                self.reader.read_exact(&mut mask)?;
            }
            let mut payload = vec![0u8; len as usize];
            self.reader.read_exact(&mut payload)?;
            if masked {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b ^= mask[i % 4];
                }
            }
            match opcode {
                0x0..=0x2 => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message)
                            .map(Some)
                            .map_err(|_| io::Error::other("a text message that is not UTF-8"));
                    }
                }
                0x8 => return Err(io::Error::other("closed by the browser")),
                0x9 => self.frame(0xA, &payload)?,
                _ => {}
            }
        }
    }
}

fn fastrand_mask() -> [u8; 4] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    (h.finish() as u32).to_ne_bytes()
}

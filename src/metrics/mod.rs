//! The operator endpoint (`--metrics HOST:PORT`, docs/PROTOCOL.md §11): `GET /metrics`
//! (the Prometheus text format, [`expose`]), `GET /healthz` ([`health`]),
//! and the console `GET /` with its data `GET /status.json` ([`status`]),
//! for every server of the process.
//!
//! ## A loop of its own
//! The endpoint is one small mio poll loop on a thread of its own, not a
//! listener in a server's loop: a scraper is a client the herd does not
//! control, and whatever it does — a slow or half-sent request, a flood of
//! connections, a scrape of a process with many servers — costs this thread
//! only, never a turn of a herd loop. It reads the servers' figures through
//! their shared [`ServerStats`] (relaxed atomics; see [`crate::stats`]), so
//! the loops never wait for it either.
//!
//! ## Bounded like the client ports
//! | bound                          | default                  | past it                        |
//! |--------------------------------|--------------------------|--------------------------------|
//! | request line + headers         | [`MAX_REQUEST`] (8 KiB)  | `431`, then closed             |
//! | time for a whole request head  | [`REQUEST_DEADLINE`] (5 s) from accept | closed           |
//! | time to take the response      | [`WRITE_DEADLINE`] (5 s) | closed                         |
//! | connections at once            | [`MAX_CONNECTIONS`] (64) | the oldest is closed           |
//!
//! Closing the *oldest* connection at the cap (the one with the earliest
//! deadline) rather than refusing the new one means a flood of idle
//! connections cannot lock a scraper out for the deadline's length.
//! Every response is whole (`Content-Length`) and followed by
//! `Connection: close`: the endpoint shuts its side down, reads and drops
//! what the client still sends (at most [`DRAIN_READS`] reads a wake-up, then
//! closed) until its EOF or the deadline, so the response is never cut by a
//! reset. One request per connection keeps the state machine three states
//! long: *reading* the head, *writing* the response, *draining*.
//!
//! ## Routes
//! `GET /metrics` → 200 and the exposition; `GET /healthz` → 200 or 503;
//! `GET /` → the console ([`CONSOLE`], docs/OPERATING.md); `GET
//! /status.json` → the data behind it ([`status`]); another method on any
//! of these paths → 405 with `Allow: GET`; any other path → 404; a request
//! that is not HTTP → 400.
//!
//! Tokens: connections are slab keys; [`LISTENER`] and [`WAKER`] are fixed,
//! at the top of the range. Deadlines live in one [`Timers`], keyed by slab
//! key, and the loop polls with the nearest as its timeout.

pub mod expose;
pub mod http;
pub mod status;

/// The console (`GET /`): one self-contained page, compiled in.
pub const CONSOLE: &str = include_str!("console.html");

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::stats::{self, ServerSnapshot, ServerStats};
use crate::timer::{Deadline, Timers};
use http::Parsed;

/// The longest request line and headers, in bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// A request head must have arrived this long after the connection did.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// A response must have been taken (and the client's EOF seen) this long
/// after it was ready.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// Connections held at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Connections accepted per wake-up before the others get their turn.
pub const ACCEPT_BATCH: usize = 64;
/// Reads of a draining connection per wake-up; a client still sending then
/// is closed.
pub const DRAIN_READS: usize = 4;

/// The listener's token.
pub const LISTENER: Token = Token(usize::MAX - 1);
/// The waker's token: [`Endpoint::stop`].
pub const WAKER: Token = Token(usize::MAX - 2);

/// The endpoint's bounds (the defaults are the constants above; tests
/// shorten the deadlines).
#[derive(Debug, Clone)]
pub struct Limits {
    /// The longest request line and headers ([`MAX_REQUEST`]).
    pub max_request: usize,
    /// Time from accept for a whole request head ([`REQUEST_DEADLINE`]).
    pub request_deadline: Duration,
    /// Time for the client to take the response ([`WRITE_DEADLINE`]).
    pub write_deadline: Duration,
    /// Connections held at once ([`MAX_CONNECTIONS`]).
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request: MAX_REQUEST,
            request_deadline: REQUEST_DEADLINE,
            write_deadline: WRITE_DEADLINE,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// The running endpoint.
pub struct Endpoint {
    addr: SocketAddr,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Endpoint {
    /// Serves `servers` on `listener` (bound, e.g. with
    /// [`crate::server::bind`]) from a new thread, with the default limits.
    pub fn start(listener: StdListener, servers: Vec<Arc<ServerStats>>) -> io::Result<Endpoint> {
        Self::with_limits(listener, servers, Limits::default())
    }

    /// Like [`start`](Self::start), with `limits`.
    pub fn with_limits(
        listener: StdListener,
        servers: Vec<Arc<ServerStats>>,
        limits: Limits,
    ) -> io::Result<Endpoint> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let mut lp = Loop {
            poll,
            listener,
            conns: Slab::new(),
            timers: Timers::new(),
            servers,
            limits,
            started: stats::process_start_time(),
            stop: stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || lp.run())?;
        Ok(Endpoint {
            addr,
            waker,
            stop,
            thread: Some(thread),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the loop and waits for its thread.
    pub fn stop(mut self) -> io::Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("metrics thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

/// `/healthz`: the status and body for `servers`. Unhealthy (503) when a
/// server does not listen or its journal is failing, one line per problem;
/// links that are down are listed after `ok` or the problems, but do not
/// make the process unhealthy (the herd runs without them).
pub fn health(servers: &[ServerSnapshot]) -> (u16, String) {
    let mut problems = String::new();
    let mut notes = String::new();
    for s in servers {
        if !s.listening {
            problems.push_str(&format!("{}: not listening\n", s.name));
        }
        if let Some(j) = s.journal.as_ref().filter(|j| j.failing) {
            problems.push_str(&format!("{}: journal failing: {}\n", s.name, j.error));
        }
        for l in s.links.iter().filter(|l| !l.up) {
            notes.push_str(&format!("{}: link to {} down\n", s.name, l.neighbour));
        }
    }
    if problems.is_empty() {
        (200, format!("ok\n{notes}"))
    } else {
        (503, problems + &notes)
    }
}

/// The response to `method` on `path`.
pub fn route(
    method: &str,
    path: &str,
    servers: &[Arc<ServerStats>],
    started: SystemTime,
) -> Vec<u8> {
    let known = matches!(path, "/metrics" | "/healthz" | "/" | "/status.json");
    if !known {
        return http::error(404);
    }
    if method != "GET" {
        return http::error(405);
    }
    if path == "/" {
        return http::response(200, "text/html; charset=utf-8", CONSOLE.as_bytes());
    }
    let snapshots: Vec<ServerSnapshot> = servers.iter().map(|s| s.snapshot()).collect();
    match path {
        "/metrics" => {
            let body = expose::write(&snapshots, started);
            http::response(200, expose::CONTENT_TYPE, body.as_bytes())
        }
        "/status.json" => {
            let body = status::write(&snapshots, started, SystemTime::now());
            http::response(200, status::CONTENT_TYPE, body.as_bytes())
        }
        _ => {
            let (status, body) = health(&snapshots);
            http::response(status, "text/plain; charset=utf-8", body.as_bytes())
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the request head.
    Reading,
    /// Writing the response.
    Writing,
    /// Response written and our side shut: dropping what the client sends
    /// until its EOF.
    Draining,
}

struct Conn {
    stream: TcpStream,
    state: State,
    /// The request head so far (at most `max_request + 1` bytes).
    head: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    interest: Interest,
    deadline: Instant,
}

struct Loop {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    timers: Timers<usize>,
    servers: Vec<Arc<ServerStats>>,
    limits: Limits,
    started: SystemTime,
    stop: Arc<AtomicBool>,
}

impl Loop {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut scratch = [0u8; 4096];
        while !self.stop.load(Ordering::SeqCst) {
            let timeout = self
                .timers
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(key, &mut scratch);
                        }
                        if event.is_writable() {
                            self.write(key);
                        }
                    }
                }
            }
            let now = Instant::now();
            while let Some((_, key)) = self.timers.pop_due(now) {
                // Too slow to send its request or to take its response.
                self.remove(key);
            }
        }
        Ok(())
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                // The backlog is empty: wait for the next event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Out of descriptors, a reset before accept: the next
                // readiness retries; this thread has nothing else to protect.
                Err(_) => return,
            };
            if self.conns.len() >= self.limits.max_connections {
                // Full: the oldest connection (earliest deadline) goes.
                if let Some(at) = self.timers.next_deadline() {
                    if let Some((_, oldest)) = self.timers.pop_due(at) {
                        self.remove(oldest);
                    }
                }
            }
            self.admit(stream);
        }
    }

    fn admit(&mut self, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if key >= WAKER.0 {
            return;
        }
        if self
            .poll
            .registry()
            .register(&mut stream, Token(key), Interest::READABLE)
            .is_err()
        {
            return;
        }
        let deadline = Instant::now() + self.limits.request_deadline;
        entry.insert(Conn {
            stream,
            state: State::Reading,
            head: Vec::new(),
            out: Vec::new(),
            sent: 0,
            interest: Interest::READABLE,
            deadline,
        });
        self.timers.schedule(deadline, key);
    }

    /// Closes connection `key`, whose deadline is still scheduled.
    fn close(&mut self, key: usize) {
        if let Some(c) = self.conns.get(key) {
            self.timers.cancel(c.deadline, key);
        }
        self.remove(key);
    }

    /// Closes connection `key`, whose deadline is no longer scheduled.
    fn remove(&mut self, key: usize) {
        if let Some(mut c) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    fn read(&mut self, key: usize, scratch: &mut [u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            // A stale event for a connection closed earlier this turn.
            return;
        };
        match conn.state {
            State::Reading => {}
            State::Writing => return,
            State::Draining => {
                for _ in 0..DRAIN_READS {
                    match conn.stream.read(scratch) {
                        // The client's EOF: the response is all delivered.
                        Ok(0) => break,
                        Ok(_) => continue,
                        // Drained for now: wait for EOF or the deadline.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                }
                self.close(key);
                return;
            }
        }
        let max = self.limits.max_request;
        let reply = loop {
            // Never hold more than the cap and one byte (to know it passed).
            let room = (max + 1).saturating_sub(conn.head.len()).min(scratch.len());
            match conn.stream.read(&mut scratch[..room]) {
                // EOF before a whole head: nothing to answer.
                Ok(0) => break None,
                Ok(n) => {
                    conn.head.extend_from_slice(&scratch[..n]);
                    match http::parse(&conn.head) {
                        Parsed::Partial if conn.head.len() > max => break Some(http::error(431)),
                        Parsed::Partial => {}
                        Parsed::Refused(status) => break Some(http::error(status)),
                        Parsed::Request { method, path } => {
                            break Some(route(method, path, &self.servers, self.started))
                        }
                    }
                }
                // Drained: the rest of the head comes with the next event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break None,
            }
        };
        let Some(response) = reply else {
            self.close(key);
            return;
        };
        let deadline = Instant::now() + self.limits.write_deadline;
        self.timers
            .reschedule(Some(conn.deadline), Some(deadline), key);
        conn.deadline = deadline;
        conn.head = Vec::new();
        conn.out = response;
        conn.state = State::Writing;
        self.write(key);
    }

    fn write(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.state != State::Writing {
            return;
        }
        while conn.sent < conn.out.len() {
            match conn.stream.write(&conn.out[conn.sent..]) {
                Ok(0) => {
                    self.close(key);
                    return;
                }
                Ok(n) => conn.sent += n,
                // The client's buffer is full: wait for WRITABLE.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let want = Interest::READABLE | Interest::WRITABLE;
                    if conn.interest != want {
                        if self
                            .poll
                            .registry()
                            .reregister(&mut conn.stream, Token(key), want)
                            .is_err()
                        {
                            self.close(key);
                            return;
                        }
                        conn.interest = want;
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(key);
                    return;
                }
            }
        }
        conn.out = Vec::new();
        conn.state = State::Draining;
        if conn.stream.shutdown(Shutdown::Write).is_err() {
            self.close(key);
            return;
        }
        if conn.interest != Interest::READABLE {
            if self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(key), Interest::READABLE)
                .is_err()
            {
                self.close(key);
                return;
            }
            conn.interest = Interest::READABLE;
        }
        // The client may have closed already: its EOF is in the buffer and
        // no new edge will come for it.
        let mut scratch = [0u8; 512];
        self.read(key, &mut scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{JournalSnapshot, LinkSnapshot};

    fn snap(name: &str) -> ServerSnapshot {
        ServerSnapshot {
            name: name.into(),
            listening: true,
            journal: Some(JournalSnapshot::default()),
            ..Default::default()
        }
    }

    #[test]
    fn health_is_ok_with_links_down_and_503_for_a_failing_journal() {
        let mut a = snap("Goloman");
        a.links.push(LinkSnapshot {
            neighbour: "Hands".into(),
            up: false,
            queued_bytes: 0,
            catchups: 0,
            updates_sent: 0,
            update_bytes_sent: 0,
        });
        let b = snap("Welsh");
        assert_eq!(
            health(&[a.clone(), b.clone()]),
            (200, "ok\nGoloman: link to Hands down\n".to_string())
        );
        a.journal = Some(JournalSnapshot {
            failing: true,
            error: "No space left on device (os error 28)".into(),
            ..Default::default()
        });
        let mut b = b;
        b.listening = false;
        assert_eq!(
            health(&[a, b]),
            (
                503,
                "Goloman: journal failing: No space left on device (os error 28)\nWelsh: not listening\nGoloman: link to Hands down\n"
                    .to_string()
            )
        );
    }

    #[test]
    fn routes() {
        let s = vec![Arc::new(ServerStats::new("S"))];
        let t = SystemTime::now();
        let status = |r: Vec<u8>| String::from_utf8_lossy(&r[..12]).into_owned();
        assert_eq!(status(route("GET", "/metrics", &s, t)), "HTTP/1.1 200");
        assert_eq!(status(route("GET", "/healthz", &s, t)), "HTTP/1.1 503");
        assert_eq!(status(route("POST", "/metrics", &s, t)), "HTTP/1.1 405");
        assert_eq!(status(route("GET", "/", &s, t)), "HTTP/1.1 200");
        assert_eq!(status(route("GET", "/status.json", &s, t)), "HTTP/1.1 200");
        assert_eq!(status(route("POST", "/", &s, t)), "HTTP/1.1 405");
        assert_eq!(status(route("GET", "/index.html", &s, t)), "HTTP/1.1 404");
        assert_eq!(status(route("DELETE", "/x", &s, t)), "HTTP/1.1 404");
        s[0].set_listening(true);
        assert_eq!(status(route("GET", "/healthz", &s, t)), "HTTP/1.1 200");
    }
}

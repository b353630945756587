//! The Places client: WHATSAT's HTTPS calls, inside the server's poll loop.
//!
//! One [`Places`] per server, owned by its loop; it owns no thread and never
//! blocks. Its parts:
//!
//! - `url`: the endpoint from `herd.conf` (`https://HOST[:PORT]/PATH`).
//! - `dns`: the host looked up on a helper thread that wakes the loop with
//!   the server's `Waker` (a literal IP needs none); cached, looked up again
//!   after connect failures and every five minutes (`dns::DNS_TTL`).
//! - `tls`: one mio `TcpStream` + `rustls::ClientConnection` driven by hand
//!   (webpki roots plus `places_ca`; SNI and verification always on).
//! - `http`: the response parser (httparse; `Content-Length`, chunked, or
//!   until close; a size cap).
//! - [`json`]: the cut of Google's bytes after the bound-th result, the
//!   newline collapse, Google's layout for the answers we write ourselves,
//!   and the Places API (New) → legacy translation (mapping in its header).
//!
//! # The pool
//!
//! A request is queued, then put on a connection: an idle kept-alive one
//! (the most recently used), else a new one while fewer than
//! [`MAX_IN_FLIGHT`] requests are in flight, else it waits in the queue (at
//! most [`MAX_QUEUED`]). One request at a time per connection, HTTP/1.1
//! keep-alive; idle connections are closed after [`IDLE_TIMEOUT`]. A new
//! connection tries the resolved addresses in turn (IPv4 first), each for at
//! most [`CONNECT_TIMEOUT`]. A request written on a reused connection that
//! then fails before any response byte (the server had closed it) is retried
//! once on a fresh connection. Every request is answered — with the Places
//! JSON or with [`failure_body`] — by its deadline ([`REQUEST_TIMEOUT`] after
//! `submit`), which `next_deadline`/`on_timeout` enforce.
//!
//! # Failure statuses
//!
//! Google's legacy `status` vocabulary, so clients need to know only one:
//!
//! | status             | when                                                      |
//! |--------------------|-----------------------------------------------------------|
//! | `REQUEST_DENIED`   | no API key; HTTP 401 or 403 from the API                  |
//! | `INVALID_REQUEST`  | HTTP 400 from the API; a query whose numbers are not numbers |
//! | `OVER_QUERY_LIMIT` | HTTP 429 from the API; more than [`MAX_QUEUED`] requests waiting |
//! | `UNKNOWN_ERROR`    | DNS, connect, TLS (an untrusted certificate too), a deadline, another non-200 status, a body that is not JSON or too large, a connection closed mid-response, a malformed response |
//!
//! `error_message` says what failed, naming the host but never the key. A
//! legacy answer with HTTP 200 is passed through whatever its `status`
//! (e.g. Google's own `REQUEST_DENIED` for a bad key).
//!
//! # Logs
//!
//! Each request's outcome and duration at `info`, connections at `debug`,
//! with the server's name as the target. The key is never logged.

mod dns;
mod http;
pub mod json;
mod tls;
mod url;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Registry, Token, Waker};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use slab::Slab;

use crate::config::{PlacesApi, PlacesConfig};
use crate::timer::{Deadline, Timers};
use crate::token;
use dns::{Addrs, Resolver};
use http::{HttpError, Progress, Response, ResponseParser};
use tls::{ConnectStep, ReadStep, TlsStream};
use url::{percent_encode, Endpoint};

/// The most requests in flight at once, hence the most connections to the
/// API: each carries one request at a time. Requests past it wait in the queue.
pub const MAX_IN_FLIGHT: usize = 64;

/// The most requests waiting for a connection; past it a request fails at
/// once (`OVER_QUERY_LIMIT`), so memory stays bounded when the API is slow.
pub const MAX_QUEUED: usize = 4096;

/// The largest response body accepted (Google's answers are a few tens of KiB).
pub const MAX_BODY: usize = 4 << 20;

/// From `submit` to the reply, whatever happens: DNS, connect, TLS, the
/// API's answer. The client then answers with a failure.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one address may take to accept a TCP connection before the
/// next resolved address is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an idle kept-alive connection is kept for reuse.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The Places API (New) fields asked for: those the legacy shape needs.
pub const FIELD_MASK: &str = "places.id,places.displayName,places.formattedAddress,places.location,places.types,places.rating,places.userRatingCount,places.businessStatus";

/// The client's limits; [`Default`] gives the named constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See [`MAX_IN_FLIGHT`] (at least 1, at most [`TOKEN_SPAN`]).
    pub max_in_flight: usize,
    /// See [`MAX_QUEUED`].
    pub max_queued: usize,
    /// See [`MAX_BODY`].
    pub max_body: usize,
    /// See [`REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
    /// See [`CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// See [`IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_in_flight: MAX_IN_FLIGHT,
            max_queued: MAX_QUEUED,
            max_body: MAX_BODY,
            request_timeout: REQUEST_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// The server's handle for one WHATSAT's Places call.
pub type RequestId = u64;

/// What to ask Places for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Latitude in plain decimal degrees, no `+`: `34.068930`.
    pub lat: String,
    /// Longitude in plain decimal degrees, no `+`: `-118.445127`.
    pub lng: String,
    /// Radius in metres, plain decimal: `10000`, `1234.5`.
    pub radius_m: String,
    /// How many results to keep (1..=20).
    pub bound: usize,
}

/// A finished request: the JSON exactly as it goes on the wire after the AT
/// line, ending in exactly two newlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub id: RequestId,
    pub body: Vec<u8>,
    /// The outcome: `OK`, or the failure status written in the body
    /// (`REQUEST_DENIED`, `INVALID_REQUEST`, `OVER_QUERY_LIMIT`,
    /// `UNKNOWN_ERROR`). A legacy answer passed through counts as `OK`
    /// whatever Google's own status in it.
    pub status: &'static str,
    /// From `submit` to this reply.
    pub elapsed: Duration,
}

/// Why the Places client could not be set up (a bad `places_ca` file, a bad URL).
#[derive(Debug)]
pub struct SetupError(pub String);

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SetupError {}

/// A submitted request.
struct Request {
    id: RequestId,
    /// Unique per request: tells a live queue entry from a stale one whose
    /// slab key was reused.
    seq: u64,
    /// The HTTP request bytes. They hold the key: never logged.
    http: Vec<u8>,
    bound: usize,
    /// For logs: the query without the key.
    what: String,
    submitted: Instant,
    deadline: Instant,
    /// Waiting in the queue (not on a connection).
    queued: bool,
    /// On this connection.
    conn: Option<usize>,
    /// Already retried once after a reused connection failed.
    retried: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TCP connect under way to `addrs[addr_index]`, until `attempt_deadline`.
    Connecting { attempt_deadline: Instant },
    /// Connected (TLS may still be handshaking).
    Open,
}

/// A connection to the API.
struct Conn {
    stream: TlsStream,
    phase: Phase,
    addrs: Arc<[SocketAddr]>,
    addr_index: usize,
    /// Addresses tried so far by this connection.
    tried: usize,
    /// The request it carries; `None` when idle.
    request: Option<usize>,
    parser: ResponseParser,
    /// Responses completed: more than 0 means a reused connection.
    served: u32,
    /// When it last became idle.
    idle_since: Instant,
}

impl Conn {
    fn addr(&self) -> SocketAddr {
        self.addrs[self.addr_index]
    }
}

/// What driving an open connection came to.
enum Drive {
    /// Waiting for readiness.
    Waiting,
    Response(Response),
    /// An idle connection was closed by the server (or sent stray bytes).
    Closed,
    /// The connection broke; `before_response`: no response byte had come.
    Failed {
        message: String,
        before_response: bool,
    },
}

/// One server's Places client.
pub struct Places {
    server: String,
    api: PlacesApi,
    endpoint: Endpoint,
    key: Option<String>,
    key_env: String,
    tls: Arc<ClientConfig>,
    name: ServerName<'static>,
    limits: Limits,
    dns: Resolver,
    requests: Slab<Request>,
    /// Request keys and seqs, oldest first; entries of requests no longer
    /// queued are skipped.
    queue: VecDeque<(usize, u64)>,
    queued: usize,
    deadlines: Timers<usize>,
    conns: Slab<Conn>,
    next_seq: u64,
    scratch: Vec<u8>,
}

impl Deadline for Places {
    fn next_deadline(&self) -> Option<Instant> {
        Places::next_deadline(self)
    }
}

impl fmt::Debug for Places {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not derived: the key must never be printed.
        f.debug_struct("Places")
            .field("server", &self.server)
            .field("api", &self.api)
            .field("endpoint", &self.endpoint.authority())
            .field("has_key", &self.key.is_some())
            .field("requests", &self.requests.len())
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl Places {
    /// `key` is the API key (None: every request fails with a "no key" error).
    /// `waker` wakes the server's loop (for results from helper threads);
    /// `server` is the server's name, the `log` target.
    pub fn new(
        config: &PlacesConfig,
        key: Option<String>,
        waker: Arc<Waker>,
        server: &str,
    ) -> Result<Places, SetupError> {
        Places::with_limits(config, key, waker, server, Limits::default())
    }

    /// [`Places::new`] with other limits (tests use short deadlines).
    pub fn with_limits(
        config: &PlacesConfig,
        key: Option<String>,
        waker: Arc<Waker>,
        server: &str,
        limits: Limits,
    ) -> Result<Places, SetupError> {
        let endpoint = Endpoint::parse(&config.url).map_err(|e| SetupError(e.to_string()))?;
        let name = match endpoint.ip {
            Some(ip) => ServerName::from(ip),
            None => ServerName::try_from(endpoint.host.clone())
                .map_err(|e| SetupError(format!("bad Places host {:?}: {e}", endpoint.host)))?,
        };
        let tls = tls::client_config(config.ca.as_deref()).map_err(SetupError)?;
        let key = key.map(|k| k.trim().to_string()).filter(|k| !k.is_empty());
        if key
            .as_deref()
            .is_some_and(|k| k.bytes().any(|b| b < 0x20 || b == 0x7f))
        {
            return Err(SetupError(format!(
                "the Places API key in {} holds control characters",
                config.key_env
            )));
        }
        let mut limits = limits;
        limits.max_in_flight = limits.max_in_flight.clamp(1, token::PLACES_SPAN);
        let dns = Resolver::new(&endpoint.host, endpoint.ip, endpoint.port, waker);
        Ok(Places {
            server: server.to_string(),
            api: config.api,
            endpoint,
            key,
            key_env: config.key_env.clone(),
            tls,
            name,
            limits,
            dns,
            requests: Slab::new(),
            queue: VecDeque::new(),
            queued: 0,
            deadlines: Timers::new(),
            conns: Slab::new(),
            next_seq: 0,
            scratch: Vec::new(),
        })
    }

    /// True if `token` is one of this client's connections.
    pub fn owns(&self, token: Token) -> bool {
        matches!(token::classify(token), token::Owner::Places(_))
    }

    /// Requests not answered yet (queued or in flight).
    pub fn pending(&self) -> usize {
        self.requests.len()
    }

    /// Open connections to the API (busy or idle).
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Starts a request; finished replies (possibly this one, at once) are pushed to `done`.
    pub fn submit(
        &mut self,
        registry: &Registry,
        id: RequestId,
        query: Query,
        now: Instant,
        done: &mut Vec<Reply>,
    ) {
        let what = format!(
            "{},{} radius {} m, bound {}",
            query.lat, query.lng, query.radius_m, query.bound
        );
        let early_failure = |status: &'static str, message: String| {
            log::info!(target: &self.server, "places request {id} ({what}) failed at once: {status}: {message}");
            Reply {
                id,
                body: failure_body(status, &message),
                status,
                elapsed: Duration::ZERO,
            }
        };
        let Some(key) = self.key.as_deref() else {
            let message = format!(
                "no Places API key: the environment variable {} is not set",
                self.key_env
            );
            done.push(early_failure("REQUEST_DENIED", message));
            return;
        };
        if self.queued >= self.limits.max_queued {
            let message = format!(
                "too many Places requests waiting (over {})",
                self.limits.max_queued
            );
            done.push(early_failure("OVER_QUERY_LIMIT", message));
            return;
        }
        let http = match self.build_request(&query, key) {
            Ok(http) => http,
            Err(message) => {
                done.push(early_failure("INVALID_REQUEST", message));
                return;
            }
        };
        let deadline = now + self.limits.request_timeout;
        let seq = self.next_seq;
        self.next_seq += 1;
        let rk = self.requests.insert(Request {
            id,
            seq,
            http,
            bound: query.bound,
            what,
            submitted: now,
            deadline,
            queued: true,
            conn: None,
            retried: false,
        });
        self.deadlines.schedule(deadline, rk);
        self.queue.push_back((rk, seq));
        self.queued += 1;
        self.dispatch(registry, now, done);
    }

    /// Handles readiness on one of this client's tokens.
    pub fn on_event(
        &mut self,
        registry: &Registry,
        event: &Event,
        now: Instant,
        done: &mut Vec<Reply>,
    ) {
        let token::Owner::Places(ck) = token::classify(event.token()) else {
            return;
        };
        // A token of a connection already closed: a late event, ignored.
        let Some(conn) = self.conns.get_mut(ck) else {
            return;
        };
        if let Phase::Connecting { .. } = conn.phase {
            match conn.stream.connect_step(event) {
                ConnectStep::Pending => return,
                ConnectStep::Failed(e) => {
                    let error = format!("{}: {e}", conn.addr());
                    self.next_address(registry, ck, error, now, done);
                    self.dispatch(registry, now, done);
                    return;
                }
                ConnectStep::Connected => {
                    conn.phase = Phase::Open;
                    self.dns.worked(conn.addr_index);
                    log::debug!(target: &self.server, "places: connected to {}", conn.addr());
                }
            }
        }
        self.pump(registry, ck, now, done);
        self.dispatch(registry, now, done);
    }

    /// Called when the server's waker fired (helper threads may have results).
    pub fn on_wake(&mut self, registry: &Registry, now: Instant, done: &mut Vec<Reply>) {
        if let Some(Err(e)) = self.dns.poll(now) {
            let message = format!("DNS lookup of {} failed: {e}", self.endpoint.host);
            while let Some((rk, seq)) = self.queue.pop_front() {
                if self.is_queued(rk, seq) {
                    self.queued -= 1;
                    self.fail(rk, "UNKNOWN_ERROR", &message, now, done);
                }
            }
        }
        self.dispatch(registry, now, done);
    }

    /// The earliest instant at which `on_timeout` has work.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut next = self.deadlines.next_deadline();
        for (_, conn) in &self.conns {
            let t = match conn.phase {
                Phase::Connecting { attempt_deadline } => attempt_deadline,
                Phase::Open if conn.request.is_none() => conn.idle_since + self.limits.idle_timeout,
                Phase::Open => continue,
            };
            next = Some(next.map_or(t, |n| n.min(t)));
        }
        next
    }

    /// Fails requests whose deadline passed, closes idle connections.
    pub fn on_timeout(&mut self, registry: &Registry, now: Instant, done: &mut Vec<Reply>) {
        while let Some((_, rk)) = self.deadlines.pop_due(now) {
            let req = &mut self.requests[rk];
            let mut message = format!(
                "no answer from the Places API at {} within {:?}",
                self.endpoint.authority(),
                self.limits.request_timeout
            );
            if req.queued {
                req.queued = false;
                self.queued -= 1;
                if self.dns.pending() {
                    message.push_str(&format!(
                        " (DNS lookup of {} under way)",
                        self.endpoint.host
                    ));
                }
            }
            if let Some(ck) = req.conn.take() {
                // The answer may still come: the connection is out of step.
                let conn = self.conns.remove(ck);
                conn.stream.abandon(registry);
            }
            self.fail(rk, "UNKNOWN_ERROR", &message, now, done);
        }
        let mut attempts = Vec::new();
        let mut idle = Vec::new();
        for (ck, conn) in &self.conns {
            match conn.phase {
                Phase::Connecting { attempt_deadline } if attempt_deadline <= now => {
                    attempts.push(ck)
                }
                Phase::Open
                    if conn.request.is_none()
                        && conn.idle_since + self.limits.idle_timeout <= now =>
                {
                    idle.push(ck)
                }
                _ => {}
            }
        }
        for ck in attempts {
            let error = format!(
                "{}: connect timed out after {:?}",
                self.conns[ck].addr(),
                self.limits.connect_timeout
            );
            self.next_address(registry, ck, error, now, done);
        }
        for ck in idle {
            self.close_conn(registry, ck, "idle");
        }
        self.dispatch(registry, now, done);
    }

    /// The HTTP request for `query`.
    fn build_request(&self, query: &Query, key: &str) -> Result<Vec<u8>, String> {
        let lat = query.lat.trim_start_matches('+');
        let lng = query.lng.trim_start_matches('+');
        let radius = query.radius_m.trim_start_matches('+');
        let host = self.endpoint.host_header();
        let agent = concat!("herd/", env!("CARGO_PKG_VERSION"));
        match self.api {
            PlacesApi::Legacy => {
                let target = self.endpoint.target_with_query(&format!(
                    "location={},{}&radius={}&key={}",
                    percent_encode(lat),
                    percent_encode(lng),
                    percent_encode(radius),
                    percent_encode(key)
                ));
                Ok(format!(
                    "GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nUser-Agent: {agent}\r\n\r\n"
                )
                .into_bytes())
            }
            PlacesApi::New => {
                let body = serde_json::json!({
                    "locationRestriction": {
                        "circle": {
                            "center": {"latitude": json_number(lat)?, "longitude": json_number(lng)?},
                            "radius": json_number(radius)?,
                        }
                    },
                    "maxResultCount": query.bound.clamp(1, 20),
                });
                let body = body.to_string();
                let mut http = format!(
                    "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json\r\nX-Goog-Api-Key: {key}\r\nX-Goog-FieldMask: {FIELD_MASK}\r\nUser-Agent: {agent}\r\nContent-Length: {len}\r\n\r\n",
                    path = self.endpoint.path,
                    len = body.len()
                )
                .into_bytes();
                http.extend_from_slice(body.as_bytes());
                Ok(http)
            }
        }
    }

    fn is_queued(&self, rk: usize, seq: u64) -> bool {
        self.requests
            .get(rk)
            .is_some_and(|r| r.seq == seq && r.queued)
    }

    /// Puts queued requests on connections while there is room.
    fn dispatch(&mut self, registry: &Registry, now: Instant, done: &mut Vec<Reply>) {
        while let Some(&(rk, seq)) = self.queue.front() {
            if !self.is_queued(rk, seq) {
                self.queue.pop_front();
                continue;
            }
            if !self.requests[rk].retried {
                if let Some(ck) = self.idle_conn() {
                    self.queue.pop_front();
                    self.take_from_queue(rk);
                    self.start_on_idle(registry, ck, rk, now, done);
                    continue;
                }
            }
            let busy = self
                .conns
                .iter()
                .filter(|(_, c)| c.request.is_some())
                .count();
            if busy >= self.limits.max_in_flight {
                break;
            }
            let addrs = match self.dns.addresses(now) {
                Addrs::Ready(addrs) => addrs,
                // on_wake goes on when the lookup ends.
                Addrs::Pending => break,
            };
            if self.conns.len() >= self.limits.max_in_flight {
                // Room for a fresh connection: drop the stalest idle one.
                match self.oldest_idle() {
                    Some(ck) => self.close_conn(registry, ck, "making room"),
                    None => break,
                }
            }
            self.queue.pop_front();
            self.take_from_queue(rk);
            self.open_conn(registry, rk, addrs, now, done);
        }
    }

    fn take_from_queue(&mut self, rk: usize) {
        self.requests[rk].queued = false;
        self.queued -= 1;
    }

    /// The idle connection used most recently (the likeliest to be alive).
    fn idle_conn(&self) -> Option<usize> {
        self.conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Open && c.request.is_none())
            .max_by_key(|(_, c)| c.idle_since)
            .map(|(ck, _)| ck)
    }

    fn oldest_idle(&self) -> Option<usize> {
        self.conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Open && c.request.is_none())
            .min_by_key(|(_, c)| c.idle_since)
            .map(|(ck, _)| ck)
    }

    fn start_on_idle(
        &mut self,
        registry: &Registry,
        ck: usize,
        rk: usize,
        now: Instant,
        done: &mut Vec<Reply>,
    ) {
        let req = &mut self.requests[rk];
        req.conn = Some(ck);
        let conn = &mut self.conns[ck];
        conn.request = Some(rk);
        conn.parser = ResponseParser::new(self.limits.max_body);
        match conn.stream.queue(&req.http) {
            Ok(()) => self.pump(registry, ck, now, done),
            Err(e) => self.conn_failed(registry, ck, e.to_string(), true, now, done),
        }
    }

    /// Opens a connection for request `rk`, trying `addrs` from the preferred one.
    fn open_conn(
        &mut self,
        registry: &Registry,
        rk: usize,
        addrs: Arc<[SocketAddr]>,
        now: Instant,
        done: &mut Vec<Reply>,
    ) {
        let entry = self.conns.vacant_entry();
        let ck = entry.key();
        let start = self.dns.preferred() % addrs.len().max(1);
        match try_connect(
            registry,
            places_token(ck),
            &addrs,
            start,
            0,
            &self.tls,
            &self.name,
        ) {
            Ok((mut stream, addr_index, tried)) => {
                let req = &mut self.requests[rk];
                if let Err(e) = stream.queue(&req.http) {
                    stream.abandon(registry);
                    let message = format!("cannot queue the request: {e}");
                    self.fail(rk, "UNKNOWN_ERROR", &message, now, done);
                    return;
                }
                req.conn = Some(ck);
                log::debug!(target: &self.server, "places: connecting to {}", addrs[addr_index]);
                entry.insert(Conn {
                    stream,
                    phase: Phase::Connecting {
                        attempt_deadline: now + self.limits.connect_timeout,
                    },
                    addrs,
                    addr_index,
                    tried,
                    request: Some(rk),
                    parser: ResponseParser::new(self.limits.max_body),
                    served: 0,
                    idle_since: now,
                });
            }
            Err(error) => {
                self.dns.invalidate();
                let message = format!("cannot connect to {}: {error}", self.endpoint.authority());
                self.fail(rk, "UNKNOWN_ERROR", &message, now, done);
            }
        }
    }

    /// The connect attempt of `ck` failed with `error`: tries its next address,
    /// or fails its request when all were tried.
    fn next_address(
        &mut self,
        registry: &Registry,
        ck: usize,
        error: String,
        now: Instant,
        done: &mut Vec<Reply>,
    ) {
        log::debug!(target: &self.server, "places: connect failed: {error}");
        let conn = &mut self.conns[ck];
        let next = conn.addr_index + 1;
        match try_connect(
            registry,
            places_token(ck),
            &conn.addrs,
            next,
            conn.tried,
            &self.tls,
            &self.name,
        ) {
            Ok((mut stream, addr_index, tried)) => {
                let queued = match conn.request {
                    Some(rk) => stream.queue(&self.requests[rk].http),
                    None => Ok(()),
                };
                if let Err(e) = queued {
                    stream.abandon(registry);
                    self.conn_failed(
                        registry,
                        ck,
                        format!("cannot queue the request: {e}"),
                        false,
                        now,
                        done,
                    );
                    return;
                }
                let old = std::mem::replace(&mut conn.stream, stream);
                old.abandon(registry);
                conn.addr_index = addr_index;
                conn.tried = tried;
                conn.phase = Phase::Connecting {
                    attempt_deadline: now + self.limits.connect_timeout,
                };
            }
            Err(last) => {
                let conn = self.conns.remove(ck);
                conn.stream.abandon(registry);
                self.dns.invalidate();
                let last = if last.is_empty() {
                    error
                } else {
                    format!("{error}; {last}")
                };
                if let Some(rk) = conn.request {
                    self.requests[rk].conn = None;
                    let message =
                        format!("cannot connect to {}: {last}", self.endpoint.authority());
                    self.fail(rk, "UNKNOWN_ERROR", &message, now, done);
                }
            }
        }
    }

    /// Drives an open connection and acts on what came of it.
    fn pump(&mut self, registry: &Registry, ck: usize, now: Instant, done: &mut Vec<Reply>) {
        let conn = &mut self.conns[ck];
        match drive(conn, &mut self.scratch) {
            Drive::Waiting => {
                if let Err(e) = conn.stream.update_interest(registry, places_token(ck)) {
                    let before_response = !conn.parser.started();
                    self.conn_failed(registry, ck, e.to_string(), before_response, now, done);
                }
            }
            Drive::Response(response) => {
                conn.served += 1;
                conn.idle_since = now;
                let rk = conn.request.take();
                let keep = response.keep_alive;
                if keep {
                    if let Err(e) = conn.stream.update_interest(registry, places_token(ck)) {
                        log::debug!(target: &self.server, "places: cannot keep a connection: {e}");
                        self.close_conn(registry, ck, "not reusable");
                    }
                } else {
                    self.close_conn(registry, ck, "not reusable");
                }
                if let Some(rk) = rk {
                    self.requests[rk].conn = None;
                    self.answer(rk, response, now, done);
                }
            }
            Drive::Closed => {
                let conn = self.conns.remove(ck);
                log::debug!(target: &self.server, "places: idle connection to {} closed by the server", conn.addr());
                conn.stream.abandon(registry);
            }
            Drive::Failed {
                message,
                before_response,
            } => self.conn_failed(registry, ck, message, before_response, now, done),
        }
    }

    /// Connection `ck` broke: its request is retried once on a fresh
    /// connection if the connection was a reused one and no response byte
    /// had come, else it fails.
    fn conn_failed(
        &mut self,
        registry: &Registry,
        ck: usize,
        message: String,
        before_response: bool,
        now: Instant,
        done: &mut Vec<Reply>,
    ) {
        let conn = self.conns.remove(ck);
        let addr = conn.addr();
        conn.stream.abandon(registry);
        let Some(rk) = conn.request else {
            log::debug!(target: &self.server, "places: idle connection to {addr} failed: {message}");
            return;
        };
        let req = &mut self.requests[rk];
        req.conn = None;
        if before_response && conn.served > 0 && !req.retried {
            log::debug!(
                target: &self.server,
                "places request {}: reused connection to {addr} failed ({message}), retrying on a fresh one",
                req.id
            );
            req.retried = true;
            req.queued = true;
            self.queued += 1;
            self.queue.push_front((rk, req.seq));
            return;
        }
        let message = format!("Places API at {}: {message}", self.endpoint.authority());
        self.fail(rk, "UNKNOWN_ERROR", &message, now, done);
    }

    /// Closes connection `ck` politely (close_notify).
    fn close_conn(&mut self, registry: &Registry, ck: usize, why: &str) {
        let conn = self.conns.remove(ck);
        log::debug!(target: &self.server, "places: closing connection to {} ({why})", conn.addr());
        conn.stream.close(registry);
    }

    /// Request `rk` got a response: its reply, or a failure.
    fn answer(&mut self, rk: usize, response: Response, now: Instant, done: &mut Vec<Reply>) {
        if response.status != 200 {
            let status = match response.status {
                400 => "INVALID_REQUEST",
                401 | 403 => "REQUEST_DENIED",
                429 => "OVER_QUERY_LIMIT",
                _ => "UNKNOWN_ERROR",
            };
            let mut message = format!(
                "the Places API answered HTTP {} {}",
                response.status, response.reason
            );
            if let Some(detail) = error_detail(&response.body) {
                message.push_str(": ");
                message.push_str(&detail);
            }
            self.fail(rk, status, &message, now, done);
            return;
        }
        let bound = self.requests[rk].bound;
        let body = match self.api {
            PlacesApi::Legacy => json::legacy_reply(&response.body, bound),
            PlacesApi::New => json::translate_new(&response.body, bound),
        };
        match body {
            Ok(body) => {
                let req = self.remove_request(rk);
                log::info!(
                    target: &self.server,
                    "places request {} ({}): OK, {} bytes from the API, {} bytes answered, in {} ms",
                    req.id,
                    req.what,
                    response.body.len(),
                    body.len(),
                    now.saturating_duration_since(req.submitted).as_millis()
                );
                done.push(Reply {
                    id: req.id,
                    body,
                    status: "OK",
                    elapsed: now.saturating_duration_since(req.submitted),
                });
            }
            Err(message) => self.fail(rk, "UNKNOWN_ERROR", &message, now, done),
        }
    }

    fn remove_request(&mut self, rk: usize) -> Request {
        let req = self.requests.remove(rk);
        self.deadlines.cancel(req.deadline, rk);
        req
    }

    /// Answers request `rk` with a failure.
    fn fail(
        &mut self,
        rk: usize,
        status: &'static str,
        message: &str,
        now: Instant,
        done: &mut Vec<Reply>,
    ) {
        let req = self.remove_request(rk);
        log::info!(
            target: &self.server,
            "places request {} ({}) failed in {} ms: {status}: {message}",
            req.id,
            req.what,
            now.saturating_duration_since(req.submitted).as_millis()
        );
        done.push(Reply {
            id: req.id,
            body: failure_body(status, message),
            status,
            elapsed: now.saturating_duration_since(req.submitted),
        });
    }
}

/// The token of Places connection `ck`. Connections are never more than
/// `max_in_flight`, which is clamped to the span, so a slab key always fits.
fn places_token(ck: usize) -> Token {
    debug_assert!(ck < token::PLACES_SPAN);
    Token(token::PLACES_BASE + ck)
}

/// Starts a connect to `addrs[start..]` (wrapping), skipping addresses that
/// fail at once; `tried` counts addresses already tried by this connection.
fn try_connect(
    registry: &Registry,
    token: Token,
    addrs: &[SocketAddr],
    start: usize,
    mut tried: usize,
    config: &Arc<ClientConfig>,
    name: &ServerName<'static>,
) -> Result<(TlsStream, usize, usize), String> {
    let mut errors = Vec::new();
    let mut index = start;
    while tried < addrs.len() {
        let i = index % addrs.len();
        tried += 1;
        match TlsStream::connect(registry, token, addrs[i], config, name) {
            Ok(stream) => return Ok((stream, i, tried)),
            Err(e) => errors.push(format!("{}: {e}", addrs[i])),
        }
        index += 1;
    }
    Err(errors.join("; "))
}

/// Writes pending TLS records, reads until the socket would block, feeds the
/// response parser; plaintext is always drained before waiting.
fn drive(conn: &mut Conn, scratch: &mut Vec<u8>) -> Drive {
    let failed = |conn: &Conn, e: &dyn fmt::Display| Drive::Failed {
        message: e.to_string(),
        before_response: !conn.parser.started(),
    };
    if let Err(e) = conn.stream.write_pending() {
        return failed(conn, &e);
    }
    loop {
        scratch.clear();
        let step = match conn.stream.read_step(scratch) {
            Ok(step) => step,
            Err(e) => return failed(conn, &e),
        };
        if !scratch.is_empty() {
            if conn.request.is_none() {
                // We never pipeline: bytes on an idle connection are out of step.
                return Drive::Closed;
            }
            match conn.parser.feed(scratch) {
                Ok(Progress::Partial) => {}
                Ok(Progress::Done(mut response)) => {
                    if step == ReadStep::Eof {
                        response.keep_alive = false;
                    }
                    return Drive::Response(response);
                }
                Err(e) => return failed(conn, &e),
            }
        }
        match step {
            ReadStep::Data => {}
            ReadStep::WouldBlock => break,
            // The server closed an idle connection: nothing lost.
            ReadStep::Eof if conn.request.is_none() => return Drive::Closed,
            ReadStep::Eof => {
                return match conn.parser.finish_eof() {
                    Ok(response) => Drive::Response(response),
                    Err(e) => Drive::Failed {
                        message: e.to_string(),
                        before_response: e == HttpError::ClosedBeforeResponse,
                    },
                }
            }
        }
    }
    // Reading may have produced records to send (handshake, key updates).
    if let Err(e) = conn.stream.write_pending() {
        return failed(conn, &e);
    }
    Drive::Waiting
}

/// A JSON number from the query's decimal text, for the New API's body.
fn json_number(text: &str) -> Result<serde_json::Value, String> {
    if let Ok(n) = text.parse::<serde_json::Number>() {
        return Ok(serde_json::Value::Number(n));
    }
    text.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(serde_json::Value::Number)
        .ok_or_else(|| format!("{text:?} is not a number"))
}

/// The API's own error message from an error body, if it has one: legacy
/// `error_message` or New API `error.message`; at most 300 characters.
fn error_detail(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = value
        .get("error_message")
        .or_else(|| value.get("error").and_then(|e| e.get("message")))?
        .as_str()?;
    Some(message.chars().take(300).collect())
}

/// The failure framing of SPEC §3 in Google's layout, ending in two newlines:
///
/// ```text
/// {
///    "error_message" : "...",
///    "html_attributions" : [],
///    "results" : [],
///    "status" : "..."
/// }
/// ```
///
/// Strings are escaped as Google does (`<` → `\u003c`, `>` → `\u003e`).
pub fn failure_body(status: &str, message: &str) -> Vec<u8> {
    json::failure(status, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_body_layout() {
        assert_eq!(
            String::from_utf8(failure_body("REQUEST_DENIED", "no key <here>")).unwrap(),
            "{\n   \"error_message\" : \"no key \\u003chere\\u003e\",\n   \"html_attributions\" : [],\n   \"results\" : [],\n   \"status\" : \"REQUEST_DENIED\"\n}\n\n"
        );
    }

    #[test]
    fn json_numbers() {
        assert_eq!(json_number("34.068930").unwrap().to_string(), "34.06893");
        assert_eq!(
            json_number("-118.445127").unwrap().to_string(),
            "-118.445127"
        );
        assert_eq!(json_number("10000").unwrap().to_string(), "10000");
        assert_eq!(json_number("10.").unwrap().to_string(), "10.0");
        assert!(json_number("ten").is_err());
        assert!(json_number("NaN").is_err());
    }

    #[test]
    fn error_details() {
        assert_eq!(
            error_detail(br#"{"error":{"code":403,"message":"API key not valid.","status":"PERMISSION_DENIED"}}"#),
            Some("API key not valid.".to_string())
        );
        assert_eq!(
            error_detail(br#"{"error_message":"denied","status":"REQUEST_DENIED"}"#),
            Some("denied".to_string())
        );
        assert_eq!(error_detail(b"<html>"), None);
    }
}

//! The pool: one server's Places requests, queued, put on kept-alive
//! connections, and each answered by its deadline.
//!
//! [`Places`] keeps two slabs. `requests` holds what was submitted and not
//! yet answered, under a slab key that the deadline timers ([`Timers`]) and
//! the queue refer to; `conns` holds the connections, whose slab key is
//! their poll token less the base of [`token`]'s Places range, so an event
//! finds its connection without a map. A request is in exactly one
//! place: the queue, a connection, or (answered) gone. Queue entries are
//! not removed when a request leaves the queue some other way (its
//! deadline); each carries the request's `seq`, and `dispatch` skips an
//! entry whose request is gone or whose slab key was reused since.
//!
//! `dispatch` is the one place a request meets a connection, and it runs
//! after everything that could free one (a response, a failure, a timeout,
//! the end of a DNS lookup). It prefers the idle connection used most
//! recently — the likeliest still to be open at the server — and otherwise
//! opens a new one while fewer than `max_in_flight` requests are in flight,
//! closing the stalest idle connection if that makes room. A request being
//! retried skips idle connections: it failed on a reused one once already.
//!
//! The retry-once rule lives in `conn_failed`: a request written on a reused
//! connection that failed before any response byte came is put back at the
//! front of the queue once, because that is how a server closing an idle
//! keep-alive connection looks from our side, and a nearby search is safe
//! to ask twice. Any other failure answers the request.
//!
//! Time is passed in (`now`), never read here, so the loop's one clock
//! decides; `next_deadline` is the earliest of the request deadlines, the
//! connect attempts' deadlines and the idle connections' closing times.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Registry, Token, Waker};
use slab::Slab;

use super::connection::{places_token, Conn, ConnectError, Drive, Phase};
use super::dns::{Addrs, Resolver};
use super::http::{Response, ResponseParser};
use super::request::{self, failure_body, Failure};
use super::settings::Settings;
use super::tls::ConnectStep;
use super::{Limits, Query, Reply, RequestId, SetupError};
use crate::config::PlacesConfig;
use crate::timer::{Deadline, Timers};
use crate::token;

/// A submitted request.
struct Request {
    id: RequestId,
    /// Unique per request: tells a live queue entry from a stale one whose
    /// slab key was reused.
    seq: u64,
    /// The HTTP request bytes. They hold the key: never logged.
    http: Vec<u8>,
    /// What was asked (to build `http` again after a reload).
    query: Query,
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

/// One server's Places client.
pub struct Places {
    server: String,
    /// The API, endpoint, key and TLS set-up a reload may change.
    settings: Settings,
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
    /// Bumped by each reload that changes the settings: connections of an
    /// older generation are closed once their request is answered.
    generation: u64,
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
            .field("api", &self.settings.api)
            .field("endpoint", &self.settings.endpoint.authority())
            .field("has_key", &self.settings.key.is_some())
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
        let settings = Settings::new(config, key)?;
        let mut limits = limits;
        limits.max_in_flight = limits.max_in_flight.clamp(1, token::PLACES_SPAN);
        let e = &settings.endpoint;
        let dns = Resolver::new(&e.host, e.ip, e.port, waker);
        Ok(Places {
            server: server.to_string(),
            settings,
            limits,
            dns,
            requests: Slab::new(),
            queue: VecDeque::new(),
            queued: 0,
            deadlines: Timers::new(),
            conns: Slab::new(),
            next_seq: 0,
            scratch: Vec::new(),
            generation: 0,
        })
    }

    /// A reload's Places settings (API, URL, key, extra root): requests
    /// from now on use them; queued ones are built again for them; ones
    /// already on a connection finish there, and that connection is then
    /// closed. True when anything changed (with a `places_ca`, which is not
    /// compared, it always counts as changed). An error changes nothing.
    pub fn reconfigure(
        &mut self,
        config: &PlacesConfig,
        key: Option<String>,
        waker: Arc<Waker>,
        registry: &Registry,
        now: Instant,
        done: &mut Vec<Reply>,
    ) -> Result<bool, SetupError> {
        let new = Settings::new(config, key)?;
        let old = &self.settings;
        let same = new.api == old.api
            && new.endpoint == old.endpoint
            && new.key == old.key
            && new.key_env == old.key_env
            && config.ca.is_none();
        if same {
            return Ok(false);
        }
        self.dns = Resolver::new(
            &new.endpoint.host,
            new.endpoint.ip,
            new.endpoint.port,
            waker,
        );
        self.settings = new;
        self.generation += 1;
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.request.is_none())
            .map(|(ck, _)| ck)
            .collect();
        for ck in idle {
            self.close_conn(registry, ck, "the Places settings were reloaded");
        }
        let queued: Vec<usize> = self
            .requests
            .iter()
            .filter(|(_, r)| r.queued)
            .map(|(rk, _)| rk)
            .collect();
        for rk in queued {
            let built = match self.settings.key.as_deref() {
                Some(key) => request::build(
                    self.settings.api,
                    &self.settings.endpoint,
                    &self.requests[rk].query,
                    key,
                ),
                None => Err(format!(
                    "no Places API key: the environment variable {} is not set",
                    self.settings.key_env
                )),
            };
            match built {
                Ok(http) => self.requests[rk].http = http,
                Err(message) => {
                    self.requests[rk].queued = false;
                    self.queued -= 1;
                    self.fail(rk, "REQUEST_DENIED", &message, now, done);
                }
            }
        }
        self.dispatch(registry, now, done);
        Ok(true)
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
        let Some(key) = self.settings.key.as_deref() else {
            let message = format!(
                "no Places API key: the environment variable {} is not set",
                self.settings.key_env
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
        let http = match request::build(self.settings.api, &self.settings.endpoint, &query, key) {
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
            query,
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
            let message = format!("DNS lookup of {} failed: {e}", self.settings.endpoint.host);
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
            if let Some(t) = conn.next_deadline(self.limits.idle_timeout) {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next
    }

    /// Fails requests whose deadline passed, closes idle connections.
    pub fn on_timeout(&mut self, registry: &Registry, now: Instant, done: &mut Vec<Reply>) {
        while let Some((_, rk)) = self.deadlines.pop_due(now) {
            let req = &mut self.requests[rk];
            let mut message = format!(
                "no answer from the Places API at {} within {:?}",
                self.settings.endpoint.authority(),
                self.limits.request_timeout
            );
            if req.queued {
                req.queued = false;
                self.queued -= 1;
                if self.dns.pending() {
                    message.push_str(&format!(
                        " (DNS lookup of {} under way)",
                        self.settings.endpoint.host
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
            match conn.next_deadline(self.limits.idle_timeout) {
                Some(t) if t <= now && conn.phase == Phase::Open => idle.push(ck),
                Some(t) if t <= now => attempts.push(ck),
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
        let dial = (&self.settings.tls, &self.settings.name);
        let http = (rk, self.requests[rk].http.as_slice());
        match Conn::open(registry, ck, addrs, start, dial, http, &self.limits, now) {
            Ok(mut conn) => {
                conn.generation = self.generation;
                self.requests[rk].conn = Some(ck);
                log::debug!(target: &self.server, "places: connecting to {}", conn.addr());
                entry.insert(conn);
            }
            Err(ConnectError::Queue(e)) => {
                let message = format!("cannot queue the request: {e}");
                self.fail(rk, "UNKNOWN_ERROR", &message, now, done);
            }
            Err(ConnectError::Exhausted(error)) => {
                self.dns.invalidate();
                let message = format!(
                    "cannot connect to {}: {error}",
                    self.settings.endpoint.authority()
                );
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
        let http = conn.request.map(|rk| self.requests[rk].http.as_slice());
        let attempt_deadline = now + self.limits.connect_timeout;
        match conn.next_address(
            registry,
            ck,
            (&self.settings.tls, &self.settings.name),
            http,
            attempt_deadline,
        ) {
            Ok(()) => {}
            Err(ConnectError::Queue(e)) => {
                let message = format!("cannot queue the request: {e}");
                self.conn_failed(registry, ck, message, false, now, done);
            }
            Err(ConnectError::Exhausted(last)) => {
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
                    let message = format!(
                        "cannot connect to {}: {last}",
                        self.settings.endpoint.authority()
                    );
                    self.fail(rk, "UNKNOWN_ERROR", &message, now, done);
                }
            }
        }
    }

    /// Drives an open connection and acts on what came of it.
    fn pump(&mut self, registry: &Registry, ck: usize, now: Instant, done: &mut Vec<Reply>) {
        let conn = &mut self.conns[ck];
        match conn.drive(&mut self.scratch) {
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
                let keep = response.keep_alive && conn.generation == self.generation;
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
        let message = format!(
            "Places API at {}: {message}",
            self.settings.endpoint.authority()
        );
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
        let bound = self.requests[rk].bound;
        match request::answer(self.settings.api, &response, bound) {
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
            Err(Failure { status, message }) => self.fail(rk, status, &message, now, done),
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

//! Reading a connection: bytes into the loop's scratch buffer, lines to
//! the engine, its effects performed through [`Apply`]; the throttle's and
//! the inbound links' timers.

use std::collections::HashMap;
use std::io::{self, Read};
use std::time::{Duration, Instant};

use mio::Registry;

use super::{Limits, Server, Wait, READS_PER_TURN};
use crate::conn::{Conn, ReadState, Replies};
use crate::engine::{CertNames, Clock, Effects, Engine, Next, Port, Role};
use crate::front::http::{Cx, Expired};
use crate::front::{Envelope, Front, Sink, Step, Token};
use crate::journal::Journal;
use crate::links::liveness::{self, Check, Liveness};
use crate::links::Links;
use crate::places::{Places, Query, Reply, RequestId};
use crate::protocol;
use crate::stats::Route;
use crate::watch::Hub;

/// The parts of the loop a connection's lines reach ([`Shared`]), borrowed
/// field by field from the server `$s`, so that one of its connections
/// (from `$s.conns`) can be borrowed beside them: a method would borrow
/// the whole server.
macro_rules! shared {
    ($s:ident) => {
        Shared {
            registry: $s.poll.registry(),
            journal: $s.journal.as_mut(),
            links: &mut $s.links,
            places: &mut $s.places,
            requests: &mut $s.requests,
            next_request: &mut $s.next_request,
            done: &mut $s.done,
            watch: &mut $s.watch,
            gathered: &mut $s.gathered,
            token: $s.api_token.as_ref(),
        }
    };
}

impl Server {
    /// Reads and handles what connection `key` sent. `short_drains`: a read
    /// shorter than the scratch buffer means the socket is drained (saves
    /// the `recv` that would only say `WouldBlock`; see `dispatch`).
    pub(super) fn read(&mut self, key: usize, short_drains: bool) {
        let active = self.seconds();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.active = active;
        let mut shared = shared!(self);
        let outcome = read_conn(
            &mut self.engine,
            conn,
            key,
            &mut shared,
            &self.limits,
            &mut self.scratch,
            short_drains,
            self.epoch,
        );
        if let Some(kind) = conn.stream.handshake_done() {
            let resumed = kind == rustls::HandshakeKind::Resumed;
            self.engine.stats().handshake(conn.session.port, resumed);
        }
        let timeouts = self.limits.http_timeouts();
        if let Some(at) = conn.front.as_deref_mut().and_then(|f| f.rearm(timeouts)) {
            self.timers.schedule(at, Wait::Front(key, conn.serial));
        }
        if let Role::Peer(p) = &mut conn.session.role {
            if p.live.is_none() {
                // It just said HERD: from now on it must show life.
                let timeout = self.limits.link_timeout;
                let live = Liveness::new(timeout, Instant::now());
                liveness::tune_socket(conn.stream.tcp(), timeout);
                self.timers
                    .schedule(live.due(), Wait::Peer(key, conn.serial));
                p.live = Some(live);
            }
        }
        match outcome {
            ReadOutcome::Drained => {}
            ReadOutcome::Throttled(pause) => {
                if conn.pauses() == 1 {
                    log::warn!(target: &self.name, "client {} sends invalid input faster than {} bytes/s: reading it paused for {} ms (logged once per connection)", conn.peer(), self.limits.invalid_rate, pause.as_millis());
                }
                self.timers
                    .schedule(Instant::now() + pause, Wait::Unthrottle(key, conn.serial));
            }
            ReadOutcome::Yielded => {
                if conn.state() == ReadState::Reading {
                    self.resume.push(key);
                }
            }
            ReadOutcome::Failed(e) => {
                self.close(key, &e.to_string());
                return;
            }
        }
        self.dirty.push(key);
    }

    /// An inbound herd link's heartbeat is due, or its silence may be too
    /// long: send `PING`, or declare it dead and close it.
    pub(super) fn check_peer(&mut self, key: usize, serial: u64, now: Instant) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.serial == serial) else {
            return;
        };
        let Role::Peer(p) = &mut conn.session.role else {
            return;
        };
        let Some(live) = p.live.as_mut() else {
            return;
        };
        match live.check(now) {
            Check::Dead => {
                let why = format!("no sign of life for {} ms", live.timeout().as_millis());
                self.close(key, &why);
                return;
            }
            // Nothing may precede our CHALLENGE's answer on a link still
            // authenticating; after that, a heartbeat.
            Check::Ping if p.authenticated => {
                conn.replies.reply(protocol::PING);
                self.dirty.push(key);
            }
            Check::Ping | Check::Quiet => {}
        }
        self.timers.schedule(live.due(), Wait::Peer(key, serial));
    }

    /// An HTTP connection's deadline is due: a request that has not arrived
    /// whole gets `408` and the connection closes; an idle keep-alive
    /// connection is closed; otherwise the timer is armed again.
    pub(super) fn front_due(&mut self, key: usize, serial: u64, now: Instant) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.serial == serial) else {
            return;
        };
        let busy = !conn.is_drained() || conn.replies.in_flight() > 0;
        let Some(Front::Http(http)) = conn.front.as_deref_mut() else {
            return;
        };
        let mut shared = shared!(self);
        let mut apply = Apply {
            replies: &mut conn.replies,
            key,
            serial,
            shared: &mut shared,
            mode: Mode::Lines,
        };
        match http.expired(now, self.limits.http_timeouts(), busy, &mut apply) {
            Expired::No(at) => self.timers.schedule(at, Wait::Front(key, serial)),
            Expired::Request => {
                log::info!(target: &self.name, "client {}: no whole request in {} ms: 408", conn.peer(), self.limits.request_timeout.as_millis());
                self.engine.stats().http(Route::Other, 408);
                conn.stop_reading();
                self.dirty.push(key);
            }
            Expired::Idle => self.close(key, "idle keep-alive connection"),
        }
    }

    /// A throttled connection's pause is over: read it again, unless its
    /// output holds it back meanwhile.
    pub(super) fn unthrottle(&mut self, key: usize, serial: u64) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.serial == serial) else {
            return;
        };
        let over = conn.over(self.limits.client_output, self.limits.whatsats_per_conn);
        if conn.unthrottle(over) {
            self.resume.push(key);
        }
    }
}

/// What reading a connection came to.
pub(super) enum ReadOutcome {
    /// Read until `WouldBlock`: wait for the next event.
    Drained,
    /// The turn's budget ran out, or reading is paused: come back later.
    Yielded,
    /// Too much invalid input: paused for this long.
    Throttled(Duration),
    /// The connection failed and must be closed.
    Failed(io::Error),
}

/// The parts of the loop that handling lines acts on, borrowed for one read.
pub(super) struct Shared<'a> {
    /// An envelope being gathered (an HTTP response) and its holes.
    gathered: &'a mut Gathered,
    /// The token HTTP requests must carry, if any.
    token: Option<&'a Token>,
    registry: &'a Registry,
    journal: Option<&'a mut Journal>,
    links: &'a mut Links,
    places: &'a mut Places,
    requests: &'a mut HashMap<RequestId, (usize, u64)>,
    next_request: &'a mut RequestId,
    done: &'a mut Vec<Reply>,
    watch: &'a mut Hub,
}

/// The bytes of an envelope being gathered, and where its Places answers go.
#[derive(Debug, Default)]
pub(super) struct Gathered {
    bytes: Vec<u8>,
    holes: Vec<(RequestId, usize)>,
}

/// Where the engine's replies go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// As they are (a line port).
    Lines,
    /// One WebSocket message each.
    Messages,
    /// Into the envelope being gathered; then back to the mode it was.
    Gather(Back),
}

/// The mode a gathering returns to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Back {
    Lines,
    Messages,
}

/// The effects of one connection's lines, performed as the engine asks.
pub(super) struct Apply<'a, 'b> {
    replies: &'a mut Replies,
    key: usize,
    serial: u64,
    shared: &'a mut Shared<'b>,
    mode: Mode,
}

impl Effects for Apply<'_, '_> {
    fn reply(&mut self, bytes: &[u8]) {
        match self.mode {
            Mode::Lines => self.replies.reply(bytes),
            Mode::Messages => self.replies.reply_in(bytes, &Envelope::Message),
            Mode::Gather(_) => self.shared.gathered.bytes.extend_from_slice(bytes),
        }
    }

    fn whatsat(&mut self, head: &[u8], query: Query) {
        let s = &mut *self.shared;
        let id = *s.next_request;
        *s.next_request += 1;
        s.requests.insert(id, (self.key, self.serial));
        match self.mode {
            Mode::Lines => self.replies.wait_for(id, head, Envelope::Raw),
            Mode::Messages => self.replies.wait_for(id, head, Envelope::Message),
            Mode::Gather(_) => {
                s.gathered.bytes.extend_from_slice(head);
                s.gathered.holes.push((id, s.gathered.bytes.len()));
                self.replies.counted();
            }
        }
        s.places
            .submit(s.registry, id, query, Instant::now(), s.done);
    }

    fn journal(&mut self, line: &[u8]) {
        if let Some(j) = self.shared.journal.as_deref_mut() {
            // The reply just queued acknowledges this record (for a peer's
            // AT, nothing is queued, and holding its output costs nothing).
            self.replies.set_ack(j.record(line));
        }
    }

    fn flood(&mut self, line: &[u8], except: Option<usize>) {
        self.shared.links.flood(line, except);
    }

    fn neighbour_dialled(&mut self, i: usize) {
        self.shared.links.neighbour_is_up(i, Instant::now());
    }

    fn stored(&mut self, slot: usize) {
        self.shared.watch.stored(slot);
    }

    fn can_watch(&self) -> bool {
        // An HTTP request's replies are one response: nothing may follow.
        !matches!(self.mode, Mode::Gather(_))
    }

    fn watching(&mut self) {
        self.shared.watch.joined();
    }

    fn watch(&mut self, client: &[u8], place: u32) {
        self.shared.watch.add(client, self.key, self.serial, place);
    }

    fn unwatch(&mut self, client: &[u8]) {
        self.shared.watch.remove(client, self.key, self.serial);
    }

    fn watch_all(&mut self) -> bool {
        self.shared.watch.add_all(self.key, self.serial)
    }

    fn unwatch_all(&mut self) {
        self.shared.watch.remove_all(self.key, self.serial);
    }
}

impl Sink for Apply<'_, '_> {
    fn gather(&mut self) {
        let back = match self.mode {
            Mode::Messages => Back::Messages,
            Mode::Lines | Mode::Gather(_) => Back::Lines,
        };
        self.mode = Mode::Gather(back);
        self.shared.gathered.bytes.clear();
        self.shared.gathered.holes.clear();
    }

    fn enclose(&mut self, envelope: Envelope) {
        let g = &mut *self.shared.gathered;
        self.replies.enclose(&g.bytes, &g.holes, envelope);
        g.bytes.clear();
        g.holes.clear();
        if g.bytes.capacity() > GATHER_CAPACITY {
            g.bytes = Vec::new();
        }
        self.mode = match self.mode {
            Mode::Gather(Back::Messages) => Mode::Messages,
            Mode::Gather(Back::Lines) => Mode::Lines,
            mode => mode,
        };
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.replies.reply(bytes);
    }

    fn messages(&mut self) {
        self.mode = Mode::Messages;
    }
}

/// The gathering buffer is kept between requests up to this size.
const GATHER_CAPACITY: usize = 64 * 1024;

/// On a mutual-TLS peer port, at the first plaintext (the handshake is
/// done): which neighbours the verified client certificate names. None is
/// a refusal (docs/PROTOCOL.md §12).
fn learn_cert_names(engine: &Engine, conn: &mut Conn) -> io::Result<()> {
    if conn.session.port != Port::Peer {
        return Ok(());
    }
    let Some(tls) = conn.stream.tls() else {
        return Ok(());
    };
    let names = match tls.peer_certificates().and_then(|chain| chain.first()) {
        Some(cert) => engine.neighbours_named(|n| crate::tls::cert_names(cert, n)),
        None => Vec::new(),
    };
    if names.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "its certificate names none of our neighbours",
        ));
    }
    conn.session.cert_names = Some(Box::new(CertNames(names)));
    Ok(())
}

/// Reads a connection until `WouldBlock`, its read budget, or a pause, and
/// hands every line read to the engine.
#[allow(clippy::too_many_arguments)]
fn read_conn(
    engine: &mut Engine,
    conn: &mut Conn,
    key: usize,
    shared: &mut Shared<'_>,
    limits: &Limits,
    scratch: &mut [u8],
    short_drains: bool,
    epoch: Instant,
) -> ReadOutcome {
    match conn.state() {
        ReadState::Reading => {}
        ReadState::Closing => return ReadOutcome::Drained,
        // Paused: whatever resumes it reads it then.
        ReadState::Backpressured | ReadState::Throttled => return ReadOutcome::Yielded,
    }
    let mut clock = Clock::wall();
    let token = shared.token;
    for _ in 0..READS_PER_TURN {
        if conn.over(limits.client_output, limits.whatsats_per_conn) {
            conn.backpressure();
            return ReadOutcome::Yielded;
        }
        clock.next_read();
        let read = conn.stream.read(scratch);
        if matches!(read, Ok(n) if n > 0) && conn.session.cert_names.is_none() {
            if let Err(e) = learn_cert_names(engine, conn) {
                return ReadOutcome::Failed(e);
            }
        }
        let mode = match conn.front.as_deref() {
            Some(front) if front.is_ws() => Mode::Messages,
            _ => Mode::Lines,
        };
        let mut apply = Apply {
            replies: &mut conn.replies,
            key,
            serial: conn.serial,
            shared,
            mode,
        };
        let session = &mut conn.session;
        if let Some(front) = conn.front.as_deref_mut() {
            let n = match read {
                Ok(0) => {
                    // EOF: a request cut short is dropped; what is owed is sent.
                    if let Front::Http(http) = front {
                        http.finish();
                    }
                    conn.stop_reading();
                    return ReadOutcome::Drained;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return ReadOutcome::Failed(e),
            };
            let mut cx = Cx {
                engine: &mut *engine,
                session,
                clock: &mut clock,
                token,
                line_limit: limits.line,
                now: Instant::now(),
            };
            match front.feed(&mut scratch[..n], &mut cx, &mut apply) {
                Step::Continue(0) => {}
                Step::Continue(invalid) => {
                    if let Some(pause) = charge(conn, invalid, limits, epoch) {
                        return ReadOutcome::Throttled(pause);
                    }
                }
                Step::Close => {
                    conn.stop_reading();
                    return ReadOutcome::Drained;
                }
            }
            if short_drains && conn.stream.drained_by(n, scratch.len()) {
                return ReadOutcome::Drained;
            }
            continue;
        }
        match read {
            Ok(0) => {
                // EOF: a last line without `\n` is still a request.
                conn.reader.finish(|piece| {
                    let _ = engine.handle(session, piece, &mut clock, &mut apply);
                });
                // Nothing more will be read: there is nothing to throttle.
                conn.stop_reading();
                return ReadOutcome::Drained;
            }
            Ok(n) => {
                let (mut invalid, mut stop) = (0, false);
                let discarded = conn.reader.feed(&scratch[..n], limits.line, |piece| {
                    // A connection we gave up on (failed AUTH) gets nothing more.
                    if stop {
                        return;
                    }
                    match engine.handle(session, piece, &mut clock, &mut apply) {
                        Next::Continue => {}
                        Next::Charge(bytes) => invalid += bytes,
                        Next::StopReading => stop = true,
                    }
                });
                if let Role::Peer(p) = &mut conn.session.role {
                    if let Some(live) = &mut p.live {
                        live.heard(Instant::now());
                    }
                }
                if stop {
                    conn.stop_reading();
                    return ReadOutcome::Drained;
                }
                let invalid = invalid + discarded;
                if invalid > 0 {
                    if let Some(pause) = charge(conn, invalid, limits, epoch) {
                        return ReadOutcome::Throttled(pause);
                    }
                }
                if short_drains && conn.stream.drained_by(n, scratch.len()) {
                    return ReadOutcome::Drained;
                }
            }
            // Drained: the next event says when there is more.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return ReadOutcome::Failed(e),
        }
    }
    ReadOutcome::Yielded
}

/// Charges `invalid` bytes to the connection's throttle; the pause it
/// must take, if it must (then it is Throttled).
fn charge(conn: &mut Conn, invalid: usize, limits: &Limits, epoch: Instant) -> Option<Duration> {
    if limits.invalid_rate == 0 {
        return None;
    }
    let now_ms = epoch.elapsed().as_millis() as u32;
    let pause = conn.charge_invalid(invalid, now_ms, limits.invalid_rate)?;
    conn.throttled();
    Some(pause)
}

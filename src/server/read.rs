//! Reading a connection: bytes into the loop's scratch buffer, lines to
//! the engine, its effects performed through [`Apply`]; the throttle's and
//! the inbound links' timers.

use std::collections::HashMap;
use std::io::{self, Read};
use std::time::{Duration, Instant};

use mio::Registry;

use super::{Limits, Server, Wait, READS_PER_TURN};
use crate::conn::{Conn, ReadState, Replies};
use crate::engine::{Clock, Effects, Engine, Next, Port, Role};
use crate::journal::Journal;
use crate::links::liveness::{self, Check, Liveness};
use crate::links::Links;
use crate::places::{Places, Query, Reply, RequestId};
use crate::protocol;
use crate::watch::Hub;

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
        let mut shared = Shared {
            registry: self.poll.registry(),
            journal: self.journal.as_mut(),
            links: &mut self.links,
            places: &mut self.places,
            requests: &mut self.requests,
            next_request: &mut self.next_request,
            done: &mut self.done,
            watch: &mut self.watch,
        };
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
                if conn.throttle.pauses == 1 {
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
    registry: &'a Registry,
    journal: Option<&'a mut Journal>,
    links: &'a mut Links,
    places: &'a mut Places,
    requests: &'a mut HashMap<RequestId, (usize, u64)>,
    next_request: &'a mut RequestId,
    done: &'a mut Vec<Reply>,
    watch: &'a mut Hub,
}

/// The effects of one connection's lines, performed as the engine asks.
pub(super) struct Apply<'a, 'b> {
    replies: &'a mut Replies,
    key: usize,
    serial: u64,
    shared: &'a mut Shared<'b>,
}

impl Effects for Apply<'_, '_> {
    fn reply(&mut self, bytes: &[u8]) {
        self.replies.reply(bytes);
    }

    fn whatsat(&mut self, head: &[u8], query: Query) {
        let s = &mut *self.shared;
        let id = *s.next_request;
        *s.next_request += 1;
        s.requests.insert(id, (self.key, self.serial));
        self.replies.wait_for(id, head.to_vec());
        s.places
            .submit(s.registry, id, query, Instant::now(), s.done);
    }

    fn journal(&mut self, line: &[u8]) {
        if let Some(j) = self.shared.journal.as_deref_mut() {
            // The reply just queued acknowledges this record (for a peer's
            // AT, nothing is queued, and holding its output costs nothing).
            self.replies.ack = j.record(line);
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
    conn.session.cert_names = Some(names);
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
        let mut apply = Apply {
            replies: &mut conn.replies,
            key,
            serial: conn.serial,
            shared,
        };
        let session = &mut conn.session;
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
                if invalid > 0 && limits.invalid_rate > 0 {
                    let now_ms = epoch.elapsed().as_millis() as u32;
                    let rate = limits.invalid_rate;
                    if let Some(pause) = conn.throttle.charge(invalid, now_ms, rate) {
                        conn.throttled();
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

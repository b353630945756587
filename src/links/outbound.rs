//! The links a server dials, one per neighbour, each a small state machine
//! over its own mio `TcpStream` (plain, or under mutual TLS) in the server's poll (tokens from
//! [`crate::token::link`]). Their deadlines — a retry, a connect, a
//! handshake — live in one [`Timers`], keyed by the link's slot.
//!
//! A link is read to take the handshake's `CHALLENGE`, to hear the
//! neighbour's heartbeats (any byte is a sign of life, see [`liveness`]),
//! to notice that it went away, and to log what else it sends back (a `? `
//! means it refused a line).

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::backoff::Backoff;
use super::catchup::CatchUp;
use super::handshake::{self, Handshake, Step};
use super::liveness::{self, Check, Liveness};
use super::Neighbour;
use crate::auth::Secret;
use crate::conn::{Flush, LineReader, Output, Piece};
use crate::logging::escape;
use crate::protocol::{self, Command};
use crate::stats::LinkStats;
use crate::store::Store;
use crate::timer::{Deadline, Timers};
use crate::tls::stream::{Stream, TlsStream};
use crate::token;
use std::sync::Arc;

/// The default output a link may hold for a neighbour that does not read;
/// past it the link is dropped, and catch-up repairs the gap when it is
/// dialled again.
pub const DEFAULT_LINK_OUTPUT_CAP: usize = 64 * 1024 * 1024;
/// A connect that has not finished by then is abandoned and retried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bytes read from a link at once (it carries no replies).
const READ_CHUNK: usize = 4096;
/// The longest line a neighbour may send back on a link we dialled.
const BACK_LINE_LIMIT: usize = 1024;

enum State {
    Idle {
        retry_at: Instant,
    },
    Connecting {
        stream: TcpStream,
        deadline: Instant,
    },
    Up {
        stream: Stream,
        interest: Interest,
        /// Connected, but the neighbour has not yet proved it knows the
        /// secret: nothing but the handshake is sent.
        handshake: Option<Box<Handshake>>,
        /// When we last heard from it and spoke to it.
        live: Liveness,
        /// What it sends back after the handshake (heartbeats, refusals).
        reader: LineReader,
    },
}

impl State {
    /// When this state has work to do by itself.
    fn deadline(&self) -> Option<Instant> {
        match self {
            State::Idle { retry_at } => Some(*retry_at),
            State::Connecting { deadline, .. } => Some(*deadline),
            State::Up {
                handshake, live, ..
            } => Some(match handshake {
                Some(h) => h.deadline.min(live.due()),
                None => live.due(),
            }),
        }
    }
}

/// One neighbour's outbound link.
struct Link {
    name: String,
    addr: SocketAddr,
    /// Dialled over mutual TLS (its peer port, in a herd with TLS).
    tls: bool,
    state: State,
    /// The deadline of `state` as scheduled in [`Links::timers`].
    scheduled: Option<Instant>,
    backoff: Backoff,
    out: Output,
    catchup: Option<CatchUp>,
    /// Has this link ever been up (for "re-established" in the log)?
    was_up: bool,
    /// A failed connect was logged for the current outage.
    outage_logged: bool,
    /// The link must be dropped at the next flush (output past the cap).
    overflowed: bool,
    /// Up or not, bytes queued, catch-ups: for the operator.
    stats: Arc<LinkStats>,
}

/// All of a server's outbound links.
pub struct Links {
    server: String,
    secret: Option<Secret>,
    /// The client side of mutual TLS, for links with `tls`.
    dial: Option<Arc<ClientConfig>>,
    output_cap: usize,
    /// Silence past this declares a link dead.
    timeout: Duration,
    /// By slot. Slots are never reused: a link removed by a reload leaves
    /// `None`, so a slot (and its token, and a peer's neighbour index)
    /// always means the same neighbour.
    links: Vec<Option<Link>>,
    timers: Timers<usize>,
}

/// What a reload changed about one neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added(String, SocketAddr),
    Removed(String),
    Readdressed(String, SocketAddr, SocketAddr),
}

impl Links {
    /// Links to `neighbours`, all due to dial at `now`; a link whose
    /// pending output passes `output_cap` bytes is dropped, and one not
    /// heard from for `timeout` is declared dead. `dial` is the TLS client
    /// configuration for neighbours dialled over TLS.
    pub fn new(
        server: &str,
        neighbours: &[Neighbour],
        output_cap: usize,
        timeout: Duration,
        secret: Option<Secret>,
        dial: Option<Arc<ClientConfig>>,
        now: Instant,
    ) -> Links {
        let mut links = Links {
            server: server.to_string(),
            secret,
            dial,
            output_cap,
            timeout,
            links: Vec::new(),
            timers: Timers::new(),
        };
        for n in neighbours {
            links.add(n, now);
        }
        links
    }

    /// A new link to `n`, due to dial at `now`; its slot.
    fn add(&mut self, n: &Neighbour, now: Instant) -> usize {
        let slot = self.links.len();
        let name = n.name.as_str();
        self.links.push(Some(Link {
            name: name.to_string(),
            addr: n.addr,
            tls: n.tls,
            state: State::Idle { retry_at: now },
            scheduled: None,
            backoff: Backoff::new(seed(&self.server, slot)),
            out: Output::default(),
            catchup: None,
            was_up: false,
            outage_logged: false,
            overflowed: false,
            stats: Arc::new(LinkStats::new(name)),
        }));
        self.reschedule(slot);
        slot
    }

    /// Brings the links in line with `neighbours` (a reload): new ones are
    /// dialled at once, removed ones closed, readdressed ones redialled at
    /// their new address. Returns what changed, for the log and the stats.
    pub fn reconfigure(
        &mut self,
        neighbours: &[Neighbour],
        registry: &Registry,
        now: Instant,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        for slot in 0..self.links.len() {
            let Some(link) = self.links[slot].as_mut() else {
                continue;
            };
            match neighbours.iter().find(|n| n.name == link.name) {
                None => {
                    link.close(registry);
                    if let Some(at) = link.scheduled.take() {
                        self.timers.cancel(at, slot);
                    }
                    changes.push(Change::Removed(link.name.clone()));
                    self.links[slot] = None;
                    continue;
                }
                Some(n) if n.addr != link.addr || n.tls != link.tls => {
                    let addr = &n.addr;
                    let old = std::mem::replace(&mut link.addr, *addr);
                    link.tls = n.tls;
                    if matches!(link.state, State::Up { .. } | State::Connecting { .. }) {
                        link.down(&self.server, registry, "readdressed by a reload", now);
                    }
                    link.backoff.reset();
                    link.state = State::Idle { retry_at: now };
                    changes.push(Change::Readdressed(link.name.clone(), old, *addr));
                }
                Some(_) => {}
            }
            self.reschedule(slot);
        }
        for n in neighbours {
            if self.slot_of(&n.name).is_none() {
                self.add(n, now);
                changes.push(Change::Added(n.name.clone(), n.addr));
            }
        }
        changes
    }

    /// The TLS client configuration links dialled from now on use.
    pub fn set_tls(&mut self, dial: Option<Arc<ClientConfig>>) {
        self.dial = dial;
    }

    /// The secret links opened from now on authenticate with.
    pub fn set_secret(&mut self, secret: Option<Secret>) {
        self.secret = secret;
    }

    /// The slot of the link to `name`.
    pub fn slot_of(&self, name: &str) -> Option<usize> {
        self.links
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.name == name))
    }

    /// The figures of the link to `name`, for the server's stats.
    pub fn stats_of(&self, name: &str) -> Option<Arc<LinkStats>> {
        let slot = self.slot_of(name)?;
        self.links[slot].as_ref().map(|l| l.stats.clone())
    }

    /// Each link's figures, for the server's stats.
    pub fn stats(&self) -> Vec<Arc<LinkStats>> {
        self.live().map(|(_, l)| l.stats.clone()).collect()
    }

    /// The neighbours' names with their slots.
    pub fn names(&self) -> Vec<(usize, String)> {
        self.live().map(|(i, l)| (i, l.name.clone())).collect()
    }

    /// How many neighbours this server has.
    pub fn len(&self) -> usize {
        self.live().count()
    }

    /// True when the server has no neighbours.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn live(&self) -> impl Iterator<Item = (usize, &Link)> {
        self.links
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.as_ref().map(|l| (i, l)))
    }

    /// Queues `line` (with its `\n`) to every link that is up, except the
    /// neighbour it came from.
    pub fn flood(&mut self, line: &[u8], except: Option<usize>) {
        let cap = self.output_cap;
        for (i, link) in self.links.iter_mut().enumerate() {
            let Some(link) = link else {
                continue;
            };
            if Some(i) == except || !link.is_ready() {
                continue;
            }
            link.out.buf().extend_from_slice(line);
            link.stats.update_sent(line.len());
            if link.out.len() > cap {
                link.overflowed = true;
            }
        }
    }

    /// Handles readiness on link `i`.
    pub fn on_event(&mut self, i: usize, event: &Event, registry: &Registry, now: Instant) {
        let server = &self.server;
        let Some(Some(link)) = self.links.get_mut(i) else {
            return;
        };
        match &mut link.state {
            State::Idle { .. } => {}
            State::Connecting { stream, .. } => {
                if !(event.is_writable() || event.is_error() || event.is_write_closed()) {
                    return;
                }
                match connect_result(stream) {
                    Ok(true) => {
                        let dial = self.dial.as_ref();
                        link.up(
                            server,
                            registry,
                            self.secret.is_some(),
                            dial,
                            self.timeout,
                            now,
                        )
                    }
                    // Spurious wake-up: the connect is still under way.
                    Ok(false) => {}
                    Err(e) => link.connect_failed(server, registry, &e, now),
                }
            }
            State::Up {
                stream,
                handshake,
                live,
                reader,
                ..
            } => {
                if !(event.is_readable() || event.is_read_closed() || event.is_error()) {
                    return;
                }
                let mut buf = [0u8; READ_CHUNK];
                let mut step = Step::Waiting;
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => {
                            step = Step::Failed("closed by the neighbour".to_string());
                            break;
                        }
                        Ok(n) => {
                            // Any byte is a sign of life; in an open herd the
                            // first one is what makes the link count as up.
                            if live.heard(now) && handshake.is_none() {
                                log::info!(target: server, "link to {} {} ({})", link.name, if link.was_up { "re-established" } else { "up" }, link.addr);
                                // (`counted_up`, field by field: the state is borrowed.)
                                link.was_up = true;
                                link.stats.set_up(true);
                                link.outage_logged = false;
                                link.backoff.reset();
                            }
                            match handshake.as_deref_mut() {
                                Some(h) => {
                                    step = h.feed(server, self.secret.as_ref(), &buf[..n]);
                                    if step != Step::Waiting {
                                        break;
                                    }
                                }
                                None => back(server, &link.name, reader, &buf[..n]),
                            }
                        }
                        // Drained: nothing more until the next event.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            step = Step::Failed(e.to_string());
                            break;
                        }
                    }
                }
                match step {
                    Step::Failed(why) => link.down(server, registry, &why, now),
                    Step::Proven(auth_line) => link.authenticated(server, &auth_line, now),
                    Step::Waiting => {}
                }
            }
        }
        self.reschedule(i);
    }

    /// Writes what every link has pending, refilling catch-up from `store`.
    pub fn flush(&mut self, registry: &Registry, store: &Store, now: Instant) {
        for i in 0..self.links.len() {
            self.flush_one(i, registry, store, now);
            self.reschedule(i);
        }
    }

    fn flush_one(&mut self, i: usize, registry: &Registry, store: &Store, now: Instant) {
        let server = &self.server;
        let Some(link) = self.links[i].as_mut() else {
            return;
        };
        if link.overflowed {
            link.down(
                server,
                registry,
                "neighbour not reading: output cap reached",
                now,
            );
            return;
        }
        let State::Up {
            stream,
            interest,
            live,
            ..
        } = &mut link.state
        else {
            return;
        };
        // TLS records (the handshake) go first, whatever our output holds.
        if let Err(e) = stream.send_pending() {
            link.down(server, registry, &e.to_string(), now);
            return;
        }
        let before = link.out.len();
        let result = loop {
            if let Some(c) = &mut link.catchup {
                let pending = link.out.len();
                c.fill(store, link.out.buf(), pending);
            }
            match link.out.flush_to(stream) {
                Ok(Flush::Done) => match &link.catchup {
                    Some(c) if !c.is_done() => continue,
                    Some(c) => {
                        log::info!(target: server, "catch-up to {}: sent {} updates in {:.1} ms", link.name, c.count(), c.started().elapsed().as_secs_f64() * 1e3);
                        link.stats.catchup_sent();
                        link.catchup = None;
                        break Ok(Flush::Done);
                    }
                    None => break Ok(Flush::Done),
                },
                other => break other,
            }
        };
        link.stats.set_queued(link.out.len());
        if before > 0 || link.catchup.is_some() {
            // Bytes went out: no heartbeat needed for a while.
            live.spoke(now);
        }
        let want = match result {
            Ok(Flush::Done) if !stream.wants_write() => Interest::READABLE,
            Ok(_) => Interest::READABLE | Interest::WRITABLE,
            Err(e) => {
                link.down(server, registry, &e.to_string(), now);
                return;
            }
        };
        if want != *interest {
            let Some(token) = token::link(i) else {
                return;
            };
            if let Err(e) = registry.reregister(stream.tcp_mut(), token, want) {
                link.down(server, registry, &e.to_string(), now);
                return;
            }
            *interest = want;
        }
    }

    /// Neighbour `i` just dialled us, so it is up: if our link to it is
    /// waiting out a backoff, dial at the end of this turn instead.
    pub fn neighbour_is_up(&mut self, i: usize, now: Instant) {
        if let Some(Some(link)) = self.links.get_mut(i) {
            if let State::Idle { retry_at } = &mut link.state {
                *retry_at = (*retry_at).min(now);
            }
        }
        self.reschedule(i);
    }

    /// Dials links whose retry time has come; abandons connects and
    /// handshakes past their deadline.
    pub fn on_timeout(&mut self, registry: &Registry, now: Instant) {
        while let Some((_, i)) = self.timers.pop_due(now) {
            let server = &self.server;
            let Some(Some(link)) = self.links.get_mut(i) else {
                continue;
            };
            link.scheduled = None;
            match &link.state {
                State::Idle { .. } => match token::link(i) {
                    Some(token) => link.dial(server, registry, token, now),
                    None => continue,
                },
                State::Connecting { .. } => {
                    let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                    link.connect_failed(server, registry, &e, now);
                }
                State::Up {
                    handshake: Some(h), ..
                } if h.deadline <= now => {
                    link.down(
                        server,
                        registry,
                        "no CHALLENGE in time: does the neighbour have the secret?",
                        now,
                    );
                }
                State::Up { .. } => link.check(server, registry, now),
            }
            self.reschedule(i);
        }
    }

    /// Closes every link (at shutdown).
    pub fn close_all(&mut self, registry: &Registry) {
        for i in 0..self.links.len() {
            if let Some(link) = self.links[i].as_mut() {
                link.close(registry);
            }
            self.reschedule(i);
        }
    }

    /// Brings link `i`'s entry in the timers in line with its state.
    fn reschedule(&mut self, i: usize) {
        let Some(Some(link)) = self.links.get_mut(i) else {
            return;
        };
        let due = link.state.deadline();
        self.timers.reschedule(link.scheduled, due, i);
        link.scheduled = due;
    }
}

impl Deadline for Links {
    fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }
}

impl Link {
    /// Closes its connection, if any (shutdown, or removed by a reload).
    fn close(&mut self, registry: &Registry) {
        self.deregister(registry);
        self.state = State::Idle {
            retry_at: Instant::now(),
        };
        self.stats.set_up(false);
    }

    fn dial(&mut self, server: &str, registry: &Registry, token: Token, now: Instant) {
        let result = TcpStream::connect(self.addr).and_then(|mut stream| {
            registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
            Ok(stream)
        });
        match result {
            Ok(stream) => {
                self.state = State::Connecting {
                    stream,
                    deadline: now + CONNECT_TIMEOUT,
                }
            }
            Err(e) => {
                self.state = State::Idle {
                    retry_at: self.backoff.next_retry(now),
                };
                self.log_failure(server, &e);
            }
        }
    }

    /// Deregisters its socket, if it has one, sending close_notify first
    /// on a TLS link.
    fn deregister(&mut self, registry: &Registry) {
        match &mut self.state {
            State::Up { stream, .. } => {
                stream.close_notify();
                let _ = registry.deregister(stream.tcp_mut());
            }
            State::Connecting { stream, .. } => {
                let _ = registry.deregister(stream);
            }
            State::Idle { .. } => {}
        }
    }

    /// The connect finished: start TLS if the link has it, queue the
    /// hello (over TLS it waits for the handshake), and either start
    /// catch-up at once (open herd) or wait for the neighbour's CHALLENGE.
    fn up(
        &mut self,
        server: &str,
        registry: &Registry,
        authenticate: bool,
        dial: Option<&Arc<ClientConfig>>,
        timeout: Duration,
        now: Instant,
    ) {
        let old = std::mem::replace(&mut self.state, State::Idle { retry_at: now });
        let State::Connecting { mut stream, .. } = old else {
            return;
        };
        let stream = match (self.tls, dial) {
            (false, _) => Stream::Plain(stream),
            (true, Some(config)) => {
                // The neighbour's certificate must name it (docs/PROTOCOL.md §12).
                let session = ServerName::try_from(self.name.clone())
                    .map_err(|e| e.to_string())
                    .and_then(|name| {
                        ClientConnection::new(Arc::clone(config), name).map_err(|e| e.to_string())
                    });
                match session {
                    Ok(session) => Stream::Tls(Box::new(TlsStream::new(stream, session))),
                    Err(e) => {
                        let _ = registry.deregister(&mut stream);
                        self.state = State::Idle {
                            retry_at: self.backoff.next_retry(now),
                        };
                        log::warn!(target: server, "link to {}: TLS: {e}", self.name);
                        return;
                    }
                }
            }
            (true, None) => {
                let _ = registry.deregister(&mut stream);
                self.state = State::Idle {
                    retry_at: self.backoff.next_retry(now),
                };
                log::warn!(target: server, "link to {}: needs TLS, but this server has no TLS settings", self.name);
                return;
            }
        };
        let _ = stream.tcp().set_nodelay(true);
        // The backoff and the outage are over only once the neighbour
        // answers (`counted_up`): a TCP connect that TLS or the handshake
        // then refuses must not make us redial at once, nor log each time.
        self.overflowed = false;
        self.out = Output::default();
        self.catchup = None;
        liveness::tune_socket(stream.tcp(), timeout);
        let handshake = handshake::hello(self.out.buf(), server, authenticate, now);
        let open = handshake.is_none();
        self.state = State::Up {
            stream,
            interest: Interest::READABLE | Interest::WRITABLE,
            handshake: handshake.map(Box::new),
            live: Liveness::new(timeout, now),
            reader: LineReader::default(),
        };
        if open {
            self.ready(now);
        }
    }

    /// Heartbeat and silence check of a link that is up.
    fn check(&mut self, server: &str, registry: &Registry, now: Instant) {
        let State::Up {
            handshake, live, ..
        } = &mut self.state
        else {
            return;
        };
        match live.check(now) {
            Check::Quiet => {}
            // Nothing may precede the proof of a handshake under way.
            Check::Ping if handshake.is_some() => {}
            Check::Ping => protocol::write_ping(self.out.buf()),
            Check::Dead => {
                let why = format!("no sign of life for {} ms", live.timeout().as_millis());
                self.down(server, registry, &why, now);
            }
        }
    }

    /// The neighbour's CHALLENGE checked out: prove ourselves and go.
    fn authenticated(&mut self, server: &str, auth_line: &[u8], now: Instant) {
        if let State::Up { handshake, .. } = &mut self.state {
            *handshake = None;
        }
        self.out.buf().extend_from_slice(auth_line);
        log::info!(target: server, "link to {} {}, authenticated ({})", self.name, if self.was_up { "re-established" } else { "up" }, self.addr);
        self.counted_up();
        self.ready(now);
    }

    /// The neighbour answered: the link is up, its outage and backoff over.
    fn counted_up(&mut self) {
        self.was_up = true;
        self.stats.set_up(true);
        self.outage_logged = false;
        self.backoff.reset();
    }

    /// The link carries updates from now on, starting with catch-up of the
    /// whole store. (It counts as up once the neighbour has answered.)
    fn ready(&mut self, now: Instant) {
        self.catchup = Some(CatchUp::new(now));
    }

    /// Up and past any handshake: floods may be queued.
    fn is_ready(&self) -> bool {
        matches!(
            self.state,
            State::Up {
                handshake: None,
                ..
            }
        )
    }

    fn connect_failed(&mut self, server: &str, registry: &Registry, e: &io::Error, now: Instant) {
        if let State::Connecting { stream, .. } = &mut self.state {
            let _ = registry.deregister(stream);
        }
        self.state = State::Idle {
            retry_at: self.backoff.next_retry(now),
        };
        self.log_failure(server, e);
    }

    fn log_failure(&mut self, server: &str, e: &io::Error) {
        // Once per outage: a neighbour down for an hour is one log line.
        if !self.outage_logged {
            self.outage_logged = true;
            log::info!(target: server, "link to {} ({}): cannot connect: {e}; retrying every {} ms at most", self.name, self.addr, Backoff::MAX.as_millis());
        }
    }

    fn down(&mut self, server: &str, registry: &Registry, why: &str, now: Instant) {
        let refused = matches!(&self.state, State::Up { stream, .. } if stream.is_handshaking());
        self.deregister(registry);
        if refused {
            // The TLS handshake failed: the certificate did not chain to
            // tls_ca, did not name the neighbour, or it refused ours. Once
            // per outage, like a failed connect.
            if !self.outage_logged {
                self.outage_logged = true;
                log::warn!(target: server, "link to {} ({}) refused: {why}; retrying every {} ms at most", self.name, self.addr, Backoff::MAX.as_millis());
            }
        } else {
            log::info!(target: server, "link to {} down: {why}", self.name);
        }
        self.stats.set_up(false);
        self.state = State::Idle {
            retry_at: self.backoff.next_retry(now),
        };
        self.out = Output::default();
        self.catchup = None;
        self.overflowed = false;
    }
}

/// Takes what a neighbour sent back on a link we dialled, after the
/// handshake: heartbeats are only signs of life; anything else is logged
/// (a `? ` means it refused one of our lines).
fn back(server: &str, name: &str, reader: &mut LineReader, bytes: &[u8]) {
    reader.feed(bytes, BACK_LINE_LIMIT, |piece| match piece {
        Piece::Line(line) => match protocol::parse(line) {
            Command::Ping | Command::Blank => {}
            _ => {
                log::warn!(target: server, "link to {name} sent back: {}", escape(&line[..line.len().min(200)]))
            }
        },
        Piece::TooLong(start) => {
            log::warn!(target: server, "link to {name} sent back an over-long line: {}...", escape(&start[..start.len().min(200)]))
        }
    });
}

/// Whether a nonblocking connect finished: `Ok(true)` connected,
/// `Ok(false)` still under way, `Err` failed (mio's `TcpStream::connect` docs).
fn connect_result(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// A backoff seed per server and slot, so restarted herds do not dial in
/// lockstep.
fn seed(server: &str, i: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in server.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h ^ (i as u64) ^ fastrand::u64(..)
}

//! The poll loop of one server: it moves bytes and applies effects.
//!
//! A [`Server`] owns a `mio::Poll`, its listener, a `Slab` of client
//! connections (the slab key is the token; every range is in
//! [`crate::token`]), its outbound herd [`Links`], its [`Places`] client,
//! its [`Journal`] and its command [`Engine`] (which owns the store). The
//! loop decides nothing about lines: it reads a connection into the one
//! scratch buffer, splits lines with the connection's `LineReader`, hands
//! each to the engine, and performs what the engine asks for through
//! `Apply` — replies, journal records, floods, Places queries.
//!
//! One turn: poll with the nearest deadline as timeout → handle each event
//! (accept, read and answer lines, link and Places readiness) → fire what
//! is due by comparing deadlines with `Instant::now()` → resume connections
//! that still have work (a read budget ran out, or output that held reading
//! back has drained) → deliver Places answers → write the journal → flush
//! every link, then every connection that got output, once, so replies and
//! floods produced in one turn leave in one `write(2)` per socket.
//!
//! Files: this one has the loop (dispatch, the turn's end, flushing and
//! closing); `read` reads a connection and applies the engine's effects;
//! `accept` takes connections; `reload` applies a SIGHUP; `durable` holds
//! replies until the journal has their records and runs the store's bounds;
//! `setup` is the configuration and the thread around the loop.
//!
//! Backpressure: a client whose pending replies pass
//! [`Limits::client_output`] is simply not read until it has read them (see
//! [`ReadState`]); the kernel's socket buffer then pushes back on it. The
//! same pause, on a timer, throttles a connection whose invalid input
//! passes [`Limits::invalid_rate`] (see [`crate::conn::Throttle`]).

mod accept;
mod durable;
mod push;
mod read;
mod reload;
mod setup;

pub use crate::token::{LISTENER, WAKER};
pub use setup::{
    bind, spawn, Limits, Listeners, Running, ServerConfig, StopHandle, ACCEPT_BATCH, ACCEPT_PAUSE,
    DEFAULT_CLIENT_OUTPUT, DEFAULT_INVALID_RATE, DEFAULT_LINE_LIMIT, DEFAULT_WHATSATS_PER_CONN,
    EVENTS_PER_POLL, LISTEN_BACKLOG, READS_PER_TURN, SCRATCH_SIZE, SWEEP_INTERVAL,
    WATCHERS_PER_TURN,
};

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Waker};
use slab::Slab;

use crate::conn::{Conn, Flush, ReadState};
use crate::engine::{Engine, Port, Role};
use crate::front::Front;
use crate::journal::Journal;
use crate::links::Links;
use crate::logging::{self, escape};
use crate::places::{Places, Reply, RequestId};
use crate::stats::ServerStats;
use crate::store::Store;
use crate::timer::{self, Deadline, Timers};
use crate::tls::HerdTls;
use crate::token::{self, Owner};
use crate::watch::Hub;

/// How often positions are expired and evictions logged.
const BOUNDS_INTERVAL: Duration = Duration::from_secs(1);

/// What the loop itself waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Wait {
    /// The pause after EMFILE/ENFILE is over: accept again.
    AcceptResume,
    /// Once a second while needed: sum up refused connections, close idle ones.
    Sweep,
    /// A throttled connection (key, serial) may be read again.
    Unthrottle(usize, u64),
    /// An inbound herd link (key, serial): heartbeat and silence check.
    Peer(usize, u64),
    /// A connection (key, serial) on a TLS or peer port must have finished
    /// its TLS handshake (and, on a peer port, said `HERD`) by now.
    Handshake(usize, u64),
    /// Once a second: expire old positions, log evictions and expiries.
    Bounds,
    /// An HTTP connection (key, serial): its request or idle deadline.
    Front(usize, u64),
}

/// One server: its poll loop and everything the loop owns.
pub struct Server {
    poll: Poll,
    /// The client port's listener, and the peer and TLS ports' if it has them.
    listeners: Vec<(Port, TcpListener)>,
    /// The herd's TLS, for the peer port (and links, in `links`).
    tls: Option<Arc<HerdTls>>,
    /// What the `tls` and `https` ports present.
    client_tls: Option<Arc<rustls::ServerConfig>>,
    /// The token HTTP requests must carry, if any.
    api_token: Option<crate::front::Token>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    /// A reloaded configuration handed over by a [`StopHandle`].
    reload: Arc<Mutex<Option<ServerConfig>>>,
    name: String,
    limits: Limits,
    engine: Engine,
    /// Where stored updates are made durable, if anywhere.
    journal: Option<Journal>,
    links: Links,
    places: Places,
    /// Places request → (connection key, connection serial).
    requests: HashMap<RequestId, (usize, u64)>,
    next_request: RequestId,
    /// Places answers to deliver at the end of the turn.
    done: Vec<Reply>,
    conns: Slab<Conn>,
    next_serial: u64,
    scratch: Vec<u8>,
    /// Connections with work left over from an earlier turn.
    resume: Vec<usize>,
    /// Connections that got output this turn.
    dirty: Vec<usize>,
    /// Watchers owed positions, flushed [`WATCHERS_PER_TURN`] a turn (see
    /// `push`).
    fanout: VecDeque<usize>,
    timers: Timers<Wait>,
    /// Accepting stopped at the batch cap: go on next turn.
    accept_more: bool,
    /// Accepting paused after EMFILE/ENFILE (a [`Wait::AcceptResume`] is due).
    accept_paused: bool,
    /// Out of descriptors was logged for the current stretch.
    emfile_logged: bool,
    /// Connections refused at the limit since the last sweep (logged once a
    /// sweep, so a connection storm is a line a second, not a line each).
    refused: u64,
    /// A [`Wait::Sweep`] is scheduled.
    sweeping: bool,
    /// When the loop started: connection activity is kept as seconds since.
    epoch: Instant,
    /// Connections whose output waits for the journal (see `hold`).
    held: Vec<usize>,
    /// Evictions and expiries already logged.
    bounds_logged: (u64, u64),
    /// Who watches which client (docs/PROTOCOL.md §15).
    watch: Hub,
    /// An HTTP response being gathered (reused between requests).
    gathered: read::Gathered,
}

impl Server {
    /// A server on `listeners` (which must be bound; they are made
    /// nonblocking). Its journal, if it has a state directory, is replayed
    /// here.
    pub fn new(config: ServerConfig, listeners: impl Into<Listeners>) -> io::Result<Server> {
        let listeners = listeners.into();
        let poll = Poll::new()?;
        let mut bound = Vec::new();
        for (port, listener) in listeners.into_ports() {
            if matches!(port, Port::Tls | Port::Https) && config.client_tls().is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a {} port needs a certificate: public_cert and public_key, or tls_cert, tls_key and tls_ca",
                        port.label()
                    ),
                ));
            }
            listener.set_nonblocking(true)?;
            let mut listener = TcpListener::from_std(listener);
            poll.registry()
                .register(&mut listener, token::listener(port), Interest::READABLE)?;
            bound.push((port, listener));
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let client_tls = config.client_tls().cloned();
        let places = Places::with_limits(
            &config.places,
            config.places_key.clone(),
            waker.clone(),
            &config.name,
            config.limits.places,
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let ttl = config
            .limits
            .position_ttl
            .map(|d| d.as_nanos().min(i128::MAX as u128) as i128);
        let mut store = Store::with_bounds(config.limits.store_limit, ttl);
        let journal = match &config.state_dir {
            Some(dir) => {
                let (journal, replay) = Journal::open(dir, &config.name, &mut store, config.fsync)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("journal in {}: {e}", dir.display()))
                    })?;
                log::info!(target: &config.name, "journal replayed: {} records, {} clients known, {} invalid lines skipped{}", replay.records, store.len(), replay.invalid, if replay.torn_tail { ", a torn last record skipped" } else { "" });
                Some(journal)
            }
            None => None,
        };
        let now = Instant::now();
        let links = Links::new(
            &config.name,
            &config.neighbours,
            config.limits.link_output,
            config.limits.link_timeout,
            config.secret.clone(),
            config.tls.as_ref().map(|t| Arc::clone(&t.dial)),
            now,
        );
        let mut engine = Engine::new(
            &config.name,
            store,
            config.secret,
            links.names(),
            config.limits.line,
        );
        engine.set_peer_port(bound.iter().any(|(port, _)| *port == Port::Peer));
        engine.set_watch_limit(config.limits.watch_limit);
        let watch = Hub::new(config.limits.watch_all);
        let stats = engine.stats().clone();
        stats.set_listen(
            bound
                .iter()
                .filter_map(|(port, l)| Some((port.label(), l.local_addr().ok()?)))
                .collect(),
        );
        for link in links.stats() {
            stats.add_link(link);
        }
        stats.set_stored_clients(engine.store().len());
        if let Some(j) = &journal {
            stats.set_journal(j.stats());
        }
        let mut timers = Timers::new();
        let sweeping = config.limits.idle_timeout.is_some();
        if sweeping {
            timers.schedule(now + SWEEP_INTERVAL, Wait::Sweep);
        }
        timers.schedule(now + BOUNDS_INTERVAL, Wait::Bounds);
        Ok(Server {
            poll,
            listeners: bound,
            client_tls,
            api_token: config.api_token.clone(),
            tls: config.tls,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            reload: Arc::new(Mutex::new(None)),
            name: config.name,
            limits: config.limits,
            engine,
            journal,
            links,
            places,
            requests: HashMap::new(),
            next_request: 1,
            done: Vec::new(),
            conns: Slab::new(),
            next_serial: 0,
            scratch: vec![0; SCRATCH_SIZE],
            resume: Vec::new(),
            dirty: Vec::new(),
            fanout: VecDeque::new(),
            timers,
            accept_more: false,
            accept_paused: false,
            emfile_logged: false,
            refused: 0,
            sweeping,
            epoch: now,
            held: Vec::new(),
            bounds_logged: (0, 0),
            watch,
            gathered: read::Gathered::default(),
        })
    }

    /// A handle that stops this server from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle::new(self.waker.clone(), self.stop.clone(), self.reload.clone())
    }

    /// What this server counts, for the operator endpoint.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.engine.stats().clone()
    }

    /// Runs the loop until stopped.
    pub fn run(mut self) -> io::Result<()> {
        let name = self.name.clone();
        self.engine.set_traffic(logging::attach_loop(&name));
        for (port, listener) in &self.listeners {
            let tls = match (port, &self.tls) {
                (Port::Peer, Some(_)) => " (mutual TLS)",
                (Port::Tls | Port::Https, _) => " (TLS)",
                _ => "",
            };
            let what = match port {
                Port::Peer => "herd links",
                Port::Http | Port::Https => "HTTP and WebSocket clients",
                Port::Client | Port::Tls => "clients",
            };
            log::info!(target: &name, "listening on {} for {what}{tls}", listener.local_addr()?);
        }
        log::info!(target: &name, "{} neighbours", self.links.len());
        self.engine.stats().set_listening(true);
        // However the loop ends, /healthz must know it no longer listens.
        let _not_listening = NotListening(self.stats());
        if self.engine.secret().is_none() {
            log::warn!(target: &name, "no shared secret (secret_env): herd links are not authenticated, and any connection may send AT updates");
        }
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            let more = !self.fanout.is_empty() || self.watch.has_marks();
            let timeout = if !self.resume.is_empty() || more || self.accept_more {
                Some(Duration::ZERO)
            } else {
                self.next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                self.dispatch(event);
            }
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            self.turn_end();
        }
        self.shutdown();
        Ok(())
    }

    fn dispatch(&mut self, event: &Event) {
        let now = Instant::now();
        let registry = self.poll.registry();
        match token::classify(event.token()) {
            Owner::Listener(port) => self.accept(port),
            Owner::Waker => {
                self.places.on_wake(registry, now, &mut self.done);
                self.apply_reload();
            }
            Owner::Places(_) => self.places.on_event(registry, event, now, &mut self.done),
            Owner::Link(i) => self.links.on_event(i, event, registry, now),
            Owner::Client(key) => {
                if !self.conns.contains(key) {
                    // A stale event for a connection closed earlier this turn.
                    return;
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    // A plain readable edge: a read that does not fill the
                    // scratch buffer took everything there was, and new data
                    // brings a new edge. With EOF or an error pending, read on.
                    let short_drains = !(event.is_read_closed() || event.is_error());
                    self.read(key, short_drains);
                }
                if event.is_writable() {
                    self.dirty.push(key);
                }
            }
            Owner::Unknown => {}
        }
    }

    /// Timers, leftover work, Places answers, then one flush per socket.
    fn turn_end(&mut self) {
        let now = Instant::now();
        let registry = self.poll.registry();
        self.links.on_timeout(registry, now);
        self.places.on_timeout(registry, now, &mut self.done);
        while let Some((_, wait)) = self.timers.pop_due(now) {
            match wait {
                Wait::AcceptResume => {
                    self.accept_paused = false;
                    self.accept_more = true;
                }
                Wait::Sweep => self.sweep(now),
                Wait::Unthrottle(key, serial) => self.unthrottle(key, serial),
                Wait::Peer(key, serial) => self.check_peer(key, serial, now),
                Wait::Handshake(key, serial) => self.handshake_due(key, serial),
                Wait::Bounds => self.bounds(now),
                Wait::Front(key, serial) => self.front_due(key, serial, now),
            }
        }
        if self.accept_more {
            for port in Port::ALL {
                self.accept(port);
            }
        }
        for key in std::mem::take(&mut self.resume) {
            self.read(key, false);
        }
        self.deliver();
        // Updates reach the journal before their replies leave; floods go
        // first, since the herd's propagation time adds up hop by hop.
        if let Some(j) = &mut self.journal {
            j.flush(self.engine.store());
        }
        self.release_held();
        let registry = self.poll.registry();
        self.links.flush(registry, self.engine.store(), now);
        // After the journal: pushes leave behind their records; and only
        // between fan-outs (see `push`).
        if self.fanout.is_empty() {
            self.mark_watchers();
        }
        for key in std::mem::take(&mut self.dirty) {
            self.flush(key);
        }
        for _ in 0..WATCHERS_PER_TURN {
            let Some(key) = self.fanout.pop_front() else {
                break;
            };
            self.flush(key);
        }
        logging::turn_end(now);
    }

    /// The nearest deadline of everything that waits.
    fn next_deadline(&self) -> Option<Instant> {
        let journal = self.journal.as_ref().and_then(|j| j.next_deadline());
        timer::nearest(&[&self.links, &self.places, &self.timers, &logging::LogBatch])
            .into_iter()
            .chain(journal)
            .min()
    }

    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        // TLS records (a handshake's answers) owe nothing to the journal.
        if let Err(e) = conn.stream.send_pending() {
            self.close(key, &e.to_string());
            return;
        }
        if self.hold(key) {
            self.interest(key);
            return;
        }
        let Some(written) = self.write_out(key) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let want = match written {
            Ok(Flush::Done) => {
                if conn.state() == ReadState::Closing && conn.is_drained() {
                    self.close(key, "closed by client");
                    return;
                }
                Interest::READABLE
            }
            Ok(Flush::WouldBlock) => Interest::READABLE | Interest::WRITABLE,
            Err(e) => {
                self.close(key, &e.to_string());
                return;
            }
        };
        let want = if conn.stream.wants_write() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            want
        };
        if !self.reregister(key, want) {
            return;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let over = conn.over(self.limits.client_output, self.limits.whatsats_per_conn);
        if conn.caught_up(over) {
            // The client caught up: read what it sent meanwhile (no new
            // event will come for bytes already in the socket buffer).
            self.resume.push(key);
        }
    }

    /// Connection `key`'s interest while its output is held: WRITABLE only
    /// for TLS records waiting below it.
    fn interest(&mut self, key: usize) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let want = if conn.stream.wants_write() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        self.reregister(key, want);
    }

    /// Registers connection `key` for `want` if that is not what it has;
    /// false if that failed and it was closed.
    fn reregister(&mut self, key: usize, want: Interest) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if want == conn.interest {
            return true;
        }
        let registry = self.poll.registry();
        let result = match token::client(key) {
            Some(token) => registry.reregister(conn.stream.tcp_mut(), token, want),
            None => Err(io::Error::other("no token")),
        };
        if let Err(e) = result {
            self.close(key, &e.to_string());
            return false;
        }
        conn.interest = want;
        true
    }

    fn close(&mut self, key: usize, why: &str) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        let refused = conn.stream.is_handshaking()
            || (conn.session.port == Port::Peer && conn.session.role == Role::Client);
        if conn.front.as_deref().is_some_and(Front::is_ws) {
            self.engine.stats().websocket(false);
        }
        conn.stream.close_notify();
        let _ = self.poll.registry().deregister(conn.stream.tcp_mut());
        self.engine
            .stats()
            .closed(conn.session.role == Role::Client);
        if let Some(w) = conn.session.watch.take() {
            self.forget_watcher(key, conn.serial, conn.peer(), &w);
        }
        let name = &self.name;
        let peer = conn.peer();
        if refused {
            self.engine.stats().refused(conn.session.port);
            // A TLS handshake that failed or never finished, or a peer-port
            // connection that never became a herd link.
            log::warn!(target: name, "{} port: refused {peer}: {why}", conn.session.port.label());
            return;
        }
        match &conn.session.role {
            Role::Client if conn.pauses() > 0 => {
                log::info!(target: name, "client {peer} disconnected: {why}; paused {} times for invalid input", conn.pauses())
            }
            Role::Client => log::info!(target: name, "client {peer} disconnected: {why}"),
            Role::Peer(p) => {
                log::info!(target: name, "link from {} ({peer}) down: {why}; received {} updates, {} newer", escape(&p.name), p.received, p.stored)
            }
        }
    }

    /// Hands Places answers to their connections, in request order per connection.
    fn deliver(&mut self) {
        for reply in std::mem::take(&mut self.done) {
            self.engine.stats().places(reply.status, reply.elapsed);
            let Some((key, serial)) = self.requests.remove(&reply.id) else {
                continue;
            };
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.serial == serial) else {
                // The client left before Places answered.
                continue;
            };
            if conn.replies.complete(reply.id, &reply.body) {
                self.dirty.push(key);
            }
        }
    }

    fn shutdown(&mut self) {
        let registry = self.poll.registry();
        for (_, listener) in &mut self.listeners {
            let _ = registry.deregister(listener);
        }
        self.links.close_all(registry);
        // Best effort: hand clients what is already answered — once what
        // those answers acknowledge is in the journal.
        if let Some(j) = &mut self.journal {
            j.flush(self.engine.store());
        }
        let durable = self.durable();
        for (_, conn) in self.conns.iter_mut() {
            if conn.replies.ack() <= durable {
                let _ = conn.replies.out.flush_to(&mut conn.stream);
            }
        }
        log::info!(target: &self.name, "stopped: {} clients connected, {} known", self.conns.len(), self.engine.store().len());
        logging::flush_loop();
    }
}

/// Marks the server not listening when its loop ends, however it ends.
struct NotListening(Arc<ServerStats>);

impl Drop for NotListening {
    fn drop(&mut self) {
        self.0.set_listening(false);
    }
}

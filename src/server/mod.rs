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
//! Backpressure: a client whose pending replies pass
//! [`Limits::client_output`] is simply not read until it has read them (see
//! [`ReadState`]); the kernel's socket buffer then pushes back on it. The
//! same pause, on a timer, throttles a connection whose invalid input
//! passes [`Limits::invalid_rate`] (see [`crate::conn::Throttle`]).

mod setup;

pub use crate::token::{LISTENER, WAKER};
pub use setup::{
    bind, spawn, Limits, Running, ServerConfig, StopHandle, ACCEPT_BATCH, ACCEPT_PAUSE,
    DEFAULT_CLIENT_OUTPUT, DEFAULT_INVALID_RATE, DEFAULT_LINE_LIMIT, DEFAULT_WHATSATS_PER_CONN,
    EVENTS_PER_POLL, LISTEN_BACKLOG, READS_PER_TURN, SCRATCH_SIZE, SWEEP_INTERVAL,
};

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Registry, Waker};
use slab::Slab;

use crate::conn::{Conn, Flush, ReadState, Replies};
use crate::engine::{Clock, Effects, Engine, Next, Role};
use crate::journal::Journal;
use crate::links::liveness::{self, Check, Liveness};
use crate::links::outbound::Change;
use crate::links::Links;
use crate::logging::{self, escape};
use crate::places::{Places, Query, Reply, RequestId};
use crate::protocol;
use crate::stats::ServerStats;
use crate::store::Store;
use crate::timer::{self, Deadline, Timers};
use crate::token::{self, Owner};

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
    /// Once a second: expire old positions, log evictions and expiries.
    Bounds,
}

/// One server: its poll loop and everything the loop owns.
pub struct Server {
    poll: Poll,
    listener: TcpListener,
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
}

/// What reading a connection came to.
enum ReadOutcome {
    /// Read until `WouldBlock`: wait for the next event.
    Drained,
    /// The turn's budget ran out, or reading is paused: come back later.
    Yielded,
    /// Too much invalid input: paused for this long.
    Throttled(Duration),
    /// The connection failed and must be closed.
    Failed(io::Error),
}

impl Server {
    /// A server on `listener` (which must be bound; it is made nonblocking).
    /// Its journal, if it has a state directory, is replayed here.
    pub fn new(config: ServerConfig, listener: StdListener) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
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
            now,
        );
        let engine = Engine::new(
            &config.name,
            store,
            config.secret,
            links.names(),
            config.limits.line,
        );
        let stats = engine.stats().clone();
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
            listener,
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
            timers,
            accept_more: false,
            accept_paused: false,
            emfile_logged: false,
            refused: 0,
            sweeping,
            epoch: now,
            held: Vec::new(),
            bounds_logged: (0, 0),
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
        log::info!(target: &name, "listening on {} with {} neighbours", self.listener.local_addr()?, self.links.len());
        self.engine.stats().set_listening(true);
        // However the loop ends, /healthz must know it no longer listens.
        let _not_listening = NotListening(self.stats());
        if self.engine.secret().is_none() {
            log::warn!(target: &name, "no shared secret (secret_env): herd links are not authenticated, and any connection may send AT updates");
        }
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        loop {
            let timeout = if !self.resume.is_empty() || self.accept_more {
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
            Owner::Listener => self.accept(),
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
                Wait::Bounds => self.bounds(now),
            }
        }
        if self.accept_more {
            self.accept();
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
        for key in std::mem::take(&mut self.dirty) {
            self.flush(key);
        }
        logging::turn_end(now);
    }

    /// Applies a configuration handed over by [`StopHandle::reload`], if
    /// one is waiting: links added, removed and readdressed, the Places
    /// settings, the secret for links opened from now on. Every change is
    /// logged. No client connection is touched.
    fn apply_reload(&mut self) {
        let Some(config) = self.reload.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let now = Instant::now();
        let registry = self.poll.registry();
        let name = self.name.clone();
        let stats = self.engine.stats().clone();
        let changes = self.links.reconfigure(&config.neighbours, registry, now);
        for change in &changes {
            match change {
                Change::Added(n, addr) => {
                    log::info!(target: &name, "reload: link to {n} ({addr}) added");
                    if let Some(link) = self.links.stats_of(n) {
                        stats.add_link(link);
                    }
                }
                Change::Readdressed(n, old, new) => {
                    log::info!(target: &name, "reload: link to {n} moved from {old} to {new}")
                }
                Change::Removed(n) => {
                    log::info!(target: &name, "reload: link to {n} removed");
                    stats.remove_link(n);
                    // Its half of the link: no longer accepted either.
                    let theirs: Vec<usize> = self
                        .conns
                        .iter()
                        .filter(|(_, c)| matches!(&c.session.role, Role::Peer(p) if *p.name == *n.as_bytes()))
                        .map(|(k, _)| k)
                        .collect();
                    for key in theirs {
                        self.close(key, "link removed by a reload");
                    }
                }
            }
        }
        self.engine.set_neighbours(self.links.names());
        self.engine.set_secret(config.secret.clone());
        self.links.set_secret(config.secret.clone());
        let registry = self.poll.registry();
        match self.places.reconfigure(
            &config.places,
            config.places_key,
            self.waker.clone(),
            registry,
            now,
            &mut self.done,
        ) {
            Ok(true) => {
                log::info!(target: &name, "reload: Places settings changed: {:?} {}", config.places.api, config.places.url)
            }
            Ok(false) => {}
            Err(e) => {
                log::warn!(target: &name, "reload: Places settings refused, the old ones stay: {e}")
            }
        }
        log::info!(target: &name, "reload: done: {} changes to links, {} neighbours, secret {}", changes.len(), self.links.len(), if config.secret.is_some() { "set" } else { "none" });
    }

    /// The nearest deadline of everything that waits.
    fn next_deadline(&self) -> Option<Instant> {
        let journal = self.journal.as_ref().and_then(|j| j.next_deadline());
        timer::nearest(&[&self.links, &self.places, &self.timers, &logging::LogBatch])
            .into_iter()
            .chain(journal)
            .min()
    }

    /// The journal's last written record (everything, without a journal).
    fn durable(&self) -> u64 {
        self.journal.as_ref().map_or(u64::MAX, Journal::durable)
    }

    /// True if connection `key`'s output must wait for the journal: its
    /// replies acknowledge a record not yet written. It goes on the held
    /// list, which [`Server::release_held`] looks at after each journal write.
    fn hold(&mut self, key: usize) -> bool {
        let durable = self.durable();
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if conn.replies.ack <= durable {
            return false;
        }
        if !conn.replies.held {
            conn.replies.held = true;
            self.held.push(key);
        }
        true
    }

    /// Flushes the held connections the journal has caught up with.
    fn release_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let durable = self.durable();
        let conns = &mut self.conns;
        let dirty = &mut self.dirty;
        self.held.retain(|&key| {
            let Some(conn) = conns.get_mut(key).filter(|c| c.replies.held) else {
                return false;
            };
            if conn.replies.ack > durable {
                return true;
            }
            conn.replies.held = false;
            dirty.push(key);
            false
        });
    }

    /// Once a second: forgets expired positions, and logs the evictions and
    /// expiries of the last second as one line (never a line each).
    fn bounds(&mut self, now: Instant) {
        self.timers.schedule(now + BOUNDS_INTERVAL, Wait::Bounds);
        let store = self.engine.store_mut();
        if store.has_ttl() {
            store.expire(crate::protocol::now_nanos());
        }
        let (evicted, expired) = (store.evicted(), store.expired());
        let (len, limit) = (store.len(), store.limit());
        let (was_evicted, was_expired) = self.bounds_logged;
        if evicted > was_evicted {
            log::warn!(target: &self.name, "store full ({limit} clients): {} oldest clients evicted in the last second, {evicted} in all", evicted - was_evicted);
        }
        if expired > was_expired {
            log::info!(target: &self.name, "store: {} positions expired in the last second, {expired} in all; {len} clients known", expired - was_expired);
        }
        self.bounds_logged = (evicted, expired);
        let stats = self.engine.stats();
        stats.set_bounds(evicted, expired);
        stats.set_stored_clients(len);
    }

    fn accept(&mut self) {
        self.accept_more = false;
        if self.accept_paused {
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    self.emfile_logged = false;
                    self.admit(stream, peer)
                }
                // The backlog is empty: wait for the next event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_out_of_descriptors(&e) => {
                    // Accepting again at once would fail again: pause, and
                    // let closing connections free descriptors meanwhile.
                    if !self.emfile_logged {
                        log::warn!(target: &self.name, "accept: {e}; pausing accepts, retrying every {} ms until descriptors free up", ACCEPT_PAUSE.as_millis());
                        self.emfile_logged = true;
                    }
                    self.accept_paused = true;
                    self.timers
                        .schedule(Instant::now() + ACCEPT_PAUSE, Wait::AcceptResume);
                    return;
                }
                // A connection reset before we took it, and the like.
                Err(e) => log::info!(target: &self.name, "accept: {e}"),
            }
        }
        self.accept_more = true;
    }

    fn admit(&mut self, mut stream: mio::net::TcpStream, peer: SocketAddr) {
        let name = &self.name;
        if self.conns.len() >= self.limits.max_clients {
            // Accepted and closed at once (dropping `stream`): the client
            // learns at once, and the backlog does not fill with retries.
            if self.refused == 0 {
                log::warn!(target: name, "refused {peer}: {} connections is the limit", self.limits.max_clients);
                if !self.sweeping {
                    self.sweeping = true;
                    self.timers
                        .schedule(Instant::now() + SWEEP_INTERVAL, Wait::Sweep);
                }
            }
            self.refused += 1;
            return;
        }
        let _ = stream.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let Some(token) = token::client(key) else {
            return;
        };
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            log::warn!(target: name, "register {peer}: {e}");
            return;
        }
        self.next_serial += 1;
        let mut conn = Conn::new(stream, peer, self.next_serial);
        conn.active = self.epoch.elapsed().as_secs() as u32;
        entry.insert(conn);
        self.engine.stats().client_connected();
        log::info!(target: name, "client {peer} connected");
        // Data may have arrived with the handshake already.
        self.resume.push(key);
    }

    /// Seconds since the loop started (for idle connections).
    fn seconds(&self) -> u32 {
        self.epoch.elapsed().as_secs() as u32
    }

    /// Sums up refused connections, closes idle ones.
    fn sweep(&mut self, now: Instant) {
        if self.refused > 1 {
            log::warn!(target: &self.name, "refused {} more connections in the last second: {} connections is the limit", self.refused - 1, self.limits.max_clients);
        }
        self.refused = 0;
        self.sweeping = self.limits.idle_timeout.is_some();
        if self.sweeping {
            self.timers.schedule(now + SWEEP_INTERVAL, Wait::Sweep);
        }
        if let Some(idle) = self.limits.idle_timeout {
            let now_s = self.seconds();
            let limit = idle.as_secs().max(1) as u32;
            let idle_keys: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| {
                    c.session.role == Role::Client
                        && now_s.saturating_sub(c.active) >= limit
                        && c.is_drained()
                })
                .map(|(k, _)| k)
                .collect();
            for key in idle_keys {
                self.close(key, "idle timeout");
            }
        }
    }

    /// Reads and handles what connection `key` sent. `short_drains`: a read
    /// shorter than the scratch buffer means the socket is drained (saves
    /// the `recv` that would only say `WouldBlock`; see `dispatch`).
    fn read(&mut self, key: usize, short_drains: bool) {
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
                liveness::tune_socket(&conn.stream, timeout);
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
    fn check_peer(&mut self, key: usize, serial: u64, now: Instant) {
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
    fn unthrottle(&mut self, key: usize, serial: u64) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.serial == serial) else {
            return;
        };
        let over = conn.over(self.limits.client_output, self.limits.whatsats_per_conn);
        if conn.unthrottle(over) {
            self.resume.push(key);
        }
    }

    fn flush(&mut self, key: usize) {
        if self.hold(key) {
            return;
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let want = match conn.replies.out.flush_to(&mut conn.stream) {
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
        if want != conn.interest {
            let registry = self.poll.registry();
            let result = match token::client(key) {
                Some(token) => registry.reregister(&mut conn.stream, token, want),
                None => Err(io::Error::other("no token")),
            };
            if let Err(e) = result {
                self.close(key, &e.to_string());
                return;
            }
            conn.interest = want;
        }
        let over = conn.over(self.limits.client_output, self.limits.whatsats_per_conn);
        if conn.caught_up(over) {
            // The client caught up: read what it sent meanwhile (no new
            // event will come for bytes already in the socket buffer).
            self.resume.push(key);
        }
    }

    fn close(&mut self, key: usize, why: &str) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.engine
            .stats()
            .closed(conn.session.role == Role::Client);
        let name = &self.name;
        let peer = conn.peer();
        match &conn.session.role {
            Role::Client if conn.throttle.pauses > 0 => {
                log::info!(target: name, "client {peer} disconnected: {why}; paused {} times for invalid input", conn.throttle.pauses)
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
        let _ = registry.deregister(&mut self.listener);
        self.links.close_all(registry);
        // Best effort: hand clients what is already answered — once what
        // those answers acknowledge is in the journal.
        if let Some(j) = &mut self.journal {
            j.flush(self.engine.store());
        }
        let durable = self.durable();
        for (_, conn) in self.conns.iter_mut() {
            if conn.replies.ack <= durable {
                let _ = conn.replies.out.flush_to(&mut conn.stream);
            }
        }
        log::info!(target: &self.name, "stopped: {} clients connected, {} known", self.conns.len(), self.engine.store().len());
        logging::flush_loop();
    }
}

/// The parts of the loop that handling lines acts on, borrowed for one read.
struct Shared<'a> {
    registry: &'a Registry,
    journal: Option<&'a mut Journal>,
    links: &'a mut Links,
    places: &'a mut Places,
    requests: &'a mut HashMap<RequestId, (usize, u64)>,
    next_request: &'a mut RequestId,
    done: &'a mut Vec<Reply>,
}

/// The effects of one connection's lines, performed as the engine asks.
struct Apply<'a, 'b> {
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
}

/// Marks the server not listening when its loop ends, however it ends.
struct NotListening(Arc<ServerStats>);

impl Drop for NotListening {
    fn drop(&mut self) {
        self.0.set_listening(false);
    }
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (24), ENFILE (23), ENOBUFS (105), ENOMEM (12) on Linux.
    matches!(e.raw_os_error(), Some(24) | Some(23) | Some(105) | Some(12))
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
                if short_drains && n < scratch.len() {
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

//! The poll loop of one server.
//!
//! A [`Server`] owns a `mio::Poll`, its listener, a `Slab` of client
//! connections (the slab key is the token), its outbound herd [`Links`], its
//! [`Places`] client and its [`Store`]. Tokens:
//!
//! | token                          | what                                |
//! |--------------------------------|-------------------------------------|
//! | `0 ..`                         | client connections (slab keys)      |
//! | `token::LINK_BASE` `+ i`       | outbound link to neighbour `i`      |
//! | `token::PLACES_BASE` `..`      | Places HTTPS connections            |
//! | [`WAKER`], [`LISTENER`]        | fixed, at the top of the range      |
//!
//! One turn of the loop: poll with the nearest deadline as timeout → handle
//! each event (accept, read and answer lines, link and Places readiness) →
//! fire what is due by comparing deadlines with `Instant::now()` → resume
//! connections that still have work (a read budget ran out, or output that
//! held reading back has drained) → deliver Places answers → flush every
//! connection that got output, once, so replies and floods produced in one
//! turn leave in one `write(2)` per socket.
//!
//! Backpressure: a client whose pending replies pass
//! [`Limits::client_output`] is simply not read until it has read them; the
//! kernel's socket buffer then pushes back on it. Its own requests can thus
//! grow memory by at most one scratch buffer's worth of replies. The same
//! pause, on a timer, throttles a connection whose invalid input passes
//! [`Limits::invalid_rate`] (see [`crate::conn::Throttle`]): garbage gets a
//! trickle of the loop, and its replies, not a share of it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;

use crate::auth::{self, Secret};
use crate::config::{Herd, PlacesConfig};
use crate::conn::{Conn, Flush, Peer, Piece, Role, Sync};
use crate::journal::Journal;
use crate::links::{Links, DEFAULT_LINK_OUTPUT_CAP};
use crate::logging::{self, escape};
use crate::places::{self, Places, Query, Reply, RequestId};
use crate::protocol::{self, Command, Nanos};
use crate::stats::{Kind, ServerStats, Source};
use crate::store::Store;
use crate::token::LINK_BASE as LINK_TOKEN_BASE;

pub use crate::token::{LISTENER, WAKER};

/// Longest line accepted, without its `\n` (SPEC §2: at least 1 KiB).
pub const DEFAULT_LINE_LIMIT: usize = 8 * 1024;
/// Replies a client may leave unread before the server stops reading it.
pub const DEFAULT_CLIENT_OUTPUT: usize = 256 * 1024;
/// Invalid input (bytes of lines answered `? `, and of over-long lines) one
/// connection may send per second, on average, before reading it pauses.
pub const DEFAULT_INVALID_RATE: usize = 64 * 1024;
/// WHATSATs one connection may have waiting for Places before it is not read.
pub const DEFAULT_WHATSATS_PER_CONN: usize = 16;
/// Size of the loop's one read buffer, shared by all connections.
pub const SCRATCH_SIZE: usize = 64 * 1024;
/// Reads one connection may do per turn before others get theirs.
pub const READS_PER_TURN: usize = 4;
/// Connections accepted per turn before other events get their turn.
pub const ACCEPT_BATCH: usize = 256;
/// The listen(2) backlog.
pub const LISTEN_BACKLOG: i32 = 1024;
/// After EMFILE/ENFILE on accept, wait this long before accepting again.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Events taken from the poll per turn.
pub const EVENTS_PER_POLL: usize = 1024;
/// How often refused connections and idle connections are looked at.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Per-server limits; every one is documented in README.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest line accepted, in bytes, without its `\n`.
    pub line: usize,
    /// Pending output per client past which it is not read.
    pub client_output: usize,
    /// Client connections held at once; more are accepted and closed at once.
    pub max_clients: usize,
    /// WHATSATs one connection may have in flight.
    pub whatsats_per_conn: usize,
    /// Pending output per herd link past which the link is dropped.
    pub link_output: usize,
    /// Invalid input per connection per second, in bytes, past which reading
    /// it pauses (see [`crate::conn::Throttle`]); 0: no limit.
    pub invalid_rate: usize,
    /// Close client connections silent for this long (`None`: never; phones
    /// keep connections idle for long, so this is off by default).
    pub idle_timeout: Option<Duration>,
    /// The Places client's limits (requests in flight, queue, body, deadline).
    pub places: places::Limits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            line: DEFAULT_LINE_LIMIT,
            client_output: DEFAULT_CLIENT_OUTPUT,
            max_clients: 1_000_000,
            whatsats_per_conn: DEFAULT_WHATSATS_PER_CONN,
            link_output: DEFAULT_LINK_OUTPUT_CAP,
            invalid_rate: DEFAULT_INVALID_RATE,
            idle_timeout: None,
            places: places::Limits::default(),
        }
    }
}

/// Everything one server needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The server's name, as in `herd.conf` (also its log target).
    pub name: String,
    /// Its neighbours: name and address to dial.
    pub neighbours: Vec<(String, SocketAddr)>,
    pub places: PlacesConfig,
    /// The Places API key, if the environment has one.
    pub places_key: Option<String>,
    pub limits: Limits,
    /// Where the journal lives (`NAME.journal`); `None`: no journal, the
    /// store starts empty and dies with the server.
    pub state_dir: Option<PathBuf>,
    /// Sync the journal to disk this often (`None`: leave it to the kernel).
    pub fsync: Option<Duration>,
    /// The herd's shared secret: links must authenticate, and only
    /// authenticated links may send AT lines. `None`: open herd.
    pub secret: Option<Secret>,
}

impl ServerConfig {
    /// The configuration of member `name` of `herd`, and the address it
    /// listens on. Addresses are resolved here, once, at start-up.
    pub fn from_herd(herd: &Herd, name: &str) -> Result<(ServerConfig, SocketAddr), String> {
        let i = herd
            .index_of(name)
            .ok_or_else(|| format!("no server named {name:?} in the config"))?;
        let listen = resolve(&herd.servers[i].address())?;
        let mut neighbours = Vec::new();
        for j in herd.neighbours(i) {
            let s = &herd.servers[j];
            neighbours.push((s.name.clone(), resolve(&s.address())?));
        }
        let places_key = std::env::var(&herd.places.key_env)
            .ok()
            .filter(|k| !k.is_empty());
        let secret = match &herd.secret_env {
            Some(var) => match std::env::var_os(var) {
                Some(v) if !v.is_empty() => Some(Secret::new(v.as_encoded_bytes())),
                _ => {
                    return Err(format!(
                        "secret_env names ${var}, which is empty or not set"
                    ))
                }
            },
            None => None,
        };
        Ok((
            ServerConfig {
                name: name.to_string(),
                neighbours,
                places: herd.places.clone(),
                places_key,
                limits: Limits::default(),
                state_dir: None,
                fsync: None,
                secret,
            },
            listen,
        ))
    }
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {address}: no address"))
}

/// Binds a listener the way the server wants it: address reuse (a restarted
/// server gets its port back at once), a real backlog, nonblocking.
pub fn bind(addr: SocketAddr) -> io::Result<StdListener> {
    use socket2::{Domain, Socket, Type};
    let named = |step: &str, e: io::Error| io::Error::new(e.kind(), format!("{step} {addr}: {e}"));
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(|e| named("socket for", e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| named("SO_REUSEADDR on", e))?;
    socket.bind(&addr.into()).map_err(|e| named("bind", e))?;
    socket
        .listen(LISTEN_BACKLOG)
        .map_err(|e| named("listen on", e))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| named("nonblocking", e))?;
    Ok(socket.into())
}

/// A handle to stop a running server from another thread.
#[derive(Clone)]
pub struct StopHandle {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

impl StopHandle {
    /// Asks the loop to stop; it closes its listener and returns.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }
}

/// A server started on its own thread by [`spawn`].
pub struct Running {
    pub name: String,
    pub addr: SocketAddr,
    pub handle: StopHandle,
    pub thread: JoinHandle<io::Result<()>>,
    /// The server's figures, for the operator endpoint.
    pub stats: Arc<ServerStats>,
}

impl Running {
    /// Stops the server and waits for its thread.
    pub fn stop(self) -> io::Result<()> {
        self.handle.stop();
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("server thread panicked")))
    }
}

/// Starts a server on its own thread, on an already bound listener.
pub fn spawn(config: ServerConfig, listener: StdListener) -> io::Result<Running> {
    let addr = listener.local_addr()?;
    let name = config.name.clone();
    let server = Server::new(config, listener)?;
    let handle = server.stop_handle();
    let stats = server.stats();
    let thread = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || server.run())?;
    Ok(Running {
        name,
        addr,
        handle,
        thread,
        stats,
    })
}

/// The server's state other than its sockets' containers: what handling a
/// line needs, borrowed separately from the connection being served.
struct Core {
    name: String,
    limits: Limits,
    store: Store,
    /// Where stored updates are made durable, if anywhere.
    journal: Option<Journal>,
    secret: Option<Secret>,
    links: Links,
    places: Places,
    /// Places request → (connection key, connection serial).
    requests: HashMap<RequestId, (usize, u64)>,
    next_request: RequestId,
    /// Places answers to deliver at the end of the turn.
    done: Vec<Reply>,
    /// Formatting space for one AT line.
    line: Vec<u8>,
    /// Log every line received and sent (the log level is `debug`).
    traffic: bool,
    /// The time of receipt of the bytes being handled: read once per
    /// `read(2)`, since the lines of one read arrived together.
    received_at: Option<Nanos>,
    /// Bytes of invalid lines handled since the last read was charged.
    invalid: usize,
    /// What the loop counts, read by the operator endpoint.
    stats: Arc<ServerStats>,
}

/// One server: its poll loop and everything the loop owns.
pub struct Server {
    poll: Poll,
    listener: TcpListener,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    conns: Slab<Conn>,
    next_serial: u64,
    scratch: Vec<u8>,
    core: Core,
    /// Connections with work left over from an earlier turn.
    resume: Vec<usize>,
    /// Connections throttled for invalid input: when each may be read again
    /// (with key and serial, since the connection may be gone by then).
    throttled: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Connections that got output this turn.
    dirty: Vec<usize>,
    /// Accepting stopped at the batch cap: go on next turn.
    accept_more: bool,
    /// Accepting paused after EMFILE/ENFILE until then.
    accept_paused_until: Option<Instant>,
    /// Out of descriptors was logged for the current stretch.
    emfile_logged: bool,
    /// Connections refused at the limit since the last sweep (logged once a
    /// sweep, so a connection storm is a line a second, not a line each).
    refused: u64,
    /// When the loop started: connection activity is kept as seconds since.
    epoch: Instant,
    next_sweep: Instant,
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
        let mut store = Store::new();
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
        let stats = Arc::new(ServerStats::new(&config.name));
        let now = Instant::now();
        let core = Core {
            links: Links::new(
                &config.name,
                &config.neighbours,
                config.limits.link_output,
                config.secret.clone(),
                now,
            ),
            name: config.name,
            limits: config.limits,
            store,
            journal,
            secret: config.secret,
            places,
            requests: HashMap::new(),
            next_request: 1,
            done: Vec::new(),
            line: Vec::with_capacity(256),
            traffic: false,
            received_at: None,
            invalid: 0,
            stats,
        };
        for link in core.links.stats() {
            core.stats.add_link(link);
        }
        core.stats.set_stored_clients(core.store.len());
        if let Some(j) = &core.journal {
            core.stats.set_journal(j.stats());
        }
        Ok(Server {
            poll,
            listener,
            waker,
            stop: Arc::new(AtomicBool::new(false)),
            conns: Slab::new(),
            next_serial: 0,
            scratch: vec![0; SCRATCH_SIZE],
            core,
            resume: Vec::new(),
            throttled: BinaryHeap::new(),
            dirty: Vec::new(),
            accept_more: false,
            accept_paused_until: None,
            refused: 0,
            emfile_logged: false,
            epoch: Instant::now(),
            next_sweep: Instant::now() + SWEEP_INTERVAL,
        })
    }

    /// A handle that stops this server from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            waker: self.waker.clone(),
            stop: self.stop.clone(),
        }
    }

    /// The server's figures (shared: the loop counts, a reader reads).
    pub fn stats(&self) -> Arc<ServerStats> {
        self.core.stats.clone()
    }

    /// Runs the loop until stopped.
    pub fn run(mut self) -> io::Result<()> {
        let name = self.core.name.clone();
        self.core.traffic = logging::attach_loop(&name);
        log::info!(target: &name, "listening on {} with {} neighbours", self.listener.local_addr()?, self.core.links.len());
        self.core.stats.set_listening(true);
        if self.core.secret.is_none() {
            log::warn!(target: &name, "no shared secret (secret_env): herd links are not authenticated, and any connection may send AT updates");
        }
        let mut events = Events::with_capacity(EVENTS_PER_POLL);
        let _not_listening = NotListening(self.core.stats.clone());
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
        match event.token() {
            LISTENER => self.accept(),
            WAKER => self.core.places.on_wake(registry, now, &mut self.core.done),
            token if self.core.places.owns(token) => {
                self.core
                    .places
                    .on_event(registry, event, now, &mut self.core.done)
            }
            token if token.0 >= LINK_TOKEN_BASE => {
                if let Some(i) = self.core.links.index_of_token(token) {
                    self.core.links.on_event(i, event, registry, now);
                }
            }
            Token(key) => {
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
        }
    }

    /// Timers, leftover work, Places answers, then one flush per socket.
    fn turn_end(&mut self) {
        let now = Instant::now();
        let registry = self.poll.registry();
        self.core.links.on_timeout(registry, now);
        self.core
            .places
            .on_timeout(registry, now, &mut self.core.done);
        if self.next_sweep <= now {
            self.sweep(now);
        }
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            self.accept_more = true;
        }
        if self.accept_more {
            self.accept();
        }
        self.unthrottle(now);
        for key in std::mem::take(&mut self.resume) {
            self.read(key, false);
        }
        self.deliver();
        // Updates reach the journal before their replies leave; floods go
        // first, since the herd's propagation time adds up hop by hop.
        if let Some(j) = &mut self.core.journal {
            j.flush(&self.core.store);
        }
        let registry = self.poll.registry();
        self.core.links.flush(registry, &self.core.store, now);
        for key in std::mem::take(&mut self.dirty) {
            self.flush(key);
        }
        logging::turn_end(now);
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.core.links.next_deadline(),
            self.core.places.next_deadline(),
            self.accept_paused_until,
            self.throttled.peek().map(|Reverse((t, _, _))| *t),
            logging::deadline(),
            (self.refused > 0 || self.core.limits.idle_timeout.is_some())
                .then_some(self.next_sweep),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn accept(&mut self) {
        self.accept_more = false;
        if self.accept_paused_until.is_some() {
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
                        log::warn!(target: &self.core.name, "accept: {e}; pausing accepts, retrying every {} ms until descriptors free up", ACCEPT_PAUSE.as_millis());
                        self.emfile_logged = true;
                    }
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
                // A connection reset before we took it, and the like.
                Err(e) => log::info!(target: &self.core.name, "accept: {e}"),
            }
        }
        self.accept_more = true;
    }

    fn admit(&mut self, mut stream: mio::net::TcpStream, peer: SocketAddr) {
        let name = &self.core.name;
        if self.conns.len() >= self.core.limits.max_clients {
            // Accepted and closed at once (dropping `stream`): the client
            // learns at once, and the backlog does not fill with retries.
            if self.refused == 0 {
                log::warn!(target: name, "refused {peer}: {} connections is the limit", self.core.limits.max_clients);
            }
            self.refused += 1;
            return;
        }
        let _ = stream.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if key >= LINK_TOKEN_BASE {
            return;
        }
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(key), Interest::READABLE)
        {
            log::warn!(target: name, "register {peer}: {e}");
            return;
        }
        self.next_serial += 1;
        let mut conn = Conn::new(stream, peer, self.next_serial);
        conn.active = self.epoch.elapsed().as_secs() as u32;
        entry.insert(conn);
        self.core.stats.client_connected();
        log::info!(target: name, "client {peer} connected");
        // Data may have arrived with the handshake already.
        self.resume.push(key);
    }

    /// Seconds since the loop started (for idle connections).
    fn seconds(&self) -> u32 {
        self.epoch.elapsed().as_secs() as u32
    }

    /// Once a second: sum up refused connections, close idle ones.
    fn sweep(&mut self, now: Instant) {
        self.next_sweep = now + SWEEP_INTERVAL;
        if self.refused > 1 {
            log::warn!(target: &self.core.name, "refused {} more connections in the last second: {} connections is the limit", self.refused - 1, self.core.limits.max_clients);
        }
        self.refused = 0;
        if let Some(idle) = self.core.limits.idle_timeout {
            let now_s = self.seconds();
            let limit = idle.as_secs().max(1) as u32;
            let idle_keys: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| {
                    c.role == Role::Client
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
        let registry = self.poll.registry();
        let active = self.seconds();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.active = active;
        let core = &mut self.core;
        let outcome = read_conn(
            core,
            registry,
            conn,
            key,
            &mut self.scratch,
            short_drains,
            self.epoch,
        );
        match outcome {
            ReadOutcome::Drained => {}
            ReadOutcome::Throttled(pause) => {
                if conn.throttle.pauses == 1 {
                    log::warn!(target: &core.name, "client {} sends invalid input faster than {} bytes/s: reading it paused for {} ms (logged once per connection)", conn.peer, core.limits.invalid_rate, pause.as_millis());
                }
                let serial = conn.serial;
                self.throttled
                    .push(Reverse((Instant::now() + pause, key, serial)));
            }
            ReadOutcome::Yielded => {
                if !conn.paused {
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

    /// Reads again the throttled connections whose pause is over.
    fn unthrottle(&mut self, now: Instant) {
        while let Some(&Reverse((due, key, serial))) = self.throttled.peek() {
            if due > now {
                break;
            }
            self.throttled.pop();
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.serial == serial) else {
                continue;
            };
            conn.throttled = false;
            if conn.paused && !over_limits(conn, &self.core.limits) {
                conn.paused = false;
                self.resume.push(key);
            }
        }
    }

    fn flush(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let want = match conn.out.flush_to(&mut conn.stream) {
            Ok(Flush::Done) => {
                if conn.read_closed && conn.is_drained() {
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
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(key), want)
            {
                self.close(key, &e.to_string());
                return;
            }
            conn.interest = want;
        }
        if conn.paused && !over_limits(conn, &self.core.limits) {
            // The client caught up: read what it sent meanwhile (no new
            // event will come for bytes already in the socket buffer).
            conn.paused = false;
            self.resume.push(key);
        }
    }

    fn close(&mut self, key: usize, why: &str) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.core.stats.closed(conn.role == Role::Client);
        let name = &self.core.name;
        match &conn.role {
            Role::Client if conn.throttle.pauses > 0 => {
                log::info!(target: name, "client {} disconnected: {why}; paused {} times for invalid input", conn.peer, conn.throttle.pauses)
            }
            Role::Client => log::info!(target: name, "client {} disconnected: {why}", conn.peer),
            Role::Peer(p) => {
                log::info!(target: name, "link from {} ({}) down: {why}; received {} updates, {} newer", escape(&p.name), conn.peer, p.received, p.stored)
            }
        }
    }

    /// Hands Places answers to their connections, in request order per connection.
    fn deliver(&mut self) {
        for reply in std::mem::take(&mut self.core.done) {
            self.core.stats.places(reply.status, reply.elapsed);
            let Some((key, serial)) = self.core.requests.remove(&reply.id) else {
                continue;
            };
            let Some(conn) = self.conns.get_mut(key).filter(|c| c.serial == serial) else {
                // The client left before Places answered.
                continue;
            };
            if conn.complete(reply.id, &reply.body) {
                self.dirty.push(key);
            }
        }
    }

    fn shutdown(&mut self) {
        let registry = self.poll.registry();
        let _ = registry.deregister(&mut self.listener);
        self.core.links.close_all(registry);
        // Best effort: hand clients what is already answered.
        for (_, conn) in self.conns.iter_mut() {
            let _ = conn.out.flush_to(&mut conn.stream);
        }
        log::info!(target: &self.core.name, "stopped: {} clients connected, {} known", self.conns.len(), self.core.store.len());
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

fn over_limits(conn: &Conn, limits: &Limits) -> bool {
    conn.throttled
        || conn.backlog() >= limits.client_output
        || conn.in_flight >= limits.whatsats_per_conn
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (24), ENFILE (23), ENOBUFS (105), ENOMEM (12) on Linux.
    matches!(e.raw_os_error(), Some(24) | Some(23) | Some(105) | Some(12))
}

/// Reads a connection until `WouldBlock`, its read budget, or a pause, and
/// handles every line read.
fn read_conn(
    core: &mut Core,
    registry: &Registry,
    conn: &mut Conn,
    key: usize,
    scratch: &mut [u8],
    short_drains: bool,
    epoch: Instant,
) -> ReadOutcome {
    if conn.read_closed {
        return ReadOutcome::Drained;
    }
    for _ in 0..READS_PER_TURN {
        if over_limits(conn, &core.limits) {
            conn.paused = true;
            return ReadOutcome::Yielded;
        }
        match conn.stream.read(scratch) {
            Ok(0) => {
                core.received_at = None;
                // EOF: a last line without `\n` is still a request.
                let mut reader = std::mem::take(&mut conn.reader);
                reader.finish(|p| handle(core, registry, conn, key, p));
                conn.reader = reader;
                // Nothing more will be read: there is nothing to throttle.
                core.invalid = 0;
                conn.read_closed = true;
                return ReadOutcome::Drained;
            }
            Ok(n) => {
                core.received_at = None;
                let mut reader = std::mem::take(&mut conn.reader);
                let limit = core.limits.line;
                let discarded = reader.feed(&scratch[..n], limit, |p| {
                    // A connection we gave up on (failed AUTH) gets nothing more.
                    if !conn.read_closed {
                        handle(core, registry, conn, key, p)
                    }
                });
                conn.reader = reader;
                let invalid = std::mem::take(&mut core.invalid) + discarded;
                if invalid > 0 && core.limits.invalid_rate > 0 {
                    let now_ms = epoch.elapsed().as_millis() as u32;
                    let rate = core.limits.invalid_rate;
                    if let Some(pause) = conn.throttle.charge(invalid, now_ms, rate) {
                        conn.throttled = true;
                        conn.paused = true;
                        return ReadOutcome::Throttled(pause);
                    }
                }
                if conn.read_closed || (short_drains && n < scratch.len()) {
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

/// Handles one line (or over-long line) from a connection.
fn handle(core: &mut Core, registry: &Registry, conn: &mut Conn, key: usize, piece: Piece<'_>) {
    let name = core.name.as_str();
    let line = match piece {
        Piece::Line(line) => line,
        Piece::TooLong(start) => {
            log::info!(target: name, "from {}: line longer than {} bytes: {}...", conn.peer, core.limits.line, escape(&start[..start.len().min(64)]));
            core.invalid += start.len() + 1;
            core.stats.request(Kind::Invalid);
            core.line.clear();
            protocol::write_refused(&mut core.line, start);
            conn.reply(&core.line);
            return;
        }
    };
    if core.traffic {
        logging::traffic("from", &conn.peer, line, "");
    }
    match protocol::parse(line) {
        Command::Blank => {}
        Command::Iamat(iamat) => {
            core.stats.request(Kind::Iamat);
            let now = *core.received_at.get_or_insert_with(protocol::now_nanos);
            core.line.clear();
            protocol::write_at(&mut core.line, name, now, &iamat);
            conn.reply(&core.line);
            if core.traffic {
                logging::traffic("to", &conn.peer, &core.line[..core.line.len() - 1], "");
            }
            let at = &core.line[..core.line.len() - 1];
            if core.store.offer(iamat.client, iamat.sent_at, at) {
                core.stats.stored(Source::Client, core.store.len());
                if let Some(j) = &mut core.journal {
                    j.record(at);
                }
                core.links.flood(&core.line, None);
            }
        }
        Command::Whatsat(w) => {
            let Some(entry) = core.store.get(w.client) else {
                invalid(core, conn, line);
                return;
            };
            core.stats.request(Kind::Whatsat);
            let mut head = Vec::with_capacity(entry.line.len() + 1);
            head.extend_from_slice(&entry.line);
            head.push(b'\n');
            // The stored line was validated when it was stored.
            let (lat, lng) = match protocol::parse(&entry.line) {
                Command::At(at) => {
                    protocol::position(at.coords).map_or((&b""[..], &b""[..]), |p| (p.lat, p.lng))
                }
                _ => (&b""[..], &b""[..]),
            };
            let query = Query {
                lat: String::from_utf8_lossy(lat).into_owned(),
                lng: String::from_utf8_lossy(lng).into_owned(),
                radius_m: protocol::radius_metres(w.radius_km),
                bound: w.bound as usize,
            };
            let id = core.next_request;
            core.next_request += 1;
            core.requests.insert(id, (key, conn.serial));
            if core.traffic {
                logging::traffic("to", &conn.peer, &entry.line, " (+ Places answer)");
            }
            conn.wait_for(id, head);
            core.places
                .submit(registry, id, query, Instant::now(), &mut core.done);
        }
        Command::At(at) => {
            let from = match &mut conn.role {
                Role::Peer(p) if p.authenticated => {
                    p.received += 1;
                    p.neighbour
                }
                // With a shared secret, only authenticated links update.
                _ if core.secret.is_some() => {
                    log::warn!(target: name, "from {}: AT from an unauthenticated connection refused", conn.peer);
                    invalid(core, conn, line);
                    return;
                }
                _ => None,
            };
            core.line.clear();
            protocol::write_at_update(&mut core.line, &at);
            let stored_line = &core.line[..core.line.len() - 1];
            if core.store.offer(at.client, at.sent_at, stored_line) {
                core.stats.stored(Source::Link, core.store.len());
                if let Some(j) = &mut core.journal {
                    j.record(stored_line);
                }
                if let Role::Peer(p) = &mut conn.role {
                    p.stored += 1;
                }
                core.links.flood(&core.line, from);
            }
            if let Role::Peer(p) = &mut conn.role {
                if let Some(s) = &p.sync {
                    if p.received - s.received_before >= s.count {
                        log::info!(target: name, "catch-up from {}: {} updates received, {} newer, in {:.1} ms", escape(&p.name), s.count, p.stored - s.stored_before, s.started.elapsed().as_secs_f64() * 1e3);
                        p.sync = None;
                    }
                }
            }
        }
        Command::Sync { count } => match &mut conn.role {
            Role::Peer(p) if p.authenticated => {
                if count == 0 {
                    log::info!(target: name, "catch-up from {}: nothing to receive", escape(&p.name));
                } else {
                    p.sync = Some(Sync {
                        count,
                        received_before: p.received,
                        stored_before: p.stored,
                        started: Instant::now(),
                    });
                }
            }
            _ => invalid(core, conn, line),
        },
        Command::Herd { name: peer, nonce } => {
            if conn.role != Role::Client {
                invalid(core, conn, line);
                return;
            }
            let neighbour = core.links.index_of_name(peer);
            if let Some(i) = neighbour {
                // It is back: no need to wait for our backoff to find out.
                core.links.neighbour_is_up(i, Instant::now());
            }
            let mut p = Peer {
                name: peer.into(),
                neighbour,
                authenticated: false,
                nonces: None,
                received: 0,
                stored: 0,
                sync: None,
            };
            match (&core.secret, nonce) {
                (None, None) => {
                    p.authenticated = true;
                    log::info!(target: name, "link from {} up ({}){}", escape(peer), conn.peer, if neighbour.is_none() { " (not a neighbour in herd.conf)" } else { "" });
                }
                (Some(secret), Some(na)) if auth::is_nonce(na) => {
                    let nb = auth::nonce();
                    let mac = secret.accept_mac(peer, na, nb.as_bytes());
                    conn.reply(format!("CHALLENGE {nb} {mac}\n").as_bytes());
                    p.nonces = Some((na.into(), nb));
                }
                (secret, _) => {
                    log::warn!(target: name, "from {}: herd link refused: {}", conn.peer, if secret.is_some() { "it did not offer to authenticate" } else { "it wants to authenticate and this herd has no secret" });
                    invalid(core, conn, line);
                    return;
                }
            }
            conn.role = Role::Peer(Box::new(p));
            core.stats.became_peer();
        }
        Command::Auth { mac } => {
            let (Some(secret), Role::Peer(p)) = (&core.secret, &mut conn.role) else {
                invalid(core, conn, line);
                return;
            };
            let Some((na, nb)) = p.nonces.take() else {
                invalid(core, conn, line);
                return;
            };
            if secret.verify_dial(&p.name, &na, nb.as_bytes(), mac) {
                p.authenticated = true;
                log::info!(target: name, "link from {} up, authenticated ({})", escape(&p.name), conn.peer);
            } else {
                log::warn!(target: name, "link from {} ({}): authentication failed; closing", escape(&p.name), conn.peer);
                invalid(core, conn, line);
                // Read nothing more from it; it is closed once the reply is out.
                conn.read_closed = true;
            }
        }
        Command::Challenge { .. } => invalid(core, conn, line),
        Command::Invalid => invalid(core, conn, line),
    }
}

fn invalid(core: &mut Core, conn: &mut Conn, line: &[u8]) {
    core.invalid += line.len() + 1;
    core.stats.request(Kind::Invalid);
    core.line.clear();
    protocol::write_invalid(&mut core.line, line);
    conn.reply(&core.line);
    if core.traffic {
        // The line itself was logged just above, as received: say so rather
        // than log its bytes (a client sending garbage doubles the log less).
        logging::traffic("to", &conn.peer, b"? ", "(+ the line above)");
    }
}

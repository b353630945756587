//! Everything around a server's loop: its limits and configuration (taken
//! from a checked [`Herd`] once, at start-up, with addresses resolved),
//! binding its listener, and running it on a thread of its own with a
//! handle to stop it.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use mio::Waker;

use super::Server;
use crate::auth::Secret;
use crate::config::{Endpoint, Herd, PlacesConfig};
use crate::engine::Port;
use crate::links::{Neighbour, DEFAULT_LINK_OUTPUT_CAP, DEFAULT_LINK_TIMEOUT};
use crate::places;
use crate::stats::ServerStats;

/// Longest line accepted, without its `\n` (docs/PROTOCOL.md §2: at least 1 KiB).
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
/// Watchers written per turn when many are owed at once (one update of a
/// client 10,000 connections watch): the rest wait in the loop's fan-out
/// queue while the loop polls again, so other clients' requests (and newer
/// updates, which the queued watchers then get instead) are not held back
/// by a whole pass. About 3 ms of writes on loopback.
pub const WATCHERS_PER_TURN: usize = 512;
/// Connections accepted per turn before other events get their turn.
pub const ACCEPT_BATCH: usize = 256;
/// The listen(2) backlog.
pub const LISTEN_BACKLOG: i32 = 1024;
/// After EMFILE/ENFILE on accept, wait this long before accepting again.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Events taken from the poll per turn.
pub const EVENTS_PER_POLL: usize = 1024;
/// How long a connection to a TLS or peer port may take to finish its TLS
/// handshake and, on a peer port, to say `HERD` (`--handshake-timeout`).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often refused connections and idle connections are looked at.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl Limits {
    /// The HTTP deadlines.
    pub fn http_timeouts(&self) -> crate::front::http::Timeouts {
        crate::front::http::Timeouts {
            request: self.request_timeout,
            keepalive: self.keepalive_timeout,
        }
    }
}

/// Per-server limits; every one is documented in docs/OPERATING.md.
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
    /// A herd link not heard from for this long is declared dead (both ends).
    pub link_timeout: Duration,
    /// A TLS handshake on a TLS or peer port (and `HERD` on a peer port)
    /// not done by then closes the connection; also a link's dial.
    pub handshake_timeout: Duration,
    /// Invalid input per connection per second, in bytes, past which reading
    /// it pauses (see [`crate::conn::Throttle`]); 0: no limit.
    pub invalid_rate: usize,
    /// Close client connections silent for this long (`None`: never; phones
    /// keep connections idle for long, so this is off by default).
    pub idle_timeout: Option<Duration>,
    /// An HTTP request must be whole this long after its first byte (or
    /// after the connection opened), or it gets `408`.
    pub request_timeout: Duration,
    /// An HTTP keep-alive connection with no request under way is closed
    /// after this.
    pub keepalive_timeout: Duration,
    /// The Places client's limits (requests in flight, queue, body, deadline).
    pub places: places::Limits,
    /// Clients the store holds; past it the oldest is evicted (`--store-limit`).
    pub store_limit: usize,
    /// Positions older than this (by client timestamp) are forgotten
    /// (`--position-ttl`; `None`: never).
    pub position_ttl: Option<Duration>,
    /// Clients one connection may watch by name (`--watch-limit`).
    pub watch_limit: usize,
    /// `WATCH *` watchers the server takes at once.
    pub watch_all: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            line: DEFAULT_LINE_LIMIT,
            client_output: DEFAULT_CLIENT_OUTPUT,
            max_clients: 1_000_000,
            whatsats_per_conn: DEFAULT_WHATSATS_PER_CONN,
            link_output: DEFAULT_LINK_OUTPUT_CAP,
            link_timeout: DEFAULT_LINK_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            invalid_rate: DEFAULT_INVALID_RATE,
            idle_timeout: None,
            request_timeout: crate::front::http::REQUEST_TIMEOUT,
            keepalive_timeout: crate::front::http::KEEPALIVE_TIMEOUT,
            places: places::Limits::default(),
            store_limit: crate::store::DEFAULT_STORE_LIMIT,
            position_ttl: None,
            watch_limit: crate::watch::DEFAULT_WATCH_LIMIT,
            watch_all: crate::watch::DEFAULT_WATCH_ALL_LIMIT,
        }
    }
}

/// Everything one server needs to run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The server's name, as in `herd.conf` (also its log target).
    pub name: String,
    /// Its neighbours: name, the address to dial (a peer port if the
    /// neighbour has one), and whether over mutual TLS.
    pub neighbours: Vec<Neighbour>,
    /// Its peer port (herd links only), if it has one.
    pub peer_listen: Option<SocketAddr>,
    /// Its TLS client port, if it has one.
    pub tls_listen: Option<SocketAddr>,
    /// Its HTTP port (HTTP/1.1 and WebSocket), if it has one.
    pub http_listen: Option<SocketAddr>,
    /// Its HTTPS port, if it has one.
    pub https_listen: Option<SocketAddr>,
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
    /// The herd's TLS (`tls_cert`, `tls_key`, `tls_ca`), loaded for this
    /// server: its peer port speaks mutual TLS, its `tls` port TLS, and it
    /// dials neighbours' peer ports over TLS. `None`: no TLS.
    pub tls: Option<std::sync::Arc<crate::tls::HerdTls>>,
    /// What the client-facing TLS ports (`tls`, `https`) present when it
    /// is not the herd's certificate: `public_cert`/`public_key`, loaded
    /// for this server. `None`: they present the herd's (`tls.clients`).
    pub public_tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// The token every HTTP request must carry (`api_token_env`), if any.
    pub api_token: Option<crate::front::Token>,
}

impl ServerConfig {
    /// Server `name` on its own: no neighbours, only its client port, no
    /// Places key, no journal, no secret, no TLS, default limits. Tests
    /// and tools start from it and set what they need.
    pub fn alone(name: &str) -> ServerConfig {
        ServerConfig {
            name: name.to_string(),
            neighbours: Vec::new(),
            peer_listen: None,
            tls_listen: None,
            http_listen: None,
            https_listen: None,
            places: PlacesConfig::default(),
            places_key: None,
            limits: Limits::default(),
            state_dir: None,
            fsync: None,
            secret: None,
            tls: None,
            public_tls: None,
            api_token: None,
        }
    }

    /// The TLS configuration of the client-facing TLS ports, if there is one.
    pub fn client_tls(&self) -> Option<&std::sync::Arc<rustls::ServerConfig>> {
        self.public_tls
            .as_ref()
            .or(self.tls.as_ref().map(|t| &t.clients))
    }
}

impl ServerConfig {
    /// The configuration of member `name` of `herd`, and the address it
    /// listens on. Addresses are resolved here, once, at start-up.
    pub fn from_herd(herd: &Herd, name: &str) -> Result<(ServerConfig, SocketAddr), String> {
        let i = herd
            .index_of(name)
            .ok_or_else(|| format!("no server named {name:?} in the config"))?;
        let me = &herd.servers[i];
        let listen = resolve(&me.address())?;
        let resolve_opt =
            |e: &Option<Endpoint>| e.as_ref().map(|e| resolve(&e.address())).transpose();
        let (peer_listen, tls_listen) = (resolve_opt(&me.peer)?, resolve_opt(&me.tls)?);
        let (http_listen, https_listen) = (resolve_opt(&me.http)?, resolve_opt(&me.https)?);
        let mut neighbours = Vec::new();
        for j in herd.neighbours(i) {
            let s = &herd.servers[j];
            // A neighbour with a peer port is dialled there, over mutual
            // TLS when the herd has TLS; one without, on its client port.
            let (addr, tls) = match &s.peer {
                Some(peer) => (resolve(&peer.address())?, herd.tls.is_some()),
                None => (resolve(&s.address())?, false),
            };
            neighbours.push(Neighbour {
                name: s.name.clone(),
                addr,
                tls,
            });
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
        let api_token = match &herd.api_token_env {
            Some(var) => match std::env::var_os(var) {
                Some(v) if !v.is_empty() => Some(crate::front::Token::new(v.as_encoded_bytes())),
                _ => {
                    return Err(format!(
                        "api_token_env names ${var}, which is empty or not set"
                    ))
                }
            },
            None => None,
        };
        Ok((
            ServerConfig {
                name: name.to_string(),
                neighbours,
                peer_listen,
                tls_listen,
                http_listen,
                https_listen,
                places: herd.places.clone(),
                places_key,
                limits: Limits::default(),
                state_dir: None,
                fsync: None,
                secret,
                tls: None,
                public_tls: None,
                api_token,
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

impl ServerConfig {
    /// Binds the client port at `client` and the peer and TLS ports this
    /// configuration names.
    pub fn bind(&self, client: SocketAddr) -> io::Result<Listeners> {
        Ok(Listeners {
            client: bind(client)?,
            peer: self.peer_listen.map(bind).transpose()?,
            tls: self.tls_listen.map(bind).transpose()?,
            http: self.http_listen.map(bind).transpose()?,
            https: self.https_listen.map(bind).transpose()?,
        })
    }
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

/// A handle to a running server from another thread: stop it, or hand it
/// a reloaded configuration.
#[derive(Clone)]
pub struct StopHandle {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    reload: Arc<Mutex<Option<ServerConfig>>>,
}

impl StopHandle {
    /// A handle that sets `stop` or fills `reload`, and wakes the loop.
    pub(super) fn new(
        waker: Arc<Waker>,
        stop: Arc<AtomicBool>,
        reload: Arc<Mutex<Option<ServerConfig>>>,
    ) -> StopHandle {
        StopHandle {
            waker,
            stop,
            reload,
        }
    }

    /// Asks the loop to stop; it closes its listener and returns.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    /// Hands the loop a reloaded configuration (already checked, addresses
    /// resolved: the loop never waits on DNS). It applies the neighbours,
    /// the Places settings and the secret; its name, listen address and
    /// limits stay as they are.
    pub fn reload(&self, config: ServerConfig) {
        if let Ok(mut slot) = self.reload.lock() {
            *slot = Some(config);
        }
        let _ = self.waker.wake();
    }
}

/// A server started on its own thread by [`spawn`].
pub struct Running {
    pub name: String,
    pub addr: SocketAddr,
    pub handle: StopHandle,
    /// What it counts, for the operator endpoint.
    pub stats: Arc<ServerStats>,
    pub thread: JoinHandle<io::Result<()>>,
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

/// A server's bound listeners: its client port, and its peer, TLS client,
/// HTTP and HTTPS ports if it has them.
#[derive(Debug)]
pub struct Listeners {
    pub client: StdListener,
    pub peer: Option<StdListener>,
    pub tls: Option<StdListener>,
    pub http: Option<StdListener>,
    pub https: Option<StdListener>,
}

impl Listeners {
    /// Each listener with its port, the client port first.
    pub(super) fn into_ports(self) -> impl Iterator<Item = (Port, StdListener)> {
        let peer = self.peer.map(|l| (Port::Peer, l));
        let tls = self.tls.map(|l| (Port::Tls, l));
        let http = self.http.map(|l| (Port::Http, l));
        let https = self.https.map(|l| (Port::Https, l));
        std::iter::once((Port::Client, self.client))
            .chain(peer)
            .chain(tls)
            .chain(http)
            .chain(https)
    }
}

/// A server with only a client port.
impl From<StdListener> for Listeners {
    fn from(client: StdListener) -> Listeners {
        Listeners {
            client,
            peer: None,
            tls: None,
            http: None,
            https: None,
        }
    }
}

/// Starts a server on its own thread, on already bound listeners.
pub fn spawn(config: ServerConfig, listeners: impl Into<Listeners>) -> io::Result<Running> {
    let listeners = listeners.into();
    let addr = listeners.client.local_addr()?;
    let name = config.name.clone();
    let server = Server::new(config, listeners)?;
    let handle = server.stop_handle();
    let stats = server.stats();
    let thread = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || server.run())?;
    Ok(Running {
        name,
        addr,
        handle,
        stats,
        thread,
    })
}

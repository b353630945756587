//! The command engine: what a line means and what should happen, with no I/O.
//!
//! The loop reads bytes and splits them into lines ([`crate::conn`]); each
//! line goes to [`Engine::handle`] with the [`Session`] of the connection it
//! came on and a [`Clock`]. The engine parses it ([`crate::protocol`]),
//! consults and updates the [`Store`], and says what should happen through
//! an [`Effects`] sink, in the order it must happen: a reply to append, an
//! update to journal, a line to flood, a WHATSAT's Places query, a
//! neighbour that dialled us. What it returns ([`Next`]) is what the loop
//! must do about the connection itself: go on, charge invalid input to its
//! throttle, or stop reading it.
//!
//! The engine owns no socket, no `Registry` and no timer, like rustls'
//! `ConnectionCommon` or httparse: the server loop, the `handle` bench and
//! the fuzz target drive this one engine, byte for byte the same.
//!
//! Client lines (IAMAT, WHATSAT) are answered here; the link protocol's
//! accepting half (HERD, AUTH, SYNC, and the accounting of a peer's AT
//! lines) is in [`crate::links::inbound`], which the engine calls.

use std::net::SocketAddr;
use std::time::Instant;

use crate::auth::Secret;
use crate::conn::Piece;
use crate::links::inbound::{AuthResult, Peer};
use crate::logging::{self, escape};
use crate::peer::PeerAddr;
use crate::places::Query;
use crate::protocol::{self, Command, Nanos, Watched};
use crate::stats::{Kind, ServerStats, Source};
use crate::store::Store;
use crate::watch::{Watch, DEFAULT_WATCH_LIMIT};
use std::sync::Arc;

/// What handling a line asks of the loop, in order.
pub trait Effects {
    /// Appends `bytes` to the connection's replies (behind any WHATSAT of
    /// it still waiting for Places).
    fn reply(&mut self, bytes: &[u8]);
    /// A WHATSAT: reserve its reply's place, `head` (the AT line, with its
    /// `\n`) first, and ask Places for `query`; its answer follows `head`.
    fn whatsat(&mut self, head: &[u8], query: Query);
    /// Makes `line` (a stored AT line, without `\n`) durable before this
    /// turn's replies leave.
    fn journal(&mut self, line: &[u8]);
    /// Queues `line` (with its `\n`) to every neighbour but `except`.
    fn flood(&mut self, line: &[u8], except: Option<usize>);
    /// Neighbour `i` dialled us: it is up, no need to wait out a backoff.
    fn neighbour_dialled(&mut self, i: usize);
    /// A position was stored in store slot `slot` (from any source): its
    /// watchers are owed it (docs/PROTOCOL.md §15).
    fn stored(&mut self, _slot: usize) {}
    /// Whether the connection can be a watcher: a line port or a
    /// WebSocket can, an HTTP request (`POST /v1/lines`) cannot.
    fn can_watch(&self) -> bool {
        true
    }
    /// The connection said its first `WATCH`: it is a watcher from now on.
    fn watching(&mut self) {}
    /// The connection watches `client`, at `place` of its
    /// [`crate::watch::Watch`].
    fn watch(&mut self, _client: &[u8], _place: u32) {}
    /// The connection no longer watches `client`.
    fn unwatch(&mut self, _client: &[u8]) {}
    /// The connection says `WATCH *`; false when the server already has
    /// its limit of those (then nothing changes).
    fn watch_all(&mut self) -> bool {
        true
    }
    /// The connection no longer watches every client.
    fn unwatch_all(&mut self) {}
}

/// What the loop must do about the connection after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Next {
    /// Go on reading it.
    Continue,
    /// The line was invalid: charge these bytes to its throttle.
    Charge(usize),
    /// Read nothing more from it (a failed link authentication); close it
    /// once its replies are out.
    StopReading,
}

/// What a connection is to its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A mobile client (or anything that has not said `HERD`).
    Client,
    /// An inbound herd link: the peer said `HERD NAME`.
    Peer(Box<Peer>),
}

/// Which of its server's listeners a connection came in on
/// (docs/PROTOCOL.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    /// The plaintext client port.
    Client,
    /// The client port speaking TLS.
    Tls,
    /// The port for herd links only.
    Peer,
    /// HTTP/1.1 and WebSocket, plaintext (docs/PROTOCOL.md §14).
    Http,
    /// HTTP/1.1 and WebSocket over TLS.
    Https,
}

impl Port {
    /// For the log.
    pub fn label(self) -> &'static str {
        match self {
            Port::Client => "client",
            Port::Tls => "tls",
            Port::Peer => "peer",
            Port::Http => "http",
            Port::Https => "https",
        }
    }

    /// Every port, in the order of their `port` metric labels.
    pub const ALL: [Port; 5] = [Port::Client, Port::Tls, Port::Peer, Port::Http, Port::Https];

    /// True for the ports that speak HTTP (and WebSocket after an upgrade).
    pub fn is_http(self) -> bool {
        matches!(self, Port::Http | Port::Https)
    }
}

/// A connection as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Its address, for the log (compact: [`PeerAddr`]).
    pub peer: PeerAddr,
    pub role: Role,
    pub port: Port,
    /// On a peer port speaking mutual TLS: the neighbours its verified
    /// certificate names, learnt when its first plaintext arrives. `HERD
    /// NAME` must be one of them.
    pub cert_names: Option<Box<CertNames>>,
    /// What it watches, once it has said `WATCH` (boxed: a connection that
    /// never watches pays a pointer). It then takes only `WATCH`,
    /// `UNWATCH` and blank lines, for the rest of its life.
    pub watch: Option<Box<Watch>>,
}

/// The neighbours a peer-port connection's certificate names: boxed in its
/// [`Session`], so that connections without one pay a pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertNames(pub Vec<String>);

impl std::ops::Deref for CertNames {
    type Target = [String];

    fn deref(&self) -> &[String] {
        &self.0
    }
}

impl Session {
    /// A new connection from `peer` on a plaintext client port: a client
    /// until it says otherwise.
    pub fn new(peer: SocketAddr) -> Session {
        Session::on(peer, Port::Client)
    }

    /// A new connection from `peer` on `port`.
    pub fn on(peer: SocketAddr, port: Port) -> Session {
        Session {
            peer: peer.into(),
            role: Role::Client,
            port,
            cert_names: None,
            watch: None,
        }
    }
}

/// The time of receipt of the lines being handled: the wall clock, read
/// at most once per `read(2)` (the lines of one read arrived together), or a
/// fixed instant for tests, benches and the fuzzer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clock {
    at: Option<Nanos>,
    fixed: bool,
}

impl Clock {
    /// The wall clock.
    pub fn wall() -> Clock {
        Clock::default()
    }

    /// Always `at`.
    pub fn fixed(at: Nanos) -> Clock {
        Clock {
            at: Some(at),
            fixed: true,
        }
    }

    /// The time of receipt, read on first use since the last [`Clock::next_read`].
    pub fn now(&mut self) -> Nanos {
        *self.at.get_or_insert_with(protocol::now_nanos)
    }

    /// New bytes arrived: the next [`Clock::now`] reads the clock again.
    pub fn next_read(&mut self) {
        if !self.fixed {
            self.at = None;
        }
    }
}

/// One server's command engine: its name, its store, and what deciding
/// needs (the secret, the neighbours' names, the line limit).
#[derive(Debug)]
pub struct Engine {
    name: String,
    store: Store,
    secret: Option<Secret>,
    /// Neighbours' names with their link slots (as the links number them).
    neighbours: Vec<(usize, String)>,
    line_limit: usize,
    /// Log every line received and sent (the log level is `debug`).
    traffic: bool,
    /// The name needs no escaping in the log (no `\`): an AT reply to a
    /// plain IAMAT is then plain too (see [`logging::traffic_plain`]).
    name_plain: bool,
    /// Formatting space for one reply or AT line.
    line: Vec<u8>,
    /// What it counts for the operator (relaxed atomics, read at scrape time).
    stats: Arc<ServerStats>,
    /// The server has a peer port: its client ports refuse herd traffic.
    peer_port: bool,
    /// Clients one connection may watch by name (`--watch-limit`).
    watch_limit: usize,
}

impl Engine {
    /// The engine of server `name`, starting from `store`.
    pub fn new(
        name: &str,
        store: Store,
        secret: Option<Secret>,
        neighbours: Vec<(usize, String)>,
        line_limit: usize,
    ) -> Engine {
        Engine {
            name: name.to_string(),
            store,
            secret,
            neighbours,
            line_limit,
            traffic: false,
            name_plain: !name.contains('\\'),
            line: Vec::with_capacity(256),
            stats: Arc::new(ServerStats::new(name)),
            peer_port: false,
            watch_limit: DEFAULT_WATCH_LIMIT,
        }
    }

    /// Clients one connection may watch by name (`--watch-limit`).
    pub fn set_watch_limit(&mut self, limit: usize) {
        self.watch_limit = limit;
    }

    /// Whether every line received and sent is logged.
    pub fn traffic(&self) -> bool {
        self.traffic
    }

    /// Says the server has a peer port: from now on its client ports
    /// answer herd traffic (`HERD`, `AT`, the handshake, `PING`) with `? `.
    pub fn set_peer_port(&mut self, on: bool) {
        self.peer_port = on;
    }

    /// The names of the neighbours that `names` (a certificate's check)
    /// says yes to.
    pub fn neighbours_named(&self, names: impl Fn(&str) -> bool) -> Vec<String> {
        self.neighbours
            .iter()
            .filter(|(_, n)| names(n))
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// The server's name (its log target).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it counts: requests by kind, updates stored by source.
    pub fn stats(&self) -> &Arc<ServerStats> {
        &self.stats
    }

    /// Logs every line received and sent from now on (or not).
    pub fn set_traffic(&mut self, on: bool) {
        self.traffic = on;
    }

    /// The neighbours after a reload: only they may link from now on.
    pub fn set_neighbours(&mut self, neighbours: Vec<(usize, String)>) {
        self.neighbours = neighbours;
    }

    /// The secret after a reload, for handshakes from now on.
    pub fn set_secret(&mut self, secret: Option<Secret>) {
        self.secret = secret;
    }

    /// The server's store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The server's store, to expire old positions from (see
    /// [`Store::expire`]).
    pub fn store_mut(&mut self) -> &mut Store {
        &mut self.store
    }

    /// The shared secret, if the herd has one.
    pub fn secret(&self) -> Option<&Secret> {
        self.secret.as_ref()
    }

    /// Handles one piece a connection's [`crate::conn::LineReader`] handed out.
    pub fn handle(
        &mut self,
        session: &mut Session,
        piece: Piece<'_>,
        clock: &mut Clock,
        fx: &mut impl Effects,
    ) -> Next {
        let line = match piece {
            Piece::Line(line) => line,
            Piece::TooLong(start) => {
                self.stats.request(Kind::Invalid);
                log::info!(target: &self.name, "from {}: line longer than {} bytes: {}...", session.peer, self.line_limit, escape(&start[..start.len().min(64)]));
                self.line.clear();
                protocol::write_refused(&mut self.line, start);
                fx.reply(&self.line);
                return Next::Charge(start.len() + 1);
            }
        };
        let plain = self.traffic && logging::traffic("from", &session.peer, line, "");
        let command = protocol::parse(line);
        let watching_kind = matches!(
            command,
            Command::Blank | Command::Watch(_) | Command::Unwatch(_)
        );
        // A watcher's lines are AT lines: a reply to anything else could
        // not be told from a push (docs/PROTOCOL.md §15).
        if session.watch.is_some() && !watching_kind {
            return self.invalid(session, line, fx);
        }
        if !self.port_allows(session, &command) {
            let next = self.invalid(session, line, fx);
            // A peer port's connection that failed to become a link gets
            // nothing more: what follows its refused HERD is not trusted.
            let failed_herd = matches!(command, Command::Herd { .. }) && session.port == Port::Peer;
            return if failed_herd { Next::StopReading } else { next };
        }
        match command {
            Command::Blank => Next::Continue,
            Command::Iamat(iamat) => {
                self.stats.request(Kind::Iamat);
                self.line.clear();
                let now = clock.now();
                let coords = protocol::write_at(&mut self.line, &self.name, now, &iamat);
                fx.reply(&self.line);
                let at = &self.line[..self.line.len() - 1];
                if plain && self.name_plain {
                    // Its fields, plain in the IAMAT, and herd's own bytes.
                    logging::traffic_plain("to", &session.peer, at, "");
                } else if self.traffic {
                    logging::traffic("to", &session.peer, at, "");
                }
                if self
                    .store
                    .offer(iamat.client, iamat.sent_at, at, coords, now)
                {
                    self.stats.stored(Source::Client, self.store.len());
                    fx.journal(at);
                    fx.flood(&self.line, None);
                    fx.stored(self.store.last_slot());
                }
                Next::Continue
            }
            Command::Whatsat(w) => {
                let Some(entry) = self.store.get(w.client) else {
                    return self.invalid(session, line, fx);
                };
                self.stats.request(Kind::Whatsat);
                let position = entry.position();
                let query = Query {
                    lat: String::from_utf8_lossy(position.lat).into_owned(),
                    lng: String::from_utf8_lossy(position.lng).into_owned(),
                    radius_m: protocol::radius_metres(w.radius_km),
                    bound: w.bound as usize,
                };
                if self.traffic {
                    logging::traffic("to", &session.peer, entry.line, " (+ Places answer)");
                }
                self.line.clear();
                self.line.extend_from_slice(entry.line);
                self.line.push(b'\n');
                fx.whatsat(&self.line, query);
                Next::Continue
            }
            Command::At(at) => {
                let from = match &session.role {
                    Role::Peer(p) if p.authenticated => p.neighbour,
                    // With a shared secret, only authenticated links update.
                    _ if self.secret.is_some() => {
                        log::warn!(target: &self.name, "from {}: AT from an unauthenticated connection refused", session.peer);
                        return self.invalid(session, line, fx);
                    }
                    _ => None,
                };
                let stored = self.store.offer_at(&at, &mut self.line, clock.now());
                if stored {
                    self.stats.stored(Source::Link, self.store.len());
                    fx.journal(&self.line[..self.line.len() - 1]);
                    fx.flood(&self.line, from);
                    // A flood or a catch-up (which arrives as AT lines too).
                    fx.stored(self.store.last_slot());
                }
                if let Role::Peer(p) = &mut session.role {
                    p.received(&self.name, stored);
                }
                Next::Continue
            }
            Command::Sync { count } => {
                let accepted = match &mut session.role {
                    Role::Peer(p) => p.sync(&self.name, count, Instant::now()),
                    Role::Client => false,
                };
                if accepted {
                    Next::Continue
                } else {
                    self.invalid(session, line, fx)
                }
            }
            Command::Herd { name, nonce } => {
                if session.role != Role::Client {
                    return self.invalid(session, line, fx);
                }
                let slot = self.neighbours.iter().find(|(_, n)| n.as_bytes() == name);
                let Some(&(neighbour, _)) = slot else {
                    // Only the links of herd.conf are accepted (a link removed
                    // by a reload stays removed).
                    log::warn!(target: &self.name, "from {}: herd link from {} refused: not a neighbour in the config", session.peer, escape(name));
                    return self.invalid(session, line, fx);
                };
                fx.neighbour_dialled(neighbour);
                self.line.clear();
                match Peer::hello(
                    name,
                    nonce,
                    Some(neighbour),
                    self.secret.as_ref(),
                    &mut self.line,
                ) {
                    Ok(peer) => {
                        if peer.authenticated {
                            log::info!(target: &self.name, "link from {} up ({})", escape(name), session.peer);
                            // The dialler counts the link up once it hears from us.
                            protocol::write_ping(&mut self.line);
                        }
                        fx.reply(&self.line);
                        session.role = Role::Peer(Box::new(peer));
                        self.stats.became_peer();
                        Next::Continue
                    }
                    Err(refusal) => {
                        log::warn!(target: &self.name, "from {}: herd link refused: {}", session.peer, refusal.reason());
                        self.invalid(session, line, fx)
                    }
                }
            }
            Command::Auth { mac } => {
                let Role::Peer(p) = &mut session.role else {
                    return self.invalid(session, line, fx);
                };
                match p.auth(self.secret.as_ref(), mac) {
                    AuthResult::Accepted => {
                        log::info!(target: &self.name, "link from {} up, authenticated ({})", escape(&p.name), session.peer);
                        fx.reply(protocol::PING);
                        Next::Continue
                    }
                    AuthResult::Failed => {
                        log::warn!(target: &self.name, "link from {} ({}): authentication failed; closing", escape(&p.name), session.peer);
                        let _ = self.invalid(session, line, fx);
                        Next::StopReading
                    }
                    AuthResult::Unexpected => self.invalid(session, line, fx),
                }
            }
            Command::Watch(what) => self.watch(session, line, what, fx),
            Command::Unwatch(what) => {
                self.unwatch(session, what, fx);
                Next::Continue
            }
            // A heartbeat: its bytes were the sign of life; nothing to answer.
            Command::Ping if matches!(session.role, Role::Peer(_)) => Next::Continue,
            Command::Ping | Command::Challenge { .. } | Command::Invalid => {
                self.invalid(session, line, fx)
            }
        }
    }

    /// Whether `command` may come in on `session`'s port: a peer port
    /// carries herd traffic only; the client ports of a server with a peer
    /// port carry client commands only (docs/PROTOCOL.md §6); and on a
    /// mutual-TLS peer port, `HERD NAME` must be a name the certificate
    /// names (§12).
    fn port_allows(&self, session: &Session, command: &Command<'_>) -> bool {
        let herd_traffic = matches!(
            command,
            Command::Herd { .. }
                | Command::At(_)
                | Command::Auth { .. }
                | Command::Sync { .. }
                | Command::Ping
        );
        let client_command = matches!(
            command,
            Command::Iamat(_) | Command::Whatsat(_) | Command::Watch(_) | Command::Unwatch(_)
        );
        match session.port {
            Port::Peer if client_command => false,
            // A peer port takes updates from links only, open herd or not.
            Port::Peer if session.role == Role::Client && herd_traffic => {
                matches!(command, Command::Herd { .. }) && self.herd_named(session, command)
            }
            Port::Peer => true,
            // Lines over HTTP (`/v1/lines`, WebSocket) are client lines: a
            // herd link never comes that way.
            Port::Http | Port::Https => !herd_traffic,
            Port::Client | Port::Tls if self.peer_port && herd_traffic => {
                if let Command::Herd { name, .. } = command {
                    log::warn!(target: &self.name, "from {}: herd link from {} refused on the {} port: neighbours dial the peer port", session.peer, escape(name), session.port.label());
                }
                false
            }
            Port::Client | Port::Tls => true,
        }
    }

    /// On a mutual-TLS peer port: whether `HERD NAME` names a neighbour
    /// the connection's certificate names (always, without TLS).
    fn herd_named(&self, session: &Session, command: &Command<'_>) -> bool {
        let (Command::Herd { name, .. }, Some(names)) = (command, &session.cert_names) else {
            return true;
        };
        let named = names.iter().any(|n| n.as_bytes() == *name);
        if !named {
            log::warn!(target: &self.name, "from {}: herd link from {} refused: its certificate names {}", session.peer, escape(name), names.join(", "));
        }
        named
    }

    /// `WATCH`: the named clients (or every client) are followed from now
    /// on, and owed their stored position at once (the snapshot, which the
    /// loop delivers like any push; see [`crate::watch`]). Past
    /// `--watch-limit` names, or the server's limit of `WATCH *`
    /// watchers, the line is refused whole with `? `.
    fn watch(
        &mut self,
        session: &mut Session,
        line: &[u8],
        what: Watched<'_>,
        fx: &mut impl Effects,
    ) -> Next {
        if session.role != Role::Client || (session.watch.is_none() && !fx.can_watch()) {
            return self.invalid(session, line, fx);
        }
        let watch = session.watch.as_deref();
        match what {
            Watched::All => {
                if watch.is_some_and(Watch::watches_all) {
                    return Next::Continue;
                }
                if !fx.watch_all() {
                    log::info!(target: &self.name, "from {}: WATCH * refused: the server has its limit of such watchers", session.peer);
                    return self.invalid(session, line, fx);
                }
                let w = self.watcher(session, fx);
                w.add_all(&self.store);
            }
            Watched::Clients(clients) => {
                let known = watch.map_or(0, Watch::len);
                let new = clients
                    .filter(|c| !watch.is_some_and(|w| w.watches(c)))
                    .count();
                if known + new > self.watch_limit {
                    log::info!(target: &self.name, "from {}: WATCH refused: {} clients would pass --watch-limit {}", session.peer, known + new, self.watch_limit);
                    return self.invalid(session, line, fx);
                }
                let w = self.watcher(session, fx);
                for client in clients {
                    if let Some(place) = w.add(client) {
                        fx.watch(client, place);
                    }
                }
            }
        }
        Next::Continue
    }

    /// The session's watch, made (and the loop told) on its first `WATCH`.
    fn watcher<'s>(&self, session: &'s mut Session, fx: &mut impl Effects) -> &'s mut Watch {
        session.watch.get_or_insert_with(|| {
            fx.watching();
            Box::default()
        })
    }

    /// `UNWATCH`: stops following the named clients, every client (`*`),
    /// or (alone) everything. The connection stays a watcher: pushes may
    /// already be on their way, which a reply could not be told from. On
    /// a connection that watches nothing it does nothing.
    fn unwatch(&mut self, session: &mut Session, what: Option<Watched<'_>>, fx: &mut impl Effects) {
        let Some(w) = session.watch.as_deref_mut() else {
            return;
        };
        match what {
            Some(Watched::Clients(clients)) => {
                for client in clients {
                    if w.remove(client) {
                        fx.unwatch(client);
                    }
                }
            }
            Some(Watched::All) => {
                if w.remove_all(&self.store) {
                    fx.unwatch_all();
                }
            }
            None => {
                let names: Vec<Box<[u8]>> = w.names().map(Box::from).collect();
                for client in &names {
                    w.remove(client);
                    fx.unwatch(client);
                }
                if w.remove_all(&self.store) {
                    fx.unwatch_all();
                }
            }
        }
    }

    /// Answers `line` with `? ` + the line.
    fn invalid(&mut self, session: &Session, line: &[u8], fx: &mut impl Effects) -> Next {
        self.stats.request(Kind::Invalid);
        self.line.clear();
        protocol::write_invalid(&mut self.line, line);
        fx.reply(&self.line);
        if self.traffic {
            // The line itself was logged just above, as received: say so rather
            // than log its bytes (a client sending garbage doubles the log less).
            logging::traffic("to", &session.peer, b"? ", "(+ the line above)");
        }
        Next::Charge(line.len() + 1)
    }
}

#[cfg(test)]
mod tests;

//! What a server counts about itself, for the operator endpoint ([`crate::metrics`]).
//!
//! Each server owns one [`ServerStats`] behind an `Arc`: its loop thread
//! increments it, the endpoint's thread reads it at scrape time. Every
//! counter and gauge is a relaxed atomic (`AtomicU64`, `Ordering::Relaxed`)
//! with one writer, the server's loop thread, so an increment is [`bump`]:
//! a relaxed load and a relaxed store, with no lock and no allocation. Not
//! `fetch_add`: its locked instruction is a full barrier that waits for
//! every store the loop has buffered (the reply and log bytes just copied),
//! about 2% of the loop at 50 x 16 pipelined IAMATs, for an atomicity that
//! a single writer does not need. A reader still never sees a torn value.
//! Relaxed is enough because no reader draws conclusions from the *order*
//! of two counters; each value on its own is exact, and a scrape is a
//! sample.
//!
//! Per-neighbour figures ([`LinkStats`]) are one `Arc` per link, shared by the
//! link (which updates it) and the server's list in [`ServerStats`]. The list
//! is a `Mutex<Vec<_>>` touched only when a link is added or removed (at
//! start today; on a reload later) and at scrape time, never per update, so
//! neighbours can come and go while the server runs.
//!
//! The journal's figures ([`JournalStats`]) are the same kind of shared
//! atomics, owned by the journal; the server hands them here once.
//!
//! Readers take a [`ServerSnapshot`]: plain numbers, so the exposition
//! writer and the health check are pure functions, tested without a server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

/// Adds `n` to a counter whose only writer is the calling (loop) thread:
/// see the module header for why this is not `fetch_add`.
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Takes one off a gauge whose only writer is the calling (loop) thread.
fn drop_one(gauge: &AtomicU64) {
    gauge.store(gauge.load(Relaxed).saturating_sub(1), Relaxed);
}

/// What a client line was, for `herd_requests_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An IAMAT (answered with an AT line).
    Iamat = 0,
    /// A WHATSAT about a known client (answered with its AT line and Places).
    Whatsat = 1,
    /// Any line answered `? ` (a WHATSAT about an unknown client included),
    /// and over-long lines.
    Invalid = 2,
}

/// The label values of [`Kind`], by index.
pub const KINDS: [&str; 3] = ["iamat", "whatsat", "invalid"];

/// An HTTP request's route, for `herd_http_requests_total{route}`
/// (docs/PROTOCOL.md §14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// An OsmAnd location report: any path not under `/v1/`.
    Report = 0,
    /// `/v1/clients/ID`.
    Client = 1,
    /// `/v1/clients/ID/places`.
    Places = 2,
    /// `/v1/lines`.
    Lines = 3,
    /// `/v1/ws`.
    Ws = 4,
    /// Anything else under `/v1/`, and requests too malformed to route.
    Other = 5,
}

/// The label values of [`Route`], by index.
pub const ROUTES: [&str; 6] = ["report", "client", "places", "lines", "ws", "other"];

/// The HTTP statuses herd answers with, for `herd_http_requests_total{status}`;
/// anything else is counted as 500.
pub const STATUSES: [u16; 12] = [101, 200, 400, 401, 404, 405, 408, 413, 431, 500, 501, 505];

/// Where a stored update came from, for `herd_updates_stored_total{source}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An IAMAT from a client of this server.
    Client = 0,
    /// An AT line from a herd link.
    Link = 1,
}

/// The label values of [`Source`], by index.
pub const SOURCES: [&str; 2] = ["client", "link"];

/// The `port` label values of `herd_refused_connections_total`, in the
/// order of [`crate::engine::Port`].
pub const PORTS: [&str; 5] = ["client", "tls", "peer", "http", "https"];

/// The `kind` label values of `herd_tls_handshakes_total`: a full handshake
/// (certificate, signature, key exchange) or one resumed from a ticket.
pub const HANDSHAKES: [&str; 2] = ["full", "resumed"];

/// Places reply statuses (`places::Reply::status`), the `outcome` label.
/// Anything else is counted as `UNKNOWN_ERROR`.
pub const OUTCOMES: [&str; 5] = [
    "OK",
    "REQUEST_DENIED",
    "INVALID_REQUEST",
    "OVER_QUERY_LIMIT",
    "UNKNOWN_ERROR",
];

/// Upper bounds of the Places latency histogram's buckets, in seconds: the
/// Prometheus client defaults, which span a cached answer (milliseconds) to
/// the request deadline (`places::REQUEST_TIMEOUT`, 10 s).
pub const PLACES_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's start time (`process_start_time_seconds`): the first call
/// fixes it, so `main` calls it first thing.
pub fn process_start_time() -> SystemTime {
    static START: OnceLock<SystemTime> = OnceLock::new();
    *START.get_or_init(SystemTime::now)
}

/// One neighbour's link, as the server's loop sees it.
#[derive(Debug)]
pub struct LinkStats {
    neighbour: String,
    up: AtomicBool,
    queued: AtomicU64,
    catchups: AtomicU64,
    updates_sent: AtomicU64,
    update_bytes_sent: AtomicU64,
}

impl LinkStats {
    /// Figures for the link to `neighbour`: down, nothing queued.
    pub fn new(neighbour: &str) -> LinkStats {
        LinkStats {
            neighbour: neighbour.to_string(),
            up: AtomicBool::new(false),
            queued: AtomicU64::new(0),
            catchups: AtomicU64::new(0),
            updates_sent: AtomicU64::new(0),
            update_bytes_sent: AtomicU64::new(0),
        }
    }

    /// The link came up (`true`: it carries updates) or went down.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Relaxed);
        if !up {
            self.queued.store(0, Relaxed);
        }
    }

    /// Bytes the link holds for the neighbour after its last flush.
    pub fn set_queued(&self, bytes: usize) {
        self.queued.store(bytes as u64, Relaxed);
    }

    /// A catch-up (the whole store, after the link came up) was sent.
    pub fn catchup_sent(&self) {
        bump(&self.catchups, 1);
    }

    /// The flood queued one update of `bytes` (its `\n` included) for the
    /// neighbour: what a herd's capacity is measured in (docs/CAPACITY.md).
    pub fn update_sent(&self, bytes: usize) {
        bump(&self.updates_sent, 1);
        bump(&self.update_bytes_sent, bytes as u64);
    }

    fn snapshot(&self) -> LinkSnapshot {
        LinkSnapshot {
            neighbour: self.neighbour.clone(),
            up: self.up.load(Relaxed),
            queued_bytes: self.queued.load(Relaxed),
            catchups: self.catchups.load(Relaxed),
            updates_sent: self.updates_sent.load(Relaxed),
            update_bytes_sent: self.update_bytes_sent.load(Relaxed),
        }
    }
}

/// A journal's figures, shared by the journal (which writes them) and the
/// stats of its server.
#[derive(Debug, Default)]
pub struct JournalStats {
    appended: AtomicU64,
    failing: AtomicBool,
    failures: AtomicU64,
    /// The error of the current failing stretch; set once per stretch.
    error: Mutex<String>,
}

impl JournalStats {
    /// `bytes` were appended to the journal file.
    pub fn appended(&self, bytes: usize) {
        bump(&self.appended, bytes as u64);
        if self.failing.load(Relaxed) {
            self.failing.store(false, Relaxed);
        }
    }

    /// An append failed with `error`; `first`: the first of a failing stretch.
    pub fn failed(&self, error: &std::io::Error, first: bool) {
        bump(&self.failures, 1);
        if first {
            if let Ok(mut e) = self.error.lock() {
                *e = error.to_string();
            }
        }
        self.failing.store(true, Relaxed);
    }

    /// Whether the last append failed.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Relaxed)
    }

    fn snapshot(&self) -> JournalSnapshot {
        let failing = self.failing.load(Relaxed);
        JournalSnapshot {
            appended_bytes: self.appended.load(Relaxed),
            failing,
            failures: self.failures.load(Relaxed),
            error: if failing {
                self.error.lock().map(|e| e.clone()).unwrap_or_default()
            } else {
                String::new()
            },
        }
    }
}

/// Counts of a histogram in fixed buckets ([`PLACES_BUCKETS`]), plus the
/// overflow bucket, and the sum in nanoseconds.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; PLACES_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = PLACES_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(PLACES_BUCKETS.len());
        bump(&self.buckets[i], 1);
        bump(&self.sum_ns, d.as_nanos().min(u64::MAX as u128) as u64);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        // Cumulative, and the count is the last bucket: a scrape racing an
        // observation still sees `+Inf` equal to `_count`.
        let mut total = 0;
        let mut cumulative = Vec::with_capacity(self.buckets.len());
        for b in &self.buckets {
            total += b.load(Relaxed);
            cumulative.push(total);
        }
        HistogramSnapshot {
            cumulative,
            sum_seconds: self.sum_ns.load(Relaxed) as f64 / 1e9,
            count: total,
        }
    }
}

/// Whether a server's loop is running, with a way to wait for it.
#[derive(Debug, Default)]
struct Listening {
    flag: Mutex<bool>,
    changed: Condvar,
}

/// Everything one server counts; see the module header.
#[derive(Debug)]
pub struct ServerStats {
    name: String,
    listening: Listening,
    client_connections: AtomicU64,
    peer_connections: AtomicU64,
    requests: [AtomicU64; 3],
    stored_clients: AtomicU64,
    updates_stored: [AtomicU64; 2],
    evictions: AtomicU64,
    expiries: AtomicU64,
    refused: [AtomicU64; PORTS.len()],
    /// TLS handshakes done, by port ([`PORTS`]) and [`HANDSHAKES`].
    handshakes: [[AtomicU64; 2]; PORTS.len()],
    places: [AtomicU64; OUTCOMES.len()],
    places_latency: Histogram,
    http: [[AtomicU64; STATUSES.len()]; ROUTES.len()],
    websockets: AtomicU64,
    websockets_opened: AtomicU64,
    links: Mutex<Vec<Arc<LinkStats>>>,
    journal: Mutex<Option<Arc<JournalStats>>>,
    watchers: AtomicU64,
    /// Where the loop listens, by port label; set once, before it serves.
    listen: OnceLock<Vec<(&'static str, SocketAddr)>>,
    watch: WatchStats,
}

/// What WATCH counts (docs/PROTOCOL.md §15) besides the watchers.
#[derive(Debug, Default)]
struct WatchStats {
    pushed: AtomicU64,
    replaced: AtomicU64,
}

impl ServerStats {
    /// All zero, for server `name`.
    pub fn new(name: &str) -> ServerStats {
        ServerStats {
            name: name.to_string(),
            listening: Listening::default(),
            client_connections: AtomicU64::new(0),
            peer_connections: AtomicU64::new(0),
            requests: Default::default(),
            stored_clients: AtomicU64::new(0),
            updates_stored: Default::default(),
            evictions: AtomicU64::new(0),
            expiries: AtomicU64::new(0),
            refused: Default::default(),
            handshakes: Default::default(),
            places: Default::default(),
            places_latency: Histogram::default(),
            http: Default::default(),
            websockets: AtomicU64::new(0),
            websockets_opened: AtomicU64::new(0),
            links: Mutex::new(Vec::new()),
            journal: Mutex::new(None),
            watchers: AtomicU64::new(0),
            listen: OnceLock::new(),
            watch: WatchStats::default(),
        }
    }

    /// The server listens on these addresses, each with its port's label
    /// (`client`, `peer`, `tls`, ...). Set once, when its listeners are
    /// bound; a second call changes nothing (listen addresses never change
    /// while a server runs).
    pub fn set_listen(&self, addrs: Vec<(&'static str, SocketAddr)>) {
        let _ = self.listen.set(addrs);
    }

    /// Connections that watch clients (WATCH) now.
    pub fn set_watchers(&self, n: usize) {
        self.watchers.store(n as u64, Relaxed);
    }

    /// `n` positions were delivered to watchers (snapshots included).
    pub fn watch_pushed(&self, n: u64) {
        bump(&self.watch.pushed, n);
    }

    /// `n` undelivered positions were replaced by newer ones.
    pub fn watch_replaced(&self, n: u64) {
        bump(&self.watch.replaced, n);
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The loop started serving (`true`) or stopped.
    pub fn set_listening(&self, on: bool) {
        if let Ok(mut f) = self.listening.flag.lock() {
            *f = on;
        }
        self.listening.changed.notify_all();
    }

    /// Whether the loop is serving.
    pub fn is_listening(&self) -> bool {
        self.listening.flag.lock().map(|f| *f).unwrap_or(false)
    }

    /// Waits up to `timeout` for the loop to serve; true if it does.
    pub fn wait_listening(&self, timeout: Duration) -> bool {
        let Ok(guard) = self.listening.flag.lock() else {
            return false;
        };
        self.listening
            .changed
            .wait_timeout_while(guard, timeout, |on| !*on)
            .map(|(on, _)| *on)
            .unwrap_or(false)
    }

    /// A client connection was accepted.
    pub fn client_connected(&self) {
        bump(&self.client_connections, 1);
    }

    /// An accepted connection said `HERD NAME`: it is a neighbour's link now.
    pub fn became_peer(&self) {
        drop_one(&self.client_connections);
        bump(&self.peer_connections, 1);
    }

    /// An accepted connection closed; `client`: it was still a client's.
    pub fn closed(&self, client: bool) {
        if client {
            drop_one(&self.client_connections);
        } else {
            drop_one(&self.peer_connections);
        }
    }

    /// A connection to `port` was refused: its TLS handshake failed or
    /// timed out, its certificate named no neighbour, or on a peer port it
    /// never became a link.
    pub fn refused(&self, port: crate::engine::Port) {
        bump(&self.refused[port as usize], 1);
    }

    /// A TLS handshake on `port` is done: in full, or `resumed` from a
    /// ticket or the session cache.
    pub fn handshake(&self, port: crate::engine::Port, resumed: bool) {
        if let Some(by_kind) = self.handshakes.get(port as usize) {
            bump(&by_kind[usize::from(resumed)], 1);
        }
    }

    /// An HTTP request to `route` was answered with `status`.
    pub fn http(&self, route: Route, status: u16) {
        let i = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.iter().position(|&s| s == 500).unwrap_or(0));
        bump(&self.http[route as usize][i], 1);
    }

    /// A WebSocket connection opened (`true`) or closed.
    pub fn websocket(&self, open: bool) {
        if open {
            bump(&self.websockets, 1);
            bump(&self.websockets_opened, 1);
        } else {
            drop_one(&self.websockets);
        }
    }

    /// A client line of `kind` was answered.
    pub fn request(&self, kind: Kind) {
        bump(&self.requests[kind as usize], 1);
    }

    /// An update from `source` was stored; the store now holds `clients`.
    pub fn stored(&self, source: Source, clients: usize) {
        bump(&self.updates_stored[source as usize], 1);
        self.stored_clients.store(clients as u64, Relaxed);
    }

    /// The store holds `clients` (after a replay, an eviction, an expiry).
    pub fn set_stored_clients(&self, clients: usize) {
        self.stored_clients.store(clients as u64, Relaxed);
    }

    /// Clients evicted from a full store, and positions expired
    /// (`--position-ttl`), since start: the store's own totals, published
    /// once a second by the loop.
    pub fn set_bounds(&self, evicted: u64, expired: u64) {
        self.evictions.store(evicted, Relaxed);
        self.expiries.store(expired, Relaxed);
    }

    /// A Places request ended with `status` after `elapsed`.
    pub fn places(&self, status: &str, elapsed: Duration) {
        let i = OUTCOMES
            .iter()
            .position(|&o| o == status)
            .unwrap_or(OUTCOMES.len() - 1);
        bump(&self.places[i], 1);
        self.places_latency.observe(elapsed);
    }

    /// Adds (or, same neighbour name, replaces) a link's figures.
    pub fn add_link(&self, link: Arc<LinkStats>) {
        if let Ok(mut links) = self.links.lock() {
            links.retain(|l| l.neighbour != link.neighbour);
            links.push(link);
        }
    }

    /// Forgets the link to `neighbour` (it was removed from the herd).
    pub fn remove_link(&self, neighbour: &str) {
        if let Ok(mut links) = self.links.lock() {
            links.retain(|l| l.neighbour != neighbour);
        }
    }

    /// The server's journal, whose figures are read at scrape time.
    pub fn set_journal(&self, journal: Arc<JournalStats>) {
        if let Ok(mut j) = self.journal.lock() {
            *j = Some(journal);
        }
    }

    /// The numbers, now; `log_dropped` from [`crate::logging::lines_dropped`].
    pub fn snapshot(&self) -> ServerSnapshot {
        let load = |a: &AtomicU64| a.load(Relaxed);
        ServerSnapshot {
            name: self.name.clone(),
            listening: self.is_listening(),
            client_connections: load(&self.client_connections),
            peer_connections: load(&self.peer_connections),
            requests: self.requests.each_ref().map(load),
            stored_clients: load(&self.stored_clients),
            updates_stored: self.updates_stored.each_ref().map(load),
            evictions: load(&self.evictions),
            expiries: load(&self.expiries),
            refused: self.refused.each_ref().map(load),
            handshakes: self.handshakes.each_ref().map(|k| k.each_ref().map(load)),
            places: self.places.each_ref().map(load),
            places_latency: self.places_latency.snapshot(),
            http: self
                .http
                .each_ref()
                .map(|row| row.each_ref().map(|c| c.load(Relaxed))),
            websockets: self.websockets.load(Relaxed),
            websockets_opened: self.websockets_opened.load(Relaxed),
            links: self
                .links
                .lock()
                .map(|l| l.iter().map(|l| l.snapshot()).collect())
                .unwrap_or_default(),
            journal: self
                .journal
                .lock()
                .ok()
                .and_then(|j| j.as_ref().map(|j| j.snapshot())),
            log_dropped: crate::logging::lines_dropped(&self.name),
            watchers: load(&self.watchers),
            listen: self.listen.get().cloned().unwrap_or_default(),
            watch_pushed: load(&self.watch.pushed),
            watch_replaced: load(&self.watch.replaced),
        }
    }
}

/// A link's figures at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkSnapshot {
    /// The neighbour's name.
    pub neighbour: String,
    /// The link carries updates.
    pub up: bool,
    /// Bytes queued for the neighbour after the link's last write.
    pub queued_bytes: u64,
    /// Catch-ups sent since start.
    pub catchups: u64,
    /// Updates the flood queued for the neighbour since start (catch-ups
    /// not included), and their bytes.
    pub updates_sent: u64,
    pub update_bytes_sent: u64,
}

/// A journal's figures at one instant.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JournalSnapshot {
    /// Bytes appended since start.
    pub appended_bytes: u64,
    /// The last append failed.
    pub failing: bool,
    /// Appends that failed since start.
    pub failures: u64,
    /// The error, while failing.
    pub error: String,
}

/// A histogram at one instant: cumulative counts per bucket of
/// [`PLACES_BUCKETS`] then `+Inf` (whose count is `count`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramSnapshot {
    /// Observations at or below each bound, then in all (`+Inf`).
    pub cumulative: Vec<u64>,
    /// The sum of the observations, in seconds.
    pub sum_seconds: f64,
    /// Observations in all.
    pub count: u64,
}

/// A server's figures at one instant; indices as in [`KINDS`], [`SOURCES`],
/// [`OUTCOMES`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerSnapshot {
    /// The server's name.
    pub name: String,
    /// Its loop accepts clients.
    pub listening: bool,
    /// Open client connections.
    pub client_connections: u64,
    /// Open incoming herd links.
    pub peer_connections: u64,
    /// Client lines answered, by [`KINDS`].
    pub requests: [u64; 3],
    /// Clients in the store.
    pub stored_clients: u64,
    /// Updates stored, by [`SOURCES`].
    pub updates_stored: [u64; 2],
    /// Clients evicted from a full store.
    pub evictions: u64,
    /// Positions expired.
    pub expiries: u64,
    /// Connections refused, by [`PORTS`].
    pub refused: [u64; PORTS.len()],
    /// TLS handshakes done, by [`PORTS`] then [`HANDSHAKES`].
    pub handshakes: [[u64; 2]; PORTS.len()],
    /// Places requests answered, by [`OUTCOMES`].
    pub places: [u64; OUTCOMES.len()],
    /// Places latency.
    pub places_latency: HistogramSnapshot,
    /// HTTP requests answered, by [`ROUTES`] then [`STATUSES`].
    pub http: [[u64; STATUSES.len()]; ROUTES.len()],
    /// WebSocket connections open now.
    pub websockets: u64,
    /// WebSocket connections opened since start.
    pub websockets_opened: u64,
    /// One per outbound link.
    pub links: Vec<LinkSnapshot>,
    /// `None`: the server keeps no journal.
    pub journal: Option<JournalSnapshot>,
    /// Log lines dropped since start.
    pub log_dropped: u64,
    /// Connections watching clients now (§15).
    pub watchers: u64,
    /// Where it listens, by port label (`client` first).
    pub listen: Vec<(&'static str, SocketAddr)>,
    /// Positions delivered to watchers, snapshots included.
    pub watch_pushed: u64,
    /// Undelivered positions replaced by newer ones (conflated).
    pub watch_replaced: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_at_the_count() {
        let s = ServerStats::new("S");
        for ms in [1, 5, 7, 300, 20_000] {
            s.places("OK", Duration::from_millis(ms));
        }
        s.places("SOMETHING_NEW", Duration::from_millis(2));
        let snap = s.snapshot();
        let h = &snap.places_latency;
        assert_eq!(h.count, 6);
        assert_eq!(h.cumulative.len(), PLACES_BUCKETS.len() + 1);
        // le=0.005: 1, 5, 2 ms.
        assert_eq!(h.cumulative[0], 3);
        assert_eq!(h.cumulative[PLACES_BUCKETS.len() - 1], 5);
        assert_eq!(*h.cumulative.last().unwrap(), 6);
        assert!(h.cumulative.windows(2).all(|w| w[0] <= w[1]));
        assert!((h.sum_seconds - 20.315).abs() < 1e-9);
        assert_eq!(snap.places[0], 5);
        assert_eq!(snap.places[OUTCOMES.len() - 1], 1);
    }

    #[test]
    fn connections_move_between_clients_and_peers() {
        let s = ServerStats::new("S");
        s.client_connected();
        s.client_connected();
        s.became_peer();
        let snap = s.snapshot();
        assert_eq!((snap.client_connections, snap.peer_connections), (1, 1));
        s.closed(false);
        s.closed(true);
        let snap = s.snapshot();
        assert_eq!((snap.client_connections, snap.peer_connections), (0, 0));
    }

    #[test]
    fn links_come_and_go_and_a_journal_fails_and_recovers() {
        let s = ServerStats::new("S");
        let a = Arc::new(LinkStats::new("A"));
        s.add_link(a.clone());
        s.add_link(Arc::new(LinkStats::new("B")));
        a.set_up(true);
        a.set_queued(10);
        a.catchup_sent();
        a.update_sent(70);
        let snap = s.snapshot();
        assert_eq!(snap.links.len(), 2);
        assert_eq!(
            snap.links[0],
            LinkSnapshot {
                neighbour: "A".into(),
                up: true,
                queued_bytes: 10,
                catchups: 1,
                updates_sent: 1,
                update_bytes_sent: 70,
            }
        );
        s.remove_link("B");
        assert_eq!(s.snapshot().links.len(), 1);

        let j = Arc::new(JournalStats::default());
        s.set_journal(j.clone());
        j.appended(100);
        j.failed(&std::io::Error::other("disk full"), true);
        j.failed(&std::io::Error::other("another"), false);
        let js = s.snapshot().journal.unwrap();
        assert!(js.failing);
        assert_eq!((js.appended_bytes, js.failures), (100, 2));
        assert_eq!(js.error, "disk full");
        j.appended(5);
        let js = s.snapshot().journal.unwrap();
        assert!(!js.failing && js.error.is_empty());
    }

    #[test]
    fn waiting_for_the_loop_ends_when_it_listens() {
        let s = Arc::new(ServerStats::new("S"));
        assert!(!s.wait_listening(Duration::from_millis(1)));
        let t = {
            let s = s.clone();
            std::thread::spawn(move || s.set_listening(true))
        };
        assert!(s.wait_listening(Duration::from_secs(20)));
        t.join().unwrap();
    }
}

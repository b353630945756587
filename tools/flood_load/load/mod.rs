//! The client side of the load: connections playing mobile clients, on T
//! threads with one `mio::Poll` each.
//!
//! * [`run_rr`]: C connections, each with its own client ID, keep W requests
//!   in flight (flat out), or send at a target total rate with at most W in
//!   flight per connection (open loop). Every IAMAT carries a new position
//!   and a fresh timestamp (the wall clock, made strictly increasing per
//!   client so every update is newer). Latency is from the moment a request
//!   is written to the moment its whole reply is read.
//! * [`run_churn`]: C concurrent connection cycles — connect, one IAMAT,
//!   shut down writing, read to EOF, close — each a new client ID; latency is
//!   the whole cycle.
//!
//! Connections are bound before connecting to a source address spread over
//! 127.0.0.1..=127.0.0.N, so many thousands of connections (and connection
//! churn's TIME_WAITs) never run out of ephemeral ports.
//!
//! With `--tls`, every connection is TLS over its socket, driven by herd's
//! own [`herd::tls::stream::Stream`] as the server drives its connections;
//! rr connections finish their handshakes before the warm-up starts, as
//! their TCP connects do, so a TLS run's figures compare with a plain one's.
//! With `--tls-resume` ([`tls::visit`]) each rr connection is a phone that
//! was connected before: a connection of its own, fully handshaken and
//! closed first, leaves it a ticket, and the measured connection resumes.
//!
//! With [`Spec::wire`] `Http` or `Ws`, the rr connections speak herd's
//! HTTP front instead (OsmAnd reports over keep-alive HTTP, or lines over a
//! WebSocket upgraded before the warm-up): [`front`].
//!
//! Modules: [`client`] (what a mobile client sends), [`net`] (its sockets),
//! [`front`] (its HTTP and WebSocket side), [`tls`] (the client configuration and the handshakes), [`rr`] and
//! [`churn`] (one thread of each load); here, what a run is
//! ([`Spec`]), what it measured ([`Outcome`]), and the threads that run it.

mod churn;
mod client;
mod front;
mod net;
mod rr;
mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::hist::Hist;

pub use client::{fnv, wall_ns, ClientId};
pub use front::{exchange, FrontConn, Reply, Wire};
pub use net::{connect_blocking, source};
pub use tls::{stream, TlsClient};

/// The longest reply line the tool expects; herd's are far shorter (a
/// Places JSON line is at most a few hundred bytes).
pub const REPLY_LINE_LIMIT: usize = 1 << 20;

/// Error texts kept to show (the count is always exact).
const ERROR_SAMPLES: usize = 5;

/// Counters every thread adds to as it goes, for the progress line.
#[derive(Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub errors: AtomicU64,
}

impl Progress {
    /// Adds what a thread's tally gained since `reported`, its last report.
    fn report(&self, tally: &Tally, reported: &mut (u64, u64)) {
        let now = (tally.done_all, tally.out.errors);
        if now != *reported {
            self.done.fetch_add(now.0 - reported.0, Ordering::Relaxed);
            self.errors.fetch_add(now.1 - reported.1, Ordering::Relaxed);
            *reported = now;
        }
    }
}

/// What one run measured.
#[derive(Default)]
pub struct Outcome {
    /// IAMAT reply latency (churn: the whole cycle), requests sent in the window.
    pub iamat: Hist,
    /// WHATSAT reply latency (up to the empty line ending the JSON).
    pub whatsat: Hist,
    /// Replies (churn: cycles) completed inside the measured window.
    pub done: u64,
    /// Requests sent inside the measured window.
    pub sent: u64,
    /// Open loop: requests that could not go out when due because every
    /// connection already had its W in flight (the server fell behind).
    pub late: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Connections established (rr) / threads' slots (churn).
    pub connected: usize,
    /// The first and last IAMAT timestamps sent in the measured window (for
    /// matching with what the Probe saw); (0, 0) if none.
    pub window_wall_ns: (u128, u128),
    pub window: Duration,
    /// TLS handshakes completed in full, and resumed from a ticket (churn:
    /// of the cycles completed in the window; rr: of its connections, at
    /// the start; not the earlier visits of `--tls-resume`).
    pub tls_full: u64,
    pub tls_resumed: u64,
}

impl Outcome {
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES {
            self.error_samples.push(what);
        }
    }

    fn merge(&mut self, other: Outcome) {
        self.iamat.merge(&other.iamat);
        self.whatsat.merge(&other.whatsat);
        self.done += other.done;
        self.sent += other.sent;
        self.late += other.late;
        self.errors += other.errors;
        for s in other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES {
                self.error_samples.push(s);
            }
        }
        self.connected += other.connected;
        self.tls_full += other.tls_full;
        self.tls_resumed += other.tls_resumed;
        self.window = other.window;
        self.window_wall_ns = match (self.window_wall_ns, other.window_wall_ns) {
            ((0, 0), w) | (w, (0, 0)) => w,
            ((a, b), (c, d)) => (a.min(c), b.max(d)),
        };
    }

    /// Completed per second over the measured window.
    pub fn rate(&self) -> f64 {
        self.done as f64 / self.window.as_secs_f64().max(1e-9)
    }
}

/// What a load run does.
#[derive(Clone)]
pub struct Spec {
    pub addr: SocketAddr,
    pub conns: usize,
    pub threads: usize,
    /// Requests in flight per connection (the most, under a target rate).
    pub inflight: usize,
    /// Total requests per second; 0: flat out.
    pub rate: f64,
    pub warmup: Duration,
    pub duration: Duration,
    /// Percentage of requests that are WHATSATs (after a client's first IAMAT).
    pub whatsat_pct: u32,
    pub sources: u32,
    /// Client IDs are `PREFIX-N`.
    pub prefix: String,
    /// `--tls`: connections speak TLS.
    pub tls: Option<TlsClient>,
    /// What rr's connections speak: lines, OsmAnd over HTTP, or WebSocket.
    pub wire: Wire,
}

/// Runs `body` on `spec.threads` threads after they all set up, prints a
/// progress line on stderr each second if `progress`, merges the outcomes.
fn run_threads(
    spec: &Spec,
    progress: bool,
    what: &'static str,
    body: fn(&Spec, usize, &Barrier, &Progress) -> io::Result<Outcome>,
) -> io::Result<Outcome> {
    let threads = spec.threads.max(1);
    let shared = Arc::new(Progress::default());
    let barrier = Arc::new(Barrier::new(threads + 1));
    let mut handles = Vec::new();
    for t in 0..threads {
        let (spec, shared, barrier) = (spec.clone(), shared.clone(), barrier.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || {
                    let r = body(&spec, t, &barrier, &shared);
                    if r.is_err() {
                        // Never leave the others waiting at the barrier.
                        barrier.wait();
                    }
                    r
                })?,
        );
    }
    barrier.wait();
    let start = Instant::now();
    let mut last = (0, 0);
    let mut tick = 1;
    while !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(20));
        if progress && start.elapsed() >= Duration::from_secs(tick) {
            let done = shared.done.load(Ordering::Relaxed);
            let errors = shared.errors.load(Ordering::Relaxed);
            let phase = if start.elapsed() <= spec.warmup {
                " (warm-up)"
            } else {
                ""
            };
            eprintln!(
                "[{tick:>3}s] {what}: {}/s, errors {}{phase}",
                done - last.0,
                errors - last.1
            );
            last = (done, errors);
            tick += 1;
        }
    }
    let mut total = Outcome::default();
    for h in handles {
        let r = h
            .join()
            .map_err(|_| io::Error::other("a load thread panicked"))??;
        total.merge(r);
    }
    Ok(total)
}

/// Request/reply load; see the module doc.
pub fn run_rr(spec: &Spec, progress: bool) -> io::Result<Outcome> {
    run_threads(spec, progress, "replies", rr::rr_thread)
}

/// Connection churn; see the module doc.
pub fn run_churn(spec: &Spec, progress: bool) -> io::Result<Outcome> {
    run_threads(spec, progress, "cycles", churn::churn_thread)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Iamat,
    Whatsat,
}

/// Times and tallies of one thread.
struct Tally {
    measure_from: Instant,
    out: Outcome,
    /// Everything completed, warm-up included, for the progress line.
    done_all: u64,
}

impl Tally {
    fn completed(&mut self, kind: Kind, sent: Instant, now: Instant) {
        self.done_all += 1;
        if now >= self.measure_from {
            self.out.done += 1;
        }
        if sent >= self.measure_from {
            let h = match kind {
                Kind::Iamat => &mut self.out.iamat,
                Kind::Whatsat => &mut self.out.whatsat,
            };
            h.record(now.saturating_duration_since(sent).as_nanos() as u64);
        }
    }
}

fn show(line: &[u8]) -> String {
    let cut = &line[..line.len().min(100)];
    cut.escape_ascii().to_string()
}

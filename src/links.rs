//! Herd links: the connections a server dials to its neighbours.
//!
//! ## One-way links
//! Every server dials every neighbour of `herd.conf` and *sends* on that
//! connection only; what a neighbour sends us arrives on the connection *it*
//! dialled, which our listener accepted like any client and which became a
//! peer when it said `HERD NAME` (see `conn::Role::Peer`). So between two
//! neighbours there are two TCP connections, one per direction. Two servers
//! dialling each other at once therefore never race over which connection
//! to keep: there is nothing to resolve, and nothing flaps.
//!
//! ## A link's life
//! `Idle` (waiting for the retry time) → `Connecting` (a nonblocking connect
//! in the poll; done on WRITABLE when `take_error` is empty and `peer_addr`
//! answers, failed on an error or after [`CONNECT_TIMEOUT`]) → `Up`. On `Up`
//! the link sends `HERD NAME` (and, with a shared secret, completes the
//! handshake of `auth` first), then `SYNC COUNT` and its whole store
//! (*catch-up*), then every update flooded to it. Any error, EOF or an output backlog past
//! the output cap takes it back to `Idle` with a [`Backoff`] delay.
//! A link is only ever read to notice that the neighbour went away.
//!
//! ## Catch-up
//! The store's entries have stable indices, so catch-up is a cursor over
//! `0..len` taken when the link comes up: the link copies the next entries
//! into its output whenever the output has drained below
//! [`CATCHUP_LOW_WATER`]. A store of any size streams under the same output
//! cap as floods, and the lines sent are the newest at the time they are
//! sent. Updates stored meanwhile are flooded as usual; a duplicate is simply
//! "not newer" at the receiver.
//!
//! ## Why floods end and the herd converges
//! A server forwards an update only when it *stored* it, i.e. when it was
//! strictly newer in the store's total order (client timestamp, then line
//! bytes; see `store`). Each server stores a given line at most once, so each
//! line crosses each link at most once per direction: every flood ends. A
//! line that loses at some server is dominated there by a larger one, which
//! that server itself flooded or received; by induction over the links every
//! connected server ends with the largest line it can reach, and catch-up at
//! each link-up repairs whatever a link missed while down.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::auth::{self, Secret};
use crate::conn::{Flush, LineReader, Output, Piece};
use crate::logging::escape;
use crate::protocol::{self, Command};
use crate::stats::LinkStats;
use crate::store::Store;

use crate::token::LINK_BASE as LINK_TOKEN_BASE;
/// The default output a link may hold for a neighbour that does not read;
/// past it the link is dropped, and catch-up repairs the gap when it is
/// dialled again.
pub const DEFAULT_LINK_OUTPUT_CAP: usize = 64 * 1024 * 1024;
/// Catch-up refills a link's output when it has drained below this...
pub const CATCHUP_LOW_WATER: usize = 256 * 1024;
/// ...up to about this much.
pub const CATCHUP_HIGH_WATER: usize = 1024 * 1024;
/// A connect that has not finished by then is abandoned and retried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A neighbour that has not answered our authenticating `HERD` by then is
/// dropped and dialled again.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Reconnect delays: exponential from [`Backoff::FIRST`], capped at
/// [`Backoff::MAX`], each drawn uniformly from the upper half of its step
/// (jitter, so restarted herds do not dial in lockstep). Plain data: the
/// caller passes `now` and gets the retry instant.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// The first step: the first retry comes within this.
    pub const FIRST: Duration = Duration::from_millis(100);
    /// The largest step: retries are never further apart than this.
    pub const MAX: Duration = Duration::from_millis(500);

    /// A backoff at its first step, with its own random stream.
    pub fn new(seed: u64) -> Backoff {
        Backoff {
            attempt: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// When to retry after a failure at `now`; each call steps up.
    pub fn next_retry(&mut self, now: Instant) -> Instant {
        let step = Self::FIRST
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(Self::MAX);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        let jitter = half.mul_f64(self.rng.f64());
        now + half + jitter
    }

    /// Back to the first step (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

enum State {
    Idle {
        retry_at: Instant,
    },
    Connecting {
        stream: TcpStream,
        deadline: Instant,
    },
    Up {
        stream: TcpStream,
        interest: Interest,
        /// Connected, but the neighbour has not yet proved it knows the
        /// secret: nothing but the handshake is sent.
        handshake: Option<Box<Handshake>>,
    },
}

struct Handshake {
    /// Our nonce, sent in `HERD NAME NONCE`.
    nonce: String,
    /// For the neighbour's `CHALLENGE` line.
    reader: LineReader,
    deadline: Instant,
}

/// The longest handshake line a neighbour may send.
const HANDSHAKE_LINE_LIMIT: usize = 1024;

struct CatchUp {
    next: usize,
    end: usize,
    started: Instant,
}

/// One neighbour's outbound link.
struct Link {
    name: String,
    addr: SocketAddr,
    state: State,
    backoff: Backoff,
    out: Output,
    catchup: Option<CatchUp>,
    /// Has this link ever been up (for "re-established" in the log)?
    was_up: bool,
    /// A failed connect was logged for the current outage.
    outage_logged: bool,
    /// The link must be dropped at the next flush (output past the cap).
    overflowed: bool,
    /// Up, bytes queued, catch-ups: read by the operator endpoint.
    stats: Arc<LinkStats>,
}

/// All of a server's outbound links.
pub struct Links {
    server: String,
    secret: Option<Secret>,
    output_cap: usize,
    hello: Vec<u8>,
    links: Vec<Link>,
}

impl Links {
    /// Links to `neighbours` (name, address), all due to dial at `now`; a
    /// link whose pending output passes `output_cap` bytes is dropped.
    pub fn new(
        server: &str,
        neighbours: &[(String, SocketAddr)],
        output_cap: usize,
        secret: Option<Secret>,
        now: Instant,
    ) -> Links {
        let links = neighbours
            .iter()
            .enumerate()
            .map(|(i, (name, addr))| Link {
                name: name.clone(),
                addr: *addr,
                state: State::Idle { retry_at: now },
                backoff: Backoff::new(seed(server, i)),
                out: Output::default(),
                catchup: None,
                was_up: false,
                outage_logged: false,
                overflowed: false,
                stats: Arc::new(LinkStats::new(name)),
            })
            .collect();
        Links {
            server: server.to_string(),
            secret,
            output_cap,
            hello: format!("HERD {server}\n").into_bytes(),
            links,
        }
    }

    /// The neighbour index of a link token.
    pub fn index_of_token(&self, token: Token) -> Option<usize> {
        token
            .0
            .checked_sub(LINK_TOKEN_BASE)
            .filter(|&i| i < self.links.len())
    }

    /// The neighbour index of the server called `name`.
    pub fn index_of_name(&self, name: &[u8]) -> Option<usize> {
        self.links.iter().position(|l| l.name.as_bytes() == name)
    }

    /// Each link's figures, for the server's stats.
    pub fn stats(&self) -> Vec<Arc<LinkStats>> {
        self.links.iter().map(|l| l.stats.clone()).collect()
    }

    /// How many neighbours this server has.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// True when the server has no neighbours.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// Queues `line` (with its `\n`) to every link that is up, except the
    /// neighbour it came from.
    pub fn flood(&mut self, line: &[u8], except: Option<usize>) {
        let cap = self.output_cap;
        for (i, link) in self.links.iter_mut().enumerate() {
            if Some(i) == except || !link.is_ready() {
                continue;
            }
            link.out.buf().extend_from_slice(line);
            if link.out.len() > cap {
                link.overflowed = true;
            }
        }
    }

    /// Handles readiness on link `i`.
    pub fn on_event(&mut self, i: usize, event: &Event, registry: &Registry, now: Instant) {
        let server = &self.server;
        let Some(link) = self.links.get_mut(i) else {
            return;
        };
        match &mut link.state {
            State::Idle { .. } => {}
            State::Connecting { stream, .. } => {
                if !(event.is_writable() || event.is_error() || event.is_write_closed()) {
                    return;
                }
                match connect_result(stream) {
                    Ok(true) => link.up(server, &self.hello, self.secret.is_some(), now),
                    // Spurious wake-up: the connect is still under way.
                    Ok(false) => {}
                    Err(e) => link.connect_failed(server, registry, &e, now),
                }
            }
            State::Up {
                stream, handshake, ..
            } => {
                if !(event.is_readable() || event.is_read_closed() || event.is_error()) {
                    return;
                }
                // Links carry no replies: we read to notice EOF, to take the
                // handshake's CHALLENGE, and to log what a neighbour sends
                // back (a `? ` means it refused a line).
                let mut buf = [0u8; 4096];
                let mut outcome = Ok(None);
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) => {
                            outcome = Err("closed by the neighbour".to_string());
                            break;
                        }
                        Ok(n) => match handshake.as_deref_mut() {
                            Some(h) => {
                                let (secret, nonce) = (&self.secret, &h.nonce);
                                h.reader.feed(&buf[..n], HANDSHAKE_LINE_LIMIT, |p| {
                                    if matches!(outcome, Ok(None)) {
                                        outcome =
                                            check_challenge(server, secret.as_ref(), nonce, p);
                                    }
                                });
                                if outcome.is_err() {
                                    break;
                                }
                            }
                            None => {
                                log::warn!(target: server, "link to {} sent back: {}", link.name, escape(&buf[..n.min(200)]));
                            }
                        },
                        // Drained: nothing more until the next event.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            outcome = Err(e.to_string());
                            break;
                        }
                    }
                }
                match outcome {
                    Err(why) => link.down(server, registry, &why, now),
                    Ok(Some(auth_line)) => link.authenticated(server, &auth_line, now),
                    Ok(None) => {}
                }
            }
        }
    }

    /// Writes what every link has pending, refilling catch-up from `store`.
    pub fn flush(&mut self, registry: &Registry, store: &Store, now: Instant) {
        for (i, link) in self.links.iter_mut().enumerate() {
            if link.overflowed {
                link.down(
                    &self.server,
                    registry,
                    "neighbour not reading: output cap reached",
                    now,
                );
                continue;
            }
            let State::Up {
                stream, interest, ..
            } = &mut link.state
            else {
                continue;
            };
            let result = loop {
                if let Some(c) = &mut link.catchup {
                    if c.end == usize::MAX {
                        // First flush since the link came up: the store as it
                        // is now, announced so the receiver can log it.
                        c.end = store.len();
                        let buf = link.out.buf();
                        buf.extend_from_slice(format!("SYNC {}\n", c.end).as_bytes());
                    }
                    if link.out.len() < CATCHUP_LOW_WATER {
                        let buf = link.out.buf();
                        while c.next < c.end && buf.len() < CATCHUP_HIGH_WATER {
                            if let Some(e) = store.entry(c.next) {
                                buf.extend_from_slice(&e.line);
                                buf.push(b'\n');
                            }
                            c.next += 1;
                        }
                    }
                }
                match link.out.flush_to(stream) {
                    Ok(Flush::Done) => match &link.catchup {
                        Some(c) if c.next < c.end => continue,
                        Some(c) => {
                            log::info!(target: &self.server, "catch-up to {}: sent {} updates in {:.1} ms", link.name, c.end, c.started.elapsed().as_secs_f64() * 1e3);
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
            let want = match result {
                Ok(Flush::Done) => Interest::READABLE,
                Ok(Flush::WouldBlock) => Interest::READABLE | Interest::WRITABLE,
                Err(e) => {
                    link.down(&self.server, registry, &e.to_string(), now);
                    continue;
                }
            };
            if want != *interest {
                if let Err(e) = registry.reregister(stream, Token(LINK_TOKEN_BASE + i), want) {
                    link.down(&self.server, registry, &e.to_string(), now);
                    continue;
                }
                *interest = want;
            }
        }
    }

    /// Neighbour `i` just dialled us, so it is up: if our link to it is
    /// waiting out a backoff, dial at the end of this turn instead.
    pub fn neighbour_is_up(&mut self, i: usize, now: Instant) {
        if let Some(link) = self.links.get_mut(i) {
            if let State::Idle { retry_at } = &mut link.state {
                *retry_at = (*retry_at).min(now);
            }
        }
    }

    /// The earliest retry or connect deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.links
            .iter()
            .filter_map(|l| match &l.state {
                State::Idle { retry_at } => Some(*retry_at),
                State::Connecting { deadline, .. } => Some(*deadline),
                State::Up {
                    handshake: Some(h), ..
                } => Some(h.deadline),
                State::Up { .. } => None,
            })
            .min()
    }

    /// Dials links whose retry time has come; abandons connects past their
    /// deadline.
    pub fn on_timeout(&mut self, registry: &Registry, now: Instant) {
        for (i, link) in self.links.iter_mut().enumerate() {
            match &link.state {
                State::Idle { retry_at } if *retry_at <= now => {
                    link.dial(&self.server, registry, Token(LINK_TOKEN_BASE + i), now);
                }
                State::Connecting { deadline, .. } if *deadline <= now => {
                    let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                    link.connect_failed(&self.server, registry, &e, now);
                }
                State::Up {
                    handshake: Some(h), ..
                } if h.deadline <= now => {
                    link.down(
                        &self.server,
                        registry,
                        "no CHALLENGE in time: does the neighbour have the secret?",
                        now,
                    );
                }
                _ => {}
            }
        }
    }

    /// Closes every link (at shutdown).
    pub fn close_all(&mut self, registry: &Registry) {
        for link in &mut self.links {
            if let State::Up { stream, .. } | State::Connecting { stream, .. } = &mut link.state {
                let _ = registry.deregister(stream);
            }
            link.state = State::Idle {
                retry_at: Instant::now(),
            };
        }
    }
}

impl Link {
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

    /// The connect finished: send the hello, and either start catch-up at
    /// once (open herd) or wait for the neighbour's CHALLENGE.
    fn up(&mut self, server: &str, hello: &[u8], authenticate: bool, now: Instant) {
        let old = std::mem::replace(&mut self.state, State::Idle { retry_at: now });
        let State::Connecting { stream, .. } = old else {
            return;
        };
        let _ = stream.set_nodelay(true);
        self.outage_logged = false;
        self.overflowed = false;
        self.backoff.reset();
        self.out = Output::default();
        self.catchup = None;
        let handshake = if authenticate {
            let nonce = auth::nonce();
            let buf = self.out.buf();
            buf.extend_from_slice(&hello[..hello.len() - 1]);
            buf.push(b' ');
            buf.extend_from_slice(nonce.as_bytes());
            buf.push(b'\n');
            Some(Box::new(Handshake {
                nonce,
                reader: LineReader::default(),
                deadline: now + HANDSHAKE_TIMEOUT,
            }))
        } else {
            self.out.buf().extend_from_slice(hello);
            None
        };
        self.state = State::Up {
            stream,
            interest: Interest::READABLE | Interest::WRITABLE,
            handshake,
        };
        if !authenticate {
            self.ready(server, "", now);
        }
    }

    /// The neighbour's CHALLENGE checked out: prove ourselves and go.
    fn authenticated(&mut self, server: &str, auth_line: &[u8], now: Instant) {
        if let State::Up { handshake, .. } = &mut self.state {
            *handshake = None;
        }
        self.out.buf().extend_from_slice(auth_line);
        self.ready(server, ", authenticated", now);
    }

    /// The link carries updates from now on, starting with catch-up of the
    /// whole store; `flush` fixes its end to the store's length when it
    /// first runs.
    fn ready(&mut self, server: &str, how: &str, now: Instant) {
        log::info!(target: server, "link to {} {}{how} ({})", self.name, if self.was_up { "re-established" } else { "up" }, self.addr);
        self.was_up = true;
        self.stats.set_up(true);
        self.catchup = Some(CatchUp {
            next: 0,
            end: usize::MAX,
            started: now,
        });
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
        if let State::Up { stream, .. } | State::Connecting { stream, .. } = &mut self.state {
            let _ = registry.deregister(stream);
        }
        log::info!(target: server, "link to {} down: {why}", self.name);
        self.stats.set_up(false);
        self.state = State::Idle {
            retry_at: self.backoff.next_retry(now),
        };
        self.out = Output::default();
        self.catchup = None;
        self.overflowed = false;
    }
}

/// Checks a line the neighbour sent during the handshake: `Ok(Some(AUTH
/// line))` when it is a CHALLENGE that proves the secret, `Ok(None)` for a
/// blank line, `Err(why)` for anything else.
fn check_challenge(
    server: &str,
    secret: Option<&Secret>,
    nonce: &str,
    piece: Piece<'_>,
) -> Result<Option<Vec<u8>>, String> {
    let Piece::Line(line) = piece else {
        return Err("neighbour sent an over-long line during the handshake".to_string());
    };
    let Some(secret) = secret else {
        return Err("handshake without a secret".to_string());
    };
    match protocol::parse(line) {
        Command::Blank => Ok(None),
        Command::Challenge { nonce: nb, mac } => {
            let me = server.as_bytes();
            if !auth::is_nonce(nb) || !secret.verify_accept(me, nonce.as_bytes(), nb, mac) {
                return Err(
                    "the neighbour failed authentication: wrong secret, or not a herd server"
                        .to_string(),
                );
            }
            let proof = secret.dial_mac(me, nonce.as_bytes(), nb);
            Ok(Some(format!("AUTH {proof}\n").into_bytes()))
        }
        _ => Err(format!(
            "the neighbour refused the handshake: {}",
            escape(&line[..line.len().min(200)])
        )),
    }
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

fn seed(server: &str, i: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in server.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    h ^ (i as u64) ^ fastrand::u64(..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_retry_within_the_first_step_and_never_past_the_max() {
        let now = Instant::now();
        for seed in 0..50 {
            let mut b = Backoff::new(seed);
            let first = b.next_retry(now) - now;
            assert!(
                first <= Backoff::FIRST && first >= Backoff::FIRST / 2,
                "{first:?}"
            );
            assert!(Backoff::FIRST <= Duration::from_millis(200));
            for _ in 0..40 {
                let d = b.next_retry(now) - now;
                assert!(d <= Backoff::MAX && d >= Backoff::FIRST / 2, "{d:?}");
            }
            assert!(Backoff::MAX <= Duration::from_secs(2));
        }
    }

    #[test]
    fn backoff_grows_then_resets() {
        let now = Instant::now();
        let mut b = Backoff::new(7);
        let mut last = Duration::ZERO;
        let mut steps = Vec::new();
        for _ in 0..6 {
            let d = b.next_retry(now) - now;
            steps.push(d);
            last = d;
        }
        // At the cap every delay lies in the cap's upper half.
        assert!(last >= Backoff::MAX / 2);
        b.reset();
        assert!(b.next_retry(now) - now <= Backoff::FIRST);
    }

    #[test]
    fn jitter_spreads_retries() {
        let now = Instant::now();
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|s| {
                let mut b = Backoff::new(s);
                b.next_retry(now) - now
            })
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}

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

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herd::conn::{LineReader, Piece};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::hist::Hist;

/// The longest reply line the tool expects; herd's are far shorter (a
/// Places JSON line is at most a few hundred bytes).
pub const REPLY_LINE_LIMIT: usize = 1 << 20;

/// Error texts kept to show (the count is always exact).
const ERROR_SAMPLES: usize = 5;

/// The source address of connection `i` when spreading over `sources`
/// loopback addresses (0: let the kernel choose).
pub fn source(i: usize, sources: u32) -> Option<SocketAddr> {
    if sources == 0 {
        return None;
    }
    let host = 1 + (i as u32 % sources.min(254)) as u8;
    Some(SocketAddr::from(([127, 0, 0, host], 0)))
}

fn socket(dst: SocketAddr, src: Option<SocketAddr>) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(src) = src {
        socket.bind(&SockAddr::from(src))?;
    }
    Ok(socket)
}

/// A blocking connection from `src` (if any) to `dst`.
pub fn connect_blocking(
    dst: SocketAddr,
    src: Option<SocketAddr>,
) -> io::Result<std::net::TcpStream> {
    let socket = socket(dst, src)?;
    socket.connect(&SockAddr::from(dst))?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket.into())
}

/// A nonblocking connect from `src` (if any) to `dst`, under way.
pub fn connect_nonblocking(dst: SocketAddr, src: Option<SocketAddr>) -> io::Result<TcpStream> {
    let socket = socket(dst, src)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&SockAddr::from(dst)) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(115) => {} // EINPROGRESS
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// The wall clock in nanoseconds since the epoch.
pub fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// One mobile client: its ID, and what makes each IAMAT new.
pub struct ClientId {
    pub id: Vec<u8>,
    salt: u64,
    seq: u64,
    last_ns: u128,
}

impl ClientId {
    pub fn new(id: String) -> ClientId {
        let salt = fnv(id.as_bytes());
        ClientId {
            id: id.into_bytes(),
            salt,
            seq: 0,
            last_ns: 0,
        }
    }

    /// Appends `IAMAT ID +LAT-LNG TIME\n`: a new position, and a timestamp
    /// from `wall_ns` made strictly larger than the last one. Returns the
    /// timestamp.
    pub fn iamat(&mut self, out: &mut Vec<u8>, wall_ns: u128) -> u128 {
        self.seq += 1;
        let t = wall_ns.max(self.last_ns + 1);
        self.last_ns = t;
        let h = mix(self.seq ^ self.salt);
        out.extend_from_slice(b"IAMAT ");
        out.extend_from_slice(&self.id);
        out.push(b' ');
        degrees(out, (h % 180_000_001) as i64 - 90_000_000);
        degrees(out, ((h >> 32) % 360_000_001) as i64 - 180_000_000);
        out.push(b' ');
        herd::protocol::write_decimal(out, u128::from((t / 1_000_000_000) as u64));
        out.push(b'.');
        let mut frac = [b'0'; 9];
        let mut f = (t % 1_000_000_000) as u64;
        for d in frac.iter_mut().rev() {
            *d = b'0' + (f % 10) as u8;
            f /= 10;
        }
        out.extend_from_slice(&frac);
        out.push(b'\n');
        t
    }

    /// Appends `WHATSAT ID 10 5\n`: places near this client itself.
    pub fn whatsat(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"WHATSAT ");
        out.extend_from_slice(&self.id);
        out.extend_from_slice(b" 10 5\n");
    }
}

/// Micro-degrees as `+D.DDDDDD` / `-D.DDDDDD`.
fn degrees(out: &mut Vec<u8>, micro: i64) {
    out.push(if micro < 0 { b'-' } else { b'+' });
    let m = micro.unsigned_abs();
    herd::protocol::write_decimal(out, u128::from(m / 1_000_000));
    out.push(b'.');
    let mut frac = [b'0'; 6];
    let mut f = m % 1_000_000;
    for d in frac.iter_mut().rev() {
        *d = b'0' + (f % 10) as u8;
        f /= 10;
    }
    out.extend_from_slice(&frac);
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a, to tell client IDs apart cheaply.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

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
    run_threads(spec, progress, "replies", rr_thread)
}

/// Connection churn; see the module doc.
pub fn run_churn(spec: &Spec, progress: bool) -> io::Result<Outcome> {
    run_threads(spec, progress, "cycles", churn_thread)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Iamat,
    Whatsat,
}

struct Pending {
    kind: Kind,
    sent: Instant,
}

/// One request/reply connection.
struct Conn {
    stream: TcpStream,
    client: ClientId,
    out: Vec<u8>,
    out_pos: usize,
    writable: bool,
    reader: LineReader,
    pending: VecDeque<Pending>,
    /// Inside a WHATSAT's JSON, until its empty line.
    in_body: bool,
    /// An IAMAT was answered: WHATSATs about this client make sense.
    known: bool,
    dead: bool,
    rng: u64,
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

impl Conn {
    fn send(&mut self, spec: &Spec, now: Instant, wall: u128, tally: &mut Tally) {
        self.rng = mix(self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15));
        let kind = if self.known && (self.rng % 100) < u64::from(spec.whatsat_pct) {
            self.client.whatsat(&mut self.out);
            Kind::Whatsat
        } else {
            let t = self.client.iamat(&mut self.out, wall);
            if now >= tally.measure_from {
                let w = &mut tally.out.window_wall_ns;
                *w = if *w == (0, 0) {
                    (t, t)
                } else {
                    (w.0.min(t), w.1.max(t))
                };
            }
            Kind::Iamat
        };
        self.pending.push_back(Pending { kind, sent: now });
        if now >= tally.measure_from {
            tally.out.sent += 1;
        }
    }

    /// Writes what is pending; false if the connection failed.
    fn flush(&mut self, poll: &Poll, token: Token) -> bool {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return false,
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        let want = !self.out.is_empty();
        if want != self.writable {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if poll
                .registry()
                .reregister(&mut self.stream, token, interest)
                .is_err()
            {
                return false;
            }
            self.writable = want;
        }
        true
    }

    /// Reads until `WouldBlock`; false if the server closed or failed.
    fn read(&mut self, scratch: &mut [u8], now: Instant, tally: &mut Tally) -> bool {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => {
                    tally.out.error("server closed the connection".into());
                    return false;
                }
                Ok(n) => self.consume(&scratch[..n], now, tally),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tally.out.error(format!("read: {e}"));
                    return false;
                }
            }
        }
    }

    fn consume(&mut self, data: &[u8], now: Instant, tally: &mut Tally) {
        let mut reader = std::mem::take(&mut self.reader);
        reader.feed(data, REPLY_LINE_LIMIT, |piece| match piece {
            Piece::Line(line) | Piece::TooLong(line) => self.line(line, now, tally),
        });
        self.reader = reader;
    }

    fn line(&mut self, line: &[u8], now: Instant, tally: &mut Tally) {
        if self.in_body {
            if line.is_empty() {
                self.in_body = false;
                if let Some(p) = self.pending.pop_front() {
                    tally.completed(p.kind, p.sent, now);
                }
            }
            return;
        }
        let Some(front) = self.pending.front() else {
            tally.out.error(format!("unexpected line {:?}", show(line)));
            return;
        };
        let ok = line.starts_with(b"AT ");
        match (front.kind, ok) {
            (Kind::Whatsat, true) => self.in_body = true,
            (kind, true) => {
                let sent = front.sent;
                self.pending.pop_front();
                self.known = true;
                tally.completed(kind, sent, now);
            }
            (_, false) => {
                self.pending.pop_front();
                tally.out.error(format!("reply {:?}", show(line)));
            }
        }
    }
}

fn show(line: &[u8]) -> String {
    let cut = &line[..line.len().min(100)];
    cut.escape_ascii().to_string()
}

fn rr_thread(spec: &Spec, t: usize, barrier: &Barrier, progress: &Progress) -> io::Result<Outcome> {
    let threads = spec.threads.max(1);
    let mut poll = Poll::new()?;
    let mut conns = Vec::new();
    let mut tally = Tally {
        measure_from: Instant::now(),
        out: Outcome::default(),
        done_all: 0,
    };
    for k in (t..spec.conns).step_by(threads) {
        let stream = connect_blocking(spec.addr, source(k, spec.sources)).and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(TcpStream::from_std(s))
        });
        match stream {
            Ok(mut stream) => {
                poll.registry()
                    .register(&mut stream, Token(conns.len()), Interest::READABLE)?;
                conns.push(Conn {
                    stream,
                    client: ClientId::new(format!("{}-{k}", spec.prefix)),
                    out: Vec::with_capacity(4096),
                    out_pos: 0,
                    writable: false,
                    reader: LineReader::default(),
                    pending: VecDeque::new(),
                    in_body: false,
                    known: false,
                    dead: false,
                    rng: k as u64,
                });
            }
            Err(e) => tally.out.error(format!("connect {}: {e}", spec.addr)),
        }
    }
    tally.out.connected = conns.len();
    barrier.wait();

    let start = Instant::now();
    tally.measure_from = start + spec.warmup;
    let end = tally.measure_from + spec.duration;
    tally.out.window = spec.duration;
    let open_loop = spec.rate > 0.0;
    // Each thread sends its share of the rate; request k is due at start + k * period.
    let period = if open_loop {
        Duration::from_secs_f64(threads as f64 / spec.rate)
    } else {
        Duration::ZERO
    };
    let mut due: u64 = 0;
    // The last request found blocked (counted once in `late`), plus one.
    let mut blocked: u64 = 0;
    let mut next_conn = 0;
    let inflight = spec.inflight.max(1);
    let mut scratch = vec![0u8; 256 * 1024];
    let mut events = Events::with_capacity(1024);
    let mut dirty: Vec<usize> = Vec::new();

    if !open_loop {
        let wall = wall_ns();
        for (i, c) in conns.iter_mut().enumerate() {
            for _ in 0..inflight {
                c.send(spec, start, wall, &mut tally);
            }
            if !c.flush(&poll, Token(i)) {
                c.dead = true;
                tally.out.error("write failed".into());
            }
        }
    }
    let mut reported = (0, 0);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let mut timeout = (end - now).min(Duration::from_millis(100));
        if open_loop {
            let next = start + period.mul_f64(due as f64);
            timeout = timeout.min(next.saturating_duration_since(now));
        }
        match poll.poll(&mut events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        let now = Instant::now();
        let wall = wall_ns();
        for event in events.iter() {
            let i = event.token().0;
            let Some(c) = conns.get_mut(i) else { continue };
            if c.dead {
                continue;
            }
            if (event.is_readable() || event.is_read_closed() || event.is_error())
                && !c.read(&mut scratch, now, &mut tally)
            {
                c.dead = true;
                let _ = poll.registry().deregister(&mut c.stream);
                continue;
            }
            if !open_loop {
                while c.pending.len() < inflight {
                    c.send(spec, now, wall, &mut tally);
                }
            }
            dirty.push(i);
        }
        if open_loop {
            while start + period.mul_f64(due as f64) <= now {
                let mut found = None;
                for _ in 0..conns.len() {
                    let j = next_conn;
                    next_conn = (next_conn + 1) % conns.len();
                    if !conns[j].dead && conns[j].pending.len() < inflight {
                        found = Some(j);
                        break;
                    }
                }
                let Some(j) = found else {
                    if blocked <= due && now >= tally.measure_from {
                        tally.out.late += 1;
                        blocked = due + 1;
                    }
                    break;
                };
                conns[j].send(spec, now, wall, &mut tally);
                dirty.push(j);
                due += 1;
            }
        }
        for i in dirty.drain(..) {
            let c = &mut conns[i];
            if !c.dead && !c.flush(&poll, Token(i)) {
                c.dead = true;
                tally.out.error("write failed".into());
                let _ = poll.registry().deregister(&mut c.stream);
            }
        }
        progress.report(&tally, &mut reported);
        if conns.iter().all(|c| c.dead) {
            break;
        }
    }
    Ok(tally.out)
}

/// One connection cycle of the churn load.
struct Cycle {
    stream: TcpStream,
    /// Makes the client ID of this cycle.
    n: usize,
    started: Instant,
    sent: bool,
    got: Vec<u8>,
}

fn churn_thread(
    spec: &Spec,
    t: usize,
    barrier: &Barrier,
    progress: &Progress,
) -> io::Result<Outcome> {
    let threads = spec.threads.max(1);
    let slots = (t..spec.conns).step_by(threads).count();
    let mut poll = Poll::new()?;
    let mut tally = Tally {
        measure_from: Instant::now(),
        out: Outcome::default(),
        done_all: 0,
    };
    tally.out.connected = slots;
    barrier.wait();
    let start = Instant::now();
    tally.measure_from = start + spec.warmup;
    let end = tally.measure_from + spec.duration;
    tally.out.window = spec.duration;
    let mut cycles: Vec<Option<Cycle>> = (0..slots).map(|_| None).collect();
    let mut opened: usize = 0;
    let mut scratch = vec![0u8; 4096];
    let mut events = Events::with_capacity(1024);
    let mut request = Vec::with_capacity(128);
    let mut reported = (0, 0);
    let mut to_open: Vec<usize> = (0..slots).collect();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        for slot in to_open.drain(..) {
            let src = source(t + threads * opened, spec.sources);
            opened += 1;
            match connect_nonblocking(spec.addr, src).and_then(|mut s| {
                poll.registry().register(
                    &mut s,
                    Token(slot),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                Ok(s)
            }) {
                Ok(stream) => {
                    cycles[slot] = Some(Cycle {
                        stream,
                        n: opened,
                        started: Instant::now(),
                        sent: false,
                        got: Vec::new(),
                    })
                }
                Err(e) => {
                    tally.out.error(format!("connect: {e}"));
                    cycles[slot] = None;
                }
            }
        }
        // Slots whose connect failed outright are retried next turn.
        let retry: Vec<usize> = (0..slots).filter(|&s| cycles[s].is_none()).collect();
        let timeout = if retry.is_empty() {
            (end - now).min(Duration::from_millis(100))
        } else {
            Duration::from_millis(1)
        };
        to_open.extend(retry);
        match poll.poll(&mut events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        let wall = wall_ns();
        for event in events.iter() {
            let slot = event.token().0;
            let Some(cycle) = cycles.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            let mut finished: Option<Result<(), String>> = None;
            if !cycle.sent && (event.is_writable() || event.is_error()) {
                match cycle.stream.take_error() {
                    Ok(Some(e)) | Err(e) => finished = Some(Err(format!("connect: {e}"))),
                    Ok(None) => match cycle.stream.peer_addr() {
                        Ok(_) => {
                            request.clear();
                            ClientId::new(format!("{}-{t}-{}", spec.prefix, cycle.n))
                                .iamat(&mut request, wall);
                            let sent = cycle
                                .stream
                                .write(&request)
                                .and_then(|n| {
                                    if n == request.len() {
                                        Ok(())
                                    } else {
                                        Err(io::Error::other("short write"))
                                    }
                                })
                                .and_then(|()| cycle.stream.shutdown(Shutdown::Write));
                            match sent {
                                Ok(()) => {
                                    cycle.sent = true;
                                    if Instant::now() >= tally.measure_from {
                                        tally.out.sent += 1;
                                    }
                                }
                                Err(e) => finished = Some(Err(format!("send: {e}"))),
                            }
                        }
                        // Not connected yet: a spurious wake-up.
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                        Err(e) => finished = Some(Err(format!("connect: {e}"))),
                    },
                }
            }
            if finished.is_none()
                && cycle.sent
                && (event.is_readable() || event.is_read_closed() || event.is_error())
            {
                loop {
                    match cycle.stream.read(&mut scratch) {
                        Ok(0) => {
                            let got = &cycle.got;
                            let one_line = got.ends_with(b"\n")
                                && got.iter().filter(|&&b| b == b'\n').count() == 1;
                            finished = Some(if got.starts_with(b"AT ") && one_line {
                                Ok(())
                            } else {
                                Err(format!("reply {:?}", show(got)))
                            });
                            break;
                        }
                        Ok(n) => cycle.got.extend_from_slice(&scratch[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            finished = Some(Err(format!("read: {e}")));
                            break;
                        }
                    }
                }
            }
            let Some(result) = finished else { continue };
            let now = Instant::now();
            if let Some(mut cycle) = cycles[slot].take() {
                let _ = poll.registry().deregister(&mut cycle.stream);
                match result {
                    Ok(()) => tally.completed(Kind::Iamat, cycle.started, now),
                    Err(e) => tally.out.error(e),
                }
            }
            to_open.push(slot);
        }
        progress.report(&tally, &mut reported);
    }
    Ok(tally.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iamats_are_valid_new_and_fresh() {
        let mut c = ClientId::new("fl-1".into());
        let mut out = Vec::new();
        let t1 = c.iamat(&mut out, 1_700_000_000_000_000_000);
        let t2 = c.iamat(&mut out, 1_700_000_000_000_000_000);
        assert_eq!(t2, t1 + 1, "timestamps strictly increase");
        let text = String::from_utf8(out).expect("ASCII");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for line in &lines {
            assert!(
                matches!(
                    herd::protocol::parse(line.as_bytes()),
                    herd::protocol::Command::Iamat(_)
                ),
                "{line}"
            );
        }
        assert!(lines[1].ends_with("1700000000.000000001"), "{}", lines[1]);
        let pos = |l: &str| l.split(' ').nth(2).map(str::to_string);
        assert_ne!(pos(lines[0]), pos(lines[1]), "each IAMAT is a new position");
    }

    #[test]
    fn positions_stay_in_range() {
        let mut c = ClientId::new("x".into());
        let mut out = Vec::new();
        for i in 0..10_000 {
            out.clear();
            c.iamat(&mut out, i);
            let line = &out[..out.len() - 1];
            assert!(
                matches!(
                    herd::protocol::parse(line),
                    herd::protocol::Command::Iamat(_)
                ),
                "{}",
                line.escape_ascii()
            );
        }
    }

    #[test]
    fn sources_spread_over_loopback() {
        assert_eq!(source(0, 0), None);
        assert_eq!(source(0, 4), Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(source(5, 4), Some("127.0.0.2:0".parse().unwrap()));
    }
}

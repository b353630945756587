//! The request/reply load of one thread ([`super::run_rr`]): its
//! connections on one `mio::Poll`, each keeping W requests in flight (flat
//! out) or sending when the open-loop schedule says so, with at most W in
//! flight; replies matched to requests in order. Over HTTP or WebSocket
//! ([`Spec::wire`]) the requests and replies are [`FrontConn`]'s, and
//! WebSocket connections are upgraded before the warm-up.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use herd::conn::{LineReader, Output, Piece};
use herd::tls::stream::Stream;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::client::{mix, wall_ns, ClientId};
use super::front::{exchange, FrontConn, Wire};
use super::net::{connect_blocking, source};
use super::tls::{count_handshake, handshake, stream, visit, TlsClient};
use super::{show, Kind, Outcome, Progress, Spec, Tally, REPLY_LINE_LIMIT};

/// A request written and not yet answered.
struct Pending {
    kind: Kind,
    sent: Instant,
}

/// One request/reply connection.
struct Conn {
    /// Plain, or TLS with its handshake done.
    stream: Stream,
    client: ClientId,
    /// How requests are written and (HTTP, WebSocket) replies read.
    front: FrontConn,
    /// Requests not yet written.
    out: Output,
    /// WRITABLE is in the interest: `out` waits for room in the socket.
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

impl Conn {
    fn send(&mut self, spec: &Spec, now: Instant, wall: u128, tally: &mut Tally) {
        self.rng = mix(self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15));
        let kind = if self.known && (self.rng % 100) < u64::from(spec.whatsat_pct) {
            self.front.whatsat(&self.client, self.out.buf());
            Kind::Whatsat
        } else {
            let t = self.front.iamat(&mut self.client, self.out.buf(), wall);
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
        // TLS records below our output first (a plain socket has none).
        // `WouldBlock` leaves the rest for WRITABLE; an error is a dead connection.
        if self.stream.send_pending().is_err() || self.out.flush_to(&mut self.stream).is_err() {
            return false;
        }
        let want = !self.out.is_empty() || self.stream.wants_write();
        if want != self.writable {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if poll
                .registry()
                .reregister(self.stream.tcp_mut(), token, interest)
                .is_err()
            {
                return false;
            }
            self.writable = want;
        }
        true
    }

    /// Reads until `WouldBlock` (a short TLS read proves nothing, so every
    /// kind of stream reads on); false if the server closed or failed.
    fn read(&mut self, scratch: &mut [u8], now: Instant, tally: &mut Tally) -> bool {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => {
                    tally.out.error("server closed the connection".into());
                    return false;
                }
                Ok(n) if self.front.wire() != Wire::Line => {
                    if let Err(e) = self.consume_front(&scratch[..n], now, tally) {
                        tally.out.error(e);
                        return false;
                    }
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

    /// Replies over HTTP or WebSocket: one per request, in order.
    fn consume_front(
        &mut self,
        data: &[u8],
        now: Instant,
        tally: &mut Tally,
    ) -> Result<(), String> {
        let Conn {
            front,
            pending,
            known,
            ..
        } = self;
        front.feed(data, |reply| {
            let Some(p) = pending.pop_front() else {
                tally.out.error("a reply to no request".into());
                return;
            };
            match reply {
                Ok(body) if p.kind == Kind::Whatsat || body.starts_with(b"AT ") => {
                    *known = true;
                    tally.completed(p.kind, p.sent, now);
                }
                Ok(body) => tally.out.error(format!("reply {:?}", show(body))),
                Err(e) => tally.out.error(e),
            }
        })
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

/// Thread `t`'s share of the connections, until the window ends.
pub fn rr_thread(
    spec: &Spec,
    t: usize,
    barrier: &Barrier,
    progress: &Progress,
) -> io::Result<Outcome> {
    let threads = spec.threads.max(1);
    let mut poll = Poll::new()?;
    let mut conns = Vec::new();
    let mut tally = Tally {
        measure_from: Instant::now(),
        out: Outcome::default(),
        done_all: 0,
    };
    let mut streams = Vec::new();
    let mut ids = Vec::new();
    let mine: Vec<usize> = (t..spec.conns).step_by(threads).collect();
    // With --tls-resume each connection is a phone that was here before:
    // its own sessions, and a ticket from an earlier visit to resume with.
    let phones: Vec<Option<TlsClient>> = mine
        .iter()
        .map(|_| spec.tls.as_ref().map(TlsClient::own_sessions))
        .collect();
    let mut visited: Vec<Result<(), String>> = vec![Ok(()); mine.len()];
    if spec.tls.as_ref().is_some_and(TlsClient::resumes) {
        let all: Vec<TlsClient> = phones.iter().flatten().cloned().collect();
        visited = visit(
            spec.addr,
            spec.sources,
            &mine,
            &all,
            Duration::from_secs(30),
        )?;
    }
    for (i, &k) in mine.iter().enumerate() {
        if let Err(e) = &visited[i] {
            tally.out.error(format!("{}: {e}", spec.addr));
            continue;
        }
        let sock = connect_blocking(spec.addr, source(k, spec.sources)).and_then(|s| {
            s.set_nonblocking(true)?;
            stream(phones[i].as_ref(), TcpStream::from_std(s))
        });
        match sock {
            Ok(mut s) => {
                poll.registry()
                    .register(s.tcp_mut(), Token(streams.len()), Interest::READABLE)?;
                streams.push(s);
                ids.push(k);
            }
            Err(e) => tally.out.error(format!("connect {}: {e}", spec.addr)),
        }
    }
    // TLS handshakes are part of setting up, like the connects; so are
    // WebSocket upgrades.
    let mut ready = handshake(&mut poll, &mut streams, 0, Duration::from_secs(30))?;
    let mut fronts: Vec<FrontConn> = ids
        .iter()
        .map(|&k| FrontConn::new(spec.wire, spec.addr, k as u64))
        .collect();
    if spec.wire == Wire::Ws {
        let which: Vec<usize> = (0..streams.len()).filter(|&i| ready[i].is_ok()).collect();
        let upgrades = exchange(
            &mut poll,
            &mut streams,
            &mut fronts,
            &which,
            Duration::from_secs(30),
            |_, front, out| front.upgrade(out),
        )?;
        for (i, upgraded) in upgrades {
            ready[i] = upgraded.map(|_| ());
        }
    }
    let setup = streams.into_iter().zip(ids).zip(ready).zip(fronts);
    for (i, (((mut stream, k), ready), front)) in setup.enumerate() {
        match ready {
            Ok(()) => {
                count_handshake(&stream, &mut tally.out);
                // Tokens are indexes into the connections that made it.
                if conns.len() != i {
                    poll.registry().reregister(
                        stream.tcp_mut(),
                        Token(conns.len()),
                        Interest::READABLE,
                    )?;
                }
                conns.push(Conn {
                    stream,
                    client: ClientId::new(format!("{}-{k}", spec.prefix)),
                    front,
                    out: Output::default(),
                    writable: false,
                    reader: LineReader::default(),
                    pending: VecDeque::new(),
                    in_body: false,
                    known: false,
                    dead: false,
                    rng: k as u64,
                });
            }
            Err(e) => {
                let _ = poll.registry().deregister(stream.tcp_mut());
                tally.out.error(format!("{}: {e}", spec.addr));
            }
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
                let _ = poll.registry().deregister(c.stream.tcp_mut());
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
                let _ = poll.registry().deregister(c.stream.tcp_mut());
            }
        }
        progress.report(&tally, &mut reported);
        if conns.iter().all(|c| c.dead) {
            break;
        }
    }
    Ok(tally.out)
}

//! `--mode idle`: opens N idle connections in two halves and reads the
//! server's VmRSS and RssAnon (`--server-pid`) before, between and after:
//! bytes per connection, twice, to show it is linear; then checks that a
//! sample of the idle connections is still served.
//!
//! `--idle-kind` says what the connections are: `line` (a client port;
//! the newest of each batch of 500 answers a PING, proving the server has
//! accepted them all), `http` (an `http` port: each has had one OsmAnd
//! report answered and is kept alive, as a phone's between reports) or
//! `ws` (an `http` port: each upgraded to a WebSocket, as a browser's).

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herd::conn::{LineReader, Output, Piece};
use herd::tls::stream::Stream;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::load::{self, FrontConn, Wire};
use crate::opts::{run_prefix, Opts, DEFAULT_ADDR};

/// VmRSS and RssAnon of a process, in kB.
fn rss_kb(pid: u32) -> io::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("RssAnon:")))
}

/// Runs the mode and prints its report.
pub fn run(o: &Opts) -> io::Result<()> {
    let pid = o
        .server_pid
        .ok_or_else(|| io::Error::other("idle needs --server-pid PID"))?;
    let addr = o.addr.unwrap_or(DEFAULT_ADDR);
    let hard = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024);
    let n = o
        .conns
        .unwrap_or_else(|| hard.saturating_sub(100).min(1_000_000) as usize)
        .max(2);
    let kind = o.idle_kind;
    println!(
        "flood_load idle: {n} idle {} connections to {addr} over {} source addresses; server pid {pid}",
        kind.name(),
        o.sources
    );
    let prefix = run_prefix();
    let settle = || std::thread::sleep(Duration::from_millis(700));
    let mut conns = Conns::new(o)?;
    let mut errors = 0u64;
    let mut samples = Vec::new();
    settle();
    let rss0 = rss_kb(pid)?;
    let started = Instant::now();
    let half = n / 2;
    let mut open_to = |target: usize, conns: &mut Conns| -> io::Result<()> {
        while conns.len() < target {
            let from = conns.len();
            let batch_end = (from + 500).min(target);
            while conns.len() < batch_end {
                if let Err(e) = conns.open(addr) {
                    errors += 1;
                    if samples.len() < 5 {
                        samples.push(format!("connect #{}: {e}", conns.len()));
                    }
                    if errors > 100 {
                        return Err(io::Error::other(format!(
                            "too many failed connects; last: {e}"
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            // A round trip on the newest connection: the server has accepted
            // every connection before it (it accepts in order). With TLS, one
            // on each: the server answering proves it finished the handshake.
            // Over HTTP, each connection's report answered (a request on
            // every one) and each upgrade done.
            let which: Vec<usize> = if conns.tls || kind != Wire::Line {
                (from..conns.len()).collect()
            } else {
                vec![conns.len() - 1]
            };
            let replies = match kind {
                Wire::Line => conns.ask(&which, |_, out| out.extend_from_slice(b"PING\n"))?,
                Wire::Http => conns.ask_front(&which, |i, front, out| {
                    let mut client = load::ClientId::new(format!("{prefix}-idle-{i}"));
                    front.iamat(&mut client, out, load::wall_ns());
                })?,
                Wire::Ws => conns.ask_front(&which, |_, front, out| front.upgrade(out))?,
            };
            for (i, reply) in replies {
                reply.map_err(|e| io::Error::other(format!("{} on #{i}: {e}", kind.name())))?;
            }
            if !o.quiet && conns.len() % 5000 < 500 {
                eprintln!(
                    "[{:>5.1}s] {} connections open",
                    started.elapsed().as_secs_f64(),
                    conns.len()
                );
            }
        }
        Ok(())
    };
    open_to(half, &mut conns)?;
    settle();
    let rss1 = rss_kb(pid)?;
    open_to(n, &mut conns)?;
    settle();
    let rss2 = rss_kb(pid)?;

    // Idle is not dead: a sample of the connections must still be served.
    let mut served = 0;
    let step = (conns.len() / 100).max(1);
    let sample: Vec<usize> = (0..conns.len()).step_by(step).collect();
    let replies = match kind {
        Wire::Line => conns.ask(&sample, |i, out| {
            load::ClientId::new(format!("{prefix}-idle-{i}")).iamat(out, load::wall_ns());
        })?,
        _ => conns.ask_front(&sample, |i, front, out| {
            let mut client = load::ClientId::new(format!("{prefix}-idle-{i}"));
            front.iamat(&mut client, out, load::wall_ns());
        })?,
    };
    for (_, reply) in replies {
        match reply {
            Ok(reply) if reply.starts_with(b"AT ") => served += 1,
            Ok(reply) => {
                errors += 1;
                samples.push(format!("reply {:?}", reply.escape_ascii().to_string()));
            }
            Err(e) => {
                errors += 1;
                samples.push(format!("IAMAT on an idle connection: {e}"));
            }
        }
    }
    let per = |a: u64, b: u64, count: usize| (b as f64 - a as f64) * 1024.0 / count.max(1) as f64;
    let first = per(rss0.0, rss1.0, half);
    let second = per(rss1.0, rss2.0, n - half);
    let all = per(rss0.0, rss2.0, n);
    println!(
        "VmRSS       {} kB before, {} kB at {half}, {} kB at {n}",
        rss0.0, rss1.0, rss2.0
    );
    println!(
        "RssAnon     {} kB before, {} kB at {half}, {} kB at {n}",
        rss0.1, rss1.1, rss2.1
    );
    println!(
        "per conn    {first:.0} B (first {half}), {second:.0} B (next {}), {all:.0} B overall",
        n - half
    );
    println!(
        "served      {served} of {} sampled idle connections answered an IAMAT",
        conns.len().div_ceil(step)
    );
    println!("errors      {errors}");
    for s in samples.iter().take(5) {
        println!("  e.g.      {s}");
    }
    println!(
        "summary mode=idle kind={} conns={n} rss_before_kb={} rss_half_kb={} rss_full_kb={} bytes_per_conn_first={first:.0} bytes_per_conn_second={second:.0} bytes_per_conn={all:.0} errors={errors}",
        kind.name(),
        rss0.0,
        rss1.0,
        rss2.0
    );
    Ok(())
}

/// The idle connections, plain or TLS, on one `mio::Poll` (token = index),
/// registered for READABLE only while a round trip waits on them.
struct Conns {
    poll: Poll,
    streams: Vec<Stream>,
    /// `--idle-kind http|ws`: each stream's client side.
    fronts: Vec<FrontConn>,
    wire: Wire,
    tls: bool,
    spec_tls: Option<load::TlsClient>,
    sources: u32,
}

impl Conns {
    fn new(o: &Opts) -> io::Result<Conns> {
        Ok(Conns {
            poll: Poll::new()?,
            streams: Vec::new(),
            fronts: Vec::new(),
            wire: o.idle_kind,
            tls: o.tls.is_some(),
            spec_tls: o.tls.clone(),
            sources: o.sources,
        })
    }

    fn len(&self) -> usize {
        self.streams.len()
    }

    /// One more connection (its TLS handshake is finished by the next
    /// [`Conns::ask`] on it).
    fn open(&mut self, addr: SocketAddr) -> io::Result<()> {
        let sock = load::connect_blocking(addr, load::source(self.streams.len(), self.sources))?;
        sock.set_nonblocking(true)?;
        let stream = load::stream(self.spec_tls.as_ref(), TcpStream::from_std(sock))?;
        let seed = self.streams.len() as u64;
        self.streams.push(stream);
        self.fronts.push(FrontConn::new(self.wire, addr, seed));
        Ok(())
    }

    /// [`Conns::ask`] over HTTP or WebSocket: what `request` writes, and
    /// each one's first reply (an HTTP body, a message, an upgrade's `101`).
    fn ask_front(
        &mut self,
        which: &[usize],
        request: impl FnMut(usize, &mut FrontConn, &mut Vec<u8>),
    ) -> io::Result<Vec<(usize, load::Reply)>> {
        for &i in which {
            self.poll.registry().register(
                self.streams[i].tcp_mut(),
                Token(i),
                Interest::READABLE,
            )?;
        }
        let replies = load::exchange(
            &mut self.poll,
            &mut self.streams,
            &mut self.fronts,
            which,
            Duration::from_secs(10),
            request,
        );
        for &i in which {
            let _ = self.poll.registry().deregister(self.streams[i].tcp_mut());
        }
        let mut replies = replies?;
        // A report's answer is its AT line; an upgrade's, nothing.
        for (_, reply) in &mut replies {
            if let Ok(body) = reply {
                if !body.is_empty() && !body.starts_with(b"AT ") {
                    *reply = Err(format!("reply {:?}", body.escape_ascii().to_string()));
                }
            }
        }
        Ok(replies)
    }

    /// Writes what `line` makes on each of the connections `which`, at once,
    /// and reads each one's one-line answer (up to 10 s in all).
    #[allow(clippy::type_complexity)]
    fn ask(
        &mut self,
        which: &[usize],
        mut line: impl FnMut(usize, &mut Vec<u8>),
    ) -> io::Result<Vec<(usize, Result<Vec<u8>, String>)>> {
        let patience = Duration::from_secs(10);
        let mut waits: Vec<Wait> = Vec::with_capacity(which.len());
        for &i in which {
            let mut w = Wait {
                i,
                out: Output::default(),
                reader: LineReader::default(),
                reply: None,
            };
            line(i, w.out.buf());
            let s = &mut self.streams[i];
            self.poll.registry().register(
                s.tcp_mut(),
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            waits.push(w);
        }
        let index: std::collections::HashMap<usize, usize> =
            waits.iter().enumerate().map(|(k, w)| (w.i, k)).collect();
        // Everything is written (TLS: once the handshake lets it) as the
        // events come; a fresh registration brings a WRITABLE event.
        let deadline = Instant::now() + patience;
        let mut open = waits.len();
        let mut events = Events::with_capacity(1024);
        let mut scratch = vec![0u8; 16 * 1024];
        while open > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            match self.poll.poll(&mut events, Some(deadline - now)) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            }
            for event in events.iter() {
                let Some(&k) = index.get(&event.token().0) else {
                    continue;
                };
                let w = &mut waits[k];
                if w.reply.is_some() {
                    continue;
                }
                let s = &mut self.streams[w.i];
                w.reply = w.step(s, &mut scratch);
                if w.reply.is_some() {
                    open -= 1;
                }
            }
        }
        let mut replies = Vec::with_capacity(waits.len());
        for w in waits {
            let _ = self.poll.registry().deregister(self.streams[w.i].tcp_mut());
            let reply = w
                .reply
                .unwrap_or_else(|| Err(format!("no answer within {patience:?}")));
            replies.push((w.i, reply));
        }
        Ok(replies)
    }
}

/// A round trip under way on one idle connection.
struct Wait {
    i: usize,
    out: Output,
    reader: LineReader,
    reply: Option<Result<Vec<u8>, String>>,
}

impl Wait {
    /// Reads (which drives a TLS handshake), then writes what is left; the
    /// answer once its line is in.
    fn step(&mut self, s: &mut Stream, scratch: &mut [u8]) -> Option<Result<Vec<u8>, String>> {
        let mut line = None;
        loop {
            match s.read(scratch) {
                Ok(0) => return Some(Err("the server closed the connection".into())),
                Ok(n) => {
                    self.reader
                        .feed(&scratch[..n], load::REPLY_LINE_LIMIT, |p| {
                            let (Piece::Line(l) | Piece::TooLong(l)) = p;
                            line.get_or_insert_with(|| l.to_vec());
                        });
                }
                // The rest comes with the next event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(format!("read: {e}"))),
            }
        }
        if let Some(l) = line {
            return Some(Ok(l));
        }
        // `WouldBlock` (the handshake, or a full socket) waits for an event.
        match s.send_pending().and_then(|()| self.out.flush_to(s)) {
            Ok(_) => None,
            Err(e) => Some(Err(format!("write: {e}"))),
        }
    }
}

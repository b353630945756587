//! The connection churn of one thread ([`super::run_churn`]): its share of
//! the C cycles on one `mio::Poll`, each a nonblocking connect, one IAMAT,
//! a half-close, a read to EOF that must hold exactly one AT line, and a
//! close; then the slot starts its next cycle.
//!
//! Over TLS a cycle drives its rustls session itself rather than through
//! herd's `Stream`, to send what a client sends in as few writes as it
//! can, as a plaintext cycle does: the ClientHello; then, in one write, the
//! client's Finished, the IAMAT (handed to rustls with the ClientHello, so
//! it goes out as soon as the handshake allows) and close_notify; then the
//! write shutdown. A plaintext cycle writes the IAMAT, then shuts down.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use herd::conn::{Flush, Output};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::{ClientConnection, HandshakeKind};

use super::client::{wall_ns, ClientId};
use super::net::{connect_nonblocking, source};
use super::tls::TlsClient;
use super::{show, Kind, Outcome, Progress, Spec, Tally};

/// The socket as rustls's `read_tls` sees it, noting whether its one
/// read got less than it asked for: the kernel had no more.
struct Short<'a> {
    sock: &'a mut TcpStream,
    short: bool,
}

impl Read for Short<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        self.short = n < buf.len();
        Ok(n)
    }
}

/// One connection cycle of the churn load.
struct Cycle {
    sock: TcpStream,
    /// The TLS session, if the load speaks TLS.
    tls: Option<Box<ClientConnection>>,
    /// Makes the client ID of this cycle.
    n: usize,
    started: Instant,
    /// The connect finished (and the IAMAT is written or queued).
    connected: bool,
    /// The IAMAT is out and writing is shut down (TLS: after close_notify).
    sent: bool,
    /// TLS: close_notify is queued (once the handshake is done).
    closing: bool,
    /// Plaintext: the IAMAT not yet written.
    out: Output,
    got: Vec<u8>,
}

impl Cycle {
    /// The connect is done: the IAMAT goes out (plaintext), or is handed to
    /// the TLS session, which holds it until the handshake is done, and the
    /// ClientHello goes out.
    fn start(&mut self, id: String, wall: u128) -> io::Result<()> {
        ClientId::new(id).iamat(self.out.buf(), wall);
        if let Some(tls) = self.tls.as_mut() {
            let mut iamat = std::mem::take(&mut self.out);
            tls.writer().write_all(iamat.buf())?;
        }
        self.send()
    }

    /// Writes what waits (TLS: its records), then shuts down writing once
    /// the IAMAT (TLS: and close_notify) is out; `Ok(())` also when the
    /// socket would block.
    fn send(&mut self) -> io::Result<()> {
        if self.sent {
            return Ok(());
        }
        let Some(tls) = self.tls.as_mut() else {
            if self.out.flush_to(&mut self.sock)? == Flush::WouldBlock {
                return Ok(());
            }
            self.sock.shutdown(Shutdown::Write)?;
            self.sent = true;
            return Ok(());
        };
        while tls.wants_write() {
            match tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                // The rest when the socket is writable again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // close_notify is queued with the Finished and the IAMAT, when
        // the handshake is done ([`Cycle::read`]).
        if self.closing {
            self.sock.shutdown(Shutdown::Write)?;
            self.sent = true;
        }
        Ok(())
    }

    /// Reads until `WouldBlock`; at EOF, whether what came is one AT line.
    /// `short_drains` (a plain readable edge, no EOF or error pending): over
    /// TLS a read shorter than rustls asked for took everything there was,
    /// and what comes later brings a new edge, so the read that would only
    /// say `WouldBlock` is saved, as herd's loop does.
    fn read(&mut self, scratch: &mut [u8], short_drains: bool) -> Option<Result<(), String>> {
        let Some(tls) = self.tls.as_mut() else {
            return loop {
                match self.sock.read(scratch) {
                    Ok(0) => break Some(self.verdict()),
                    Ok(n) => self.got.extend_from_slice(&scratch[..n]),
                    // The rest comes with the next event.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Some(Err(format!("read: {e}"))),
                }
            };
        };
        loop {
            let mut sock = Short {
                sock: &mut self.sock,
                short: false,
            };
            let eof = match tls.read_tls(&mut sock) {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Some(Err(format!("read: {e}"))),
            };
            let short = sock.short;
            if let Err(e) = tls.process_new_packets() {
                // Tell the server why, best effort.
                let _ = tls.write_tls(&mut self.sock);
                return Some(Err(format!("TLS: {e}")));
            }
            if !tls.is_handshaking() && !self.closing {
                tls.send_close_notify();
                self.closing = true;
            }
            loop {
                match tls.reader().read(scratch) {
                    // close_notify.
                    Ok(0) => return Some(self.verdict()),
                    Ok(n) => self.got.extend_from_slice(&scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // TCP EOF without close_notify, after all plaintext.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        return Some(self.verdict())
                    }
                    Err(e) => return Some(Err(format!("read: {e}"))),
                }
            }
            if eof {
                return Some(self.verdict());
            }
            if short_drains && short {
                return None;
            }
        }
    }

    /// Whether the cycle got what it should have by its end.
    fn verdict(&self) -> Result<(), String> {
        let got = &self.got;
        let one_line = got.ends_with(b"\n") && got.iter().filter(|&&b| b == b'\n').count() == 1;
        if self.sent && got.starts_with(b"AT ") && one_line {
            Ok(())
        } else {
            Err(format!("reply {:?}", show(got)))
        }
    }

    /// How its TLS handshake went (`None`: plaintext, or not done).
    fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.tls.as_ref().and_then(|t| t.handshake_kind())
    }
}

/// Thread `t`'s share of the churn, until the window ends.
pub fn churn_thread(
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
    let mut reported = (0, 0);
    let mut to_open: Vec<usize> = (0..slots).collect();
    // Each slot is a phone reconnecting, with its own sessions.
    let phones: Vec<Option<TlsClient>> = (0..slots)
        .map(|_| spec.tls.as_ref().map(TlsClient::own_sessions))
        .collect();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        for slot in to_open.drain(..) {
            let src = source(t + threads * opened, spec.sources);
            opened += 1;
            // A TLS session's ClientHello waits until the connect is done.
            match connect_nonblocking(spec.addr, src).and_then(|mut s| {
                poll.registry().register(
                    &mut s,
                    Token(slot),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                let tls = match &phones[slot] {
                    Some(phone) => Some(Box::new(phone.session()?)),
                    None => None,
                };
                Ok((s, tls))
            }) {
                Ok((sock, tls)) => {
                    cycles[slot] = Some(Cycle {
                        sock,
                        tls,
                        n: opened,
                        started: Instant::now(),
                        connected: false,
                        sent: false,
                        closing: false,
                        out: Output::default(),
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
            let was_sent = cycle.sent;
            if !cycle.connected && (event.is_writable() || event.is_error()) {
                match cycle.sock.take_error() {
                    Ok(Some(e)) | Err(e) => finished = Some(Err(format!("connect: {e}"))),
                    Ok(None) => match cycle.sock.peer_addr() {
                        Ok(_) => {
                            cycle.connected = true;
                            let id = format!("{}-{t}-{}", spec.prefix, cycle.n);
                            if let Err(e) = cycle.start(id, wall) {
                                finished = Some(Err(format!("send: {e}")));
                            }
                        }
                        // Not connected yet: a spurious wake-up.
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                        Err(e) => finished = Some(Err(format!("connect: {e}"))),
                    },
                }
            }
            // The reply, to EOF; with TLS, before the IAMAT is out too: the
            // handshake's records come in with these reads.
            let readable = event.is_readable() || event.is_read_closed() || event.is_error();
            if finished.is_none()
                && readable
                && cycle.connected
                && (cycle.sent || cycle.tls.is_some())
            {
                let short_drains = !(event.is_read_closed() || event.is_error());
                finished = cycle.read(&mut scratch, short_drains);
            }
            if finished.is_none() && cycle.connected && !cycle.sent {
                if let Err(e) = cycle.send() {
                    finished = Some(Err(format!("send: {e}")));
                }
            }
            if cycle.sent && !was_sent && Instant::now() >= tally.measure_from {
                tally.out.sent += 1;
            }
            let Some(result) = finished else { continue };
            let now = Instant::now();
            if let Some(mut cycle) = cycles[slot].take() {
                let _ = poll.registry().deregister(&mut cycle.sock);
                match result {
                    Ok(()) => {
                        if now >= tally.measure_from {
                            match cycle.handshake_kind() {
                                Some(HandshakeKind::Resumed) => tally.out.tls_resumed += 1,
                                Some(_) => tally.out.tls_full += 1,
                                None => {}
                            }
                        }
                        tally.completed(Kind::Iamat, cycle.started, now)
                    }
                    Err(e) => tally.out.error(e),
                }
            }
            to_open.push(slot);
        }
        progress.report(&tally, &mut reported);
    }
    tally.out.all = tally.done_all;
    Ok(tally.out)
}

//! The connection churn of one thread ([`super::run_churn`]): its share of
//! the C cycles on one `mio::Poll`, each a nonblocking connect, one IAMAT,
//! a half-close, a read to EOF that must hold exactly one AT line, and a
//! close; then the slot starts its next cycle.

use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use herd::conn::{Flush, Output};
use herd::tls::stream::Stream;
use mio::{Events, Interest, Poll, Token};

use super::client::{wall_ns, ClientId};
use super::net::{connect_nonblocking, source};
use super::tls::{count_handshake, stream};
use super::{show, Kind, Outcome, Progress, Spec, Tally};

/// One connection cycle of the churn load.
struct Cycle {
    /// Plain until connected; then plain or TLS.
    stream: Stream,
    /// Makes the client ID of this cycle.
    n: usize,
    started: Instant,
    /// The connect finished (and the IAMAT waits in `out`).
    connected: bool,
    /// The IAMAT is out and writing is shut down (TLS: after close_notify).
    sent: bool,
    out: Output,
    got: Vec<u8>,
}

impl Cycle {
    /// Writes the IAMAT (TLS: once the handshake allows), then shuts down
    /// writing; `Ok(())` also when the socket would block.
    fn send(&mut self) -> io::Result<()> {
        self.stream.send_pending()?;
        if self.out.flush_to(&mut self.stream)? == Flush::WouldBlock || self.stream.wants_write() {
            return Ok(());
        }
        self.stream.close_notify();
        if self.stream.wants_write() {
            // The close_notify waits for WRITABLE.
            return Ok(());
        }
        self.stream.tcp().shutdown(Shutdown::Write)?;
        self.sent = true;
        Ok(())
    }

    /// Reads until `WouldBlock`; at EOF, whether what came is one AT line.
    fn read(&mut self, scratch: &mut [u8]) -> Option<Result<(), String>> {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => {
                    let got = &self.got;
                    let one_line =
                        got.ends_with(b"\n") && got.iter().filter(|&&b| b == b'\n').count() == 1;
                    return Some(if self.sent && got.starts_with(b"AT ") && one_line {
                        Ok(())
                    } else {
                        Err(format!("reply {:?}", show(got)))
                    });
                }
                Ok(n) => self.got.extend_from_slice(&scratch[..n]),
                // The rest comes with the next event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(format!("read: {e}"))),
            }
        }
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
    let phones: Vec<_> = (0..slots)
        .map(|_| spec.tls.as_ref().map(|t| t.own_sessions()))
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
                stream(phones[slot].as_ref(), s)
            }) {
                Ok(stream) => {
                    cycles[slot] = Some(Cycle {
                        stream,
                        n: opened,
                        started: Instant::now(),
                        connected: false,
                        sent: false,
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
            if !cycle.connected && (event.is_writable() || event.is_error()) {
                match cycle.stream.tcp().take_error() {
                    Ok(Some(e)) | Err(e) => finished = Some(Err(format!("connect: {e}"))),
                    Ok(None) => match cycle.stream.tcp().peer_addr() {
                        Ok(_) => {
                            cycle.connected = true;
                            ClientId::new(format!("{}-{t}-{}", spec.prefix, cycle.n))
                                .iamat(cycle.out.buf(), wall);
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
                && (cycle.sent || cycle.stream.tls().is_some())
            {
                finished = cycle.read(&mut scratch);
            }
            if finished.is_none() && cycle.connected && !cycle.sent {
                match cycle.send() {
                    Ok(()) if cycle.sent => {
                        if Instant::now() >= tally.measure_from {
                            tally.out.sent += 1;
                        }
                    }
                    Ok(()) => {}
                    Err(e) => finished = Some(Err(format!("send: {e}"))),
                }
            }
            let Some(result) = finished else { continue };
            let now = Instant::now();
            if let Some(mut cycle) = cycles[slot].take() {
                let _ = poll.registry().deregister(cycle.stream.tcp_mut());
                match result {
                    Ok(()) => {
                        if now >= tally.measure_from {
                            count_handshake(&cycle.stream, &mut tally.out);
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
    Ok(tally.out)
}

//! The Probe: flood_load playing a member of the herd.
//!
//! A herd config that names a member `Probe` at the tool's address and links
//! it to some servers (`tools/probe-herd.conf`: `link Welsh Probe`) makes
//! those servers dial the tool like any neighbour: `HERD NAME`, then their
//! whole store (catch-up), then every update the moment they store it. The
//! Probe reads those lines and hands them on with the wall-clock time they
//! were read, so the tool can time post → stored at that server. It never
//! sends anything. It can also "crash" (close its listener and every link)
//! and come back, to time how fast the herd links to it again. With
//! `--in-process`, [`start_probe`] also starts the reference herd that
//! dials it.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herd::conn::{LineReader, Piece};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::inproc::InProcHerd;
use crate::opts::Opts;

const LISTENER: Token = Token(usize::MAX - 1);

/// What the Probe saw.
pub enum ProbeEvent<'a> {
    /// A server dialled in and said `HERD name`.
    Up { name: &'a str },
    /// A line from server `name` (without `\n`), read at `wall_ns`.
    Line {
        name: &'a str,
        line: &'a [u8],
        wall_ns: u128,
    },
    /// The link from `name` closed.
    Down { name: &'a str },
}

struct Link {
    stream: TcpStream,
    /// The name from `HERD NAME`, once said.
    name: Option<String>,
    reader: LineReader,
    /// When it last got a heartbeat from us.
    pinged: Instant,
}

/// How often (at most) the Probe sends `PING` on its links, as a herd
/// acceptor does, so no server takes its link to the Probe for dead: well
/// inside the default link timeout of 3 s.
const PING_EVERY: Duration = Duration::from_millis(200);

/// A listener that herd servers dial as their neighbour `Probe`.
pub struct Probe {
    poll: Poll,
    events: Events,
    addr: SocketAddr,
    listener: Option<TcpListener>,
    links: Slab<Link>,
    scratch: Vec<u8>,
}

impl Probe {
    /// Listens on `addr` (port 0: any; see [`Probe::addr`]).
    pub fn bind(addr: SocketAddr) -> io::Result<Probe> {
        let mut probe = Probe {
            poll: Poll::new()?,
            events: Events::with_capacity(256),
            addr,
            listener: None,
            links: Slab::new(),
            scratch: vec![0; 1 << 20],
        };
        probe.listen()?;
        Ok(probe)
    }

    /// The address the Probe listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Listens again on the same address after [`Probe::crash`].
    pub fn listen(&mut self) -> io::Result<()> {
        let std = herd::server::bind(self.addr)?;
        self.addr = std.local_addr()?;
        let mut listener = TcpListener::from_std(std);
        self.poll
            .registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        self.listener = Some(listener);
        Ok(())
    }

    /// Closes the listener and every link, as a crashed server would.
    pub fn crash(&mut self) {
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        for mut link in self.links.drain() {
            let _ = self.poll.registry().deregister(&mut link.stream);
        }
    }

    /// Waits up to `timeout` for events and reports what they brought.
    pub fn poll(
        &mut self,
        timeout: Duration,
        on: &mut impl FnMut(ProbeEvent<'_>),
    ) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            other => other?,
        }
        // Heartbeats, as a herd acceptor sends them (a few bytes: a full
        // socket buffer just skips one).
        let now = Instant::now();
        for (_, link) in self.links.iter_mut() {
            if link.name.is_some() && now >= link.pinged + PING_EVERY {
                let _ = link.stream.write(herd::protocol::PING);
                link.pinged = now;
            }
        }
        let tokens: Vec<Token> = self.events.iter().map(|e| e.token()).collect();
        for token in tokens {
            if token == LISTENER {
                self.accept()?;
            } else {
                self.read(token.0, on);
            }
        }
        Ok(())
    }

    fn accept(&mut self) -> io::Result<()> {
        let Some(listener) = &self.listener else {
            return Ok(());
        };
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let entry = self.links.vacant_entry();
                    self.poll.registry().register(
                        &mut stream,
                        Token(entry.key()),
                        Interest::READABLE,
                    )?;
                    entry.insert(Link {
                        stream,
                        name: None,
                        reader: LineReader::default(),
                        pinged: Instant::now() - PING_EVERY,
                    });
                }
                // Nothing more to accept until the next event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn read(&mut self, key: usize, on: &mut impl FnMut(ProbeEvent<'_>)) {
        let Some(link) = self.links.get_mut(key) else {
            return;
        };
        let closed = loop {
            match link.stream.read(&mut self.scratch) {
                Ok(0) => break true,
                Ok(n) => {
                    let wall_ns = wall_ns();
                    lines(link, &self.scratch[..n], wall_ns, on);
                }
                // Drained until the next event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        if closed {
            let mut link = self.links.remove(key);
            let _ = self.poll.registry().deregister(&mut link.stream);
            if let Some(name) = &link.name {
                on(ProbeEvent::Down { name });
            }
        }
    }
}

/// Splits what was read into lines; the first line of a link names it.
fn lines(link: &mut Link, data: &[u8], wall_ns: u128, on: &mut impl FnMut(ProbeEvent<'_>)) {
    let mut reader = std::mem::take(&mut link.reader);
    reader.feed(data, crate::load::REPLY_LINE_LIMIT, |piece| {
        let (Piece::Line(line) | Piece::TooLong(line)) = piece;
        match &link.name {
            Some(name) => on(ProbeEvent::Line {
                name,
                line,
                wall_ns,
            }),
            None => {
                let name = line.strip_prefix(b"HERD ").unwrap_or(line);
                let name = String::from_utf8_lossy(name).trim().to_string();
                on(ProbeEvent::Up { name: &name });
                link.name = Some(name);
            }
        }
    });
    link.reader = reader;
}

/// The wall clock in nanoseconds since the epoch.
pub fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// The fields of an AT line the tool needs: (client, TIME in nanoseconds).
pub fn at_fields(line: &[u8]) -> Option<(&[u8], u128)> {
    let mut fields = line
        .split(|&b| b == b' ' || b == b'\t' || b == b'\r')
        .filter(|f| !f.is_empty());
    if fields.next()? != b"AT" {
        return None;
    }
    let client = fields.nth(2)?;
    let time = fields.nth(1)?;
    Some((client, parse_time(time)?))
}

/// `SECS[.FRACTION]` in nanoseconds.
pub fn parse_time(text: &[u8]) -> Option<u128> {
    let (secs, frac) = match text.iter().position(|&b| b == b'.') {
        Some(dot) => (&text[..dot], &text[dot + 1..]),
        None => (text, &text[..0]),
    };
    if secs.is_empty() || secs.len() > 20 || frac.len() > 9 {
        return None;
    }
    let digits = |t: &[u8]| -> Option<u128> {
        t.iter().try_fold(0u128, |v, &d| {
            d.is_ascii_digit().then(|| v * 10 + u128::from(d - b'0'))
        })
    };
    let mut nanos = digits(frac)?;
    for _ in frac.len()..9 {
        nanos *= 10;
    }
    Some(digits(secs)? * 1_000_000_000 + nanos)
}

/// The Probe, and the in-process herd dialling it if `--in-process`.
pub fn start_probe(o: &Opts) -> io::Result<(Probe, Option<InProcHerd>)> {
    if o.in_process {
        let probe = Probe::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let herd = InProcHerd::reference_with_probe(probe.addr(), &[o.observe.as_str()])?;
        Ok((probe, Some(herd)))
    } else {
        let probe = Probe::bind(o.probe).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("the Probe cannot listen on {}: {e}", o.probe),
            )
        })?;
        Ok((probe, None))
    }
}

/// Polls the Probe until server `name` has dialled it.
pub fn wait_for_link(probe: &mut Probe, name: &str, patience: Duration) -> io::Result<Duration> {
    let start = Instant::now();
    let mut up = false;
    while !up {
        if start.elapsed() > patience {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{name} did not dial the Probe at {} within {patience:?} (is the herd running with tools/probe-herd.conf?)",
                    probe.addr()
                ),
            ));
        }
        probe.poll(Duration::from_millis(5), &mut |ev| {
            if let ProbeEvent::Up { name: n } = ev {
                up |= n == name;
            }
        })?;
    }
    Ok(start.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_fields_take_client_and_time() {
        let line = b"AT Hands +0.000012345 fl-3 +34.068930-118.445127 1700000000.5";
        let (client, t) = at_fields(line).expect("an AT line");
        assert_eq!(client, b"fl-3");
        assert_eq!(t, 1_700_000_000_500_000_000);
        assert!(at_fields(b"? IAMAT x").is_none());
        assert!(at_fields(b"AT a b c d").is_none());
        assert_eq!(parse_time(b"12"), Some(12_000_000_000));
        assert_eq!(parse_time(b"1.000000001"), Some(1_000_000_001));
        assert_eq!(parse_time(b"1.x"), None);
    }
}

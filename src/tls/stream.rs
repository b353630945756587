//! One TCP connection with its rustls session, client or server side,
//! driven by hand over a nonblocking mio `TcpStream` (rustls
//! `examples/src/bin/tlsclient-mio.rs` and `tlsserver-mio.rs`, errors
//! handled): `read_tls` → `process_new_packets` → drain `reader()` until
//! `WouldBlock`; `write_tls` while `wants_write()`; WRITABLE interest while
//! records wait. Never `Stream`/`complete_io`, which would block the loop.
//!
//! This is the one piece of TLS driving in the repository. The Places
//! client uses [`TlsStream::read_step`] (everything rustls has, into a
//! response buffer); the loop's connections and herd links use [`Stream`],
//! which reads into the loop's scratch buffer and writes from an
//! [`crate::conn::Output`] like a plain socket does, so the line reader,
//! the engine, the throttle and the output caps see plaintext and never
//! know which transport carried it.
//!
//! Memory stays bounded whatever the peer does: rustls keeps at most
//! 16 KiB of received plaintext (we drain it before reading more), one
//! record being reassembled, and what we hand its writer, which is one
//! [`PLAINTEXT_CHUNK`] at a time and only once the records of the last one
//! are on the socket. Plaintext waiting for the handshake stays in the
//! caller's own output buffer, under the caller's cap.

use std::fmt;
use std::io::{self, Read, Write};

use mio::net::TcpStream;
use rustls::pki_types::CertificateDer;

/// Plaintext handed to rustls per write, and read per `reader()` call.
pub const PLAINTEXT_CHUNK: usize = 16 * 1024;

/// Why a TLS connection failed.
#[derive(Debug)]
pub enum TlsError {
    Io(io::Error),
    Tls(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Io(e) => write!(f, "{e}"),
            TlsError::Tls(e) => write!(f, "TLS: {e}"),
        }
    }
}

impl From<TlsError> for io::Error {
    fn from(e: TlsError) -> io::Error {
        match e {
            TlsError::Io(e) => e,
            TlsError::Tls(e) => io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")),
        }
    }
}

/// What one [`TlsStream::read_step`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStep {
    /// Bytes arrived (maybe no plaintext yet); read again.
    Data,
    /// Nothing more for now; wait for readiness.
    WouldBlock,
    /// The peer closed (close_notify or TCP EOF); all plaintext was drained.
    Eof,
}

/// A TCP connection with its TLS session.
pub struct TlsStream {
    sock: TcpStream,
    tls: rustls::Connection,
    /// The socket said EOF: nothing more will come.
    eof: bool,
    /// The last read from the socket got less than it asked for (or would
    /// block): the socket was drained then, as after a short plain read.
    drained: bool,
    /// [`TlsStream::handshake_done`] has told how the handshake went.
    told: bool,
}

/// The socket as `read_tls` sees it, noting what its one read asked for
/// and got: rustls asks for all the room in its buffer, so a short read
/// means the kernel had no more.
struct Counted<'a> {
    sock: &'a mut TcpStream,
    asked: usize,
    got: usize,
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.asked = buf.len();
        let n = self.sock.read(buf)?;
        self.got = n;
        Ok(n)
    }
}

impl TlsStream {
    /// Wraps a connected (or connecting) socket and a fresh session. A
    /// client session has its ClientHello queued already; a server session
    /// waits for one.
    pub fn new(sock: TcpStream, tls: impl Into<rustls::Connection>) -> TlsStream {
        TlsStream {
            sock,
            tls: tls.into(),
            eof: false,
            drained: false,
            told: false,
        }
    }

    pub fn sock(&self) -> &TcpStream {
        &self.sock
    }

    pub fn sock_mut(&mut self) -> &mut TcpStream {
        &mut self.sock
    }

    /// Still negotiating: no plaintext can be written yet.
    pub fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// Records wait to be written: the socket wants WRITABLE interest.
    pub fn wants_write(&self) -> bool {
        self.tls.wants_write()
    }

    /// The peer's certificate chain, end entity first, once the handshake
    /// is done (for a server side: only if it asked for one). A resumed
    /// session has the chain its first handshake verified: rustls keeps it
    /// in the ticket.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.tls.peer_certificates()
    }

    /// How the handshake went (full, or resumed from a ticket), once known.
    pub fn handshake_kind(&self) -> Option<rustls::HandshakeKind> {
        self.tls.handshake_kind()
    }

    /// How the handshake went, once, the first time it is asked after the
    /// handshake is done (for counting); `None` before and after that.
    pub fn handshake_done(&mut self) -> Option<rustls::HandshakeKind> {
        if self.told || self.tls.is_handshaking() {
            return None;
        }
        self.told = true;
        self.tls.handshake_kind()
    }

    /// Queues plaintext; rustls holds it until the handshake is done. For
    /// callers that bound what they queue themselves (a Places request).
    pub fn queue(&mut self, data: &[u8]) -> Result<(), TlsError> {
        self.tls.writer().write_all(data).map_err(TlsError::Io)
    }

    /// Writes TLS records while rustls has any, until the socket would block.
    pub fn write_pending(&mut self) -> Result<(), TlsError> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                // The socket is full: WRITABLE interest brings us back.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TlsError::Io(e)),
            }
        }
        Ok(())
    }

    /// One `read_tls` from the socket and `process_new_packets`; answers
    /// the handshake asks for are written at once. `Ok(false)`: the socket
    /// had nothing (`WouldBlock`).
    fn pull(&mut self) -> Result<bool, TlsError> {
        let got = loop {
            let mut counted = Counted {
                sock: &mut self.sock,
                asked: 0,
                got: 0,
            };
            match self.tls.read_tls(&mut counted) {
                Ok(0) => {
                    self.eof = true;
                    break true;
                }
                Ok(_) => {
                    self.drained = counted.got < counted.asked;
                    break true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.drained = true;
                    break false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TlsError::Io(e)),
            }
        };
        if let Err(e) = self.tls.process_new_packets() {
            // Tell the peer why (an alert), best effort.
            let _ = self.write_pending();
            return Err(TlsError::Tls(e));
        }
        self.write_pending()?;
        Ok(got)
    }

    /// Plaintext rustls holds into `buf`: `Some(0)` at the end of the
    /// stream, `None` when it holds none now.
    fn take_plaintext(&mut self, buf: &mut [u8]) -> Result<Option<usize>, TlsError> {
        loop {
            return match self.tls.reader().read(buf) {
                // close_notify (or an empty `buf`).
                Ok(n) => Ok(Some(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                // TCP EOF without close_notify, after all plaintext: a
                // line-based protocol loses nothing by it (a torn last line
                // is refused like any unterminated line).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Some(0)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(TlsError::Io(e)),
            };
        }
    }

    /// Reads plaintext into `buf` like `Read::read` on a nonblocking
    /// socket: `Ok(n > 0)`, `Ok(0)` at the end, `WouldBlock` when the
    /// socket is drained. A short read alone does not mean the socket is
    /// drained (the plaintext came in records): [`Stream::drained_by`] says
    /// when it does, saving the read that would only say `WouldBlock`.
    pub fn read_plain(&mut self, buf: &mut [u8]) -> Result<usize, TlsError> {
        loop {
            if let Some(n) = self.take_plaintext(buf)? {
                return Ok(n);
            }
            if self.eof {
                return Ok(0);
            }
            if !self.pull()? {
                return Err(TlsError::Io(io::ErrorKind::WouldBlock.into()));
            }
        }
    }

    /// One `read_tls`, then `process_new_packets`, then all plaintext into
    /// `out` (whose growth the caller bounds, as a Places response's is).
    pub fn read_step(&mut self, out: &mut Vec<u8>) -> Result<ReadStep, TlsError> {
        let step = match self.pull()? {
            _ if self.eof => ReadStep::Eof,
            true => ReadStep::Data,
            false => ReadStep::WouldBlock,
        };
        let mut chunk = [0u8; PLAINTEXT_CHUNK];
        loop {
            match self.take_plaintext(&mut chunk)? {
                Some(0) => return Ok(ReadStep::Eof),
                Some(n) => out.extend_from_slice(&chunk[..n]),
                None => return Ok(step),
            }
        }
    }

    /// Writes plaintext like `Write::write` on a nonblocking socket: takes
    /// at most [`PLAINTEXT_CHUNK`], and only when the records of what it
    /// took before are on the socket and the handshake is done
    /// (`WouldBlock` otherwise), so rustls never holds more than one chunk.
    pub fn write_plain(&mut self, buf: &[u8]) -> Result<usize, TlsError> {
        self.write_pending()?;
        if self.tls.wants_write() || self.tls.is_handshaking() {
            return Err(TlsError::Io(io::ErrorKind::WouldBlock.into()));
        }
        let n = self
            .tls
            .writer()
            .write(&buf[..buf.len().min(PLAINTEXT_CHUNK)])
            .map_err(TlsError::Io)?;
        self.write_pending()?;
        Ok(n)
    }

    /// Sends close_notify, best effort and without waiting.
    pub fn close_notify(&mut self) {
        if !self.tls.is_handshaking() {
            self.tls.send_close_notify();
            let _ = self.write_pending();
        }
    }
}

/// A connection of the loop: a plain socket or TLS over one. Reads and
/// writes plaintext with the nonblocking `Read`/`Write` conventions.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    /// The socket underneath, for registering and socket options.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => t.sock(),
        }
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => t.sock_mut(),
        }
    }

    /// The TLS session, if this is one.
    pub fn tls(&self) -> Option<&TlsStream> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => Some(t),
        }
    }

    /// Whether a read of `n` plaintext bytes into a buffer of `asked`
    /// proves the socket drained, so that the next read would only say
    /// `WouldBlock` (a plain socket: a short read; TLS: a short read of
    /// plaintext — rustls had no more — after a short read of the socket).
    pub fn drained_by(&self, n: usize, asked: usize) -> bool {
        match self {
            Stream::Plain(_) => n < asked,
            Stream::Tls(t) => n < asked && t.drained,
        }
    }

    /// Whether bytes wait below our own output (TLS records): the socket
    /// wants WRITABLE interest even with that output empty.
    pub fn wants_write(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.wants_write(),
        }
    }

    /// How a TLS handshake went, once, when it is done; see
    /// [`TlsStream::handshake_done`].
    pub fn handshake_done(&mut self) -> Option<rustls::HandshakeKind> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => t.handshake_done(),
        }
    }

    /// Still in the TLS handshake.
    pub fn is_handshaking(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.is_handshaking(),
        }
    }

    /// Writes what waits below our own output (TLS records).
    pub fn send_pending(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(t) => t.write_pending().map_err(io::Error::from),
        }
    }

    /// close_notify for TLS (best effort); nothing for a plain socket.
    pub fn close_notify(&mut self) {
        if let Stream::Tls(t) = self {
            t.close_notify();
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read_plain(buf).map_err(io::Error::from),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write_plain(buf).map_err(io::Error::from),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_pending()
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stream::Plain(s) => f.debug_tuple("Plain").field(s).finish(),
            Stream::Tls(t) => f
                .debug_struct("Tls")
                .field("sock", t.sock())
                .field("handshaking", &t.is_handshaking())
                .finish(),
        }
    }
}

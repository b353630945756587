//! One TCP connection with its rustls session, client or server side,
//! driven by hand over a nonblocking mio `TcpStream`: never
//! `Stream`/`complete_io`, which would block the loop. This is the one
//! piece of TLS driving in the repository. The Places client uses
//! [`TlsStream::read_step`] (everything rustls has, into a response
//! buffer); the loop's connections and herd links use [`Stream`], which
//! reads into the loop's scratch buffer and writes from an
//! [`crate::conn::Output`] like a plain socket does, so the line reader,
//! the engine, the throttle and the output caps see plaintext and never
//! know which transport carried it.
//!
//! **Two drivers.** What herd dials (links, the Places client, flood_load)
//! uses rustls's buffered connection ([`TlsStream::new`]), as rustls's
//! `tlsclient-mio` example does: `read_tls` → `process_new_packets` →
//! drain `reader()` until `WouldBlock`; `write_tls` while `wants_write()`.
//! What herd accepts on its `tls`, `https` and peer ports uses rustls's
//! unbuffered API ([`TlsStream::server`], an `UnbufferedServerConnection`),
//! because a buffered connection keeps a 4 KiB read buffer for as long as
//! it lives, which was half of what an idle TLS connection cost
//! (docs/PERFORMANCE.md, issue 22). The unbuffered server side owns no
//! read buffer:
//!
//! - **Reading** ([`TlsStream::read_plain`] with the loop's 64 KiB scratch
//!   buffer): the ciphertext is read from the socket into the buffer's
//!   second half, after the piece of a record held from the last read;
//!   rustls decrypts the records there (`process_tls_records`) and their
//!   plaintext is copied to the first half, which the caller gets as if it
//!   had read plaintext. What remains of an incomplete record is copied to
//!   the connection's `held` buffer, which is empty, with no allocation,
//!   whenever a read ends on a record boundary, as an idle connection's
//!   last one does. It holds at most [`MAX_HELD`] bytes (one record) once
//!   the handshake is done, [`MAX_HELD_HANDSHAKING`] during it (a
//!   handshake message rustls joins from several records stays in the
//!   buffer until it is whole; one larger than the half buffer is gathered
//!   in `held` itself). A handshake's answers are encoded into `pending`
//!   and written at once.
//! - **Writing** ([`TlsStream::write_plain`]): at most [`PLAINTEXT_CHUNK`]
//!   of plaintext, only once the last records are on the socket, is
//!   encrypted into one buffer per thread (`SEAL`) and written from
//!   there; only what the socket does not take is copied to `pending`
//!   (WRITABLE interest brings the loop back, as for the buffered driver).
//!   `pending` is empty, with no allocation, once it is written, and
//!   bounded by [`MAX_PENDING`] (rustls's own messages a peer provokes
//!   without reading them).
//! - **rustls's rules**: what a call to `process_tls_records` did not tell
//!   the caller to discard must be in front of the next call's buffer
//!   (rustls remembers where it was in a handshake message being joined),
//!   so the write side hands rustls `held`, never an empty buffer; after an
//!   error only the alert rustls queued is taken from it (processing the
//!   failed records again would make it fail twice), and the session is
//!   asked nothing more.
//!
//! Idle, a server side holds what rustls keeps per session (its
//! connection struct, the two directions' AES-GCM keys, the traffic
//! secrets for key updates, two small queues) and nothing of its own;
//! `examples/tls-memory.rs` counts it.
//!
//! Memory stays bounded whatever the peer does: the buffered driver keeps
//! at most 16 KiB of received plaintext (drained before reading more), one
//! record being reassembled, and what we hand its writer, which is one
//! [`PLAINTEXT_CHUNK`] at a time and only once the records of the last one
//! are on the socket; the unbuffered one the bounds above. Plaintext
//! waiting for the handshake stays in the caller's own output buffer,
//! under the caller's cap.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read, Write};

use mio::net::TcpStream;
use rustls::pki_types::CertificateDer;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};

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
    tls: Session,
    /// The socket said EOF: nothing more will come.
    eof: bool,
    /// The last read from the socket got less than it asked for (or would
    /// block): the socket was drained then, as after a short plain read.
    drained: bool,
    /// [`TlsStream::handshake_done`] has told how the handshake went.
    told: bool,
}

/// The two ways a session is driven. The server side is inline (the
/// `TlsStream` is boxed in [`Stream`] already: one allocation per accepted
/// connection, not two); the few dialled sessions are boxed.
#[allow(clippy::large_enum_variant)]
enum Session {
    /// rustls's buffered connection (its own read buffer and record
    /// queues): what herd dials (links, the Places client, flood_load).
    Buffered(Box<rustls::Connection>),
    /// rustls's unbuffered server connection: what herd accepts on its
    /// `tls`, `https` and peer ports. Records are decrypted in the
    /// caller's read buffer.
    Server(ServerSide),
}

/// The server side's session and the little it keeps between reads.
struct ServerSide {
    conn: UnbufferedServerConnection,
    /// Ciphertext read but not yet processed: a record that straddles two
    /// reads (during the handshake, the records of a handshake message
    /// being joined). Empty, with no allocation, while idle; bounded by
    /// [`MAX_HELD`] and [`MAX_HELD_HANDSHAKING`].
    held: Vec<u8>,
    /// TLS bytes for the socket that it did not take yet (a handshake's
    /// answers, the end of a record the socket was too full for). Empty,
    /// with no allocation, while idle; bounded by [`MAX_PENDING`].
    pending: Vec<u8>,
    /// Plaintext decrypted that the reader's buffer had no room for (only
    /// when a held handshake message is larger than half that buffer);
    /// read first. Empty, with no allocation, nearly always.
    left: Vec<u8>,
    /// The peer sent close_notify (or both sides did): no more plaintext.
    closed: bool,
    /// The session failed (the error was returned): rustls is not asked
    /// anything more.
    failed: bool,
    /// Whether `pending` waits for a reply: see [`Later`].
    later: Later,
}

/// Whether a server side's `pending` holds only what rustls queued after
/// the handshake while a read decrypted plaintext (the session's ticket,
/// right after the client's Finished; the answer to a key update), which
/// waits to leave in one write with the reply that plaintext brings
/// ([`TlsStream::write_plain`]). The loop writes what is pending before it
/// writes a connection's replies, so the first [`TlsStream::write_pending`]
/// after that read leaves it there, and the next writes it: at most a turn
/// later (WRITABLE interest) if no reply comes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Later {
    /// Nothing waits (or what does is written as usual).
    No,
    /// It waits for the reply.
    Reply,
    /// It waited through one `write_pending`; the next writes it.
    Once,
}

/// The most ciphertext a server side holds between reads once the
/// handshake is done: one record of the largest size TLS 1.2 allows (2^14
/// bytes of plaintext, 2,048 of expansion, the 5-byte header); rustls
/// refuses larger ones. More is a protocol error and closes the connection.
pub const MAX_HELD: usize = 16_384 + 2_048 + 5;

/// The most ciphertext a server side holds while the handshake is joining
/// a message from several records: rustls's limit on a handshake message
/// (64 KiB), and one record.
pub const MAX_HELD_HANDSHAKING: usize = 0xffff + MAX_HELD;

/// The most TLS bytes a server side keeps for a socket that does not take
/// them. Plaintext is only encrypted once the last records are out, so
/// this is a handshake's answers or rustls's own messages (key updates,
/// alerts): a peer that provokes more without reading them is closed.
pub const MAX_PENDING: usize = 64 * 1024;

/// The smallest buffer a server side reads plaintext into: its first half
/// takes the plaintext, its second the ciphertext read from the socket,
/// and each must hold a whole record. The loop's scratch buffer is 64 KiB.
pub const MIN_READ_BUFFER: usize = 2 * MAX_HELD + 4096;

/// A socket read into the second half of the reader's buffer asks for at
/// least this much after the ciphertext held; with less room, ciphertext
/// gathers in the connection's own `held` buffer (a handshake message of
/// many records).
const MIN_SOCKET_READ: usize = 4096;

thread_local! {
    /// Where the loop's thread encrypts plaintext: the records go from here
    /// to the socket, and only what the socket does not take is kept (in
    /// the connection's `pending`). One record of [`PLAINTEXT_CHUNK`] and
    /// its expansion; larger if rustls ever asks.
    static SEAL: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What a server side encrypts.
#[derive(Clone, Copy)]
enum Seal<'a> {
    Data(&'a [u8]),
    CloseNotify,
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

/// A `Vec` that is empty gives its allocation back.
fn release(v: &mut Vec<u8>) {
    if v.is_empty() && v.capacity() > 0 {
        *v = Vec::new();
    }
}

/// One read from the socket: `None` when it would block.
fn read_socket(sock: &mut TcpStream, into: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        return match sock.read(into) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

/// Writes `bytes` until the socket would block: how many it took.
fn write_socket(sock: &mut TcpStream, bytes: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < bytes.len() {
        match sock.write(&bytes[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn would_block() -> TlsError {
    TlsError::Io(io::ErrorKind::WouldBlock.into())
}

fn failed() -> TlsError {
    TlsError::Io(io::Error::other("TLS: the session failed"))
}

impl ServerSide {
    fn new(conn: UnbufferedServerConnection) -> ServerSide {
        ServerSide {
            conn,
            held: Vec::new(),
            pending: Vec::new(),
            left: Vec::new(),
            closed: false,
            failed: false,
            later: Later::No,
        }
    }

    /// Appends the TLS bytes of one `EncodeTlsData` state to `pending`.
    fn encode(
        pending: &mut Vec<u8>,
        mut state: rustls::unbuffered::EncodeTlsData<'_, ServerConnectionData>,
    ) -> Result<(), TlsError> {
        let need = match state.encode(&mut []) {
            Ok(_) | Err(EncodeError::AlreadyEncoded) => return Ok(()),
            Err(EncodeError::InsufficientSize(s)) => s.required_size,
        };
        if pending.len() + need > MAX_PENDING {
            return Err(TlsError::Io(io::Error::other(format!(
                "over {MAX_PENDING} bytes of TLS records wait for a peer that does not read them"
            ))));
        }
        let at = pending.len();
        pending.resize(at + need, 0);
        match state.encode(&mut pending[at..]) {
            Ok(n) => pending.truncate(at + n),
            Err(_) => pending.truncate(at),
        }
        Ok(())
    }

    /// Processes the records in `cipher` (the second half of the reader's
    /// buffer, or `held`), decrypting their plaintext into `out` (and
    /// `left` if `out` is full), the handshake's answers into `pending`.
    /// Stops where a record is incomplete: `(consumed, produced)`, the
    /// bytes of `cipher` done with and of `out` filled.
    fn process(&mut self, cipher: &mut [u8], out: &mut [u8]) -> Result<(usize, usize), TlsError> {
        let ServerSide {
            conn,
            pending,
            left,
            closed,
            ..
        } = self;
        let (mut start, mut produced) = (0, 0);
        loop {
            let status = conn.process_tls_records(&mut cipher[start..]);
            let mut discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    Self::queue_alert(conn, pending, &mut cipher[start..]);
                    return Err(TlsError::Tls(e));
                }
            };
            let mut stop = false;
            match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(TlsError::Tls)?;
                        let payload = record.payload;
                        let fit = payload.len().min(out.len() - produced);
                        out[produced..produced + fit].copy_from_slice(&payload[..fit]);
                        produced += fit;
                        left.extend_from_slice(&payload[fit..]);
                        discard += record.discard;
                    }
                }
                ConnectionState::EncodeTlsData(state) => Self::encode(pending, state)?,
                // `pending` goes to the socket after this.
                ConnectionState::TransmitTlsData(state) => state.done(),
                ConnectionState::PeerClosed => *closed = true,
                ConnectionState::Closed => {
                    *closed = true;
                    stop = true;
                }
                // Early data is never accepted (the configurations leave
                // `max_early_data_size` at 0): rustls never gets here.
                ConnectionState::ReadEarlyData(_) => {
                    return Err(TlsError::Tls(rustls::Error::General(
                        "early data refused".into(),
                    )));
                }
                // More records are needed (an incomplete one, or none).
                ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => stop = true,
                _ => stop = true,
            }
            start += discard;
            if stop {
                return Ok((start, produced));
            }
        }
    }

    /// Writes `pending` until the socket would block.
    fn flush(&mut self, sock: &mut TcpStream) -> Result<(), TlsError> {
        if !self.pending.is_empty() {
            let n = write_socket(sock, &self.pending).map_err(TlsError::Io)?;
            self.pending.drain(..n);
            release(&mut self.pending);
        }
        Ok(())
    }

    /// The session failed: the alert [`ServerSide::process`] queued goes
    /// out, best effort, and the error is returned.
    fn fail(&mut self, sock: &mut TcpStream, e: TlsError) -> TlsError {
        self.failed = true;
        self.held = Vec::new();
        let _ = self.flush(sock);
        e
    }

    /// After an error: the alert rustls queued, into `pending`, best
    /// effort. rustls hands queued messages out before it looks at the
    /// buffer again (`cipher`, the failed call's), so it is not processed
    /// twice (a second fatal alert is a bug rustls asserts against).
    fn queue_alert(
        conn: &mut UnbufferedServerConnection,
        pending: &mut Vec<u8>,
        cipher: &mut [u8],
    ) {
        while conn.wants_write() {
            let status = conn.process_tls_records(cipher);
            match status.state {
                Ok(ConnectionState::EncodeTlsData(state)) => {
                    if Self::encode(pending, state).is_err() {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    /// Encrypts `what` into `seal` (grown if rustls asks for more room),
    /// after any handshake message rustls has queued (into `pending`):
    /// the bytes of `seal` written.
    fn seal(&mut self, what: Seal<'_>, seal: &mut Vec<u8>) -> Result<usize, TlsError> {
        if self.failed {
            return Err(failed());
        }
        if seal.is_empty() {
            seal.resize(PLAINTEXT_CHUNK + 1024, 0);
        }
        for _ in 0..64 {
            // Not an empty buffer: what rustls has not discarded of the last
            // one (a handshake message being joined) must be there again.
            let mut held = std::mem::take(&mut self.held);
            let (discard, done) = self.seal_step(what, seal, &mut held);
            held.drain(..discard.min(held.len()));
            self.held = held;
            release(&mut self.held);
            if let Some(done) = done {
                if let Err(TlsError::Tls(_)) = done {
                    self.failed = true;
                }
                return done;
            }
        }
        Err(TlsError::Io(io::Error::other("TLS: no way to write")))
    }

    /// One state of [`ServerSide::seal`]: the bytes of `held` to discard,
    /// and the outcome once there is one.
    fn seal_step(
        &mut self,
        what: Seal<'_>,
        seal: &mut Vec<u8>,
        held: &mut [u8],
    ) -> (usize, Option<Result<usize, TlsError>>) {
        let status = self.conn.process_tls_records(held);
        let discard = status.discard;
        let state = match status.state {
            Ok(state) => state,
            Err(e) => return (discard, Some(Err(TlsError::Tls(e)))),
        };
        let done = match state {
            ConnectionState::WriteTraffic(mut traffic) => {
                let sealed = match what {
                    Seal::Data(data) => traffic.encrypt(data, seal),
                    Seal::CloseNotify => traffic.queue_close_notify(seal),
                };
                match sealed {
                    Ok(n) => Some(Ok(n)),
                    Err(EncryptError::InsufficientSize(s)) => {
                        seal.resize(s.required_size, 0);
                        None
                    }
                    Err(e) => Some(Err(TlsError::Io(io::Error::other(format!("TLS: {e}"))))),
                }
            }
            ConnectionState::EncodeTlsData(state) => match Self::encode(&mut self.pending, state) {
                Ok(()) => None,
                Err(e) => Some(Err(e)),
            },
            ConnectionState::TransmitTlsData(state) => {
                state.done();
                None
            }
            ConnectionState::PeerClosed => {
                self.closed = true;
                None
            }
            // Plaintext is always taken by the read that decrypts it;
            // should rustls still hold some, it waits in `left`.
            ConnectionState::ReadTraffic(mut traffic) => loop {
                match traffic.next_record() {
                    None => break None,
                    Some(Ok(record)) => self.left.extend_from_slice(record.payload),
                    Some(Err(e)) => break Some(Err(TlsError::Tls(e))),
                }
            },
            ConnectionState::Closed => Some(Err(TlsError::Io(io::ErrorKind::BrokenPipe.into()))),
            _ => Some(Err(would_block())),
        };
        (discard, done)
    }
}

impl TlsStream {
    /// Wraps a connected (or connecting) socket and a fresh session, driven
    /// by rustls's buffered API. A client session has its ClientHello
    /// queued already; a server session waits for one.
    pub fn new(sock: TcpStream, tls: impl Into<rustls::Connection>) -> TlsStream {
        TlsStream::with(sock, Session::Buffered(Box::new(tls.into())))
    }

    /// Wraps an accepted socket and a fresh unbuffered server session: what
    /// the loop's TLS ports use (see the module's header).
    pub fn server(sock: TcpStream, tls: UnbufferedServerConnection) -> TlsStream {
        TlsStream::with(sock, Session::Server(ServerSide::new(tls)))
    }

    fn with(sock: TcpStream, tls: Session) -> TlsStream {
        TlsStream {
            sock,
            tls,
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

    /// What rustls says of the session, whichever way it is driven.
    fn common(&self) -> &rustls::CommonState {
        match &self.tls {
            Session::Buffered(c) => c,
            Session::Server(s) => &s.conn,
        }
    }

    /// Still negotiating: no plaintext can be written yet.
    pub fn is_handshaking(&self) -> bool {
        self.common().is_handshaking()
    }

    /// The peer's close_notify has been read (a server side): the next
    /// read says the end.
    fn peer_closed(&self) -> bool {
        match &self.tls {
            Session::Buffered(_) => false,
            Session::Server(s) => s.closed,
        }
    }

    /// Records wait to be written: the socket wants WRITABLE interest.
    pub fn wants_write(&self) -> bool {
        match &self.tls {
            Session::Buffered(c) => c.wants_write(),
            Session::Server(s) => !s.pending.is_empty(),
        }
    }

    /// The peer's certificate chain, end entity first, once the handshake
    /// is done (for a server side: only if it asked for one). A resumed
    /// session has the chain its first handshake verified: rustls keeps it
    /// in the ticket.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.common().peer_certificates()
    }

    /// How the handshake went (full, or resumed from a ticket), once known.
    pub fn handshake_kind(&self) -> Option<rustls::HandshakeKind> {
        self.common().handshake_kind()
    }

    /// How the handshake went, once, the first time it is asked after the
    /// handshake is done (for counting); `None` before and after that.
    pub fn handshake_done(&mut self) -> Option<rustls::HandshakeKind> {
        if self.told || self.is_handshaking() {
            return None;
        }
        self.told = true;
        self.handshake_kind()
    }

    /// Queues plaintext; rustls holds it until the handshake is done. For
    /// callers that bound what they queue themselves (a Places request).
    /// Only a buffered session queues: a server side says `WouldBlock`.
    pub fn queue(&mut self, data: &[u8]) -> Result<(), TlsError> {
        match &mut self.tls {
            Session::Buffered(c) => c.writer().write_all(data).map_err(TlsError::Io),
            Session::Server(_) => Err(would_block()),
        }
    }

    /// Writes TLS records while there are any, until the socket would block.
    pub fn write_pending(&mut self) -> Result<(), TlsError> {
        match &mut self.tls {
            Session::Buffered(c) => {
                while c.wants_write() {
                    match c.write_tls(&mut self.sock) {
                        Ok(_) => {}
                        // The socket is full: WRITABLE interest brings us back.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(TlsError::Io(e)),
                    }
                }
            }
            // What waits for a reply leaves with it, or on the next call.
            Session::Server(s) if s.later == Later::Reply => s.later = Later::Once,
            Session::Server(s) => {
                s.later = Later::No;
                s.flush(&mut self.sock)?
            }
        }
        Ok(())
    }

    /// One `read_tls` from the socket and `process_new_packets`; answers
    /// the handshake asks for are written at once. `Ok(false)`: the socket
    /// had nothing (`WouldBlock`).
    fn pull(&mut self) -> Result<bool, TlsError> {
        let Session::Buffered(tls) = &mut self.tls else {
            return Ok(false);
        };
        let got = loop {
            let mut counted = Counted {
                sock: &mut self.sock,
                asked: 0,
                got: 0,
            };
            match tls.read_tls(&mut counted) {
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
        if let Err(e) = tls.process_new_packets() {
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
        let Session::Buffered(tls) = &mut self.tls else {
            return Ok(None);
        };
        loop {
            return match tls.reader().read(buf) {
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
    /// when it does, saving the read that would only say `WouldBlock`. A
    /// server side needs `buf` of at least [`MIN_READ_BUFFER`] bytes.
    pub fn read_plain(&mut self, buf: &mut [u8]) -> Result<usize, TlsError> {
        if let Session::Server(_) = self.tls {
            return self.read_server(buf);
        }
        loop {
            if let Some(n) = self.take_plaintext(buf)? {
                return Ok(n);
            }
            if self.eof {
                return Ok(0);
            }
            if !self.pull()? {
                return Err(would_block());
            }
        }
    }

    /// [`TlsStream::read_plain`] for a server side: ciphertext read into
    /// the second half of `buf` (after the piece of a record held from the
    /// last read), decrypted there, its plaintext copied to the first half
    /// and returned; what is left of an incomplete record is held.
    fn read_server(&mut self, buf: &mut [u8]) -> Result<usize, TlsError> {
        let TlsStream {
            sock,
            tls,
            eof,
            drained,
            ..
        } = self;
        let Session::Server(s) = tls else {
            return Err(would_block());
        };
        if !s.left.is_empty() {
            let n = s.left.len().min(buf.len());
            buf[..n].copy_from_slice(&s.left[..n]);
            s.left.drain(..n);
            release(&mut s.left);
            return Ok(n);
        }
        if s.failed {
            return Err(failed());
        }
        if buf.len() < MIN_READ_BUFFER {
            return Err(TlsError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a TLS read needs a buffer of {MIN_READ_BUFFER} bytes"),
            )));
        }
        loop {
            if s.closed || *eof {
                return Ok(0);
            }
            let limit = if s.conn.is_handshaking() {
                MAX_HELD_HANDSHAKING
            } else {
                MAX_HELD
            };
            let (out, cipher) = buf.split_at_mut(buf.len() / 2);
            let held = s.held.len();
            // Whether what `pending` holds now may wait for a reply (it is
            // empty, or already waits so).
            let may_wait = s.later != Later::No || s.pending.is_empty();
            let (consumed, produced) = if held + MIN_SOCKET_READ <= cipher.len() {
                // The usual way: records decrypted in the reader's buffer.
                cipher[..held].copy_from_slice(&s.held);
                let room = cipher.len() - held;
                let Some(got) = read_socket(sock, &mut cipher[held..]).map_err(TlsError::Io)?
                else {
                    *drained = true;
                    return Err(would_block());
                };
                *drained = got < room;
                if got == 0 {
                    *eof = true;
                    continue;
                }
                s.held.clear();
                let filled = held + got;
                match s.process(&mut cipher[..filled], out) {
                    Ok((consumed, produced)) => {
                        s.held.extend_from_slice(&cipher[consumed..filled]);
                        (0, produced)
                    }
                    Err(e) => return Err(s.fail(sock, e)),
                }
            } else {
                // A handshake message of many records: gathered in `held`.
                let want = limit.saturating_sub(held).min(MAX_HELD);
                if want == 0 {
                    return Err(s.fail(sock, too_much(limit)));
                }
                s.held.resize(held + want, 0);
                let got = read_socket(sock, &mut s.held[held..]);
                let kept = match got {
                    Ok(Some(n)) => n,
                    _ => 0,
                };
                s.held.truncate(held + kept);
                let Some(got) = got.map_err(TlsError::Io)? else {
                    *drained = true;
                    return Err(would_block());
                };
                *drained = got < want;
                if got == 0 {
                    *eof = true;
                    continue;
                }
                let mut gathered = std::mem::take(&mut s.held);
                let done = s.process(&mut gathered, buf);
                s.held = gathered;
                match done {
                    Ok(done) => done,
                    Err(e) => return Err(s.fail(sock, e)),
                }
            };
            s.held.drain(..consumed);
            if s.held.len() > limit {
                return Err(s.fail(sock, too_much(limit)));
            }
            release(&mut s.held);
            // A handshake's answers go at once; after it, what rustls
            // queued with plaintext (a ticket) waits for the reply (`later`).
            if may_wait && produced > 0 && !s.pending.is_empty() && !s.conn.is_handshaking() {
                s.later = Later::Reply;
            } else {
                s.later = Later::No;
                s.flush(sock)?;
            }
            if produced > 0 {
                if !s.left.is_empty() {
                    *drained = false;
                }
                return Ok(produced);
            }
            if *drained && !s.closed && !*eof {
                // The read was short: the socket had no more, and another
                // would only say so.
                return Err(would_block());
            }
        }
    }

    /// One `read_tls`, then `process_new_packets`, then all plaintext into
    /// `out` (whose growth the caller bounds, as a Places response's is).
    pub fn read_step(&mut self, out: &mut Vec<u8>) -> Result<ReadStep, TlsError> {
        if let Session::Server(_) = self.tls {
            let mut chunk = vec![0u8; MIN_READ_BUFFER];
            let mut step = ReadStep::WouldBlock;
            loop {
                match self.read_plain(&mut chunk) {
                    Ok(0) => return Ok(ReadStep::Eof),
                    Ok(n) => {
                        out.extend_from_slice(&chunk[..n]);
                        step = ReadStep::Data;
                    }
                    Err(TlsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(step)
                    }
                    Err(e) => return Err(e),
                }
            }
        }
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
    /// (`WouldBlock` otherwise), so at most one chunk's records wait.
    ///
    /// A server side writes what rustls queued with the request (a ticket,
    /// see `later`) and the reply's records in one write; once the peer
    /// has sent close_notify, the records wait for the next call (the
    /// loop's close, whose close_notify joins them, or the next write or
    /// [`TlsStream::write_pending`]), so a resumed phone's ticket, reply
    /// and close_notify leave in one segment.
    pub fn write_plain(&mut self, buf: &[u8]) -> Result<usize, TlsError> {
        if let Session::Server(_) = self.tls {
            return self.write_server(buf);
        }
        self.write_pending()?;
        if self.wants_write() || self.is_handshaking() {
            return Err(would_block());
        }
        let take = &buf[..buf.len().min(PLAINTEXT_CHUNK)];
        let Session::Buffered(tls) = &mut self.tls else {
            return Err(would_block());
        };
        let n = tls.writer().write(take).map_err(TlsError::Io)?;
        self.write_pending()?;
        Ok(n)
    }

    /// [`TlsStream::write_plain`] for a server side.
    fn write_server(&mut self, buf: &[u8]) -> Result<usize, TlsError> {
        let TlsStream { sock, tls, .. } = self;
        let Session::Server(s) = tls else {
            return Err(would_block());
        };
        if s.later == Later::No {
            s.flush(sock)?;
            if !s.pending.is_empty() {
                return Err(would_block());
            }
        }
        if s.conn.is_handshaking() {
            return Err(would_block());
        }
        let take = &buf[..buf.len().min(PLAINTEXT_CHUNK)];
        if take.is_empty() {
            return Ok(0);
        }
        SEAL.with(|seal| {
            let seal = &mut *seal.borrow_mut();
            let n = s.seal(Seal::Data(take), seal)?;
            s.later = Later::No;
            if s.pending.is_empty() && !s.closed {
                let sent = write_socket(sock, &seal[..n]).map_err(TlsError::Io)?;
                s.pending.extend_from_slice(&seal[sent..n]);
                release(&mut s.pending);
            } else {
                s.pending.extend_from_slice(&seal[..n]);
                if !s.closed {
                    s.flush(sock)?;
                }
            }
            Ok(take.len())
        })
    }

    /// Sends close_notify, best effort and without waiting.
    pub fn close_notify(&mut self) {
        if self.is_handshaking() {
            return;
        }
        match &mut self.tls {
            Session::Buffered(tls) => tls.send_close_notify(),
            Session::Server(s) => {
                let sealed = SEAL.with(|seal| {
                    let seal = &mut *seal.borrow_mut();
                    let n = s.seal(Seal::CloseNotify, seal)?;
                    s.pending.extend_from_slice(&seal[..n]);
                    Ok::<_, TlsError>(())
                });
                // Whatever waits goes now, in the same write.
                s.later = Later::No;
                if sealed.is_err() {
                    return;
                }
            }
        }
        let _ = self.write_pending();
    }
}

impl Drop for TlsStream {
    /// Records a server side kept to join a later write (a reply's after
    /// the peer's close_notify) leave, best effort, should the connection
    /// be dropped without a close (a stopping loop).
    fn drop(&mut self) {
        if let Session::Server(s) = &mut self.tls {
            if !s.failed && !s.pending.is_empty() {
                let _ = s.flush(&mut self.sock);
            }
        }
    }
}

/// A server side held more ciphertext than any record or handshake
/// message needs.
fn too_much(limit: usize) -> TlsError {
    TlsError::Io(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("TLS: over {limit} bytes of records that do not complete"),
    ))
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
            // After close_notify the next read says the end, without a
            // syscall: the loop learns it in this turn, not at the FIN's.
            Stream::Tls(t) => n < asked && t.drained && !t.peer_closed(),
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

#[cfg(test)]
mod tests {
    //! The server side's record handling, driven by hand over real loopback
    //! sockets: on loopback a write is in the peer's receive queue when it
    //! returns, so each `read_plain` here sees exactly what was sent.

    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream as StdStream};
    use std::sync::Arc;

    use rustls::pki_types::ServerName;

    use super::*;
    use crate::tls::settings::testing::TestPki;
    use crate::tls::HerdTls;

    fn herd_tls() -> (TestPki, HerdTls) {
        let pki = TestPki::new();
        pki.servers(&["Bench"]);
        let tls = crate::tls::settings::load(&pki.files(), &pki.config_file(), "Bench")
            .expect("test certificates load");
        (pki, tls)
    }

    /// A client trusting the test CA: herd's own dialling configuration
    /// (TLS 1.3, a client certificate), or without a client certificate,
    /// TLS 1.2 only if `tls12`.
    fn client_config(pki: &TestPki, tls: &HerdTls, kind: Kind) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        let versions: &[&rustls::SupportedProtocolVersion] = match kind {
            Kind::Dial => return Arc::clone(&tls.dial),
            Kind::Tls12 => &[&rustls::version::TLS12],
            Kind::NoCert => &[&rustls::version::TLS13],
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
            roots.add(cert.unwrap()).expect("root");
        }
        let provider = Arc::new(crate::tls::provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    #[derive(Clone, Copy)]
    enum Kind {
        Dial,
        Tls12,
        NoCert,
    }

    /// One connection: herd's server side and a rustls client, each on its
    /// end of a loopback socket.
    struct Pair {
        server: TlsStream,
        client: rustls::ClientConnection,
        sock: StdStream,
        scratch: Vec<u8>,
    }

    /// What the server side's reads came to.
    #[derive(Debug, PartialEq, Eq)]
    enum End {
        WouldBlock,
        Eof,
    }

    impl Pair {
        fn new(server: &Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) -> Pair {
            let listener = TcpListener::bind("127.0.0.1:0").expect("loopback");
            let sock = StdStream::connect(listener.local_addr().unwrap()).expect("connect");
            let (accepted, _) = listener.accept().expect("accept");
            accepted.set_nonblocking(true).unwrap();
            sock.set_nonblocking(true).unwrap();
            sock.set_nodelay(true).unwrap();
            let conn = UnbufferedServerConnection::new(Arc::clone(server)).expect("session");
            let name = ServerName::try_from("Bench").unwrap();
            Pair {
                server: TlsStream::server(TcpStream::from_std(accepted), conn),
                client: rustls::ClientConnection::new(client, name).expect("client"),
                sock,
                scratch: vec![0; 64 * 1024],
            }
        }

        fn side(&self) -> &ServerSide {
            match &self.server.tls {
                Session::Server(s) => s,
                Session::Buffered(_) => panic!("not a server side"),
            }
        }

        /// The client's records, not yet sent.
        fn client_records(&mut self) -> Vec<u8> {
            let mut out = Vec::new();
            while self.client.wants_write() {
                self.client.write_tls(&mut out).unwrap();
            }
            out
        }

        /// Bytes to the server's socket (small enough for the socket's
        /// buffer, or read by the server as they go).
        fn send(&mut self, mut bytes: &[u8]) -> Vec<u8> {
            let mut plain = Vec::new();
            while !bytes.is_empty() {
                match self.sock.write(bytes) {
                    Ok(n) => bytes = &bytes[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        plain.extend(self.server_reads().0);
                    }
                    Err(e) => panic!("send: {e}"),
                }
            }
            plain
        }

        /// The server reads until it would block: the plaintext and how it
        /// ended; panics on an error.
        fn server_reads(&mut self) -> (Vec<u8>, End) {
            let (plain, end) = self.try_server_reads();
            (plain, end.unwrap_or_else(|e| panic!("server read: {e}")))
        }

        fn try_server_reads(&mut self) -> (Vec<u8>, Result<End, TlsError>) {
            let mut plain = Vec::new();
            for _ in 0..100_000 {
                match self.server.read_plain(&mut self.scratch) {
                    Ok(0) => return (plain, Ok(End::Eof)),
                    Ok(n) => plain.extend_from_slice(&self.scratch[..n]),
                    Err(TlsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        return (plain, Ok(End::WouldBlock))
                    }
                    Err(e) => return (plain, Err(e)),
                }
            }
            panic!("the server side reads forever");
        }

        /// The client reads what came: its plaintext.
        fn client_reads(&mut self) -> Result<Vec<u8>, rustls::Error> {
            let mut plain = Vec::new();
            loop {
                match self.client.read_tls(&mut self.sock) {
                    Ok(0) => break,
                    Ok(_) => {
                        self.client.process_new_packets()?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("client read: {e}"),
                }
                let mut chunk = [0u8; 4096];
                while let Ok(n) = self.client.reader().read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    plain.extend_from_slice(&chunk[..n]);
                }
            }
            let mut chunk = [0u8; 4096];
            while let Ok(n) = self.client.reader().read(&mut chunk) {
                if n == 0 {
                    break;
                }
                plain.extend_from_slice(&chunk[..n]);
            }
            Ok(plain)
        }

        /// Completes the handshake, the client's records sent `step` bytes
        /// at a time with the server reading after each piece.
        fn handshake_in(&mut self, step: usize) {
            for _ in 0..20 {
                if !self.client.is_handshaking() && !self.server.is_handshaking() {
                    // The server's tickets and anything else it sent.
                    self.client_reads().expect("client");
                    return;
                }
                let records = self.client_records();
                for piece in records.chunks(step) {
                    self.send(piece);
                    let (plain, end) = self.server_reads();
                    assert!(plain.is_empty());
                    assert_eq!(end, End::WouldBlock);
                }
                self.client_reads().expect("client");
            }
            panic!("the handshake does not finish");
        }

        fn handshake(&mut self) {
            self.handshake_in(usize::MAX);
        }

        /// The client's plaintext, as records.
        fn client_writes(&mut self, mut plain: &[u8]) -> Vec<u8> {
            let mut records = Vec::new();
            while !plain.is_empty() {
                let n = self.client.writer().write(plain).unwrap();
                plain = &plain[n..];
                records.extend(self.client_records());
            }
            records
        }

        /// The server writes `plain` whole, the client reading as it must.
        fn server_writes_all(&mut self, mut plain: &[u8]) -> Vec<u8> {
            let mut got = Vec::new();
            while !plain.is_empty() {
                match self.server.write_plain(plain) {
                    Ok(n) => plain = &plain[n..],
                    Err(TlsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        got.extend(self.client_reads().expect("client"));
                        self.server.write_pending().unwrap();
                    }
                    Err(e) => panic!("server write: {e}"),
                }
            }
            while self.server.wants_write() {
                got.extend(self.client_reads().expect("client"));
                self.server.write_pending().unwrap();
            }
            got.extend(self.client_reads().expect("client"));
            got
        }

        /// Nothing held, pending or left over, and no allocation for it.
        fn assert_idle(&self) {
            let s = self.side();
            assert_eq!(s.held.capacity(), 0, "held");
            assert_eq!(s.pending.capacity(), 0, "pending");
            assert_eq!(s.left.capacity(), 0, "left");
        }
    }

    const REQUEST: &[u8] = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503\n";

    #[test]
    fn a_handshake_and_a_record_split_byte_by_byte_are_read_whole() {
        let (pki, tls) = herd_tls();
        let mut p = Pair::new(&tls.clients, client_config(&pki, &tls, Kind::Dial));
        p.handshake_in(1);
        assert_eq!(p.server.handshake_done(), Some(rustls::HandshakeKind::Full));
        p.assert_idle();
        let records = p.client_writes(REQUEST);
        let mut plain = Vec::new();
        for (i, byte) in records.iter().enumerate() {
            p.send(&[*byte]);
            let (got, end) = p.server_reads();
            assert_eq!(end, End::WouldBlock);
            if i + 1 < records.len() {
                assert!(got.is_empty(), "plaintext before the record is whole");
                assert_eq!(p.side().held.len(), i + 1);
            }
            plain.extend(got);
        }
        assert_eq!(plain, REQUEST);
        p.assert_idle();
        assert_eq!(p.server_writes_all(b"AT reply\n"), b"AT reply\n");
        p.assert_idle();
    }

    #[test]
    fn many_records_in_one_read_all_come_out_in_order() {
        let (pki, tls) = herd_tls();
        let mut p = Pair::new(&tls.clients, client_config(&pki, &tls, Kind::Dial));
        p.handshake();
        // 2,000 small records, then a 100 KiB write (records of 16 KiB),
        // then small ones again: sent as one stream, read as it comes.
        let mut want = Vec::new();
        let mut records = Vec::new();
        for i in 0..2000 {
            let line = format!("IAMAT c{i} +1+1 1621464827.5\n");
            records.extend(p.client_writes(line.as_bytes()));
            want.extend_from_slice(line.as_bytes());
        }
        let big: Vec<u8> = (0..100 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
        records.extend(p.client_writes(&big));
        want.extend_from_slice(&big);
        for i in 0..100 {
            let line = format!("PING {i}\n");
            records.extend(p.client_writes(line.as_bytes()));
            want.extend_from_slice(line.as_bytes());
        }
        // In pieces of odd sizes, so records straddle reads everywhere.
        let mut got = Vec::new();
        let mut size = 1;
        for piece in records.chunks(7777) {
            for part in piece.chunks(size) {
                got.extend(p.send(part));
                let (plain, end) = p.server_reads();
                assert_eq!(end, End::WouldBlock);
                got.extend(plain);
            }
            size = size * 3 % 5000 + 1;
        }
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the plaintext differs");
        p.assert_idle();
    }

    #[test]
    fn a_large_write_blocks_and_resumes_with_one_record_kept() {
        let (pki, tls) = herd_tls();
        let mut p = Pair::new(&tls.clients, client_config(&pki, &tls, Kind::Dial));
        p.handshake();
        let plain: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        // The client does not read: the socket fills and the write says
        // WouldBlock, keeping at most one record's end.
        let mut at = 0;
        let blocked = loop {
            match p.server.write_plain(&plain[at..]) {
                Ok(n) => at += n,
                Err(TlsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break at,
                Err(e) => panic!("server write: {e}"),
            }
            assert!(at < plain.len(), "8 MiB never filled the socket");
        };
        assert!(p.server.wants_write());
        assert!(p.side().pending.len() <= PLAINTEXT_CHUNK + 64);
        // Then it reads, and the rest follows.
        let mut got = p.client_reads().expect("client");
        p.server.write_pending().unwrap();
        got.extend(p.server_writes_all(&plain[blocked..]));
        assert!(got == plain, "the plaintext differs");
        p.assert_idle();
    }

    #[test]
    fn close_notify_ends_the_stream_after_the_plaintext_before_it() {
        let (pki, tls) = herd_tls();
        let mut p = Pair::new(&tls.clients, client_config(&pki, &tls, Kind::Dial));
        p.handshake();
        let mut records = p.client_writes(REQUEST);
        p.client.send_close_notify();
        records.extend(p.client_records());
        p.send(&records);
        let (plain, end) = p.server_reads();
        assert_eq!(plain, REQUEST);
        assert_eq!(end, End::Eof);
        // Ours goes the other way.
        p.server.close_notify();
        assert!(p.client_reads().expect("client").is_empty());
        let mut chunk = [0u8; 16];
        assert_eq!(
            p.client.reader().read(&mut chunk).unwrap(),
            0,
            "close_notify"
        );
    }

    #[test]
    fn a_bad_record_is_an_error_and_the_peer_gets_an_alert() {
        let (pki, tls) = herd_tls();
        let mut p = Pair::new(&tls.clients, client_config(&pki, &tls, Kind::Dial));
        p.handshake();
        let mut records = p.client_writes(REQUEST);
        let last = records.len() - 1;
        records[last] ^= 0x55; // the tag no longer authenticates
        p.send(&records);
        let (plain, end) = p.try_server_reads();
        assert!(plain.is_empty());
        match end {
            Err(TlsError::Tls(rustls::Error::DecryptError)) => {}
            other => panic!("{other:?}"),
        }
        match p.client_reads() {
            Err(rustls::Error::AlertReceived(rustls::AlertDescription::BadRecordMac)) => {}
            other => panic!("the client got {other:?}"),
        }
    }

    #[test]
    fn a_record_that_never_completes_is_held_within_its_bound() {
        let (pki, tls) = herd_tls();
        let mut p = Pair::new(&tls.clients, client_config(&pki, &tls, Kind::Dial));
        p.handshake();
        // A header announcing the largest record rustls takes, then less.
        let mut bytes = vec![0x17, 0x03, 0x03, 0x41, 0x00];
        bytes.extend(vec![0u8; 0x4100 - 1]);
        p.send(&bytes);
        let (plain, end) = p.server_reads();
        assert!(plain.is_empty());
        assert_eq!(end, End::WouldBlock);
        assert!(p.side().held.len() <= MAX_HELD);
        // One larger than any record TLS allows is refused at once.
        let mut p = Pair::new(&tls.clients, client_config(&pki, &tls, Kind::Dial));
        p.handshake();
        p.send(&[0x17, 0x03, 0x03, 0xff, 0xff, 0, 0, 0]);
        let (_, end) = p.try_server_reads();
        assert!(end.is_err(), "{end:?}");
    }

    #[test]
    fn garbage_never_panics_and_holds_little() {
        let (pki, tls) = herd_tls();
        for seed in 0..40u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut p = Pair::new(&tls.clients, client_config(&pki, &tls, Kind::Dial));
            if seed % 2 == 1 {
                p.handshake();
            }
            let mut bytes: Vec<u8> = (0..rng.usize(1..60_000)).map(|_| rng.u8(..)).collect();
            if seed % 4 < 2 {
                // A plausible header first, so rustls reads into a record.
                bytes[..3].copy_from_slice(&[0x16 + (seed % 3) as u8, 0x03, 0x03]);
            }
            let mut failed = false;
            for piece in bytes.chunks(rng.usize(1..20_000)) {
                if p.sock.write(piece).is_err() {
                    break;
                }
                let (_, end) = p.try_server_reads();
                assert!(p.side().held.len() <= MAX_HELD_HANDSHAKING);
                if end.is_err() {
                    failed = true;
                    break;
                }
            }
            let _ = failed;
        }
    }

    #[test]
    fn tickets_go_out_and_a_client_key_update_is_answered() {
        let (pki, tls) = herd_tls();
        let mut p = Pair::new(&tls.clients, client_config(&pki, &tls, Kind::Dial));
        p.handshake();
        assert!(p.client.tls13_tickets_received() > 0, "tickets");
        let records = p.client_writes(REQUEST);
        p.send(&records);
        assert_eq!(p.server_reads().0, REQUEST);
        // The client updates its keys and asks us to update ours.
        p.client.refresh_traffic_keys().expect("key update");
        let mut records = p.client_records();
        records.extend(p.client_writes(REQUEST));
        p.send(&records);
        assert_eq!(p.server_reads().0, REQUEST);
        assert_eq!(p.server_writes_all(b"AT after\n"), b"AT after\n");
        let records = p.client_writes(REQUEST);
        p.send(&records);
        assert_eq!(p.server_reads().0, REQUEST);
        p.assert_idle();
    }

    /// Data segments `sock` has sent (TCP_INFO's `tcpi_data_segs_out`,
    /// Linux 4.6 and later): on loopback with TCP_NODELAY, one per write.
    fn data_segments_out(sock: &TcpStream) -> u32 {
        use std::os::fd::AsRawFd;
        let mut info = [0u8; 232];
        let mut len = info.len() as libc::socklen_t;
        // SAFETY: `info` is writable for `len` bytes, which the kernel
        // lowers to what it wrote.
        let r = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0, "TCP_INFO: {}", io::Error::last_os_error());
        assert!(len >= 160, "TCP_INFO without tcpi_data_segs_out");
        u32::from_ne_bytes(info[156..160].try_into().unwrap())
    }

    /// A second connection, resumed: the server side's flight answered;
    /// the client's Finished is queued, not sent.
    fn resumed_pair(tls: &HerdTls, client: &Arc<rustls::ClientConfig>) -> Pair {
        Pair::new(&tls.clients, Arc::clone(client)).handshake();
        let mut p = Pair::new(&tls.clients, Arc::clone(client));
        p.server.sock().set_nodelay(true).unwrap();
        let hello = p.client_records();
        p.send(&hello);
        assert_eq!(p.server_reads(), (Vec::new(), End::WouldBlock));
        p.client_reads().expect("the server's flight");
        assert!(!p.client.is_handshaking());
        assert_eq!(
            p.client.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
        p
    }

    #[test]
    fn a_resumed_phones_ticket_reply_and_close_notify_leave_in_one_write() {
        let (pki, tls) = herd_tls();
        let client = client_config(&pki, &tls, Kind::Dial);
        let tickets = |p: &Pair| p.client.tls13_tickets_received();

        // Finished, a request and close_notify in one flight, as a phone
        // that reconnects to send one position does: the server writes
        // nothing until its close, then one segment with the session's
        // next ticket, the reply and its close_notify.
        let mut p = resumed_pair(&tls, &client);
        let mut flight = p.client_writes(REQUEST);
        p.client.send_close_notify();
        flight.extend(p.client_records());
        let before = data_segments_out(p.server.sock());
        p.send(&flight);
        assert_eq!(p.server_reads(), (REQUEST.to_vec(), End::Eof));
        assert_eq!(
            p.server.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
        assert!(p.server.wants_write(), "the ticket waits");
        p.server.write_pending().unwrap();
        assert_eq!(p.server.write_plain(b"AT reply\n").unwrap(), 9);
        assert_eq!(
            data_segments_out(p.server.sock()),
            before,
            "nothing written yet"
        );
        p.server.close_notify();
        assert_eq!(data_segments_out(p.server.sock()), before + 1, "one write");
        assert!(!p.server.wants_write());
        assert_eq!(tickets(&p), 0);
        assert_eq!(p.client_reads().expect("client"), b"AT reply\n");
        assert_eq!(tickets(&p), 1, "the ticket came");
        let mut chunk = [0u8; 16];
        assert_eq!(
            p.client.reader().read(&mut chunk).unwrap(),
            0,
            "close_notify"
        );

        // Without close_notify: the ticket leaves with the reply, in one
        // write, and the connection goes on.
        let mut p = resumed_pair(&tls, &client);
        let flight = p.client_writes(REQUEST);
        let before = data_segments_out(p.server.sock());
        p.send(&flight);
        assert_eq!(p.server_reads(), (REQUEST.to_vec(), End::WouldBlock));
        p.server.write_pending().unwrap();
        assert_eq!(data_segments_out(p.server.sock()), before);
        assert_eq!(p.server.write_plain(b"AT reply\n").unwrap(), 9);
        assert_eq!(data_segments_out(p.server.sock()), before + 1, "one write");
        assert_eq!(p.client_reads().expect("client"), b"AT reply\n");
        assert_eq!(tickets(&p), 1);
        assert_eq!(p.server_writes_all(b"AT again\n"), b"AT again\n");
        p.assert_idle();

        // No reply after all: the ticket waits through one write_pending
        // (the loop's, before it writes replies), and the next writes it.
        let mut p = resumed_pair(&tls, &client);
        let flight = p.client_writes(b"IAMAT half a li");
        p.send(&flight);
        assert_eq!(
            p.server_reads(),
            (b"IAMAT half a li".to_vec(), End::WouldBlock)
        );
        p.server.write_pending().unwrap();
        assert!(p.server.wants_write());
        p.server.write_pending().unwrap();
        assert!(!p.server.wants_write());
        p.client_reads().expect("client");
        assert_eq!(tickets(&p), 1);
        p.assert_idle();

        // Finished alone (no plaintext): the ticket goes at once.
        let mut p = resumed_pair(&tls, &client);
        let finished = p.client_records();
        p.send(&finished);
        assert_eq!(p.server_reads(), (Vec::new(), End::WouldBlock));
        assert!(!p.server.wants_write());
        p.client_reads().expect("client");
        assert_eq!(tickets(&p), 1);
    }

    #[test]
    fn a_second_connection_resumes_and_tls12_works() {
        let (pki, tls) = herd_tls();
        let client = client_config(&pki, &tls, Kind::Dial);
        let mut first = Pair::new(&tls.clients, Arc::clone(&client));
        first.handshake();
        let mut second = Pair::new(&tls.clients, client);
        second.handshake();
        assert_eq!(
            second.server.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
        let records = second.client_writes(REQUEST);
        second.send(&records);
        assert_eq!(second.server_reads().0, REQUEST);

        let mut old = Pair::new(&tls.clients, client_config(&pki, &tls, Kind::Tls12));
        old.handshake();
        assert_eq!(
            old.client.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        let records = old.client_writes(REQUEST);
        old.send(&records);
        assert_eq!(old.server_reads().0, REQUEST);
        assert_eq!(old.server_writes_all(b"AT old\n"), b"AT old\n");
        old.assert_idle();
    }

    #[test]
    fn the_peer_port_refuses_a_client_without_a_certificate() {
        let (pki, tls) = herd_tls();
        let mut p = Pair::new(&tls.peer, client_config(&pki, &tls, Kind::NoCert));
        let records = p.client_records();
        p.send(&records);
        assert_eq!(p.server_reads().1, End::WouldBlock);
        p.client_reads().expect("the server's flight");
        // The client's last flight: an empty Certificate and Finished.
        let records = p.client_records();
        p.send(&records);
        let (plain, end) = p.try_server_reads();
        assert!(plain.is_empty());
        match end {
            Err(TlsError::Tls(rustls::Error::NoCertificatesPresented)) => {}
            other => panic!("{other:?}"),
        }
        assert!(p.client_reads().is_err(), "the client hears of it");
        // Nothing more is asked of the failed session.
        assert!(p.try_server_reads().1.is_err());
        p.server.close_notify();
        assert!(p.server.write_plain(b"x").is_err());
    }

    #[test]
    fn a_handshake_message_split_across_records_waits_in_held_while_we_write() {
        use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
        let (_pki, tls) = herd_tls();
        // The test writes the client's records itself, with its keys.
        let mut config = (*tls.dial).clone();
        config.enable_secret_extraction = true;
        let config = Arc::new(config);
        let mut p = Pair::new(&tls.clients, Arc::clone(&config));
        p.handshake();
        let name = ServerName::try_from("Bench").unwrap();
        let spare = rustls::ClientConnection::new(config, name).unwrap();
        let client = std::mem::replace(&mut p.client, spare);
        let secrets = client.dangerous_extract_secrets().expect("secrets");
        let (mut seq, rustls::ConnectionTrafficSecrets::Aes128Gcm { key, iv }) = secrets.tx else {
            panic!("not AES-128-GCM");
        };
        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, key.as_ref()).unwrap());
        let mut record = |inner: &[u8], content_type: u8| {
            let mut payload = inner.to_vec();
            payload.push(content_type);
            let len = payload.len() + 16;
            let header = [0x17, 3, 3, (len >> 8) as u8, len as u8];
            let mut nonce = [0u8; 12];
            nonce.copy_from_slice(iv.as_ref());
            for (n, s) in nonce[4..].iter_mut().zip(seq.to_be_bytes()) {
                *n ^= s;
            }
            seq += 1;
            key.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(header),
                &mut payload,
            )
            .unwrap();
            let mut out = header.to_vec();
            out.extend(payload);
            out
        };
        p.send(&record(REQUEST, 0x17));
        assert_eq!(p.server_reads().0, REQUEST);
        // The first two bytes of a KeyUpdate: rustls keeps the record in
        // front of the buffer until the message is whole.
        let first = record(&[24, 0], 0x16);
        p.send(&first);
        let (plain, end) = p.server_reads();
        assert!(plain.is_empty());
        assert_eq!(end, End::WouldBlock);
        assert_eq!(p.side().held.len(), first.len());
        // A reply meanwhile: rustls is handed that record again.
        assert_eq!(p.server.write_plain(b"AT meanwhile\n").unwrap(), 13);
        // The rest of the KeyUpdate (not asking for ours), then a request.
        p.send(&record(&[0, 1, 0], 0x16));
        let (plain, end) = p.try_server_reads();
        assert!(plain.is_empty());
        assert!(end.is_ok(), "{end:?}");
        assert!(p.side().held.is_empty());
    }

    #[test]
    fn the_peer_port_takes_a_client_certificate() {
        let (pki, tls) = herd_tls();
        let mut p = Pair::new(&tls.peer, client_config(&pki, &tls, Kind::Dial));
        p.handshake();
        assert!(p.server.peer_certificates().is_some_and(|c| !c.is_empty()));
        let records = p.client_writes(REQUEST);
        p.send(&records);
        assert_eq!(p.server_reads().0, REQUEST);
    }
}

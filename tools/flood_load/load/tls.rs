//! TLS for the load's connections (`--tls CA_PEM`, `--tls-name NAME`): a
//! rustls client configuration trusting only the given CA, and the
//! handshakes of a set of connections, finished before anything is measured.
//!
//! The connections of rr, http, ws and idle are herd's own [`Stream`]s,
//! driven in the load's mio loops exactly as plain sockets are
//! (nonblocking `Read` and `Write` of plaintext, [`Stream::send_pending`]
//! for records waiting below it, WRITABLE interest while
//! [`Stream::wants_write`]); churn's cycles drive their sessions
//! themselves, to send each flight in one write (`super::churn`).

use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd::tls::stream::{Stream, TlsStream};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::HandshakeKind;

use super::net::{connect_blocking, source};
use super::Outcome;

/// Server names whose sessions a phone of the load keeps (one is used).
pub const RESUME_SESSIONS: usize = 16;

/// What a TLS connection of the load is made with.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry (its herd NAME).
    name: ServerName<'static>,
    /// `--tls-resume`.
    resumes: bool,
}

impl TlsClient {
    /// A client trusting only the certificates in `ca_pem` (the herd's
    /// `tls_ca`), checking that the server's certificate names `name`:
    /// TLS 1.3 or 1.2 as the server offers, ring's suites in the order
    /// phones offer them ([`herd::tls::provider`]), no
    /// client certificate (phones have none). With `resume`
    /// (`--tls-resume`), a new connection resumes a session from a ticket
    /// an earlier one got, as a phone reconnecting does (rustls's
    /// in-memory store, [`RESUME_SESSIONS`] server names); without it,
    /// every connection makes a full handshake.
    pub fn new(ca_pem: &Path, name: &str, resume: bool) -> Result<TlsClient, String> {
        let what = |e: &dyn std::fmt::Display| format!("--tls {}: {e}", ca_pem.display());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_pem).map_err(|e| what(&e))? {
            roots
                .add(cert.map_err(|e| what(&e))?)
                .map_err(|e| what(&e))?;
        }
        if roots.is_empty() {
            return Err(what(&"no certificate in the file"));
        }
        // Suites in the order a phone offers them.
        let provider = Arc::new(herd::tls::provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| what(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = if resume {
            Resumption::in_memory_sessions(RESUME_SESSIONS)
        } else {
            Resumption::disabled()
        };
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| format!("--tls-name {name:?}: {e}"))?;
        Ok(TlsClient {
            config: Arc::new(config),
            name,
            resumes: resume,
        })
    }

    /// The same client with a store of sessions of its own (if it resumes
    /// at all): one phone among the load's many. One store for all would
    /// hold only a few tickets per server (rustls keeps 8), so cycles
    /// starting together would find none, as separate phones would not.
    pub fn own_sessions(&self) -> TlsClient {
        if !self.resumes {
            return self.clone();
        }
        let mut config = (*self.config).clone();
        config.resumption = Resumption::in_memory_sessions(RESUME_SESSIONS);
        TlsClient {
            config: Arc::new(config),
            name: self.name.clone(),
            resumes: self.resumes,
        }
    }

    /// Whether new connections resume sessions (`--tls-resume`).
    pub fn resumes(&self) -> bool {
        self.resumes
    }

    /// A new client session (its ClientHello queued, not sent).
    pub fn session(&self) -> io::Result<rustls::ClientConnection> {
        rustls::ClientConnection::new(self.config.clone(), self.name.clone())
            .map_err(|e| io::Error::other(format!("TLS: {e}")))
    }

    /// `sock` with a new client session (its ClientHello queued, not sent).
    pub fn wrap(&self, sock: TcpStream) -> io::Result<Stream> {
        Ok(Stream::Tls(Box::new(TlsStream::new(sock, self.session()?))))
    }
}

/// Counts how `stream`'s handshake went, if it is TLS and done.
pub fn count_handshake(stream: &Stream, out: &mut Outcome) {
    match stream.tls().and_then(|t| t.handshake_kind()) {
        Some(HandshakeKind::Resumed) => out.tls_resumed += 1,
        Some(_) => out.tls_full += 1,
        None => {}
    }
}

/// `sock` as the load's connection: TLS if `tls`, plain otherwise.
pub fn stream(tls: Option<&TlsClient>, sock: TcpStream) -> io::Result<Stream> {
    match tls {
        Some(t) => t.wrap(sock),
        None => Ok(Stream::Plain(sock)),
    }
}

/// Gives each of `phones` a session to resume, as a phone that was
/// connected a while ago holds one: a connection of its own to `addr` (from
/// the source address of connection `ids[i]`), a full handshake, then
/// close_notify, a write shutdown, and a read to the end, which brings the
/// server's ticket (sent right after the handshake). All at once, within
/// `patience`; each result says whether that phone's visit went through.
pub fn visit(
    addr: SocketAddr,
    sources: u32,
    ids: &[usize],
    phones: &[TlsClient],
    patience: Duration,
) -> io::Result<Vec<Result<(), String>>> {
    let mut poll = Poll::new()?;
    let mut streams = Vec::new();
    let mut result: Vec<Result<(), String>> = Vec::new();
    for (&k, phone) in ids.iter().zip(phones) {
        let made = connect_blocking(addr, source(k, sources)).and_then(|s| {
            s.set_nonblocking(true)?;
            phone.wrap(TcpStream::from_std(s))
        });
        // Streams are tokened by their index among those that connected.
        match made {
            Ok(mut s) => {
                poll.registry()
                    .register(s.tcp_mut(), Token(streams.len()), Interest::READABLE)?;
                streams.push(s);
                result.push(Ok(()));
            }
            Err(e) => result.push(Err(format!("earlier visit: connect {addr}: {e}"))),
        }
    }
    let deadline = Instant::now() + patience;
    let shaken = handshake(&mut poll, &mut streams, 0, patience)?;
    // Which result each stream is, and whether it still reads to its end.
    let slots: Vec<usize> = (0..result.len()).filter(|&i| result[i].is_ok()).collect();
    let mut open = vec![false; streams.len()];
    let mut waiting = 0;
    for (j, s) in streams.iter_mut().enumerate() {
        let step = shaken[j].clone().and_then(|()| {
            s.close_notify();
            s.send_pending()
                .and_then(|()| s.tcp().shutdown(Shutdown::Write))
                .map_err(|e| format!("close: {e}"))
        });
        match step {
            Ok(()) => {
                open[j] = true;
                waiting += 1;
            }
            Err(e) => result[slots[j]] = Err(format!("earlier visit: {e}")),
        }
    }
    let mut events = Events::with_capacity(1024);
    let mut scratch = [0u8; 512];
    // Reads `s` until it would block; `Some` at its end or on an error.
    let drain = |s: &mut Stream, scratch: &mut [u8]| -> Option<Result<(), String>> {
        loop {
            match s.read(scratch) {
                Ok(0) => return Some(Ok(())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(format!("read: {e}"))),
            }
        }
    };
    // What came before the handshake's end may already be read.
    for (j, s) in streams.iter_mut().enumerate() {
        if open[j] {
            if let Some(end) = drain(s, &mut scratch) {
                open[j] = false;
                waiting -= 1;
                if let Err(e) = end {
                    result[slots[j]] = Err(format!("earlier visit: {e}"));
                }
            }
        }
    }
    while waiting > 0 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match poll.poll(&mut events, Some(deadline - now)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        for event in events.iter() {
            let j = event.token().0;
            if !open.get(j).copied().unwrap_or(false) {
                continue;
            }
            if let Some(end) = drain(&mut streams[j], &mut scratch) {
                open[j] = false;
                waiting -= 1;
                if let Err(e) = end {
                    result[slots[j]] = Err(format!("earlier visit: {e}"));
                }
            }
        }
    }
    for (j, still) in open.iter().enumerate() {
        if *still {
            result[slots[j]] = Err(format!(
                "earlier visit: the server had not closed after {patience:?}"
            ));
        }
    }
    Ok(result)
}

/// Finishes the TLS handshakes of `streams` (nothing to do for plain ones),
/// all at once on `poll`, where stream `i` is registered as
/// `Token(first + i)` for READABLE; it is left registered so. Each result
/// says whether that stream is ready for plaintext; one that failed, or is
/// still negotiating after `patience`, carries the reason.
pub fn handshake(
    poll: &mut Poll,
    streams: &mut [Stream],
    first: usize,
    patience: Duration,
) -> io::Result<Vec<Result<(), String>>> {
    let mut result: Vec<Result<(), String>> = vec![Ok(()); streams.len()];
    let mut waiting = 0;
    for (i, s) in streams.iter_mut().enumerate() {
        if s.tls().is_none() {
            continue;
        }
        // The ClientHello; WRITABLE interest for whatever the socket refuses.
        if let Err(e) = s.send_pending().and_then(|()| {
            poll.registry().reregister(
                s.tcp_mut(),
                Token(first + i),
                Interest::READABLE | Interest::WRITABLE,
            )
        }) {
            result[i] = Err(format!("TLS handshake: {e}"));
            continue;
        }
        waiting += 1;
    }
    let deadline = Instant::now() + patience;
    let mut events = Events::with_capacity(1024);
    let mut scratch = [0u8; 512];
    while waiting > 0 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match poll.poll(&mut events, Some(deadline - now)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        for event in events.iter() {
            let Some(i) = event.token().0.checked_sub(first) else {
                continue;
            };
            let Some(s) = streams.get_mut(i) else {
                continue;
            };
            if result[i].is_err() || !(s.is_handshaking() || s.wants_write()) {
                continue;
            }
            // Reading drives the handshake (and writes its answers); no
            // plaintext can come before we have asked anything.
            let step = loop {
                match s.read(&mut scratch) {
                    Ok(0) => {
                        break Err("the server closed the connection during the handshake".into())
                    }
                    Ok(n) => break Err(format!("{n} bytes of plaintext before any request")),
                    // Nothing more until the next event.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(format!("TLS handshake: {e}")),
                }
            };
            let step =
                step.and_then(|()| s.send_pending().map_err(|e| format!("TLS handshake: {e}")));
            match step {
                Err(e) => {
                    result[i] = Err(e);
                    waiting -= 1;
                }
                // Done once our last records (the client Finished) are out.
                Ok(()) if !s.is_handshaking() && !s.wants_write() => waiting -= 1,
                Ok(()) => {}
            }
        }
    }
    for (i, s) in streams.iter_mut().enumerate() {
        if result[i].is_ok() && (s.is_handshaking() || s.wants_write()) {
            result[i] = Err(format!("TLS handshake not finished after {patience:?}"));
        }
        if s.tls().is_some() && result[i].is_ok() {
            poll.registry()
                .reregister(s.tcp_mut(), Token(first + i), Interest::READABLE)?;
        }
    }
    Ok(result)
}

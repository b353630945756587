//! One TLS connection driven by hand over a nonblocking mio `TcpStream`
//! (rustls `examples/src/bin/tlsclient-mio.rs`, errors handled): `read_tls`
//! → `process_new_packets` → drain `reader()` until `WouldBlock`; `write_tls`
//! while `wants_write()`; interest from `wants_write()`. Never
//! `Stream`/`complete_io`, which would block the loop.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// Plaintext read per `reader()` call.
const READ_CHUNK: usize = 16 * 1024;

/// The client configuration: webpki roots plus the `places_ca` file's
/// certificates; ring provider; ALPN `http/1.1`.
pub(crate) fn client_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_ca {
        let what = |e: &dyn fmt::Display| format!("places_ca {}: {e}", path.display());
        let certs = CertificateDer::pem_file_iter(path).map_err(|e| what(&e))?;
        let mut added = 0;
        for cert in certs {
            let cert = cert.map_err(|e| what(&e))?;
            roots.add(cert).map_err(|e| what(&e))?;
            added += 1;
        }
        if added == 0 {
            return Err(what(&"no PEM certificate in the file"));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Why a connection failed.
#[derive(Debug)]
pub(crate) enum TlsError {
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

/// What one read step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadStep {
    /// Bytes arrived (maybe no plaintext yet); read again.
    Data,
    /// Nothing more for now; wait for readiness.
    WouldBlock,
    /// The peer closed (close_notify or TCP EOF); all plaintext was drained.
    Eof,
}

/// How a TCP connect attempt stands.
#[derive(Debug)]
pub(crate) enum ConnectStep {
    Pending,
    Connected,
    Failed(io::Error),
}

/// A TCP connection with its TLS session.
pub(crate) struct TlsStream {
    sock: TcpStream,
    tls: ClientConnection,
    interest: Interest,
}

impl TlsStream {
    /// Starts a nonblocking connect to `addr` and registers it under `token`
    /// for both directions (writable says the connect finished).
    pub fn connect(
        registry: &Registry,
        token: Token,
        addr: SocketAddr,
        config: &Arc<ClientConfig>,
        name: &ServerName<'static>,
    ) -> Result<TlsStream, TlsError> {
        let tls = ClientConnection::new(Arc::clone(config), name.clone()).map_err(TlsError::Tls)?;
        let mut sock = TcpStream::connect(addr).map_err(TlsError::Io)?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        registry
            .register(&mut sock, token, interest)
            .map_err(TlsError::Io)?;
        Ok(TlsStream {
            sock,
            tls,
            interest,
        })
    }

    /// After readiness on a connecting socket: has the connect finished?
    /// (mio `TcpStream::connect` docs: `take_error`, then `peer_addr`.)
    pub fn connect_step(&self, event: &Event) -> ConnectStep {
        match self.sock.take_error() {
            Ok(Some(e)) | Err(e) => return ConnectStep::Failed(e),
            Ok(None) => {}
        }
        match self.sock.peer_addr() {
            Ok(_) => ConnectStep::Connected,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                if event.is_error() || event.is_write_closed() {
                    ConnectStep::Failed(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        "connection failed",
                    ))
                } else {
                    // A spurious wake-up: still connecting.
                    ConnectStep::Pending
                }
            }
            Err(e) => ConnectStep::Failed(e),
        }
    }

    /// Queues plaintext; rustls holds it until the handshake is done.
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

    /// One `read_tls`, then `process_new_packets`, then all plaintext into `out`.
    pub fn read_step(&mut self, out: &mut Vec<u8>) -> Result<ReadStep, TlsError> {
        let mut step = loop {
            match self.tls.read_tls(&mut self.sock) {
                // TCP EOF; plaintext already decrypted is still drained below.
                Ok(0) => break ReadStep::Eof,
                Ok(_) => break ReadStep::Data,
                // Nothing on the socket, but plaintext may still wait in rustls.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break ReadStep::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TlsError::Io(e)),
            }
        };
        if let Err(e) = self.tls.process_new_packets() {
            // Tell the peer why (an alert), best effort.
            let _ = self.write_pending();
            return Err(TlsError::Tls(e));
        }
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match self.tls.reader().read(&mut chunk) {
                // close_notify: the peer will send nothing more.
                Ok(0) => {
                    step = ReadStep::Eof;
                    break;
                }
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                // All plaintext drained.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // TCP EOF without close_notify, after all plaintext.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    step = ReadStep::Eof;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TlsError::Io(e)),
            }
        }
        Ok(step)
    }

    /// Re-registers when the wanted interest changed: always READABLE,
    /// WRITABLE while rustls has records to send.
    pub fn update_interest(&mut self, registry: &Registry, token: Token) -> Result<(), TlsError> {
        let wanted = if self.tls.wants_write() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if wanted != self.interest {
            registry
                .reregister(&mut self.sock, token, wanted)
                .map_err(TlsError::Io)?;
            self.interest = wanted;
        }
        Ok(())
    }

    /// Sends close_notify (best effort, no waiting) and deregisters.
    pub fn close(mut self, registry: &Registry) {
        if !self.tls.is_handshaking() {
            self.tls.send_close_notify();
            let _ = self.write_pending();
        }
        let _ = registry.deregister(&mut self.sock);
    }

    /// Deregisters without a word (the connection is broken).
    pub fn abandon(mut self, registry: &Registry) {
        let _ = registry.deregister(&mut self.sock);
    }
}

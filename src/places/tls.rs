//! A Places connection: the client configuration (webpki roots and
//! `places_ca`), the nonblocking connect, and the registration, around the
//! one TLS driver of the repository ([`crate::tls::stream::TlsStream`]).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use crate::tls::stream;

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
    let provider = Arc::new(crate::tls::provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

pub(crate) use crate::tls::stream::{ReadStep, TlsError};

/// How a TCP connect attempt stands.
#[derive(Debug)]
pub(crate) enum ConnectStep {
    Pending,
    Connected,
    Failed(io::Error),
}

/// A TCP connection with its TLS session, and the interest it is
/// registered with.
pub(crate) struct TlsStream {
    inner: stream::TlsStream,
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
            inner: stream::TlsStream::new(sock, tls),
            interest,
        })
    }

    /// After readiness on a connecting socket: has the connect finished?
    /// (mio `TcpStream::connect` docs: `take_error`, then `peer_addr`.)
    pub fn connect_step(&self, event: &Event) -> ConnectStep {
        let sock = self.inner.sock();
        match sock.take_error() {
            Ok(Some(e)) | Err(e) => return ConnectStep::Failed(e),
            Ok(None) => {}
        }
        match sock.peer_addr() {
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
        self.inner.queue(data)
    }

    /// Writes TLS records while rustls has any, until the socket would block.
    pub fn write_pending(&mut self) -> Result<(), TlsError> {
        self.inner.write_pending()
    }

    /// One `read_tls`, then `process_new_packets`, then all plaintext into `out`.
    pub fn read_step(&mut self, out: &mut Vec<u8>) -> Result<ReadStep, TlsError> {
        self.inner.read_step(out)
    }

    /// Re-registers when the wanted interest changed: always READABLE,
    /// WRITABLE while rustls has records to send.
    pub fn update_interest(&mut self, registry: &Registry, token: Token) -> Result<(), TlsError> {
        let wanted = if self.inner.wants_write() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if wanted != self.interest {
            registry
                .reregister(self.inner.sock_mut(), token, wanted)
                .map_err(TlsError::Io)?;
            self.interest = wanted;
        }
        Ok(())
    }

    /// Sends close_notify (best effort, no waiting) and deregisters.
    pub fn close(mut self, registry: &Registry) {
        self.inner.close_notify();
        let _ = registry.deregister(self.inner.sock_mut());
    }

    /// Deregisters without a word (the connection is broken).
    pub fn abandon(mut self, registry: &Registry) {
        let _ = registry.deregister(self.inner.sock_mut());
    }
}

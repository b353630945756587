//! A blocking TLS line client (rustls `StreamOwned` over a std `TcpStream`),
//! the TLS twin of [`Client`](super::herd::Client): the same line helpers,
//! optionally presenting a client certificate (to play a herd neighbour on
//! a peer port), and [`until_closed`] to see how a server ends a connection
//! it refuses.
//!
//! ```ignore
//! let mut c = TlsClient::connect(addr, "Goloman", ca.roots(), None).expect("handshake");
//! let at = c.ask("IAMAT kiwi +1+1 1520023934.5");
//! ```

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ProtocolVersion, RootCertStore, StreamOwned};

use super::certs::Leaf;
use super::herd::PATIENCE;

/// A rustls client configuration (ring) trusting `roots`, presenting
/// `identity` as its client certificate if given; TLS 1.3 only if `tls13`,
/// else rustls's safe defaults (1.3 and 1.2).
pub fn client_config(
    roots: Arc<RootCertStore>,
    identity: Option<&Leaf>,
    tls13: bool,
) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider);
    let builder = if tls13 {
        builder.with_protocol_versions(&[&rustls::version::TLS13])
    } else {
        builder.with_safe_default_protocol_versions()
    }
    .expect("TLS versions")
    .with_root_certificates(roots);
    let config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.cert()], leaf.key())
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// A TLS connection with a read deadline of [`PATIENCE`].
pub struct TlsClient {
    pub reader: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl TlsClient {
    /// Connects to `addr`, expecting a certificate for `server_name` that
    /// chains to `roots`, presenting `identity` if given, and completes the
    /// handshake (an error if it fails on this side). With TLS 1.3, a server
    /// that refuses the client's certificate says so only after this side
    /// has finished: the refusal then shows on the first read.
    pub fn connect(
        addr: SocketAddr,
        server_name: &str,
        roots: Arc<RootCertStore>,
        identity: Option<&Leaf>,
    ) -> io::Result<TlsClient> {
        Self::connect_with(addr, server_name, client_config(roots, identity, false))
    }

    /// Like [`connect`](Self::connect), with a prepared configuration.
    pub fn connect_with(
        addr: SocketAddr,
        server_name: &str,
        config: Arc<ClientConfig>,
    ) -> io::Result<TlsClient> {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut sock = TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(PATIENCE))?;
        sock.set_nodelay(true)?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        while conn.wants_write() {
            conn.write_tls(&mut sock)?;
        }
        Ok(TlsClient {
            reader: BufReader::new(StreamOwned::new(conn, sock)),
        })
    }

    /// The TLS version agreed on.
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.reader.get_ref().conn.protocol_version()
    }

    /// Sets the read deadline of the socket.
    pub fn set_read_timeout(&self, timeout: Duration) {
        self.reader
            .get_ref()
            .sock
            .set_read_timeout(Some(timeout))
            .expect("set_read_timeout");
    }

    /// Sends bytes (as TLS records; flushed).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let s = self.reader.get_mut();
        s.write_all(bytes)?;
        s.flush()
    }

    /// Sends bytes; panics if it fails.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).expect("send over TLS");
    }

    /// Reads one line, without its `\n`. Panics on EOF, error or timeout.
    pub fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut line)
            .expect("read a line over TLS");
        assert!(
            n > 0 && line.ends_with(b"\n"),
            "connection closed; got {:?}",
            String::from_utf8_lossy(&line)
        );
        line.pop();
        line
    }

    /// Reads one line as text.
    pub fn text(&mut self) -> String {
        String::from_utf8(self.line()).expect("UTF-8 reply")
    }

    /// Reads lines until one for which `want` holds, skipping the others
    /// (a link's heartbeats and catch-up lines); returns it.
    pub fn text_skipping(&mut self, want: impl Fn(&str) -> bool) -> String {
        loop {
            let line = self.text();
            if want(&line) {
                return line;
            }
        }
    }

    /// Sends one line and reads the one-line reply.
    pub fn ask(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes());
        self.text()
    }

    /// Reads the JSON of a WHATSAT answer exactly as sent, through the two
    /// newlines that end it.
    fn json(&mut self) -> Vec<u8> {
        let mut json = Vec::new();
        loop {
            let l = self.line();
            json.extend_from_slice(&l);
            json.push(b'\n');
            if l.is_empty() {
                return json;
            }
        }
    }

    /// Reads a WHATSAT answer as bytes: the AT line (without `\n`), and the JSON.
    pub fn answer(&mut self) -> (Vec<u8>, Vec<u8>) {
        let head = self.line();
        (head, self.json())
    }

    /// Reads a WHATSAT answer as text: the AT line and the JSON (without the
    /// empty line that ends it). A `? ` reply comes back as `Err(line)`.
    pub fn whatsat_reply(&mut self) -> Result<(String, String), String> {
        let head = self.text();
        if head.starts_with("? ") {
            return Err(head);
        }
        let mut json = String::from_utf8(self.json()).expect("UTF-8 JSON");
        json.pop();
        Ok((head, json))
    }

    /// The AT line the server holds for `client`, if any (asked with WHATSAT).
    pub fn known(&mut self, client: &str) -> Option<String> {
        self.send(format!("WHATSAT {client} 1 1\n").as_bytes());
        self.whatsat_reply().ok().map(|(at, _)| at)
    }

    /// Ends the sending side the TLS way (close_notify, then a TCP
    /// half-close), then reads everything until the server closes.
    pub fn finish(mut self) -> Vec<u8> {
        let s = self.reader.get_mut();
        s.conn.send_close_notify();
        s.flush().expect("send close_notify");
        s.sock.shutdown(Shutdown::Write).expect("shutdown");
        let closed = until_closed(&mut self.reader);
        closed.bytes
    }

    /// Reads until the server ends the connection (see [`until_closed`]).
    pub fn until_closed(&mut self) -> Closed {
        until_closed(&mut self.reader)
    }
}

/// How a connection ended.
#[derive(Debug)]
pub enum End {
    /// A clean end: EOF (or, over TLS, close_notify).
    Eof,
    /// An error: a reset, a TLS alert, a TCP close without close_notify.
    Error(io::Error),
}

/// What came before the end of a connection.
#[derive(Debug)]
pub struct Closed {
    /// Every byte read before the end.
    pub bytes: Vec<u8>,
    pub end: End,
    /// When the end was seen.
    pub at: Instant,
}

impl Closed {
    /// The bytes as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Reads from `r` until EOF or an error other than a timeout. Panics when
/// the read deadline set on the socket passes first: the other end kept
/// the connection open.
pub fn until_closed(r: &mut impl Read) -> Closed {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match r.read(&mut chunk) {
            Ok(0) => {
                return Closed {
                    bytes,
                    end: End::Eof,
                    at: Instant::now(),
                }
            }
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!(
                    "the connection is still open at the read deadline; got {:?}",
                    String::from_utf8_lossy(&bytes)
                )
            }
            Err(e) => {
                return Closed {
                    bytes,
                    end: End::Error(e),
                    at: Instant::now(),
                }
            }
        }
    }
}

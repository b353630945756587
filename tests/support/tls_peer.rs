//! A TLS server the test runs in place of a herd neighbour: it listens where
//! the neighbour's peer port should be, presents a certificate the test
//! chose (say, one for `Mallory` signed by the herd's own CA), and records,
//! for each connection a server dials to it, how the handshake went and
//! every plaintext byte it received. It answers a `HERD NAME` line with
//! `PING`, as a herd acceptor would, so a dialler that wrongly trusts it
//! goes on to show it positions.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, StreamOwned};

use super::certs::Leaf;

/// How long a connection's thread waits for the dialler's next bytes.
const IDLE: Duration = Duration::from_secs(5);

/// What one connection showed.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `Ok` if the handshake completed on this side, else rustls's error.
    pub handshake: Result<(), String>,
    /// The plaintext received after the handshake.
    pub plaintext: Vec<u8>,
    /// Whether the dialler presented a certificate.
    pub client_cert: bool,
}

/// A rustls server configuration (ring) presenting `leaf`; requiring a
/// client certificate chaining to `client_roots` if given.
pub fn server_config(leaf: &Leaf, client_roots: Option<Arc<RootCertStore>>) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions");
    let builder = match client_roots {
        Some(roots) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots, provider)
                .build()
                .expect("client verifier"),
        ),
        None => builder.with_no_client_auth(),
    };
    Arc::new(
        builder
            .with_single_cert(vec![leaf.cert()], leaf.key())
            .expect("server certificate"),
    )
}

struct Shared {
    seen: Mutex<Vec<Seen>>,
    accepted: Mutex<usize>,
    stop: AtomicBool,
}

/// The running fake; stops accepting when dropped.
pub struct FakePeer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakePeer {
    /// Serves TLS with `config` on `listener` (bound by the test, so its
    /// port can go into a config before anything dials it).
    pub fn start(listener: TcpListener, config: Arc<ServerConfig>) -> FakePeer {
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            seen: Mutex::new(Vec::new()),
            accepted: Mutex::new(0),
            stop: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("fake-peer".into())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if shared.stop.load(Ordering::SeqCst) {
                            return;
                        }
                        let Ok(stream) = stream else { continue };
                        *shared.accepted.lock().unwrap() += 1;
                        let config = Arc::clone(&config);
                        let shared = Arc::clone(&shared);
                        let _ =
                            thread::Builder::new()
                                .name("fake-peer-conn".into())
                                .spawn(move || {
                                    let seen = serve(stream, config);
                                    shared.seen.lock().unwrap().push(seen);
                                });
                    }
                })
                .expect("acceptor thread")
        };
        FakePeer {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The connections that have ended so far, in the order they ended.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        *self.shared.accepted.lock().unwrap()
    }
}

impl Drop for FakePeer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Unblock accept().
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn serve(mut tcp: TcpStream, config: Arc<ServerConfig>) -> Seen {
    let _ = tcp.set_read_timeout(Some(IDLE));
    let _ = tcp.set_nodelay(true);
    let mut conn = match ServerConnection::new(config) {
        Ok(c) => c,
        Err(e) => {
            return Seen {
                handshake: Err(e.to_string()),
                plaintext: Vec::new(),
                client_cert: false,
            }
        }
    };
    let mut handshake = Ok(());
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            handshake = Err(e.to_string());
            break;
        }
    }
    let client_cert = conn.peer_certificates().is_some_and(|c| !c.is_empty());
    let mut plaintext = Vec::new();
    if handshake.is_ok() {
        let mut r = BufReader::new(StreamOwned::new(conn, tcp));
        loop {
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    plaintext.extend_from_slice(&line);
                    if line.starts_with(b"HERD ") {
                        let s = r.get_mut();
                        if s.write_all(b"PING\n").and_then(|_| s.flush()).is_err() {
                            break;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    plaintext.extend_from_slice(&line);
                    break;
                }
            }
        }
    }
    Seen {
        handshake,
        plaintext,
        client_cert,
    }
}

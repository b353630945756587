//! A local HTTPS Places server for tests: rustls on `127.0.0.1:0`, one
//! blocking thread per connection, a certificate for `localhost` (and
//! 127.0.0.1, ::1) from a CA made here with rcgen and written as PEM to a
//! temporary file for `places_ca`.
//!
//! ```ignore
//! let server = PlacesServer::start(Behaviour::default());
//! let config = server.config(PlacesApi::Legacy); // url + places_ca
//! // ... run a Places client against it ...
//! assert_eq!(server.requests()[0].query("radius"), Some("10000".into()));
//! assert_eq!(server.connections(), 1);
//! ```
//!
//! What it answers is a [`Behaviour`] (body, status, framing, delay, a
//! fault), changeable while it runs with [`PlacesServer::set_behaviour`]. It
//! records every request ([`Recorded`]), counts TCP connections accepted and
//! the most requests it held at once (received, not yet answered).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use herd::config::{PlacesApi, PlacesConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// The legacy sample (`tests/data/places/nearbysearch-legacy.json`).
pub const LEGACY_SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/places/nearbysearch-legacy.json"
);
/// The Places API (New) sample (5 places).
pub const NEW_SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/places/searchnearby-new.json"
);
/// The legacy endpoint's path.
pub const LEGACY_PATH: &str = "/maps/api/place/nearbysearch/json";
/// The New API endpoint's path.
pub const NEW_PATH: &str = "/v1/places:searchNearby";

/// Reads a sample file.
pub fn sample(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// How the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    ContentLength,
    /// Chunked, in chunks of this many bytes.
    Chunked(usize),
    /// No length: the body ends when the server closes the connection.
    UntilClose,
}

/// Ways to misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Read the request, then close without a byte.
    CloseBeforeResponse,
    /// Send the headers and half the body, then close.
    CloseMidBody,
    /// Answer bytes that are not HTTP.
    Garbage,
    /// Serve the first request of each connection (keep-alive), and close
    /// without answering when a second request comes on it.
    CloseReused,
}

/// What the server answers.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub status: u16,
    pub body: Vec<u8>,
    pub framing: Framing,
    /// Waited before answering each request.
    pub delay: Duration,
    pub fault: Fault,
    /// False: `Connection: close` and close after each response.
    pub keep_alive: bool,
}

impl Default for Behaviour {
    /// The legacy sample, 200, Content-Length, at once, keep-alive.
    fn default() -> Self {
        Behaviour {
            status: 200,
            body: sample(LEGACY_SAMPLE),
            framing: Framing::ContentLength,
            delay: Duration::ZERO,
            fault: Fault::None,
            keep_alive: true,
        }
    }
}

impl Behaviour {
    /// The New API sample.
    pub fn new_api() -> Behaviour {
        Behaviour {
            body: sample(NEW_SAMPLE),
            ..Behaviour::default()
        }
    }
    pub fn status(self, status: u16) -> Behaviour {
        Behaviour { status, ..self }
    }
    pub fn body(self, body: impl Into<Vec<u8>>) -> Behaviour {
        Behaviour {
            body: body.into(),
            ..self
        }
    }
    pub fn framing(self, framing: Framing) -> Behaviour {
        Behaviour { framing, ..self }
    }
    pub fn delay(self, delay: Duration) -> Behaviour {
        Behaviour { delay, ..self }
    }
    pub fn fault(self, fault: Fault) -> Behaviour {
        Behaviour { fault, ..self }
    }
    pub fn keep_alive(self, keep_alive: bool) -> Behaviour {
        Behaviour { keep_alive, ..self }
    }
}

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Which accepted connection (0, 1, ...) carried it.
    pub connection: usize,
    pub received: Instant,
}

impl Recorded {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// A query parameter's raw (still percent-encoded) value.
    pub fn query(&self, name: &str) -> Option<String> {
        let (_, query) = self.target.split_once('?')?;
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
    }
}

/// A certificate authority made for one test.
pub struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `localhost`, 127.0.0.1 and ::1.
    pub fn server_cert(&self) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        let mut params = CertificateParams::new(names).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.use_authority_key_identifier_extension = true;
        params.key_usages.push(KeyUsagePurpose::DigitalSignature);
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), key)
    }
}

/// A file in a fresh temporary folder, removed (with the folder) on drop.
pub struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    pub fn new(name: &str, contents: &[u8]) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "herd-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temporary folder");
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("temporary file");
        TempFile { dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Default)]
struct Counters {
    connections: AtomicUsize,
    active: AtomicUsize,
    max_active: AtomicUsize,
}

struct Shared {
    behaviour: Mutex<Behaviour>,
    requests: Mutex<Vec<Recorded>>,
    counters: Counters,
    stop: AtomicBool,
}

/// The running server; stops accepting on drop.
pub struct PlacesServer {
    addr: SocketAddr,
    ca_file: TempFile,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl PlacesServer {
    /// A server whose certificate the CA in [`PlacesServer::ca_path`] signed.
    pub fn start(behaviour: Behaviour) -> PlacesServer {
        let ca = TestCa::new("herd test CA");
        PlacesServer::start_signed_by(behaviour, &ca, &ca)
    }

    /// A server whose certificate another CA signed than the one in
    /// [`PlacesServer::ca_path`]: a client trusting that one must refuse it.
    pub fn start_untrusted(behaviour: Behaviour) -> PlacesServer {
        let trusted = TestCa::new("herd test CA");
        let other = TestCa::new("some other CA");
        PlacesServer::start_signed_by(behaviour, &trusted, &other)
    }

    fn start_signed_by(behaviour: Behaviour, trusted: &TestCa, signer: &TestCa) -> PlacesServer {
        let (cert, key) = signer.server_cert();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server TLS config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            requests: Mutex::new(Vec::new()),
            counters: Counters::default(),
            stop: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("places-server".into())
                .spawn(move || accept_loop(listener, config, shared))
                .expect("acceptor thread")
        };
        PlacesServer {
            addr,
            ca_file: TempFile::new("places-ca.pem", trusted.pem().as_bytes()),
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The trusted CA's PEM file, for `places_ca`.
    pub fn ca_path(&self) -> &Path {
        self.ca_file.path()
    }

    /// `https://localhost:PORT/maps/api/place/nearbysearch/json`
    pub fn legacy_url(&self) -> String {
        format!("https://localhost:{}{LEGACY_PATH}", self.port())
    }

    /// `https://localhost:PORT/v1/places:searchNearby`
    pub fn new_url(&self) -> String {
        format!("https://localhost:{}{NEW_PATH}", self.port())
    }

    /// A Places config for this server: its URL for `api` and its CA.
    pub fn config(&self, api: PlacesApi) -> PlacesConfig {
        PlacesConfig {
            api,
            url: match api {
                PlacesApi::Legacy => self.legacy_url(),
                PlacesApi::New => self.new_url(),
            },
            key_env: "HERD_TEST_PLACES_KEY".to_string(),
            ca: Some(self.ca_path().to_path_buf()),
        }
    }

    /// The `herd.conf` lines for this server.
    pub fn conf_lines(&self, api: PlacesApi) -> String {
        let config = self.config(api);
        let api = match api {
            PlacesApi::Legacy => "legacy",
            PlacesApi::New => "new",
        };
        format!(
            "places {api} {}\nplaces_key_env {}\nplaces_ca {}\n",
            config.url,
            config.key_env,
            self.ca_path().display()
        )
    }

    /// Changes what the server answers from now on.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.shared.behaviour.lock().unwrap() = behaviour;
    }

    /// The requests received so far, in order of arrival.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.counters.connections.load(Ordering::SeqCst)
    }

    /// The most requests held at once (received, not yet answered).
    pub fn max_concurrent(&self) -> usize {
        self.shared.counters.max_active.load(Ordering::SeqCst)
    }
}

impl Drop for PlacesServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Unblock accept().
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, config: Arc<ServerConfig>, shared: Arc<Shared>) {
    for (n, stream) in listener.incoming().enumerate() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        shared.counters.connections.fetch_add(1, Ordering::SeqCst);
        let config = Arc::clone(&config);
        let shared = Arc::clone(&shared);
        let _ = thread::Builder::new()
            .name(format!("places-conn-{n}"))
            .spawn(move || serve(n, stream, config, shared));
    }
}

fn serve(connection: usize, tcp: TcpStream, config: Arc<ServerConfig>, shared: Arc<Shared>) {
    let _ = tcp.set_nodelay(true);
    // A client that vanishes does not hold the thread forever.
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(conn) = ServerConnection::new(config) else {
        return;
    };
    let mut tls = StreamOwned::new(conn, tcp);
    let mut buf = Vec::new();
    let mut served = 0;
    loop {
        let Some(mut request) = read_request(&mut tls, &mut buf) else {
            return;
        };
        request.connection = connection;
        shared.requests.lock().unwrap().push(request);
        let counters = &shared.counters;
        let active = counters.active.fetch_add(1, Ordering::SeqCst) + 1;
        counters.max_active.fetch_max(active, Ordering::SeqCst);
        let behaviour = shared.behaviour.lock().unwrap().clone();
        let keep_going = if served > 0 && behaviour.fault == Fault::CloseReused {
            false
        } else {
            thread::sleep(behaviour.delay);
            respond(&mut tls, &behaviour).is_ok()
        };
        counters.active.fetch_sub(1, Ordering::SeqCst);
        served += 1;
        if !keep_going {
            let _ = tls.sock.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Reads one request (headers, then a Content-Length body); None at EOF or error.
fn read_request(tls: &mut impl Read, buf: &mut Vec<u8>) -> Option<Recorded> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(head_len) = req.parse(buf).ok()? {
            let method = req.method?.to_string();
            let target = req.path?.to_string();
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let length = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < head_len + length {
                let n = tls.read(&mut chunk).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[head_len..head_len + length].to_vec();
            buf.drain(..head_len + length);
            return Some(Recorded {
                method,
                target,
                headers,
                body,
                connection: 0,
                received: Instant::now(),
            });
        }
        let n = tls.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes the response `behaviour` asks for; an error when the connection
/// must close after it.
fn respond(
    tls: &mut StreamOwned<ServerConnection, TcpStream>,
    behaviour: &Behaviour,
) -> io::Result<()> {
    let closed = || Err(io::Error::other("closing"));
    match behaviour.fault {
        Fault::CloseBeforeResponse => return closed(),
        Fault::Garbage => {
            tls.write_all(b"this is not HTTP at all\r\n\r\n{}")?;
            tls.flush()?;
            return closed();
        }
        _ => {}
    }
    let reason = match behaviour.status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    };
    let body = &behaviour.body;
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json; charset=UTF-8\r\nServer: herd-test\r\n",
        behaviour.status
    );
    match behaviour.framing {
        Framing::ContentLength => head.push_str(&format!("Content-Length: {}\r\n", body.len())),
        Framing::Chunked(_) => head.push_str("Transfer-Encoding: chunked\r\n"),
        Framing::UntilClose => {}
    }
    let keep_alive = behaviour.keep_alive && behaviour.framing != Framing::UntilClose;
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut encoded = Vec::with_capacity(body.len() + 64);
    match behaviour.framing {
        Framing::Chunked(size) => {
            for chunk in body.chunks(size.max(1)) {
                encoded.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                encoded.extend_from_slice(chunk);
                encoded.extend_from_slice(b"\r\n");
            }
            encoded.extend_from_slice(b"0\r\n\r\n");
        }
        _ => encoded.extend_from_slice(body),
    }
    let mut out = head.into_bytes();
    if behaviour.fault == Fault::CloseMidBody {
        out.extend_from_slice(&encoded[..encoded.len() / 2]);
        tls.write_all(&out)?;
        tls.flush()?;
        return closed();
    }
    out.extend_from_slice(&encoded);
    tls.write_all(&out)?;
    tls.flush()?;
    if keep_alive {
        Ok(())
    } else {
        tls.conn.send_close_notify();
        let _ = tls.flush();
        closed()
    }
}

//! What an idle TLS connection costs the server's heap, counted
//! allocation by allocation (issue 22):
//!
//!     cargo run --release --example tls-memory -- [N]
//!
//! makes a CA and a certificate in a temporary folder, loads them with
//! herd's own `tls::settings::load` (so the `tls` client port's
//! configuration: TLS 1.3 and 1.2, herd's suite order, tickets), and
//! completes N handshakes (default 1,000), each followed by one request
//! and its reply, two ways:
//!
//! * `rustls`: a rustls `ServerConnection` and `ClientConnection` in
//!   memory, no sockets, records passed through `Vec`s: what rustls's
//!   buffered API keeps per server connection;
//! * `herd`: herd's server side as the loop has it, a
//!   `Stream::Tls(Box<TlsStream>)` over a loopback socket, against a
//!   rustls client over another; the same request and reply. Twice: with
//!   rustls's buffered `ServerConnection` (`TlsStream::new`, herd before
//!   issue 22) and with the `UnbufferedServerConnection` the loop's TLS
//!   ports use now (`TlsStream::server`); the unbuffered one twice more,
//!   with herd's configuration (the TLS 1.3 suites' compact keys,
//!   `src/tls/aead.rs`) and with the same configuration on ring's own
//!   suites, whose AEAD keys are expanded once and kept.
//!
//! A counting global allocator tags every allocation made while the server
//! side runs and reports the bytes and blocks those still hold per
//! connection after the handshake and after the request/reply, and the
//! live blocks of the first connection one by one (the sizes say what
//! they are; docs/PERFORMANCE.md, issue 22, names them). The figures are
//! heap bytes as requested, before malloc's own overhead (8–16 B a block
//! with glibc), which the server's VmRSS in `tools/tls-compare.sh` adds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::Arc;

use herd::config::TlsFiles;
use herd::tls::stream::{Stream, TlsStream};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};

/// What the allocator counts an allocation under.
const OTHER: usize = 0;
const SERVER: usize = 1;
/// The server side of the connection whose blocks are listed.
const TRACED: usize = 2;

/// Bytes before each block: its tag and requested size.
const HEADER: usize = 16;

static LIVE_BYTES: [AtomicIsize; 3] = [const { AtomicIsize::new(0) }; 3];
static LIVE_BLOCKS: [AtomicIsize; 3] = [const { AtomicIsize::new(0) }; 3];
/// The live blocks tagged [`TRACED`]: (address, size), 0 for a free slot.
static TRACE: [(AtomicUsize, AtomicUsize); 64] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; 64];

thread_local! {
    static TAG: Cell<usize> = const { Cell::new(OTHER) };
}

struct Counting;

/// Where the header of a block sits, for an alignment.
fn offset(layout: Layout) -> usize {
    layout.align().max(HEADER)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let off = offset(layout);
        let Ok(outer) = Layout::from_size_align(layout.size() + off, layout.align().max(HEADER))
        else {
            return std::ptr::null_mut();
        };
        let base = System.alloc(outer);
        if base.is_null() {
            return base;
        }
        let tag = TAG.try_with(Cell::get).unwrap_or(OTHER);
        let ptr = base.add(off);
        (ptr.sub(HEADER) as *mut usize).write(tag);
        (ptr.sub(HEADER / 2) as *mut usize).write(layout.size());
        LIVE_BYTES[tag].fetch_add(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS[tag].fetch_add(1, Ordering::Relaxed);
        if tag == TRACED {
            for (addr, size) in &TRACE {
                if addr
                    .compare_exchange(0, ptr as usize, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    size.store(layout.size(), Ordering::Relaxed);
                    break;
                }
            }
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let off = offset(layout);
        let tag = (ptr.sub(HEADER) as *const usize).read();
        LIVE_BYTES[tag].fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_BLOCKS[tag].fetch_sub(1, Ordering::Relaxed);
        if tag == TRACED {
            for (addr, _) in &TRACE {
                if addr
                    .compare_exchange(ptr as usize, 0, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
                {
                    break;
                }
            }
        }
        let outer =
            Layout::from_size_align_unchecked(layout.size() + off, layout.align().max(HEADER));
        System.dealloc(ptr.sub(off), outer);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` with its allocations counted under `tag`.
fn tagged<T>(tag: usize, f: impl FnOnce() -> T) -> T {
    let before = TAG.with(|t| t.replace(tag));
    let out = f();
    TAG.with(|t| t.set(before));
    out
}

/// Live (bytes, blocks) of the server side, traced connection included.
fn server_live() -> (isize, isize) {
    let b = LIVE_BYTES[SERVER].load(Ordering::Relaxed) + LIVE_BYTES[TRACED].load(Ordering::Relaxed);
    let n =
        LIVE_BLOCKS[SERVER].load(Ordering::Relaxed) + LIVE_BLOCKS[TRACED].load(Ordering::Relaxed);
    (b, n)
}

/// The traced connection's live block sizes, largest first.
fn traced_blocks() -> Vec<usize> {
    let mut sizes: Vec<usize> = tagged(OTHER, || {
        TRACE
            .iter()
            .filter(|(a, _)| a.load(Ordering::Relaxed) != 0)
            .map(|(_, s)| s.load(Ordering::Relaxed))
            .collect()
    });
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    sizes
}

const REQUEST: &[u8] = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503\n";
const REPLY: &[u8] =
    b"AT Bench +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503\n";

fn main() {
    let n: usize = match std::env::args().nth(1) {
        None => 1000,
        Some(a) => match a.parse() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("usage: tls-memory [N]");
                std::process::exit(2);
            }
        },
    };
    let dir = tempfile::tempdir().expect("temporary folder");
    let (server_config, client_config) = configs(dir.path());
    println!(
        "size_of: ServerConnection {} B, UnbufferedServerConnection {} B, TlsStream {} B, Stream {} B",
        std::mem::size_of::<rustls::ServerConnection>(),
        std::mem::size_of::<rustls::server::UnbufferedServerConnection>(),
        std::mem::size_of::<TlsStream>(),
        std::mem::size_of::<Stream>(),
    );
    // ring's AEAD key is one type for all its algorithms, as large as
    // AES-GCM's expanded key: a ChaCha20 key holds as much.
    println!(
        "size_of: ring::aead::LessSafeKey {} B (AES-128-GCM, ChaCha20-Poly1305 and AES-256-GCM alike)",
        std::mem::size_of::<ring::aead::LessSafeKey>(),
    );
    in_memory(n, &server_config, &client_config);
    let herd_keys = ("herd's compact keys", &server_config);
    over_sockets(n, herd_keys, &client_config, Driven::Buffered);
    over_sockets(n, herd_keys, &client_config, Driven::Unbuffered);
    let ring_config = with_rings_keys(&server_config);
    over_sockets(
        n,
        ("ring's keys", &ring_config),
        &client_config,
        Driven::Unbuffered,
    );
}

/// `config` (herd's `tls` port) on ring's own TLS 1.3 suites, each in the
/// place of herd's suite of the same number: the same certificate,
/// protocol versions, suite order and tickets; AEAD keys expanded once and
/// kept, as before `src/tls/aead.rs`.
fn with_rings_keys(config: &Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
    use rustls::crypto::ring::cipher_suite as ring_suite;
    let rings = [
        ring_suite::TLS13_AES_128_GCM_SHA256,
        ring_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ring_suite::TLS13_AES_256_GCM_SHA384,
    ];
    let mut provider = herd::tls::provider();
    for suite in &mut provider.cipher_suites {
        if let Some(ring) = rings.iter().find(|r| r.suite() == suite.suite()) {
            *suite = *ring;
        }
    }
    let mut ring_config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&config.cert_resolver));
    ring_config.ticketer = Arc::clone(&config.ticketer);
    ring_config.send_tls13_tickets = config.send_tls13_tickets;
    ring_config.session_storage = Arc::clone(&config.session_storage);
    Arc::new(ring_config)
}

/// Prints one line of figures: the live server bytes and blocks per
/// connection since `base`.
fn report(what: &str, n: usize, base: (isize, isize)) {
    let (bytes, blocks) = server_live();
    println!(
        "  {what:<34} {:>7.0} B in {:>5.1} blocks per connection",
        (bytes - base.0) as f64 / n as f64,
        (blocks - base.1) as f64 / n as f64
    );
}

fn print_traced() {
    let sizes = traced_blocks();
    let total: usize = sizes.iter().sum();
    println!(
        "  first connection's blocks ({total} B): {}",
        sizes
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// rustls's buffered connections, records passed in memory.
fn in_memory(
    n: usize,
    server_config: &Arc<rustls::ServerConfig>,
    client_config: &Arc<rustls::ClientConfig>,
) {
    println!("rustls ServerConnection in memory, {n} connections:");
    let base = server_live();
    let name = ServerName::try_from("Bench").expect("a DNS name");
    let mut pairs = Vec::with_capacity(n);
    for i in 0..n {
        let tag = if i == 0 { TRACED } else { SERVER };
        let server = tagged(tag, || {
            rustls::ServerConnection::new(Arc::clone(server_config)).expect("server session")
        });
        let client = rustls::ClientConnection::new(Arc::clone(client_config), name.clone())
            .expect("client session");
        pairs.push((server, client, tag));
    }
    for (server, client, tag) in &mut pairs {
        while server.is_handshaking() || client.is_handshaking() || client.wants_write() {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).expect("client records");
            tagged(*tag, || pass(&wire, server));
            let mut wire = Vec::new();
            tagged(*tag, || {
                while server.wants_write() {
                    server.write_tls(&mut wire).expect("server records");
                }
            });
            pass(&wire, client);
        }
    }
    report("after the handshake", n, base);
    for (server, client, tag) in &mut pairs {
        client.writer().write_all(REQUEST).expect("request");
        let mut wire = Vec::new();
        client.write_tls(&mut wire).expect("client records");
        tagged(*tag, || {
            pass(&wire, server);
            let mut got = [0u8; 256];
            let k = server.reader().read(&mut got).expect("the request");
            assert_eq!(&got[..k], REQUEST);
            server.writer().write_all(REPLY).expect("reply");
        });
        let mut wire = Vec::new();
        tagged(*tag, || {
            while server.wants_write() {
                server.write_tls(&mut wire).expect("server records");
            }
        });
        pass(&wire, client);
        let mut got = [0u8; 256];
        let k = client.reader().read(&mut got).expect("the reply");
        assert_eq!(&got[..k], REPLY);
    }
    report("after a request and its reply", n, base);
    print_traced();
    tagged(OTHER, || drop(pairs));
}

/// Feeds `wire` to a session through `read_tls` and processes it.
fn pass<D>(mut wire: &[u8], conn: &mut rustls::ConnectionCommon<D>) {
    while !wire.is_empty() {
        conn.read_tls(&mut wire).expect("read_tls");
        conn.process_new_packets().expect("records");
    }
}

/// How herd's server side drives rustls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driven {
    /// `TlsStream::new` with a `ServerConnection` (herd before issue 22).
    Buffered,
    /// `TlsStream::server` with an `UnbufferedServerConnection`, as the
    /// loop's TLS ports accept now.
    Unbuffered,
}

/// herd's server side over loopback sockets, a rustls client on the other.
fn over_sockets(
    n: usize,
    (keys, server_config): (&str, &Arc<rustls::ServerConfig>),
    client_config: &Arc<rustls::ClientConfig>,
    driven: Driven,
) {
    println!("herd Stream::Tls over loopback, {driven:?}, {keys}, {n} connections:");
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let name = ServerName::try_from("Bench").expect("a DNS name");
    let mut scratch = vec![0u8; 64 * 1024];
    let base = server_live();
    let mut pairs = Vec::with_capacity(n + 1);
    // Connection 0 is not counted: what it allocates once per thread (the
    // buffer herd encrypts in) is not a connection's.
    for i in 0..=n {
        let tag = match i {
            0 => OTHER,
            1 => TRACED,
            _ => SERVER,
        };
        let client_sock = TcpStream::connect(addr).expect("connect");
        client_sock.set_nonblocking(true).expect("nonblocking");
        client_sock.set_nodelay(true).expect("nodelay");
        let (accepted, _) = listener.accept().expect("accept");
        accepted.set_nonblocking(true).expect("nonblocking");
        let sock = mio::net::TcpStream::from_std(accepted);
        let server = tagged(tag, || {
            let config = Arc::clone(server_config);
            let tls = match driven {
                Driven::Buffered => TlsStream::new(
                    sock,
                    rustls::ServerConnection::new(config).expect("server session"),
                ),
                Driven::Unbuffered => TlsStream::server(
                    sock,
                    rustls::server::UnbufferedServerConnection::new(config)
                        .expect("server session"),
                ),
            };
            Stream::Tls(Box::new(tls))
        });
        let client = rustls::ClientConnection::new(Arc::clone(client_config), name.clone())
            .expect("client session");
        pairs.push((server, client_sock, client, tag));
    }
    for (server, sock, client, tag) in &mut pairs {
        let mut turns = 0;
        while server.is_handshaking() || client.is_handshaking() {
            turns += 1;
            assert!(turns < 10_000, "the handshake does not finish");
            client_turn(sock, client);
            tagged(*tag, || server_turn(server, &mut scratch, None));
        }
    }
    report("after the handshake", n, base);
    for (server, sock, client, tag) in &mut pairs {
        client.writer().write_all(REQUEST).expect("request");
        let mut turns = 0;
        let mut replied = false;
        let mut got = Vec::new();
        while got.len() < REPLY.len() {
            turns += 1;
            assert!(turns < 10_000, "no reply");
            client_turn(sock, client);
            let mut plain = [0u8; 256];
            while let Ok(k) = client.reader().read(&mut plain) {
                if k == 0 {
                    break;
                }
                got.extend_from_slice(&plain[..k]);
            }
            tagged(*tag, || {
                server_turn(server, &mut scratch, Some(&mut replied))
            });
        }
        assert_eq!(got, REPLY);
    }
    // The client reads the tickets and any last records, so nothing waits.
    for (server, sock, client, tag) in &mut pairs {
        client_turn(sock, client);
        tagged(*tag, || server_turn(server, &mut scratch, None));
    }
    report("after a request and its reply", n, base);
    print_traced();
    tagged(OTHER, || drop(pairs));
}

/// The client's records out and the server's in, without blocking.
fn client_turn(sock: &mut TcpStream, client: &mut rustls::ClientConnection) {
    while client.wants_write() {
        match client.write_tls(sock) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("client write: {e}"),
        }
    }
    loop {
        match client.read_tls(sock) {
            Ok(0) => panic!("the server closed"),
            Ok(_) => {
                client.process_new_packets().expect("client records");
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("client read: {e}"),
        }
    }
}

/// The server reads what came; with `replied`, it answers a request once.
fn server_turn(server: &mut Stream, scratch: &mut [u8], replied: Option<&mut bool>) {
    let mut requested = false;
    loop {
        match server.read(scratch) {
            Ok(0) => panic!("the client closed"),
            Ok(k) => {
                assert_eq!(&scratch[..k], REQUEST);
                requested = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("server read: {e}"),
        }
    }
    if let Some(replied) = replied {
        if requested && !*replied {
            assert_eq!(server.write(REPLY).expect("reply"), REPLY.len());
            *replied = true;
        }
    }
    server.send_pending().expect("server records");
}

/// A CA and a certificate for `Bench` in `dir`, loaded by herd: the `tls`
/// port's server configuration and a client that trusts the CA.
fn configs(dir: &Path) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "tls-memory CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("CA key");
    let ca = params.self_signed(&ca_key).expect("CA certificate");
    let ca_der: CertificateDer<'static> = ca.der().clone();
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("ca.pem");
    let issuer = Issuer::new(params, ca_key);
    let mut leaf = CertificateParams::new(vec!["Bench".to_string()]).expect("leaf params");
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages.push(KeyUsagePurpose::DigitalSignature);
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().expect("leaf key");
    let cert = leaf.signed_by(&key, &issuer).expect("leaf certificate");
    std::fs::write(dir.join("Bench.pem"), cert.pem()).expect("Bench.pem");
    std::fs::write(dir.join("Bench.key"), key.serialize_pem()).expect("Bench.key");
    let files = TlsFiles {
        cert: (1, dir.join("{name}.pem")),
        key: (2, dir.join("{name}.key")),
        ca: (3, dir.join("ca.pem")),
    };
    let tls = herd::tls::settings::load(&files, &dir.join("herd.conf"), "Bench")
        .unwrap_or_else(|e| panic!("loading the certificates: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der).expect("the CA");
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(herd::tls::provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    (tls.clients, Arc::new(client))
}

//! herd's compact TLS 1.3 keys (`src/tls/aead.rs`: the key's bytes kept,
//! ring's AEAD key built per record) against standard rustls on ring's own
//! suites, over real sockets, with certificates made here:
//!
//! - a standard client talks to herd's `tls` port on each TLS 1.3 suite,
//!   and on TLS 1.2 (whose suites stay ring's);
//! - herd's client configuration (`tls::provider()`, what links, the
//!   Places client and flood_load dial with) talks to a standard rustls
//!   server on each TLS 1.3 suite;
//! - key updates asked by either end, full 16 KiB records, records split
//!   across TCP segments, and a tampered record, which ends that
//!   connection alone.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

mod support;

use herd::config::TlsFiles;
use herd::server::{self, Listeners, ServerConfig};
use herd::tls::HerdTls;
use rustls::crypto::ring::cipher_suite as ring_suite;
use rustls::pki_types::ServerName;
use rustls::{
    CipherSuite, ClientConfig, ClientConnection, ProtocolVersion, StreamOwned, SupportedCipherSuite,
};

use support::certs::{write_herd_certs, Ca};
use support::herd::PATIENCE;

/// ring's three TLS 1.3 suites, in herd's order.
const TLS13: [SupportedCipherSuite; 3] = [
    ring_suite::TLS13_AES_128_GCM_SHA256,
    ring_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ring_suite::TLS13_AES_256_GCM_SHA384,
];

/// Alpha's configurations, as the binary loads them from `dir`.
fn load(dir: &Path) -> HerdTls {
    let files = TlsFiles {
        cert: (1, dir.join("certs/{name}.pem")),
        key: (2, dir.join("certs/{name}.key")),
        ca: (3, dir.join("ca.pem")),
    };
    herd::tls::settings::load(&files, &dir.join("herd.conf"), "Alpha").expect("TLS files load")
}

/// Alpha with a `tls` port (and the peer port a herd with TLS has), no
/// neighbours: the server and its `tls` address.
fn alpha(tls: HerdTls) -> (server::Running, SocketAddr) {
    let local = || server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (client, tls_port, peer) = (local(), local(), local());
    let tls_addr = tls_port.local_addr().unwrap();
    let config = ServerConfig {
        tls: Some(Arc::new(tls)),
        ..ServerConfig::alone("Alpha")
    };
    let running = server::spawn(
        config,
        Listeners {
            client,
            peer: Some(peer),
            tls: Some(tls_port),
            http: None,
            https: None,
        },
    )
    .expect("Alpha starts");
    (running, tls_addr)
}

/// A CA, Alpha's files in a temporary folder, and Alpha running.
fn setup() -> (tempfile::TempDir, Ca, server::Running, SocketAddr) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let ca = Ca::new("tls_aead CA");
    write_herd_certs(dir.path(), &ca, &["Alpha"]);
    let (running, addr) = alpha(load(dir.path()));
    (dir, ca, running, addr)
}

/// A standard rustls client (ring's provider) offering `suites` alone, on
/// `versions`.
fn ring_client(
    ca: &Ca,
    suites: Vec<SupportedCipherSuite>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = suites;
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    Arc::new(config)
}

type Client = BufReader<StreamOwned<ClientConnection, TcpStream>>;

/// Connects with `config` to `addr` as `name` and completes the handshake.
fn connect(addr: SocketAddr, name: &str, config: Arc<ClientConfig>) -> Client {
    let name = ServerName::try_from(name.to_string()).expect("a DNS name");
    let mut conn = ClientConnection::new(config, name).expect("client session");
    let mut sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(PATIENCE)).unwrap();
    sock.set_nodelay(true).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).expect("handshake");
    }
    BufReader::new(StreamOwned::new(conn, sock))
}

fn send(c: &mut Client, bytes: &[u8]) {
    let s = c.get_mut();
    s.write_all(bytes).expect("send");
    s.flush().expect("flush");
}

fn line(c: &mut Client) -> String {
    let mut line = String::new();
    c.read_line(&mut line).expect("a line");
    assert!(line.ends_with('\n'), "cut short: {line:?}");
    line
}

/// Asks `c` one IAMAT for `client` and checks Alpha's AT reply.
fn ask(c: &mut Client, client: &str) {
    let iamat = format!("IAMAT {client} +34.068930-118.445127 1621464827.959498503\n");
    send(c, iamat.as_bytes());
    let at = line(c);
    assert!(at.starts_with("AT Alpha "), "{at:?}");
    assert!(at.ends_with(&iamat[6..]), "{at:?} for {iamat:?}");
}

fn suite_of(c: &Client) -> CipherSuite {
    c.get_ref()
        .conn
        .negotiated_cipher_suite()
        .expect("a suite")
        .suite()
}

#[test]
fn a_standard_client_is_answered_on_each_tls13_suite_and_on_tls12() {
    let (_dir, ca, alpha, addr) = setup();
    for suite in TLS13 {
        let mut c = connect(
            addr,
            "Alpha",
            ring_client(&ca, vec![suite], &[&rustls::version::TLS13]),
        );
        assert_eq!(suite_of(&c), suite.suite());
        assert_eq!(
            c.get_ref().conn.protocol_version(),
            Some(ProtocolVersion::TLSv1_3)
        );
        for i in 0..3 {
            ask(&mut c, &format!("phone-{i}"));
        }
    }
    // TLS 1.2 (ring's own suites on both ends).
    let mut c = connect(
        addr,
        "Alpha",
        ring_client(
            &ca,
            rustls::crypto::ring::default_provider().cipher_suites,
            &[&rustls::version::TLS12],
        ),
    );
    assert_eq!(
        c.get_ref().conn.protocol_version(),
        Some(ProtocolVersion::TLSv1_2)
    );
    ask(&mut c, "old-phone");
    alpha.stop().unwrap();
}

#[test]
fn key_updates_a_client_asks_for_renew_both_directions_on_each_suite() {
    let (_dir, ca, alpha, addr) = setup();
    for suite in TLS13 {
        let mut c = connect(
            addr,
            "Alpha",
            ring_client(&ca, vec![suite], &[&rustls::version::TLS13]),
        );
        ask(&mut c, "before");
        for round in 0..3 {
            // Our sending key changes now; the KeyUpdate asks Alpha to
            // change its own, which its reply is then sealed with.
            c.get_mut().conn.refresh_traffic_keys().expect("key update");
            ask(&mut c, &format!("after-{round}"));
        }
    }
    alpha.stop().unwrap();
}

#[test]
fn full_records_and_records_split_across_segments_are_opened() {
    let (_dir, ca, alpha, addr) = setup();
    for suite in TLS13 {
        let config = ring_client(&ca, vec![suite], &[&rustls::version::TLS13]);

        // 300 pipelined IAMATs in one write: rustls seals full 16 KiB
        // records, and Alpha's replies fill records of its own.
        let mut c = connect(addr, "Alpha", Arc::clone(&config));
        let mut batch = Vec::new();
        for i in 0..300 {
            batch.extend_from_slice(
                format!("IAMAT bulk-{i} +34.068930-118.445127 1621464827.{i:09}\n").as_bytes(),
            );
        }
        assert!(batch.len() > 16 * 1024);
        send(&mut c, &batch);
        for i in 0..300 {
            let at = line(&mut c);
            assert!(
                at.ends_with(&format!(
                    " bulk-{i} +34.068930-118.445127 1621464827.{i:09}\n"
                )),
                "{at:?}"
            );
        }

        // Two records by hand: the first whole with three bytes of the
        // second's header; once the first is answered (Alpha holds the
        // piece), the second's body in two writes.
        let mut c = connect(addr, "Alpha", config);
        let records = |c: &mut Client, text: &[u8]| {
            let conn = &mut c.get_mut().conn;
            conn.writer().write_all(text).unwrap();
            let mut wire = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut wire).unwrap();
            }
            wire
        };
        let first = records(&mut c, b"IAMAT split-1 +1+1 1621464827.1\n");
        let second = records(&mut c, b"IAMAT split-2 +1+1 1621464827.2\n");
        let sock = &mut c.get_mut().sock;
        let mut out = first.clone();
        out.extend_from_slice(&second[..3]);
        sock.write_all(&out).unwrap();
        let at = line(&mut c);
        assert!(at.contains(" split-1 "), "{at:?}");
        let sock = &mut c.get_mut().sock;
        let middle = second.len() / 2;
        sock.write_all(&second[3..middle]).unwrap();
        sock.flush().unwrap();
        sock.write_all(&second[middle..]).unwrap();
        let at = line(&mut c);
        assert!(at.contains(" split-2 "), "{at:?}");
        ask(&mut c, "after-split");
    }
    alpha.stop().unwrap();
}

/// What a connection ends with: how many plaintext bytes came, and the
/// error or EOF that ended it.
fn until_end(c: &mut Client) -> (usize, io::Result<usize>) {
    let deadline = Instant::now() + PATIENCE;
    let mut got = 0;
    let mut buf = [0u8; 1024];
    loop {
        assert!(Instant::now() < deadline, "the connection was not closed");
        match c.get_mut().read(&mut buf) {
            Ok(0) => return (got, Ok(0)),
            Ok(n) => got += n,
            Err(e) => return (got, Err(e)),
        }
    }
}

#[test]
fn a_tampered_record_ends_its_connection_and_others_go_on() {
    let (_dir, ca, alpha, addr) = setup();
    for suite in TLS13 {
        let config = ring_client(&ca, vec![suite], &[&rustls::version::TLS13]);
        let mut bystander = connect(addr, "Alpha", Arc::clone(&config));
        ask(&mut bystander, "bystander");
        let mut c = connect(addr, "Alpha", config);
        ask(&mut c, "victim");
        let conn = &mut c.get_mut().conn;
        conn.writer()
            .write_all(b"IAMAT victim +1+1 1621464827.7\n")
            .unwrap();
        let mut wire = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut wire).unwrap();
        }
        // One bit of the ciphertext, past the record's 5-byte header.
        wire[9] ^= 0x01;
        c.get_mut().sock.write_all(&wire).unwrap();
        let (got, end) = until_end(&mut c);
        assert_eq!(got, 0, "a reply to a tampered record");
        // rustls tells us of Alpha's alert (bad_record_mac), or the socket
        // closed under it.
        if let Err(e) = &end {
            assert_ne!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
            assert_ne!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        }
        ask(&mut bystander, "bystander-again");
        ask(
            &mut connect(
                addr,
                "Alpha",
                ring_client(&ca, vec![suite], &[&rustls::version::TLS13]),
            ),
            "newcomer",
        );
    }
    alpha.stop().unwrap();
}

/// A standard rustls server (ring's provider, TLS 1.3) on a listener of its
/// own: for each connection, echoes lines; on `update`, refreshes its keys
/// (a KeyUpdate asking for the client's) before echoing. The address.
fn echo_server(ca: &Ca) -> SocketAddr {
    let leaf = ca.leaf(&["Echo"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert()], leaf.key())
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { continue };
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                sock.set_read_timeout(Some(PATIENCE)).unwrap();
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut s = BufReader::new(StreamOwned::new(conn, sock));
                let mut line = Vec::new();
                while let Ok(n) = s.read_until(b'\n', &mut line) {
                    if n == 0 {
                        break;
                    }
                    if line == b"update\n" {
                        s.get_mut().conn.refresh_traffic_keys().unwrap();
                    }
                    if s.get_mut().write_all(&line).is_err() {
                        break;
                    }
                    line.clear();
                }
            });
        }
    });
    addr
}

/// herd's client configuration (its provider: compact TLS 1.3 keys)
/// offering `suite` alone, trusting `ca`.
fn herd_client(ca: &Ca, suite: CipherSuite) -> Arc<ClientConfig> {
    let mut provider = herd::tls::provider();
    provider.cipher_suites.retain(|s| s.suite() == suite);
    assert_eq!(provider.cipher_suites.len(), 1);
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    Arc::new(config)
}

fn echo(c: &mut Client, text: &[u8]) {
    send(c, text);
    let mut back = Vec::new();
    while back.len() < text.len() {
        let n = c.read_until(b'\n', &mut back).expect("the echo");
        assert!(n > 0, "the echo server closed");
    }
    assert!(
        back == text,
        "{} bytes echoed as {}",
        text.len(),
        back.len()
    );
}

#[test]
fn herds_client_talks_to_a_standard_server_on_each_tls13_suite() {
    let ca = Ca::new("tls_aead echo CA");
    let addr = echo_server(&ca);
    for suite in TLS13 {
        let mut c = connect(addr, "Echo", herd_client(&ca, suite.suite()));
        assert_eq!(suite_of(&c), suite.suite());
        echo(&mut c, b"hello\n");
        // Full records both ways: 40,000 bytes are three records.
        let mut big: Vec<u8> = (0..40_000).map(|i| b'a' + (i % 26) as u8).collect();
        big.push(b'\n');
        echo(&mut c, &big);
        // The server renews its keys and asks for ours; then we renew ours.
        echo(&mut c, b"update\n");
        echo(&mut c, b"after the server's update\n");
        c.get_mut().conn.refresh_traffic_keys().unwrap();
        echo(&mut c, b"after ours\n");
        echo(&mut c, b"update\n");
        echo(&mut c, &big);
    }
}

#[test]
fn herds_client_talks_to_herds_server_on_each_tls13_suite() {
    let (_dir, ca, alpha, addr) = setup();
    for suite in TLS13 {
        let mut c = connect(addr, "Alpha", herd_client(&ca, suite.suite()));
        assert_eq!(suite_of(&c), suite.suite());
        ask(&mut c, "both-herd");
        c.get_mut().conn.refresh_traffic_keys().unwrap();
        ask(&mut c, "both-herd-updated");
    }
    alpha.stop().unwrap();
}

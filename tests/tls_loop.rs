//! TLS inside the loop, in process: two servers linked over mutual TLS on
//! their peer ports, and a TLS client on a `tls` port, with the rustls
//! configurations built here from certificates made here (the files and
//! `herd.conf` side is in `tests/tls.rs`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use herd::links::Neighbour;
use herd::server::{self, Listeners, ServerConfig};
use herd::tls::HerdTls;
use rustls::pki_types::ServerName;
use rustls::server::WebPkiClientVerifier;

use support::certs::Ca;

/// The three configurations of server `name`, its certificate from `ca`.
fn herd_tls(ca: &Ca, name: &str) -> HerdTls {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let leaf = ca.leaf(&[name]);
    let verifier = WebPkiClientVerifier::builder_with_provider(ca.roots(), provider.clone())
        .build()
        .unwrap();
    let peer = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![leaf.cert()], leaf.key())
        .unwrap();
    let clients = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert()], leaf.key())
        .unwrap();
    let dial = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_client_auth_cert(vec![leaf.cert()], leaf.key())
        .unwrap();
    HerdTls {
        peer: Arc::new(peer),
        clients: Arc::new(clients),
        dial: Arc::new(dial),
    }
}

fn local() -> std::net::TcpListener {
    server::bind("127.0.0.1:0".parse().unwrap()).unwrap()
}

fn config(name: &str, neighbour: Neighbour, tls: HerdTls) -> ServerConfig {
    ServerConfig {
        neighbours: vec![neighbour],
        tls: Some(Arc::new(tls)),
        ..ServerConfig::alone(name)
    }
}

/// Alpha alone (its one neighbour never answers), with a plaintext and a
/// TLS client port: the server, and their addresses.
fn lone_alpha(ca: &Ca) -> (server::Running, SocketAddr, SocketAddr) {
    let (client, tls) = (local(), local());
    let (plain_addr, tls_addr) = (client.local_addr().unwrap(), tls.local_addr().unwrap());
    let lonely = Neighbour {
        name: "Beta".to_string(),
        addr: "127.0.0.1:1".parse().unwrap(),
        tls: true,
    };
    let alpha = server::spawn(
        config("Alpha", lonely, herd_tls(ca, "Alpha")),
        Listeners {
            client,
            peer: None,
            tls: Some(tls),
            http: None,
            https: None,
        },
    )
    .unwrap();
    (alpha, plain_addr, tls_addr)
}

/// A blocking TLS client of a `tls` port, trusting `ca`.
fn tls_client(
    addr: SocketAddr,
    ca: &Ca,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    let name = ServerName::try_from("Alpha").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    rustls::StreamOwned::new(conn, sock)
}

#[test]
fn two_servers_flood_over_mutual_tls_and_a_tls_client_is_answered() {
    let ca = Ca::new("herd CA");
    let (a, b) = (local(), local());
    let (a_peer, b_peer) = (local(), local());
    let a_tls = local();
    let (tls_addr, b_peer_addr, a_peer_addr) = (
        a_tls.local_addr().unwrap(),
        b_peer.local_addr().unwrap(),
        a_peer.local_addr().unwrap(),
    );
    let b_addr = b.local_addr().unwrap();
    let to = |name: &str, addr| Neighbour {
        name: name.to_string(),
        addr,
        tls: true,
    };
    let alpha = server::spawn(
        config("Alpha", to("Beta", b_peer_addr), herd_tls(&ca, "Alpha")),
        Listeners {
            client: a,
            peer: Some(a_peer),
            tls: Some(a_tls),
            http: None,
            https: None,
        },
    )
    .unwrap();
    let beta = server::spawn(
        config("Beta", to("Alpha", a_peer_addr), herd_tls(&ca, "Beta")),
        Listeners {
            client: b,
            peer: Some(b_peer),
            tls: None,
            http: None,
            https: None,
        },
    )
    .unwrap();

    // Over TLS, the same protocol: an IAMAT is answered with its AT line.
    let mut c = tls_client(tls_addr, &ca);
    c.write_all(b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503\n")
        .unwrap();
    let mut reader = BufReader::new(c);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("AT Alpha "), "{line:?}");
    assert!(line.ends_with(" kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503\n"));

    // ... and it reaches Beta over the mutual-TLS link.
    let deadline = Instant::now() + Duration::from_secs(20);
    while beta.stats.snapshot().stored_clients < 1 {
        assert!(Instant::now() < deadline, "the update never reached Beta");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Beta's plaintext client port refuses herd traffic: it has a peer port.
    let mut plain = TcpStream::connect(b_addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    plain.write_all(b"HERD Alpha\n").unwrap();
    let mut got = [0u8; 64];
    let n = plain.read(&mut got).unwrap();
    assert_eq!(&got[..n], b"? HERD Alpha\n");

    // A plaintext HERD on Beta's mutual-TLS peer port is not a link.
    let mut raw = TcpStream::connect(b_peer_addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    raw.write_all(b"HERD Alpha\n").unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink);
    assert!(!sink.windows(4).any(|w| w == b"PING"), "{sink:?}");
    // ... and it is counted for the operator (herd_refused_connections_total).
    let deadline = Instant::now() + Duration::from_secs(20);
    while beta.stats.snapshot().refused != [0, 0, 1, 0, 0] {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            beta.stats.snapshot().refused
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    alpha.stop().unwrap();
    beta.stop().unwrap();
}

#[test]
fn a_tls_client_that_never_reads_is_stopped_by_its_output_cap_and_stalls_no_one() {
    let ca = Ca::new("herd CA");
    let (alpha, plain_addr, tls_addr) = lone_alpha(&ca);

    // It pipelines IAMATs and reads nothing: once its unread replies pass
    // the output cap the server stops reading it, and its writes block.
    let mut hog = tls_client(tls_addr, &ca);
    hog.sock
        // (A blocked write ends the loop: a short stall only ends it sooner.)
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let line = b"IAMAT hog +34.068930-118.445127 1621464827.959498503\n".repeat(256);
    let mut sent = 0usize;
    let bound = 256 << 20;
    while sent < bound {
        match hog.write(&line) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(
        sent < bound,
        "{sent} bytes taken from a client that reads nothing"
    );

    // Meanwhile others are served, over TLS and not.
    let mut c = BufReader::new(tls_client(tls_addr, &ca));
    c.get_mut()
        .write_all(b"IAMAT other +1+1 1621464827.5\n")
        .unwrap();
    let mut reply = String::new();
    c.read_line(&mut reply).unwrap();
    assert!(reply.starts_with("AT Alpha "), "{reply:?}");
    let mut p = BufReader::new(TcpStream::connect(plain_addr).unwrap());
    p.get_mut()
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    p.get_mut()
        .write_all(b"IAMAT plain +1+1 1621464827.5\n")
        .unwrap();
    reply.clear();
    p.read_line(&mut reply).unwrap();
    assert!(reply.starts_with("AT Alpha "), "{reply:?}");
    drop(hog);
    alpha.stop().unwrap();
}

#[test]
fn a_tls_client_pipelining_in_odd_chunks_gets_every_reply_in_order() {
    let ca = Ca::new("herd CA");
    let (alpha, _, tls_addr) = lone_alpha(&ca);
    // Requests in chunks of 1 byte to 40 KiB, many records per read and
    // reads that end inside a record: every reply comes, in order (a read
    // taken as "drained" too early would leave some unanswered).
    let n = 20_000;
    let mut input = Vec::new();
    for i in 0..n {
        input.extend_from_slice(format!("IAMAT c{i} +1+1 1621464827.5\n").as_bytes());
    }
    let mut s = tls_client(tls_addr, &ca);
    let mut chunks = Vec::new();
    let (mut at, mut size) = (0, 1usize);
    while at < input.len() {
        let end = (at + size).min(input.len());
        chunks.push(input[at..end].to_vec());
        at = end;
        size = (size * 7 + 13) % 40_000 + 1;
    }
    // One thread of ours drives the session: write a chunk, read what came.
    s.sock.set_nonblocking(false).unwrap();
    let mut reader_buf = Vec::new();
    let mut got = [0u8; 65536];
    for chunk in &chunks {
        s.write_all(chunk).unwrap();
        s.flush().unwrap();
        // Read what is there without waiting long.
        s.sock
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        while let Ok(k) = s.read(&mut got) {
            if k == 0 {
                break;
            }
            reader_buf.extend_from_slice(&got[..k]);
        }
    }
    s.sock
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let replies = loop {
        let replies = reader_buf.iter().filter(|&&b| b == b'\n').count();
        if replies >= n {
            break replies;
        }
        let k = s.read(&mut got).expect("every reply within the deadline");
        assert!(k > 0, "closed after {replies} replies");
        reader_buf.extend_from_slice(&got[..k]);
    };
    let text = String::from_utf8(reader_buf).unwrap();
    for (i, line) in text.lines().enumerate() {
        assert!(line.starts_with("AT Alpha "), "{line:?}");
        assert!(
            line.contains(&format!(" c{i} ")),
            "reply {i} out of order: {line:?}"
        );
    }
    assert_eq!(replies, n);
    alpha.stop().unwrap();
}

/// Sends `line` and reads one reply line over a blocking TLS stream.
fn ask(s: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>, line: &str) -> String {
    s.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while got.last() != Some(&b'\n') {
        let k = s.read(&mut byte).expect("a reply");
        assert!(k > 0, "closed before a reply to {line:?}");
        got.push(byte[0]);
    }
    String::from_utf8(got).unwrap()
}

#[test]
fn a_bad_record_closes_its_connection_only_and_key_updates_pass() {
    let ca = Ca::new("herd CA");
    let (alpha, _, tls_addr) = lone_alpha(&ca);
    let mut good = tls_client(tls_addr, &ca);
    assert!(ask(&mut good, "IAMAT good +1+1 1621464827.5").starts_with("AT Alpha "));

    // A client whose next record does not authenticate (its tag garbled):
    // the server answers with an alert and closes that connection.
    let mut bad = tls_client(tls_addr, &ca);
    assert!(ask(&mut bad, "IAMAT bad +1+1 1621464827.5").starts_with("AT Alpha "));
    bad.conn
        .writer()
        .write_all(b"IAMAT bad +2+2 1621464828.5\n")
        .unwrap();
    let mut record = Vec::new();
    bad.conn.write_tls(&mut record).unwrap();
    let last = record.len() - 1;
    record[last] ^= 0x55;
    bad.sock.write_all(&record).unwrap();
    let mut sink = [0u8; 256];
    match bad.read(&mut sink) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("answered {:?}", String::from_utf8_lossy(&sink[..n])),
    }
    let mut rest = Vec::new();
    let _ = bad.sock.read_to_end(&mut rest); // EOF (or a reset): closed

    // The others are served as before; the client updates its keys, asking
    // the server to update its own, and the conversation goes on.
    assert!(ask(&mut good, "IAMAT good +3+3 1621464829.5").starts_with("AT Alpha "));
    good.conn.refresh_traffic_keys().expect("a key update");
    for i in 0..3 {
        let reply = ask(&mut good, &format!("IAMAT good +{i}+{i} 162146483{i}.5"));
        assert!(reply.starts_with("AT Alpha "), "{reply:?}");
    }
    let mut fresh = tls_client(tls_addr, &ca);
    assert!(ask(&mut fresh, "IAMAT fresh +1+1 1621464827.5").starts_with("AT Alpha "));
    alpha.stop().unwrap();
}

//! TLS session resumption (docs/OPERATING.md, "Session resumption"), in
//! process: a server whose configurations `tls::settings::load` built from
//! files made here, and rustls clients that keep their sessions.
//!
//! - On the `tls` port a second connection resumes (and on the `https`
//!   port, which has the same configuration); a ticket whose key has
//!   rotated out, or that another server (a restart) made, falls back to a
//!   full handshake and is served. Every handshake gives the phone one
//!   ticket, and each resumption the next.
//! - On the peer port a resumed link still carries the certificate its first
//!   handshake verified (rustls keeps it in the ticket): `HERD` is checked
//!   against it as on a full handshake; another neighbour holding its
//!   sessions cannot pose as it; and a ticket from the `tls` port never
//!   stands in for a client certificate.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use herd::config::TlsFiles;
use herd::links::Neighbour;
use herd::server::{self, Listeners, ServerConfig};
use herd::stats::ServerStats;
use herd::tls::tickets::{self, TicketKeys};
use herd::tls::HerdTls;
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12ClientSessionValue,
    Tls13ClientSessionValue,
};
use rustls::pki_types::ServerName;
use rustls::HandshakeKind;

use support::certs::{write_herd_certs, Ca};

const TLS: usize = 1;
const PEER: usize = 2;
const HTTPS: usize = 4;

/// Server `name`'s configurations, as the binary loads them from `dir`.
fn load(dir: &Path, name: &str) -> HerdTls {
    let files = TlsFiles {
        cert: (1, dir.join("certs/{name}.pem")),
        key: (2, dir.join("certs/{name}.key")),
        ca: (3, dir.join("ca.pem")),
    };
    herd::tls::settings::load(&files, &dir.join("herd.conf"), name).expect("TLS files load")
}

/// Alpha, with a `tls`, a peer and an `https` port, neighbours Beta and
/// Gamma (never answering): the server, its tls, peer and https addresses.
fn alpha(tls: HerdTls) -> (server::Running, SocketAddr, SocketAddr, SocketAddr) {
    let local = || server::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let (client, tls_port, peer, https) = (local(), local(), local(), local());
    let (tls_addr, peer_addr) = (tls_port.local_addr().unwrap(), peer.local_addr().unwrap());
    let https_addr = https.local_addr().unwrap();
    let away = |name: &str| Neighbour {
        name: name.to_string(),
        addr: "127.0.0.1:1".parse().unwrap(),
        tls: true,
    };
    let config = ServerConfig {
        neighbours: vec![away("Beta"), away("Gamma")],
        tls: Some(Arc::new(tls)),
        ..ServerConfig::alone("Alpha")
    };
    let listeners = Listeners {
        client,
        peer: Some(peer),
        tls: Some(tls_port),
        http: None,
        https: Some(https),
    };
    (
        server::spawn(config, listeners).unwrap(),
        tls_addr,
        peer_addr,
        https_addr,
    )
}

/// A phone's configuration: trusts the herd's CA, keeps its sessions in
/// `store`.
fn phone(ca: &Ca, store: &Arc<ClientSessionMemoryCache>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.resumption = Resumption::store(store.clone());
    Arc::new(config)
}

/// `config`, keeping its sessions in `store` instead of its own.
fn sharing(
    config: &rustls::ClientConfig,
    store: &Arc<ClientSessionMemoryCache>,
) -> Arc<rustls::ClientConfig> {
    let mut config = config.clone();
    config.resumption = Resumption::store(store.clone());
    Arc::new(config)
}

/// Connects to `addr` as `config` (to server name Alpha), sends `line`,
/// and returns the first line of the answer (empty if the connection
/// ended without one) and how the handshake went (`None`: it failed).
fn ask(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    line: &str,
) -> (String, Option<HandshakeKind>) {
    let name = ServerName::try_from("Alpha").unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    let mut answer = String::new();
    if s.write_all(line.as_bytes()).is_ok() {
        let mut r = BufReader::new(&mut s);
        let _ = r.read_line(&mut answer);
    }
    let kind = if s.conn.is_handshaking() {
        None
    } else {
        s.conn.handshake_kind()
    };
    (answer, kind)
}

/// Waits until `what` of Alpha's snapshot is `want` (the counts are
/// updated by its loop, a moment after the client is answered).
fn wait_for<T: PartialEq + std::fmt::Debug>(
    stats: &ServerStats,
    what: impl Fn(&herd::stats::ServerSnapshot) -> T,
    want: T,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = what(&stats.snapshot());
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{got:?}, want {want:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

const IAMAT: &str = "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503\n";

#[test]
fn a_phone_resumes_and_falls_back_to_a_full_handshake_when_its_ticket_cannot_open() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("herd CA");
    write_herd_certs(dir.path(), &ca, &["Alpha"]);
    // The configurations the binary would use, with ticket keys the test
    // holds on to, to rotate them.
    let mut tls = load(dir.path(), "Alpha");
    let keys = TicketKeys::new().unwrap();
    let mut clients = (*tls.clients).clone();
    tickets::resume_with(&mut clients, keys.clone());
    tls.clients = Arc::new(clients);
    let (server, tls_addr, _, https_addr) = alpha(tls);
    let store = Arc::new(ClientSessionMemoryCache::new(8));
    let phone = phone(&ca, &store);

    let (answer, kind) = ask(tls_addr, &phone, IAMAT);
    assert!(answer.starts_with("AT Alpha "), "{answer:?}");
    assert_eq!(kind, Some(HandshakeKind::Full));
    // The second connection resumes from the ticket the first one got.
    let (answer, kind) = ask(tls_addr, &phone, IAMAT);
    assert!(answer.starts_with("AT Alpha "), "{answer:?}");
    assert_eq!(kind, Some(HandshakeKind::Resumed));
    wait_for(&server.stats, |s| s.handshakes[TLS], [1, 1]);
    // The https port serves phones with the same configuration, keys and
    // all: the phone's next ticket opens there too.
    let (answer, kind) = ask(
        https_addr,
        &phone,
        "GET /nowhere HTTP/1.1\r\nHost: alpha\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 "), "{answer:?}");
    assert_eq!(kind, Some(HandshakeKind::Resumed));
    wait_for(&server.stats, |s| s.handshakes[HTTPS], [0, 1]);

    // One rotation: the ticket's key is the previous one, it still opens.
    assert!(keys.rotate());
    let (_, kind) = ask(tls_addr, &phone, IAMAT);
    assert_eq!(kind, Some(HandshakeKind::Resumed));
    // Two: the key that made the phone's newest ticket is gone. The
    // server cannot open it and makes a full handshake; the phone is
    // served all the same.
    assert!(keys.rotate());
    assert!(keys.rotate());
    let (answer, kind) = ask(tls_addr, &phone, IAMAT);
    assert!(answer.starts_with("AT Alpha "), "{answer:?}");
    assert_eq!(kind, Some(HandshakeKind::Full));
    wait_for(&server.stats, |s| s.handshakes[TLS], [2, 2]);
    server.stop().unwrap();

    // Another server of the same name (Alpha restarted: new keys) gets the
    // phone's ticket, cannot open it, and makes a full handshake.
    let (restarted, tls_addr, _, _) = alpha(load(dir.path(), "Alpha"));
    let (answer, kind) = ask(tls_addr, &phone, IAMAT);
    assert!(answer.starts_with("AT Alpha "), "{answer:?}");
    assert_eq!(kind, Some(HandshakeKind::Full));
    let (_, kind) = ask(tls_addr, &phone, IAMAT);
    assert_eq!(kind, Some(HandshakeKind::Resumed));
    wait_for(&restarted.stats, |s| s.handshakes[TLS], [1, 1]);
    assert_eq!(restarted.stats.snapshot().refused, [0; 5]);
    restarted.stop().unwrap();
}

/// A phone's session store that counts the TLS 1.3 tickets it is given.
#[derive(Debug)]
struct CountingStore {
    inner: ClientSessionMemoryCache,
    tickets: AtomicUsize,
}

impl ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.inner.set_tls12_session(name, value)
    }
    fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.tickets.fetch_add(1, Ordering::SeqCst);
        self.inner.insert_tls13_ticket(name, value)
    }
    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}

#[test]
fn every_handshake_gives_the_phone_one_ticket_and_it_keeps_resuming() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("herd CA");
    write_herd_certs(dir.path(), &ca, &["Alpha"]);
    let (server, tls_addr, _, _) = alpha(load(dir.path(), "Alpha"));
    let store = Arc::new(CountingStore {
        inner: ClientSessionMemoryCache::new(8),
        tickets: AtomicUsize::new(0),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.resumption = Resumption::store(store.clone());
    let phone = Arc::new(config);

    // The ticket comes before the answer (right after the phone's
    // Finished), so it is stored once the answer is read.
    let (answer, kind) = ask(tls_addr, &phone, IAMAT);
    assert!(answer.starts_with("AT Alpha "), "{answer:?}");
    assert_eq!(kind, Some(HandshakeKind::Full));
    assert_eq!(
        store.tickets.load(Ordering::SeqCst),
        tickets::TICKETS_PER_HANDSHAKE
    );
    assert_eq!(tickets::TICKETS_PER_HANDSHAKE, 1);
    // Each resumption uses the one ticket and brings the next: a phone
    // that reconnects keeps resuming on one ticket at a time.
    for n in 2..=5 {
        let (answer, kind) = ask(tls_addr, &phone, IAMAT);
        assert!(answer.starts_with("AT Alpha "), "{answer:?}");
        assert_eq!(kind, Some(HandshakeKind::Resumed), "connection {n}");
        assert_eq!(store.tickets.load(Ordering::SeqCst), n);
    }
    wait_for(&server.stats, |s| s.handshakes[TLS], [1, 4]);
    server.stop().unwrap();
}

/// Data segments `sock` has received (TCP_INFO's `tcpi_data_segs_in`,
/// Linux 4.6 and later).
fn data_segments_in(sock: &TcpStream) -> u32 {
    use std::os::fd::AsRawFd;
    let mut info = [0u8; 232];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: `info` is writable for `len` bytes, which the kernel lowers
    // to what it wrote.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    assert!(len >= 160, "TCP_INFO without tcpi_data_segs_in");
    u32::from_ne_bytes(info[152..156].try_into().unwrap())
}

/// A phone that resumes and sends its Finished, an IAMAT and close_notify
/// in one write gets the session's next ticket, the answer and the
/// server's close_notify in one segment, and the connection's end: the
/// server writes once and closes in the same turn (docs/PERFORMANCE.md,
/// "Resumed churn against plaintext"). It wrote three times before.
#[test]
fn a_resumed_phone_gets_its_ticket_answer_and_close_in_one_segment() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("herd CA");
    write_herd_certs(dir.path(), &ca, &["Alpha"]);
    let (server, tls_addr, _, _) = alpha(load(dir.path(), "Alpha"));
    let store = Arc::new(ClientSessionMemoryCache::new(8));
    let phone = phone(&ca, &store);
    let (answer, kind) = ask(tls_addr, &phone, IAMAT);
    assert!(answer.starts_with("AT Alpha "), "{answer:?}");
    assert_eq!(kind, Some(HandshakeKind::Full));

    let name = ServerName::try_from("Alpha").unwrap();
    let mut conn = rustls::ClientConnection::new(phone, name).unwrap();
    conn.writer().write_all(IAMAT.as_bytes()).unwrap();
    let mut sock = TcpStream::connect(tls_addr).unwrap();
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    while conn.wants_write() {
        conn.write_tls(&mut sock).unwrap();
    }
    while conn.is_handshaking() {
        assert!(conn.read_tls(&mut sock).unwrap() > 0, "the server's flight");
        conn.process_new_packets().unwrap();
    }
    assert_eq!(conn.handshake_kind(), Some(HandshakeKind::Resumed));
    conn.send_close_notify();
    let mut flight = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut flight).unwrap();
    }
    let before = data_segments_in(&sock);
    sock.write_all(&flight).unwrap();
    let mut got = Vec::new();
    sock.read_to_end(&mut got).unwrap();
    assert_eq!(data_segments_in(&sock) - before, 1, "{} bytes", got.len());

    let mut records = &got[..];
    while !records.is_empty() {
        conn.read_tls(&mut records).unwrap();
        conn.process_new_packets().unwrap();
    }
    let mut plain = String::new();
    conn.reader().read_to_string(&mut plain).unwrap();
    assert!(
        plain.starts_with("AT Alpha ") && plain.ends_with('\n'),
        "{plain:?}"
    );
    assert_eq!(plain.lines().count(), 1);
    assert_eq!(conn.tls13_tickets_received(), 1);
    wait_for(&server.stats, |s| s.handshakes[TLS], [1, 1]);
    server.stop().unwrap();
}

#[test]
fn a_resumed_link_keeps_its_certificate_and_a_ticket_never_stands_in_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("herd CA");
    write_herd_certs(dir.path(), &ca, &["Alpha", "Beta", "Gamma"]);
    let (server, tls_addr, peer_addr, _) = alpha(load(dir.path(), "Alpha"));
    let beta = load(dir.path(), "Beta").dial;
    let gamma = load(dir.path(), "Gamma").dial;
    let herd_hello = |answer: &str| answer.starts_with("HERD ") || answer.starts_with("PING");

    // Beta's link, then Beta's link again: resumed, and still Beta's.
    let (answer, kind) = ask(peer_addr, &beta, "HERD Beta\n");
    assert!(herd_hello(&answer), "{answer:?}");
    assert_eq!(kind, Some(HandshakeKind::Full));
    let (answer, kind) = ask(peer_addr, &beta, "HERD Beta\n");
    assert!(herd_hello(&answer), "{answer:?}");
    assert_eq!(kind, Some(HandshakeKind::Resumed));
    // A resumed session saying it is another neighbour is refused, as a
    // full one would be: the certificate it carries names Beta.
    let (answer, kind) = ask(peer_addr, &beta, "HERD Gamma\n");
    assert_eq!(answer, "? HERD Gamma\n");
    assert_eq!(kind, Some(HandshakeKind::Resumed));
    wait_for(&server.stats, |s| s.handshakes[PEER], [1, 2]);

    // Gamma holding Beta's sessions does not get to use them: rustls offers
    // a session only with the credentials that made it (and the server
    // needs the session's secret, not just its ticket). Gamma makes a full
    // handshake as itself and cannot say it is Beta.
    let stolen = Arc::new(ClientSessionMemoryCache::new(8));
    let beta_keeping = sharing(&beta, &stolen);
    let (answer, kind) = ask(peer_addr, &beta_keeping, "HERD Beta\n");
    assert!(herd_hello(&answer), "{answer:?}");
    assert_eq!(kind, Some(HandshakeKind::Full));
    let gamma_with_betas = sharing(&gamma, &stolen);
    let (answer, kind) = ask(peer_addr, &gamma_with_betas, "HERD Beta\n");
    assert_eq!(kind, Some(HandshakeKind::Full));
    assert_eq!(answer, "? HERD Beta\n");

    // A phone's ticket from the tls port (same server name, no client
    // certificate) offered on the peer port opens nothing there (each port
    // has its own keys): a full handshake, which asks for a certificate
    // the phone has not got, and the connection is refused.
    let store = Arc::new(ClientSessionMemoryCache::new(8));
    let phone = phone(&ca, &store);
    let (answer, kind) = ask(tls_addr, &phone, IAMAT);
    assert!(answer.starts_with("AT Alpha "), "{answer:?}");
    assert_eq!(kind, Some(HandshakeKind::Full));
    let (answer, _) = ask(peer_addr, &phone, "HERD Beta\n");
    assert!(!herd_hello(&answer), "{answer:?}");
    // Refused and counted, as are the two HERDs refused above.
    wait_for(&server.stats, |s| s.refused[PEER], 3);
    wait_for(&server.stats, |s| s.handshakes[PEER], [3, 2]);
    server.stop().unwrap();
}

#[test]
fn a_reload_keeps_the_phones_ticket_keys_and_renews_the_links() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("herd CA");
    write_herd_certs(dir.path(), &ca, &["Alpha"]);
    let old = load(dir.path(), "Alpha");
    let reloaded = load(dir.path(), "Alpha").after_reload(&old);
    assert!(Arc::ptr_eq(
        &reloaded.clients.ticketer,
        &old.clients.ticketer
    ));
    assert!(!Arc::ptr_eq(&reloaded.peer.ticketer, &old.peer.ticketer));
    // A ticket of the old peer keys does not open under the new ones.
    let ticket = old.peer.ticketer.encrypt(b"a link's session").unwrap();
    assert_eq!(reloaded.peer.ticketer.decrypt(&ticket), None);
    let ticket = old.clients.ticketer.encrypt(b"a phone's session").unwrap();
    assert!(reloaded.clients.ticketer.decrypt(&ticket).is_some());
}

//! TLS end to end (docs/PROTOCOL.md §6, §12), against the built binary:
//! herd links over mutual TLS 1.3 on `peer` ports (flooding, catch-up),
//! what a peer port refuses (plaintext, a certificate from another CA, a
//! name that is not a neighbour) and what a dialler refuses (a neighbour
//! whose certificate names someone else), herd traffic refused on client
//! ports, TLS clients on a `tls` port served byte for byte like plaintext
//! ones, `--handshake-timeout`, and certificates that stop the start.
//!
//! Every certificate is made in the test (`support::certs`); the herd's
//! files are laid out by `support::tls_herd`.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use herd::config::PlacesApi;
use rustls::ProtocolVersion;
use support::certs::Ca;
use support::herd::{timestamp, wait_for, PATIENCE, REFERENCE_LINKS, REFERENCE_NAMES};
use support::places_server::{Behaviour, PlacesServer};
use support::procs::{HerdProc, HERD};
use support::tls_client::{until_closed, Closed, TlsClient};
use support::tls_herd::{is_refusal, TlsHerd};
use support::tls_peer::{server_config, FakePeer};

/// An update a neighbour might try to slip in.
const SPOOF: &str = "AT Goloman +0.000000001 spoofed +1+1 1600000000";

/// True once `p` says that `server`'s link to `neighbour` is up.
fn linked(p: &HerdProc, server: &str, neighbour: &str) -> bool {
    p.link_up(server, neighbour) == Some(true)
}

/// Asserts that a refused connection got no answer: no line of the
/// protocol, at most a TLS alert record (content type 21) before the close.
fn assert_unanswered(closed: &Closed, what: &str) {
    let b = &closed.bytes;
    assert!(
        b.is_empty() || (b[0] == 0x15 && b.len() <= 7),
        "{what}: answered {:?} before the close",
        closed.text()
    );
}

/// Reads what a server sends on a connection it should refuse, until it
/// closes it or answers `? ` + the `AT` line sent last; asserts that no
/// line said the link was up (`PING`) and returns the lines read. (A TLS
/// alert or a reset is a close.)
fn refused_link(c: &mut TlsClient, what: &str) -> Vec<String> {
    use std::io::BufRead;
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        match c.reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line).trim_end().to_string();
                assert_ne!(text, "PING", "{what}: the link was accepted");
                assert!(!text.starts_with("AT "), "{what}: positions sent: {text}");
                let done = text.starts_with("? AT ");
                lines.push(text);
                if done {
                    break;
                }
            }
            Err(e) => {
                assert!(
                    !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                    "{what}: neither closed nor refused; got {lines:?}"
                );
                break;
            }
        }
    }
    lines
}

#[test]
fn the_test_certificates_and_tls_client_speak_mutual_tls_with_rustls() {
    // The support itself, against a rustls server of the test's own: a
    // herd test that sees a refusal must not be seeing a broken client.
    let ca = Ca::new("herd test CA");
    let other = Ca::new("another CA");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fake = FakePeer::start(
        listener,
        server_config(&ca.leaf(&["Hands"]), Some(ca.roots())),
    );

    let mut c = TlsClient::connect(
        fake.addr(),
        "Hands",
        ca.roots(),
        Some(&ca.leaf(&["Goloman"])),
    )
    .expect("handshake");
    assert_eq!(c.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(c.ask("HERD Goloman"), "PING");
    drop(c);

    // A client certificate from another CA: the server refuses it, which a
    // TLS 1.3 client learns on its first read.
    let refused = TlsClient::connect(
        fake.addr(),
        "Hands",
        ca.roots(),
        Some(&other.leaf(&["Goloman"])),
    )
    .map(|mut c| {
        let _ = c.try_send(b"HERD Goloman\n");
        c.until_closed()
    });
    if let Ok(closed) = &refused {
        assert!(closed.bytes.is_empty(), "{}", closed.text());
    }
    // The wrong name: this side refuses the server.
    let err = TlsClient::connect(fake.addr(), "Mallory", ca.roots(), Some(&ca.leaf(&["A"])))
        .err()
        .expect("a certificate for Hands is not one for Mallory");
    assert!(err.to_string().contains("not valid for name"), "{err}");

    let seen = wait_for("the three connections seen", || {
        Some(fake.seen()).filter(|s| s.len() == 3)
    });
    let good: Vec<_> = seen.iter().filter(|s| s.handshake.is_ok()).collect();
    assert!(!good.is_empty(), "{seen:?}");
    assert!(good
        .iter()
        .any(|s| s.plaintext == b"HERD Goloman\n" && s.client_cert));
    assert_eq!(
        seen.iter().filter(|s| s.handshake.is_err()).count(),
        2,
        "{seen:?}"
    );
}

#[test]
fn five_servers_link_over_mutual_tls_flood_and_catch_up() {
    let h = TlsHerd::new(REFERENCE_NAMES, REFERENCE_LINKS, "");
    let four = ["Goloman", "Hands", "Holiday", "Wilkes"];
    let p4 = h.start("four", &four, &[]);
    let welsh = h.start("welsh", &["Welsh"], &[]);
    let all_up = |p4: &HerdProc, welsh: &HerdProc| {
        let (m4, mw) = (p4.scrape(), welsh.scrape());
        REFERENCE_LINKS.iter().all(|&(a, b)| {
            [(a, b), (b, a)].iter().all(|&(s, n)| {
                let m = if s == "Welsh" { &mw } else { &m4 };
                let key = format!("herd_link_up{{server=\"{s}\",neighbour=\"{n}\"}}");
                m.get(&key) == Some(&1.0)
            })
        })
    };
    wait_for("every link up, both ways", || {
        all_up(&p4, &welsh).then_some(())
    });

    // Hands to Welsh is three hops, each a TLS link.
    let at = h.client("Hands").ask(&format!(
        "IAMAT far.away +34.068930-118.445127 {}",
        timestamp()
    ));
    assert!(at.starts_with("AT Hands "), "{at}");
    let mut at_welsh = h.tls_client("Welsh");
    wait_for("Welsh to learn Hands's update", || {
        (at_welsh.known("far.away").as_deref() == Some(at.as_str())).then_some(())
    });
    let back = at_welsh.ask(&format!("IAMAT from.welsh +1+1 {}", timestamp()));
    assert!(back.starts_with("AT Welsh "), "{back}");
    let mut at_hands = h.client("Hands");
    wait_for("Hands to learn Welsh's update", || {
        (at_hands.known("from.welsh").as_deref() == Some(back.as_str())).then_some(())
    });

    // Welsh dies; the herd goes on without it and it catches up on return.
    drop(at_welsh);
    welsh.signal(libc::SIGKILL);
    p4.wait_metrics("Holiday to see Welsh down", |m| {
        m.get("herd_link_up{server=\"Holiday\",neighbour=\"Welsh\"}") == Some(&0.0)
    });
    let missed: Vec<String> = (0..3)
        .map(|i| {
            h.client("Hands")
                .ask(&format!("IAMAT missed{i} +2+2 {}", timestamp()))
        })
        .collect();
    let over_tls = h
        .tls_client("Goloman")
        .ask(&format!("IAMAT missed.tls +3+3 {}", timestamp()));
    let mut at_holiday = h.client("Holiday");
    for at in missed.iter().chain([&over_tls]) {
        let id = at.split(' ').nth(3).unwrap();
        wait_for("Holiday to have the update", || {
            (at_holiday.known(id).as_deref() == Some(at.as_str())).then_some(())
        });
    }
    drop(welsh);
    let welsh = h.start("welsh", &["Welsh"], &[]);
    let mut at_welsh = h.tls_client("Welsh");
    for at in missed.iter().chain([&over_tls, &at]) {
        let id = at.split(' ').nth(3).unwrap();
        wait_for("Welsh to catch up", || {
            (at_welsh.known(id).as_deref() == Some(at.as_str())).then_some(())
        });
    }
    wait_for("every link up again", || all_up(&p4, &welsh).then_some(()));
}

#[test]
fn a_plaintext_connection_to_a_peer_port_is_closed_unanswered_and_logged() {
    let h = TlsHerd::new(&["Goloman", "Hands"], &[("Goloman", "Hands")], "");
    let p = h.start("run", &["Goloman", "Hands"], &[]);
    wait_for("the TLS link up both ways", || {
        (linked(&p, "Goloman", "Hands") && linked(&p, "Hands", "Goloman")).then_some(())
    });
    let cases = [
        format!("HERD Goloman\n{SPOOF}\n"),
        format!("{SPOOF}\n"),
        "PING\n".to_string(),
    ];
    for hello in &cases {
        let mut s = TcpStream::connect(h.peer("Hands")).unwrap();
        s.set_read_timeout(Some(PATIENCE)).unwrap();
        // The server may close before it has read it all: a send error is fine.
        let _ = s.write_all(hello.as_bytes());
        let closed = until_closed(&mut s);
        assert_unanswered(&closed, hello);
    }
    wait_for("a refusal per connection in Hands's log", || {
        (h.count_log("run", "Hands", is_refusal) >= cases.len()).then_some(())
    });
    // Nothing was taken from them, and the real link still floods.
    let mut at_hands = h.client("Hands");
    assert_eq!(at_hands.known("spoofed"), None);
    let at = h
        .client("Goloman")
        .ask(&format!("IAMAT after.plain +1+1 {}", timestamp()));
    wait_for("the update over the TLS link", || {
        (at_hands.known("after.plain").as_deref() == Some(at.as_str())).then_some(())
    });
}

#[test]
fn a_peer_port_refuses_a_certificate_from_another_ca_and_a_dialler_without_one() {
    let h = TlsHerd::new(&["Goloman", "Hands"], &[("Goloman", "Hands")], "");
    let p = h.start("run", &["Goloman", "Hands"], &[]);
    wait_for("the TLS link up both ways", || {
        (linked(&p, "Goloman", "Hands") && linked(&p, "Hands", "Goloman")).then_some(())
    });
    let other = Ca::new("another CA");
    let impostor = other.leaf(&["Goloman"]);
    let hello = format!("HERD Goloman\n{SPOOF}\n");
    for (what, identity) in [
        ("a certificate from another CA", Some(&impostor)),
        ("no certificate", None),
    ] {
        // The handshake fails; with TLS 1.3 this side may only learn it
        // on its first read.
        match TlsClient::connect(h.peer("Hands"), "Hands", h.ca.roots(), identity) {
            Err(_) => {}
            Ok(mut c) => {
                let _ = c.try_send(hello.as_bytes());
                let closed = c.until_closed();
                assert!(
                    closed.bytes.is_empty(),
                    "{what}: answered {:?}",
                    closed.text()
                );
            }
        }
    }
    wait_for("both refusals in Hands's log", || {
        (h.count_log("run", "Hands", is_refusal) >= 2).then_some(())
    });
    assert_eq!(h.client("Hands").known("spoofed"), None);
    assert!(linked(&p, "Hands", "Goloman"), "the real link is untouched");
}

#[test]
fn a_peer_port_takes_a_neighbour_by_its_certificate_and_refuses_any_other_name() {
    // Hands runs alone; the test plays its neighbours Goloman and Holiday.
    let names = ["Goloman", "Hands", "Holiday"];
    let h = TlsHerd::new(&names, &[("Goloman", "Hands"), ("Hands", "Holiday")], "");
    let _p = h.start("run", &["Hands"], &[]);
    let goloman = h.ca.leaf(&["Goloman"]);

    // A certificate naming Goloman, and HERD Goloman: a link.
    let mut link = TlsClient::connect(h.peer("Hands"), "Hands", h.ca.roots(), Some(&goloman))
        .expect("handshake as Goloman");
    assert_eq!(link.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    link.send(b"HERD Goloman\n");
    assert_eq!(link.text_skipping(|l| !l.starts_with("AT ")), "PING");
    // A peer port is for herd traffic only.
    // (Hands knows nothing yet: no catch-up or flood line comes between.)
    let not_here = |l: &str| l != "PING";
    for line in ["IAMAT kiwi +1+1 1520023934.5", "WHATSAT kiwi 10 5"] {
        link.send(format!("{line}\n").as_bytes());
        assert_eq!(link.text_skipping(not_here), format!("? {line}"));
    }
    let update = "AT Goloman +0.000000001 via.link +1+1 1600000000";
    link.send(format!("{update}\n").as_bytes());
    let mut at_hands = h.client("Hands");
    wait_for("the neighbour's update stored", || {
        (at_hands.known("via.link").as_deref() == Some(update)).then_some(())
    });
    drop(link);

    let before = h.count_log("run", "Hands", is_refusal);
    // A certificate for a name that is not a neighbour.
    let mallory = h.ca.leaf(&["Mallory"]);
    // A neighbour's certificate, but the HERD line names another neighbour.
    let cases = [
        ("a certificate for Mallory", &mallory, "Mallory"),
        (
            "Goloman's certificate saying HERD Holiday",
            &goloman,
            "Holiday",
        ),
    ];
    for (what, identity, name) in cases {
        match TlsClient::connect(h.peer("Hands"), "Hands", h.ca.roots(), Some(identity)) {
            Err(_) => {}
            Ok(mut c) => {
                let _ = c.try_send(format!("HERD {name}\n{SPOOF}\n").as_bytes());
                let got = refused_link(&mut c, what);
                // Closed, or the AT line answered: either way it was read.
                assert_eq!(
                    at_hands.known("spoofed"),
                    None,
                    "{what}: an update taken from a refused connection (it got {got:?})"
                );
            }
        }
    }
    wait_for("both refusals in Hands's log", || {
        (h.count_log("run", "Hands", is_refusal) >= before + 2).then_some(())
    });
}

#[test]
fn a_dialler_refuses_a_neighbour_whose_certificate_names_someone_else() {
    let mut h = TlsHerd::new(&["Goloman", "Hands"], &[("Goloman", "Hands")], "");
    // Mallory listens on Hands's peer port, with a certificate from the
    // herd's own CA, asking for a client certificate as a peer port does.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    h.set_peer("Hands", listener.local_addr().unwrap());
    let mallory = FakePeer::start(
        listener,
        server_config(&h.ca.leaf(&["Mallory"]), Some(h.ca.roots())),
    );
    let p = h.start("run", &["Goloman"], &[]);
    h.client("Goloman")
        .ask(&format!("IAMAT private +1+1 {}", timestamp()));
    // Goloman dials, is refused... and dials again (backoff ≤ 2 s).
    let seen = wait_for("two dials seen by the fake", || {
        Some(mallory.seen()).filter(|s| s.len() >= 2)
    });
    for s in &seen {
        let text = String::from_utf8_lossy(&s.plaintext);
        assert!(
            !text.contains("HERD") && !text.contains("AT "),
            "sent to Mallory: {text:?} ({seen:?})"
        );
    }
    h.wait_log("run", "Goloman", "the refusal", |l| {
        let l = l.replace("Connection refused", "");
        l.contains("refused") || l.contains("not valid for name") || l.contains("NotValidForName")
    });
    assert!(
        !linked(&p, "Goloman", "Hands"),
        "a link to Mallory is not up"
    );
    // Refused again and again: redialled with a growing backoff (a TCP
    // connect that TLS then refuses does not reset it), logged once.
    wait_for("four dials", || (mallory.accepted() >= 4).then_some(()));
    let (t, k) = (Instant::now(), mallory.accepted());
    wait_for("two more dials", || {
        (mallory.accepted() >= k + 2).then_some(())
    });
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "two redials after four refusals took only {:?}: no backoff",
        t.elapsed()
    );
    assert_eq!(
        h.count_log("run", "Goloman", is_refusal),
        1,
        "one refusal line per outage"
    );
}

#[test]
fn client_ports_of_a_server_with_a_peer_port_refuse_herd_traffic() {
    let h = TlsHerd::new(&["Goloman", "Hands"], &[("Goloman", "Hands")], "");
    let p = h.start("run", &["Goloman", "Hands"], &[]);
    wait_for("the TLS link up both ways", || {
        (linked(&p, "Goloman", "Hands") && linked(&p, "Hands", "Goloman")).then_some(())
    });
    let refused = [
        "HERD Hands",
        SPOOF,
        "AUTH 00112233445566778899aabbccddeeff",
        "PING",
    ];
    let mut plain = h.client("Goloman");
    let mut tls = h.tls_client("Goloman");
    for line in refused {
        assert_eq!(plain.ask(line), format!("? {line}"), "plaintext port");
        assert_eq!(tls.ask(line), format!("? {line}"), "tls port");
    }
    // Client commands work as usual on both, and flood over the link.
    let a = plain.ask(&format!("IAMAT by.plain +1+1 {}", timestamp()));
    let b = tls.ask(&format!("IAMAT by.tls +2+2 {}", timestamp()));
    assert!(
        a.starts_with("AT Goloman ") && b.starts_with("AT Goloman "),
        "{a} {b}"
    );
    let mut at_hands = h.tls_client("Hands");
    for (id, at) in [("by.plain", &a), ("by.tls", &b)] {
        wait_for("the update at Hands", || {
            (at_hands.known(id).as_deref() == Some(at.as_str())).then_some(())
        });
    }
    assert_eq!(plain.known("spoofed"), None);
}

/// The requests both ports get, pipelined in one write, and what they are:
/// an IAMAT older than the stored one (answered, not stored), WHATSATs with Places answers,
/// invalid lines of every kind, a blank line (no reply), CRLF, a line over
/// the limit, non-UTF-8 bytes, and a last WHATSAT as a marker.
fn script() -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1520023900.5\n");
    s.extend_from_slice(b"WHATSAT kiwi.cs.ucla.edu 10 5\n");
    s.extend_from_slice(b"WHATSAT kiwi.cs.ucla.edu 50 20\n");
    s.extend_from_slice(b"WHATSAT nobody.example 10 5\n");
    s.extend_from_slice(b"hello world\n");
    s.extend_from_slice(b"IAMAT bad +91+0 1\n");
    s.extend_from_slice(b" \t \r\n");
    s.extend_from_slice(b"WHATSAT kiwi.cs.ucla.edu 1.5 1\r\n");
    s.extend_from_slice(format!("{}\n", "x".repeat(9000)).as_bytes());
    s.extend_from_slice(format!("{SPOOF}\n").as_bytes());
    s.extend_from_slice(b"\xff\xfe odd bytes\n");
    s.extend_from_slice(b"WHATSAT the.end 1 1\n");
    s
}

/// Reads replies through the marker's `? WHATSAT the.end 1 1`, as bytes.
fn replies(mut line: impl FnMut() -> Vec<u8>) -> Vec<u8> {
    let mut all = Vec::new();
    loop {
        let l = line();
        all.extend_from_slice(&l);
        all.push(b'\n');
        if l == b"? WHATSAT the.end 1 1" {
            return all;
        }
    }
}

/// Checks the first line is the AT reply to the script's IAMAT (whose
/// time difference is the server's clock's) and returns the rest.
fn after_iamat_reply(replies: &[u8]) -> &[u8] {
    let end = replies.iter().position(|&b| b == b'\n').unwrap();
    let at = String::from_utf8(replies[..end].to_vec()).unwrap();
    let f: Vec<&str> = at.split(' ').collect();
    assert_eq!(f.len(), 6, "{at}");
    assert_eq!(&f[..2], ["AT", "Goloman"], "{at}");
    let diff = f[2];
    let (int, frac) = diff[1..].split_once('.').expect("a fraction");
    assert!(
        (diff.starts_with('+') || diff.starts_with('-'))
            && !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.len() == 9
            && frac.bytes().all(|b| b.is_ascii_digit()),
        "{at}"
    );
    assert_eq!(
        &f[3..],
        ["kiwi.cs.ucla.edu", "+34.068930-118.445127", "1520023900.5"]
    );
    &replies[end + 1..]
}

#[test]
fn tls_clients_get_the_same_bytes_as_plaintext_clients_whatsat_included() {
    let places = PlacesServer::start(Behaviour::default());
    let h = TlsHerd::new(
        &["Goloman", "Hands"],
        &[("Goloman", "Hands")],
        &places.conf_lines(PlacesApi::Legacy),
    );
    let mut cmd = Command::new(HERD);
    cmd.env("HERD_TEST_PLACES_KEY", "test-key");
    let _p = h.start_with(cmd, "run", &["Goloman", "Hands"], &[]);
    let stored = h
        .client("Goloman")
        .ask("IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997");

    let mut plain = h.client("Goloman");
    plain.send(&script());
    let by_plain = replies(|| plain.line());
    let mut tls = h.tls_client("Goloman");
    tls.send(&script());
    let by_tls = replies(|| tls.line());

    let (by_plain, by_tls) = (after_iamat_reply(&by_plain), after_iamat_reply(&by_tls));
    let text = String::from_utf8_lossy(by_plain);
    assert!(text.starts_with(&format!("{stored}\n{{\n")), "{text}");
    assert!(
        text.contains("\"status\" : \"OK\""),
        "Places answered: {text}"
    );
    assert!(text.contains("? WHATSAT nobody.example 10 5\n? hello world\n? IAMAT bad +91+0 1\n"));
    assert!(
        text.contains(&format!("\n? {}", "x".repeat(1024))),
        "{text}"
    );
    let odd: &[u8] = b"\n? \xff\xfe odd bytes\n";
    assert!(by_plain.windows(odd.len()).any(|w| w == odd), "{text}");
    assert!(
        by_plain == by_tls,
        "replies differ:\nplaintext: {text}\ntls:       {}",
        String::from_utf8_lossy(by_tls)
    );
    assert!(places.requests().len() >= 2, "both ports asked Places");

    // A last request ended by EOF (close_notify over TLS) is answered too.
    let mut plain = h.client("Goloman");
    plain.send(b"WHATSAT kiwi.cs.ucla.edu 10 2");
    let mut tls = h.tls_client("Goloman");
    tls.send(b"WHATSAT kiwi.cs.ucla.edu 10 2");
    let (by_plain, by_tls) = (plain.finish(), tls.finish());
    assert!(by_plain.starts_with(stored.as_bytes()), "{by_plain:?}");
    assert_eq!(
        String::from_utf8_lossy(&by_plain),
        String::from_utf8_lossy(&by_tls)
    );
}

#[test]
fn a_handshake_that_never_completes_is_closed_at_its_deadline_while_others_are_served() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    const DEADLINE: Duration = Duration::from_secs(10);
    let h = TlsHerd::new(&["Goloman", "Hands"], &[("Goloman", "Hands")], "");
    let p = h.start("run", &["Goloman", "Hands"], &["--handshake-timeout", "1s"]);
    wait_for("the TLS link up both ways", || {
        (linked(&p, "Goloman", "Hands") && linked(&p, "Hands", "Goloman")).then_some(())
    });
    // A TLS client that finished its handshake before, and stays idle
    // through the stalled ones' deadline.
    let mut early = h.tls_client("Goloman");

    // Half a ClientHello: a record header announcing 200 bytes, then 6 of them.
    let half_hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03,
    ];
    let cases: [(&str, _, &[u8]); 5] = [
        ("tls port, nothing", h.tls("Goloman"), b""),
        ("tls port, half a ClientHello", h.tls("Goloman"), half_hello),
        ("tls port, two bytes", h.tls("Goloman"), b"\x16\x03"),
        ("peer port, nothing", h.peer("Goloman"), b""),
        (
            "peer port, half a ClientHello",
            h.peer("Goloman"),
            half_hello,
        ),
    ];
    // Each watched by a thread of its own, so a close is seen when it happens.
    let stalled: Vec<_> = cases
        .iter()
        .map(|&(what, addr, bytes)| {
            let mut s = TcpStream::connect(addr).unwrap();
            let since = Instant::now();
            s.set_read_timeout(Some(DEADLINE)).unwrap();
            s.write_all(bytes).unwrap();
            let watch = std::thread::spawn(move || until_closed(&mut s));
            (what, since, watch)
        })
        .collect();

    // Meanwhile everyone else is served: a stalled handshake holds up nothing.
    let at = h
        .client("Goloman")
        .ask(&format!("IAMAT while.stalled +1+1 {}", timestamp()));
    assert!(at.starts_with("AT Goloman "), "{at}");
    let mut tls = h.tls_client("Goloman");
    assert_eq!(tls.known("while.stalled").as_deref(), Some(at.as_str()));
    let served = Instant::now();
    let mut at_hands = h.tls_client("Hands");
    wait_for("the update over the link", || {
        (at_hands.known("while.stalled").as_deref() == Some(at.as_str())).then_some(())
    });

    for (what, since, watch) in stalled {
        // A read that outlives DEADLINE panics in the thread: still open.
        let closed = watch
            .join()
            .unwrap_or_else(|_| panic!("{what}: still open after {DEADLINE:?}"));
        let took = closed.at - since;
        assert!(
            took >= TIMEOUT - Duration::from_millis(100),
            "{what}: closed after {took:?}, before the deadline"
        );
        assert!(took <= DEADLINE, "{what}: closed after {took:?}");
        assert!(
            served < closed.at,
            "{what}: the other clients were served only after it was closed"
        );
        assert!(
            !closed.bytes.contains(&b'\n'),
            "{what}: got {:?}",
            closed.text()
        );
    }
    // A finished handshake has no deadline: the early client is still served.
    let late = early.ask(&format!("IAMAT after.stalled +2+2 {}", timestamp()));
    assert!(late.starts_with("AT Goloman "), "{late}");
    assert!(linked(&p, "Goloman", "Hands"));
}

#[test]
fn help_lists_the_handshake_timeout() {
    let out = Command::new(HERD).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--handshake-timeout"), "{text}");
}

#[test]
fn a_certificate_that_does_not_fit_its_server_stops_the_start_with_exit_2_and_file_line() {
    // Lines: 1 server Goloman, 2 server Hands, 3 link, 4 tls_cert, 5 tls_key, 6 tls_ca.
    let fits = TlsHerd::new(&["Goloman", "Hands"], &[("Goloman", "Hands")], "");
    let check = |h: &TlsHerd| {
        Command::new(HERD)
            .current_dir(h.path())
            .args(["--check-config", "--config"])
            .arg(&h.conf)
            .output()
            .unwrap()
    };
    let out = check(&fits);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let other = Ca::new("another CA");
    let cases = [
        "a key that is not the certificate's",
        "a certificate that does not name the server",
        "a certificate from another CA",
    ];
    for (i, what) in cases.into_iter().enumerate() {
        let h = TlsHerd::new(&["Goloman", "Hands"], &[("Goloman", "Hands")], "");
        let certs = h.path().join("certs");
        match i {
            0 => {
                let stranger = h.ca.leaf(&["Goloman"]);
                std::fs::write(certs.join("Goloman.key"), &stranger.key_pem).unwrap();
            }
            1 => {
                h.ca.leaf(&["Somebody"]).write(&certs, "Goloman");
            }
            _ => {
                other.leaf(&["Goloman"]).write(&certs, "Goloman");
            }
        }
        let conf = h.conf.display().to_string();
        let blames = |err: &str| {
            ["1", "4", "5", "6"]
                .iter()
                .any(|n| err.contains(&format!("{conf}:{n}:")))
        };
        let out = check(&h);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--check-config, {what}: {err}");
        assert!(
            blames(&err) && err.contains("Goloman"),
            "--check-config, {what}: {err}"
        );

        let out = Command::new(HERD)
            .current_dir(h.path())
            .args(["Goloman", "--config"])
            .arg(&h.conf)
            .arg("--log-dir")
            .arg(h.path().join("logs"))
            .arg("--state-dir")
            .arg(h.path().join("state"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "start, {what}: {err}");
        assert!(
            blames(&err) && err.contains("Goloman"),
            "start, {what}: {err}"
        );
        assert!(!err.contains("herd: ready"), "{err}");
        let port = h.member("Goloman").client;
        assert!(
            std::net::TcpListener::bind(port).is_ok(),
            "{what}: nothing listens"
        );
    }
}

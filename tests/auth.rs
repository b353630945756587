//! Authenticated herd links (docs/PROTOCOL.md §4, `secret_env`): a herd with a shared
//! secret links and floods; nothing without the secret may send AT lines,
//! and a server never sends positions to an impostor.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;

use herd::auth::{self, Secret};
use herd::links::Neighbour;
use support::herd::{timestamp, wait_for, Client, TestHerd};

fn secured(names: &[&str], links: &[(&str, &str)]) -> TestHerd {
    TestHerd::start_with(names, links, |c| {
        c.secret = Some(Secret::new(b"correct horse battery staple"))
    })
}

/// Server A alone, with a neighbour B that is down (nothing listens at its
/// address): the test plays B's side of the handshake, as only a neighbour
/// of the config may link.
fn secured_alone() -> TestHerd {
    TestHerd::start_with(&["A"], &[], |c| {
        c.secret = Some(Secret::new(b"correct horse battery staple"));
        c.neighbours
            .push(Neighbour::plain("B", "127.0.0.1:1".parse().unwrap()));
    })
}

#[test]
fn a_herd_with_a_secret_links_and_floods() {
    let h = secured(&["A", "B", "C"], &[("A", "B"), ("B", "C")]);
    let at = h
        .client("A")
        .ask(&format!("IAMAT sec +1+1 {}", timestamp()));
    let mut c = h.client("C");
    wait_for("C to learn the update through B", || {
        (c.known("sec").as_deref() == Some(at.as_str())).then_some(())
    });
}

#[test]
fn at_lines_from_unauthenticated_connections_are_refused() {
    let h = secured_alone();
    let mut c = h.client("A");
    let spoof = "AT A +0.000000001 victim +1+1 9999999999";
    assert_eq!(c.ask(spoof), format!("? {spoof}"));
    // Claiming to be a herd server without the handshake does not help.
    assert_eq!(c.ask("HERD B"), "? HERD B");
    assert_eq!(c.ask(spoof), format!("? {spoof}"));
    assert_eq!(c.known("victim"), None);
}

#[test]
fn a_wrong_proof_is_refused_and_the_connection_closed() {
    let h = secured_alone();
    let mut c = h.client("A");
    let na = auth::nonce();
    let challenge = c.ask(&format!("HERD B {na}"));
    let f: Vec<&str> = challenge.split(' ').collect();
    assert_eq!((f.len(), f[0]), (3, "CHALLENGE"), "{challenge}");
    // A proof made with another secret.
    let wrong = Secret::new(b"guess").dial_mac(b"B", na.as_bytes(), f[1].as_bytes());
    let spoof = "AT A +0.000000001 victim +1+1 9999999999";
    c.send(format!("AUTH {wrong}\n{spoof}\n").as_bytes());
    assert_eq!(c.text(), format!("? AUTH {wrong}"));
    // Nothing more is read from it: the server closes it.
    let mut rest = Vec::new();
    c.reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert_eq!(h.client("A").known("victim"), None);
}

#[test]
fn the_right_proof_lets_a_peer_send_updates() {
    let h = secured_alone();
    let secret = Secret::new(b"correct horse battery staple");
    let mut c = h.client("A");
    let na = auth::nonce();
    let challenge = c.ask(&format!("HERD B {na}"));
    let f: Vec<&str> = challenge.split(' ').collect();
    // The server proved itself too.
    assert!(secret.verify_accept(b"B", na.as_bytes(), f[1].as_bytes(), f[2].as_bytes()));
    let proof = secret.dial_mac(b"B", na.as_bytes(), f[1].as_bytes());
    c.send(format!("AUTH {proof}\nAT B +0.000000001 friend +1+1 1600000000\n").as_bytes());
    let mut q = h.client("A");
    wait_for("the update to be stored", || {
        (q.known("friend").as_deref() == Some("AT B +0.000000001 friend +1+1 1600000000"))
            .then_some(())
    });
}

#[test]
fn a_server_sends_nothing_to_an_impostor_that_cannot_prove_the_secret() {
    // The impostor listens where A's neighbour B should be.
    let impostor = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = impostor.local_addr().unwrap();
    let h = TestHerd::start_with(&["A"], &[], |c| {
        c.secret = Some(Secret::new(b"correct horse battery staple"));
        c.neighbours.push(Neighbour::plain("B", addr));
    });
    h.client("A")
        .ask(&format!("IAMAT private +1+1 {}", timestamp()));
    let (stream, _) = impostor.accept().unwrap();
    stream
        .set_read_timeout(Some(support::herd::PATIENCE))
        .unwrap();
    let mut r = BufReader::new(stream);
    let mut hello = String::new();
    r.read_line(&mut hello).unwrap();
    let f: Vec<&str> = hello.split_whitespace().collect();
    assert_eq!((f.len(), f[0], f[1]), (3, "HERD", "A"), "{hello}");
    assert!(auth::is_nonce(f[2].as_bytes()));
    let nb = auth::nonce();
    let fake = Secret::new(b"guess").accept_mac(b"A", f[2].as_bytes(), nb.as_bytes());
    r.get_mut()
        .write_all(format!("CHALLENGE {nb} {fake}\n").as_bytes())
        .unwrap();
    // A hangs up without sending a single position.
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "sent to an impostor: {:?}",
        String::from_utf8_lossy(&rest)
    );
    let _ = Client::connect(h.addr("A"));
}

//! WATCH and UNWATCH (docs/PROTOCOL.md §15), black-box: in-process herds
//! and the real binary, real sockets.
//!
//! A push that must *not* come is shown by a sentinel: the watcher then
//! watches a client it can be sure of, and the next line it reads must be
//! that client's — a push owed earlier would have been written before it.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Instant;

use support::herd::{timestamp, Client, TestHerd, PATIENCE, REFERENCE_LINKS, REFERENCE_NAMES};
use support::procs::{free_port, write, HerdProc, HERD};

/// The CLIENT (4th) field of an AT line.
fn client_of(line: &str) -> &str {
    line.split(' ').nth(3).unwrap_or_default()
}

/// The TIME (6th) field of an AT line.
fn time_of(line: &str) -> &str {
    line.split(' ').nth(5).unwrap_or_default()
}

#[test]
fn a_push_crosses_three_hops() {
    let herd = TestHerd::start(REFERENCE_NAMES, REFERENCE_LINKS);
    // Welsh is three hops from Hands (Hands - Goloman or Wilkes - Holiday - Welsh).
    let mut watcher = herd.client("Welsh");
    watcher.send(b"WATCH kiwi.cs.ucla.edu\n");
    let mut sync = herd.client("Welsh");
    // The WATCH is in before the update: a line after it on its own connection...
    watcher.send(b"WATCH sync.example\n");
    sync.ask(&format!("IAMAT sync.example +1+1 {}", timestamp()));
    assert_eq!(client_of(&watcher.text()), "sync.example");
    let start = Instant::now();
    let at = herd.client("Hands").ask(&format!(
        "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 {}",
        timestamp()
    ));
    let pushed = watcher.text();
    assert_eq!(pushed, at, "the push is the AT line Hands made");
    eprintln!("three hops: pushed in {:?}", start.elapsed());
}

#[test]
fn watch_sends_the_known_positions_at_once_then_every_newer_one() {
    let herd = TestHerd::start(&["Goloman"], &[]);
    let mut poster = herd.client("Goloman");
    let a = poster.ask("IAMAT a.example +10+20 100");
    let b = poster.ask("IAMAT b.example +10+20 100");
    let mut w = herd.client("Goloman");
    w.send(b"WATCH a.example nobody.example b.example\n");
    let mut snapshot = vec![w.text(), w.text()];
    snapshot.sort();
    assert_eq!(snapshot, [a, b]);
    // A client it named before the server knew it.
    let n = poster.ask("IAMAT nobody.example +1+1 5");
    assert_eq!(w.text(), n);
    // An older position is not stored, so not pushed; a newer one is.
    poster.ask("IAMAT a.example +10+20 99");
    let a2 = poster.ask("IAMAT a.example +10+20 101");
    assert_eq!(w.text(), a2);
}

#[test]
fn unwatch_stops_the_named_clients_and_alone_stops_all() {
    let herd = TestHerd::start(&["Goloman"], &[]);
    let mut poster = herd.client("Goloman");
    for c in ["a", "b", "s1", "s2"] {
        poster.ask(&format!("IAMAT {c} +1+1 1"));
    }
    let mut w = herd.client("Goloman");
    w.send(b"WATCH a b\n");
    let mut first = [w.text(), w.text()].map(|l| client_of(&l).to_string());
    first.sort();
    assert_eq!(first, ["a", "b"]);
    w.send(b"UNWATCH a\nWATCH s1\n");
    assert_eq!(client_of(&w.text()), "s1");
    poster.ask("IAMAT a +1+1 2");
    let b2 = poster.ask("IAMAT b +1+1 2");
    assert_eq!(w.text(), b2, "b's push, and no push of a");
    // UNWATCH alone: nothing more, not even b or s1.
    w.send(b"UNWATCH\nWATCH s2\n");
    assert_eq!(client_of(&w.text()), "s2");
    poster.ask("IAMAT b +1+1 3");
    poster.ask("IAMAT s1 +1+1 3");
    let s2 = poster.ask("IAMAT s2 +1+1 3");
    assert_eq!(w.text(), s2);
}

#[test]
fn a_watching_connection_answers_anything_else_with_a_question_mark() {
    let herd = TestHerd::start(&["Goloman"], &[]);
    let mut w = herd.client("Goloman");
    // UNWATCH on a connection that watches nothing is silent, and changes nothing.
    w.send(b"UNWATCH\n");
    assert!(w.ask("IAMAT me +1+1 0").starts_with("AT Goloman "));
    w.send(b"WATCH someone\n\n   \n");
    assert_eq!(w.ask("IAMAT me +1+1 1"), "? IAMAT me +1+1 1");
    assert_eq!(w.ask("WHATSAT someone 1 1"), "? WHATSAT someone 1 1");
    assert_eq!(w.ask("WATCH"), "? WATCH");
    assert_eq!(w.ask("WATCH * x"), "? WATCH * x");
    // Even after UNWATCH: a push may already be on its way.
    w.send(b"UNWATCH\n");
    assert_eq!(w.ask("IAMAT me +1+1 2"), "? IAMAT me +1+1 2");
}

#[test]
fn more_watchers_than_a_turn_writes_each_end_at_the_newest_in_order() {
    // Over two turns' worth of watchers (herd::server::WATCHERS_PER_TURN is
    // 512): the fan-out goes in slices, and updates that land between
    // slices must still reach every watcher, in order, ending at the newest.
    const WATCHERS: usize = 1_300;
    const UPDATES: u64 = 20;
    let herd = TestHerd::start(&["Goloman"], &[]);
    let mut watchers: Vec<Client> = (0..WATCHERS)
        .map(|_| {
            let mut w = herd.client("Goloman");
            w.send(b"WATCH fan.example\n");
            w
        })
        .collect();
    let mut poster = herd.client("Goloman");
    let first = poster.ask("IAMAT fan.example +1+1 1700000000");
    for w in &mut watchers {
        assert_eq!(
            w.text(),
            first,
            "the first position, pushed or as the snapshot"
        );
    }
    let batch: String = (1..=UPDATES)
        .map(|i| format!("IAMAT fan.example +1+1 {}\n", 1_700_000_000 + i))
        .collect();
    poster.send(batch.as_bytes());
    for _ in 0..UPDATES {
        assert!(poster.text().starts_with("AT "));
    }
    let ids = ["fan.example".to_string()];
    for w in watchers {
        reads_up_to_the_newest(w.reader, &ids, 1_700_000_000 + UPDATES);
    }
}

#[test]
fn watch_all_sees_clients_it_never_named_and_has_a_limit() {
    let herd = TestHerd::start_with(&["Goloman", "Hands"], &[("Goloman", "Hands")], |c| {
        c.limits.watch_all = 1
    });
    let mut poster = herd.client("Goloman");
    let old = poster.ask("IAMAT old +1+1 1");
    let mut w = herd.client("Goloman");
    w.send(b"WATCH *\n");
    assert_eq!(w.text(), old, "the snapshot: every client");
    let mut second = herd.client("Goloman");
    assert_eq!(
        second.ask("WATCH *"),
        "? WATCH *",
        "one WATCH * watcher at most here"
    );
    // A client posted at the neighbour.
    let far = herd
        .client("Hands")
        .ask(&format!("IAMAT far.example +1+1 {}", timestamp()));
    assert_eq!(w.text(), far);
    let near = poster.ask("IAMAT near +1+1 1");
    assert_eq!(w.text(), near);
    // Its place is free once it leaves.
    drop(w);
    support::herd::wait_for("the WATCH * place to free", || {
        let mut c = herd.client("Goloman");
        c.send(b"WATCH *\n");
        let got = c.text();
        (!got.starts_with("? ")).then_some(())
    });
}

#[test]
fn watch_past_the_watch_limit_is_refused() {
    let herd = TestHerd::start_with(&["Goloman"], &[], |c| c.limits.watch_limit = 3);
    let mut w = herd.client("Goloman");
    assert_eq!(w.ask("WATCH a b c d"), "? WATCH a b c d");
    w.send(b"WATCH a b c\n");
    assert_eq!(w.ask("WATCH d"), "? WATCH d");
    w.send(b"UNWATCH c\nWATCH d\n");
    let mut poster = herd.client("Goloman");
    let d = poster.ask("IAMAT d +1+1 1");
    assert_eq!(w.text(), d);
}

/// VmRSS of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// A connection with a small receive buffer, so that not reading it soon
/// pushes back on the server.
fn small_window(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

#[test]
fn a_watcher_that_stops_reading_costs_bounded_memory_and_ends_with_the_newest() {
    const CLIENTS: usize = 20;
    const ROUNDS: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = write(
        dir.path(),
        "herd.conf",
        &format!("server A 127.0.0.1:{port}\n"),
    );
    let p = HerdProc::start(Command::new(HERD), dir.path(), &conf, &["A"], &[]);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // Long IDs: a queue of every update would be 200,000 lines of ~270 bytes.
    let ids: Vec<String> = (0..CLIENTS)
        .map(|i| format!("c{i:02}-{}", "x".repeat(200)))
        .collect();
    let mut watcher = small_window(addr);
    writeln!(watcher, "WATCH {}", ids.join(" ")).unwrap();

    let mut poster = TcpStream::connect(addr).unwrap();
    poster.set_read_timeout(Some(PATIENCE)).unwrap();
    let replies = BufReader::new(poster.try_clone().unwrap());
    let reader = std::thread::spawn(move || replies.lines().take(CLIENTS * ROUNDS).count());
    p.wait_metrics("the watcher", |m| {
        m.get("herd_watchers{server=\"A\"}") == Some(&1.0)
    });
    let before = rss(p.pid);
    let mut batch = String::new();
    for round in 1..=ROUNDS {
        for id in &ids {
            batch.push_str(&format!("IAMAT {id} +1+1 {}\n", 1_700_000_000 + round));
        }
        if round % 100 == 0 {
            poster.write_all(batch.as_bytes()).unwrap();
            batch.clear();
        }
    }
    assert_eq!(
        reader.join().unwrap(),
        CLIENTS * ROUNDS,
        "every IAMAT answered"
    );
    let after = rss(p.pid);
    let m = p.scrape();
    let pushed = m["herd_watch_pushes_total{server=\"A\"}"];
    let replaced = m["herd_watch_replaced_total{server=\"A\"}"];
    eprintln!(
        "RSS {} -> {} KiB; {pushed} pushed, {replaced} replaced",
        before / 1024,
        after / 1024
    );
    assert!(
        replaced > 0.0,
        "a watcher that does not read has positions replaced"
    );
    assert!(
        after < before + (16 << 20),
        "RSS grew from {before} to {after} bytes while the watcher did not read"
    );

    // Now it reads: per client strictly increasing times, ending at the newest.
    reads_up_to_the_newest(BufReader::new(watcher), &ids, 1_700_000_000 + ROUNDS as u64);
}

/// Reads AT lines from `watcher` until each of `ids` has reached TIME
/// `last`, checking that each client's times strictly increase and that
/// no other client is sent.
fn reads_up_to_the_newest(watcher: impl BufRead, ids: &[String], last: u64) {
    let mut times: HashMap<String, u64> = HashMap::new();
    let mut lines = watcher.lines();
    let deadline = Instant::now() + PATIENCE;
    while times.len() < ids.len() || times.values().any(|&t| t != last) {
        assert!(
            Instant::now() < deadline,
            "not every client's newest position arrived"
        );
        let line = lines.next().expect("a line").expect("read");
        let t: u64 = time_of(&line).parse().expect("a TIME");
        let prev = times.insert(client_of(&line).to_string(), t);
        assert!(prev.map_or(true, |p| p < t), "{line}: after {prev:?}");
    }
    assert!(times.keys().all(|k| ids.contains(k)));
}

#[test]
fn over_tls_a_watcher_that_stops_reading_ends_with_the_newest() {
    use rustls::pki_types::ServerName;
    use rustls::{ClientConnection, StreamOwned};
    use support::tls_client::client_config;
    use support::tls_herd::TlsHerd;

    const CLIENTS: usize = 20;
    const ROUNDS: usize = 2_000;
    let h = TlsHerd::new(&["A"], &[], "");
    let p = h.start("slow", &["A"], &[]);
    let ids: Vec<String> = (0..CLIENTS)
        .map(|i| format!("t{i:02}-{}", "x".repeat(200)))
        .collect();
    // A TLS watcher on a small receive window, that then stops reading.
    let mut sock = small_window(h.tls("A"));
    let config = client_config(h.ca.roots(), None, false);
    let mut tls = ClientConnection::new(config, ServerName::try_from("A").unwrap()).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut sock).expect("TLS handshake");
    }
    let mut watcher = StreamOwned::new(tls, sock);
    writeln!(watcher, "WATCH {}", ids.join(" ")).unwrap();
    watcher.flush().unwrap();
    p.wait_metrics("the watcher", |m| {
        m.get("herd_watchers{server=\"A\"}") == Some(&1.0)
    });

    let mut poster = h.client("A");
    let mut batch = String::new();
    for round in 1..=ROUNDS {
        for id in &ids {
            batch.push_str(&format!("IAMAT {id} +1+1 {}\n", 1_700_000_000 + round));
        }
        if round % 100 == 0 {
            poster.send(batch.as_bytes());
            batch.clear();
            // Every reply, so the server has stored all of this batch.
            for _ in 0..CLIENTS * 100 {
                poster.line();
            }
        }
    }
    let replaced = p.scrape()["herd_watch_replaced_total{server=\"A\"}"];
    assert!(
        replaced > 0.0,
        "a watcher that does not read has positions replaced"
    );
    reads_up_to_the_newest(BufReader::new(watcher), &ids, 1_700_000_000 + ROUNDS as u64);
}

#[test]
fn a_watcher_sees_what_a_restarted_neighbour_catches_it_up_on() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (free_port(), free_port());
    let conf = write(
        dir.path(),
        "herd.conf",
        &format!("server A 127.0.0.1:{a}\nserver B 127.0.0.1:{b}\nlink A B\n"),
    );
    let local = |port: u16| -> SocketAddr { format!("127.0.0.1:{port}").parse().unwrap() };
    // B learns a position while A is not running, and keeps it in its journal.
    let bdir = dir.path().join("b");
    let first = HerdProc::start(Command::new(HERD), &bdir, &conf, &["B"], &[]);
    let at = Client::connect(local(b)).ask(&format!("IAMAT moving.example +1+1 {}", timestamp()));
    drop(first);
    // A runs, with a watcher; then B comes back and catches A up.
    let _pa = HerdProc::start(
        Command::new(HERD),
        &dir.path().join("a"),
        &conf,
        &["A"],
        &[],
    );
    let mut w = Client::connect(local(a));
    w.send(b"WATCH moving.example sync\n");
    Client::connect(local(a)).ask("IAMAT sync +1+1 1");
    assert_eq!(client_of(&w.text()), "sync", "the watch is in place");
    let _pb = HerdProc::start(Command::new(HERD), &bdir, &conf, &["B"], &[]);
    assert_eq!(w.text(), at, "the caught-up position, pushed");
}

/// A server A with a line port and an `http` port, and B linked to it (line
/// port only); their line and http addresses.
fn http_pair(dir: &std::path::Path) -> (HerdProc, SocketAddr, SocketAddr, SocketAddr) {
    let (a, h, b) = (free_port(), free_port(), free_port());
    let conf = write(
        dir,
        "herd.conf",
        &format!("server A 127.0.0.1:{a} http 127.0.0.1:{h}\nserver B 127.0.0.1:{b}\nlink A B\n"),
    );
    let p = HerdProc::start(Command::new(HERD), dir, &conf, &["A", "B"], &[]);
    let local = |port: u16| -> SocketAddr { format!("127.0.0.1:{port}").parse().unwrap() };
    (p, local(a), local(h), local(b))
}

/// A WebSocket client on `addr`'s `/v1/ws`.
fn websocket(addr: SocketAddr) -> tungstenite::WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let (ws, response) = tungstenite::client(format!("ws://{addr}/v1/ws"), stream).unwrap();
    assert_eq!(response.status(), 101);
    ws
}

/// The next data message, as text.
fn message(ws: &mut tungstenite::WebSocket<TcpStream>) -> String {
    use tungstenite::Message;
    loop {
        match ws.read().expect("a message") {
            Message::Text(t) => return t.to_string(),
            Message::Binary(b) => return String::from_utf8_lossy(&b).into_owned(),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(c) => panic!("closed: {c:?}"),
        }
    }
}

#[test]
fn over_websocket_each_position_is_a_message_of_its_own() {
    use tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let (_p, a, http, b) = http_pair(dir.path());
    let mut poster = Client::connect(a);
    let known = poster.ask("IAMAT known +1+1 1");
    let other = poster.ask("IAMAT other +1+1 1");
    let mut ws = websocket(http);
    ws.send(Message::text("WATCH known other later")).unwrap();
    let mut snapshot = [message(&mut ws), message(&mut ws)];
    snapshot.sort();
    assert_eq!(snapshot, [format!("{known}\n"), format!("{other}\n")]);
    // A push from the neighbour; anything but WATCH/UNWATCH is refused.
    let later = Client::connect(b).ask(&format!("IAMAT later +1+1 {}", timestamp()));
    assert_eq!(message(&mut ws), format!("{later}\n"));
    ws.send(Message::text("IAMAT me +1+1 1\nUNWATCH other\nWATCH sync"))
        .unwrap();
    assert_eq!(message(&mut ws), "? IAMAT me +1+1 1\n");
    let sync = poster.ask("IAMAT sync +1+1 1");
    assert_eq!(message(&mut ws), format!("{sync}\n"));
    poster.ask("IAMAT other +1+1 2");
    // Several positions owed at once still leave one message each.
    let k2 = poster.ask("IAMAT known +1+1 2");
    let s2 = poster.ask("IAMAT sync +1+1 2");
    let mut got = [message(&mut ws), message(&mut ws)];
    got.sort();
    assert_eq!(
        got,
        [format!("{k2}\n"), format!("{s2}\n")],
        "no push of other"
    );

    // A slow WebSocket watcher is conflated like any: it ends with the newest.
    let mut slow = websocket(http);
    slow.send(Message::text("WATCH known sync")).unwrap();
    let mut batch = String::new();
    for t in 3..20_000 {
        batch.push_str(&format!("IAMAT known +1+1 {t}\nIAMAT sync +1+1 {t}\n"));
    }
    let mut flood = TcpStream::connect(a).unwrap();
    let replies = BufReader::new(flood.try_clone().unwrap());
    let reader = std::thread::spawn(move || replies.lines().take(2 * 19_997).count());
    flood.write_all(batch.as_bytes()).unwrap();
    assert_eq!(reader.join().unwrap(), 2 * 19_997);
    let mut last: HashMap<String, u64> = HashMap::new();
    while last.values().filter(|&&t| t == 19_999).count() < 2 {
        let m = message(&mut slow);
        assert!(m.ends_with('\n') && m.matches('\n').count() == 1, "{m:?}");
        let t: u64 = time_of(m.trim_end()).parse().unwrap();
        let prev = last.insert(client_of(&m).to_string(), t);
        assert!(prev.map_or(true, |p| p < t), "{m:?} after {prev:?}");
    }
}

#[test]
fn an_http_request_cannot_watch() {
    let dir = tempfile::tempdir().unwrap();
    let (_p, _, http, _) = http_pair(dir.path());
    let body = "WATCH someone\n";
    let mut s = TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        s,
        "POST /v1/lines HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut s, &mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.ends_with("\r\n\r\n? WATCH someone\n"),
        "{response}"
    );
}

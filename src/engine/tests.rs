//! The engine driven line by line, as the loop, the bench and the fuzzer do.

use super::*;
use crate::auth;

/// Every effect, in order, as text.
#[derive(Default)]
struct Record(Vec<String>);

impl Effects for Record {
    fn reply(&mut self, bytes: &[u8]) {
        self.0
            .push(format!("reply {}", String::from_utf8_lossy(bytes)));
    }
    fn whatsat(&mut self, head: &[u8], q: Query) {
        self.0.push(format!(
            "whatsat {}|{},{} r={} n={}",
            String::from_utf8_lossy(head),
            q.lat,
            q.lng,
            q.radius_m,
            q.bound
        ));
    }
    fn journal(&mut self, line: &[u8]) {
        self.0
            .push(format!("journal {}", String::from_utf8_lossy(line)));
    }
    fn flood(&mut self, line: &[u8], except: Option<usize>) {
        self.0.push(format!(
            "flood {:?} {}",
            except,
            String::from_utf8_lossy(line)
        ));
    }
    fn neighbour_dialled(&mut self, i: usize) {
        self.0.push(format!("dialled {i}"));
    }
}

fn engine(secret: Option<Secret>) -> Engine {
    let neighbours = vec![(0, "Hands".to_string()), (1, "Holiday".to_string())];
    Engine::new("Goloman", Store::new(), secret, neighbours, 8192)
}

fn session() -> Session {
    Session::new("127.0.0.1:5000".parse().unwrap())
}

/// Handles `line` at clock time 1520023935.0; returns the effects and Next.
fn run(e: &mut Engine, s: &mut Session, line: &[u8]) -> (Vec<String>, Next) {
    let mut clock = Clock::fixed(1_520_023_935_000_000_000);
    let mut fx = Record::default();
    let next = e.handle(s, Piece::Line(line), &mut clock, &mut fx);
    (fx.0, next)
}

const AT_KIWI: &str =
    "AT Goloman +0.081036003 kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997\n";

#[test]
fn an_iamat_is_answered_journaled_and_flooded_in_that_order() {
    let (mut e, mut s) = (engine(None), session());
    let (fx, next) = run(
        &mut e,
        &mut s,
        b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997",
    );
    assert_eq!(next, Next::Continue);
    assert_eq!(
        fx,
        [
            format!("reply {AT_KIWI}"),
            format!("journal {}", AT_KIWI.trim_end()),
            format!("flood None {AT_KIWI}"),
        ]
    );
    // The same update again is answered, but not newer: nothing else.
    let (fx, _) = run(
        &mut e,
        &mut s,
        b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997",
    );
    assert_eq!(fx, [format!("reply {AT_KIWI}")]);
}

#[test]
fn a_whatsat_asks_places_at_the_stored_position() {
    let (mut e, mut s) = (engine(None), session());
    let (fx, next) = run(&mut e, &mut s, b"WHATSAT kiwi.cs.ucla.edu 10 5");
    assert_eq!(next, Next::Charge(30));
    assert_eq!(fx, ["reply ? WHATSAT kiwi.cs.ucla.edu 10 5\n"]);
    let _ = run(
        &mut e,
        &mut s,
        b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997",
    );
    let (fx, next) = run(&mut e, &mut s, b"WHATSAT kiwi.cs.ucla.edu 1.5 20");
    assert_eq!(next, Next::Continue);
    assert_eq!(
        fx,
        [format!(
            "whatsat {AT_KIWI}|34.068930,-118.445127 r=1500 n=20"
        )]
    );
}

#[test]
fn invalid_and_over_long_lines_are_echoed_and_charged() {
    let (mut e, mut s) = (engine(None), session());
    let (fx, next) = run(&mut e, &mut s, b"HELLO there\r");
    assert_eq!(
        (fx, next),
        (vec!["reply ? HELLO there\n".to_string()], Next::Charge(13))
    );
    let mut fx = Record::default();
    let next = e.handle(&mut s, Piece::TooLong(b"0123"), &mut Clock::wall(), &mut fx);
    assert_eq!(
        (fx.0, next),
        (vec!["reply ? 0123\n".to_string()], Next::Charge(5))
    );
    let (fx, next) = run(&mut e, &mut s, b"   ");
    assert_eq!((fx, next), (vec![], Next::Continue));
}

#[test]
fn an_open_herd_takes_at_lines_from_anyone_and_floods_past_the_sender() {
    let (mut e, mut s) = (engine(None), session());
    let line = AT_KIWI.trim_end().as_bytes();
    let (fx, _) = run(&mut e, &mut s, line);
    assert_eq!(fx[1], format!("flood None {AT_KIWI}"));
    let mut link = session();
    let (fx, _) = run(&mut e, &mut link, b"HERD Holiday");
    assert_eq!(fx, ["dialled 1", "reply PING\n"]);
    assert!(matches!(&link.role, Role::Peer(p) if p.authenticated));
    // A newer update from neighbour 1 goes to every neighbour but 1.
    let newer = AT_KIWI.replace("1520023934.918963997", "1520023940");
    let (fx, _) = run(&mut e, &mut link, newer.trim_end().as_bytes());
    assert_eq!(fx[1], format!("flood Some(1) {newer}"));
    // A second HERD on the same connection is out of place.
    let (fx, _) = run(&mut e, &mut link, b"HERD Hands");
    assert_eq!(fx, ["reply ? HERD Hands\n"]);
}

#[test]
fn with_a_secret_only_an_authenticated_link_may_update() {
    let secret = Secret::new(b"k");
    let (mut e, mut client) = (engine(Some(secret.clone())), session());
    let line = AT_KIWI.trim_end().as_bytes();
    let (fx, next) = run(&mut e, &mut client, line);
    assert_eq!(fx, [format!("reply ? {AT_KIWI}")]);
    assert!(matches!(next, Next::Charge(_)));
    // The handshake: HERD with a nonce, our CHALLENGE, their AUTH.
    let mut link = session();
    let na = auth::nonce();
    let (fx, _) = run(&mut e, &mut link, format!("HERD Hands {na}").as_bytes());
    let challenge = fx[1].strip_prefix("reply ").unwrap().trim_end().to_string();
    let Command::Challenge { nonce: nb, .. } = protocol::parse(challenge.as_bytes()) else {
        panic!("{challenge}");
    };
    let nb = nb.to_vec();
    let (fx, _) = run(&mut e, &mut link, line);
    assert_eq!(fx, [format!("reply ? {AT_KIWI}")], "not yet authenticated");
    let proof = secret.dial_mac(b"Hands", na.as_bytes(), &nb);
    let (fx, next) = run(&mut e, &mut link, format!("AUTH {proof}").as_bytes());
    assert_eq!(
        (fx, next),
        (vec!["reply PING\n".to_string()], Next::Continue)
    );
    let (fx, _) = run(&mut e, &mut link, line);
    assert_eq!(fx[1], format!("flood Some(0) {AT_KIWI}"));
}

#[test]
fn a_wrong_proof_stops_reading_the_link() {
    let (mut e, mut link) = (engine(Some(Secret::new(b"k"))), session());
    let na = auth::nonce();
    let _ = run(&mut e, &mut link, format!("HERD Hands {na}").as_bytes());
    let (fx, next) = run(&mut e, &mut link, b"AUTH 00");
    assert_eq!(
        (fx, next),
        (vec!["reply ? AUTH 00\n".to_string()], Next::StopReading)
    );
}

#[test]
fn heartbeats_are_silent_on_links_and_invalid_from_clients_and_strangers_are_refused() {
    let (mut e, mut client) = (engine(None), session());
    let (fx, next) = run(&mut e, &mut client, b"PING");
    assert_eq!(
        (fx, next),
        (vec!["reply ? PING\n".to_string()], Next::Charge(5))
    );
    let (fx, _) = run(&mut e, &mut client, b"HERD Stranger");
    assert_eq!(fx, ["reply ? HERD Stranger\n"]);
    assert_eq!(client.role, Role::Client);
    let mut link = session();
    let _ = run(&mut e, &mut link, b"HERD Hands");
    let (fx, next) = run(&mut e, &mut link, b"PING");
    assert_eq!((fx, next), (vec![], Next::Continue));
}

#[test]
fn ports_carry_their_own_traffic_once_the_server_has_a_peer_port() {
    let mut e = engine(None);
    e.set_peer_port(true);
    let addr = "127.0.0.1:5000".parse().unwrap();
    // A client port: client commands only.
    for port in [Port::Client, Port::Tls] {
        let mut s = Session::on(addr, port);
        for line in [
            "HERD Hands",
            "AT Hands +0.1 x +1+1 1",
            "AUTH 00",
            "SYNC 3",
            "PING",
        ] {
            let (fx, next) = run(&mut e, &mut s, line.as_bytes());
            assert_eq!(fx, [format!("reply ? {line}\n")], "{port:?} {line}");
            assert_eq!(next, Next::Charge(line.len() + 1));
        }
        assert_eq!(s.role, Role::Client);
        let (fx, _) = run(&mut e, &mut s, b"IAMAT kiwi +1+1 1520023934.9");
        assert!(fx[0].starts_with("reply AT Goloman "), "{fx:?}");
    }
    // A peer port: no client commands, and no AT before an accepted HERD.
    let mut s = Session::on(addr, Port::Peer);
    for line in [
        "IAMAT kiwi +1+1 1520023934.9",
        "AT Hands +0.1 y +1+1 1",
        "PING",
    ] {
        let (fx, _) = run(&mut e, &mut s, line.as_bytes());
        assert_eq!(fx, [format!("reply ? {line}\n")], "{line}");
    }
    let (fx, _) = run(&mut e, &mut s, b"HERD Hands");
    assert_eq!(fx, ["dialled 0", "reply PING\n"]);
    let (fx, _) = run(&mut e, &mut s, b"WHATSAT kiwi 10 5");
    assert_eq!(fx, ["reply ? WHATSAT kiwi 10 5\n"]);
    let (fx, _) = run(&mut e, &mut s, AT_KIWI.trim_end().as_bytes());
    assert_eq!(fx[0], format!("journal {}", AT_KIWI.trim_end()));
}

#[test]
fn on_a_mutual_tls_peer_port_herd_must_name_a_neighbour_the_certificate_names() {
    let mut e = engine(None);
    e.set_peer_port(true);
    let addr = "127.0.0.1:5000".parse().unwrap();
    let mut s = Session::on(addr, Port::Peer);
    s.cert_names = Some(Box::new(CertNames(vec!["Hands".to_string()])));
    let (fx, next) = run(&mut e, &mut s, b"HERD Holiday");
    assert_eq!(fx, ["reply ? HERD Holiday\n"]);
    assert_eq!(
        next,
        Next::StopReading,
        "nothing after a refused HERD is trusted"
    );
    let mut s = Session::on(addr, Port::Peer);
    s.cert_names = Some(Box::new(CertNames(vec!["Hands".to_string()])));
    let (fx, next) = run(&mut e, &mut s, b"HERD Hands");
    assert_eq!(
        (fx, next),
        (
            vec!["dialled 0".to_string(), "reply PING\n".to_string()],
            Next::Continue
        )
    );
}

/// The watch effects, in order, as text; `all` says whether the server
/// takes another `WATCH *`.
struct Watching {
    fx: Vec<String>,
    all: bool,
}

impl Effects for Watching {
    fn reply(&mut self, bytes: &[u8]) {
        self.fx.push(format!(
            "reply {}",
            String::from_utf8_lossy(bytes).trim_end()
        ));
    }
    fn whatsat(&mut self, _: &[u8], _: Query) {
        self.fx.push("whatsat".into());
    }
    fn journal(&mut self, _: &[u8]) {}
    fn flood(&mut self, _: &[u8], _: Option<usize>) {}
    fn neighbour_dialled(&mut self, _: usize) {}
    fn stored(&mut self, slot: usize) {
        self.fx.push(format!("stored {slot}"));
    }
    fn watching(&mut self) {
        self.fx.push("watching".into());
    }
    fn watch(&mut self, client: &[u8], place: u32) {
        self.fx
            .push(format!("watch {} {place}", String::from_utf8_lossy(client)));
    }
    fn unwatch(&mut self, client: &[u8]) {
        self.fx
            .push(format!("unwatch {}", String::from_utf8_lossy(client)));
    }
    fn watch_all(&mut self) -> bool {
        self.fx.push("watch *".into());
        self.all
    }
    fn unwatch_all(&mut self) {
        self.fx.push("unwatch *".into());
    }
}

/// Handles each line in turn; returns every effect.
fn watching(e: &mut Engine, s: &mut Session, all: bool, lines: &[&str]) -> Vec<String> {
    let mut clock = Clock::fixed(1_520_023_935_000_000_000);
    let mut fx = Watching {
        fx: Vec::new(),
        all,
    };
    for line in lines {
        let _ = e.handle(s, Piece::Line(line.as_bytes()), &mut clock, &mut fx);
    }
    fx.fx
}

#[test]
fn a_watcher_takes_only_watch_unwatch_and_blank_lines() {
    let (mut e, mut s) = (engine(None), session());
    let fx = watching(&mut e, &mut s, true, &["UNWATCH", "IAMAT a +1+1 1"]);
    assert_eq!(
        fx,
        [
            "reply AT Goloman +1520023934.000000000 a +1+1 1",
            "stored 0"
        ]
    );
    assert!(
        s.watch.is_none(),
        "UNWATCH on a connection that watches nothing changes nothing"
    );
    let fx = watching(
        &mut e,
        &mut s,
        true,
        &[
            "WATCH a b a",
            "IAMAT a +1+1 2",
            "WHATSAT a 1 1",
            "  ",
            "WATCH b c",
            "UNWATCH a x",
            "UNWATCH",
            "IAMAT a +1+1 3",
        ],
    );
    assert_eq!(
        fx,
        [
            "watching",
            "watch a 0",
            "watch b 1",
            "reply ? IAMAT a +1+1 2",
            "reply ? WHATSAT a 1 1",
            "watch c 2",
            "unwatch a",
            "unwatch b",
            "unwatch c",
            // Still a watcher: pushes may be on their way.
            "reply ? IAMAT a +1+1 3",
        ]
    );
}

#[test]
fn watch_past_the_limits_is_refused_whole() {
    let (mut e, mut s) = (engine(None), session());
    e.set_watch_limit(2);
    let fx = watching(&mut e, &mut s, false, &["WATCH a b c", "WATCH *"]);
    assert_eq!(fx, ["reply ? WATCH a b c", "watch *", "reply ? WATCH *"]);
    assert!(s.watch.is_none(), "refused: not a watcher");
    let fx = watching(
        &mut e,
        &mut s,
        true,
        &[
            "WATCH a b",
            "WATCH a c",
            "WATCH b a",
            "WATCH *",
            "WATCH *",
            "UNWATCH *",
        ],
    );
    assert_eq!(
        fx,
        [
            "watching",
            "watch a 0",
            "watch b 1",
            "reply ? WATCH a c",
            "watch *",
            "unwatch *"
        ]
    );
}

#[test]
fn every_stored_position_is_said_with_its_slot_whatever_its_source() {
    let (mut e, mut s) = (engine(None), session());
    let fx = watching(
        &mut e,
        &mut s,
        true,
        &[
            "IAMAT a +1+1 1",
            "IAMAT b +1+1 1",
            "IAMAT a +1+1 0.5",
            "AT Hands +0.000000000 b +1+1 2",
            "AT Hands +0.000000000 b +1+1 2",
        ],
    );
    let stored: Vec<_> = fx.iter().filter(|f| f.starts_with("stored")).collect();
    assert_eq!(stored, ["stored 0", "stored 1", "stored 1"]);
}

#[test]
fn herd_links_and_peer_ports_cannot_watch() {
    let mut e = engine(None);
    let mut s = Session::on("127.0.0.1:5000".parse().unwrap(), Port::Peer);
    let fx = watching(&mut e, &mut s, true, &["WATCH a"]);
    assert_eq!(fx, ["reply ? WATCH a"]);
    let mut s = session();
    let fx = watching(&mut e, &mut s, true, &["HERD Hands", "WATCH a"]);
    assert_eq!(fx.last().map(String::as_str), Some("reply ? WATCH a"));
}

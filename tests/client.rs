//! The client protocol against a real server on 127.0.0.1:0 (docs/PROTOCOL.md §2–3).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::herd::{timestamp, Client, TestHerd, PATIENCE};

fn one() -> TestHerd {
    TestHerd::start(&["Goloman"], &[])
}

/// Checks an AT reply for an IAMAT and returns its time difference in seconds.
fn check_at(reply: &str, server: &str, client: &str, coords: &str, time: &str) -> f64 {
    let f: Vec<&str> = reply.split(' ').collect();
    assert_eq!(f.len(), 6, "{reply}");
    assert_eq!(
        (f[0], f[1], f[3], f[4], f[5]),
        ("AT", server, client, coords, time),
        "{reply}"
    );
    let diff = f[2];
    assert!(diff.starts_with('+') || diff.starts_with('-'), "{reply}");
    assert_eq!(diff.split('.').nth(1).map(str::len), Some(9), "{reply}");
    diff.parse().unwrap()
}

#[test]
fn iamat_is_answered_with_an_at_line() {
    let h = one();
    let mut c = h.client("Goloman");
    let t = timestamp();
    let reply = c.ask(&format!("IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 {t}"));
    let diff = check_at(
        &reply,
        "Goloman",
        "kiwi.cs.ucla.edu",
        "+34.068930-118.445127",
        &t,
    );
    assert!((0.0..10.0).contains(&diff), "{reply}");
    // A client clock in the future gives a negative difference.
    let reply = c.ask("IAMAT kiwi +34.068930-118.445127 99999999999.5");
    assert!(
        check_at(
            &reply,
            "Goloman",
            "kiwi",
            "+34.068930-118.445127",
            "99999999999.5"
        ) < 0.0
    );
}

#[test]
fn fields_are_echoed_byte_for_byte_whatever_the_white_space() {
    let h = one();
    let mut c = h.client("Goloman");
    c.send(b" \t IAMAT\x0b\x0cnon-utf8-\xff\xfe  +00.5-000.25\t1520023934 \r\n");
    let reply = c.line();
    let want_tail: &[u8] = b" non-utf8-\xff\xfe +00.5-000.25 1520023934";
    assert!(reply.starts_with(b"AT Goloman +"), "{reply:?}");
    assert!(reply.ends_with(want_tail), "{reply:?}");
}

#[test]
fn every_invalid_form_gets_question_mark_and_the_line() {
    let h = one();
    let mut c = h.client("Goloman");
    let t = timestamp();
    let bad = [
        "HELLO".to_string(),
        "iamat kiwi +34.068930-118.445127 1520023934".to_string(),
        "IAMAT kiwi +34.068930-118.445127".to_string(),
        format!("IAMAT kiwi +34.068930-118.445127 {t} extra"),
        "IAMAT kiwi 34.068930-118.445127 1520023934".to_string(),
        "IAMAT kiwi +91-118.445127 1520023934".to_string(),
        "IAMAT kiwi +34-180.5 1520023934".to_string(),
        "IAMAT kiwi +34.-118 1520023934".to_string(),
        "IAMAT kiwi +34.068930-118.445127 1520023934.1234567890".to_string(),
        "IAMAT kiwi +34.068930-118.445127 -5".to_string(),
        "IAMAT kiwi +34.068930-118.445127 1e9".to_string(),
        "WHATSAT nobody.example 10 5".to_string(),
        "WHATSAT kiwi 10".to_string(),
        "AT Goloman +0.1 kiwi +1+1".to_string(),
        "AT Goloman 0.1 kiwi +1+1 5".to_string(),
    ];
    // Make kiwi known so the WHATSAT range errors below are about the fields.
    c.ask(&format!("IAMAT kiwi +1+1 {t}"));
    let mut lines: Vec<String> = bad.to_vec();
    lines.extend(
        [
            "WHATSAT kiwi 0 5",
            "WHATSAT kiwi 51 5",
            "WHATSAT kiwi 10 0",
            "WHATSAT kiwi 10 21",
            "WHATSAT kiwi -1 5",
            "WHATSAT kiwi ten 5",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    for line in &lines {
        assert_eq!(c.ask(line), format!("? {line}"), "for {line:?}");
    }
    // CRLF: the reply carries the line without its terminator.
    c.send(b"BOGUS  x\r\n");
    assert_eq!(c.text(), "? BOGUS  x");
}

#[test]
fn blank_lines_are_ignored() {
    let h = one();
    let mut c = h.client("Goloman");
    c.send(b"\n \t\r\n\x0b\x0c\n");
    assert_eq!(c.ask("NOPE"), "? NOPE");
}

#[test]
fn hundred_pipelined_requests_are_answered_in_order() {
    let h = one();
    let mut c = h.client("Goloman");
    let mut batch = Vec::new();
    for i in 0..100 {
        match i % 3 {
            0 => batch.extend_from_slice(format!("IAMAT c{i} +1+1 {i}\n").as_bytes()),
            1 => batch.extend_from_slice(format!("BAD {i}\n").as_bytes()),
            _ => batch.extend_from_slice(format!("WHATSAT c{} 1 1\n", i - 2).as_bytes()),
        }
    }
    c.send(&batch);
    for i in 0..100 {
        match i % 3 {
            0 => {
                let r = c.text();
                assert!(
                    r.starts_with("AT Goloman ") && r.ends_with(&format!(" c{i} +1+1 {i}")),
                    "{i}: {r}"
                );
            }
            1 => assert_eq!(c.text(), format!("? BAD {i}")),
            _ => {
                let (at, json) = c.whatsat_reply().unwrap_or_else(|e| panic!("{i}: {e}"));
                assert!(
                    at.ends_with(&format!(" c{} +1+1 {}", i - 2, i - 2)),
                    "{i}: {at}"
                );
                assert!(json.contains("\"results\" : []"), "{json}");
            }
        }
    }
}

#[test]
fn whatsat_without_places_is_answered_with_the_failure_framing() {
    let h = one();
    let mut c = h.client("Goloman");
    let at = c.ask("IAMAT kiwi +34.068930-118.445127 1520023934.918963997");
    c.send(b"WHATSAT kiwi 10 5\n");
    let (head, json) = c.whatsat_reply().unwrap();
    assert_eq!(head, at);
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["results"], serde_json::json!([]));
    assert_ne!(v["status"], "OK");
    assert!(
        v["error_message"].as_str().is_some_and(|m| !m.is_empty()),
        "{json}"
    );
    assert!(json.starts_with("{\n   \""), "Google's layout: {json}");
}

#[test]
fn a_request_ended_by_eof_is_answered_then_the_connection_closes() {
    let h = one();
    let mut c = h.client("Goloman");
    c.send(b"IAMAT eof +1+1 1520023934");
    let rest = String::from_utf8(c.finish()).unwrap();
    assert!(
        rest.starts_with("AT Goloman ") && rest.ends_with(" eof +1+1 1520023934\n"),
        "{rest:?}"
    );
    assert_eq!(rest.matches('\n').count(), 1);
}

#[test]
fn an_over_long_line_is_answered_and_the_connection_stays_usable() {
    let h = one();
    let mut c = h.client("Goloman");
    let mut long = b"IAMAT ".to_vec();
    long.resize(20_000, b'x');
    long.push(b'\n');
    c.send(&long);
    let reply = c.line();
    assert_eq!(reply.len(), 2 + 8 * 1024, "answered with the first 8 KiB");
    assert_eq!(&reply[..2 + 6], b"? IAMAT ");
    let r = c.ask("IAMAT after +1+1 5");
    assert!(r.ends_with(" after +1+1 5"), "{r}");
    // A line exactly at the limit is accepted as a line (and is invalid).
    let mut at_limit = vec![b'y'; 8 * 1024];
    at_limit.push(b'\n');
    c.send(&at_limit);
    assert_eq!(c.line().len(), 2 + 8 * 1024);
    assert!(c.ask("IAMAT again +1+1 6").ends_with(" again +1+1 6"));
}

#[test]
fn a_client_that_never_reads_cannot_make_the_server_buffer_without_bound() {
    let h = one();
    let addr = h.addr("Goloman");
    let hog = TcpStream::connect(addr).unwrap();
    hog.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut w = &hog;
    let chunk: Vec<u8> = b"IAMAT hog +1+1 1520023934\n".repeat(4096);
    let mut sent = 0usize;
    let cap = 512 * 1024 * 1024;
    // Without backpressure the server would read (and buffer replies to)
    // everything; with it, our writes stall once the socket buffers are full.
    let stalled = loop {
        match w.write(&chunk) {
            Ok(n) => sent += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break true
            }
            Err(e) => panic!("{e}"),
        }
        if sent > cap {
            break false;
        }
    };
    assert!(
        stalled,
        "the server read {sent} bytes from a client that reads nothing"
    );
    assert!(sent < 64 * 1024 * 1024, "sent {sent} bytes before stalling");
    // Meanwhile other clients are served at once.
    let mut other = h.client("Goloman");
    assert!(other.ask("IAMAT other +1+1 7").ends_with(" other +1+1 7"));
    // And once the hog reads, it gets its replies, in order.
    let mut r = std::io::BufReader::new(&hog);
    let mut first = String::new();
    std::io::BufRead::read_line(&mut r, &mut first).unwrap();
    assert!(
        first.starts_with("AT Goloman ") && first.ends_with(" hog +1+1 1520023934\n"),
        "{first}"
    );
}

#[test]
fn a_thousand_concurrent_connections_are_served() {
    let h = one();
    let addr = h.addr("Goloman");
    let mut clients: Vec<Client> = (0..1000).map(|_| Client::connect(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("IAMAT k{i} +1+1 {i}\n").as_bytes());
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.text();
        assert!(r.ends_with(&format!(" k{i} +1+1 {i}")), "{r}");
    }
    // They all stay connected and usable.
    let r = clients[999].ask("WHATSAT k0 1 1");
    assert!(r.ends_with(" k0 +1+1 0"), "{r}");
}

#[test]
fn newest_position_wins_and_older_iamats_are_still_answered() {
    let h = one();
    let mut c = h.client("Goloman");
    c.ask("IAMAT m +10+10 100");
    let older = c.ask("IAMAT m +20+20 50");
    assert!(older.ends_with(" m +20+20 50"), "{older}");
    assert!(c.known("m").unwrap().ends_with(" m +10+10 100"));
    c.ask("IAMAT m +30+30 150");
    assert!(c.known("m").unwrap().ends_with(" m +30+30 150"));
}

#[test]
fn reads_are_not_confused_by_tiny_segments() {
    let h = one();
    let mut c = h.client("Goloman");
    for b in b"IAMAT slow +1+1 9\n" {
        c.send(&[*b]);
    }
    assert!(c.text().ends_with(" slow +1+1 9"));
    let _ = PATIENCE;
    let mut s = c.reader.into_inner();
    let mut buf = [0u8; 1];
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(s.read(&mut buf).is_err(), "no stray reply");
}

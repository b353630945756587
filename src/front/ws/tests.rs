use super::*;
use crate::front::fuzzing::{ws_events, WsOutcome};
use crate::front::request::parse_head;
use proptest::prelude::*;

/// A client frame: FIN and opcode bits as given, masked with `mask`.
fn frame(b0: u8, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![b0];
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

const M: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const FIN: u8 = 0x80;

fn text(b: &[u8]) -> WsOutcome {
    WsOutcome::Message(true, b.to_vec())
}

/// The events of `input` fed whole, byte by byte and split at every
/// point, which must all agree.
fn events(input: &[u8], limit: usize) -> Vec<WsOutcome> {
    let whole = ws_events(input, &[input.len()], limit);
    let bytewise: Vec<usize> = (1..=input.len()).collect();
    assert_eq!(ws_events(input, &bytewise, limit), whole, "byte by byte");
    // Every split point of a small input; some of a big one.
    let step = if input.len() > 2000 { 997 } else { 1 };
    for split in (0..=input.len()).step_by(step) {
        assert_eq!(
            ws_events(input, &[split, input.len()], limit),
            whole,
            "split at {split}"
        );
    }
    whole
}

#[test]
fn the_rfc_accept_key() {
    assert_eq!(
        accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn base64_of_every_length() {
    // RFC 4648 §10.
    let table = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];
    for (input, output) in table {
        assert_eq!(base64(input.as_bytes()), output);
    }
}

#[test]
fn keys() {
    let table: &[(&[u8], bool)] = &[
        (b"dGhlIHNhbXBsZSBub25jZQ==", true),
        (b"AAAAAAAAAAAAAAAAAAAAAA==", true),
        (b"/////////////////////w==", true),
        (b"/////////////////////x==", false),
        (b"dGhlIHNhbXBsZSBub25jZQ=", false),
        (b"dGhlIHNhbXBsZSBub25jZQ", false),
        (b"dGhlIHNhbXBsZSBub25jZQ===", false),
        (b"dGhlIHNhbXBsZSBub25j*Q==", false),
        (b"Zm9vYmFy", false),
        (b"", false),
    ];
    for (key, valid) in table {
        assert_eq!(valid_key(key), *valid, "{}", key.escape_ascii());
    }
}

#[test]
fn handshakes() {
    let ok = "GET /v1/ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let table = [
        (
            ok.to_string(),
            Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_string()),
        ),
        (
            ok.replace("GET", "POST"),
            Err("WebSocket handshake must be GET"),
        ),
        (
            ok.replace("HTTP/1.1", "HTTP/1.0"),
            Err("WebSocket handshake must be HTTP/1.1"),
        ),
        (
            ok.replace("Upgrade: websocket\r\n", ""),
            Err("WebSocket handshake without Upgrade: websocket and Connection: upgrade"),
        ),
        (
            ok.replace("Connection: Upgrade", "Connection: keep-alive"),
            Err("WebSocket handshake without Upgrade: websocket and Connection: upgrade"),
        ),
        (
            ok.replace("Version: 13", "Version: 8"),
            Err("Sec-WebSocket-Version must be 13"),
        ),
        (
            ok.replace("Sec-WebSocket-Version: 13\r\n", ""),
            Err("Sec-WebSocket-Version must be 13"),
        ),
        (ok.replace("jZQ==", "jZQ="), Err("bad Sec-WebSocket-Key")),
        (
            ok.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            Err("bad Sec-WebSocket-Key"),
        ),
    ];
    for (text, expected) in table {
        let head = parse_head(text.as_bytes()).ok().flatten().expect("a head");
        let got = handshake(&head).map_err(|e| {
            assert_eq!(e.status, 400);
            e.reason
        });
        assert_eq!(got, expected, "{text:?}");
    }
    let mut out = Vec::new();
    write_switching_protocols(&mut out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(
        out,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    );
}

#[test]
fn decoded_events() {
    let long = vec![b'x'; 300];
    let big = vec![7u8; 70_000];
    let table: Vec<(Vec<u8>, usize, Vec<WsOutcome>)> = vec![
        // RFC 6455 §5.7: a single-frame masked text message.
        (
            vec![
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ],
            1024,
            vec![text(b"Hello")],
        ),
        (
            frame(FIN | 2, M, b"\xff\x00"),
            1024,
            vec![WsOutcome::Message(false, b"\xff\x00".to_vec())],
        ),
        (frame(FIN | 1, M, b""), 1024, vec![text(b"")]),
        // Fragmented, with a ping and a pong between the fragments.
        (
            [
                frame(1, M, b"Hel"),
                frame(FIN | 9, [1, 2, 3, 4], b"p"),
                frame(0, M, b""),
                frame(FIN | 10, M, b"q"),
                frame(FIN, [9, 9, 9, 9], b"lo"),
            ]
            .concat(),
            1024,
            vec![
                WsOutcome::Ping(b"p".to_vec()),
                WsOutcome::Pong(b"q".to_vec()),
                text(b"Hello"),
            ],
        ),
        // A character split across fragments is fine.
        (
            [
                frame(1, M, "é".as_bytes().get(..1).unwrap_or_default()),
                frame(FIN, M, &"é".as_bytes()[1..]),
            ]
            .concat(),
            1024,
            vec![text("é".as_bytes())],
        ),
        (
            frame(2, M, b"ab")
                .into_iter()
                .chain(frame(FIN, M, b"c"))
                .collect(),
            1024,
            vec![WsOutcome::Message(false, b"abc".to_vec())],
        ),
        // 16- and 64-bit lengths.
        (frame(FIN | 1, M, &long), 1024, vec![text(&long)]),
        (
            frame(FIN | 2, M, &big),
            100_000,
            vec![WsOutcome::Message(false, big.clone())],
        ),
        // Exactly at the limit.
        (frame(FIN | 1, M, b"12345"), 5, vec![text(b"12345")]),
        (
            [frame(1, M, b"123"), frame(FIN, M, b"45")].concat(),
            5,
            vec![text(b"12345")],
        ),
        // Pings, pongs, closes.
        (frame(FIN | 9, M, b""), 1024, vec![WsOutcome::Ping(vec![])]),
        (
            frame(FIN | 9, M, &[b'p'; 125]),
            1024,
            vec![WsOutcome::Ping(vec![b'p'; 125])],
        ),
        (
            frame(FIN | 8, M, b""),
            1024,
            vec![WsOutcome::Close(None, vec![])],
        ),
        (
            frame(FIN | 8, M, b"\x03\xe8bye"),
            1024,
            vec![WsOutcome::Close(Some(1000), b"bye".to_vec())],
        ),
        (
            frame(FIN | 8, M, b"\x0f\xa0"),
            1024,
            vec![WsOutcome::Close(Some(4000), vec![])],
        ),
        // Nothing is read after a close, not even garbage.
        (
            [
                frame(FIN | 1, M, b"a"),
                frame(FIN | 8, M, b"\x03\xe9"),
                b"\xff\xff\xff".to_vec(),
            ]
            .concat(),
            1024,
            vec![text(b"a"), WsOutcome::Close(Some(1001), vec![])],
        ),
        // Several messages in one read.
        (
            [
                frame(FIN | 1, M, b"IAMAT a +1+2 3\n"),
                frame(FIN | 1, [0; 4], b"WHATSAT a 10 5"),
            ]
            .concat(),
            1024,
            vec![text(b"IAMAT a +1+2 3\n"), text(b"WHATSAT a 10 5")],
        ),
    ];
    for (input, limit, expected) in table {
        assert_eq!(events(&input, limit), expected, "{}", input.escape_ascii());
    }
}

#[test]
fn errors_carry_the_close_code() {
    let unmasked = vec![0x81, 0x05, b'H', b'e', b'l', b'l', b'o'];
    let table: Vec<(Vec<u8>, usize, Vec<WsOutcome>)> = vec![
        (unmasked, 1024, vec![WsOutcome::Failed(1002)]),
        (
            frame(FIN | 0x40 | 1, M, b"a"),
            1024,
            vec![WsOutcome::Failed(1002)],
        ),
        (
            frame(FIN | 0x10 | 1, M, b"a"),
            1024,
            vec![WsOutcome::Failed(1002)],
        ),
        (frame(FIN | 3, M, b"a"), 1024, vec![WsOutcome::Failed(1002)]),
        (
            frame(FIN | 0x0b, M, b"a"),
            1024,
            vec![WsOutcome::Failed(1002)],
        ),
        (frame(9, M, b"a"), 1024, vec![WsOutcome::Failed(1002)]),
        (
            frame(FIN | 9, M, &[0; 126]),
            1024,
            vec![WsOutcome::Failed(1002)],
        ),
        (frame(FIN, M, b"a"), 1024, vec![WsOutcome::Failed(1002)]),
        (frame(0, M, b"a"), 1024, vec![WsOutcome::Failed(1002)]),
        (
            [frame(1, M, b"a"), frame(FIN | 1, M, b"b")].concat(),
            1024,
            vec![WsOutcome::Failed(1002)],
        ),
        (
            [frame(1, M, b"a"), frame(2, M, b"b")].concat(),
            1024,
            vec![WsOutcome::Failed(1002)],
        ),
        (
            frame(FIN | 8, M, b"\x03"),
            1024,
            vec![WsOutcome::Failed(1002)],
        ),
        (
            frame(FIN | 8, M, b"\x03\xed"),
            1024,
            vec![WsOutcome::Failed(1002)],
        ),
        (
            frame(FIN | 8, M, b"\x00\x00"),
            1024,
            vec![WsOutcome::Failed(1002)],
        ),
        (
            frame(FIN | 8, M, b"\x13\x88"),
            1024,
            vec![WsOutcome::Failed(1002)],
        ),
        (
            frame(FIN | 8, M, b"\x03\xe8\xff"),
            1024,
            vec![WsOutcome::Failed(1007)],
        ),
        (
            frame(FIN | 1, M, b"\xff"),
            1024,
            vec![WsOutcome::Failed(1007)],
        ),
        (
            [frame(1, M, b"a"), frame(FIN, M, b"\xc3")].concat(),
            1024,
            vec![WsOutcome::Failed(1007)],
        ),
        (
            frame(FIN | 1, M, b"123456"),
            5,
            vec![WsOutcome::Failed(1009)],
        ),
        (
            [frame(1, M, b"123"), frame(FIN, M, b"456")].concat(),
            5,
            vec![WsOutcome::Failed(1009)],
        ),
        // A 64-bit length with its top bit set.
        (
            [&[0x82u8, 0xff][..], &[0x80, 0, 0, 0, 0, 0, 0, 1], &M].concat(),
            1024,
            vec![WsOutcome::Failed(1002)],
        ),
        // Events before the error are delivered.
        (
            [frame(FIN | 9, M, b"x"), frame(FIN | 1, M, b"\xfe")].concat(),
            1024,
            vec![WsOutcome::Ping(b"x".to_vec()), WsOutcome::Failed(1007)],
        ),
    ];
    for (input, limit, expected) in table {
        assert_eq!(events(&input, limit), expected, "{}", input.escape_ascii());
    }
}

#[test]
fn a_huge_length_is_refused_before_its_payload() {
    let mut d = Decoder::new(64 * 1024);
    let mut header = [&[0x82u8, 0xff][..], &(1u64 << 40).to_be_bytes(), &M].concat();
    let got = d.feed(&mut header, |_| panic!("no event"));
    assert_eq!(got.map_err(|e| e.code), Err(1009));
    assert!(d.is_finished());
    assert_eq!(d.buffered(), 0);
}

#[test]
fn whole_frames_are_not_copied_and_split_ones_are_freed() {
    let mut d = Decoder::new(1024);
    let mut input = frame(FIN | 1, M, b"Hello");
    let mut seen = Vec::new();
    let start = input.as_ptr() as usize;
    d.feed(&mut input, |e| {
        if let Event::Message { data, .. } = e {
            // The payload, unmasked in place in the read buffer.
            assert_eq!(data.as_ptr() as usize, start + 6);
            seen.push(data.to_vec());
        }
    })
    .expect("valid");
    assert_eq!(seen, [b"Hello".to_vec()]);
    let input = [frame(1, M, b"Hel"), frame(FIN, M, b"lo")].concat();
    let (first, second) = input.split_at(5);
    let mut first = first.to_vec();
    d.feed(&mut first, |_| panic!("no event yet"))
        .expect("valid");
    assert!(d.buffered() > 0);
    d.feed(&mut second.to_vec(), |_| {}).expect("valid");
    assert_eq!(d.buffered(), 0);
    assert_eq!(d.message.capacity(), 0, "the message buffer is freed");
}

#[test]
fn written_frames() {
    let table: Vec<(Opcode, Vec<u8>, Vec<u8>)> = vec![
        (Opcode::Text, b"Hello".to_vec(), b"\x81\x05Hello".to_vec()),
        (Opcode::Binary, vec![], b"\x82\x00".to_vec()),
        (Opcode::Ping, b"x".to_vec(), b"\x89\x01x".to_vec()),
        (Opcode::Pong, b"x".to_vec(), b"\x8a\x01x".to_vec()),
        (
            Opcode::Text,
            vec![b'a'; 125],
            [&b"\x81\x7d"[..], &[b'a'; 125]].concat(),
        ),
        (
            Opcode::Text,
            vec![b'a'; 126],
            [&b"\x81\x7e\x00\x7e"[..], &[b'a'; 126]].concat(),
        ),
        (
            Opcode::Binary,
            vec![0; 65535],
            [&b"\x82\x7e\xff\xff"[..], &[0; 65535]].concat(),
        ),
        (
            Opcode::Binary,
            vec![0; 65536],
            [
                &b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"[..],
                &[0; 65536],
            ]
            .concat(),
        ),
        (
            Opcode::Ping,
            vec![1; 200],
            [&b"\x89\x7d"[..], &[1; 125]].concat(),
        ),
    ];
    for (opcode, payload, expected) in table {
        let mut out = Vec::new();
        write_frame(&mut out, opcode, &payload);
        assert_eq!(out, expected, "{opcode:?} {}", payload.len());
    }
    let mut out = Vec::new();
    write_message(&mut out, b"AT x\n");
    write_message(&mut out, b"? \xff\n");
    assert_eq!(out, b"\x81\x05AT x\n\x82\x04? \xff\n");
    assert!(is_text(b"caf\xc3\xa9") && !is_text(b"caf\xc3"));
}

#[test]
fn written_closes() {
    let mut out = Vec::new();
    write_close(&mut out, CLOSE_TOO_BIG, "message too big");
    assert_eq!(out, b"\x88\x11\x03\xf1message too big");
    // A reason too long is cut at a character boundary within 123 bytes.
    let mut out = Vec::new();
    let reason = "é".repeat(100);
    write_close(&mut out, CLOSE_NORMAL, &reason);
    assert_eq!(out[1], 2 + 123 - 1);
    assert!(std::str::from_utf8(&out[4..]).is_ok());
    // What we write, a client could send back (masked): it decodes.
    let masked = frame(out[0], M, &out[2..]);
    let got = ws_events(&masked, &[masked.len()], 1024);
    assert_eq!(got, [WsOutcome::Close(Some(1000), out[4..].to_vec())]);
}

/// One generated message: text or binary, its fragments, and a ping to
/// send before each fragment or not.
/// A generated message: text or not, its fragments, a ping before each
/// fragment or not, the mask.
type Message = (bool, Vec<Vec<u8>>, Vec<bool>, [u8; 4]);

fn messages() -> impl Strategy<Value = Vec<Message>> {
    proptest::collection::vec(
        (
            any::<bool>(),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..4),
            proptest::collection::vec(any::<bool>(), 4),
            any::<[u8; 4]>(),
        ),
        0..6,
    )
}

proptest! {
    /// Cutting the input anywhere never changes the events, and they are
    /// the messages and pings that were encoded.
    #[test]
    fn chunking_never_changes_the_events(
        msgs in messages(),
        cuts in proptest::collection::vec(any::<u16>(), 0..16),
    ) {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for (is_text, fragments, pings, mask) in &msgs {
            // Text messages carry only ASCII here, so they are UTF-8.
            let fragments: Vec<Vec<u8>> = fragments
                .iter()
                .map(|f| if *is_text { f.iter().map(|b| b & 0x7f).collect() } else { f.clone() })
                .collect();
            for (i, fragment) in fragments.iter().enumerate() {
                let opcode = match (i, is_text) { (0, true) => 1, (0, false) => 2, _ => 0 };
                let fin = if i + 1 == fragments.len() { FIN } else { 0 };
                if pings[i] {
                    input.extend(frame(FIN | 9, *mask, &fragment[..fragment.len().min(125)]));
                    expected.push(WsOutcome::Ping(fragment[..fragment.len().min(125)].to_vec()));
                }
                input.extend(frame(fin | opcode, *mask, fragment));
            }
            expected.push(WsOutcome::Message(*is_text, fragments.concat()));
        }
        let mut points: Vec<usize> = cuts.iter().map(|&c| usize::from(c) % (input.len() + 1)).collect();
        points.push(input.len());
        points.sort_unstable();
        let whole = ws_events(&input, &[input.len()], 1024);
        prop_assert_eq!(&whole, &expected);
        prop_assert_eq!(ws_events(&input, &points, 1024), whole);
    }
}

//! Fuzz target `lines`: arbitrary bytes, cut into arbitrary chunks, through
//! the server's [`LineReader`]; every piece is answered by the server's own
//! command [`Engine`] (its effects recorded; Places always fails), and the
//! replies' invariants are asserted:
//!
//! * a piece is a line without `\n` of at most the limit, or an over-long
//!   line's first `limit` bytes; cutting the input differently never changes
//!   the pieces, the count of discarded bytes, nor the replies;
//! * every reply is nothing (blank line, AT update, HERD), an AT line that
//!   re-parses with the request's fields byte for byte and DIFF = now - TIME
//!   exactly, a WHATSAT answer (a stored AT line, JSON, an empty line), or
//!   `? ` + the line as received without its terminator.
//!
//! Input layout: byte 0 is a mode: bits 0–2 the number of cuts, bits 3–4
//! the line limit (8 KiB, 16, 64 or 256 bytes), bits 5–6 the server's clock.
//! Then two bytes per cut (a position in the payload, modulo its length + 1),
//! then the payload. Shorter inputs are all payload, mode 0.

#![no_main]

use herd::conn::{LineReader, Piece};
use herd::engine::{Clock, Effects, Engine, Next, Session};
use herd::places::{failure_body, Query};
use herd::protocol::{self, Command, Iamat, Nanos};
use herd::server::DEFAULT_LINE_LIMIT;
use herd::store::Store;
use libfuzzer_sys::fuzz_target;

const SERVER: &str = "Goloman";
const LIMITS: [usize; 4] = [DEFAULT_LINE_LIMIT, 16, 64, 256];
const CLOCKS: [Nanos; 4] = [1_520_023_935_182_837_383, 0, i64::MAX as Nanos, -1];

struct Input<'a> {
    limit: usize,
    now: Nanos,
    /// Cut positions in `payload`, sorted, ending with its length.
    cuts: Vec<usize>,
    payload: &'a [u8],
}

fn split(data: &[u8]) -> Input<'_> {
    let (mode, rest) = data.split_first().map_or((0, data), |(&m, r)| (m, r));
    let n = usize::from(mode & 7);
    let (mode, header, payload) = if rest.len() >= 2 * n {
        let (header, payload) = rest.split_at(2 * n);
        (mode, header, payload)
    } else {
        (0, &rest[..0], data)
    };
    let mut cuts: Vec<usize> = header
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (payload.len() + 1))
        .collect();
    cuts.push(payload.len());
    cuts.sort_unstable();
    Input {
        limit: LIMITS[usize::from(mode >> 3) & 3],
        now: CLOCKS[usize::from(mode >> 5) & 3],
        cuts,
        payload,
    }
}

/// A piece as kept: (too long, bytes).
type Owned = (bool, Vec<u8>);

/// The pieces, and the bytes the reader said it discarded.
fn pieces(input: &Input<'_>, cuts: &[usize]) -> (Vec<Owned>, usize) {
    let mut reader = LineReader::default();
    let mut got = Vec::new();
    let mut discarded = 0;
    let mut keep = |p: Piece<'_>| {
        got.push(match p {
            Piece::Line(l) => (false, l.to_vec()),
            Piece::TooLong(l) => (true, l.to_vec()),
        })
    };
    let mut start = 0;
    for &end in cuts {
        discarded += reader.feed(&input.payload[start..end], input.limit, &mut keep);
        // The limit, and one `\r` that may turn out to start a `\r\n`.
        assert!(reader.pending() <= input.limit + 1, "pending past the limit");
        start = end;
    }
    reader.finish(&mut keep);
    assert_eq!(reader.pending(), 0);
    (got, discarded)
}

/// The reference: split on `\n`; a line longer than the limit (not counting
/// a final `\r`: it belongs to the terminator) gives its first `limit`
/// bytes; an unterminated last line counts at EOF.
fn reference(payload: &[u8], limit: usize) -> Vec<Owned> {
    let mut lines: Vec<&[u8]> = payload.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .into_iter()
        .map(|l| match l.strip_suffix(b"\r").unwrap_or(l).len() > limit {
            true => (true, l[..limit].to_vec()),
            false => (false, l.to_vec()),
        })
        .collect()
}

/// A DIFF's value by digit arithmetic of its own; panics unless canonical
/// (sign, no leading zeros, exactly 9 fraction digits, `+` for zero).
fn diff_value(diff: &[u8]) -> Nanos {
    let text = std::str::from_utf8(diff).expect("DIFF is ASCII");
    let (sign, rest) = text.split_at(1);
    let (secs, nanos) = rest.split_once('.').expect("DIFF has a point");
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    assert!(digits(secs) && digits(nanos) && nanos.len() == 9, "{text}");
    assert!(secs.len() == 1 || !secs.starts_with('0'), "{text}");
    let magnitude: Nanos = format!("{secs}{nanos}").parse().expect("DIFF fits");
    match sign {
        "+" => magnitude,
        "-" if magnitude != 0 => -magnitude,
        _ => panic!("{text}"),
    }
}

/// `? ` + the line without its terminator (the `\r` of a `\r\n` included).
fn assert_invalid(reply: &[u8], line: &[u8]) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    assert_eq!(reply, [b"? ", line, b"\n"].concat());
}

/// An AT line for `iamat`, received at `now`.
fn assert_at(reply: &[u8], iamat: &Iamat<'_>, now: Nanos) {
    let line = reply.strip_suffix(b"\n").expect("ends in \\n");
    assert!(!line.contains(&b'\n'));
    let Command::At(at) = protocol::parse(line) else {
        panic!("not an AT line: {}", line.escape_ascii());
    };
    assert_eq!(at.server, SERVER.as_bytes());
    assert_eq!(at.client, iamat.client);
    assert_eq!(at.coords, iamat.coords);
    assert_eq!(at.time, iamat.time);
    assert_eq!(at.sent_at, iamat.sent_at);
    assert_eq!(diff_value(at.diff), now - iamat.sent_at);
    let fields: [&[u8]; 6] = [b"AT", at.server, at.diff, at.client, at.coords, at.time];
    assert_eq!(line, fields.join(&b' '));
}

/// The engine's effects, as the loop would perform them with a Places
/// client that always fails.
#[derive(Default)]
struct Sink {
    out: Vec<u8>,
    journaled: usize,
    flooded: usize,
}

impl Effects for Sink {
    fn reply(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }
    fn whatsat(&mut self, head: &[u8], query: Query) {
        assert!((1..=20).contains(&query.bound));
        let metres = query.radius_m.bytes();
        assert!(metres.clone().all(|b| b.is_ascii_digit() || b == b'.'));
        self.out.extend_from_slice(head);
        self.out
            .extend_from_slice(&failure_body("REQUEST_DENIED", "no key"));
    }
    fn journal(&mut self, line: &[u8]) {
        assert!(matches!(protocol::parse(line), Command::At(_)));
        self.journaled += 1;
    }
    fn flood(&mut self, line: &[u8], _except: Option<usize>) {
        assert!(line.ends_with(b"\n"));
        self.flooded += 1;
    }
    fn neighbour_dialled(&mut self, _i: usize) {}
}

/// Answers one piece with the engine, and checks what it did.
fn answer(
    engine: &mut Engine,
    session: &mut Session,
    (too_long, piece): &Owned,
    limit: usize,
    now: Nanos,
    sink: &mut Sink,
) {
    let start = sink.out.len();
    let journaled = sink.journaled;
    assert!(!piece.contains(&b'\n'));
    let p = if *too_long { Piece::TooLong(piece) } else { Piece::Line(piece) };
    let known_before = match protocol::parse(piece) {
        Command::Whatsat(w) => engine.store().get(w.client).map(|e| e.line.to_vec()),
        _ => None,
    };
    let next = engine.handle(session, p, &mut Clock::fixed(now), sink);
    let reply = &sink.out[start..];
    if *too_long {
        assert_eq!(piece.len(), limit);
        // The first bytes exactly as received, a last `\r` included.
        assert_eq!(reply, [b"? ", &piece[..], b"\n"].concat());
        assert_eq!(next, Next::Charge(limit + 1));
        return;
    }
    assert!(piece.strip_suffix(b"\r").unwrap_or(piece).len() <= limit);
    let invalid = |reply: &[u8]| {
        assert_invalid(reply, piece);
        assert_eq!(next, Next::Charge(piece.len() + 1));
    };
    match protocol::parse(piece) {
        Command::Blank => {
            assert!(piece.iter().all(|&b| protocol::is_space(b)));
            assert!(reply.is_empty());
        }
        Command::Iamat(iamat) => {
            assert_at(reply, &iamat, now);
            assert!(sink.journaled - journaled <= 1);
            let line = &reply[..reply.len() - 1];
            assert!(engine.store().get(iamat.client).is_some_and(|e| e.line >= line
                || e.sent_at > iamat.sent_at));
        }
        Command::Whatsat(_) => match known_before {
            None => invalid(reply),
            Some(stored) => {
                let (head, json) = reply.split_at(stored.len() + 1);
                assert_eq!(&head[..stored.len()], &stored[..]);
                assert!(matches!(protocol::parse(head), Command::At(_)));
                assert!(json.ends_with(b"}\n\n"));
                assert!(!json[..json.len() - 2].windows(2).any(|w| w == b"\n\n"));
            }
        },
        Command::At(at) => {
            // An update (an open herd takes them from anyone): no reply;
            // the store now holds it or something newer.
            assert!(reply.is_empty());
            let stored = engine.store().get(at.client).expect("stored");
            assert!(stored.sent_at >= at.sent_at);
        }
        // Link lines.
        Command::Herd { .. }
        | Command::Challenge { .. }
        | Command::Auth { .. }
        | Command::Sync { .. }
        | Command::Ping => {
            // Accepted silently, or with a heartbeat (a HERD accepted in
            // an open herd is answered with PING), or refused.
            if !reply.is_empty() && reply != protocol::PING {
                invalid(reply);
            }
        }
        Command::Invalid => invalid(reply),
    }
}

fn answer_all(input: &Input<'_>, pieces: &[Owned]) {
    let mut engine = Engine::new(SERVER, Store::new(), None, vec![(0, "Hands".into())], input.limit);
    let mut session = Session::new("127.0.0.1:5000".parse().expect("an address"));
    let mut sink = Sink::default();
    for piece in pieces {
        answer(&mut engine, &mut session, piece, input.limit, input.now, &mut sink);
    }
}

fuzz_target!(|data: &[u8]| {
    let input = split(data);
    let (whole, discarded) = pieces(&input, &[input.payload.len()]);
    let cut = pieces(&input, &input.cuts);
    assert_eq!((&whole, discarded), (&cut.0, cut.1), "chunking changed the pieces");
    assert_eq!(whole, reference(input.payload, input.limit));
    // (Equal pieces give equal replies: answering them once is enough.)
    answer_all(&input, &whole);
});

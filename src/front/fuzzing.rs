//! The checks of the `fronts` fuzz target (`fuzz/fuzz_targets/fronts.rs`),
//! here so that the unit tests and proptests run the very same code on
//! stable Rust: [`check`] drives the request-head parser, the body reader
//! (by `Content-Length` and chunked), the OsmAnd parser and the WebSocket
//! decoder with arbitrary bytes in arbitrary chunkings, and panics on any
//! broken invariant:
//!
//! - nothing panics, whatever the bytes;
//! - cutting the input into pieces never changes what is decoded (heads,
//!   bodies, consumed counts, events, errors and their codes);
//! - memory stays bounded: a body never past its limit, framing never past
//!   [`request::MAX_CHUNK_LINE`], a WebSocket decoder never holding more
//!   than its limit and a control frame and a header;
//! - every OsmAnd report makes an IAMAT line the line protocol accepts with
//!   exactly the report's fields.
//!
//! Input layout: byte 0 is a mode (bits 0–2: the number of cuts; bits
//! 3–4: a limit, 64 KiB, 16, 100 or 1 KiB; bits 5–6: a content type for
//! the OsmAnd body: none, form, JSON, other); then two bytes (little-endian)
//! per cut, a position in the payload modulo its length + 1; then the
//! payload. An input too short for its cuts is all payload, mode 0.

use super::{osmand, request, ws};
use crate::protocol::{self, Command, Nanos};

/// The body and message limits the mode byte chooses from.
const LIMITS: [usize; 4] = [64 * 1024, 16, 100, 1024];

/// The content types the mode byte chooses from.
const TYPES: [Option<&[u8]>; 4] = [
    None,
    Some(b"application/x-www-form-urlencoded"),
    Some(b"application/json; charset=utf-8"),
    Some(b"text/plain"),
];

/// A fuzz input, split as the module header says.
pub struct Input<'a> {
    pub limit: usize,
    pub content_type: Option<&'static [u8]>,
    /// Sorted cut positions in `payload`, ending with its length.
    pub cuts: Vec<usize>,
    pub payload: &'a [u8],
}

/// Splits raw fuzz bytes into an [`Input`].
pub fn split(data: &[u8]) -> Input<'_> {
    let mode = data.first().copied().unwrap_or(0);
    let n = usize::from(mode & 7);
    let (mode, header, payload) = match data.get(1..1 + 2 * n) {
        Some(header) => (mode, header, &data[1 + 2 * n..]),
        None => (0, &data[..0], data),
    };
    let mut cuts: Vec<usize> = header
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (payload.len() + 1))
        .collect();
    cuts.push(payload.len());
    cuts.sort_unstable();
    Input {
        limit: LIMITS[usize::from(mode >> 3) & 3],
        content_type: TYPES[usize::from(mode >> 5) & 3],
        cuts,
        payload,
    }
}

/// Runs every check on one fuzz input.
pub fn check(data: &[u8]) {
    let input = split(data);
    check_head(&input);
    for chunked in [false, true] {
        let whole = body(input.payload, &[input.payload.len()], chunked, input.limit);
        let cut = body(input.payload, &input.cuts, chunked, input.limit);
        assert_eq!(whole, cut, "chunking changed the body");
    }
    check_osmand(&input);
    let whole = ws_events(input.payload, &[input.payload.len()], input.limit);
    let cut = ws_events(input.payload, &input.cuts, input.limit);
    assert_eq!(whole, cut, "chunking changed the WebSocket events");
}

/// The head parser on growing prefixes agrees with it on the whole input.
fn check_head(input: &Input<'_>) {
    let whole = request::parse_head(input.payload);
    if let Ok(Some(head)) = &whole {
        assert!(head.head_len <= input.payload.len().min(request::MAX_HEAD));
        assert!(head.version <= 1);
        assert!(!(head.chunked && head.content_length.is_some()));
        assert!(head.path.starts_with(b"/") || head.path == b"*");
        // The body that follows, read with the head's own framing.
        if let Ok(mut reader) = request::BodyReader::new(head, input.limit) {
            if let Ok(fed) = reader.feed(&input.payload[head.head_len..]) {
                assert!(fed.consumed <= input.payload.len() - head.head_len);
                assert!(reader.body().len() <= input.limit);
            }
        }
    }
    for &cut in &input.cuts {
        match request::parse_head(&input.payload[..cut]) {
            Ok(None) => continue,
            first => {
                assert_eq!(first, whole, "a prefix decided differently");
                break;
            }
        }
    }
}

/// What a body reader made of some input.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyOutcome {
    /// The body is complete: it, and the bytes consumed.
    Done(Vec<u8>, usize),
    /// More is needed: the body so far and the bytes consumed.
    Partial(Vec<u8>, usize),
    /// An error: its status and reason.
    Failed(u16, &'static str),
}

/// Feeds `payload` cut at `cuts` (sorted, ending with its length) to a body
/// reader for a chunked body or, if not `chunked`, a `Content-Length` body
/// of the payload's length minus its last byte's value (a body that ends
/// before or after the payload does). Checks the memory bounds on the way.
pub fn body(payload: &[u8], cuts: &[usize], chunked: bool, limit: usize) -> BodyOutcome {
    let head = request::RequestHead {
        chunked,
        content_length: (!chunked).then(|| {
            payload
                .len()
                .saturating_sub(usize::from(*payload.last().unwrap_or(&0))) as u64
        }),
        ..request::RequestHead::default()
    };
    let mut reader = match request::BodyReader::new(&head, limit) {
        Ok(reader) => reader,
        Err(e) => return BodyOutcome::Failed(e.status, e.reason),
    };
    let mut consumed = 0;
    let mut start = 0;
    for &end in cuts {
        if reader.is_done() {
            break;
        }
        match reader.feed(&payload[start..end]) {
            Ok(fed) => {
                assert!(fed.consumed <= end - start);
                assert!(fed.done || fed.consumed == end - start, "stopped early");
                consumed += fed.consumed;
            }
            Err(e) => return BodyOutcome::Failed(e.status, e.reason),
        }
        assert!(reader.body().len() <= limit, "body past its limit");
        assert!(reader.framing_len() <= request::MAX_CHUNK_LINE);
        start = end;
    }
    match reader.is_done() {
        true => BodyOutcome::Done(reader.take_body(), consumed),
        false => BodyOutcome::Partial(reader.take_body(), consumed),
    }
}

/// A WebSocket event, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsOutcome {
    Message(bool, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, Vec<u8>),
    Failed(u16),
}

/// Feeds `payload` cut at `cuts` (sorted, ending with its length) to a
/// WebSocket decoder with message limit `limit`; the events, then the
/// error if any. Checks the memory bound on the way.
pub fn ws_events(payload: &[u8], cuts: &[usize], limit: usize) -> Vec<WsOutcome> {
    let mut decoder = ws::Decoder::new(limit);
    let mut events = Vec::new();
    let mut start = 0;
    for &end in cuts {
        let mut piece = payload[start..end].to_vec();
        start = end;
        let result = decoder.feed(&mut piece, |e| {
            events.push(match e {
                ws::Event::Message { text, data } => {
                    assert!(data.len() <= limit);
                    assert!(!text || std::str::from_utf8(data).is_ok());
                    WsOutcome::Message(text, data.to_vec())
                }
                ws::Event::Ping(p) => WsOutcome::Ping(p.to_vec()),
                ws::Event::Pong(p) => WsOutcome::Pong(p.to_vec()),
                ws::Event::Close { code, reason } => WsOutcome::Close(code, reason.to_vec()),
            })
        });
        assert!(
            decoder.buffered() <= limit + ws::MAX_CONTROL + 14,
            "decoder past its bound"
        );
        if let Err(e) = result {
            assert!(matches!(e.code, 1002 | 1007 | 1009));
            events.push(WsOutcome::Failed(e.code));
            break;
        }
        if decoder.is_finished() {
            break;
        }
    }
    events
}

/// The server clock the OsmAnd check writes missing timestamps with.
const NOW: Nanos = 1_520_023_934_918_963_997;

/// The OsmAnd parser on the payload cut in two (query and body): never a
/// panic, and every report an IAMAT the line protocol takes as it is.
fn check_osmand(input: &Input<'_>) {
    let at = input.cuts.first().copied().unwrap_or(0);
    let (query, body) = input.payload.split_at(at);
    let Ok(reports) = osmand::parse(query, input.content_type, body) else {
        return;
    };
    assert!(!reports.is_empty() && reports.len() <= osmand::MAX_REPORTS);
    for report in &reports {
        assert_iamat(report, NOW);
    }
}

/// The report's IAMAT line parses as an IAMAT with exactly its fields.
pub fn assert_iamat(report: &osmand::Report, now: Nanos) {
    let mut line = Vec::new();
    report.write_iamat(&mut line, now);
    match protocol::parse(&line) {
        Command::Iamat(iamat) => {
            assert_eq!(iamat.client, &report.client[..]);
            assert_eq!(iamat.coords, &report.coords[..]);
            if let Some(time) = &report.time {
                assert_eq!(iamat.time, &time[..]);
            } else {
                assert_eq!(iamat.sent_at, now);
            }
            assert!(line.len() < 1024, "an IAMAT line past 1 KiB");
        }
        other => panic!("not an IAMAT: {other:?} from {}", line.escape_ascii()),
    }
}

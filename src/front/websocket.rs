//! A connection after `GET /v1/ws` (docs/PROTOCOL.md §14.3): RFC 6455
//! frames in, lines to the engine, each reply one message out.
//!
//! The decoding is [`super::ws::Decoder`]'s (pure, fuzzed); this is the
//! connection's side: each data message holds one or more lines, the end
//! of the message ending its last line; pings get pongs; a close gets a
//! close; a protocol error closes with its code (1002, 1007, 1009). The
//! replies are shaped by the loop's sink, which seals each one as a
//! message ([`super::Envelope::Message`]).

use super::http::Cx;
use super::ws::{self, Decoder, Event, Opcode};
use super::{Sink, Step};
use crate::conn::Piece;
use crate::engine::Next;
use crate::logging;

/// A WebSocket connection's state: its frame decoder (a message in
/// progress is at most the line limit).
#[derive(Debug)]
pub struct Ws {
    decoder: Decoder,
}

impl Ws {
    /// A WebSocket whose messages may hold up to `limit` bytes.
    pub fn new(limit: usize) -> Ws {
        Ws {
            decoder: Decoder::new(limit),
        }
    }

    /// Decodes the bytes of one read (unmasked in place) and hands every
    /// line of every message to the engine.
    pub fn feed(&mut self, data: &mut [u8], cx: &mut Cx<'_>, sink: &mut impl Sink) -> Step {
        if self.decoder.is_finished() {
            return Step::Close;
        }
        let (mut charge, mut close) = (0, None);
        let mut control = Vec::new();
        let result = self.decoder.feed(data, |event| match event {
            Event::Message { data, .. } => {
                for line in lines(data) {
                    if let Next::Charge(n) =
                        cx.engine
                            .handle(cx.session, Piece::Line(line), cx.clock, sink)
                    {
                        charge += n;
                    }
                }
            }
            Event::Ping(payload) => {
                control.clear();
                ws::write_frame(&mut control, Opcode::Pong, payload);
                sink.raw(&control);
            }
            Event::Pong(_) => {}
            Event::Close { code, .. } => close = Some(code.unwrap_or(ws::CLOSE_NORMAL)),
        });
        if let Err(e) = result {
            logging::traffic(
                "to",
                &cx.session.peer,
                e.reason.as_bytes(),
                " (WebSocket closed)",
            );
            log::info!(target: cx.engine.name(), "WebSocket {}: closing with {}: {}", cx.session.peer, e.code, e.reason);
            let mut frame = Vec::new();
            ws::write_close(&mut frame, e.code, e.reason);
            sink.raw(&frame);
            return Step::Close;
        }
        if let Some(code) = close {
            // Echo the peer's code, as RFC 6455 §5.5.1 suggests; codes that
            // may not be sent (1005, 1006, 1015) answered as a normal close.
            let code = match code {
                1005 | 1006 | 1015 => ws::CLOSE_NORMAL,
                code => code,
            };
            let mut frame = Vec::new();
            ws::write_close(&mut frame, code, "");
            sink.raw(&frame);
            return Step::Close;
        }
        Step::Continue(charge)
    }
}

/// The lines of one message: split on `\n`; the end of the message ends
/// the last one (an empty last piece is no line).
fn lines(message: &[u8]) -> impl Iterator<Item = &[u8]> {
    let trailing_newline = message.last() == Some(&b'\n');
    let body = if trailing_newline {
        &message[..message.len() - 1]
    } else {
        message
    };
    let empty = message.is_empty();
    body.split(|&b| b == b'\n').filter(move |_| !empty)
}

#[cfg(test)]
mod tests {
    use super::lines;

    #[test]
    fn a_message_is_lines_and_its_end_ends_the_last() {
        let cases: &[(&[u8], &[&[u8]])] = &[
            (b"IAMAT a +1+1 1", &[b"IAMAT a +1+1 1"]),
            (b"IAMAT a +1+1 1\n", &[b"IAMAT a +1+1 1"]),
            (b"a\nb", &[b"a", b"b"]),
            (b"a\r\nb\r\n", &[b"a\r", b"b\r"]),
            (b"a\n\nb", &[b"a", b"", b"b"]),
            (b"\n", &[b""]),
            (b"", &[]),
        ];
        for (message, want) in cases {
            let got: Vec<&[u8]> = lines(message).collect();
            assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(message));
        }
    }
}

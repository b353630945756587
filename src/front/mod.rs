//! Fronts: the wire formats other than the line protocol that reach the
//! one engine (docs/PROTOCOL.md §14).
//!
//! A front owns the framing, limits and errors of its wire format and
//! nothing else: what a request *means* is decided by
//! [`crate::engine::Engine`], exactly as for a line on a client port. An
//! OsmAnd report becomes the IAMAT that says the same thing; a `/v1/lines`
//! body and a WebSocket message are lines; `GET /v1/clients/ID/places` is a
//! WHATSAT. The loop reads and writes the sockets; the fronts turn bytes
//! into engine calls and the engine's replies into responses and frames.
//!
//! * [`http`]: an HTTP connection's state machine (head, body, deadlines)
//!   and its routes; [`websocket`]: a connection after the upgrade.
//! * [`response`]: how replies leave: an [`Envelope`] seals the bytes the
//!   engine wrote (an HTTP response, whose length is known only once every
//!   Places answer it waits for is in; a WebSocket message).
//! * The pure halves, tested and fuzzed without sockets: [`request`] (HTTP
//!   request heads, bodies, forms), [`osmand`] (location reports into IAMAT
//!   lines), [`ws`] (RFC 6455 handshake and frames), [`token`].
//!
//! A connection of an `http` or `https` port carries a boxed [`Front`] in
//! its [`crate::conn::Conn`]: HTTP until a `GET /v1/ws` upgrades it, then
//! WebSocket. Replies reach it through a [`Sink`], the loop's side of the
//! engine's effects plus gathering for envelopes.

pub mod fuzzing;
pub mod http;
pub mod osmand;
pub mod request;
pub mod response;
pub mod token;
pub mod websocket;
pub mod ws;

pub use response::Envelope;
pub use token::Token;

use std::time::Instant;

use crate::engine::Effects;

/// The engine's effects, plus what a front needs to shape the replies.
pub trait Sink: Effects {
    /// Replies from now on are gathered for one envelope, until
    /// [`Sink::enclose`].
    fn gather(&mut self);
    /// What was gathered since [`Sink::gather`] leaves in `envelope`, in
    /// request order: at once, or once the Places answers it holds are in.
    fn enclose(&mut self, envelope: Envelope);
    /// Bytes that leave as they are, in order (a `100 Continue`, the
    /// upgrade's `101`, a WebSocket control frame).
    fn raw(&mut self, bytes: &[u8]);
    /// The connection was upgraded: replies from now on are WebSocket
    /// messages, one each.
    fn messages(&mut self);
}

/// The front of a connection on an `http` or `https` port.
#[derive(Debug)]
pub enum Front {
    /// HTTP/1.x requests.
    Http(http::Http),
    /// Upgraded by `GET /v1/ws`.
    Ws(websocket::Ws),
}

impl Front {
    /// A new HTTP connection, accepted at `now`.
    pub fn http(now: Instant) -> Front {
        Front::Http(http::Http::new(now))
    }

    /// True once upgraded: replies are WebSocket messages.
    pub fn is_ws(&self) -> bool {
        matches!(self, Front::Ws(_))
    }

    /// Reads the bytes of one read (`data` may be changed in place: a
    /// WebSocket unmasks there).
    pub fn feed(&mut self, data: &mut [u8], cx: &mut http::Cx<'_>, sink: &mut impl Sink) -> Step {
        let rest = match self {
            Front::Ws(ws) => return ws.feed(data, cx, sink),
            Front::Http(h) => match h.feed(data, cx, sink) {
                http::HttpStep::Step(step) => return step,
                http::HttpStep::Upgrade(rest) => rest,
            },
        };
        cx.engine.stats().websocket(true);
        log::info!(target: cx.engine.name(), "client {} upgraded to WebSocket", cx.session.peer);
        sink.messages();
        let mut ws = websocket::Ws::new(cx.line_limit);
        let mut rest = rest;
        let step = if rest.is_empty() {
            Step::Continue(0)
        } else {
            ws.feed(&mut rest, cx, sink)
        };
        *self = Front::Ws(ws);
        step
    }

    /// The deadline to arm a timer for, if it is earlier than the one
    /// armed (then it counts as armed).
    pub fn rearm(&mut self, t: http::Timeouts) -> Option<Instant> {
        match self {
            Front::Http(h) => h.rearm(t),
            Front::Ws(_) => None,
        }
    }
}

/// What a front asks of the loop after a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Step {
    /// Go on reading; charge this many bytes of invalid input to the
    /// connection's throttle (0: none).
    Continue(usize),
    /// Read nothing more; close once everything owed is written.
    Close,
}

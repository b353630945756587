//! An HTTP/1.x connection: requests read incrementally, routed, turned into
//! engine calls, answered in order (docs/PROTOCOL.md §14).
//!
//! States of one connection, kept in [`Http`]:
//!
//! ```text
//! Waiting ──first byte──▶ Head ──head parsed──▶ Body ──body read──▶ dispatch ─▶ Waiting
//!    │                     │  (no body) ──────────────────────────▶ dispatch
//!    └─ idle past KEEPALIVE_TIMEOUT: closed    └─ not whole by REQUEST_TIMEOUT: 408, closed
//! GET /v1/ws ──▶ 101, the connection is a WebSocket from then on
//! ```
//!
//! Only an unfinished head is kept between reads (at most
//! [`request::MAX_HEAD`] bytes; more is `431`); a body is kept by its
//! [`BodyReader`] (at most [`MAX_BODY`]; more is `413`). Between requests
//! a connection holds no buffer at all.
//!
//! Routes: `/v1/clients/ID` (GET), `/v1/clients/ID/places` (GET: a
//! WHATSAT), `/v1/lines` (POST: lines), `/v1/ws` (GET: the upgrade),
//! anything else under `/v1/` is `404`; every other path, with any method,
//! is an OsmAnd location report: each position the IAMAT that says the same
//! thing. Every engine call is the same as on a line port; this module only
//! shapes requests into lines and replies into responses.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use super::request::{self, BodyReader, HttpError, RequestHead};
use super::response::{self, json_degrees, json_string, Envelope, Response, Shape, JSON, TEXT};
use super::{osmand, Sink, Step};
use crate::conn::{LineReader, Piece};
use crate::engine::{Clock, Engine, Next, Session};
use crate::logging;
use crate::protocol::{self, Command};
use crate::stats::Route;

/// The largest request body accepted, in bytes (more is `413`).
pub const MAX_BODY: usize = 64 * 1024;
/// The most lines one `POST /v1/lines` body may hold (more is `413`).
pub const MAX_LINES: usize = 1024;
/// A request must arrive whole (head and body) within this time of its
/// first byte — or of the connection's opening — or it gets `408`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive connection with no request under way is closed after this.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// An emptied head buffer larger than this is freed rather than kept.
const KEEP_CAPACITY: usize = 1024;

/// How long a request may take and a kept-alive connection may idle
/// (`--request-timeout`, `--keepalive-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub request: Duration,
    pub keepalive: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            request: REQUEST_TIMEOUT,
            keepalive: KEEPALIVE_TIMEOUT,
        }
    }
}

/// What an HTTP connection keeps between reads.
#[derive(Debug)]
pub struct Http {
    /// The start of a head that has not arrived whole.
    buf: Vec<u8>,
    /// The request whose body is being read.
    body: Option<Box<Pending>>,
    /// When the current wait began: the connection opened, a request's
    /// first byte came, or the last request was answered.
    since: Instant,
    /// Bytes of a request have come and it is not answered yet (or the
    /// connection is new): [`REQUEST_TIMEOUT`] applies, not the idle one.
    in_request: bool,
    /// The deadline a timer is armed for.
    armed: Option<Instant>,
}

/// A request whose head is read and whose body is coming.
#[derive(Debug)]
struct Pending {
    head: RequestHead,
    route: Route,
    reader: BodyReader,
    /// `100 Continue` was sent.
    continued: bool,
}

/// What the loop hands a front for one read.
pub struct Cx<'a> {
    pub engine: &'a mut Engine,
    pub session: &'a mut Session,
    pub clock: &'a mut Clock,
    /// The token requests must carry, if any.
    pub token: Option<&'a super::Token>,
    /// The server's line limit (also the largest WebSocket message).
    pub line_limit: usize,
    pub now: Instant,
}

/// What a read of an HTTP connection came to.
#[derive(Debug)]
pub enum HttpStep {
    Step(Step),
    /// `GET /v1/ws` was answered `101`: the connection is a WebSocket from
    /// now on, and these bytes (sent right behind the request) are its first.
    Upgrade(Vec<u8>),
}

/// What a deadline of the connection came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Not yet: a timer is armed again for this instant.
    No(Instant),
    /// A request did not arrive whole in time: answered `408`; close.
    Request,
    /// Idle too long between requests: close.
    Idle,
}

impl Http {
    /// A connection accepted at `now`: its first request must come by
    /// [`REQUEST_TIMEOUT`].
    pub fn new(now: Instant) -> Http {
        Http {
            buf: Vec::new(),
            body: None,
            since: now,
            in_request: true,
            armed: None,
        }
    }

    /// The deadline that applies now.
    fn due(&self, t: Timeouts) -> Instant {
        let wait = if self.in_request {
            t.request
        } else {
            t.keepalive
        };
        self.since + wait
    }

    /// The deadline to arm a timer for, if none is armed at or before it.
    pub fn rearm(&mut self, t: Timeouts) -> Option<Instant> {
        let due = self.due(t);
        match self.armed {
            Some(armed) if armed <= due => None,
            _ => {
                self.armed = Some(due);
                Some(due)
            }
        }
    }

    /// The armed timer fired at `now`; `busy`: responses are still owed
    /// (an idle connection waiting for Places is not idle).
    pub fn expired(
        &mut self,
        now: Instant,
        t: Timeouts,
        busy: bool,
        sink: &mut impl Sink,
    ) -> Expired {
        self.armed = None;
        let due = self.due(t);
        if now < due || (busy && !self.in_request) {
            let at = if now < due { due } else { now + t.keepalive };
            self.since = if now < due { self.since } else { now };
            self.armed = Some(at);
            return Expired::No(at);
        }
        if !self.in_request {
            return Expired::Idle;
        }
        self.body = None;
        self.buf = Vec::new();
        error(sink, 408, "the request did not arrive in time", true, false);
        Expired::Request
    }

    /// Reads the bytes of one read: answers every request they complete.
    pub fn feed(&mut self, data: &[u8], cx: &mut Cx<'_>, sink: &mut impl Sink) -> HttpStep {
        if self.buf.is_empty() {
            let (used, step) = self.process(data, cx, sink);
            if matches!(step, HttpStep::Step(Step::Continue(_))) && used < data.len() {
                self.buf.extend_from_slice(&data[used..]);
            }
            return step;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(data);
        let (used, step) = self.process(&buf, cx, sink);
        if matches!(step, HttpStep::Step(Step::Continue(_))) && used < buf.len() {
            buf.drain(..used);
            self.buf = buf;
        } else if buf.capacity() <= KEEP_CAPACITY {
            buf.clear();
            self.buf = buf;
        }
        step
    }

    /// The peer closed its sending side: a request cut short is dropped.
    pub fn finish(&mut self) {
        self.body = None;
        self.buf = Vec::new();
    }

    /// Reads requests from `input`; returns how much of it was used (the
    /// rest is the start of a head) and what the loop must do.
    fn process(
        &mut self,
        input: &[u8],
        cx: &mut Cx<'_>,
        sink: &mut impl Sink,
    ) -> (usize, HttpStep) {
        let mut pos = 0;
        let mut charged = 0;
        loop {
            if let Some(p) = self.body.as_mut() {
                let fed = match p.reader.feed(&input[pos..]) {
                    Ok(fed) => fed,
                    Err(e) => {
                        self.body = None;
                        http_error(sink, cx, &e);
                        return (input.len(), HttpStep::Step(Step::Close));
                    }
                };
                pos += fed.consumed;
                if !fed.done {
                    if p.head.expect_continue && !p.continued {
                        p.continued = true;
                        sink.raw(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    return (pos, HttpStep::Step(Step::Continue(charged)));
                }
                let Some(mut p) = self.body.take() else {
                    continue;
                };
                let body = p.reader.take_body();
                match self.answer(&p.head, p.route, &body, cx, sink) {
                    Answered::Done(charge) => charged += charge,
                    Answered::Close => return (input.len(), HttpStep::Step(Step::Close)),
                    Answered::Upgrade => {
                        return (input.len(), HttpStep::Upgrade(input[pos..].to_vec()))
                    }
                }
                continue;
            }
            if pos == input.len() {
                return (pos, HttpStep::Step(Step::Continue(charged)));
            }
            if !self.in_request {
                self.in_request = true;
                self.since = cx.now;
            }
            let head = match request::parse_head(&input[pos..]) {
                Ok(Some(head)) => head,
                Ok(None) if input.len() - pos < request::MAX_HEAD => {
                    return (pos, HttpStep::Step(Step::Continue(charged)));
                }
                Ok(None) => {
                    let e = HttpError::new(431, "the request head is too large");
                    http_error(sink, cx, &e);
                    return (input.len(), HttpStep::Step(Step::Close));
                }
                Err(e) => {
                    http_error(sink, cx, &e);
                    return (input.len(), HttpStep::Step(Step::Close));
                }
            };
            pos += head.head_len;
            let route = Route::of(&head.path);
            if head.has_body() {
                match BodyReader::new(&head, MAX_BODY) {
                    Ok(reader) => {
                        self.body = Some(Box::new(Pending {
                            head,
                            route,
                            reader,
                            continued: false,
                        }));
                    }
                    Err(e) => {
                        log_request(cx, &head, 0);
                        http_error(sink, cx, &e);
                        return (input.len(), HttpStep::Step(Step::Close));
                    }
                }
                continue;
            }
            match self.answer(&head, route, &[], cx, sink) {
                Answered::Done(charge) => charged += charge,
                Answered::Close => return (input.len(), HttpStep::Step(Step::Close)),
                Answered::Upgrade => {
                    return (input.len(), HttpStep::Upgrade(input[pos..].to_vec()))
                }
            }
        }
    }

    /// Answers one whole request.
    fn answer(
        &mut self,
        head: &RequestHead,
        route: Route,
        body: &[u8],
        cx: &mut Cx<'_>,
        sink: &mut impl Sink,
    ) -> Answered {
        self.in_request = false;
        self.since = cx.now;
        log_request(cx, head, body.len());
        let mut reply = Reply::for_request(head);
        let charge = if !authorized(head, cx.token) {
            reply.extra = "WWW-Authenticate: Bearer\r\n";
            reply.fail(
                sink,
                cx,
                route,
                401,
                "a valid API token is needed (Authorization: Bearer TOKEN, or token= in the URL)",
            );
            0
        } else {
            match route {
                Route::Report => report(head, body, cx, sink, reply),
                Route::Client => client(head, cx, sink, reply),
                Route::Places => places(head, cx, sink, reply),
                Route::Lines => lines(head, body, cx, sink, reply),
                Route::Ws => {
                    if let Some(()) = upgrade(head, cx, sink, reply) {
                        return Answered::Upgrade;
                    }
                    0
                }
                Route::Other => {
                    reply.fail(sink, cx, route, 404, "no such resource");
                    0
                }
            }
        };
        if reply.close {
            Answered::Close
        } else {
            Answered::Done(charge)
        }
    }
}

/// What answering a request came to.
enum Answered {
    /// Answered; charge this much invalid input.
    Done(usize),
    /// Answered; the connection closes.
    Close,
    /// Answered `101`: a WebSocket from now on.
    Upgrade,
}

impl Route {
    /// The route of a request path (raw, not yet percent-decoded).
    pub fn of(path: &[u8]) -> Route {
        let Some(rest) = path.strip_prefix(b"/v1/") else {
            return Route::Report;
        };
        if rest == b"lines" {
            return Route::Lines;
        }
        if rest == b"ws" {
            return Route::Ws;
        }
        if let Some(id) = rest.strip_prefix(b"clients/") {
            return match memchr::memchr(b'/', id) {
                None if !id.is_empty() => Route::Client,
                Some(i) if i > 0 && &id[i..] == b"/places" => Route::Places,
                _ => Route::Other,
            };
        }
        Route::Other
    }
}

/// How the response to one request is framed: its status line's
/// companions, decided by the request.
#[derive(Debug, Clone, Copy)]
struct Reply {
    close: bool,
    keep_alive_10: bool,
    head_only: bool,
    /// Errors under `/v1/` are JSON, elsewhere one line of text.
    api: bool,
    extra: &'static str,
}

impl Reply {
    fn for_request(head: &RequestHead) -> Reply {
        Reply {
            close: !head.keep_alive,
            keep_alive_10: head.keep_alive && head.version == 0,
            head_only: head.method == "HEAD",
            api: head.path.starts_with(b"/v1/"),
            extra: "",
        }
    }

    fn response(&self, status: u16, content_type: &'static str) -> Response {
        Response {
            close: self.close,
            keep_alive_10: self.keep_alive_10,
            head_only: self.head_only,
            extra: self.extra,
            ..Response::new(status, content_type)
        }
    }

    /// Answers `status` with `why`: `{"error": why}` under `/v1/`, a line
    /// of text elsewhere.
    fn fail(&self, sink: &mut impl Sink, cx: &mut Cx<'_>, route: Route, status: u16, why: &str) {
        cx.engine.stats().http(route, status);
        let mut body = Vec::with_capacity(why.len() + 16);
        let content_type = if self.api {
            body.extend_from_slice(b"{\"error\": ");
            json_string(&mut body, why.as_bytes());
            body.extend_from_slice(b"}\n");
            JSON
        } else {
            body.extend_from_slice(why.as_bytes());
            body.push(b'\n');
            TEXT
        };
        log_response(cx, status, body.len());
        sink.gather();
        sink.reply(&body);
        sink.enclose(Envelope::http(self.response(status, content_type)));
    }
}

/// Answers a request the head parser or body reader refused; the
/// connection closes after it.
fn http_error(sink: &mut impl Sink, cx: &mut Cx<'_>, e: &HttpError) {
    cx.engine.stats().http(Route::Other, e.status);
    log_response(cx, e.status, e.reason.len() + 1);
    error(sink, e.status, e.reason, true, false);
}

/// A one-line text error response.
fn error(sink: &mut impl Sink, status: u16, why: &str, close: bool, api: bool) {
    let reply = Reply {
        close,
        keep_alive_10: false,
        head_only: false,
        api,
        extra: "",
    };
    let mut body = why.as_bytes().to_vec();
    body.push(b'\n');
    sink.gather();
    sink.reply(&body);
    sink.enclose(Envelope::http(reply.response(status, TEXT)));
}

/// Whether the request carries the API token (always, without one).
fn authorized(head: &RequestHead, token: Option<&super::Token>) -> bool {
    let Some(token) = token else {
        return true;
    };
    if head.bearer.as_deref().is_some_and(|b| token.matches(b)) {
        return true;
    }
    request::pairs(&head.query).any(|(k, v)| &*k == b"token" && token.matches(&v))
}

/// An OsmAnd report: each position the IAMAT that says the same thing,
/// answered with their AT lines once journaled; a bad report stores
/// nothing (a batch is stored whole or not at all).
fn report(
    head: &RequestHead,
    body: &[u8],
    cx: &mut Cx<'_>,
    sink: &mut impl Sink,
    reply: Reply,
) -> usize {
    let reports = match osmand::parse(&head.query, head.content_type.as_deref(), body) {
        Ok(reports) => reports,
        Err(why) => {
            reply.fail(sink, cx, Route::Report, 400, why.as_str());
            return 0;
        }
    };
    let now = cx.clock.now();
    let mut lines = Vec::with_capacity(reports.len());
    for r in &reports {
        let mut line = Vec::with_capacity(96);
        r.write_iamat(&mut line, now);
        // The reports were checked to be valid IAMATs; were one not, the
        // engine would answer it `? `: refuse the whole request instead.
        if !matches!(protocol::parse(&line), Command::Iamat(_)) {
            reply.fail(sink, cx, Route::Report, 400, "not a valid position report");
            return 0;
        }
        lines.push(line);
    }
    sink.gather();
    for line in &lines {
        let _ = cx
            .engine
            .handle(cx.session, Piece::Line(line), cx.clock, sink);
    }
    cx.engine.stats().http(Route::Report, 200);
    let size = sink_size_hint(&lines);
    log_response(cx, 200, size);
    sink.enclose(Envelope::http(reply.response(200, TEXT)));
    0
}

/// Roughly the size of the AT lines answering `lines` (for the log only).
fn sink_size_hint(lines: &[Vec<u8>]) -> usize {
    lines.iter().map(|l| l.len() + 20).sum()
}

/// The client ID of `/v1/clients/ID[/places]`, percent-decoded; `None`
/// when it holds white space or control bytes (no client has such an ID).
fn client_id(path: &[u8]) -> Option<Vec<u8>> {
    let rest = path.strip_prefix(b"/v1/clients/")?;
    let raw = match memchr::memchr(b'/', rest) {
        Some(i) => &rest[..i],
        None => rest,
    };
    let id = request::percent_decode(raw, false).into_owned();
    let ok = !id.is_empty() && id.iter().all(|&b| b > b' ' && b != 0x7f);
    ok.then_some(id)
}

/// `GET /v1/clients/ID`: what the server knows of the client.
fn client(head: &RequestHead, cx: &mut Cx<'_>, sink: &mut impl Sink, mut reply: Reply) -> usize {
    if let Some(allow) = wrong_method(head, &["GET", "HEAD"]) {
        reply.extra = allow;
        reply.fail(sink, cx, Route::Client, 405, "method not allowed here");
        return 0;
    }
    let Some(id) = client_id(&head.path) else {
        reply.fail(sink, cx, Route::Client, 400, "bad client ID");
        return 0;
    };
    let Some(entry) = cx.engine.store().get(&id) else {
        reply.fail(sink, cx, Route::Client, 404, "unknown client");
        return 0;
    };
    // AT SERVER SKEW CLIENT COORDS TIME: a stored line is canonical, one
    // space between fields.
    let fields: Vec<&[u8]> = entry.line.split(|&b| b == b' ').collect();
    let position = entry.position();
    let mut body = Vec::with_capacity(entry.line.len() * 2 + 96);
    body.extend_from_slice(b"{\"client\": ");
    json_string(&mut body, &id);
    body.extend_from_slice(b", \"latitude\": ");
    json_degrees(&mut body, position.lat);
    body.extend_from_slice(b", \"longitude\": ");
    json_degrees(&mut body, position.lng);
    body.extend_from_slice(b", \"time\": ");
    json_string(&mut body, fields.last().copied().unwrap_or_default());
    body.extend_from_slice(b", \"server\": ");
    json_string(&mut body, fields.get(1).copied().unwrap_or_default());
    body.extend_from_slice(b", \"at\": ");
    json_string(&mut body, entry.line);
    body.extend_from_slice(b"}\n");
    cx.engine.stats().http(Route::Client, 200);
    log_response(cx, 200, body.len());
    sink.gather();
    sink.reply(&body);
    sink.enclose(Envelope::http(reply.response(200, JSON)));
    0
}

/// `GET /v1/clients/ID/places?radius=KM&bound=N`: the WHATSAT of §3.
fn places(head: &RequestHead, cx: &mut Cx<'_>, sink: &mut impl Sink, mut reply: Reply) -> usize {
    if let Some(allow) = wrong_method(head, &["GET", "HEAD"]) {
        reply.extra = allow;
        reply.fail(sink, cx, Route::Places, 405, "method not allowed here");
        return 0;
    }
    let Some(id) = client_id(&head.path) else {
        reply.fail(sink, cx, Route::Places, 400, "bad client ID");
        return 0;
    };
    let (mut radius, mut bound) = (None, None);
    for (k, v) in request::pairs(&head.query) {
        match &*k {
            b"radius" => radius = Some(v),
            b"bound" => bound = Some(v),
            _ => {}
        }
    }
    let (Some(radius), Some(bound)) = (radius, bound) else {
        reply.fail(
            sink,
            cx,
            Route::Places,
            400,
            "radius=KM and bound=N are needed",
        );
        return 0;
    };
    let mut line = b"WHATSAT ".to_vec();
    line.extend_from_slice(&id);
    for field in [&radius, &bound] {
        line.push(b' ');
        line.extend_from_slice(field);
    }
    if !matches!(protocol::parse(&line), Command::Whatsat(_)) {
        reply.fail(
            sink,
            cx,
            Route::Places,
            400,
            "radius must be a number of km in (0, 50] and bound an integer from 1 to 20",
        );
        return 0;
    }
    if cx.engine.store().get(&id).is_none() {
        reply.fail(sink, cx, Route::Places, 404, "unknown client");
        return 0;
    }
    sink.gather();
    let _ = cx
        .engine
        .handle(cx.session, Piece::Line(&line), cx.clock, sink);
    cx.engine.stats().http(Route::Places, 200);
    log_response(cx, 200, 0);
    sink.enclose(Envelope::http(Response {
        shape: Shape::Places,
        ..reply.response(200, JSON)
    }));
    0
}

/// `POST /v1/lines`: the body's lines, answered with exactly the bytes
/// the line protocol would write.
fn lines(
    head: &RequestHead,
    body: &[u8],
    cx: &mut Cx<'_>,
    sink: &mut impl Sink,
    mut reply: Reply,
) -> usize {
    if let Some(allow) = wrong_method(head, &["POST"]) {
        reply.extra = allow;
        reply.fail(sink, cx, Route::Lines, 405, "method not allowed here");
        return 0;
    }
    if memchr::memchr_iter(b'\n', body).count() > MAX_LINES {
        reply.fail(
            sink,
            cx,
            Route::Lines,
            413,
            &format!("more than {MAX_LINES} lines"),
        );
        return 0;
    }
    let mut invalid = 0;
    let mut reader = LineReader::default();
    let (engine, session, clock) = (&mut *cx.engine, &mut *cx.session, &mut *cx.clock);
    sink.gather();
    let mut each = |piece: Piece<'_>| {
        if let Next::Charge(n) = engine.handle(session, piece, clock, sink) {
            invalid += n;
        }
    };
    let discarded = reader.feed(body, cx.line_limit, &mut each);
    reader.finish(&mut each);
    let charge = invalid + discarded;
    cx.engine.stats().http(Route::Lines, 200);
    log_response(cx, 200, 0);
    sink.enclose(Envelope::http(reply.response(200, TEXT)));
    charge
}

/// `GET /v1/ws`: the WebSocket handshake. `Some` once answered `101`.
fn upgrade(
    head: &RequestHead,
    cx: &mut Cx<'_>,
    sink: &mut impl Sink,
    mut reply: Reply,
) -> Option<()> {
    if let Some(allow) = wrong_method(head, &["GET"]) {
        reply.extra = allow;
        reply.fail(sink, cx, Route::Ws, 405, "method not allowed here");
        return None;
    }
    match super::ws::handshake(head) {
        Ok(accept) => {
            let mut out = Vec::with_capacity(160);
            super::ws::write_switching_protocols(&mut out, &accept);
            cx.engine.stats().http(Route::Ws, 101);
            log_response(cx, 101, 0);
            sink.raw(&out);
            Some(())
        }
        Err(e) => {
            reply.fail(sink, cx, Route::Ws, e.status, e.reason);
            None
        }
    }
}

/// `Some(Allow header)` when the method is not one of `allowed`.
fn wrong_method(head: &RequestHead, allowed: &[&str]) -> Option<&'static str> {
    if allowed.contains(&head.method.as_str()) {
        return None;
    }
    Some(match allowed {
        ["POST"] => "Allow: POST\r\n",
        ["GET"] => "Allow: GET\r\n",
        _ => "Allow: GET, HEAD\r\n",
    })
}

/// Logs a request (at `debug`, like client lines), its token hidden.
fn log_request(cx: &Cx<'_>, head: &RequestHead, body: usize) {
    if !cx.engine.traffic() {
        return;
    }
    let mut text = Vec::with_capacity(head.path.len() + head.query.len() + 32);
    text.extend_from_slice(head.method.as_bytes());
    text.push(b' ');
    text.extend_from_slice(&head.path);
    if !head.query.is_empty() {
        text.push(b'?');
        text.extend_from_slice(&hide_token(&head.query));
    }
    let suffix = format!(" ({body} body bytes)");
    logging::traffic("from", &cx.session.peer, &text, &suffix);
}

/// Logs a response's status and size.
fn log_response(cx: &Cx<'_>, status: u16, size: usize) {
    if !cx.engine.traffic() {
        return;
    }
    let text = format!("HTTP {status} {}", response::reason(status));
    let suffix = if size > 0 {
        format!(" ({size} bytes)")
    } else {
        String::new()
    };
    logging::traffic("to", &cx.session.peer, text.as_bytes(), &suffix);
}

/// The query with the value of `token=` replaced, for the log.
fn hide_token(query: &[u8]) -> Cow<'_, [u8]> {
    if !query
        .split(|&b| b == b'&')
        .any(|p| p.starts_with(b"token="))
    {
        return Cow::Borrowed(query);
    }
    let parts: Vec<&[u8]> = query
        .split(|&b| b == b'&')
        .map(|p| {
            if p.starts_with(b"token=") {
                &b"token=(hidden)"[..]
            } else {
                p
            }
        })
        .collect();
    Cow::Owned(parts.join(&b'&'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let cases: &[(&[u8], Route)] = &[
            (b"/", Route::Report),
            (b"/osmand", Route::Report),
            (b"/v1", Route::Report),
            (b"/v1/lines", Route::Lines),
            (b"/v1/ws", Route::Ws),
            (b"/v1/clients/kiwi", Route::Client),
            (b"/v1/clients/k%20i", Route::Client),
            (b"/v1/clients/kiwi/places", Route::Places),
            (b"/v1/clients/", Route::Other),
            (b"/v1/clients//places", Route::Other),
            (b"/v1/clients/kiwi/other", Route::Other),
            (b"/v1/lines/", Route::Other),
            (b"/v1/", Route::Other),
        ];
        for (path, want) in cases {
            assert_eq!(Route::of(path), *want, "{}", String::from_utf8_lossy(path));
        }
    }

    #[test]
    fn client_ids_are_decoded_and_checked() {
        assert_eq!(client_id(b"/v1/clients/kiwi.cs"), Some(b"kiwi.cs".to_vec()));
        assert_eq!(
            client_id(b"/v1/clients/a%2Fb/places"),
            Some(b"a/b".to_vec())
        );
        assert_eq!(client_id(b"/v1/clients/a+b"), Some(b"a+b".to_vec()));
        assert_eq!(client_id(b"/v1/clients/a%20b"), None);
        assert_eq!(client_id(b"/v1/clients/a%0Ab"), None);
    }

    #[test]
    fn the_token_never_reaches_the_log() {
        assert_eq!(
            &*hide_token(b"id=1&token=s3cret&lat=1"),
            b"id=1&token=(hidden)&lat=1"
        );
        assert_eq!(&*hide_token(b"id=1"), b"id=1");
    }
}

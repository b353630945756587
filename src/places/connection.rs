//! One kept-alive connection to the Places API, as the pool sees it.
//!
//! A [`Conn`] is a [`TlsStream`] plus what the pool needs to decide about it:
//! its [`Phase`] (a TCP connect racing its own deadline, or open), the
//! resolved addresses it may still try, the request it carries (at most one:
//! we never pipeline, so a stray byte on an idle connection means the
//! connection is out of step), its response parser, and how many responses
//! it has served (more than none makes a failure before the first response
//! byte a retryable one: the server had closed a connection we reused).
//!
//! [`Conn::drive`] is the whole I/O step of an open connection — flush,
//! read to `WouldBlock`, feed the parser, flush again — and returns a
//! [`Drive`] that says what came of it, leaving every decision (answer,
//! retry, close, keep) to the pool. [`Conn::open`] and
//! [`Conn::next_address`] start connects over the addresses in turn,
//! skipping those that fail at once, so an address that cannot even be
//! dialled (an IPv6 one on a host without IPv6) costs no connect timeout.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Registry, Token};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use super::http::{HttpError, Progress, Response, ResponseParser};
use super::tls::{ReadStep, TlsError, TlsStream};
use super::Limits;
use crate::token;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// TCP connect under way to `addrs[addr_index]`, until `attempt_deadline`.
    Connecting { attempt_deadline: Instant },
    /// Connected (TLS may still be handshaking).
    Open,
}

/// A connection to the API.
pub(super) struct Conn {
    pub stream: TlsStream,
    pub phase: Phase,
    pub addrs: Arc<[SocketAddr]>,
    pub addr_index: usize,
    /// Addresses tried so far by this connection.
    pub tried: usize,
    /// The request (its key in the pool) it carries; `None` when idle.
    pub request: Option<usize>,
    pub parser: ResponseParser,
    /// Responses completed: more than 0 means a reused connection.
    pub served: u32,
    /// When it last became idle.
    pub idle_since: Instant,
    /// The pool's settings generation it was opened under.
    pub generation: u64,
}

/// What driving an open connection came to.
pub(super) enum Drive {
    /// Waiting for readiness.
    Waiting,
    Response(Response),
    /// An idle connection was closed by the server (or sent stray bytes).
    Closed,
    /// The connection broke; `before_response`: no response byte had come.
    Failed {
        message: String,
        before_response: bool,
    },
}

/// Why a connect could not be started.
pub(super) enum ConnectError {
    /// Every address left failed at once; what each said (maybe nothing,
    /// when none was left).
    Exhausted(String),
    /// A connect started but the request could not be queued on its TLS session.
    Queue(TlsError),
}

impl Conn {
    /// Starts a connection carrying request `rk` (its bytes `http` queued at
    /// once, to leave as soon as the handshake allows), trying `addrs` from
    /// `start`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        registry: &Registry,
        ck: usize,
        addrs: Arc<[SocketAddr]>,
        start: usize,
        (tls, name): (&Arc<ClientConfig>, &ServerName<'static>),
        (rk, http): (usize, &[u8]),
        limits: &Limits,
        now: Instant,
    ) -> Result<Conn, ConnectError> {
        let (mut stream, addr_index, tried) =
            try_connect(registry, places_token(ck), &addrs, start, 0, tls, name)
                .map_err(ConnectError::Exhausted)?;
        if let Err(e) = stream.queue(http) {
            stream.abandon(registry);
            return Err(ConnectError::Queue(e));
        }
        Ok(Conn {
            stream,
            phase: Phase::Connecting {
                attempt_deadline: now + limits.connect_timeout,
            },
            addrs,
            addr_index,
            tried,
            request: Some(rk),
            parser: ResponseParser::new(limits.max_body),
            served: 0,
            idle_since: now,
            generation: 0,
        })
    }

    /// The connect attempt failed: starts one to the next address not tried
    /// yet, queuing `http` (the request it carries) again, since the bytes
    /// queued on the abandoned session went nowhere. On an error the
    /// connection is left as it was, for the caller to remove.
    pub fn next_address(
        &mut self,
        registry: &Registry,
        ck: usize,
        (tls, name): (&Arc<ClientConfig>, &ServerName<'static>),
        http: Option<&[u8]>,
        attempt_deadline: Instant,
    ) -> Result<(), ConnectError> {
        let next = self.addr_index + 1;
        let (mut stream, addr_index, tried) = try_connect(
            registry,
            places_token(ck),
            &self.addrs,
            next,
            self.tried,
            tls,
            name,
        )
        .map_err(ConnectError::Exhausted)?;
        if let Err(e) = http.map_or(Ok(()), |http| stream.queue(http)) {
            stream.abandon(registry);
            return Err(ConnectError::Queue(e));
        }
        let old = std::mem::replace(&mut self.stream, stream);
        old.abandon(registry);
        self.addr_index = addr_index;
        self.tried = tried;
        self.phase = Phase::Connecting { attempt_deadline };
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[self.addr_index]
    }

    /// When this connection's own timer is due: the connect attempt's
    /// deadline, or the end of its idle time. None while it carries a
    /// request, whose own deadline covers it.
    pub fn next_deadline(&self, idle_timeout: Duration) -> Option<Instant> {
        match self.phase {
            Phase::Connecting { attempt_deadline } => Some(attempt_deadline),
            Phase::Open if self.request.is_none() => Some(self.idle_since + idle_timeout),
            Phase::Open => None,
        }
    }

    /// Writes pending TLS records, reads until the socket would block, feeds
    /// the response parser; plaintext is always drained before waiting.
    pub fn drive(&mut self, scratch: &mut Vec<u8>) -> Drive {
        let failed = |conn: &Conn, e: &dyn fmt::Display| Drive::Failed {
            message: e.to_string(),
            before_response: !conn.parser.started(),
        };
        if let Err(e) = self.stream.write_pending() {
            return failed(self, &e);
        }
        loop {
            scratch.clear();
            let step = match self.stream.read_step(scratch) {
                Ok(step) => step,
                Err(e) => return failed(self, &e),
            };
            if !scratch.is_empty() {
                if self.request.is_none() {
                    // We never pipeline: bytes on an idle connection are out of step.
                    return Drive::Closed;
                }
                match self.parser.feed(scratch) {
                    Ok(Progress::Partial) => {}
                    Ok(Progress::Done(mut response)) => {
                        if step == ReadStep::Eof {
                            response.keep_alive = false;
                        }
                        return Drive::Response(response);
                    }
                    Err(e) => return failed(self, &e),
                }
            }
            match step {
                ReadStep::Data => {}
                ReadStep::WouldBlock => break,
                // The server closed an idle connection: nothing lost.
                ReadStep::Eof if self.request.is_none() => return Drive::Closed,
                ReadStep::Eof => {
                    return match self.parser.finish_eof() {
                        Ok(response) => Drive::Response(response),
                        Err(e) => Drive::Failed {
                            message: e.to_string(),
                            before_response: e == HttpError::ClosedBeforeResponse,
                        },
                    }
                }
            }
        }
        // Reading may have produced records to send (handshake, key updates).
        if let Err(e) = self.stream.write_pending() {
            return failed(self, &e);
        }
        Drive::Waiting
    }
}

/// The token of Places connection `ck`. Connections are never more than
/// `max_in_flight`, which is clamped to the span, so a slab key always fits.
pub(super) fn places_token(ck: usize) -> Token {
    debug_assert!(ck < token::PLACES_SPAN);
    Token(token::PLACES_BASE + ck)
}

/// Starts a connect to `addrs[start..]` (wrapping), skipping addresses that
/// fail at once; `tried` counts addresses already tried by this connection.
/// Ok: the stream, the index of its address and the new `tried`; Err: what
/// each address tried here said, for the failure message.
fn try_connect(
    registry: &Registry,
    token: Token,
    addrs: &[SocketAddr],
    start: usize,
    mut tried: usize,
    config: &Arc<ClientConfig>,
    name: &ServerName<'static>,
) -> Result<(TlsStream, usize, usize), String> {
    let mut errors = Vec::new();
    let mut index = start;
    while tried < addrs.len() {
        let i = index % addrs.len();
        tried += 1;
        match TlsStream::connect(registry, token, addrs[i], config, name) {
            Ok(stream) => return Ok((stream, i, tried)),
            Err(e) => errors.push(format!("{}: {e}", addrs[i])),
        }
        index += 1;
    }
    Err(errors.join("; "))
}

//! The request side of HTTP/1.x for the fronts: a request head parsed from
//! the connection's buffer, a body read by `Content-Length` or chunked
//! transfer coding, and the `application/x-www-form-urlencoded` decoding
//! that query strings and form bodies share. Pure: bytes in, values or an
//! [`HttpError`] (a status and a one-line reason) out; no socket, no engine.
//!
//! How it is built, and why:
//!
//! - [`parse_head`] runs httparse's `Request::parse` on at most
//!   [`MAX_HEAD`] bytes of the buffer: `Ok(None)` means "read more" (the
//!   incremental style of the Places client's response parser,
//!   `places/http.rs`), a head that does not end within [`MAX_HEAD`] bytes
//!   or has more than [`MAX_HEADERS`] fields is `431`. The head is returned
//!   owned ([`RequestHead`]) with the few headers the fronts act on already
//!   interpreted, so the caller can drop the head's bytes from its buffer
//!   at once and keep reading the body into it.
//! - Framing follows RFC 9112 §6: one `Content-Length` (digits only; a
//!   second one, even equal, is `400`); `Transfer-Encoding: chunked` and
//!   nothing else (any other coding is `501 Not Implemented`, as §6.1 says
//!   a server should answer a coding it does not understand); both at once
//!   is `400` (§6.1 calls it a smuggling attempt), and so is a
//!   `Transfer-Encoding` in an HTTP/1.0 request (§6.1: faulty framing).
//!   HTTP/1.1 without a `Host` field, or with two, is `400` (§3.2).
//! - [`BodyReader`] is fed whatever arrived, in any chunking (byte by byte
//!   too), and says how much of it was body (what follows is the next
//!   pipelined request). It keeps the body (at most the limit it was given;
//!   more is `413`, decided from `Content-Length` before any body byte is
//!   read, so `100 Continue` need not be sent for a body that will be
//!   refused) and, for chunked bodies, at most [`MAX_CHUNK_LINE`] bytes of
//!   an unfinished chunk-size line; trailer fields are skipped line by
//!   line and bounded in total by [`MAX_TRAILERS`].
//! - [`percent_decode`] and [`pairs`] read `k=v&k2=v2` as browsers write
//!   forms: `+` is a space, `%XX` a byte, and a `%` not followed by two hex
//!   digits is kept as it is (as the WHATWG URL standard does); the decoded
//!   values borrow from the input when nothing needed decoding.

use std::borrow::Cow;
use std::fmt;

/// The most bytes a request head (request line, header fields and the
/// blank line) may take; a longer one is `431` (SPEC §14.4: at least 8 KiB).
pub const MAX_HEAD: usize = 8 * 1024;

/// The most header fields a request may have; more is `431`.
pub const MAX_HEADERS: usize = 64;

/// The longest chunk-size line (size, extensions and CRLF) accepted in a
/// chunked body; longer is `400`.
pub const MAX_CHUNK_LINE: usize = 1024;

/// The most bytes of trailer fields (after the last chunk) accepted; more
/// is `400`. They are read and discarded, never kept.
pub const MAX_TRAILERS: usize = 8 * 1024;

/// Why a request cannot be served: the HTTP status to answer with and a
/// one-line reason for the response body and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// `400`, `413`, `431`, `501` or `505`.
    pub status: u16,
    /// What is wrong, one line, no request bytes in it.
    pub reason: &'static str,
}

impl HttpError {
    /// An error answered with `status`, saying `reason`.
    pub const fn new(status: u16, reason: &'static str) -> HttpError {
        HttpError { status, reason }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.reason)
    }
}

impl std::error::Error for HttpError {}

/// A request head, parsed and owned, with the headers the fronts need.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHead {
    /// The method as sent (`GET`, `POST`, ...; methods are case-sensitive).
    pub method: String,
    /// The request target's path, raw (not percent-decoded): `/`,
    /// `/v1/clients/kiwi`. For an absolute-form target
    /// (`http://host/path?q`) the path part only (`/` when it has none); for
    /// `OPTIONS *`, `*`.
    pub path: Vec<u8>,
    /// The query after the first `?`, raw, without the `?` (empty when none).
    pub query: Vec<u8>,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// How many bytes of the buffer the head took (leading empty lines,
    /// request line, fields and the blank line): the body starts there.
    pub head_len: usize,
    /// `Content-Length`, when present.
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// The connection may carry another request after this one's response:
    /// HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
    /// `Expect: 100-continue` (any other expectation is ignored).
    pub expect_continue: bool,
    /// `Content-Type`, raw (parameters included), when present.
    pub content_type: Option<Vec<u8>>,
    /// The token of `Authorization: Bearer TOKEN`, raw; None without that
    /// header or with another scheme.
    pub bearer: Option<Vec<u8>>,
    /// `Upgrade` lists `websocket` and `Connection` lists `upgrade`
    /// (case-insensitive, comma-separated lists).
    pub upgrade_websocket: bool,
    /// `Sec-WebSocket-Key`, trimmed, when present.
    pub sec_websocket_key: Option<Vec<u8>>,
    /// `Sec-WebSocket-Version`, trimmed, when present.
    pub sec_websocket_version: Option<Vec<u8>>,
}

impl RequestHead {
    /// True when a body follows the head (chunked, or a non-zero length).
    pub fn has_body(&self) -> bool {
        self.chunked || self.content_length.is_some_and(|n| n > 0)
    }
}

/// Parses the request head at the start of `buf`. `Ok(None)`: the head is
/// not complete yet (read more and call again with the longer buffer).
/// Only the first [`MAX_HEAD`] bytes are looked at, so calling this again
/// on a growing buffer costs at most that much each time.
pub fn parse_head(buf: &[u8]) -> Result<Option<RequestHead>, HttpError> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if window.len() == MAX_HEAD => {
            return Err(HttpError::new(431, "request head too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::new(431, "too many header fields"))
        }
        Err(httparse::Error::Version) => {
            return Err(HttpError::new(505, "HTTP version not supported"))
        }
        Err(_) => return Err(HttpError::new(400, "malformed request head")),
    };
    let version = req.version.unwrap_or(1);
    let target = req.path.unwrap_or("/").as_bytes();
    let (path, query) = split_target(target)?;
    let mut head = RequestHead {
        method: req.method.unwrap_or("").to_string(),
        path: path.to_vec(),
        query: query.to_vec(),
        version,
        head_len,
        keep_alive: version == 1,
        ..RequestHead::default()
    };
    let mut hosts = 0;
    let mut transfer_encoding = false;
    let (mut conn_close, mut conn_keep_alive, mut conn_upgrade) = (false, false, false);
    let mut upgrade_websocket = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = trim(h.value);
        if name.eq_ignore_ascii_case(b"content-length") {
            if head.content_length.is_some() {
                return Err(HttpError::new(400, "more than one Content-Length"));
            }
            head.content_length =
                Some(content_length(value).ok_or(HttpError::new(400, "invalid Content-Length"))?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if transfer_encoding {
                return Err(HttpError::new(501, "transfer coding other than chunked"));
            }
            transfer_encoding = true;
            if !value.eq_ignore_ascii_case(b"chunked") {
                return Err(HttpError::new(501, "transfer coding other than chunked"));
            }
            head.chunked = true;
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in tokens(value) {
                conn_close |= token.eq_ignore_ascii_case(b"close");
                conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                conn_upgrade |= token.eq_ignore_ascii_case(b"upgrade");
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"expect") {
            head.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"content-type") {
            head.content_type = Some(value.to_vec());
        } else if name.eq_ignore_ascii_case(b"authorization") {
            head.bearer = bearer(value).map(<[u8]>::to_vec);
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade_websocket |= tokens(value).any(|t| t.eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
            head.sec_websocket_key = Some(value.to_vec());
        } else if name.eq_ignore_ascii_case(b"sec-websocket-version") {
            head.sec_websocket_version = Some(value.to_vec());
        }
    }
    if transfer_encoding && version == 0 {
        return Err(HttpError::new(
            400,
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    if head.chunked && head.content_length.is_some() {
        return Err(HttpError::new(
            400,
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if version == 1 && hosts != 1 {
        return Err(HttpError::new(
            400,
            if hosts == 0 {
                "HTTP/1.1 request without Host"
            } else {
                "more than one Host"
            },
        ));
    }
    head.keep_alive = match version {
        1 => !conn_close,
        _ => conn_keep_alive && !conn_close,
    };
    head.upgrade_websocket = upgrade_websocket && conn_upgrade;
    Ok(Some(head))
}

/// Splits a request target into path and query (both raw). Origin form
/// (`/p?q`), absolute form (`http://h/p?q`, the path only) and `*`.
fn split_target(target: &[u8]) -> Result<(&[u8], &[u8]), HttpError> {
    let path_and_query = if target.first() == Some(&b'/') || target == b"*" {
        target
    } else if let Some(scheme_end) = find(target, b"://") {
        let scheme = &target[..scheme_end];
        if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
            return Err(HttpError::new(400, "bad request target"));
        }
        let rest = &target[scheme_end + 3..];
        match rest.iter().position(|&b| b == b'/' || b == b'?') {
            Some(i) => &rest[i..],
            None => b"/",
        }
    } else {
        return Err(HttpError::new(400, "bad request target"));
    };
    Ok(match path_and_query.iter().position(|&b| b == b'?') {
        Some(0) => (b"/" as &[u8], &path_and_query[1..]),
        Some(i) => (&path_and_query[..i], &path_and_query[i + 1..]),
        None => (path_and_query, &[]),
    })
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A `Content-Length` value: 1 to 19 digits (so it fits a u64), nothing else.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

/// The token of `Bearer TOKEN` (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ' || b == b'\t')?;
    let (scheme, token) = value.split_at(space);
    let token = trim(token);
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// The elements of a comma-separated header list, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

/// `value` without leading and trailing spaces and tabs.
fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Where a [`BodyReader`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// `Content-Length`: this many bytes still to come.
    Length(u64),
    /// Reading a chunk-size line (its unfinished bytes are in `framing`).
    ChunkSize,
    /// Inside a chunk: this many data bytes still to come.
    ChunkData(u64),
    /// After a chunk's data: its CRLF (`framing` holds a `\r` already seen).
    ChunkEnd,
    /// After the last chunk: trailer lines until an empty one; the count is
    /// the trailer bytes seen so far.
    Trailers(usize),
    /// The body is complete.
    Done,
}

/// What a [`BodyReader::feed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// How many bytes of the input belonged to the body (its framing
    /// included); the rest belongs to the next request.
    pub consumed: usize,
    /// The body is complete: take it with [`BodyReader::take_body`].
    pub done: bool,
}

/// Reads one request body, fed in any chunking. Make one per request with
/// [`BodyReader::new`]; after `done` or an error, feed it no more.
#[derive(Debug)]
pub struct BodyReader {
    state: BodyState,
    limit: usize,
    body: Vec<u8>,
    /// An unfinished chunk-size or trailer line (at most
    /// [`MAX_CHUNK_LINE`] bytes; trailer lines are not kept, only their
    /// last byte, to see an empty line's `\r`).
    framing: Vec<u8>,
}

impl BodyReader {
    /// The reader for the body `head` announces, at most `limit` bytes
    /// (more is `413`: decided here already when `Content-Length` says so).
    /// A request with neither `Content-Length` nor chunked coding has an
    /// empty body, complete at once.
    pub fn new(head: &RequestHead, limit: usize) -> Result<BodyReader, HttpError> {
        let state = if head.chunked {
            BodyState::ChunkSize
        } else {
            match head.content_length {
                Some(n) if n > limit as u64 => return Err(too_large()),
                Some(n) if n > 0 => BodyState::Length(n),
                _ => BodyState::Done,
            }
        };
        Ok(BodyReader {
            state,
            limit,
            body: Vec::new(),
            framing: Vec::new(),
        })
    }

    /// True once the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == BodyState::Done
    }

    /// The body read so far (all of it once done).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Takes the body out, leaving the reader empty.
    pub fn take_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.body)
    }

    /// The bytes the reader holds besides the body: an unfinished framing
    /// line (at most [`MAX_CHUNK_LINE`]).
    pub fn framing_len(&self) -> usize {
        self.framing.len()
    }

    /// Feeds received bytes: reads what belongs to the body and says how
    /// much that was, and whether the body is complete.
    pub fn feed(&mut self, data: &[u8]) -> Result<Fed, HttpError> {
        let mut pos = 0;
        while pos < data.len() && self.state != BodyState::Done {
            pos += self.step(&data[pos..])?;
        }
        Ok(Fed {
            consumed: pos,
            done: self.state == BodyState::Done,
        })
    }

    /// Consumes some of `data` (not empty) in the current state.
    fn step(&mut self, data: &[u8]) -> Result<usize, HttpError> {
        match self.state {
            BodyState::Length(remaining) => {
                let take = take_up_to(remaining, data.len());
                self.body.extend_from_slice(&data[..take]);
                self.state = match remaining - take as u64 {
                    0 => BodyState::Done,
                    left => BodyState::Length(left),
                };
                Ok(take)
            }
            BodyState::ChunkSize => self.chunk_size(data),
            BodyState::ChunkData(remaining) => {
                let take = take_up_to(remaining, data.len());
                self.body.extend_from_slice(&data[..take]);
                self.state = match remaining - take as u64 {
                    0 => BodyState::ChunkEnd,
                    left => BodyState::ChunkData(left),
                };
                Ok(take)
            }
            BodyState::ChunkEnd => {
                // CRLF, possibly split between two feeds.
                let want: &[u8] = if self.framing.is_empty() {
                    b"\r\n"
                } else {
                    b"\n"
                };
                let take = want.len().min(data.len());
                if data[..take] != want[..take] {
                    return Err(HttpError::new(400, "chunk data not followed by CRLF"));
                }
                if take == want.len() {
                    self.framing.clear();
                    self.state = BodyState::ChunkSize;
                } else {
                    self.framing.push(b'\r');
                }
                Ok(take)
            }
            BodyState::Trailers(seen) => self.trailer_line(data, seen),
            BodyState::Done => Ok(0),
        }
    }

    /// Reads (part of) a chunk-size line.
    fn chunk_size(&mut self, data: &[u8]) -> Result<usize, HttpError> {
        // Up to and including the next `\n`, or all of it, but never past
        // the limit: what is decided (a bad byte, a line too long) then
        // depends on the line's first bytes only, not on how they arrived.
        let room = MAX_CHUNK_LINE - self.framing.len();
        let take = memchr::memchr(b'\n', data)
            .map_or(data.len(), |i| i + 1)
            .min(room);
        self.framing.extend_from_slice(&data[..take]);
        match httparse::parse_chunk_size(&self.framing) {
            // (httparse takes an empty size as 0; the grammar wants a digit.)
            Ok(httparse::Status::Complete((n, size)))
                if n == self.framing.len() && self.framing[0].is_ascii_hexdigit() =>
            {
                self.framing.clear();
                if size == 0 {
                    self.state = BodyState::Trailers(0);
                } else if size > (self.limit - self.body.len()) as u64 {
                    return Err(too_large());
                } else {
                    self.state = BodyState::ChunkData(size);
                }
                Ok(take)
            }
            Ok(httparse::Status::Partial) if self.framing.len() == MAX_CHUNK_LINE => {
                Err(HttpError::new(400, "chunk-size line too long"))
            }
            Ok(httparse::Status::Partial) => Ok(take),
            _ => Err(HttpError::new(400, "bad chunk-size line")),
        }
    }

    /// Reads (part of) a trailer line; an empty line ends the body.
    /// `seen`: the trailer bytes read before `data`.
    fn trailer_line(&mut self, data: &[u8], seen: usize) -> Result<usize, HttpError> {
        let nl = memchr::memchr(b'\n', data);
        let take = nl.map_or(data.len(), |i| i + 1);
        let seen = seen + take;
        if seen > MAX_TRAILERS {
            return Err(HttpError::new(400, "trailer fields too large"));
        }
        // `framing` holds what the current line has so far: only whether it
        // is still possibly empty (nothing, or a lone `\r`) matters.
        let line_so_far = self.framing.len();
        let piece = &data[..take];
        let empty_line = match nl {
            Some(_) => match (line_so_far, piece) {
                (0, b"\r\n") | (0, b"\n") => true,
                (1, b"\n") => self.framing == b"\r",
                _ => false,
            },
            None => false,
        };
        if empty_line {
            self.framing.clear();
            self.state = BodyState::Done;
            return Ok(take);
        }
        if nl.is_some() {
            self.framing.clear();
        } else {
            // Remember at most two bytes: enough to know whether the line
            // so far is empty or `\r`.
            for &b in piece {
                if self.framing.len() < 2 {
                    self.framing.push(b);
                }
            }
        }
        self.state = BodyState::Trailers(seen);
        Ok(take)
    }
}

/// `min(remaining, available)` as a usize.
fn take_up_to(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

fn too_large() -> HttpError {
    HttpError::new(413, "request body too large")
}

/// The value of an ASCII hex digit.
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `input`: `%XX` is the byte XX; with `plus_as_space`
/// (forms and query strings), `+` is a space. A `%` not followed by two hex
/// digits stays as it is. Borrows when there is nothing to decode.
pub fn percent_decode(input: &[u8], plus_as_space: bool) -> Cow<'_, [u8]> {
    let special = |b: &u8| *b == b'%' || (plus_as_space && *b == b'+');
    let Some(first) = input.iter().position(special) else {
        return Cow::Borrowed(input);
    };
    let mut out = Vec::with_capacity(input.len());
    out.extend_from_slice(&input[..first]);
    let mut i = first;
    while i < input.len() {
        let b = input[i];
        if b == b'+' && plus_as_space {
            out.push(b' ');
            i += 1;
            continue;
        }
        if b == b'%' {
            if let (Some(hi), Some(lo)) = (
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            ) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    Cow::Owned(out)
}

/// The `name=value` pairs of a query string or form body, in order, both
/// percent-decoded with `+` as space. Empty elements (`a=1&&b=2`) are
/// skipped; an element without `=` is a name with an empty value.
pub fn pairs(input: &[u8]) -> impl Iterator<Item = (Cow<'_, [u8]>, Cow<'_, [u8]>)> {
    input
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = match p.iter().position(|&b| b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &p[p.len()..]),
            };
            (percent_decode(name, true), percent_decode(value, true))
        })
}

/// The media type of a `Content-Type` value, without parameters or
/// surrounding spaces, for a case-insensitive comparison:
/// `application/json; charset=utf-8` → `application/json`.
pub fn media_type(content_type: &[u8]) -> &[u8] {
    let end = content_type
        .iter()
        .position(|&b| b == b';')
        .unwrap_or(content_type.len());
    trim(&content_type[..end])
}

#[cfg(test)]
mod tests;

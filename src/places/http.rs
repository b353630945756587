//! An incremental HTTP/1.1 response parser: the status line and headers with
//! `httparse`, then the body by `Content-Length`, chunked transfer coding
//! (`httparse::parse_chunk_size`) or, failing both, until the connection
//! closes. Pure: bytes in, a [`Response`] or an [`HttpError`] out.

use std::fmt;

/// The most header bytes accepted before the blank line.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// The most header fields accepted.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line (with extensions) or trailer block accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub status: u16,
    pub reason: String,
    pub body: Vec<u8>,
    /// The connection may carry another request: HTTP/1.1, no
    /// `Connection: close`, a delimited body and no stray bytes after it.
    pub keep_alive: bool,
}

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HttpError {
    /// Not HTTP, or HTTP we do not accept.
    Malformed(String),
    /// The body is larger than the limit.
    TooLarge(usize),
    /// The connection closed before any byte of the response.
    ClosedBeforeResponse,
    /// The connection closed in the middle of the response.
    ClosedMidResponse,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Malformed(what) => write!(f, "bad HTTP response: {what}"),
            HttpError::TooLarge(max) => write!(f, "response body larger than {max} bytes"),
            HttpError::ClosedBeforeResponse => f.write_str("connection closed before any response"),
            HttpError::ClosedMidResponse => f.write_str("connection closed mid-response"),
        }
    }
}

/// What feeding bytes achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Progress {
    /// More bytes are needed.
    Partial,
    Done(Response),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Length(usize),
    ChunkSize,
    ChunkData(usize),
    ChunkDataEnd,
    Trailers,
    UntilClose,
    Done,
}

/// Parses one response; make a new one per request.
#[derive(Debug)]
pub(crate) struct ResponseParser {
    /// Bytes received and not yet consumed.
    buf: Vec<u8>,
    state: State,
    max_body: usize,
    started: bool,
    status: u16,
    reason: String,
    keep_alive: bool,
    body: Vec<u8>,
}

impl ResponseParser {
    pub fn new(max_body: usize) -> ResponseParser {
        ResponseParser {
            buf: Vec::new(),
            state: State::Head,
            max_body,
            started: false,
            status: 0,
            reason: String::new(),
            keep_alive: false,
            body: Vec::new(),
        }
    }

    /// True once any byte of the response arrived.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Feeds received bytes. After `Done` or an error, feed no more.
    pub fn feed(&mut self, data: &[u8]) -> Result<Progress, HttpError> {
        if data.is_empty() {
            return Ok(Progress::Partial);
        }
        self.started = true;
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        let result = self.advance(&mut pos);
        self.buf.drain(..pos);
        match result? {
            true => {
                self.state = State::Done;
                // Stray bytes after a response: we never pipeline, so the
                // connection is out of step and must not be reused.
                let keep_alive = self.keep_alive && self.buf.is_empty();
                Ok(Progress::Done(Response {
                    status: self.status,
                    reason: std::mem::take(&mut self.reason),
                    body: std::mem::take(&mut self.body),
                    keep_alive,
                }))
            }
            false => Ok(Progress::Partial),
        }
    }

    /// The connection reached EOF: completes a body delimited by the close,
    /// or says what was cut short.
    pub fn finish_eof(&mut self) -> Result<Response, HttpError> {
        match self.state {
            State::UntilClose => {
                self.state = State::Done;
                Ok(Response {
                    status: self.status,
                    reason: std::mem::take(&mut self.reason),
                    body: std::mem::take(&mut self.body),
                    keep_alive: false,
                })
            }
            _ if !self.started => Err(HttpError::ClosedBeforeResponse),
            _ => Err(HttpError::ClosedMidResponse),
        }
    }

    /// Consumes from `self.buf[*pos..]`; true when the response is complete.
    fn advance(&mut self, pos: &mut usize) -> Result<bool, HttpError> {
        loop {
            let avail = &self.buf[*pos..];
            match self.state {
                State::Head => {
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut resp = httparse::Response::new(&mut headers);
                    let n = match resp.parse(avail) {
                        Ok(httparse::Status::Complete(n)) => n,
                        Ok(httparse::Status::Partial) if avail.len() > MAX_HEAD => {
                            return Err(HttpError::Malformed(format!(
                                "headers longer than {MAX_HEAD} bytes"
                            )))
                        }
                        Ok(httparse::Status::Partial) => return Ok(false),
                        Err(e) => return Err(HttpError::Malformed(e.to_string())),
                    };
                    let status = resp.code.unwrap_or(0);
                    let version = resp.version.unwrap_or(0);
                    let reason = resp.reason.unwrap_or("").to_string();
                    let head = Head::from_headers(resp.headers)?;
                    *pos += n;
                    if (100..200).contains(&status) {
                        if status == 101 {
                            return Err(HttpError::Malformed(
                                "unexpected 101 Switching Protocols".into(),
                            ));
                        }
                        // An interim response (100 Continue, 103 Early Hints): the real one follows.
                        continue;
                    }
                    self.status = status;
                    self.reason = reason;
                    self.keep_alive = version == 1 && !head.close;
                    self.state = if status == 204 || status == 304 {
                        return Ok(true);
                    } else if head.chunked {
                        State::ChunkSize
                    } else if let Some(len) = head.content_length {
                        if len > self.max_body as u64 {
                            return Err(HttpError::TooLarge(self.max_body));
                        }
                        State::Length(len as usize)
                    } else {
                        self.keep_alive = false;
                        State::UntilClose
                    };
                }
                State::Length(remaining) => {
                    let take = remaining.min(avail.len());
                    self.body.extend_from_slice(&avail[..take]);
                    *pos += take;
                    if remaining == take {
                        return Ok(true);
                    }
                    self.state = State::Length(remaining - take);
                    return Ok(false);
                }
                State::ChunkSize => match httparse::parse_chunk_size(avail) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        *pos += n;
                        if size == 0 {
                            self.state = State::Trailers;
                        } else if size > (self.max_body - self.body.len()) as u64 {
                            return Err(HttpError::TooLarge(self.max_body));
                        } else {
                            self.state = State::ChunkData(size as usize);
                        }
                    }
                    Ok(httparse::Status::Partial) if avail.len() > MAX_CHUNK_LINE => {
                        return Err(HttpError::Malformed("chunk size line too long".into()))
                    }
                    Ok(httparse::Status::Partial) => return Ok(false),
                    Err(_) => return Err(HttpError::Malformed("bad chunk size".into())),
                },
                State::ChunkData(remaining) => {
                    let take = remaining.min(avail.len());
                    self.body.extend_from_slice(&avail[..take]);
                    *pos += take;
                    if take < remaining {
                        self.state = State::ChunkData(remaining - take);
                        return Ok(false);
                    }
                    self.state = State::ChunkDataEnd;
                }
                State::ChunkDataEnd => {
                    if avail.len() < 2 {
                        if avail.first().is_some_and(|&b| b != b'\r') {
                            return Err(HttpError::Malformed("chunk not followed by CRLF".into()));
                        }
                        return Ok(false);
                    }
                    if &avail[..2] != b"\r\n" {
                        return Err(HttpError::Malformed("chunk not followed by CRLF".into()));
                    }
                    *pos += 2;
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(avail, &mut headers) {
                        Ok(httparse::Status::Complete((n, _))) => {
                            *pos += n;
                            return Ok(true);
                        }
                        Ok(httparse::Status::Partial) if avail.len() > MAX_CHUNK_LINE => {
                            return Err(HttpError::Malformed("trailers too long".into()))
                        }
                        Ok(httparse::Status::Partial) => return Ok(false),
                        Err(e) => return Err(HttpError::Malformed(format!("bad trailer: {e}"))),
                    }
                }
                State::UntilClose => {
                    if self.body.len() + avail.len() > self.max_body {
                        return Err(HttpError::TooLarge(self.max_body));
                    }
                    self.body.extend_from_slice(avail);
                    *pos += avail.len();
                    return Ok(false);
                }
                State::Done => return Err(HttpError::Malformed("bytes after the response".into())),
            }
        }
    }
}

/// What the headers say about framing.
struct Head {
    chunked: bool,
    content_length: Option<u64>,
    close: bool,
}

impl Head {
    fn from_headers(headers: &[httparse::Header<'_>]) -> Result<Head, HttpError> {
        let mut head = Head {
            chunked: false,
            content_length: None,
            close: false,
        };
        for h in headers {
            let value = String::from_utf8_lossy(h.value);
            let value = value.trim();
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let codings: Vec<&str> = value.split(',').map(str::trim).collect();
                if codings.len() != 1 || !codings[0].eq_ignore_ascii_case("chunked") {
                    return Err(HttpError::Malformed(format!(
                        "unsupported Transfer-Encoding {value:?}"
                    )));
                }
                head.chunked = true;
            } else if h.name.eq_ignore_ascii_case("content-length") {
                let len = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                    value.parse::<u64>().ok()
                } else {
                    None
                };
                match (len, head.content_length) {
                    (None, _) => {
                        return Err(HttpError::Malformed(format!(
                            "bad Content-Length {value:?}"
                        )))
                    }
                    (Some(a), Some(b)) if a != b => {
                        return Err(HttpError::Malformed("conflicting Content-Length".into()))
                    }
                    (Some(a), _) => head.content_length = Some(a),
                }
            } else if h.name.eq_ignore_ascii_case("connection") {
                head.close |= value
                    .split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("close"));
            }
        }
        if head.chunked {
            // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length, and
            // such a message must not be reused.
            if head.content_length.take().is_some() {
                head.close = true;
            }
        }
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8], max: usize) -> Result<Response, HttpError> {
        let mut p = ResponseParser::new(max);
        match p.feed(input)? {
            Progress::Done(r) => Ok(r),
            Progress::Partial => p.finish_eof(),
        }
    }

    /// Feeds `input` in two pieces split at every byte boundary, and byte by byte.
    fn parse_split_everywhere(input: &[u8]) -> Response {
        let whole = parse_all(input, 1 << 20).expect("whole input parses");
        for split in 0..=input.len() {
            let mut p = ResponseParser::new(1 << 20);
            let first = p.feed(&input[..split]).expect("first part");
            let r = match first {
                Progress::Done(r) => {
                    assert_eq!(split, input.len(), "done before the end at split {split}");
                    r
                }
                Progress::Partial => match p.feed(&input[split..]).expect("second part") {
                    Progress::Done(r) => r,
                    Progress::Partial => panic!("not done at split {split}"),
                },
            };
            assert_eq!(r, whole, "split at {split}");
        }
        let mut p = ResponseParser::new(1 << 20);
        let mut done = None;
        for (i, b) in input.iter().enumerate() {
            if let Progress::Done(r) = p.feed(std::slice::from_ref(b)).expect("byte") {
                assert_eq!(i + 1, input.len());
                done = Some(r);
            }
        }
        assert_eq!(done.as_ref(), Some(&whole));
        whole
    }

    #[test]
    fn content_length_body() {
        let r = parse_split_everywhere(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        assert_eq!(r.status, 200);
        assert_eq!(r.reason, "OK");
        assert_eq!(r.body, b"hello");
        assert!(r.keep_alive);
    }

    #[test]
    fn chunked_body_split_at_every_byte() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n\
            4\r\n{ \"a\r\n1;ext=1\r\n\"\r\n10\r\n : [ 1, 2, 3 ] }\r\n0\r\nX-Trailer: yes\r\n\r\n";
        let r = parse_split_everywhere(input);
        assert_eq!(r.body, b"{ \"a\" : [ 1, 2, 3 ] }");
        assert!(r.keep_alive);
        let input = b"HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(parse_split_everywhere(input).body, b"abc");
    }

    #[test]
    fn interim_responses_are_skipped() {
        let r = parse_split_everywhere(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno",
        );
        assert_eq!((r.status, r.body.as_slice()), (404, &b"no"[..]));
    }

    #[test]
    fn keep_alive_rules() {
        let close = parse_all(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            10,
        );
        assert!(!close.unwrap().keep_alive);
        let old = parse_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 10);
        assert!(!old.unwrap().keep_alive);
        let eof = parse_all(b"HTTP/1.1 200 OK\r\n\r\nuntil close", 100).unwrap();
        assert_eq!(eof.body, b"until close");
        assert!(!eof.keep_alive);
        let stray = parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab", 10);
        assert!(!stray.unwrap().keep_alive);
        let no_body = parse_all(b"HTTP/1.1 204 No Content\r\n\r\n", 10).unwrap();
        assert!(no_body.body.is_empty() && no_body.keep_alive);
    }

    #[test]
    fn size_limits() {
        let big = parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", 10);
        assert_eq!(big, Err(HttpError::TooLarge(10)));
        let big = parse_all(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n5\r\n",
            10,
        );
        assert_eq!(big, Err(HttpError::TooLarge(10)));
        let big = parse_all(b"HTTP/1.1 200 OK\r\n\r\n01234567890", 10);
        assert_eq!(big, Err(HttpError::TooLarge(10)));
        let exact = parse_all(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
            10,
        );
        assert_eq!(exact.unwrap().body.len(), 10);
        let mut long_head = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        long_head.resize(MAX_HEAD + 10, b'a');
        assert!(matches!(
            parse_all(&long_head, 10),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn eof_cases() {
        assert_eq!(parse_all(b"", 10), Err(HttpError::ClosedBeforeResponse));
        assert_eq!(
            parse_all(b"HTTP/1.1 200", 10),
            Err(HttpError::ClosedMidResponse)
        );
        assert_eq!(
            parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", 10),
            Err(HttpError::ClosedMidResponse)
        );
        assert_eq!(
            parse_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                10
            ),
            Err(HttpError::ClosedMidResponse)
        );
    }

    #[test]
    fn malformed_responses() {
        for input in [
            &b"this is not HTTP\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            let r = parse_all(input, 100);
            assert!(
                matches!(r, Err(HttpError::Malformed(_))),
                "{:?}: {r:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}

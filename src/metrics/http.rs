//! The endpoint's HTTP/1.1, by hand on `httparse`: a bounded request head
//! in, one whole response out. No I/O here.
//!
//! Only the request line and headers matter (a `GET` has no body, and the
//! connection is closed after the response, so any body sent is never
//! read as a request). [`parse`] says whether the bytes so far are a whole
//! head, need more, or are refused; the caller enforces the size cap
//! ([`super::MAX_REQUEST`]) by not feeding more than that.

/// Headers a request may carry; more is answered 431.
pub const MAX_HEADERS: usize = 32;

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// The head is not complete yet.
    Partial,
    /// A whole head: its method and its path (without any `?query`).
    Request { method: &'a str, path: &'a str },
    /// Not HTTP, or too many headers: answer with this status and close.
    Refused(u16),
}

/// Parses a request head from `buf` (everything received so far).
pub fn parse(buf: &[u8]) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Ok(httparse::Status::Complete(_)) => {
            let (Some(method), Some(target)) = (req.method, req.path) else {
                return Parsed::Refused(400);
            };
            let path = target.split_once('?').map_or(target, |(p, _)| p);
            Parsed::Request { method, path }
        }
        Err(httparse::Error::TooManyHeaders) => Parsed::Refused(431),
        Err(_) => Parsed::Refused(400),
    }
}

/// The reason phrase of the statuses this endpoint sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A whole response: status line, `Content-Type`, `Content-Length`,
/// `Connection: close` (and `Allow: GET` with 405), then `body`.
pub fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A short plain-text response for an error status.
pub fn error(status: u16) -> Vec<u8> {
    let body = format!("{}\n", reason(status));
    response(status, "text/plain; charset=utf-8", body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_or_wait_or_are_refused() {
        let cases: &[(&[u8], Parsed<'_>)] = &[
            (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                Parsed::Request {
                    method: "GET",
                    path: "/metrics",
                },
            ),
            (
                b"GET /healthz?verbose=1 HTTP/1.0\r\n\r\n",
                Parsed::Request {
                    method: "GET",
                    path: "/healthz",
                },
            ),
            (
                b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
                Parsed::Request {
                    method: "POST",
                    path: "/metrics",
                },
            ),
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", Parsed::Partial),
            (b"GET /met", Parsed::Partial),
            (b"", Parsed::Partial),
            (b"\x00\x01\x02 garbage\r\n\r\n", Parsed::Refused(400)),
            (
                b"GET /metrics HTTP/1.1\r\nBad Header\r\n\r\n",
                Parsed::Refused(400),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&parse(input), want, "{:?}", String::from_utf8_lossy(input));
        }
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(parse(many.as_bytes()), Parsed::Refused(431));
    }

    #[test]
    fn responses_carry_length_and_close() {
        let r = String::from_utf8(response(200, "text/plain", b"ok\n")).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("\r\nContent-Length: 3\r\n"), "{r}");
        assert!(r.contains("\r\nConnection: close\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nok\n"), "{r}");
        let r = String::from_utf8(error(405)).unwrap();
        assert!(
            r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && r.contains("Allow: GET\r\n")
        );
    }
}

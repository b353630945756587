//! How replies leave a front: the [`Envelope`] that seals the bytes the
//! engine wrote for one request.
//!
//! The engine writes line-protocol bytes. On a line port they leave as they
//! are; on WebSocket each reply is one message; over HTTP each request's
//! replies are one response. A response carries its `Content-Length`, so it
//! can only be written once its body is whole — after the Places answers
//! of its WHATSATs are in. So the bytes wait in the connection's reply
//! queue ([`crate::conn::Replies`]) with their envelope, and are sealed
//! when the last hole is filled, in request order.

use std::io::Write;

use super::ws;

/// How a run of reply bytes goes out.
#[derive(Debug)]
pub enum Envelope {
    /// As they are: the line protocol, or bytes already framed.
    Raw,
    /// As one WebSocket message (text when UTF-8, binary otherwise).
    Message,
    /// As one HTTP response.
    Http(Box<Response>),
}

impl Envelope {
    /// An HTTP response.
    pub fn http(response: Response) -> Envelope {
        Envelope::Http(Box::new(response))
    }

    /// Appends `bytes` to `out` in this envelope.
    pub fn seal(&self, out: &mut Vec<u8>, bytes: &[u8]) {
        match self {
            Envelope::Raw => out.extend_from_slice(bytes),
            Envelope::Message => ws::write_message(out, bytes),
            Envelope::Http(r) => r.write(out, bytes),
        }
    }
}

/// What the body of a response is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The bytes as they are.
    Body,
    /// A WHATSAT's reply (its AT line, then the Places JSON and a blank
    /// line) turned into `{"at": AT-LINE, "places": PLACES}`.
    Places,
}

/// An HTTP response's status line and headers, waiting for its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Say `Connection: close` (the connection closes after it).
    pub close: bool,
    /// An HTTP/1.0 client that asked to keep the connection: say so.
    pub keep_alive_10: bool,
    /// A `HEAD` request: the headers only.
    pub head_only: bool,
    /// One more header line, with its `\r\n` (`Allow: GET\r\n`), or "".
    pub extra: &'static str,
    pub shape: Shape,
}

/// `text/plain`: AT lines and reasons (bytes need not be UTF-8).
pub const TEXT: &str = "text/plain";
/// `application/json`.
pub const JSON: &str = "application/json";

impl Response {
    /// A `status` response of `content_type`, for a connection that goes on.
    pub fn new(status: u16, content_type: &'static str) -> Response {
        Response {
            status,
            content_type,
            close: false,
            keep_alive_10: false,
            head_only: false,
            extra: "",
            shape: Shape::Body,
        }
    }

    /// Writes the whole response, `body` shaped, into `out`.
    pub fn write(&self, out: &mut Vec<u8>, body: &[u8]) {
        let mut shaped = Vec::new();
        let body = match self.shape {
            Shape::Body => body,
            Shape::Places => {
                places_json(&mut shaped, body);
                &shaped
            }
        };
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}",
            self.status,
            reason(self.status),
            self.content_type,
            body.len(),
            self.extra
        );
        if self.close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if self.keep_alive_10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !self.head_only {
            out.extend_from_slice(body);
        }
    }
}

/// The reason phrase of the statuses herd sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// `{"at": AT-LINE, "places": PLACES}` from a WHATSAT reply: its first line
/// is the AT line, the rest the Places JSON (Google's layout kept) and the
/// blank line that ends every WHATSAT reply.
fn places_json(out: &mut Vec<u8>, reply: &[u8]) {
    let (at, rest) = match memchr::memchr(b'\n', reply) {
        Some(i) => (&reply[..i], &reply[i + 1..]),
        None => (reply, &b""[..]),
    };
    let end = rest.iter().rposition(|&b| b != b'\n').map_or(0, |i| i + 1);
    let places = if end == 0 { &b"null"[..] } else { &rest[..end] };
    out.extend_from_slice(b"{\"at\": ");
    json_string(out, at);
    out.extend_from_slice(b", \"places\": ");
    out.extend_from_slice(places);
    out.extend_from_slice(b"}\n");
}

/// Appends `bytes` as a JSON string. Bytes that are not UTF-8 (client IDs
/// may be any bytes) become U+FFFD: JSON text is UTF-8.
pub fn json_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => {
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        if !chunk.invalid().is_empty() {
            out.extend_from_slice("\u{fffd}".as_bytes());
        }
    }
    out.push(b'"');
}

/// Appends the decimal degrees `text` of a stored position (`+34.068930`)
/// as a JSON number with the same digits (`34.068930`): no `+`, no
/// leading zeros JSON forbids, a digit on each side of the point.
pub fn json_degrees(out: &mut Vec<u8>, text: &[u8]) {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    let (int, frac) = match memchr::memchr(b'.', digits) {
        Some(i) => (&digits[..i], Some(&digits[i + 1..])),
        None => (digits, None),
    };
    let int = match int.iter().position(|&b| b != b'0') {
        Some(i) => &int[i..],
        None => &b"0"[..],
    };
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(int);
    if let Some(frac) = frac.filter(|f| !f.is_empty()) {
        out.push(b'.');
        out.extend_from_slice(frac);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(r: &Response, body: &[u8]) -> String {
        let mut out = Vec::new();
        r.write(&mut out, body);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_response_says_its_length_and_whether_the_connection_goes_on() {
        let ok = Response::new(200, TEXT);
        assert_eq!(
            text(&ok, b"AT x\n"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nAT x\n"
        );
        let closing = Response {
            close: true,
            extra: "Allow: GET\r\n",
            ..Response::new(405, JSON)
        };
        assert_eq!(
            text(&closing, b"{}"),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json\r\nContent-Length: 2\r\nAllow: GET\r\nConnection: close\r\n\r\n{}"
        );
        let head = Response {
            head_only: true,
            keep_alive_10: true,
            ..Response::new(200, TEXT)
        };
        assert_eq!(
            text(&head, b"abc"),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n"
        );
    }

    #[test]
    fn a_whatsat_reply_becomes_at_and_places() {
        let r = Response {
            shape: Shape::Places,
            ..Response::new(200, JSON)
        };
        let reply =
            b"AT S +0.1 k\"1 +1+2 3\n{\n   \"results\" : [],\n   \"status\" : \"OK\"\n}\n\n";
        let body = "{\"at\": \"AT S +0.1 k\\\"1 +1+2 3\", \"places\": {\n   \"results\" : [],\n   \"status\" : \"OK\"\n}}\n";
        assert!(text(&r, reply).ends_with(&format!("\r\n\r\n{body}")));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["places"]["status"], "OK");
    }

    #[test]
    fn json_strings_and_degrees() {
        let cases: &[(&[u8], &str)] = &[
            (b"kiwi", "\"kiwi\""),
            (b"a\"b\\c\td", "\"a\\\"b\\\\c\\td\""),
            (b"\x01", "\"\\u0001\""),
            (b"caf\xc3\xa9", "\"caf\u{e9}\""),
            (b"x\xffy", "\"x\u{fffd}y\""),
        ];
        for (bytes, want) in cases {
            let mut out = Vec::new();
            json_string(&mut out, bytes);
            assert_eq!(String::from_utf8(out).unwrap(), *want);
        }
        let degrees: &[(&[u8], &str)] = &[
            (b"+34.068930", "34.068930"),
            (b"-118.445127", "-118.445127"),
            (b"+0", "0"),
            (b"-007.5", "-7.5"),
            (b"+90.", "90"),
            (b"+.5", "0.5"),
        ];
        for (t, want) in degrees {
            let mut out = Vec::new();
            json_degrees(&mut out, t);
            let got = String::from_utf8(out).unwrap();
            assert_eq!(got, *want);
            assert!(serde_json::from_str::<serde_json::Value>(&got)
                .unwrap()
                .is_number());
        }
    }
}

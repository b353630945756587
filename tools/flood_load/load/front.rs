//! The client side of herd's HTTP and WebSocket fronts (docs/PROTOCOL.md
//! §14), for the load modes `http` and `ws` and for `idle --idle-kind`:
//!
//! * `http`: each IAMAT is the OsmAnd report that says the same thing, as
//!   the OsmAnd app sends it, `GET /?id=ID&lat=LAT&lon=LON&timestamp=TIME`
//!   over a keep-alive HTTP/1.1 connection, with the headers a phone's HTTP
//!   stack (okhttp) adds: `Host`, `Connection: Keep-Alive`,
//!   `Accept-Encoding: gzip`, `User-Agent`. W requests in flight are
//!   pipelined; the server answers in order. A reply is good when it is
//!   `200` (its body is the AT line). A WHATSAT is `GET
//!   /v1/clients/ID/places?radius=10&bound=5`.
//! * `ws`: the connection is upgraded by `GET /v1/ws` before anything is
//!   measured; then each request is one masked text message holding one
//!   line, and each reply is one message, good when it starts `AT `.
//!
//! [`FrontConn`] writes the requests and reads the replies of one
//! connection (a `line` one leaves both to the line reader of the caller);
//! [`exchange`] does one round trip on many connections at once (the
//! upgrades before a run, a request per idle connection).
//!
//! The upgrade's `Sec-WebSocket-Accept` is checked with herd's own
//! [`herd::front::ws::accept_key`]; frames are written and read here
//! (herd's [`herd::front::ws::Decoder`] reads only masked, client frames).

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herd::conn::Output;
use herd::tls::stream::Stream;
use mio::{Events, Interest, Poll, Token};

use super::client::{mix, ClientId};
use super::{show, REPLY_LINE_LIMIT};

/// What a connection of the load speaks.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Wire {
    /// The line protocol, on a client port.
    #[default]
    Line,
    /// OsmAnd reports over keep-alive HTTP/1.1, on an `http`/`https` port.
    Http,
    /// Lines over a WebSocket (`GET /v1/ws`), on an `http`/`https` port.
    Ws,
}

impl Wire {
    /// Its name on the command line and in summaries.
    pub fn name(self) -> &'static str {
        match self {
            Wire::Line => "line",
            Wire::Http => "http",
            Wire::Ws => "ws",
        }
    }
}

/// The headers after `Host` that every HTTP request carries: what
/// okhttp (the HTTP stack of Android phone apps) sends with a GET.
const PHONE_HEADERS: &[u8] =
    b"Connection: Keep-Alive\r\nAccept-Encoding: gzip\r\nUser-Agent: okhttp/4.12.0 (flood_load)\r\n\r\n";

/// The headers of an HTTP response the tool looks at, at most.
const MAX_RESPONSE_HEADERS: usize = 32;

/// The client side of one connection to an HTTP port (or none, for a line
/// connection).
pub struct FrontConn {
    wire: Wire,
    /// `HOST:PORT` of the server, for `Host:`.
    host: String,
    /// Bytes read that are not yet a whole reply.
    buf: Vec<u8>,
    /// WebSocket: the `Sec-WebSocket-Key` of an upgrade whose answer is
    /// awaited.
    upgrading: Option<String>,
    /// WebSocket: a fragmented message gathered so far.
    message: Vec<u8>,
    /// Masks and keys.
    rng: u64,
    /// A WebSocket message's payload before masking.
    payload: Vec<u8>,
}

impl FrontConn {
    /// A connection speaking `wire` to `addr`; `seed` makes its masks its own.
    pub fn new(wire: Wire, addr: SocketAddr, seed: u64) -> FrontConn {
        FrontConn {
            wire,
            host: addr.to_string(),
            buf: Vec::new(),
            upgrading: None,
            message: Vec::new(),
            rng: mix(seed ^ 0x5eed_f00d),
            payload: Vec::new(),
        }
    }

    pub fn wire(&self) -> Wire {
        self.wire
    }

    fn next(&mut self) -> u64 {
        self.rng = mix(self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15));
        self.rng
    }

    /// Appends the request saying a new IAMAT of `client`; returns its
    /// timestamp (see [`ClientId::iamat`]).
    pub fn iamat(&mut self, client: &mut ClientId, out: &mut Vec<u8>, wall_ns: u128) -> u128 {
        match self.wire {
            Wire::Line => client.iamat(out, wall_ns),
            Wire::Http => {
                out.extend_from_slice(b"GET ");
                let t = client.osmand_target(out, wall_ns);
                self.http_end(out);
                t
            }
            Wire::Ws => {
                let mut payload = std::mem::take(&mut self.payload);
                payload.clear();
                let t = client.iamat(&mut payload, wall_ns);
                self.frame(out, &payload);
                self.payload = payload;
                t
            }
        }
    }

    /// Appends the request asking `WHATSAT ID 10 5` about `client`.
    pub fn whatsat(&mut self, client: &ClientId, out: &mut Vec<u8>) {
        match self.wire {
            Wire::Line => client.whatsat(out),
            Wire::Http => {
                out.extend_from_slice(b"GET /v1/clients/");
                out.extend_from_slice(&client.id);
                out.extend_from_slice(b"/places?radius=10&bound=5");
                self.http_end(out);
            }
            Wire::Ws => {
                let mut payload = std::mem::take(&mut self.payload);
                payload.clear();
                client.whatsat(&mut payload);
                self.frame(out, &payload);
                self.payload = payload;
            }
        }
    }

    /// Appends `GET /v1/ws` with a fresh key; its `101` is the next reply.
    pub fn upgrade(&mut self, out: &mut Vec<u8>) {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&self.next().to_le_bytes());
        key[8..].copy_from_slice(&self.next().to_le_bytes());
        let key = base64(&key);
        out.extend_from_slice(b"GET /v1/ws HTTP/1.1\r\nHost: ");
        out.extend_from_slice(self.host.as_bytes());
        out.extend_from_slice(
            b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ",
        );
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        self.upgrading = Some(key);
    }

    /// The end of a request line and the headers.
    fn http_end(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        out.extend_from_slice(self.host.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(PHONE_HEADERS);
    }

    /// Appends `payload` as one masked, final text frame.
    fn frame(&mut self, out: &mut Vec<u8>, payload: &[u8]) {
        let mask = (self.next() as u32).to_ne_bytes();
        out.push(0x81);
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    }

    /// Reads the bytes of a read; calls `each` with every whole reply, in
    /// order: `Ok(body)` (HTTP: a `200`'s body; WebSocket: a message, or
    /// nothing for the upgrade's `101`) or `Err(what came instead)`. An
    /// `Err` from `feed` itself means the stream cannot be read on.
    pub fn feed(
        &mut self,
        data: &[u8],
        mut each: impl FnMut(Result<&[u8], String>),
    ) -> Result<(), String> {
        if self.buf.is_empty() {
            let used = self.process(data, &mut each)?;
            self.buf.extend_from_slice(&data[used..]);
            return Ok(());
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(data);
        let used = self.process(&buf, &mut each)?;
        buf.drain(..used);
        self.buf = buf;
        Ok(())
    }

    /// Reads whole replies from `input`; returns the bytes they took.
    fn process(
        &mut self,
        input: &[u8],
        each: &mut impl FnMut(Result<&[u8], String>),
    ) -> Result<usize, String> {
        let mut pos = 0;
        loop {
            let step = match (self.wire, &self.upgrading) {
                (Wire::Line, _) => return Err("a line connection has no front".into()),
                (Wire::Http, _) => http_response(&input[pos..], each)?,
                (Wire::Ws, Some(key)) => {
                    let accept = herd::front::ws::accept_key(key.as_bytes());
                    let step = upgraded(&input[pos..], &accept)?;
                    if step.is_some() {
                        self.upgrading = None;
                        each(Ok(&[]));
                    }
                    step
                }
                (Wire::Ws, None) => self.ws_frame(&input[pos..], each)?,
            };
            match step {
                Some(n) => pos += n,
                None => {
                    if input.len() - pos > REPLY_LINE_LIMIT + 64 * 1024 {
                        return Err(format!(
                            "a reply of more than {} bytes",
                            REPLY_LINE_LIMIT + 64 * 1024
                        ));
                    }
                    return Ok(pos);
                }
            }
        }
    }

    /// One server frame at the start of `input`, if it is whole: its
    /// length; a message (or its last fragment) goes to `each`.
    fn ws_frame(
        &mut self,
        input: &[u8],
        each: &mut impl FnMut(Result<&[u8], String>),
    ) -> Result<Option<usize>, String> {
        if input.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (input[0], input[1]);
        if b1 & 0x80 != 0 {
            return Err("a masked frame from the server".into());
        }
        let (len, at) = match b1 & 0x7f {
            126 if input.len() >= 4 => (u64::from(u16::from_be_bytes([input[2], input[3]])), 4),
            127 if input.len() >= 10 => {
                let mut b = [0; 8];
                b.copy_from_slice(&input[2..10]);
                (u64::from_be_bytes(b), 10)
            }
            126 | 127 => return Ok(None),
            n => (u64::from(n), 2),
        };
        if len > REPLY_LINE_LIMIT as u64 {
            return Err(format!("a frame of {len} bytes"));
        }
        let end = at + len as usize;
        if input.len() < end {
            return Ok(None);
        }
        let payload = &input[at..end];
        let fin = b0 & 0x80 != 0;
        match b0 & 0x0f {
            1 | 2 if fin && self.message.is_empty() => each(Ok(payload)),
            0..=2 => {
                self.message.extend_from_slice(payload);
                if fin {
                    let message = std::mem::take(&mut self.message);
                    each(Ok(&message));
                }
            }
            8 => {
                let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                return Err(format!(
                    "the server closed the WebSocket ({}: {})",
                    code.map_or("no code".into(), |c| c.to_string()),
                    show(payload.get(2..).unwrap_or_default())
                ));
            }
            // The server sends no pings; pongs answer none of ours.
            9 | 10 => {}
            op => return Err(format!("a frame with opcode {op}")),
        }
        Ok(Some(end))
    }
}

/// One HTTP response at the start of `input`, if it is whole: its length;
/// `each` gets its body (`200`) or what it was instead. A `100 Continue`
/// is skipped.
fn http_response(
    input: &[u8],
    each: &mut impl FnMut(Result<&[u8], String>),
) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("a bad response: {e} in {:?}", show(input))),
    };
    let status = resp.code.unwrap_or(0);
    if status == 100 {
        return Ok(Some(head));
    }
    let length = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .ok_or_else(|| format!("a {status} response without Content-Length"))?;
    let Some(body) = input.get(head..head + length) else {
        return Ok(None);
    };
    if status == 200 {
        each(Ok(body));
    } else {
        each(Err(format!("HTTP {status}: {}", show(body.trim_ascii()))));
    }
    Ok(Some(head + length))
}

/// The `101` answering an upgrade at the start of `input`, if it is whole
/// and right: its length.
fn upgraded(input: &[u8], accept: &str) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("a bad response: {e} in {:?}", show(input))),
    };
    if resp.code != Some(101) {
        return Err(format!("the upgrade was answered {:?}", show(input)));
    }
    let given = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value);
    if given != Some(accept.as_bytes()) {
        return Err(format!(
            "Sec-WebSocket-Accept {:?}, not {accept}",
            given.map(show)
        ));
    }
    Ok(Some(head))
}

/// `bytes` in base64 with padding (a `Sec-WebSocket-Key`).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let b = |i: usize| u32::from(group.get(i).copied().unwrap_or(0));
        let n = b(0) << 16 | b(1) << 8 | b(2);
        for i in 0..4 {
            out.push(if i <= group.len() {
                char::from(ABC[(n >> (18 - 6 * i)) as usize & 63])
            } else {
                '='
            });
        }
    }
    out
}

/// A reply's body, or why there is none.
pub type Reply = Result<Vec<u8>, String>;

/// One round trip on each of the connections `which` at once: `request`
/// writes what to send, and the first reply read is the result (or why
/// there was none within `patience`). Stream `i` must be registered on
/// `poll` as `Token(i)` (READABLE); it is left so. Reading first drives a
/// TLS handshake still under way, as the idle connections need.
pub fn exchange(
    poll: &mut Poll,
    streams: &mut [Stream],
    fronts: &mut [FrontConn],
    which: &[usize],
    patience: Duration,
    mut request: impl FnMut(usize, &mut FrontConn, &mut Vec<u8>),
) -> io::Result<Vec<(usize, Reply)>> {
    let mut outs: HashMap<usize, (Output, Option<Reply>)> = HashMap::new();
    for &i in which {
        let mut out = Output::default();
        request(i, &mut fronts[i], out.buf());
        poll.registry().reregister(
            streams[i].tcp_mut(),
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        outs.insert(i, (out, None));
    }
    let deadline = Instant::now() + patience;
    let mut open = outs.len();
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    while open > 0 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match poll.poll(&mut events, Some(deadline - now)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        for event in events.iter() {
            let i = event.token().0;
            let Some((out, reply)) = outs.get_mut(&i) else {
                continue;
            };
            if reply.is_some() {
                continue;
            }
            *reply = step(&mut streams[i], &mut fronts[i], out, &mut scratch);
            if reply.is_some() {
                open -= 1;
            }
        }
    }
    let mut replies = Vec::with_capacity(outs.len());
    for &i in which {
        let Some((_, reply)) = outs.remove(&i) else {
            continue;
        };
        poll.registry()
            .reregister(streams[i].tcp_mut(), Token(i), Interest::READABLE)?;
        let reply = reply.unwrap_or_else(|| Err(format!("no answer within {patience:?}")));
        replies.push((i, reply));
    }
    Ok(replies)
}

/// Reads what is there (which drives a TLS handshake), then writes what is
/// left; the reply once it is whole.
fn step(
    s: &mut Stream,
    front: &mut FrontConn,
    out: &mut Output,
    scratch: &mut [u8],
) -> Option<Reply> {
    let mut reply = None;
    loop {
        match s.read(scratch) {
            Ok(0) => return Some(Err("the server closed the connection".into())),
            Ok(n) => {
                let fed = front.feed(&scratch[..n], |r| {
                    if reply.is_none() {
                        reply = Some(r.map(<[u8]>::to_vec));
                    }
                });
                if let Err(e) = fed {
                    return Some(Err(e));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Some(Err(format!("read: {e}"))),
        }
    }
    if reply.is_some() {
        return reply;
    }
    match s.send_pending().and_then(|()| out.flush_to(s)) {
        Ok(_) => None,
        Err(e) => Some(Err(format!("write: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_base64_of_16_bytes() {
        assert_eq!(base64(b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
        let mut f = FrontConn::new(Wire::Ws, "127.0.0.1:1".parse().unwrap(), 7);
        let mut out = Vec::new();
        f.upgrade(&mut out);
        let key = f.upgrading.clone().unwrap();
        assert!(herd::front::ws::valid_key(key.as_bytes()), "{key}");
    }

    #[test]
    fn masked_messages_are_what_herd_decodes() {
        let mut f = FrontConn::new(Wire::Ws, "127.0.0.1:1".parse().unwrap(), 7);
        let mut c = ClientId::new("fl-1".into());
        let mut out = Vec::new();
        f.iamat(&mut c, &mut out, 1_700_000_000_000_000_000);
        f.whatsat(&c, &mut out);
        let mut got = Vec::new();
        let mut d = herd::front::ws::Decoder::new(1 << 16);
        d.feed(&mut out, |e| {
            if let herd::front::ws::Event::Message { text, data } = e {
                assert!(text);
                got.push(String::from_utf8(data.to_vec()).unwrap());
            }
        })
        .unwrap();
        let mut line = Vec::new();
        ClientId::new("fl-1".into()).iamat(&mut line, 1_700_000_000_000_000_000);
        let line = String::from_utf8(line).unwrap();
        assert_eq!(got, [line, "WHATSAT fl-1 10 5\n".to_string()]);
    }

    #[test]
    fn responses_in_any_chunking_are_read_in_order() {
        let mut f = FrontConn::new(Wire::Http, "127.0.0.1:1".parse().unwrap(), 7);
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nAT a\n\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nbad\n";
        for cut in 1..wire.len() {
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                f.feed(part, |r| got.push(r.map(<[u8]>::to_vec))).unwrap();
            }
            assert_eq!(
                got,
                [Ok(b"AT a\n\n".to_vec()), Err("HTTP 400: bad".to_string())]
            );
        }
    }

    #[test]
    fn server_frames_are_messages() {
        let mut f = FrontConn::new(Wire::Ws, "127.0.0.1:1".parse().unwrap(), 7);
        let mut wire = Vec::new();
        herd::front::ws::write_message(&mut wire, b"AT one");
        herd::front::ws::write_message(&mut wire, &[b'x'; 300]);
        for cut in 1..wire.len() {
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                f.feed(part, |r| got.push(r.unwrap().len())).unwrap();
            }
            assert_eq!(got, [6, 300]);
        }
        let mut close = Vec::new();
        herd::front::ws::write_close(&mut close, 1009, "too big");
        assert!(f.feed(&close, |_| {}).unwrap_err().contains("1009"));
    }
}

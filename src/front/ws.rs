//! WebSocket (RFC 6455), server side, by hand: the opening handshake's
//! checks and answer, an incremental frame [`Decoder`] and the frame
//! writers. Pure: no socket, no engine; what a message *means* is the
//! engine's (each data message holds lines of the line protocol, SPEC §14.3).
//!
//! How it is built, and why:
//!
//! - The handshake's `Sec-WebSocket-Accept` is SHA-1 (ring's
//!   `SHA1_FOR_LEGACY_USE_ONLY`: ring is already the TLS provider, so no
//!   new crate) of the key and the RFC's GUID, in base64 by a dozen lines
//!   of our own.
//! - [`Decoder::feed`] takes the bytes of a read as `&mut [u8]` and unmasks
//!   payloads *in place*: a frame that arrives whole (the usual case: one
//!   message, one frame, one read) is handed to the caller as a slice of the
//!   read buffer, with no copy and no allocation. Only a frame split across
//!   reads, or a message split into fragments, is gathered in the decoder's
//!   own buffer, which is freed once the message is delivered. So an idle
//!   WebSocket holds a decoder of about a hundred bytes and no buffer, and a
//!   busy one holds at most the message in progress (at most the limit the
//!   decoder was made with) and a frame header (at most 14 bytes).
//! - Control frames (ping, pong, close) may come between the fragments of a
//!   message, as §5.4 allows; each is at most 125 bytes.
//! - Errors carry the close code to send (§7.4.1): 1002 for a protocol
//!   error (an unmasked frame, reserved bits, an unknown opcode, a
//!   fragmented or over-long control frame, a continuation without a start
//!   or a new message inside a fragmented one, a bad close frame), 1007 for
//!   a text message (or a close reason) that is not UTF-8 — checked on the
//!   whole message, so a character split across fragments is fine — and
//!   1009 for a message over the limit, decided from the frame header
//!   before its payload is read.
//! - After a close frame the decoder reads nothing more (§5.5.1: nothing
//!   follows a close).

use std::fmt;

use super::request::{HttpError, RequestHead};

/// The GUID of RFC 6455 §1.3, appended to the key before hashing.
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Close code: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code: the endpoint is going away (a server shutting down).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: protocol error.
pub const CLOSE_PROTOCOL: u16 = 1002;
/// Close code: a text message (or close reason) that is not UTF-8.
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// Close code: a message too big to process.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// The longest control-frame payload (§5.5).
pub const MAX_CONTROL: usize = 125;

/// A frame's opcode (§5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0 => Opcode::Continuation,
            1 => Opcode::Text,
            2 => Opcode::Binary,
            8 => Opcode::Close,
            9 => Opcode::Ping,
            10 => Opcode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0,
            Opcode::Text => 1,
            Opcode::Binary => 2,
            Opcode::Close => 8,
            Opcode::Ping => 9,
            Opcode::Pong => 10,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// The base64 alphabet (RFC 4648 §4).
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `bytes` in base64 with padding.
fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            group.get(1).copied().unwrap_or(0),
            group.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(BASE64[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key`: base64 of
/// the SHA-1 of the key (as sent, trimmed) followed by [`GUID`].
pub fn accept_key(key: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(GUID.as_bytes());
    base64(ctx.finish().as_ref())
}

/// A `Sec-WebSocket-Key` as §4.1 requires: the base64 of 16 bytes
/// (24 characters, the last two `==`).
pub fn valid_key(key: &[u8]) -> bool {
    let value = |c: u8| BASE64.iter().position(|&a| a == c);
    key.len() == 24
        && &key[22..] == b"=="
        && key[..22].iter().all(|&c| value(c).is_some())
        // 16 bytes use only the top two bits of the 22nd character.
        && value(key[21]).is_some_and(|v| v & 0x0f == 0)
}

/// Checks an upgrade request (RFC 6455 §4.2.1: `GET`, HTTP/1.1,
/// `Upgrade: websocket`, `Connection: upgrade`, a valid key, version 13)
/// and returns the `Sec-WebSocket-Accept` value; a `400` (SPEC §14.3)
/// saying what is missing otherwise.
pub fn handshake(head: &RequestHead) -> Result<String, HttpError> {
    if head.method != "GET" {
        return Err(HttpError::new(400, "WebSocket handshake must be GET"));
    }
    if head.version != 1 {
        return Err(HttpError::new(400, "WebSocket handshake must be HTTP/1.1"));
    }
    if !head.upgrade_websocket {
        return Err(HttpError::new(
            400,
            "WebSocket handshake without Upgrade: websocket and Connection: upgrade",
        ));
    }
    if head.sec_websocket_version.as_deref() != Some(b"13") {
        return Err(HttpError::new(400, "Sec-WebSocket-Version must be 13"));
    }
    match head.sec_websocket_key.as_deref() {
        Some(key) if valid_key(key) => Ok(accept_key(key)),
        _ => Err(HttpError::new(400, "bad Sec-WebSocket-Key")),
    }
}

/// Appends the `101 Switching Protocols` response that completes a
/// handshake, given [`handshake`]'s accept value.
pub fn write_switching_protocols(out: &mut Vec<u8>, accept: &str) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
}

/// What the decoder found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete data message (fragments joined); `text` says it was a
    /// text message, whose bytes are then valid UTF-8.
    Message { text: bool, data: &'a [u8] },
    /// A ping, with its payload (answer with a pong carrying it).
    Ping(&'a [u8]),
    /// A pong, with its payload.
    Pong(&'a [u8]),
    /// A close: its code (None when the frame had no payload: 1005 in
    /// the RFC's terms) and its reason (valid UTF-8). Nothing more is read.
    Close { code: Option<u16>, reason: &'a [u8] },
}

/// Why the connection must be closed: the close code to send and a
/// one-line reason (for the close frame and the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsError {
    /// 1002, 1007 or 1009.
    pub code: u16,
    pub reason: &'static str,
}

impl WsError {
    const fn new(code: u16, reason: &'static str) -> WsError {
        WsError { code, reason }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reason)
    }
}

impl std::error::Error for WsError {}

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    opcode: Opcode,
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes still to come.
    remaining: u64,
    /// Payload bytes already read (the mask's phase).
    read: u64,
}

/// Decodes the frames a client sends, fed in any chunking. One per
/// connection, made with the message limit; after an error or a close,
/// feed it no more.
#[derive(Debug)]
pub struct Decoder {
    /// The largest data message accepted, in bytes (more is 1009).
    limit: usize,
    /// A frame header being read, and how many of its bytes are there.
    header: [u8; 14],
    header_len: u8,
    /// The frame whose payload is being read, if any.
    frame: Option<Frame>,
    /// A fragmented message in progress: whether it is text.
    fragmented: Option<bool>,
    /// A data message's bytes gathered across frames or reads.
    message: Vec<u8>,
    /// A control frame's payload gathered across reads.
    control: Vec<u8>,
    /// A close frame was read, or an error found: nothing more is read.
    finished: bool,
}

impl Decoder {
    /// A decoder taking data messages of at most `limit` bytes.
    pub fn new(limit: usize) -> Decoder {
        Decoder {
            limit,
            header: [0; 14],
            header_len: 0,
            frame: None,
            fragmented: None,
            message: Vec::new(),
            control: Vec::new(),
            finished: false,
        }
    }

    /// True once a close frame was read or an error found.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The bytes the decoder holds between reads (a message in progress,
    /// a control payload, a header): for memory accounting and tests.
    pub fn buffered(&self) -> usize {
        self.message.len() + self.control.len() + usize::from(self.header_len)
    }

    /// Feeds the bytes of a read, calling `each` for every complete event,
    /// in order. Payloads are unmasked in place in `data` (which is why it
    /// is `&mut`). Stops at a close frame (the bytes after it are ignored)
    /// or at the first error, which says how to close the connection.
    pub fn feed(
        &mut self,
        data: &mut [u8],
        mut each: impl FnMut(Event<'_>),
    ) -> Result<(), WsError> {
        let result = self.feed_inner(data, &mut each);
        if result.is_err() {
            self.finished = true;
            self.message = Vec::new();
            self.control = Vec::new();
        }
        result
    }

    fn feed_inner(
        &mut self,
        data: &mut [u8],
        each: &mut impl FnMut(Event<'_>),
    ) -> Result<(), WsError> {
        let mut pos = 0;
        while !self.finished {
            let Some(frame) = self.frame else {
                if pos == data.len() {
                    return Ok(());
                }
                pos += self.read_header(&data[pos..])?;
                if let Some(frame) = self.frame {
                    if frame.remaining == 0 {
                        self.frame = None;
                        self.end_of_frame(frame, &mut [], each)?;
                    }
                }
                continue;
            };
            let available = data.len() - pos;
            if available == 0 {
                return Ok(());
            }
            let take = usize::try_from(frame.remaining).map_or(available, |r| r.min(available));
            let payload = &mut data[pos..pos + take];
            unmask(payload, frame.mask, frame.read);
            pos += take;
            let whole = frame.read == 0 && take as u64 == frame.remaining;
            let direct =
                whole && (frame.opcode.is_control() || (frame.fin && self.fragmented.is_none()));
            if direct {
                self.frame = None;
                self.end_of_frame(frame, payload, each)?;
                continue;
            }
            if frame.opcode.is_control() {
                self.control.extend_from_slice(payload);
            } else {
                self.message.extend_from_slice(payload);
            }
            let frame = Frame {
                remaining: frame.remaining - take as u64,
                read: frame.read + take as u64,
                ..frame
            };
            if frame.remaining > 0 {
                self.frame = Some(frame);
                continue;
            }
            self.frame = None;
            if frame.opcode.is_control() {
                let mut control = std::mem::take(&mut self.control);
                self.end_of_frame(frame, &mut control, each)?;
            } else {
                self.end_of_frame(frame, &mut [], each)?;
            }
        }
        Ok(())
    }

    /// Reads header bytes from `data` (not empty); sets `self.frame` once
    /// the header is complete and checked. Returns the bytes taken.
    fn read_header(&mut self, data: &[u8]) -> Result<usize, WsError> {
        let mut taken = 0;
        loop {
            let have = usize::from(self.header_len);
            let need = match have {
                0 | 1 => 2,
                _ => {
                    2 + match self.header[1] & 0x7f {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    } + 4
                }
            };
            if have == need {
                break;
            }
            let n = (need - have).min(data.len() - taken);
            if n == 0 {
                return Ok(taken);
            }
            self.header[have..have + n].copy_from_slice(&data[taken..taken + n]);
            self.header_len += n as u8;
            taken += n;
            if have < 2 && usize::from(self.header_len) >= 2 {
                // The first two bytes say enough to refuse early.
                self.check_start()?;
            }
        }
        let h = &self.header[..usize::from(self.header_len)];
        let (len, ext) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 2),
            127 => {
                let mut b = [0; 8];
                b.copy_from_slice(&h[2..10]);
                (u64::from_be_bytes(b), 8)
            }
            n => (u64::from(n), 0),
        };
        if len >> 63 != 0 {
            return Err(WsError::new(
                CLOSE_PROTOCOL,
                "frame length with its top bit set",
            ));
        }
        let mut mask = [0; 4];
        mask.copy_from_slice(&h[2 + ext..6 + ext]);
        let fin = h[0] & 0x80 != 0;
        let opcode = Opcode::from_bits(h[0] & 0x0f).unwrap_or(Opcode::Continuation);
        self.header_len = 0;
        if opcode.is_control() {
            if len > MAX_CONTROL as u64 {
                return Err(WsError::new(CLOSE_PROTOCOL, "control frame over 125 bytes"));
            }
        } else if len > (self.limit - self.message.len().min(self.limit)) as u64 {
            return Err(WsError::new(CLOSE_TOO_BIG, "message too big"));
        }
        self.frame = Some(Frame {
            opcode,
            fin,
            mask,
            remaining: len,
            read: 0,
        });
        Ok(taken)
    }

    /// Checks the first two bytes of a header.
    fn check_start(&self) -> Result<(), WsError> {
        let (b0, b1) = (self.header[0], self.header[1]);
        if b0 & 0x70 != 0 {
            return Err(WsError::new(CLOSE_PROTOCOL, "reserved bits set"));
        }
        if b1 & 0x80 == 0 {
            return Err(WsError::new(CLOSE_PROTOCOL, "unmasked client frame"));
        }
        let fin = b0 & 0x80 != 0;
        let opcode =
            Opcode::from_bits(b0 & 0x0f).ok_or(WsError::new(CLOSE_PROTOCOL, "unknown opcode"))?;
        match opcode {
            _ if opcode.is_control() && !fin => {
                Err(WsError::new(CLOSE_PROTOCOL, "fragmented control frame"))
            }
            Opcode::Continuation if self.fragmented.is_none() => {
                Err(WsError::new(CLOSE_PROTOCOL, "continuation without a start"))
            }
            Opcode::Text | Opcode::Binary if self.fragmented.is_some() => Err(WsError::new(
                CLOSE_PROTOCOL,
                "new message inside a fragmented one",
            )),
            _ => Ok(()),
        }
    }

    /// A frame's payload is complete: `payload` holds it for a control
    /// frame or a data frame read whole; otherwise it is in `self.message`.
    fn end_of_frame(
        &mut self,
        frame: Frame,
        payload: &mut [u8],
        each: &mut impl FnMut(Event<'_>),
    ) -> Result<(), WsError> {
        match frame.opcode {
            Opcode::Ping => each(Event::Ping(payload)),
            Opcode::Pong => each(Event::Pong(payload)),
            Opcode::Close => {
                let (code, reason) = match payload.len() {
                    0 => (None, &payload[..0]),
                    1 => return Err(WsError::new(CLOSE_PROTOCOL, "close frame of one byte")),
                    _ => (
                        Some(u16::from_be_bytes([payload[0], payload[1]])),
                        &payload[2..],
                    ),
                };
                if code.is_some_and(|c| !valid_close_code(c)) {
                    return Err(WsError::new(CLOSE_PROTOCOL, "invalid close code"));
                }
                if std::str::from_utf8(reason).is_err() {
                    return Err(WsError::new(
                        CLOSE_INVALID_DATA,
                        "close reason is not UTF-8",
                    ));
                }
                self.finished = true;
                self.message = Vec::new();
                each(Event::Close { code, reason });
            }
            Opcode::Text | Opcode::Binary | Opcode::Continuation => {
                let text = match frame.opcode {
                    Opcode::Text => true,
                    Opcode::Binary => false,
                    _ => self.fragmented.unwrap_or(false),
                };
                if !frame.fin {
                    self.fragmented = Some(text);
                    return Ok(());
                }
                self.fragmented = None;
                // Read whole in one frame: `payload`; else gathered.
                let gathered = std::mem::take(&mut self.message);
                let data: &[u8] = if payload.is_empty() {
                    &gathered
                } else {
                    payload
                };
                if text && std::str::from_utf8(data).is_err() {
                    return Err(WsError::new(
                        CLOSE_INVALID_DATA,
                        "text message is not UTF-8",
                    ));
                }
                each(Event::Message { text, data });
            }
        }
        Ok(())
    }
}

/// Close codes a peer may send (§7.4.1, and 1012–1014 registered since).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XORs `payload` with the mask, starting at mask phase `offset`.
fn unmask(payload: &mut [u8], mask: [u8; 4], offset: u64) {
    let phase = (offset % 4) as usize;
    let mask = [
        mask[phase],
        mask[(phase + 1) % 4],
        mask[(phase + 2) % 4],
        mask[(phase + 3) % 4],
    ];
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *b ^= m;
    }
}

/// True when `payload` is UTF-8 and so goes out as a text message.
pub fn is_text(payload: &[u8]) -> bool {
    std::str::from_utf8(payload).is_ok()
}

/// Appends one unmasked, final server frame carrying `payload`. A control
/// opcode's payload is cut to [`MAX_CONTROL`] bytes (never expected).
pub fn write_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    let payload = match opcode.is_control() {
        true => &payload[..payload.len().min(MAX_CONTROL)],
        false => payload,
    };
    out.reserve(10 + payload.len());
    out.push(0x80 | opcode.bits());
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

/// Appends `payload` as one message: text when it is UTF-8, binary
/// otherwise (SPEC §14.3).
pub fn write_message(out: &mut Vec<u8>, payload: &[u8]) {
    let opcode = if is_text(payload) {
        Opcode::Text
    } else {
        Opcode::Binary
    };
    write_frame(out, opcode, payload);
}

/// Appends a close frame with `code` and `reason` (cut to fit the 125
/// bytes of a control frame, at a character boundary).
pub fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(MAX_CONTROL - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    write_frame(out, Opcode::Close, &payload[..2 + end]);
}

#[cfg(test)]
mod tests;

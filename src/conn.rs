//! A connection's buffers and state, without the sockets' event handling
//! (that is the server loop's).
//!
//! * [`LineReader`] turns the bytes of successive reads into lines. It keeps
//!   only the *unfinished* line between reads; the bytes themselves are read
//!   into one scratch buffer owned by the loop, so an idle connection holds
//!   no read buffer at all. A line that passes the limit is reported once,
//!   as [`Piece::TooLong`] with its first bytes, and the rest of it is
//!   discarded up to the next `\n`: memory stays bounded whatever comes in.
//! * [`Output`] is a connection's pending output: appended to, flushed to the
//!   socket until `WouldBlock`, and given back to the allocator once empty.
//! * [`Conn`] is a client connection (or an inbound herd link, which is a
//!   client that said `HERD NAME`): the reader, the output, the replies
//!   that wait behind a WHATSAT in flight (so that replies leave in request
//!   order even when Places answers after later IAMATs), its engine
//!   [`Session`], and its [`ReadState`].

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Duration;

use crate::tls::stream::Stream;
use mio::Interest;

use crate::engine::{Port, Session};
use crate::front::{Envelope, Front};
use crate::places::RequestId;

/// Capacity above which an emptied buffer is freed instead of kept, so that
/// a connection that once had a burst goes back to costing a few bytes.
const KEEP_CAPACITY: usize = 4096;

/// The most a [`Conn`] may take in the slab, in bytes (a test holds it):
/// an idle plaintext connection is to cost at most 200 B all told, and the
/// slab slot is nearly all of it.
pub const CONN_BUDGET: usize = 176;

/// One unit the [`LineReader`] hands out.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A complete line, without its `\n` (a `\r` before it is kept; the
    /// parser treats it as white space).
    Line(&'a [u8]),
    /// A line that passed the limit: its first `limit` bytes. The rest, up to
    /// the next `\n`, is discarded.
    TooLong(&'a [u8]),
}

/// Splits a byte stream into lines, keeping only the unfinished one.
#[derive(Debug, Default)]
pub struct LineReader {
    partial: Vec<u8>,
    /// Inside an over-long line already answered: skip to the next `\n`.
    discarding: bool,
}

impl LineReader {
    /// Feeds `data`, calling `each` for every complete piece, in order.
    /// `limit` is the longest line accepted, in bytes, without its `\n` or
    /// `\r\n` (the `\r` of a `\r\n` is part of the terminator).
    /// Returns how many bytes it discarded (of over-long lines, past their
    /// first `limit` bytes).
    pub fn feed(
        &mut self,
        mut data: &[u8],
        limit: usize,
        mut each: impl FnMut(Piece<'_>),
    ) -> usize {
        let mut discarded = 0;
        while !data.is_empty() {
            let nl = memchr::memchr(b'\n', data);
            if self.discarding {
                match nl {
                    Some(i) => {
                        self.discarding = false;
                        discarded += i;
                        data = &data[i + 1..];
                        continue;
                    }
                    None => return discarded + data.len(),
                }
            }
            let take = nl.unwrap_or(data.len());
            let total = self.partial.len() + take;
            let last = if take > 0 {
                data.get(take - 1)
            } else {
                self.partial.last()
            };
            // A final `\r` may be the start of a `\r\n`: it does not count
            // until a byte other than `\n` follows it.
            let content = if last == Some(&b'\r') {
                total - 1
            } else {
                total
            };
            if content <= limit {
                match nl {
                    Some(i) if self.partial.is_empty() => {
                        // The common case: the whole line is in this read.
                        each(Piece::Line(&data[..i]));
                    }
                    Some(i) => {
                        self.partial.extend_from_slice(&data[..i]);
                        each(Piece::Line(&self.partial));
                        self.clear_partial();
                    }
                    None => {
                        // No `\n` yet and still within the limit: keep it.
                        self.partial.extend_from_slice(data);
                        return discarded;
                    }
                }
                data = &data[take + 1..];
                continue;
            }
            // Past the limit: answer with the first `limit` bytes, skip the rest.
            let kept = if self.partial.len() >= limit {
                // A kept final `\r` that turned out not to end the line.
                discarded += self.partial.len() - limit;
                self.partial.truncate(limit);
                0
            } else {
                let room = limit - self.partial.len();
                self.partial.extend_from_slice(&data[..room]);
                room
            };
            each(Piece::TooLong(&self.partial));
            self.clear_partial();
            discarded += take - kept;
            match nl {
                Some(i) => data = &data[i + 1..],
                None => {
                    self.discarding = true;
                    return discarded;
                }
            }
        }
        discarded
    }

    /// The peer closed its sending side: a last line without `\n` is still a
    /// request (docs/PROTOCOL.md §2).
    pub fn finish(&mut self, mut each: impl FnMut(Piece<'_>)) {
        if !self.partial.is_empty() && !self.discarding {
            each(Piece::Line(&self.partial));
        }
        self.clear_partial();
        self.discarding = false;
    }

    /// Bytes held for an unfinished line.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    fn clear_partial(&mut self) {
        if self.partial.capacity() > KEEP_CAPACITY {
            self.partial = Vec::new();
        } else {
            self.partial.clear();
        }
    }
}

/// A leaky bucket of a connection's invalid input (lines answered with `? `
/// and bytes of over-long lines): it may send `rate` bytes of it per second
/// on average, and a second's worth at once; past that, reading it pauses
/// until the bucket is back to a second's worth. Pausing costs nothing —
/// the kernel's socket buffer pushes back on the sender — and every line is
/// still answered, only later: a client sending garbage as fast as it can
/// gets a trickle of the loop, not a share of it (memcached's
/// `reqs_per_event` and nginx's `limit_rate` are the same idea).
///
/// Time is milliseconds since the loop started, wrapping after 49 days: a
/// wrong leak after such a gap costs at most one pause of a second.
#[derive(Debug, Default, Clone, Copy)]
pub struct Throttle {
    debt: u32,
    at_ms: u32,
    /// Times reading was paused.
    pub pauses: u32,
}

impl Throttle {
    /// Adds `bytes` of invalid input received at `now_ms`. Returns how long
    /// reading must pause to keep to `rate` bytes per second, if it must.
    pub fn charge(&mut self, bytes: usize, now_ms: u32, rate: usize) -> Option<Duration> {
        let rate = rate.max(1) as u64;
        let elapsed = u64::from(now_ms.wrapping_sub(self.at_ms));
        let leaked = elapsed.saturating_mul(rate) / 1000;
        let debt = u64::from(self.debt).saturating_sub(leaked) + bytes as u64;
        self.at_ms = now_ms;
        self.debt = debt.min(u64::from(u32::MAX)) as u32;
        if debt <= rate {
            return None;
        }
        self.pauses += 1;
        // Long enough for the debt to leak back to a second's worth.
        let ms = ((debt - rate) * 1000).div_ceil(rate);
        Some(Duration::from_millis(ms.max(1)))
    }
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Everything was written.
    Done,
    /// The socket's buffer is full; bytes remain until it is writable again.
    WouldBlock,
}

/// Pending output: a byte buffer and how much of it is already written.
#[derive(Debug, Default)]
pub struct Output {
    buf: Vec<u8>,
    pos: usize,
}

impl Output {
    /// The buffer to append to.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Bytes not yet written.
    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes until done or `WouldBlock`. An `Err` means the connection is dead.
    pub fn flush_to(&mut self, w: &mut impl Write) -> io::Result<Flush> {
        while self.pos < self.buf.len() {
            match w.write(&self.buf[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.pos += n,
                // The kernel's send buffer is full: wait for WRITABLE.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.compact();
                    return Ok(Flush::WouldBlock);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos = 0;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        Ok(Flush::Done)
    }

    /// Drops written bytes once they are the larger part of the buffer, so
    /// appending never grows a buffer that is mostly already sent.
    fn compact(&mut self) {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
}

/// Replies waiting in line behind a WHATSAT in flight: bytes with holes
/// where Places answers go, and the envelope they leave in once the last
/// hole is filled (as they are on a line port; as one WebSocket message;
/// as one HTTP response, whose length is known only then).
#[derive(Debug)]
pub struct Slot {
    /// The Places requests it waits for, each with the offset in `bytes`
    /// where its answer goes, in increasing order.
    holes: Vec<(RequestId, usize)>,
    bytes: Vec<u8>,
    envelope: Envelope,
}

/// Whether, and why not, a connection is read. The legal moves:
///
/// ```text
/// Reading ──over its output or WHATSAT limit──▶ Backpressured ──caught up──▶ Reading
/// Reading ──invalid input past its rate──────▶ Throttled ──timer─▶ Reading (or Backpressured)
/// any ──EOF, or the engine gave up on it─────▶ Closing ──everything written──▶ closed
/// ```
///
/// A paused connection costs nothing: the kernel's socket buffer pushes
/// back on the sender, and no event is lost, since the loop reads it again
/// itself when it resumes (bytes already in the socket bring no new edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadState {
    /// Requests are read and answered.
    Reading,
    /// Not read while its client leaves too many replies unread (or has too
    /// many WHATSATs in flight).
    Backpressured,
    /// Not read until a timer of the loop fires: its invalid input passed
    /// its rate ([`Throttle`]).
    Throttled,
    /// Nothing more is read: the peer closed its side, or the engine gave up
    /// on it. Closed once everything owed to it is written.
    Closing,
}

/// A client connection (or an inbound herd link, which is a client that
/// said `HERD NAME`).
#[derive(Debug)]
pub struct Conn {
    /// A plain socket, or TLS over one (a `tls` port, a mutual-TLS peer port).
    pub stream: Stream,
    /// Distinguishes this connection from a later one that reuses its slab key.
    pub serial: u64,
    /// What the command engine knows of it: its address and role.
    pub session: Session,
    pub reader: LineReader,
    /// What it is owed, in request order.
    pub replies: Replies,
    /// The interest currently registered with the poll.
    pub interest: Interest,
    state: ReadState,
    /// When it last sent something, in seconds since its loop started.
    pub active: u32,
    /// Its invalid input, once it has sent some (most never do).
    throttle: Option<Box<Throttle>>,
    /// On an HTTP or HTTPS port: the HTTP or WebSocket state (boxed, so
    /// that a line connection pays one pointer for it).
    pub front: Option<Box<Front>>,
}

impl Conn {
    /// A new connection on `port`, registered for READABLE.
    pub fn new(stream: Stream, peer: SocketAddr, serial: u64, port: Port) -> Conn {
        Conn {
            stream,
            serial,
            session: Session::on(peer, port),
            reader: LineReader::default(),
            replies: Replies::default(),
            interest: Interest::READABLE,
            state: ReadState::Reading,
            active: 0,
            throttle: None,
            front: None,
        }
    }

    /// Charges `bytes` of invalid input to its [`Throttle`]; how long
    /// reading must pause, if it must.
    pub fn charge_invalid(&mut self, bytes: usize, now_ms: u32, rate: usize) -> Option<Duration> {
        self.throttle
            .get_or_insert_with(Box::default)
            .charge(bytes, now_ms, rate)
    }

    /// Times reading it was paused for invalid input.
    pub fn pauses(&self) -> u32 {
        self.throttle.as_ref().map_or(0, |t| t.pauses)
    }

    /// Its address.
    pub fn peer(&self) -> SocketAddr {
        self.session.peer.get()
    }

    /// Whether it is read, and why not.
    pub fn state(&self) -> ReadState {
        self.state
    }

    /// True while its client is owed more than `output` bytes or has
    /// `whatsats` WHATSATs in flight: then it is not read.
    pub fn over(&self, output: usize, whatsats: usize) -> bool {
        self.replies.backlog() >= output || self.replies.in_flight() >= whatsats
    }

    /// Reading → Backpressured.
    pub fn backpressure(&mut self) {
        if self.state == ReadState::Reading {
            self.state = ReadState::Backpressured;
        }
    }

    /// Reading → Throttled, until the loop's timer calls [`Conn::unthrottle`].
    pub fn throttled(&mut self) {
        if self.state == ReadState::Reading {
            self.state = ReadState::Throttled;
        }
    }

    /// Throttled → Reading, or Backpressured while `over` its limits.
    /// True when it must be read again now.
    pub fn unthrottle(&mut self, over: bool) -> bool {
        if self.state != ReadState::Throttled {
            return false;
        }
        self.state = if over {
            ReadState::Backpressured
        } else {
            ReadState::Reading
        };
        !over
    }

    /// Backpressured → Reading once no longer `over` its limits. True when
    /// it must be read again now.
    pub fn caught_up(&mut self, over: bool) -> bool {
        if self.state == ReadState::Backpressured && !over {
            self.state = ReadState::Reading;
            return true;
        }
        false
    }

    /// Any → Closing: nothing more is read.
    pub fn stop_reading(&mut self) {
        self.state = ReadState::Closing;
    }

    /// True when nothing remains to be sent or awaited.
    pub fn is_drained(&self) -> bool {
        self.replies.is_drained()
    }
}

/// A connection's replies in request order: the output ready to be
/// written, and the replies queued behind a WHATSAT still waiting for
/// Places.
#[derive(Debug, Default)]
pub struct Replies {
    pub out: Output,
    /// Replies waiting for earlier WHATSATs, and how many are in flight;
    /// `None` (nothing allocated: most connections never wait) when none is.
    waiting: Option<Box<Waiting>>,
    /// The journal sequence number of the last record its replies
    /// acknowledge: none of its output leaves before the journal has
    /// written that far (docs/PROTOCOL.md §5). Its top bit ([`HELD`]) says
    /// whether the output is held for the journal (it is on the loop's
    /// held list): sequence numbers count records and never reach 2^63,
    /// and a `bool` beside it would cost every connection 8 bytes of
    /// padding ([`CONN_BUDGET`]).
    ack: u64,
}

/// The bit of [`Replies`]'s `ack` that says its output is held.
const HELD: u64 = 1 << 63;

/// The replies behind WHATSATs in flight.
#[derive(Debug, Default)]
struct Waiting {
    queue: VecDeque<Slot>,
    /// WHATSATs not yet answered by Places.
    in_flight: usize,
}

impl Replies {
    /// The journal sequence number its replies acknowledge (0: none).
    pub fn ack(&self) -> u64 {
        self.ack & !HELD
    }

    /// Its replies now acknowledge record `seq`.
    pub fn set_ack(&mut self, seq: u64) {
        debug_assert!(seq < HELD);
        self.ack = (self.ack & HELD) | seq;
    }

    /// Whether its output is held for the journal (on the held list).
    pub fn held(&self) -> bool {
        self.ack & HELD != 0
    }

    /// Marks its output held for the journal, or no longer.
    pub fn set_held(&mut self, held: bool) {
        self.ack = if held {
            self.ack | HELD
        } else {
            self.ack & !HELD
        };
    }

    /// Appends a reply, as it is, behind any WHATSAT still in flight.
    pub fn reply(&mut self, bytes: &[u8]) {
        let queue = match self.waiting.as_deref_mut() {
            Some(w) if !w.queue.is_empty() => &mut w.queue,
            _ => {
                self.out.buf().extend_from_slice(bytes);
                return;
            }
        };
        match queue.back_mut() {
            Some(slot) if matches!(slot.envelope, Envelope::Raw) => {
                slot.bytes.extend_from_slice(bytes)
            }
            _ => queue.push_back(Slot {
                holes: Vec::new(),
                bytes: bytes.to_vec(),
                envelope: Envelope::Raw,
            }),
        }
    }

    /// Appends one AT line (without its `\n`) that a watcher is sent, a
    /// snapshot's or a push (docs/PROTOCOL.md §15), in `envelope`: as it
    /// is on a line port, one WebSocket message each on WebSocket. Every
    /// watched position leaves through here and nowhere else. Called only
    /// while no WHATSAT is in flight (the loop waits for it), so it goes
    /// straight to the output.
    pub fn push_at(&mut self, line: &[u8], envelope: &Envelope) {
        let buf = self.out.buf();
        if let Envelope::Raw = envelope {
            buf.reserve(line.len() + 1);
            buf.extend_from_slice(line);
            buf.push(b'\n');
            return;
        }
        let mut message = Vec::with_capacity(line.len() + 1);
        message.extend_from_slice(line);
        message.push(b'\n');
        envelope.seal(buf, &message);
    }

    /// Appends `bytes` in `envelope` (a WebSocket message, an HTTP
    /// response), behind any WHATSAT still in flight.
    pub fn reply_in(&mut self, bytes: &[u8], envelope: &Envelope) {
        if !self.queued() {
            envelope.seal(self.out.buf(), bytes);
        } else {
            let mut sealed = Vec::new();
            envelope.seal(&mut sealed, bytes);
            self.reply(&sealed);
        }
    }

    /// Reserves the place of a WHATSAT's reply; `head` (the AT line) is
    /// already known, Places' body follows when it comes. On a line port
    /// (`envelope` raw) the replies after it join its slot; otherwise the
    /// reply is an envelope of its own (a WebSocket message).
    pub fn wait_for(&mut self, id: RequestId, head: &[u8], envelope: Envelope) {
        let w = self.waiting.get_or_insert_with(Box::default);
        w.in_flight += 1;
        if let (Envelope::Raw, Some(slot)) = (&envelope, w.queue.back_mut()) {
            if matches!(slot.envelope, Envelope::Raw) {
                slot.bytes.extend_from_slice(head);
                slot.holes.push((id, slot.bytes.len()));
                return;
            }
        }
        w.queue.push_back(Slot {
            holes: vec![(id, head.len())],
            bytes: head.to_vec(),
            envelope,
        });
    }

    /// Queues one envelope gathered elsewhere (an HTTP response): `bytes`
    /// with `holes` where the answers of the Places requests it counted
    /// in with [`Replies::counted`] go. Sealed and written at once when it
    /// waits for nothing and nothing waits before it.
    pub fn enclose(&mut self, bytes: &[u8], holes: &[(RequestId, usize)], envelope: Envelope) {
        if holes.is_empty() && !self.queued() {
            envelope.seal(self.out.buf(), bytes);
            return;
        }
        let w = self.waiting.get_or_insert_with(Box::default);
        w.queue.push_back(Slot {
            holes: holes.to_vec(),
            bytes: bytes.to_vec(),
            envelope,
        });
        self.release();
    }

    /// A WHATSAT whose hole is in an envelope still being gathered (see
    /// [`Replies::enclose`]): counted against the connection's limit now.
    pub fn counted(&mut self) {
        self.waiting.get_or_insert_with(Box::default).in_flight += 1;
    }

    /// Fills the hole of request `id` and releases every envelope now
    /// complete at the front of the queue into the output. False if no
    /// slot waits for `id`.
    pub fn complete(&mut self, id: RequestId, body: &[u8]) -> bool {
        let Some(w) = self.waiting.as_deref_mut() else {
            return false;
        };
        let found = w.queue.iter_mut().find_map(|s| {
            let i = s.holes.iter().position(|&(hole, _)| hole == id)?;
            Some((s, i))
        });
        let Some((slot, i)) = found else {
            return false;
        };
        let (_, at) = slot.holes.remove(i);
        slot.bytes.splice(at..at, body.iter().copied());
        for (_, later) in &mut slot.holes[i..] {
            *later += body.len();
        }
        w.in_flight -= 1;
        self.release();
        true
    }

    /// Moves the complete envelopes at the front of the queue to the output.
    /// Once nothing waits any more, the queue is given back.
    fn release(&mut self) {
        let Some(w) = self.waiting.as_deref_mut() else {
            return;
        };
        while w.queue.front().is_some_and(|s| s.holes.is_empty()) {
            if let Some(slot) = w.queue.pop_front() {
                slot.envelope.seal(self.out.buf(), &slot.bytes);
            }
        }
        if w.queue.is_empty() && w.in_flight == 0 {
            self.waiting = None;
        }
    }

    /// Replies wait behind a WHATSAT.
    pub fn queued(&self) -> bool {
        self.waiting.as_ref().is_some_and(|w| !w.queue.is_empty())
    }

    /// WHATSATs not yet answered by Places.
    pub fn in_flight(&self) -> usize {
        self.waiting.as_ref().map_or(0, |w| w.in_flight)
    }

    /// Bytes this connection holds for its client: output and queued replies.
    pub fn backlog(&self) -> usize {
        let queued = self
            .waiting
            .as_ref()
            .map_or(0, |w| w.queue.iter().map(|s| s.bytes.len()).sum::<usize>());
        self.out.len() + queued
    }

    /// True when nothing remains to be sent or awaited.
    pub fn is_drained(&self) -> bool {
        self.out.is_empty() && !self.queued()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(chunks: &[&[u8]], limit: usize, eof: bool) -> Vec<String> {
        let mut r = LineReader::default();
        let mut got = Vec::new();
        let mut push = |p: Piece<'_>| {
            got.push(match p {
                Piece::Line(l) => format!("L:{}", String::from_utf8_lossy(l)),
                Piece::TooLong(l) => format!("T:{}", String::from_utf8_lossy(l)),
            })
        };
        for c in chunks {
            r.feed(c, limit, &mut push);
        }
        if eof {
            r.finish(&mut push);
        }
        got
    }

    /// (chunks fed, line limit, EOF at the end, pieces expected)
    type Case = (
        &'static [&'static [u8]],
        usize,
        bool,
        &'static [&'static str],
    );

    #[test]
    fn line_reader_table() {
        let cases: &[Case] = &[
            (&[b"a\nb\n"], 10, false, &["L:a", "L:b"]),
            (&[b"a\r\n"], 10, false, &["L:a\r"]),
            (&[b"ab", b"c\n"], 10, false, &["L:abc"]),
            (&[b"abc"], 10, true, &["L:abc"]),
            (&[b"abc"], 10, false, &[]),
            (&[b"\n\n"], 10, false, &["L:", "L:"]),
            // At the limit exactly: accepted, with `\n` or `\r\n`.
            (&[b"0123456789\n"], 10, false, &["L:0123456789"]),
            (&[b"0123456789\r\n"], 10, false, &["L:0123456789\r"]),
            (&[b"0123456789\r", b"\n"], 10, false, &["L:0123456789\r"]),
            (&[b"0123456789\r"], 10, true, &["L:0123456789\r"]),
            // A `\r` that is not followed by `\n` is part of the line.
            (
                &[b"0123456789\r", b"x\nok\n"],
                10,
                false,
                &["T:0123456789", "L:ok"],
            ),
            (&[b"01234567\rX\n"], 10, false, &["L:01234567\rX"]),
            // One past: answered with its first bytes, the rest skipped.
            (
                &[b"0123456789X\nok\n"],
                10,
                false,
                &["T:0123456789", "L:ok"],
            ),
            (
                &[b"01234", b"56789XYZ", b"more", b"\nok\n"],
                10,
                false,
                &["T:0123456789", "L:ok"],
            ),
            (&[b"0123456789XYZ"], 10, true, &["T:0123456789"]),
            (&[b"01234567", b"89\nz"], 10, true, &["L:0123456789", "L:z"]),
        ];
        for (chunks, limit, eof, want) in cases {
            assert_eq!(pieces(chunks, *limit, *eof), *want, "{chunks:?}");
        }
    }

    #[test]
    fn chunking_never_changes_the_lines() {
        let input: &[u8] = b"IAMAT a +1+1 1\r\nWHATSAT a 1 1\n\nx 0123456789abcdef\nlast";
        let whole = pieces(&[input], 16, true);
        for split in 0..input.len() {
            let (a, b) = input.split_at(split);
            assert_eq!(pieces(&[a, b], 16, true), whole, "split at {split}");
        }
    }

    #[test]
    fn feed_counts_the_bytes_of_over_long_lines_it_discards() {
        let mut r = LineReader::default();
        // 10 kept and answered, "XYZ" discarded, then a line, then the start
        // of another over-long one whose tail comes in the next feeds.
        assert_eq!(r.feed(b"0123456789XYZ\nok\n", 10, |_| {}), 3);
        assert_eq!(r.feed(b"abcdefghijklm", 10, |_| {}), 3);
        assert_eq!(r.feed(b"nopq", 10, |_| {}), 4);
        assert_eq!(r.feed(b"rs\nok\n", 10, |_| {}), 2);
        assert_eq!(r.feed(b"short\n", 10, |_| {}), 0);
    }

    #[test]
    fn throttle_allows_a_seconds_worth_then_pauses_for_the_excess() {
        let mut t = Throttle::default();
        // 1,000 bytes/s: up to 1,000 at once is free.
        assert_eq!(t.charge(600, 0, 1000), None);
        assert_eq!(t.charge(400, 0, 1000), None);
        // 500 past it: half a second for the debt to leak back.
        assert_eq!(t.charge(500, 0, 1000), Some(Duration::from_millis(500)));
        assert_eq!(t.pauses, 1);
        // After that half second the bucket is full again: any byte pauses.
        assert_eq!(t.charge(1, 500, 1000), Some(Duration::from_millis(1)));
        // Two seconds later it has leaked empty.
        assert_eq!(t.charge(1000, 2500, 1000), None);
        assert_eq!(t.pauses, 2);
    }

    #[test]
    fn throttle_keeps_to_its_rate_whatever_the_chunks() {
        // A sender charging as soon as each pause ends gets `rate` bytes a
        // second on average, whether it sends small or large chunks.
        for chunk in [10, 700, 5000] {
            let mut t = Throttle::default();
            let (mut now, mut sent) = (0u32, 0u64);
            while now < 60_000 {
                sent += chunk as u64;
                if let Some(pause) = t.charge(chunk, now, 1000) {
                    now += pause.as_millis() as u32;
                }
            }
            let per_sec = sent as f64 / 60.0;
            assert!(
                (per_sec - 1000.0).abs() < 1000.0 / 60.0 + chunk as f64 / 60.0,
                "chunks of {chunk}: {per_sec} bytes/s"
            );
        }
    }

    #[test]
    fn throttle_survives_the_clock_wrapping() {
        let mut t = Throttle::default();
        assert_eq!(t.charge(1000, u32::MAX - 10, 1000), None);
        // 100 ms later, past the wrap: 100 bytes leaked.
        assert_eq!(t.charge(100, 89, 1000), None);
        assert_eq!(t.charge(1, 89, 1000), Some(Duration::from_millis(1)));
    }

    #[test]
    fn the_held_bit_and_the_acknowledged_record_are_kept_apart() {
        let mut r = Replies::default();
        assert_eq!((r.ack(), r.held()), (0, false));
        r.set_ack(41);
        r.set_held(true);
        assert_eq!((r.ack(), r.held()), (41, true));
        r.set_ack((1 << 63) - 1);
        assert_eq!((r.ack(), r.held()), ((1 << 63) - 1, true));
        r.set_held(false);
        assert_eq!((r.ack(), r.held()), ((1 << 63) - 1, false));
        r.set_ack(7);
        assert_eq!((r.ack(), r.held()), (7, false));
    }

    #[test]
    fn a_connection_costs_at_most_its_budget() {
        // What every idle connection costs in the slab (docs/PERFORMANCE.md:
        // idle plaintext connections at most 200 B each, all told). What
        // only TLS, links, WHATSATs, invalid input or HTTP need is boxed.
        let size = std::mem::size_of::<Conn>();
        assert!(
            size <= CONN_BUDGET,
            "Conn is {size} bytes, over {CONN_BUDGET}"
        );
    }

    #[test]
    fn unfinished_line_memory_is_bounded_by_the_limit() {
        let mut r = LineReader::default();
        for _ in 0..1000 {
            r.feed(&[b'x'; 1000], 100, |_| {});
            assert!(r.pending() <= 100);
        }
    }
}

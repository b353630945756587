//! The wire protocol: lines of bytes in, commands out; AT lines and error
//! replies formatted back into bytes. Pure functions, no I/O, no allocation
//! on the parse path, so they are table-tested and benched without sockets.
//!
//! Grammar (docs/PROTOCOL.md §2–3):
//!
//! ```text
//! IAMAT   CLIENT COORDS TIME          -> Command::Iamat
//! WHATSAT CLIENT RADIUS_KM BOUND      -> Command::Whatsat
//! AT SERVER DIFF CLIENT COORDS TIME   -> Command::At     (herd update)
//! HERD NAME [NONCE]                   -> Command::Herd   (a link says who it is)
//! CHALLENGE NONCE MAC                 -> Command::Challenge (herd link handshake)
//! AUTH MAC                            -> Command::Auth      (herd link handshake)
//! SYNC COUNT                          -> Command::Sync      (catch-up of COUNT updates follows)
//! PING                                -> Command::Ping      (herd link heartbeat, never answered)
//! WATCH CLIENT [CLIENT ...]           -> Command::Watch     (follow clients' positions, §15)
//! WATCH *                             -> Command::Watch     (follow every client)
//! UNWATCH [CLIENT ... | *]            -> Command::Unwatch   (stop those; alone, all)
//!
//! COORDS  = SIGN DEG SIGN DEG         latitude in [-90, 90], longitude in [-180, 180]
//! DEG     = DIGITS [ "." DIGITS ]
//! TIME    = DIGITS [ "." 1*9DIGIT ]   at most 18 integer digits
//! RADIUS  = DIGITS [ "." DIGITS ]     0 < RADIUS <= 50 (kilometres)
//! BOUND   = DIGITS                    1 <= BOUND <= 20
//! DIFF    = SIGN DIGITS "." 9DIGIT
//! SIGN    = "+" / "-"                 always present
//! ```
//!
//! Fields are separated by runs of white space (space, TAB, CR, LF, FF, VT);
//! leading and trailing white space is ignored; a line of only white space is
//! `Command::Blank`. Commands are case-sensitive. Client IDs are any run of
//! non-white-space bytes, UTF-8 or not.
//!
//! How it is built, and why:
//!
//! - [`parse`] splits the line once into at most six borrowed fields on the
//!   stack (it stops at a seventh: no command has that many), then checks the
//!   fields of the one command the first field names. The parsed command
//!   borrows from the line; nothing is copied or allocated.
//! - A journal record is an AT line already in its canonical form (single
//!   spaces): [`parse_canonical_at`] reads one in a single pass with the
//!   same field checks, and leaves every other line to [`parse`].
//! - Range checks on degrees and radii compare the decimal *text* with the
//!   bound: leading zeros are skipped, and a number with more significant
//!   integer digits than the bound is out of range without being converted.
//!   So `+90.0000` is in range, `+90.0000000000000001` is not, `+034.5` is
//!   fine, and no digit string, however long, can overflow anything. There
//!   is no floating point anywhere: a float would round `90.00000000000001`
//!   to 90.
//! - Times are integer nanoseconds in an `i128` ([`Nanos`]); the integer part
//!   of TIME is capped at 18 digits and the fraction at 9, so the value is
//!   exact and well inside the type.
//! - The `write_*` functions append to the caller's output buffer, writing
//!   digits by hand, so a reply costs no temporary `String`.

/// Integer nanoseconds since the POSIX epoch (or a difference of two).
/// i128 so that any 18-digit seconds field times 1e9 cannot overflow.
pub type Nanos = i128;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Bit `b` is set for each white-space byte `b` (all are <= b' ').
const SPACE_MASK: u64 =
    (1 << b' ') | (1 << b'\t') | (1 << b'\n') | (1 << 0x0b) | (1 << 0x0c) | (1 << b'\r');

/// True for the protocol's white-space bytes: space, TAB, LF, VT, FF, CR.
/// (`u8::is_ascii_whitespace` leaves out VT, which the spec includes.)
#[inline]
pub fn is_space(b: u8) -> bool {
    // One compare and one bit test instead of six compares.
    b <= b' ' && SPACE_MASK & (1u64 << b) != 0
}

/// A position as it was written, split into its two signed halves.
/// `lat` and `lng` are the decimal texts *without* a leading `+` (a `-` is kept),
/// ready for a query string: `34.068930`, `-118.445127`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position<'a> {
    pub lat: &'a [u8],
    pub lng: &'a [u8],
}

/// `IAMAT CLIENT COORDS TIME`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iamat<'a> {
    /// The client ID as received: any run of non-white-space bytes.
    pub client: &'a [u8],
    /// The COORDS field exactly as received, e.g. `+34.068930-118.445127`.
    pub coords: &'a [u8],
    /// The TIME field exactly as received, e.g. `1520023934.918963997`.
    pub time: &'a [u8],
    /// COORDS split into latitude and longitude, both range-checked.
    pub position: Position<'a>,
    /// TIME in integer nanoseconds.
    pub sent_at: Nanos,
}

/// `WHATSAT CLIENT RADIUS_KM BOUND`, validated: 0 < radius <= 50 km, 1 <= bound <= 20.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Whatsat<'a> {
    /// The client whose position is the centre of the search.
    pub client: &'a [u8],
    /// The radius field as received (digits with an optional fraction), in km.
    pub radius_km: &'a [u8],
    /// How many Places results to return at most, 1..=20.
    pub bound: u8,
}

/// `AT SERVER DIFF CLIENT COORDS TIME`: an update from the herd, validated
/// (DIFF is a sign, digits, `.`, exactly 9 digits; COORDS and TIME as for IAMAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At<'a> {
    /// The server that received the client's IAMAT.
    pub server: &'a [u8],
    /// The time difference that server measured, as it wrote it.
    pub diff: &'a [u8],
    /// The client ID.
    pub client: &'a [u8],
    /// The client's COORDS as it sent them (see [`position`] to split them).
    pub coords: &'a [u8],
    /// The client's TIME as it sent it.
    pub time: &'a [u8],
    /// TIME in integer nanoseconds.
    pub sent_at: Nanos,
}

/// One parsed line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// Only white space: ignored, no reply.
    Blank,
    Iamat(Iamat<'a>),
    Whatsat(Whatsat<'a>),
    At(At<'a>),
    /// `HERD NAME [NONCE]`: the first line of a herd link, naming the
    /// sending server; with a nonce when the herd has a shared secret.
    Herd {
        name: &'a [u8],
        nonce: Option<&'a [u8]>,
    },
    /// `CHALLENGE NONCE MAC`: the accepting server's answer to an
    /// authenticating `HERD` (see `auth`).
    Challenge {
        nonce: &'a [u8],
        mac: &'a [u8],
    },
    /// `AUTH MAC`: the dialling server's proof (see `auth`).
    Auth {
        mac: &'a [u8],
    },
    /// `SYNC COUNT`: a herd link announces the catch-up that follows: its
    /// whole store, COUNT AT lines.
    Sync {
        count: u64,
    },
    /// `PING`: a herd link's heartbeat, sent by either end when it has said
    /// nothing for a while; never answered.
    Ping,
    /// `WATCH CLIENT [CLIENT ...]` or `WATCH *`: follow those clients'
    /// positions, or every client's (docs/PROTOCOL.md §15).
    Watch(Watched<'a>),
    /// `UNWATCH CLIENT [CLIENT ...]`, `UNWATCH *` (stop following every
    /// client; named ones stay) or `UNWATCH` alone (`None`: stop everything).
    Unwatch(Option<Watched<'a>>),
    /// Anything else: answered with `? ` + the line.
    Invalid,
}

/// What a `WATCH` or `UNWATCH` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watched<'a> {
    /// One or more client IDs (none of them `*`).
    Clients(Clients<'a>),
    /// `*`: every client.
    All,
}

/// The client IDs of a `WATCH` or `UNWATCH` line, any number of them:
/// iterating splits them off the rest of the line (nothing is copied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clients<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Clients<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let start = self.rest.iter().position(|&b| !is_space(b))?;
        let rest = &self.rest[start..];
        let end = rest.iter().position(|&b| is_space(b)).unwrap_or(rest.len());
        self.rest = &rest[end..];
        Some(&rest[..end])
    }
}

/// The IDs of a `WATCH`/`UNWATCH` line after its first field (`first`
/// being its second field, a slice of `line`): `*` alone is every client,
/// `*` among names is not a line at all.
fn watched<'a>(line: &'a [u8], first: &'a [u8], n: usize) -> Option<Watched<'a>> {
    let offset = (first.as_ptr() as usize).wrapping_sub(line.as_ptr() as usize);
    let clients = Clients {
        rest: line.get(offset..)?,
    };
    if first == b"*" && n == 2 {
        return Some(Watched::All);
    }
    if clients.clone().any(|c| c == b"*") {
        return None;
    }
    Some(Watched::Clients(clients))
}

/// A decimal count: 1 to 19 digits, nothing else.
fn count(field: &[u8]) -> Option<u64> {
    if field.is_empty() || field.len() > 19 || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        field
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

/// Parses one line. `line` excludes the `\n`; a trailing `\r` (or any other
/// white space) is allowed and ignored. Never panics, never allocates.
pub fn parse(line: &[u8]) -> Command<'_> {
    let (f, n) = split_fields(line);
    let command = match (f[0], n) {
        (_, 0) => Some(Command::Blank),
        (b"IAMAT", 4) => iamat(f[1], f[2], f[3]).map(Command::Iamat),
        (b"WHATSAT", 4) => whatsat(f[1], f[2], f[3]).map(Command::Whatsat),
        (b"AT", 6) => at(f[1], f[2], f[3], f[4], f[5]).map(Command::At),
        (b"HERD", 2) => Some(Command::Herd {
            name: f[1],
            nonce: None,
        }),
        (b"HERD", 3) => Some(Command::Herd {
            name: f[1],
            nonce: Some(f[2]),
        }),
        (b"CHALLENGE", 3) => Some(Command::Challenge {
            nonce: f[1],
            mac: f[2],
        }),
        (b"AUTH", 2) => Some(Command::Auth { mac: f[1] }),
        (b"SYNC", 2) => count(f[1]).map(|count| Command::Sync { count }),
        (b"PING", 1) => Some(Command::Ping),
        (b"WATCH", 2..) => watched(line, f[1], n).map(Command::Watch),
        (b"UNWATCH", 1) => Some(Command::Unwatch(None)),
        (b"UNWATCH", 2..) => watched(line, f[1], n).map(|w| Command::Unwatch(Some(w))),
        _ => None,
    };
    command.unwrap_or(Command::Invalid)
}

/// The most fields a command has (AT).
const MAX_FIELDS: usize = 6;

/// Splits `line` at runs of white space into at most [`MAX_FIELDS`] fields.
/// Returns the fields and their count; the count is `MAX_FIELDS + 1` when
/// there are more (the scan stops there: the line is invalid whatever follows).
fn split_fields(line: &[u8]) -> ([&[u8]; MAX_FIELDS], usize) {
    let mut fields: [&[u8]; MAX_FIELDS] = [&[]; MAX_FIELDS];
    let mut n = 0;
    let mut i = 0;
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return (fields, n);
        }
        if n == MAX_FIELDS {
            return (fields, MAX_FIELDS + 1);
        }
        let start = i;
        while i < line.len() && !is_space(line[i]) {
            i += 1;
        }
        fields[n] = &line[start..i];
        n += 1;
    }
}

fn iamat<'a>(client: &'a [u8], coords: &'a [u8], time: &'a [u8]) -> Option<Iamat<'a>> {
    Some(Iamat {
        client,
        coords,
        time,
        position: position(coords)?,
        sent_at: timestamp(time)?,
    })
}

fn whatsat<'a>(client: &'a [u8], radius_km: &'a [u8], bound: &'a [u8]) -> Option<Whatsat<'a>> {
    let (int, frac) = split_decimal(radius_km)?;
    let positive = int.iter().chain(frac).any(|&d| d != b'0');
    if !positive || !at_most(int, frac, 50) {
        return None;
    }
    Some(Whatsat {
        client,
        radius_km,
        bound: information_bound(bound)?,
    })
}

fn at<'a>(
    server: &'a [u8],
    diff: &'a [u8],
    client: &'a [u8],
    coords: &'a [u8],
    time: &'a [u8],
) -> Option<At<'a>> {
    if !is_diff(diff) {
        return None;
    }
    position(coords)?;
    Some(At {
        server,
        diff,
        client,
        coords,
        time,
        sent_at: timestamp(time)?,
    })
}

/// Checks and splits a COORDS field (`SIGN DEG SIGN DEG`, latitude in
/// [-90, 90], longitude in [-180, 180]); None if it is not one. [`parse`]
/// does this for IAMAT and AT lines; this is for a stored AT line, whose
/// [`At`] keeps only the COORDS text.
pub fn position(coords: &[u8]) -> Option<Position<'_>> {
    let (split, end) = coords_prefix(coords)?;
    if end != coords.len() {
        return None;
    }
    // Keep a `-` (it is part of the number), drop a `+` (query strings
    // would read it as a space).
    Some(Position {
        lat: unsigned_plus(&coords[..split]),
        lng: unsigned_plus(&coords[split..]),
    })
}

/// A signed DEG without its `+`, if it has one.
fn unsigned_plus(deg: &[u8]) -> &[u8] {
    deg.strip_prefix(b"+").unwrap_or(deg)
}

/// COORDS at the start of `text`: (where the longitude's sign is, where
/// COORDS ends). It ends at the first byte that cannot continue it, so
/// what follows is for the caller to check ([`position`]: nothing).
fn coords_prefix(text: &[u8]) -> Option<(usize, usize)> {
    let (&lat_sign, rest) = text.split_first()?;
    if !is_sign(lat_sign) {
        return None;
    }
    let (int, frac, n) = decimal_prefix(rest)?;
    if !degrees_at_most(rest, int, frac, 90) {
        return None;
    }
    // A DEG holds no sign, so the longitude's sign is the first `+` or `-`
    // after the first byte, and right after the latitude.
    let split = 1 + n;
    let (&lng_sign, rest) = text[split..].split_first()?;
    if !is_sign(lng_sign) {
        return None;
    }
    let (int, frac, n) = decimal_prefix(rest)?;
    if !degrees_at_most(rest, int, frac, 180) {
        return None;
    }
    Some((split, split + 1 + n))
}

/// [`at_most`] for a DEG that starts `text`, `int` and `frac` its digits:
/// an integer part of up to eight digits (every real one) is valued from
/// the word at the start of `text` in one step, with no loop over its
/// digits whose length a branch would have to guess.
#[inline(always)]
fn degrees_at_most(text: &[u8], int: &[u8], frac: &[u8], max: u32) -> bool {
    match (text.first_chunk::<8>(), int.len()) {
        (Some(word), len @ 1..=8) => {
            // The digits moved to the word's top bytes, zero bytes (worth
            // nothing, as leading zeros) below them.
            let v = eight_digits(u64::from_le_bytes(*word) << (8 * (8 - len)));
            v < u64::from(max) || v == u64::from(max) && frac.iter().all(|&d| d == b'0')
        }
        _ => at_most(int, frac, max),
    }
}

fn is_sign(b: u8) -> bool {
    b == b'+' || b == b'-'
}

/// `DIGITS [ "." DIGITS ]` → (integer digits, fraction digits). The fraction
/// is empty exactly when there is no `.`; a `.` needs a digit on each side.
fn split_decimal(text: &[u8]) -> Option<(&[u8], &[u8])> {
    match decimal_prefix(text)? {
        (int, frac, n) if n == text.len() => Some((int, frac)),
        _ => None,
    }
}

/// `DIGITS [ "." DIGITS ]` at the start of `text`: (integer digits, fraction
/// digits, bytes taken). It ends at the first byte that cannot continue it;
/// a `.` needs a digit on each side.
#[inline(always)]
fn decimal_prefix(text: &[u8]) -> Option<(&[u8], &[u8], usize)> {
    let int = digit_run(text);
    if int == 0 {
        return None;
    }
    if text.get(int) != Some(&b'.') {
        return Some((&text[..int], &[], int));
    }
    let frac = digit_run(&text[int + 1..]);
    if frac == 0 {
        return None;
    }
    Some((&text[..int], &text[int + 1..int + 1 + frac], int + 1 + frac))
}

/// How many ASCII digits `text` starts with (read eight bytes at a time:
/// replay reads some 50 digits a record).
#[inline(always)]
fn digit_run(text: &[u8]) -> usize {
    let mut n = 0;
    while let Some(word) = text[n..].first_chunk::<8>() {
        let others = not_digits(u64::from_le_bytes(*word));
        if others != 0 {
            return n + (others.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + text[n..].iter().take_while(|d| d.is_ascii_digit()).count()
}

/// `0x01` in each byte of a word, and each byte's top bit.
const ONES: u64 = u64::from_le_bytes([1; 8]);
const TOPS: u64 = ONES << 7;

/// The top bit of each byte of `word` that is not an ASCII digit. No sum
/// or difference carries out of its byte.
fn not_digits(word: u64) -> u64 {
    let low = word & !TOPS;
    // 0x80 + low - b'0' keeps its top bit exactly when low >= b'0'.
    let below = !((low | TOPS) - u64::from(b'0') * ONES) & TOPS;
    // low + 0x46 reaches 0x80 exactly when low > b'9'.
    let above = (low + 0x46 * ONES) & TOPS;
    (word & TOPS) | below | above
}

/// The value of a run of at most 19 ASCII digits, eight at a time.
fn digits_value(digits: &[u8]) -> u64 {
    let mut v = 0;
    let mut rest = digits;
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        v = v * 100_000_000 + eight_digits(u64::from_le_bytes(*word));
        rest = tail;
    }
    rest.iter().fold(v, |v, &d| v * 10 + u64::from(d - b'0'))
}

/// The value of the eight ASCII digits of `word`, the first in its lowest
/// byte: pairs, then fours, then all eight, each step one multiplication
/// (D. Lemire, "Quickly parsing eight digits", 2022).
fn eight_digits(word: u64) -> u64 {
    let pairs =
        ((word & 0x0f0f_0f0f_0f0f_0f0f).wrapping_mul(10 << 8 | 1) >> 8) & 0x00ff_00ff_00ff_00ff;
    let fours = (pairs.wrapping_mul(100 << 16 | 1) >> 16) & 0x0000_ffff_0000_ffff;
    fours.wrapping_mul(10_000 << 32 | 1) >> 32
}

fn all_digits(text: &[u8]) -> bool {
    text.iter().all(u8::is_ascii_digit)
}

/// `int.frac <= max`, decided exactly on the digit texts.
fn at_most(int: &[u8], frac: &[u8], max: u32) -> bool {
    match small_value(int) {
        Some(v) if v < max => true,
        Some(v) if v == max => frac.iter().all(|&d| d == b'0'),
        _ => false,
    }
}

/// The value of a digit string if it has at most 9 significant digits (so it
/// fits a u32 whatever its leading zeros), else None: "too big for any bound
/// we check".
fn small_value(digits: &[u8]) -> Option<u32> {
    let zeros = digits.iter().take_while(|&&d| d == b'0').count();
    let significant = &digits[zeros..];
    if significant.len() > 9 {
        return None;
    }
    Some(
        significant
            .iter()
            .fold(0, |v, &d| v * 10 + u32::from(d - b'0')),
    )
}

/// BOUND: digits only, 1..=20.
fn information_bound(text: &[u8]) -> Option<u8> {
    if text.is_empty() || !all_digits(text) {
        return None;
    }
    match small_value(text)? {
        v @ 1..=20 => u8::try_from(v).ok(),
        _ => None,
    }
}

/// TIME in nanoseconds: up to 18 integer digits, up to 9 fraction digits.
fn timestamp(text: &[u8]) -> Option<Nanos> {
    match time_prefix(text)? {
        (t, n) if n == text.len() => Some(t),
        _ => None,
    }
}

/// What a TIME fraction of `n` digits (0 to 9) is multiplied by to make
/// nanoseconds: 10^(9 - n), looked up rather than raised.
const FRACTION_SCALE: [u64; 10] = {
    let mut scale = [1; 10];
    let mut n = 9;
    while n > 0 {
        n -= 1;
        scale[n] = scale[n + 1] * 10;
    }
    scale
};

/// TIME at the start of `text`: (its value in nanoseconds, bytes taken).
fn time_prefix(text: &[u8]) -> Option<(Nanos, usize)> {
    let (int, frac, n) = decimal_prefix(text)?;
    if int.len() > 18 || frac.len() > 9 {
        return None;
    }
    // 18 digits < 10^18 < u64::MAX: no overflow.
    let secs = digits_value(int);
    let nanos = digits_value(frac) * FRACTION_SCALE[frac.len()];
    let t = Nanos::from(secs) * Nanos::from(NANOS_PER_SEC) + Nanos::from(nanos);
    Some((t, n))
}

/// DIFF: `SIGN DIGITS "." 9DIGIT`. Not converted, only copied, so the integer
/// part needs no cap.
fn is_diff(text: &[u8]) -> bool {
    diff_prefix(text) == Some(text.len())
}

/// DIFF at the start of `text`: the bytes it takes.
fn diff_prefix(text: &[u8]) -> Option<usize> {
    let (&sign, rest) = text.split_first()?;
    if !is_sign(sign) {
        return None;
    }
    match decimal_prefix(rest)? {
        (_, frac, n) if frac.len() == 9 => Some(1 + n),
        _ => None,
    }
}

/// Parses a journal record: an AT line in the canonical form
/// [`write_at_update`] writes (the six fields joined by single spaces,
/// without the `\n`), in one pass, and says where COORDS sits in it.
/// `Some` exactly when [`parse`] reads `line` as that AT update *and* the
/// line is canonical; `None` for any other line, which the caller then
/// gives to [`parse`]. The fields are checked by the same functions.
pub fn parse_canonical_at(line: &[u8]) -> Option<(At<'_>, Coords)> {
    let rest = line.strip_prefix(b"AT ")?;
    let (server, rest) = word(rest)?;
    let (diff, rest) = then_space(rest, diff_prefix(rest)?)?;
    let (client, rest) = word(rest)?;
    let start = line.len() - rest.len();
    let (split, end) = coords_prefix(rest)?;
    let (coords, time) = then_space(rest, end)?;
    let (sent_at, n) = time_prefix(time)?;
    if n != time.len() {
        return None;
    }
    let at = At {
        server,
        diff,
        client,
        coords,
        time,
        sent_at,
    };
    let coords = Coords {
        start: start as u32,
        split: (start + split) as u32,
        end: (start + end) as u32,
    };
    Some((at, coords))
}

/// A field of a canonical line that may hold any byte but white space, and
/// what follows the one space after it.
fn word(text: &[u8]) -> Option<(&[u8], &[u8])> {
    match first_space(text)? {
        0 => None,
        n => then_space(text, n),
    }
}

/// Where the first white-space byte of `text` is (read eight bytes at a
/// time, as a client ID is some 20).
fn first_space(text: &[u8]) -> Option<usize> {
    let mut n = 0;
    while let Some(word) = text[n..].first_chunk::<8>() {
        let x = u64::from_le_bytes(*word);
        // The top bit of the first byte up to b' ', where all white space
        // is; the bits above it may be wrong (a borrow) and are not used.
        let low = x.wrapping_sub(0x21 * ONES) & !x & TOPS;
        if low == 0 {
            n += 8;
            continue;
        }
        let i = n + (low.trailing_zeros() / 8) as usize;
        if is_space(text[i]) {
            return Some(i);
        }
        // A control byte that is no white space: part of the field.
        n = i + 1;
    }
    text[n..].iter().position(|&b| is_space(b)).map(|i| n + i)
}

/// `text` cut into its first `n` bytes and what follows the single space
/// that must come right after them.
fn then_space(text: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (text.get(n) == Some(&b' ')).then(|| (&text[..n], &text[n + 1..]))
}

/// Where a COORDS field sits in a line: bytes `start..end`, the longitude's
/// sign at `split`. The store keeps it beside each AT line, so a WHATSAT
/// finds the position without parsing the line again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Coords {
    pub start: u32,
    pub split: u32,
    pub end: u32,
}

impl Coords {
    /// Where COORDS sits in the canonical form of `at` (what
    /// [`write_at_update`] writes): after `AT` and four single spaces.
    pub fn of_canonical(at: &At<'_>) -> Coords {
        Coords::at(
            6 + at.server.len() + at.diff.len() + at.client.len(),
            at.coords,
        )
    }

    /// The COORDS of `iamat` found at `start` of a line. [`parse`] split
    /// them already: the longitude it made is the end of COORDS, after its
    /// sign or from its `-`. (An `Iamat` made by hand may hold another
    /// slice: then COORDS is read again.)
    fn of_iamat(start: usize, iamat: &Iamat<'_>) -> Coords {
        let (coords, lng) = (iamat.coords, iamat.position.lng);
        let offset = (lng.as_ptr() as usize).wrapping_sub(coords.as_ptr() as usize);
        let split = offset.wrapping_sub(usize::from(!lng.starts_with(b"-")));
        let suffix = coords.len().checked_sub(offset) == Some(lng.len());
        if !suffix || split == 0 || !coords.get(split).is_some_and(|&b| is_sign(b)) {
            return Coords::at(start, coords);
        }
        Coords {
            start: start as u32,
            split: (start + split) as u32,
            end: (start + coords.len()) as u32,
        }
    }

    /// The COORDS field `coords`, which is valid, found at `start` of a line.
    fn at(start: usize, coords: &[u8]) -> Coords {
        // The second sign: the first `+` or `-` after the first byte.
        let split = coords
            .iter()
            .skip(1)
            .position(|&b| is_sign(b))
            .map_or(coords.len(), |k| k + 1);
        Coords {
            start: start as u32,
            split: (start + split) as u32,
            end: (start + coords.len()) as u32,
        }
    }

    /// The position of `line` (the line these coordinates were taken from),
    /// as [`position`] would split it: a `+` dropped, a `-` kept.
    pub fn position(self, line: &[u8]) -> Position<'_> {
        let (start, split, end) = (self.start as usize, self.split as usize, self.end as usize);
        let half = |range: std::ops::Range<usize>| {
            let text = line.get(range).unwrap_or_default();
            text.strip_prefix(b"+").unwrap_or(text)
        };
        Position {
            lat: half(start..split.max(start)),
            lng: half(split..end.max(split)),
        }
    }
}

/// Appends `AT SERVER DIFF CLIENT COORDS TIME\n` for an IAMAT received at
/// `received_at`: DIFF = received_at - iamat.sent_at, always signed, exactly 9
/// fraction digits, computed in integers. CLIENT, COORDS and TIME are copied
/// byte for byte. Returns where COORDS sits in the line written.
pub fn write_at(out: &mut Vec<u8>, server: &str, received_at: Nanos, iamat: &Iamat<'_>) -> Coords {
    let line_start = out.len();
    // "AT " + 4 separators + "\n" + a DIFF of at most 1 + 30 + 1 + 9 bytes.
    out.reserve(8 + 41 + server.len() + iamat.client.len() + iamat.coords.len() + iamat.time.len());
    out.extend_from_slice(b"AT ");
    out.extend_from_slice(server.as_bytes());
    out.push(b' ');
    // Saturating: both come from 18-digit fields or the clock, far from the
    // limits, but a hand-made Iamat must not be able to panic us.
    write_diff(out, received_at.saturating_sub(iamat.sent_at));
    out.push(b' ');
    out.extend_from_slice(iamat.client);
    out.push(b' ');
    let coords = Coords::of_iamat(out.len() - line_start, iamat);
    out.extend_from_slice(iamat.coords);
    out.push(b' ');
    out.extend_from_slice(iamat.time);
    out.push(b'\n');
    coords
}

/// Appends an AT update in its canonical form: the six fields joined by single
/// spaces, then `\n`. For a line the herd produced this is the line itself.
/// Returns where COORDS sits in the line written.
pub fn write_at_update(out: &mut Vec<u8>, at: &At<'_>) -> Coords {
    let line_start = out.len();
    out.reserve(
        8 + at.server.len() + at.diff.len() + at.client.len() + at.coords.len() + at.time.len(),
    );
    out.extend_from_slice(b"AT");
    for field in [at.server, at.diff, at.client] {
        out.push(b' ');
        out.extend_from_slice(field);
    }
    out.push(b' ');
    let coords = Coords::at(out.len() - line_start, at.coords);
    out.extend_from_slice(at.coords);
    out.push(b' ');
    out.extend_from_slice(at.time);
    out.push(b'\n');
    coords
}

/// Appends a signed nanosecond difference as `+S.NNNNNNNNN` / `-S.NNNNNNNNN`:
/// `+0.263873386`, `-3.500000000`, `+0.000000000` for zero. Negative values
/// are written as a sign and a magnitude, never as a floor and a fraction.
pub fn write_diff(out: &mut Vec<u8>, diff: Nanos) {
    out.push(if diff < 0 { b'-' } else { b'+' });
    let magnitude = diff.unsigned_abs();
    // Every real difference fits a u64; keep the slow 128-bit division for
    // the rest.
    let (secs, nanos) = match u64::try_from(magnitude) {
        Ok(m) => (u128::from(m / NANOS_PER_SEC), m % NANOS_PER_SEC),
        Err(_) => {
            let per_sec = u128::from(NANOS_PER_SEC);
            // The remainder is below 10^9, so the cast is lossless.
            (magnitude / per_sec, (magnitude % per_sec) as u64)
        }
    };
    write_decimal(out, secs);
    // `.` and the nine digits of the fraction, the last eight made at once.
    let first = (nanos / 100_000_000) as u8;
    let mut text = [b'.', b'0' + first, 0, 0, 0, 0, 0, 0, 0, 0];
    text[2..].copy_from_slice(&eight_ascii_digits(nanos % 100_000_000).to_le_bytes());
    out.extend_from_slice(&text);
}

/// The eight decimal digits of `n` (below 10^8, with leading zeros) as ASCII
/// bytes of a little-endian word, the first digit in its lowest byte: the
/// halves of `n` split in two, then each half in two again, in the lanes of
/// one word, each split a multiplication and a shift in place of a division
/// (P.-A. Khuong's method, after D. Lemire, "Converting integers to
/// fix-digit representations quickly", 2021).
fn eight_ascii_digits(n: u64) -> u64 {
    // Two 32-bit lanes: the first four digits low, the last four high.
    let fours = (n / 10_000) | ((n % 10_000) << 32);
    // x * 10486 >> 20 is x / 100 for every x below 10^4 (checked in the
    // tests for all of them); the mask keeps each lane's own quotient.
    let hundreds = ((fours * 10_486) >> 20) & ((0x7f << 32) | 0x7f);
    // Four 16-bit lanes of two digits each, in order.
    let pairs = ((fours - 100 * hundreds) << 16) | hundreds;
    // x * 103 >> 10 is x / 10 for every x below 100.
    let tens = ((pairs * 103) >> 10) & ((0xf << 48) | (0xf << 32) | (0xf << 16) | 0xf);
    let digits = tens | ((pairs - 10 * tens) << 8);
    digits + u64::from(b'0') * ONES
}

/// Appends `n` in decimal, without `fmt` (the traffic log and the load
/// tool use it too).
pub fn write_decimal(out: &mut Vec<u8>, n: u128) {
    // u128::MAX has 39 digits.
    let mut buf = [0u8; 39];
    let mut i = buf.len();
    match u64::try_from(n) {
        Ok(mut n) => loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        },
        Err(_) => {
            let mut n = n;
            loop {
                i -= 1;
                buf[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends `? ` + line + `\n`, where `line` is the line as received without
/// its `\n` and without a `\r` right before that `\n`. (Only that one `\r` is
/// dropped; any other white space is echoed as received.)
pub fn write_invalid(out: &mut Vec<u8>, line: &[u8]) {
    write_refused(out, line.strip_suffix(b"\r").unwrap_or(line));
}

/// Appends `? ` + `bytes` + `\n` with `bytes` exactly as given: for the
/// first bytes of an over-long line, where a last `\r` is not a terminator.
pub fn write_refused(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 3);
    out.extend_from_slice(b"? ");
    out.extend_from_slice(bytes);
    out.push(b'\n');
}

/// Appends `HERD NAME\n` (open herd) or `HERD NAME NONCE\n` (a herd with a
/// shared secret): the first line a server sends on a herd link it opened,
/// so the other end knows which neighbour it is.
pub fn write_herd(out: &mut Vec<u8>, name: &str, nonce: Option<&str>) {
    out.reserve(name.len() + 7 + nonce.map_or(0, str::len));
    out.extend_from_slice(b"HERD ");
    out.extend_from_slice(name.as_bytes());
    if let Some(nonce) = nonce {
        out.push(b' ');
        out.extend_from_slice(nonce.as_bytes());
    }
    out.push(b'\n');
}

/// Appends `CHALLENGE NONCE MAC\n`: the accepting server's answer to an
/// authenticating `HERD` (its own nonce and its proof; see `auth`).
pub fn write_challenge(out: &mut Vec<u8>, nonce: &str, mac: &str) {
    out.extend_from_slice(b"CHALLENGE ");
    out.extend_from_slice(nonce.as_bytes());
    out.push(b' ');
    out.extend_from_slice(mac.as_bytes());
    out.push(b'\n');
}

/// Appends `AUTH MAC\n`: the dialling server's proof.
pub fn write_auth(out: &mut Vec<u8>, mac: &str) {
    out.extend_from_slice(b"AUTH ");
    out.extend_from_slice(mac.as_bytes());
    out.push(b'\n');
}

/// Appends `SYNC COUNT\n`: announces a catch-up of COUNT AT lines.
pub fn write_sync(out: &mut Vec<u8>, count: u64) {
    out.extend_from_slice(b"SYNC ");
    write_decimal(out, u128::from(count));
    out.push(b'\n');
}

/// The heartbeat of a herd link: `PING\n`.
pub const PING: &[u8] = b"PING\n";

/// Appends `PING\n`, a herd link's heartbeat.
pub fn write_ping(out: &mut Vec<u8>) {
    out.extend_from_slice(PING);
}

/// The radius of a valid WHATSAT in metres, as a plain decimal text with no
/// exponent and no trailing fraction zeros: `10` -> `10000`, `0.5` -> `500`,
/// `1.2345` -> `1234.5`, `007` -> `7000`, `0.0001` -> `0.1`.
///
/// It moves the decimal point three places on the text, so it is exact for
/// any number of digits. Bytes other than digits and `.` (not possible in a
/// valid WHATSAT) are carried through, never a panic.
pub fn radius_metres(radius_km: &[u8]) -> String {
    let (int, frac) = match radius_km.iter().position(|&b| b == b'.') {
        Some(dot) => (&radius_km[..dot], &radius_km[dot + 1..]),
        None => (radius_km, &radius_km[radius_km.len()..]),
    };
    let moved = frac.len().min(3);
    let (frac_head, frac_tail) = frac.split_at(moved);

    let mut metres = Vec::with_capacity(int.len() + frac.len() + 4);
    metres.extend_from_slice(int);
    metres.extend_from_slice(frac_head);
    metres.resize(int.len() + 3, b'0');
    let zeros = metres.iter().take_while(|&&d| d == b'0').count();
    // Keep a lone `0` ("0.1"), drop every other leading zero.
    metres.drain(..zeros.min(metres.len() - 1));

    let kept = frac_tail.len() - frac_tail.iter().rev().take_while(|&&d| d == b'0').count();
    if kept > 0 {
        metres.push(b'.');
        metres.extend_from_slice(&frac_tail[..kept]);
    }
    String::from_utf8(metres).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The wall clock now, in nanoseconds since the epoch.
pub fn now_nanos() -> Nanos {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_nanos() as Nanos
}

#[cfg(test)]
mod tests;

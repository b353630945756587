//! The wire protocol: lines of bytes in, commands out; AT lines and error
//! replies formatted back into bytes. Pure functions, no I/O, no allocation
//! on the parse path, so they are table-tested and benched without sockets.
//!
//! Grammar (SPEC §2–3):
//!
//! ```text
//! IAMAT   CLIENT COORDS TIME          -> Command::Iamat
//! WHATSAT CLIENT RADIUS_KM BOUND      -> Command::Whatsat
//! AT SERVER DIFF CLIENT COORDS TIME   -> Command::At     (herd update)
//! HERD NAME [NONCE]                   -> Command::Herd   (a link says who it is)
//! CHALLENGE NONCE MAC                 -> Command::Challenge (herd link handshake)
//! AUTH MAC                            -> Command::Auth      (herd link handshake)
//! SYNC COUNT                          -> Command::Sync      (catch-up of COUNT updates follows)
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
    /// Anything else: answered with `? ` + the line.
    Invalid,
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
    let (&lat_sign, rest) = coords.split_first()?;
    if !is_sign(lat_sign) {
        return None;
    }
    // The second sign is the first `+` or `-` after the first byte; a sign
    // anywhere else makes a DEG non-numeric.
    let k = rest.iter().position(|&b| is_sign(b))?;
    let (lat_digits, lng_signed) = rest.split_at(k);
    let (&lng_sign, lng_digits) = lng_signed.split_first()?;
    let (int, frac) = split_decimal(lat_digits)?;
    if !at_most(int, frac, 90) {
        return None;
    }
    let (int, frac) = split_decimal(lng_digits)?;
    if !at_most(int, frac, 180) {
        return None;
    }
    // Keep a `-` (it is part of the number), drop a `+` (query strings
    // would read it as a space).
    let lat = if lat_sign == b'-' {
        &coords[..=k]
    } else {
        lat_digits
    };
    let lng = if lng_sign == b'-' {
        lng_signed
    } else {
        lng_digits
    };
    Some(Position { lat, lng })
}

fn is_sign(b: u8) -> bool {
    b == b'+' || b == b'-'
}

/// `DIGITS [ "." DIGITS ]` → (integer digits, fraction digits). The fraction
/// is empty exactly when there is no `.`; a `.` needs a digit on each side.
fn split_decimal(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let (int, frac) = match text.iter().position(|&b| b == b'.') {
        Some(dot) => {
            let frac = &text[dot + 1..];
            if frac.is_empty() {
                return None;
            }
            (&text[..dot], frac)
        }
        None => (text, &text[text.len()..]),
    };
    if int.is_empty() || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    Some((int, frac))
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
    let (int, frac) = split_decimal(text)?;
    if int.len() > 18 || frac.len() > 9 {
        return None;
    }
    // 18 digits < 10^18 < u64::MAX: no overflow.
    let secs = int.iter().fold(0u64, |v, &d| v * 10 + u64::from(d - b'0'));
    let mut nanos = frac.iter().fold(0u32, |v, &d| v * 10 + u32::from(d - b'0'));
    for _ in frac.len()..9 {
        nanos *= 10;
    }
    Some(Nanos::from(secs) * Nanos::from(NANOS_PER_SEC) + Nanos::from(nanos))
}

/// DIFF: `SIGN DIGITS "." 9DIGIT`. Not converted, only copied, so the integer
/// part needs no cap.
fn is_diff(text: &[u8]) -> bool {
    match text.split_first() {
        Some((&sign, rest)) if is_sign(sign) => {
            matches!(split_decimal(rest), Some((_, frac)) if frac.len() == 9)
        }
        _ => false,
    }
}

/// Appends `AT SERVER DIFF CLIENT COORDS TIME\n` for an IAMAT received at
/// `received_at`: DIFF = received_at - iamat.sent_at, always signed, exactly 9
/// fraction digits, computed in integers. CLIENT, COORDS and TIME are copied
/// byte for byte.
pub fn write_at(out: &mut Vec<u8>, server: &str, received_at: Nanos, iamat: &Iamat<'_>) {
    // "AT " + 4 separators + "\n" + a DIFF of at most 1 + 30 + 1 + 9 bytes.
    out.reserve(8 + 41 + server.len() + iamat.client.len() + iamat.coords.len() + iamat.time.len());
    out.extend_from_slice(b"AT ");
    out.extend_from_slice(server.as_bytes());
    out.push(b' ');
    // Saturating: both come from 18-digit fields or the clock, far from the
    // limits, but a hand-made Iamat must not be able to panic us.
    write_diff(out, received_at.saturating_sub(iamat.sent_at));
    for field in [iamat.client, iamat.coords, iamat.time] {
        out.push(b' ');
        out.extend_from_slice(field);
    }
    out.push(b'\n');
}

/// Appends an AT update in its canonical form: the six fields joined by single
/// spaces, then `\n`. For a line the herd produced this is the line itself.
pub fn write_at_update(out: &mut Vec<u8>, at: &At<'_>) {
    out.reserve(
        8 + at.server.len() + at.diff.len() + at.client.len() + at.coords.len() + at.time.len(),
    );
    out.extend_from_slice(b"AT");
    for field in [at.server, at.diff, at.client, at.coords, at.time] {
        out.push(b' ');
        out.extend_from_slice(field);
    }
    out.push(b'\n');
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
    out.push(b'.');
    let mut digits = [b'0'; 9];
    let mut rest = nanos;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits);
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

/// Appends `HERD NAME\n`, the line a server sends first on a herd link it
/// opened, so the other end knows which neighbour it is.
pub fn write_herd(out: &mut Vec<u8>, name: &str) {
    out.reserve(name.len() + 6);
    out.extend_from_slice(b"HERD ");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
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
mod tests {
    use super::*;

    /// Shows a line with its non-printable bytes escaped, for failure messages.
    fn show(line: &[u8]) -> String {
        line.escape_ascii().to_string()
    }

    fn iamat_of(line: &[u8]) -> Iamat<'_> {
        match parse(line) {
            Command::Iamat(i) => i,
            other => panic!("{}: expected IAMAT, got {other:?}", show(line)),
        }
    }

    const S: Nanos = 1_000_000_000;

    /// A byte string in a test table.
    type Bytes = &'static [u8];

    #[test]
    fn space_bytes() {
        let spaces: Vec<u8> = (0..=255u8).filter(|&b| is_space(b)).collect();
        assert_eq!(spaces, b"\t\n\x0b\x0c\r ");
    }

    #[test]
    fn iamat_valid() {
        let line = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997";
        let expected = Iamat {
            client: b"kiwi.cs.ucla.edu",
            coords: b"+34.068930-118.445127",
            time: b"1520023934.918963997",
            position: Position {
                lat: b"34.068930",
                lng: b"-118.445127",
            },
            sent_at: 1520023934 * S + 918963997,
        };
        assert_eq!(parse(line), Command::Iamat(expected));
    }

    #[test]
    fn iamat_clients() {
        // Any run of non-white-space bytes, UTF-8 or not.
        let cases: &[&[u8]] = &[
            b"c",
            b"\xff\xfe",
            b"\x00\x1f\x7f\x85\xa0",
            b"IAMAT",
            b"+1+1",
            b"\xe2\x82\xac",
        ];
        for &client in cases {
            let line = [&b"IAMAT "[..], client, b" +1+1 1"].concat();
            assert_eq!(iamat_of(&line).client, client, "{}", show(&line));
        }
    }

    #[test]
    fn coords_valid() {
        // COORDS -> lat, lng (a `+` dropped, a `-` kept).
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str)] = &[
            ("+34.068930-118.445127", "34.068930", "-118.445127"),
            ("-33.86+151.2", "-33.86", "151.2"),
            ("+0+0", "0", "0"),
            ("-0-0", "-0", "-0"),
            ("+0.0-0.000", "0.0", "-0.000"),
            // Integer and fractional degrees mixed.
            ("+1.5-2", "1.5", "-2"),
            ("-1+2.25", "-1", "2.25"),
            // The bounds, exactly, with and without fraction zeros.
            ("+90+180", "90", "180"),
            ("-90-180", "-90", "-180"),
            ("+90.0000-180.000000", "90.0000", "-180.000000"),
            ("-90.0+180.00000000000000000000", "-90.0", "180.00000000000000000000"),
            ("+89.999999999+179.9999999999", "89.999999999", "179.9999999999"),
            ("-89.99999999999999999999-179.99999999999999999999",
             "-89.99999999999999999999", "-179.99999999999999999999"),
            // Leading zeros, any number of them.
            ("+034.5-0000000000000000000000118.4", "034.5", "-0000000000000000000000118.4"),
            ("+00090.0+00180", "00090.0", "00180"),
            ("+000000000000000000000+00000000000000000000000", "000000000000000000000", "00000000000000000000000"),
        ];
        for &(coords, lat, lng) in cases {
            let line = format!("IAMAT c {coords} 1");
            let i = iamat_of(line.as_bytes());
            assert_eq!(i.coords, coords.as_bytes(), "{line}");
            let position = Position {
                lat: lat.as_bytes(),
                lng: lng.as_bytes(),
            };
            assert_eq!(i.position, position, "{line}");
        }
    }

    #[test]
    fn iamat_time() {
        // 0 to 9 fraction digits, leading zeros, 18 integer digits.
        let cases: &[(&[u8], Nanos)] = &[
            (b"0", 0),
            (b"0.0", 0),
            (b"5", 5 * S),
            (b"5.1", 5 * S + 100_000_000),
            (b"5.12", 5 * S + 120_000_000),
            (b"5.123", 5 * S + 123_000_000),
            (b"5.1234", 5 * S + 123_400_000),
            (b"5.12345", 5 * S + 123_450_000),
            (b"5.123456", 5 * S + 123_456_000),
            (b"5.1234567", 5 * S + 123_456_700),
            (b"5.12345678", 5 * S + 123_456_780),
            (b"5.123456789", 5 * S + 123_456_789),
            (b"5.000000001", 5 * S + 1),
            (b"0.999999999", S - 1),
            (b"0000000001.5", S + S / 2),
            (b"999999999999999999", 999_999_999_999_999_999 * S),
            (
                b"999999999999999999.999999999",
                999_999_999_999_999_999 * S + S - 1,
            ),
            (b"000000000000000000", 0),
        ];
        for &(time, nanos) in cases {
            let mut line = b"IAMAT c +1+1 ".to_vec();
            line.extend_from_slice(time);
            let i = iamat_of(&line);
            assert_eq!(i.sent_at, nanos, "{}", show(time));
            assert_eq!(i.time, time);
        }
    }

    #[test]
    fn iamat_invalid() {
        let cases: &[&[u8]] = &[
            // Field count.
            b"IAMAT",
            b"IAMAT c",
            b"IAMAT c +1+1",
            b"IAMAT c +1+1 1 extra",
            b"IAMAT c +1+1 1 a b c d e f g",
            // Case and spelling.
            b"iamat c +1+1 1",
            b"Iamat c +1+1 1",
            b"IAMAT: c +1+1 1",
            b"IAMATc +1+1 1",
            // Signs: missing, doubled, both.
            b"IAMAT c 1+1 1",
            b"IAMAT c +1 1",
            b"IAMAT c +11 1",
            b"IAMAT c 34.068930-118.445127 1",
            b"IAMAT c ++1+1 1",
            b"IAMAT c +1++1 1",
            b"IAMAT c +-1+1 1",
            b"IAMAT c +1+-1 1",
            b"IAMAT c -+1+1 1",
            b"IAMAT c +1+1+1 1",
            b"IAMAT c +1+1- 1",
            b"IAMAT c +1+ 1",
            b"IAMAT c + +1 1",
            b"IAMAT c +1- 1",
            b"IAMAT c + 1",
            b"IAMAT c +- 1",
            // Ranges past the bounds.
            b"IAMAT c +90.0000000000000001+0 1",
            b"IAMAT c -90.0000000000000001+0 1",
            b"IAMAT c +90.1+0 1",
            b"IAMAT c +91+0 1",
            b"IAMAT c +100+0 1",
            b"IAMAT c +0+180.0000000000000001 1",
            b"IAMAT c +0-180.0000000000000001 1",
            b"IAMAT c +0+181 1",
            b"IAMAT c +0-1000 1",
            b"IAMAT c +0+99999999999999999999999999 1",
            b"IAMAT c +00000000000000000091+0 1",
            // Dots without digits, stray characters.
            b"IAMAT c +.5+1 1",
            b"IAMAT c +5.+1 1",
            b"IAMAT c +1+.5 1",
            b"IAMAT c +1+5. 1",
            b"IAMAT c +.+1 1",
            b"IAMAT c +1.2.3+1 1",
            b"IAMAT c +1,5+1 1",
            b"IAMAT c +1e1+1 1",
            b"IAMAT c +1+1e1 1",
            b"IAMAT c +1+1x 1",
            b"IAMAT c +\xff+1 1",
            b"IAMAT c +\xd9\xa1+1 1",
            // TIME: signs, exponents, dots, too many digits.
            b"IAMAT c +1+1 -1",
            b"IAMAT c +1+1 +1",
            b"IAMAT c +1+1 1e9",
            b"IAMAT c +1+1 .5",
            b"IAMAT c +1+1 5.",
            b"IAMAT c +1+1 .",
            b"IAMAT c +1+1 1.2.3",
            b"IAMAT c +1+1 1.1234567890",
            b"IAMAT c +1+1 1.000000000000",
            b"IAMAT c +1+1 1234567890123456789",
            b"IAMAT c +1+1 0000000000000000000",
            b"IAMAT c +1+1 x",
            b"IAMAT c +1+1 1_000",
        ];
        for &line in cases {
            assert_eq!(parse(line), Command::Invalid, "{}", show(line));
        }
    }

    #[test]
    fn white_space() {
        let expected = iamat_of(b"IAMAT c +1+1 1");
        for sep in [
            &b" "[..],
            b"\t",
            b"\r",
            b"\n",
            b"\x0b",
            b"\x0c",
            b"  ",
            b" \t\x0b\x0c\r\n ",
        ] {
            let mut line = Vec::new();
            line.extend_from_slice(sep);
            for field in [&b"IAMAT"[..], b"c", b"+1+1", b"1"] {
                line.extend_from_slice(field);
                line.extend_from_slice(sep);
            }
            assert_eq!(parse(&line), Command::Iamat(expected), "{}", show(&line));
            // Without the white space around the line too.
            let inner = &line[sep.len()..line.len() - sep.len()];
            assert_eq!(parse(inner), Command::Iamat(expected), "{}", show(inner));
        }
        // CRLF: the `\n` is gone, the `\r` stays and is white space.
        assert_eq!(parse(b"IAMAT c +1+1 1\r"), Command::Iamat(expected));
        assert_eq!(parse(b"IAMAT c +1+1 1\r\r"), Command::Iamat(expected));
        // Bytes that look like space but are not the protocol's.
        for not_space in [
            &b"\x00"[..],
            b"\x1f",
            b"\x85",
            b"\xa0",
            b"\xc2\xa0",
            b"\xe3\x80\x80",
        ] {
            let mut line = b"IAMAT".to_vec();
            line.extend_from_slice(not_space);
            line.extend_from_slice(b"c +1+1 1");
            assert_eq!(parse(&line), Command::Invalid, "{}", show(&line));
        }
    }

    #[test]
    fn blank() {
        let cases: &[&[u8]] = &[
            b"",
            b" ",
            b"\r",
            b"\t",
            b"\x0b",
            b"\x0c",
            b"\n",
            b" \t\r\n\x0b\x0c  \r",
        ];
        for &line in cases {
            assert_eq!(parse(line), Command::Blank, "{}", show(line));
        }
    }

    #[test]
    fn unknown_commands() {
        let cases: &[&[u8]] = &[
            b"x",
            b"HELLO world",
            b"\xff\xfe",
            b"IAMATX c +1+1 1",
            b"WHATSATS c 10 5",
            b"ATT s +0.000000000 c +1+1 1",
            b"at s +0.000000000 c +1+1 1",
            b"herd Goloman",
            b"Herd Goloman",
            b"WHATSAT",
            b"AT",
            b"HERD",
            b"?",
            b"? IAMAT c +1+1 1",
            b"\x00IAMAT c +1+1 1",
        ];
        for &line in cases {
            assert_eq!(parse(line), Command::Invalid, "{}", show(line));
        }
    }

    #[test]
    fn whatsat_valid() {
        #[rustfmt::skip]
        let cases: &[(Bytes, Bytes, Bytes, u8)] = &[
            (b"WHATSAT kiwi.cs.ucla.edu 10 5", b"kiwi.cs.ucla.edu", b"10", 5),
            (b"WHATSAT c 50 20", b"c", b"50", 20),
            (b"WHATSAT c 50.0 1", b"c", b"50.0", 1),
            (b"WHATSAT c 50.000000000000000000000 1", b"c", b"50.000000000000000000000", 1),
            (b"WHATSAT c 49.999999999999999999 1", b"c", b"49.999999999999999999", 1),
            (b"WHATSAT c 0.5 1", b"c", b"0.5", 1),
            (b"WHATSAT c 0.0001 1", b"c", b"0.0001", 1),
            (b"WHATSAT c 0.000000000000000000001 1", b"c", b"0.000000000000000000001", 1),
            (b"WHATSAT c 1 1", b"c", b"1", 1),
            (b"WHATSAT c 007 05", b"c", b"007", 5),
            (b"WHATSAT c 000000000000000000000050 000000000000000000020", b"c", b"000000000000000000000050", 20),
            (b"WHATSAT c 1.2345 19", b"c", b"1.2345", 19),
            (b"WHATSAT \xff\xfe 10 5", b"\xff\xfe", b"10", 5),
            (b"\tWHATSAT\x0bc\x0c10\r5\r", b"c", b"10", 5),
        ];
        for &(line, client, radius_km, bound) in cases {
            let expected = Whatsat {
                client,
                radius_km,
                bound,
            };
            assert_eq!(parse(line), Command::Whatsat(expected), "{}", show(line));
        }
    }

    #[test]
    fn whatsat_invalid() {
        let cases: &[&[u8]] = &[
            b"WHATSAT c",
            b"WHATSAT c 10",
            b"WHATSAT c 10 5 5",
            b"whatsat c 10 5",
            // Radius.
            b"WHATSAT c 0 5",
            b"WHATSAT c 0.000 5",
            b"WHATSAT c 000 5",
            b"WHATSAT c 50.0001 5",
            b"WHATSAT c 50.00000000000000000001 5",
            b"WHATSAT c 51 5",
            b"WHATSAT c 100 5",
            b"WHATSAT c 99999999999999999999999 5",
            b"WHATSAT c -10 5",
            b"WHATSAT c +10 5",
            b"WHATSAT c .5 5",
            b"WHATSAT c 5. 5",
            b"WHATSAT c 1e1 5",
            b"WHATSAT c ten 5",
            b"WHATSAT c 10km 5",
            b"WHATSAT c 1.2.3 5",
            // Bound.
            b"WHATSAT c 10 0",
            b"WHATSAT c 10 00",
            b"WHATSAT c 10 21",
            b"WHATSAT c 10 100",
            b"WHATSAT c 10 4294967297",
            b"WHATSAT c 10 99999999999999999999999",
            b"WHATSAT c 10 -5",
            b"WHATSAT c 10 +5",
            b"WHATSAT c 10 5.0",
            b"WHATSAT c 10 5x",
            b"WHATSAT c 10 five",
        ];
        for &line in cases {
            assert_eq!(parse(line), Command::Invalid, "{}", show(line));
        }
    }

    #[test]
    fn bound_range() {
        for bound in 0..=30u8 {
            let line = format!("WHATSAT c 10 {bound}");
            match parse(line.as_bytes()) {
                Command::Whatsat(w) => {
                    assert!((1..=20).contains(&bound) && w.bound == bound, "{line}")
                }
                other => assert!(
                    other == Command::Invalid && !(1..=20).contains(&bound),
                    "{line}"
                ),
            }
        }
    }

    const AT_LINE: &[u8] =
        b"AT Goloman +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997";

    #[test]
    fn at_valid() {
        let expected = At {
            server: b"Goloman",
            diff: b"+0.263873386",
            client: b"kiwi.cs.ucla.edu",
            coords: b"+34.068930-118.445127",
            time: b"1520023934.918963997",
            sent_at: 1520023934 * S + 918963997,
        };
        assert_eq!(parse(AT_LINE), Command::At(expected));
        let mut crlf = AT_LINE.to_vec();
        crlf.extend_from_slice(b"\r");
        assert_eq!(parse(&crlf), Command::At(expected));

        let cases: &[(&[u8], &[u8], Nanos)] = &[
            (b"AT s -0.000000123 c +1+1 1", b"-0.000000123", S),
            (
                b"AT s +123456789012.000000000 c +90-180 1.5",
                b"+123456789012.000000000",
                S + S / 2,
            ),
            (b"AT s -000.000000000 c +1+1 0", b"-000.000000000", 0),
            (
                b"AT \xff \x2b0.000000000 \xfe -1-1 7",
                b"+0.000000000",
                7 * S,
            ),
        ];
        for &(line, diff, sent_at) in cases {
            match parse(line) {
                Command::At(at) => {
                    assert_eq!(at.diff, diff, "{}", show(line));
                    assert_eq!(at.sent_at, sent_at, "{}", show(line));
                }
                other => panic!("{}: {other:?}", show(line)),
            }
        }
    }

    #[test]
    fn at_invalid() {
        let cases: &[&[u8]] = &[
            // Field count.
            b"AT Goloman +0.263873386 kiwi +34.068930-118.445127",
            b"AT Goloman +0.263873386 kiwi +34.068930-118.445127 1520023934.918963997 x",
            b"AT +0.263873386 kiwi +34.068930-118.445127 1520023934.918963997",
            // DIFF.
            b"AT s 0.263873386 c +1+1 1",
            b"AT s ++0.263873386 c +1+1 1",
            b"AT s +0.26387338 c +1+1 1",
            b"AT s +0.2638733861 c +1+1 1",
            b"AT s +0 c +1+1 1",
            b"AT s +0. c +1+1 1",
            b"AT s +.263873386 c +1+1 1",
            b"AT s + c +1+1 1",
            b"AT s +0.26387338x c +1+1 1",
            b"AT s +1e3.000000000 c +1+1 1",
            // COORDS.
            b"AT s +0.000000000 c 1+1 1",
            b"AT s +0.000000000 c +91+1 1",
            b"AT s +0.000000000 c +1+181 1",
            b"AT s +0.000000000 c +1 1",
            // TIME.
            b"AT s +0.000000000 c +1+1 -1",
            b"AT s +0.000000000 c +1+1 1.1234567890",
            b"AT s +0.000000000 c +1+1 1234567890123456789",
            b"AT s +0.000000000 c +1+1 x",
        ];
        for &line in cases {
            assert_eq!(parse(line), Command::Invalid, "{}", show(line));
        }
    }

    #[test]
    fn position_of_stored_at() {
        let at = match parse(AT_LINE) {
            Command::At(at) => at,
            other => panic!("{other:?}"),
        };
        let p = position(at.coords);
        assert_eq!(
            p,
            Some(Position {
                lat: b"34.068930",
                lng: b"-118.445127"
            })
        );
        for bad in [&b""[..], b"+", b"+1", b"1+1", b"+91+0", b"+0+181", b"+1+1 "] {
            assert_eq!(position(bad), None, "{}", show(bad));
        }
    }

    #[test]
    fn herd() {
        assert_eq!(
            parse(b"HERD Goloman"),
            Command::Herd {
                name: b"Goloman",
                nonce: None
            }
        );
        assert_eq!(
            parse(b" HERD\tGoloman\r"),
            Command::Herd {
                name: b"Goloman",
                nonce: None
            }
        );
        assert_eq!(
            parse(b"HERD \xff"),
            Command::Herd {
                name: b"\xff",
                nonce: None
            }
        );
        assert_eq!(parse(b"HERD"), Command::Invalid);
        assert_eq!(
            parse(b"HERD Goloman 00ff"),
            Command::Herd {
                name: b"Goloman",
                nonce: Some(b"00ff")
            }
        );
        assert_eq!(parse(b"HERD Goloman 00ff x"), Command::Invalid);
        assert_eq!(
            parse(b"CHALLENGE n m"),
            Command::Challenge {
                nonce: b"n",
                mac: b"m"
            }
        );
        assert_eq!(parse(b"CHALLENGE n"), Command::Invalid);
        assert_eq!(parse(b"AUTH m"), Command::Auth { mac: b"m" });
        assert_eq!(parse(b"AUTH"), Command::Invalid);
        assert_eq!(parse(b"auth m"), Command::Invalid);
        assert_eq!(parse(b"SYNC 0"), Command::Sync { count: 0 });
        assert_eq!(parse(b"SYNC 100000"), Command::Sync { count: 100_000 });
        assert_eq!(
            parse(b"SYNC 9999999999999999999"),
            Command::Sync {
                count: 9_999_999_999_999_999_999
            }
        );
        assert_eq!(parse(b"SYNC 99999999999999999999"), Command::Invalid);
        assert_eq!(parse(b"SYNC -1"), Command::Invalid);
        assert_eq!(parse(b"SYNC"), Command::Invalid);
        assert_eq!(parse(b"SYNC 1 2"), Command::Invalid);
        assert_eq!(parse(b"herd Goloman"), Command::Invalid);
    }

    #[test]
    fn diffs() {
        let cases: &[(Nanos, &str)] = &[
            (0, "+0.000000000"),
            (1, "+0.000000001"),
            (-1, "-0.000000001"),
            (-123, "-0.000000123"),
            (263_873_386, "+0.263873386"),
            (12 * S, "+12.000000000"),
            (-(3 * S + S / 2), "-3.500000000"),
            (-S, "-1.000000000"),
            (S - 1, "+0.999999999"),
            (-(S - 1), "-0.999999999"),
            (1520023934 * S + 918963997, "+1520023934.918963997"),
            (
                999_999_999_999_999_999 * S + S - 1,
                "+999999999999999999.999999999",
            ),
            (
                -(999_999_999_999_999_999 * S + S - 1),
                "-999999999999999999.999999999",
            ),
            (i64::MAX as Nanos, "+9223372036.854775807"),
            (u64::MAX as Nanos, "+18446744073.709551615"),
            (u64::MAX as Nanos + 1, "+18446744073.709551616"),
            (Nanos::MAX, "+170141183460469231731687303715.884105727"),
            (Nanos::MIN, "-170141183460469231731687303715.884105728"),
        ];
        for &(diff, text) in cases {
            let mut out = b"x".to_vec();
            write_diff(&mut out, diff);
            assert_eq!(show(&out[1..]), text, "{diff}");
        }
    }

    #[test]
    fn write_at_reply() {
        let i = iamat_of(b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997");
        let mut out = b"before\n".to_vec();
        write_at(&mut out, "Goloman", 1520023935 * S + 182837383, &i);
        assert_eq!(show(&out), show(&[b"before\n", AT_LINE, b"\n"].concat()));

        // A client clock ahead of ours: a negative difference.
        let i = iamat_of(b"IAMAT c +0+0 100.5");
        let mut out = Vec::new();
        write_at(&mut out, "S", 97 * S, &i);
        assert_eq!(show(&out), "AT S -3.500000000 c +0+0 100.5\\n");

        // Fields are copied as received, odd bytes and leading zeros included.
        let i = iamat_of(b"IAMAT \xff\xfe +034.5-0 007");
        let mut out = Vec::new();
        write_at(&mut out, "S", 7 * S, &i);
        assert_eq!(out, b"AT S +0.000000000 \xff\xfe +034.5-0 007\n");

        // Extremes of the types saturate instead of overflowing.
        let mut out = Vec::new();
        write_at(
            &mut out,
            "S",
            Nanos::MIN,
            &Iamat {
                sent_at: Nanos::MAX,
                ..i
            },
        );
        assert!(out.starts_with(b"AT S -170141183460469231731687303715.884105728 "));
    }

    #[test]
    fn at_round_trip() {
        // What write_at produces is an AT line, and write_at_update gives it back.
        let i = iamat_of(b"IAMAT \xff\xfe -33.86+151.2 1520023934.5");
        let mut reply = Vec::new();
        write_at(&mut reply, "Hands", 1520023934 * S, &i);
        assert_eq!(
            reply,
            b"AT Hands -0.500000000 \xff\xfe -33.86+151.2 1520023934.5\n"
        );
        let at = match parse(&reply[..reply.len() - 1]) {
            Command::At(at) => at,
            other => panic!("{other:?}"),
        };
        assert_eq!(at.sent_at, i.sent_at);
        let mut update = Vec::new();
        write_at_update(&mut update, &at);
        assert_eq!(update, reply);

        // Odd white space is normalised to single spaces.
        let at = match parse(b"\tAT  s\x0b+0.000000000\x0cc  +1+1 1 \r") {
            Command::At(at) => at,
            other => panic!("{other:?}"),
        };
        let mut update = b"x\n".to_vec();
        write_at_update(&mut update, &at);
        assert_eq!(update, b"x\nAT s +0.000000000 c +1+1 1\n");
    }

    #[test]
    fn invalid_reply() {
        let cases: &[(&[u8], &[u8])] = &[
            (
                b"WHATSAT nobody.example 10 5",
                b"? WHATSAT nobody.example 10 5\n",
            ),
            (
                b"WHATSAT nobody.example 10 5\r",
                b"? WHATSAT nobody.example 10 5\n",
            ),
            (b"x\r\r", b"? x\r\n"),
            (b" x \t", b"?  x \t\n"),
            (b"", b"? \n"),
            (b"\r", b"? \n"),
            (b"\xff\xfe", b"? \xff\xfe\n"),
        ];
        for &(line, reply) in cases {
            let mut out = Vec::new();
            write_invalid(&mut out, line);
            assert_eq!(show(&out), show(reply), "{}", show(line));
        }
    }

    #[test]
    fn herd_line() {
        let mut out = Vec::new();
        write_herd(&mut out, "Goloman");
        assert_eq!(out, b"HERD Goloman\n");
        assert_eq!(
            parse(&out[..out.len() - 1]),
            Command::Herd {
                name: b"Goloman",
                nonce: None
            }
        );
    }

    #[test]
    fn radius_in_metres() {
        let cases: &[(&[u8], &str)] = &[
            (b"10", "10000"),
            (b"0.5", "500"),
            (b"1.2345", "1234.5"),
            (b"50", "50000"),
            (b"50.0", "50000"),
            (b"50.000000", "50000"),
            (b"0.0001", "0.1"),
            (b"0.000000000000000000001", "0.000000000000000001"),
            (b"007", "7000"),
            (b"1.5000", "1500"),
            (b"1.5", "1500"),
            (b"1.25", "1250"),
            (b"1.125", "1125"),
            (b"1.1250", "1125"),
            (b"0.001", "1"),
            (b"0.010", "10"),
            (b"0.0010", "1"),
            (b"49.99999", "49999.99"),
            (b"000.5", "500"),
        ];
        for &(km, metres) in cases {
            assert_eq!(radius_metres(km), metres, "{}", show(km));
        }
        // Not reachable from a valid WHATSAT, but no panic.
        for junk in [&b""[..], b".", b"..", b"\xff", b"0", b"1.2.3", b".000"] {
            let _ = radius_metres(junk);
        }
    }

    #[test]
    fn radius_metres_of_every_valid_whatsat_parses_back() {
        // The metres text is itself a plain decimal of the same value.
        for km in ["0.001", "2.5", "10", "12.3456789", "50.0", "0.0000001"] {
            let line = format!("WHATSAT c {km} 1");
            let Command::Whatsat(w) = parse(line.as_bytes()) else {
                panic!("{line}")
            };
            let metres = radius_metres(w.radius_km);
            assert!(split_decimal(metres.as_bytes()).is_some(), "{metres}");
        }
    }

    #[test]
    fn never_panics() {
        // Random lines over the bytes that matter to the grammar.
        const ALPHABET: &[u8] = b"+-.0123456789 \t\r\x0b\x0c\n\xffIAMTWHSDER";
        let words: [&[u8]; 5] = [b"IAMAT ", b"WHATSAT ", b"AT ", b"HERD ", b""];
        let mut rng = fastrand::Rng::with_seed(6709);
        let mut line = Vec::new();
        let mut out = Vec::new();
        for _ in 0..200_000 {
            line.clear();
            line.extend_from_slice(words[rng.usize(..words.len())]);
            for _ in 0..rng.usize(..48) {
                line.push(ALPHABET[rng.usize(..ALPHABET.len())]);
            }
            out.clear();
            match parse(&line) {
                Command::Iamat(i) => write_at(&mut out, "S", rng.i128(..), &i),
                Command::At(at) => write_at_update(&mut out, &at),
                Command::Whatsat(w) => out.extend_from_slice(radius_metres(w.radius_km).as_bytes()),
                Command::Herd { .. }
                | Command::Challenge { .. }
                | Command::Auth { .. }
                | Command::Sync { .. }
                | Command::Blank => {}
                Command::Invalid => write_invalid(&mut out, &line),
            }
        }
    }
}

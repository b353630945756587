//! The line protocol's grammar (docs/PROTOCOL.md §2–3) as the property suites model it,
//! written from docs/PROTOCOL.md, not from the code: an oracle of what
//! `protocol::parse` must return, the value of a DIFF by digit arithmetic of
//! its own, and generators of valid fields. Shared by `props_protocol.rs`,
//! `props_line_reader.rs` and `props_socket/`, which include it by path.
#![allow(dead_code)]

use std::cmp::Ordering;
use std::fmt;

use herd::protocol::{At, Command, Iamat, Nanos, Position, Whatsat};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;

/// The protocol's white space (docs/PROTOCOL.md §2).
pub const SPACES: &[u8] = b" \t\n\x0b\x0c\r";
/// White space that does not end a line: what a client can put inside one.
pub const LINE_SPACES: &[u8] = b" \t\x0b\x0c\r";

pub fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Bytes, shown escaped in failure reports.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct B(pub Vec<u8>);

impl fmt::Debug for B {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

pub fn show(bytes: &[u8]) -> String {
    const MAX: usize = 160;
    if bytes.len() > MAX {
        format!("{}... ({} bytes)", bytes[..MAX].escape_ascii(), bytes.len())
    } else {
        bytes.escape_ascii().to_string()
    }
}

pub fn is_space(b: u8) -> bool {
    SPACES.contains(&b)
}

/// `? ` + the line without its terminator (a `\r` before the `\n` is part of it).
pub fn invalid_reply(line: &[u8]) -> Vec<u8> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    [b"? ", line].concat()
}

// ---------------------------------------------------------------------------
// An oracle for `protocol::parse`, written from the grammar, not the code.

/// `DIGITS [ "." DIGITS ]` → (integer digits, fraction digits).
pub fn decimal(text: &[u8]) -> Option<(&[u8], &[u8])> {
    let digits = |t: &[u8]| !t.is_empty() && t.iter().all(u8::is_ascii_digit);
    let mut parts = text.splitn(2, |&b| b == b'.');
    let int = parts.next()?;
    match parts.next() {
        None => digits(int).then_some((int, &int[int.len()..])),
        Some(frac) => (digits(int) && digits(frac)).then_some((int, frac)),
    }
}

/// Compares the decimal `int.frac` with `bound`, exactly.
pub fn compare(int: &[u8], frac: &[u8], bound: u128) -> Ordering {
    let first = int.iter().position(|&d| d != b'0').unwrap_or(int.len());
    let significant = &int[first..];
    if significant.len() > 30 {
        return Ordering::Greater;
    }
    let value: u128 = std::str::from_utf8(significant)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let frac_positive = frac.iter().any(|&d| d != b'0');
    value.cmp(&bound).then(if frac_positive {
        Ordering::Greater
    } else {
        Ordering::Equal
    })
}

/// Nanoseconds of `INT.FRAC` with at most 9 fraction digits, by text.
pub fn nanos_of(int: &[u8], frac: &[u8]) -> Nanos {
    let mut digits = int.to_vec();
    digits.extend_from_slice(frac);
    digits.resize(int.len() + 9, b'0');
    std::str::from_utf8(&digits).unwrap().parse().unwrap()
}

pub fn oracle_time(text: &[u8]) -> Option<Nanos> {
    let (int, frac) = decimal(text)?;
    (int.len() <= 18 && frac.len() <= 9).then(|| nanos_of(int, frac))
}

pub fn oracle_position(coords: &[u8]) -> Option<Position<'_>> {
    let sign = |b: u8| b == b'+' || b == b'-';
    if !coords.first().is_some_and(|&b| sign(b)) {
        return None;
    }
    let k = 1 + coords[1..].iter().position(|&b| sign(b))?;
    let in_range = |deg: &[u8], max| {
        decimal(deg).is_some_and(|(int, frac)| compare(int, frac, max) != Ordering::Greater)
    };
    if !in_range(&coords[1..k], 90) || !in_range(&coords[k + 1..], 180) {
        return None;
    }
    // A `+` is dropped, a `-` kept.
    let lat = if coords[0] == b'-' {
        &coords[..k]
    } else {
        &coords[1..k]
    };
    let lng = if coords[k] == b'-' {
        &coords[k..]
    } else {
        &coords[k + 1..]
    };
    Some(Position { lat, lng })
}

pub fn oracle_diff(text: &[u8]) -> bool {
    match text.split_first() {
        Some((&s, rest)) if s == b'+' || s == b'-' => {
            decimal(rest).is_some_and(|(_, frac)| frac.len() == 9)
        }
        _ => false,
    }
}

pub fn oracle_whatsat<'a>(client: &'a [u8], radius: &'a [u8], bound: &[u8]) -> Option<Whatsat<'a>> {
    let (int, frac) = decimal(radius)?;
    let positive = compare(int, frac, 0) == Ordering::Greater;
    if !positive || compare(int, frac, 50) == Ordering::Greater {
        return None;
    }
    let (bint, bfrac) = decimal(bound)?;
    if !bfrac.is_empty() || compare(bint, b"", 20) == Ordering::Greater {
        return None;
    }
    let first = bint.iter().position(|&d| d != b'0')?;
    let bound: u8 = std::str::from_utf8(&bint[first..]).ok()?.parse().ok()?;
    Some(Whatsat {
        client,
        radius_km: radius,
        bound,
    })
}

/// What `parse` must return for `line`.
pub fn oracle(line: &[u8]) -> Command<'_> {
    let f: Vec<&[u8]> = line
        .split(|&b| is_space(b))
        .filter(|f| !f.is_empty())
        .collect();
    let command = match (f.first().copied(), f.len()) {
        (None, _) => Some(Command::Blank),
        (Some(b"IAMAT"), 4) => oracle_position(f[2]).and_then(|position| {
            Some(Command::Iamat(Iamat {
                client: f[1],
                coords: f[2],
                time: f[3],
                position,
                sent_at: oracle_time(f[3])?,
            }))
        }),
        (Some(b"WHATSAT"), 4) => oracle_whatsat(f[1], f[2], f[3]).map(Command::Whatsat),
        (Some(b"AT"), 6) if oracle_diff(f[2]) && oracle_position(f[4]).is_some() => {
            oracle_time(f[5]).map(|sent_at| {
                Command::At(At {
                    server: f[1],
                    diff: f[2],
                    client: f[3],
                    coords: f[4],
                    time: f[5],
                    sent_at,
                })
            })
        }
        (Some(b"HERD"), 2) => Some(Command::Herd {
            name: f[1],
            nonce: None,
        }),
        (Some(b"HERD"), 3) => Some(Command::Herd {
            name: f[1],
            nonce: Some(f[2]),
        }),
        (Some(b"CHALLENGE"), 3) => Some(Command::Challenge {
            nonce: f[1],
            mac: f[2],
        }),
        (Some(b"AUTH"), 2) => Some(Command::Auth { mac: f[1] }),
        (Some(b"SYNC"), 2)
            if (1..=19).contains(&f[1].len()) && f[1].iter().all(u8::is_ascii_digit) =>
        {
            std::str::from_utf8(f[1])
                .ok()
                .and_then(|t| t.parse().ok())
                .map(|count| Command::Sync { count })
        }
        _ => None,
    };
    command.unwrap_or(Command::Invalid)
}

/// A DIFF field's value, by digit arithmetic of its own; also checks that it
/// is canonical (sign, no leading zeros, exactly 9 fraction digits, `+` for 0).
pub fn diff_value(diff: &[u8]) -> Result<Nanos, String> {
    let bad = || format!("DIFF {:?} is not canonical", show(diff));
    let (&sign, rest) = diff.split_first().ok_or_else(bad)?;
    let text = std::str::from_utf8(rest).map_err(|_| bad())?;
    let (secs, nanos) = text.split_once('.').ok_or_else(bad)?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(secs) || !digits(nanos) || nanos.len() != 9 {
        return Err(bad());
    }
    if secs.len() > 1 && secs.starts_with('0') {
        return Err(bad());
    }
    let magnitude: Nanos = format!("{secs}{nanos}").parse().map_err(|_| bad())?;
    match sign {
        b'+' => Ok(magnitude),
        b'-' if magnitude != 0 => Ok(-magnitude),
        _ => Err(bad()),
    }
}

// ---------------------------------------------------------------------------
// Generators.

pub fn spaces(kinds: &'static [u8], min: usize, max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(select(kinds), min..=max)
}

/// Separators for a line of up to six fields: leading, five between, trailing.
pub fn separators(kinds: &'static [u8]) -> impl Strategy<Value = Vec<B>> {
    (
        spaces(kinds, 0, 2),
        prop::collection::vec(spaces(kinds, 1, 3), 5),
        spaces(kinds, 0, 2),
    )
        .prop_map(|(lead, mid, trail)| {
            std::iter::once(lead)
                .chain(mid)
                .chain(std::iter::once(trail))
                .map(B)
                .collect()
        })
}

/// `fields` joined by `seps` (as made by [`separators`]).
pub fn join(fields: &[&[u8]], seps: &[B]) -> Vec<u8> {
    let mut line = seps[0].0.clone();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            line.extend_from_slice(&seps[i].0);
        }
        line.extend_from_slice(field);
    }
    line.extend_from_slice(&seps[seps.len() - 1].0);
    line
}

pub fn non_space_byte() -> impl Strategy<Value = u8> {
    select((0..=255u8).filter(|&b| !is_space(b)).collect::<Vec<_>>())
}

pub fn no_newline_byte() -> impl Strategy<Value = u8> {
    any::<u8>().prop_map(|b| if b == b'\n' { b'\r' } else { b })
}

/// A client ID: any run of non-white-space bytes, UTF-8 or not.
pub fn client_id() -> impl Strategy<Value = B> {
    prop::collection::vec(non_space_byte(), 1..12).prop_map(B)
}

pub fn digits(min: usize, max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(b'0'..=b'9', min..=max)
}

/// DEG text in [0, max]: leading zeros, an integer, a fraction of 0–12 digits.
pub fn degrees(max: u32) -> impl Strategy<Value = Vec<u8>> {
    (0..=max, 0usize..3, digits(0, 12)).prop_map(move |(int, zeros, mut frac)| {
        if int == max {
            frac.iter_mut().for_each(|d| *d = b'0');
        }
        let mut text = vec![b'0'; zeros];
        text.extend_from_slice(int.to_string().as_bytes());
        if !frac.is_empty() {
            text.push(b'.');
            text.extend_from_slice(&frac);
        }
        text
    })
}

/// A valid COORDS field, and the latitude and longitude `position` must give.
#[derive(Debug, Clone)]
pub struct Coords {
    pub text: B,
    pub lat: B,
    pub lng: B,
}

pub fn coords() -> impl Strategy<Value = Coords> {
    (any::<bool>(), degrees(90), any::<bool>(), degrees(180)).prop_map(
        |(lat_neg, lat, lng_neg, lng)| {
            let signed = |neg: bool, deg: &[u8]| [if neg { &b"-"[..] } else { b"" }, deg].concat();
            let sign = |neg: bool| if neg { b'-' } else { b'+' };
            let mut text = vec![sign(lat_neg)];
            text.extend_from_slice(&lat);
            text.push(sign(lng_neg));
            text.extend_from_slice(&lng);
            Coords {
                text: B(text),
                lat: B(signed(lat_neg, &lat)),
                lng: B(signed(lng_neg, &lng)),
            }
        },
    )
}

/// A valid TIME field (1–18 integer digits, 0–9 fraction digits) and its value.
pub fn time() -> impl Strategy<Value = (B, Nanos)> {
    (digits(1, 18), digits(0, 9)).prop_map(|(int, frac)| {
        let mut text = int.clone();
        if !frac.is_empty() {
            text.push(b'.');
            text.extend_from_slice(&frac);
        }
        (B(text), nanos_of(&int, &frac))
    })
}

pub fn radius() -> impl Strategy<Value = B> {
    (0u32..=50, digits(0, 4)).prop_map(|(int, mut frac)| {
        if int == 50 {
            frac.iter_mut().for_each(|d| *d = b'0');
        }
        let int = if int == 0 && frac.iter().all(|&d| d == b'0') {
            1
        } else {
            int
        };
        let mut text = int.to_string().into_bytes();
        if !frac.is_empty() {
            text.push(b'.');
            text.extend_from_slice(&frac);
        }
        B(text)
    })
}

/// A valid DIFF: sign, seconds, `.`, 9 digits (`+` for zero).
pub fn diff_text() -> impl Strategy<Value = B> {
    (any::<bool>(), 0u32..1000, digits(9, 9)).prop_map(|(neg, secs, nanos)| {
        let sign = if neg && (secs > 0 || nanos.iter().any(|&d| d != b'0')) {
            "-"
        } else {
            "+"
        };
        B([format!("{sign}{secs}.").into_bytes(), nanos].concat())
    })
}

pub fn bound() -> impl Strategy<Value = B> {
    (1u32..=20, 0usize..2)
        .prop_map(|(b, zeros)| B(format!("{}{b}", "0".repeat(zeros)).into_bytes()))
}

//! The OsmAnd protocol (SPEC §14.1): the location reports of the OsmAnd
//! app and of Traccar Client, turned into the IAMAT lines that say the same
//! thing. Pure: a query string, a content type and a body in; [`Report`]s
//! (or a one-line [`Reason`] for a `400`) out. The engine then validates,
//! answers, stores and floods each IAMAT as if it came from the line port.
//!
//! What is read (field names as Traccar's `OsmAndProtocolDecoder` reads them):
//!
//! - **Query and form**: `k=v` pairs of the query string and, when the body
//!   is `application/x-www-form-urlencoded` (or has no content type and
//!   does not look like JSON), of the body, query first; a field given
//!   twice takes its last value (as Traccar does). `id` or `deviceid` is
//!   the client; `lat` and `lon`, or `location=LAT,LON`, the position;
//!   `timestamp` the time. Every other field (`speed`, `bearing`, `hdop`,
//!   `batt`, `cell`, `wifi`, `token`, ...) is ignored.
//! - **JSON** (Traccar Client's newer format; `application/json`, or no
//!   content type and a body starting with `{`): `{"location": L,
//!   "device_id": "ID"}` where L is one location object or an array of them
//!   (a batch, at most [`MAX_REPORTS`], all-or-nothing), each with
//!   `coords.latitude` and `coords.longitude` (JSON numbers, or strings
//!   holding one) and an optional `timestamp` (a string in any of the forms
//!   below, or a number). `device_id` may be a string or a number; without
//!   it, `id`/`deviceid` of the query string is the client. Every other
//!   member (`battery`, `activity`, `extras`, `is_moving`, ...) is ignored.
//!   Bodies of other content types carry nothing read here.
//!
//! How values become IAMAT fields, and why:
//!
//! - Degrees keep the text the report wrote: JSON numbers are read as
//!   their raw text (serde_json's `RawValue`), never through an f64; a `+`
//!   is added when there is no sign; spaces around a value are dropped (in
//!   a query an unescaped `+` arrives as a space). An exponent form
//!   (`3.4e1`, `-1.25E-2`) is turned into plain digits by moving the point
//!   on the text (`34`, `-0.0125`), so nothing is rounded. A degree text
//!   longer than [`MAX_DEGREE_LEN`] once written out is refused. The range
//!   checks are the line protocol's own ([`protocol::position`]).
//! - Times are computed in integers: POSIX seconds with an optional
//!   fraction of up to 9 digits (kept as written); an integer above 10^10
//!   is milliseconds (seconds with 3 fraction digits); ISO 8601
//!   `YYYY-MM-DDTHH:MM:SS[.F]` with `Z`, `±HH:MM`, `±HHMM` or no zone
//!   (UTC), and `YYYY-MM-DD HH:MM:SS` (UTC), the date turned into days by
//!   the days-from-civil formula (H. Hinnant, "chrono-Compatible Low-Level
//!   Date Algorithms"). TIME is the seconds since the epoch with exactly the
//!   fraction digits the report gave. A time before the epoch or past the
//!   protocol's 18 integer digits is a bad timestamp. No timestamp: the
//!   server's clock at receipt, with 9 fraction digits
//!   ([`Report::write_iamat`] is given it).
//! - The client ID is refused when empty, longer than [`MAX_ID_LEN`], or
//!   holding white space or control bytes. With the other bounds this keeps
//!   every IAMAT line under 1 KiB, the smallest line limit a server may
//!   have, so a report is never refused for its length by the engine.
//! - As a backstop, every report's IAMAT line is parsed back with
//!   [`protocol::parse`] and must be a valid IAMAT with exactly these
//!   fields; the tests assert it for every case too.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde_json::value::RawValue;

use super::request::{media_type, pairs};
use crate::protocol::{self, Command, Nanos};

/// The most reports one request may carry (a JSON batch); more is `400`.
pub const MAX_REPORTS: usize = 500;

/// The longest client ID accepted, in bytes (after percent-decoding).
pub const MAX_ID_LEN: usize = 512;

/// The longest degree text accepted, sign included, once an exponent form
/// is written out in plain digits.
pub const MAX_DEGREE_LEN: usize = 64;

/// Why a report is refused: one line, for a `400`'s body and the log. It
/// never quotes the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(pub Cow<'static, str>);

impl Reason {
    fn new(reason: &'static str) -> Reason {
        Reason(Cow::Borrowed(reason))
    }

    /// The reason as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Reason {}

/// One location report, ready to become `IAMAT ID COORDS TIME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The client ID: bytes without white space or control bytes.
    pub client: Vec<u8>,
    /// The IAMAT's COORDS: `+LAT-LON`, each half signed, as written.
    pub coords: Vec<u8>,
    /// The IAMAT's TIME, or None when the report had no timestamp (the
    /// server's clock at receipt is used).
    pub time: Option<Vec<u8>>,
}

impl Report {
    /// Appends the IAMAT line `IAMAT ID COORDS TIME`, *without* a `\n`
    /// (what [`crate::conn::Piece::Line`] carries). `now` is the server's
    /// clock, used as TIME (9 fraction digits) when the report had none; a
    /// clock before the epoch is written as `0.000000000`.
    pub fn write_iamat(&self, out: &mut Vec<u8>, now: Nanos) {
        out.reserve(8 + self.client.len() + self.coords.len() + 32);
        out.extend_from_slice(b"IAMAT ");
        out.extend_from_slice(&self.client);
        out.push(b' ');
        out.extend_from_slice(&self.coords);
        out.push(b' ');
        match &self.time {
            Some(time) => out.extend_from_slice(time),
            None => write_clock(out, now),
        }
    }
}

/// Appends the server clock `now` as TIME: seconds, `.`, 9 digits.
fn write_clock(out: &mut Vec<u8>, now: Nanos) {
    let now = u128::try_from(now).unwrap_or(0);
    protocol::write_decimal(out, now / 1_000_000_000);
    out.push(b'.');
    let nanos = now % 1_000_000_000;
    let mut digits = [b'0'; 9];
    let mut rest = nanos;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits);
}

/// Reads the reports of one request: its raw query string (without `?`),
/// its `Content-Type` (raw, if any) and its body. All or nothing: any bad
/// report refuses the whole request.
pub fn parse(
    query: &[u8],
    content_type: Option<&[u8]>,
    body: &[u8],
) -> Result<Vec<Report>, Reason> {
    let mut fields = Fields::default();
    fields.read(query);
    match body_kind(content_type, body) {
        BodyKind::Form => fields.read(body),
        BodyKind::Json => return json(body, fields.id),
        BodyKind::Ignored => {}
    }
    let client = client_id(fields.id.as_deref())?;
    let (lat, lon) = match (&fields.lat, &fields.lon, &fields.location) {
        (Some(lat), Some(lon), _) => (lat.as_ref(), lon.as_ref()),
        (_, _, Some(location)) => {
            let comma = location
                .iter()
                .position(|&b| b == b',')
                .ok_or(Reason::new("location is not LAT,LON"))?;
            (&location[..comma], &location[comma + 1..])
        }
        _ => return Err(Reason::new("no position (lat and lon, or location)")),
    };
    let coords = coords(lat, lon)?;
    let time = match &fields.timestamp {
        Some(t) => Some(timestamp(t)?),
        None => None,
    };
    Ok(vec![report(client, coords, time)?])
}

/// The fields read from query and form pairs; the last of each wins.
#[derive(Default)]
struct Fields<'a> {
    id: Option<Cow<'a, [u8]>>,
    lat: Option<Cow<'a, [u8]>>,
    lon: Option<Cow<'a, [u8]>>,
    location: Option<Cow<'a, [u8]>>,
    timestamp: Option<Cow<'a, [u8]>>,
}

impl<'a> Fields<'a> {
    fn read(&mut self, text: &'a [u8]) {
        for (name, value) in pairs(text) {
            let slot = match &*name {
                b"id" | b"deviceid" => &mut self.id,
                b"lat" => &mut self.lat,
                b"lon" => &mut self.lon,
                b"location" => &mut self.location,
                b"timestamp" => &mut self.timestamp,
                _ => continue,
            };
            *slot = Some(value);
        }
    }
}

enum BodyKind {
    Form,
    Json,
    Ignored,
}

/// What the body holds, by its content type (or, without one, its look).
fn body_kind(content_type: Option<&[u8]>, body: &[u8]) -> BodyKind {
    match content_type.map(media_type) {
        Some(t) if t.eq_ignore_ascii_case(b"application/json") => BodyKind::Json,
        Some(t) if t.eq_ignore_ascii_case(b"application/x-www-form-urlencoded") => BodyKind::Form,
        Some(_) => BodyKind::Ignored,
        None => match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => BodyKind::Json,
            Some(_) => BodyKind::Form,
            None => BodyKind::Ignored,
        },
    }
}

/// A JSON object, its members' values left as raw text.
type Object<'a> = HashMap<String, &'a RawValue>;

/// Reads a JSON body; `query_id` is the query string's id, used when the
/// body has no `device_id`.
fn json(body: &[u8], query_id: Option<Cow<'_, [u8]>>) -> Result<Vec<Report>, Reason> {
    let top: Object<'_> =
        serde_json::from_slice(body).map_err(|_| Reason::new("body is not a JSON object"))?;
    let client: Cow<'_, [u8]> = match top.get("device_id") {
        Some(raw) => Cow::Owned(json_scalar(raw).ok_or(Reason::new("device_id is not a string"))?),
        None => query_id.ok_or(Reason::new("no client id (device_id, id or deviceid)"))?,
    };
    let client = client_id(Some(&client))?;
    let location = top
        .get("location")
        .ok_or(Reason::new("no position (location)"))?;
    let items: Vec<&RawValue> = match location.get().as_bytes().first() {
        Some(b'[') => serde_json::from_str(location.get())
            .map_err(|_| Reason::new("location is not an array of objects"))?,
        _ => vec![location],
    };
    if items.is_empty() {
        return Err(Reason::new("no position (location is empty)"));
    }
    if items.len() > MAX_REPORTS {
        return Err(Reason(Cow::Owned(format!(
            "more than {MAX_REPORTS} locations in one request"
        ))));
    }
    items
        .into_iter()
        .map(|item| json_location(item, &client))
        .collect()
}

/// One location object of a JSON body.
fn json_location(item: &RawValue, client: &[u8]) -> Result<Report, Reason> {
    let location: Object<'_> =
        serde_json::from_str(item.get()).map_err(|_| Reason::new("location is not an object"))?;
    let coords_raw = location
        .get("coords")
        .ok_or(Reason::new("no position (location.coords)"))?;
    let coords_obj: Object<'_> = serde_json::from_str(coords_raw.get())
        .map_err(|_| Reason::new("location.coords is not an object"))?;
    let number = |name: &'static str| -> Result<Vec<u8>, Reason> {
        let raw = coords_obj.get(name).ok_or(Reason::new(
            "no position (coords.latitude and coords.longitude)",
        ))?;
        json_scalar(raw).ok_or(Reason::new("coordinate is not a number"))
    };
    let (lat, lon) = (number("latitude")?, number("longitude")?);
    let coords = coords(&lat, &lon)?;
    let time = match location.get("timestamp") {
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => Some(timestamp(
            &json_scalar(raw).ok_or(Reason::new("bad timestamp"))?,
        )?),
        None => None,
    };
    report(client.to_vec(), coords, time)
}

/// A JSON string's decoded bytes, or a JSON number's text as written; None
/// for anything else.
fn json_scalar(raw: &RawValue) -> Option<Vec<u8>> {
    let text = raw.get();
    match text.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(text)
            .ok()
            .map(String::into_bytes),
        b'-' | b'0'..=b'9' => Some(text.as_bytes().to_vec()),
        _ => None,
    }
}

/// Checks a client ID: present, not empty, at most [`MAX_ID_LEN`] bytes,
/// no white space or control bytes.
fn client_id(id: Option<&[u8]>) -> Result<Vec<u8>, Reason> {
    let id = id.ok_or(Reason::new("no client id (id or deviceid)"))?;
    if id.is_empty() {
        return Err(Reason::new("empty client id"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Reason::new("client id too long"));
    }
    if id.iter().any(|&b| b <= b' ' || b == 0x7f) {
        return Err(Reason::new("client id holds white space or control bytes"));
    }
    Ok(id.to_vec())
}

/// Builds the report and checks, as a backstop, that its IAMAT line is one
/// the line protocol takes with exactly these fields.
fn report(client: Vec<u8>, coords: Vec<u8>, time: Option<Vec<u8>>) -> Result<Report, Reason> {
    let report = Report {
        client,
        coords,
        time,
    };
    let mut line = Vec::new();
    report.write_iamat(&mut line, 0);
    let valid = match protocol::parse(&line) {
        Command::Iamat(iamat) => {
            iamat.client == &report.client[..]
                && iamat.coords == &report.coords[..]
                && report.time.as_deref().map_or(true, |t| iamat.time == t)
        }
        _ => false,
    };
    if !valid {
        return Err(Reason::new("report does not make a valid IAMAT"));
    }
    Ok(report)
}

/// COORDS from a latitude and a longitude text: each signed, written out
/// plainly, range-checked.
fn coords(lat: &[u8], lon: &[u8]) -> Result<Vec<u8>, Reason> {
    let lat = degree(lat).ok_or(Reason::new("latitude is not a number"))?;
    let lon = degree(lon).ok_or(Reason::new("longitude is not a number"))?;
    if protocol::position(&[&lat[..], b"+0"].concat()).is_none() {
        return Err(Reason::new("latitude out of range"));
    }
    if protocol::position(&[b"+0", &lon[..]].concat()).is_none() {
        return Err(Reason::new("longitude out of range"));
    }
    Ok([lat, lon].concat())
}

/// A decimal degree text → signed plain digits: `[+-]DIGITS[.DIGITS]` with
/// an optional exponent `[eE][+-]DIGITS`. Spaces around it are dropped;
/// without an exponent the digits are kept exactly as written. None for
/// anything else, or a result longer than [`MAX_DEGREE_LEN`].
pub fn degree(text: &[u8]) -> Option<Vec<u8>> {
    let text = trim_spaces(text);
    let (sign, rest) = match text.first()? {
        b'+' | b'-' => (text[0], &text[1..]),
        _ => (b'+', text),
    };
    let int_len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if int_len == 0 {
        return None;
    }
    let (int, rest) = rest.split_at(int_len);
    let (frac, rest) = match rest.strip_prefix(b".") {
        Some(after) => {
            let n = after.iter().take_while(|b| b.is_ascii_digit()).count();
            if n == 0 {
                return None;
            }
            after.split_at(n)
        }
        None => (&rest[..0], rest),
    };
    let mut out = Vec::with_capacity(MAX_DEGREE_LEN);
    out.push(sign);
    if rest.is_empty() {
        if 1 + int.len() + usize::from(!frac.is_empty()) + frac.len() > MAX_DEGREE_LEN {
            return None;
        }
        out.extend_from_slice(int);
        if !frac.is_empty() {
            out.push(b'.');
            out.extend_from_slice(frac);
        }
        return Some(out);
    }
    let exp = exponent(rest)?;
    // The digits (leading zeros of the integer part dropped: they move
    // nothing), and where the point goes among them after the shift.
    let int = &int[int.iter().take_while(|&&d| d == b'0').count()..];
    let digits = [int, frac].concat();
    let len = digits.len() as i64;
    let point = int.len() as i64 + exp;
    // An upper bound of the text written below; leading zeros are dropped
    // after, but nothing much longer than the limit is built.
    let written = 2 + point.abs() + len;
    if written > MAX_DEGREE_LEN as i64 + len + 2 {
        return None;
    }
    let mut plain = Vec::with_capacity(written as usize);
    if len == 0 {
        plain.push(b'0');
    } else if point <= 0 {
        plain.extend_from_slice(b"0.");
        plain.resize(2 + point.unsigned_abs() as usize, b'0');
        plain.extend_from_slice(&digits);
    } else if point >= len {
        plain.extend_from_slice(&digits);
        plain.resize(point as usize, b'0');
    } else {
        plain.extend_from_slice(&digits[..point as usize]);
        plain.push(b'.');
        plain.extend_from_slice(&digits[point as usize..]);
    }
    // Leading zeros of the integer part, keeping one.
    let int_end = plain.iter().position(|&b| b == b'.').unwrap_or(plain.len());
    let zeros = plain[..int_end].iter().take_while(|&&d| d == b'0').count();
    let plain = match int_end {
        0 => &b"0"[..],
        _ => &plain[zeros.min(int_end - 1)..],
    };
    if 1 + plain.len() > MAX_DEGREE_LEN {
        return None;
    }
    out.extend_from_slice(plain);
    Some(out)
}

/// `[eE][+-]DIGITS` → its value, saturated at ±10^6 (far past any degree).
fn exponent(text: &[u8]) -> Option<i64> {
    let rest = text
        .strip_prefix(b"e")
        .or_else(|| text.strip_prefix(b"E"))?;
    let (negative, digits) = match rest.first()? {
        b'-' => (true, &rest[1..]),
        b'+' => (false, &rest[1..]),
        _ => (false, rest),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0i64, |v, &d| (v * 10 + i64::from(d - b'0')).min(1_000_000));
    Some(if negative { -value } else { value })
}

/// `text` without leading and trailing spaces.
fn trim_spaces(text: &[u8]) -> &[u8] {
    let start = text.iter().position(|&b| b != b' ').unwrap_or(text.len());
    let end = text
        .iter()
        .rposition(|&b| b != b' ')
        .map_or(start, |i| i + 1);
    &text[start..end]
}

/// 10^18: TIME has at most 18 integer digits.
const MAX_SECONDS: u128 = 1_000_000_000_000_000_000;

/// Integers above this are milliseconds.
const MILLIS_ABOVE: u128 = 10_000_000_000;

/// A report's timestamp → TIME: seconds since the epoch, with the fraction
/// digits the report gave (milliseconds: 3). See the module header.
pub fn timestamp(text: &[u8]) -> Result<Vec<u8>, Reason> {
    let text = trim_spaces(text);
    let bad = || Reason::new("bad timestamp");
    if text.len() >= 10 && text[4] == b'-' {
        let (secs, frac) = datetime(text).ok_or_else(bad)?;
        return time_text(secs, frac).ok_or_else(bad);
    }
    let int_len = text.iter().take_while(|b| b.is_ascii_digit()).count();
    let (int, rest) = text.split_at(int_len);
    if int.is_empty() {
        return Err(bad());
    }
    let significant = &int[int.iter().take_while(|&&d| d == b'0').count()..];
    if significant.len() > 21 {
        return Err(bad());
    }
    let value = decimal(significant);
    if rest.is_empty() {
        if value > MILLIS_ABOVE {
            let frac = format!("{:03}", value % 1000);
            return time_text(value / 1000, frac.as_bytes()).ok_or_else(bad);
        }
        return time_text(value, b"").ok_or_else(bad);
    }
    let frac = rest.strip_prefix(b".").ok_or_else(bad)?;
    if frac.is_empty() || frac.len() > 9 || !frac.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    time_text(value, frac).ok_or_else(bad)
}

/// The value of at most 38 ASCII digits.
fn decimal(digits: &[u8]) -> u128 {
    digits
        .iter()
        .fold(0u128, |v, &d| v * 10 + u128::from(d - b'0'))
}

/// TIME from whole seconds and fraction digits (≤ 9, already checked).
fn time_text(secs: u128, frac: &[u8]) -> Option<Vec<u8>> {
    if secs >= MAX_SECONDS || frac.len() > 9 {
        return None;
    }
    let mut out = Vec::with_capacity(30);
    protocol::write_decimal(&mut out, secs);
    if !frac.is_empty() {
        out.push(b'.');
        out.extend_from_slice(frac);
    }
    Some(out)
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.F][Z|±HH:MM|±HHMM]` → (seconds since the
/// epoch, fraction digits). A space before the offset stands for a `+`
/// (an unescaped `+` in a query string).
fn datetime(text: &[u8]) -> Option<(u128, &[u8])> {
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits.iter().all(u8::is_ascii_digit).then(|| {
            digits
                .iter()
                .fold(0i64, |v, &d| v * 10 + i64::from(d - b'0'))
        })
    };
    let byte = |i: usize| text.get(i).copied();
    if byte(4) != Some(b'-')
        || byte(7) != Some(b'-')
        || !matches!(byte(10), Some(b'T' | b't' | b' '))
        || byte(13) != Some(b':')
        || byte(16) != Some(b':')
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut frac: &[u8] = &[];
    if let Some(after) = rest.strip_prefix(b".") {
        let n = after.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        frac = &after[..n];
        rest = &after[n..];
    }
    let offset = match rest {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-' | b' '), zone @ ..] => {
            let (h, m) = match zone {
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => ([*h1, *h2], [*m1, *m2]),
                _ => return None,
            };
            if !h.iter().chain(&m).all(u8::is_ascii_digit) {
                return None;
            }
            let h = i64::from((h[0] - b'0') * 10 + (h[1] - b'0'));
            let m = i64::from((m[0] - b'0') * 10 + (m[1] - b'0'));
            if h > 23 || m > 59 {
                return None;
            }
            let seconds = h * 3600 + m * 60;
            if *sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some((u128::try_from(secs).ok()?, frac))
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`): `month` 1..=12, `day` 1..=31.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests;

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
//! HERD NAME                           -> Command::Herd   (a link says who it is)
//! ```
//!
//! Fields are separated by runs of white space (space, TAB, CR, LF, FF, VT);
//! leading and trailing white space is ignored; a line of only white space is
//! `Command::Blank`. Commands are case-sensitive. Client IDs are any run of
//! non-white-space bytes, UTF-8 or not.

/// Integer nanoseconds since the POSIX epoch (or a difference of two).
/// i128 so that any 18-digit seconds field times 1e9 cannot overflow.
pub type Nanos = i128;

/// True for the protocol's white-space bytes: space, TAB, LF, VT, FF, CR.
/// (`u8::is_ascii_whitespace` leaves out VT, which the spec includes.)
pub fn is_space(b: u8) -> bool {
    todo!("{b}")
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
    pub client: &'a [u8],
    /// The COORDS field exactly as received, e.g. `+34.068930-118.445127`.
    pub coords: &'a [u8],
    /// The TIME field exactly as received, e.g. `1520023934.918963997`.
    pub time: &'a [u8],
    pub position: Position<'a>,
    /// TIME in integer nanoseconds.
    pub sent_at: Nanos,
}

/// `WHATSAT CLIENT RADIUS_KM BOUND`, validated: 0 < radius <= 50 km, 1 <= bound <= 20.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Whatsat<'a> {
    pub client: &'a [u8],
    /// The radius field as received (digits with an optional fraction), in km.
    pub radius_km: &'a [u8],
    pub bound: u8,
}

/// `AT SERVER DIFF CLIENT COORDS TIME`: an update from the herd, validated
/// (DIFF is a sign, digits, `.`, exactly 9 digits; COORDS and TIME as for IAMAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At<'a> {
    pub server: &'a [u8],
    pub diff: &'a [u8],
    pub client: &'a [u8],
    pub coords: &'a [u8],
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
    /// `HERD NAME`: the first line of a herd link, naming the sending server.
    Herd { name: &'a [u8] },
    /// Anything else: answered with `? ` + the line.
    Invalid,
}

/// Parses one line. `line` excludes the `\n`; a trailing `\r` (or any other
/// white space) is allowed and ignored.
pub fn parse(line: &[u8]) -> Command<'_> {
    todo!("{line:?}")
}

/// Appends `AT SERVER DIFF CLIENT COORDS TIME\n` for an IAMAT received at
/// `received_at`: DIFF = received_at - iamat.sent_at, always signed, exactly 9
/// fraction digits, computed in integers. CLIENT, COORDS and TIME are copied
/// byte for byte.
pub fn write_at(out: &mut Vec<u8>, server: &str, received_at: Nanos, iamat: &Iamat<'_>) {
    todo!("{out:?}{server}{received_at}{iamat:?}")
}

/// Appends an AT update in its canonical form: the six fields joined by single
/// spaces, then `\n`. For a line the herd produced this is the line itself.
pub fn write_at_update(out: &mut Vec<u8>, at: &At<'_>) {
    todo!("{out:?}{at:?}")
}

/// Appends a signed nanosecond difference as `+S.NNNNNNNNN` / `-S.NNNNNNNNN`.
pub fn write_diff(out: &mut Vec<u8>, diff: Nanos) {
    todo!("{out:?}{diff}")
}

/// Appends `? ` + line + `\n`, where `line` is the line as received without
/// its `\n` and without a `\r` right before that `\n`.
pub fn write_invalid(out: &mut Vec<u8>, line: &[u8]) {
    todo!("{out:?}{line:?}")
}

/// The radius of a valid WHATSAT in metres, as a plain decimal text with no
/// exponent and no trailing fraction zeros: `10` -> `10000`, `0.5` -> `500`,
/// `1.2345` -> `1234.5`.
pub fn radius_metres(radius_km: &[u8]) -> String {
    todo!("{radius_km:?}")
}

/// The wall clock now, in nanoseconds since the epoch.
pub fn now_nanos() -> Nanos {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_nanos() as Nanos
}

//! The mobile clients the load plays: each IAMAT a new position with a
//! fresh, strictly increasing timestamp, written straight into an output
//! buffer; and the small hashes that make them.

use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock in nanoseconds since the epoch.
pub fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// One mobile client: its ID, and what makes each IAMAT new.
pub struct ClientId {
    pub id: Vec<u8>,
    salt: u64,
    seq: u64,
    last_ns: u128,
}

impl ClientId {
    pub fn new(id: String) -> ClientId {
        let salt = fnv(id.as_bytes());
        ClientId {
            id: id.into_bytes(),
            salt,
            seq: 0,
            last_ns: 0,
        }
    }

    /// Appends `IAMAT ID +LAT-LNG TIME\n`: a new position, and a timestamp
    /// from `wall_ns` made strictly larger than the last one. Returns the
    /// timestamp.
    pub fn iamat(&mut self, out: &mut Vec<u8>, wall_ns: u128) -> u128 {
        let (lat, lng, t) = self.next(wall_ns);
        out.extend_from_slice(b"IAMAT ");
        out.extend_from_slice(&self.id);
        out.push(b' ');
        degrees(out, lat, true);
        degrees(out, lng, true);
        out.push(b' ');
        seconds(out, t);
        out.push(b'\n');
        t
    }

    /// Appends the request target of an OsmAnd report saying what
    /// [`ClientId::iamat`] would: `/?id=ID&lat=LAT&lon=LON&timestamp=TIME`
    /// (no `+` on positive degrees: in a query it is a space). Returns the
    /// timestamp.
    pub fn osmand_target(&mut self, out: &mut Vec<u8>, wall_ns: u128) -> u128 {
        let (lat, lng, t) = self.next(wall_ns);
        out.extend_from_slice(b"/?id=");
        out.extend_from_slice(&self.id);
        out.extend_from_slice(b"&lat=");
        degrees(out, lat, false);
        out.extend_from_slice(b"&lon=");
        degrees(out, lng, false);
        out.extend_from_slice(b"&timestamp=");
        seconds(out, t);
        t
    }

    /// A new position (micro-degrees) and a timestamp from `wall_ns` made
    /// strictly larger than the last one.
    fn next(&mut self, wall_ns: u128) -> (i64, i64, u128) {
        self.seq += 1;
        let t = wall_ns.max(self.last_ns + 1);
        self.last_ns = t;
        let h = mix(self.seq ^ self.salt);
        let lat = (h % 180_000_001) as i64 - 90_000_000;
        let lng = ((h >> 32) % 360_000_001) as i64 - 180_000_000;
        (lat, lng, t)
    }

    /// Appends `WHATSAT ID 10 5\n`: places near this client itself.
    pub fn whatsat(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"WHATSAT ");
        out.extend_from_slice(&self.id);
        out.extend_from_slice(b" 10 5\n");
    }
}

/// Nanoseconds as seconds with nine decimals.
fn seconds(out: &mut Vec<u8>, t: u128) {
    herd::protocol::write_decimal(out, u128::from((t / 1_000_000_000) as u64));
    out.push(b'.');
    let mut frac = [b'0'; 9];
    let mut f = (t % 1_000_000_000) as u64;
    for d in frac.iter_mut().rev() {
        *d = b'0' + (f % 10) as u8;
        f /= 10;
    }
    out.extend_from_slice(&frac);
}

/// Micro-degrees as `+D.DDDDDD` / `-D.DDDDDD` (`D.DDDDDD` without `plus`).
fn degrees(out: &mut Vec<u8>, micro: i64, plus: bool) {
    if micro < 0 {
        out.push(b'-');
    } else if plus {
        out.push(b'+');
    }
    let m = micro.unsigned_abs();
    herd::protocol::write_decimal(out, u128::from(m / 1_000_000));
    out.push(b'.');
    let mut frac = [b'0'; 6];
    let mut f = m % 1_000_000;
    for d in frac.iter_mut().rev() {
        *d = b'0' + (f % 10) as u8;
        f /= 10;
    }
    out.extend_from_slice(&frac);
}

/// A 64-bit mix, for positions and the request mix.
pub fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a, to tell client IDs apart cheaply.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iamats_are_valid_new_and_fresh() {
        let mut c = ClientId::new("fl-1".into());
        let mut out = Vec::new();
        let t1 = c.iamat(&mut out, 1_700_000_000_000_000_000);
        let t2 = c.iamat(&mut out, 1_700_000_000_000_000_000);
        assert_eq!(t2, t1 + 1, "timestamps strictly increase");
        let text = String::from_utf8(out).expect("ASCII");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for line in &lines {
            assert!(
                matches!(
                    herd::protocol::parse(line.as_bytes()),
                    herd::protocol::Command::Iamat(_)
                ),
                "{line}"
            );
        }
        assert!(lines[1].ends_with("1700000000.000000001"), "{}", lines[1]);
        let pos = |l: &str| l.split(' ').nth(2).map(str::to_string);
        assert_ne!(pos(lines[0]), pos(lines[1]), "each IAMAT is a new position");
    }

    #[test]
    fn osmand_reports_are_the_iamats_the_line_would_send() {
        let (mut a, mut b) = (ClientId::new("fl-7".into()), ClientId::new("fl-7".into()));
        for i in 0..1000 {
            let (mut line, mut target) = (Vec::new(), Vec::new());
            a.iamat(&mut line, 1_700_000_000_000_000_000 + i);
            b.osmand_target(&mut target, 1_700_000_000_000_000_000 + i);
            let query = target.strip_prefix(b"/?").expect("a query");
            let reports = herd::front::osmand::parse(query, None, b"").expect("a valid report");
            let mut iamat = Vec::new();
            reports[0].write_iamat(&mut iamat, 0);
            iamat.push(b'\n');
            assert_eq!(
                iamat.escape_ascii().to_string(),
                line.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn positions_stay_in_range() {
        let mut c = ClientId::new("x".into());
        let mut out = Vec::new();
        for i in 0..10_000 {
            out.clear();
            c.iamat(&mut out, i);
            let line = &out[..out.len() - 1];
            assert!(
                matches!(
                    herd::protocol::parse(line),
                    herd::protocol::Command::Iamat(_)
                ),
                "{}",
                line.escape_ascii()
            );
        }
    }
}

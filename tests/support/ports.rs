//! Ports for servers started later, outside the kernel's ephemeral range
//! and locked against other processes: see [`free_port`]. Shared by the
//! tests (through `procs`) and `tools/nemesis`.

use std::path::Path;
use std::sync::Mutex;

/// Where the port locks live: one file per port handed out, `flock`ed by
/// the test process that holds the port until it exits.
pub const PORT_LOCKS: &str = "/tmp/herd-test-ports";

/// A port on 127.0.0.1 for a server a test starts later (a `herd.conf`
/// needs every address before any process starts, and a restarted server
/// needs its port again), that no one else will take meanwhile:
///
/// - it lies outside the kernel's ephemeral range
///   (`/proc/sys/net/ipv4/ip_local_port_range`), so no outgoing connection
///   and no `bind(0)` anywhere on the machine is given it;
/// - this process holds an exclusive `flock` on `PORT_LOCKS/PORT` until it
///   exits, so no other test process (another test binary, another
///   checkout's tests) hands it out at the same time, and this process
///   never hands it out twice;
/// - it is not one of [`RESERVED`], the ports the repository's own
///   `herd.conf` and `tools/*.sh` use by default, so a herd or a
///   measurement someone runs by hand beside the tests never takes a port
///   a test was given (the locks bind only the tests);
/// - nothing listens on it when it is handed out.
///
/// (Binding port 0 and releasing it, as before, let anything take the
/// port before herd bound it.)
pub fn free_port() -> u16 {
    use std::os::fd::AsRawFd;
    static HELD: Mutex<Vec<(u16, std::fs::File)>> = Mutex::new(Vec::new());
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    let (lo, hi) = test_port_range();
    let span = u32::from(hi - lo) + 1;
    std::fs::create_dir_all(PORT_LOCKS).expect("the port lock directory");
    // Processes start at different places, so they rarely contend.
    let start = std::process::id()
        .wrapping_mul(7919)
        .wrapping_add(held.len() as u32);
    for i in 0..span {
        let port = lo + ((start.wrapping_add(i)) % span) as u16;
        if RESERVED.contains(&port) || held.iter().any(|(p, _)| *p == port) {
            continue;
        }
        let Ok(lock) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(Path::new(PORT_LOCKS).join(port.to_string()))
        else {
            continue;
        };
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue; // Another test process holds it.
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue; // Something outside the tests listens there.
        }
        held.push((port, lock));
        return port;
    }
    panic!("no free test port in {lo}-{hi}");
}

/// Ports never handed out: `herd.conf` (12000-12004), `tools/probe-herd.conf`
/// (12000-12010) and the tools' default `--port`s (compare.sh 12100,
/// hostile.sh 12300, liveness.sh 12310, tls-compare.sh 12400,
/// fronts-compare.sh 12700, each with a few dozen above it).
pub const RESERVED: std::ops::RangeInclusive<u16> = 12_000..=12_999;

/// The ports [`free_port`] hands out (less [`RESERVED`]): the larger stretch, above 10000,
/// outside the kernel's ephemeral range.
pub fn test_port_range() -> (u16, u16) {
    let (eph_lo, eph_hi) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut f = s.split_whitespace().map(|v| v.parse::<u16>().ok());
            Some((f.next()??, f.next()??))
        })
        .unwrap_or((32768, 60999));
    let below = (10_000, eph_lo.saturating_sub(1));
    let above = (eph_hi.saturating_add(1).max(10_000), 65_535);
    let len = |(a, b): (u16, u16)| b.saturating_sub(a);
    let best = if len(below) >= len(above) {
        below
    } else {
        above
    };
    assert!(
        len(best) >= 1000,
        "the ephemeral range {eph_lo}-{eph_hi} leaves too few ports for tests"
    );
    best
}

//! Readiness for service managers: the sd_notify datagram protocol
//! (`sd_notify(3)`), in a few lines over std's `UnixDatagram`.
//!
//! With `NOTIFY_SOCKET` set (systemd sets it for `Type=notify` units), herd
//! sends one datagram per state change to that socket: `READY=1` once it
//! says `herd: ready`; `RELOADING=1` with `MONOTONIC_USEC=` (the
//! `CLOCK_MONOTONIC` time in microseconds, which systemd 253 and newer
//! require with it for `Type=notify-reload`) when a SIGHUP arrives, then
//! `READY=1` once the reload is applied or refused; `STOPPING=1` on SIGTERM
//! or SIGINT. Each message also carries a `STATUS=` line, shown by
//! `systemctl status`. A path starting with `@` names an abstract socket
//! (the `@` stands for the leading zero byte).
//!
//! Without `NOTIFY_SOCKET`, or when sending fails (no one listens), nothing
//! happens: notification is a courtesy to the service manager and never
//! stops the herd.

use std::os::unix::net::UnixDatagram;

/// `READY=1`: every server serves (or, after a reload, the reload is done).
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={status}\n"));
}

/// `RELOADING=1` and `MONOTONIC_USEC=`: a reload begins.
pub fn reloading(status: &str) {
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS={status}\n",
        monotonic_usec()
    ));
}

/// `STOPPING=1`: the process is shutting down.
pub fn stopping(status: &str) {
    send(&format!("STOPPING=1\nSTATUS={status}\n"));
}

/// Sends `message` to `$NOTIFY_SOCKET`; false when there is none or it
/// could not be sent.
pub fn send(message: &str) -> bool {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => send_to(&path, message).is_ok(),
        None => false,
    }
}

/// Sends `message` as one datagram to the socket `path` (`@NAME`: the
/// abstract socket NAME).
pub fn send_to(path: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(message.as_bytes(), &addr)?;
    } else {
        socket.send_to(message.as_bytes(), path)?;
    }
    Ok(())
}

/// `CLOCK_MONOTONIC` now, in microseconds.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass and nothing else.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if r != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_a_path_and_an_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send_to(path.as_os_str(), "READY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("herd-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1\n").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\n");
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_usec();
        let b = monotonic_usec();
        assert!(a > 0 && b >= a);
    }
}

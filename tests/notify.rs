//! Readiness for service managers (src/notify.rs, docs/OPERATING.md): the
//! built binary run as systemd runs a `Type=notify` unit, with
//! `NOTIFY_SOCKET` naming a datagram socket this test binds in a temp dir.
//! It must say `READY=1` once ready, `RELOADING=1` (with `MONOTONIC_USEC=`)
//! then `READY=1` around a SIGHUP, and `STOPPING=1` on SIGTERM, in that
//! order, and nothing else.

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use support::herd::PATIENCE;
use support::procs::{free_port, herd_command, write, HerdProc, HERD};

/// The next datagram, as text.
fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the patience");
    String::from_utf8(buf[..n].to_vec()).expect("UTF-8")
}

/// The `KEY=VALUE` lines of a message.
fn fields(message: &str) -> Vec<(&str, &str)> {
    message
        .lines()
        .map(|l| l.split_once('=').expect("KEY=VALUE"))
        .collect()
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[test]
fn ready_reloading_ready_stopping_in_that_order() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (free_port(), free_port());
    let conf = write(
        dir.path(),
        "herd.conf",
        &format!("server A 127.0.0.1:{a}\nserver B 127.0.0.1:{b}\nlink A B\n"),
    );
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(PATIENCE)).unwrap();

    let mut cmd = herd_command(Command::new(HERD), dir.path(), &conf, &["A", "B"]);
    cmd.env("NOTIFY_SOCKET", &path)
        .args(["--metrics", "127.0.0.1:0"]);
    let mut herd = HerdProc::spawn(cmd);

    let ready = next(&socket);
    assert_eq!(fields(&ready)[0], ("READY", "1"), "{ready:?}");
    assert!(ready.contains("STATUS=serving A, B\n"), "{ready:?}");

    let before = monotonic_usec();
    herd.signal(libc::SIGHUP);
    let reloading = next(&socket);
    let after = monotonic_usec();
    let f = fields(&reloading);
    assert_eq!(f[0], ("RELOADING", "1"), "{reloading:?}");
    let usec: u64 = f
        .iter()
        .find(|(k, _)| *k == "MONOTONIC_USEC")
        .map(|(_, v)| v.parse().expect("microseconds"))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(
        (before..=after).contains(&usec),
        "MONOTONIC_USEC={usec} not between {before} and {after}"
    );
    let ready = next(&socket);
    assert_eq!(fields(&ready)[0], ("READY", "1"), "{ready:?}");
    assert!(ready.contains("STATUS=reloaded "), "{ready:?}");
    herd.wait_stderr("the reload", |l| l.starts_with("herd: reloaded"));

    herd.signal(libc::SIGTERM);
    let stopping = next(&socket);
    assert_eq!(fields(&stopping)[0], ("STOPPING", "1"), "{stopping:?}");
    let mut child = herd.child.take().unwrap();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "herd did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    // And nothing more.
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    assert!(socket.recv(&mut buf).is_err(), "a message after STOPPING");
}

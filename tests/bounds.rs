//! Bounds of the built binary (docs/PROTOCOL.md §8, §11): the store limit
//! and its eviction order across a link, the TTL, memory under a flood of
//! new clients, and log rotation with SIGUSR1.
//!
//! The flood runs 10 s by default; `HERD_FLOOD_SECS=60` runs the full minute.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::herd::{wait_for, Client};
use support::procs::{HerdProc, LocalConf, HERD};

/// Servers `names` of one config, run by one process with `extra` flags.
struct Run {
    dir: PathBuf,
    addrs: Vec<SocketAddr>,
    child: HerdProc,
}

impl Run {
    fn start(dir: &Path, names: &[&str], links: &[(&str, &str)], extra: &[&str]) -> Run {
        let conf = LocalConf::new(names, links);
        let path = conf.write(dir, "h.conf");
        let child = HerdProc::start(Command::new(HERD), dir, &path, names, extra);
        Run {
            dir: dir.to_path_buf(),
            addrs: conf.servers.iter().map(|s| s.1).collect(),
            child,
        }
    }

    fn rss(&self) -> u64 {
        self.child.rss()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_full_store_evicts_exactly_the_oldest_and_linked_servers_agree() {
    let dir = tempfile::tempdir().unwrap();
    let run = Run::start(
        dir.path(),
        &["A", "B"],
        &[("A", "B")],
        &["--store-limit", "5", "--log-level", "info"],
    );
    let mut a = Client::connect(run.addrs[0]);
    let mut b = Client::connect(run.addrs[1]);
    // Posted out of order, half at each server; c0 is the oldest.
    for i in [3, 0, 7, 5, 1, 6, 2, 4] {
        let c = if i % 2 == 0 { &mut a } else { &mut b };
        let at = c.ask(&format!("IAMAT c{i} +1+1 1700000000.{i}"));
        assert!(at.starts_with("AT "), "{at}");
    }
    let newest: Vec<usize> = (3..8).collect();
    for c in [&mut a, &mut b] {
        wait_for("both servers to hold the newest five", || {
            newest
                .iter()
                .all(|i| c.known(&format!("c{i}")).is_some())
                .then_some(())
        });
        for i in 0..3 {
            assert_eq!(c.known(&format!("c{i}")), None, "c{i} should be evicted");
        }
    }
    // Older than all five: answered, neither stored nor flooded.
    assert!(a.ask("IAMAT old +1+1 1600000000").starts_with("AT A "));
    assert_eq!(a.known("old"), None);
    assert_eq!(b.known("old"), None);
}

#[test]
fn a_ttl_forgets_positions_within_a_second_and_refuses_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let run = Run::start(dir.path(), &["Solo"], &[], &["--position-ttl", "3s"]);
    let mut c = Client::connect(run.addrs[0]);
    let t = now_secs();
    assert!(c.ask(&format!("IAMAT fresh +1+1 {t}")).starts_with("AT "));
    assert!(c
        .ask(&format!("IAMAT stale +1+1 {}", t - 60))
        .starts_with("AT "));
    assert_eq!(c.known("stale"), None, "older than the TTL: not stored");
    assert!(c.known("fresh").is_some());
    let expires = Instant::now() + Duration::from_secs(3);
    wait_for("fresh to be forgotten", || {
        c.known("fresh").is_none().then_some(())
    });
    // Within a second of expiring (and some slack for a busy machine).
    assert!(Instant::now() < expires + Duration::from_secs(5));
}

#[test]
fn a_flood_of_new_clients_keeps_memory_within_the_limit() {
    let secs: u64 = std::env::var("HERD_FLOOD_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().unwrap();
    let limit = 50_000;
    let run = Run::start(
        dir.path(),
        &["Solo"],
        &[],
        &["--store-limit", &limit.to_string(), "--log-level", "warn"],
    );
    let addr = run.addrs[0];
    let before = run.rss();
    let end = Instant::now() + Duration::from_secs(secs);
    let stream = TcpStream::connect(addr).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0; 1 << 16];
        let mut n = 0u64;
        while let Ok(k) = std::io::Read::read(&mut reader, &mut buf) {
            if k == 0 {
                break;
            }
            n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64;
        }
        n
    });
    let mut w = std::io::BufWriter::with_capacity(1 << 16, &stream);
    let mut sent = 0u64;
    let t0 = now_secs();
    while Instant::now() < end {
        for _ in 0..1000 {
            writeln!(w, "IAMAT u{sent} +1+1 {t0}.{:09}", sent % 1_000_000_000).unwrap();
            sent += 1;
        }
    }
    w.flush().unwrap();
    drop(w);
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let answered = drain.join().unwrap();
    assert_eq!(answered, sent, "every IAMAT answered");
    let grown = run.rss().saturating_sub(before);
    eprintln!(
        "{sent} new clients in {secs} s; RSS grew by {} KiB",
        grown >> 10
    );
    // The limit's clients at a few hundred bytes each, plus buffers and the
    // journal's queue: far below what {sent} stored clients would cost.
    assert!(sent > 4 * limit as u64, "the flood outran the limit");
    assert!(grown < 64 << 20, "RSS grew by {grown} bytes");
}

#[test]
fn logs_rotate_keep_at_most_keep_files_and_reopen_on_sigusr1() {
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * 1024;
    let run = Run::start(
        dir.path(),
        &["Solo"],
        &[],
        // Every line received and sent logged (debug), so the log grows.
        &[
            "--log-size",
            &size.to_string(),
            "--log-keep",
            "2",
            "--log-level",
            "debug",
        ],
    );
    let logs = run.dir.join("logs");
    let mut c = Client::connect(run.addrs[0]);
    let mut i = 0;
    wait_for("two rotations", || {
        for _ in 0..200 {
            i += 1;
            c.send(format!("IAMAT r{i} +1+1 1700000000.{i}\n").as_bytes());
        }
        for _ in 0..200 {
            c.line();
        }
        logs.join("Solo.log.2").exists().then_some(())
    });
    // Several more rotations: never a third old file, never over the size.
    let start = i;
    while i < start + 3000 {
        i += 1;
        c.ask(&format!("IAMAT r{i} +1+1 1700000000.{i}"));
    }
    assert!(!logs.join("Solo.log.3").exists());
    for f in ["Solo.log.1", "Solo.log.2"] {
        // Solo.log.1 is briefly missing while the writer rotates (it is
        // renamed to .2 before NAME.log becomes .1); .2 never is.
        let len = match std::fs::metadata(logs.join(f)) {
            Ok(m) => m.len(),
            Err(e) if f == "Solo.log.1" && e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => panic!("{f}: {e}"),
        };
        assert!(len <= size, "{f}: {len} bytes");
    }
    // logrotate: move the file away, SIGUSR1, and a new NAME.log begins.
    // The writer may still be writing the last requests' lines and rotating
    // (Solo.log is missing between its rename to .1 and the reopen): the
    // move is retried until there is a Solo.log to move, as it only raced.
    wait_for("Solo.log to move", || {
        match std::fs::rename(logs.join("Solo.log"), logs.join("moved")) {
            Ok(()) => Some(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("moving Solo.log: {e}"),
        }
    });
    run.child.signal(libc::SIGUSR1);
    // Lines logged after the reopen go to a new Solo.log.
    wait_for("a new Solo.log with the lines after SIGUSR1", || {
        i += 1;
        c.ask(&format!("IAMAT after-usr1 +1+1 1700000000.{i}"));
        std::fs::read_to_string(logs.join("Solo.log"))
            .ok()
            .filter(|t| t.contains("after-usr1"))
    });
}

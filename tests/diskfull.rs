//! A full disk never loses an acknowledged update (docs/PROTOCOL.md §5):
//! the built binary with its journal made to fail, by RLIMIT_FSIZE (EFBIG,
//! no root needed: `prlimit`) and, as root, by a small tmpfs (ENOSPC, also
//! in the middle of a record). With `CI=true` the root tests must run.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::herd::{wait_for, Client, PATIENCE};
use support::procs::{herd_command, HerdProc, LocalConf, HERD};
use support::tmpfs::Tmpfs;

/// One server, `Solo`, as its own process; its journal in `state`.
struct Solo {
    dir: PathBuf,
    conf: PathBuf,
    state: PathBuf,
    addr: SocketAddr,
}

impl Solo {
    fn new(dir: &Path, state: &Path) -> Solo {
        let conf = LocalConf::new(&["Solo"], &[]);
        Solo {
            dir: dir.to_path_buf(),
            conf: conf.write(dir, "h.conf"),
            state: state.to_path_buf(),
            addr: conf.addr("Solo"),
        }
    }

    /// Starts it (under `prlimit --fsize=N` if `fsize`) and waits until it
    /// is ready. (Its standard error is a pipe the harness reads, never a
    /// file the file-size limit would apply to.)
    fn start(&self, fsize: Option<u64>) -> HerdProc {
        let base = match fsize {
            Some(n) => {
                let mut c = Command::new("prlimit");
                // Soft limit only, so it can be lifted again without
                // CAP_SYS_RESOURCE.
                c.arg(format!("--fsize={n}:unlimited")).arg(HERD);
                c
            }
            None => Command::new(HERD),
        };
        let mut cmd = herd_command(base, &self.dir, &self.conf, &["Solo"]);
        cmd.arg("--state-dir")
            .arg(&self.state)
            // Logs small, so only the journal meets the limit.
            .args(["--log-level", "warn", "--metrics", "127.0.0.1:0"]);
        HerdProc::spawn(cmd)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/Solo.log")).unwrap_or_default()
    }
}

/// Sends `n` IAMATs for distinct clients `{tag}{i}` on one connection.
fn post(addr: SocketAddr, tag: &str, n: usize) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        writeln!(
            out,
            "IAMAT {tag}{i} +34.068930-118.445127 1700000000.{i:09}"
        )
        .unwrap();
    }
    (&stream).write_all(&out).unwrap();
    BufReader::new(stream)
}

/// Reads AT replies until none has come for `quiet` (or `n` arrived);
/// returns the client IDs acknowledged.
fn acked(r: &mut BufReader<TcpStream>, n: usize, quiet: Duration) -> Vec<String> {
    r.get_ref().set_read_timeout(Some(quiet)).unwrap();
    let mut got = Vec::new();
    let mut line = String::new();
    while got.len() < n {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                assert!(line.starts_with("AT Solo "), "{line:?}");
                got.push(line.split(' ').nth(3).unwrap().to_string());
            }
        }
    }
    got
}

/// Waits until the log says the journal fails.
fn wait_for_failure(solo: &Solo) {
    wait_for("the journal failure in the log", || {
        solo.log().contains("holding the replies").then_some(())
    });
}

/// After a SIGKILL and a restart with room, every acknowledged client is known.
fn all_known(solo: &Solo, acked: &[String]) {
    let _server = solo.start(None);
    let mut c = Client::connect(solo.addr);
    for id in acked {
        assert!(c.known(id).is_some(), "{id} was acknowledged, then lost");
    }
}

#[test]
fn efbig_holds_the_replies_and_a_kill_loses_no_acknowledged_update() {
    let dir = tempfile::tempdir().unwrap();
    let solo = Solo::new(dir.path(), &dir.path().join("state"));
    // Room for a few hundred 70-byte records.
    let mut server = solo.start(Some(20_000));
    // A first batch fits: every reply comes.
    let mut r = post(solo.addr, "a", 100);
    let mut got = acked(&mut r, 100, PATIENCE);
    assert_eq!(got.len(), 100);
    // Then the limit bites in the middle of a batch: its replies are held
    // (the whole records that fit are written, the rest wait).
    let n = 2000;
    let mut r = post(solo.addr, "k", n);
    wait_for_failure(&solo);
    let more = acked(&mut r, n, Duration::from_millis(1500));
    assert!(more.len() < n, "all {n} acknowledged past the limit");
    got.extend(more);
    // Other clients and WHATSATs go on while the journal fails.
    let mut other = Client::connect(solo.addr);
    assert!(other.known(&got[0]).is_some());
    server.kill();
    let state = std::fs::read(solo.state.join("Solo.journal")).unwrap();
    assert!(
        state.len() <= 20_000 && state.ends_with(b"\n"),
        "no torn record"
    );
    all_known(&solo, &got);
}

#[test]
fn held_replies_arrive_in_order_once_the_limit_is_lifted() {
    let dir = tempfile::tempdir().unwrap();
    let solo = Solo::new(dir.path(), &dir.path().join("state"));
    let server = solo.start(Some(20_000));
    let n = 2000;
    let mut r = post(solo.addr, "h", n);
    wait_for_failure(&solo);
    let first = acked(&mut r, n, Duration::from_millis(500));
    assert!(first.len() < n);
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(server.id().to_string())
        .arg("--fsize=unlimited:unlimited")
        .status()
        .unwrap();
    assert!(status.success());
    let rest = acked(&mut r, n - first.len(), PATIENCE);
    let all: Vec<String> = first.into_iter().chain(rest).collect();
    let want: Vec<String> = (0..n).map(|i| format!("h{i}")).collect();
    assert_eq!(all, want, "every reply, in request order");
    wait_for("the recovery in the log", || {
        solo.log().contains("writable again").then_some(())
    });
    drop(server);
    all_known(&solo, &all);
}

#[test]
fn enospc_on_a_full_tmpfs_even_in_mid_record_loses_nothing_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("state"), "256k") else {
        return;
    };
    let solo = Solo::new(dir.path(), fs.path());
    let server = solo.start(None);
    // Lines of odd lengths, so the last page never ends on a record's end.
    let n = 6000;
    let mut r = post(solo.addr, "enospc-client-", n);
    wait_for_failure(&solo);
    let first = acked(&mut r, n, Duration::from_millis(1500));
    assert!(first.len() < n, "the tmpfs filled");
    let journal = std::fs::read(fs.path().join("Solo.journal")).unwrap();
    assert!(
        journal.is_empty() || journal.ends_with(b"\n"),
        "a torn record was cut back"
    );
    // Room again: the held replies come, in order.
    fs.resize("4m");
    let rest = acked(&mut r, n - first.len(), PATIENCE);
    assert_eq!(first.len() + rest.len(), n);
    // Full again, then killed while full: every reply received survives.
    fs.resize("600k");
    let mut r2 = post(solo.addr, "again-", n);
    let second = acked(&mut r2, n, Duration::from_millis(1500));
    drop(server);
    fs.resize("4m");
    let all: Vec<String> = first.into_iter().chain(rest).chain(second).collect();
    let started = Instant::now();
    all_known(&solo, &all);
    assert!(started.elapsed() < PATIENCE * 3);
}

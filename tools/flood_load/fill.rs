//! `--mode fill` (in process): what a big store costs. Three figures, for
//! `--clients N` (default here: one million):
//!
//! * **bytes per stored client**: this process's VmRSS before and after a
//!   [`Store`] is filled with N clients, the AT lines made from IAMATs by
//!   the protocol's own writer exactly as a server makes them;
//! * **replay rate**: a journal of those N records is replayed into an
//!   empty store with [`journal::replay_file`] (what start-up does), then the
//!   whole start-up ([`Journal::open`]: replay, then the compacted rewrite).
//!   The replay's CPU time is printed beside its wall-clock time (which, on
//!   a shared machine, also counts other processes' turns), and the memory
//!   the replayed store took;
//! * **catch-up time**: two servers A and B linked in process, A started on
//!   that journal; B is restarted empty and a client polls B with WHATSATs
//!   for the first and the last client A streams, until B knows them.
//!
//! The store is measured alone, in this process, because nothing else a
//! server holds grows with the clients it knows.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use herd::journal::{self, Journal};
use herd::protocol::{self, Command};
use herd::store::Store;

use crate::inproc::InProcHerd;
use crate::load;
use crate::opts::{run_prefix, Opts};

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// This process's resident set, in bytes (0 where /proc is missing).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The CPU time this thread has run for (zero where /proc is missing): on
/// a shared machine, the part of a wall-clock time that was this work.
fn thread_cpu() -> Duration {
    // The first field of schedstat: nanoseconds on the CPU.
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = stat
        .split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// The AT line (without `\n`) server `server` would store for client `i`.
fn at_line(out: &mut Vec<u8>, server: &str, prefix: &str, i: usize) {
    let mut iamat = Vec::with_capacity(96);
    let now = load::wall_ns();
    load::ClientId::new(format!("{prefix}{i}")).iamat(&mut iamat, now);
    let Command::Iamat(m) = protocol::parse(&iamat[..iamat.len() - 1]) else {
        unreachable!("the load's own IAMAT parses");
    };
    protocol::write_at(out, server, now as protocol::Nanos + 1_234_567, &m);
    out.pop();
}

/// Runs the mode and prints its report.
pub fn run(o: &Opts) -> io::Result<()> {
    // `--clients` defaults to 100,000 for catchup; fill means a million.
    let n = if o.clients == 100_000 {
        1_000_000
    } else {
        o.clients
    };
    let prefix = format!("{}-", run_prefix());
    let dir = TempDir(std::env::temp_dir().join(format!("flood_load-fill-{}", std::process::id())));
    std::fs::create_dir_all(dir.path())?;
    println!(
        "flood_load fill: {n} clients, state in {}",
        dir.path().display()
    );

    // 1. Memory: the journal's bytes are made first, so only the store is
    // resident between the two readings.
    let mut records = Vec::with_capacity(n * 90);
    let mut line = Vec::with_capacity(128);
    for i in 0..n {
        line.clear();
        at_line(&mut line, "A", &prefix, i);
        records.extend_from_slice(&line);
        records.push(b'\n');
    }
    std::fs::write(dir.path().join("A.journal"), &records)?;
    let line_bytes = records.len() as f64 / n as f64 - 1.0;
    let before = rss();
    let mut store = Store::new();
    let t = Instant::now();
    for rec in records.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        offer(&mut store, rec);
    }
    let fill_time = t.elapsed();
    let after = rss();
    let per_client = after.saturating_sub(before) as f64 / n as f64;
    println!(
        "memory      {} clients stored in {:.0} ms; VmRSS +{:.1} MiB: {per_client:.0} bytes per stored client (AT lines average {line_bytes:.0} bytes)",
        store.len(),
        fill_time.as_secs_f64() * 1e3,
        after.saturating_sub(before) as f64 / (1 << 20) as f64
    );
    drop(store);
    drop(records);

    // 2. Replay: the records alone, then the whole start-up.
    let before = rss();
    let mut store = Store::new();
    let (t, cpu) = (Instant::now(), thread_cpu());
    let r = journal::replay_file(File::open(dir.path().join("A.journal"))?, &mut store)?;
    let (replay_time, replay_cpu) = (t.elapsed(), thread_cpu().saturating_sub(cpu));
    let rate = r.records as f64 / replay_time.as_secs_f64();
    let replay_per_client = rss().saturating_sub(before) as f64 / n as f64;
    drop(store);
    let mut store = Store::new();
    let t = Instant::now();
    let (j, _) = Journal::open(dir.path(), "A", &mut store, None)?;
    let open_time = t.elapsed();
    drop(j);
    drop(store);
    println!(
        "replay      {} records in {:.0} ms ({:.0} ms on the CPU): {:.2} M records/s, {replay_per_client:.0} bytes per stored client; start-up with the compacted rewrite {:.0} ms",
        r.records,
        replay_time.as_secs_f64() * 1e3,
        replay_cpu.as_secs_f64() * 1e3,
        rate / 1e6,
        open_time.as_secs_f64() * 1e3
    );

    // 3. Catch-up: A starts on the journal, B empty; B restarted empty.
    let state = dir.path().to_path_buf();
    let mut herd = InProcHerd::start_with(&["A", "B"], &[("A", "B")], &[], |c| {
        c.places_key = None;
        if c.name == "A" {
            c.state_dir = Some(state.clone());
        }
    })?;
    let first = format!("{prefix}0");
    let last = format!("{prefix}{}", n - 1);
    let b = herd.addr("B");
    wait_known(b, &last, Duration::from_secs(120))?;
    herd.stop("B")?;
    let t0 = Instant::now();
    herd.restart("B")?;
    let first_at = wait_known(b, &first, Duration::from_secs(60))?;
    let all_at = wait_known(b, &last, Duration::from_secs(60))?;
    let (first_ms, all_ms) = (
        (first_at - t0).as_secs_f64() * 1e3,
        (all_at - t0).as_secs_f64() * 1e3,
    );
    println!(
        "catch-up    B restarted empty: first client after {first_ms:.0} ms, all {n} after {all_ms:.0} ms ({:.0} ms from first to last)",
        all_ms - first_ms
    );
    drop(herd);
    println!(
        "summary mode=fill clients={n} bytes_per_client={per_client:.0} line_bytes={line_bytes:.0} replay_mps={:.2} startup_ms={:.0} catchup_first_ms={first_ms:.0} catchup_all_ms={all_ms:.0} catchup_stream_ms={:.0} replay_cpu_ms={:.0} replay_bytes_per_client={replay_per_client:.0}",
        rate / 1e6,
        open_time.as_secs_f64() * 1e3,
        all_ms - first_ms,
        replay_cpu.as_secs_f64() * 1e3
    );
    Ok(())
}

/// Offers a stored AT line to `store` as replay does.
fn offer(store: &mut Store, line: &[u8]) {
    if let Command::At(at) = protocol::parse(line) {
        let mut canonical = Vec::new();
        store.offer_at(&at, &mut canonical, protocol::now_nanos());
    }
}

/// Polls `addr` with `WHATSAT client` until it answers with an AT line;
/// returns when it did.
fn wait_known(addr: std::net::SocketAddr, client: &str, patience: Duration) -> io::Result<Instant> {
    let deadline = Instant::now() + patience;
    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut answer = Vec::new();
    loop {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{client} not known at {addr} after {patience:?}"
            )));
        }
        let r = match &mut conn {
            Some(r) => r,
            None => match TcpStream::connect(addr) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10)))?;
                    conn.insert(BufReader::new(s))
                }
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
            },
        };
        let ok = (|| -> io::Result<bool> {
            r.get_mut()
                .write_all(format!("WHATSAT {client} 1 1\n").as_bytes())?;
            answer.clear();
            r.read_until(b'\n', &mut answer)?;
            if answer.starts_with(b"AT ") {
                // The Places part: JSON, then an empty line.
                let mut l = Vec::new();
                loop {
                    l.clear();
                    if r.read_until(b'\n', &mut l)? == 0 || l == b"\n" {
                        break;
                    }
                }
                return Ok(true);
            }
            if answer.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok(false)
        })();
        match ok {
            Ok(true) => return Ok(Instant::now()),
            Ok(false) => std::thread::sleep(Duration::from_millis(2)),
            Err(_) => {
                conn = None;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

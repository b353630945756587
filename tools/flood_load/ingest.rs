//! `--mode ingest`: how many updates a herd takes from its links, with no
//! clients at all. Every server stores every update and hears it from a
//! neighbour, so the whole herd takes at most what one server's loop can
//! ingest from its links: this is the herd's update ceiling
//! (docs/CAPACITY.md).
//!
//! The tool plays a neighbour: it dials a server, says `HERD NAME` as a
//! herd member does, and streams AT lines flat out over one link or several
//! at once, as fast as the server reads them. The lines are those of
//! `--clients` clients (default 100,000) in turn, each round one second
//! newer than the last, so every line is newer than what the server holds
//! and is stored (and forwarded); the store stays at `--clients` clients.
//! The fed links are one-way: the name the tool says is a neighbour in the
//! config whose address nobody listens on, so the server's own link back to
//! it never comes up and it floods nothing back.
//!
//! * `--in-process`: the servers run in this process. Cases, each a fresh
//!   herd: a lone server fed over 1 or K links (`--links`), with no
//!   journal, a journal written to the page cache (what `herd` does by
//!   default) or one also `fdatasync`ed every `--fsync-ms` (`--journal`),
//!   and a chain of L servers (`--chain`) fed at its first, whose far end's
//!   rate is what a herd of that diameter takes. The first value of each
//!   list is the baseline; every other value is one case that changes only
//!   that. Cases alternate within each of `--rounds` rounds, and each is
//!   reported as a ratio to the baseline of its round as well as a rate.
//!   Rates count updates stored (`ServerStats`), and each server's loop
//!   CPU per update is read from its thread's schedstat.
//! * Otherwise: the server at `--addr` (default: Welsh of
//!   `tools/probe-herd.conf`, fed as its neighbour `Probe`), and every
//!   server of its process read through `--metrics`
//!   (`herd_updates_stored_total{source="link"}`), one case per `--links`
//!   value. The journal's fsync policy is whatever that process was started
//!   with (`--fsync-ms`); run it with `--log-level info`, or every line is
//!   logged.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::cputime;
use crate::inproc::InProcHerd;
use crate::load::{self, ClientId};
use crate::opts::{run_prefix, Opts};
use crate::server_figures;

/// What `--links`, `--chain`, `--journal`, `--fsync-ms` and `--state-dir`
/// asked for.
#[derive(Clone, Debug)]
pub struct Cases {
    pub links: Vec<usize>,
    pub chain: Vec<usize>,
    pub journal: Journals,
    pub fsync_ms: u64,
    pub state_dir: Option<PathBuf>,
}

impl Default for Cases {
    fn default() -> Self {
        Cases {
            links: vec![1, 4],
            chain: vec![1, 3],
            journal: Journals(vec![Journal::Off, Journal::Cache, Journal::Fsync]),
            fsync_ms: 100,
            state_dir: None,
        }
    }
}

/// A journal policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Journal {
    /// No journal: the store only.
    Off,
    /// A journal, appended to the page cache each loop turn (herd's default).
    Cache,
    /// A journal, and `fdatasync` every `--fsync-ms` on a helper thread.
    Fsync,
}

/// `--journal off,cache,fsync`.
#[derive(Clone, Debug)]
pub struct Journals(pub Vec<Journal>);

impl std::str::FromStr for Journals {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(|w| match w.trim() {
                "off" => Ok(Journal::Off),
                "cache" => Ok(Journal::Cache),
                "fsync" => Ok(Journal::Fsync),
                other => Err(format!("--journal: {other:?} is not off, cache or fsync")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Journals)
    }
}

/// `1,4`: a list of counts, each at least 1.
pub fn list(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .map(|w| {
            w.trim()
                .parse::<usize>()
                .map(|n| n.max(1))
                .map_err(|e| format!("{w:?}: {e}"))
        })
        .collect()
}

/// The herd member the tool plays, in process.
const FEEDER: &str = "Feed";
/// The name it says to a server run with `tools/probe-herd.conf`.
const EXTERNAL_FEEDER: &str = "Probe";
/// The DIFF field of every line fed (its value does not matter).
const DIFF: &[u8] = b"+0.000100000";
/// Bytes written to a fed link at once.
const WRITE_CHUNK: usize = 256 * 1024;
/// Writes to one fed link before the others get theirs.
const WRITES_PER_TURN: usize = 8;
/// How long the chain's links may take to come up.
const LINK_PATIENCE: Duration = Duration::from_secs(20);

/// One case: links fed at once, servers in the chain, the journal policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Case {
    links: usize,
    chain: usize,
    journal: Journal,
    /// Each round is sent twice: the second copy of every line is not newer
    /// and is dropped, as a flood's duplicate is (its cost, per line).
    duplicates: bool,
}

impl Case {
    /// A short key for the summary line.
    fn key(&self, fsync_ms: u64) -> String {
        format!(
            "links{}_chain{}_{}{}",
            self.links,
            self.chain,
            match self.journal {
                Journal::Off => "nojournal".to_string(),
                Journal::Cache => "journal".to_string(),
                Journal::Fsync => format!("fsync{fsync_ms}"),
            },
            if self.duplicates { "_dups" } else { "" }
        )
    }

    fn describe(&self, fsync_ms: u64) -> String {
        format!(
            "{} link(s) into {}, {}{}",
            self.links,
            if self.chain == 1 {
                "a lone server".to_string()
            } else {
                format!("a chain of {} servers (rate at the far end)", self.chain)
            },
            match self.journal {
                Journal::Off => "no journal".to_string(),
                Journal::Cache => "journal (page cache)".to_string(),
                Journal::Fsync => format!("journal + fdatasync every {fsync_ms} ms"),
            },
            if self.duplicates {
                ", every line sent twice (the second copy dropped as not newer)"
            } else {
                ""
            }
        )
    }
}

/// The baseline (the first value of each list), then one case per other
/// value, each changing only that.
fn cases(c: &Cases, in_process: bool) -> Vec<Case> {
    let base = Case {
        links: c.links[0],
        chain: if in_process { c.chain[0] } else { 1 },
        journal: if in_process {
            c.journal.0[0]
        } else {
            Journal::Cache
        },
        duplicates: false,
    };
    let mut out = vec![base];
    let mut add = |case: Case| {
        if !out.contains(&case) {
            out.push(case);
        }
    };
    for &links in &c.links[1..] {
        add(Case { links, ..base });
    }
    if in_process {
        for &chain in &c.chain[1..] {
            add(Case { chain, ..base });
        }
        for &journal in &c.journal.0[1..] {
            add(Case { journal, ..base });
        }
        add(Case {
            duplicates: true,
            ..base
        });
    }
    out
}

/// What one run of a case measured.
struct Measured {
    /// Updates stored per second at the far end (the fed server, alone).
    rate: f64,
    /// Updates stored per second, by server, in chain order.
    rates: Vec<(String, f64)>,
    /// Loop CPU per update stored there, by server, in microseconds.
    cpu_us: Vec<(String, f64)>,
    /// The feeder's CPU per update stored at the far end.
    feeder_cpu_us: f64,
    /// Bytes fed per second.
    fed_bytes_rate: f64,
    /// Outbound links that dropped (a neighbour not keeping up: the output
    /// cap) or were not up at the end.
    links_dropped: u64,
    /// Bytes queued on the herd links at the end (a neighbour falling behind).
    queued_bytes: u64,
    /// CPU per update of this process's other threads: the journal's fsync
    /// and compaction helpers (and the tool's own main thread).
    other_cpu_us: f64,
}

/// Runs the mode and prints its report.
pub fn run(o: &Opts) -> io::Result<()> {
    let cases = cases(&o.ingest, o.in_process);
    let rounds = if o.rounds_set { o.rounds } else { 3 };
    let fsync_ms = o.ingest.fsync_ms;
    println!(
        "flood_load ingest: {} clients' AT lines fed flat out, {:.1} s (+{:.1} s warm-up) per case, {rounds} round(s), cases alternating; {}",
        o.clients,
        o.duration.as_secs_f64(),
        o.warmup.as_secs_f64(),
        if o.in_process {
            "servers in this process".to_string()
        } else {
            format!(
                "server at {} fed as {EXTERNAL_FEEDER}",
                o.addr.unwrap_or(DEFAULT_EXTERNAL)
            )
        }
    );
    for (i, c) in cases.iter().enumerate() {
        println!(
            "case {i}  {}{}",
            c.describe(fsync_ms),
            if i == 0 { " (baseline)" } else { "" }
        );
    }
    if !o.in_process && o.metrics.is_none() {
        return Err(io::Error::other(
            "ingest without --in-process reads the server's counts from --metrics HOST:PORT",
        ));
    }
    let mut results: Vec<Vec<Measured>> = cases.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, case) in cases.iter().enumerate() {
            let m = if o.in_process {
                in_process(o, case)?
            } else {
                external(o, case)?
            };
            print_run(round, i, case, &m, fsync_ms);
            results[i].push(m);
        }
    }
    summarise(&cases, &results, fsync_ms);
    Ok(())
}

fn print_run(round: usize, i: usize, case: &Case, m: &Measured, fsync_ms: u64) {
    let rates: Vec<String> = m
        .rates
        .iter()
        .map(|(n, r)| format!("{n} {r:.0}/s"))
        .collect();
    let cpu: Vec<String> = m
        .cpu_us
        .iter()
        .map(|(n, c)| format!("{n} {c:.2}"))
        .collect();
    println!(
        "round {round} case {i} ({}): {:.0} updates/s at the far end; stored {}; loop CPU us/update {}; other threads {:.2} us/update; feeder {:.2} us/update, {:.1} MB/s fed; {} bytes queued on herd links at the end{}",
        case.key(fsync_ms),
        m.rate,
        rates.join(", "),
        if cpu.is_empty() { "-".to_string() } else { cpu.join(", ") },
        m.other_cpu_us,
        m.feeder_cpu_us,
        m.fed_bytes_rate / 1e6,
        m.queued_bytes,
        if m.links_dropped > 0 {
            format!("; {} herd link(s) dropped or down", m.links_dropped)
        } else {
            String::new()
        }
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn summarise(cases: &[Case], results: &[Vec<Measured>], fsync_ms: u64) {
    println!("case                              rate/s (median)  / baseline (per round)        loop CPU us/update, first server (median)");
    let mut summary = String::from("summary mode=ingest");
    for (i, case) in cases.iter().enumerate() {
        let rates: Vec<f64> = results[i].iter().map(|m| m.rate).collect();
        let ratios: Vec<f64> = results[i]
            .iter()
            .zip(&results[0])
            .map(|(m, b)| if b.rate > 0.0 { m.rate / b.rate } else { 0.0 })
            .collect();
        let cpu: Vec<f64> = results[i]
            .iter()
            .filter_map(|m| m.cpu_us.first().map(|c| c.1))
            .collect();
        let key = case.key(fsync_ms);
        println!(
            "{key:<33} {:>15.0}  {:>5.2} ({})  {:.2}",
            median(rates.clone()),
            median(ratios.clone()),
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
            median(cpu.clone())
        );
        summary.push_str(&format!(
            " {key}_rate={:.0} {key}_ratio={:.2} {key}_cpu_us={:.2}",
            median(rates),
            median(ratios),
            median(cpu)
        ));
    }
    println!("{summary}");
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port where nothing listens (bound, never listening: a connect is
/// refused at once), held while the socket lives. The feeder's address in
/// the config, so the fed server's link back to it never comes up.
fn dead_port() -> io::Result<(socket2::Socket, SocketAddr)> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    let addr = s
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("no address"))?;
    Ok((s, addr))
}

/// One case with its servers in this process.
fn in_process(o: &Opts, case: &Case) -> io::Result<Measured> {
    let names: Vec<String> = (1..=case.chain).map(|i| format!("S{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut links: Vec<(&str, &str)> = name_refs.windows(2).map(|w| (w[0], w[1])).collect();
    links.push((name_refs[0], FEEDER));
    let (_dead, dead_addr) = dead_port()?;
    let dir = match case.journal {
        Journal::Off => None,
        _ => {
            let base = o
                .ingest
                .state_dir
                .clone()
                .unwrap_or_else(std::env::temp_dir);
            let dir = base.join(format!(
                "flood_load-ingest-{}-{}",
                std::process::id(),
                load::wall_ns()
            ));
            std::fs::create_dir_all(&dir)?;
            Some(TempDir(dir))
        }
    };
    let state_dir = dir.as_ref().map(|d| d.0.clone());
    let fsync = (case.journal == Journal::Fsync).then(|| Duration::from_millis(o.ingest.fsync_ms));
    let herd = InProcHerd::start_with(&name_refs, &links, &[(FEEDER, dead_addr)], |config| {
        config.state_dir = state_dir.clone();
        config.fsync = fsync;
    })?;
    wait_for_chain(&herd, &name_refs)?;
    let stats: Vec<_> = name_refs
        .iter()
        .map(|n| {
            herd.stats(n)
                .ok_or_else(|| io::Error::other("a server stopped"))
        })
        .collect::<io::Result<_>>()?;
    let stored = || -> Vec<u64> {
        stats
            .iter()
            .map(|s| s.snapshot().updates_stored[1])
            .collect()
    };
    let feeder = Feeder::start(
        herd.addr(name_refs[0]),
        FEEDER,
        case.links,
        o.clients,
        case.duplicates,
    )?;
    std::thread::sleep(o.warmup);
    let (s0, c0, t0, b0) = (stored(), cputime::by_name(), Instant::now(), feeder.bytes());
    std::thread::sleep(o.duration);
    let (s1, c1, dt, b1) = (stored(), cputime::by_name(), t0.elapsed(), feeder.bytes());
    let herd_links: Vec<_> = stats
        .iter()
        .flat_map(|s| s.snapshot().links)
        .filter(|l| l.neighbour != FEEDER)
        .collect();
    let dropped = herd_links
        .iter()
        .map(|l| l.catchups.saturating_sub(1) + u64::from(!l.up))
        .sum();
    let queued_bytes = herd_links.iter().map(|l| l.queued_bytes).sum();
    feeder.stop()?;
    drop(herd);
    let secs = dt.as_secs_f64();
    let spent = cputime::spent(&c0, &c1);
    let rates: Vec<(String, f64)> = names
        .iter()
        .zip(s0.iter().zip(&s1))
        .map(|(n, (a, b))| (n.clone(), (b - a) as f64 / secs))
        .collect();
    let cpu_us = names
        .iter()
        .zip(s0.iter().zip(&s1))
        .map(|(n, (a, b))| {
            let cpu = spent.get(&cputime::comm(n)).copied().unwrap_or_default();
            (n.clone(), per_update_us(cpu, b - a))
        })
        .collect();
    let far = rates.last().map_or(0.0, |r| r.1);
    let far_count = s1.last().zip(s0.last()).map_or(0, |(b, a)| b - a);
    let feeder_cpu = spent.get(FEEDER_THREAD).copied().unwrap_or_default();
    let loops: Vec<String> = names.iter().map(|n| cputime::comm(n)).collect();
    let other: Duration = spent
        .iter()
        .filter(|(n, _)| !loops.contains(n) && n.as_str() != FEEDER_THREAD)
        .map(|(_, t)| *t)
        .sum();
    Ok(Measured {
        other_cpu_us: per_update_us(other, far_count),
        queued_bytes,
        rate: far,
        rates,
        cpu_us,
        feeder_cpu_us: per_update_us(feeder_cpu, far_count),
        fed_bytes_rate: (b1 - b0) as f64 / secs,
        links_dropped: dropped,
    })
}

fn per_update_us(cpu: Duration, updates: u64) -> f64 {
    if updates == 0 {
        0.0
    } else {
        cpu.as_secs_f64() * 1e6 / updates as f64
    }
}

/// Waits until every server's links along the chain are up.
fn wait_for_chain(herd: &InProcHerd, names: &[&str]) -> io::Result<()> {
    let deadline = Instant::now() + LINK_PATIENCE;
    loop {
        let all_up = names.iter().all(|n| {
            herd.stats(n).is_some_and(|s| {
                s.snapshot()
                    .links
                    .iter()
                    .filter(|l| l.neighbour != FEEDER)
                    .all(|l| l.up)
            })
        });
        if all_up {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the chain's links did not come up",
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Welsh in `tools/probe-herd.conf`.
const DEFAULT_EXTERNAL: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
    12003,
);

/// One case against a running herd, read through `--metrics`.
fn external(o: &Opts, case: &Case) -> io::Result<Measured> {
    let addr = o.addr.unwrap_or(DEFAULT_EXTERNAL);
    let scrape = || {
        server_figures::scrape(o.metrics)
            .ok_or_else(|| io::Error::other("--metrics: no answer (see above)"))
    };
    let feeder = Feeder::start(addr, EXTERNAL_FEEDER, case.links, o.clients, false)?;
    std::thread::sleep(o.warmup);
    let (f0, c0, t0, b0) = (
        scrape()?,
        cputime::by_name(),
        Instant::now(),
        feeder.bytes(),
    );
    std::thread::sleep(o.duration);
    let (f1, c1, dt, b1) = (scrape()?, cputime::by_name(), t0.elapsed(), feeder.bytes());
    feeder.stop()?;
    let secs = dt.as_secs_f64();
    let stored = |f: &server_figures::Figures, server: &str| {
        f.sum_all(
            "herd_updates_stored_total",
            &[&format!("server=\"{server}\""), "source=\"link\""],
        )
    };
    let servers = f1.label_values("herd_updates_stored_total", "server");
    let rates: Vec<(String, f64)> = servers
        .iter()
        .map(|s| (s.clone(), (stored(&f1, s) - stored(&f0, s)) / secs))
        .collect();
    // The rate of the server fed (the least of them if it is not there).
    let rate = rates
        .iter()
        .map(|r| r.1)
        .fold(f64::INFINITY, f64::min)
        .min(f64::MAX);
    let spent = cputime::spent(&c0, &c1);
    let feeder_cpu = spent.get(FEEDER_THREAD).copied().unwrap_or_default();
    Ok(Measured {
        rate: if rate.is_finite() { rate } else { 0.0 },
        rates,
        cpu_us: Vec::new(),
        feeder_cpu_us: per_update_us(feeder_cpu, (rate.max(0.0) * secs) as u64),
        fed_bytes_rate: (b1 - b0) as f64 / secs,
        links_dropped: 0,
        queued_bytes: 0,
        other_cpu_us: 0.0,
    })
}

/// The feeder thread's name (its CPU is reported beside the servers').
const FEEDER_THREAD: &str = "feeder";

/// The tool's side of the fed links: one thread writing AT lines flat out
/// on every link it dialled.
struct Feeder {
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<io::Result<()>>,
}

impl Feeder {
    /// Dials `addr` `links` times, says `HERD name` on each, and feeds the
    /// lines of `clients` clients (split between the links) until stopped.
    fn start(
        addr: SocketAddr,
        name: &str,
        links: usize,
        clients: usize,
        duplicates: bool,
    ) -> io::Result<Feeder> {
        let prefix = run_prefix();
        let mut feeds = Vec::new();
        for i in 0..links {
            let (lo, hi) = (clients * i / links, clients * (i + 1) / links);
            let std = load::connect_blocking(addr, None)?;
            std.set_nonblocking(true)?;
            let stream = TcpStream::from_std(std);
            stream.set_nodelay(true)?;
            let mut feed = Feed::new(stream, name, &prefix, lo..hi.max(lo + 1));
            feed.twice = duplicates;
            feeds.push(feed);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let bytes = Arc::new(AtomicU64::new(0));
        let (stop2, bytes2) = (stop.clone(), bytes.clone());
        let thread = std::thread::Builder::new()
            .name(FEEDER_THREAD.into())
            .spawn(move || feed(feeds, &stop2, &bytes2))?;
        Ok(Feeder {
            stop,
            bytes,
            thread,
        })
    }

    /// Bytes written so far.
    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Stops feeding and closes the links; the feeder's error, if it failed.
    fn stop(self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| io::Error::other("the feeder thread panicked"))?
    }
}

/// One fed link: a round of AT lines, one per client of its share, whose
/// seconds are moved on by one each round so every line is newer.
struct Feed {
    stream: TcpStream,
    /// `HERD name\n` first, then the round over and over.
    hello: Vec<u8>,
    round: Vec<u8>,
    /// Where each line's 10-digit seconds field starts.
    secs_at: Vec<usize>,
    secs: u64,
    pos: usize,
    /// The last write found the socket full: wait for WRITABLE.
    full: bool,
    /// Send each round twice (the second time, every line is a duplicate).
    twice: bool,
    /// The round being sent is the second copy.
    again: bool,
}

impl Feed {
    fn new(stream: TcpStream, name: &str, prefix: &str, clients: std::ops::Range<usize>) -> Feed {
        let start = load::wall_ns();
        let mut round = Vec::with_capacity(clients.len() * 80);
        let mut secs_at = Vec::with_capacity(clients.len());
        let mut iamat = Vec::with_capacity(96);
        for (k, i) in clients.enumerate() {
            iamat.clear();
            // `IAMAT ID COORDS SSSSSSSSSS.NNNNNNNNN\n`: the client's line,
            // made into the AT line a server would flood.
            ClientId::new(format!("{prefix}-{i}")).iamat(&mut iamat, start + k as u128);
            round.extend_from_slice(b"AT ");
            round.extend_from_slice(name.as_bytes());
            round.push(b' ');
            round.extend_from_slice(DIFF);
            round.push(b' ');
            round.extend_from_slice(&iamat[6..]);
            // Ten digits of seconds until the year 2286.
            secs_at.push(round.len() - 21);
        }
        let mut hello = Vec::new();
        herd::protocol::write_herd(&mut hello, name, None);
        Feed {
            stream,
            hello,
            round,
            secs_at,
            secs: (start / 1_000_000_000) as u64,
            pos: 0,
            full: false,
            twice: false,
            again: false,
        }
    }

    /// The next round: every line one second newer.
    fn next_round(&mut self) {
        self.pos = 0;
        if self.twice && !self.again {
            self.again = true;
            return;
        }
        self.again = false;
        self.secs += 1;
        let digits = format!("{:010}", self.secs);
        for &at in &self.secs_at {
            self.round[at..at + 10].copy_from_slice(digits.as_bytes());
        }
        self.pos = 0;
    }

    /// Writes until the socket is full or [`WRITES_PER_TURN`] writes are
    /// done (so the other links, and the stop flag, get their turn); bytes
    /// written.
    fn write(&mut self) -> io::Result<u64> {
        let mut n = 0u64;
        for _ in 0..WRITES_PER_TURN {
            let chunk = if self.hello.is_empty() {
                if self.pos == self.round.len() {
                    self.next_round();
                }
                let end = (self.pos + WRITE_CHUNK).min(self.round.len());
                &self.round[self.pos..end]
            } else {
                &self.hello[..]
            };
            match self.stream.write(chunk) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(k) => {
                    n += k as u64;
                    if self.hello.is_empty() {
                        self.pos += k;
                    } else {
                        self.hello.drain(..k);
                    }
                }
                // Full: until the server has read some.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.full = true;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Reads (and drops) what the server sends back: its heartbeats.
    fn read(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed a fed link",
                    ))
                }
                Ok(_) => {}
                // Drained until the next event.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

fn feed(mut feeds: Vec<Feed>, stop: &AtomicBool, bytes: &AtomicU64) -> io::Result<()> {
    let mut poll = Poll::new()?;
    for (i, f) in feeds.iter_mut().enumerate() {
        poll.registry().register(
            &mut f.stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
    }
    let mut events = Events::with_capacity(64);
    while !stop.load(Ordering::Relaxed) {
        // A link not yet full has a turn without waiting.
        let wait = if feeds.iter().any(|f| !f.full) {
            Duration::ZERO
        } else {
            Duration::from_millis(50)
        };
        match poll.poll(&mut events, Some(wait)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        for ev in events.iter() {
            let Some(f) = feeds.get_mut(ev.token().0) else {
                continue;
            };
            if ev.is_readable() || ev.is_read_closed() {
                f.read()?;
            }
            if ev.is_writable() {
                f.full = false;
            }
        }
        for f in feeds.iter_mut().filter(|f| !f.full) {
            bytes.fetch_add(f.write()?, Ordering::Relaxed);
        }
    }
    Ok(())
}

//! `--mode watch`: `--conns` watchers of one client at the server it is
//! posted at, and `--far` watchers of it three hops away; one poster at
//! `--rate` IAMATs a second. Each IAMAT's TIME is the poster's wall clock,
//! so a watcher's receipt time minus the TIME of the AT line it received
//! is IAMAT-sent to push-received. Reports both latencies, pushes a
//! second, and for the same-server group the time until the *last*
//! watcher has each update (or a newer one: a watcher behind is sent only
//! the newest, docs/PROTOCOL.md §15). Beside them a *bystander*, a client
//! of the same server that watches nothing, sends an IAMAT of its own
//! every 10 ms and waits for the answer: how long other clients wait while
//! the server fans out (`bystander_` in the summary).
//!
//! In process (no `--addr`): the reference herd, posting at Hands, the far
//! watchers at Welsh. Against a running herd: posting and the same-server
//! watchers at `--addr`, the far ones at `--far-addr` (none without it).
//! In process the herd's sockets count against this process's descriptor
//! limit too (two a watcher); against a herd of its own, one.
//!
//! `--rate 0` (against a running herd only): nobody posts; each of the
//! `--conns` watchers watches a client of its own that never moves (idle
//! watchers), held open for the warm-up and `--duration`: what they cost
//! the server is measured by another load meanwhile (tools/watch-compare.sh).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

use crate::cputime;
use crate::hist::Hist;
use crate::inproc::{InProcHerd, REFERENCE_LINKS, REFERENCE_NAMES};
use crate::load::wall_ns;
use crate::opts::{run_prefix, Opts};

/// How often the bystander asks.
const BYSTANDER_EVERY: Duration = Duration::from_millis(10);
/// How long the watchers may take to get their snapshot.
const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(60);

/// One watcher connection: its socket, an unfinished line, which group,
/// and (same-server group, measured time) what it received: (TIME sent,
/// wall clock received), nanoseconds.
struct Watcher {
    stream: MioStream,
    partial: Vec<u8>,
    far: bool,
    got_snapshot: bool,
    receipts: Vec<(u64, u64)>,
}

pub fn run(o: &Opts) -> io::Result<()> {
    let (same_n, far_n) = (o.conns.unwrap_or(100), o.far);
    let rate = o.rate.unwrap_or(100.0);
    if rate <= 0.0 {
        let addr = o
            .addr
            .ok_or_else(|| io::Error::other("watch --rate 0 (idle watchers) needs --addr"))?;
        return idle(o, addr, same_n);
    }
    // In process, or the addresses of a running herd.
    let (herd, same_addr, far_addr) = match o.addr {
        Some(addr) => (None, addr, o.far_addr),
        None => {
            let herd = InProcHerd::start_with(REFERENCE_NAMES, REFERENCE_LINKS, &[], |c| {
                c.places_key = None;
            })?;
            let (h, w) = (herd.addr("Hands"), herd.addr("Welsh"));
            // Links up before anything is measured.
            std::thread::sleep(Duration::from_secs(1));
            (Some(herd), h, Some(w))
        }
    };
    let far_n = if far_addr.is_some() { far_n } else { 0 };
    let watched = format!("{}.watched", run_prefix());
    // One position first: every watcher's snapshot is then a line, which
    // says its WATCH is in force before anything is measured.
    let mut poster = TcpStream::connect(same_addr)?;
    poster.set_nodelay(true)?;
    let t = wall_ns();
    writeln!(poster, "{}", iamat(&watched, t))?;
    let mut first = String::new();
    BufReader::new(poster.try_clone()?).read_line(&mut first)?;
    if !first.starts_with("AT ") {
        return Err(io::Error::other(format!(
            "the first IAMAT was answered {first:?}"
        )));
    }
    let mut poll = Poll::new()?;
    let mut watchers = Vec::with_capacity(same_n + far_n);
    for i in 0..same_n + far_n {
        let far = i >= same_n;
        let addr = if far {
            far_addr.unwrap_or(same_addr)
        } else {
            same_addr
        };
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        writeln!(s, "WATCH {watched}")?;
        s.set_nonblocking(true)?;
        let mut stream = MioStream::from_std(s);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        watchers.push(Watcher {
            stream,
            partial: Vec::new(),
            far,
            got_snapshot: false,
            receipts: Vec::new(),
        });
    }
    let where_ = match (&herd, far_addr) {
        (Some(_), _) => "at Hands, far ones at Welsh (three hops)".to_string(),
        (None, Some(f)) => format!("at {same_addr}, far ones at {f}"),
        (None, None) => format!("at {same_addr}"),
    };
    eprintln!("watch: {same_n} watchers and {far_n} far ones {where_}; waiting for snapshots");
    let mut events = Events::with_capacity(4096);
    let mut buf = vec![0u8; 64 * 1024];
    // Snapshots (a far server has the first position once it flooded).
    let deadline = Instant::now() + SNAPSHOT_PATIENCE;
    let mut snapshots = 0;
    while snapshots < watchers.len() {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "only {snapshots} of {} watchers got their snapshot within {SNAPSHOT_PATIENCE:?}",
                watchers.len()
            )));
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for ev in events.iter() {
            let w = &mut watchers[ev.token().0];
            drain(w, &mut buf, |w, _line, _now| {
                if !w.got_snapshot {
                    w.got_snapshot = true;
                    snapshots += 1;
                }
            })?;
        }
    }
    eprintln!(
        "watch: all {} snapshots in; posting {rate}/s at {same_addr} for {:?} (+{:?} warm-up)",
        watchers.len(),
        o.duration,
        o.warmup
    );
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let measure_from = start + o.warmup;
    let poster_thread = {
        let stop = stop.clone();
        let total = o.warmup + o.duration;
        let watched = watched.clone();
        std::thread::spawn(move || post(poster, &watched, rate, total, &stop))
    };
    let bystander_thread = {
        let stop = stop.clone();
        let s = TcpStream::connect(same_addr)?;
        let client = format!("{}.bystander", run_prefix());
        std::thread::spawn(move || bystander(s, &client, measure_from, &stop))
    };
    let (mut same, mut far) = (Hist::new(), Hist::new());
    let mut pushes = 0u64;
    let end = measure_from + o.duration + Duration::from_millis(500);
    let mut measure_wall = None;
    let (mut cpu0, mut server0) = (None, None);
    while Instant::now() < end {
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        let measured = Instant::now() >= measure_from;
        if measured && measure_wall.is_none() {
            measure_wall = Some(wall_ns() as u64);
            cpu0 = Some(cputime::by_name());
            server0 = o.server_pid.and_then(process_cpu);
        }
        for ev in events.iter() {
            let w = &mut watchers[ev.token().0];
            drain(w, &mut buf, |w, line, now| {
                if !measured {
                    return;
                }
                if let Some(sent) = time_ns(line) {
                    pushes += 1;
                    let lat = now.saturating_sub(sent) as u64;
                    if w.far {
                        far.record(lat);
                    } else {
                        same.record(lat);
                        w.receipts.push((sent as u64, now as u64));
                    }
                }
            })?;
        }
    }
    let cpu = cpu0.map(|c0| cputime::spent(&c0, &cputime::by_name()));
    let server_cpu = server0
        .zip(o.server_pid.and_then(process_cpu))
        .map(|(a, b)| b.saturating_sub(a));
    stop.store(true, Ordering::Relaxed);
    let sent_times = poster_thread
        .join()
        .map_err(|_| io::Error::other("poster panicked"))??;
    let bystander = bystander_thread
        .join()
        .map_err(|_| io::Error::other("bystander panicked"))??;
    let posted = sent_times.len();
    let secs = o.duration.as_secs_f64();
    // Each update posted in the measured time: when had the last watcher
    // it, or a newer one?
    let from = measure_wall.unwrap_or(0);
    let (last, uncovered) = last_watcher(&sent_times, from, &watchers);
    println!("posted {posted} IAMATs ({rate}/s asked)");
    println!(
        "same server ({same_n} watchers), each push: {}",
        same.describe()
    );
    println!(
        "same server, the last of the {same_n} watchers to have each update (or a newer one): {}{}",
        last.describe(),
        if uncovered > 0 {
            format!("; {uncovered} updates never reached every watcher")
        } else {
            String::new()
        }
    );
    if far_n > 0 {
        println!("three hops ({far_n} watchers): {}", far.describe());
    }
    println!("a bystander's IAMAT, answered in: {}", bystander.describe());
    println!("pushes received: {:.0}/s", pushes as f64 / secs);
    let own_cpu = cpu.map(|c| {
        c.iter()
            .filter(|(name, _)| name.starts_with("flood_load"))
            .map(|(_, d)| *d)
            .sum::<Duration>()
    });
    if let Some(c) = own_cpu {
        println!(
            "this tool's receiving thread: {:.0}% of a core",
            100.0 * c.as_secs_f64() / (secs + 0.5)
        );
    }
    if let Some(c) = server_cpu {
        println!(
            "the server process (pid {}): {:.0}% of a core",
            o.server_pid.unwrap_or(0),
            100.0 * c.as_secs_f64() / (secs + 0.5)
        );
    }
    println!(
        "summary mode=watch watchers={same_n} far={far_n} rate={rate} posted={posted} pushes_per_s={:.0} {} {} {} {} last_uncovered={uncovered} tool_cpu_pct={:.0} server_cpu_pct={:.0}",
        pushes as f64 / secs,
        same.summary_fields("same_"),
        last.summary_fields("last_"),
        far.summary_fields("far_"),
        bystander.summary_fields("bystander_"),
        own_cpu.map_or(0.0, |c| 100.0 * c.as_secs_f64() / (secs + 0.5)),
        server_cpu.map_or(0.0, |c| 100.0 * c.as_secs_f64() / (secs + 0.5)),
    );
    Ok(())
}

/// Reads what `w` has, handing each whole line (and the wall clock at
/// the read) to `line`.
fn drain(
    w: &mut Watcher,
    buf: &mut [u8],
    mut line: impl FnMut(&mut Watcher, &[u8], u128),
) -> io::Result<()> {
    loop {
        match w.stream.read(buf) {
            Ok(0) => return Err(io::Error::other("a watcher was closed by the server")),
            Ok(n) => {
                let now = wall_ns();
                let mut data = &buf[..n];
                if !w.partial.is_empty() {
                    w.partial.extend_from_slice(data);
                    let mut partial = std::mem::take(&mut w.partial);
                    let mut rest = &partial[..];
                    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                        line(w, &rest[..nl], now);
                        rest = &rest[nl + 1..];
                    }
                    let keep = rest.len();
                    partial.drain(..partial.len() - keep);
                    w.partial = partial;
                    continue;
                }
                while let Some(nl) = data.iter().position(|&b| b == b'\n') {
                    line(w, &data[..nl], now);
                    data = &data[nl + 1..];
                }
                w.partial.extend_from_slice(data);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// For each update sent at or after `from` (ns), the time until the last
/// same-server watcher received it or a newer one; and how many no
/// watcher-set covered by the end (some watcher received nothing as new).
fn last_watcher(sent: &[u128], from: u64, watchers: &[Watcher]) -> (Hist, u64) {
    let updates: Vec<u64> = sent
        .iter()
        .map(|&t| t as u64)
        .filter(|&t| t >= from)
        .collect();
    let mut worst = vec![0u64; updates.len()];
    let mut covered = vec![0usize; updates.len()];
    let group = watchers.iter().filter(|w| !w.far);
    let n = group.clone().count();
    for w in group {
        // Receipts come in order of arrival; TIMEs only go forward.
        let mut u = 0;
        for &(time, at) in &w.receipts {
            while u < updates.len() && updates[u] <= time {
                worst[u] = worst[u].max(at.saturating_sub(updates[u]));
                covered[u] += 1;
                u += 1;
            }
        }
    }
    let mut h = Hist::new();
    let mut uncovered = 0;
    for (i, &c) in covered.iter().enumerate() {
        if c == n {
            h.record(worst[i]);
        } else {
            uncovered += 1;
        }
    }
    (h, uncovered)
}

/// `--rate 0`: `n` watchers at `addr`, each of a client of its own that
/// never moves, held for the warm-up and the duration.
fn idle(o: &Opts, addr: SocketAddr, n: usize) -> io::Result<()> {
    let prefix = run_prefix();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(addr)?;
        writeln!(s, "WATCH {prefix}.idle{i}")?;
        conns.push(s);
    }
    // A PING after each WATCH: a watcher answers it `? PING`, which says
    // its WATCH was read and accepted.
    for s in &mut conns {
        writeln!(s, "PING")?;
    }
    let mut answered = 0;
    for s in &conns {
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line)?;
        if line.starts_with("? ") {
            answered += 1;
        }
    }
    println!("{answered} idle watchers at {addr} (each watching a client that never moves)");
    if !o.quiet {
        eprintln!("watch: holding them for {:?}", o.warmup + o.duration);
    }
    std::thread::sleep(o.warmup + o.duration);
    println!("summary mode=watch idle_watchers={answered}");
    Ok(())
}

/// An IAMAT of `client` with TIME `t` (ns since the epoch).
fn iamat(client: &str, t: u128) -> String {
    format!(
        "IAMAT {client} +34.068930-118.445127 {}.{:09}",
        t / 1_000_000_000,
        t % 1_000_000_000
    )
}

/// Posts IAMATs of `client` on `s`, `rate` a second for `total`, TIME
/// being the wall clock; returns the TIMEs sent.
fn post(
    mut s: TcpStream,
    client: &str,
    rate: f64,
    total: Duration,
    stop: &AtomicBool,
) -> io::Result<Vec<u128>> {
    let replies = BufReader::new(s.try_clone()?);
    std::thread::spawn(move || replies.lines().take_while(Result::is_ok).count());
    let start = Instant::now();
    let mut sent = Vec::new();
    let mut line = String::new();
    while start.elapsed() < total && !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate) as usize + 1;
        line.clear();
        while sent.len() < due {
            let mut t = wall_ns();
            // Every TIME its own, and increasing.
            if let Some(&last) = sent.last() {
                t = t.max(last + 1);
            }
            line.push_str(&iamat(client, t));
            line.push('\n');
            sent.push(t);
        }
        if !line.is_empty() {
            s.write_all(line.as_bytes())?;
        }
        // Pace in small steps: a burst a tick at high rates.
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(sent)
}

/// The bystander: an IAMAT of `client` every [`BYSTANDER_EVERY`] on `s`
/// until `stop`, each answer awaited; the round trips from `from` on.
fn bystander(s: TcpStream, client: &str, from: Instant, stop: &AtomicBool) -> io::Result<Hist> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(SNAPSHOT_PATIENCE))?;
    let mut replies = BufReader::new(s.try_clone()?);
    let mut s = s;
    let mut hist = Hist::new();
    let mut answer = String::new();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        writeln!(s, "{}", iamat(client, wall_ns()))?;
        answer.clear();
        if replies.read_line(&mut answer)? == 0 {
            return Err(io::Error::other("the server closed the bystander"));
        }
        if sent >= from {
            hist.record(sent.elapsed().as_nanos() as u64);
        }
        next += BYSTANDER_EVERY;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(hist)
}

/// TIME of an AT line (its 6th field), in nanoseconds.
fn time_ns(line: &[u8]) -> Option<u128> {
    let text = std::str::from_utf8(line).ok()?.trim_end();
    let time = text.split(' ').nth(5)?;
    let (s, f) = time.split_once('.').unwrap_or((time, "0"));
    let frac: u128 = format!("{f:0<9}")[..9].parse().ok()?;
    Some(s.parse::<u128>().ok()? * 1_000_000_000 + frac)
}

/// User plus system CPU time of process `pid` so far.
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces): 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

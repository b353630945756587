//! `--mode watch` (in process): the reference herd, `--conns` watchers of
//! one client at Hands (where it posts) and `--far` watchers at Welsh
//! (three hops away), one poster at Hands at `--rate` IAMATs a second.
//! Each IAMAT's TIME is the poster's wall clock, so a watcher's receipt
//! time minus the TIME of the AT line it received is IAMAT-sent to
//! push-received. Reports both latencies and pushes a second.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

use crate::hist::Hist;
use crate::inproc::{InProcHerd, REFERENCE_LINKS, REFERENCE_NAMES};
use crate::load::wall_ns;
use crate::opts::Opts;

/// The client every watcher watches.
const WATCHED: &str = "flood.watched";

/// One watcher connection: its socket, an unfinished line, which group.
struct Watcher {
    stream: MioStream,
    partial: Vec<u8>,
    far: bool,
}

pub fn run(o: &Opts) -> io::Result<()> {
    let herd = InProcHerd::start_with(REFERENCE_NAMES, REFERENCE_LINKS, &[], |c| {
        c.places_key = None;
    })?;
    let (same_n, far_n) = (o.conns.unwrap_or(100), o.far);
    let rate = o.rate.unwrap_or(100.0).max(1.0);
    // Links up before anything is measured.
    std::thread::sleep(Duration::from_secs(1));
    let mut poll = Poll::new()?;
    let mut watchers = Vec::with_capacity(same_n + far_n);
    for i in 0..same_n + far_n {
        let far = i >= same_n;
        let addr = herd.addr(if far { "Welsh" } else { "Hands" });
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        writeln!(s, "WATCH {WATCHED}")?;
        s.set_nonblocking(true)?;
        let mut stream = MioStream::from_std(s);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)?;
        watchers.push(Watcher {
            stream,
            partial: Vec::new(),
            far,
        });
    }
    eprintln!(
        "watch: {same_n} watchers at Hands, {far_n} at Welsh (three hops); posting {rate}/s at Hands for {:?}",
        o.duration
    );
    let stop = Arc::new(AtomicBool::new(false));
    let poster = {
        let stop = stop.clone();
        let addr = herd.addr("Hands");
        let total = o.warmup + o.duration;
        std::thread::spawn(move || post(addr, rate, total, &stop))
    };
    let (mut same, mut far) = (Hist::new(), Hist::new());
    let mut pushes = 0u64;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let start = Instant::now();
    let measure_from = start + o.warmup;
    let end = measure_from + o.duration + Duration::from_millis(500);
    while Instant::now() < end {
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for ev in events.iter() {
            let w = &mut watchers[ev.token().0];
            loop {
                match w.stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let now = wall_ns();
                        let measured = Instant::now() >= measure_from;
                        w.partial.extend_from_slice(&buf[..n]);
                        while let Some(nl) = w.partial.iter().position(|&b| b == b'\n') {
                            let line: Vec<u8> = w.partial.drain(..=nl).collect();
                            if !measured {
                                continue;
                            }
                            if let Some(sent) = time_ns(&line) {
                                pushes += 1;
                                let h = if w.far { &mut far } else { &mut same };
                                h.record(now.saturating_sub(sent) as u64);
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let posted = poster
        .join()
        .map_err(|_| io::Error::other("poster panicked"))??;
    let secs = o.duration.as_secs_f64();
    println!("posted {posted} IAMATs ({rate}/s asked)");
    println!(
        "same server (Hands, {same_n} watchers): {}",
        same.describe()
    );
    println!("three hops (Welsh, {far_n} watchers): {}", far.describe());
    println!("pushes received: {:.0}/s", pushes as f64 / secs);
    println!(
        "summary mode=watch watchers={same_n} far={far_n} rate={rate} posted={posted} pushes_per_s={:.0} {} {}",
        pushes as f64 / secs,
        same.summary_fields("same_"),
        far.summary_fields("far_")
    );
    Ok(())
}

/// Posts IAMATs of [`WATCHED`] at `addr`, `rate` a second for `total`,
/// TIME being the wall clock; returns how many.
fn post(
    addr: std::net::SocketAddr,
    rate: f64,
    total: Duration,
    stop: &AtomicBool,
) -> io::Result<u64> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    let replies = BufReader::new(s.try_clone()?);
    std::thread::spawn(move || replies.lines().take_while(Result::is_ok).count());
    let start = Instant::now();
    let mut sent = 0u64;
    let mut line = String::new();
    while start.elapsed() < total && !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * rate) as u64 + 1;
        line.clear();
        while sent < due {
            let t = wall_ns();
            line.push_str(&format!(
                "IAMAT {WATCHED} +34.068930-118.445127 {}.{:09}\n",
                t / 1_000_000_000,
                t % 1_000_000_000
            ));
            sent += 1;
        }
        if !line.is_empty() {
            s.write_all(line.as_bytes())?;
        }
        // Pace in small steps: a burst a tick at high rates.
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(sent)
}

/// TIME of an AT line (its 6th field), in nanoseconds.
fn time_ns(line: &[u8]) -> Option<u128> {
    let text = std::str::from_utf8(line).ok()?.trim_end();
    let time = text.split(' ').nth(5)?;
    let (s, f) = time.split_once('.').unwrap_or((time, "0"));
    let frac: u128 = format!("{f:0<9}")[..9].parse().ok()?;
    Some(s.parse::<u128>().ok()? * 1_000_000_000 + frac)
}

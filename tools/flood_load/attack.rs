//! The attackers of `--mode hostile`, each on plain blocking threads, all
//! stopped together:
//!
//! * **garbage**: two connections writing random bytes (lines of junk,
//!   control bytes, non-UTF-8) as fast as the server takes them, replies
//!   read and thrown away;
//! * **over-long**: two connections writing one endless line (no `\n`), which
//!   the server must answer once and discard without growing;
//! * **slow readers**: four connections pipelining IAMATs and never reading a
//!   reply, which the server must stop reading rather than buffer forever;
//! * **storm**: one thread connecting and closing, every other time after
//!   half a line;
//! * **greedy** (only when asked for): four connections pipelining IAMATs and
//!   reading every reply — not an attack but more valid work than the
//!   server can do, to see how it shares its loop under overload.
//!
//! Each attacker connection is paced at `mbps` megabytes per second and the
//! storm at 100 connections per `mbps` per second (0: flat out), so that on
//! a small machine the test measures how the server shares its loop, not
//! how much CPU the attackers take from it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::load;

#[derive(Default)]
struct Counts {
    connects: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
    errors: AtomicU64,
}

impl Counts {
    /// One attacker write: counts what went out; a timeout means the server
    /// stopped reading us, as it should. False when the connection failed.
    fn write(&self, s: &mut impl Write, buf: &[u8]) -> bool {
        match s.write(buf) {
            Ok(n) => {
                self.sent.fetch_add(n as u64, Ordering::Relaxed);
                true
            }
            Err(e) if is_timeout(&e) => true,
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Which attackers run (`--attackers garbage,long,slow,storm`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kinds {
    pub garbage: bool,
    pub long: bool,
    pub slow: bool,
    pub storm: bool,
    /// Not an attack, and not in `all`: valid clients that want more than
    /// the server has (overload), for measuring fairness.
    pub greedy: bool,
}

impl Kinds {
    pub const ALL: Kinds = Kinds {
        garbage: true,
        long: true,
        slow: true,
        storm: true,
        greedy: false,
    };
}

impl std::str::FromStr for Kinds {
    type Err = String;

    fn from_str(list: &str) -> Result<Kinds, String> {
        let mut k = Kinds::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "garbage" => k.garbage = true,
                "long" => k.long = true,
                "slow" => k.slow = true,
                "storm" => k.storm = true,
                "greedy" => k.greedy = true,
                "all" => k = Kinds::ALL,
                other => {
                    return Err(format!(
                        "unknown attacker {other:?}: garbage, long, slow, storm, greedy or all"
                    ))
                }
            }
        }
        Ok(k)
    }
}

/// Running attackers.
pub struct Attack {
    pace: Pace,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    streams: Vec<TcpStream>,
    counts: Arc<Counts>,
}

impl Attack {
    /// Starts every attacker against `addr`.
    pub fn start(addr: SocketAddr, sources: u32, mbps: f64, kinds: Kinds) -> io::Result<Attack> {
        let mut attack = Attack {
            pace: Pace::new(mbps * 1e6),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            streams: Vec::new(),
            counts: Arc::new(Counts::default()),
        };
        let src = |i: usize| load::source(200 + i, sources);
        for i in (0..2).filter(|_| kinds.garbage) {
            let s = attack.connect(addr, src(i), true)?;
            attack.writer(s, |rng, buf| {
                buf.clear();
                for _ in 0..4096 {
                    let b = rng.u8(..);
                    buf.push(if rng.u8(..40) == 0 { b'\n' } else { b });
                }
            })?;
        }
        for i in (2..4).filter(|_| kinds.long) {
            let s = attack.connect(addr, src(i), true)?;
            attack.writer(s, |_, buf| {
                buf.clear();
                buf.resize(64 * 1024, b'A');
            })?;
        }
        for i in (4..8).filter(|_| kinds.slow) {
            let s = attack.connect(addr, src(i), false)?;
            attack.pipeliner(s, format!("slow-reader-{i}"))?;
        }
        for i in (8..12).filter(|_| kinds.greedy) {
            let s = attack.connect(addr, src(i), true)?;
            attack.pipeliner(s, format!("greedy-{i}"))?;
        }
        if kinds.storm {
            let (stop, counts) = (attack.stop.clone(), attack.counts.clone());
            // One connection "costs" 10 kB of the byte pace: 100 per MB/s.
            let mut pace = attack.pace.clone();
            attack.threads.push(std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    pace.wait(10_000);
                    i += 1;
                    match load::connect_blocking(addr, load::source(16 + i, sources)) {
                        Ok(mut s) => {
                            counts.connects.fetch_add(1, Ordering::Relaxed);
                            if i % 2 == 0 {
                                let _ = s.write(b"IAMAT half-a-li");
                            }
                        }
                        Err(_) => {
                            counts.errors.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                }
            }));
        }
        Ok(attack)
    }

    /// An attacker's connection; unless `drain`, replies are never read.
    fn connect(
        &mut self,
        addr: SocketAddr,
        src: Option<SocketAddr>,
        drain: bool,
    ) -> io::Result<TcpStream> {
        let s = load::connect_blocking(addr, src)?;
        self.counts.connects.fetch_add(1, Ordering::Relaxed);
        self.streams.push(s.try_clone()?);
        if !drain {
            return Ok(s);
        }
        // Replies are read and thrown away.
        let mut r = s.try_clone()?;
        let counts = self.counts.clone();
        self.threads.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                counts.received.fetch_add(n as u64, Ordering::Relaxed);
            }
        }));
        Ok(s)
    }

    /// Pipelines valid IAMATs on `s`, 64 per write, at the pace.
    fn pipeliner(&mut self, s: TcpStream, id: String) -> io::Result<()> {
        s.set_write_timeout(Some(Duration::from_millis(50)))?;
        let (stop, counts) = (self.stop.clone(), self.counts.clone());
        let mut client = load::ClientId::new(id);
        let mut pace = self.pace.clone();
        self.threads.push(std::thread::spawn(move || {
            let mut s = s;
            let mut buf = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                pace.wait(buf.len());
                buf.clear();
                for _ in 0..64 {
                    client.iamat(&mut buf, load::wall_ns());
                }
                if !counts.write(&mut s, &buf) {
                    return;
                }
            }
        }));
        Ok(())
    }

    fn writer(
        &mut self,
        mut s: TcpStream,
        fill: fn(&mut fastrand::Rng, &mut Vec<u8>),
    ) -> io::Result<()> {
        s.set_write_timeout(Some(Duration::from_millis(50)))?;
        let (stop, counts) = (self.stop.clone(), self.counts.clone());
        let mut pace = self.pace.clone();
        self.threads.push(std::thread::spawn(move || {
            let mut rng = fastrand::Rng::new();
            let mut buf = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                pace.wait(buf.len());
                fill(&mut rng, &mut buf);
                if !counts.write(&mut s, &buf) {
                    return;
                }
            }
        }));
        Ok(())
    }

    /// Stops every attacker; says what they did.
    pub fn stop(self) -> String {
        self.stop.store(true, Ordering::Relaxed);
        // Failures before the stop: shutting the streams down fails the rest.
        let errors = self.counts.errors.load(Ordering::Relaxed);
        for s in &self.streams {
            let _ = s.shutdown(Shutdown::Both);
        }
        for t in self.threads {
            let _ = t.join();
        }
        let c = &self.counts;
        format!(
            "{} connections, {} MB sent, {} MB of replies read, {} connections failed or were dropped",
            c.connects.load(Ordering::Relaxed),
            c.sent.load(Ordering::Relaxed) / 1_000_000,
            c.received.load(Ordering::Relaxed) / 1_000_000,
            errors
        )
    }
}

/// Sleeps so that what was sent keeps to a byte rate (0: never sleeps).
#[derive(Clone)]
struct Pace {
    bytes_per_sec: f64,
    start: Option<Instant>,
    sent: f64,
}

impl Pace {
    fn new(bytes_per_sec: f64) -> Pace {
        Pace {
            bytes_per_sec,
            start: None,
            sent: 0.0,
        }
    }

    /// Accounts for `bytes` just sent, sleeping if ahead of the rate.
    fn wait(&mut self, bytes: usize) {
        if self.bytes_per_sec <= 0.0 {
            return;
        }
        let start = *self.start.get_or_insert_with(Instant::now);
        self.sent += bytes as f64;
        let due = start + Duration::from_secs_f64(self.sent / self.bytes_per_sec);
        if let Some(ahead) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(ahead);
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

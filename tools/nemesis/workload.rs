//! The workload: client threads posting IAMATs to random servers and
//! asking WHATSATs, recording every update sent (before it is written) and
//! every acknowledgement (the AT reply). Every IAMAT's time is unique
//! (a shared counter), so an update is named by its client and stamp.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::checker::{client_of, stamp_of, Ack, History, Stamp};

/// The first stamp: 2023-11-14, in nanoseconds; each update adds a microsecond.
const BASE: Stamp = 1_700_000_000 * 1_000_000_000;

/// What one client thread saw.
#[derive(Default)]
pub struct Seen {
    pub history: History,
    pub whatsats: u64,
}

/// The shared state of the workload's threads.
pub struct Workload {
    pub stop: Arc<AtomicBool>,
    /// Where clients connect: the servers in the herd now.
    pub targets: Arc<RwLock<Vec<SocketAddr>>>,
    counter: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Seen>>,
}

impl Workload {
    /// Starts `n` client threads, seeded from `seed`, over `clients` client IDs.
    pub fn start(seed: u64, n: usize, clients: usize, targets: Vec<SocketAddr>) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let targets = Arc::new(RwLock::new(targets));
        let counter = Arc::new(AtomicU64::new(0));
        let threads = (0..n)
            .map(|i| {
                let (stop, targets, counter) = (stop.clone(), targets.clone(), counter.clone());
                let seed = seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
                std::thread::spawn(move || client(seed, clients, &stop, &targets, &counter))
            })
            .collect();
        Workload {
            stop,
            targets,
            counter,
            threads,
        }
    }

    /// Stops the threads and merges what they saw.
    pub fn finish(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Seen::default();
        for t in self.threads {
            let s = t.join().expect("a workload thread panicked");
            for (c, stamps) in s.history.sent {
                all.history.sent.entry(c).or_default().extend(stamps);
            }
            all.history.acked.extend(s.history.acked);
            all.history.incidents.extend(s.history.incidents);
            all.whatsats += s.whatsats;
        }
        let _ = self.counter;
        all
    }
}

fn time_text(stamp: Stamp) -> String {
    format!("{}.{:09}", stamp / 1_000_000_000, stamp % 1_000_000_000)
}

/// One client thread: connect to a random server, post batches of 1–8
/// IAMATs (every 8th exchange a WHATSAT instead) until the connection fails
/// or a reply is late, then pick another server.
fn client(
    seed: u64,
    clients: usize,
    stop: &AtomicBool,
    targets: &RwLock<Vec<SocketAddr>>,
    counter: &AtomicU64,
) -> Seen {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut seen = Seen::default();
    while !stop.load(Ordering::SeqCst) {
        let addr = {
            let t = targets.read().unwrap_or_else(|e| e.into_inner());
            t[rng.usize(..t.len())]
        };
        let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        // A paused server or a full disk holds replies: give up on it after
        // a while (what was sent stays sent, not acknowledged).
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_nodelay(true);
        let mut r = BufReader::new(stream);
        while !stop.load(Ordering::SeqCst) {
            if rng.u8(..8) == 0 {
                let c = format!("n{}", rng.usize(..clients));
                if r.get_mut()
                    .write_all(format!("WHATSAT {c} 10 3\n").as_bytes())
                    .is_err()
                    || !whatsat_reply(&mut r)
                {
                    break;
                }
                seen.whatsats += 1;
                continue;
            }
            let mut batch = String::new();
            let mut expect = Vec::new();
            for _ in 0..rng.usize(1..=8) {
                let c = format!("n{}", rng.usize(..clients));
                let stamp = BASE + u128::from(counter.fetch_add(1, Ordering::SeqCst)) * 1000;
                batch.push_str(&format!(
                    "IAMAT {c} {:+.4}{:+.4} {}\n",
                    rng.f64() * 170.0 - 85.0,
                    rng.f64() * 350.0 - 175.0,
                    time_text(stamp)
                ));
                seen.history.sent(&c, stamp);
                expect.push((c, stamp));
            }
            if r.get_mut().write_all(batch.as_bytes()).is_err() {
                break;
            }
            let mut ok = true;
            for (c, stamp) in expect {
                let mut line = String::new();
                match r.read_line(&mut line) {
                    Ok(n) if n > 0 && line.ends_with('\n') => {}
                    _ => {
                        ok = false;
                        break;
                    }
                }
                let line = line.trim_end().to_string();
                // The reply must be this IAMAT's own AT line.
                if client_of(&line) != Some(&c) || stamp_of(&line) != Some(stamp) {
                    seen.history.incidents.push(format!(
                        "{addr} answered IAMAT {c} {} with {line:?}",
                        time_text(stamp)
                    ));
                    ok = false;
                    break;
                }
                seen.history.acked.push(Ack {
                    client: c,
                    stamp,
                    line,
                });
            }
            if !ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(rng.u64(2..10)));
        }
    }
    seen
}

/// Reads a WHATSAT reply: `? ` + the line, or an AT line, JSON and an empty
/// line. False if the connection failed or the reply was late.
fn whatsat_reply(r: &mut BufReader<TcpStream>) -> bool {
    let mut head = String::new();
    if !matches!(r.read_line(&mut head), Ok(n) if n > 0) {
        return false;
    }
    if head.starts_with("? ") {
        return true;
    }
    loop {
        let mut l = String::new();
        if !matches!(r.read_line(&mut l), Ok(n) if n > 0) {
            return false;
        }
        if l == "\n" {
            return true;
        }
    }
}

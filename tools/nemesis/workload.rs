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
use crate::cluster::Connector;

/// The first stamp: 2023-11-14, in nanoseconds; each update adds a microsecond.
const BASE: Stamp = 1_700_000_000 * 1_000_000_000;

/// What one client thread saw.
#[derive(Default)]
pub struct Seen {
    pub history: History,
    pub whatsats: u64,
    /// OsmAnd reports acknowledged (their AT lines are in `history` too).
    pub reports: u64,
}

/// The shared state of the workload's threads.
pub struct Workload {
    pub stop: Arc<AtomicBool>,
    /// Where clients connect: the servers in the herd now (client port,
    /// http port).
    pub targets: Arc<RwLock<Vec<(SocketAddr, SocketAddr)>>>,
    counter: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<Seen>>,
}

impl Workload {
    /// Starts `n` client threads, seeded from `seed`, over `clients` client IDs.
    pub fn start(
        seed: u64,
        n: usize,
        clients: usize,
        targets: Vec<(SocketAddr, SocketAddr)>,
        connector: Connector,
    ) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let targets = Arc::new(RwLock::new(targets));
        let counter = Arc::new(AtomicU64::new(0));
        let threads = (0..n)
            .map(|i| {
                let (stop, targets, counter) = (stop.clone(), targets.clone(), counter.clone());
                let seed = seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
                let net = connector.clone();
                std::thread::spawn(move || client(seed, clients, &stop, &targets, &counter, &net))
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
            all.reports += s.reports;
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
/// or a reply is late, then pick another server. Every 8th exchange is an
/// OsmAnd report to a random server's http port instead.
fn client(
    seed: u64,
    clients: usize,
    stop: &AtomicBool,
    targets: &RwLock<Vec<(SocketAddr, SocketAddr)>>,
    counter: &AtomicU64,
    net: &Connector,
) -> Seen {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut seen = Seen::default();
    while !stop.load(Ordering::SeqCst) {
        let addr = {
            let t = targets.read().unwrap_or_else(|e| e.into_inner());
            t[rng.usize(..t.len())].0
        };
        let Ok(stream) = net.connect(addr, Duration::from_millis(300)) else {
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
            if rng.u8(..8) == 1 {
                let http = {
                    let t = targets.read().unwrap_or_else(|e| e.into_inner());
                    t[rng.usize(..t.len())].1
                };
                report(&mut rng, net, http, clients, counter, &mut seen);
                continue;
            }
            let mut batch = String::new();
            let mut expect = Vec::new();
            for _ in 0..rng.usize(1..=8) {
                let c = format!("n{}", rng.usize(..clients));
                let stamp = next(counter);
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

/// The next update's stamp.
fn next(counter: &AtomicU64) -> Stamp {
    BASE + u128::from(counter.fetch_add(1, Ordering::SeqCst)) * 1000
}

/// Sends one OsmAnd report for a random client to `http` and records it.
fn report(
    rng: &mut fastrand::Rng,
    net: &Connector,
    http: SocketAddr,
    clients: usize,
    counter: &AtomicU64,
    seen: &mut Seen,
) {
    let c = format!("n{}", rng.usize(..clients));
    let stamp = next(counter);
    seen.history.sent(&c, stamp);
    let (lat, lon) = (rng.f64() * 170.0 - 85.0, rng.f64() * 350.0 - 175.0);
    match osmand(net, http, &c, lat, lon, stamp) {
        Report::Acked(line) => {
            if client_of(&line) == Some(&c) && stamp_of(&line) == Some(stamp) {
                seen.history.acked.push(Ack {
                    client: c,
                    stamp,
                    line,
                });
                seen.reports += 1;
            } else {
                seen.history.incidents.push(format!(
                    "{http} answered the OsmAnd report of {c} at {} with {line:?}",
                    time_text(stamp)
                ));
            }
        }
        Report::Refused(what) => seen.history.incidents.push(format!(
            "{http} refused the OsmAnd report of {c} at {}: {what}",
            time_text(stamp)
        )),
        Report::Failed => {}
    }
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

/// What became of an OsmAnd report.
enum Report {
    /// `200` and the AT line.
    Acked(String),
    /// Another status: the report was refused (a bug: it is valid).
    Refused(String),
    /// No whole answer in time (a paused server, a full disk, a kill).
    Failed,
}

/// Sends one OsmAnd report as the OsmAnd app does (GET, the fields in the
/// query string) on a connection of its own.
fn osmand(
    net: &Connector,
    http: SocketAddr,
    client: &str,
    lat: f64,
    lon: f64,
    stamp: Stamp,
) -> Report {
    let Ok(mut s) = net.connect(http, Duration::from_millis(300)) else {
        return Report::Failed;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!(
        "GET /?id={client}&lat={lat:.5}&lon={lon:.5}&timestamp={}&batt=87 HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n",
        time_text(stamp)
    );
    if s.write_all(request.as_bytes()).is_err() {
        return Report::Failed;
    }
    let mut raw = Vec::new();
    if std::io::Read::read_to_end(&mut s, &mut raw).is_err() {
        return Report::Failed;
    }
    let raw = String::from_utf8_lossy(&raw);
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        return Report::Failed;
    };
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        return Report::Refused(format!("{status}: {}", body.trim_end()));
    }
    match body.strip_suffix('\n') {
        Some(line) if !line.contains('\n') => Report::Acked(line.to_string()),
        _ => Report::Failed,
    }
}

//! The watchers (docs/PROTOCOL.md §15): threads that each hold one
//! watching connection at a time, to the line port or over WebSocket
//! (`GET /v1/ws` on the http port), and record every line received, per
//! connection. Some watch a few named clients of the workload, some
//! `WATCH *`; they start spread over the servers. When a connection fails
//! (its server killed, a reset) the watcher connects again, to a server
//! drawn from its seed, and says its `WATCH` again (a new snapshot). A
//! paused server, or one cut off, keeps its watchers: they wait, as a real
//! watcher would, and get what they missed once it is back. A quiet
//! watcher sends a blank line (over WebSocket a ping) every
//! [`PROBE_EVERY`], which a server ignores (a pong), so that a connection
//! whose server died unheard (killed while cut off: its FIN lost) is
//! found dead (the restarted server's reset) rather than waited on
//! forever. The checker's rule 4 (checker.rs) judges the record.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::checker::WatchLog;
use crate::cluster::Connector;

/// Clients a named watcher follows.
const NAMED: usize = 10;

/// How long a watcher is quiet before it probes its connection.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How a watcher connects, and what it watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kind {
    websocket: bool,
    all: bool,
}

/// Watcher `i`'s kind: 0 `WATCH *` on a line port, 1 named over
/// WebSocket, 4 `WATCH *` over WebSocket, the others named on line ports.
fn kind(i: usize) -> Kind {
    Kind {
        websocket: i % 3 == 1,
        all: i % 4 == 0,
    }
}

/// The running watchers.
pub struct Watchers {
    stop: Arc<AtomicBool>,
    logs: Vec<Arc<Mutex<WatchLog>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Watchers {
    /// Starts `n` watchers seeded from `seed`, of the workload's `clients`
    /// client IDs (`n0`..), on the servers of `targets` (client port, http
    /// port).
    pub fn start(
        seed: u64,
        n: usize,
        clients: usize,
        targets: Arc<RwLock<Vec<(SocketAddr, SocketAddr)>>>,
        net: Connector,
    ) -> Watchers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut logs = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n {
            let mut rng =
                fastrand::Rng::with_seed(seed.wrapping_mul(7_000_003).wrapping_add(i as u64));
            let k = kind(i);
            let watches = (!k.all).then(|| {
                let mut ids: Vec<usize> = (0..clients).collect();
                rng.shuffle(&mut ids);
                ids.truncate(NAMED);
                ids.iter().map(|c| format!("n{c}")).collect::<Vec<_>>()
            });
            let log = Arc::new(Mutex::new(WatchLog {
                name: format!(
                    "watcher {i} ({}{})",
                    if k.websocket { "WebSocket, " } else { "" },
                    if k.all { "WATCH *" } else { "named" }
                ),
                watches,
                conns: Vec::new(),
            }));
            logs.push(log.clone());
            let (stop, targets, net) = (stop.clone(), targets.clone(), net.clone());
            threads.push(std::thread::spawn(move || {
                watcher(i, rng, k, &log, &stop, &targets, &net)
            }));
        }
        Watchers {
            stop,
            logs,
            threads,
        }
    }

    /// What each watcher has received so far.
    pub fn logs(&self) -> Vec<WatchLog> {
        self.logs
            .iter()
            .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// Stops the watchers; what they received.
    pub fn finish(self) -> Vec<WatchLog> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("a watcher thread panicked");
        }
        self.logs
            .iter()
            .map(|l| std::mem::take(&mut *l.lock().unwrap_or_else(|e| e.into_inner())))
            .collect()
    }
}

/// One watcher: connect (first to server `i`, later to one drawn at
/// random), say `WATCH`, record every line until the connection fails;
/// again until told to stop.
fn watcher(
    i: usize,
    mut rng: fastrand::Rng,
    k: Kind,
    log: &Mutex<WatchLog>,
    stop: &AtomicBool,
    targets: &RwLock<Vec<(SocketAddr, SocketAddr)>>,
    net: &Connector,
) {
    let request = {
        let l = log.lock().unwrap_or_else(|e| e.into_inner());
        match &l.watches {
            Some(ids) => format!("WATCH {}", ids.join(" ")),
            None => "WATCH *".to_string(),
        }
    };
    let mut first = true;
    while !stop.load(Ordering::SeqCst) {
        let addr = {
            let t = targets.read().unwrap_or_else(|e| e.into_inner());
            let (line, http) = t[if first { i } else { rng.usize(..) } % t.len()];
            if k.websocket {
                http
            } else {
                line
            }
        };
        first = false;
        let Ok(mut s) = net.connect(addr, Duration::from_millis(300)) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        // Short reads, to notice the stop; a quiet connection is not a
        // failed one.
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let hello = if k.websocket {
            let mut h = format!(
                "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bmVtZXNpcy13YXRjaGVyIQ==\r\n\r\n"
            )
            .into_bytes();
            h.extend(frame(&mut rng, request.as_bytes()));
            h
        } else {
            format!("{request}\n").into_bytes()
        };
        if s.write_all(&hello).is_err() {
            continue;
        }
        log.lock()
            .unwrap_or_else(|e| e.into_inner())
            .conns
            .push(Vec::new());
        read(&mut s, k.websocket, &mut rng, log, stop);
    }
}

/// A masked text frame of `payload` (a client's frames are masked).
fn frame(rng: &mut fastrand::Rng, payload: &[u8]) -> Vec<u8> {
    masked(rng, 0x81, payload)
}

/// A masked frame: `head` (FIN and the opcode), then `payload`.
fn masked(rng: &mut fastrand::Rng, head: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![head];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            f.push(0x80 | 126);
            f.extend((n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend((n as u64).to_be_bytes());
        }
    }
    let mask: [u8; 4] = rng.u32(..).to_be_bytes();
    f.extend(mask);
    f.extend(payload.iter().enumerate().map(|(j, b)| b ^ mask[j % 4]));
    f
}

/// Reads `s` until it fails, ends or the watcher is stopped, recording
/// every line into the log's last connection. Over WebSocket, first the
/// `101` head (anything else is recorded as a line), then frames whose
/// data are lines. Probes a quiet connection every [`PROBE_EVERY`].
fn read(
    s: &mut TcpStream,
    websocket: bool,
    rng: &mut fastrand::Rng,
    log: &Mutex<WatchLog>,
    stop: &AtomicBool,
) {
    let mut raw: Vec<u8> = Vec::new();
    let mut text: Vec<u8> = Vec::new();
    let mut upgraded = !websocket;
    let mut buf = [0u8; 16 * 1024];
    let mut heard = std::time::Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                heard = std::time::Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if upgraded && heard.elapsed() >= PROBE_EVERY {
                    heard = std::time::Instant::now();
                    let probe = if websocket {
                        masked(rng, 0x89, b"")
                    } else {
                        b"\n".to_vec()
                    };
                    if s.write_all(&probe).is_err() {
                        return;
                    }
                }
                continue;
            }
            Err(_) => return,
        }
        if !upgraded {
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&raw[..end]).to_string();
            let status = head.lines().next().unwrap_or("").to_string();
            raw.drain(..end + 4);
            if status.split(' ').nth(1) != Some("101") {
                record(log, status);
                return;
            }
            upgraded = true;
        }
        if websocket {
            // Whole frames' data into `text`.
            loop {
                match unframe(&raw) {
                    Frame::Partial => break,
                    Frame::Data(used, range) => {
                        text.extend_from_slice(&raw[range]);
                        raw.drain(..used);
                    }
                    Frame::Other(used) => {
                        raw.drain(..used);
                    }
                    Frame::Close => return,
                }
            }
        } else {
            text.append(&mut raw);
        }
        while let Some(nl) = text.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&text[..nl]).to_string();
            text.drain(..=nl);
            record(log, line);
        }
    }
}

fn record(log: &Mutex<WatchLog>, line: String) {
    if let Some(c) = log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .conns
        .last_mut()
    {
        c.push(line);
    }
}

/// A server frame at the start of a buffer.
enum Frame {
    /// Not all of it yet.
    Partial,
    /// A data frame (text, binary or continuation) of `.0` bytes, its
    /// payload at `.1`.
    Data(usize, std::ops::Range<usize>),
    /// A control frame other than close (a ping: the server does not send
    /// them), of `.0` bytes.
    Other(usize),
    Close,
}

fn unframe(b: &[u8]) -> Frame {
    if b.len() < 2 {
        return Frame::Partial;
    }
    let opcode = b[0] & 0x0f;
    let (len, at) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(n) as usize, 10)
        }
        126 | 127 => return Frame::Partial,
        n => (n as usize, 2),
    };
    // A server's frames are not masked.
    if b.len() < at + len {
        return Frame::Partial;
    }
    match opcode {
        0..=2 => Frame::Data(at + len, at..at + len),
        8 => Frame::Close,
        _ => Frame::Other(at + len),
    }
}

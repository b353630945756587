//! Handling lines in process, composed from the public pieces the server
//! loop uses, without sockets: parse → clock → `write_at` → reply buffer →
//! `Store::offer` → append to three neighbours' flood buffers (a server of
//! the reference herd has up to three). Each iteration handles a batch of
//! 1,024 lines from 1,024 distinct clients, each with a newer timestamp than
//! the last batch, so every update is stored and flooded as in the server.
//!
//!     cargo bench --bench handle

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herd::logging::escape;
use herd::protocol::{self, Command};
use herd::store::Store;

const CLIENTS: usize = 1024;
/// The TIME field `1700000000.NNNNNNNNN` closes every template line; its
/// nine fraction digits are rewritten for each batch.
const FRACTION: usize = 9;

/// What one server holds while it handles lines.
struct Sim {
    store: Store,
    line: Vec<u8>,
    reply: Vec<u8>,
    floods: [Vec<u8>; 3],
}

impl Sim {
    fn new() -> Sim {
        Sim {
            store: Store::new(),
            line: Vec::with_capacity(256),
            reply: Vec::with_capacity(128 * CLIENTS),
            floods: std::array::from_fn(|_| Vec::with_capacity(128 * CLIENTS)),
        }
    }

    /// An IAMAT from a client: answer, store, flood to every neighbour.
    fn iamat(&mut self, line: &[u8]) -> bool {
        let Command::Iamat(iamat) = protocol::parse(line) else {
            return false;
        };
        let now = protocol::now_nanos();
        self.line.clear();
        protocol::write_at(&mut self.line, "Goloman", now, &iamat);
        self.reply.extend_from_slice(&self.line);
        let at = &self.line[..self.line.len() - 1];
        let stored = self.store.offer(iamat.client, iamat.sent_at, at);
        if stored {
            for f in &mut self.floods {
                f.extend_from_slice(&self.line);
            }
        }
        stored
    }

    /// An AT from neighbour 0: store, flood to the two others.
    fn at(&mut self, line: &[u8]) -> bool {
        let Command::At(at) = protocol::parse(line) else {
            return false;
        };
        self.line.clear();
        protocol::write_at_update(&mut self.line, &at);
        let stored = self
            .store
            .offer(at.client, at.sent_at, &self.line[..self.line.len() - 1]);
        if stored {
            for f in &mut self.floods[1..] {
                f.extend_from_slice(&self.line);
            }
        }
        stored
    }

    /// The loop writes every buffer out once per turn.
    fn turn_end(&mut self) {
        self.reply.clear();
        for f in &mut self.floods {
            f.clear();
        }
    }
}

fn templates(head: impl Fn(usize) -> String) -> Vec<Vec<u8>> {
    (0..CLIENTS)
        .map(|i| format!("{} 1700000000.000000000", head(i)).into_bytes())
        .collect()
}

/// Rewrites the fraction digits of every line's TIME with `pass`.
fn stamp(lines: &mut [Vec<u8>], pass: u64) {
    for line in lines {
        let n = line.len();
        let mut rest = pass;
        for d in line[n - FRACTION..].iter_mut().rev() {
            *d = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
    }
}

fn handle(c: &mut Criterion) {
    let mut group = c.benchmark_group("handle");
    group.throughput(Throughput::Elements(CLIENTS as u64));

    let mut iamats = templates(|i| format!("IAMAT client-{i:05} +34.068930-118.445127"));
    let mut sim = Sim::new();
    let mut pass = 0;
    group.bench_function("iamat_new_position", |b| {
        b.iter(|| {
            pass += 1;
            stamp(&mut iamats, pass);
            let mut stored = 0;
            for line in &iamats {
                stored += usize::from(sim.iamat(black_box(line)));
            }
            sim.turn_end();
            assert_eq!(stored, CLIENTS);
        })
    });

    let mut ats =
        templates(|i| format!("AT Hands +0.000123456 client-{i:05} +34.068930-118.445127"));
    let mut sim = Sim::new();
    let mut pass = 0;
    group.bench_function("at_from_neighbour_newer", |b| {
        b.iter(|| {
            pass += 1;
            stamp(&mut ats, pass);
            let mut stored = 0;
            for line in &ats {
                stored += usize::from(sim.at(black_box(line)));
            }
            sim.turn_end();
            assert_eq!(stored, CLIENTS);
        })
    });

    // The same ATs again: the common case at the end of a flood.
    group.bench_function("at_from_neighbour_known", |b| {
        b.iter(|| {
            let mut stored = 0;
            for line in &ats {
                stored += usize::from(sim.at(black_box(line)));
            }
            sim.turn_end();
            assert_eq!(stored, 0);
        })
    });

    // What `--log-level debug` adds per IAMAT: two traffic lines, formatted
    // as the logger does (RFC 3339 time, server, level, escaped bytes).
    let peer: std::net::SocketAddr = "127.0.0.1:40000".parse().expect("an address");
    let reply = b"AT Goloman +0.000012345 client-00001 +34.068930-118.445127 1700000000.000000001";
    group.bench_function("traffic_log_lines_format", |b| {
        b.iter(|| {
            let mut n = 0;
            for line in &iamats {
                for (dir, bytes) in [("from", &line[..]), ("to", &reply[..])] {
                    let msg = format!("{dir} {peer}: {}", escape(bytes));
                    let mut out = format!(
                        "{} {} {} {}",
                        humantime::format_rfc3339_micros(SystemTime::now()),
                        "Goloman",
                        log::Level::Debug,
                        msg
                    );
                    out.push('\n');
                    n += black_box(out).len();
                }
            }
            n
        })
    });
    group.finish();
}

criterion_group!(benches, handle);
criterion_main!(benches);

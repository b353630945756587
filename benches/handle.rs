//! The command engine in process, exactly as the server loop drives it but
//! without sockets: `Engine::handle` for each line, its effects collected
//! into a reply buffer, a journal buffer and three neighbours' flood
//! buffers (a server of the reference herd has up to three). Each
//! iteration handles a batch of 1,024 lines from 1,024 distinct clients,
//! each with a newer timestamp than the last batch, so every update is
//! stored and flooded as in the server.
//!
//!     cargo bench --bench handle

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herd::conn::Piece;
use herd::engine::{Clock, Effects, Engine, Next, Session};
use herd::logging::escape;
use herd::places::Query;
use herd::store::Store;

const CLIENTS: usize = 1024;
/// The TIME field `1700000000.NNNNNNNNN` closes every template line; its
/// nine fraction digits are rewritten for each batch.
const FRACTION: usize = 9;

/// Where the effects go: what the loop would write to the connection, the
/// journal and three links in one turn.
struct Sink {
    reply: Vec<u8>,
    journal: Vec<u8>,
    floods: [Vec<u8>; 3],
    stored: usize,
}

impl Effects for Sink {
    fn reply(&mut self, bytes: &[u8]) {
        self.reply.extend_from_slice(bytes);
    }
    fn whatsat(&mut self, head: &[u8], _query: Query) {
        self.reply.extend_from_slice(head);
    }
    fn journal(&mut self, line: &[u8]) {
        self.stored += 1;
        self.journal.extend_from_slice(line);
        self.journal.push(b'\n');
    }
    fn flood(&mut self, line: &[u8], except: Option<usize>) {
        for (i, f) in self.floods.iter_mut().enumerate() {
            if Some(i) != except {
                f.extend_from_slice(line);
            }
        }
    }
    fn neighbour_dialled(&mut self, _i: usize) {}
}

/// One server's engine, a client session and a neighbour's session.
struct Sim {
    engine: Engine,
    client: Session,
    link: Session,
    sink: Sink,
}

impl Sim {
    fn new() -> Sim {
        let neighbours = ["Hands", "Holiday", "Wilkes"]
            .map(String::from)
            .into_iter()
            .enumerate()
            .collect();
        let mut engine = Engine::new("Goloman", Store::new(), None, neighbours, 8192);
        let peer = "127.0.0.1:40000".parse().expect("an address");
        let mut link = Session::new(peer);
        let mut sink = Sink {
            reply: Vec::with_capacity(128 * CLIENTS),
            journal: Vec::with_capacity(128 * CLIENTS),
            floods: std::array::from_fn(|_| Vec::with_capacity(128 * CLIENTS)),
            stored: 0,
        };
        let hello = engine.handle(
            &mut link,
            Piece::Line(b"HERD Hands"),
            &mut Clock::wall(),
            &mut sink,
        );
        assert_eq!(hello, Next::Continue);
        Sim {
            engine,
            client: Session::new(peer),
            link,
            sink,
        }
    }

    /// Handles a batch of lines as one read of a client (`from_link`: of
    /// neighbour 0) and returns how many updates were stored.
    fn batch(&mut self, lines: &[Vec<u8>], from_link: bool) -> usize {
        let session = if from_link {
            &mut self.link
        } else {
            &mut self.client
        };
        let mut clock = Clock::wall();
        for line in lines {
            let next = self.engine.handle(
                session,
                Piece::Line(black_box(line)),
                &mut clock,
                &mut self.sink,
            );
            debug_assert_eq!(next, Next::Continue);
        }
        std::mem::take(&mut self.sink.stored)
    }

    /// The loop writes every buffer out once per turn.
    fn turn_end(&mut self) {
        self.sink.reply.clear();
        self.sink.journal.clear();
        for f in &mut self.sink.floods {
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
            let stored = sim.batch(&iamats, false);
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
            let stored = sim.batch(&ats, true);
            sim.turn_end();
            assert_eq!(stored, CLIENTS);
        })
    });

    // The same ATs again: the common case at the end of a flood.
    group.bench_function("at_from_neighbour_known", |b| {
        b.iter(|| {
            let stored = sim.batch(&ats, true);
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

//! The wire protocol without sockets: parsing each command, formatting the
//! replies. Read as messages per second (`Throughput::Elements`).
//!
//!     cargo bench --bench protocol
//!
//! `escape` is the traffic log's escaping of a line; `iamat_line` is what
//! the loop does with a logged IAMAT's bytes, without sockets or the log
//! file: escape the request, parse it, write the AT reply, escape the reply.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herd::logging::write_escaped;
use herd::protocol::{self, Command};

const IAMAT: &[u8] = b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997";
const WHATSAT: &[u8] = b"WHATSAT kiwi.cs.ucla.edu 10 5";
const AT: &[u8] =
    b"AT Goloman +0.263873386 kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.918963997";
const INVALID: &[u8] = b"IAMAT kiwi.cs.ucla.edu +94.068930-118.445127 1520023934.918963997";

/// 1024 different IAMAT lines as the load tool writes them (client IDs
/// and positions of varying lengths), so that no branch predictor learns
/// one line by heart.
fn varied_iamats() -> Vec<Vec<u8>> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..1024)
        .map(|i| {
            let h = next();
            let lat = (h % 180_000_001) as i64 - 90_000_000;
            let lng = ((h >> 32) % 360_000_001) as i64 - 180_000_000;
            let deg = |d: i64| {
                let sign = if d < 0 { '-' } else { '+' };
                format!("{sign}{}.{:06}", d.abs() / 1_000_000, d.abs() % 1_000_000)
            };
            format!(
                "IAMAT client-{} {}{} 1520023934.{:09}",
                next() % 5000,
                deg(lat),
                deg(lng),
                i * 7919
            )
            .into_bytes()
        })
        .collect()
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    for (name, line) in [
        ("iamat", IAMAT),
        ("whatsat", WHATSAT),
        ("at", AT),
        ("invalid", INVALID),
        ("herd", &b"HERD Goloman"[..]),
    ] {
        group.bench_function(name, |b| b.iter(|| protocol::parse(black_box(line))));
    }
    // A read's worth of lines, as the loop sees them: 64 pipelined IAMATs.
    let mut batch = Vec::new();
    for i in 0..64 {
        batch.extend_from_slice(
            format!("IAMAT client-{i} +34.068930-118.445127 1520023934.{i:09}\r\n").as_bytes(),
        );
    }
    let varied = varied_iamats();
    group.throughput(Throughput::Elements(varied.len() as u64));
    group.bench_function("iamat_x1024_varied", |b| {
        b.iter(|| {
            let mut n = 0;
            for line in black_box(&varied) {
                if let Command::Iamat(i) = protocol::parse(line) {
                    n += i.client.len();
                }
            }
            n
        })
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("iamat_x64_split_and_parse", |b| {
        b.iter(|| {
            let mut n = 0;
            for line in black_box(&batch[..]).split(|&b| b == b'\n') {
                if let Command::Iamat(i) = protocol::parse(line) {
                    n += i.client.len();
                }
            }
            n
        })
    });
    group.finish();
}

fn format(c: &mut Criterion) {
    let mut group = c.benchmark_group("format");
    group.throughput(Throughput::Elements(1));
    let Command::Iamat(iamat) = protocol::parse(IAMAT) else {
        panic!("IAMAT does not parse")
    };
    let Command::At(at) = protocol::parse(AT) else {
        panic!("AT does not parse")
    };
    let received = iamat.sent_at + 263_873_386;
    let mut out = Vec::with_capacity(256);
    group.bench_function("write_at", |b| {
        b.iter(|| {
            out.clear();
            protocol::write_at(&mut out, "Goloman", black_box(received), black_box(&iamat));
            out.len()
        })
    });
    group.bench_function("write_at_update", |b| {
        b.iter(|| {
            out.clear();
            protocol::write_at_update(&mut out, black_box(&at));
            out.len()
        })
    });
    group.bench_function("write_invalid", |b| {
        b.iter(|| {
            out.clear();
            protocol::write_invalid(&mut out, black_box(INVALID));
            out.len()
        })
    });
    group.bench_function("now_nanos", |b| b.iter(protocol::now_nanos));
    group.finish();
}

fn escape(c: &mut Criterion) {
    let mut group = c.benchmark_group("escape");
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(256);
    for (name, line) in [
        ("iamat", IAMAT),
        ("at", AT),
        (
            "backslash_at_end",
            &b"IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1520023934.91896399\\"[..],
        ),
        (
            "utf8_client",
            "IAMAT kiwi-ü.cs.ucla.edu +34.068930-118.445127 1520023934.918963997".as_bytes(),
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                write_escaped(&mut out, black_box(line));
                out.len()
            })
        });
    }
    group.finish();
}

/// A logged IAMAT as the loop handles its bytes: the request escaped for
/// the log, parsed, answered, and the reply escaped for the log.
fn iamat_line(c: &mut Criterion) {
    let mut group = c.benchmark_group("iamat_line");
    group.throughput(Throughput::Elements(1));
    let mut log = Vec::with_capacity(1 << 16);
    let mut reply = Vec::with_capacity(256);
    let received = 1_520_023_935_182_837_383;
    group.bench_function("escape_parse_reply_escape", |b| {
        b.iter(|| {
            log.clear();
            reply.clear();
            let line = black_box(IAMAT);
            write_escaped(&mut log, line);
            if let Command::Iamat(iamat) = protocol::parse(line) {
                protocol::write_at(&mut reply, "Goloman", black_box(received), &iamat);
                write_escaped(&mut log, &reply[..reply.len() - 1]);
            }
            log.len()
        })
    });
    let varied = varied_iamats();
    group.throughput(Throughput::Elements(varied.len() as u64));
    group.bench_function("x1024_varied", |b| {
        b.iter(|| {
            log.clear();
            for line in black_box(&varied) {
                reply.clear();
                write_escaped(&mut log, line);
                if let Command::Iamat(iamat) = protocol::parse(line) {
                    protocol::write_at(&mut reply, "Goloman", black_box(received), &iamat);
                    write_escaped(&mut log, &reply[..reply.len() - 1]);
                }
            }
            log.len()
        })
    });
    group.finish();
}

criterion_group!(benches, parse, format, escape, iamat_line);
criterion_main!(benches);

//! End to end over loopback: one client connection to a server running in
//! this process (`server::spawn` on `127.0.0.1:0`, default limits, no
//! traffic logging since no logger is installed). Each iteration writes N
//! pipelined IAMATs in one `write` — each with a fresh timestamp and a new
//! position — and reads the N AT replies. N = 1 is request/reply latency;
//! larger N shows what batching buys.
//!
//!     cargo bench --bench e2e

#[path = "../tools/inproc.rs"]
mod inproc;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use inproc::InProcHerd;

fn e2e(c: &mut Criterion) {
    let herd = InProcHerd::start(&["Bench"], &[], &[]).expect("start a server");
    let stream = TcpStream::connect(herd.addr("Bench")).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut batch = Vec::with_capacity(64 * 80);
    let mut reply = Vec::with_capacity(128);
    let mut seq: u64 = 0;

    let mut group = c.benchmark_group("e2e");
    for n in [1u64, 16, 64] {
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::new("iamat_pipelined", n), &n, |b, &n| {
            b.iter(|| {
                batch.clear();
                for _ in 0..n {
                    seq += 1;
                    let t = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    let lat = seq % 90;
                    let lng = seq % 180;
                    writeln!(
                        batch,
                        "IAMAT e2e-bench +{lat}.{seq:06}-{lng}.{seq:06} {}.{:09}",
                        t.as_secs(),
                        t.subsec_nanos()
                    )
                    .expect("format");
                }
                writer.write_all(&batch).expect("send");
                for _ in 0..n {
                    reply.clear();
                    reader.read_until(b'\n', &mut reply).expect("reply");
                    assert!(
                        reply.starts_with(b"AT Bench "),
                        "{:?}",
                        reply.escape_ascii()
                    );
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, e2e);
criterion_main!(benches);

//! The flood through the five-server reference herd, in process: an IAMAT
//! posted at Hands, timed until its AT line arrives at a Probe linked to
//! Welsh, three hops away (Hands → Goloman or Wilkes → Holiday → Welsh).
//!
//! The bench observes Welsh by joining the herd as a link: the herd's config
//! has an extra member, Probe, whose address is a listener this bench owns,
//! and `link Welsh Probe`. Welsh dials it, says `HERD Welsh`, sends its store
//! (catch-up), then every update it stores, the moment it stores it. So the
//! time measured is post → stored at Welsh → one more loopback hop.
//!
//!     cargo bench --bench flood

#[path = "../tools/inproc.rs"]
mod inproc;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use inproc::{timestamp, InProcHerd, ProbeListener};

fn flood(c: &mut Criterion) {
    let probe = ProbeListener::bind().expect("probe listener");
    let herd = InProcHerd::reference_with_probe(probe.addr().expect("probe address"), &["Welsh"])
        .expect("start the herd");
    let mut link = probe
        .accept_link(Duration::from_secs(20))
        .expect("Welsh dials the probe");
    assert_eq!(link.name, "Welsh");

    let hands = TcpStream::connect(herd.addr("Hands")).expect("connect to Hands");
    hands.set_nodelay(true).expect("nodelay");
    let mut post = hands.try_clone().expect("clone");
    let mut replies = BufReader::new(hands);
    let mut reply = Vec::new();
    let mut batch = Vec::new();
    let mut seq: u64 = 0;

    let mut group = c.benchmark_group("flood");
    for n in [1u64, 64] {
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::new("hands_to_welsh_3_hops", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    batch.clear();
                    let mut last = String::new();
                    for _ in 0..n {
                        seq += 1;
                        last = timestamp();
                        writeln!(
                            batch,
                            "IAMAT flood-bench +{}.5-{}.25 {last}",
                            seq % 90,
                            seq % 180
                        )
                        .expect("format");
                    }
                    let start = Instant::now();
                    post.write_all(&batch).expect("post at Hands");
                    // The newest update always reaches Welsh; older ones
                    // of the batch may be overtaken on the way.
                    link.wait_for_time(last.as_bytes())
                        .expect("the update reaches Welsh");
                    total += start.elapsed();
                    for _ in 0..n {
                        reply.clear();
                        replies
                            .read_until(b'\n', &mut reply)
                            .expect("Hands replies");
                    }
                }
                total
            })
        });
    }
    group.finish();
}

criterion_group!(benches, flood);
criterion_main!(benches);

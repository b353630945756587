//! `sim`: herds of real servers in this process, on rings, binary trees,
//! random meshes of degree 3 and 4 (seeded) and the reference five; a
//! workload posting new clients at random servers; for each herd, the time
//! until every server has an update (by hop count), the link messages and
//! bytes per update against what a tree needs, and each server's CPU per
//! update. See `herd_sim.rs` for how each is measured, and
//! docs/CAPACITY.md for what the figures say.
//!
//! ```text
//! cargo run --release --bin sim -- [--sizes 10,30,100] [--topologies ring,tree,mesh3,mesh4]
//!     [--updates 1000] [--rate 250] [--seed 1] [--no-reference]
//! ```
//!
//! Every herd runs on this machine's cores: 100 servers are 100 loop
//! threads, so on a small machine the latencies are those of a herd that
//! shares a few cores, and the counts (messages, bytes, CPU per update) are
//! the figures that carry over. The last line of each run is
//! `summary sim topology=... key=value ...` for scripts.

#[path = "../cputime.rs"]
mod cputime;
mod herd_sim;
#[path = "../inproc.rs"]
mod inproc;

use std::process::ExitCode;

use herd_sim::{Report, Topology, Workload};

const HELP: &str = "\
sim: herds of real herd servers in one process; what a flood costs

USAGE:
    sim [OPTIONS]

OPTIONS:
    --sizes LIST        servers per herd [default: 10,30,100]
    --topologies LIST   of ring, tree (binary), mesh3, mesh4 (random, every
                        server with 3 or 4 links, from --seed)
                        [default: ring,tree,mesh3,mesh4]
    --no-reference      leave out the reference five (run once otherwise)
    --updates N         updates posted per herd, each a new client at a
                        random server [default: 1000]
    --rate R            updates per second, paced [default: 250]
    --seed S            seeds the meshes and the choice of servers [default: 1]
    -h, --help          this text
";

struct Args {
    sizes: Vec<usize>,
    kinds: Vec<String>,
    reference: bool,
    workload: Workload,
}

fn parse() -> Result<Option<Args>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut a = Args {
        sizes: vec![10, 30, 100],
        kinds: ["ring", "tree", "mesh3", "mesh4"]
            .map(String::from)
            .to_vec(),
        reference: true,
        workload: Workload {
            updates: 1000,
            rate: 250.0,
            seed: 1,
            link_timeout: None,
        },
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("sizes") => {
                a.sizes = p
                    .value()?
                    .string()?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>().map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()?;
            }
            Long("topologies") => {
                a.kinds = p
                    .value()?
                    .string()?
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect();
            }
            Long("no-reference") => a.reference = false,
            Long("updates") => a.workload.updates = p.value()?.parse::<usize>()?.max(1),
            Long("rate") => a.workload.rate = p.value()?.parse()?,
            Long("seed") => a.workload.seed = p.value()?.parse()?,
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Some(a))
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sim: {e} (try --help)");
            return ExitCode::from(2);
        }
    };
    // Every link is four descriptors in this process (two connections, both ends).
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut herds = Vec::new();
    if args.reference {
        herds.push(Topology::reference());
    }
    for &n in &args.sizes {
        for kind in &args.kinds {
            match Topology::by_kind(kind, n, args.workload.seed) {
                Ok(t) => herds.push(t),
                Err(e) => {
                    eprintln!("sim: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    }
    let w = &args.workload;
    println!(
        "sim: {} herd(s); {} updates each, new clients at random servers, {} per second, seed {}",
        herds.len(),
        w.updates,
        w.rate,
        w.seed
    );
    let mut failed = false;
    for topo in &herds {
        match herd_sim::run(topo, w) {
            Ok(r) => print_report(topo, &r),
            Err(e) => {
                eprintln!("sim: {} of {}: {e}", topo.kind, topo.len());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_report(topo: &Topology, r: &Report) {
    println!();
    println!(
        "{} of {}: {} links, diameter {}; {} updates posted at {:.0}/s, {} reached every server ({} arrivals missing)",
        topo.kind, r.servers, r.links, r.diameter, r.posted, r.rate, r.complete, r.missing
    );
    println!(
        "  link messages per update {:.2} (the flood's 2E-(N-1) = {}; a tree's N-1 = {}): {:.2} duplicates per update, {:.2} per server",
        r.messages_per_update,
        r.expected_messages,
        r.servers - 1,
        r.duplicates(),
        r.duplicates() / r.servers as f64
    );
    println!(
        "  bytes per update {:.0} on herd links ({:.1} per message, {:.1} per link)",
        r.bytes_per_update,
        r.bytes_per_message,
        r.bytes_per_update / r.links.max(1) as f64
    );
    println!(
        "  loop CPU per update: {:.1} us per server (mean), {:.1} us at the busiest, {:.1} us for the whole herd",
        r.cpu_us_mean, r.cpu_us_max, r.cpu_us_sum
    );
    println!(
        "  post -> every server: p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        r.all.p50_us, r.all.p99_us, r.all.max_us
    );
    for (h, s) in r.by_hops.iter().enumerate() {
        if s.count > 0 {
            println!(
                "    {h} hop(s): p50 {:.0} us, p99 {:.0} us ({} arrivals)",
                s.p50_us, s.p99_us, s.count
            );
        }
    }
    if r.catchups_during > 0 {
        println!(
            "  {} catch-up(s) during the run: a link dropped and came back; the counts include them",
            r.catchups_during
        );
    }
    let hops: Vec<String> = r
        .by_hops
        .iter()
        .enumerate()
        .filter(|(_, s)| s.count > 0)
        .map(|(h, s)| {
            format!(
                "hop{h}_p50_us={:.0} hop{h}_p99_us={:.0}",
                s.p50_us, s.p99_us
            )
        })
        .collect();
    println!(
        "summary sim topology={} servers={} links={} diameter={} posted={} complete={} missing={} messages_per_update={:.2} expected={} duplicates={:.2} bytes_per_update={:.0} bytes_per_message={:.1} cpu_us_mean={:.1} cpu_us_max={:.1} cpu_us_sum={:.1} all_p50_us={:.0} all_p99_us={:.0} {} catchups={}",
        topo.kind,
        r.servers,
        r.links,
        r.diameter,
        r.posted,
        r.complete,
        r.missing,
        r.messages_per_update,
        r.expected_messages,
        r.duplicates(),
        r.bytes_per_update,
        r.bytes_per_message,
        r.cpu_us_mean,
        r.cpu_us_max,
        r.cpu_us_sum,
        r.all.p50_us,
        r.all.p99_us,
        hops.join(" "),
        r.catchups_during
    );
}

//! `--mode propagation`: posts IAMATs at one server at `--rate` while the
//! Probe plays the herd member that `--observe` dials; reports post →
//! arrival at the Probe per linked server, and the reply latency at the
//! posting server.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::hist::{us, Hist};
use crate::load;
use crate::opts::{spec, Opts};
use crate::probe::{self, start_probe, wait_for_link, ProbeEvent};
use crate::report::{describe_load, print_outcome};

/// Per-server arrival records at the Probe: (client ID hash, client TIME,
/// wall clock at arrival).
type Arrivals = HashMap<String, Vec<(u64, u128, u128)>>;

/// Runs the mode and prints its report.
pub fn run(o: &Opts) -> io::Result<()> {
    let (mut probe, herd) = start_probe(o)?;
    let default_post = match &herd {
        Some(h) => h.addr("Hands"),
        None => SocketAddr::from(([127, 0, 0, 1], 12001)),
    };
    let mut s = spec(o, default_post, 20_000.0);
    if o.inflight == 1 && o.rate.unwrap_or(1.0) > 0.0 {
        // An open-loop rate wants room to keep its pace.
        s.inflight = 8;
    }
    println!(
        "flood_load propagation: posting {}; observing {} as Probe on {}",
        describe_load(&s),
        o.observe,
        probe.addr()
    );
    wait_for_link(&mut probe, &o.observe, Duration::from_secs(15))?;
    let prefix = s.prefix.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let watcher = std::thread::spawn(move || -> io::Result<(Arrivals, u64)> {
        let mut arrivals: Arrivals = HashMap::new();
        let mut last_arrival = Instant::now();
        let mut downs = 0;
        loop {
            let stopping = stop2.load(std::sync::atomic::Ordering::Relaxed);
            // After the load: wait until nothing arrived for 300 ms.
            if stopping && last_arrival.elapsed() > Duration::from_millis(300) {
                return Ok((arrivals, downs));
            }
            probe.poll(Duration::from_millis(20), &mut |ev| match ev {
                ProbeEvent::Line {
                    name,
                    line,
                    wall_ns,
                } => {
                    if let Some((client, time)) = probe::at_fields(line) {
                        if client.starts_with(prefix.as_bytes()) {
                            last_arrival = Instant::now();
                            arrivals.entry(name.to_string()).or_default().push((
                                load::fnv(client),
                                time,
                                wall_ns,
                            ));
                        }
                    }
                }
                ProbeEvent::Down { name } => {
                    eprintln!("the link from {name} to the Probe dropped");
                    downs += 1;
                }
                ProbeEvent::Up { .. } => {}
            })?;
        }
    });
    let out = load::run_rr(&s, !o.quiet);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (arrivals, downs) = watcher
        .join()
        .map_err(|_| io::Error::other("the probe thread panicked"))??;
    let out = out?;
    drop(herd);
    print_outcome("IAMAT replies at the posting server", &out);
    let (from, to) = out.window_wall_ns;
    let mut names: Vec<&String> = arrivals.keys().collect();
    names.sort();
    let mut observed = Hist::new();
    let mut arrived = 0;
    for name in names {
        let mut h = Hist::new();
        let mut seen = std::collections::HashSet::new();
        for &(client, time, wall) in &arrivals[name] {
            // Each update once (a link may bring it again after a reconnect).
            if time >= from && time <= to && seen.insert((client, time)) {
                h.record(wall.saturating_sub(time) as u64);
            }
        }
        println!(
            "at {name:<8}  post -> arrival at the Probe: {}",
            h.describe()
        );
        if *name == o.observe {
            arrived = h.count();
            observed = h;
        }
    }
    let missing = out.sent.saturating_sub(arrived);
    println!(
        "posted      {} updates in the window; {arrived} reached {} ({missing} did not: overtaken on the way by a newer one, or lost)",
        out.sent, o.observe
    );
    let errors = out.errors + downs;
    if downs > 0 {
        println!("links down  {downs} (a link to the Probe dropped during the run)");
    }
    println!(
        "summary mode=propagation target_rate={} rate={:.0} observed={} posted={} arrived={arrived} {} reply_p50_us={} reply_p99_us={} errors={errors}",
        s.rate,
        out.rate(),
        o.observe,
        out.sent,
        observed.summary_fields(""),
        us(out.iamat.quantile(0.5)),
        us(out.iamat.quantile(0.99)),
    );
    Ok(())
}

//! `--mode reconnect`: the Probe "crashes" and comes back, R times, each
//! time dialling `--observe` with `HERD Probe` as a restarted server would;
//! times until that server has dialled the Probe again.

use std::io::{self, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::opts::Opts;
use crate::probe::{start_probe, wait_for_link};

/// Runs the mode and prints its report.
pub fn run(o: &Opts) -> io::Result<()> {
    let (mut probe, herd) = start_probe(o)?;
    let observed = match &herd {
        Some(h) => h.addr(&o.observe),
        None => o.observe_addr,
    };
    println!(
        "flood_load reconnect: Probe on {} goes down for ~{} ms (+-50%) and comes back (dialling {observed} with HERD Probe), {} rounds; timing {}'s redial",
        probe.addr(),
        o.down.as_millis(),
        o.rounds,
        o.observe
    );
    wait_for_link(&mut probe, &o.observe, Duration::from_secs(15))?;
    let mut times = Vec::new();
    let mut errors = 0;
    let mut rng = fastrand::Rng::new();
    let mut hello = None;
    for round in 1..=o.rounds {
        probe.crash();
        drop(hello.take());
        std::thread::sleep(o.down.mul_f64(0.5 + rng.f64()));
        probe.listen()?;
        // Back up, a server dials its neighbours at once and says who it is.
        let mut line = Vec::new();
        herd::protocol::write_herd(&mut line, "Probe", None);
        hello = TcpStream::connect(observed)
            .and_then(|mut s| s.write_all(&line).map(|()| s))
            .map_err(|e| eprintln!("[round {round:>2}] dialling {observed}: {e}"))
            .ok();
        match wait_for_link(&mut probe, &o.observe, Duration::from_secs(10)) {
            Ok(d) => {
                if !o.quiet {
                    eprintln!(
                        "[round {round:>2}] linked again after {:.1} ms",
                        d.as_secs_f64() * 1e3
                    );
                }
                times.push(d);
            }
            Err(e) => {
                errors += 1;
                eprintln!("[round {round:>2}] {e}");
            }
        }
    }
    times.sort();
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    let pick = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "relinked    {} of {} rounds: median {} ms, min {} ms, max {} ms",
        times.len(),
        o.rounds,
        ms(pick(0.5)),
        ms(pick(0.0)),
        ms(pick(1.0))
    );
    println!(
        "summary mode=reconnect rounds={} down_ms={} observed={} p50_ms={} min_ms={} max_ms={} errors={errors}",
        o.rounds,
        o.down.as_millis(),
        o.observe,
        ms(pick(0.5)),
        ms(pick(0.0)),
        ms(pick(1.0))
    );
    Ok(())
}

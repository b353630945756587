//! `--mode catchup` (in process): fills the reference herd with N clients
//! posted at Hands, restarts `--target` empty, and times until the Probe
//! linked to it has seen it learn all N again (the link, the first client,
//! all of them).

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::inproc::InProcHerd;
use crate::load;
use crate::opts::{run_prefix, Opts};
use crate::probe::{self, wait_for_link, Probe, ProbeEvent};

/// Runs the mode and prints its report.
pub fn run(o: &Opts) -> io::Result<()> {
    let n = o.clients;
    let target = o.target.as_str();
    let mut probe = Probe::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let mut herd = InProcHerd::reference_with_probe(probe.addr(), &[target])?;
    println!(
        "flood_load catchup: in-process reference herd; {n} clients posted at Hands; {target} restarted empty; Probe linked to {target}"
    );
    wait_for_link(&mut probe, target, Duration::from_secs(15))?;
    let prefix = format!("{}-", run_prefix());
    let index = |client: &[u8]| -> Option<usize> {
        let rest = client.strip_prefix(prefix.as_bytes())?;
        std::str::from_utf8(rest).ok()?.parse().ok()
    };

    // Fill: four pipelined connections to Hands, each with a reader thread.
    let hands = herd.addr("Hands");
    let started = Instant::now();
    let mut posters = Vec::new();
    for part in 0..4 {
        let prefix = prefix.clone();
        posters.push(std::thread::spawn(move || -> io::Result<()> {
            let stream = load::connect_blocking(hands, None)?;
            let reader_stream = stream.try_clone()?;
            let mine = (part..n).step_by(4).count();
            let reader = std::thread::spawn(move || -> io::Result<()> {
                let mut r = BufReader::with_capacity(1 << 16, reader_stream);
                let mut line = Vec::new();
                for _ in 0..mine {
                    line.clear();
                    if r.read_until(b'\n', &mut line)? == 0 || !line.starts_with(b"AT ") {
                        return Err(io::Error::other("Hands did not answer every IAMAT"));
                    }
                }
                Ok(())
            });
            let mut w = io::BufWriter::with_capacity(1 << 16, &stream);
            let mut buf = Vec::with_capacity(128);
            for i in (part..n).step_by(4) {
                buf.clear();
                load::ClientId::new(format!("{prefix}{i}")).iamat(&mut buf, load::wall_ns());
                w.write_all(&buf)?;
            }
            w.flush()?;
            reader
                .join()
                .map_err(|_| io::Error::other("reader panicked"))?
        }));
    }
    let mut seen = vec![false; n];
    let mut count = 0;
    let patience = Duration::from_secs(120);
    while count < n {
        if started.elapsed() > patience {
            return Err(io::Error::other(format!(
                "filling: {target} knows only {count} of {n} clients after {patience:?}"
            )));
        }
        probe.poll(Duration::from_millis(20), &mut |ev| {
            if let ProbeEvent::Line { line, .. } = ev {
                if let Some(i) = probe::at_fields(line).and_then(|(c, _)| index(c)) {
                    if i < n && !seen[i] {
                        seen[i] = true;
                        count += 1;
                    }
                }
            }
        })?;
    }
    for p in posters {
        p.join()
            .map_err(|_| io::Error::other("poster panicked"))??;
    }
    println!(
        "filled      {n} clients known at {target} after {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );

    herd.stop(target)?;
    // Let the Probe see the old link go before the new one comes.
    probe.poll(Duration::from_millis(50), &mut |_| {})?;
    seen.iter_mut().for_each(|s| *s = false);
    count = 0;
    let t0 = Instant::now();
    herd.restart(target)?;
    let (mut link, mut first) = (None, None);
    let patience = Duration::from_secs(30);
    while count < n {
        if t0.elapsed() > patience {
            break;
        }
        probe.poll(Duration::from_millis(5), &mut |ev| match ev {
            ProbeEvent::Up { name } if name == target => {
                link.get_or_insert(t0.elapsed());
            }
            ProbeEvent::Line { line, .. } => {
                if let Some(i) = probe::at_fields(line).and_then(|(c, _)| index(c)) {
                    if i < n && !seen[i] {
                        first.get_or_insert(t0.elapsed());
                        seen[i] = true;
                        count += 1;
                    }
                }
            }
            _ => {}
        })?;
    }
    let all = t0.elapsed();
    let ms = |d: Option<Duration>| {
        d.map_or("-".to_string(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
    };
    let errors = usize::from(count < n);
    println!(
        "restart     {target} linked to the Probe after {} ms, first client learnt after {} ms",
        ms(link),
        ms(first)
    );
    if count == n {
        println!(
            "caught up   all {n} clients learnt {:.1} ms after the restart",
            all.as_secs_f64() * 1e3
        );
    } else {
        println!("caught up   only {count} of {n} clients after {patience:?}");
    }
    println!(
        "summary mode=catchup clients={n} target={target} learnt={count} link_ms={} first_ms={} all_ms={} errors={errors}",
        ms(link),
        ms(first),
        if count == n { ms(Some(all)) } else { "-".into() }
    );
    Ok(())
}

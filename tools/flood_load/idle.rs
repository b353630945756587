//! `--mode idle`: opens N idle connections in two halves and reads the
//! server's VmRSS and RssAnon (`--server-pid`) before, between and after:
//! bytes per connection, twice, to show it is linear; then checks that a
//! sample of the idle connections is still served.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::load;
use crate::opts::{run_prefix, Opts, DEFAULT_ADDR};

/// VmRSS and RssAnon of a process, in kB.
fn rss_kb(pid: u32) -> io::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("RssAnon:")))
}

/// Runs the mode and prints its report.
pub fn run(o: &Opts) -> io::Result<()> {
    let pid = o
        .server_pid
        .ok_or_else(|| io::Error::other("idle needs --server-pid PID"))?;
    let addr = o.addr.unwrap_or(DEFAULT_ADDR);
    let hard = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024);
    let n = o
        .conns
        .unwrap_or_else(|| hard.saturating_sub(100).min(1_000_000) as usize)
        .max(2);
    println!(
        "flood_load idle: {n} idle connections to {addr} over {} source addresses; server pid {pid}",
        o.sources
    );
    let settle = || std::thread::sleep(Duration::from_millis(700));
    let mut conns: Vec<TcpStream> = Vec::with_capacity(n);
    let mut errors = 0u64;
    let mut samples = Vec::new();
    settle();
    let rss0 = rss_kb(pid)?;
    let started = Instant::now();
    let half = n / 2;
    let mut open_to = |target: usize, conns: &mut Vec<TcpStream>| -> io::Result<()> {
        while conns.len() < target {
            let batch_end = (conns.len() + 500).min(target);
            while conns.len() < batch_end {
                match load::connect_blocking(addr, load::source(conns.len(), o.sources)) {
                    Ok(s) => conns.push(s),
                    Err(e) => {
                        errors += 1;
                        if samples.len() < 5 {
                            samples.push(format!("connect #{}: {e}", conns.len()));
                        }
                        if errors > 100 {
                            return Err(io::Error::other(format!(
                                "too many failed connects; last: {e}"
                            )));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            // A round trip on the newest connection: the server has accepted
            // every connection before it (it accepts in order).
            if let Some(last) = conns.last() {
                ping(last)?;
            }
            if !o.quiet && conns.len() % 5000 < 500 {
                eprintln!(
                    "[{:>5.1}s] {} connections open",
                    started.elapsed().as_secs_f64(),
                    conns.len()
                );
            }
        }
        Ok(())
    };
    open_to(half, &mut conns)?;
    settle();
    let rss1 = rss_kb(pid)?;
    open_to(n, &mut conns)?;
    settle();
    let rss2 = rss_kb(pid)?;

    // Idle is not dead: a sample of the connections must still be served.
    let mut served = 0;
    let step = (conns.len() / 100).max(1);
    for (i, c) in conns.iter().enumerate().step_by(step) {
        let mut client = load::ClientId::new(format!("{}-idle-{i}", run_prefix()));
        let mut line = Vec::new();
        client.iamat(&mut line, load::wall_ns());
        match ask(c, &line) {
            Ok(reply) if reply.starts_with(b"AT ") => served += 1,
            Ok(reply) => {
                errors += 1;
                samples.push(format!("reply {:?}", reply.escape_ascii().to_string()));
            }
            Err(e) => {
                errors += 1;
                samples.push(format!("IAMAT on an idle connection: {e}"));
            }
        }
    }
    let per = |a: u64, b: u64, count: usize| (b as f64 - a as f64) * 1024.0 / count.max(1) as f64;
    let first = per(rss0.0, rss1.0, half);
    let second = per(rss1.0, rss2.0, n - half);
    let all = per(rss0.0, rss2.0, n);
    println!(
        "VmRSS       {} kB before, {} kB at {half}, {} kB at {n}",
        rss0.0, rss1.0, rss2.0
    );
    println!(
        "RssAnon     {} kB before, {} kB at {half}, {} kB at {n}",
        rss0.1, rss1.1, rss2.1
    );
    println!(
        "per conn    {first:.0} B (first {half}), {second:.0} B (next {}), {all:.0} B overall",
        n - half
    );
    println!(
        "served      {served} of {} sampled idle connections answered an IAMAT",
        conns.len().div_ceil(step)
    );
    println!("errors      {errors}");
    for s in samples.iter().take(5) {
        println!("  e.g.      {s}");
    }
    println!(
        "summary mode=idle conns={n} rss_before_kb={} rss_half_kb={} rss_full_kb={} bytes_per_conn_first={first:.0} bytes_per_conn_second={second:.0} bytes_per_conn={all:.0} errors={errors}",
        rss0.0, rss1.0, rss2.0
    );
    Ok(())
}

/// Sends `PING` (an invalid command: no state on the server) and waits for
/// the one-line answer.
fn ping(stream: &TcpStream) -> io::Result<()> {
    ask(stream, b"PING\n").map(|_| ())
}

fn ask(mut stream: &TcpStream, line: &[u8]) -> io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(line)?;
    let mut reader = BufReader::new(stream);
    let mut reply = Vec::new();
    reader.read_until(b'\n', &mut reply)?;
    if reply.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    Ok(reply)
}

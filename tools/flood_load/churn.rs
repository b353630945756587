//! `--mode churn`: C concurrent connection cycles (connect, one IAMAT, shut
//! down writing, read to EOF, close), each a new client; the rate is in
//! connections per second. With `--server-pid`, also the CPU time each
//! cycle cost the tool (`getrusage`) and the server (its threads'
//! `schedstat`), read around the whole run, warm-up included: on a shared
//! machine the rate counts other work's turns too, CPU per connection only
//! each side's own.

use std::io;
use std::time::Duration;

use crate::load;
use crate::opts::{spec, Opts, DEFAULT_ADDR};
use crate::report::print_outcome;

/// Runs the mode and prints its report.
pub fn run(o: &Opts) -> io::Result<()> {
    let s = spec(o, DEFAULT_ADDR, 0.0);
    println!(
        "flood_load churn: {} concurrent connect/IAMAT/shutdown/read-to-EOF/close cycles on {} thread(s) -> {}, {:.1} s (+{:.1} s warm-up)",
        s.conns,
        s.threads,
        s.addr,
        s.duration.as_secs_f64(),
        s.warmup.as_secs_f64()
    );
    let pid = o.server_pid;
    let before = (own_cpu(), pid.and_then(process_cpu));
    let out = load::run_churn(&s, !o.quiet)?;
    let after = (own_cpu(), pid.and_then(process_cpu));
    print_outcome("connections", &out);
    // Microseconds per cycle of the whole run; 0 without --server-pid.
    let per = |a: Option<Duration>, b: Option<Duration>| match (a, b, pid) {
        (Some(a), Some(b), Some(_)) if out.all > 0 => {
            b.saturating_sub(a).as_secs_f64() * 1e6 / out.all as f64
        }
        _ => 0.0,
    };
    let (tool_cpu, server_cpu) = (per(before.0, after.0), per(before.1, after.1));
    if pid.is_some() {
        println!(
            "CPU         {tool_cpu:.1} us per connection in this tool, {server_cpu:.1} us in the server ({} cycles)",
            out.all
        );
    }
    println!(
        "summary mode=churn conns={} threads={} rate={:.0} {} tls_full={} tls_resumed={} tool_cpu_us={tool_cpu:.1} server_cpu_us={server_cpu:.1} errors={}",
        s.conns,
        s.threads,
        out.rate(),
        out.iamat.summary_fields(""),
        out.tls_full,
        out.tls_resumed,
        out.errors
    );
    Ok(())
}

/// CPU time so far of this process, its finished threads included.
fn own_cpu() -> Option<Duration> {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Some(Duration::from_micros(
        us(usage.ru_utime) + us(usage.ru_stime),
    ))
}

/// CPU time so far of every thread of process `pid`, from
/// `/proc/PID/task/*/schedstat` (nanoseconds on the CPU).
fn process_cpu(pid: u32) -> Option<Duration> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| {
            let stat = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    Some(Duration::from_nanos(ns))
}

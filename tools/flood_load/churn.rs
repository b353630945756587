//! `--mode churn`: C concurrent connection cycles (connect, one IAMAT, shut
//! down writing, read to EOF, close), each a new client; the rate is in
//! connections per second.

use std::io;

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
    let out = load::run_churn(&s, !o.quiet)?;
    print_outcome("connections", &out);
    println!(
        "summary mode=churn conns={} threads={} rate={:.0} {} tls_full={} tls_resumed={} errors={}",
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

//! `--mode rr` (the default): request/reply load on one server, C
//! connections over T threads with W requests in flight each, flat out or at
//! `--rate`, with a share of WHATSATs.

use std::io;

use crate::hist::us;
use crate::load;
use crate::opts::{spec, Opts, DEFAULT_ADDR};
use crate::report::{describe_load, print_outcome};
use crate::server_figures;

/// Runs the mode and prints its report.
pub fn run(o: &Opts) -> io::Result<()> {
    let s = spec(o, DEFAULT_ADDR, 0.0);
    println!("flood_load rr: {}", describe_load(&s));
    let before = server_figures::scrape(o.metrics);
    let out = load::run_rr(&s, !o.quiet)?;
    print_outcome("replies", &out);
    server_figures::report(o.metrics, before.as_ref(), out.done, out.sent);
    println!(
        "summary mode=rr conns={} inflight={} threads={} target_rate={} rate={:.0} {} whatsat_p99_us={} tls_full={} tls_resumed={} errors={}",
        s.conns,
        s.inflight,
        s.threads,
        s.rate,
        out.rate(),
        out.iamat.summary_fields(""),
        us(out.whatsat.quantile(0.99)),
        out.tls_full,
        out.tls_resumed,
        out.errors
    );
    Ok(())
}

//! `--mode rr` (the default): request/reply load on one server, C
//! connections over T threads with W requests in flight each, flat out or at
//! `--rate`, with a share of WHATSATs. `--mode http` and `--mode ws` are
//! the same load over a server's HTTP front (OsmAnd reports, WebSocket).

use std::io;

use crate::hist::us;
use crate::load::{self, Wire};
use crate::opts::{spec, Opts, DEFAULT_ADDR};
use crate::report::{describe_load, print_outcome};
use crate::server_figures;

/// Runs the mode and prints its report.
pub fn run(o: &Opts) -> io::Result<()> {
    let s = spec(o, DEFAULT_ADDR, 0.0);
    let mode = match s.wire {
        Wire::Line => "rr",
        wire => wire.name(),
    };
    println!("flood_load {mode}: {}", describe_load(&s));
    let before = server_figures::scrape(o.metrics);
    let out = load::run_rr(&s, !o.quiet)?;
    print_outcome("replies", &out);
    server_figures::report(o.metrics, before.as_ref(), out.done, out.sent);
    println!(
        "summary mode={mode} conns={} inflight={} threads={} target_rate={} rate={:.0} {} whatsat_p99_us={} tls_full={} tls_resumed={} errors={}",
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

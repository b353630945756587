//! What the load modes print about a load run: the line describing the load,
//! and its outcome (rate, latency percentiles, lateness, errors).

use crate::load::{Outcome, Spec, Wire};

/// The load in one line: connections, pace, threads, target, duration, mix.
pub fn describe_load(s: &Spec) -> String {
    let pace = if s.rate > 0.0 {
        format!(
            "at {} req/s (at most {} in flight each)",
            s.rate, s.inflight
        )
    } else {
        format!("x {} in flight, flat out", s.inflight)
    };
    format!(
        "{} {}{}connections {pace} on {} thread(s) -> {}, {:.1} s (+{:.1} s warm-up), {}% WHATSAT",
        s.conns,
        if s.tls.is_some() { "TLS " } else { "" },
        match s.wire {
            Wire::Line => "",
            Wire::Http => "HTTP (OsmAnd GET) ",
            Wire::Ws => "WebSocket ",
        },
        s.threads,
        s.addr,
        s.duration.as_secs_f64(),
        s.warmup.as_secs_f64(),
        s.whatsat_pct
    )
}

/// The outcome's lines: throughput, latency per request kind, late, errors.
pub fn print_outcome(what: &str, out: &Outcome) {
    println!(
        "throughput  {:.0} {what}/s ({} in {:.1} s; {} requests sent in the window)",
        out.rate(),
        out.done,
        out.window.as_secs_f64(),
        out.sent
    );
    println!("IAMAT       {}", out.iamat.describe());
    if out.whatsat.count() > 0 {
        println!("WHATSAT     {}", out.whatsat.describe());
    }
    if out.late > 0 {
        println!(
            "late        {} requests could not go out on time: every connection had its W in flight",
            out.late
        );
    }
    if out.tls_full + out.tls_resumed > 0 {
        println!(
            "TLS         {} full handshakes, {} resumed",
            out.tls_full, out.tls_resumed
        );
    }
    println!("errors      {}", out.errors);
    for e in &out.error_samples {
        println!("  e.g.      {e}");
    }
}

//! `flood_load`: plays many mobile clients (and, when asked, a herd member)
//! against a herd, and says what it saw.
//!
//! Modes (`--mode`):
//!
//! * `rr` (default): C connections over T threads, W requests in flight per
//!   connection, flat out or at `--rate`; IAMAT/WHATSAT mix.
//! * `http`, `ws`: rr over a server's `http` port: each IAMAT an OsmAnd
//!   report over keep-alive HTTP/1.1 (pipelined), or a line in a WebSocket
//!   message (`load::front`).
//! * `churn`: C concurrent cycles of connect, one IAMAT, shut down writing,
//!   read to EOF, close.
//! * `idle`: opens N idle connections in two halves and reads the server's
//!   VmRSS (`--server-pid`) before, between and after: bytes per connection,
//!   twice, to show it is linear; `--idle-kind http|ws`: kept-alive HTTP
//!   connections (one report answered each) or WebSockets.
//! * `propagation`: posts IAMATs at one server at `--rate` while playing the
//!   herd member `Probe` that a server dials (`tools/probe-herd.conf` has
//!   `link Welsh Probe`); reports post → arrival at the Probe.
//! * `catchup` (in process): fills the reference herd with N clients,
//!   restarts one server empty, times until it has learnt all N again.
//! * `reconnect`: the Probe "crashes" and comes back, R times; times until
//!   the herd server linked to it has dialled it again.
//! * `hostile`: a normal open-loop load, first alone, then while attackers
//!   send garbage, over-long lines, never read their replies, and storm the
//!   listener with connections; the normal clients' p99 in both phases.
//! * `fill` (in process): a store of a million clients: bytes per stored
//!   client, journal replay rate, catch-up time of a restarted server.
//! * `ingest`: AT lines fed over herd links flat out, no clients: the
//!   updates a server (or a chain of them) stores per second, and its CPU
//!   per update, by links fed and journal policy (docs/CAPACITY.md).
//! * `watch`: `--conns` watchers of one client at the server it is posted
//!   at, `--far` three hops away, posting at `--rate`; IAMAT-sent to
//!   push-received at both, to the last watcher of each update, and
//!   pushes a second; in process, or against a herd at `--addr`.
//!
//! Human-readable results go to stdout, progress to stderr each second, and
//! the last stdout line is `summary mode=... key=value ...` for scripts.
//!
//! Each mode is a module of its own, named for it. Beside them: [`opts`]
//! (the command line), [`load`] (the client connections the load modes
//! drive), [`report`] (what they print), [`probe`] (the herd member the
//! tool plays), [`attack`] (the hostile clients), [`hist`] (latency
//! histograms), and the in-process herd harness shared with the tests and
//! benches, `tools/inproc.rs`.

mod attack;
mod catchup;
mod churn;
#[path = "../cputime.rs"]
mod cputime;
mod fill;
mod hist;
mod hostile;
mod idle;
mod ingest;
#[path = "../inproc.rs"]
mod inproc;
mod load;
mod opts;
mod probe;
mod propagation;
mod reconnect;
mod report;
mod rr;
mod server_figures;
mod watch;

use std::process::ExitCode;

use opts::{parse_args, Mode, HELP};

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("flood_load: {e} (try --help)");
            return ExitCode::from(2);
        }
    };
    // Every connection is a descriptor.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let result = match opts.mode {
        Mode::Rr | Mode::Http | Mode::Ws => rr::run(&opts),
        Mode::Churn => churn::run(&opts),
        Mode::Idle => idle::run(&opts),
        Mode::Propagation => propagation::run(&opts),
        Mode::Catchup => catchup::run(&opts),
        Mode::Reconnect => reconnect::run(&opts),
        Mode::Hostile => hostile::run(&opts),
        Mode::Fill => fill::run(&opts),
        Mode::Ingest => ingest::run(&opts),
        Mode::Watch => watch::run(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flood_load: {e}");
            ExitCode::from(1)
        }
    }
}

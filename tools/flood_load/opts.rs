//! flood_load's command line: the help text, the options with their
//! defaults, and the load [`Spec`] they make for the modes that run one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::attack;
use crate::load::{self, Spec, TlsClient, Wire};

/// `--help`.
pub const HELP: &str = "\
flood_load: a load generator for herd

USAGE:
    flood_load [--mode MODE] [OPTIONS]

MODES:
    rr           request/reply: C connections x W in flight, or --rate (default)
    http         rr over a server's http port (--addr; https with --tls): each IAMAT
                 an OsmAnd report, GET /?id=..&lat=..&lon=..&timestamp=.. on
                 keep-alive HTTP/1.1, W pipelined; WHATSATs GET /v1/clients/ID/places
    ws           rr over a server's http port (--addr; wss with --tls): a WebSocket
                 (GET /v1/ws, upgraded before the warm-up), one line per message
    churn        connect, one IAMAT, shut down writing, read to EOF, close; C at once
    idle         open N idle connections; server RSS per connection (needs --server-pid);
                 --idle-kind says what they are
    propagation  post at --addr at --rate; time until the AT reaches the Probe
                 (a herd member this tool plays, dialled by the server linked to it)
    catchup      in process: fill the reference herd with --clients clients,
                 restart --target empty, time until it knows them all again
    reconnect    the Probe goes down and comes back --rounds times; time until
                 the server linked to it has dialled it again
    hostile      normal clients at --rate alone, then under attack; p99 of both
    fill         in process: a store of --clients clients [default here: 1000000]:
                 bytes per stored client, journal replay rate, catch-up time
    ingest       feed AT lines over herd links, flat out, no clients: updates
                 stored per second (the herd's update ceiling) and the servers'
                 CPU per update; with --in-process, a lone server and a chain,
                 per journal policy (--links, --chain, --journal), and with
                 every line sent twice (the cost of a duplicate); else the
                 server at --addr as its neighbour Probe, read via --metrics
    watch        --conns watchers [default: 100] of one client where it is
                 posted at --rate [default: 100], --far watchers three hops
                 away; time from IAMAT sent to push received at both, to the
                 last watcher of each update, pushes per second. In process
                 (the reference herd, Hands and Welsh) unless --addr (posting
                 and watchers there, far ones at --far-addr); --rate 0: idle
                 watchers at --addr, each of a client that never moves, held
                 for --duration

OPTIONS:
    --addr ADDR          server to load / post at [default: 127.0.0.1:12000;
                         propagation: 127.0.0.1:12001, Hands in probe-herd.conf]
    --conns C            connections [default: 50; idle: the fd hard limit - 100]
    --threads T          load threads [default: 1]
    --inflight W         requests in flight per connection [default: 1]
    --rate R             requests per second in all; 0 = flat out
                         [default: 0; propagation: 20000; hostile: 5000]
    --duration SECS      measured time [default: 3]
    --warmup SECS        unmeasured time before it [default: 0.5]
    --whatsat PCT        percentage of WHATSATs among requests [default: 0]
    --sources N          spread connections over 127.0.0.1..127.0.0.N [default: 64]
    --server-pid PID     idle: the server process whose VmRSS is read; watch:
                         whose CPU time is reported
    --idle-kind KIND     idle: line (a client port; a PING on the newest of each
                         500), http (an http port; each connection has had one
                         OsmAnd report answered, kept alive) or ws (an http port;
                         each connection upgraded to a WebSocket) [default: line]
    --probe ADDR         where the Probe listens [default: 127.0.0.1:12010]
    --observe NAME       propagation/reconnect: the server linked to the Probe
                         whose numbers make the summary [default: Welsh]
    --observe-addr ADDR  reconnect: where --observe listens; the Probe dials it
                         and says HERD Probe when it comes back, as a restarted
                         server would [default: 127.0.0.1:12003, Welsh]
    --in-process         propagation/reconnect: run the reference herd (plus the
                         Probe linked to --observe) inside this process
    --clients N          catchup: clients to learn [default: 100000]
    --target NAME        catchup: the server restarted empty [default: Holiday]
    --rounds N           reconnect rounds [default: 10]; ingest: rounds of its
                         cases, alternating [default: 3]
    --down-ms MS         reconnect: how long the Probe stays down, +-50% [default: 500]
    --attack-mbps M      hostile: MB/s per attacker connection (storm: 100*M
                         connections/s); 0 = flat out [default: 5]
    --attackers LIST     hostile: which attackers, comma-separated, of garbage,
                         long, slow, storm, and greedy (valid pipelining clients
                         that read: overload, not an attack) [default: all, the
                         first four]
    --metrics ADDR       rr: the herd's --metrics endpoint; prints the server's own
                         counts (requests, stored clients, link bytes) beside this tool's
    --tls CA_PEM         rr, http, ws, churn, idle, propagation (its posting clients): connect
                         over TLS (to a server's tls port), trusting only the
                         certificates in CA_PEM (the herd's tls_ca); rr finishes
                         every handshake before the warm-up, churn's cycles each
                         make one
    --tls-resume         with --tls: connections resume TLS sessions, as phones
                         reconnecting do: churn's cycles from the ticket their
                         slot's last cycle got; rr, http and ws connections each
                         from the ticket of an earlier visit of their own (a
                         connection made, fully handshaken and closed before
                         the warm-up); without it every handshake is a full one
                         (churn, rr, http and ws print how many of each)
    --tls-name NAME      the name the server's certificate must carry: its herd
                         NAME [default: Goloman, the server at the default --addr]
    --links LIST         ingest: herd links fed at once, one case each [default: 1,4]
    --chain LIST         ingest --in-process: servers in a chain, the feed entering
                         at the first; the far end's rate is reported [default: 1,3]
    --journal LIST       ingest --in-process: off (no journal), cache (journal,
                         written to the page cache) and/or fsync (also fdatasync
                         every --fsync-ms) [default: off,cache,fsync]
    --fsync-ms N         ingest: the fsync case's interval [default: 100]
    --state-dir DIR      ingest: where the journals of its cases go [default: a
                         temporary directory under $TMPDIR]
    --far N              watch: watchers three hops away [default: 1]
    --far-addr ADDR      watch with --addr: where the far watchers connect
                         [default: none, no far watchers]
    --quiet              no progress lines
    -h, --help           this text

The last line of stdout is `summary mode=MODE key=value ...`.
";

/// `--mode`: each has a module of its own.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Rr,
    Http,
    Ws,
    Churn,
    Idle,
    Propagation,
    Catchup,
    Reconnect,
    Hostile,
    Fill,
    Ingest,
    Watch,
}

/// The options, as given or defaulted; `None`: the mode's own default.
pub struct Opts {
    pub mode: Mode,
    pub addr: Option<SocketAddr>,
    pub conns: Option<usize>,
    pub threads: usize,
    pub inflight: usize,
    pub rate: Option<f64>,
    pub duration: Duration,
    pub warmup: Duration,
    pub whatsat: u32,
    pub sources: u32,
    pub server_pid: Option<u32>,
    /// `--idle-kind`: what idle connections speak.
    pub idle_kind: Wire,
    pub probe: SocketAddr,
    pub observe: String,
    pub observe_addr: SocketAddr,
    pub in_process: bool,
    pub clients: usize,
    pub target: String,
    pub rounds: usize,
    pub down: Duration,
    pub attack_mbps: f64,
    pub attackers: attack::Kinds,
    pub quiet: bool,
    /// The herd's `--metrics` endpoint, for the server's own figures.
    pub metrics: Option<SocketAddr>,
    /// `--tls CA_PEM` and `--tls-name NAME`, made into a client configuration.
    pub tls: Option<TlsClient>,
    /// `--rounds` was given (ingest has a default of its own).
    pub rounds_set: bool,
    /// ingest: `--links`, `--chain`, `--journal`, `--fsync-ms`, `--state-dir`.
    pub ingest: crate::ingest::Cases,
    /// watch: watchers three hops away.
    pub far: usize,
    /// watch with `--addr`: where they connect.
    pub far_addr: Option<SocketAddr>,
}

/// The options from the command line; `None` for `--help`.
pub fn parse_args() -> Result<Option<Opts>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut o = Opts {
        mode: Mode::Rr,
        addr: None,
        conns: None,
        threads: 1,
        inflight: 1,
        rate: None,
        duration: Duration::from_secs(3),
        warmup: Duration::from_millis(500),
        whatsat: 0,
        sources: 64,
        server_pid: None,
        idle_kind: Wire::Line,
        probe: SocketAddr::from(([127, 0, 0, 1], 12010)),
        observe: "Welsh".into(),
        observe_addr: SocketAddr::from(([127, 0, 0, 1], 12003)),
        in_process: false,
        clients: 100_000,
        target: "Holiday".into(),
        rounds: 10,
        down: Duration::from_millis(500),
        attack_mbps: 5.0,
        attackers: attack::Kinds::ALL,
        quiet: false,
        metrics: None,
        tls: None,
        rounds_set: false,
        ingest: crate::ingest::Cases::default(),
        far: 1,
        far_addr: None,
    };
    let mut tls_ca: Option<PathBuf> = None;
    let mut tls_name = String::from("Goloman");
    let mut tls_resume = false;
    let secs = |v: f64| -> Result<Duration, lexopt::Error> {
        Duration::try_from_secs_f64(v).map_err(|e| e.to_string().into())
    };
    let mut p = lexopt::Parser::from_env();
    while let Some(arg) = p.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("mode") => {
                let v: String = p.value()?.parse()?;
                o.mode = match v.as_str() {
                    "rr" => Mode::Rr,
                    "http" => Mode::Http,
                    "ws" => Mode::Ws,
                    "churn" => Mode::Churn,
                    "idle" => Mode::Idle,
                    "propagation" => Mode::Propagation,
                    "catchup" => Mode::Catchup,
                    "reconnect" => Mode::Reconnect,
                    "hostile" => Mode::Hostile,
                    "fill" => Mode::Fill,
                    "ingest" => Mode::Ingest,
                    "watch" => Mode::Watch,
                    _ => return Err(format!("--mode: unknown mode {v:?}").into()),
                };
            }
            Long("addr") => o.addr = Some(p.value()?.parse()?),
            Long("conns") => o.conns = Some(p.value()?.parse()?),
            Long("threads") => o.threads = p.value()?.parse::<usize>()?.max(1),
            Long("inflight") => o.inflight = p.value()?.parse::<usize>()?.max(1),
            Long("rate") => o.rate = Some(p.value()?.parse()?),
            Long("duration") => o.duration = secs(p.value()?.parse()?)?,
            Long("warmup") => o.warmup = secs(p.value()?.parse()?)?,
            Long("whatsat") => o.whatsat = p.value()?.parse::<u32>()?.min(100),
            Long("sources") => o.sources = p.value()?.parse()?,
            Long("server-pid") => o.server_pid = Some(p.value()?.parse()?),
            Long("idle-kind") => {
                let v: String = p.value()?.parse()?;
                o.idle_kind = match v.as_str() {
                    "line" => Wire::Line,
                    "http" => Wire::Http,
                    "ws" => Wire::Ws,
                    _ => return Err(format!("--idle-kind: unknown kind {v:?}").into()),
                };
            }
            Long("probe") => o.probe = p.value()?.parse()?,
            Long("observe") => o.observe = p.value()?.parse()?,
            Long("observe-addr") => o.observe_addr = p.value()?.parse()?,
            Long("in-process") => o.in_process = true,
            Long("clients") => o.clients = p.value()?.parse::<usize>()?.max(1),
            Long("target") => o.target = p.value()?.parse()?,
            Long("rounds") => {
                o.rounds = p.value()?.parse::<usize>()?.max(1);
                o.rounds_set = true;
            }
            Long("links") => o.ingest.links = crate::ingest::list(&p.value()?.string()?)?,
            Long("chain") => o.ingest.chain = crate::ingest::list(&p.value()?.string()?)?,
            Long("journal") => o.ingest.journal = p.value()?.string()?.parse()?,
            Long("fsync-ms") => o.ingest.fsync_ms = p.value()?.parse::<u64>()?.max(1),
            Long("state-dir") => o.ingest.state_dir = Some(p.value()?.into()),
            Long("down-ms") => o.down = Duration::from_millis(p.value()?.parse()?),
            Long("attack-mbps") => o.attack_mbps = p.value()?.parse()?,
            Long("attackers") => o.attackers = p.value()?.string()?.parse()?,
            Long("far") => o.far = p.value()?.parse()?,
            Long("far-addr") => o.far_addr = Some(p.value()?.parse()?),
            Long("quiet") => o.quiet = true,
            Long("metrics") => o.metrics = Some(p.value()?.parse()?),
            Long("tls") => tls_ca = Some(p.value()?.into()),
            Long("tls-name") => tls_name = p.value()?.string()?,
            Long("tls-resume") => tls_resume = true,
            _ => return Err(arg.unexpected()),
        }
    }
    if let Some(ca) = tls_ca {
        if !matches!(
            o.mode,
            Mode::Rr | Mode::Http | Mode::Ws | Mode::Churn | Mode::Idle | Mode::Propagation
        ) {
            return Err(
                "--tls: only rr, http, ws, churn, idle and propagation connect over TLS".into(),
            );
        }
        o.tls = Some(TlsClient::new(&ca, &tls_name, tls_resume)?);
    } else if tls_resume {
        return Err("--tls-resume: only with --tls".into());
    }
    Ok(Some(o))
}

/// A prefix that makes this run's client IDs its own.
pub fn run_prefix() -> String {
    let n = (load::wall_ns() / 1000) as u64 ^ u64::from(std::process::id()) << 20;
    format!("fl{:x}", n & 0xff_ffff)
}

/// The load options as a [`Spec`], with the mode's default address and rate.
pub fn spec(o: &Opts, default_addr: SocketAddr, default_rate: f64) -> Spec {
    Spec {
        addr: o.addr.unwrap_or(default_addr),
        conns: o.conns.unwrap_or(50),
        threads: o.threads,
        inflight: o.inflight,
        rate: o.rate.unwrap_or(default_rate),
        warmup: o.warmup,
        duration: o.duration,
        whatsat_pct: o.whatsat,
        sources: o.sources,
        prefix: run_prefix(),
        tls: o.tls.clone(),
        wire: match o.mode {
            Mode::Http => Wire::Http,
            Mode::Ws => Wire::Ws,
            _ => Wire::Line,
        },
    }
}

/// Where the modes that load one server send it, unless `--addr`.
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
    12000,
);

//! `herd NAME [NAME ...]`: runs the named servers of `herd.conf`, each on its
//! own poll loop thread, until SIGINT or SIGTERM; SIGHUP reads the file
//! again and hands each loop its new configuration; `herd --check-config`
//! only reads and describes the file.
//!
//! On standard error it says what it runs (each server's addresses,
//! neighbours, log and journal), then `herd: ready` once every server's
//! journal is replayed and its loop accepts clients.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use herd::config::Herd;
use herd::logging;
use herd::metrics::Endpoint;
use herd::notify;
use herd::server::{self, Limits, ServerConfig};
use herd::tls::HerdTls;

/// Writes a line to standard error, ignoring failure: the banner and the
/// error lines must never take a server down (a full disk under a redirected
/// stderr, or a file-size limit, makes `eprintln!` panic).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

const HELP: &str = "\
herd: an application-server herd for fast-moving location data

USAGE:
    herd NAME [NAME ...] [--config FILE] [--log-dir DIR] [--state-dir DIR]
         [--fsync-ms N] [--log-level LEVEL] [--metrics HOST:PORT] [LIMITS]
    herd --check-config [--config FILE] [NAME ...]

Runs the named servers of the herd described in FILE, each with its own event
loop, in one process. Each listens on its own address from the config, dials
its neighbours (retrying with backoff while they are down), answers IAMAT and
WHATSAT, and floods position updates to the herd.

ARGUMENTS:
    NAME                 a server of the config (e.g. Goloman); several may be given

OPTIONS:
    --config FILE        the herd description [default: ./herd.conf]
    --log-dir DIR        where NAME.log files go, created if missing [default: logs]
    --state-dir DIR      where each server keeps its journal, NAME.journal: every
                         update it stored, replayed at start [default: the log dir]
    --fsync-ms N         also fdatasync the journal every N ms (0: never, the default;
                         the journal survives a crash of herd either way, fsync is
                         for power cuts)
    --metrics HOST:PORT  serve GET /metrics (Prometheus text format), GET /healthz
                         (200 ok, or 503 and the problems), the console GET / (a page
                         for a browser) and its data GET /status.json, for every
                         server of this process, from a thread of its own [default: off]
    --check-config       read and check FILE, print what it describes (servers,
                         addresses, links, Places, secret, TLS) and exit: 0 if it is
                         good, 2 with FILE:LINE: what is wrong if not; listens on nothing.
                         With tls_cert/tls_key/tls_ca it also reads and checks the TLS
                         files of each NAME given, or of every server when none is
LIMITS (see README; every one has a default):
    --max-clients N      client connections per server; past it new ones are
                         accepted and closed at once [default: what the open-file
                         limit allows, shared among the servers of this process]
    --line-limit BYTES   longest request line; longer ones get `? ` and their first
                         BYTES bytes, the rest is skipped [default: 8192, min 1024]
    --client-output BYTES  replies a client may leave unread before the server
                         stops reading it [default: 262144]
    --link-output BYTES  output a herd link may hold for a neighbour that does not
                         read before the link is dropped [default: 67108864]
    --places-in-flight N  Places requests (and HTTPS connections) at once per
                         server; more wait in a queue [default: 64]
    --invalid-rate BYTES  invalid input (lines answered `? `, over-long lines) a
                         connection may send per second, a second's worth at once;
                         past it, reading it pauses (0: no limit) [default: 65536]
    --idle-timeout SECS  close client connections silent this long [default: 0, never]
    --link-timeout DURATION  a herd link not heard from this long (no update, no
                         heartbeat) is declared down and redialled; quiet links send
                         PING every third of it, e.g. 3s, 500ms [default: 3s]
    --handshake-timeout DURATION  a connection to a tls or peer port that has not
                         finished its TLS handshake (on a peer port: said HERD) by
                         then is closed [default: 10s]
    --request-timeout DURATION  an HTTP request (head and body) not whole this long
                         after its first byte, or after the connection opened, gets
                         408 and the connection closes [default: 10s]
    --keepalive-timeout DURATION  an HTTP keep-alive connection with no request
                         under way is closed after this [default: 60s]
    --store-limit N      clients a server stores; when full, a newer update evicts the
                         client with the oldest timestamp [default: 2000000]
    --position-ttl DURATION  forget positions whose client timestamp is older than
                         this (e.g. 2h, 30m) [default: off]
    --watch-limit N      clients one connection may WATCH by name; a WATCH past it
                         is answered `? ` [default: 1024] (WATCH * watchers: at
                         most 16 per server)
    --log-size BYTES     rotate NAME.log to NAME.log.1 before it passes this size
                         [default: 268435456, 256 MiB]
    --log-keep N         rotated log files kept, NAME.log.1 .. NAME.log.N [default: 5]

OTHER OPTIONS:
    --log-level LEVEL    debug: log every line received and sent (the default);
                         info: connections, links and Places only; warn; off
    -h, --help           this text

At start the open-file limit is raised to the hard limit (each client is a file
descriptor) and the number of clients it allows is logged. Standard error then
gives, for each server, the address it listens on, its neighbours, its log and
its journal, and the line `herd: ready` once every journal is replayed and every
server accepts clients. SIGINT or SIGTERM
stops every server cleanly: listeners closed, logs flushed, exit status 0.
SIGHUP reads FILE again: links added, removed or readdressed take effect at
once, Places settings, the secret and the TLS files are re-read (the secret for
links opened after it); no client is dropped. A reload that is invalid, removes
a server of this process, moves one of its addresses (client, peer or tls port),
has a TLS file that does not load, or turns TLS on or off is refused with
FILE:LINE on standard error and in the logs, and changes nothing.
SIGUSR1 reopens every NAME.log (for logrotate). With NOTIFY_SOCKET set (systemd,
Type=notify; contrib/herd.service) it sends READY=1 at `herd: ready`,
RELOADING=1 then READY=1 around a SIGHUP, and STOPPING=1 on SIGINT or SIGTERM. When the journal cannot be
written (disk full), AT replies are held until it can, and retried every 250 ms.
A bad config, a TLS file that does not load or an unknown NAME exits with
status 2 and FILE:LINE: what is wrong, before anything listens.
The Places API key is read from the variable named by places_key_env
(default GOOGLE_PLACES_API_KEY) and never logged.

TLS (herd.conf: tls_cert PATH, tls_key PATH, tls_ca PATH, all three or none; {name}
in tls_cert and tls_key stands for each server's NAME): herd links use mutual
TLS 1.3 on peer ports (server NAME HOST:PORT peer HOST:PORT), each server's
certificate naming its NAME as a DNS name and chaining to tls_ca; a tls port
(server ... tls HOST:PORT) serves clients over TLS.
";

/// Descriptors kept aside for links, Places connections, log files and the like.
const RESERVED_FDS: u64 = 64;

struct Args {
    names: Vec<String>,
    config: PathBuf,
    log_dir: PathBuf,
    state_dir: Option<PathBuf>,
    level: log::LevelFilter,
    fsync: Option<std::time::Duration>,
    rotation: logging::Rotation,
    /// Limits as set on the command line; `max_clients` 0 means "from the
    /// descriptor limit".
    limits: Limits,
    /// `--metrics HOST:PORT`, resolved at start.
    metrics: Option<String>,
    /// `--check-config`: describe the config and exit.
    check: bool,
}

fn parse_args() -> Result<Option<Args>, lexopt::Error> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_env();
    let mut args = Args {
        names: Vec::new(),
        config: PathBuf::from("herd.conf"),
        log_dir: PathBuf::from("logs"),
        state_dir: None,
        level: log::LevelFilter::Debug,
        fsync: None,
        rotation: logging::Rotation::default(),
        limits: Limits {
            max_clients: 0,
            ..Limits::default()
        },
        metrics: None,
        check: false,
    };
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("config") => args.config = parser.value()?.into(),
            Long("check-config") => args.check = true,
            Long("metrics") => args.metrics = Some(parser.value()?.string()?),
            Long("log-dir") => args.log_dir = parser.value()?.into(),
            Long("state-dir") => args.state_dir = Some(parser.value()?.into()),
            Long("max-clients") => args.limits.max_clients = parser.value()?.parse()?,
            Long("line-limit") => {
                let n: usize = parser.value()?.parse()?;
                if n < 1024 {
                    return Err("--line-limit: at least 1024 bytes".into());
                }
                args.limits.line = n;
            }
            Long("client-output") => args.limits.client_output = parser.value()?.parse()?,
            Long("link-output") => args.limits.link_output = parser.value()?.parse()?,
            Long("places-in-flight") => {
                let n: usize = parser.value()?.parse()?;
                if n == 0 {
                    return Err("--places-in-flight: at least 1".into());
                }
                args.limits.places.max_in_flight = n;
            }
            Long("invalid-rate") => args.limits.invalid_rate = parser.value()?.parse()?,
            Long("link-timeout") => {
                let text: String = parser.value()?.parse()?;
                let d = humantime::parse_duration(&text)
                    .map_err(|e| format!("--link-timeout {text:?}: {e}"))?;
                if d < Duration::from_millis(100) {
                    return Err("--link-timeout: at least 100ms".into());
                }
                args.limits.link_timeout = d;
            }
            Long("handshake-timeout") => {
                let text: String = parser.value()?.parse()?;
                let d = humantime::parse_duration(&text)
                    .map_err(|e| format!("--handshake-timeout {text:?}: {e}"))?;
                if d < Duration::from_millis(100) {
                    return Err("--handshake-timeout: at least 100ms".into());
                }
                args.limits.handshake_timeout = d;
            }
            Long("request-timeout") | Long("keepalive-timeout") => {
                let flag = if let Long(f) = arg {
                    f.to_string()
                } else {
                    String::new()
                };
                let text: String = parser.value()?.parse()?;
                let d = humantime::parse_duration(&text)
                    .map_err(|e| format!("--{flag} {text:?}: {e}"))?;
                if d < Duration::from_millis(100) {
                    return Err(format!("--{flag}: at least 100ms").into());
                }
                if flag == "request-timeout" {
                    args.limits.request_timeout = d;
                } else {
                    args.limits.keepalive_timeout = d;
                }
            }
            Long("idle-timeout") => {
                let secs: u64 = parser.value()?.parse()?;
                args.limits.idle_timeout = (secs > 0).then(|| std::time::Duration::from_secs(secs));
            }
            Long("store-limit") => {
                let n: usize = parser.value()?.parse()?;
                if n == 0 {
                    return Err("--store-limit: at least 1".into());
                }
                args.limits.store_limit = n;
            }
            Long("watch-limit") => {
                let n: usize = parser.value()?.parse()?;
                if n == 0 {
                    return Err("--watch-limit: at least 1".into());
                }
                args.limits.watch_limit = n;
            }
            Long("position-ttl") => {
                let v: String = parser.value()?.parse()?;
                let ttl = humantime::parse_duration(&v)
                    .map_err(|e| format!("--position-ttl: {v:?}: {e}"))?;
                args.limits.position_ttl = (!ttl.is_zero()).then_some(ttl);
            }
            Long("log-size") => {
                let n: u64 = parser.value()?.parse()?;
                if n == 0 {
                    return Err("--log-size: at least 1 byte".into());
                }
                args.rotation.size = n;
            }
            Long("log-keep") => args.rotation.keep = parser.value()?.parse()?,
            Long("fsync-ms") => {
                let ms: u64 = parser.value()?.parse()?;
                args.fsync = (ms > 0).then(|| std::time::Duration::from_millis(ms));
            }
            Long("log-level") => {
                let v: String = parser.value()?.parse()?;
                args.level = match v.as_str() {
                    "debug" => log::LevelFilter::Debug,
                    "info" => log::LevelFilter::Info,
                    "warn" => log::LevelFilter::Warn,
                    "off" => log::LevelFilter::Off,
                    _ => {
                        return Err(
                            format!("--log-level: {v:?} is not debug, info, warn or off").into(),
                        )
                    }
                };
            }
            Value(v) => args.names.push(v.string()?),
            _ => return Err(arg.unexpected()),
        }
    }
    if args.names.is_empty() && !args.check {
        return Err("no server NAME given (try --help)".into());
    }
    Ok(Some(args))
}

fn main() -> ExitCode {
    // Fixed first: process_start_time_seconds.
    herd::stats::process_start_time();
    let args = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            say!("herd: {e}");
            return ExitCode::from(2);
        }
    };
    let herd = match Herd::load(&args.config) {
        Ok(h) => h,
        Err(e) => {
            say!("herd: {e}");
            return ExitCode::from(2);
        }
    };
    for name in &args.names {
        if herd.index_of(name).is_none() {
            let known: Vec<&str> = herd.servers.iter().map(|s| s.name.as_str()).collect();
            say!(
                "herd: {}: no server named {name:?} (known: {})",
                args.config.display(),
                known.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    // The TLS files, read before anything listens: for the servers this
    // process runs, or for --check-config those named, or every server.
    let tls_names: Vec<&str> = if args.names.is_empty() {
        herd.servers.iter().map(|s| s.name.as_str()).collect()
    } else {
        args.names.iter().map(String::as_str).collect()
    };
    let mut tls = Vec::new();
    for name in &tls_names {
        let loaded = match &herd.tls {
            Some(files) => match herd::tls::settings::load(files, &args.config, name) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => {
                    say!("herd: {e}");
                    return ExitCode::from(2);
                }
            },
            None => None,
        };
        let public = match &herd.public {
            Some(files) => match herd::tls::settings::load_public(files, &args.config, name) {
                Ok(config) => Some(config),
                Err(e) => {
                    say!("herd: {e}");
                    return ExitCode::from(2);
                }
            },
            None => None,
        };
        tls.push((loaded, public));
    }
    if args.check {
        // Names given with --check-config were checked just above.
        let set = |var: &str| std::env::var_os(var).is_some_and(|v| !v.is_empty());
        print!("{}", herd::check::summary(&herd, &args.config, set));
        if herd.tls.is_some() || herd.public.is_some() {
            print!("{}", herd::check::tls_checked(&tls_names));
        }
        return ExitCode::SUCCESS;
    }
    match run(&args, &herd, &tls) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("herd: {e}");
            logging::flush();
            ExitCode::from(1)
        }
    }
}

enum Event {
    Signal(i32),
    Exited(String, std::io::Result<()>),
}

/// Runs the servers of `args.names`; `tls` holds each one's TLS, in order.
/// The TLS a server of this process loads before it listens: the herd's
/// (links, peer port) and what its client-facing TLS ports present.
type LoadedTls = (Option<Arc<HerdTls>>, Option<Arc<rustls::ServerConfig>>);

fn run(args: &Args, herd: &Herd, tls: &[LoadedTls]) -> Result<(), String> {
    // A journal write past RLIMIT_FSIZE must fail with EFBIG (and be held
    // and retried), not kill the process: SIGXFSZ gets a handler.
    signal_hook::flag::register(
        signal_hook::consts::SIGXFSZ,
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    )
    .map_err(|e| format!("installing a SIGXFSZ handler: {e}"))?;
    let fds = rlimit::increase_nofile_limit(u64::MAX)
        .map_err(|e| format!("raising the open-file limit: {e}"))?;
    logging::init_with(&args.log_dir, &args.names, args.level, args.rotation)
        .map_err(|e| format!("logs in {}: {e}", args.log_dir.display()))?;
    let per_server = (fds.saturating_sub(RESERVED_FDS) / args.names.len() as u64).max(1) as usize;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| args.log_dir.clone());
    // Before any server runs: a signal that comes early (a SIGHUP while a
    // journal replays) must not take the default action, and once clients
    // connect the descriptors may be gone.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGUSR1,
    ])
    .map_err(|e| format!("installing signal handlers: {e}"))?;
    // Bound before any replay, so a taken port fails at once.
    let metrics = match &args.metrics {
        Some(spec) => {
            let addr = spec
                .to_socket_addrs()
                .map_err(|e| format!("--metrics {spec}: {e}"))?
                .next()
                .ok_or_else(|| format!("--metrics {spec}: no address"))?;
            Some(server::bind(addr).map_err(|e| format!("--metrics: {e}"))?)
        }
        None => None,
    };

    let (tx, rx) = mpsc::channel();
    let mut running = Vec::new();
    let mut listening = Vec::new();
    let mut stats = Vec::new();
    for (name, (tls, public)) in args.names.iter().zip(tls) {
        let (mut config, addr) = ServerConfig::from_herd(herd, name)?;
        config.tls = tls.clone();
        config.public_tls = public.clone();
        config.limits = Limits {
            max_clients: if args.limits.max_clients > 0 {
                args.limits.max_clients
            } else {
                per_server
            },
            ..args.limits.clone()
        };
        config.state_dir = Some(state_dir.clone());
        config.fsync = args.fsync;
        let listeners = config.bind(addr).map_err(|e| format!("{name}: {e}"))?;
        listening.push(addr);
        log::info!(target: name, "open-file limit {fds}: room for {per_server} clients; accepting at most {}", config.limits.max_clients);
        if config.places_key.is_none() {
            log::warn!(target: name, "no Places API key in ${}: WHATSAT answers will carry an error", herd.places.key_env);
        }
        let neighbours = banner_neighbours(&config.neighbours);
        let (peer, tls) = (config.peer_listen, config.tls_listen);
        let (http, https) = (config.http_listen, config.https_listen);
        let mutual = if config.tls.is_some() {
            " (mutual TLS)"
        } else {
            ""
        };
        let srv = server::Server::new(config, listeners).map_err(|e| format!("{name}: {e}"))?;
        let handle = srv.stop_handle();
        let server_stats = srv.stats();
        say!("herd: {name}");
        say!("herd:   clients     {addr}");
        if let Some(tls) = tls {
            say!("herd:   tls clients {tls}");
        }
        if let Some(http) = http {
            say!("herd:   http        {http}");
        }
        if let Some(https) = https {
            say!("herd:   https       {https}");
        }
        if let Some(peer) = peer {
            say!("herd:   herd links  {peer}{mutual}");
        }
        say!("herd:   neighbours  {neighbours}");
        say!(
            "herd:   log         {}",
            args.log_dir.join(format!("{name}.log")).display()
        );
        say!(
            "herd:   journal     {} ({} clients replayed)",
            state_dir.join(format!("{name}.journal")).display(),
            server_stats.snapshot().stored_clients
        );
        stats.push(server_stats);
        let tx = tx.clone();
        let thread_name = name.clone();
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let result = srv.run();
                let _ = tx.send(Event::Exited(thread_name, result));
            })
            .map_err(|e| format!("{name}: {e}"))?;
        running.push(handle);
    }

    let endpoint = match metrics {
        Some(listener) => {
            let e =
                Endpoint::start(listener, stats.clone()).map_err(|e| format!("--metrics: {e}"))?;
            say!(
                "herd: metrics     http://{0}/metrics, http://{0}/healthz",
                e.addr()
            );
            say!(
                "herd: console     http://{0}/ (its data: /status.json)",
                e.addr()
            );
            Some(e)
        }
        None => None,
    };

    let sig_tx = tx.clone();
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if sig == signal_hook::consts::SIGUSR1 {
                // logrotate moved the files: reopen NAME.log by path.
                logging::reopen();
                continue;
            }
            if sig_tx.send(Event::Signal(sig)).is_err() {
                return;
            }
        }
    });
    drop(tx);

    // Ready once every loop serves; a loop that ended first (it failed) is
    // the event handled below instead.
    let mut first = None;
    for s in &stats {
        while first.is_none() && !s.wait_listening(Duration::from_millis(50)) {
            first = rx.try_recv().ok();
        }
    }
    if first.is_none() {
        say!("herd: ready");
        notify::ready(&format!("serving {}", args.names.join(", ")));
    }
    let mut herd = herd.clone();
    let mut next = first;
    let outcome = loop {
        let event = match next.take() {
            Some(event) => Ok(event),
            None => rx.recv(),
        };
        match event {
            Ok(Event::Signal(signal_hook::consts::SIGHUP)) => {
                notify::reloading(&format!("SIGHUP: reading {}", args.config.display()));
                let outcome = reload(args, &mut herd, &listening, &running);
                notify::ready(&outcome);
            }
            Ok(Event::Signal(sig)) => {
                notify::stopping(&format!("signal {sig}: stopping"));
                for name in &args.names {
                    log::info!(target: name, "signal {sig}: stopping");
                }
                break Ok(());
            }
            Ok(Event::Exited(name, Ok(()))) => break Err(format!("{name} stopped unexpectedly")),
            Ok(Event::Exited(name, Err(e))) => break Err(format!("{name} failed: {e}")),
            Err(_) => break Ok(()),
        }
    };
    for handle in &running {
        handle.stop();
    }
    // Wait for every loop to close its listener before flushing the logs.
    let mut left = running.len() - usize::from(outcome.is_err());
    while left > 0 {
        match rx.recv_timeout(std::time::Duration::from_secs(5)) {
            Ok(Event::Exited(..)) => left -= 1,
            Ok(Event::Signal(_)) => {}
            Err(_) => break,
        }
    }
    if let Some(e) = endpoint {
        let _ = e.stop();
    }
    logging::flush();
    outcome
}

/// SIGHUP: reads the config again and hands every loop its part, or
/// refuses the whole reload (stderr and every server's log) and changes
/// nothing. Returns what happened, for the service manager's status.
fn reload(
    args: &Args,
    herd: &mut Herd,
    listening: &[std::net::SocketAddr],
    running: &[server::StopHandle],
) -> String {
    match herd::reload::prepare(&args.config, herd, &args.names, listening) {
        Ok(plan) => {
            for (name, (handle, config)) in args.names.iter().zip(running.iter().zip(plan.configs))
            {
                log::info!(target: name, "SIGHUP: {} read again; applying", args.config.display());
                handle.reload(config);
            }
            say!("herd: reloaded {}", args.config.display());
            *herd = plan.herd;
            format!("reloaded {}", args.config.display())
        }
        Err(e) => {
            for name in &args.names {
                log::warn!(target: name, "SIGHUP: reload refused, nothing changed: {e}");
            }
            say!("herd: reload refused, nothing changed: {e}");
            format!("reload refused, nothing changed: {e}")
        }
    }
}

/// `Hands 127.0.0.1:12001, Holiday 127.0.0.1:12002 (TLS)`, or `none`.
fn banner_neighbours(neighbours: &[herd::links::Neighbour]) -> String {
    if neighbours.is_empty() {
        return "none".into();
    }
    let list: Vec<String> = neighbours
        .iter()
        .map(|n| format!("{} {}{}", n.name, n.addr, if n.tls { " (TLS)" } else { "" }))
        .collect();
    list.join(", ")
}

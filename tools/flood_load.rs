//! `flood_load`: plays many mobile clients (and, when asked, a herd member)
//! against a herd, and says what it saw.
//!
//! Modes (`--mode`):
//!
//! * `rr` (default): C connections over T threads, W requests in flight per
//!   connection, flat out or at `--rate`; IAMAT/WHATSAT mix.
//! * `churn`: C concurrent cycles of connect, one IAMAT, shut down writing,
//!   read to EOF, close.
//! * `idle`: opens N idle connections in two halves and reads the server's
//!   VmRSS (`--server-pid`) before, between and after: bytes per connection,
//!   twice, to show it is linear.
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
//!
//! Human-readable results go to stdout, progress to stderr each second, and
//! the last stdout line is `summary mode=... key=value ...` for scripts.

mod hist;
mod hostile;
mod inproc;
mod load;
mod probe;
mod server_figures;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use hist::{us, Hist};
use inproc::InProcHerd;
use load::{Outcome, Spec};
use probe::{Probe, ProbeEvent};

const HELP: &str = "\
flood_load: a load generator for herd

USAGE:
    flood_load [--mode MODE] [OPTIONS]

MODES:
    rr           request/reply: C connections x W in flight, or --rate (default)
    churn        connect, one IAMAT, shut down writing, read to EOF, close; C at once
    idle         open N idle connections; server RSS per connection (needs --server-pid)
    propagation  post at --addr at --rate; time until the AT reaches the Probe
                 (a herd member this tool plays, dialled by the server linked to it)
    catchup      in process: fill the reference herd with --clients clients,
                 restart --target empty, time until it knows them all again
    reconnect    the Probe goes down and comes back --rounds times; time until
                 the server linked to it has dialled it again
    hostile      normal clients at --rate alone, then under attack; p99 of both

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
    --server-pid PID     idle: the server process whose VmRSS is read
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
    --rounds N           reconnect rounds [default: 10]
    --down-ms MS         reconnect: how long the Probe stays down, +-50% [default: 500]
    --attack-mbps M      hostile: MB/s per attacker connection (storm: 100*M
                         connections/s); 0 = flat out [default: 5]
    --attackers LIST     hostile: which attackers, comma-separated, of garbage,
                         long, slow, storm, and greedy (valid pipelining clients
                         that read: overload, not an attack) [default: all, the
                         first four]
    --metrics ADDR       rr: the herd's --metrics endpoint; prints the server's own
                         counts (requests, stored clients, link bytes) beside this tool's
    --quiet              no progress lines
    -h, --help           this text

The last line of stdout is `summary mode=MODE key=value ...`.
";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Rr,
    Churn,
    Idle,
    Propagation,
    Catchup,
    Reconnect,
    Hostile,
}

struct Opts {
    mode: Mode,
    addr: Option<SocketAddr>,
    conns: Option<usize>,
    threads: usize,
    inflight: usize,
    rate: Option<f64>,
    duration: Duration,
    warmup: Duration,
    whatsat: u32,
    sources: u32,
    server_pid: Option<u32>,
    probe: SocketAddr,
    observe: String,
    observe_addr: SocketAddr,
    in_process: bool,
    clients: usize,
    target: String,
    rounds: usize,
    down: Duration,
    attack_mbps: f64,
    attackers: hostile::Kinds,
    quiet: bool,
    metrics: Option<SocketAddr>,
}

fn parse_args() -> Result<Option<Opts>, lexopt::Error> {
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
        probe: SocketAddr::from(([127, 0, 0, 1], 12010)),
        observe: "Welsh".into(),
        observe_addr: SocketAddr::from(([127, 0, 0, 1], 12003)),
        in_process: false,
        clients: 100_000,
        target: "Holiday".into(),
        rounds: 10,
        down: Duration::from_millis(500),
        attack_mbps: 5.0,
        attackers: hostile::Kinds::ALL,
        quiet: false,
        metrics: None,
    };
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
                    "churn" => Mode::Churn,
                    "idle" => Mode::Idle,
                    "propagation" => Mode::Propagation,
                    "catchup" => Mode::Catchup,
                    "reconnect" => Mode::Reconnect,
                    "hostile" => Mode::Hostile,
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
            Long("probe") => o.probe = p.value()?.parse()?,
            Long("observe") => o.observe = p.value()?.parse()?,
            Long("observe-addr") => o.observe_addr = p.value()?.parse()?,
            Long("in-process") => o.in_process = true,
            Long("clients") => o.clients = p.value()?.parse::<usize>()?.max(1),
            Long("target") => o.target = p.value()?.parse()?,
            Long("rounds") => o.rounds = p.value()?.parse::<usize>()?.max(1),
            Long("down-ms") => o.down = Duration::from_millis(p.value()?.parse()?),
            Long("attack-mbps") => o.attack_mbps = p.value()?.parse()?,
            Long("attackers") => o.attackers = p.value()?.string()?.parse()?,
            Long("quiet") => o.quiet = true,
            Long("metrics") => o.metrics = Some(p.value()?.parse()?),
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(Some(o))
}

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
        Mode::Rr => rr(&opts),
        Mode::Churn => churn(&opts),
        Mode::Idle => idle(&opts),
        Mode::Propagation => propagation(&opts),
        Mode::Catchup => catchup(&opts),
        Mode::Reconnect => reconnect(&opts),
        Mode::Hostile => hostile(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flood_load: {e}");
            ExitCode::from(1)
        }
    }
}

/// A prefix that makes this run's client IDs its own.
fn run_prefix() -> String {
    let n = (load::wall_ns() / 1000) as u64 ^ u64::from(std::process::id()) << 20;
    format!("fl{:x}", n & 0xff_ffff)
}

fn spec(o: &Opts, default_addr: SocketAddr, default_rate: f64) -> Spec {
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
    }
}

const DEFAULT_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1)),
    12000,
);

fn describe_load(s: &Spec) -> String {
    let pace = if s.rate > 0.0 {
        format!(
            "at {} req/s (at most {} in flight each)",
            s.rate, s.inflight
        )
    } else {
        format!("x {} in flight, flat out", s.inflight)
    };
    format!(
        "{} connections {pace} on {} thread(s) -> {}, {:.1} s (+{:.1} s warm-up), {}% WHATSAT",
        s.conns,
        s.threads,
        s.addr,
        s.duration.as_secs_f64(),
        s.warmup.as_secs_f64(),
        s.whatsat_pct
    )
}

fn print_outcome(what: &str, out: &Outcome) {
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
    println!("errors      {}", out.errors);
    for e in &out.error_samples {
        println!("  e.g.      {e}");
    }
}

fn rr(o: &Opts) -> io::Result<()> {
    let s = spec(o, DEFAULT_ADDR, 0.0);
    println!("flood_load rr: {}", describe_load(&s));
    let before = server_figures::scrape(o.metrics);
    let out = load::run_rr(&s, !o.quiet)?;
    print_outcome("replies", &out);
    server_figures::report(o.metrics, before.as_ref(), out.done, out.sent);
    println!(
        "summary mode=rr conns={} inflight={} threads={} target_rate={} rate={:.0} {} whatsat_p99_us={} errors={}",
        s.conns,
        s.inflight,
        s.threads,
        s.rate,
        out.rate(),
        out.iamat.summary_fields(""),
        us(out.whatsat.quantile(0.99)),
        out.errors
    );
    Ok(())
}

fn churn(o: &Opts) -> io::Result<()> {
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
        "summary mode=churn conns={} threads={} rate={:.0} {} errors={}",
        s.conns,
        s.threads,
        out.rate(),
        out.iamat.summary_fields(""),
        out.errors
    );
    Ok(())
}

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

fn idle(o: &Opts) -> io::Result<()> {
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

/// Per-server arrival records at the Probe: (client ID hash, client TIME,
/// wall clock at arrival).
type Arrivals = HashMap<String, Vec<(u64, u128, u128)>>;

fn propagation(o: &Opts) -> io::Result<()> {
    let (mut probe, herd) = start_probe(o)?;
    let default_post = match &herd {
        Some(h) => h.addr("Hands")?,
        None => SocketAddr::from(([127, 0, 0, 1], 12001)),
    };
    let mut s = spec(o, default_post, 20_000.0);
    if o.inflight == 1 && o.rate.unwrap_or(1.0) > 0.0 {
        // An open-loop rate wants room to keep its pace.
        s.inflight = 8;
    }
    println!(
        "flood_load propagation: posting {}; observing {} as Probe on {}",
        describe_load(&s),
        o.observe,
        probe.addr()
    );
    wait_for_link(&mut probe, &o.observe, Duration::from_secs(15))?;
    let prefix = s.prefix.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let watcher = std::thread::spawn(move || -> io::Result<(Arrivals, u64)> {
        let mut arrivals: Arrivals = HashMap::new();
        let mut last_arrival = Instant::now();
        let mut downs = 0;
        loop {
            let stopping = stop2.load(std::sync::atomic::Ordering::Relaxed);
            // After the load: wait until nothing arrived for 300 ms.
            if stopping && last_arrival.elapsed() > Duration::from_millis(300) {
                return Ok((arrivals, downs));
            }
            probe.poll(Duration::from_millis(20), &mut |ev| match ev {
                ProbeEvent::Line {
                    name,
                    line,
                    wall_ns,
                } => {
                    if let Some((client, time)) = probe::at_fields(line) {
                        if client.starts_with(prefix.as_bytes()) {
                            last_arrival = Instant::now();
                            arrivals.entry(name.to_string()).or_default().push((
                                load::fnv(client),
                                time,
                                wall_ns,
                            ));
                        }
                    }
                }
                ProbeEvent::Down { name } => {
                    eprintln!("the link from {name} to the Probe dropped");
                    downs += 1;
                }
                ProbeEvent::Up { .. } => {}
            })?;
        }
    });
    let out = load::run_rr(&s, !o.quiet);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (arrivals, downs) = watcher
        .join()
        .map_err(|_| io::Error::other("the probe thread panicked"))??;
    let out = out?;
    drop(herd);
    print_outcome("IAMAT replies at the posting server", &out);
    let (from, to) = out.window_wall_ns;
    let mut names: Vec<&String> = arrivals.keys().collect();
    names.sort();
    let mut observed = Hist::new();
    let mut arrived = 0;
    for name in names {
        let mut h = Hist::new();
        let mut seen = std::collections::HashSet::new();
        for &(client, time, wall) in &arrivals[name] {
            // Each update once (a link may bring it again after a reconnect).
            if time >= from && time <= to && seen.insert((client, time)) {
                h.record(wall.saturating_sub(time) as u64);
            }
        }
        println!(
            "at {name:<8}  post -> arrival at the Probe: {}",
            h.describe()
        );
        if *name == o.observe {
            arrived = h.count();
            observed = h;
        }
    }
    let missing = out.sent.saturating_sub(arrived);
    println!(
        "posted      {} updates in the window; {arrived} reached {} ({missing} did not: overtaken on the way by a newer one, or lost)",
        out.sent, o.observe
    );
    let errors = out.errors + downs;
    if downs > 0 {
        println!("links down  {downs} (a link to the Probe dropped during the run)");
    }
    println!(
        "summary mode=propagation target_rate={} rate={:.0} observed={} posted={} arrived={arrived} {} reply_p50_us={} reply_p99_us={} errors={errors}",
        s.rate,
        out.rate(),
        o.observe,
        out.sent,
        observed.summary_fields(""),
        us(out.iamat.quantile(0.5)),
        us(out.iamat.quantile(0.99)),
    );
    Ok(())
}

/// The Probe, and the in-process herd dialling it if `--in-process`.
fn start_probe(o: &Opts) -> io::Result<(Probe, Option<InProcHerd>)> {
    if o.in_process {
        let probe = Probe::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let herd = InProcHerd::reference_with_probe(probe.addr(), &[o.observe.as_str()])?;
        Ok((probe, Some(herd)))
    } else {
        let probe = Probe::bind(o.probe).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("the Probe cannot listen on {}: {e}", o.probe),
            )
        })?;
        Ok((probe, None))
    }
}

/// Polls the Probe until server `name` has dialled it.
fn wait_for_link(probe: &mut Probe, name: &str, patience: Duration) -> io::Result<Duration> {
    let start = Instant::now();
    let mut up = false;
    while !up {
        if start.elapsed() > patience {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{name} did not dial the Probe at {} within {patience:?} (is the herd running with tools/probe-herd.conf?)",
                    probe.addr()
                ),
            ));
        }
        probe.poll(Duration::from_millis(5), &mut |ev| {
            if let ProbeEvent::Up { name: n } = ev {
                up |= n == name;
            }
        })?;
    }
    Ok(start.elapsed())
}

fn catchup(o: &Opts) -> io::Result<()> {
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
    let hands = herd.addr("Hands")?;
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

fn reconnect(o: &Opts) -> io::Result<()> {
    let (mut probe, herd) = start_probe(o)?;
    let observed = match &herd {
        Some(h) => h.addr(&o.observe)?,
        None => o.observe_addr,
    };
    println!(
        "flood_load reconnect: Probe on {} goes down for ~{} ms (+-50%) and comes back (dialling {observed} with HERD Probe), {} rounds; timing {}'s redial",
        probe.addr(),
        o.down.as_millis(),
        o.rounds,
        o.observe
    );
    wait_for_link(&mut probe, &o.observe, Duration::from_secs(15))?;
    let mut times = Vec::new();
    let mut errors = 0;
    let mut rng = fastrand::Rng::new();
    let mut hello = None;
    for round in 1..=o.rounds {
        probe.crash();
        drop(hello.take());
        std::thread::sleep(o.down.mul_f64(0.5 + rng.f64()));
        probe.listen()?;
        // Back up, a server dials its neighbours at once and says who it is.
        hello = TcpStream::connect(observed)
            .and_then(|mut s| s.write_all(b"HERD Probe\n").map(|()| s))
            .map_err(|e| eprintln!("[round {round:>2}] dialling {observed}: {e}"))
            .ok();
        match wait_for_link(&mut probe, &o.observe, Duration::from_secs(10)) {
            Ok(d) => {
                if !o.quiet {
                    eprintln!(
                        "[round {round:>2}] linked again after {:.1} ms",
                        d.as_secs_f64() * 1e3
                    );
                }
                times.push(d);
            }
            Err(e) => {
                errors += 1;
                eprintln!("[round {round:>2}] {e}");
            }
        }
    }
    times.sort();
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1e3);
    let pick = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "relinked    {} of {} rounds: median {} ms, min {} ms, max {} ms",
        times.len(),
        o.rounds,
        ms(pick(0.5)),
        ms(pick(0.0)),
        ms(pick(1.0))
    );
    println!(
        "summary mode=reconnect rounds={} down_ms={} observed={} p50_ms={} min_ms={} max_ms={} errors={errors}",
        o.rounds,
        o.down.as_millis(),
        o.observe,
        ms(pick(0.5)),
        ms(pick(0.0)),
        ms(pick(1.0))
    );
    Ok(())
}

fn hostile(o: &Opts) -> io::Result<()> {
    let s = spec(o, DEFAULT_ADDR, 5_000.0);
    let mut s = s;
    if o.inflight == 1 {
        s.inflight = 8;
    }
    println!("flood_load hostile: normal clients: {}", describe_load(&s));
    println!("phase 1: normal clients alone");
    let quiet = load::run_rr(&s, !o.quiet)?;
    print_outcome("replies", &quiet);
    println!(
        "phase 2: the same, while attackers run at {} MB/s per connection{}",
        o.attack_mbps,
        if o.attack_mbps <= 0.0 {
            " (flat out)"
        } else {
            ""
        }
    );
    let attack = hostile::Attack::start(s.addr, o.sources, o.attack_mbps, o.attackers)?;
    let mut s2 = s.clone();
    s2.prefix = run_prefix() + "b";
    let loud = load::run_rr(&s2, !o.quiet);
    let report = attack.stop();
    let loud = loud?;
    print_outcome("replies", &loud);
    println!("attackers   {report}");
    let ratio = loud.iamat.quantile(0.99) as f64 / quiet.iamat.quantile(0.99).max(1) as f64;
    println!(
        "p99         {} us alone, {} us under attack ({ratio:.2}x)",
        us(quiet.iamat.quantile(0.99)),
        us(loud.iamat.quantile(0.99))
    );
    println!(
        "summary mode=hostile rate={:.0} quiet_p99_us={} hostile_p99_us={} p99_ratio={ratio:.2} hostile_rate={:.0} {} errors={}",
        quiet.rate(),
        us(quiet.iamat.quantile(0.99)),
        us(loud.iamat.quantile(0.99)),
        loud.rate(),
        loud.iamat.summary_fields("hostile_"),
        quiet.errors + loud.errors
    );
    Ok(())
}

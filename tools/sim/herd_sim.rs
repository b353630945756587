//! The herd simulation: real servers, in one process, on a chosen topology,
//! with a workload posting at random servers; what a flood costs as the
//! herd grows and thins out. Shared by the `sim` tool (`tools/sim/main.rs`)
//! and its test (`tests/sim.rs`); each includes this file with
//! `#[path = ...]`, beside `tools/inproc.rs` and `tools/cputime.rs`.
//!
//! Every server of the herd is a real `herd` server (its own loop thread,
//! its own sockets on 127.0.0.1), made by [`InProcHerd`] from a `herd.conf`
//! text as the binary makes them. One more member, the *Probe*, is linked to
//! every server: a mio loop of this process that each server dials as a
//! neighbour and floods every update it stores to, so the Probe learns when
//! each server stored each update. It never sends an update, so it adds one
//! message per server per update and changes nothing else in the flood;
//! the link counts below leave its links out.
//!
//! Measured per run:
//! * **time until every server has an update**: post (the IAMAT's own
//!   timestamp, the wall clock when it was written) → arrival at the Probe
//!   from each server, by that server's hop count from the one posted at,
//!   and the last of them: p50 and p99 over the updates;
//! * **link messages per update**: updates the flood queued on herd links
//!   (`herd_link_updates_sent_total`, summed over every link), per update,
//!   against the N − 1 a spanning tree needs; the difference is the flood's
//!   duplicates, each a message a server receives and drops as not newer;
//! * **bytes per update**: the bytes of those messages, in all and per link;
//! * **CPU per update**: each server's loop thread's CPU time
//!   ([`cputime`]) over the run, per update.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream as StdStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herd::conn::{LineReader, Piece};
use herd::server::ServerConfig;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::cputime;
use crate::inproc::{InProcHerd, REFERENCE_LINKS, REFERENCE_NAMES};

/// The member every server floods to, played by this process.
pub const PROBE: &str = "Probe";

/// How long the herd's links may take to come up (100 servers on a busy
/// 2-core machine take a while).
pub const LINK_PATIENCE: Duration = Duration::from_secs(60);

/// After the last post, how long to wait for every server to have every
/// update before giving up and reporting what arrived.
pub const SETTLE_PATIENCE: Duration = Duration::from_secs(30);

/// A herd's shape: N servers and the links between them.
#[derive(Clone, Debug)]
pub struct Topology {
    /// `ring`, `tree`, `mesh3`, `mesh4`, `reference`.
    pub kind: String,
    pub names: Vec<String>,
    /// Links, each once, as indices into `names`.
    pub edges: Vec<(usize, usize)>,
}

impl Topology {
    /// Servers `S0`..`S{n-1}`.
    fn named(kind: &str, n: usize, edges: Vec<(usize, usize)>) -> Topology {
        Topology {
            kind: kind.to_string(),
            names: (0..n).map(|i| format!("S{i}")).collect(),
            edges,
        }
    }

    /// Each server linked to the next, the last to the first.
    pub fn ring(n: usize) -> Topology {
        let edges = (0..n).map(|i| (i, (i + 1) % n)).collect();
        Topology::named("ring", n, edges)
    }

    /// A binary tree: server i's parent is (i − 1) / 2. The fewest links
    /// that connect a herd (N − 1), so a flood on it sends no duplicate.
    pub fn tree(n: usize) -> Topology {
        let edges = (1..n).map(|i| ((i - 1) / 2, i)).collect();
        Topology::named("tree", n, edges)
    }

    /// A random connected graph where every server has `degree` links
    /// (random pairing, redrawn until simple and connected), from `seed`.
    pub fn mesh(n: usize, degree: usize, seed: u64) -> Topology {
        assert!(
            n * degree % 2 == 0 && degree < n,
            "no {degree}-regular graph on {n}"
        );
        let mut rng = fastrand::Rng::with_seed(seed);
        loop {
            let mut stubs: Vec<usize> = (0..n)
                .flat_map(|i| std::iter::repeat(i).take(degree))
                .collect();
            rng.shuffle(&mut stubs);
            let mut seen = HashSet::new();
            let mut edges = Vec::new();
            let simple = stubs.chunks(2).all(|p| {
                let (a, b) = (p[0].min(p[1]), p[0].max(p[1]));
                edges.push((a, b));
                a != b && seen.insert((a, b))
            });
            let t = Topology::named(&format!("mesh{degree}"), n, edges);
            if simple && t.hops_from(0).iter().all(|&h| h != usize::MAX) {
                return t;
            }
        }
    }

    /// The reference herd of docs/PROTOCOL.md §1.
    pub fn reference() -> Topology {
        let names: Vec<String> = REFERENCE_NAMES.iter().map(|s| s.to_string()).collect();
        let at = |n: &str| names.iter().position(|m| m == n).expect("a reference name");
        let edges = REFERENCE_LINKS
            .iter()
            .map(|(a, b)| (at(a), at(b)))
            .collect();
        Topology {
            kind: "reference".into(),
            names,
            edges,
        }
    }

    /// `ring`, `tree`, `mesh3`, `mesh4` of `n` servers, or `reference`.
    pub fn by_kind(kind: &str, n: usize, seed: u64) -> Result<Topology, String> {
        Ok(match kind {
            "ring" => Topology::ring(n),
            "tree" => Topology::tree(n),
            "mesh3" => Topology::mesh(n, 3, seed),
            "mesh4" => Topology::mesh(n, 4, seed),
            "reference" => Topology::reference(),
            other => {
                return Err(format!(
                    "no topology {other:?} (ring, tree, mesh3, mesh4, reference)"
                ))
            }
        })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Each server's neighbours.
    pub fn adjacency(&self) -> Vec<Vec<usize>> {
        let mut adj = vec![Vec::new(); self.len()];
        for &(a, b) in &self.edges {
            adj[a].push(b);
            adj[b].push(a);
        }
        adj
    }

    /// Hops from server `s` to each server (`usize::MAX`: unreachable).
    pub fn hops_from(&self, s: usize) -> Vec<usize> {
        let adj = self.adjacency();
        let mut hops = vec![usize::MAX; self.len()];
        hops[s] = 0;
        let mut queue = VecDeque::from([s]);
        while let Some(a) = queue.pop_front() {
            for &b in &adj[a] {
                if hops[b] == usize::MAX {
                    hops[b] = hops[a] + 1;
                    queue.push_back(b);
                }
            }
        }
        hops
    }

    /// The longest shortest path.
    pub fn diameter(&self) -> usize {
        (0..self.len())
            .map(|s| self.hops_from(s).into_iter().max().unwrap_or(0))
            .max()
            .unwrap_or(0)
    }

    /// Link messages one update costs when every server stores it once
    /// (a new client, no overtaking): the server posted at sends it on all
    /// its links, every other on all but the one it came from:
    /// 2E − (N − 1). A tree's is N − 1.
    pub fn flood_messages(&self) -> u64 {
        (2 * self.edges.len() + 1).saturating_sub(self.len()) as u64
    }
}

/// The workload.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Updates posted, each for a new client, each at a server drawn at random.
    pub updates: usize,
    /// Updates per second, paced.
    pub rate: f64,
    /// Seeds the choice of servers.
    pub seed: u64,
    /// The servers' link timeout (`None`: herd's default).
    pub link_timeout: Option<Duration>,
}

/// Percentiles of a set of durations, in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Spread {
    pub count: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Spread {
    fn of(mut ns: Vec<u64>) -> Spread {
        if ns.is_empty() {
            return Spread::default();
        }
        ns.sort_unstable();
        let at = |q: f64| {
            let i = ((q * ns.len() as f64).ceil() as usize).clamp(1, ns.len()) - 1;
            ns[i] as f64 / 1e3
        };
        Spread {
            count: ns.len(),
            p50_us: at(0.5),
            p99_us: at(0.99),
            max_us: *ns.last().unwrap_or(&0) as f64 / 1e3,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub servers: usize,
    pub links: usize,
    pub diameter: usize,
    pub posted: usize,
    /// Updates every server had by the end.
    pub complete: usize,
    /// (update, server) arrivals missing at the end.
    pub missing: usize,
    /// Post → the last server, over the updates.
    pub all: Spread,
    /// Post → arrival, by hop count from the server posted at.
    pub by_hops: Vec<Spread>,
    /// Flood messages on herd links per update, measured, and as the
    /// topology says they must be (2E − (N − 1)).
    pub messages_per_update: f64,
    pub expected_messages: u64,
    /// Update bytes on herd links per update, in all.
    pub bytes_per_update: f64,
    /// Bytes of one update on one link.
    pub bytes_per_message: f64,
    /// Each server's loop CPU per update, in microseconds: mean, max, and
    /// the herd's sum.
    pub cpu_us_mean: f64,
    pub cpu_us_max: f64,
    pub cpu_us_sum: f64,
    /// Catch-ups sent during the run (a link that dropped and came back).
    pub catchups_during: u64,
    /// Posted at this rate, in fact.
    pub rate: f64,
}

impl Report {
    /// Duplicate deliveries per update: messages beyond the N − 1 a tree needs.
    pub fn duplicates(&self) -> f64 {
        self.messages_per_update - (self.servers as f64 - 1.0)
    }
}

/// The wall clock in nanoseconds.
fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
}

/// Runs `workload` on a herd shaped `topo`, started for the run.
pub fn run(topo: &Topology, workload: &Workload) -> io::Result<Report> {
    let probe = ProbeLoop::start(topo.len())?;
    let names: Vec<&str> = topo.names.iter().map(String::as_str).collect();
    let mut links: Vec<(&str, &str)> = topo
        .edges
        .iter()
        .map(|&(a, b)| (names[a], names[b]))
        .collect();
    links.extend(names.iter().map(|&n| (n, PROBE)));
    let timeout = workload.link_timeout;
    let herd = InProcHerd::start_with(
        &names,
        &links,
        &[(PROBE, probe.addr)],
        |c: &mut ServerConfig| {
            if let Some(t) = timeout {
                c.limits.link_timeout = t;
            }
        },
    )?;
    let result = measure(topo, workload, &herd, &probe);
    let stopped = probe.stop();
    drop(herd);
    let report = result?;
    stopped?;
    Ok(report)
}

/// Every server's figures, by name.
fn snapshots(herd: &InProcHerd, names: &[&str]) -> io::Result<Vec<herd::stats::ServerSnapshot>> {
    names
        .iter()
        .map(|n| {
            herd.stats(n)
                .map(|s| s.snapshot())
                .ok_or_else(|| io::Error::other(format!("{n} is not running")))
        })
        .collect()
}

/// (flood messages, their bytes, catch-ups) on herd links, the Probe's left out.
fn link_totals(snaps: &[herd::stats::ServerSnapshot]) -> (u64, u64, u64) {
    snaps
        .iter()
        .flat_map(|s| s.links.iter())
        .filter(|l| l.neighbour != PROBE)
        .fold((0, 0, 0), |(m, b, c), l| {
            (m + l.updates_sent, b + l.update_bytes_sent, c + l.catchups)
        })
}

fn measure(
    topo: &Topology,
    w: &Workload,
    herd: &InProcHerd,
    probe: &ProbeLoop,
) -> io::Result<Report> {
    let names: Vec<&str> = topo.names.iter().map(String::as_str).collect();
    let n = topo.len();
    // Every link up, the Probe's included, before anything is posted.
    let deadline = Instant::now() + LINK_PATIENCE;
    loop {
        let snaps = snapshots(herd, &names)?;
        let up = snaps.iter().all(|s| s.links.iter().all(|l| l.up));
        if up && probe.linked() == n {
            break;
        }
        if Instant::now() > deadline {
            let down = snaps
                .iter()
                .map(|s| s.links.iter().filter(|l| !l.up).count())
                .sum::<usize>();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{down} links still down and {} of {n} servers linked to the Probe after {LINK_PATIENCE:?}", probe.linked()),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // One client connection to each server.
    let mut clients = names
        .iter()
        .map(|name| -> io::Result<_> {
            let s = StdStream::connect(herd.addr(name))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            Ok((s.try_clone()?, BufReader::new(s)))
        })
        .collect::<io::Result<Vec<_>>>()?;
    let prefix = format!("sim{:x}", (wall_ns() / 1000) as u64 & 0xff_ffff);
    let mut rng = fastrand::Rng::with_seed(w.seed);
    let (m0, b0, c0) = link_totals(&snapshots(herd, &names)?);
    let cpu0 = cputime::by_name();
    let mut origin = Vec::with_capacity(w.updates);
    let mut posted_at = Vec::with_capacity(w.updates);
    let start = Instant::now();
    let mut line = Vec::new();
    let mut reply = Vec::new();
    for k in 0..w.updates {
        if w.rate > 0.0 {
            let due = start + Duration::from_secs_f64(k as f64 / w.rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let s = rng.usize(..n);
        let t = wall_ns();
        line.clear();
        writeln!(
            line,
            "IAMAT {prefix}-{k} +34.068930-118.445127 {}.{:09}",
            t / 1_000_000_000,
            t % 1_000_000_000
        )?;
        let (out, input) = &mut clients[s];
        out.write_all(&line)?;
        reply.clear();
        input.read_until(b'\n', &mut reply)?;
        if !reply.starts_with(b"AT ") {
            return Err(io::Error::other(format!(
                "{} answered {:?}",
                names[s],
                String::from_utf8_lossy(&reply)
            )));
        }
        origin.push(s);
        posted_at.push(t);
    }
    let posting = start.elapsed();
    // Until every server has every update, or patience runs out.
    let settle = Instant::now() + SETTLE_PATIENCE;
    while probe.arrivals_count() < w.updates * n && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(10));
    }
    let cpu = cputime::spent(&cpu0, &cputime::by_name());
    let (m1, b1, c1) = link_totals(&snapshots(herd, &names)?);
    drop(clients);

    // Arrivals: (update, server) → wall clock, the first only.
    let arrivals = probe.take_arrivals(&prefix);
    let mut first: HashMap<(usize, usize), u128> = HashMap::new();
    for (k, s, at) in arrivals {
        first.entry((k, s)).or_insert(at);
    }
    let hops: Vec<Vec<usize>> = (0..n).map(|s| topo.hops_from(s)).collect();
    let diameter = topo.diameter();
    let mut by_hops: Vec<Vec<u64>> = vec![Vec::new(); diameter + 1];
    let mut all = Vec::new();
    let mut complete = 0;
    let mut missing = 0;
    for k in 0..w.updates {
        let mut last = 0u64;
        let mut got = 0;
        for s in 0..n {
            if let Some(&at) = first.get(&(k, s)) {
                let d = at.saturating_sub(posted_at[k]) as u64;
                by_hops[hops[origin[k]][s]].push(d);
                last = last.max(d);
                got += 1;
            }
        }
        missing += n - got;
        if got == n {
            complete += 1;
            all.push(last);
        }
    }
    let updates = w.updates.max(1) as f64;
    let messages = m1.saturating_sub(m0);
    let cpus: Vec<f64> = names
        .iter()
        .map(|name| {
            cpu.get(&cputime::comm(name))
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1e6
                / updates
        })
        .collect();
    Ok(Report {
        servers: n,
        links: topo.edges.len(),
        diameter,
        posted: w.updates,
        complete,
        missing,
        all: Spread::of(all),
        by_hops: by_hops.into_iter().map(Spread::of).collect(),
        messages_per_update: messages as f64 / updates,
        expected_messages: topo.flood_messages(),
        bytes_per_update: b1.saturating_sub(b0) as f64 / updates,
        bytes_per_message: if messages > 0 {
            b1.saturating_sub(b0) as f64 / messages as f64
        } else {
            0.0
        },
        cpu_us_mean: cpus.iter().sum::<f64>() / cpus.len().max(1) as f64,
        cpu_us_max: cpus.iter().copied().fold(0.0, f64::max),
        cpu_us_sum: cpus.iter().sum(),
        catchups_during: c1.saturating_sub(c0),
        rate: w.updates as f64 / posting.as_secs_f64().max(1e-9),
    })
}

/// How often the Probe sends `PING` on its links, as a herd acceptor does,
/// so no server takes it for dead: well inside any link timeout.
const PING_EVERY: Duration = Duration::from_millis(200);
const LISTENER: Token = Token(usize::MAX - 1);
/// The longest line the Probe keeps; AT lines are far shorter.
const PROBE_LINE_LIMIT: usize = 4096;

/// The Probe: a thread that accepts every server's link and notes when
/// each AT line arrived.
struct ProbeLoop {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<ProbeState>>,
    thread: std::thread::JoinHandle<io::Result<()>>,
}

#[derive(Default)]
struct ProbeState {
    /// Servers that said `HERD NAME`, by name; a name's index is its order
    /// in the topology (`S3` → 3; reference names by their order).
    linked: HashSet<String>,
    /// (server name, client ID, wall clock) per AT line.
    arrivals: Vec<(String, Vec<u8>, u128)>,
}

struct ProbeConn {
    stream: TcpStream,
    name: Option<String>,
    reader: LineReader,
    pinged: Instant,
}

impl ProbeLoop {
    fn start(servers: usize) -> io::Result<ProbeLoop> {
        let std = herd::server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = std.local_addr()?;
        let listener = TcpListener::from_std(std);
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(ProbeState::default()));
        let (stop2, shared2) = (stop.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("probe".into())
            .spawn(move || probe_loop(listener, servers, &stop2, &shared2))?;
        Ok(ProbeLoop {
            addr,
            stop,
            shared,
            thread,
        })
    }

    fn linked(&self) -> usize {
        self.shared.lock().map(|s| s.linked.len()).unwrap_or(0)
    }

    fn arrivals_count(&self) -> usize {
        self.shared.lock().map(|s| s.arrivals.len()).unwrap_or(0)
    }

    /// The arrivals of this run's updates as (update, server index, wall clock).
    fn take_arrivals(&self, prefix: &str) -> Vec<(usize, usize, u128)> {
        let Ok(mut state) = self.shared.lock() else {
            return Vec::new();
        };
        let arrivals = std::mem::take(&mut state.arrivals);
        let index = |name: &str| -> Option<usize> {
            match name.strip_prefix('S').and_then(|i| i.parse().ok()) {
                Some(i) => Some(i),
                None => REFERENCE_NAMES.iter().position(|n| *n == name),
            }
        };
        let want = format!("{prefix}-");
        arrivals
            .into_iter()
            .filter_map(|(server, client, at)| {
                let k = std::str::from_utf8(client.strip_prefix(want.as_bytes())?)
                    .ok()?
                    .parse()
                    .ok()?;
                Some((k, index(&server)?, at))
            })
            .collect()
    }

    fn stop(self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| io::Error::other("the probe thread panicked"))?
    }
}

fn probe_loop(
    mut listener: TcpListener,
    servers: usize,
    stop: &AtomicBool,
    shared: &Mutex<ProbeState>,
) -> io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: slab::Slab<ProbeConn> = slab::Slab::with_capacity(servers);
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let mut batch: Vec<(String, Vec<u8>, u128)> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(Duration::from_millis(50))) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        let now = Instant::now();
        for (_, c) in conns.iter_mut() {
            if c.name.is_some() && now >= c.pinged + PING_EVERY {
                // A few bytes: a full socket buffer just skips one.
                let _ = c.stream.write(herd::protocol::PING);
                c.pinged = now;
            }
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let entry = conns.vacant_entry();
                            poll.registry().register(
                                &mut stream,
                                Token(entry.key()),
                                Interest::READABLE,
                            )?;
                            entry.insert(ProbeConn {
                                stream,
                                name: None,
                                reader: LineReader::default(),
                                pinged: now - PING_EVERY,
                            });
                        }
                        // Nothing more to accept until the next event.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let key = ev.token().0;
            let Some(c) = conns.get_mut(key) else {
                continue;
            };
            let closed = loop {
                match c.stream.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(k) => {
                        let at = wall_ns();
                        let name = &mut c.name;
                        c.reader.feed(&buf[..k], PROBE_LINE_LIMIT, |piece| {
                            let (Piece::Line(line) | Piece::TooLong(line)) = piece;
                            match name {
                                None => {
                                    let n = line.strip_prefix(b"HERD ").unwrap_or(line);
                                    *name = Some(String::from_utf8_lossy(n).trim().to_string());
                                }
                                Some(server) => {
                                    // AT SERVER DIFF CLIENT COORDS TIME
                                    let mut fields =
                                        line.split(|&b| b == b' ').filter(|f| !f.is_empty());
                                    if fields.next() == Some(b"AT") {
                                        if let Some(client) = fields.nth(2) {
                                            batch.push((server.clone(), client.to_vec(), at));
                                        }
                                    }
                                }
                            }
                        });
                    }
                    // Drained until the next event.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break true,
                }
            };
            let named = c.name.clone();
            if closed {
                let mut c = conns.remove(key);
                let _ = poll.registry().deregister(&mut c.stream);
            }
            if let Ok(mut state) = shared.lock() {
                if let Some(name) = named {
                    if closed {
                        state.linked.remove(&name);
                    } else {
                        state.linked.insert(name);
                    }
                }
                state.arrivals.append(&mut batch);
            }
        }
    }
    Ok(())
}

//! `nemesis`: a herd of separate `herd` processes — on hosts of their own
//! (network namespaces) when root, else on loopback behind fault proxies —
//! under a workload that
//! records every acknowledgement, and a seeded random schedule of faults —
//! SIGKILL and restart, SIGSTOP/SIGCONT, a server cut off from the herd, a
//! single link cut, SIGHUP reloads that drop and restore a link and add a
//! server, a journal's disk filled and freed (as root), and with `--tls`
//! certificates rotated on a herd linked by mutual TLS. Then everything is
//! healed and the checker (`checker.rs`) says whether every acknowledged
//! update survived everywhere, the servers agree, the watchers
//! (`watchers.rs`: `WATCH` on line ports and over WebSocket, reconnecting
//! when their server dies) saw only newer positions per connection and end
//! at the newest, no process died on its own or panicked, and memory stayed
//! bounded; and how long the herd took to converge after the heal.
//!
//!     nemesis [--seed S] [--seeds N] [--secs T] [--herd PATH] [--clients N]
//!             [--watchers N] [--rss-mib M] [--tls DIR] [--with KIND]
//!             [--net hosts|loopback] [--keep]
//!
//! Prints each seed's schedule, then one `nemesis:` summary line per seed;
//! `--seed S --seeds 1` replays seed S's schedule. Exit status 1 if any
//! seed broke a rule.

mod checker;
mod cluster;
#[allow(dead_code, unused_macros)]
#[path = "../../tests/support/netns.rs"]
mod netns;
#[allow(dead_code)]
#[path = "../../tests/support/ports.rs"]
mod ports;
#[allow(dead_code)]
#[path = "../../tests/support/proxy.rs"]
mod proxy;
mod schedule;
#[allow(dead_code)]
#[path = "../../tests/support/tmpfs.rs"]
mod tmpfs;
mod watchers;
mod workload;

/// What the shared test helpers (proxy, tmpfs) call `herd::PATIENCE`.
mod herd {
    /// How long a helper waits for anything before it gives up.
    pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);
}

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use checker::{check, Violation};
use cluster::Cluster;
use schedule::{schedule, Fault, Herd};

/// The reference herd (docs/PROTOCOL.md §1), and a spare that joins by reload.
const SERVERS: &[&str] = &["Goloman", "Hands", "Holiday", "Welsh", "Wilkes"];
const LINKS: &[(&str, &str)] = &[
    ("Goloman", "Hands"),
    ("Goloman", "Holiday"),
    ("Goloman", "Wilkes"),
    ("Hands", "Wilkes"),
    ("Holiday", "Welsh"),
    ("Holiday", "Wilkes"),
];
const SPARE: &str = "Spare";
const SPARE_LINKS: &[(&str, &str)] = &[("Spare", "Welsh"), ("Spare", "Hands")];

/// How long the herd may take to converge after the heal before the
/// checker judges what it holds.
const CONVERGE_PATIENCE: Duration = Duration::from_secs(60);

/// The workload's client IDs: `n0` .. `n199`.
const CLIENT_IDS: usize = 200;

struct Opts {
    seed: u64,
    seeds: u64,
    secs: u64,
    bin: PathBuf,
    clients: usize,
    watchers: usize,
    rss_mib: u64,
    tls: Option<PathBuf>,
    with: Option<String>,
    /// Separate hosts (network namespaces) rather than loopback.
    hosts: Option<bool>,
    keep: bool,
}

const USAGE: &str = "usage: nemesis [--seed S] [--seeds N] [--secs T] [--herd PATH] [--clients N] [--watchers N] [--rss-mib M] [--tls DIR] [--with KIND] [--net hosts|loopback] [--keep]
  --seed S     the first seed (default: from the clock); --seed S --seeds 1 replays S
  --seeds N    seeds to run, S, S+1, ... (default 1)
  --secs T     seconds of faults per seed (default 20)
  --herd PATH  the herd binary (default: next to this one)
  --clients N  client threads of the workload (default 4)
  --watchers N watcher threads (default 6: two `WATCH *`, four of 10 named
               clients; the 2nd and 5th over WebSocket; 0: none)
  --rss-mib M  the bound on any server's resident memory (default 256)
  --tls DIR    a herd linked by mutual TLS on peer ports, its certificates
               rotating through DIR/gen0, DIR/gen1, ... (each made by
               `cargo run --example herd-certs -- DIR/genK Goloman Hands Holiday Welsh Wilkes Spare`)
  --with KIND  only seeds whose schedule has a fault of KIND (kill, pause,
               isolate, cut-link, reload-drop-link, reload-add-server,
               disk-full, rotate-certs)
  --net NET    hosts: each server on a network namespace of its own, links
               cut in the network (the default as root, where namespaces
               can be made); loopback: on 127.0.0.1 behind fault proxies
  --keep       keep each seed's directory (logs, journals) even when it passes";

fn opts() -> Result<Opts, String> {
    use lexopt::prelude::*;
    let mut o = Opts {
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000)
            .unwrap_or(1),
        seeds: 1,
        secs: 20,
        bin: std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("herd")))
            .unwrap_or_else(|| PathBuf::from("herd")),
        clients: 4,
        watchers: 6,
        rss_mib: 256,
        tls: None,
        with: None,
        hosts: None,
        keep: false,
    };
    let mut p = lexopt::Parser::from_env();
    let num = |p: &mut lexopt::Parser| -> Result<u64, String> {
        p.value()
            .map_err(|e| e.to_string())?
            .parse::<u64>()
            .map_err(|e| e.to_string())
    };
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("seed") => o.seed = num(&mut p)?,
            Long("seeds") => o.seeds = num(&mut p)?,
            Long("secs") => o.secs = num(&mut p)?,
            Long("clients") => o.clients = num(&mut p)?.max(1) as usize,
            Long("watchers") => o.watchers = num(&mut p)? as usize,
            Long("rss-mib") => o.rss_mib = num(&mut p)?,
            Long("herd") => o.bin = p.value().map_err(|e| e.to_string())?.into(),
            Long("keep") => o.keep = true,
            Long("net") => {
                let v = p.value().map_err(|e| e.to_string())?;
                o.hosts = Some(match v.to_str() {
                    Some("hosts") => true,
                    Some("loopback") => false,
                    _ => return Err(format!("--net: {v:?} is not hosts or loopback")),
                });
            }
            Long("with") => {
                o.with = Some(
                    p.value()
                        .map_err(|e| e.to_string())?
                        .string()
                        .map_err(|e| e.to_string())?,
                )
            }
            Long("tls") => o.tls = Some(p.value().map_err(|e| e.to_string())?.into()),
            Long("help") | Short('h') => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("{}\n{USAGE}", other.unexpected())),
        }
    }
    Ok(o)
}

/// One seed's outcome, for the totals.
struct Outcome {
    faults: BTreeMap<&'static str, u32>,
    acks: usize,
    sent: usize,
    violations: usize,
    converged: Option<Duration>,
    /// Lines the watchers received (each checked).
    pushes: usize,
    /// When the watchers had caught up, from the heal.
    caught_up: Option<Duration>,
}

fn main() {
    let o = match opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("nemesis: {e}");
            std::process::exit(2);
        }
    };
    // SIGINT/SIGTERM end the run cleanly: the servers killed, the tmpfs
    // mounts unmounted, the run's directory kept.
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let _ = signal_hook::flag::register(sig, interrupted.clone());
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut o = o;
    let hosts = *o
        .hosts
        .get_or_insert_with(|| root && netns::available().is_ok());
    if hosts {
        if let Err(why) = netns::available() {
            eprintln!("nemesis: --net hosts: {why}");
            std::process::exit(2);
        }
    }
    // One set of ports for every seed.
    let ports: BTreeMap<String, (u16, u16)> = SERVERS
        .iter()
        .chain([&SPARE])
        .map(|n| (n.to_string(), (ports::free_port(), ports::free_port())))
        .collect();
    let mut totals: BTreeMap<&'static str, u32> = BTreeMap::new();
    let (mut acks, mut sent, mut bad, mut worst) = (0, 0, 0u64, Duration::ZERO);
    let (mut pushes, mut worst_watch) = (0, Duration::ZERO);
    let started = Instant::now();
    let (mut seed, mut last) = (o.seed, o.seed);
    for _ in 0..o.seeds {
        // With --with KIND, seeds whose schedule lacks KIND are passed over.
        while o.with.as_deref().is_some_and(|k| {
            !steps_for(&o, seed, root)
                .iter()
                .any(|s| s.fault.kind() == k)
        }) {
            seed += 1;
        }
        last = seed;
        seed += 1;
        let seed = last;
        let Some(out) = run(&o, seed, root, &ports, &interrupted) else {
            eprintln!("nemesis: interrupted during seed {seed}");
            std::process::exit(130);
        };
        for (k, n) in &out.faults {
            *totals.entry(k).or_insert(0) += n;
        }
        acks += out.acks;
        sent += out.sent;
        if out.violations > 0 || out.converged.is_none() {
            bad += 1;
        }
        worst = worst.max(out.converged.unwrap_or(CONVERGE_PATIENCE));
        pushes += out.pushes;
        worst_watch = worst_watch.max(out.caught_up.unwrap_or(CONVERGE_PATIENCE * 2));
    }
    let kinds: Vec<String> = totals.iter().map(|(k, n)| format!("{k}={n}")).collect();
    println!(
        "nemesis total: seeds {}..{} ({}) in {:.0} s: faults {} ({}); {sent} updates sent, {acks} acknowledged and checked; {pushes} positions pushed to watchers and checked; {bad} seeds failed; worst convergence {:.2} s, watchers caught up {:.2} s",
        o.seed,
        last,
        o.seeds,
        started.elapsed().as_secs_f64(),
        totals.values().sum::<u32>(),
        kinds.join(" "),
        worst.as_secs_f64(),
        worst_watch.as_secs_f64(),
    );
    if bad > 0 {
        std::process::exit(1);
    }
}

/// Seed `seed`'s schedule.
fn steps_for(o: &Opts, seed: u64, root: bool) -> Vec<schedule::Step> {
    schedule(
        seed,
        Duration::from_secs(o.secs),
        &Herd {
            servers: SERVERS,
            links: LINKS,
            spare: Some(SPARE),
            disks: root,
            tls: o.tls.is_some(),
        },
    )
}

/// Runs one seed; None if interrupted.
fn run(
    o: &Opts,
    seed: u64,
    root: bool,
    ports: &BTreeMap<String, (u16, u16)>,
    interrupted: &AtomicBool,
) -> Option<Outcome> {
    let links: Vec<(&str, &str)> = LINKS.iter().chain(SPARE_LINKS).copied().collect();
    let steps = steps_for(o, seed, root);
    println!(
        "nemesis seed {seed}: {} faults in {} s{}{}",
        steps.len(),
        o.secs,
        if o.tls.is_some() {
            ", links over mutual TLS"
        } else {
            ""
        },
        if root {
            ""
        } else {
            " (not root: no full disks)"
        }
    );
    for s in &steps {
        println!("  {s}");
    }
    let dir = std::env::temp_dir().join(format!("nemesis-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the run's directory");
    let layout = cluster::Layout {
        names: SERVERS,
        spare: Some(SPARE),
        links: &links,
        ports,
    };
    let mut cluster = Cluster::new(
        &dir,
        &o.bin,
        &layout,
        root,
        o.tls.as_deref(),
        o.hosts == Some(true),
    );
    println!("  on {}", cluster.network());
    cluster.start_all();
    let load = workload::Workload::start(
        seed,
        o.clients,
        CLIENT_IDS,
        cluster.targets(),
        cluster.connector(),
    );
    let watch = watchers::Watchers::start(
        seed,
        o.watchers,
        CLIENT_IDS,
        load.targets.clone(),
        cluster.connector(),
    );

    // Begin and end events, in time order (an end before a begin at the
    // same instant).
    let mut events: Vec<(Duration, bool, usize)> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        events.push((s.at, true, i));
        events.push((s.at + s.lasts, false, i));
    }
    events.sort();
    let began = Instant::now();
    let mut faults: BTreeMap<&'static str, u32> = BTreeMap::new();
    for (at, begin, i) in &events {
        if interrupted.load(Ordering::SeqCst) {
            load.finish();
            watch.finish();
            drop(cluster);
            println!("  kept {}", dir.display());
            return None;
        }
        while began.elapsed() < *at {
            cluster.tick();
            std::thread::sleep((*at - began.elapsed().min(*at)).min(Duration::from_millis(100)));
        }
        let fault = &steps[*i].fault;
        if *begin {
            *faults.entry(fault.kind()).or_insert(0) += 1;
            cluster.begin(fault);
            if matches!(fault, Fault::AddServer(_)) {
                *load.targets.write().unwrap_or_else(|e| e.into_inner()) = cluster.targets();
            }
        } else {
            cluster.end(fault);
        }
    }
    // The last fault has ended: the herd is healed. The load stops, and
    // the herd must converge on what was sent; convergence is timed from
    // the heal.
    let healed = Instant::now();
    let seen = load.finish();
    cluster.tick();
    let mut history = seen.history;
    let clients: Vec<String> = {
        let mut c: Vec<String> = history.sent.keys().cloned().collect();
        c.sort();
        c
    };
    let present: Vec<String> = cluster.present().into_iter().map(|(n, _)| n).collect();
    let mut converged = None;
    loop {
        history.finals = snapshot(&cluster, &present, &clients);
        let agree = history.finals.len() == present.len()
            && history
                .finals
                .values()
                .all(|m| Some(m) == history.finals.values().next());
        if agree && check(&history).is_empty() {
            converged = Some(healed.elapsed());
            break;
        }
        if healed.elapsed() > CONVERGE_PATIENCE {
            break;
        }
        cluster.tick();
        std::thread::sleep(Duration::from_millis(100));
    }
    // Then the watchers must catch up: each one's last connection ends at
    // the line every server holds, for every client it watches (timed from
    // the heal too).
    let mut caught_up = None;
    if converged.is_some() {
        let since = Instant::now();
        loop {
            history.watchers = watch.logs();
            let behind = check(&history)
                .iter()
                .any(|v| matches!(v, Violation::WatchBehind { .. }));
            if !behind {
                caught_up = Some(healed.elapsed());
                break;
            }
            if since.elapsed() > CONVERGE_PATIENCE {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    history.watchers = watch.finish();
    let conns: usize = history.watchers.iter().map(|w| w.conns.len()).sum();
    let pushes: usize = history
        .watchers
        .iter()
        .flat_map(|w| &w.conns)
        .map(Vec::len)
        .sum();
    cluster.tick();
    history.incidents.append(&mut cluster.incidents);
    history.incidents.extend(cluster.panics());
    history.rss = cluster.rss.clone();
    history.rss_bound = o.rss_mib << 20;
    let violations = check(&history);
    for v in violations.iter().take(20) {
        println!("  VIOLATION {v}");
    }
    if violations.len() > 20 {
        println!("  ... {} violations in all", violations.len());
    }
    let max_rss = history.rss.values().max().copied().unwrap_or(0);
    let kinds: Vec<String> = faults.iter().map(|(k, n)| format!("{k}={n}")).collect();
    println!(
        "nemesis: seed {seed}: faults {} ({}); {} updates sent, {} acknowledged ({} of them OsmAnd reports over HTTP), {} whatsats; {} clients on {} servers; {} watchers on {conns} connections, {pushes} positions received ({}); violations {}; converged {}; watchers caught up {}; max rss {} MiB",
        faults.values().sum::<u32>(),
        kinds.join(" "),
        history.sent.values().map(|s| s.len()).sum::<usize>(),
        history.acked.len(),
        seen.reports,
        seen.whatsats,
        clients.len(),
        present.len(),
        history.watchers.len(),
        history
            .watchers
            .iter()
            .map(|w| w.conns.iter().map(Vec::len).sum::<usize>().to_string())
            .collect::<Vec<_>>()
            .join("/"),
        violations.len(),
        converged.map_or("never".to_string(), |d| format!("in {:.2} s", d.as_secs_f64())),
        caught_up.map_or("never".to_string(), |d| format!("in {:.2} s", d.as_secs_f64())),
        max_rss >> 20,
    );
    let failed = !violations.is_empty() || converged.is_none();
    drop(cluster);
    if failed || o.keep {
        println!("  kept {}", dir.display());
    } else {
        remove(&dir);
    }
    Some(Outcome {
        faults,
        acks: history.acked.len(),
        sent: history.sent.values().map(|s| s.len()).sum(),
        violations: violations.len(),
        converged,
        pushes,
        caught_up,
    })
}

/// What each server holds for `clients` now; a server that cannot be asked
/// is left out (so the run is not converged yet).
fn snapshot(
    c: &Cluster,
    present: &[String],
    clients: &[String],
) -> BTreeMap<String, HashMap<String, String>> {
    present
        .iter()
        .filter_map(|n| c.holdings(n, clients).map(|h| (n.clone(), h)))
        .collect()
}

/// Removes a run's directory (its tmpfs mounts are gone with the cluster).
fn remove(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

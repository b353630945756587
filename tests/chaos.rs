//! Chaos: the five-server reference herd as separate processes under load,
//! servers killed with SIGKILL and restarted at random every 0.3 to 1 s.
//! When the load stops, every server must hold the same store, and every
//! IAMAT that was answered with an AT line during the run must be there (its
//! position or a newer one): nothing acknowledged is lost.
//!
//! `HERD_CHAOS_SECS` sets how long the chaos lasts (default 12 s).

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::herd::{wait_for, Client, KillOnDrop, REFERENCE_LINKS, REFERENCE_NAMES};

fn start(name: &str, conf: &Path, dir: &Path) -> KillOnDrop {
    Command::new(env!("CARGO_BIN_EXE_herd"))
        .arg(name)
        .arg("--config")
        .arg(conf)
        .arg("--log-dir")
        .arg(dir)
        .args(["--log-level", "info"])
        .stdin(Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .expect("start herd")
}

/// (client timestamp, AT line): the order in which the herd keeps updates.
type Update = (u64, String);

/// What one load client saw acknowledged: the newest update per client ID,
/// and how many updates in all.
#[derive(Default)]
struct Acked {
    newest: HashMap<String, Update>,
    count: u64,
}

impl Acked {
    fn add(&mut self, t: u64, line: String) {
        self.count += 1;
        let client = line.split(' ').nth(3).unwrap_or_default().to_string();
        match self.newest.get_mut(&client) {
            Some(e) if (e.0, &e.1) >= (t, &line) => {}
            Some(e) => *e = (t, line),
            None => {
                self.newest.insert(client, (t, line));
            }
        }
    }
}

/// One load client: posts batches of IAMATs to random servers, records each
/// one answered with an AT line.
fn load(addrs: Vec<SocketAddr>, stop: Arc<AtomicBool>, clock: Arc<AtomicU64>, seed: u64) -> Acked {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut acked = Acked::default();
    while !stop.load(Ordering::SeqCst) {
        let addr = addrs[rng.usize(..addrs.len())];
        let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reader = BufReader::new(stream);
        while !stop.load(Ordering::SeqCst) {
            let mut batch = String::new();
            let mut sent = Vec::new();
            for _ in 0..rng.usize(1..16) {
                let t = clock.fetch_add(1, Ordering::SeqCst);
                let client = format!("chaos{}", rng.usize(..300));
                batch.push_str(&format!(
                    "IAMAT {client} +{}+{} {t}\n",
                    rng.u8(..90),
                    rng.u8(..180)
                ));
                sent.push(t);
            }
            if reader.get_mut().write_all(batch.as_bytes()).is_err() {
                break;
            }
            let mut ok = true;
            for t in sent {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(n) if n > 0 && line.ends_with('\n') && line.starts_with("AT ") => {
                        acked.add(t, line.trim_end().to_string());
                    }
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                break;
            }
        }
    }
    acked
}

#[test]
fn sigkill_and_restart_at_random_loses_nothing_acknowledged() {
    let secs: u64 = std::env::var("HERD_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..5)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let mut conf = String::new();
    for (name, port) in REFERENCE_NAMES.iter().zip(&ports) {
        conf.push_str(&format!("server {name} 127.0.0.1:{port}\n"));
    }
    for (a, b) in REFERENCE_LINKS {
        conf.push_str(&format!("link {a} {b}\n"));
    }
    let conf_path = dir.path().join("herd.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
        .collect();

    let mut servers: Vec<Option<KillOnDrop>> = REFERENCE_NAMES
        .iter()
        .map(|n| Some(start(n, &conf_path, dir.path())))
        .collect();
    for a in &addrs {
        wait_for("the herd to listen", || TcpStream::connect(a).ok());
    }

    let stop = Arc::new(AtomicBool::new(false));
    let clock = Arc::new(AtomicU64::new(1_700_000_000));
    let loaders: Vec<_> = (0..4)
        .map(|i| {
            let (addrs, stop, clock) = (addrs.clone(), stop.clone(), clock.clone());
            std::thread::spawn(move || load(addrs, stop, clock, 1000 + i))
        })
        .collect();

    let seed = fastrand::u64(..);
    eprintln!("chaos seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let end = Instant::now() + Duration::from_secs(secs);
    let mut kills = 0;
    // The slowest SIGKILL-and-reap and restart, for the summary: a run that
    // overruns its time should say where the time went.
    let (mut slowest_kill, mut slowest_start) = (Duration::ZERO, Duration::ZERO);
    let chaos_began = Instant::now();
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(rng.u64(300..1000)));
        // Kill while fewer than two are down (so a second one sometimes dies
        // while the first is down), else bring one back.
        let up: Vec<usize> = (0..5).filter(|&i| servers[i].is_some()).collect();
        let down: Vec<usize> = (0..5).filter(|&i| servers[i].is_none()).collect();
        if down.is_empty() || (down.len() < 2 && rng.bool()) {
            let i = up[rng.usize(..up.len())];
            let t = Instant::now();
            drop(servers[i].take()); // SIGKILL
            slowest_kill = slowest_kill.max(t.elapsed());
            kills += 1;
        } else {
            let i = down[rng.usize(..down.len())];
            let t = Instant::now();
            servers[i] = Some(start(REFERENCE_NAMES[i], &conf_path, dir.path()));
            slowest_start = slowest_start.max(t.elapsed());
        }
    }
    let chaos_took = chaos_began.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut acked = Acked::default();
    for l in loaders {
        let a = l.join().unwrap();
        acked.count += a.count - a.newest.len() as u64;
        for (t, line) in a.newest.into_values() {
            acked.add(t, line);
        }
    }
    for (i, s) in servers.iter_mut().enumerate() {
        if s.is_none() {
            *s = Some(start(REFERENCE_NAMES[i], &conf_path, dir.path()));
        }
    }
    for a in &addrs {
        wait_for("the whole herd to listen again", || {
            TcpStream::connect(a).ok()
        });
    }
    let relisten_took = chaos_began.elapsed() - chaos_took;

    let newest = &acked.newest;
    let mut clients: Vec<&String> = newest.keys().collect();
    clients.sort();
    let snapshot = |addr: SocketAddr| -> Option<Vec<Option<String>>> {
        let mut c = Client::connect(addr);
        let mut batch = String::new();
        for k in &clients {
            batch.push_str(&format!("WHATSAT {k} 1 1\n"));
        }
        c.send(batch.as_bytes());
        Some(
            clients
                .iter()
                .map(|_| c.whatsat_reply().ok().map(|(at, _)| at))
                .collect(),
        )
    };
    let started = Instant::now();
    let finals = wait_for("every server to hold the same store", || {
        let first = snapshot(addrs[0])?;
        addrs[1..]
            .iter()
            .all(|a| snapshot(*a).as_ref() == Some(&first))
            .then_some(first)
    });
    let mut lost = 0;
    for (k, fin) in clients.iter().zip(&finals) {
        let (t, line) = &newest[*k];
        let kept = fin.as_ref().map(|l| {
            let ft: u64 = l.rsplit(' ').next().unwrap().parse().unwrap();
            (ft, l.clone())
        });
        if kept
            .as_ref()
            .is_none_or(|kept| (kept.0, &kept.1) < (*t, line))
        {
            eprintln!("lost: {line} (the herd holds {fin:?})");
            lost += 1;
        }
    }
    eprintln!(
        "chaos: {secs} s, {kills} SIGKILLs survived, {} updates acknowledged for {} clients, {lost} lost; stores identical {:?} after the load stopped",
        acked.count,
        clients.len(),
        started.elapsed()
    );
    eprintln!(
        "chaos timings: kill loop {chaos_took:?} (slowest kill {slowest_kill:?}, slowest restart {slowest_start:?}); load stopped and herd listening again in {relisten_took:?}"
    );
    assert!(
        kills >= 3,
        "the chaos killed too little to mean anything: {kills}"
    );
    assert!(acked.count > 1000, "too little load: {}", acked.count);
    assert_eq!(lost, 0, "acknowledged updates lost");
}

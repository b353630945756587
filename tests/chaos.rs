//! Chaos: the five-server reference herd as separate processes under load,
//! servers killed with SIGKILL and restarted at random every 0.3 to 1 s.
//! When the load stops, every server must hold the same store, and every
//! IAMAT that was answered with an AT line during the run must be there (its
//! position or a newer one): nothing acknowledged is lost.
//!
//! Meanwhile one server's disk fills (docs/PROTOCOL.md §5): as root, Goloman
//! keeps its journal on a tmpfs the test mounts, shrinks to what it holds
//! (ENOSPC) for the middle of the run, kills and restarts Goloman on it while
//! it is full, then grows again. Its log must show each step. Without root
//! that phase is skipped with a message, except under `CI=true`, where it
//! must run.
//!
//! `HERD_CHAOS_SECS` sets how long the chaos lasts (default 12 s).

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::herd::{wait_for, Client, KillOnDrop, REFERENCE_LINKS, REFERENCE_NAMES};
use support::tmpfs::Tmpfs;

/// Starts server `name`, logging to `dir` and keeping its journal in
/// `state` (default: `dir`).
fn start(name: &str, conf: &Path, dir: &Path, state: Option<&Path>) -> KillOnDrop {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herd"));
    cmd.current_dir(dir)
        .arg(name)
        .arg("--config")
        .arg(conf)
        .arg("--log-dir")
        .arg(dir)
        .args(["--log-level", "info"])
        .stdin(Stdio::null());
    if let Some(state) = state {
        cmd.arg("--state-dir").arg(state);
    }
    cmd.spawn().map(KillOnDrop).expect("start herd")
}

/// The server whose disk fills: Goloman, with three neighbours.
const DISK: usize = 0;

/// What the journal logs when a write fails, and when one works again
/// (src/journal.rs).
const FAILING: &str = "holding the replies";
const RECOVERED: &str = "writable again";

/// The tmpfs's size outside the phase: room for the journal and for all
/// that queues up while it is full (about 10 MiB a second under this load).
const ROOM: &str = "256m";

/// The full-disk phase, a step at a time: fill the tmpfs under `DISK`'s
/// journal, kill and restart `DISK` while it is full, give the room back.
/// Each step waits until `DISK`'s log shows what it caused, so a disk that
/// never filled fails the test.
struct DiskPhase {
    fs: Tmpfs,
    log: PathBuf,
    addr: SocketAddr,
    /// The step due next, and when.
    step: Step,
    at: [Instant; 3],
    /// SIGKILLs it sent; failing stretches logged; how long the recovery
    /// took to show in the log.
    kills: u32,
    failures: usize,
    recovery: Duration,
}

enum Step {
    Fill,
    KillWhileFull,
    Free,
    Done,
}

impl DiskPhase {
    /// Fills at a quarter of the chaos, kills at half, frees at 70 %.
    fn new(fs: Tmpfs, log: PathBuf, addr: SocketAddr, began: Instant, chaos: Duration) -> Self {
        DiskPhase {
            fs,
            log,
            addr,
            step: Step::Fill,
            at: [0.25, 0.5, 0.7].map(|f| began + chaos.mul_f64(f)),
            kills: 0,
            failures: 0,
            recovery: Duration::ZERO,
        }
    }

    /// When the next step is due; `None` once done.
    fn next_at(&self) -> Option<Instant> {
        match self.step {
            Step::Fill => Some(self.at[0]),
            Step::KillWhileFull => Some(self.at[1]),
            Step::Free => Some(self.at[2]),
            Step::Done => None,
        }
    }

    /// While the disk is full, `DISK` is left to this phase: the random
    /// kills would hide which process met the full disk.
    fn holds_disk(&self) -> bool {
        matches!(self.step, Step::KillWhileFull | Step::Free)
    }

    /// How often `what` is in `DISK`'s log (every process appends to it).
    fn logged(&self, what: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches(what)
            .count()
    }

    /// Waits until `DISK`'s log holds `what` more often than `before`.
    /// While it waits for the failure, the disk is kept full: a restarted
    /// server's start-up compaction, or the slack `fill` had to leave, can
    /// give back room that a slow workload (a loaded machine) takes long
    /// to use up.
    fn await_log(&self, what: &str, before: usize) {
        let name = REFERENCE_NAMES[DISK];
        let mut filled = Instant::now();
        wait_for(&format!("{what:?} in {name}'s log"), || {
            if what == FAILING && filled.elapsed() > Duration::from_millis(250) {
                self.fs.fill();
                filled = Instant::now();
            }
            (self.logged(what) > before).then_some(())
        });
    }

    /// `DISK` answers while its journal fails: it replayed what it had and
    /// reads go on.
    fn check_serving(&self) {
        let at = Client::connect(self.addr).known("chaos0");
        assert!(
            at.is_some(),
            "{} does not know chaos0 on a full disk",
            REFERENCE_NAMES[DISK]
        );
    }

    /// Takes the step due; `server` is `DISK`'s slot, `start` starts it.
    fn step(&mut self, server: &mut Option<KillOnDrop>, start: impl Fn() -> KillOnDrop) {
        match self.step {
            Step::Fill => {
                if server.is_none() {
                    *server = Some(start());
                }
                let before = self.logged(FAILING);
                self.fs.fill();
                self.await_log(FAILING, before);
                self.check_serving();
                self.step = Step::KillWhileFull;
            }
            Step::KillWhileFull => {
                // Only whole records that were written got their AT lines
                // out, so a SIGKILL now must lose none of them.
                self.fs.fill();
                drop(server.take());
                self.kills += 1;
                // Counted once the old process is gone, so what follows
                // is the new one's.
                let before = self.logged(FAILING);
                *server = Some(start());
                self.await_log(FAILING, before);
                self.check_serving();
                self.step = Step::Free;
            }
            Step::Free => {
                self.failures = self.logged(FAILING);
                let before = self.logged(RECOVERED);
                let t = Instant::now();
                self.fs.resize(ROOM);
                self.await_log(RECOVERED, before);
                self.recovery = t.elapsed();
                self.step = Step::Done;
            }
            Step::Done => {}
        }
    }

    /// Keeps the disk full between steps: a compaction that finished, or
    /// the restart clearing a half-written one, gives space back.
    fn keep_full(&self) {
        if self.holds_disk() {
            self.fs.fill();
        }
    }
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
    let ports: Vec<u16> = (0..5).map(|_| support::procs::free_port()).collect();
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

    let tmpfs = Tmpfs::mount(&dir.path().join("disk"), ROOM);
    if tmpfs.is_none() {
        eprintln!("chaos: no full-disk phase");
    }
    let disk_state = tmpfs.as_ref().map(|fs| fs.path().to_path_buf());
    let start_server = |i: usize| {
        let state = if i == DISK {
            disk_state.as_deref()
        } else {
            None
        };
        start(REFERENCE_NAMES[i], &conf_path, dir.path(), state)
    };
    let mut servers: Vec<Option<KillOnDrop>> = (0..5).map(|i| Some(start_server(i))).collect();
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
    let mut disk = tmpfs.map(|fs| {
        let log = dir.path().join(format!("{}.log", REFERENCE_NAMES[DISK]));
        DiskPhase::new(fs, log, addrs[DISK], chaos_began, Duration::from_secs(secs))
    });
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(rng.u64(300..1000)));
        if let Some(d) = &mut disk {
            if d.next_at().is_some_and(|at| Instant::now() >= at) {
                d.step(&mut servers[DISK], || start_server(DISK));
                continue;
            }
            d.keep_full();
        }
        // Kill while fewer than two are down (so a second one sometimes dies
        // while the first is down), else bring one back.
        let chaotic = |i: &usize| !(*i == DISK && disk.as_ref().is_some_and(|d| d.holds_disk()));
        let up: Vec<usize> = (0..5)
            .filter(|&i| servers[i].is_some())
            .filter(chaotic)
            .collect();
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
            servers[i] = Some(start_server(i));
            slowest_start = slowest_start.max(t.elapsed());
        }
    }
    // A short run may end before the phase does: finish it under load.
    if let Some(d) = &mut disk {
        while d.next_at().is_some() {
            d.step(&mut servers[DISK], || start_server(DISK));
        }
    }
    kills += disk.as_ref().map_or(0, |d| d.kills);
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
            *s = Some(start_server(i));
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
    if let Some(d) = &disk {
        eprintln!(
            "chaos full disk: {}'s journal logged {} failing stretches (killed and restarted on the full disk once), writable again {:?} after the room came back",
            REFERENCE_NAMES[DISK], d.failures, d.recovery
        );
    }
    assert!(
        kills >= 3,
        "the chaos killed too little to mean anything: {kills}"
    );
    assert!(acked.count > 1000, "too little load: {}", acked.count);
    assert_eq!(lost, 0, "acknowledged updates lost");
}

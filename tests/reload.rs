//! A herd that changes while it runs (docs/PROTOCOL.md §10): SIGHUP makes a
//! process read its config again; links added are dialled and caught up,
//! links removed are closed and refused, a new server joins by a reload of
//! its neighbours and a start, an invalid reload changes nothing, and no
//! client connection or acknowledged update is lost to a reload.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::herd::{timestamp, wait_for, Client};
use support::procs::{free_port, write, HerdProc, HERD};

const REFERENCE: &[&str] = &["Goloman", "Hands", "Holiday", "Welsh", "Wilkes"];
const REFERENCE_LINKS: &str = "link Goloman Hands\nlink Goloman Holiday\nlink Goloman Wilkes\n\
                               link Hands Wilkes\nlink Holiday Welsh\nlink Holiday Wilkes\n";

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `server` lines for `names` on `ports`.
fn servers(names: &[&str], ports: &[u16]) -> String {
    names
        .iter()
        .zip(ports)
        .map(|(n, p)| format!("server {n} 127.0.0.1:{p}\n"))
        .collect()
}

/// Sends SIGHUP and returns this process's verdict on standard error
/// (`herd: reloaded ...` or `herd: reload refused ...`).
fn reload(p: &mut HerdProc) -> String {
    let verdict = |l: &str| l.starts_with("herd: reload");
    let before = p.stderr_lines(verdict).len();
    p.signal(libc::SIGHUP);
    let deadline = Instant::now() + support::herd::PATIENCE;
    loop {
        let lines = p.stderr_lines(verdict);
        if lines.len() > before {
            return lines[before].clone();
        }
        assert!(Instant::now() < deadline, "no verdict on the reload");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_sixth_server_joins_a_running_five_server_herd_by_sighup_and_start() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let five = format!("{}{REFERENCE_LINKS}", servers(REFERENCE, &ports));
    let conf = write(dir.path(), "herd.conf", &five);
    let mut herd = HerdProc::start(
        Command::new(HERD),
        &dir.path().join("five"),
        &conf,
        REFERENCE,
        &[],
    );
    // A client connected before the reload, held across it.
    let mut held = Client::connect(local(ports[1]));
    let early = held.ask(&format!("IAMAT early +10+10 {}", timestamp()));
    wait_for("the early update everywhere", || {
        (Client::connect(local(ports[3])).known("early").as_deref() == Some(early.as_str()))
            .then_some(())
    });

    // Newbie joins next to Welsh and Hands.
    let six = format!(
        "{five}server Newbie 127.0.0.1:{}\nlink Newbie Welsh\nlink Newbie Hands\n",
        ports[5]
    );
    write(dir.path(), "herd.conf", &six);
    let verdict = reload(&mut herd);
    assert!(verdict.starts_with("herd: reloaded"), "{verdict}");
    let newbie = HerdProc::start(
        Command::new(HERD),
        &dir.path().join("six"),
        &conf,
        &["Newbie"],
        &[],
    );
    let mut at_newbie = Client::connect(local(ports[5]));
    wait_for("Newbie to catch up on the earlier update", || {
        (at_newbie.known("early").as_deref() == Some(early.as_str())).then_some(())
    });
    herd.wait_metrics("Welsh and Hands linked to Newbie", |m| {
        m.get("herd_link_up{server=\"Welsh\",neighbour=\"Newbie\"}") == Some(&1.0)
            && m.get("herd_link_up{server=\"Hands\",neighbour=\"Newbie\"}") == Some(&1.0)
    });
    // The held connection is still served, and its update floods to Newbie.
    let late = held.ask(&format!("IAMAT late +11+11 {}", timestamp()));
    assert!(late.starts_with("AT Hands "), "{late}");
    wait_for("the later update to flood to Newbie", || {
        (at_newbie.known("late").as_deref() == Some(late.as_str())).then_some(())
    });
    // And Newbie's own updates reach the far side of the old herd.
    let own = at_newbie.ask(&format!("IAMAT own +12+12 {}", timestamp()));
    wait_for("Newbie's update to reach Goloman", || {
        (Client::connect(local(ports[0])).known("own").as_deref() == Some(own.as_str()))
            .then_some(())
    });
    drop(newbie);
}

#[test]
fn a_removed_link_isolates_the_far_side_and_adding_it_back_catches_it_up() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let names = ["A", "B", "C"];
    let chain = format!("{}link A B\nlink B C\n", servers(&names, &ports));
    let conf = write(dir.path(), "herd.conf", &chain);
    let mut p = HerdProc::start(Command::new(HERD), dir.path(), &conf, &names, &[]);
    p.wait_metrics("the chain linked", |m| {
        m.get("herd_link_up{server=\"B\",neighbour=\"C\"}") == Some(&1.0)
            && m.get("herd_link_up{server=\"C\",neighbour=\"B\"}") == Some(&1.0)
    });

    write(
        dir.path(),
        "herd.conf",
        &format!("{}link A B\n", servers(&names, &ports)),
    );
    assert!(reload(&mut p).starts_with("herd: reloaded"));
    p.wait_metrics("B-C gone on both sides", |m| {
        !m.contains_key("herd_link_up{server=\"B\",neighbour=\"C\"}")
            && !m.contains_key("herd_link_up{server=\"C\",neighbour=\"B\"}")
            && m.get("herd_peer_connections{server=\"C\"}") == Some(&0.0)
    });
    let cut = Client::connect(local(ports[0])).ask(&format!("IAMAT cut +1+1 {}", timestamp()));
    let mut at_b = Client::connect(local(ports[1]));
    wait_for("B to learn it", || {
        (at_b.known("cut").as_deref() == Some(cut.as_str())).then_some(())
    });
    // C is isolated. What is tested is an absence, so there is nothing to
    // wait for but time: linked, C would have had it within milliseconds.
    std::thread::sleep(Duration::from_millis(300));
    let mut at_c = Client::connect(local(ports[2]));
    assert_eq!(at_c.known("cut"), None, "C is cut off");
    // Say a HERD to C as B would: it is no longer a neighbour, so refused.
    assert_eq!(Client::connect(local(ports[2])).ask("HERD B"), "? HERD B");

    write(dir.path(), "herd.conf", &chain);
    assert!(reload(&mut p).starts_with("herd: reloaded"));
    wait_for("C to catch up once the link is back", || {
        (at_c.known("cut").as_deref() == Some(cut.as_str())).then_some(())
    });
}

#[test]
fn an_invalid_or_forbidden_reload_keeps_the_old_herd_and_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let names = ["A", "B"];
    let good = format!("{}link A B\n", servers(&names, &ports));
    let conf = write(dir.path(), "herd.conf", &good);
    let mut p = HerdProc::start(Command::new(HERD), dir.path(), &conf, &names, &[]);
    let conf_text = conf.display().to_string();
    let cases = [
        (format!("{good}bogus directive\n"), ":4: unknown directive"),
        (
            format!("server A 127.0.0.1:{}\n", ports[0]),
            ": server B, which this process runs, is no longer in the file",
        ),
        (
            format!(
                "server A 127.0.0.1:{}\nserver B 127.0.0.1:{}\nlink A B\n",
                ports[0],
                free_port()
            ),
            ":2: server B listens on",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        write(dir.path(), "herd.conf", text);
        let verdict = reload(&mut p);
        assert!(
            verdict.starts_with(&format!(
                "herd: reload refused, nothing changed: {conf_text}"
            )),
            "{verdict}"
        );
        assert!(verdict.contains(want), "{verdict} (wanted {want})");
        // The old herd goes on: an update at A reaches B.
        let id = format!("after{i}");
        let at = Client::connect(local(ports[0])).ask(&format!("IAMAT {id} +1+1 {}", timestamp()));
        let mut at_b = Client::connect(local(ports[1]));
        wait_for("the old herd to flood", || {
            (at_b.known(&id).as_deref() == Some(at.as_str())).then_some(())
        });
    }
    // The refusal is in the logs too.
    let log = std::fs::read_to_string(dir.path().join("logs/A.log")).unwrap_or_default();
    let deadline = Instant::now() + support::herd::PATIENCE;
    let mut log = log;
    while !log.contains("reload refused") {
        assert!(Instant::now() < deadline, "no refusal in A.log");
        std::thread::sleep(Duration::from_millis(20));
        log = std::fs::read_to_string(dir.path().join("logs/A.log")).unwrap_or_default();
    }
}

#[test]
fn a_reload_during_a_flood_of_20000_updates_per_second_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let two = format!("{}link A B\n", servers(&["A", "B"], &ports));
    let conf = write(dir.path(), "herd.conf", &two);
    let mut p = HerdProc::start(Command::new(HERD), dir.path(), &conf, &["A", "B"], &[]);
    p.wait_metrics("A-B linked", |m| {
        m.get("herd_link_up{server=\"A\",neighbour=\"B\"}") == Some(&1.0)
    });

    // Four clients at 5,000 updates/s each, every update a new client ID,
    // each counted once its AT reply (the acknowledgement) is read.
    let stop = Arc::new(AtomicBool::new(false));
    let mut loaders = Vec::new();
    for t in 0..4 {
        let stop = stop.clone();
        let addr = local(ports[0]);
        loaders.push(std::thread::spawn(move || {
            let mut c = Client::connect(addr);
            let start = Instant::now();
            let mut acked = 0u64;
            let batch = 50;
            while !stop.load(Ordering::Relaxed) {
                let mut out = String::new();
                for _ in 0..batch {
                    out.push_str(&format!(
                        "IAMAT t{t}-{acked:07} +1+1 1700000000.{acked:09}\n"
                    ));
                    acked += 1;
                }
                c.send(out.as_bytes());
                for _ in 0..batch {
                    assert!(c.text().starts_with("AT A "));
                }
                // 5,000 a second: 50 every 10 ms.
                let due = start + Duration::from_millis(acked * 1000 / 5000);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            acked
        }));
    }
    // Mid-flood (the load runs for its own sake: time is the point here):
    // a reload that adds a server (not running) and a link to it.
    std::thread::sleep(Duration::from_millis(700));
    write(
        dir.path(),
        "herd.conf",
        &format!("{two}server C 127.0.0.1:{}\nlink B C\n", ports[2]),
    );
    assert!(reload(&mut p).starts_with("herd: reloaded"));
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let acked: u64 = loaders.into_iter().map(|l| l.join().unwrap()).sum();
    assert!(
        acked > 10_000,
        "the flood ran: {acked} updates acknowledged"
    );
    p.wait_metrics("every acknowledged update on both servers", |m| {
        m.get("herd_stored_clients{server=\"A\"}") == Some(&(acked as f64))
            && m.get("herd_stored_clients{server=\"B\"}") == Some(&(acked as f64))
    });
    println!("reload during a flood: {acked} updates acknowledged, all on A and B");
}

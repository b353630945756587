//! Link liveness (docs/PROTOCOL.md §4): a neighbour that stops answering —
//! here a process stopped with SIGSTOP, whose kernel still completes
//! connects and acknowledges bytes — is noticed within `--link-timeout`
//! even with no update flowing, its links declared down while the rest of
//! the herd is unaffected; after SIGCONT the links come back and catch up.
//!
//! `HERD_ROUNDS=N cargo test --release --test liveness -- --nocapture`
//! repeats the stop/continue cycle N times and prints the median and
//! maximum detection time (README's figures).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::herd::{timestamp, wait_for, Client};
use support::procs::{free_port, write, HerdProc, HERD};

/// Short, so the test is quick; the default is 3 s.
const TIMEOUT: Duration = Duration::from_secs(1);
/// What the issue allows past the timeout for the loop to act on it.
const SLACK: Duration = Duration::from_millis(500);

fn rounds() -> usize {
    std::env::var("HERD_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
}

#[test]
fn a_stopped_neighbour_is_down_within_the_link_timeout_and_back_after_sigcont() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (free_port(), free_port(), free_port());
    let conf = write(
        dir.path(),
        "herd.conf",
        &format!(
            "server A 127.0.0.1:{a}\nserver B 127.0.0.1:{b}\nserver C 127.0.0.1:{c}\n\
             link A B\nlink B C\n"
        ),
    );
    let timeout = format!("{}ms", TIMEOUT.as_millis());
    let extra = ["--link-timeout", timeout.as_str()];
    let ab = HerdProc::start(
        Command::new(HERD),
        &dir.path().join("ab"),
        &conf,
        &["A", "B"],
        &extra,
    );
    let cp = HerdProc::start(
        Command::new(HERD),
        &dir.path().join("c"),
        &conf,
        &["C"],
        &extra,
    );
    let (mut detect, mut back) = (Vec::new(), Vec::new());
    for round in 0..rounds() {
        ab.wait_metrics("B's link to C up", |m| {
            m.get("herd_link_up{server=\"B\",neighbour=\"C\"}") == Some(&1.0)
                && m.get("herd_peer_connections{server=\"B\"}") == Some(&2.0)
        });
        cp.wait_metrics("C's link to B up", |m| {
            m.get("herd_link_up{server=\"C\",neighbour=\"B\"}") == Some(&1.0)
        });
        cp.signal(libc::SIGSTOP);
        // No update flows: only heartbeats can tell.
        let took = ab.wait_metrics("B to declare C down", |m| {
            m.get("herd_link_up{server=\"B\",neighbour=\"C\"}") == Some(&0.0)
                && m.get("herd_peer_connections{server=\"B\"}") == Some(&1.0)
        });
        assert!(
            took <= TIMEOUT + SLACK,
            "round {round}: B took {took:?} to notice (timeout {TIMEOUT:?})"
        );
        detect.push(took);
        // The rest of the herd is unaffected: A and B still link and flood.
        assert_eq!(ab.link_up("A", "B"), Some(true));
        assert_eq!(ab.link_up("B", "A"), Some(true));
        let during = format!("during{round}");
        let at = Client::connect(format!("127.0.0.1:{a}").parse().unwrap())
            .ask(&format!("IAMAT {during} +1+1 {}", timestamp()));
        let mut at_b = Client::connect(format!("127.0.0.1:{b}").parse().unwrap());
        wait_for("B to learn the update made while C was stopped", || {
            (at_b.known(&during).as_deref() == Some(at.as_str())).then_some(())
        });
        // Back: the links return, and C catches up on what it missed.
        let resumed = Instant::now();
        cp.signal(libc::SIGCONT);
        let mut at_c = Client::connect(format!("127.0.0.1:{c}").parse().unwrap());
        wait_for("C to catch up after SIGCONT", || {
            (at_c.known(&during).as_deref() == Some(at.as_str())).then_some(())
        });
        ab.wait_metrics("B's link to C back", |m| {
            m.get("herd_link_up{server=\"B\",neighbour=\"C\"}") == Some(&1.0)
        });
        back.push(resumed.elapsed());
    }
    if rounds() > 1 {
        detect.sort();
        back.sort();
        println!(
            "liveness: SIGSTOP detected in median {:?}, max {:?} (link timeout {TIMEOUT:?}, {} rounds); caught up after SIGCONT in median {:?}, max {:?}",
            detect[detect.len() / 2],
            detect[detect.len() - 1],
            detect.len(),
            back[back.len() / 2],
            back[back.len() - 1]
        );
    }
}

#[test]
fn a_plain_at_sender_is_never_declared_dead_for_not_answering_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let a = free_port();
    let conf = write(
        dir.path(),
        "herd.conf",
        &format!("server A 127.0.0.1:{a}\n"),
    );
    let p = HerdProc::start(
        Command::new(HERD),
        dir.path(),
        &conf,
        &["A"],
        &["--link-timeout", "200ms"],
    );
    let addr = format!("127.0.0.1:{a}").parse().unwrap();
    let mut plain = Client::connect(addr);
    plain.send(format!("AT Elsewhere +0.000000001 p1 +1+1 {}\n", timestamp()).as_bytes());
    // Five link timeouts of silence: what is tested is that nothing
    // happens, so there is no event to wait for, only time.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        p.scrape().get("herd_client_connections{server=\"A\"}"),
        Some(&1.0)
    );
    plain.send(format!("AT Elsewhere +0.000000001 p2 +1+1 {}\n", timestamp()).as_bytes());
    let mut q = Client::connect(addr);
    wait_for("the late plain AT to be stored", || {
        q.known("p2").map(|_| ())
    });
}

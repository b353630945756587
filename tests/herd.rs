//! The herd (docs/PROTOCOL.md §4): floods across hops, newest wins, servers that die and
//! come back, links cut at random, and a neighbour that never reads.

mod support;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::herd::{timestamp, wait_for, Client, TestHerd, REFERENCE_NAMES};

/// Waits until `server` holds exactly `line` for `client`.
fn wait_known(h: &TestHerd, server: &str, client: &str, line: &str) {
    let mut c = h.client(server);
    wait_for(&format!("{server} to know {line}"), || {
        (c.known(client).as_deref() == Some(line)).then_some(())
    });
}

#[test]
fn an_iamat_at_hands_reaches_welsh_three_hops_away_exactly() {
    let h = TestHerd::reference();
    let mut c = h.client("Hands");
    let at = c.ask(&format!(
        "IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 {}",
        timestamp()
    ));
    assert!(at.starts_with("AT Hands "), "{at}");
    for s in REFERENCE_NAMES {
        wait_known(&h, s, "kiwi.cs.ucla.edu", &at);
    }
}

#[test]
fn simultaneous_updates_with_equal_timestamps_converge_to_one_line() {
    let h = TestHerd::reference();
    let t = timestamp();
    let addrs: Vec<_> = REFERENCE_NAMES.iter().map(|n| h.addr(n)).collect();
    let posts: Vec<_> = addrs
        .into_iter()
        .enumerate()
        .map(|(i, addr)| {
            let t = t.clone();
            std::thread::spawn(move || {
                Client::connect(addr).ask(&format!("IAMAT race +{i}+{i} {t}"))
            })
        })
        .collect();
    let answers: Vec<String> = posts.into_iter().map(|p| p.join().unwrap()).collect();
    // The winner is the largest AT line (equal timestamps): the same everywhere.
    let winner = answers.iter().max().unwrap().clone();
    for s in REFERENCE_NAMES {
        wait_known(&h, s, "race", &winner);
    }
}

#[test]
fn a_dead_server_splits_the_herd_and_catches_up_when_it_returns() {
    let mut h = TestHerd::reference();
    let mut hands = h.client("Hands");
    let before = hands.ask(&format!("IAMAT before +1+1 {}", timestamp()));
    wait_known(&h, "Welsh", "before", &before);

    h.stop("Holiday");
    // The rest keeps exchanging updates.
    let mut during = Vec::new();
    for i in 0..50 {
        let at = hands.ask(&format!("IAMAT during{i} +2+2 {}", timestamp()));
        during.push((format!("during{i}"), at));
    }
    let mut wilkes = h.client("Wilkes");
    let w = wilkes.ask(&format!("IAMAT from-wilkes +3+3 {}", timestamp()));
    during.push(("from-wilkes".to_string(), w));
    for (client, at) in &during {
        wait_known(&h, "Goloman", client, at);
        wait_known(&h, "Wilkes", client, at);
        wait_known(&h, "Hands", client, at);
    }
    // Welsh, isolated, has heard of none of it.
    let mut welsh = h.client("Welsh");
    for (client, _) in &during {
        assert_eq!(welsh.known(client), None, "{client}");
    }

    // Holiday comes back empty: it and Welsh learn everything, with no client posting again.
    h.restart("Holiday");
    let started = Instant::now();
    for (client, at) in during
        .iter()
        .chain([&("before".to_string(), before.clone())])
    {
        wait_known(&h, "Holiday", client, at);
        wait_known(&h, "Welsh", client, at);
    }
    eprintln!("Holiday and Welsh caught up in {:?}", started.elapsed());
}

#[test]
fn randomized_cuts_and_restores_end_with_identical_stores() {
    let mut h = TestHerd::reference();
    let seed = std::env::var("HERD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (rerun with HERD_TEST_SEED={seed})");
    let mut rng = fastrand::Rng::with_seed(seed);
    let clients: Vec<String> = (0..40).map(|i| format!("r{i}")).collect();
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut posted = 0;
    let mut ts: u64 = 1_600_000_000;
    while Instant::now() < deadline {
        match rng.u8(0..10) {
            0 => {
                let s = REFERENCE_NAMES[rng.usize(0..5)];
                if h.is_running(s) {
                    h.stop(s);
                } else {
                    h.restart(s);
                }
            }
            _ => {
                let running: Vec<&str> = REFERENCE_NAMES
                    .iter()
                    .copied()
                    .filter(|s| h.is_running(s))
                    .collect();
                if running.is_empty() {
                    continue;
                }
                let s = running[rng.usize(0..running.len())];
                let mut c = h.client(s);
                for _ in 0..rng.usize(1..20) {
                    // Timestamps sometimes repeat, so ties are exercised too.
                    ts += rng.u64(0..2);
                    let client = &clients[rng.usize(0..clients.len())];
                    c.ask(&format!(
                        "IAMAT {client} +{}+{} {ts}",
                        rng.u8(0..90),
                        rng.u8(0..180)
                    ));
                    posted += 1;
                }
            }
        }
    }
    for s in REFERENCE_NAMES {
        if !h.is_running(s) {
            h.restart(s);
        }
    }
    eprintln!("{posted} updates posted");
    // Every server ends with the same line for every client.
    let snapshot = |s: &str| -> BTreeMap<String, Option<String>> {
        let mut c = h.client(s);
        clients.iter().map(|k| (k.clone(), c.known(k))).collect()
    };
    wait_for("identical stores on all five servers", || {
        let first = snapshot(REFERENCE_NAMES[0]);
        let same = REFERENCE_NAMES[1..].iter().all(|s| snapshot(s) == first);
        // Servers restarted empty may all have lost a client that only they
        // knew (no journal yet); what matters is that they agree.
        same.then_some(())
    });
}

#[test]
fn a_neighbour_that_never_reads_gets_its_link_dropped_not_our_memory() {
    // "Sink" is a listener that accepts and never reads.
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in sink.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    let h = TestHerd::start_with(&["Goloman"], &[], |c| {
        c.neighbours
            .push(herd::links::Neighbour::plain("Sink", sink_addr));
        c.limits.link_output = 256 * 1024;
    });
    wait_for("the link to Sink", || {
        (accepted.load(Ordering::SeqCst) >= 1).then_some(())
    });
    let mut c = h.client("Goloman");
    let mut n = 0u64;
    // Floods pile up for Sink until the cap drops the link; it is dialled again.
    wait_for("the link to Sink to be dropped and redialled", || {
        let mut batch = Vec::new();
        for _ in 0..2000 {
            n += 1;
            batch.extend_from_slice(format!("IAMAT sink-client-{n} +1+1 {n}\n").as_bytes());
        }
        c.send(&batch);
        for _ in 0..2000 {
            c.line();
        }
        (accepted.load(Ordering::SeqCst) >= 2).then_some(())
    });
    // The server kept serving throughout.
    let mut other = h.client("Goloman");
    assert!(other.ask("IAMAT fine +1+1 1").ends_with(" fine +1+1 1"));
}

#[test]
fn a_whole_herd_restarted_at_once_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_path_buf();
    let mut h = TestHerd::start_with(REFERENCE_NAMES, support::herd::REFERENCE_LINKS, |c| {
        c.state_dir = Some(state.clone())
    });
    let mut posted = Vec::new();
    for (i, s) in REFERENCE_NAMES.iter().enumerate() {
        let mut c = h.client(s);
        for k in 0..20 {
            let client = format!("w{i}-{k}");
            posted.push((
                client.clone(),
                c.ask(&format!("IAMAT {client} +1+1 {}", timestamp())),
            ));
        }
    }
    for s in REFERENCE_NAMES {
        h.stop(s);
    }
    for s in REFERENCE_NAMES {
        h.restart(s);
    }
    // Every server knows every update: its own journal, or its neighbours' catch-up.
    for s in REFERENCE_NAMES {
        let mut c = h.client(s);
        for (client, at) in &posted {
            let mut known = None;
            wait_for(&format!("{s} to know {client}"), || {
                known = c.known(client);
                (known.as_deref() == Some(at.as_str())).then_some(())
            });
        }
    }
}

#[test]
fn a_server_restarted_empty_learns_a_hundred_thousand_clients_by_catch_up() {
    const CLIENTS: usize = 100_000;
    let mut h = TestHerd::start(&["A", "B"], &[("A", "B")]);
    h.stop("B");
    let mut c = h.client("A");
    let mut last = String::new();
    for chunk in 0..CLIENTS / 1000 {
        let mut batch = Vec::with_capacity(64 * 1000);
        for i in chunk * 1000..(chunk + 1) * 1000 {
            batch.extend_from_slice(
                format!("IAMAT catchup-{i} +1+1 1600000000.{i:09}\n").as_bytes(),
            );
        }
        c.send(&batch);
        for _ in 0..1000 {
            last = c.text();
        }
    }
    let started = Instant::now();
    h.restart("B");
    // Catch-up streams the store in the order it was filled: the last client arrives last.
    let mut b = Client::connect(h.addr("B"));
    wait_for("B to learn the last of 100,000 clients", || {
        (b.known(&format!("catchup-{}", CLIENTS - 1)).as_deref() == Some(last.as_str()))
            .then_some(())
    });
    let took = started.elapsed();
    eprintln!("B restarted empty and learned {CLIENTS} clients in {took:?} (restart included)");
    assert_eq!(
        b.known("catchup-0")
            .map(|l| l.ends_with(" catchup-0 +1+1 1600000000.000000000")),
        Some(true)
    );
}

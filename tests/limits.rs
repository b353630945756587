//! Every limit at the limit and past it, slow and idle clients, and running
//! out of descriptors: bad or greedy clients never stall the others.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herd::config::PlacesApi;
use support::herd::{timestamp, wait_for, Client, KillOnDrop, TestHerd, PATIENCE};
use support::places_server::{Behaviour, PlacesServer};

/// True once the server has closed `s` (EOF or reset), within PATIENCE.
fn closed_by_server(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
        ),
    }
}

#[test]
fn client_connections_at_and_past_the_limit() {
    let h = TestHerd::start_with(&["S"], &[], |c| c.limits.max_clients = 10);
    let mut held: Vec<Client> = (0..10).map(|_| h.client("S")).collect();
    for (i, c) in held.iter_mut().enumerate() {
        assert!(c
            .ask(&format!("IAMAT held{i} +1+1 1"))
            .contains(&format!(" held{i} ")));
    }
    // The eleventh is accepted and closed at once.
    let mut extra = TcpStream::connect(h.addr("S")).unwrap();
    let _ = extra.write_all(b"IAMAT extra +1+1 1\n");
    assert!(closed_by_server(&mut extra));
    // A place frees up: new clients are served again.
    drop(held.pop());
    wait_for("a free place", || {
        let mut s = TcpStream::connect(h.addr("S")).ok()?;
        s.write_all(b"IAMAT again +1+1 1\n").ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).ok()?;
        (n > 0 && buf.starts_with(b"AT S ")).then_some(())
    });
}

#[test]
fn the_line_limit_is_settable_and_exact() {
    let h = TestHerd::start_with(&["S"], &[], |c| c.limits.line = 1024);
    let mut c = h.client("S");
    let at_limit = format!("IAMAT {} +1+1 1", "x".repeat(1024 - "IAMAT  +1+1 1".len()));
    assert_eq!(at_limit.len(), 1024);
    assert!(
        c.ask(&at_limit).starts_with("AT S "),
        "a line of exactly the limit is a request"
    );
    let past = format!("{at_limit}y");
    let reply = c.ask(&past);
    assert_eq!(
        reply,
        format!("? {at_limit}"),
        "one byte past: `? ` and the first 1024 bytes"
    );
    assert!(c.ask("IAMAT next +1+1 2").ends_with(" next +1+1 2"));
}

#[test]
fn a_client_past_its_output_limit_is_paused_then_fully_answered() {
    let h = TestHerd::start_with(&["S"], &[], |c| c.limits.client_output = 4096);
    let mut c = h.client("S");
    let n = 20_000;
    let mut batch = Vec::new();
    for i in 0..n {
        batch.extend_from_slice(format!("IAMAT p{i} +1+1 {i}\n").as_bytes());
    }
    // Written from another thread: the server stops reading us while we do not read.
    let mut w = c.reader.get_ref().try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&batch).unwrap());
    for i in 0..n {
        let r = c.text();
        assert!(r.ends_with(&format!(" p{i} +1+1 {i}")), "{i}: {r}");
    }
    writer.join().unwrap();
}

#[test]
fn places_requests_in_flight_are_capped_and_the_rest_wait_their_turn() {
    let places = PlacesServer::start(Behaviour::default().delay(Duration::from_millis(300)));
    let config = places.config(PlacesApi::Legacy);
    let h = TestHerd::start_with(&["S"], &[], move |c| {
        c.places = config.clone();
        c.places_key = Some("k".into());
        c.limits.places.max_in_flight = 2;
    });
    h.client("S")
        .ask("IAMAT kiwi +34.068930-118.445127 1520023934");
    let mut clients: Vec<Client> = (0..6).map(|_| h.client("S")).collect();
    for c in &mut clients {
        c.send(b"WHATSAT kiwi 1 1\n");
    }
    for c in &mut clients {
        let (_, json) = c.whatsat_reply().unwrap();
        assert!(json.contains("\"status\" : \"OK\""), "{json}");
    }
    assert_eq!(places.max_concurrent(), 2);
    assert!(places.connections() <= 2);
}

#[test]
fn slow_loris_costs_only_its_line_and_stalls_no_one() {
    let h = TestHerd::start(&["S"], &[]);
    let mut loris = TcpStream::connect(h.addr("S")).unwrap();
    loris.set_nodelay(true).unwrap();
    let line = format!("IAMAT loris +1+1 {}\n", timestamp());
    let mut other = h.client("S");
    for (i, b) in line.as_bytes().iter().enumerate() {
        loris.write_all(&[*b]).unwrap();
        if i % 8 == 0 {
            // Others are answered while the slow line trickles in.
            assert!(other
                .ask(&format!("IAMAT quick{i} +1+1 1"))
                .contains(&format!(" quick{i} ")));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut c = Client {
        reader: std::io::BufReader::new(loris),
    };
    assert!(c.text().contains(" loris +1+1 "));
    // A slow line that never ends is cut at the limit, not buffered.
    let mut endless = TcpStream::connect(h.addr("S")).unwrap();
    endless.write_all(b"IAMAT ").unwrap();
    for _ in 0..9 {
        endless.write_all(&[b'z'; 1000]).unwrap();
    }
    let mut e = Client {
        reader: std::io::BufReader::new(endless),
    };
    let reply = e.line();
    assert_eq!(reply.len(), 2 + 8192);
}

#[test]
fn a_client_sending_garbage_is_slowed_to_its_invalid_rate_yet_fully_answered() {
    let rate = 32 * 1024;
    let h = TestHerd::start_with(&["S"], &[], |c| c.limits.invalid_rate = rate);
    // 96 KiB of invalid lines, a 40 KiB over-long line, then a request.
    let junk = |i: usize| format!("junk {i:05} {}", "x".repeat(52));
    let mut garbage = Vec::new();
    for i in 0..1536 {
        garbage.extend_from_slice(junk(i).as_bytes());
        garbage.push(b'\n');
    }
    garbage.extend_from_slice(&[b'y'; 40 * 1024]);
    garbage.extend_from_slice(b"\nIAMAT flooder +1+1 1\n");
    let mut flooder = h.client("S");
    let mut w = flooder.reader.get_ref().try_clone().unwrap();
    let start = Instant::now();
    let writer = std::thread::spawn(move || w.write_all(&garbage).unwrap());
    assert_eq!(flooder.text(), format!("? {}", junk(0)));
    // While the flooder waits out its pauses, others are served at once.
    let mut other = h.client("S");
    assert!(other.ask("IAMAT quick +1+1 1").contains(" quick +1+1 1"));
    let other_done = start.elapsed();
    // Every line is answered, in order: throttling delays, never drops.
    for i in 1..1536 {
        assert_eq!(flooder.text(), format!("? {}", junk(i)));
    }
    let long = flooder.line();
    assert_eq!(long.len(), 2 + 8192);
    assert!(long.starts_with(b"? yyyy"));
    assert!(flooder.text().contains(" flooder +1+1 1"));
    let took = start.elapsed();
    writer.join().unwrap();
    // Before the last read (at most a 64 KiB scratch buffer) at least
    // 136 - 64 = 72 KiB were charged; a second's worth (32 KiB) is free and
    // the rest leaks at 32 KiB/s: 1.25 s at least. Unthrottled, this takes
    // milliseconds.
    assert!(
        took >= Duration::from_secs(1),
        "136 KiB of invalid input answered in {took:?}"
    );
    assert!(
        other_done < took,
        "the other client ({other_done:?}) waited for the flooder ({took:?})"
    );
}

#[test]
fn an_idle_timeout_closes_silent_clients_when_set() {
    let h = TestHerd::start_with(&["S"], &[], |c| {
        c.limits.idle_timeout = Some(Duration::from_secs(1))
    });
    let mut idle = TcpStream::connect(h.addr("S")).unwrap();
    let started = Instant::now();
    assert!(closed_by_server(&mut idle));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed too early: {:?}",
        started.elapsed()
    );
}

#[test]
fn idle_clients_stay_by_default() {
    let h = TestHerd::start(&["S"], &[]);
    let mut c = h.client("S");
    // Longer than the sweep interval: phones keep quiet connections for long.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(c.ask("IAMAT still +1+1 1").ends_with(" still +1+1 1"));
}

/// CPU seconds the process has used (user + system), from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after_comm.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn out_of_descriptors_pauses_accepting_without_spinning() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::procs::free_port();
    let conf = dir.path().join("h.conf");
    std::fs::write(&conf, format!("server Solo 127.0.0.1:{port}\n")).unwrap();
    let child = Command::new("prlimit")
        .arg("--nofile=64:64")
        .arg(env!("CARGO_BIN_EXE_herd"))
        .args([
            "Solo",
            "--max-clients",
            "10000",
            "--log-level",
            "info",
            "--config",
        ])
        .arg(&conf)
        .arg("--log-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .spawn()
        .expect("prlimit (util-linux) runs herd");
    let child = KillOnDrop(child);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_for("Solo to listen", || TcpStream::connect(addr).ok());
    // More connections than descriptors: the kernel queues the rest.
    let mut clients: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.write_all(format!("IAMAT fd{i} +1+1 1\n").as_bytes())
            .unwrap();
    }
    // The first ones are answered.
    let mut first = Client {
        reader: std::io::BufReader::new(clients.remove(0)),
    };
    assert!(first.text().contains(" fd0 "));
    // The server waits for descriptors instead of spinning on accept.
    let before = cpu_seconds(child.id());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_seconds(child.id()) - before;
    assert!(
        used < 0.5,
        "{used} CPU seconds in one second while out of descriptors"
    );
    // Freeing descriptors lets the queued clients in: every one is answered.
    // (The server keeps about a dozen descriptors of its own, and 19 held here.)
    clients.truncate(19);
    drop(first);
    let mut queued: Vec<Client> = (0..20).map(|_| Client::connect(addr)).collect();
    let _ = &mut queued;
    for (i, c) in queued.iter_mut().enumerate() {
        assert!(c
            .ask(&format!("IAMAT late{i} +1+1 1"))
            .contains(&format!(" late{i} ")));
    }
    drop(child);
    let log = std::fs::read_to_string(dir.path().join("Solo.log")).unwrap();
    let pauses = log.matches("pausing accepts").count();
    assert!(pauses >= 1, "{log}");
    assert!(
        pauses < 5,
        "logged {pauses} times: once per stretch of EMFILE"
    );
}

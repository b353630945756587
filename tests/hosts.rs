//! The herd across real separate hosts: one herd process per network
//! namespace, each with its own address on a bridge (`support::netns`).
//! A host whose link goes down is noticed by the link timeout alone (no
//! TCP error ever arrives), updates made on both sides of the cut are
//! everywhere soon after the heal, nothing acknowledged is lost, and a
//! fourth host joins by a reload of its neighbours.
//!
//! Needs root (and `ip`); skipped with a reason otherwise, except under
//! `CI=true`. `HERD_ROUNDS=N cargo test --release --test hosts -- --nocapture`
//! repeats the cut N times and prints detection and convergence times.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use support::herd::{wait_for, Client, PATIENCE};
use support::inproc::timestamp;
use support::netns::{Host, Net};
use support::procs::{herd_command, write, HerdProc, HERD};

const PORT: u16 = 12000;
const METRICS: u16 = 9100;
const TIMEOUT: Duration = Duration::from_secs(1);

fn rounds() -> usize {
    std::env::var("HERD_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1)
}

/// The config for `hosts` (server NAME on its host's address) and `links`.
fn config(net: &Net, hosts: &[&str], links: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for h in hosts {
        text.push_str(&format!("server {h} {}\n", net.host(h).sock(PORT)));
    }
    for (a, b) in links {
        text.push_str(&format!("link {a} {b}\n"));
    }
    text
}

/// Runs server `name` on its own host.
fn run(host: &Host, dir: &Path, conf: &Path, client: &Host) -> HerdProc {
    let name = host.name();
    let mut cmd = herd_command(host.command(HERD), &dir.join(name), conf, &[name]);
    let metrics = host.sock(METRICS).to_string();
    let timeout = format!("{}ms", TIMEOUT.as_millis());
    cmd.args(["--metrics", &metrics, "--link-timeout", &timeout]);
    HerdProc::spawn(cmd).via(client.clone())
}

fn client(net: &Net, name: &str) -> Client {
    let stream = net
        .client()
        .connect(net.host(name).sock(PORT), PATIENCE)
        .expect("connect from the client host");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    Client {
        reader: std::io::BufReader::new(stream),
    }
}

/// Waits until `name` holds `at` for `id`.
fn known_at(net: &Net, name: &str, id: &str, at: &str) {
    let mut c = client(net, name);
    wait_for(&format!("{name} to know {id}"), || {
        (c.known(id).as_deref() == Some(at)).then_some(())
    });
}

fn link_is(p: &HerdProc, server: &str, neighbour: &str, up: bool) -> bool {
    let key = format!("herd_link_up{{server=\"{server}\",neighbour=\"{neighbour}\"}}");
    p.scrape().get(&key) == Some(&if up { 1.0 } else { 0.0 })
}

#[test]
fn three_hosts_converge_survive_a_cut_and_take_a_fourth_by_reload() {
    require_netns!();
    let net = Net::new(&["A", "B", "C", "D"]);
    let dir = tempfile::tempdir().unwrap();
    let three = [("A", "B"), ("B", "C"), ("A", "C")];
    let conf = write(
        dir.path(),
        "herd.conf",
        &config(&net, &["A", "B", "C"], &three),
    );
    let mut procs: Vec<HerdProc> = ["A", "B", "C"]
        .iter()
        .map(|h| run(net.host(h), dir.path(), &conf, net.client()))
        .collect();

    // Converges: an update on A is on B and C.
    let first = client(&net, "A").ask(&format!("IAMAT first +1+1 {}", timestamp()));
    for h in ["B", "C"] {
        known_at(&net, h, "first", &first);
    }

    let (mut detect, mut converge) = (Vec::new(), Vec::new());
    for round in 0..rounds() {
        for (p, (s, n)) in procs.iter().zip([("A", "C"), ("B", "C"), ("C", "A")]) {
            p.wait_metrics("links up", |_| link_is(p, s, n, true));
        }
        // C's link goes down: no FIN, no RST, only silence.
        let cut = Instant::now();
        net.host("C").link_down();
        let (a, b) = (&procs[0], &procs[1]);
        a.wait_metrics("A to declare C down", |_| link_is(a, "A", "C", false));
        b.wait_metrics("B to declare C down", |_| link_is(b, "B", "C", false));
        detect.push(cut.elapsed());
        // Updates on both sides of the cut, each acknowledged.
        let on_a = client(&net, "A").ask(&format!("IAMAT a{round} +2+2 {}", timestamp()));
        // C is reached through its own console: the test's client host is
        // cut off from it too, so the update is made from inside C's host.
        let c_addr: SocketAddr = net.host("C").sock(PORT);
        let on_c = net.host("C").run(|| {
            let mut c = Client::connect(c_addr);
            c.ask(&format!("IAMAT c{round} +3+3 {}", timestamp()))
        });
        assert!(on_a.starts_with("AT A ") && on_c.starts_with("AT C "));
        // Stay cut for longer than the link timeout, then heal.
        std::thread::sleep(TIMEOUT / 2);
        let healed = Instant::now();
        net.host("C").link_up();
        known_at(&net, "C", &format!("a{round}"), &on_a);
        for h in ["A", "B"] {
            known_at(&net, h, &format!("c{round}"), &on_c);
        }
        converge.push(healed.elapsed());
        assert!(
            healed.elapsed() < Duration::from_secs(2),
            "round {round}: converged {:?} after the heal",
            healed.elapsed()
        );
    }
    if rounds() > 1 {
        detect.sort();
        converge.sort();
        println!(
            "hosts: link-down detected in median {:?}, max {:?} (link timeout {TIMEOUT:?}); converged after the heal in median {:?}, max {:?}; {} rounds",
            detect[detect.len() / 2],
            detect[detect.len() - 1],
            converge[converge.len() / 2],
            converge[converge.len() - 1],
            detect.len()
        );
    }

    // A fourth host: into the file, SIGHUP to its neighbour-to-be, start it.
    let four = [("A", "B"), ("B", "C"), ("A", "C"), ("C", "D")];
    write(
        dir.path(),
        "herd.conf",
        &config(&net, &["A", "B", "C", "D"], &four),
    );
    procs[2].signal(libc::SIGHUP);
    procs[2].wait_stderr("C to reload", |l| l.starts_with("herd: reloaded"));
    procs.push(run(net.host("D"), dir.path(), &conf, net.client()));
    known_at(&net, "D", "first", &first);
    let late = client(&net, "A").ask(&format!("IAMAT late +4+4 {}", timestamp()));
    known_at(&net, "D", "late", &late);
    let from_d = client(&net, "D").ask(&format!("IAMAT fromd +5+5 {}", timestamp()));
    known_at(&net, "B", "fromd", &from_d);
}

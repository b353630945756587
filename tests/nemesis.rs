//! The short form of `tools/nemesis` in CI: a few seeds of about 15 s of
//! combined faults against a herd of separate processes, each checked (see
//! tools/nemesis/checker.rs, whose own tests break each rule on purpose):
//! two seeds in the default network (as root, a host per server), one on
//! loopback behind the fault proxies, and one of a herd linked by mutual
//! TLS whose certificates rotate. As root the journals' disks fill too.
//! Six watchers follow clients throughout (two `WATCH *`, two over
//! WebSocket), reconnecting when their server dies. `HERD_NEMESIS_SEEDS` and
//! `HERD_NEMESIS_SECS` make it longer; the seed printed replays a failure:
//! `nemesis --seed S --seeds 1`.

mod support;

use std::path::Path;
use std::process::Command;

use support::certs::Ca;

fn env(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_string())
}

/// A seed from the clock, so CI covers new schedules over time.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() % 1_000_000)
        .unwrap_or(1)
}

/// Runs nemesis with `args`; panics unless every seed passed, injected
/// faults and checked more than 1,000 acknowledgements and 1,000 positions
/// pushed to watchers.
fn nemesis(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_nemesis"))
        .arg("--herd")
        .arg(env!("CARGO_BIN_EXE_herd"))
        .args(args)
        .output()
        .expect("run nemesis");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "nemesis failed: {text}");
    let total = text
        .lines()
        .find(|l| l.starts_with("nemesis total:"))
        .expect("a summary line");
    assert!(total.contains(" 0 seeds failed"), "{total}");
    assert!(!total.contains(": faults 0 "), "no fault injected: {total}");
    let acked: u64 = total
        .split(" acknowledged and checked")
        .next()
        .and_then(|p| p.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the acknowledged count");
    assert!(acked > 1000, "too little load: {total}");
    let pushed: u64 = total
        .split(" positions pushed to watchers and checked")
        .next()
        .and_then(|p| p.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the pushed count");
    assert!(pushed > 1000, "too few pushes watched: {total}");
}

#[test]
fn a_few_seeds_of_combined_faults_lose_nothing_acknowledged() {
    let seed = clock_seed().to_string();
    nemesis(&[
        "--seed",
        &seed,
        "--seeds",
        &env("HERD_NEMESIS_SEEDS", "2"),
        "--secs",
        &env("HERD_NEMESIS_SECS", "15"),
    ]);
}

#[test]
fn a_seed_on_loopback_behind_the_fault_proxies_loses_nothing() {
    let seed = (clock_seed() + 500_000).to_string();
    nemesis(&[
        "--seed",
        &seed,
        "--seeds",
        "1",
        "--secs",
        &env("HERD_NEMESIS_SECS", "15"),
        "--net",
        "loopback",
    ]);
}

/// Three generations of certificates, each from a CA of its own, as
/// `examples/herd-certs.rs` writes them: `dir/genK/ca.pem`, `NAME.pem`,
/// `NAME.key`.
fn generations(dir: &Path) {
    let names = ["Goloman", "Hands", "Holiday", "Welsh", "Wilkes", "Spare"];
    for k in 0..3 {
        let gen = dir.join(format!("gen{k}"));
        std::fs::create_dir_all(&gen).unwrap();
        let ca = Ca::new(&format!("herd CA {k}"));
        ca.write(&gen.join("ca.pem"));
        for name in names {
            ca.leaf(&[name]).write(&gen, name);
        }
    }
}

#[test]
fn a_tls_herd_whose_certificates_rotate_under_faults_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    generations(dir.path());
    // The first seed from the clock's whose schedule rotates the
    // certificates (about one fault in eight does).
    let seed = clock_seed().to_string();
    let certs = dir.path().to_str().unwrap();
    nemesis(&[
        "--seed",
        &seed,
        "--seeds",
        "1",
        "--secs",
        &env("HERD_NEMESIS_SECS", "15"),
        "--tls",
        certs,
        "--with",
        "rotate-certs",
    ]);
}

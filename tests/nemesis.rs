//! The short form of `tools/nemesis` in CI: a few seeds of about 20 s of
//! combined faults against a herd of separate processes, each checked (see
//! tools/nemesis/checker.rs, whose own tests break each rule on purpose).
//! As root the journals' disks fill too. `HERD_NEMESIS_SEEDS` and
//! `HERD_NEMESIS_SECS` make it longer; the seed printed replays a failure:
//! `nemesis --seed S --seeds 1`.

use std::process::Command;

#[test]
fn a_few_seeds_of_combined_faults_lose_nothing_acknowledged() {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    // Seeds from the clock, so CI covers new schedules over time.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() % 1_000_000)
        .unwrap_or(1);
    let out = Command::new(env!("CARGO_BIN_EXE_nemesis"))
        .arg("--herd")
        .arg(env!("CARGO_BIN_EXE_herd"))
        .args(["--seed", &seed.to_string()])
        .args(["--seeds", &env("HERD_NEMESIS_SEEDS", "3")])
        .args(["--secs", &env("HERD_NEMESIS_SECS", "15")])
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
    // It did something: faults injected and updates acknowledged.
    assert!(!total.contains(": faults 0 "), "no fault injected: {total}");
    let acked: u64 = total
        .split(" acknowledged and checked")
        .next()
        .and_then(|p| p.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the acknowledged count");
    assert!(acked > 1000, "too little load: {total}");
}

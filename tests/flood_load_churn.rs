//! `flood_load --mode churn` against the built herd binary: connection
//! cycles (connect, one IAMAT, half-close, read to the end) in plaintext,
//! over TLS with a full handshake each, and over TLS resuming
//! (`--tls-resume`: each slot a phone whose next cycle resumes from the
//! ticket its last one got). Each run lasts about a second and must report
//! cycles, no errors, and the handshakes it says it made; the server must
//! count the same kinds. (How fast is measured by `tools/tls-compare.sh`,
//! not asserted here.)

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use support::certs::{write_herd_certs, Ca, TLS_CONF_LINES};
use support::flood;
use support::procs::{free_port, write, HerdProc, HERD};

/// Runs `flood_load --mode churn` with `args`; the fields of its summary
/// line, after checking it succeeded with no errors.
fn churn(args: &[&str], cwd: &Path) -> HashMap<String, String> {
    let mut all = vec!["--mode", "churn", "--quiet", "--duration", "1"];
    all.extend(["--warmup", "0.3", "--sources", "4", "--conns", "4"]);
    all.extend(args);
    flood::summary(&all, cwd)
}

fn count(fields: &HashMap<String, String>, key: &str) -> u64 {
    flood::number(fields, key)
}

#[test]
fn churn_cycles_in_plaintext_over_tls_and_resuming() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("flood_load churn CA");
    write_herd_certs(dir.path(), &ca, &["Bench"]);
    let (line, tls, peer) = (free_port(), free_port(), free_port());
    let conf = format!(
        "server Bench 127.0.0.1:{line} tls 127.0.0.1:{tls} peer 127.0.0.1:{peer}\n{TLS_CONF_LINES}"
    );
    let path = write(dir.path(), "herd.conf", &conf);
    let herd = HerdProc::start(Command::new(HERD), dir.path(), &path, &["Bench"], &[]);
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p)).to_string();
    let ca_pem = dir.path().join("ca.pem").display().to_string();
    let cwd = dir.path();

    let got = churn(&["--addr", &addr(line)], cwd);
    assert!(count(&got, "rate") > 0, "{got:?}");
    assert_eq!(count(&got, "tls_full") + count(&got, "tls_resumed"), 0);

    let tls_args = [
        "--addr",
        &addr(tls),
        "--tls",
        &ca_pem,
        "--tls-name",
        "Bench",
    ];
    let got = churn(&tls_args, cwd);
    let full = count(&got, "tls_full");
    assert!(full > 0, "{got:?}");
    assert_eq!(count(&got, "tls_resumed"), 0, "{got:?}");

    let mut resuming = tls_args.to_vec();
    resuming.push("--tls-resume");
    let got = churn(&resuming, cwd);
    let resumed = count(&got, "tls_resumed");
    assert!(resumed > 0, "{got:?}");
    // Only a slot's first cycle has no ticket yet (in the warm-up, unless
    // the machine is very slow): at most one full handshake per slot.
    assert!(count(&got, "tls_full") <= 4, "{got:?}");

    // The server counted at least the handshakes the tool did, by kind
    // (the tool counts only those of cycles ending in its window).
    herd.wait_metrics("handshakes counted", |m| {
        let of = |kind: &str| {
            m.get(&format!(
                "herd_tls_handshakes_total{{server=\"Bench\",port=\"tls\",kind=\"{kind}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
        };
        of("full") >= full as f64 && of("resumed") >= resumed as f64
    });
}

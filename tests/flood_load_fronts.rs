//! `flood_load`'s fronts modes against the built herd binary: `--mode http`
//! (OsmAnd reports over keep-alive HTTP) and `--mode ws` (lines over a
//! WebSocket), plain, over TLS and resuming TLS sessions (`--tls-resume`),
//! and `--mode idle --idle-kind http|ws`, each run
//! for about a second against a real server; each must report non-zero
//! throughput and no errors, and what it sent must be stored.
//! (How fast is measured by `tools/fronts-compare.sh`, not asserted here.)

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use support::certs::Ca;
use support::flood::{self, FLOOD_LOAD};
use support::procs::{free_port, write, HerdProc, HERD};

/// One server, `Bench`, with a line port, an `http` port and an `https`
/// port (a certificate for `localhost` from a CA in `dir/ca.pem`).
struct Bench {
    dir: tempfile::TempDir,
    herd: HerdProc,
    line: SocketAddr,
    http: SocketAddr,
    https: SocketAddr,
}

impl Bench {
    fn start() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("flood_load test CA");
        ca.write(&dir.path().join("ca.pem"));
        ca.leaf(&["localhost"]).write(dir.path(), "public");
        let (line, http, https) = (free_port(), free_port(), free_port());
        let conf = format!(
            "server Bench 127.0.0.1:{line} http 127.0.0.1:{http} https 127.0.0.1:{https}\npublic_cert public.pem\npublic_key public.key\n"
        );
        let path = write(dir.path(), "herd.conf", &conf);
        let herd = HerdProc::start(Command::new(HERD), dir.path(), &path, &["Bench"], &[]);
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        Bench {
            dir,
            herd,
            line: addr(line),
            http: addr(http),
            https: addr(https),
        }
    }

    fn ca(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }
}

/// Runs flood_load with `args` (quiet, short); returns its stdout's fields
/// of the summary line, after checking it succeeded.
fn flood_load(args: &[&str], cwd: &Path) -> HashMap<String, String> {
    let mut all = vec![
        "--quiet",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--sources",
        "4",
    ];
    all.extend(args);
    flood::summary(&all, cwd)
}

fn number(fields: &HashMap<String, String>, key: &str) -> f64 {
    flood::number(fields, key)
}

#[test]
fn http_and_ws_modes_load_a_server_and_what_they_send_is_stored() {
    let b = Bench::start();
    let cwd = b.dir.path();
    let http = b.http.to_string();
    let got = flood_load(
        &[
            "--mode",
            "http",
            "--addr",
            &http,
            "--conns",
            "4",
            "--inflight",
            "4",
        ],
        cwd,
    );
    assert_eq!(got["mode"], "http");
    assert!(number(&got, "rate") > 0.0, "{got:?}");
    // Each of the 4 connections is a client the server now stores.
    b.herd.wait_metrics("4 clients stored", |m| {
        m.get("herd_stored_clients{server=\"Bench\"}")
            .is_some_and(|&n| n >= 4.0)
    });

    let got = flood_load(
        &[
            "--mode",
            "ws",
            "--addr",
            &http,
            "--conns",
            "3",
            "--inflight",
            "2",
            "--whatsat",
            "10",
        ],
        cwd,
    );
    assert_eq!(got["mode"], "ws");
    assert!(number(&got, "rate") > 0.0, "{got:?}");
    b.herd.wait_metrics("7 clients stored", |m| {
        m.get("herd_stored_clients{server=\"Bench\"}")
            .is_some_and(|&n| n >= 7.0)
    });

    // The same over TLS, on the https port.
    let https = b.https.to_string();
    let ca = b.ca();
    for mode in ["http", "ws"] {
        let got = flood_load(
            &[
                "--mode",
                mode,
                "--addr",
                &https,
                "--tls",
                &ca,
                "--tls-name",
                "localhost",
                "--conns",
                "2",
            ],
            cwd,
        );
        assert!(number(&got, "rate") > 0.0, "{mode} over TLS: {got:?}");
        assert_eq!(got["tls_full"], "2", "{mode} over TLS: {got:?}");
        assert_eq!(got["tls_resumed"], "0", "{mode} over TLS: {got:?}");
    }
    // Phones that reconnect: with --tls-resume each connection resumes the
    // session of an earlier visit of its own, on the https port too.
    for mode in ["http", "ws"] {
        let got = flood_load(
            &[
                "--mode",
                mode,
                "--addr",
                &https,
                "--tls",
                &ca,
                "--tls-name",
                "localhost",
                "--tls-resume",
                "--conns",
                "3",
            ],
            cwd,
        );
        assert!(number(&got, "rate") > 0.0, "{mode} resuming: {got:?}");
        assert_eq!(got["tls_resumed"], "3", "{mode} resuming: {got:?}");
        assert_eq!(got["tls_full"], "0", "{mode} resuming: {got:?}");
    }

    // An http mode pointed at a line port fails loudly, not silently.
    let out = Command::new(FLOOD_LOAD)
        .args([
            "--quiet",
            "--duration",
            "0.5",
            "--warmup",
            "0",
            "--mode",
            "http",
        ])
        .args(["--addr", &b.line.to_string(), "--conns", "1"])
        .output()
        .expect("run flood_load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains(" errors=0"), "{stdout}");
}

#[test]
fn idle_http_and_ws_connections_are_opened_and_still_served() {
    let b = Bench::start();
    let pid = b.herd.pid.to_string();
    let http = b.http.to_string();
    for kind in ["http", "ws"] {
        let got = flood_load(
            &[
                "--mode",
                "idle",
                "--idle-kind",
                kind,
                "--addr",
                &http,
                "--server-pid",
                &pid,
                "--conns",
                "60",
            ],
            b.dir.path(),
        );
        assert_eq!(got["kind"], kind);
        assert_eq!(got["conns"], "60");
    }
    let got = flood_load(
        &[
            "--mode",
            "idle",
            "--addr",
            &b.line.to_string(),
            "--server-pid",
            &pid,
            "--conns",
            "20",
        ],
        b.dir.path(),
    );
    assert_eq!(got["kind"], "line");
}

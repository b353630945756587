//! Prometheus's own tools accept what `/metrics` serves: `promtool check
//! metrics` lints a body from a server that has seen every kind of request,
//! and a real Prometheus server scrapes a running `herd` binary and answers
//! a query with the value the test caused.
//!
//! Both need the Debian package `prometheus` (`.ci/run` installs it when
//! run as root). Without it a test says why and passes, except under
//! `CI=true`, where a missing tool is a failure.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use herd::metrics::Endpoint;
use herd::server::{self, ServerConfig};
use support::herd::{wait_for, Client, KillOnDrop, PATIENCE};
use support::procs::{free_port, HerdProc, LocalConf, HERD};

/// How long Prometheus may take to start and scrape on a busy machine.
const PROMETHEUS_PATIENCE: Duration = Duration::from_secs(60);

/// Whether `tool` is on the PATH; if not, says so, and fails under CI.
fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is missing under CI=true: install the Debian package prometheus"
        );
        eprintln!("skipped: {tool} is not installed (Debian package prometheus; .ci/run installs it as root)");
    }
    found
}

/// A blocking HTTP/1.0 GET (so no chunked answer): status and body.
fn http_get(addr: SocketAddr, target: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(PATIENCE))?;
    write!(s, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no whole head"))?;
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    Ok((status, body.to_string()))
}

#[test]
fn promtool_accepts_the_exposition() {
    if !have("promtool") {
        return;
    }
    let (la, lb) = (
        server::bind("127.0.0.1:0".parse().unwrap()).unwrap(),
        server::bind("127.0.0.1:0".parse().unwrap()).unwrap(),
    );
    let (aa, ab) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let config = |name: &str, neighbour: (&str, SocketAddr)| ServerConfig {
        neighbours: vec![herd::links::Neighbour::plain(neighbour.0, neighbour.1)],
        state_dir: Some(dir.path().to_path_buf()),
        ..ServerConfig::alone(name)
    };
    let a = server::spawn(config("Alpha", ("Beta", ab)), la).unwrap();
    let b = server::spawn(config("Beta", ("Alpha", aa)), lb).unwrap();
    let ep = Endpoint::start(
        server::bind("127.0.0.1:0".parse().unwrap()).unwrap(),
        vec![a.stats.clone(), b.stats.clone()],
    )
    .unwrap();
    // Every family with samples: requests of each kind, Places answers (the
    // histogram), link traffic.
    let mut c = Client::connect(a.addr);
    c.ask("IAMAT lint +1+1 1600000000");
    c.send(b"WHATSAT lint 10 2\n");
    c.whatsat_reply().expect("an answer");
    c.ask("junk");
    wait_for("Beta to learn the update", || {
        let (_, body) = http_get(ep.addr(), "/metrics").ok()?;
        body.contains("herd_stored_clients{server=\"Beta\"} 1\n")
            .then_some(())
    });
    let (status, body) = http_get(ep.addr(), "/metrics").unwrap();
    assert_eq!(status, 200);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {said}\n{body}");
    assert!(said.trim().is_empty(), "promtool lint: {said}");
    a.stop().unwrap();
    b.stop().unwrap();
    ep.stop().unwrap();
}

/// Percent-encodes a query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_real_prometheus_scrapes_a_running_herd() {
    if !have("prometheus") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lc = LocalConf::new(&["Scraped"], &[]);
    let conf = lc.write(dir.path(), "h.conf");
    let herd = HerdProc::start(Command::new(HERD), dir.path(), &conf, &["Scraped"], &[]);
    let mport = herd.metrics.port();
    let pport = free_port();
    let n = 17;
    let mut c = Client::connect(lc.addr("Scraped"));
    for i in 0..n {
        c.ask(&format!("IAMAT scraped{i} +1+1 1600000000"));
    }

    let yml = dir.path().join("prometheus.yml");
    std::fs::write(
        &yml,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: herd\n    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", yml.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(KillOnDrop)
        .unwrap();
    let paddr: SocketAddr = format!("127.0.0.1:{pport}").parse().unwrap();
    let query = encode("herd_requests_total{job=\"herd\",server=\"Scraped\",kind=\"iamat\"}");
    let target = format!("/api/v1/query?query={query}");
    let deadline = Instant::now() + PROMETHEUS_PATIENCE;
    let mut last = String::new();
    let value = loop {
        if let Ok((200, body)) = http_get(paddr, &target) {
            let json: serde_json::Value =
                serde_json::from_str(&body).expect("JSON from Prometheus");
            let v = json["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_string);
            last = body;
            if let Some(v) = v {
                break v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never had the series; last answer: {last}\nits log:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(value, n.to_string(), "{last}");
    // And Prometheus considers the target up.
    let (_, up) = http_get(
        paddr,
        &format!("/api/v1/query?query={}", encode("up{job=\"herd\"}")),
    )
    .unwrap();
    assert!(up.contains("\"value\":[") && up.contains(",\"1\"]"), "{up}");
}

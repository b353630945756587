//! The built `herd` binary: exit statuses, signals, logs (docs/PROTOCOL.md §6–8).

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use support::herd::{wait_for, Client};
use support::procs::{free_port, write, HerdProc, LocalConf, HERD};

/// The binary run in `dir` (its working directory), so that whatever a
/// test leaves out of its flags lands there and never in the checkout.
fn herd_in(dir: &Path) -> Command {
    let mut cmd = Command::new(HERD);
    cmd.current_dir(dir);
    cmd
}

/// A one-server herd, `Solo`, run as its own process: `dir/h.conf`,
/// logs in `dir/logs`, journal in `dir/state`.
struct Solo {
    dir: std::path::PathBuf,
    conf: std::path::PathBuf,
    addr: std::net::SocketAddr,
}

impl Solo {
    fn new(dir: &Path) -> Solo {
        let conf = LocalConf::new(&["Solo"], &[]);
        Solo {
            dir: dir.to_path_buf(),
            conf: conf.write(dir, "h.conf"),
            addr: conf.addr("Solo"),
        }
    }

    /// Starts the server with `extra` arguments and waits until it is ready.
    fn start(&self, extra: &[&str]) -> (HerdProc, Client) {
        // Every line received and sent logged, as by default.
        let flags: Vec<&str> = ["--log-level", "debug"]
            .iter()
            .chain(extra)
            .copied()
            .collect();
        let p = HerdProc::start(Command::new(HERD), &self.dir, &self.conf, &["Solo"], &flags);
        (p, Client::connect(self.addr))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/Solo.log")).unwrap()
    }
}

#[test]
fn a_bad_config_exits_2_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "bad.conf",
        "server A 127.0.0.1:1\n# fine\nlink A Nowhere\n",
    );
    let out = herd_in(dir.path())
        .args(["A", "--config"])
        .arg(&conf)
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:", conf.display())), "{err}");
    assert!(
        !dir.path().join("logs").exists(),
        "nothing started before the config was checked"
    );
}

#[test]
fn an_unknown_name_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "h.conf",
        &format!("server A 127.0.0.1:{}\n", free_port()),
    );
    let out = herd_in(dir.path())
        .args(["B", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"B\""));
}

#[test]
fn help_describes_the_command_line() {
    let out = Command::new(HERD).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--config",
        "--log-dir",
        "--state-dir",
        "SIGTERM",
        "open-file limit",
        "--max-clients",
        "--line-limit",
        "--client-output",
        "--link-output",
        "--places-in-flight",
        "--invalid-rate",
        "--idle-timeout",
    ] {
        assert!(text.contains(word), "--help lacks {word}");
    }
}

#[test]
fn sigterm_stops_cleanly_with_the_log_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let lc = LocalConf::new(&["Alpha", "Beta"], &[("Alpha", "Beta")]);
    let conf = lc.write(dir.path(), "h.conf");
    let logs = dir.path().join("logs");
    let mut child = HerdProc::start(
        Command::new(HERD),
        dir.path(),
        &conf,
        &["Alpha", "Beta"],
        &["--log-level", "debug"],
    );
    let mut c = Client::connect(lc.addr("Alpha"));
    let at = c.ask("IAMAT logged.client +1+1 1520023934.5");
    assert!(at.starts_with("AT Alpha "), "{at}");
    // Beta learns it over the link.
    let mut b = Client::connect(lc.addr("Beta"));
    wait_for("Beta to know the update", || {
        (b.known("logged.client").as_deref() == Some(at.as_str())).then_some(())
    });

    child.signal(libc::SIGTERM);
    assert_eq!(child.wait_exit().code(), Some(0));

    let alpha = std::fs::read_to_string(logs.join("Alpha.log")).unwrap();
    let beta = std::fs::read_to_string(logs.join("Beta.log")).unwrap();
    for line in alpha.lines().chain(beta.lines()) {
        let mut f = line.split(' ');
        let stamp = f.next().unwrap();
        assert!(
            humantime::parse_rfc3339(stamp).is_ok(),
            "not RFC 3339: {line}"
        );
        assert!(matches!(f.next(), Some("Alpha") | Some("Beta")), "{line}");
    }
    assert!(
        alpha.contains("IAMAT logged.client +1+1 1520023934.5"),
        "{alpha}"
    );
    assert!(alpha.contains(&at), "the reply is logged");
    assert!(alpha.contains("link to Beta up"), "{alpha}");
    assert!(beta.contains("link from Alpha up"), "{beta}");
    assert!(beta.contains("catch-up from Alpha"), "{beta}");
    assert!(alpha.contains("catch-up to Beta: sent"), "{alpha}");
    assert!(alpha.contains("room for"), "the client capacity is logged");
    assert!(alpha.contains("signal 15"), "{alpha}");
}

/// A megabyte of traffic, several of the loop's batches
/// (`logging::LOG_BATCH_BYTES`), each written with whatever the writer had
/// buffered: every line reaches the file whole, once, in order, in the
/// format of docs/PROTOCOL.md §8, from two connections whose lines
/// interleave in the loop's turns.
#[test]
fn a_megabyte_of_traffic_is_logged_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let solo = Solo::new(dir.path());
    let (mut child, first) = solo.start(&[]);
    let mut clients = [first, Client::connect(solo.addr)];
    const N: usize = 2500;
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); 2];
    for (k, c) in clients.iter_mut().enumerate() {
        let mut all = String::new();
        for i in 0..N {
            // The client name makes each line about 100 bytes.
            let line = format!(
                "IAMAT c{k}.{i}.{} +1+1 {}.5",
                "x".repeat(60),
                1_600_000_000 + i
            );
            all.push_str(&line);
            all.push('\n');
            sent[k].push(line);
        }
        c.send(all.as_bytes());
    }
    let mut expected: Vec<Vec<String>> = vec![Vec::new(); 2];
    for (k, c) in clients.iter_mut().enumerate() {
        let peer = c.reader.get_ref().local_addr().unwrap();
        for line in &sent[k] {
            let reply = c.text();
            expected[k].push(format!("Solo DEBUG from {peer}: {line}"));
            expected[k].push(format!("Solo DEBUG to {peer}: {reply}"));
        }
    }
    child.signal(libc::SIGTERM);
    assert_eq!(child.wait_exit().code(), Some(0));
    let log = solo.log();
    assert!(log.len() > 1 << 20, "{} bytes", log.len());
    assert!(log.ends_with('\n'));
    for (k, want) in expected.iter().enumerate() {
        let peer = format!(" {}: ", clients[k].reader.get_ref().local_addr().unwrap());
        let got: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&peer))
            .map(|l| {
                let (stamp, rest) = l.split_once(' ').unwrap();
                assert!(humantime::parse_rfc3339(stamp).is_ok(), "{l}");
                rest
            })
            .collect();
        assert_eq!(got.len(), want.len(), "connection {k}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g, w);
        }
    }
}

#[test]
fn invalid_rate_is_a_flag_and_a_throttled_client_is_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let solo = Solo::new(dir.path());
    let (_child, mut c) = solo.start(&["--invalid-rate", "1024", "--log-level", "info"]);
    // 2 KiB of invalid lines at once: past a second's worth of 1 KiB/s.
    let junk = format!("{}\n", "j".repeat(63));
    c.send(junk.repeat(32).as_bytes());
    for _ in 0..32 {
        assert_eq!(c.text(), format!("? {}", junk.trim_end()));
    }
    assert!(c.ask("IAMAT fine +1+1 1").contains(" fine +1+1 1"));
    drop(c);
    let text = wait_for("the throttle and the disconnect in the log", || {
        Some(solo.log()).filter(|t| t.contains(" times for invalid input"))
    });
    assert_eq!(
        text.matches("sends invalid input faster than 1024 bytes/s")
            .count(),
        1,
        "{text}"
    );
}

#[test]
fn network_bytes_are_escaped_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let solo = Solo::new(dir.path());
    let (_child, mut c) = solo.start(&[]);
    c.send(b"FORGED\r2026-01-01T00:00:00Z Solo INFO fake \xff\n");
    assert!(c.line().starts_with(b"? FORGED"));
    let text = wait_for("the line to reach the log", || {
        Some(solo.log()).filter(|t| t.contains("FORGED"))
    });
    assert!(
        text.contains("FORGED\\x0d2026-01-01T00:00:00Z Solo INFO fake \\xff"),
        "{text}"
    );
}

/// An AT reply is logged as it is only when the IAMAT it answers was plain:
/// one whose client ID holds bytes to escape has its reply escaped too.
#[test]
fn an_iamat_reply_is_escaped_in_the_log_as_its_request_was() {
    let dir = tempfile::tempdir().unwrap();
    let solo = Solo::new(dir.path());
    let (_child, mut c) = solo.start(&[]);
    c.send(b"IAMAT odd\\id\xff +1+1 1600000000.5\nIAMAT plain-id +2+2 1600000000.5\n");
    assert!(c.line().starts_with(b"AT Solo "));
    assert!(c.line().starts_with(b"AT Solo "));
    let text = wait_for("both replies to reach the log", || {
        Some(solo.log()).filter(|t| t.matches(" DEBUG to ").count() >= 2)
    });
    let to = |id: &str| {
        text.lines()
            .find(|l| l.contains(" DEBUG to ") && l.contains(id))
            .unwrap_or_else(|| panic!("no reply to {id} logged:\n{text}"))
            .to_string()
    };
    assert!(
        to("odd").ends_with(" odd\\\\id\\xff +1+1 1600000000.5"),
        "{text}"
    );
    assert!(
        to("plain-id").ends_with(" plain-id +2+2 1600000000.5"),
        "{text}"
    );
}

#[test]
fn a_server_killed_with_sigkill_restarts_knowing_everything_it_answered() {
    let dir = tempfile::tempdir().unwrap();
    let solo = Solo::new(dir.path());
    let (child, mut c) = solo.start(&["--log-level", "info"]);
    let mut answered = Vec::new();
    let mut batch = Vec::new();
    for i in 0..2000 {
        batch.extend_from_slice(
            format!("IAMAT k{} +1+1 {}\n", i % 500, 1_600_000_000 + i).as_bytes(),
        );
    }
    c.send(&batch);
    for _ in 0..2000 {
        answered.push(c.text());
    }
    // Killed at once (SIGKILL), with no chance to flush anything.
    drop(child);

    let (_child, mut c) = solo.start(&["--log-level", "info"]);
    for at in &answered[1500..] {
        let client = at.split(' ').nth(3).unwrap();
        assert_eq!(c.known(client).as_deref(), Some(at.as_str()), "{client}");
    }
    assert!(solo.log().contains("journal replayed: "));
}

#[test]
fn a_torn_journal_tail_is_skipped_not_a_failed_start() {
    let dir = tempfile::tempdir().unwrap();
    let solo = Solo::new(dir.path());
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    write(
        &state,
        "Solo.journal",
        "AT Solo +0.000000001 whole +1+1 1600000000\nAT Solo +0.000000001 torn +1+1 16000",
    );
    let (_child, mut c) = solo.start(&[]);
    assert_eq!(
        c.known("whole").as_deref(),
        Some("AT Solo +0.000000001 whole +1+1 1600000000")
    );
    assert_eq!(c.known("torn"), None);
    assert!(solo.log().contains("a torn last record skipped"));
}

#[test]
fn the_banner_names_every_server_and_ready_comes_after_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let lc = LocalConf::new(&["Alpha", "Beta"], &[("Alpha", "Beta")]);
    let conf = lc.write(dir.path(), "h.conf");
    let (pa, pb) = (lc.addr("Alpha").port(), lc.addr("Beta").port());
    // A journal of 100,000 records for Alpha: the replay takes a while.
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mut journal = String::new();
    for i in 0..100_000 {
        journal.push_str(&format!(
            "AT Alpha +0.000000001 replayed{i} +34.068930-118.445127 {}.5\n",
            1_600_000_000 + i
        ));
    }
    write(&state, "Alpha.journal", &journal);

    let mut child = HerdProc::start(
        Command::new(HERD),
        dir.path(),
        &conf,
        &["Alpha", "Beta"],
        &[],
    );
    let (lines, ready_at) = child.banner();
    let banner = lines.join("\n");
    assert_eq!(lines.last().map(String::as_str), Some("herd: ready"));
    assert_eq!(lines.iter().filter(|l| *l == "herd: ready").count(), 1);
    let logs = dir.path().join("logs");
    for (name, port, other, other_port, clients) in [
        ("Alpha", pa, "Beta", pb, 100_000),
        ("Beta", pb, "Alpha", pa, 0),
    ] {
        for want in [
            format!("herd: {name}\n"),
            format!("clients     127.0.0.1:{port}\n"),
            format!("neighbours  {other} 127.0.0.1:{other_port}\n"),
            format!(
                "log         {}\n",
                logs.join(format!("{name}.log")).display()
            ),
            format!(
                "journal     {} ({clients} clients replayed)",
                state.join(format!("{name}.journal")).display()
            ),
        ] {
            assert!(
                banner.contains(&want),
                "{want:?} not in the banner:\n{banner}"
            );
        }
    }
    // Ready means serving, with everything replayed.
    let mut c = Client::connect(format!("127.0.0.1:{pa}").parse().unwrap());
    for i in [0, 99_999] {
        assert_eq!(
            c.known(&format!("replayed{i}")),
            Some(format!(
                "AT Alpha +0.000000001 replayed{i} +34.068930-118.445127 {}.5",
                1_600_000_000 + i
            ))
        );
    }
    // And it was said after the replay had finished, not before.
    let log = wait_for("the replay in Alpha's log", || {
        std::fs::read_to_string(logs.join("Alpha.log"))
            .ok()
            .filter(|t| t.contains("journal replayed: 100000 records"))
    });
    let line = log
        .lines()
        .find(|l| l.contains("journal replayed: "))
        .unwrap();
    let stamp = humantime::parse_rfc3339(line.split(' ').next().unwrap()).unwrap();
    assert!(
        stamp <= ready_at,
        "replayed at {line}, but ready read at {}",
        humantime::format_rfc3339_micros(ready_at)
    );
}

#[test]
fn check_config_describes_a_good_file_and_exits_2_on_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = write(
        dir.path(),
        "h.conf",
        &format!(
            "server Goloman 127.0.0.1:{port}\nserver Hands 127.0.0.1:1\nlink Goloman Hands\nsecret_env HERD_TEST_UNSET_SECRET\n"
        ),
    );
    let out = herd_in(dir.path())
        .args(["--check-config", "--config"])
        .arg(&conf)
        .env_remove("HERD_TEST_UNSET_SECRET")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        format!("{}: ok: 2 servers, 1 link", conf.display()),
        format!("server  Goloman  clients 127.0.0.1:{port}  neighbours Hands"),
        "server  Hands    clients 127.0.0.1:1  neighbours Goloman".to_string(),
        "link    Goloman Hands".to_string(),
        "places  legacy https://".to_string(),
        "secret  from $HERD_TEST_UNSET_SECRET: NOT SET".to_string(),
        "tls     none".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} not in:\n{text}");
    }
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It listened on nothing and wrote no logs.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    // (Without --log-dir, a start would have made logs/Goloman.log in its
    // working directory, the test's own.)
    assert!(!dir.path().join("logs").exists());
    // NAMEs given are checked too.
    let out = herd_in(dir.path())
        .args(["Nobody", "--check-config", "--config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let bad = write(
        dir.path(),
        "bad.conf",
        "server A 127.0.0.1:1\n\nserver A 127.0.0.1:2\n",
    );
    let out = herd_in(dir.path())
        .args(["--check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("herd: {}:3: ", bad.display())),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one sentence: {err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn help_lists_the_operator_flags_and_a_taken_metrics_port_is_one_clear_error() {
    let out = Command::new(HERD).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--metrics HOST:PORT",
        "--check-config",
        "/healthz",
        "herd: ready",
    ] {
        assert!(text.contains(word), "--help lacks {word}");
    }
    let dir = tempfile::tempdir().unwrap();
    let solo = Solo::new(dir.path());
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let out = herd_in(dir.path())
        .args(["Solo", "--config"])
        .arg(&solo.conf)
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .args(["--metrics", &taken_addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("herd: --metrics: bind ") && err.contains(&taken_addr),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

//! The built `herd` binary with TLS settings (docs/PROTOCOL.md §6, §12):
//! `--check-config` reads the certificates of the servers it is asked
//! about, and a server whose files do not load exits 2 with FILE:LINE
//! before it listens.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use support::certs::Ca;
use support::procs::{free_port, HERD};

/// `ca.pem` and `NAME.pem`/`NAME.key` for each of `names` in `dir`.
fn write_pki(dir: &Path, names: &[&str]) {
    let ca = Ca::new("herd CA");
    ca.write(&dir.join("ca.pem"));
    for name in names {
        ca.leaf(&[name]).write(dir, name);
    }
}

fn herd(args: &[&str], conf: &Path, dir: &Path) -> std::process::Output {
    Command::new(HERD)
        .current_dir(dir)
        .args(args)
        .arg("--config")
        .arg(conf)
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .output()
        .unwrap()
}

#[test]
fn check_config_reads_the_tls_files_of_the_servers_it_is_asked_about() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    write_pki(dir, &["Goloman", "Hands"]);
    let (a, b, c) = (free_port(), free_port(), free_port());
    let conf = dir.join("h.conf");
    std::fs::write(
        &conf,
        format!(
            "server Goloman 127.0.0.1:{a} peer 127.0.0.1:{b} tls 127.0.0.1:{c}\n\
             server Hands 127.0.0.1:1 peer 127.0.0.1:2\n\
             server Welsh 127.0.0.1:3 peer 127.0.0.1:4\n\
             link Goloman Hands\nlink Hands Welsh\n\
             tls_cert {{name}}.pem\ntls_key {{name}}.key\ntls_ca ca.pem\n"
        ),
    )
    .unwrap();

    // Goloman and Hands have their files.
    let out = herd(&["--check-config", "Goloman", "Hands"], &conf, dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for want in [
        format!("server  Goloman  clients 127.0.0.1:{a}  peer 127.0.0.1:{b}  tls 127.0.0.1:{c}  neighbours Hands"),
        format!("tls     cert {}  ({{name}}: each server's NAME)", dir.join("{name}.pem").display()),
        format!("tls     ca   {}", dir.join("ca.pem").display()),
        "tls     read and checked for Goloman, Hands: ".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} not in:\n{text}");
    }
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It listened on nothing.
    for port in [a, b, c] {
        assert!(TcpListener::bind(("127.0.0.1", port)).is_ok());
    }

    // With no NAME, every server: Welsh has no certificate.
    let out = herd(&["--check-config"], &conf, dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "herd: {}:6: tls_cert {}: cannot read: ",
        conf.display(),
        dir.join("Welsh.pem").display()
    );
    assert!(err.starts_with(&want), "{err}\nwanted {want}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(out.stdout.is_empty());

    // A server whose files do not load does not start: exit 2, FILE:LINE,
    // nothing listened on.
    std::fs::copy(dir.join("Hands.key"), dir.join("Goloman.key")).unwrap();
    let out = herd(&["Goloman"], &conf, dir);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "herd: {}:7: tls_key {}: not the private key of the certificate in {}",
        conf.display(),
        dir.join("Goloman.key").display(),
        dir.join("Goloman.pem").display()
    );
    assert!(err.starts_with(&want), "{err}\nwanted {want}");
    assert!(!dir.join("logs/Goloman.log").exists());
}

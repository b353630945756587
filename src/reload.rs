//! SIGHUP: the config file read again, checked against the running herd,
//! and turned into one new [`ServerConfig`] per server of this process.
//!
//! Everything that can fail happens here, on the main thread, before any
//! loop is told anything: reading and checking the file (the same reader
//! as at start-up), the changes a running process cannot make (a server it
//! runs removed, one of its listen addresses changed — client, peer or tls
//! port — or TLS turned on or off: those need a restart), the Places
//! settings, the secret's variable, the TLS files (read again for each
//! server, so renewed certificates are picked up), and resolving every
//! neighbour's address — so a reload never makes a loop wait on DNS or a
//! disk, and a bad file changes nothing anywhere. The loops then apply
//! their part ([`crate::server::StopHandle::reload`]) and log each change.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::config::{ConfigError, Endpoint, Herd};
use crate::places;
use crate::server::ServerConfig;
use crate::tls;

/// A checked reload: the new herd and, per server of this process (in the
/// order of `names`), its new configuration.
#[derive(Debug)]
pub struct Plan {
    pub herd: Herd,
    pub configs: Vec<ServerConfig>,
}

/// Reads `path` again for the servers `names`, which run now as
/// `running` describes them, each listening on its address in `listening`.
/// The error is one line: `FILE:LINE: what is wrong`, or `FILE: ...`.
pub fn prepare(
    path: &Path,
    running: &Herd,
    names: &[String],
    listening: &[SocketAddr],
) -> Result<Plan, String> {
    let herd = Herd::load(path).map_err(|e| e.to_string())?;
    let file = |line: usize, message: String| {
        ConfigError {
            file: path.to_path_buf(),
            line,
            message,
        }
        .to_string()
    };
    // A loop's ports speak TLS or not from its start to its end.
    match (&running.tls, &herd.tls) {
        (None, Some(files)) => {
            let line = files.cert.0.min(files.key.0).min(files.ca.0);
            return Err(file(
                line,
                "TLS cannot be turned on by a reload; restart the servers".to_string(),
            ));
        }
        (Some(_), None) => {
            return Err(file(
                0,
                "TLS (tls_cert, tls_key, tls_ca) cannot be turned off by a reload; restart the servers"
                    .to_string(),
            ));
        }
        _ => {}
    }
    let mut configs = Vec::new();
    for (name, addr) in names.iter().zip(listening) {
        let Some(i) = herd.index_of(name) else {
            return Err(file(
                0,
                format!("server {name}, which this process runs, is no longer in the file; a reload cannot remove it (stop the process instead)"),
            ));
        };
        let new = &herd.servers[i];
        let was = running.index_of(name).map(|j| &running.servers[j]);
        let old = was.map(|s| s.address());
        if old.as_deref() != Some(new.address().as_str()) {
            return Err(file(
                new.line,
                format!(
                    "server {name} listens on {} ({addr}) and cannot move to {} by a reload; restart it",
                    old.unwrap_or_default(),
                    new.address()
                ),
            ));
        }
        for (kind, before, after) in [
            ("peer", was.and_then(|s| s.peer.as_ref()), new.peer.as_ref()),
            ("tls", was.and_then(|s| s.tls.as_ref()), new.tls.as_ref()),
            ("http", was.and_then(|s| s.http.as_ref()), new.http.as_ref()),
            (
                "https",
                was.and_then(|s| s.https.as_ref()),
                new.https.as_ref(),
            ),
        ] {
            let shown = |e: Option<&Endpoint>| e.map_or("none".to_string(), Endpoint::address);
            if shown(before) != shown(after) {
                return Err(file(
                    new.line,
                    format!(
                        "server {name}'s {kind} port cannot change by a reload (from {} to {}); restart it",
                        shown(before),
                        shown(after)
                    ),
                ));
            }
        }
        let (mut config, _) = ServerConfig::from_herd(&herd, name).map_err(|e| file(0, e))?;
        if let Some(files) = &herd.tls {
            let loaded = tls::settings::load(files, path, name).map_err(|e| e.to_string())?;
            config.tls = Some(Arc::new(loaded));
        }
        if let Some(files) = &herd.public {
            let loaded =
                tls::settings::load_public(files, path, name).map_err(|e| e.to_string())?;
            config.public_tls = Some(loaded);
        }
        configs.push(config);
    }
    if let Some(config) = configs.first() {
        places::check_settings(&config.places, config.places_key.clone())
            .map_err(|e| file(0, format!("places: {e}")))?;
    }
    Ok(Plan { herd, configs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("herd.conf");
        std::fs::write(&path, text).unwrap();
        path
    }

    const TWO: &str = "server A 127.0.0.1:7001\nserver B 127.0.0.1:7002\nlink A B\n";

    #[test]
    fn a_new_neighbour_is_resolved_for_each_server() {
        let dir = tempfile::tempdir().unwrap();
        let running = Herd::parse(TWO, Path::new("herd.conf")).unwrap();
        let path = write(
            dir.path(),
            &format!("{TWO}server C 127.0.0.1:7003\nlink A C\n"),
        );
        let listening = ["127.0.0.1:7001".parse().unwrap()];
        let plan = prepare(&path, &running, &["A".into()], &listening).unwrap();
        let n: Vec<&str> = plan.configs[0]
            .neighbours
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(n, ["B", "C"]);
    }

    #[test]
    fn forbidden_and_invalid_reloads_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let running = Herd::parse(TWO, Path::new("herd.conf")).unwrap();
        let listening = ["127.0.0.1:7001".parse().unwrap()];
        let names = ["A".to_string()];
        let cases = [
            (
                "server B 127.0.0.1:7002\n",
                ": server A, which this process runs, is no longer",
            ),
            (
                "server B 127.0.0.1:7002\nserver A 127.0.0.1:7009\n",
                ":2: server A listens on",
            ),
            ("server A 127.0.0.1:7001\nbogus\n", ":2: unknown directive"),
        ];
        for (text, want) in cases {
            let path = write(dir.path(), text);
            let err = prepare(&path, &running, &names, &listening).unwrap_err();
            assert!(err.starts_with(&path.display().to_string()), "{err}");
            assert!(err.contains(want), "{err} (wanted {want})");
        }
    }

    #[test]
    fn peer_and_tls_ports_cannot_move_and_tls_cannot_be_switched() {
        use crate::tls::settings::testing::TestPki;
        let pki = TestPki::new();
        pki.servers(&["A", "B"]);
        let tls = pki.directives();
        let with = |servers: &str, tls_text: &str| format!("{servers}link A B\n{tls_text}");
        let ab = "server A 127.0.0.1:7001 peer 127.0.0.1:7101 tls 127.0.0.1:7201\n\
                  server B 127.0.0.1:7002 peer 127.0.0.1:7102\n";
        let conf = pki.config_file();
        let running = Herd::parse(&with(ab, tls), &conf).unwrap();
        let plain_ab = "server A 127.0.0.1:7001 peer 127.0.0.1:7101\n\
                        server B 127.0.0.1:7002 peer 127.0.0.1:7102\n";
        let plain = Herd::parse(&with(plain_ab, ""), &conf).unwrap();
        let listening = ["127.0.0.1:7001".parse().unwrap()];
        let names = ["A".to_string()];

        // Good: the same ports, the files read again for A.
        std::fs::write(&conf, with(ab, tls)).unwrap();
        let plan = prepare(&conf, &running, &names, &listening).unwrap();
        assert!(plan.configs[0].tls.is_some());
        // B's ports are not this process's: B may move.
        let b_moved = "server A 127.0.0.1:7001 peer 127.0.0.1:7101 tls 127.0.0.1:7201\n\
                       server B 127.0.0.1:7002 peer 127.0.0.1:7109\n";
        std::fs::write(&conf, with(b_moved, tls)).unwrap();
        prepare(&conf, &running, &names, &listening).unwrap();
        // Without TLS before or after, no TLS in the plan.
        std::fs::write(&conf, with(plain_ab, "")).unwrap();
        let plan = prepare(&conf, &plain, &names, &listening).unwrap();
        assert!(plan.configs[0].tls.is_none());

        let cases: [(&Herd, String, &str); 7] = [
            (
                &plain,
                with("server A 127.0.0.1:7001 peer 127.0.0.1:7101 http 127.0.0.1:7301\nserver B 127.0.0.1:7002 peer 127.0.0.1:7102\n", ""),
                ":1: server A's http port cannot change by a reload (from none to 127.0.0.1:7301); restart it",
            ),
            (
                &running,
                with("server A 127.0.0.1:7001 peer 127.0.0.1:7109 tls 127.0.0.1:7201\nserver B 127.0.0.1:7002 peer 127.0.0.1:7102\n", tls),
                ":1: server A's peer port cannot change by a reload (from 127.0.0.1:7101 to 127.0.0.1:7109); restart it",
            ),
            (
                &running,
                with("server B 127.0.0.1:7002 peer 127.0.0.1:7102\nserver A 127.0.0.1:7001 peer 127.0.0.1:7101\n", tls),
                ":2: server A's tls port cannot change by a reload (from 127.0.0.1:7201 to none); restart it",
            ),
            (
                &plain,
                with("server A 127.0.0.1:7001\nserver B 127.0.0.1:7002 peer 127.0.0.1:7102\n", ""),
                ":1: server A's peer port cannot change by a reload (from 127.0.0.1:7101 to none); restart it",
            ),
            (
                &plain,
                with(plain_ab, tls),
                ":4: TLS cannot be turned on by a reload; restart the servers",
            ),
            (
                &running,
                with("server A 127.0.0.1:7001 peer 127.0.0.1:7101\nserver B 127.0.0.1:7002 peer 127.0.0.1:7102\n", ""),
                ": TLS (tls_cert, tls_key, tls_ca) cannot be turned off by a reload; restart the servers",
            ),
            (
                &running,
                with(ab, "tls_cert {name}.pem\ntls_key B.key\ntls_ca ca.pem\n"),
                ":5: tls_key ",
            ),
        ];
        for (was, text, want) in cases {
            std::fs::write(&conf, &text).unwrap();
            let err = prepare(&conf, was, &names, &listening).unwrap_err();
            let at = conf.display().to_string();
            assert!(err.starts_with(&at), "{err}");
            assert!(
                err[at.len()..].starts_with(want),
                "{err} (wanted {want})\n{text}"
            );
        }
    }
}

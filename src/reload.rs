//! SIGHUP: the config file read again, checked against the running herd,
//! and turned into one new [`ServerConfig`] per server of this process.
//!
//! Everything that can fail happens here, on the main thread, before any
//! loop is told anything: reading and checking the file (the same reader
//! as at start-up), the changes a running process cannot make (a server it
//! runs removed, or its listen address changed: those need a restart), the
//! Places settings, the secret's variable, and resolving every neighbour's
//! address — so a reload never makes a loop wait on DNS, and a bad file
//! changes nothing anywhere. The loops then apply their part
//! ([`crate::server::StopHandle::reload`]) and log each change.

use std::net::SocketAddr;
use std::path::Path;

use crate::config::{ConfigError, Herd};
use crate::places;
use crate::server::ServerConfig;

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
    let mut configs = Vec::new();
    for (name, addr) in names.iter().zip(listening) {
        let Some(i) = herd.index_of(name) else {
            return Err(file(
                0,
                format!("server {name}, which this process runs, is no longer in the file; a reload cannot remove it (stop the process instead)"),
            ));
        };
        let new = &herd.servers[i];
        let old = running.index_of(name).map(|j| running.servers[j].address());
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
        let (config, _) = ServerConfig::from_herd(&herd, name).map_err(|e| file(0, e))?;
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
}

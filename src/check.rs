//! `herd --check-config`: what a config file describes, in a few lines for
//! a person (docs/PROTOCOL.md §7). The file is read by the same [`Herd::load`] as at
//! start-up, so a file this accepts is one the servers accept; this module
//! only describes the checked [`Herd`], and says which of the environment
//! variables it names are set (their values are never printed).

use std::fmt::Write;
use std::path::Path;

use crate::config::{Herd, PlacesApi};

/// The summary of `herd`, read from `file`; `env_set` says whether an
/// environment variable is set and not empty (`std::env` in the binary, a
/// table in tests).
pub fn summary(herd: &Herd, file: &Path, env_set: impl Fn(&str) -> bool) -> String {
    let mut out = String::new();
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    let _ = writeln!(
        out,
        "{}: ok: {}, {}",
        file.display(),
        plural(herd.servers.len(), "server"),
        plural(herd.links.len(), "link")
    );
    let width = herd.servers.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for (i, s) in herd.servers.iter().enumerate() {
        let neighbours: Vec<&str> = herd
            .neighbours(i)
            .into_iter()
            .map(|j| herd.servers[j].name.as_str())
            .collect();
        let neighbours = if neighbours.is_empty() {
            "none".to_string()
        } else {
            neighbours.join(", ")
        };
        let _ = writeln!(
            out,
            "server  {:width$}  clients {}  neighbours {neighbours}",
            s.name,
            s.address()
        );
    }
    for &(a, b) in &herd.links {
        let _ = writeln!(
            out,
            "link    {} {}",
            herd.servers[a].name, herd.servers[b].name
        );
    }
    let api = match herd.places.api {
        PlacesApi::Legacy => "legacy",
        PlacesApi::New => "new",
    };
    let _ = writeln!(out, "places  {api} {}", herd.places.url);
    let key = &herd.places.key_env;
    let _ = writeln!(
        out,
        "places  key from ${key}: {}",
        if env_set(key) {
            "set"
        } else {
            "not set (WHATSAT answers will carry REQUEST_DENIED)"
        }
    );
    if let Some(ca) = &herd.places.ca {
        let _ = writeln!(out, "places  extra root {}", ca.display());
    }
    match &herd.secret_env {
        Some(var) => {
            let _ = writeln!(
                out,
                "secret  from ${var}: {}",
                if env_set(var) {
                    "set (herd links authenticate)"
                } else {
                    "NOT SET (the servers will refuse to start)"
                }
            );
        }
        None => {
            let _ = writeln!(out, "secret  none: an open herd (links not authenticated)");
        }
    }
    let _ = writeln!(out, "tls     none (no TLS settings in this file)");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_servers_links_places_and_secret() {
        let text = "server Goloman 127.0.0.1:12000\nserver Hands [::1]:12001\nserver Welsh example.com:1\n\
                    link Goloman Hands\nsecret_env HERD_SECRET\n";
        let file = Path::new("h.conf");
        let herd = Herd::parse(text, file).unwrap();
        let s = summary(&herd, file, |v| v == "HERD_SECRET");
        for want in [
            "h.conf: ok: 3 servers, 1 link\n",
            "server  Goloman  clients 127.0.0.1:12000  neighbours Hands\n",
            "server  Hands    clients [::1]:12001  neighbours Goloman\n",
            "server  Welsh    clients example.com:1  neighbours none\n",
            "link    Goloman Hands\n",
            "places  legacy https://maps.googleapis.com/",
            "places  key from $GOOGLE_PLACES_API_KEY: not set",
            "secret  from $HERD_SECRET: set",
            "tls     none",
        ] {
            assert!(s.contains(want), "{want:?} not in\n{s}");
        }
    }
}

//! `herd --check-config`: what a config file describes, in a few lines for
//! a person (docs/PROTOCOL.md §7). The file is read by the same [`Herd::load`] as at
//! start-up, so a file this accepts is one the servers accept; this module
//! only describes the checked [`Herd`], and says which of the environment
//! variables it names are set (their values are never printed). The TLS
//! files are read by the binary ([`crate::tls::settings::load`]) before it
//! prints this; [`tls_checked`] is the line that says so.

use std::fmt::Write;
use std::path::Path;

use crate::config::{Endpoint, Herd, PlacesApi};

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
        let port = |kind: &str, e: &Option<Endpoint>| match e {
            Some(e) => format!("  {kind} {}", e.address()),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "server  {:width$}  clients {}{}{}{}{}  neighbours {neighbours}",
            s.name,
            s.address(),
            port("peer", &s.peer),
            port("tls", &s.tls),
            port("http", &s.http),
            port("https", &s.https),
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
    match &herd.tls {
        Some(tls) => {
            let per_server = |path: &Path| {
                if path.to_string_lossy().contains("{name}") {
                    "  ({name}: each server's NAME)"
                } else {
                    "  (the same file for every server)"
                }
            };
            let _ = writeln!(
                out,
                "tls     cert {}{}",
                tls.cert.1.display(),
                per_server(&tls.cert.1)
            );
            let _ = writeln!(
                out,
                "tls     key  {}{}",
                tls.key.1.display(),
                per_server(&tls.key.1)
            );
            let _ = writeln!(out, "tls     ca   {}", tls.ca.1.display());
            let _ = writeln!(
                out,
                "tls     herd links: mutual TLS 1.3, each certificate naming its server as a DNS name"
            );
        }
        None => {
            let _ = writeln!(out, "tls     none (no TLS settings in this file)");
        }
    }
    if let Some(public) = &herd.public {
        let _ = writeln!(
            out,
            "public  cert {}  key {}  (what the tls and https ports present)",
            public.cert.1.display(),
            public.key.1.display()
        );
    }
    if let Some(var) = &herd.api_token_env {
        let _ = writeln!(
            out,
            "http    requests need the token in ${var}: {}",
            if env_set(var) {
                "set"
            } else {
                "NOT SET (the servers will refuse to start)"
            }
        );
    }
    out
}

/// The line `--check-config` adds once it has read the TLS files for
/// `names`: each certificate, key and the CA were read and checked.
pub fn tls_checked(names: &[&str]) -> String {
    format!(
        "tls     read and checked for {}: certificate, key, name and chain to the CA\n",
        names.join(", ")
    )
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

    #[test]
    fn the_summary_shows_peer_and_tls_ports_and_the_tls_files() {
        let text = "server Goloman 127.0.0.1:12000 peer 127.0.0.1:13000 tls [::1]:14000\n\
                    server Hands 127.0.0.1:12001 tls 127.0.0.1:14001\n\
                    server Welsh 127.0.0.1:12002\n\
                    link Goloman Hands\n\
                    tls_cert certs/{name}.pem\ntls_key /keys/herd.key\ntls_ca certs/ca.pem\n";
        let file = Path::new("conf/h.conf");
        let herd = Herd::parse(text, file).unwrap();
        let s = summary(&herd, file, |_| false);
        for want in [
            "server  Goloman  clients 127.0.0.1:12000  peer 127.0.0.1:13000  tls [::1]:14000  neighbours Hands\n",
            "server  Hands    clients 127.0.0.1:12001  tls 127.0.0.1:14001  neighbours Goloman\n",
            "server  Welsh    clients 127.0.0.1:12002  neighbours none\n",
            "tls     cert conf/certs/{name}.pem  ({name}: each server's NAME)\n",
            "tls     key  /keys/herd.key  (the same file for every server)\n",
            "tls     ca   conf/certs/ca.pem\n",
            "tls     herd links: mutual TLS 1.3",
        ] {
            assert!(s.contains(want), "{want:?} not in\n{s}");
        }
        assert!(!s.contains("tls     none"), "{s}");
        assert_eq!(
            tls_checked(&["Goloman", "Hands"]),
            "tls     read and checked for Goloman, Hands: certificate, key, name and chain to the CA\n"
        );
    }
}

//! `GET /status.json`: the data behind the console (`/`), for the page and
//! for scripts. A pure function of snapshots, like [`super::expose`]: the
//! endpoint reads each server's [`crate::stats::ServerStats`] at request
//! time (relaxed atomics) and never waits on a herd loop.
//!
//! Counters are totals since start (the page derives rates from two
//! readings and their `now`); gauges are the value now. Every field is
//! always present, with one JSON type; [`FIELDS`] lists them, and
//! docs/OPERATING.md documents them in the same order.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::stats::{ServerSnapshot, KINDS, PORTS};

/// The `Content-Type` of `/status.json`.
pub const CONTENT_TYPE: &str = "application/json";

/// The layout's version: raised when a field changes meaning or goes away
/// (new fields may be added without raising it).
pub const VERSION: u64 = 1;

/// The labels of the ports a server may listen on, each a key of `listen`
/// (`null` when the server has no such port).
pub const LISTEN_PORTS: [&str; 5] = ["client", "peer", "tls", "http", "https"];

/// Every field: its path (`[]` stands for each element of an array), its
/// JSON type (`a|b`: either), and what it says.
pub const FIELDS: &[(&str, &str, &str)] = &[
    ("version", "number", "The layout's version (1); raised only when a field changes meaning or goes away."),
    ("started", "number", "When the process started, in seconds since the Unix epoch (milliseconds as a fraction)."),
    ("now", "number", "When this reading was taken, same unit: rates are differences of two readings over the difference of their `now`."),
    ("servers", "array", "One object per server this process runs, in command-line order."),
    ("servers[].name", "string", "The server's name."),
    ("servers[].listening", "boolean", "Its loop accepts clients."),
    ("servers[].listen", "object", "Where it listens, by port: `client`, `peer`, `tls`, `http`, `https`, each `\"HOST:PORT\"` or `null` when the server has no such port."),
    ("servers[].listen.client", "string", "The plaintext line-protocol client port."),
    ("servers[].listen.peer", "string|null", "The port for herd links only."),
    ("servers[].listen.tls", "string|null", "The TLS client port."),
    ("servers[].listen.http", "string|null", "The HTTP port (the console's positions plot watches over `ws://` this address `/v1/ws`)."),
    ("servers[].listen.https", "string|null", "The HTTPS port."),
    ("servers[].requests", "object", "Client lines answered since start, by kind (counters, as `herd_requests_total`)."),
    ("servers[].requests.iamat", "number", "IAMAT lines."),
    ("servers[].requests.whatsat", "number", "WHATSAT lines about a known client."),
    ("servers[].requests.invalid", "number", "Lines answered `? ` (over-long ones included)."),
    ("servers[].stored_clients", "number", "Clients whose position the server holds (gauge)."),
    ("servers[].connected_clients", "number", "Open client connections, herd links not included (gauge)."),
    ("servers[].peer_connections", "number", "Open incoming herd links (gauge)."),
    ("servers[].watchers", "number", "Connections watching clients with WATCH (gauge)."),
    ("servers[].journal", "string", "`ok`, `failing` (the last append failed; held replies wait), or `off` (the server keeps no journal)."),
    ("servers[].journal_error", "string", "While `failing`, the error of the first failed append; otherwise empty."),
    ("servers[].refused", "object", "Connections refused since start, by port: `client`, `tls`, `peer`, `http`, `https` (counters, as `herd_refused_connections_total`)."),
    ("servers[].refused.client", "number", "On the client port."),
    ("servers[].refused.tls", "number", "On the TLS client port (a handshake that failed or timed out)."),
    ("servers[].refused.peer", "number", "On the peer port (never became a link, or a certificate naming no neighbour)."),
    ("servers[].refused.http", "number", "On the HTTP port."),
    ("servers[].refused.https", "number", "On the HTTPS port (a handshake that failed or timed out)."),
    ("servers[].links", "array", "One object per neighbour (the server's outbound link to it), in the order of `herd.conf`. A neighbour may run in another process: this is all this process knows of it."),
    ("servers[].links[].neighbour", "string", "The neighbour's name."),
    ("servers[].links[].up", "boolean", "The link carries updates (`herd_link_up`)."),
    ("servers[].links[].queued_bytes", "number", "Bytes queued for the neighbour after the link's last write (gauge)."),
    ("servers[].links[].catchups", "number", "Catch-ups (the whole store) sent to the neighbour since start (counter)."),
];

fn seconds(t: SystemTime) -> f64 {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    ms as f64 / 1000.0
}

fn server(s: &ServerSnapshot) -> Value {
    let mut listen = Map::new();
    for port in LISTEN_PORTS {
        listen.insert(port.into(), Value::Null);
    }
    for (port, addr) in &s.listen {
        listen.insert((*port).into(), Value::String(addr.to_string()));
    }
    let requests: Map<String, Value> = KINDS
        .iter()
        .zip(s.requests)
        .map(|(k, v)| ((*k).into(), v.into()))
        .collect();
    let refused: Map<String, Value> = PORTS
        .iter()
        .zip(s.refused)
        .map(|(p, v)| ((*p).into(), v.into()))
        .collect();
    let (journal, error) = match &s.journal {
        None => ("off", ""),
        Some(j) if j.failing => ("failing", j.error.as_str()),
        Some(_) => ("ok", ""),
    };
    let links: Vec<Value> = s
        .links
        .iter()
        .map(|l| {
            json!({
                "neighbour": l.neighbour,
                "up": l.up,
                "queued_bytes": l.queued_bytes,
                "catchups": l.catchups,
            })
        })
        .collect();
    json!({
        "name": s.name,
        "listening": s.listening,
        "listen": listen,
        "requests": requests,
        "stored_clients": s.stored_clients,
        "connected_clients": s.client_connections,
        "peer_connections": s.peer_connections,
        "watchers": s.watchers,
        "journal": journal,
        "journal_error": error,
        "refused": refused,
        "links": links,
    })
}

/// The whole document for `servers`, the process having started at
/// `started`, read at `now`.
pub fn write(servers: &[ServerSnapshot], started: SystemTime, now: SystemTime) -> String {
    let doc = json!({
        "version": VERSION,
        "started": seconds(started),
        "now": seconds(now),
        "servers": servers.iter().map(server).collect::<Vec<_>>(),
    });
    let mut text = doc.to_string();
    text.push('\n');
    text
}

/// The values at `path` (a path of [`FIELDS`]) in `doc`: one per element
/// of each array on the way. For tests and scripts that check the layout.
pub fn lookup<'a>(doc: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut here = vec![doc];
    for part in path.split('.') {
        let (key, each) = match part.strip_suffix("[]") {
            Some(k) => (k, true),
            None => (part, false),
        };
        let mut next = Vec::new();
        for v in here {
            let Some(v) = v.get(key) else {
                // Missing: the caller sees fewer values than it expects.
                continue;
            };
            if each {
                next.extend(v.as_array().into_iter().flatten());
            } else {
                next.push(v);
            }
        }
        here = next;
    }
    here
}

/// Whether `v` has the JSON type `ty` (one of [`FIELDS`]' types).
pub fn has_type(v: &Value, ty: &str) -> bool {
    ty.split('|').any(|t| match t {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "null" => v.is_null(),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{JournalSnapshot, LinkSnapshot};

    fn snapshot() -> ServerSnapshot {
        ServerSnapshot {
            name: "Goloman".into(),
            listening: true,
            requests: [5, 2, 1],
            stored_clients: 4,
            client_connections: 3,
            watchers: 1,
            refused: [0, 7, 1, 0, 0],
            listen: vec![
                ("client", "127.0.0.1:12000".parse().unwrap()),
                ("peer", "127.0.0.1:13000".parse().unwrap()),
            ],
            links: vec![LinkSnapshot {
                neighbour: "Hands".into(),
                up: true,
                queued_bytes: 42,
                catchups: 1,
                updates_sent: 3,
                update_bytes_sent: 210,
            }],
            journal: Some(JournalSnapshot {
                failing: true,
                error: "No space left on device (os error 28)".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn every_field_is_there_with_its_type() {
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_500);
        let mut other = snapshot();
        other.name = "Hands".into();
        other.journal = None;
        let text = write(&[snapshot(), other], t, t);
        let doc: Value = serde_json::from_str(&text).unwrap();
        for &(path, ty, _) in FIELDS {
            let values = lookup(&doc, path);
            let want = if path.starts_with("servers[]") { 2 } else { 1 };
            assert_eq!(values.len(), want, "{path}");
            for v in values {
                assert!(has_type(v, ty), "{path}: {v} is not {ty}");
            }
        }
        let s = &doc["servers"][0];
        assert_eq!(doc["started"], 1.5);
        assert_eq!(s["listen"]["client"], "127.0.0.1:12000");
        assert_eq!(s["listen"]["tls"], Value::Null);
        assert_eq!(s["requests"]["whatsat"], 2);
        assert_eq!(s["refused"]["tls"], 7);
        assert_eq!(s["journal"], "failing");
        assert_eq!(s["links"][0]["queued_bytes"], 42);
        assert_eq!(doc["servers"][1]["journal"], "off");
    }

    #[test]
    fn fields_are_documented_in_the_operators_guide() {
        let guide = include_str!("../../docs/OPERATING.md");
        for &(path, ty, _) in FIELDS {
            let row = format!("| `{path}` | {} |", ty.replace('|', " or "));
            assert!(guide.contains(&row), "no row {row:?} in the guide");
        }
    }
}

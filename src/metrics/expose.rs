//! The Prometheus text exposition format, version 0.0.4, written from
//! snapshots: a pure function of numbers, no I/O.
//!
//! Each family is written once, `# HELP` and `# TYPE` first, then one sample
//! per server (and per label value); names follow the Prometheus
//! conventions: a `herd_` prefix, `_total` on counters, base units (seconds,
//! bytes) in the name. Series about one server carry `server="NAME"`; the
//! process's start time carries no label. Label values are escaped (`\`,
//! `"`, newline) as the format requires, although server names (printable
//! ASCII, no white space) only ever need the first two.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::stats::{
    LinkSnapshot, ServerSnapshot, HANDSHAKES, KINDS, OUTCOMES, PLACES_BUCKETS, PORTS, ROUTES,
    SOURCES, STATUSES,
};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every family this endpoint writes: name, type, help. Listed once here so
/// the README, the tests and the writer agree.
pub const FAMILIES: &[(&str, &str, &str)] = &[
    ("herd_server_listening", "gauge", "1 while the server's loop accepts clients, else 0."),
    ("herd_client_connections", "gauge", "Open client connections (accepted, not herd links)."),
    ("herd_peer_connections", "gauge", "Open connections from neighbours that said HERD NAME (incoming herd links)."),
    ("herd_requests_total", "counter", "Client lines answered, by kind: iamat, whatsat (about a known client), invalid (answered '? ', over-long lines included)."),
    ("herd_stored_clients", "gauge", "Clients whose position the server holds."),
    ("herd_updates_stored_total", "counter", "Updates stored because they were newer, by source: client (IAMAT) or link (AT from the herd)."),
    ("herd_evictions_total", "counter", "Clients evicted from a full store."),
    ("herd_expiries_total", "counter", "Client positions forgotten after --position-ttl."),
    ("herd_refused_connections_total", "counter", "Connections refused, by port: a TLS handshake that failed or timed out, a certificate naming no neighbour, a peer-port connection that never became a link."),
    ("herd_tls_handshakes_total", "counter", "TLS handshakes done, by port (tls, peer, https) and kind: full (certificate and signature) or resumed (from a session ticket)."),
    ("herd_link_up", "gauge", "1 while the outbound link to the neighbour carries updates, else 0."),
    ("herd_link_queued_bytes", "gauge", "Bytes queued for the neighbour on the outbound link after its last write."),
    ("herd_link_catchups_total", "counter", "Catch-ups (the whole store) sent to the neighbour."),
    ("herd_link_updates_sent_total", "counter", "Updates the flood queued for the neighbour (catch-ups not included)."),
    ("herd_link_update_bytes_sent_total", "counter", "Bytes of the updates the flood queued for the neighbour."),
    ("herd_places_requests_total", "counter", "Places requests answered, by outcome (the reply's status)."),
    ("herd_places_request_duration_seconds", "histogram", "Places request latency, from the WHATSAT to its answer."),
    ("herd_journal_appended_bytes_total", "counter", "Bytes appended to the journal."),
    ("herd_journal_failing", "gauge", "1 from a failed journal append until one succeeds, else 0."),
    ("herd_journal_write_failures_total", "counter", "Journal appends that failed."),
    ("herd_watchers", "gauge", "Connections watching positions (that have said WATCH)."),
    ("herd_watch_pushes_total", "counter", "Positions sent to watchers, the snapshots that answer WATCH included."),
    ("herd_watch_replaced_total", "counter", "Positions replaced by a newer one of the same client before a watcher had read them (conflated, never queued)."),
    ("herd_http_requests_total", "counter", "HTTP requests answered on http and https ports, by route (report, client, places, lines, ws, other) and status; a series appears at its first request."),
    ("herd_websocket_connections", "gauge", "Open WebSocket connections (upgraded by GET /v1/ws)."),
    ("herd_websocket_connections_total", "counter", "WebSocket connections opened since start."),
    ("herd_log_lines_dropped_total", "counter", "Log lines dropped because the log writer was behind."),
    ("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds."),
];

/// Appends `value` escaped as a label value.
fn label(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// One sample: `NAME{server="S"[,K="V"]} VALUE`.
fn sample(out: &mut String, name: &str, server: &str, extra: Option<(&str, &str)>, value: u64) {
    out.push_str(name);
    out.push_str("{server=\"");
    label(out, server);
    out.push('"');
    if let Some((k, v)) = extra {
        out.push(',');
        out.push_str(k);
        out.push_str("=\"");
        label(out, v);
        out.push('"');
    }
    let _ = writeln!(out, "}} {value}");
}

/// The whole exposition for `servers`, the process having started at `start`.
pub fn write(servers: &[ServerSnapshot], start: SystemTime) -> String {
    let mut out = String::with_capacity(4096 + servers.len() * 4096);
    for &(name, kind, help) in FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        if name == "process_start_time_seconds" {
            let secs = start
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let _ = writeln!(out, "{name} {secs:.3}");
            continue;
        }
        for s in servers {
            family(&mut out, name, s);
        }
    }
    out
}

/// One sample of family `name` per outbound link of `s`, labelled with the
/// neighbour's name.
fn per_link(
    out: &mut String,
    name: &str,
    s: &ServerSnapshot,
    value: impl Fn(&LinkSnapshot) -> u64,
) {
    for l in &s.links {
        let neighbour = Some(("neighbour", l.neighbour.as_str()));
        sample(out, name, &s.name, neighbour, value(l));
    }
}

fn family(out: &mut String, name: &str, s: &ServerSnapshot) {
    let server = s.name.as_str();
    let one = |out: &mut String, v: u64| sample(out, name, server, None, v);
    match name {
        "herd_server_listening" => one(out, s.listening.into()),
        "herd_client_connections" => one(out, s.client_connections),
        "herd_peer_connections" => one(out, s.peer_connections),
        "herd_requests_total" => {
            for (kind, v) in KINDS.iter().zip(s.requests) {
                sample(out, name, server, Some(("kind", kind)), v);
            }
        }
        "herd_stored_clients" => one(out, s.stored_clients),
        "herd_updates_stored_total" => {
            for (source, v) in SOURCES.iter().zip(s.updates_stored) {
                sample(out, name, server, Some(("source", source)), v);
            }
        }
        "herd_evictions_total" => one(out, s.evictions),
        "herd_watchers" => one(out, s.watchers),
        "herd_watch_pushes_total" => one(out, s.watch_pushed),
        "herd_watch_replaced_total" => one(out, s.watch_replaced),
        "herd_http_requests_total" => {
            for (route, row) in ROUTES.iter().zip(&s.http) {
                for (status, &v) in STATUSES.iter().zip(row) {
                    if v > 0 {
                        out.push_str(name);
                        out.push_str("{server=\"");
                        label(out, server);
                        let _ = writeln!(out, "\",route=\"{route}\",status=\"{status}\"}} {v}");
                    }
                }
            }
        }
        "herd_websocket_connections" => one(out, s.websockets),
        "herd_websocket_connections_total" => one(out, s.websockets_opened),
        "herd_expiries_total" => one(out, s.expiries),
        "herd_refused_connections_total" => {
            for (port, v) in PORTS.iter().zip(s.refused) {
                sample(out, name, server, Some(("port", port)), v);
            }
        }
        "herd_tls_handshakes_total" => {
            for (port, kinds) in PORTS.iter().zip(s.handshakes) {
                // Plaintext ports never make one.
                if !matches!(*port, "tls" | "peer" | "https") {
                    continue;
                }
                for (kind, v) in HANDSHAKES.iter().zip(kinds) {
                    out.push_str(name);
                    out.push_str("{server=\"");
                    label(out, server);
                    let _ = writeln!(out, "\",port=\"{port}\",kind=\"{kind}\"}} {v}");
                }
            }
        }
        "herd_link_up" => per_link(out, name, s, |l| l.up.into()),
        "herd_link_queued_bytes" => per_link(out, name, s, |l| l.queued_bytes),
        "herd_link_catchups_total" => per_link(out, name, s, |l| l.catchups),
        "herd_link_updates_sent_total" => per_link(out, name, s, |l| l.updates_sent),
        "herd_link_update_bytes_sent_total" => per_link(out, name, s, |l| l.update_bytes_sent),
        "herd_places_requests_total" => {
            for (outcome, v) in OUTCOMES.iter().zip(s.places) {
                sample(out, name, server, Some(("outcome", outcome)), v);
            }
        }
        "herd_places_request_duration_seconds" => {
            let h = &s.places_latency;
            let bucket = format!("{name}_bucket");
            for (i, le) in PLACES_BUCKETS.iter().enumerate() {
                let v = h.cumulative.get(i).copied().unwrap_or(h.count);
                sample(out, &bucket, server, Some(("le", &le.to_string())), v);
            }
            sample(out, &bucket, server, Some(("le", "+Inf")), h.count);
            out.push_str(name);
            out.push_str("_sum{server=\"");
            label(out, server);
            let _ = writeln!(out, "\"}} {}", h.sum_seconds);
            sample(out, &format!("{name}_count"), server, None, h.count);
        }
        "herd_journal_appended_bytes_total" => {
            if let Some(j) = &s.journal {
                one(out, j.appended_bytes);
            }
        }
        "herd_journal_failing" => {
            if let Some(j) = &s.journal {
                one(out, j.failing.into());
            }
        }
        "herd_journal_write_failures_total" => {
            if let Some(j) = &s.journal {
                one(out, j.failures);
            }
        }
        "herd_log_lines_dropped_total" => one(out, s.log_dropped),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{HistogramSnapshot, JournalSnapshot};

    fn server() -> ServerSnapshot {
        ServerSnapshot {
            name: "Go\"l\\oman".into(),
            listening: true,
            client_connections: 3,
            requests: [5, 2, 1],
            handshakes: [[0, 0], [3, 7], [1, 0], [0, 0], [2, 5]],
            links: vec![LinkSnapshot {
                neighbour: "Hands".into(),
                up: true,
                queued_bytes: 42,
                catchups: 1,
                updates_sent: 3,
                update_bytes_sent: 210,
            }],
            places_latency: HistogramSnapshot {
                cumulative: vec![1; PLACES_BUCKETS.len() + 1],
                sum_seconds: 0.004,
                count: 1,
            },
            journal: Some(JournalSnapshot {
                appended_bytes: 99,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn every_family_is_declared_once_before_its_samples() {
        let text = write(
            &[server()],
            UNIX_EPOCH + std::time::Duration::from_millis(1500),
        );
        for &(name, kind, _) in FAMILIES {
            assert_eq!(
                text.matches(&format!("# TYPE {name} {kind}\n")).count(),
                1,
                "{name}"
            );
        }
        let want = [
            "herd_requests_total{server=\"Go\\\"l\\\\oman\",kind=\"iamat\"} 5\n",
            "herd_link_queued_bytes{server=\"Go\\\"l\\\\oman\",neighbour=\"Hands\"} 42\n",
            "herd_link_update_bytes_sent_total{server=\"Go\\\"l\\\\oman\",neighbour=\"Hands\"} 210\n",
            "herd_tls_handshakes_total{server=\"Go\\\"l\\\\oman\",port=\"tls\",kind=\"resumed\"} 7\n",
            "herd_tls_handshakes_total{server=\"Go\\\"l\\\\oman\",port=\"peer\",kind=\"full\"} 1\n",
            "herd_places_request_duration_seconds_bucket{server=\"Go\\\"l\\\\oman\",le=\"0.005\"} 1\n",
            "herd_places_request_duration_seconds_bucket{server=\"Go\\\"l\\\\oman\",le=\"+Inf\"} 1\n",
            "herd_places_request_duration_seconds_sum{server=\"Go\\\"l\\\\oman\"} 0.004\n",
            "herd_places_request_duration_seconds_count{server=\"Go\\\"l\\\\oman\"} 1\n",
            "herd_journal_appended_bytes_total{server=\"Go\\\"l\\\\oman\"} 99\n",
            "process_start_time_seconds 1.500\n",
        ];
        for w in want {
            assert!(text.contains(w), "{w} missing from\n{text}");
        }
        assert!(text.contains("port=\"https\",kind=\"resumed\"} 5\n"));
        assert!(!text.contains("port=\"client\",kind="));
        assert!(!text.contains("port=\"http\",kind="));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn a_server_without_a_journal_has_no_journal_series() {
        let mut s = server();
        s.journal = None;
        let text = write(&[s], UNIX_EPOCH);
        assert!(!text.contains("herd_journal_failing{"));
        assert!(text.contains("# TYPE herd_journal_failing gauge"));
    }
}

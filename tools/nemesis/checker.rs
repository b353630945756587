//! The checker: a pure function of what the workload sent and saw
//! acknowledged, what every server holds once the herd is healed, what
//! watchers received, and what happened to the processes. It knows nothing
//! of sockets or time, so it is tested on histories made to break each rule.
//!
//! The rules (docs/PROTOCOL.md §3, §5, §15):
//!
//! 1. Every acknowledged update is on every server, or superseded there by
//!    a newer one the workload sent ([`Violation::Lost`]).
//! 2. A server holds only lines the workload sent ([`Violation::Unsent`]);
//!    an update acknowledged with an AT line is held as exactly that line.
//! 3. Every server holds the same newest line per client
//!    ([`Violation::Divergent`]).
//! 4. Watchers (§15). A watcher is a thread that holds one watching
//!    connection at a time and opens another when it fails (its server
//!    killed, a connection reset); each connection says one `WATCH`. The
//!    rule, per watcher:
//!    - on one connection, each client's positions strictly increase: a
//!      push is newer than anything sent before it, and the snapshot sends
//!      each position once ([`Violation::StalePush`], also for a repeat);
//!    - across connections nothing is required: a new connection's
//!      snapshot comes from the server it reached, which may be behind what
//!      an earlier connection saw elsewhere (or the same server restarted
//!      on its journal, which never pushed a position it had not written);
//!    - the last connection, the one open once the herd has converged,
//!      ends, for each client it watches that the herd holds, at the line
//!      every server holds ([`Violation::WatchBehind`]);
//!    - everything received is the AT line of an update the workload sent,
//!      of a client the watcher asked for, exactly as acknowledged if it
//!      was (anything else, a `? ` too: [`Violation::WatchStray`]).
//! 5. No process died unexpectedly or panicked ([`Violation::Incident`]);
//!    none grew past the memory bound ([`Violation::Memory`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

/// A client's timestamp in nanoseconds: the workload writes every IAMAT's
/// time as `SECONDS.NANOS`, unique across the run, so it names the update.
pub type Stamp = u128;

/// The stamp of an AT line (its last field, `SECONDS[.FRACTION]`).
pub fn stamp_of(line: &str) -> Option<Stamp> {
    let time = line.split_ascii_whitespace().last()?;
    let (secs, frac) = time.split_once('.').unwrap_or((time, ""));
    if frac.len() > 9 || secs.is_empty() {
        return None;
    }
    let secs: u128 = secs.parse().ok()?;
    let mut nanos: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    for _ in frac.len()..9 {
        nanos *= 10;
    }
    Some(secs * 1_000_000_000 + nanos)
}

/// The client ID of an AT line (its fourth field).
pub fn client_of(line: &str) -> Option<&str> {
    line.split_ascii_whitespace().nth(3)
}

/// One acknowledgement: the AT line a server answered an IAMAT with.
#[derive(Debug, Clone)]
pub struct Ack {
    pub client: String,
    pub stamp: Stamp,
    pub line: String,
}

/// What one watcher received: per connection, in order, every line.
#[derive(Debug, Clone, Default)]
pub struct WatchLog {
    pub name: String,
    /// The clients it watches by name; None: `WATCH *`.
    pub watches: Option<Vec<String>>,
    /// Each connection's lines (AT lines, or anything else it was sent),
    /// the connections in the order they were opened.
    pub conns: Vec<Vec<String>>,
}

impl WatchLog {
    /// Whether it watches `client`.
    pub fn watches(&self, client: &str) -> bool {
        self.watches
            .as_ref()
            .map_or(true, |w| w.iter().any(|c| c == client))
    }
}

/// Everything the checker looks at.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Every update the workload sent (acknowledged or not): client → stamps.
    pub sent: HashMap<String, BTreeSet<Stamp>>,
    pub acked: Vec<Ack>,
    /// Per server, after the heal: client → the AT line it holds (clients
    /// it does not know are absent).
    pub finals: BTreeMap<String, HashMap<String, String>>,
    pub watchers: Vec<WatchLog>,
    /// Unexpected exits and panics, as found.
    pub incidents: Vec<String>,
    /// Per server, the largest resident memory seen, in bytes.
    pub rss: BTreeMap<String, u64>,
    /// The bound on resident memory, in bytes.
    pub rss_bound: u64,
}

impl History {
    /// Records an update sent.
    pub fn sent(&mut self, client: &str, stamp: Stamp) {
        self.sent
            .entry(client.to_string())
            .or_default()
            .insert(stamp);
    }
}

/// A broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// `server` holds an older update than `acked`, or none.
    Lost {
        server: String,
        client: String,
        acked: Stamp,
        held: Option<Stamp>,
    },
    /// `server` holds a line the workload never sent, or not the line an
    /// update was acknowledged with.
    Unsent {
        server: String,
        line: String,
    },
    /// Servers hold different newest lines for `client` (None: unknown).
    Divergent {
        client: String,
        held: Vec<(String, Option<String>)>,
    },
    /// `watcher` received `got` for `client` after the newer `after`.
    StalePush {
        watcher: String,
        client: String,
        after: Stamp,
        got: Stamp,
    },
    /// `watcher` was sent `line`: not an AT line the workload sent (or not
    /// as acknowledged), or of a client it did not ask for.
    WatchStray {
        watcher: String,
        line: String,
    },
    /// `watcher`'s last position of `client` (on its last connection) is
    /// not the newest the herd holds.
    WatchBehind {
        watcher: String,
        client: String,
        last: Option<Stamp>,
        newest: Stamp,
    },
    Incident(String),
    Memory {
        server: String,
        bytes: u64,
        bound: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Lost {
                server,
                client,
                acked,
                held,
            } => write!(
                f,
                "lost: {server} holds {held:?} for {client}, older than the acknowledged {acked}"
            ),
            Violation::Unsent { server, line } => {
                write!(
                    f,
                    "unsent: {server} holds {line:?}, never sent or acknowledged so"
                )
            }
            Violation::Divergent { client, held } => {
                write!(f, "divergent: {client}: {held:?}")
            }
            Violation::StalePush {
                watcher,
                client,
                after,
                got,
            } => write!(
                f,
                "stale push: {watcher} got {got} for {client} after {after}"
            ),
            Violation::WatchStray { watcher, line } => write!(
                f,
                "watch stray: {watcher} was sent {line:?}, not a sent update of a client it watches"
            ),
            Violation::WatchBehind {
                watcher,
                client,
                last,
                newest,
            } => write!(
                f,
                "watch behind: {watcher}'s last connection last saw {last:?} for {client}, the herd holds {newest}"
            ),
            Violation::Incident(what) => write!(f, "incident: {what}"),
            Violation::Memory {
                server,
                bytes,
                bound,
            } => write!(f, "memory: {server} reached {bytes} bytes (bound {bound})"),
        }
    }
}

/// Every broken rule of `h`, in a stable order.
pub fn check(h: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    // The line each acknowledged stamp was answered with.
    let acked_line: HashMap<(&str, Stamp), &str> = h
        .acked
        .iter()
        .map(|a| ((a.client.as_str(), a.stamp), a.line.as_str()))
        .collect();
    // Rule 1: per client, the newest acknowledged stamp is enough (an
    // older one is superseded wherever the newest is).
    let mut newest_ack: BTreeMap<&str, Stamp> = BTreeMap::new();
    for a in &h.acked {
        let e = newest_ack.entry(&a.client).or_insert(a.stamp);
        *e = (*e).max(a.stamp);
    }
    for (server, held) in &h.finals {
        for (&client, &acked) in &newest_ack {
            let have = held.get(client).and_then(|l| stamp_of(l));
            if have.map_or(true, |t| t < acked) {
                out.push(Violation::Lost {
                    server: server.clone(),
                    client: client.to_string(),
                    acked,
                    held: have,
                });
            }
        }
        // Rule 2.
        let mut lines: Vec<&String> = held.values().collect();
        lines.sort();
        for line in lines {
            let known = match (client_of(line), stamp_of(line)) {
                (Some(c), Some(t)) => {
                    h.sent.get(c).is_some_and(|s| s.contains(&t))
                        && acked_line.get(&(c, t)).map_or(true, |l| *l == line)
                }
                _ => false,
            };
            if !known {
                out.push(Violation::Unsent {
                    server: server.clone(),
                    line: line.clone(),
                });
            }
        }
    }
    // Rule 3.
    let clients: BTreeSet<&str> = h
        .finals
        .values()
        .flat_map(|m| m.keys().map(String::as_str))
        .collect();
    for client in &clients {
        let held: Vec<(String, Option<String>)> = h
            .finals
            .iter()
            .map(|(s, m)| (s.clone(), m.get(*client).cloned()))
            .collect();
        if held.windows(2).any(|w| w[0].1 != w[1].1) {
            out.push(Violation::Divergent {
                client: client.to_string(),
                held,
            });
        }
    }
    // Rule 4, against the newest line the servers hold (any server: if
    // they differ, rule 3 has said so).
    let newest = |client: &str| -> Option<Stamp> {
        h.finals
            .values()
            .filter_map(|m| m.get(client).and_then(|l| stamp_of(l)))
            .max()
    };
    for w in &h.watchers {
        let mut last: BTreeMap<&str, Stamp> = BTreeMap::new();
        for conn in &w.conns {
            last.clear();
            for line in conn {
                let (client, t) = match (client_of(line), stamp_of(line)) {
                    (Some(c), Some(t)) if line.starts_with("AT ") => (c, t),
                    _ => {
                        out.push(Violation::WatchStray {
                            watcher: w.name.clone(),
                            line: line.clone(),
                        });
                        continue;
                    }
                };
                let sent = h.sent.get(client).is_some_and(|s| s.contains(&t))
                    && acked_line
                        .get(&(client, t))
                        .map_or(true, |l| *l == line.as_str());
                if !sent || !w.watches(client) {
                    out.push(Violation::WatchStray {
                        watcher: w.name.clone(),
                        line: line.clone(),
                    });
                    continue;
                }
                if let Some(&before) = last.get(client) {
                    if t <= before {
                        out.push(Violation::StalePush {
                            watcher: w.name.clone(),
                            client: client.to_string(),
                            after: before,
                            got: t,
                        });
                        continue;
                    }
                }
                last.insert(client, t);
            }
        }
        // `last` is the last connection's now.
        for client in &clients {
            if !w.watches(client) {
                continue;
            }
            if let Some(n) = newest(client) {
                if last.get(client) != Some(&n) {
                    out.push(Violation::WatchBehind {
                        watcher: w.name.clone(),
                        client: client.to_string(),
                        last: last.get(client).copied(),
                        newest: n,
                    });
                }
            }
        }
    }
    // Rule 5.
    out.extend(h.incidents.iter().cloned().map(Violation::Incident));
    for (server, &bytes) in &h.rss {
        if bytes > h.rss_bound {
            out.push(Violation::Memory {
                server: server.clone(),
                bytes,
                bound: h.rss_bound,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(server: &str, client: &str, stamp: Stamp) -> String {
        format!(
            "AT {server} +0.000000001 {client} +1+1 {}.{:09}",
            stamp / 1_000_000_000,
            stamp % 1_000_000_000
        )
    }

    /// Two servers; c1 updated twice (both acknowledged at A), c2 once
    /// (sent to B, never acknowledged); both servers converged.
    fn good() -> History {
        let mut h = History {
            rss_bound: 1 << 30,
            ..History::default()
        };
        for (c, t) in [("c1", 10), ("c1", 20), ("c2", 15)] {
            h.sent(c, t);
        }
        for t in [10, 20] {
            h.acked.push(Ack {
                client: "c1".into(),
                stamp: t,
                line: at("A", "c1", t),
            });
        }
        let held: HashMap<String, String> = [
            ("c1".to_string(), at("A", "c1", 20)),
            ("c2".to_string(), at("B", "c2", 15)),
        ]
        .into();
        h.finals.insert("A".into(), held.clone());
        h.finals.insert("B".into(), held);
        // A watcher of every client: its first connection saw c1's first
        // update and c2, then failed; its second connection's snapshot is
        // c1's newest and c2.
        h.watchers.push(WatchLog {
            name: "w".into(),
            watches: None,
            conns: vec![
                vec![at("A", "c1", 10), at("B", "c2", 15)],
                vec![at("B", "c2", 15), at("A", "c1", 20)],
            ],
        });
        // A watcher of c1 alone, on one connection.
        h.watchers.push(WatchLog {
            name: "v".into(),
            watches: Some(vec!["c1".into()]),
            conns: vec![vec![at("A", "c1", 10), at("A", "c1", 20)]],
        });
        h.rss.insert("A".into(), 1 << 20);
        h
    }

    #[test]
    fn stamps_read_the_time_field_in_nanoseconds() {
        assert_eq!(stamp_of("AT A +0.1 c +1+1 1.5"), Some(1_500_000_000));
        assert_eq!(stamp_of("AT A +0.1 c +1+1 2"), Some(2_000_000_000));
        assert_eq!(
            stamp_of("AT A +0.1 c +1+1 1.000000007"),
            Some(1_000_000_007)
        );
        assert_eq!(stamp_of("AT A +0.1 c +1+1 1.0000000001"), None);
        assert_eq!(client_of("AT A +0.1 c +1+1 1"), Some("c"));
    }

    #[test]
    fn a_correct_history_passes() {
        assert_eq!(check(&good()), vec![]);
    }

    #[test]
    fn a_lost_acknowledgement_fails() {
        let mut h = good();
        // B kept the first update of c1, not the acknowledged second.
        h.finals
            .get_mut("B")
            .unwrap()
            .insert("c1".into(), at("A", "c1", 10));
        let v = check(&h);
        assert!(
            v.contains(&Violation::Lost {
                server: "B".into(),
                client: "c1".into(),
                acked: 20,
                held: Some(10),
            }),
            "{v:?}"
        );
        // Forgotten altogether.
        let mut h = good();
        h.finals.get_mut("A").unwrap().remove("c1");
        assert!(check(&h).iter().any(|v| matches!(
            v,
            Violation::Lost { server, held: None, .. } if server == "A"
        )));
    }

    #[test]
    fn a_divergent_server_fails() {
        let mut h = good();
        // B does not know c2 at all (c2 was never acknowledged, so only
        // the divergence says so).
        h.finals.get_mut("B").unwrap().remove("c2");
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(matches!(&v[0], Violation::Divergent { client, .. } if client == "c2"));
    }

    #[test]
    fn a_line_never_sent_or_not_as_acknowledged_fails() {
        let mut h = good();
        // (What watchers were sent is another rule's.)
        h.watchers.clear();
        for m in h.finals.values_mut() {
            m.insert("c3".into(), at("A", "c3", 99));
        }
        assert_eq!(
            check(&h),
            vec![
                Violation::Unsent {
                    server: "A".into(),
                    line: at("A", "c3", 99)
                },
                Violation::Unsent {
                    server: "B".into(),
                    line: at("A", "c3", 99)
                },
            ]
        );
        // The acknowledged stamp, but another server's line: not what was
        // acknowledged.
        let mut h = good();
        h.watchers.clear();
        for m in h.finals.values_mut() {
            m.insert("c1".into(), at("B", "c1", 20));
        }
        assert_eq!(check(&h).len(), 2);
    }

    #[test]
    fn a_stale_push_fails() {
        let mut h = good();
        h.watchers[1].conns = vec![vec![at("A", "c1", 20), at("A", "c1", 10)]];
        assert_eq!(
            check(&h),
            vec![Violation::StalePush {
                watcher: "v".into(),
                client: "c1".into(),
                after: 20,
                got: 10,
            }]
        );
        // The same position twice on one connection: not a newer one.
        let mut h = good();
        h.watchers[1].conns = vec![vec![at("A", "c1", 20), at("A", "c1", 20)]];
        assert_eq!(
            check(&h),
            vec![Violation::StalePush {
                watcher: "v".into(),
                client: "c1".into(),
                after: 20,
                got: 20,
            }]
        );
    }

    #[test]
    fn a_new_connection_may_start_behind_but_must_end_at_the_newest() {
        // The second connection reached a server that was behind (c1 at
        // 10 after the first saw 20), then was pushed the newest.
        let mut h = good();
        h.watchers[1].conns = vec![
            vec![at("A", "c1", 20)],
            vec![at("A", "c1", 10), at("A", "c1", 20)],
        ];
        assert_eq!(check(&h), vec![]);
        // Without that push it ends behind, whatever the first saw.
        h.watchers[1].conns[1].pop();
        assert_eq!(
            check(&h),
            vec![Violation::WatchBehind {
                watcher: "v".into(),
                client: "c1".into(),
                last: Some(10),
                newest: 20,
            }]
        );
    }

    #[test]
    fn a_watcher_that_never_saw_the_newest_fails() {
        let mut h = good();
        h.watchers[1].conns[0].pop();
        assert_eq!(
            check(&h),
            vec![Violation::WatchBehind {
                watcher: "v".into(),
                client: "c1".into(),
                last: Some(10),
                newest: 20,
            }]
        );
        // A watcher of every client that was never sent c2 on its last
        // connection (the first one saw it).
        let mut h = good();
        h.watchers[0].conns[1].remove(0);
        assert_eq!(
            check(&h),
            vec![Violation::WatchBehind {
                watcher: "w".into(),
                client: "c2".into(),
                last: None,
                newest: 15,
            }]
        );
    }

    #[test]
    fn a_line_a_watcher_should_not_have_been_sent_fails() {
        let stray = |line: String| {
            let mut h = good();
            h.watchers[1].conns[0].push(line.clone());
            (
                check(&h),
                vec![Violation::WatchStray {
                    watcher: "v".into(),
                    line,
                }],
            )
        };
        // Never sent; sent, but not the line acknowledged; a client it did
        // not ask for; a refusal.
        for line in [
            at("A", "c1", 30),
            at("B", "c1", 20),
            at("B", "c2", 15),
            "? WATCH c1".to_string(),
        ] {
            let (got, want) = stray(line);
            assert_eq!(got, want);
        }
    }

    #[test]
    fn incidents_and_memory_fail() {
        let mut h = good();
        h.incidents.push("B exited with status 101".into());
        h.rss.insert("B".into(), 2 << 30);
        let v = check(&h);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(matches!(&v[1], Violation::Memory { server, .. } if server == "B"));
    }
}

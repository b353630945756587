//! `flood_load --metrics HOST:PORT`: the server's own figures beside the
//! tool's. Before a run the tool scrapes the herd's `/metrics` endpoint
//! ([`scrape`]); after it, [`report`] scrapes again and prints what the
//! server counted over the run (requests by kind, summed over every server
//! of the process) next to what the tool counted, plus the stored clients
//! and the bytes queued on herd links at the end.
//!
//! A blocking HTTP/1.0 GET over `std::net::TcpStream` (so the answer is
//! never chunked) and a small parser of sample lines: enough for the
//! numbers printed here, not a validator (`tests/metrics.rs` has the strict
//! one).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One scrape: every sample, by `name{labels}` as written.
pub struct Figures {
    samples: HashMap<String, f64>,
}

impl Figures {
    /// The sum of the samples of `name` whose labels contain `label`
    /// (e.g. `kind="iamat"`; empty: all of them).
    fn sum(&self, name: &str, label: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| {
                let (n, labels) = series.split_once('{').unwrap_or((series.as_str(), ""));
                n == name && labels.contains(label)
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// The sum of the samples of `name` whose labels contain every one of
    /// `labels` (e.g. `server="Welsh"` and `source="link"`).
    pub fn sum_all(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| {
                let (n, l) = series.split_once('{').unwrap_or((series.as_str(), ""));
                n == name && labels.iter().all(|want| l.contains(want))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// The values of label `label` among the samples of `name` (e.g. every
    /// `server` that reported `herd_stored_clients`), sorted.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let key = format!("{label}=\"");
        let mut out: Vec<String> = self
            .samples
            .keys()
            .filter_map(|series| {
                let (n, l) = series.split_once('{')?;
                let start = l.find(&key)? + key.len();
                let end = l[start..].find('"')? + start;
                (n == name).then(|| l[start..end].to_string())
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// `GET /metrics` from `addr`; `None` (and a warning on stderr) if that fails.
pub fn scrape(addr: Option<SocketAddr>) -> Option<Figures> {
    let addr = addr?;
    match get(addr) {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("flood_load: --metrics {addr}: {e}");
            None
        }
    }
}

fn get(addr: SocketAddr) -> std::io::Result<Figures> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no HTTP head"))?;
    if !head.starts_with("HTTP/1.1 200 ") {
        let status = head.lines().next().unwrap_or("");
        return Err(std::io::Error::other(format!("answered {status}")));
    }
    Ok(Figures {
        samples: parse(body),
    })
}

/// Sample lines `NAME{LABELS} VALUE` (or `NAME VALUE`); comments skipped.
fn parse(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// Scrapes `addr` again and prints the server's figures since `before`
/// beside the tool's: `replies` counted in the measured window, of `sent`.
pub fn report(addr: Option<SocketAddr>, before: Option<&Figures>, replies: u64, sent: u64) {
    let (Some(before), Some(after)) = (before, scrape(addr)) else {
        return;
    };
    let delta = |name: &str, label: &str| after.sum(name, label) - before.sum(name, label);
    let kinds = ["iamat", "whatsat", "invalid"]
        .map(|k| delta("herd_requests_total", &format!("kind=\"{k}\"")));
    println!(
        "server      counted {:.0} requests over the run, warm-up and drain included (iamat {:.0}, whatsat {:.0}, invalid {:.0}); this tool: {replies} replies of {sent} sent in the window",
        kinds.iter().sum::<f64>(),
        kinds[0],
        kinds[1],
        kinds[2]
    );
    println!(
        "server      stores {:.0} clients; {:.0} bytes queued on herd links; {:.0} client connections open; {:.0} log lines dropped over the run",
        after.sum("herd_stored_clients", ""),
        after.sum("herd_link_queued_bytes", ""),
        after.sum("herd_client_connections", ""),
        delta("herd_log_lines_dropped_total", "")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_by_name_and_label() {
        let f = Figures {
            samples: parse(
                "# HELP x X\nherd_requests_total{server=\"A\",kind=\"iamat\"} 3\nherd_requests_total{server=\"B\",kind=\"iamat\"} 4\nherd_requests_total{server=\"B\",kind=\"invalid\"} 1\nprocess_start_time_seconds 17.5\n",
            ),
        };
        assert_eq!(f.sum("herd_requests_total", "kind=\"iamat\""), 7.0);
        assert_eq!(f.sum("herd_requests_total", ""), 8.0);
        assert_eq!(f.sum("process_start_time_seconds", ""), 17.5);
    }
}

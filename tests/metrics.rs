//! The operator endpoint over real sockets (docs/PROTOCOL.md §11): `/metrics` parsed
//! by a strict exposition-format parser, counters that move by exactly what
//! was sent, link gauges that follow a neighbour, `/healthz`, and the
//! endpoint's bounds. In-process servers on `127.0.0.1:0`, except where the
//! journal must really fail to write: there the built binary runs under a
//! file-size limit (RLIMIT_FSIZE, set and lifted from outside with
//! prlimit(2), which works as root and as any user).

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use herd::metrics::{self, Endpoint};
use herd::server::{self, Running, ServerConfig};
use herd::stats::ServerStats;
use support::herd::{wait_for, Client, PATIENCE};
use support::procs::{free_port, HerdProc, LocalConf, HERD};

// ---------------------------------------------------------------------------
// A strict parser of the text exposition format (version 0.0.4).

/// One sample line.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: families by name (type), samples in order.
#[derive(Debug, Default)]
struct Exposition {
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|e| format!("value {s:?}: {e}")),
    }
}

/// `{a="b",c="d"}` at the start of `s`: the labels and the rest of `s`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').ok_or("expected {")?;
    if let Some(r) = rest.strip_prefix('}') {
        return Ok((labels, r));
    }
    loop {
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !valid_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("newline in a label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        } else {
            return Err("expected , or } after a label".into());
        }
    }
}

/// The family a sample name belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).map(String::as_str) == Some("histogram") {
                return Some(base);
            }
        }
    }
    None
}

/// Parses `text` strictly: every line a `# HELP`, a `# TYPE` or a sample;
/// each family declared once with both before any of its samples, its
/// samples together; names and labels well-formed; values numbers; no
/// series twice; counters named `_total` and not negative; histograms with
/// cumulative buckets ending in `+Inf`, equal to `_count`, and a `_sum`.
fn parse_strict(text: &str) -> Result<Exposition, String> {
    if !text.ends_with('\n') {
        return Err("the body does not end with a newline".into());
    }
    let mut e = Exposition::default();
    let mut helped: HashMap<String, ()> = HashMap::new();
    let mut done_families: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (what, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let arg = parts.next().unwrap_or("");
            if !valid_metric_name(name) {
                return Err(err(format!("bad metric name {name:?}")));
            }
            if done_families.iter().any(|f| f == name) || current.as_deref() == Some(name) {
                return Err(err("declared after its samples".into()));
            }
            match what {
                "HELP" => {
                    if arg.is_empty() || helped.insert(name.into(), ()).is_some() {
                        return Err(err("empty or repeated HELP".into()));
                    }
                }
                "TYPE" => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                        return Err(err(format!("unknown type {arg:?}")));
                    }
                    if !helped.contains_key(name) {
                        return Err(err("TYPE before HELP".into()));
                    }
                    if e.types.insert(name.into(), arg.into()).is_some() {
                        return Err(err("repeated TYPE".into()));
                    }
                    if arg == "counter" && !name.ends_with("_total") {
                        return Err(err("a counter not named _total".into()));
                    }
                }
                _ => return Err(err("a comment that is neither HELP nor TYPE".into())),
            }
            continue;
        }
        if line.is_empty() {
            return Err(err("empty line".into()));
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(err(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(err)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(err)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| err(format!("timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing fields".into()));
        }
        let family =
            family_of(name, &e.types).ok_or_else(|| err("no TYPE for this sample".into()))?;
        if !helped.contains_key(family) {
            return Err(err("no HELP for this sample".into()));
        }
        if current.as_deref() != Some(family) {
            if done_families.iter().any(|f| f == family) {
                return Err(err("the family's samples are not together".into()));
            }
            if let Some(c) = current.take() {
                done_families.push(c);
            }
            current = Some(family.to_string());
        }
        let kind = e.types[family].as_str();
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(err("a negative or NaN counter".into()));
        }
        if kind == "histogram" && name.ends_with("_bucket") != labels.contains_key("le") {
            return Err(err("le belongs on _bucket samples only".into()));
        }
        if !seen.insert(format!("{name}{labels:?}")) {
            return Err(err("a series twice".into()));
        }
        e.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    check_histograms(&e)?;
    Ok(e)
}

fn check_histograms(e: &Exposition) -> Result<(), String> {
    for (family, _) in e.types.iter().filter(|(_, t)| *t == "histogram") {
        // Series of the family by their labels without `le`.
        let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        let mut counts: BTreeMap<String, f64> = BTreeMap::new();
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        for s in &e.samples {
            let mut key = s.labels.clone();
            let le = key.remove("le");
            let key = format!("{key:?}");
            if s.name == format!("{family}_bucket") {
                let le = parse_value(le.as_deref().unwrap_or(""))
                    .map_err(|m| format!("{family}: le {m}"))?;
                buckets.entry(key).or_default().push((le, s.value));
            } else if s.name == format!("{family}_count") {
                counts.insert(key, s.value);
            } else if s.name == format!("{family}_sum") {
                sums.insert(key, s.value);
            }
        }
        for (key, b) in &buckets {
            if !b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1) {
                return Err(format!(
                    "{family}{key}: buckets not increasing and cumulative: {b:?}"
                ));
            }
            let last = b.last().expect("a bucket");
            if last.0 != f64::INFINITY {
                return Err(format!("{family}{key}: the last bucket is not +Inf"));
            }
            if counts.get(key) != Some(&last.1) {
                return Err(format!(
                    "{family}{key}: +Inf {} but _count {:?}",
                    last.1,
                    counts.get(key)
                ));
            }
            if !sums.contains_key(key) {
                return Err(format!("{family}{key}: no _sum"));
            }
        }
        if buckets.len() != counts.len() {
            return Err(format!("{family}: a _count without buckets"));
        }
    }
    Ok(())
}

impl Exposition {
    /// The value of the series `name{labels}` (exactly these labels).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Like [`get`](Self::get), panicking when the series is missing.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
    }
}

#[test]
fn the_strict_parser_refuses_what_it_should() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    assert!(parse_strict(good).is_ok());
    let bad = [
        "a_total 1\n",
        "# TYPE a_total counter\na_total 1\n",
        "# HELP a_total A.\n# TYPE a_total counter\na_total -1\n",
        "# HELP a A.\n# TYPE a counter\na 1\n",
        "# HELP a A.\n# TYPE a gauge\na{x=1} 1\n",
        "# HELP a A.\n# TYPE a gauge\na{x=\"1\"} one\n",
        "# HELP a A.\n# TYPE a gauge\na 1\na 2\n",
        "# HELP a A.\n# TYPE a gauge\na 1",
        "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\na 1\nb 1\na{x=\"y\"} 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
    ];
    for b in bad {
        assert!(parse_strict(b).is_err(), "accepted {b:?}");
    }
}

// ---------------------------------------------------------------------------
// Servers, the endpoint, and a blocking HTTP client.

fn config(name: &str, neighbours: Vec<(String, SocketAddr)>, state: Option<&Path>) -> ServerConfig {
    ServerConfig {
        neighbours: neighbours
            .iter()
            .map(|(n, a)| herd::links::Neighbour::plain(n, *a))
            .collect(),
        state_dir: state.map(Path::to_path_buf),
        ..ServerConfig::alone(name)
    }
}

/// A listener on a port from `free_port`: outside the ephemeral range, so
/// a server stopped and restarted on it gets it back (an ephemeral port
/// could meanwhile be taken as the source port of a connection, even of a
/// neighbour's redial to that very port).
fn bind_local() -> std::net::TcpListener {
    server::bind(SocketAddr::from(([127, 0, 0, 1], free_port()))).expect("bind")
}

/// Binds `addr` again, retrying while the old socket lets go of it.
fn rebind(addr: SocketAddr) -> std::net::TcpListener {
    wait_for("the port to be free again", || server::bind(addr).ok())
}

fn endpoint(stats: Vec<Arc<ServerStats>>, limits: metrics::Limits) -> Endpoint {
    Endpoint::with_limits(bind_local(), stats, limits).expect("endpoint")
}

/// A response: status, headers (lower-cased names), body.
struct Response {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// Sends `request` as is and reads the response to EOF.
fn exchange(addr: SocketAddr, request: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect to the endpoint");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(request).expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let text = String::from_utf8(raw.to_vec()).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().unwrap();
    let headers: HashMap<String, String> = lines
        .map(|l| {
            let (k, v) = l.split_once(": ").expect("a header");
            (k.to_ascii_lowercase(), v.to_string())
        })
        .collect();
    let len: usize = headers["content-length"].parse().unwrap();
    assert_eq!(body.len(), len, "Content-Length matches the body");
    Response {
        status,
        headers,
        body: body.to_string(),
    }
}

fn get(addr: SocketAddr, path: &str) -> Response {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nUser-Agent: herd-test\r\n\r\n").as_bytes(),
    )
}

/// `GET /metrics`, checked and parsed strictly.
fn scrape(addr: SocketAddr) -> Exposition {
    let r = get(addr, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    parse_strict(&r.body).unwrap_or_else(|e| panic!("{e}\n{}", r.body))
}

fn wait_for_metric(addr: SocketAddr, what: &str, ok: impl Fn(&Exposition) -> bool) -> Exposition {
    wait_for(what, || Some(scrape(addr)).filter(|e| ok(e)))
}

// ---------------------------------------------------------------------------

#[test]
fn counters_move_by_exactly_the_requests_sent() {
    let dir = tempfile::tempdir().unwrap();
    let solo = server::spawn(config("Solo", vec![], Some(dir.path())), bind_local()).unwrap();
    let ep = endpoint(vec![solo.stats.clone()], metrics::Limits::default());
    let s = [("server", "Solo")];
    // The loop starts on its thread after `spawn` returns.
    let before = wait_for_metric(ep.addr(), "Solo to listen", |e| {
        e.value("herd_server_listening", &s) == 1.0
    });
    assert_eq!(before.value("herd_client_connections", &s), 0.0);

    let (n, m, k) = (40, 7, 5);
    let mut c = Client::connect(solo.addr);
    let mut journal_bytes = 0;
    for i in 0..n {
        let at = c.ask(&format!(
            "IAMAT counted{i} +34.068930-118.445127 1600000000.{i}"
        ));
        assert!(at.starts_with("AT Solo "), "{at}");
        journal_bytes += at.len() + 1;
    }
    for i in 0..m {
        c.send(format!("WHATSAT counted{i} 10 3\n").as_bytes());
        let (head, json) = c.whatsat_reply().expect("an answer for a known client");
        assert!(head.contains(&format!(" counted{i} ")), "{head}");
        assert!(json.contains("REQUEST_DENIED"), "no key: {json}");
    }
    for i in 0..k {
        assert!(c.ask(&format!("NONSENSE {i}")).starts_with("? "));
    }
    // A WHATSAT about nobody is answered `? ` and counted as invalid.
    assert!(c.ask("WHATSAT nobody 10 3").starts_with("? "));
    // An update older than the stored one: answered, not stored.
    c.ask("IAMAT counted0 +1+1 1500000000");

    let after = scrape(ep.addr());
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let with = |k: &'static str, v: &'static str| [("server", "Solo"), (k, v)];
    assert_eq!(
        delta("herd_requests_total", &with("kind", "iamat")),
        (n + 1) as f64
    );
    assert_eq!(
        delta("herd_requests_total", &with("kind", "whatsat")),
        m as f64
    );
    assert_eq!(
        delta("herd_requests_total", &with("kind", "invalid")),
        (k + 1) as f64
    );
    assert_eq!(
        delta("herd_updates_stored_total", &with("source", "client")),
        n as f64
    );
    assert_eq!(
        delta("herd_updates_stored_total", &with("source", "link")),
        0.0
    );
    assert_eq!(after.value("herd_stored_clients", &s), n as f64);
    assert_eq!(after.value("herd_client_connections", &s), 1.0);
    assert_eq!(
        delta(
            "herd_places_requests_total",
            &with("outcome", "REQUEST_DENIED")
        ),
        m as f64
    );
    assert_eq!(
        delta("herd_places_requests_total", &with("outcome", "OK")),
        0.0
    );
    assert_eq!(
        delta("herd_places_request_duration_seconds_count", &s),
        m as f64
    );
    assert_eq!(
        delta(
            "herd_places_request_duration_seconds_bucket",
            &with("le", "+Inf")
        ),
        m as f64
    );
    assert_eq!(
        delta("herd_journal_appended_bytes_total", &s),
        journal_bytes as f64
    );
    assert_eq!(after.value("herd_journal_failing", &s), 0.0);
    assert_eq!(after.value("herd_evictions_total", &s), 0.0);
    assert_eq!(after.value("herd_expiries_total", &s), 0.0);
    assert_eq!(after.value("herd_log_lines_dropped_total", &s), 0.0);
    let start = after.value("process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(start > 1.6e9 && start <= now, "{start}");

    drop(c);
    wait_for_metric(ep.addr(), "the client to be gone", |e| {
        e.value("herd_client_connections", &s) == 0.0
    });
    solo.stop().unwrap();
    let stopped = scrape(ep.addr());
    assert_eq!(stopped.value("herd_server_listening", &s), 0.0);
    ep.stop().unwrap();
}

/// A server `name` with neighbours, restartable on the same port.
struct Node {
    config: ServerConfig,
    addr: SocketAddr,
    running: Option<Running>,
}

impl Node {
    fn start(&mut self, listener: std::net::TcpListener) {
        self.running = Some(server::spawn(self.config.clone(), listener).unwrap());
    }

    fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().unwrap();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn link_gauges_follow_a_neighbour_stopped_and_restarted() {
    let (la, lb) = (bind_local(), bind_local());
    let (aa, ab) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let mut a = Node {
        config: config("A", vec![("B".into(), ab)], None),
        addr: aa,
        running: None,
    };
    let mut b = Node {
        config: config("B", vec![("A".into(), aa)], None),
        addr: ab,
        running: None,
    };
    a.start(la);
    b.start(lb);
    let ep = endpoint(
        vec![a.running.as_ref().unwrap().stats.clone()],
        metrics::Limits::default(),
    );
    let link = [("server", "A"), ("neighbour", "B")];
    let s = [("server", "A")];
    let up = wait_for_metric(ep.addr(), "A's link to B up, caught up, B's link in", |e| {
        e.value("herd_link_up", &link) == 1.0
            && e.value("herd_link_catchups_total", &link) >= 1.0
            && e.value("herd_peer_connections", &s) == 1.0
    });
    let catchups = up.value("herd_link_catchups_total", &link);
    assert_eq!(up.value("herd_link_queued_bytes", &link), 0.0);
    let h = get(ep.addr(), "/healthz");
    assert_eq!((h.status, h.body.as_str()), (200, "ok\n"));

    // An update from B's client reaches A over the link.
    let mut cb = Client::connect(b.addr);
    cb.ask("IAMAT over.the.link +1+1 1600000000");
    wait_for_metric(ep.addr(), "A to store B's update", |e| {
        e.value(
            "herd_updates_stored_total",
            &[("server", "A"), ("source", "link")],
        ) == 1.0
            && e.value("herd_stored_clients", &s) == 1.0
    });
    drop(cb);

    b.stop();
    wait_for_metric(ep.addr(), "A's link to B down", |e| {
        e.value("herd_link_up", &link) == 0.0 && e.value("herd_peer_connections", &s) == 0.0
    });
    let h = get(ep.addr(), "/healthz");
    assert_eq!(h.status, 200, "a neighbour down is not unhealthy");
    assert_eq!(h.body, "ok\nA: link to B down\n");

    b.start(rebind(ab));
    wait_for_metric(
        ep.addr(),
        "A's link to B up again, with a new catch-up",
        |e| {
            e.value("herd_link_up", &link) == 1.0
                && e.value("herd_link_catchups_total", &link) > catchups
        },
    );
    ep.stop().unwrap();
}

#[test]
fn routes_statuses_and_malformed_requests() {
    let solo = server::spawn(config("Solo", vec![], None), bind_local()).unwrap();
    let ep = endpoint(vec![solo.stats.clone()], metrics::Limits::default());
    let addr = ep.addr();
    wait_for("Solo to listen", || {
        (get(addr, "/healthz").status == 200).then_some(())
    });
    let h = get(addr, "/healthz");
    assert_eq!(h.body, "ok\n");
    assert_eq!(h.headers["connection"], "close");
    assert_eq!(get(addr, "/metrics?x=1").status, 200);
    assert_eq!(get(addr, "/").status, 200);
    assert_eq!(get(addr, "/status.json").status, 200);
    assert_eq!(get(addr, "/index.html").status, 404);
    assert_eq!(get(addr, "/metrics/more").status, 404);
    let post = exchange(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody",
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["allow"], "GET");
    assert_eq!(
        exchange(addr, b"\x16\x03\x01\x02\x00 TLS? \r\n\r\n").status,
        400
    );
    // HTTP/1.0 and a request split into many small writes.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    for b in b"GET /healthz HTTP/1.0\r\n\r\n".chunks(3) {
        s.write_all(b).unwrap();
        s.flush().unwrap();
    }
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    assert_eq!(parse_response(&raw).status, 200);
    // Past the size cap: 431, and the connection is closed.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(metrics::MAX_REQUEST)
    );
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    // The server may close before taking all of it: a failed write is fine.
    let _ = s.write_all(huge.as_bytes());
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    assert!(
        raw.starts_with(b"HTTP/1.1 431 "),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    solo.stop().unwrap();
    ep.stop().unwrap();
}

/// Reads from `s` until EOF, or fails after `limit`.
fn wait_eof(s: &mut TcpStream, limit: Duration) -> Duration {
    let t0 = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return t0.elapsed(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return t0.elapsed(),
            Err(e) => panic!("no EOF after {:?}: {e}", t0.elapsed()),
        }
    }
}

/// True if `s` is still open: a short read times out rather than ending.
fn still_open(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

#[test]
fn hostile_scrapers_delay_neither_the_herd_nor_another_scrape() {
    let solo = server::spawn(config("Solo", vec![], None), bind_local()).unwrap();
    let deadline = Duration::from_secs(3);
    let ep = endpoint(
        vec![solo.stats.clone()],
        metrics::Limits {
            request_deadline: deadline,
            max_connections: 8,
            ..metrics::Limits::default()
        },
    );
    let addr = ep.addr();
    // Half a request, then silence.
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.write_all(b"GET /metr").unwrap();
    let opened = Instant::now();
    // An oversized head that keeps coming in a slow trickle.
    let mut big = TcpStream::connect(addr).unwrap();
    big.write_all(b"GET /metrics HTTP/1.1\r\nX-Big: ").unwrap();
    big.write_all(&vec![b'a'; metrics::MAX_REQUEST / 2])
        .unwrap();

    // Meanwhile: the herd answers and another scrape gets through.
    let mut c = Client::connect(solo.addr);
    let t0 = Instant::now();
    assert!(c
        .ask("IAMAT meanwhile +1+1 1600000000")
        .starts_with("AT Solo "));
    let e = scrape(addr);
    assert_eq!(
        e.value(
            "herd_requests_total",
            &[("server", "Solo"), ("kind", "iamat")]
        ),
        1.0
    );
    let took = t0.elapsed();
    assert!(still_open(&mut idle), "the idle request is still waiting");
    assert!(
        opened.elapsed() < deadline,
        "the checks above ran while the hostile requests were open ({took:?}); the machine is too slow for this test"
    );

    // The oversized one is refused once it passes the cap.
    let _ = big.write_all(&vec![b'a'; metrics::MAX_REQUEST]);
    let mut raw = Vec::new();
    big.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = big.read_to_end(&mut raw);
    assert!(
        raw.starts_with(b"HTTP/1.1 431 "),
        "{:?}",
        String::from_utf8_lossy(&raw)
    );
    // The idle one is closed at its deadline, not before and not much after.
    let waited = opened.elapsed() + wait_eof(&mut idle, PATIENCE);
    assert!(waited >= deadline - Duration::from_millis(50), "{waited:?}");

    // At the connection cap, a new connection pushes out the oldest.
    let mut idlers: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET").unwrap();
            s
        })
        .collect();
    // The oldest is the first accepted: the backlog is first in, first out.
    let h = get(addr, "/healthz");
    assert_eq!(h.status, 200);
    wait_eof(&mut idlers[0], PATIENCE);
    solo.stop().unwrap();
    ep.stop().unwrap();
}

// ---------------------------------------------------------------------------
// The binary: /healthz while the journal cannot be written.

/// Sets the soft RLIMIT_FSIZE of process `pid`, keeping its hard limit.
fn set_fsize(pid: u32, soft: Option<u64>) {
    let (mut cur, mut hard) = (0, 0);
    rlimit::prlimit(
        pid as _,
        rlimit::Resource::FSIZE,
        None,
        Some((&mut cur, &mut hard)),
    )
    .expect("read RLIMIT_FSIZE");
    rlimit::prlimit(
        pid as _,
        rlimit::Resource::FSIZE,
        Some((soft.unwrap_or(hard), hard)),
        None,
    )
    .expect("set RLIMIT_FSIZE");
}

#[test]
fn healthz_is_503_while_the_journal_cannot_be_written_and_200_once_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let lc = LocalConf::new(&["Solo"], &[]);
    let conf = lc.write(dir.path(), "h.conf");
    let mut child = HerdProc::start(Command::new(HERD), dir.path(), &conf, &["Solo"], &[]);
    let maddr = child.metrics;
    let mut c = Client::connect(lc.addr("Solo"));
    c.ask("IAMAT before +1+1 1600000000");
    let h = get(maddr, "/healthz");
    assert_eq!((h.status, h.body.as_str()), (200, "ok\n"));

    // Files may not grow any more: every append fails with EFBIG.
    set_fsize(child.id(), Some(1));
    // Its reply is the acknowledgement: held until the record is written.
    c.send(b"IAMAT during +1+1 1600000001\n");
    let h = wait_for("/healthz to say the journal fails", || {
        Some(get(maddr, "/healthz")).filter(|h| h.status == 503)
    });
    assert!(h.body.starts_with("Solo: journal failing: "), "{}", h.body);
    assert!(h.body.contains("too large"), "EFBIG: {}", h.body);
    let e = scrape(maddr);
    assert_eq!(e.value("herd_journal_failing", &[("server", "Solo")]), 1.0);
    assert!(e.value("herd_journal_write_failures_total", &[("server", "Solo")]) >= 1.0);

    // Room again: the next append succeeds and the server is healthy.
    set_fsize(child.id(), None);
    let at = c.text();
    assert!(at.starts_with("AT Solo "), "the held reply: {at}");
    c.ask("IAMAT after +1+1 1600000002");
    wait_for("/healthz to be ok again", || {
        (get(maddr, "/healthz").status == 200).then_some(())
    });
    assert!(
        child.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "herd survived SIGXFSZ"
    );
    assert_eq!(c.known("during").as_deref(), Some(at.as_str()));
}

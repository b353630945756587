//! In-process herds of any topology on `127.0.0.1:0`, and a blocking client.
//!
//! All listeners are bound first (port 0), so every server knows its
//! neighbours' real addresses before any starts. A server can be stopped and
//! started again on the same port, which is how tests kill and revive one.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use herd::config::PlacesConfig;
use herd::server::{self, Limits, Running, ServerConfig};

/// How long a test waits for anything before it fails: generous, because
/// CI is a noisy 2-core machine. Waits end as soon as the condition holds.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A herd running in this process.
pub struct TestHerd {
    pub names: Vec<String>,
    pub addrs: Vec<SocketAddr>,
    configs: Vec<ServerConfig>,
    running: Vec<Option<Running>>,
}

impl TestHerd {
    /// Starts servers `names` linked by `links`, with default limits and no Places key.
    pub fn start(names: &[&str], links: &[(&str, &str)]) -> TestHerd {
        Self::start_with(names, links, |_| {})
    }

    /// Like [`start`](Self::start), letting `tweak` adjust each server's config.
    pub fn start_with(
        names: &[&str],
        links: &[(&str, &str)],
        tweak: impl Fn(&mut ServerConfig),
    ) -> TestHerd {
        let listeners: Vec<_> = names
            .iter()
            .map(|_| server::bind("127.0.0.1:0".parse().unwrap()).expect("bind"))
            .collect();
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let index = |n: &str| names.iter().position(|m| *m == n).expect("known name");
        let mut configs = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let mut neighbours = Vec::new();
            for (a, b) in links {
                let (a, b) = (index(a), index(b));
                if a == i {
                    neighbours.push((names[b].to_string(), addrs[b]));
                } else if b == i {
                    neighbours.push((names[a].to_string(), addrs[a]));
                }
            }
            let mut config = ServerConfig {
                name: name.to_string(),
                neighbours,
                places: PlacesConfig::default(),
                places_key: None,
                limits: Limits::default(),
                state_dir: None,
                fsync: None,
                secret: None,
            };
            tweak(&mut config);
            configs.push(config);
        }
        let running = configs
            .iter()
            .cloned()
            .zip(listeners)
            .map(|(c, l)| Some(server::spawn(c, l).expect("spawn")))
            .collect();
        TestHerd {
            names: names.iter().map(|s| s.to_string()).collect(),
            addrs,
            configs,
            running,
        }
    }

    /// The reference herd of SPEC §1.
    pub fn reference() -> TestHerd {
        Self::start(REFERENCE_NAMES, REFERENCE_LINKS)
    }

    fn index(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .expect("known name")
    }

    /// The address of server `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs[self.index(name)]
    }

    /// A new client connected to `name`.
    pub fn client(&self, name: &str) -> Client {
        Client::connect(self.addr(name))
    }

    /// Stops server `name` (its listener and every connection close).
    pub fn stop(&mut self, name: &str) {
        let i = self.index(name);
        if let Some(r) = self.running[i].take() {
            r.stop().expect("server stopped cleanly");
        }
    }

    /// Starts server `name` again, empty, on the same port.
    pub fn restart(&mut self, name: &str) {
        let i = self.index(name);
        assert!(self.running[i].is_none(), "{name} is running");
        let deadline = Instant::now() + PATIENCE;
        let listener = loop {
            match server::bind(self.addrs[i]) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {name}: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("rebinding {name}: {e}"),
            }
        };
        self.running[i] = Some(server::spawn(self.configs[i].clone(), listener).expect("spawn"));
    }

    /// True while `name` runs.
    pub fn is_running(&self, name: &str) -> bool {
        self.running[self.index(name)].is_some()
    }
}

impl Drop for TestHerd {
    fn drop(&mut self) {
        for r in self.running.iter_mut().filter_map(Option::take) {
            let _ = r.stop();
        }
    }
}

pub const REFERENCE_NAMES: &[&str] = &["Goloman", "Hands", "Holiday", "Welsh", "Wilkes"];
pub const REFERENCE_LINKS: &[(&str, &str)] = &[
    ("Goloman", "Hands"),
    ("Goloman", "Holiday"),
    ("Goloman", "Wilkes"),
    ("Hands", "Wilkes"),
    ("Holiday", "Welsh"),
    ("Holiday", "Wilkes"),
];

/// A blocking line client with a read deadline.
pub struct Client {
    pub reader: BufReader<TcpStream>,
}

impl Client {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("send");
    }

    /// Reads one line, without its `\n`. Panics on EOF or timeout.
    pub fn line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut line)
            .expect("read a line");
        assert!(
            n > 0 && line.ends_with(b"\n"),
            "connection closed; got {:?}",
            String::from_utf8_lossy(&line)
        );
        line.pop();
        line
    }

    /// Reads one line as text.
    pub fn text(&mut self) -> String {
        String::from_utf8(self.line()).expect("UTF-8 reply")
    }

    /// Sends one line and reads the one-line reply.
    pub fn ask(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes());
        self.text()
    }

    /// Reads the JSON of a WHATSAT answer exactly as sent, through the two
    /// newlines that end it.
    fn json(&mut self) -> Vec<u8> {
        let mut json = Vec::new();
        loop {
            let l = self.line();
            json.extend_from_slice(&l);
            json.push(b'\n');
            if l.is_empty() {
                return json;
            }
        }
    }

    /// Reads a WHATSAT answer as bytes: the AT line (without `\n`), and the JSON.
    pub fn answer(&mut self) -> (Vec<u8>, Vec<u8>) {
        let head = self.line();
        (head, self.json())
    }

    /// Reads a WHATSAT answer as text: the AT line and the JSON (without the
    /// empty line that ends it). A `? ` reply comes back as `Err(line)`.
    pub fn whatsat_reply(&mut self) -> Result<(String, String), String> {
        let head = self.text();
        if head.starts_with("? ") {
            return Err(head);
        }
        let mut json = String::from_utf8(self.json()).expect("UTF-8 JSON");
        json.pop();
        Ok((head, json))
    }

    /// The AT line `server` holds for `client`, if any (asked with WHATSAT).
    pub fn known(&mut self, client: &str) -> Option<String> {
        self.send(format!("WHATSAT {client} 1 1\n").as_bytes());
        self.whatsat_reply().ok().map(|(at, _)| at)
    }

    /// Half-closes, then reads everything until the server closes.
    pub fn finish(mut self) -> Vec<u8> {
        self.reader
            .get_ref()
            .shutdown(Shutdown::Write)
            .expect("shutdown");
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).expect("read to EOF");
        rest
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after [`PATIENCE`].
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The current time as an IAMAT timestamp with nanoseconds.
pub fn timestamp() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// A child process (a `herd` binary) killed when the test ends, pass or fail,
/// so a failing test never leaves a server running.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    /// The child's process ID.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

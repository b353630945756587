//! The in-process herd harness, the one the tests, the benches and
//! flood_load's in-process modes share: the servers of a herd as threads of
//! this process on `127.0.0.1`, and a blocking Probe, a herd member the
//! caller plays itself. It is no part of the library: each user includes
//! this file with `#[path = ...]`.
//!
//! Listeners are bound first (port 0), so every server knows its
//! neighbours' real addresses before any starts. Then a `herd.conf` text
//! naming the real ports is written and checked with [`Herd::parse`], and
//! every server gets its [`ServerConfig`] from [`ServerConfig::from_herd`],
//! exactly as the binary does, then from the caller's tweak; [`configure`]
//! is the one place a config is made. A server can be stopped and started
//! again, empty, on the same port, which is how callers kill and revive one.
//!
//! Members listed as *outside* (the Probe) are in the config and linked like
//! any other, but not started: their address is a listener the caller owns,
//! which the linked servers dial. A server of the herd does not distinguish
//! the Probe from a neighbour: it sends it `HERD NAME`, its whole store
//! (catch-up), then every update it stores, as it would to any neighbour.
//! That is how benches and the load tool observe propagation.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use herd::config::Herd;
use herd::server::{self, Running, ServerConfig};

/// The reference herd of docs/PROTOCOL.md §1.
pub const REFERENCE_NAMES: &[&str] = &["Goloman", "Hands", "Holiday", "Welsh", "Wilkes"];
/// Its links.
pub const REFERENCE_LINKS: &[(&str, &str)] = &[
    ("Goloman", "Hands"),
    ("Goloman", "Holiday"),
    ("Goloman", "Wilkes"),
    ("Hands", "Wilkes"),
    ("Holiday", "Welsh"),
    ("Holiday", "Wilkes"),
];

/// How long [`InProcHerd::restart`] keeps trying to bind the old port:
/// generous, because CI is a noisy 2-core machine; it ends as soon as the
/// bind works.
pub const REBIND_PATIENCE: Duration = Duration::from_secs(20);

/// A herd whose servers run as threads of this process.
pub struct InProcHerd {
    names: Vec<String>,
    addrs: Vec<SocketAddr>,
    /// Each server's config, made once by [`configure`]; a restart reuses it.
    configs: Vec<ServerConfig>,
    running: Vec<Option<Running>>,
}

impl InProcHerd {
    /// Starts servers `names` linked by `links`. `outside` members (name,
    /// address the caller listens on) are in the config and may appear in
    /// `links`, but are not started.
    pub fn start(
        names: &[&str],
        links: &[(&str, &str)],
        outside: &[(&str, SocketAddr)],
    ) -> io::Result<InProcHerd> {
        Self::start_with(names, links, outside, |_| {})
    }

    /// Like [`start`](Self::start), letting `tweak` adjust each server's
    /// config (limits, Places, a journal, a secret) before it starts.
    pub fn start_with(
        names: &[&str],
        links: &[(&str, &str)],
        outside: &[(&str, SocketAddr)],
        tweak: impl Fn(&mut ServerConfig),
    ) -> io::Result<InProcHerd> {
        Self::start_on(names, links, outside, || 0, tweak)
    }

    /// Like [`start_with`](Self::start_with), each server on 127.0.0.1 at
    /// the port `port()` gives (0: one the kernel picks). The tests give
    /// ports outside the ephemeral range, so that a server restarted on
    /// its port always gets it back: an ephemeral one could meanwhile be
    /// the source port of a connection, even a neighbour's redial to it.
    pub fn start_on(
        names: &[&str],
        links: &[(&str, &str)],
        outside: &[(&str, SocketAddr)],
        mut port: impl FnMut() -> u16,
        tweak: impl Fn(&mut ServerConfig),
    ) -> io::Result<InProcHerd> {
        let listeners = names
            .iter()
            .map(|_| server::bind(SocketAddr::from(([127, 0, 0, 1], port()))))
            .collect::<io::Result<Vec<_>>>()?;
        let addrs = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<io::Result<Vec<_>>>()?;
        let mut members: Vec<(&str, SocketAddr)> =
            names.iter().copied().zip(addrs.clone()).collect();
        members.extend_from_slice(outside);
        let herd = Herd::parse(&herd_conf(&members, links), Path::new("in-process.conf"))
            .map_err(io::Error::other)?;
        let configs = names
            .iter()
            .map(|name| configure(&herd, name, &tweak))
            .collect::<io::Result<Vec<_>>>()?;
        let mut running = Vec::new();
        for (config, listener) in configs.iter().zip(listeners) {
            running.push(Some(server::spawn(config.clone(), listener)?));
        }
        Ok(InProcHerd {
            names: names.iter().map(|s| s.to_string()).collect(),
            addrs,
            configs,
            running,
        })
    }

    /// The reference herd, with `Probe` (at `probe`) linked to each of `probed`.
    pub fn reference_with_probe(probe: SocketAddr, probed: &[&str]) -> io::Result<InProcHerd> {
        let mut links = REFERENCE_LINKS.to_vec();
        for name in probed {
            links.push((name, "Probe"));
        }
        InProcHerd::start(REFERENCE_NAMES, &links, &[("Probe", probe)])
    }

    /// The names of the servers started, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Which server `name` is. Panics if there is none: the caller named
    /// the servers itself.
    fn index(&self, name: &str) -> usize {
        self.names
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("no server {name} in this herd"))
    }

    /// The address server `name` listens on.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs[self.index(name)]
    }

    /// What server `name` counts (its [`herd::stats::ServerStats`]), while
    /// it runs.
    pub fn stats(&self, name: &str) -> Option<std::sync::Arc<herd::stats::ServerStats>> {
        self.running[self.index(name)]
            .as_ref()
            .map(|r| r.stats.clone())
    }

    /// True while server `name` runs.
    pub fn is_running(&self, name: &str) -> bool {
        self.running[self.index(name)].is_some()
    }

    /// Stops server `name`: its listener and every connection close. The
    /// error is the server thread's, if it failed.
    pub fn stop(&mut self, name: &str) -> io::Result<()> {
        let i = self.index(name);
        match self.running[i].take() {
            Some(r) => r.stop(),
            None => Ok(()),
        }
    }

    /// Starts server `name` again, empty, on its port (with its config).
    pub fn restart(&mut self, name: &str) -> io::Result<()> {
        let i = self.index(name);
        if self.running[i].is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{name} is running"),
            ));
        }
        let deadline = Instant::now() + REBIND_PATIENCE;
        let listener = loop {
            match server::bind(self.addrs[i]) {
                Ok(l) => break l,
                // The old listener's port may take a moment to come free.
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(io::Error::new(e.kind(), format!("rebinding {name}: {e}"))),
            }
        };
        self.running[i] = Some(server::spawn(self.configs[i].clone(), listener)?);
        Ok(())
    }
}

impl Drop for InProcHerd {
    fn drop(&mut self) {
        for r in self.running.iter_mut().filter_map(Option::take) {
            let _ = r.stop();
        }
    }
}

/// The `herd.conf` text of `members` (name, address) linked by `links`.
fn herd_conf(members: &[(&str, SocketAddr)], links: &[(&str, &str)]) -> String {
    let mut text = String::new();
    for (name, addr) in members {
        text.push_str(&format!("server {name} {addr}\n"));
    }
    for (a, b) in links {
        text.push_str(&format!("link {a} {b}\n"));
    }
    text
}

/// The config of member `name` of `herd`: what the binary would run it with
/// ([`ServerConfig::from_herd`]), then `tweak`. Every in-process server's
/// config is made here and nowhere else.
pub fn configure(
    herd: &Herd,
    name: &str,
    tweak: &impl Fn(&mut ServerConfig),
) -> io::Result<ServerConfig> {
    let (mut config, _) = ServerConfig::from_herd(herd, name).map_err(io::Error::other)?;
    tweak(&mut config);
    Ok(config)
}
/// A blocking listener playing a herd member that servers dial.
pub struct ProbeListener {
    listener: TcpListener,
}

impl ProbeListener {
    /// Listens on `127.0.0.1:0`.
    pub fn bind() -> io::Result<ProbeListener> {
        Ok(ProbeListener {
            listener: TcpListener::bind(("127.0.0.1", 0))?,
        })
    }

    /// The address to put in the herd's config.
    pub fn addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Waits (up to `patience`) for a server to dial in and say `HERD NAME`.
    pub fn accept_link(&self, patience: Duration) -> io::Result<ProbeLink> {
        self.listener.set_nonblocking(true)?;
        let deadline = Instant::now() + patience;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no herd server dialled the probe",
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(patience))?;
        // Heartbeats, as a herd acceptor sends them, until the link closes:
        // the server counts the link up once it hears one, and would take a
        // silent Probe for dead after its link timeout.
        let mut beats = stream.try_clone()?;
        std::thread::spawn(move || {
            use std::io::Write;
            while beats.write_all(herd::protocol::PING).is_ok() {
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let mut link = ProbeLink {
            name: String::new(),
            reader: BufReader::with_capacity(256 * 1024, stream),
            line: Vec::new(),
        };
        let hello = link.next_line()?.to_vec();
        link.name = match hello.strip_prefix(b"HERD ") {
            Some(name) => String::from_utf8_lossy(name).trim().to_string(),
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("probe: expected HERD NAME, got {:?}", hello.escape_ascii()),
                ))
            }
        };
        Ok(link)
    }
}

/// One server's link into the probe.
pub struct ProbeLink {
    /// The name the server gave in `HERD NAME`.
    pub name: String,
    reader: BufReader<TcpStream>,
    line: Vec<u8>,
}

impl ProbeLink {
    /// The next line the server sent, without `\n`.
    pub fn next_line(&mut self) -> io::Result<&[u8]> {
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line)?;
        if n == 0 || self.line.last() != Some(&b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the herd server closed the probe link",
            ));
        }
        self.line.pop();
        Ok(&self.line)
    }

    /// Reads lines until one whose TIME field (the last) is `time`; returns
    /// how many lines were read.
    pub fn wait_for_time(&mut self, time: &[u8]) -> io::Result<usize> {
        let mut n = 0;
        loop {
            n += 1;
            let line = self.next_line()?;
            if line.rsplit(|&b| b == b' ').next() == Some(time) {
                return Ok(n);
            }
        }
    }
}

/// The current wall clock as an IAMAT TIME field, with nanoseconds.
pub fn timestamp() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

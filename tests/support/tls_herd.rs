//! A TLS herd on disk, for running the built binary against
//! (docs/PROTOCOL.md §6, §12): a temporary folder holding a CA made in the
//! test (`ca.pem`), a certificate and key per server naming it
//! (`certs/NAME.pem`, `certs/NAME.key`), and a `herd.conf` giving each
//! server a plaintext client port, a `peer` port and a `tls` client port on
//! 127.0.0.1, the links, and `tls_cert certs/{name}.pem`,
//! `tls_key certs/{name}.key`, `tls_ca ca.pem`.
//!
//! ```ignore
//! let h = TlsHerd::new(&["A", "B"], &[("A", "B")], "");
//! let p = h.start("ab", &["A", "B"], &[]);          // a HerdProc
//! let at = h.tls_client("A").ask("IAMAT k +1+1 1"); // over TLS, checking A's certificate
//! let log = h.wait_log("ab", "A", "a refusal", |l| l.contains("refused"));
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::certs::{write_herd_certs, Ca, TLS_CONF_LINES};
use super::herd::{wait_for, Client};
use super::procs::{free_port, write, HerdProc, HERD};
use super::tls_client::TlsClient;

/// One server of the file and its addresses.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    /// The plaintext client port.
    pub client: SocketAddr,
    /// `peer HOST:PORT`, if it has one.
    pub peer: Option<SocketAddr>,
    /// `tls HOST:PORT`, if it has one.
    pub tls: Option<SocketAddr>,
}

/// A herd's files in a temporary folder (removed on drop).
pub struct TlsHerd {
    pub dir: TempDir,
    /// The CA every server's certificate chains to.
    pub ca: Ca,
    /// `dir/herd.conf`.
    pub conf: PathBuf,
    pub members: Vec<Member>,
    links: Vec<(String, String)>,
    extra: String,
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl TlsHerd {
    /// Servers `names`, each with a client, a peer and a tls port, linked by
    /// `links`; `extra` lines are added to the file (Places settings...).
    pub fn new(names: &[&str], links: &[(&str, &str)], extra: &str) -> TlsHerd {
        Self::with_ports(names, links, extra, |_| (true, true))
    }

    /// Like [`new`](Self::new); `ports(name)` says whether that server has
    /// a peer port and a tls port.
    pub fn with_ports(
        names: &[&str],
        links: &[(&str, &str)],
        extra: &str,
        ports: impl Fn(&str) -> (bool, bool),
    ) -> TlsHerd {
        let dir = tempfile::tempdir().expect("temporary folder");
        let ca = Ca::new("herd test CA");
        write_herd_certs(dir.path(), &ca, names);
        let members = names
            .iter()
            .map(|name| {
                let (peer, tls) = ports(name);
                Member {
                    name: name.to_string(),
                    client: local(free_port()),
                    peer: peer.then(|| local(free_port())),
                    tls: tls.then(|| local(free_port())),
                }
            })
            .collect();
        let mut h = TlsHerd {
            conf: dir.path().join("herd.conf"),
            dir,
            ca,
            members,
            links: links
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            extra: extra.to_string(),
        };
        h.write_conf();
        h
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The config text for the current members.
    pub fn conf_text(&self) -> String {
        let mut text = String::new();
        for m in &self.members {
            text.push_str(&format!("server {} {}", m.name, m.client));
            if let Some(peer) = m.peer {
                text.push_str(&format!(" peer {peer}"));
            }
            if let Some(tls) = m.tls {
                text.push_str(&format!(" tls {tls}"));
            }
            text.push('\n');
        }
        for (a, b) in &self.links {
            text.push_str(&format!("link {a} {b}\n"));
        }
        text.push_str(TLS_CONF_LINES);
        text.push_str(&self.extra);
        text
    }

    /// (Re)writes `herd.conf`.
    pub fn write_conf(&mut self) {
        let text = self.conf_text();
        self.conf = write(self.dir.path(), "herd.conf", &text);
    }

    /// Moves `name`'s peer port to `addr` (where the test listens, playing
    /// it) and rewrites the file.
    pub fn set_peer(&mut self, name: &str, addr: SocketAddr) {
        let m = self
            .members
            .iter_mut()
            .find(|m| m.name == name)
            .expect("a member");
        m.peer = Some(addr);
        self.write_conf();
    }

    /// The member called `name`.
    pub fn member(&self, name: &str) -> &Member {
        self.members
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no server {name}"))
    }

    /// Its peer port.
    pub fn peer(&self, name: &str) -> SocketAddr {
        self.member(name).peer.expect("a peer port")
    }

    /// Its tls port.
    pub fn tls(&self, name: &str) -> SocketAddr {
        self.member(name).tls.expect("a tls port")
    }

    /// A plaintext client of `name`'s client port.
    pub fn client(&self, name: &str) -> Client {
        Client::connect(self.member(name).client)
    }

    /// A TLS client of `name`'s tls port (checking that its certificate
    /// names `name` and chains to the herd's CA; no client certificate).
    pub fn tls_client(&self, name: &str) -> TlsClient {
        TlsClient::connect(self.tls(name), name, self.ca.roots(), None)
            .unwrap_or_else(|e| panic!("TLS handshake with {name}'s tls port: {e}"))
    }

    /// Runs `herd NAMES --config herd.conf` with logs and journals in
    /// `dir/RUN/logs` and `dir/RUN/state` (a restart with the same `run`
    /// keeps its journal), and `extra` flags; returns once it is ready.
    pub fn start(&self, run: &str, names: &[&str], extra: &[&str]) -> HerdProc {
        self.start_with(Command::new(HERD), run, names, extra)
    }

    /// Like [`start`](Self::start), from a prepared `Command::new(HERD)`
    /// (with environment variables set, say).
    pub fn start_with(&self, base: Command, run: &str, names: &[&str], extra: &[&str]) -> HerdProc {
        HerdProc::start(base, &self.dir.path().join(run), &self.conf, names, extra)
    }

    /// `name`'s log so far, in run `run` (empty if there is none yet).
    pub fn log(&self, run: &str, name: &str) -> String {
        let path = self
            .dir
            .path()
            .join(run)
            .join("logs")
            .join(format!("{name}.log"));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Waits until `name`'s log in run `run` has a line for which `pred`
    /// holds; returns it.
    pub fn wait_log(
        &self,
        run: &str,
        name: &str,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        wait_for(&format!("{what} in {name}'s log"), || {
            self.log(run, name)
                .lines()
                .find(|l| pred(l))
                .map(str::to_string)
        })
    }

    /// How many lines of `name`'s log in run `run` satisfy `pred`.
    pub fn count_log(&self, run: &str, name: &str, pred: impl Fn(&str) -> bool) -> usize {
        self.log(run, name).lines().filter(|l| pred(l)).count()
    }
}

/// A log line that is a warning saying that a connection was refused (not
/// the kernel's "Connection refused" of a dial to a neighbour that is down).
pub fn is_refusal(line: &str) -> bool {
    line.contains(" WARN ") && line.replace("Connection refused", "").contains("refused")
}

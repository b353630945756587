//! The herd under test: one `herd` process per server, in one of two
//! networks. On separate hosts (root: a network namespace per server on a
//! bridge, tests/support/netns.rs), a server is cut off by taking its port
//! on the bridge down and a link is cut by dropping the traffic between
//! two hosts; clients connect from a host of their own. On loopback, each
//! server has a herd.conf of its own in which every neighbour's address is
//! a fault proxy (tests/support/proxy.rs) for that one direction of that
//! one link, so a link can be cut or a server cut off without touching the
//! others. As root each journal lives on a tmpfs of its own, so a disk can
//! fill. A TLS herd links over mutual TLS on peer ports (the proxies then
//! stand before the peer ports), with certificates from generations made
//! beforehand (`DIR/genK/{ca.pem,NAME.pem,NAME.key}`, as
//! `examples/herd-certs.rs` writes them) that a rotation moves through. Faults are applied and undone here; counts make overlapping faults
//! of one target nest (a link stays cut until every cut of it has ended).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::{Host, Net};
use crate::ports::free_port;
use crate::proxy::Proxy;
use crate::schedule::Fault;
use crate::tmpfs::Tmpfs;

/// How long a server may take to say `herd: ready` (replaying its journal
/// on a loaded machine).
pub const READY_PATIENCE: Duration = Duration::from_secs(60);

/// A journal tmpfs's size outside a disk-full fault.
const ROOM: &str = "256m";

type Link = (String, String);

/// Where clients connect from: here, or a host of the net.
#[derive(Clone)]
pub enum Connector {
    Local,
    Host(Host),
}

impl Connector {
    /// A connection to `addr` within `timeout`.
    pub fn connect(&self, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
        match self {
            Connector::Local => TcpStream::connect_timeout(&addr, timeout),
            Connector::Host(h) => h.connect(addr, timeout),
        }
    }
}

/// Ports of a server on a host of its own (each host has all of them).
const HOST_CLIENT_PORT: u16 = 7000;
const HOST_PEER_PORT: u16 = 7001;
const HOST_HTTP_PORT: u16 = 7080;

/// A TLS herd's certificates: the generations, the one in use, and whether
/// a rotation to the next has begun.
struct Certs {
    gens: Vec<PathBuf>,
    current: usize,
    rotating: u32,
}

/// Writes `bytes` to `path` through a rename, so a server starting or
/// reloading meanwhile reads the old file or the new one, whole.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write a certificate file");
    std::fs::rename(&tmp, path).expect("rename a certificate file");
}

/// One server's process, if it runs.
struct Server {
    child: Option<Child>,
    /// Active faults that stopped it / killed it.
    paused: u32,
    killed: u32,
}

/// The herd: its processes, proxies and disks, and what the faults did.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    addrs: BTreeMap<String, SocketAddr>,
    /// Each server's `http` port (OsmAnd reports, docs/PROTOCOL.md §14.1).
    http: BTreeMap<String, SocketAddr>,
    /// Each server's peer port (a TLS herd's links).
    peer: BTreeMap<String, SocketAddr>,
    certs: Option<Certs>,
    /// Every server's name, the spare's too.
    all: Vec<String>,
    /// The hosts, when servers run on hosts of their own.
    net: Option<Net>,
    /// Active cut-offs per server, cuts per link (hosts).
    isolated: HashMap<String, u32>,
    links: Vec<Link>,
    /// Servers in the herd now (the spare joins by a reload).
    present: BTreeSet<String>,
    dropped: HashMap<Link, u32>,
    /// (dialer, target) → the proxy the dialer reaches the target through.
    proxies: HashMap<Link, Proxy>,
    blackholed: HashMap<Link, u32>,
    servers: BTreeMap<String, Server>,
    disks: BTreeMap<String, Tmpfs>,
    full: HashMap<String, u32>,
    /// Unexpected exits, panics.
    pub incidents: Vec<String>,
    /// The largest RSS seen per server.
    pub rss: BTreeMap<String, u64>,
}

/// The herd's shape: its servers, the spare that may join, the links (the
/// spare's among them), each server's client and http ports.
pub struct Layout<'a> {
    pub names: &'a [&'a str],
    pub spare: Option<&'a str>,
    pub links: &'a [(&'a str, &'a str)],
    pub ports: &'a BTreeMap<String, (u16, u16)>,
}

impl Cluster {
    /// Sets up (does not start) the herd of `layout` in `dir`, running
    /// `bin`. With `disks` (root), journals go on tmpfs mounts under
    /// `dir/disk`; with `tls`, links are mutual TLS with the certificate
    /// generations under that directory; with `hosts`, each server runs on
    /// a host (network namespace) of its own.
    pub fn new(
        dir: &Path,
        bin: &Path,
        layout: &Layout<'_>,
        disks: bool,
        tls: Option<&Path>,
        hosts: bool,
    ) -> Cluster {
        let Layout {
            names,
            spare,
            links,
            ports,
        } = *layout;
        let all: Vec<&str> = names.iter().copied().chain(spare).collect();
        let port = |n: &str| {
            ports
                .get(n)
                .copied()
                .unwrap_or_else(|| (free_port(), free_port()))
        };
        let net = hosts.then(|| Net::new(&all));
        let local = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let at = |n: &str, p: u16| net.as_ref().map(|net| net.host(n).sock(p));
        let addrs: BTreeMap<String, SocketAddr> = all
            .iter()
            .map(|n| {
                let a = at(n, HOST_CLIENT_PORT).unwrap_or_else(|| local(port(n).0));
                (n.to_string(), a)
            })
            .collect();
        let http: BTreeMap<String, SocketAddr> = all
            .iter()
            .map(|n| {
                let a = at(n, HOST_HTTP_PORT).unwrap_or_else(|| local(port(n).1));
                (n.to_string(), a)
            })
            .collect();
        let peer: BTreeMap<String, SocketAddr> = match tls {
            Some(_) => all
                .iter()
                .map(|n| {
                    let a = at(n, HOST_PEER_PORT).unwrap_or_else(|| local(free_port()));
                    (n.to_string(), a)
                })
                .collect(),
            None => BTreeMap::new(),
        };
        let certs = tls.map(|root| {
            let gens: Vec<PathBuf> = (0..)
                .map(|k| root.join(format!("gen{k}")))
                .take_while(|g| g.join("ca.pem").exists())
                .collect();
            assert!(
                gens.len() >= 2,
                "{}: wanted gen0, gen1, ... made by herd-certs",
                root.display()
            );
            Certs {
                gens,
                current: 0,
                rotating: 0,
            }
        });
        let links: Vec<Link> = links
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let mut proxies = HashMap::new();
        // On hosts the network itself is cut: no proxies.
        for (a, b) in links.iter().filter(|_| net.is_none()) {
            for (from, to) in [(a, b), (b, a)] {
                // A TLS herd's neighbours dial the peer port.
                let target = peer.get(to).copied().unwrap_or(addrs[to]);
                proxies.insert((from.clone(), to.clone()), Proxy::start(target));
            }
        }
        std::fs::create_dir_all(dir.join("logs")).expect("the log directory");
        let mut disk_map = BTreeMap::new();
        for n in &all {
            let state = dir.join("state").join(n);
            std::fs::create_dir_all(&state).expect("a state directory");
            if disks {
                if let Some(fs) = Tmpfs::mount(&dir.join("disk").join(n), ROOM) {
                    disk_map.insert(n.to_string(), fs);
                }
            }
        }
        let cluster = Cluster {
            dir: dir.to_path_buf(),
            bin: bin.to_path_buf(),
            addrs,
            http,
            peer,
            certs,
            all: all.iter().map(|n| n.to_string()).collect(),
            net,
            isolated: HashMap::new(),
            links,
            present: names.iter().map(|n| n.to_string()).collect(),
            dropped: HashMap::new(),
            proxies,
            blackholed: HashMap::new(),
            servers: all
                .iter()
                .map(|n| {
                    (
                        n.to_string(),
                        Server {
                            child: None,
                            paused: 0,
                            killed: 0,
                        },
                    )
                })
                .collect(),
            disks: disk_map,
            full: HashMap::new(),
            incidents: Vec::new(),
            rss: BTreeMap::new(),
        };
        if let Some(c) = &cluster.certs {
            std::fs::create_dir_all(dir.join("certs")).expect("the certificate directory");
            let ca = std::fs::read(c.gens[0].join("ca.pem")).expect("gen0/ca.pem");
            replace(&dir.join("certs/ca.pem"), &ca);
            cluster.install_leaves(0);
        }
        cluster
    }

    /// Copies generation `k`'s certificate and key of every server into
    /// place.
    fn install_leaves(&self, k: usize) {
        let Some(c) = &self.certs else { return };
        for n in &self.all {
            for ext in ["pem", "key"] {
                let file = format!("{n}.{ext}");
                let bytes = std::fs::read(c.gens[k].join(&file))
                    .unwrap_or_else(|e| panic!("{}: {e}", c.gens[k].join(&file).display()));
                replace(&self.dir.join("certs").join(file), &bytes);
            }
        }
    }

    /// How clients reach the servers.
    pub fn connector(&self) -> Connector {
        match &self.net {
            Some(net) => Connector::Host(net.client().clone()),
            None => Connector::Local,
        }
    }

    /// Which network the herd runs on, for the summary.
    pub fn network(&self) -> &'static str {
        if self.net.is_some() {
            "separate hosts (network namespaces)"
        } else {
            "loopback behind fault proxies"
        }
    }

    /// The servers in the herd now, with their client addresses.
    pub fn present(&self) -> Vec<(String, SocketAddr)> {
        self.present
            .iter()
            .map(|n| (n.clone(), self.addrs[n]))
            .collect()
    }

    /// The servers in the herd now: their client and http addresses.
    pub fn targets(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.present
            .iter()
            .map(|n| (self.addrs[n], self.http[n]))
            .collect()
    }

    /// Where `name` writes its standard error (every run appends).
    fn stderr_path(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.stderr"))
    }

    /// `name`'s herd.conf as things stand: every present server, the
    /// neighbours at their proxies, the links not dropped.
    fn conf(&self, name: &str) -> String {
        let mut text = String::new();
        for s in &self.present {
            let proxy = match self.proxies.get(&(name.to_string(), s.clone())) {
                Some(p) if s != name => Some(p.addr()),
                _ => None,
            };
            let line = match self.peer.get(s) {
                // Neighbours dial the peer port, through the proxy.
                Some(peer) => format!(
                    "server {s} {} peer {} http {}\n",
                    self.addrs[s],
                    proxy.unwrap_or(*peer),
                    self.http[s]
                ),
                None => format!(
                    "server {s} {} http {}\n",
                    proxy.unwrap_or(self.addrs[s]),
                    self.http[s]
                ),
            };
            text.push_str(&line);
        }
        for l @ (a, b) in &self.links {
            if self.present.contains(a)
                && self.present.contains(b)
                && self.dropped.get(l).copied().unwrap_or(0) == 0
            {
                text.push_str(&format!("link {a} {b}\n"));
            }
        }
        if self.certs.is_some() {
            text.push_str(
                "tls_cert certs/{name}.pem\ntls_key certs/{name}.key\ntls_ca certs/ca.pem\n",
            );
        }
        text
    }

    fn conf_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.conf"))
    }

    fn write_conf(&self, name: &str) {
        std::fs::write(self.conf_path(name), self.conf(name)).expect("write a herd.conf");
    }

    /// Starts every present server and waits until each is ready.
    pub fn start_all(&mut self) {
        let names: Vec<String> = self.present.iter().cloned().collect();
        for n in names {
            self.start(&n);
        }
    }

    /// Starts `name` on its journal and waits for `herd: ready`.
    fn start(&mut self, name: &str) {
        self.write_conf(name);
        let err_path = self.stderr_path(name);
        let before = ready_lines(&err_path);
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&err_path)
            .expect("the stderr file");
        let state = match self.disks.get(name) {
            Some(fs) => fs.path().to_path_buf(),
            None => self.dir.join("state").join(name),
        };
        let mut cmd = match &self.net {
            // `ip netns exec` execs herd: the child's pid is herd's.
            Some(net) => net.host(name).command(&self.bin),
            None => Command::new(&self.bin),
        };
        let child = cmd
            .current_dir(&self.dir)
            .arg(name)
            .arg("--config")
            .arg(self.conf_path(name))
            .arg("--log-dir")
            .arg(self.dir.join("logs"))
            .arg("--state-dir")
            .arg(state)
            .args(["--log-level", "info"])
            .env_remove("GOOGLE_PLACES_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        let server = self.servers.get_mut(name).expect("a known server");
        server.child = Some(child);
        let deadline = Instant::now() + READY_PATIENCE;
        while ready_lines(&err_path) <= before {
            let server = self.servers.get_mut(name).expect("a known server");
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                server.child = None;
                self.incidents
                    .push(format!("{name} exited ({status}) before it was ready"));
                return;
            }
            if Instant::now() > deadline {
                self.incidents
                    .push(format!("{name} not ready within {READY_PATIENCE:?}"));
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, name: &str, sig: i32) {
        if let Some(c) = self.servers.get(name).and_then(|s| s.child.as_ref()) {
            // SAFETY: kill(2) on a child we have not reaped.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Rewrites `names`' herd.conf and SIGHUPs those that run.
    fn reload(&self, names: &[&str]) {
        for n in names {
            self.write_conf(n);
            self.signal(n, libc::SIGHUP);
        }
    }

    /// Rewrites every present server's herd.conf and SIGHUPs it.
    fn hup_all(&self) {
        let names: Vec<String> = self.present.iter().cloned().collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.reload(&names);
    }

    fn proxies_of(&self, name: &str) -> Vec<Link> {
        self.proxies
            .keys()
            .filter(|(a, b)| a == name || b == name)
            .cloned()
            .collect()
    }

    fn blackhole(&mut self, link: &Link, cut: bool) {
        let n = self.blackholed.entry(link.clone()).or_insert(0);
        *n += 1;
        if let Some(p) = self.proxies.get(link) {
            if cut {
                p.cut();
            }
            p.blackhole();
        }
    }

    fn resume(&mut self, link: &Link) {
        let n = self.blackholed.entry(link.clone()).or_insert(1);
        *n = n.saturating_sub(1);
        if *n == 0 {
            if let Some(p) = self.proxies.get(link) {
                p.resume();
            }
        }
    }

    /// Applies `fault`.
    pub fn begin(&mut self, fault: &Fault) {
        match fault {
            Fault::Kill(s) => {
                let server = self.servers.get_mut(s).expect("a known server");
                server.killed += 1;
                if let Some(mut c) = server.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
            Fault::Pause(s) => {
                let server = self.servers.get_mut(s).expect("a known server");
                server.paused += 1;
                self.signal(s, libc::SIGSTOP);
            }
            Fault::Isolate(s) => {
                let n = self.isolated.entry(s.clone()).or_insert(0);
                *n += 1;
                if let (Some(net), 1) = (&self.net, *n) {
                    net.host(s).link_down();
                }
                for l in self.proxies_of(s) {
                    self.blackhole(&l, false);
                }
            }
            Fault::CutLink(a, b) => {
                let n = self.blackholed.entry((a.clone(), b.clone())).or_insert(0);
                if let Some(net) = &self.net {
                    *n += 1;
                    if *n == 1 {
                        net.cut(a, b);
                    }
                }
                for l in [(a.clone(), b.clone()), (b.clone(), a.clone())] {
                    if self.proxies.contains_key(&l) {
                        self.blackhole(&l, true);
                    }
                }
            }
            Fault::DropLink(a, b) => {
                *self.dropped.entry((a.clone(), b.clone())).or_insert(0) += 1;
                self.reload(&[a, b]);
            }
            Fault::AddServer(s) => {
                if self.present.insert(s.clone()) {
                    let others: Vec<String> =
                        self.present.iter().filter(|n| *n != s).cloned().collect();
                    let others: Vec<&str> = others.iter().map(String::as_str).collect();
                    self.reload(&others);
                    self.start(s);
                }
            }
            Fault::RotateCerts => {
                if let Some(c) = &mut self.certs {
                    c.rotating += 1;
                    if c.rotating == 1 {
                        // Trust the next CA as well as the current one.
                        let next = (c.current + 1) % c.gens.len();
                        let mut bundle =
                            std::fs::read(c.gens[c.current].join("ca.pem")).expect("ca.pem");
                        bundle.extend(std::fs::read(c.gens[next].join("ca.pem")).expect("ca.pem"));
                        replace(&self.dir.join("certs/ca.pem"), &bundle);
                        self.hup_all();
                    }
                }
            }
            Fault::DiskFull(s) => {
                *self.full.entry(s.clone()).or_insert(0) += 1;
                if let Some(fs) = self.disks.get(s) {
                    fs.fill();
                }
            }
        }
    }

    /// Undoes `fault` (once no other fault of its target holds it).
    pub fn end(&mut self, fault: &Fault) {
        match fault {
            Fault::Kill(s) => {
                let server = self.servers.get_mut(s).expect("a known server");
                server.killed = server.killed.saturating_sub(1);
                if server.killed == 0 && server.child.is_none() && self.present.contains(s) {
                    self.start(s);
                }
            }
            Fault::Pause(s) => {
                let server = self.servers.get_mut(s).expect("a known server");
                server.paused = server.paused.saturating_sub(1);
                if server.paused == 0 {
                    self.signal(s, libc::SIGCONT);
                }
            }
            Fault::Isolate(s) => {
                let n = self.isolated.entry(s.clone()).or_insert(1);
                *n = n.saturating_sub(1);
                if let (Some(net), 0) = (&self.net, *n) {
                    net.host(s).link_up();
                }
                for l in self.proxies_of(s) {
                    self.resume(&l);
                }
            }
            Fault::CutLink(a, b) => {
                if let Some(net) = &self.net {
                    let n = self.blackholed.entry((a.clone(), b.clone())).or_insert(1);
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        net.mend(a, b);
                    }
                }
                for l in [(a.clone(), b.clone()), (b.clone(), a.clone())] {
                    if self.proxies.contains_key(&l) {
                        self.resume(&l);
                    }
                }
            }
            Fault::DropLink(a, b) => {
                let n = self.dropped.entry((a.clone(), b.clone())).or_insert(1);
                *n = n.saturating_sub(1);
                self.reload(&[a, b]);
            }
            Fault::AddServer(_) => {}
            Fault::RotateCerts => {
                let next = match &mut self.certs {
                    Some(c) if c.rotating > 0 => {
                        c.rotating -= 1;
                        (c.rotating == 0).then(|| {
                            c.current = (c.current + 1) % c.gens.len();
                            c.current
                        })
                    }
                    _ => None,
                };
                // Every server presents its certificate from the next CA,
                // which every one trusts by now.
                if let Some(k) = next {
                    self.install_leaves(k);
                    self.hup_all();
                }
            }
            Fault::DiskFull(s) => {
                let n = self.full.entry(s.clone()).or_insert(1);
                *n = n.saturating_sub(1);
                if *n == 0 {
                    if let Some(fs) = self.disks.get(s) {
                        fs.resize(ROOM);
                    }
                }
            }
        }
    }

    /// Between steps: notes processes that died on their own (restarting
    /// them), samples memory, keeps full disks full (a compaction frees room).
    pub fn tick(&mut self) {
        let names: Vec<String> = self.servers.keys().cloned().collect();
        for n in names {
            let server = self.servers.get_mut(&n).expect("a known server");
            let Some(c) = server.child.as_mut() else {
                continue;
            };
            let pid = c.id();
            if let Ok(Some(status)) = c.try_wait() {
                server.child = None;
                self.incidents
                    .push(format!("{n} exited by itself: {status}"));
                if self.present.contains(&n) {
                    self.start(&n);
                }
                continue;
            }
            if let Some(bytes) = rss(pid) {
                let e = self.rss.entry(n.clone()).or_insert(0);
                *e = (*e).max(bytes);
            }
        }
        for (s, n) in &self.full {
            if *n > 0 {
                if let Some(fs) = self.disks.get(s) {
                    fs.fill();
                }
            }
        }
    }

    /// What `name` holds for each of `clients` (asked with pipelined
    /// WHATSATs on its client port); None if it cannot be asked now.
    pub fn holdings(&self, name: &str, clients: &[String]) -> Option<HashMap<String, String>> {
        let mut s = self
            .connector()
            .connect(self.addrs[name], Duration::from_secs(2))
            .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut batch = String::new();
        for c in clients {
            batch.push_str(&format!("WHATSAT {c} 1 1\n"));
        }
        let writer = {
            let mut w = s.try_clone().ok()?;
            std::thread::spawn(move || w.write_all(batch.as_bytes()))
        };
        let mut r = BufReader::new(&mut s);
        let mut held = HashMap::new();
        for c in clients {
            let mut line = String::new();
            if r.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            if line.starts_with("? ") {
                continue;
            }
            if !line.starts_with("AT ") {
                return None;
            }
            // The Places JSON, through its empty line.
            loop {
                let mut json = String::new();
                if r.read_line(&mut json).ok()? == 0 {
                    return None;
                }
                if json == "\n" {
                    break;
                }
            }
            held.insert(c.clone(), line);
        }
        writer.join().ok()?.ok()?;
        Some(held)
    }

    /// Lines mentioning a panic in any server's standard error or log.
    pub fn panics(&self) -> Vec<String> {
        let mut found = Vec::new();
        let Ok(dir) = std::fs::read_dir(self.dir.join("logs")) else {
            return found;
        };
        for e in dir.flatten() {
            let mut text = String::new();
            if std::fs::File::open(e.path())
                .and_then(|mut f| f.read_to_string(&mut text))
                .is_err()
            {
                continue;
            }
            for l in text.lines().filter(|l| l.contains("panicked")) {
                found.push(format!("{}: {l}", e.path().display()));
            }
        }
        found
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in self.servers.values_mut() {
            if let Some(mut c) = s.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// How many `herd: ready` lines `path` holds.
fn ready_lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| *l == "herd: ready").count())
        .unwrap_or(0)
}

/// The resident memory of `pid` in bytes.
pub fn rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

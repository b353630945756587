//! Separate hosts for tests: Linux network namespaces joined by a bridge.
//!
//! # What [`Net::new`] creates
//!
//! For a test `t` in process `P` (the `N`th net that process made):
//!
//! ```text
//!   namespace herd-P-N-t-sw         "the switch": bridge br0, and one port pI per host
//!   namespace herd-P-N-t-client     the test's own host:  eth0 10.213.47.2/24
//!   namespace herd-P-N-t-NAME       one per host named:   eth0 10.213.47.(11+i)/24
//! ```
//!
//! Each host namespace has `lo` up and one end (`eth0`) of a veth pair whose
//! other end (`pI` in the switch, `pc` for the client) is a port of `br0`.
//! Everything, the bridge included, lives in namespaces made for this net:
//! **nothing is added to the root namespace's networking**, so the addresses
//! cannot clash with anything on the machine or with a net another test
//! builds at the same moment (every net has its own switch, so all of them
//! use the same 10.213.47.0/24). Interface names are fixed and short (IFNAMSIZ
//! is 16) because they live inside per-net namespaces; only namespace names
//! carry the unique prefix.
//!
//! # How the test process talks to the hosts
//!
//! The test process stays in the root namespace. A socket belongs to the
//! namespace of the thread that created it, and `setns(CLONE_NEWNET)` moves
//! only the calling thread; so [`Host::run`] runs a closure on a fresh thread
//! that has entered the host's namespace, and [`Host::connect`] /
//! [`Host::bind`] use it to make a `TcpStream` / `TcpListener` there. The
//! socket then works from any thread of the test. Test clients normally
//! connect from [`Net::client`], a host of its own, so cutting a server's
//! link also cuts it from the test's clients — as on a real network.
//! (The alternative, one more veth end in the root namespace, would have put
//! an address and a route on the machine itself.)
//!
//! Programs run inside a host with [`Host::spawn`]: `ip netns exec NS cmd`,
//! which enters the namespace and then *execs* `cmd`, so the child's pid is the
//! program's pid and signals sent to [`Proc::pid`] reach the program itself
//! (`spawn` waits until the exec has happened, and the self-tests check it).
//! [`Proc::stop`] waits until every thread has really stopped.
//!
//! # Faults
//!
//! - [`Host::link_down`] / [`Host::link_up`]: the host's port on the bridge
//!   goes down / up. Frames either way are dropped silently: a new `connect`
//!   times out, or fails with "no route to host" once ARP gives up (what a
//!   dead LAN segment looks like). Established connections stall and resume
//!   by retransmission after `link_up`.
//! - [`Net::cut`] / [`Net::mend`]: only the traffic between two hosts is
//!   dropped, silently and both ways (each gets a permanent neighbour entry
//!   for the other with a MAC no one has), while both still reach the rest.
//!
//! # Cleanup
//!
//! `Drop` for [`Net`] — which also runs while a failing test unwinds —
//! SIGKILLs every process still inside its namespaces (`ip netns pids`, so
//! grandchildren too), waits for them to go, and deletes the namespaces;
//! deleting a namespace destroys its interfaces, and a veth pair goes with
//! either end. [`Proc`] kills (SIGKILL) and reaps its process on drop. A net
//! half-built when a step fails is taken down the same way. Namespaces left
//! by a test process that was itself SIGKILLed (no `Drop`) are swept by the
//! next `Net::new`: their names carry a pid that no longer exists.
//! A socket the test made inside a namespace keeps that (by then unnamed)
//! namespace alive until the socket is closed.
//!
//! # Running
//!
//! The tests need root (`sudo -E cargo test --test netns`, or as root) and
//! `ip` from iproute2. Without them each test prints `skipped: REASON` and
//! passes — unless `CI=true`, where it fails: see [`require_netns!`].
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::herd::PATIENCE;

/// The private network inside every [`Net`]: 10.213.47.0/24.
pub const SUBNET: [u8; 3] = [10, 213, 47];
/// The client host's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 47, 2);
/// Host `i` (in the order given to [`Net::new`]) gets `.(11 + i)`.
pub const FIRST_HOST: u8 = 11;
/// A MAC address no interface has (locally administered), used by [`Net::cut`].
const NOWHERE_MAC: &str = "02:00:5e:00:de:ad";
/// Where `ip netns add` puts the names.
const NETNS_DIR: &str = "/var/run/netns";

/// Skips the test, or fails it under `CI=true`, when network namespaces
/// cannot be made here (see [`available`]).
#[macro_export]
macro_rules! require_netns {
    () => {
        if let Err(why) = $crate::support::netns::available() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true, but this test needs network namespaces: {why}");
            }
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Whether this process can build a [`Net`]: root, `ip` present, and a
/// namespace can be created (and deleted). Checked once per process.
pub fn available() -> Result<(), String> {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    CHECK
        .get_or_init(|| {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return Err(
                    "network namespaces need root (run the tests as root or with sudo)".into(),
                );
            }
            ip_path().map_err(|e| format!("no `ip` (iproute2): {e}"))?;
            let probe = format!("herd-{}-probe", std::process::id());
            ip(&["netns", "add", &probe]).map_err(|e| format!("cannot create a namespace: {e}"))?;
            ip(&["netns", "del", &probe])
                .map(drop)
                .map_err(|e| format!("cannot delete a namespace: {e}"))
        })
        .clone()
}

/// The absolute path of `ip`.
fn ip_path() -> Result<&'static Path, String> {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
            .map(|d| d.join("ip"))
            .find(|p| p.is_file())
            .and_then(|p| p.canonicalize().ok())
            .ok_or_else(|| "not found in PATH, /usr/sbin or /sbin".to_string())
    })
    .as_deref()
    .map_err(Clone::clone)
}

/// Runs `ip ARGS`; the error is the command and its stderr.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new(ip_path()?)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Like [`ip`], panicking on failure.
fn ip_ok(args: &[&str]) -> String {
    ip(args).unwrap_or_else(|e| panic!("{e}"))
}

/// The names `ip netns list` shows.
pub fn namespaces() -> Vec<String> {
    ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Keeps `[A-Za-z0-9_.-]`, at most `max` characters.
fn sanitize(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(max)
        .collect()
}

/// SIGKILLs every process in namespace `ns` and waits (up to [`PATIENCE`])
/// until none is left; then deletes the namespace. Errors are described.
fn destroy(ns: &str) -> Result<(), String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        // Zombies have left their namespaces, so they are not listed.
        let pids = ip(&["netns", "pids", ns]).unwrap_or_default();
        let pids: Vec<i32> = pids
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            // SAFETY: kill has no memory preconditions; a gone pid is ESRCH.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if Instant::now() > deadline {
            return Err(format!("processes in {ns} survived SIGKILL"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    ip(&["netns", "del", ns]).map(drop)
}

/// Deletes namespaces named by a test process that no longer runs.
fn sweep_stale() {
    for ns in namespaces() {
        let mut f = ns.split('-');
        let (Some("herd"), Some(pid)) = (f.next(), f.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            if let Err(e) = destroy(&ns) {
                eprintln!("netns: sweeping stale {ns}: {e}");
            }
        }
    }
}

/// A bridge and hosts on it, all torn down on drop.
pub struct Net {
    prefix: String,
    switch: String,
    client: Host,
    hosts: Vec<Host>,
    /// Every namespace made so far, in order: dropped in reverse.
    made: Vec<String>,
}

/// One network namespace with an address on the net.
#[derive(Clone, Debug)]
pub struct Host {
    name: String,
    ns: String,
    addr: Ipv4Addr,
    /// Its port on the bridge, in the switch namespace.
    port: String,
    switch: String,
}

impl Net {
    /// Builds a net with one host per name (addresses `.11`, `.12`, … in
    /// this order) plus the client host (`.2`). Panics if a step fails, after
    /// removing what it had made.
    pub fn new(names: &[&str]) -> Net {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        assert!(names.len() <= 200, "at most 200 hosts");
        for (i, n) in names.iter().enumerate() {
            assert!(
                !n.is_empty() && !names[..i].contains(n),
                "host names must be unique: {n:?}"
            );
        }
        sweep_stale();
        let test = std::thread::current()
            .name()
            .map(|n| sanitize(&n.replace("::", "."), 40))
            .unwrap_or_else(|| "test".into());
        let prefix = format!(
            "herd-{}-{}-{test}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let switch = format!("{prefix}-sw");
        let host = |name: &str, ns: String, addr, port: String| Host {
            name: name.to_string(),
            ns,
            addr,
            port,
            switch: switch.clone(),
        };
        let mut net = Net {
            client: host(
                "client",
                format!("{prefix}-client"),
                CLIENT_ADDR,
                "pc".into(),
            ),
            hosts: names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let [a, b, c] = SUBNET;
                    let addr = Ipv4Addr::new(a, b, c, FIRST_HOST + i as u8);
                    host(
                        n,
                        format!("{prefix}-h-{}", sanitize(n, 40)),
                        addr,
                        format!("p{i}"),
                    )
                })
                .collect(),
            prefix,
            switch: switch.clone(),
            made: Vec::new(),
        };
        // From here a panic drops `net`, which removes what `made` lists.
        ip_ok(&["netns", "add", &switch]);
        net.made.push(switch.clone());
        ip_ok(&["-n", &switch, "link", "set", "lo", "up"]);
        ip_ok(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip_ok(&["-n", &switch, "link", "set", "br0", "up"]);
        let all: Vec<Host> = std::iter::once(net.client.clone())
            .chain(net.hosts.iter().cloned())
            .collect();
        for h in &all {
            ip_ok(&["netns", "add", &h.ns]);
            net.made.push(h.ns.clone());
            ip_ok(&["-n", &h.ns, "link", "set", "lo", "up"]);
            ip_ok(&[
                "-n", &switch, "link", "add", &h.port, "type", "veth", "peer", "name", "eth0",
                "netns", &h.ns,
            ]);
            ip_ok(&["-n", &switch, "link", "set", &h.port, "master", "br0", "up"]);
            let cidr = format!("{}/24", h.addr);
            ip_ok(&["-n", &h.ns, "addr", "add", &cidr, "dev", "eth0"]);
            ip_ok(&["-n", &h.ns, "link", "set", "eth0", "up"]);
        }
        for h in &all {
            h.wait_link_ready();
        }
        net
    }

    /// The unique prefix of every namespace of this net.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The switch namespace (holds the bridge `br0`).
    pub fn switch(&self) -> &str {
        &self.switch
    }

    /// The host the test's clients should connect from (10.213.47.2).
    pub fn client(&self) -> &Host {
        &self.client
    }

    /// The host named `name`. Panics if there is none.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name:?} in this net"))
    }

    /// The hosts, in the order given to [`new`](Self::new).
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The namespaces of this net that exist now.
    pub fn namespaces(&self) -> Vec<String> {
        namespaces()
            .into_iter()
            .filter(|n| n.starts_with(&self.prefix))
            .collect()
    }

    /// Drops all traffic between `a` and `b`, silently and both ways; each
    /// still reaches every other host. Undone by [`mend`](Self::mend).
    pub fn cut(&self, a: &str, b: &str) {
        let (a, b) = (self.host(a), self.host(b));
        for (from, to) in [(a, b), (b, a)] {
            ip_ok(&[
                "-n",
                &from.ns,
                "neigh",
                "replace",
                &to.addr.to_string(),
                "lladdr",
                NOWHERE_MAC,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ]);
        }
    }

    /// Undoes [`cut`](Self::cut): the hosts find each other by ARP again.
    pub fn mend(&self, a: &str, b: &str) {
        let (a, b) = (self.host(a), self.host(b));
        for (from, to) in [(a, b), (b, a)] {
            // Already gone (never cut) is fine.
            let _ = ip(&[
                "-n",
                &from.ns,
                "neigh",
                "del",
                &to.addr.to_string(),
                "dev",
                "eth0",
            ]);
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Hosts first (their processes die, their veths go), the switch last.
        for ns in self.made.iter().rev() {
            if let Err(e) = destroy(ns) {
                // No panic in drop: it may run while a failing test unwinds.
                eprintln!("netns cleanup: {e}");
            }
        }
    }
}

impl Host {
    /// The name given to [`Net::new`] (`client` for the client host).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace name, for `ip netns exec` or `ip -n`.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The host's address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The host's address with `port`.
    pub fn sock(&self, port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(self.addr, port))
    }

    /// Runs `f` on a new thread inside this host's network namespace and
    /// returns its result; sockets `f` makes belong to the host (and work
    /// from any thread afterwards). A panic in `f` is passed on.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = Path::new(NETNS_DIR).join(&self.ns);
        std::thread::scope(|s| {
            let t = s.spawn(|| {
                let fd = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                // SAFETY: a valid namespace fd; moves only this thread.
                if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    panic!("setns {}: {}", self.ns, io::Error::last_os_error());
                }
                f()
            });
            t.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// A TCP connection from this host to `addr`, giving up after `timeout`.
    pub fn connect(&self, addr: impl ToSocketAddrs, timeout: Duration) -> io::Result<TcpStream> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        self.run(move || {
            let mut last = io::Error::new(io::ErrorKind::InvalidInput, "no address");
            for a in &addrs {
                match TcpStream::connect_timeout(a, timeout) {
                    Ok(s) => return Ok(s),
                    Err(e) => last = e,
                }
            }
            Err(last)
        })
    }

    /// A listener bound inside this host (`addr` is usually `self.sock(P)`).
    pub fn bind(&self, addr: impl ToSocketAddrs + Send) -> io::Result<TcpListener> {
        self.run(move || TcpListener::bind(addr))
    }

    /// `ip netns exec NS program`: add arguments, stdio, env, then pass it to
    /// [`spawn`](Self::spawn) (or run it with `output()` for short commands).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(ip_path().expect("ip"));
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// Starts `cmd` (from [`command`](Self::command)) and waits until `ip`
    /// has exec'd the program, so [`Proc::pid`] is the program's pid.
    /// (A program that is itself `ip` would be waited for until it exits.)
    pub fn spawn(&self, cmd: &mut Command) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn in {}: {e}", self.ns));
        let mut p = Proc {
            child,
            ns: self.ns.clone(),
        };
        let ip = ip_path().expect("ip");
        let exe = format!("/proc/{}/exe", p.pid());
        let deadline = Instant::now() + PATIENCE;
        loop {
            if p.child.try_wait().ok().flatten().is_some() {
                break; // Exited (maybe `ip` failing): the caller sees the status.
            }
            match std::fs::read_link(&exe) {
                Ok(e) if e != ip => break,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "ip netns exec did not exec in {}",
                self.ns
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        p
    }

    /// Takes the host's port on the bridge down: frames to and from it are
    /// dropped, silently and both ways. Undone by [`link_up`](Self::link_up).
    pub fn link_down(&self) {
        ip_ok(&["-n", &self.switch, "link", "set", &self.port, "down"]);
    }

    /// Brings the host's port back and waits until it forwards again.
    pub fn link_up(&self) {
        ip_ok(&["-n", &self.switch, "link", "set", &self.port, "up"]);
        self.wait_link_ready();
    }

    /// Waits until both ends of the veth have carrier and the bridge port
    /// forwards (immediate without STP, but not necessarily at once).
    fn wait_link_ready(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let inside = ip(&["-n", &self.ns, "-o", "link", "show", "eth0"]).unwrap_or_default();
            let port =
                ip(&["-n", &self.switch, "-o", "link", "show", &self.port]).unwrap_or_default();
            let state = Command::new("bridge")
                .args(["-n", &self.switch, "link", "show", "dev", &self.port])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                // Without the `bridge` tool, carrier on both ends has to do.
                .unwrap_or_else(|_| "state forwarding".into());
            if inside.contains("LOWER_UP")
                && port.contains("LOWER_UP")
                && state.contains("state forwarding")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "link of {} not ready: {inside} / {port} / {state}",
                self.ns
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A process running inside a host; SIGKILLed and reaped on drop.
pub struct Proc {
    child: Child,
    ns: String,
}

impl Proc {
    /// The program's pid (not `ip`'s: `ip netns exec` execs the program).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The namespace it runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Sends signal `sig` (`libc::SIGHUP`, …). Panics if it cannot be sent.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill has no memory preconditions. The child is not reaped
        // before `wait`, so the pid cannot be someone else's yet.
        if unsafe { libc::kill(self.pid() as libc::pid_t, sig) } != 0 {
            panic!("kill -{sig} {}: {}", self.pid(), io::Error::last_os_error());
        }
    }

    /// SIGSTOP, then waits until every thread has stopped: the kernel stops
    /// a process's threads one by one after `kill` returns, so without the
    /// wait a request sent at once may still be answered. Its sockets stay
    /// open and nothing is read.
    pub fn stop(&self) {
        self.signal(libc::SIGSTOP);
        self.wait_threads("stop", |state| state == 'T');
    }

    /// SIGCONT, then waits until no thread is stopped any more.
    pub fn cont(&self) {
        self.signal(libc::SIGCONT);
        self.wait_threads("go on", |state| state != 'T');
    }

    /// Waits until the state (`R`, `S`, `T`, …, from `/proc/PID/task/*/stat`)
    /// of every thread satisfies `ok`; a process that has exited counts.
    fn wait_threads(&self, what: &str, ok: impl Fn(char) -> bool) {
        let tasks = format!("/proc/{}/task", self.pid());
        let deadline = Instant::now() + PATIENCE;
        loop {
            let Ok(dir) = std::fs::read_dir(&tasks) else {
                return; // Gone.
            };
            let all = dir.flatten().all(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                // `PID (COMM) STATE …`; COMM may hold spaces and parentheses.
                match stat
                    .rsplit_once(')')
                    .and_then(|(_, r)| r.trim_start().chars().next())
                {
                    Some('Z' | 'X') | None => true,
                    Some(state) => ok(state),
                }
            });
            if all {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "process {} did not {what}",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGHUP.
    pub fn hup(&self) {
        self.signal(libc::SIGHUP)
    }

    /// SIGTERM.
    pub fn term(&self) {
        self.signal(libc::SIGTERM)
    }

    /// The exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The `std` child (for its stdio pipes).
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

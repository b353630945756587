//! Herds as separate processes of the built binary, watched through their
//! operator endpoint.
//!
//! [`HerdProc::start`] runs `herd NAMES --config FILE ... --metrics
//! 127.0.0.1:0` (optionally inside a network namespace, via a prepared
//! `Command`), reads its standard error on a thread of its own until
//! `herd: ready`, and learns the endpoint's real port from the banner. Tests
//! then ask the endpoint what they would otherwise have to infer from logs
//! or sleeps: whether a link is up ([`HerdProc::link_up`]), how many clients
//! a server stores. Everything waits by polling with a deadline.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::herd::PATIENCE;
use super::netns::Host;

/// The built binary.
pub const HERD: &str = env!("CARGO_BIN_EXE_herd");

pub use super::ports::free_port;

/// A `herd.conf` of servers on 127.0.0.1, ports from [`free_port`], and
/// the links given; [`LocalConf::write`] puts it in a test's directory.
pub struct LocalConf {
    /// Each server's name and client address, in the order given.
    pub servers: Vec<(String, SocketAddr)>,
    /// The file's text (add directives before writing it).
    pub text: String,
}

impl LocalConf {
    /// Servers `names` linked by `links`.
    pub fn new(names: &[&str], links: &[(&str, &str)]) -> LocalConf {
        let mut text = String::new();
        let mut servers = Vec::new();
        for n in names {
            let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            text.push_str(&format!("server {n} {addr}\n"));
            servers.push((n.to_string(), addr));
        }
        for (a, b) in links {
            text.push_str(&format!("link {a} {b}\n"));
        }
        LocalConf { servers, text }
    }

    /// The client address of server `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.servers
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no server {name} in the config"))
            .1
    }

    /// Writes the file as `dir/name` and returns its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        write(dir, name, &self.text)
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// A command running the binary with the usual directories under `dir`,
/// and `dir` as its working directory: nothing it does lands in the
/// checkout, whatever flags a test leaves out.
pub fn herd_command(base: Command, dir: &Path, conf: &Path, names: &[&str]) -> Command {
    std::fs::create_dir_all(dir).expect("the test's directory");
    let mut cmd = base;
    cmd.current_dir(dir)
        .args(names)
        .arg("--config")
        .arg(conf)
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--log-level", "info"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// A running herd process; killed (SIGKILL) and reaped when dropped.
pub struct HerdProc {
    pub child: Option<Child>,
    pub pid: u32,
    /// Its `--metrics` endpoint.
    pub metrics: SocketAddr,
    /// Standard error so far, each line with when it was read.
    stderr: Arc<Mutex<Vec<(SystemTime, String)>>>,
    /// The thread reading standard error (joined when the process exits
    /// early, so its last words are shown).
    reader: Option<std::thread::JoinHandle<()>>,
    /// Where scrapes connect from (a host of a `netns::Net`), if not here.
    via: Option<Host>,
}

impl HerdProc {
    /// Runs the binary: `base` is `Command::new(HERD)` or a netns wrapper
    /// around it; `extra` flags are added. Returns once it said ready.
    pub fn start(base: Command, dir: &Path, conf: &Path, names: &[&str], extra: &[&str]) -> Self {
        let mut cmd = herd_command(base, dir, conf, names);
        cmd.args(["--metrics", "127.0.0.1:0"]).args(extra);
        Self::spawn(cmd)
    }

    /// Starts a prepared command (stderr piped) and waits for `herd: ready`.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd.spawn().expect("spawn herd");
        let pid = child.id();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("stderr piped");
        let lines = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                lines.lock().unwrap().push((SystemTime::now(), line));
            }
        });
        let mut p = HerdProc {
            child: Some(child),
            pid,
            metrics: "0.0.0.0:0".parse().unwrap(),
            stderr,
            reader: Some(reader),
            via: None,
        };
        p.wait_stderr("herd: ready", |l| l == "herd: ready");
        let banner = p.wait_stderr("the metrics address", |l| l.contains("/metrics"));
        let addr = banner
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("an address in the banner");
        p.metrics = addr.parse().expect("a socket address");
        p
    }

    /// Waits for a line of standard error for which `pred` holds (any line
    /// since the start counts), and returns it.
    pub fn wait_stderr(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_stderr_at(what, pred).1
    }

    /// Like [`wait_stderr`](Self::wait_stderr), with when the line was read.
    pub fn wait_stderr_at(
        &mut self,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> (SystemTime, String) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(l) = self.stderr.lock().unwrap().iter().find(|l| pred(&l.1)) {
                return l.clone();
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                if let Some(reader) = self.reader.take() {
                    let _ = reader.join();
                }
                let lines = self.stderr_lines(|_| true);
                panic!("herd exited ({status}) before {what}: {lines:#?}");
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:#?}",
                self.stderr_lines(|_| true)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The lines of standard error so far that satisfy `pred`.
    pub fn stderr_lines(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let lines = self.stderr.lock().unwrap();
        lines
            .iter()
            .filter(|l| pred(&l.1))
            .map(|l| l.1.clone())
            .collect()
    }

    /// Standard error up to and including `herd: ready`, and when that line
    /// was read.
    pub fn banner(&mut self) -> (Vec<String>, SystemTime) {
        let (at, _) = self.wait_stderr_at("herd: ready", |l| l == "herd: ready");
        let lines = self.stderr_lines(|_| true);
        let end = lines.iter().position(|l| l == "herd: ready").unwrap_or(0);
        (lines[..=end].to_vec(), at)
    }

    /// Its process ID.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Waits (up to [`PATIENCE`]) for it to exit, and returns how it did.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("not reaped yet");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                self.child = None;
                return s;
            }
            assert!(Instant::now() < deadline, "herd {} did not exit", self.pid);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs it and reaps it (what dropping it does), e.g. to restart
    /// it on the same files.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its resident memory now, in bytes (`VmRSS`).
    pub fn rss(&self) -> u64 {
        rss(self.pid).expect("the process's VmRSS")
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid we started and have not reaped.
        let r = unsafe { libc::kill(self.pid as i32, sig) };
        assert_eq!(r, 0, "kill {} {sig}", self.pid);
    }

    /// Scrapes connect from `host` (for a herd inside a network namespace).
    pub fn via(mut self, host: Host) -> Self {
        self.via = Some(host);
        self
    }

    /// Every sample of its `/metrics`, by `name{labels}` as written.
    pub fn scrape(&self) -> HashMap<String, f64> {
        let connect = || match &self.via {
            Some(host) => host.connect(self.metrics, PATIENCE),
            None => TcpStream::connect_timeout(&self.metrics, PATIENCE),
        };
        scrape_with(connect, self.metrics)
    }

    /// `herd_link_up{server,neighbour}`: 1 up, 0 down, None unknown.
    pub fn link_up(&self, server: &str, neighbour: &str) -> Option<bool> {
        let key = format!("herd_link_up{{server=\"{server}\",neighbour=\"{neighbour}\"}}");
        self.scrape().get(&key).map(|v| *v == 1.0)
    }

    /// `herd_stored_clients{server}`.
    pub fn stored(&self, server: &str) -> f64 {
        let key = format!("herd_stored_clients{{server=\"{server}\"}}");
        self.scrape().get(&key).copied().unwrap_or(-1.0)
    }

    /// Waits until `cond` holds on a scrape; returns how long it took.
    pub fn wait_metrics(
        &self,
        what: &str,
        cond: impl Fn(&HashMap<String, f64>) -> bool,
    ) -> Duration {
        let start = Instant::now();
        loop {
            if cond(&self.scrape()) {
                return start.elapsed();
            }
            assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for HerdProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A stopped process must be woken to die of SIGKILL? No: SIGKILL
            // works on a stopped process; SIGCONT first does no harm.
            unsafe {
                libc::kill(self.pid as i32, libc::SIGCONT);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The resident memory of process `pid` in bytes (`VmRSS`), if it runs.
pub fn rss(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// Scrapes `/metrics` over a connection `connect` makes (so a test can
/// scrape from inside a network namespace).
pub fn scrape_with(
    connect: impl FnOnce() -> std::io::Result<TcpStream>,
    addr: SocketAddr,
) -> HashMap<String, f64> {
    let mut s = connect().unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut body = String::new();
    s.read_to_string(&mut body).expect("read");
    let (_, body) = body.split_once("\r\n\r\n").expect("an HTTP response");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

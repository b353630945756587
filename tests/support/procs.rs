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
use std::time::{Duration, Instant};

use super::herd::PATIENCE;
use super::netns::Host;

/// The built binary.
pub const HERD: &str = env!("CARGO_BIN_EXE_herd");

/// A free port on 127.0.0.1 (bound and released: good enough for tests
/// that start their servers at once), never one this test process was
/// given before: the kernel may hand a released port out again at once,
/// and a herd.conf with one address twice does not start.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// A command running the binary with the usual directories under `dir`.
pub fn herd_command(base: Command, dir: &Path, conf: &Path, names: &[&str]) -> Command {
    let mut cmd = base;
    cmd.args(names)
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
    stderr: Arc<Mutex<Vec<String>>>,
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
                lines.lock().unwrap().push(line);
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
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(l) = self.stderr.lock().unwrap().iter().find(|l| pred(l)) {
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
                let lines = self.stderr.lock().unwrap().clone();
                panic!("herd exited ({status}) before {what}: {lines:#?}");
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:#?}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The lines of standard error so far that satisfy `pred`.
    pub fn stderr_lines(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let lines = self.stderr.lock().unwrap();
        lines.iter().filter(|l| pred(l)).cloned().collect()
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

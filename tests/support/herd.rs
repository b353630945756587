//! The in-process herd harness (`tools/inproc.rs`, shared with the benches
//! and flood_load) as the tests use it, and a blocking client.
//!
//! [`TestHerd`] only adds the tests' conventions to [`InProcHerd`]: a
//! failure panics, no Places key is taken from the environment (a test that
//! wants one sets it), and a client connects to a server by name.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use herd::server::ServerConfig;

use super::inproc::InProcHerd;
#[allow(unused_imports)] // Not every test uses every one.
pub use super::inproc::{timestamp, REFERENCE_LINKS, REFERENCE_NAMES};

/// How long a test waits for anything before it fails: generous, because
/// CI is a noisy 2-core machine. Waits end as soon as the condition holds.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A herd running in this process.
pub struct TestHerd {
    herd: InProcHerd,
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
        let herd = InProcHerd::start_on(names, links, &[], super::ports::free_port, |c| {
            c.places_key = None;
            tweak(c);
        })
        .expect("start the herd");
        TestHerd { herd }
    }

    /// The reference herd of docs/PROTOCOL.md §1.
    pub fn reference() -> TestHerd {
        Self::start(REFERENCE_NAMES, REFERENCE_LINKS)
    }

    /// The address of server `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.herd.addr(name)
    }

    /// A new client connected to `name`.
    pub fn client(&self, name: &str) -> Client {
        Client::connect(self.addr(name))
    }

    /// Stops server `name` (its listener and every connection close).
    pub fn stop(&mut self, name: &str) {
        self.herd.stop(name).expect("server stopped cleanly");
    }

    /// Starts server `name` again, empty, on the same port.
    pub fn restart(&mut self, name: &str) {
        self.herd.restart(name).expect("restart");
    }

    /// True while `name` runs.
    pub fn is_running(&self, name: &str) -> bool {
        self.herd.is_running(name)
    }
}

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

//! A fault-injecting TCP proxy for tests: listens on `127.0.0.1:0`, forwards
//! every connection to a target, and at run time can
//!
//! - delay each direction by a fixed time ([`Proxy::set_delay`]): a chunk
//!   read at `t` is written at `t + delay`, so the delay adds latency without
//!   cutting throughput;
//! - blackhole ([`Proxy::blackhole`]): connections stay open, nothing is
//!   forwarded, and the proxy stops reading, so the senders' kernel buffers
//!   fill and TCP pushes back — what a partition looks like to TCP. Bytes
//!   already read are held (at most [`QUEUE`] chunks of [`CHUNK`] bytes per
//!   direction and connection) and delivered after [`Proxy::resume`];
//! - cut every connection ([`Proxy::cut`]): both sides get a reset (a read
//!   sees `ECONNRESET`, or EOF if it raced).
//!
//! Threads and blocking `std` sockets: per connection one reader and one
//! writer thread per direction, linked by a bounded channel. Drop cuts all
//! connections and stops accepting.
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes read at once.
pub const CHUNK: usize = 16 * 1024;
/// Chunks one direction of one connection may hold (read, not yet written).
pub const QUEUE: usize = 8;

/// Which way bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the client that connected to the proxy, to the target.
    ToTarget = 0,
    /// From the target back to the client.
    ToClient = 1,
}

/// How the proxy reaches its target.
type Dial = dyn Fn() -> io::Result<TcpStream> + Send + Sync;

/// A running proxy. Drop stops it.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled on every change of `State`.
    changed: Condvar,
    stop: AtomicBool,
}

struct State {
    delay: [Duration; 2],
    blackhole: bool,
    conns: Vec<Arc<Conn>>,
}

struct Conn {
    client: TcpStream,
    target: TcpStream,
    /// Set by a cut: every thread of the connection returns.
    dead: AtomicBool,
    /// Threads of this connection that have returned (4 when done).
    done: AtomicUsize,
}

impl Conn {
    fn finished(&self) -> bool {
        self.done.load(Ordering::SeqCst) == 4
    }
}

impl Proxy {
    /// A proxy on `127.0.0.1:0` to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        Self::start_with(listener, move || {
            TcpStream::connect_timeout(&target, super::herd::PATIENCE)
        })
    }

    /// A proxy accepting on `listener` (made anywhere, e.g. in a namespace
    /// with `Host::bind`) that reaches its target with `dial` (e.g.
    /// `Host::connect`).
    pub fn start_with(
        listener: TcpListener,
        dial: impl Fn() -> io::Result<TcpStream> + Send + Sync + 'static,
    ) -> Proxy {
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                delay: [Duration::ZERO; 2],
                blackhole: false,
                conns: Vec::new(),
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let dial: Arc<Dial> = Arc::new(dial);
        let accept = std::thread::spawn(move || accept_loop(listener, s, dial));
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Delays bytes travelling `dir` by `delay` from now on (zero: none).
    pub fn set_delay(&self, dir: Dir, delay: Duration) {
        self.shared.lock().delay[dir as usize] = delay;
        self.shared.changed.notify_all();
    }

    /// Forwards nothing and reads nothing until [`resume`](Self::resume);
    /// connections stay open and new ones are accepted.
    pub fn blackhole(&self) {
        self.shared.lock().blackhole = true;
        self.shared.changed.notify_all();
    }

    /// Ends a [`blackhole`](Self::blackhole): held bytes flow on.
    pub fn resume(&self) {
        self.shared.lock().blackhole = false;
        self.shared.changed.notify_all();
    }

    /// Resets every open connection (both sides). New ones are accepted.
    pub fn cut(&self) {
        let conns = std::mem::take(&mut self.shared.lock().conns);
        for c in &conns {
            c.dead.store(true, Ordering::SeqCst);
            for s in [&c.client, &c.target] {
                // Linger 0: the last close sends RST rather than FIN.
                let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
                // Wakes the blocked readers without sending anything.
                let _ = s.shutdown(Shutdown::Read);
            }
        }
        self.shared.changed.notify_all();
        // The threads return and drop their handles; the last close resets.
    }

    /// Connections open through the proxy now.
    pub fn connections(&self) -> usize {
        let mut st = self.shared.lock();
        st.conns.retain(|c| !c.finished());
        st.conns.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.cut();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking pump thread must not take the test's proxy down too.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, dial: Arc<Dial>) {
    // Nonblocking, polled: the loop must notice `stop` without a wake-up
    // connection (which could not reach a listener in another namespace).
    listener.set_nonblocking(true).unwrap();
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => continue,
        };
        let Ok(target) = dial() else {
            // Target unreachable: the client sees its connection closed.
            continue;
        };
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);
        let _ = target.set_nodelay(true);
        let conn = Arc::new(Conn {
            client,
            target,
            dead: AtomicBool::new(false),
            done: AtomicUsize::new(0),
        });
        {
            let mut st = shared.lock();
            st.conns.retain(|c| !c.finished());
            st.conns.push(conn.clone());
        }
        for dir in [Dir::ToTarget, Dir::ToClient] {
            let (from, to) = match dir {
                Dir::ToTarget => (&conn.client, &conn.target),
                Dir::ToClient => (&conn.target, &conn.client),
            };
            let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                conn.done.fetch_add(2, Ordering::SeqCst);
                continue;
            };
            let (tx, rx) = sync_channel(QUEUE);
            let (s, c) = (shared.clone(), conn.clone());
            std::thread::spawn(move || {
                read_side(from, tx, &s, &c);
                c.done.fetch_add(1, Ordering::SeqCst);
            });
            let (s, c) = (shared.clone(), conn.clone());
            std::thread::spawn(move || {
                write_side(to, rx, dir, &s, &c);
                c.done.fetch_add(1, Ordering::SeqCst);
            });
        }
    }
}

/// Reads chunks and queues them with the time they arrived; reads nothing
/// while blackholed. Returns on EOF, error or cut (dropping `tx` tells the
/// writer).
fn read_side(
    mut from: TcpStream,
    tx: SyncSender<(Instant, Vec<u8>)>,
    shared: &Shared,
    conn: &Conn,
) {
    let mut buf = vec![0; CHUNK];
    loop {
        {
            let mut st = shared.lock();
            while st.blackhole && !conn.dead.load(Ordering::SeqCst) {
                st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        }
        if conn.dead.load(Ordering::SeqCst) {
            return;
        }
        match from.read(&mut buf) {
            // EOF (or a cut's shutdown): the writer passes the FIN on.
            Ok(0) => return,
            Ok(n) => {
                // Blocks while QUEUE chunks wait: that is the push-back.
                if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Writes each chunk once its delay has passed and no blackhole holds it;
/// after the reader's EOF, half-closes `to`. Returns at once on a cut.
fn write_side(
    mut to: TcpStream,
    rx: Receiver<(Instant, Vec<u8>)>,
    dir: Dir,
    shared: &Shared,
    conn: &Conn,
) {
    // Short write timeouts, so a writer stuck on a peer that does not read
    // still notices a cut.
    let _ = to.set_write_timeout(Some(Duration::from_millis(100)));
    for (read_at, chunk) in rx {
        {
            let mut st = shared.lock();
            loop {
                if conn.dead.load(Ordering::SeqCst) {
                    return;
                }
                let due = read_at + st.delay[dir as usize];
                let now = Instant::now();
                st = if st.blackhole {
                    shared.changed.wait(st).unwrap_or_else(|p| p.into_inner())
                } else if now < due {
                    shared
                        .changed
                        .wait_timeout(st, due - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                } else {
                    break;
                };
            }
        }
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            if conn.dead.load(Ordering::SeqCst) {
                return;
            }
            match to.write(rest) {
                Ok(0) => return,
                Ok(n) => rest = &rest[n..],
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return,
            }
        }
    }
    if !conn.dead.load(Ordering::SeqCst) {
        let _ = to.shutdown(Shutdown::Write);
    }
}

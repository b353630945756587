//! `ceiling [ADDR]`: the fastest line server this machine runs, to measure
//! herd against.
//!
//! One thread, one `mio::Poll`, a slab of connections; every `\n` read is
//! answered with the same AT-shaped line (as long as a real reply), and
//! nothing else is done: no parsing, no store, no clock, no logging. Like
//! herd, it reads every ready connection first and writes each one's
//! replies once at the end of the poll turn (the I/O pattern is the same, so
//! the difference is the work). A last
//! line ended by EOF instead of `\n` is answered too, then the connection is
//! closed once its replies are written, as herd does (docs/PROTOCOL.md §2), so the churn
//! load works against it. It is what `tools/compare.sh` calls the *ceiling*:
//! herd's targets are ratios to it. Default address 127.0.0.1:12100.
//!
//! `ceiling ADDR --watch`: the same, and the least a server can do to fan
//! positions out to watchers (docs/PROTOCOL.md §15), the ceiling of
//! `flood_load --mode watch` (docs/PERFORMANCE.md): lines are split, a
//! connection that says `WATCH ...` becomes a watcher (sent the newest
//! AT line at once, if any), and each `IAMAT CLIENT COORDS TIME` makes an
//! AT line of its fields, once, that every watcher is sent at the end of
//! that poll turn — one write(2) per watcher, no store, no conflation, no
//! clock, no logging.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

/// An AT line of the length herd's replies to the load tool have.
const REPLY: &[u8] =
    b"AT Ceiling +0.000012345 c0000-0000000 +34.068930-118.445127 1700000000.123456789\n";
const LISTENER: Token = Token(usize::MAX - 1);

struct Conn {
    stream: TcpStream,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    pos: usize,
    /// Bytes of an unfinished line were read since the last `\n`.
    mid_line: bool,
    read_closed: bool,
    interest: Interest,
    /// `--watch`: the unfinished line, and whether it said `WATCH`.
    line: Vec<u8>,
    watcher: bool,
}

/// `--watch`: the watchers, and the newest AT line (sent to all of them
/// at the turn's end when `fresh`).
#[derive(Default)]
struct Fanout {
    on: bool,
    watchers: Vec<usize>,
    last: Vec<u8>,
    fresh: bool,
}

/// What serving a connection came to.
enum Step {
    Open,
    Close,
}

fn main() -> io::Result<()> {
    let fanout_on = std::env::args().any(|a| a == "--watch");
    let addr: SocketAddr = std::env::args()
        .skip(1)
        .find(|a| a != "--watch")
        .unwrap_or_else(|| "127.0.0.1:12100".to_string())
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("address: {e}")))?;
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let std_listener = herd::server::bind(addr)?;
    let mut listener = TcpListener::from_std(std_listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("ceiling: listening on {addr}");
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut dirty: Vec<usize> = Vec::new();
    let mut fanout = Fanout {
        on: fanout_on,
        ..Fanout::default()
    };
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept(&mut listener, &poll, &mut conns);
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            match read(conn, key, &mut scratch, &mut fanout) {
                Step::Open => dirty.push(key),
                Step::Close => close(&mut conns, &poll, key),
            }
        }
        if fanout.fresh {
            fanout.fresh = false;
            fanout.watchers.retain(|&key| {
                let Some(conn) = conns.get_mut(key) else {
                    return false;
                };
                conn.out.extend_from_slice(&fanout.last);
                dirty.push(key);
                true
            });
        }
        for key in dirty.drain(..) {
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            if let Step::Close = write(conn, key, &poll) {
                close(&mut conns, &poll, key);
            }
        }
    }
}

fn close(conns: &mut Slab<Conn>, poll: &Poll, key: usize) {
    if let Some(mut conn) = conns.try_remove(key) {
        let _ = poll.registry().deregister(&mut conn.stream);
    }
}

fn accept(listener: &mut TcpListener, poll: &Poll, conns: &mut Slab<Conn>) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nodelay(true);
                let entry = conns.vacant_entry();
                let key = entry.key();
                if poll
                    .registry()
                    .register(&mut stream, Token(key), Interest::READABLE)
                    .is_ok()
                {
                    entry.insert(Conn {
                        stream,
                        out: Vec::new(),
                        pos: 0,
                        mid_line: false,
                        read_closed: false,
                        interest: Interest::READABLE,
                        line: Vec::new(),
                        watcher: false,
                    });
                }
            }
            // The backlog is empty until the next event.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("ceiling: accept: {e}");
                return;
            }
        }
    }
}

/// Reads to `WouldBlock` and answers every line.
fn read(conn: &mut Conn, key: usize, scratch: &mut [u8], fanout: &mut Fanout) -> Step {
    if fanout.on {
        return read_lines(conn, key, scratch, fanout);
    }
    while !conn.read_closed {
        match conn.stream.read(scratch) {
            Ok(0) => {
                // EOF: a last line without `\n` is still answered.
                if conn.mid_line {
                    conn.out.extend_from_slice(REPLY);
                }
                conn.read_closed = true;
            }
            Ok(n) => {
                let data = &scratch[..n];
                for _ in data.iter().filter(|&&b| b == b'\n') {
                    conn.out.extend_from_slice(REPLY);
                }
                conn.mid_line = data[n - 1] != b'\n';
            }
            // Drained: the next event says when there is more.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Step::Close,
        }
    }
    Step::Open
}

/// `--watch`: reads to `WouldBlock`, line by line: `WATCH` makes a
/// watcher, `IAMAT` the newest AT line, and every other line is answered.
fn read_lines(conn: &mut Conn, key: usize, scratch: &mut [u8], fanout: &mut Fanout) -> Step {
    loop {
        match conn.stream.read(scratch) {
            Ok(0) => return Step::Close,
            Ok(n) => {
                for &b in &scratch[..n] {
                    if b != b'\n' {
                        conn.line.push(b);
                        continue;
                    }
                    let line = std::mem::take(&mut conn.line);
                    let fields: Vec<&[u8]> = line.split(|&c| c == b' ').collect();
                    match fields[0] {
                        b"WATCH" if !conn.watcher => {
                            conn.watcher = true;
                            fanout.watchers.push(key);
                            conn.out.extend_from_slice(&fanout.last);
                        }
                        b"WATCH" => {}
                        b"IAMAT" if fields.len() == 4 && !conn.watcher => {
                            let mut at = b"AT Ceiling +0.000012345".to_vec();
                            for f in &fields[1..] {
                                at.push(b' ');
                                at.extend_from_slice(f);
                            }
                            at.push(b'\n');
                            conn.out.extend_from_slice(&at);
                            fanout.last = at;
                            fanout.fresh = true;
                        }
                        _ => conn.out.extend_from_slice(REPLY),
                    }
                    conn.line = line;
                    conn.line.clear();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Open,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Step::Close,
        }
    }
}

/// Writes what it can; asks for WRITABLE while bytes remain.
fn write(conn: &mut Conn, key: usize, poll: &Poll) -> Step {
    while conn.pos < conn.out.len() {
        match conn.stream.write(&conn.out[conn.pos..]) {
            Ok(0) => return Step::Close,
            Ok(n) => conn.pos += n,
            // The send buffer is full: wait for WRITABLE.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Step::Close,
        }
    }
    if conn.pos == conn.out.len() {
        conn.out.clear();
        conn.pos = 0;
        if conn.read_closed {
            return Step::Close;
        }
    }
    let want = if conn.out.is_empty() {
        Interest::READABLE
    } else {
        Interest::READABLE | Interest::WRITABLE
    };
    if want != conn.interest {
        if poll
            .registry()
            .reregister(&mut conn.stream, Token(key), want)
            .is_err()
        {
            return Step::Close;
        }
        conn.interest = want;
    }
    Step::Open
}

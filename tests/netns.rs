//! Self-tests of the test harnesses `support::netns` (hosts in network
//! namespaces) and `support::proxy` (a fault-injecting TCP proxy).
//!
//! The netns tests need root: as root `cargo test --test netns`, otherwise
//! `sudo -E cargo test --test netns`. Without root they print `skipped: …`,
//! and fail under `CI=true`.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::herd::{wait_for, Client, PATIENCE};
use support::netns::{self, Host, Net};
use support::proxy::{Dir, Proxy};

const HERD: &str = env!("CARGO_BIN_EXE_herd");

/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(800);

/// An echo server on a listener (made in a namespace or not); stops
/// accepting on drop, and each connection ends when its client closes.
struct Echo {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start(listener: TcpListener) -> Echo {
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        std::thread::spawn(move || {
                            let mut buf = [0; 4096];
                            while let Ok(n @ 1..) = c.read(&mut buf) {
                                if c.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Echo {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.take().map(JoinHandle::join);
    }
}

/// Sends `msg` and reads it back within `timeout`; `Err` says what failed.
fn echo(s: &mut TcpStream, msg: &[u8], timeout: Duration) -> Result<(), String> {
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(msg).map_err(|e| format!("write: {e}"))?;
    let mut got = vec![0; msg.len()];
    s.read_exact(&mut got).map_err(|e| format!("read: {e}"))?;
    assert_eq!(got, msg);
    Ok(())
}

/// Asserts nothing can be read from `s` for [`QUIET`] (a timeout, not EOF).
fn assert_silent(s: &mut TcpStream, what: &str) {
    s.set_read_timeout(Some(QUIET)).unwrap();
    let mut b = [0; 64];
    match s.read(&mut b) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("{what}: expected silence, got {other:?}"),
    }
}

/// A connection from `from` to `to`, retried until it works (the other
/// side may be a moment from listening), within [`PATIENCE`].
fn connect(from: &Host, to: SocketAddr) -> TcpStream {
    wait_for(&format!("{} to reach {to}", from.name()), || {
        from.connect(to, Duration::from_secs(2)).ok()
    })
}

/// The root namespace's links, addresses and routes, one per line.
fn root_networking() -> String {
    let mut all = String::new();
    for what in [&["-o", "link"][..], &["-o", "addr"], &["route"]] {
        let out = std::process::Command::new("ip")
            .args(what)
            .output()
            .unwrap();
        all.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    all
}

fn pid_alive(pid: u32) -> bool {
    // A zombie is as good as dead: it runs nothing and holds no namespace.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn the_client_reaches_a_host_until_its_link_is_down() {
    require_netns!();
    let root_before = root_networking();
    let net = Net::new(&["Alpha", "Beta"]);
    let prefix = net.prefix().to_string();
    assert_eq!(net.namespaces().len(), 4, "switch, client and two hosts");
    let (alpha, beta) = (net.host("Alpha"), net.host("Beta"));
    assert_eq!(alpha.addr().to_string(), "10.213.47.11");
    assert_eq!(beta.addr().to_string(), "10.213.47.12");
    let server = Echo::start(beta.bind(beta.sock(7000)).unwrap());

    // Nothing of the net shows in the root namespace. (Connecting from it
    // proves nothing: a sandbox may answer every TCP connect itself.)
    let root = root_networking();
    assert!(!root.contains("10.213.47."), "{root}");
    assert_eq!(root.lines().count(), root_before.lines().count(), "{root}");

    let mut c = connect(net.client(), server.addr);
    echo(&mut c, b"hello", PATIENCE).unwrap();
    let mut a = connect(alpha, server.addr);
    echo(&mut a, b"from alpha", PATIENCE).unwrap();

    beta.link_down();
    c.write_all(b"held").unwrap();
    assert_silent(&mut c, "an established connection across a downed link");
    let t = Instant::now();
    let refused = net.client().connect(server.addr, Duration::from_secs(3));
    assert!(refused.is_err(), "connected across a downed link");
    eprintln!(
        "connect while down: {:?} after {:?}",
        refused.unwrap_err(),
        t.elapsed()
    );
    assert!(alpha.connect(server.addr, Duration::from_secs(3)).is_err());

    beta.link_up();
    // TCP retransmits what was held; the connection survived.
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut got = [0; 4];
    c.read_exact(&mut got)
        .expect("the held bytes after link_up");
    assert_eq!(&got, b"held");
    echo(&mut a, b"again", PATIENCE).unwrap();
    let mut fresh = connect(net.client(), server.addr);
    echo(&mut fresh, b"fresh", PATIENCE).unwrap();

    drop((c, a, fresh, server));
    drop(net);
    let left: Vec<_> = netns::namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_cut_between_two_hosts_spares_the_rest() {
    require_netns!();
    let net = Net::new(&["A", "B"]);
    let (a, b) = (net.host("A"), net.host("B"));
    let ea = Echo::start(a.bind(a.sock(7000)).unwrap());
    let eb = Echo::start(b.bind(b.sock(7000)).unwrap());
    let mut ab = connect(a, eb.addr);
    echo(&mut ab, b"1", PATIENCE).unwrap();

    net.cut("A", "B");
    ab.write_all(b"2").unwrap();
    assert_silent(&mut ab, "A to B across a cut");
    assert!(a.connect(eb.addr, Duration::from_secs(2)).is_err());
    assert!(b.connect(ea.addr, Duration::from_secs(2)).is_err());
    // The client still reaches both.
    echo(&mut connect(net.client(), ea.addr), b"ca", PATIENCE).unwrap();
    echo(&mut connect(net.client(), eb.addr), b"cb", PATIENCE).unwrap();

    net.mend("A", "B");
    ab.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut got = [0; 1];
    ab.read_exact(&mut got).expect("the held byte after mend");
    assert_eq!(&got, b"2");
    echo(&mut connect(b, ea.addr), b"ba", PATIENCE).unwrap();
}

#[test]
fn herd_runs_inside_a_host_and_gets_the_signals() {
    require_netns!();
    let net = Net::new(&["Solo"]);
    let host = net.host("Solo");
    let dir = tempfile::tempdir().unwrap();
    let addr = host.sock(12000);
    let conf = dir.path().join("herd.conf");
    std::fs::write(&conf, format!("server Solo {addr}\n")).unwrap();
    let mut herd = host.spawn(
        host.command(HERD)
            .args(["Solo", "--config"])
            .arg(&conf)
            .arg("--log-dir")
            .arg(dir.path().join("logs"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .stdin(Stdio::null()),
    );

    // The pid is herd's own, and herd runs in the host's namespace.
    let exe = std::fs::read_link(format!("/proc/{}/exe", herd.pid())).unwrap();
    assert_eq!(exe, std::fs::canonicalize(HERD).unwrap());
    let ns_of_pid = std::fs::metadata(format!("/proc/{}/ns/net", herd.pid())).unwrap();
    let ns_of_host = std::fs::metadata(format!("/var/run/netns/{}", host.ns())).unwrap();
    assert_eq!(ns_of_pid.ino(), ns_of_host.ino());

    let stream = connect(net.client(), addr);
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut c = Client {
        reader: std::io::BufReader::new(stream),
    };
    let at = c.ask("IAMAT kiwi +34.068930-118.445127 1520023934.918963997");
    assert!(at.starts_with("AT Solo "), "{at}");

    herd.stop();
    c.send(b"IAMAT kiwi +34.068930-118.445127 1520023935.0\n");
    assert_silent(c.reader.get_mut(), "a stopped herd");
    herd.cont();
    let at = c.text();
    assert!(at.starts_with("AT Solo "), "after SIGCONT: {at}");

    herd.term();
    let status = herd.wait_timeout(PATIENCE).expect("herd exits on SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn signals_reach_the_program_not_ip() {
    require_netns!();
    let net = Net::new(&["H"]);
    let host = net.host("H");
    let mut cmd = host.command("sleep");
    cmd.arg("1000");
    // SIGHUP's default action, whatever this test inherited: under nohup
    // (a loop of test runs in the background) it is ignored, and an
    // ignored signal stays ignored across exec.
    // SAFETY: signal(2) is async-signal-safe, as pre_exec requires.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut sleep = host.spawn(&mut cmd);
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", sleep.pid())).unwrap();
    assert_eq!(comm.trim(), "sleep");
    sleep.hup();
    let status = sleep.wait_timeout(PATIENCE).expect("sleep dies of SIGHUP");
    assert_eq!(status.signal(), Some(libc::SIGHUP), "{status:?}");
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    require_netns!();
    let (tx, rx) = std::sync::mpsc::channel();
    let failed = std::thread::Builder::new()
        .name("a_panicking_test".into())
        .spawn(move || {
            let net = Net::new(&["Doomed"]);
            let host = net.host("Doomed");
            // A shell and its child: the child outlives the shell's SIGKILL,
            // so only the net's cleanup can stop it.
            let mut sh = host.spawn(
                host.command("sh")
                    .args(["-c", "sleep 1000 & echo $!; wait"])
                    .stdout(Stdio::piped()),
            );
            let mut line = String::new();
            let mut out = sh.child().stdout.take().unwrap();
            let mut b = [0; 1];
            while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
                line.push(b[0] as char);
            }
            let _listener = host.bind(host.sock(7000)).unwrap();
            tx.send((
                net.prefix().to_string(),
                sh.pid(),
                line.parse::<u32>().unwrap(),
            ))
            .unwrap();
            panic!("on purpose, with a net, a process and a socket alive");
        })
        .unwrap()
        .join();
    assert!(failed.is_err(), "the thread panicked");
    let (prefix, sh, sleep) = rx.recv().unwrap();
    assert!(prefix.contains("a_panicking_test"), "{prefix}");
    let left: Vec<_> = netns::namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!pid_alive(sh), "the shell survived");
    // The orphaned sleep is reaped by init, when init gets to it.
    wait_for("the grandchild to be gone", || {
        (!pid_alive(sleep)).then_some(())
    });
}

#[test]
fn the_proxy_delays_blackholes_resumes_and_cuts() {
    let server = Echo::start(TcpListener::bind("127.0.0.1:0").unwrap());
    let proxy = Proxy::start(server.addr);
    let mut c = TcpStream::connect(proxy.addr()).unwrap();
    c.set_nodelay(true).unwrap();
    echo(&mut c, b"plain", PATIENCE).unwrap();

    // Delay: each direction adds its own.
    proxy.set_delay(Dir::ToTarget, Duration::from_millis(200));
    proxy.set_delay(Dir::ToClient, Duration::from_millis(150));
    let t = Instant::now();
    echo(&mut c, b"slow", PATIENCE).unwrap();
    let rtt = t.elapsed();
    assert!(rtt >= Duration::from_millis(350), "round trip {rtt:?}");
    assert!(rtt < PATIENCE, "round trip {rtt:?}");
    proxy.set_delay(Dir::ToTarget, Duration::ZERO);
    proxy.set_delay(Dir::ToClient, Duration::ZERO);

    // Blackhole: nothing moves, but the connection stays open.
    proxy.blackhole();
    c.write_all(b"held").unwrap();
    assert_silent(&mut c, "a blackholed proxy");
    // And the proxy stops reading: a writer is pushed back after a bounded
    // amount (kernel buffers plus the proxy's small queue).
    let mut bulk = TcpStream::connect(proxy.addr()).unwrap();
    bulk.set_nonblocking(true).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0usize;
    let deadline = Instant::now() + PATIENCE;
    loop {
        match bulk.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // Full for a moment; full for good once it stays full.
                std::thread::sleep(Duration::from_millis(100));
                if matches!(bulk.write(&chunk), Err(e) if e.kind() == ErrorKind::WouldBlock) {
                    break;
                }
            }
            Err(e) => panic!("bulk write: {e}"),
        }
        assert!(sent < 64 << 20, "{sent} bytes taken while blackholed");
        assert!(Instant::now() < deadline, "writes never blocked");
    }
    eprintln!("blackholed proxy took {sent} bytes before pushing back");
    drop(bulk);

    proxy.resume();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut got = [0; 4];
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"held");
    echo(&mut c, b"flowing", PATIENCE).unwrap();

    // Cut: the client sees a reset (or EOF), and new connections work.
    assert!(proxy.connections() >= 1);
    proxy.cut();
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut b = [0; 8];
    match c.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("after cut: {other:?}"),
    }
    let mut again = TcpStream::connect(proxy.addr()).unwrap();
    echo(&mut again, b"new", PATIENCE).unwrap();
}

#[test]
fn the_proxy_reaches_into_a_host() {
    require_netns!();
    let net = Net::new(&["Far"]);
    let far = net.host("Far");
    let server = Echo::start(far.bind(far.sock(7000)).unwrap());
    let target = server.addr;
    // Loopback in the root namespace, dialling from the client host.
    let client = net.client().clone();
    let proxy = Proxy::start_with(TcpListener::bind("127.0.0.1:0").unwrap(), move || {
        client.connect(target, PATIENCE)
    });
    let mut c = TcpStream::connect(proxy.addr()).unwrap();
    echo(&mut c, b"through", PATIENCE).unwrap();
    far.link_down();
    c.write_all(b"x").unwrap();
    assert_silent(&mut c, "through the proxy to a downed host");
    far.link_up();
    let mut got = [0; 1];
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    c.read_exact(&mut got).unwrap();
}

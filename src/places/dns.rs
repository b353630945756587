//! Name resolution that never blocks the loop: `getaddrinfo` runs on a
//! short-lived helper thread, which sends its answer over a channel and
//! wakes the loop with the server's `Waker`. Answers are cached for
//! [`DNS_TTL`] and dropped after connect failures; a literal IP needs no
//! thread.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Waker;

/// How long resolved addresses are used before they are looked up again
/// (the old ones serve until the new lookup answers).
pub const DNS_TTL: Duration = Duration::from_secs(300);

type Answer = Result<Vec<SocketAddr>, String>;

/// What the caller can do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Addrs {
    Ready(Arc<[SocketAddr]>),
    /// A lookup is under way; the waker fires when it ends.
    Pending,
}

pub(crate) struct Resolver {
    host: String,
    port: u16,
    literal: bool,
    addrs: Option<Arc<[SocketAddr]>>,
    resolved_at: Option<Instant>,
    pending: bool,
    /// The index of the address that last worked.
    preferred: usize,
    tx: Sender<Answer>,
    rx: Receiver<Answer>,
    waker: Arc<Waker>,
}

impl Resolver {
    pub fn new(host: &str, ip: Option<IpAddr>, port: u16, waker: Arc<Waker>) -> Resolver {
        let (tx, rx) = mpsc::channel();
        Resolver {
            host: host.to_string(),
            port,
            literal: ip.is_some(),
            addrs: ip.map(|ip| Arc::from(vec![SocketAddr::new(ip, port)])),
            resolved_at: None,
            pending: false,
            preferred: 0,
            tx,
            rx,
            waker,
        }
    }

    /// The addresses to try, or `Pending` after starting a lookup.
    pub fn addresses(&mut self, now: Instant) -> Addrs {
        if self.literal {
            if let Some(addrs) = &self.addrs {
                return Addrs::Ready(Arc::clone(addrs));
            }
        }
        let stale = match self.resolved_at {
            Some(at) => now.saturating_duration_since(at) >= DNS_TTL,
            None => true,
        };
        if stale {
            self.start_lookup();
        }
        match &self.addrs {
            Some(addrs) => Addrs::Ready(Arc::clone(addrs)),
            None => Addrs::Pending,
        }
    }

    /// The index to start connecting from.
    pub fn preferred(&self) -> usize {
        self.preferred
    }

    /// Remembers the address that worked.
    pub fn worked(&mut self, index: usize) {
        self.preferred = index;
    }

    /// Every address failed: look the name up again next time.
    pub fn invalidate(&mut self) {
        if !self.literal {
            self.addrs = None;
            self.resolved_at = None;
            self.preferred = 0;
        }
    }

    /// Takes finished lookups. `Some(Err)` when a lookup failed and no
    /// addresses are known: requests waiting for them cannot go on.
    pub fn poll(&mut self, now: Instant) -> Option<Result<(), String>> {
        let mut outcome = None;
        loop {
            match self.rx.try_recv() {
                Ok(answer) => {
                    self.pending = false;
                    match answer {
                        Ok(addrs) => {
                            if self.addrs.as_deref() != Some(&addrs[..]) {
                                self.preferred = 0;
                            }
                            self.addrs = Some(Arc::from(addrs));
                            self.resolved_at = Some(now);
                            outcome = Some(Ok(()));
                        }
                        // A failed refresh keeps serving the old addresses.
                        Err(_) if self.addrs.is_some() => {}
                        Err(e) => outcome = Some(Err(e)),
                    }
                }
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => return outcome,
            }
        }
    }

    /// True while a lookup is under way.
    pub fn pending(&self) -> bool {
        self.pending
    }

    fn start_lookup(&mut self) {
        if self.pending {
            return;
        }
        self.pending = true;
        let (host, port) = (self.host.clone(), self.port);
        let tx = self.tx.clone();
        let waker = Arc::clone(&self.waker);
        let spawned = std::thread::Builder::new()
            .name(format!("dns {host}"))
            .spawn(move || {
                let answer = lookup(&host, port);
                // The loop may be gone; nobody to tell then.
                let _ = tx.send(answer);
                let _ = waker.wake();
            });
        if let Err(e) = spawned {
            let _ = self
                .tx
                .send(Err(format!("cannot start a lookup thread: {e}")));
            let _ = self.waker.wake();
        }
    }
}

/// Blocking lookup; IPv4 addresses first (a test server on 127.0.0.1 answers
/// `localhost` there, and IPv6 is often unrouted), duplicates dropped.
fn lookup(host: &str, port: u16) -> Answer {
    let mut addrs: Vec<SocketAddr> = match (host, port).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => return Err(e.to_string()),
    };
    addrs.sort_by_key(|a| a.is_ipv6());
    let mut seen = Vec::with_capacity(addrs.len());
    addrs.retain(|a| {
        let new = !seen.contains(a);
        seen.push(*a);
        new
    });
    if addrs.is_empty() {
        Err("no addresses".to_string())
    } else {
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll, Token};

    fn resolver(host: &str, ip: Option<IpAddr>) -> (Poll, Resolver) {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let r = Resolver::new(host, ip, 7, waker);
        (poll, r)
    }

    /// Waits, on the waker as the loop does, for the lookup under way.
    fn answer(poll: &mut Poll, r: &mut Resolver, now: Instant) -> Result<(), String> {
        let mut events = Events::with_capacity(4);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(outcome) = r.poll(now) {
                return outcome;
            }
            assert!(Instant::now() < deadline, "no answer from the lookup");
            poll.poll(&mut events, Some(Duration::from_millis(500)))
                .unwrap();
        }
    }

    fn ready(addrs: Addrs) -> Arc<[SocketAddr]> {
        match addrs {
            Addrs::Ready(a) => a,
            Addrs::Pending => panic!("no addresses"),
        }
    }

    #[test]
    fn a_name_is_looked_up_off_the_loop_then_cached() {
        let (mut poll, mut r) = resolver("localhost", None);
        let t0 = Instant::now();
        assert_eq!(r.addresses(t0), Addrs::Pending);
        assert!(r.pending());
        assert_eq!(answer(&mut poll, &mut r, t0), Ok(()));
        let addrs = ready(r.addresses(t0 + Duration::from_secs(1)));
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.port() == 7));
        assert!(!r.pending(), "a fresh answer is used without a lookup");
    }

    #[test]
    fn after_the_ttl_the_old_addresses_serve_while_a_new_lookup_runs() {
        let (mut poll, mut r) = resolver("localhost", None);
        let t0 = Instant::now();
        r.addresses(t0);
        answer(&mut poll, &mut r, t0).unwrap();
        let old = ready(r.addresses(t0));
        let later = t0 + DNS_TTL;
        assert_eq!(ready(r.addresses(later)), old);
        assert!(r.pending(), "stale: looked up again");
        assert_eq!(answer(&mut poll, &mut r, later), Ok(()));
        r.addresses(later + Duration::from_secs(1));
        assert!(!r.pending());
    }

    #[test]
    fn after_connect_failures_the_name_is_looked_up_again() {
        let (mut poll, mut r) = resolver("localhost", None);
        let t0 = Instant::now();
        r.addresses(t0);
        answer(&mut poll, &mut r, t0).unwrap();
        r.worked(1);
        r.invalidate();
        assert_eq!(r.preferred(), 0);
        assert_eq!(r.addresses(t0), Addrs::Pending);
        assert_eq!(answer(&mut poll, &mut r, t0), Ok(()));
        ready(r.addresses(t0));
    }

    #[test]
    fn a_failed_refresh_keeps_the_old_addresses_a_failed_first_lookup_is_reported() {
        // Failures come in as the lookup thread sends them.
        let (_poll, mut r) = resolver("localhost", None);
        let now = Instant::now();
        r.pending = true;
        r.tx.send(Err("no such host".into())).unwrap();
        assert_eq!(r.poll(now), Some(Err("no such host".into())));
        assert!(!r.pending());
        let old: Vec<SocketAddr> = vec!["127.0.0.1:7".parse().unwrap()];
        r.tx.send(Ok(old.clone())).unwrap();
        assert_eq!(r.poll(now), Some(Ok(())));
        r.pending = true;
        r.tx.send(Err("timed out".into())).unwrap();
        assert_eq!(r.poll(now), None, "nothing to report: the old ones serve");
        assert_eq!(&ready(r.addresses(now))[..], &old[..]);
    }

    #[test]
    fn a_literal_address_needs_no_lookup_and_survives_failures() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (_poll, mut r) = resolver("127.0.0.1", Some(ip));
        let now = Instant::now();
        let addrs = ready(r.addresses(now));
        assert_eq!(&addrs[..], &[SocketAddr::new(ip, 7)]);
        r.invalidate();
        assert_eq!(ready(r.addresses(now + DNS_TTL)), addrs);
        assert!(!r.pending());
    }

    #[test]
    fn lookup_prefers_ipv4() {
        let addrs = lookup("localhost", 7).unwrap();
        assert!(addrs.iter().all(|a| a.port() == 7));
        let first_v6 = addrs
            .iter()
            .position(|a| a.is_ipv6())
            .unwrap_or(addrs.len());
        assert!(addrs[first_v6..].iter().all(|a| a.is_ipv6()));
    }
}

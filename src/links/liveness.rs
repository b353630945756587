//! Is the other end of a herd link still there?
//!
//! A hung process's kernel still completes connects and even acknowledges
//! bytes for a while, and a cut network sends no error at all; only the
//! other end's own bytes prove it is alive. So each end of a link between
//! herd servers (a connection that began with `HERD NAME`) keeps two
//! instants: when it last *received* a byte (any byte is a sign of life: an
//! update, a handshake line, a heartbeat) and when it last *sent* one. Every
//! [`interval`] without sending it sends `PING` — nothing else needs to be
//! said, and a `PING` is never answered — so a live peer is heard from at
//! least that often, and updates flowing make heartbeats unnecessary. A link
//! not heard from for the link timeout is declared dead.
//!
//! The check is lazy: one deadline, the earlier of "time to send a
//! heartbeat" and "dead unless heard from by then", moved only when it
//! fires. Receiving a byte just stores an instant; it reschedules nothing.
//! Plain data, `now` passed in, so it is unit-tested without sleeping.

use std::time::{Duration, Instant};

/// The default link timeout (`--link-timeout`).
pub const DEFAULT_LINK_TIMEOUT: Duration = Duration::from_secs(3);

/// How often a quiet end sends `PING`: three chances per timeout, so one
/// late heartbeat is not a death.
pub fn interval(timeout: Duration) -> Duration {
    timeout / 3
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Heard from recently and spoke recently: nothing to do.
    Quiet,
    /// Heard from recently, but silent ourselves for an interval: send `PING`.
    Ping,
    /// Not heard from for the whole timeout.
    Dead,
}

/// One end of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    timeout: Duration,
    last_seen: Instant,
    last_sent: Instant,
    /// Has the other end shown life since the link began?
    seen_once: bool,
    /// When [`Liveness::check`] should run next.
    due: Instant,
}

impl Liveness {
    /// A link that began at `now`: it has until `now + timeout` to show life.
    pub fn new(timeout: Duration, now: Instant) -> Liveness {
        Liveness {
            timeout,
            last_seen: now,
            last_sent: now,
            seen_once: false,
            due: now + interval(timeout).min(timeout),
        }
    }

    /// The other end sent bytes at `now`. True the first time.
    pub fn heard(&mut self, now: Instant) -> bool {
        self.last_seen = now;
        !std::mem::replace(&mut self.seen_once, true)
    }

    /// We sent bytes at `now`.
    pub fn spoke(&mut self, now: Instant) {
        self.last_sent = now;
    }

    /// Has the other end shown life yet?
    pub fn is_alive(&self) -> bool {
        self.seen_once
    }

    /// When [`Liveness::check`] has work.
    pub fn due(&self) -> Instant {
        self.due
    }

    /// The check, at or after [`Liveness::due`]. On [`Check::Ping`] the
    /// caller sends `PING` now (it counts as spoken).
    pub fn check(&mut self, now: Instant) -> Check {
        let dead_at = self.last_seen + self.timeout;
        if now >= dead_at {
            return Check::Dead;
        }
        let step = interval(self.timeout);
        let outcome = if now >= self.last_sent + step {
            self.last_sent = now;
            Check::Ping
        } else {
            Check::Quiet
        };
        self.due = (self.last_sent + step).min(dead_at);
        outcome
    }

    /// The link timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Makes the kernel agree with the loop about a link socket: TCP
/// keepalive probes once the link has been idle for the timeout, and
/// `TCP_USER_TIMEOUT`, so data unacknowledged for the timeout ends the
/// connection too. Best effort: a socket that refuses is still watched by
/// [`Liveness`].
pub fn tune_socket(socket: &impl std::os::fd::AsFd, timeout: Duration) {
    let sock = socket2::SockRef::from(socket);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(timeout.max(Duration::from_secs(1)))
        .with_interval(interval(timeout).max(Duration::from_secs(1)))
        .with_retries(3);
    let _ = sock.set_tcp_keepalive(&keepalive);
    let _ = sock.set_tcp_user_timeout(Some(timeout));
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(3);

    /// Runs checks whenever due, up to `end`, the peer heard at `heard`.
    fn run(l: &mut Liveness, start: Instant, end: Duration, heard: &[Duration]) -> Vec<String> {
        let mut out = Vec::new();
        let mut heard = heard.iter().peekable();
        loop {
            let due = l.due();
            while let Some(&&h) = heard.peek() {
                if start + h > due {
                    break;
                }
                l.heard(start + h);
                heard.next();
            }
            if due > start + end {
                return out;
            }
            let c = l.check(due);
            out.push(format!("{:?}@{}", c, (due - start).as_millis()));
            if c == Check::Dead {
                return out;
            }
        }
    }

    #[test]
    fn a_silent_peer_is_dead_exactly_one_timeout_after_it_was_last_heard() {
        let t0 = Instant::now();
        let mut l = Liveness::new(T, t0);
        let s = Duration::from_millis;
        let log = run(&mut l, t0, s(20_000), &[s(500), s(1500), s(2500)]);
        assert_eq!(
            log,
            [
                "Ping@1000",
                "Ping@2000",
                "Ping@3000",
                "Ping@4000",
                "Ping@5000",
                "Dead@5500"
            ]
        );
    }

    #[test]
    fn a_peer_heard_every_second_never_dies_and_speaking_saves_pings() {
        let t0 = Instant::now();
        let mut l = Liveness::new(T, t0);
        let heard: Vec<Duration> = (1..30).map(Duration::from_secs).collect();
        let log = run(&mut l, t0, Duration::from_secs(25), &heard);
        assert!(log.iter().all(|c| !c.starts_with("Dead")), "{log:?}");
        // We spoke at 1.5 s: the ping due at 1 s comes at 2.5 s instead.
        let mut l = Liveness::new(T, t0);
        l.spoke(t0 + Duration::from_millis(500));
        assert_eq!(l.check(t0 + Duration::from_secs(1)), Check::Quiet);
        assert_eq!(l.due(), t0 + Duration::from_millis(1500));
    }

    #[test]
    fn the_first_sign_of_life_is_reported_once() {
        let t0 = Instant::now();
        let mut l = Liveness::new(T, t0);
        assert!(!l.is_alive());
        assert!(l.heard(t0));
        assert!(!l.heard(t0));
        assert!(l.is_alive());
    }
}

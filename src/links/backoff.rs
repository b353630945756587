//! Reconnect delays as plain data: the caller passes `now` and gets the
//! retry instant, so the schedule is unit-tested without sleeping (sozu's
//! `retry.rs` is the model).

use std::time::{Duration, Instant};

/// Reconnect delays: exponential from [`Backoff::FIRST`], capped at
/// [`Backoff::MAX`], each drawn uniformly from the upper half of its step
/// (jitter, so restarted herds do not dial in lockstep). Plain data: the
/// caller passes `now` and gets the retry instant.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// The first step: the first retry comes within this.
    pub const FIRST: Duration = Duration::from_millis(100);
    /// The largest step: retries are never further apart than this.
    pub const MAX: Duration = Duration::from_millis(500);

    /// A backoff at its first step, with its own random stream.
    pub fn new(seed: u64) -> Backoff {
        Backoff {
            attempt: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// When to retry after a failure at `now`; each call steps up.
    pub fn next_retry(&mut self, now: Instant) -> Instant {
        let step = Self::FIRST
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(Self::MAX);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        let jitter = half.mul_f64(self.rng.f64());
        now + half + jitter
    }

    /// Back to the first step (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_retry_within_the_first_step_and_never_past_the_max() {
        let now = Instant::now();
        for seed in 0..50 {
            let mut b = Backoff::new(seed);
            let first = b.next_retry(now) - now;
            assert!(
                first <= Backoff::FIRST && first >= Backoff::FIRST / 2,
                "{first:?}"
            );
            assert!(Backoff::FIRST <= Duration::from_millis(200));
            for _ in 0..40 {
                let d = b.next_retry(now) - now;
                assert!(d <= Backoff::MAX && d >= Backoff::FIRST / 2, "{d:?}");
            }
            assert!(Backoff::MAX <= Duration::from_secs(2));
        }
    }

    #[test]
    fn backoff_grows_then_resets() {
        let now = Instant::now();
        let mut b = Backoff::new(7);
        let mut last = Duration::ZERO;
        let mut steps = Vec::new();
        for _ in 0..6 {
            let d = b.next_retry(now) - now;
            steps.push(d);
            last = d;
        }
        // At the cap every delay lies in the cap's upper half.
        assert!(last >= Backoff::MAX / 2);
        b.reset();
        assert!(b.next_retry(now) - now <= Backoff::FIRST);
    }

    #[test]
    fn jitter_spreads_retries() {
        let now = Instant::now();
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|s| {
                let mut b = Backoff::new(s);
                b.next_retry(now) - now
            })
            .collect();
        assert!(delays.len() > 10, "{delays:?}");
    }
}

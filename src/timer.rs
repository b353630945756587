//! One shape for everything that waits.
//!
//! A server has no runtime and no timer thread: its loop polls with the
//! nearest deadline as timeout, then compares deadlines with
//! `Instant::now()` and fires what is due — never "nothing came, so it must
//! be time" (quiche's server example says why). Every part that waits —
//! herd links (retries, connects, handshakes, liveness), the Places client
//! (request deadlines, connects, idle connections), the loop itself
//! (throttled connections, an accept pause, the once-a-second sweep) and the
//! log batcher — implements [`Deadline`], and the loop asks
//! [`nearest`] once per turn.
//!
//! [`Timers`] is the one container for keyed deadlines: an ordered set of
//! `(instant, key)`, so the earliest is at hand, a due one is popped in
//! order, and a cancelled one is removed exactly (no stale entries to skip).

use std::collections::BTreeSet;
use std::time::Instant;

/// Something that will have work to do at an instant.
pub trait Deadline {
    /// The earliest instant at which it has work, if any.
    fn next_deadline(&self) -> Option<Instant>;
}

/// The earliest deadline among `parts`.
pub fn nearest(parts: &[&dyn Deadline]) -> Option<Instant> {
    parts.iter().filter_map(|p| p.next_deadline()).min()
}

/// Keyed deadlines, earliest first. A key may be scheduled at several
/// instants; [`Timers::cancel`] removes one exact `(instant, key)`.
#[derive(Debug, Clone)]
pub struct Timers<K: Ord + Copy> {
    set: BTreeSet<(Instant, K)>,
}

impl<K: Ord + Copy> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            set: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Copy> Timers<K> {
    /// No deadlines.
    pub fn new() -> Timers<K> {
        Timers::default()
    }

    /// `key` has work at `at`.
    pub fn schedule(&mut self, at: Instant, key: K) {
        self.set.insert((at, key));
    }

    /// Forgets `key` at `at` (scheduled earlier with exactly these).
    pub fn cancel(&mut self, at: Instant, key: K) {
        self.set.remove(&(at, key));
    }

    /// Moves `key` from `old` (if any) to `new` (if any).
    pub fn reschedule(&mut self, old: Option<Instant>, new: Option<Instant>, key: K) {
        if old == new {
            return;
        }
        if let Some(at) = old {
            self.cancel(at, key);
        }
        if let Some(at) = new {
            self.schedule(at, key);
        }
    }

    /// The earliest entry due at `now` (its instant at or before it), removed.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        let &(at, key) = self.set.first()?;
        if at > now {
            return None;
        }
        self.set.pop_first();
        Some((at, key))
    }

    /// How many deadlines are scheduled.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

impl<K: Ord + Copy> Deadline for Timers<K> {
    fn next_deadline(&self) -> Option<Instant> {
        self.set.first().map(|&(at, _)| at)
    }
}

impl<T: Deadline> Deadline for Option<T> {
    fn next_deadline(&self) -> Option<Instant> {
        self.as_ref().and_then(|t| t.next_deadline())
    }
}

/// A single optional instant (an accept pause, a sweep) is a deadline too.
impl Deadline for Option<Instant> {
    fn next_deadline(&self) -> Option<Instant> {
        *self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_entries_pop_in_order_and_only_when_due() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Timers::new();
        t.schedule(t0 + ms(30), 3);
        t.schedule(t0 + ms(10), 1);
        t.schedule(t0 + ms(20), 2);
        assert_eq!(t.next_deadline(), Some(t0 + ms(10)));
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(t.pop_due(t0 + ms(25)), Some((t0 + ms(10), 1)));
        assert_eq!(t.pop_due(t0 + ms(25)), Some((t0 + ms(20), 2)));
        assert_eq!(t.pop_due(t0 + ms(25)), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn cancel_and_reschedule_are_exact() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Timers::new();
        t.schedule(t0 + ms(10), 'a');
        t.schedule(t0 + ms(10), 'b');
        t.cancel(t0 + ms(10), 'a');
        assert_eq!(t.pop_due(t0 + ms(10)), Some((t0 + ms(10), 'b')));
        t.reschedule(None, Some(t0 + ms(5)), 'c');
        t.reschedule(Some(t0 + ms(5)), Some(t0 + ms(50)), 'c');
        assert_eq!(t.next_deadline(), Some(t0 + ms(50)));
        t.reschedule(Some(t0 + ms(50)), None, 'c');
        assert!(t.is_empty());
    }

    #[test]
    fn nearest_takes_the_earliest_of_any_part() {
        let t0 = Instant::now();
        let mut a = Timers::new();
        a.schedule(t0 + Duration::from_secs(2), 0u8);
        let b: Option<Instant> = Some(t0 + Duration::from_secs(1));
        let c: Option<Instant> = None;
        assert_eq!(nearest(&[&a, &b, &c]), b);
        assert_eq!(nearest(&[&c]), None);
    }
}

//! Honest durability and bounds in the loop: replies that acknowledge
//! records not yet written are held, and released once the journal has
//! them; once a second, expiry and the eviction and expiry counts.

use std::time::Instant;

use super::{Server, Wait, BOUNDS_INTERVAL};
use crate::journal::Journal;

impl Server {
    /// The journal's last written record (everything, without a journal).
    pub(super) fn durable(&self) -> u64 {
        self.journal.as_ref().map_or(u64::MAX, Journal::durable)
    }

    /// True if connection `key`'s output must wait for the journal: its
    /// replies acknowledge a record not yet written. It goes on the held
    /// list, which [`Server::release_held`] looks at after each journal write.
    pub(super) fn hold(&mut self, key: usize) -> bool {
        let durable = self.durable();
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if conn.replies.ack() <= durable {
            return false;
        }
        if !conn.replies.held() {
            conn.replies.set_held(true);
            self.held.push(key);
        }
        true
    }

    /// Flushes the held connections the journal has caught up with.
    pub(super) fn release_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let durable = self.durable();
        let conns = &mut self.conns;
        let dirty = &mut self.dirty;
        self.held.retain(|&key| {
            let Some(conn) = conns.get_mut(key).filter(|c| c.replies.held()) else {
                return false;
            };
            if conn.replies.ack() > durable {
                return true;
            }
            conn.replies.set_held(false);
            dirty.push(key);
            false
        });
    }

    /// Once a second: forgets expired positions, and logs the evictions and
    /// expiries of the last second as one line (never a line each).
    pub(super) fn bounds(&mut self, now: Instant) {
        self.timers.schedule(now + BOUNDS_INTERVAL, Wait::Bounds);
        let store = self.engine.store_mut();
        if store.has_ttl() {
            store.expire(crate::protocol::now_nanos());
        }
        let (evicted, expired) = (store.evicted(), store.expired());
        let (len, limit) = (store.len(), store.limit());
        let (was_evicted, was_expired) = self.bounds_logged;
        if evicted > was_evicted {
            log::warn!(target: &self.name, "store full ({limit} clients): {} oldest clients evicted in the last second, {evicted} in all", evicted - was_evicted);
        }
        if expired > was_expired {
            log::info!(target: &self.name, "store: {} positions expired in the last second, {expired} in all; {len} clients known", expired - was_expired);
        }
        self.bounds_logged = (evicted, expired);
        let stats = self.engine.stats();
        stats.set_bounds(evicted, expired);
        stats.set_stored_clients(len);
    }
}

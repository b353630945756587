//! Catch-up: when a link comes up, the whole store is streamed to it.
//!
//! A stored client keeps its slot in the store, so catch-up is a cursor
//! over the slot numbers `0..slot_end` taken when the link first flushes,
//! skipping free slots (of evicted or expired clients): `SYNC LEN` announces
//! how many clients are stored then,
//! then the link copies the next entries into its output whenever the
//! output has drained below [`CATCHUP_LOW_WATER`]. A store of any size
//! streams under the same output cap as floods, and the lines sent are the
//! newest at the time they are sent. Updates stored meanwhile are flooded
//! as usual; a duplicate is simply "not newer" at the receiver.

use std::time::Instant;

use crate::protocol;
use crate::store::Store;

/// Catch-up refills a link's output when it has drained below this...
pub const CATCHUP_LOW_WATER: usize = 256 * 1024;
/// ...up to about this much.
pub const CATCHUP_HIGH_WATER: usize = 1024 * 1024;

/// A catch-up under way.
#[derive(Debug, Clone)]
pub struct CatchUp {
    next: usize,
    /// The store's slot end when it began; `None` before the first fill.
    end: Option<usize>,
    /// How many clients the store held then (what `SYNC` announced).
    count: usize,
    started: Instant,
}

impl CatchUp {
    /// A catch-up that starts with the link's next flush.
    pub fn new(now: Instant) -> CatchUp {
        CatchUp {
            next: 0,
            end: None,
            count: 0,
            started: now,
        }
    }

    /// Tops up `out` (holding `pending` unwritten bytes) from `store`: the
    /// `SYNC` line first, then entries up to the high-water mark.
    pub fn fill(&mut self, store: &Store, out: &mut Vec<u8>, pending: usize) {
        let end = *self.end.get_or_insert_with(|| {
            // First fill: the store as it is now, announced so the receiver
            // can log it.
            protocol::write_sync(out, store.len() as u64);
            self.count = store.len();
            store.slot_end()
        });
        if pending >= CATCHUP_LOW_WATER {
            return;
        }
        while self.next < end && out.len() < CATCHUP_HIGH_WATER {
            // A free slot (an evicted client) is skipped.
            if let Some(e) = store.entry(self.next) {
                out.extend_from_slice(e.line);
                out.push(b'\n');
            }
            self.next += 1;
        }
    }

    /// True once every entry is in the output.
    pub fn is_done(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end)
    }

    /// How many updates it announced (the store's size when it began).
    pub fn count(&self) -> usize {
        self.count
    }

    /// When it began.
    pub fn started(&self) -> Instant {
        self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::offer;

    #[test]
    fn it_announces_then_streams_every_entry_under_the_high_water_mark() {
        let mut store = Store::new();
        for i in 0..50_000 {
            let line = format!("AT S +0.000000000 client{i} +1+1 {i}");
            offer(&mut store, line.as_bytes());
        }
        let mut c = CatchUp::new(Instant::now());
        let (mut sent, mut rounds) = (Vec::new(), 0);
        while !c.is_done() {
            let mut out = Vec::new();
            c.fill(&store, &mut out, 0);
            assert!(out.len() < CATCHUP_HIGH_WATER + 200);
            sent.extend_from_slice(&out);
            rounds += 1;
        }
        assert!(rounds > 1, "a big store streams in several fills");
        let lines: Vec<&[u8]> = sent.split(|&b| b == b'\n').collect();
        assert_eq!(lines[0], b"SYNC 50000");
        assert_eq!(lines.len(), 50_002);
        assert_eq!(lines[50_000], b"AT S +0.000000000 client49999 +1+1 49999");
        assert_eq!(c.count(), 50_000);
    }

    #[test]
    fn a_backed_up_link_gets_nothing_more_and_an_empty_store_just_the_sync() {
        let mut store = Store::new();
        offer(&mut store, b"AT S +0.000000000 a +1+1 1");
        let mut c = CatchUp::new(Instant::now());
        let mut out = Vec::new();
        c.fill(&store, &mut out, CATCHUP_LOW_WATER);
        assert_eq!(out, b"SYNC 1\n");
        assert!(!c.is_done());
        let mut c = CatchUp::new(Instant::now());
        out.clear();
        c.fill(&Store::new(), &mut out, 0);
        assert_eq!((out.as_slice(), c.is_done()), (&b"SYNC 0\n"[..], true));
    }
}

//! Watchers in the loop (docs/PROTOCOL.md §15): at the turn's end, the
//! positions stored this turn mark their watchers ([`crate::watch::Hub`]);
//! a watcher's output is topped up with what it is owed when it is
//! flushed, and only as fast as its socket takes it.
//!
//! A watcher newly owed something joins the loop's fan-out queue, and each
//! turn flushes at most [`super::WATCHERS_PER_TURN`] of it, after every
//! other connection's output. One update of a client that 10,000
//! connections watch is 10,000 writes, tens of milliseconds of them: in
//! slices, the loop polls in between, so a client's IAMAT is answered
//! within a slice, not after the pass, and an update that arrives mid-pass
//! reaches the watchers still queued with no extra write (their line is
//! read from the store when it is written, so it is already the newest).
//!
//! Marking waits while the queue is not empty: the hub keeps what was
//! stored (once per client, with a count) and the watchers already written
//! are marked when the pass ends. That is no later for them than marking
//! at once, which would queue them behind the same pass, and it touches
//! each of 10,000 watchers once a pass instead of once an update (a
//! marking costs a few cache misses per watcher: at 100 updates a second,
//! a tenth of a core). So an update reaches its last watcher within about
//! one pass of arriving, where a loop that wrote the whole pass first and
//! read afterwards took up to two.
//!
//! Pushes leave *after* the journal has their records: the turn's end
//! writes the journal, then flushes links, then connections, and a push
//! is only ever written by a connection's flush. So a watcher is never
//! shown a position that a crash right after could take back from this
//! server's store (and the snapshot it would get after reconnecting never
//! goes back behind a push it saw). It costs a push nothing: the write
//! happens in the same turn either way. While the journal is failing,
//! pushes go on, as floods do (a push acknowledges nothing; the herd
//! already has the position).

use std::io;
use std::net::SocketAddr;

use super::{Server, READS_PER_TURN};
use crate::conn::{Flush, ReadState, Replies};
use crate::front::Envelope;
use crate::logging;
use crate::watch::{Mark, Watch, WATCH_FILL};

impl Server {
    /// Marks the watchers of every position stored this turn, and queues
    /// those that were owed nothing on the fan-out queue.
    pub(super) fn mark_watchers(&mut self) {
        let stats = self.engine.stats();
        stats.set_watchers(self.watch.watchers());
        let (conns, fanout) = (&mut self.conns, &mut self.fanout);
        let mut replaced = 0;
        self.watch
            .take_marks(self.engine.store(), |key, serial, mark, stores| {
                let Some(conn) = conns.get_mut(key).filter(|c| c.serial == serial) else {
                    return;
                };
                let Some(w) = conn.session.watch.as_deref_mut() else {
                    return;
                };
                // Owed something already: it is queued for a flush, or waits
                // for its socket (WRITABLE) or a WHATSAT's answer.
                let idle = !w.has_owed();
                let was = w.replaced;
                match mark {
                    Mark::Named(place, slot) => w.mark_at(place, slot, stores),
                    Mark::Slot(slot) => w.mark_slot(slot, stores),
                }
                replaced += w.replaced - was;
                if idle && w.has_owed() {
                    fanout.push_back(key);
                }
            });
        if replaced > 0 {
            stats.watch_replaced(replaced);
        }
    }

    /// Writes connection `key`'s output until done or `WouldBlock`. A
    /// watcher's is topped up with the positions it is owed first, and
    /// again each time the socket took everything, a few times a turn; if
    /// it is still owed positions then, it goes on next turn.
    pub(super) fn write_out(&mut self, key: usize) -> Option<io::Result<Flush>> {
        let conn = self.conns.get_mut(key)?;
        // Nothing more once the client closed its side (or, on WebSocket,
        // after a close frame): what is written is flushed, then it closes.
        let open = conn.state() != ReadState::Closing;
        let Some(w) = conn.session.watch.as_deref_mut() else {
            return Some(conn.replies.out.flush_to(&mut conn.stream));
        };
        let (store, traffic) = (self.engine.store(), self.engine.traffic());
        let peer = conn.session.peer;
        // On WebSocket each position is a message of its own.
        let envelope = if conn.front.as_ref().is_some_and(|f| f.is_ws()) {
            Envelope::Message
        } else {
            Envelope::Raw
        };
        let mut pushed = 0;
        let mut rounds = 0;
        let result = loop {
            // Behind a WHATSAT still in flight (sent before WATCH), nothing.
            if open && !conn.replies.queued() {
                pushed += fill(w, &mut conn.replies, &envelope, store, |line| {
                    if traffic {
                        logging::traffic("to", &peer, line, "");
                    }
                });
            }
            let result = conn.replies.out.flush_to(&mut conn.stream);
            rounds += 1;
            if !open || !matches!(result, Ok(Flush::Done)) || !w.has_owed() || conn.replies.queued()
            {
                break result;
            }
            if rounds == READS_PER_TURN {
                // Others get their turn: come back to it next turn.
                self.resume.push(key);
                break result;
            }
        };
        if pushed > 0 {
            self.engine.stats().watch_pushed(pushed);
        }
        Some(result)
    }

    /// Connection `key` (`serial`), which watched, closed: out of the
    /// index, and its figures in the log.
    pub(super) fn forget_watcher(&mut self, key: usize, serial: u64, peer: SocketAddr, w: &Watch) {
        self.watch.forget(key, serial, w);
        self.engine.stats().set_watchers(self.watch.watchers());
        let all = if w.watches_all() {
            " and every client"
        } else {
            ""
        };
        log::info!(target: &self.name, "watcher {peer}: watched {} clients by name{all}; {} positions pushed, {} replaced before delivery", w.len(), w.pushed, w.replaced);
    }
}

/// Tops `replies` up to [`WATCH_FILL`] with what `w` is owed, each line
/// through [`Replies::push_at`] (and `log`); returns how many.
fn fill(
    w: &mut Watch,
    replies: &mut Replies,
    envelope: &Envelope,
    store: &crate::store::Store,
    mut log: impl FnMut(&[u8]),
) -> u64 {
    if replies.out.len() >= WATCH_FILL {
        return 0;
    }
    w.fill(store, |line| {
        log(line);
        replies.push_at(line, envelope);
        replies.out.len() < WATCH_FILL
    })
}

//! Live positions (docs/PROTOCOL.md §15): who watches which client, and
//! what each watcher is still owed, conflated.
//!
//! * [`Hub`], one per server: an index from client ID to the connections
//!   watching it (slab key, serial, and the ID's place in that watcher's
//!   list), and the short list of `WATCH *` watchers. The engine says what
//!   it stored (its store slot) and the hub notes it — only while anyone
//!   watches; with no watcher a store costs one `is_empty` — and at the
//!   turn's end looks each noted client up once and marks its watchers.
//! * [`Watch`], one per watching connection (boxed, so a connection that
//!   never watches pays a pointer): the IDs it watches, and what it is
//!   owed as a [`Pending`] set — of its own IDs' places for named
//!   clients, of store slots for `WATCH *`. A mark on something already
//!   pending *replaces* nothing: the set holds "owed", not lines, and the
//!   line is read from the store when it is delivered, so what goes out is
//!   always the newest, memory is bounded by what is watched (by the store
//!   for `WATCH *`) whatever the update rate, and since the store only ever
//!   moves a client forward, a watcher never sees a client go back in time.
//! * Delivery ([`Watch::fill`]) happens as the socket drains: the loop
//!   tops a watcher's output up to [`WATCH_FILL`] bytes only when it has
//!   written what was there, so a reader slower than the updates gets every
//!   client's newest position, late, and never a queue.
//!
//! Even the snapshot that answers `WATCH` is a mark: the named clients (or,
//! for `WATCH *`, every slot) start out owed, and the same delivery sends
//! them. So a snapshot and a push of one position can never both go out.

use std::collections::HashMap;

use crate::store::Store;

/// `WATCH *` watchers a server takes by default; more get `? `. Each holds
/// a bit per store slot (250 KiB at two million clients), and each of them
/// is sent every update the server stores.
pub const DEFAULT_WATCH_ALL_LIMIT: usize = 16;
/// Clients one connection may watch by name (`--watch-limit`).
pub const DEFAULT_WATCH_LIMIT: usize = 1024;
/// A watcher's output is topped up with owed positions to about this many
/// bytes, and only once what was there is written: the rest stays owed
/// (conflated) until the socket drains.
pub const WATCH_FILL: usize = 32 * 1024;
/// A place whose client's store slot is not known (yet).
const NO_SLOT: u32 = u32::MAX;

/// A set of small integers with a round-robin cursor: a bit each, and a
/// summary bit for each 64-bit word that has one set, so finding the next
/// member skips empty stretches 4,096 at a time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pending {
    words: Vec<u64>,
    summary: Vec<u64>,
    len: usize,
    /// Where [`Pending::pop`] looks first.
    cursor: usize,
}

impl Pending {
    /// Adds `i`; true if it was not there (false: an owed position was
    /// *replaced* by a newer one before delivery).
    pub fn insert(&mut self, i: usize) -> bool {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
            self.summary.resize(w / 64 + 1, 0);
        }
        if self.words[w] & bit != 0 {
            return false;
        }
        self.words[w] |= bit;
        self.summary[w / 64] |= 1 << (w % 64);
        self.len += 1;
        true
    }

    /// Adds every integer below `end`.
    pub fn insert_below(&mut self, end: usize) {
        for i in 0..end {
            // Word at a time would be faster; this runs once per WATCH *.
            self.insert(i);
        }
    }

    /// Removes `i`; true if it was there.
    pub fn remove(&mut self, i: usize) -> bool {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        match self.words.get_mut(w) {
            Some(word) if *word & bit != 0 => {
                *word &= !bit;
                if *word == 0 {
                    self.summary[w / 64] &= !(1 << (w % 64));
                }
                self.len -= 1;
                true
            }
            _ => false,
        }
    }

    /// Takes the first member at or after the cursor, wrapping around, and
    /// moves the cursor past it: every member is reached in turn, however
    /// often the others are marked again.
    pub fn pop(&mut self) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let i = self
            .first_from(self.cursor)
            .or_else(|| self.first_from(0))?;
        self.remove(i);
        self.cursor = i + 1;
        Some(i)
    }

    /// The first member at or after `from`.
    fn first_from(&self, from: usize) -> Option<usize> {
        let w = from / 64;
        let word = *self.words.get(w)? & (!0u64 << (from % 64));
        if word != 0 {
            return Some(w * 64 + word.trailing_zeros() as usize);
        }
        // The next word with a member, by the summary.
        let next = w + 1;
        let mut s = next / 64;
        let mut bits = self.summary.get(s)? & (!0u64).checked_shl((next % 64) as u32).unwrap_or(0);
        loop {
            if bits != 0 {
                let w = s * 64 + bits.trailing_zeros() as usize;
                return Some(w * 64 + self.words[w].trailing_zeros() as usize);
            }
            s += 1;
            bits = *self.summary.get(s)?;
        }
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets everything and gives its memory back.
    pub fn clear(&mut self) {
        *self = Pending::default();
    }
}

/// A watching connection's subscription and what it is owed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watch {
    /// The IDs watched by name; a place stays put while its ID is watched
    /// (the hub knows it), and a freed place is reused.
    names: Vec<Option<Box<[u8]>>>,
    /// The store slot each place's client was last stored in, as the hub
    /// said ([`NO_SLOT`] until it does): delivery reads it there, checking
    /// the slot still holds that client, instead of hashing the ID again
    /// for every watcher of it.
    slots: Vec<u32>,
    free: Vec<u32>,
    /// ID → its place in `names`.
    places: HashMap<Box<[u8]>, u32>,
    /// Places in `names` whose client has a position not yet delivered.
    owed: Pending,
    /// `WATCH *`: the store slots with a position not yet delivered.
    all: Option<Pending>,
    /// Positions delivered to it, snapshot included.
    pub pushed: u64,
    /// Positions replaced by a newer one before they were delivered.
    pub replaced: u64,
}

impl Watch {
    /// How many clients it watches by name.
    pub fn len(&self) -> usize {
        self.places.len()
    }

    /// True when it watches nothing (it stays a subscription all the same).
    pub fn is_empty(&self) -> bool {
        self.places.is_empty() && self.all.is_none()
    }

    /// Whether it watches `client` by name.
    pub fn watches(&self, client: &[u8]) -> bool {
        self.places.contains_key(client)
    }

    /// Whether it watches every client.
    pub fn watches_all(&self) -> bool {
        self.all.is_some()
    }

    /// Starts watching `client`, owed its position at once (the snapshot);
    /// returns its place, or `None` if it was watched already.
    pub fn add(&mut self, client: &[u8]) -> Option<u32> {
        if self.watches(client) {
            return None;
        }
        let place = match self.free.pop() {
            Some(p) => {
                self.names[p as usize] = Some(client.into());
                self.slots[p as usize] = NO_SLOT;
                p
            }
            None => {
                self.names.push(Some(client.into()));
                self.slots.push(NO_SLOT);
                (self.names.len() - 1) as u32
            }
        };
        self.places.insert(client.into(), place);
        if self.all.is_none() {
            self.owed.insert(place as usize);
        }
        Some(place)
    }

    /// Stops watching `client` by name; true if it did.
    pub fn remove(&mut self, client: &[u8]) -> bool {
        let Some(place) = self.places.remove(client) else {
            return false;
        };
        self.names[place as usize] = None;
        self.owed.remove(place as usize);
        self.free.push(place);
        if self.places.is_empty() {
            self.names = Vec::new();
            self.slots = Vec::new();
            self.free = Vec::new();
            self.owed.clear();
        }
        true
    }

    /// Every ID it watches by name.
    pub fn names(&self) -> impl Iterator<Item = &[u8]> {
        self.names.iter().flatten().map(|n| &n[..])
    }

    /// Starts watching every client: owed every slot of `store` at once
    /// (the snapshot). What named clients were owed is in it.
    pub fn add_all(&mut self, store: &Store) {
        let mut all = Pending::default();
        all.insert_below(store.slot_end());
        self.all = Some(all);
        self.owed.clear();
    }

    /// Stops watching every client; true if it did. What it was owed of
    /// clients it also watches by name stays owed (read off `store`).
    pub fn remove_all(&mut self, store: &Store) -> bool {
        let Some(mut all) = self.all.take() else {
            return false;
        };
        while let Some(slot) = all.pop() {
            let client = store.entry(slot).map(|e| e.client());
            if let Some(&place) = client.and_then(|c| self.places.get(c)) {
                self.owed.insert(place as usize);
            }
        }
        true
    }

    /// The named client at `place` has a newer position, in store slot
    /// `slot`.
    pub fn mark_at(&mut self, place: u32, slot: usize, stores: u32) {
        if let Some(s) = self.slots.get_mut(place as usize) {
            *s = u32::try_from(slot).unwrap_or(NO_SLOT);
        }
        self.mark_stores(place, stores);
    }

    /// The named client at `place` has a newer position.
    pub fn mark(&mut self, place: u32) {
        self.mark_stores(place, 1);
    }

    /// The named client at `place` was stored `stores` times since it was
    /// last marked: all but the newest were never shown (replaced).
    fn mark_stores(&mut self, place: u32, stores: u32) {
        let watched = matches!(self.names.get(place as usize), Some(Some(_)));
        if self.all.is_some() || !watched {
            // WATCH * delivers it; or a place no longer watched.
            return;
        }
        self.replaced += u64::from(stores.saturating_sub(1));
        if !self.owed.insert(place as usize) {
            self.replaced += 1;
        }
    }

    /// Store slot `slot` has a newer position (for `WATCH *`), stored
    /// `stores` times since it was last marked.
    pub fn mark_slot(&mut self, slot: usize, stores: u32) {
        if let Some(all) = &mut self.all {
            self.replaced += u64::from(stores.saturating_sub(1));
            if !all.insert(slot) {
                self.replaced += 1;
            }
        }
    }

    /// True while positions are owed.
    pub fn has_owed(&self) -> bool {
        !self.owed.is_empty() || self.all.as_ref().is_some_and(|a| !a.is_empty())
    }

    /// Hands `push` the current AT line (without `\n`) of owed clients
    /// from `store`, each once, until it returns false (no more room) or
    /// nothing is owed. Returns how many it pushed.
    pub fn fill(&mut self, store: &Store, mut push: impl FnMut(&[u8]) -> bool) -> u64 {
        let mut pushed = 0;
        loop {
            let line = if let Some(place) = self.owed.pop() {
                let Some(Some(name)) = self.names.get(place) else {
                    continue;
                };
                // Where the hub last saw it stored, if that slot still
                // holds it (a slot is reused once its client is evicted).
                let slot = self.slots.get(place).copied().unwrap_or(NO_SLOT);
                store
                    .entry(slot as usize)
                    .filter(|e| e.client() == &name[..])
                    .or_else(|| store.get(name))
                    .map(|e| e.line)
            } else if let Some(slot) = self.all.as_mut().and_then(Pending::pop) {
                store.entry(slot).map(|e| e.line)
            } else {
                break;
            };
            // A client unknown (or forgotten) owes nothing.
            if let Some(line) = line {
                pushed += 1;
                if !push(line) {
                    break;
                }
            }
        }
        self.pushed += pushed;
        pushed
    }
}

/// A connection in the index: slab key, serial, and the watched ID's
/// place in its [`Watch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sub {
    key: usize,
    serial: u64,
    place: u32,
}

/// What a watcher is marked with at the turn's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// A client it watches by name, at this place of its [`Watch`], and
    /// the store slot its position is in.
    Named(u32, usize),
    /// A store slot, for `WATCH *`.
    Slot(usize),
}

/// Noted stores are merged (one entry per slot, with a count) when this
/// many have piled up, and at least as many again before the next merge:
/// while marking waits for a fan-out (see `server::push`), what is noted is
/// bounded by the store's slots, not by the update rate.
const TOUCHED_MERGE: usize = 4096;

/// One server's watchers: see the module header.
#[derive(Debug, Default)]
pub struct Hub {
    by_client: HashMap<Box<[u8]>, Vec<Sub>>,
    /// `WATCH *` watchers: (key, serial).
    all: Vec<(usize, u64)>,
    all_limit: usize,
    /// Store slots stored since the last marks while anyone watched, with
    /// how many times (merged, [`TOUCHED_MERGE`]).
    touched: Vec<(u32, u32)>,
    /// `touched`'s length that triggers the next merge.
    merge_at: usize,
    /// Connections watching.
    watchers: usize,
}

impl Hub {
    /// A hub taking at most `all_limit` `WATCH *` watchers.
    pub fn new(all_limit: usize) -> Hub {
        Hub {
            all_limit,
            merge_at: TOUCHED_MERGE,
            ..Hub::default()
        }
    }

    /// True when nobody watches anything: stores need not be noted.
    pub fn is_idle(&self) -> bool {
        self.by_client.is_empty() && self.all.is_empty()
    }

    /// Connections that have said `WATCH`.
    pub fn watchers(&self) -> usize {
        self.watchers
    }

    /// Connection (`key`, `serial`) said its first `WATCH`.
    pub fn joined(&mut self) {
        self.watchers += 1;
    }

    /// It watches `client` at `place` of its [`Watch`].
    pub fn add(&mut self, client: &[u8], key: usize, serial: u64, place: u32) {
        self.by_client
            .entry(client.into())
            .or_default()
            .push(Sub { key, serial, place });
    }

    /// It no longer watches `client`.
    pub fn remove(&mut self, client: &[u8], key: usize, serial: u64) {
        if let Some(subs) = self.by_client.get_mut(client) {
            subs.retain(|s| (s.key, s.serial) != (key, serial));
            if subs.is_empty() {
                self.by_client.remove(client);
            }
        }
    }

    /// It says `WATCH *`: false when the server has its limit of those.
    pub fn add_all(&mut self, key: usize, serial: u64) -> bool {
        if self.all.len() >= self.all_limit {
            return false;
        }
        self.all.push((key, serial));
        true
    }

    /// It no longer watches every client.
    pub fn remove_all(&mut self, key: usize, serial: u64) {
        self.all.retain(|&w| w != (key, serial));
    }

    /// The connection closed: forget everything it watched.
    pub fn forget(&mut self, key: usize, serial: u64, watch: &Watch) {
        for name in watch.names() {
            self.remove(name, key, serial);
        }
        if watch.watches_all() {
            self.remove_all(key, serial);
        }
        self.watchers = self.watchers.saturating_sub(1);
    }

    /// The engine stored a position in store slot `slot`.
    #[inline]
    pub fn stored(&mut self, slot: usize) {
        if !self.is_idle() {
            self.touched.push((slot as u32, 1));
            if self.touched.len() >= self.merge_at {
                self.merge();
                self.merge_at = TOUCHED_MERGE.max(2 * self.touched.len());
            }
        }
    }

    /// One entry per slot in `touched`, in slot order, counts summed.
    fn merge(&mut self) {
        self.touched.sort_unstable_by_key(|&(slot, _)| slot);
        self.touched.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 = kept.1.saturating_add(later.1);
            }
            same
        });
    }

    /// True when stores wait to be marked.
    pub fn has_marks(&self) -> bool {
        !self.touched.is_empty()
    }

    /// For each client stored since the last call, calls `mark` with each
    /// (key, serial) watching it, what to mark, and how many times it was
    /// stored meanwhile. One lookup a client, however often it was stored,
    /// and only for positions stored while anyone watched.
    pub fn take_marks(&mut self, store: &Store, mut mark: impl FnMut(usize, u64, Mark, u32)) {
        self.merge();
        for &(slot, stores) in &self.touched {
            let slot = slot as usize;
            if !self.by_client.is_empty() {
                let client = store.entry(slot).map(|e| e.client());
                if let Some(subs) = client.and_then(|c| self.by_client.get(c)) {
                    for s in subs {
                        mark(s.key, s.serial, Mark::Named(s.place, slot), stores);
                    }
                }
            }
            for &(key, serial) in &self.all {
                mark(key, serial, Mark::Slot(slot), stores);
            }
        }
        self.touched.clear();
        self.merge_at = TOUCHED_MERGE;
        if self.touched.capacity() > TOUCHED_MERGE {
            self.touched = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests;

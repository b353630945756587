//! A server's knowledge: the latest AT line of every client it has heard of,
//! within bounds.
//!
//! ## The order
//! The rule that makes the herd converge lives here. Updates are ordered by
//! the pair (client timestamp, AT line bytes): a larger client timestamp wins,
//! and for equal timestamps the lexicographically larger AT line wins. Every
//! server applies the same total order to the same candidate lines, so
//! whichever order floods arrive in, all servers keep the same line in the end.
//! An update equal to what is stored is "not newer": this is what ends a flood.
//!
//! ## Bounds (docs/PROTOCOL.md §11)
//! At most [`Store::limit`] clients. When full, a new client evicts the
//! stored one that is smallest in the same order — so servers that saw the
//! same updates evict the same clients — or, if the new one is smaller than
//! all of them, it is not stored. The largest (timestamp, line) ever evicted
//! is kept as a *floor*: nothing at or below it is stored again, so a
//! neighbour's catch-up cannot bring an evicted client back. With a TTL,
//! [`Store::expire`] forgets positions older than the clock minus the TTL,
//! and such updates are not stored in the first place.
//!
//! ## Layout: small per client
//! * every AT line lives in one byte arena; a slot says where (offset,
//!   length) and holds the timestamp as (seconds, nanoseconds): 24 bytes.
//!   An update of the same length (the usual case) is written in place;
//!   others are appended and the arena is compacted once half of it is dead;
//! * the index is a `hashbrown::HashTable` of (slot number, 32-bit hash of
//!   the client ID): 8 bytes a bucket. The ID itself is read out of the
//!   line (CLIENT is its 4th field) to confirm a match, so no key is stored
//!   twice, and growing the table never reads the lines;
//! * the eviction order is a binary heap of (seconds, nanoseconds, slot)
//!   with lazy deletion (an entry whose slot changed since is skipped, and
//!   the heap is rebuilt when stale entries outnumber live ones). It is only
//!   kept once the store has been full or has a TTL: a store far below its
//!   limit pays nothing for it.
//!
//! ## Slots as a cursor
//! Slots of removed clients are reused. A catch-up walks slot numbers
//! `0..slot_end()` and skips holes ([`Store::entry`] is `None` there): a
//! client stored after the walk began is flooded anyway, and a client never
//! moves to another slot while it is stored, so every client stored when
//! the walk began and still stored when it passes is sent.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::protocol::{self, At, Coords, Nanos, Position};

/// Clients a store holds by default (see README, "Bounds and durability":
/// five servers of about 150 bytes a client stay within about 2 GiB).
pub const DEFAULT_STORE_LIMIT: usize = 2_000_000;

const NANOS_PER_SEC: Nanos = 1_000_000_000;
/// `Slot::len` of a free slot.
const FREE: u32 = u32::MAX;
/// The arena is compacted once this many bytes of it are dead (and half).
const ARENA_SLACK: usize = 1 << 20;

/// One client's latest known position, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The client's own timestamp from its IAMAT.
    pub sent_at: Nanos,
    /// The AT line as the receiving server produced it, without `\n`.
    pub line: &'a [u8],
    /// Where COORDS sits in `line`, as the writer of the line said
    /// (`None` for a line too long for the slot's 16-bit offsets).
    coords: Option<Coords>,
}

impl<'a> Entry<'a> {
    /// The client ID (the line's 4th field).
    pub fn client(&self) -> &'a [u8] {
        field(self.line, 3).unwrap_or_default()
    }

    /// The client's position, split as a Places query wants it: read off
    /// the offsets kept when the line was stored, not parsed again (only a
    /// line longer than 64 KiB, whose offsets do not fit, is parsed).
    pub fn position(&self) -> Position<'a> {
        match self.coords {
            Some(c) => c.position(self.line),
            None => field(self.line, 4)
                .and_then(protocol::position)
                .unwrap_or(Position { lat: b"", lng: b"" }),
        }
    }
}

/// COORDS offsets as a slot keeps them: 16 bits each, 0 for "not kept".
fn pack(c: Coords) -> [u16; 3] {
    match (
        u16::try_from(c.start),
        u16::try_from(c.split),
        u16::try_from(c.end),
    ) {
        (Ok(a), Ok(b), Ok(e)) if a > 0 => [a, b, e],
        _ => [0; 3],
    }
}

/// Field `n` (from 0) of a stored line, whose fields are single-spaced.
fn field(line: &[u8], n: usize) -> Option<&[u8]> {
    line.split(|&b| b == b' ').nth(n)
}

/// Whether CLIENT, field 3 of a stored `line` whose COORDS starts at
/// `coords` (0: not kept), is `client`. With the offset, the bytes just
/// before ` COORDS` are compared, behind a space: CLIENT holds no space, so
/// that is field 3 exactly, without scanning the line for its spaces (the
/// index's every probe does this).
fn client_is(line: &[u8], coords: u16, client: &[u8]) -> bool {
    let Some(end) = usize::from(coords).checked_sub(1) else {
        return field(line, 3) == Some(client);
    };
    match end.checked_sub(client.len() + 1) {
        Some(space) => line[space] == b' ' && &line[space + 1..end] == client,
        None => false,
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    off: u64,
    len: u32,
    nanos: u32,
    secs: u64,
    /// Where COORDS sits in the line (see [`pack`]).
    coords: [u16; 3],
}

impl Slot {
    fn sent_at(&self) -> Nanos {
        Nanos::from(self.secs) * NANOS_PER_SEC + Nanos::from(self.nanos)
    }
}

/// A 32-bit hash spread over 64 bits, as the table wants it (its top bits
/// tag buckets, its low bits choose them).
fn spread(h: u32) -> u64 {
    u64::from(h).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A timestamp as (seconds, nanoseconds); TIME is never negative and has at
/// most 18 integer digits, so this is exact.
fn split(sent_at: Nanos) -> (u64, u32) {
    let t = sent_at.max(0);
    // Times before 2554 fit 64 bits: no 128-bit division for them.
    if let Ok(t) = u64::try_from(t) {
        let per_sec = NANOS_PER_SEC as u64;
        return (t / per_sec, (t % per_sec) as u32);
    }
    (
        (t / NANOS_PER_SEC).min(Nanos::from(u64::MAX)) as u64,
        (t % NANOS_PER_SEC) as u32,
    )
}

/// An update as [`Store::offer`] takes it, for [`Store::offer_all`]:
/// `line` without its `\n`, CLIENT its 4th field, COORDS at `coords`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update<'a> {
    /// The client ID (the line's 4th field).
    pub client: &'a [u8],
    /// The client's timestamp, TIME.
    pub sent_at: Nanos,
    /// The AT line to store, canonical, without `\n`.
    pub line: &'a [u8],
    /// Where COORDS sits in `line`.
    pub coords: Coords,
}

/// How many updates [`Store::offer_all`] looks up together: enough
/// lookups to keep the memory system busy, few enough that the table's
/// lines they bring in are still in cache when the offers come.
pub const OFFER_BATCH: usize = 32;

/// Latest AT line per client ID, newest wins, bounded.
#[derive(Debug)]
pub struct Store {
    arena: Vec<u8>,
    /// Bytes of `arena` no slot points at any more.
    dead: usize,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// (slot, 32-bit hash of its client): growing the table rehashes from
    /// the kept hash, without reading the lines again.
    index: HashTable<(u32, u32)>,
    hasher: std::collections::hash_map::RandomState,
    /// Eviction and expiry order; see the module header.
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    ordered: bool,
    len: usize,
    limit: usize,
    ttl: Option<Nanos>,
    /// The largest (timestamp, line) evicted so far.
    floor: Option<(Nanos, Vec<u8>)>,
    evicted: u64,
    expired: u64,
    /// The slot of the last update stored (see [`Store::last_slot`]).
    last: u32,
}

impl Default for Store {
    fn default() -> Self {
        Store::with_bounds(DEFAULT_STORE_LIMIT, None)
    }
}

impl Store {
    /// An empty store with the default limit and no TTL.
    pub fn new() -> Store {
        Store::default()
    }

    /// An empty store of at most `limit` clients (at least 1) forgetting
    /// positions older than `ttl` nanoseconds, if given.
    pub fn with_bounds(limit: usize, ttl: Option<Nanos>) -> Store {
        let ttl = ttl.filter(|&t| t > 0);
        Store {
            arena: Vec::new(),
            dead: 0,
            slots: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: Default::default(),
            heap: BinaryHeap::new(),
            ordered: ttl.is_some(),
            len: 0,
            limit: limit.max(1),
            ttl,
            floor: None,
            evicted: 0,
            expired: 0,
            last: 0,
        }
    }

    fn line(&self, s: u32) -> &[u8] {
        let slot = &self.slots[s as usize];
        &self.arena[slot.off as usize..slot.off as usize + slot.len as usize]
    }

    /// The client's 32-bit hash (kept in the index).
    fn hash32(&self, client: &[u8]) -> u32 {
        self.hasher.hash_one(client) as u32
    }

    fn find(&self, client: &[u8], h: u32) -> Option<u32> {
        let (slots, arena) = (&self.slots, &self.arena);
        self.index
            .find(spread(h), |&(s, t)| {
                if t != h {
                    return false;
                }
                let slot = &slots[s as usize];
                let line = &arena[slot.off as usize..slot.off as usize + slot.len as usize];
                client_is(line, slot.coords[0], client)
            })
            .map(|&(s, _)| s)
    }

    /// Offers an update (`line` without its `\n`, CLIENT its 4th field)
    /// received when the server's clock read `now`; returns true if it was
    /// newer and is now stored (and so must be flooded and journaled),
    /// false if it was dropped: not newer, older than the TTL allows, at
    /// or below the eviction floor, or older than every client of a full
    /// store.
    pub fn offer(
        &mut self,
        client: &[u8],
        sent_at: Nanos,
        line: &[u8],
        coords: Coords,
        now: Nanos,
    ) -> bool {
        let update = Update {
            client,
            sent_at,
            line,
            coords,
        };
        self.offer_hashed(&update, self.hash32(client), now)
    }

    /// Offers `updates` in order, exactly as [`Store::offer`] one after
    /// another would; returns how many were stored. Faster for many (a
    /// journal replay): each [`OFFER_BATCH`] of them is hashed and looked
    /// up in the index first, a few instructions a lookup, so the CPU runs
    /// the lookups of a batch together and their cache misses overlap; the
    /// offers then find the index in cache.
    pub fn offer_all(&mut self, updates: &[Update<'_>], now: Nanos) -> usize {
        let mut stored = 0;
        for batch in updates.chunks(OFFER_BATCH) {
            let mut hashes = [0u32; OFFER_BATCH];
            for (h, u) in hashes.iter_mut().zip(batch) {
                *h = self.hash32(u.client);
            }
            for &h in &hashes[..batch.len()] {
                // Only the table is read, never a line; the answer is
                // thrown away (black_box keeps the reads).
                std::hint::black_box(self.index.find(spread(h), |&(_, t)| t == h));
            }
            for (u, &h) in batch.iter().zip(&hashes) {
                stored += usize::from(self.offer_hashed(u, h, now));
            }
        }
        stored
    }

    /// [`Store::offer`] with the client's hash already made.
    fn offer_hashed(&mut self, update: &Update<'_>, h: u32, now: Nanos) -> bool {
        let &Update {
            client,
            sent_at,
            line,
            coords,
        } = update;
        if self
            .ttl
            .is_some_and(|ttl| sent_at < now.saturating_sub(ttl))
        {
            return false;
        }
        if let Some((t, l)) = &self.floor {
            if (sent_at, line) <= (*t, &l[..]) {
                return false;
            }
        }
        if line.len() >= FREE as usize {
            return false;
        }
        let (secs, nanos) = split(sent_at);
        if let Some(s) = self.find(client, h) {
            let slot = self.slots[s as usize];
            if (sent_at, line) <= (slot.sent_at(), self.line(s)) {
                return false;
            }
            let off = if slot.len as usize == line.len() {
                // A client's lines are mostly the same length: in place.
                let off = slot.off as usize;
                self.arena[off..off + line.len()].copy_from_slice(line);
                slot.off
            } else {
                self.dead += slot.len as usize;
                self.append(line)
            };
            self.slots[s as usize] = Slot {
                off,
                len: line.len() as u32,
                nanos,
                secs,
                coords: pack(coords),
            };
            if self.ordered {
                self.heap.push(Reverse((secs, nanos, s)));
                self.trim_heap();
            }
            self.last = s;
            self.maybe_compact_arena();
            return true;
        }
        if self.len >= self.limit {
            self.order();
            match self.oldest() {
                Some(s) if (sent_at, line) > (self.slots[s as usize].sent_at(), self.line(s)) => {
                    let mut floor = self.floor.take().map(|(_, l)| l).unwrap_or_default();
                    floor.clear();
                    floor.extend_from_slice(self.line(s));
                    self.floor = Some((self.slots[s as usize].sent_at(), floor));
                    self.remove(s);
                    self.evicted += 1;
                }
                // Older than everything it holds: answered, not stored.
                _ => return false,
            }
        }
        self.insert(h, line, secs, nanos, pack(coords));
        if self.len >= self.limit {
            self.order();
        }
        self.maybe_compact_arena();
        true
    }

    fn append(&mut self, line: &[u8]) -> u64 {
        let off = self.arena.len() as u64;
        self.arena.extend_from_slice(line);
        off
    }

    /// Stores a new client whose hash is `h`.
    fn insert(&mut self, h: u32, line: &[u8], secs: u64, nanos: u32, coords: [u16; 3]) {
        let off = self.append(line);
        let slot = Slot {
            off,
            len: line.len() as u32,
            nanos,
            secs,
            coords,
        };
        let s = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = slot;
                s
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.index
            .insert_unique(spread(h), (s, h), |&(_, t)| spread(t));
        self.len += 1;
        self.last = s;
        if self.ordered {
            self.heap.push(Reverse((secs, nanos, s)));
            self.trim_heap();
        }
    }

    /// Forgets the client in slot `s`.
    fn remove(&mut self, s: u32) {
        let client = field(self.line(s), 3).unwrap_or_default();
        let h = self.hash32(client);
        if let Ok(e) = self.index.find_entry(spread(h), |&(t, _)| t == s) {
            e.remove();
        }
        let slot = &mut self.slots[s as usize];
        self.dead += slot.len as usize;
        slot.len = FREE;
        self.free.push(s);
        self.len -= 1;
        if self.len == 0 {
            // Nothing lives in the arena: start it again.
            self.arena = Vec::new();
            self.dead = 0;
        }
    }

    /// Starts keeping the eviction order, if it is not kept yet.
    fn order(&mut self) {
        if !self.ordered {
            self.ordered = true;
            self.rebuild_heap();
        }
    }

    fn rebuild_heap(&mut self) {
        let live: Vec<_> = (0..self.slots.len() as u32)
            .filter(|&s| self.slots[s as usize].len != FREE)
            .map(|s| {
                let slot = &self.slots[s as usize];
                Reverse((slot.secs, slot.nanos, s))
            })
            .collect();
        self.heap = BinaryHeap::from(live);
    }

    fn trim_heap(&mut self) {
        if self.heap.len() > 2 * self.len + 1024 {
            self.rebuild_heap();
        }
    }

    fn is_current(&self, (secs, nanos, s): (u64, u32, u32)) -> bool {
        let slot = &self.slots[s as usize];
        slot.len != FREE && slot.secs == secs && slot.nanos == nanos
    }

    /// The slot of the smallest stored client in the store's order; stale
    /// heap entries on top are dropped on the way.
    fn oldest(&mut self) -> Option<u32> {
        while let Some(&Reverse(top)) = self.heap.peek() {
            if self.is_current(top) {
                break;
            }
            self.heap.pop();
        }
        let &Reverse((secs, nanos, first)) = self.heap.peek()?;
        // Equal timestamps: the smaller line goes first, as everywhere.
        // Take every current entry of that timestamp and keep the least.
        let mut same = Vec::new();
        while let Some(&Reverse(e)) = self.heap.peek() {
            if (e.0, e.1) != (secs, nanos) {
                break;
            }
            self.heap.pop();
            if self.is_current(e) && !same.contains(&e.2) {
                same.push(e.2);
            }
        }
        let best = same
            .iter()
            .copied()
            .min_by(|&a, &b| self.line(a).cmp(self.line(b)))
            .unwrap_or(first);
        for s in same {
            self.heap.push(Reverse((secs, nanos, s)));
        }
        Some(best)
    }

    fn maybe_compact_arena(&mut self) {
        if self.dead < ARENA_SLACK || self.dead * 2 < self.arena.len() {
            return;
        }
        let mut arena = Vec::with_capacity(self.arena.len() - self.dead);
        for slot in self.slots.iter_mut().filter(|s| s.len != FREE) {
            let off = slot.off as usize;
            let new = arena.len() as u64;
            arena.extend_from_slice(&self.arena[off..off + slot.len as usize]);
            slot.off = new;
        }
        self.arena = arena;
        self.dead = 0;
    }

    /// Forgets every position older than `now` minus the TTL; returns how
    /// many. Call at least once a second when a TTL is set.
    pub fn expire(&mut self, now: Nanos) -> u64 {
        let Some(ttl) = self.ttl else { return 0 };
        let (secs, nanos) = split(now.saturating_sub(ttl));
        let mut n = 0;
        while let Some(&Reverse(top)) = self.heap.peek() {
            if (top.0, top.1) >= (secs, nanos) {
                break;
            }
            self.heap.pop();
            if self.is_current(top) {
                self.remove(top.2);
                n += 1;
            }
        }
        self.expired += n;
        self.maybe_compact_arena();
        n
    }

    /// Offers an AT update from the herd (or the journal) in its canonical
    /// form, which it writes into `line` (cleared first; it ends in `\n`,
    /// ready to flood). True if it was newer and is now stored.
    pub fn offer_at(&mut self, at: &At<'_>, line: &mut Vec<u8>, now: Nanos) -> bool {
        line.clear();
        let coords = protocol::write_at_update(line, at);
        self.offer(at.client, at.sent_at, &line[..line.len() - 1], coords, now)
    }

    /// Makes room for `clients` more clients (no more than the limit
    /// leaves) and `bytes` more bytes of lines, so that filling the store
    /// (a replay) does not grow it step by step, rehashing the index each
    /// time. Room never written costs no memory but the index's, which
    /// [`Store::shrink_to_fit`] gives back.
    pub fn reserve(&mut self, clients: usize, bytes: usize) {
        let clients = clients.min(self.limit.saturating_sub(self.len));
        self.index.reserve(clients, |&(_, t)| spread(t));
        self.slots.reserve(clients);
        self.arena.reserve(bytes);
    }

    /// Shrinks the index to what the clients stored need (after a
    /// [`Store::reserve`] for more than came).
    pub fn shrink_to_fit(&mut self) {
        self.index.shrink_to(self.len, |&(_, t)| spread(t));
    }

    /// The latest entry for `client`.
    pub fn get(&self, client: &[u8]) -> Option<Entry<'_>> {
        self.find(client, self.hash32(client))
            .map(|s| self.entry_at(s))
    }

    fn entry_at(&self, s: u32) -> Entry<'_> {
        let slot = &self.slots[s as usize];
        let [start, split, end] = slot.coords;
        Entry {
            sent_at: slot.sent_at(),
            line: self.line(s),
            coords: (start > 0).then_some(Coords {
                start: start.into(),
                split: split.into(),
                end: end.into(),
            }),
        }
    }

    /// The entry in slot `i` (`0..slot_end()`), `None` for a free slot:
    /// for walking the store (see the module header).
    pub fn entry(&self, i: usize) -> Option<Entry<'_>> {
        let slot = self.slots.get(i)?;
        (slot.len != FREE).then(|| self.entry_at(i as u32))
    }

    /// The slot of the update the last offer that returned true stored
    /// (what a watcher of every client is owed; see [`crate::watch`]).
    pub fn last_slot(&self) -> usize {
        self.last as usize
    }

    /// One past the last slot in use or free: where a walk of the store ends.
    pub fn slot_end(&self) -> usize {
        self.slots.len()
    }

    /// Every stored entry, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = Entry<'_>> {
        (0..self.slots.len()).filter_map(|i| self.entry(i))
    }

    /// How many clients are known.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no client is known.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most clients it holds.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Clients evicted to make room, since it was made (a metric).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Positions forgotten for their age, since it was made (a metric).
    pub fn expired(&self) -> u64 {
        self.expired
    }

    /// True when positions expire.
    pub fn has_ttl(&self) -> bool {
        self.ttl.is_some()
    }
}

#[cfg(test)]
pub(crate) mod tests;

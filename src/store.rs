//! A server's knowledge: the latest AT line of every client it has heard of.
//!
//! The rule that makes the herd converge lives here. Updates are ordered by
//! the pair (client timestamp, AT line bytes): a larger client timestamp wins,
//! and for equal timestamps the lexicographically larger AT line wins. Every
//! server applies the same total order to the same candidate lines, so
//! whichever order floods arrive in, all servers keep the same line in the end.
//! An update equal to what is stored is "not newer": this is what ends a flood.
//!
//! Entries are never removed, so an entry's index is stable; herd links use
//! that index as a cursor to stream the whole store during catch-up without
//! copying it.
//!
//! Each entry keeps where the position sits in its AT line
//! ([`Coords`]), taken when the line was written, so a WHATSAT reads the
//! position off the stored line instead of parsing it again.

use std::collections::HashMap;

use crate::protocol::{self, At, Coords, Nanos, Position};

/// One client's latest known position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The client's own timestamp from its IAMAT.
    pub sent_at: Nanos,
    /// The AT line as the receiving server produced it, without `\n`.
    pub line: Box<[u8]>,
    /// Where COORDS sits in `line`.
    pub coords: Coords,
}

impl Entry {
    /// The client's position, split as a Places query wants it.
    pub fn position(&self) -> Position<'_> {
        self.coords.position(&self.line)
    }
}

/// Latest AT line per client ID, newest wins.
#[derive(Debug, Default)]
pub struct Store {
    index: HashMap<Box<[u8]>, usize>,
    entries: Vec<Entry>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Store {
        Store::default()
    }

    /// Offers an update (`line` without its `\n`, COORDS at `coords` in it);
    /// returns true if it was newer and is now stored (and so must be
    /// flooded), false if it was dropped.
    pub fn offer(&mut self, client: &[u8], sent_at: Nanos, line: &[u8], coords: Coords) -> bool {
        match self.index.get(client) {
            Some(&i) => {
                let e = &mut self.entries[i];
                if (sent_at, line) > (e.sent_at, &e.line[..]) {
                    e.sent_at = sent_at;
                    e.coords = coords;
                    if e.line.len() == line.len() {
                        // A client's lines are mostly the same length: no allocation.
                        e.line.copy_from_slice(line);
                    } else {
                        e.line = line.into();
                    }
                    true
                } else {
                    false
                }
            }
            None => {
                self.index.insert(client.into(), self.entries.len());
                self.entries.push(Entry {
                    sent_at,
                    line: line.into(),
                    coords,
                });
                true
            }
        }
    }

    /// Offers an AT update from the herd (or the journal) in its canonical
    /// form, which it writes into `line` (cleared first; it ends in `\n`,
    /// ready to flood). True if it was newer and is now stored.
    pub fn offer_at(&mut self, at: &At<'_>, line: &mut Vec<u8>) -> bool {
        line.clear();
        let coords = protocol::write_at_update(line, at);
        self.offer(at.client, at.sent_at, &line[..line.len() - 1], coords)
    }

    /// The latest entry for `client`.
    pub fn get(&self, client: &[u8]) -> Option<&Entry> {
        self.index.get(client).map(|&i| &self.entries[i])
    }

    /// The entry at a stable index (`0..len()`), for streaming the store.
    pub fn entry(&self, i: usize) -> Option<&Entry> {
        self.entries.get(i)
    }

    /// How many clients are known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no client is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::Command;

    /// Offers an AT line as the server does: parsed, canonical, with its coords.
    pub(crate) fn offer(s: &mut Store, line: &[u8]) -> bool {
        let Command::At(at) = protocol::parse(line) else {
            panic!("not an AT line: {line:?}");
        };
        s.offer_at(&at, &mut Vec::new())
    }

    #[test]
    fn newest_timestamp_wins_whatever_the_order() {
        let mut s = Store::new();
        assert!(offer(&mut s, b"AT A +0.100000000 kiwi +1+1 5"));
        assert!(!offer(&mut s, b"AT B +0.100000000 kiwi +2+2 4"));
        assert!(offer(&mut s, b"AT B +0.100000000 kiwi +2+2 6"));
        assert_eq!(
            &*s.get(b"kiwi").unwrap().line,
            b"AT B +0.100000000 kiwi +2+2 6"
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn the_stored_position_is_that_of_the_stored_line() {
        let mut s = Store::new();
        offer(&mut s, b"AT A +0.100000000 kiwi +34.068930-118.445127 5");
        offer(&mut s, b"AT B +0.100000000 kiwi -1.5+2.25 6");
        let p = s.get(b"kiwi").unwrap().position();
        assert_eq!((p.lat, p.lng), (&b"-1.5"[..], &b"2.25"[..]));
    }

    #[test]
    fn equal_timestamps_break_ties_on_the_line_the_same_way_in_any_order() {
        let a: &[u8] = b"AT Goloman +0.100000000 kiwi +1+1 5";
        let b: &[u8] = b"AT Hands +0.200000000 kiwi +2+2 5";
        let mut s1 = Store::new();
        offer(&mut s1, a);
        offer(&mut s1, b);
        let mut s2 = Store::new();
        offer(&mut s2, b);
        assert!(!offer(&mut s2, a));
        assert_eq!(s1.get(b"kiwi"), s2.get(b"kiwi"));
        assert_eq!(&*s1.get(b"kiwi").unwrap().line, b);
    }

    #[test]
    fn the_same_update_twice_is_not_newer() {
        let mut s = Store::new();
        assert!(offer(&mut s, b"AT A +0.000000000 c +1+1 1"));
        assert!(!offer(&mut s, b"AT A +0.000000000 c +1+1 1"));
    }

    #[test]
    fn indices_are_stable_and_dense() {
        let mut s = Store::new();
        offer(&mut s, b"AT x +0.000000000 a +1+1 1");
        offer(&mut s, b"AT x +0.000000000 b +1+1 1");
        offer(&mut s, b"AT x +0.000000000 a +1+1 2");
        assert_eq!(&*s.entry(0).unwrap().line, b"AT x +0.000000000 a +1+1 2");
        assert_eq!(&*s.entry(1).unwrap().line, b"AT x +0.000000000 b +1+1 1");
        assert!(s.entry(2).is_none());
    }
}

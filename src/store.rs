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

use std::collections::HashMap;

use crate::protocol::Nanos;

/// One client's latest known position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The client's own timestamp from its IAMAT.
    pub sent_at: Nanos,
    /// The AT line as the receiving server produced it, without `\n`.
    pub line: Box<[u8]>,
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

    /// Offers an update; returns true if it was newer and is now stored
    /// (and so must be flooded), false if it was dropped.
    pub fn offer(&mut self, client: &[u8], sent_at: Nanos, line: &[u8]) -> bool {
        match self.index.get(client) {
            Some(&i) => {
                let e = &mut self.entries[i];
                if (sent_at, line) > (e.sent_at, &e.line[..]) {
                    e.sent_at = sent_at;
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
                });
                true
            }
        }
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
mod tests {
    use super::*;

    #[test]
    fn newest_timestamp_wins_whatever_the_order() {
        let mut s = Store::new();
        assert!(s.offer(b"kiwi", 5, b"AT A +0.1 kiwi +1+1 5"));
        assert!(!s.offer(b"kiwi", 4, b"AT B +0.1 kiwi +2+2 4"));
        assert!(s.offer(b"kiwi", 6, b"AT B +0.1 kiwi +2+2 6"));
        assert_eq!(&*s.get(b"kiwi").unwrap().line, b"AT B +0.1 kiwi +2+2 6");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn equal_timestamps_break_ties_on_the_line_the_same_way_in_any_order() {
        let a: &[u8] = b"AT Goloman +0.1 kiwi +1+1 5";
        let b: &[u8] = b"AT Hands +0.2 kiwi +2+2 5";
        let mut s1 = Store::new();
        s1.offer(b"kiwi", 5, a);
        s1.offer(b"kiwi", 5, b);
        let mut s2 = Store::new();
        s2.offer(b"kiwi", 5, b);
        assert!(!s2.offer(b"kiwi", 5, a));
        assert_eq!(s1.get(b"kiwi"), s2.get(b"kiwi"));
        assert_eq!(&*s1.get(b"kiwi").unwrap().line, b);
    }

    #[test]
    fn the_same_update_twice_is_not_newer() {
        let mut s = Store::new();
        assert!(s.offer(b"c", 1, b"AT A +0.0 c +1+1 1"));
        assert!(!s.offer(b"c", 1, b"AT A +0.0 c +1+1 1"));
    }

    #[test]
    fn indices_are_stable_and_dense() {
        let mut s = Store::new();
        s.offer(b"a", 1, b"AT x +0 a +1+1 1");
        s.offer(b"b", 1, b"AT x +0 b +1+1 1");
        s.offer(b"a", 2, b"AT x +0 a +1+1 2");
        assert_eq!(&*s.entry(0).unwrap().line, b"AT x +0 a +1+1 2");
        assert_eq!(&*s.entry(1).unwrap().line, b"AT x +0 b +1+1 1");
        assert!(s.entry(2).is_none());
    }
}
